"""The kit's one polling helper: returns what the predicate found, or fails naming the wait."""

from __future__ import annotations

import pytest
from pixsim7_testing.polling import WaitTimeout, wait_until, wait_until_async


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = iter([None, 0, {"status": "ready"}])
    assert wait_until(lambda: next(calls), timeout=5, interval=0) == {"status": "ready"}


def test_wait_until_fails_with_its_message_after_the_timeout() -> None:
    with pytest.raises(WaitTimeout, match=r"not done within 0.05s: the server never answered"):
        wait_until(lambda: False, timeout=0.05, interval=0.01,
                   message=lambda: "the server never answered")


async def test_wait_until_async_awaits_a_coroutine_predicate() -> None:
    seen: list[int] = []

    async def third_time() -> bool:
        seen.append(1)
        return len(seen) == 3

    assert await wait_until_async(third_time, timeout=5, interval=0) is True
    assert len(seen) == 3
    with pytest.raises(WaitTimeout, match="0.05s"):
        await wait_until_async(lambda: None, timeout=0.05, interval=0.01)
