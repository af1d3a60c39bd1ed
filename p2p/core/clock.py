"""Time for the pure core: ``Clock`` reads the monotonic clock, ``FakeClock`` is moved by hand."""

import time


class Clock:
    """Seconds on the monotonic clock."""

    def now(self):
        return time.monotonic()


class FakeClock:
    """A clock for tests: it stands still until ``advance`` moves it."""

    def __init__(self, start=1000.0):
        self._now = start

    def now(self):
        return self._now

    def advance(self, seconds):
        self._now += seconds
