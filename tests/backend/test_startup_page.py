"""The startup as something to look at: `check --html`, `check --graph --format mermaid|json`,
`GET /api/v1/admin/startup?format=html` and `serve`'s STARTUP_PAGE_FILE."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pixsim7_testing.apps import started
from pixsim7_testing.processes import run_backend

from pixsim7.backend.main.startup import PROFILES

pytestmark = pytest.mark.integration


class Steps(HTMLParser):
    """The page's step rows (phase, step, status) and the plan's nodes, as a browser reads
    the markup."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[str, str, str]] = []
        self.nodes: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "data-step" in found:
            self.steps.append((found["data-phase"], found["data-step"], found["data-status"]))
        if "data-node" in found:
            self.nodes.append(found["data-node"] or "")
        for name in ("src", "href"):
            if found.get(name):
                self.external.append(f"{tag} {name}={found[name]}")
        if tag in ("script", "link", "img", "iframe"):
            self.external.append(tag)


def read_page(text: str) -> Steps:
    parser = Steps()
    parser.feed(text)
    return parser


def test_check_html_writes_one_self_contained_page_of_the_timeline_and_plan(
    backend_services_env, tmp_path
) -> None:
    page = tmp_path / "out" / "startup.html"
    run = run_backend(["check", "--html", str(page)], backend_services_env, tmp_path)
    assert run.returncode == 0, run.output
    text = page.read_text()
    read = read_page(text)
    plan = PROFILES["api"].plan
    assert [s[1] for s in read.steps if s[0] == "startup"] == [*(s.name for s in plan),
                                                               "complete"]
    assert {s[0] for s in read.steps} == {"build", "startup", "shutdown"}
    assert read.nodes == [s.name for s in plan]
    assert read.external == []  # nothing loads from anywhere: no script, link or image
    assert "every step ok or skipped" in text
    assert oct(page.stat().st_mode & 0o777) == "0o600"


def test_check_html_is_written_on_failure_and_the_failed_step_stands_out(
    backend_services_env, tmp_path
) -> None:
    page = tmp_path / "failed.html"
    env = {**backend_services_env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}
    run = run_backend(["check", "--html", str(page)], env, tmp_path)
    assert run.returncode == 1
    text = page.read_text()
    assert ("startup", "database", "failed") in read_page(text).steps
    trouble = re.search(r'<p class="alert" id="trouble">(.*?)</p>', text)
    assert trouble and "<b>database</b>: failed" in trouble.group(1), text[:2000]


def test_check_html_to_a_folder_is_one_sentence(backend_env, tmp_path) -> None:
    run = run_backend(["check", "--html", str(tmp_path)], backend_env, tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == f"check --html: {tmp_path} is a folder; name a file in it"


@pytest.mark.parametrize("profile", ["api", "worker"])
def test_check_graph_formats(profile, backend_env, tmp_path) -> None:
    plan = PROFILES[profile].plan
    run = run_backend(["check", "--graph", "--format", "json", "--profile", profile],
                      backend_env, tmp_path)
    assert run.returncode == 0, run.output
    assert json.loads(run.stdout) == {"profile": profile, "given": list(plan.given),
                                      "steps": plan.graph()}
    run = run_backend(["check", "--graph", "--format", "mermaid", "--profile", profile],
                      backend_env, tmp_path)
    assert run.returncode == 0, run.output
    lines = run.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    assert "    s_database -->|db| s_plugins" in lines
    assert "    s_domain_registry -->|domain_registry| s_database" in lines
    assert sum(line.startswith("    s_") and "[" in line for line in lines) == len(plan)


@pytest.mark.rollback_db  # reads only: the worker's shared app will do
async def test_the_admin_api_gives_the_page(app_factory) -> None:
    running = await started(app_factory)
    response = await running.get("/api/v1/admin/startup?format=html",
                                 headers={"Authorization": "Bearer kit-admin-token"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    steps = read_page(response.text).steps
    assert ("startup", "plugins", "ok") in steps and ("build", "middleware", "ok") in steps
    refused = await running.get("/api/v1/admin/startup?format=html")
    assert refused.status_code == 401


def test_serve_writes_the_page_beside_the_trace_when_it_stops(
    backend_processes, backend_services_env, tmp_path: Path
) -> None:
    page, trace = tmp_path / "pages" / "serve.html", tmp_path / "pages" / "serve.json"
    serve = backend_processes("serve", {**backend_services_env, "STARTUP_PAGE_FILE": str(page),
                                        "STARTUP_TRACE_FILE": str(trace)})
    serve.wait_ready()
    assert serve.stop() == 0, serve.describe()
    assert trace.is_file()
    steps = read_page(page.read_text()).steps
    assert ("startup", "complete", "ok") in steps
    assert [s[1] for s in steps if s[0] == "shutdown"][-1] == "database"


def test_what_a_step_reports_is_text_on_the_page_never_markup() -> None:
    from pixsim7.backend.main.startup.page import startup_page
    from pixsim7.backend.main.startup.timeline import StartupTimeline, StepRecord

    timeline = StartupTimeline("app-1")
    hostile = '<script>alert(1)</script><img src="http://x/">'
    timeline.records.append(StepRecord("startup", "plugins", "per_plugin", "failed", 1.0,
                                       {"failed": [hostile]}, f"{hostile}: boom", 0.0))
    read = read_page(startup_page(timeline, PROFILES["api"].plan))
    assert read.external == []  # no script, no image: the text stays text
    assert read.steps == [("startup", "plugins", "failed")]
