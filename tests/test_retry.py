"""The one back-off (rtmon/retry.py) every reconnect loop uses."""

from __future__ import annotations

from itertools import islice

import pytest

from rtmon.retry import delays


def test_delays_double_from_the_first_and_stop_growing_at_the_cap() -> None:
    assert list(islice(delays(0.25, 2.0), 7)) == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert list(islice(delays(0.5, 3.0), 4)) == [0.5, 1.0, 2.0, 3.0]  # a cap that is no power of two


def test_delays_never_end_and_never_overflow() -> None:
    backoff = delays(0.25, 8.0)
    assert [next(backoff) for _ in range(5000)][-1] == 8.0


def test_a_new_iterator_starts_short_again() -> None:
    first = delays(0.25, 2.0)
    assert [next(first) for _ in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert next(delays(0.25, 2.0)) == 0.25


@pytest.mark.parametrize(("first_s", "max_s"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_nonsense_bounds_are_refused(first_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="first_s"):
        delays(first_s, max_s)  # at once, not at the first delay
