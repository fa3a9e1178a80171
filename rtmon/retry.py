"""Back-off: how long to wait before the next attempt to reach something that went away (a
broker, a camera, a stream). One place for the pace, so every reconnect loop in rtmon backs off
the same way.

    backoff = delays(0.25, 2.0)          # 0.25, 0.5, 1.0, 2.0, 2.0, …
    while not stopping:
        try:
            connect_and_serve()
            backoff = delays(0.25, 2.0)  # it worked: the next outage starts short again
        except ConnectionError:
            wait(next(backoff))

The figures come from tenacity's `wait_exponential`, the well-kept implementation of this
policy; the loops stay ours because each waits in its own way (an asyncio event, a threading
event) and reports its own state while it waits.
"""

from __future__ import annotations

from collections.abc import Iterator

from tenacity import RetryCallState, wait_exponential


def delays(first_s: float, max_s: float) -> Iterator[float]:
    """Endless seconds to wait before each next attempt: `first_s`, doubling, never above `max_s`.
    Start a new iterator after a success."""
    if not 0 < first_s <= max_s:
        raise ValueError(f"back-off needs 0 < first_s <= max_s (got {first_s}, {max_s})")
    return _waits(wait_exponential(multiplier=first_s, max=max_s))


def _waits(wait: wait_exponential) -> Iterator[float]:
    # tenacity computes a wait from the attempt number it keeps in a RetryCallState; nothing
    # else of that state is read, so no Retrying object is needed.
    attempt = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    while True:
        yield float(wait(attempt))
        attempt.attempt_number += 1
