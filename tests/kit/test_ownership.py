"""Who owns the kit's servers: a live session is recognised, a dead or reused pid is not."""

from __future__ import annotations

import socket
import subprocess
import sys

from pixsim7_testing.ownership import SessionOwner, process_start_time


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_this_session_is_alive() -> None:
    assert SessionOwner.current().alive()


def test_a_finished_process_is_dead() -> None:
    owner = SessionOwner(exited_pid(), 1, socket.gethostname())
    assert not owner.alive()
    assert not SessionOwner(owner.pid, None, owner.host).alive()


def test_a_reused_pid_is_another_session() -> None:
    current = SessionOwner.current()
    assert process_start_time(current.pid) == current.started
    assert not SessionOwner(current.pid, current.started - 1, current.host).alive()


def test_another_hosts_session_is_never_judged_dead_here() -> None:
    assert SessionOwner(exited_pid(), 1, socket.gethostname() + "-elsewhere").alive()


def test_labels_and_markers_round_trip(tmp_path) -> None:
    owner = SessionOwner.current()
    assert SessionOwner.from_label(owner.label()) == owner
    owner.mark(tmp_path)
    assert SessionOwner.of_folder(tmp_path) == owner
    assert SessionOwner.of_folder(tmp_path / "missing") is None
