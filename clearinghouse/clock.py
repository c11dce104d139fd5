"""The current time, asked for in one place.

Everything in the service that needs "now" calls `now()` (an aware UTC instant) or `today(zone)`;
none calls `datetime.now` itself. The clock behind them is the system's, and `use(clock)` puts
another in its place for the length of a `with` block, in every thread: the tests run a day's
jobs, a hold's expiry or the sealer's delay by moving a clock forward instead of sleeping.

The database keeps time of its own for what it stamps (an entry's `recorded_at`); code that
compares its instants with this clock assumes the two machines agree within a second, as NTP
keeps them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TypeVar

Clock = Callable[[], datetime]
"""A source of aware instants."""


def system() -> datetime:
    """The system's clock, in UTC."""
    return datetime.now(UTC)


C = TypeVar("C", bound=Clock)

_lock = threading.Lock()
_current: Clock = system


def now() -> datetime:
    """The current instant, in UTC, by the clock in use."""
    return _current()


def today(zone: tzinfo) -> date:
    """The current calendar date in `zone`."""
    return now().astimezone(zone).date()


@contextlib.contextmanager
def use(clock: C) -> Iterator[C]:
    """Tell the time by `clock` until the block ends, then by the clock before it."""
    global _current
    with _lock:
        before, _current = _current, clock
    try:
        yield clock
    finally:
        with _lock:
            _current = before


class Manual:
    """A clock that stands still until moved: `advance(seconds=3)`, or `set(instant)`."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a manual clock starts at an aware instant")
        self._at = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self._at

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        """Move forward by `delta` or by timedelta(**parts); return the new instant."""
        self._at += delta if delta is not None else timedelta(**parts)
        return self._at

    def set(self, instant: datetime) -> None:
        self._at = instant.astimezone(UTC)
