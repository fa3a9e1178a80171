"""`eventually`, the tests' one way to wait for something another thread or process does."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import eventually


def test_returns_the_first_truthy_value_as_soon_as_it_comes() -> None:
    box: list[str] = []
    threading.Timer(0.1, box.append, args=["ready"]).start()
    t0 = time.monotonic()
    assert eventually(lambda: box and box[0], timeout=5, interval=0.01) == "ready"
    assert time.monotonic() - t0 < 2


def test_a_condition_that_never_holds_fails_with_what_was_awaited_and_the_last_value() -> None:
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0.2 s waiting for the answer; the last value was \[\]"):
        eventually(lambda: [], timeout=0.2, interval=0.05, what="the answer")
    assert 0.2 <= time.monotonic() - t0 < 2


def test_the_predicate_is_tried_even_with_no_time_and_again_at_the_deadline() -> None:
    calls: list[float] = []

    def never() -> bool:
        calls.append(time.monotonic())
        return False

    with pytest.raises(AssertionError, match="never"):
        eventually(never, timeout=0)
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(AssertionError):
        eventually(never, timeout=0.3, interval=10)  # an interval past the deadline is cut to it
    assert len(calls) == 2 and calls[1] - calls[0] == pytest.approx(0.3, abs=0.15)
