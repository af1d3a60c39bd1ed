"""The swarm's decisions around the plan, on a Clock: when to ask the load balancer for more
holders, what each of its answers means, how long to wait, when to give up. Pure.

The downloader's loop (``net/swarm.py``) asks ``Asking.due``; when it is due, it
asks the load balancer and hands the answer over (``got``, ``busy``,
``none_left``, ``unreachable``); each gives a ``Decision``: go on (saying what
it waits for, if anything) or give up, and why. The machine's states::

    fetching   holders are sending, or may: more are asked for every
               ``ask_more_every_s``; every ``ask_soon_every_s`` while it is ``soon``:
               alone (others may start downloading the file any moment, and each
               pick says whether they have), or while the load balancer says more
               peers download the file than this download fetches from (they are
               handed out as soon as they have verified pieces to share)
    busy       every holder is busy: asked again after its Retry-After, within
               ``ask_busy_min_s`` .. ``busy_wait_max_s`` (after ``ask_soon_every_s``
               when others download the file: each becomes a holder with its first
               verified piece); busy is never blame
    stalled    no connection is left, and no holder of this version is online (or
               no load balancer answers): "stalled: no holder of f.bin is online;
               waiting". Asked again after ``stall_first_s``, doubling up to
               ``stall_max_s``: never a busy loop. Every verified piece is kept;
               the download carries on by itself once a holder is handed out.

Busy or stalled for ``wait_s`` in a row with no connection left gives up (None:
never; 0: at once). A byte arriving (``progressed``) ends the wait.
"""

from dataclasses import dataclass

FETCHING, BUSY, STALLED = "fetching", "busy", "stalled"


@dataclass(frozen=True)
class Pace:
    """How often the swarm asks the load balancer, and how many holders it keeps."""
    max_sources: int = 8  # holders one download fetches from at once
    ask_more_every_s: float = 2.0  # while below max_sources, ask for more this often
    ask_soon_every_s: float = 0.25  # ...and this often while alone or others are coming
    ask_busy_min_s: float = 0.5  # every holder busy: shortest wait before asking again
    busy_wait_max_s: float = 5.0  # ...and the longest Retry-After honoured
    stall_first_s: float = 1.0  # stalled: ask again after this long...
    stall_max_s: float = 10.0  # ...then twice as long each time, up to this


PACE = Pace()


@dataclass
class Decision:
    """Go on (``waiting``: what for, shown to the person) or ``give_up`` (``why``: the
    sentence, or for a stall what to add to the load balancer's own)."""
    waiting: str = ""
    give_up: bool = False
    why: str = ""


def holders(n):
    return f"{n} {'holder' if n == 1 else 'holders'}"


class Asking:
    """When to ask the load balancer for more holders of ``name``, and what its answers
    mean; time from ``clock``, patience ``wait_s`` (None: for ever)."""

    def __init__(self, name, clock, wait_s=None, pace=PACE, soon=True):
        self.name, self.clock, self.wait_s, self.pace = name, clock, wait_s, pace
        self.state = FETCHING
        self.since = None  # busy or stalled, with nothing arriving, since then
        self.poll_s = pace.stall_first_s
        self.waiting = ""
        self.ask_at = clock.now() + self._every(soon)

    def _every(self, soon):
        return self.pace.ask_soon_every_s if soon else self.pace.ask_more_every_s

    def due(self, active):
        """Is it time to ask for more holders, with ``active`` connections open?"""
        return active < self.pace.max_sources and self.clock.now() >= self.ask_at

    def wait(self):
        """Seconds until the next question is due (0: now)."""
        return max(0.0, self.ask_at - self.clock.now())

    @property
    def stalled(self):
        return self.state == STALLED

    def progressed(self):
        """Bytes arrived: whatever was waited for is over."""
        self.since, self.poll_s, self.waiting = None, self.pace.stall_first_s, ""
        self.state = FETCHING

    def got(self, soon):
        """Holders were handed out: fetch from them (the wait ends when bytes arrive)."""
        self.state, self.waiting = FETCHING, ""
        self.ask_at = self.clock.now() + self._every(soon)

    def busy(self, count, retry_after, active, soon=False):
        """Every holder is busy (``count`` of them), come back after ``retry_after``; or,
        ``soon``, as soon as others downloading the file may have become holders."""
        now = self.clock.now()
        self.state, self.since = BUSY, self.since if self.since is not None else now
        self.waiting = f"waiting for a free upload slot, {holders(count)} busy"
        self.ask_at = now + (self.pace.ask_soon_every_s if soon else min(
            self.pace.busy_wait_max_s, max(retry_after, self.pace.ask_busy_min_s)))
        return self._patience(active, lambda: f"Waited {self.wait_s:g} s for a free upload "
                              f"slot for {self.name!r}; every holder is busy.")

    def none_left(self, active, soon, busy_soon=False):
        """Nobody (else) holds this version now. With connections still open, or a holder
        that said busy a moment ago, ask again soon; with none, the download stalls."""
        if active or busy_soon:
            self.ask_at = self.clock.now() + self._every(soon)
            return Decision(self.waiting)
        return self._stall(f"stalled: no holder of {self.name} is online; waiting")

    def unreachable(self, active):
        """No load balancer answers: the holders at hand go on; with none, stalled."""
        if active:
            self.ask_at = self.clock.now() + self.pace.ask_more_every_s
            return Decision(self.waiting)
        return self._stall(f"stalled: no load balancer answers and no holder of {self.name} "
                           "is sending; waiting")

    def _stall(self, waiting):
        now = self.clock.now()
        if self.state != STALLED:
            self.state = STALLED
            self.since = self.since if self.since is not None else now
        self.waiting = waiting
        self.ask_at = now + self.poll_s
        self.poll_s = min(self.poll_s * 2, self.pace.stall_max_s)
        return self._patience(0, lambda: f" Waited {self.wait_s:g} s for one to come back."
                              if self.wait_s else "")

    def _patience(self, active, why):
        if active or self.wait_s is None or self.clock.now() - self.since < self.wait_s:
            return Decision(self.waiting)
        return Decision(self.waiting, give_up=True, why=why())
