"""Time for the state machines: ``Clock`` reads the monotonic clock, ``FakeClock`` is moved by hand.

A machine in ``p2p/core`` takes a clock instead of calling ``time.monotonic``, so
that its unit tests step time exactly (``FakeClock.advance``) without sleeping.
"""

import time


class Clock:
    """The real monotonic clock, in seconds."""

    def now(self):
        return time.monotonic()


class FakeClock:
    """A clock that stands still until ``advance(seconds)``."""

    def __init__(self, start=0.0):
        self.t = float(start)

    def now(self):
        return self.t

    def advance(self, seconds):
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self.t += seconds
        return self.t
