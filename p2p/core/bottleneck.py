"""What holds a download back now, and how fast each source sends it. Pure, on a Clock.

The downloader's loop (``net/swarm.py``, through ``net/speed.py``) hands over
``Facts`` a few times a second: each holder's recent rate (``SourceRates``, over
``RATE_WINDOW_S`` from its first byte) and the upload limit it said it has (the ``X-Upload-Limit``
and ``X-Uploads`` headers of its answers, ``upload_terms``; see
docs/protocol.md), how many holders turned us away as busy lately, how many
pieces wait for their SHA-256 and how fast they are hashed. ``limiting`` names
the one factor that holds the download back, the first of these that applies:

==============  ======================================================================
measuring       bytes arrive, but for less than ``SETTLE_S``: no reason yet (no text)
stalled         nothing arrives and no holder of the file is online
busy            nothing arrives and holders answered busy
waiting         nothing arrives yet: connecting, or waiting for an answer
verification    the pieces waiting for their SHA-256 fill ``VERIFY_BACKLOG_SHARE`` of
                the buffers: the hashing sets the pace
upload limit    the holders sending at their upload limit (``AT_LIMIT_SHARE`` of it,
                split among their uploads) carry ``LIMITED_SHARE`` of what arrives
busy            fewer holders send than the download may use, and others answered busy
link            none of these: this machine's link (or its receiving) sets the pace
==============  ======================================================================

``LimitWatch`` shows a new reason among the last four only once it has held for
``REASON_HOLD_S``, so that the line does not flicker between two of them.
"""

import collections
import re
from dataclasses import dataclass

from p2p.core.units import human_size

RATE_WINDOW_S = 2.0  # a rate shown is over this much time
SETTLE_S = 1.0  # bytes have arrived this long before a reason is given (the rates need it)
AT_LIMIT_SHARE = 0.75  # a holder sending us this much of its share of its upload limit is
# at it (a rate is counted in pieces: a 2 s window of 1 MiB/s in 256 KiB pieces is +-12 %)
LIMITED_SHARE = 0.5  # ...and the holders at their limit carry this much of what arrives
VERIFY_BACKLOG_SHARE = 0.5  # pieces waiting for SHA-256 fill this much of the buffers
BUSY_RECENT_S = 5.0  # a holder's busy answer counts this long (the longest Retry-After kept)
REASON_HOLD_S = 1.0  # a new reason (while bytes arrive) is shown once it has held this long

STALLED, BUSY, WAITING, MEASURING = "stalled", "busy", "waiting", "measuring"
VERIFICATION, UPLOAD_LIMIT, LINK = "verification", "upload limit", "link"
ARRIVING = (VERIFICATION, UPLOAD_LIMIT, BUSY, LINK)  # kinds while bytes arrive

UPLOAD_LIMIT_HEADER = "X-Upload-Limit"  # a holder's limit on all its uploads, bytes/s
UPLOADS_HEADER = "X-Uploads"  # ...and the uploads it serves now, this one among them


class RateWindow:
    """Bytes per second over the last RATE_WINDOW_S, from a running total."""

    def __init__(self):
        self.samples = collections.deque()

    def add(self, now, total):
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()
        then, before = self.samples[0]
        return (total - before) / (now - then) if now > then else 0.0


class SourceRates:
    """A RateWindow per source, from each source's running total of bytes received."""

    def __init__(self):
        self._windows = {}

    def update(self, now, totals):
        """{key: bytes received so far} -> {key: bytes/s lately}, counted from a source's
        first byte (not from when it was asked); a source not named is forgotten."""
        self._windows = {key: self._windows.get(key) or RateWindow() for key in totals}
        return {key: window.add(now, totals[key]) if totals[key] else 0.0
                for key, window in self._windows.items()}


def upload_terms(headers):
    """(upload limit in bytes/s, uploads served now) from a holder's answer's headers
    (lower-case names); (0, 1) when it said none or something unreadable."""
    limit = headers.get(UPLOAD_LIMIT_HEADER.lower(), "").strip()
    uploads = headers.get(UPLOADS_HEADER.lower(), "").strip()
    if not re.fullmatch(r"[0-9]{1,15}", limit):
        return 0, 1
    return int(limit), int(uploads) if re.fullmatch(r"[0-9]{1,6}", uploads) and \
        int(uploads) > 0 else 1


@dataclass(frozen=True)
class Source:
    """One holder sending to this download: its address, its rate to us lately, and the
    upload limit it said it has (0: none said), shared among ``uploads`` uploads."""
    address: str
    rate: float
    upload_limit: int = 0
    uploads: int = 1

    @property
    def at_limit(self):
        """Does it send us (nearly) all its upload limit allows, split among its uploads?"""
        return bool(self.upload_limit) and \
            self.rate >= AT_LIMIT_SHARE * self.upload_limit / self.uploads


@dataclass(frozen=True)
class Facts:
    """What the downloader knows at one moment, for ``limiting``."""
    rate: float  # bytes/s arriving lately, from every source
    sources: tuple = ()  # Source, per holder connected now
    max_sources: int = 8  # holders the download may fetch from at once
    turned_away: int = 0  # holders that answered busy within BUSY_RECENT_S
    all_busy: bool = False  # the load balancer said every holder is busy
    stalled: bool = False  # no holder of the file is online
    verify_queue: int = 0  # pieces waiting for their SHA-256
    verify_room: int = 0  # pieces the sources' buffers hold in all
    verify_rate: float = 0.0  # bytes/s verified lately
    receiving_s: float = SETTLE_S  # how long bytes have been arriving


@dataclass(frozen=True)
class Limit:
    """What holds the download back (``kind``, one of the module's), in words."""
    kind: str
    text: str


def limiting(facts):
    """The Limit that holds the download back now (see the module for the order)."""
    if facts.rate <= 0:
        if facts.stalled:
            return Limit(STALLED, "waiting for a holder to come online")
        if facts.turned_away or facts.all_busy:
            return Limit(BUSY, f"waiting: every holder is busy{busy_count(facts)}")
        return Limit(WAITING, "waiting for holders")
    if facts.receiving_s < SETTLE_S:
        return Limit(MEASURING, "")
    if facts.verify_room and facts.verify_queue >= VERIFY_BACKLOG_SHARE * facts.verify_room:
        hashing = f" at {human_size(facts.verify_rate)}/s" if facts.verify_rate else ""
        return Limit(VERIFICATION, f"limited by verification (SHA-256{hashing})")
    at_limit = [s for s in facts.sources if s.at_limit]
    if at_limit and sum(s.rate for s in at_limit) >= LIMITED_SHARE * facts.rate:
        return Limit(UPLOAD_LIMIT, "limited by " + describe_upload_limits(at_limit))
    if (facts.turned_away or facts.all_busy) and len(facts.sources) < facts.max_sources:
        return Limit(BUSY, f"limited by busy holders{busy_count(facts)}")
    return Limit(LINK, "limited by this machine's link")


def busy_count(facts):
    return f" ({facts.turned_away} turned us away)" if facts.turned_away else ""


def describe_upload_limits(sources):
    """"the holder's upload limit (4.0 MiB/s)", "the holders' upload limits (2 × 4.0 MiB/s)"
    or "(4.0 MiB/s + 2.0 MiB/s)"; "shared by 3 downloads" when a holder splits its own."""
    limits = sorted((s.upload_limit for s in sources), reverse=True)
    shared = max(s.uploads for s in sources)
    split = f", shared by {shared} downloads" if shared > 1 else ""
    if len(limits) == 1:
        return f"the holder's upload limit ({human_size(limits[0])}/s{split})"
    figures = (f"{len(limits)} × {human_size(limits[0])}/s" if len(set(limits)) == 1
               else " + ".join(f"{human_size(n)}/s" for n in limits))
    return f"the holders' upload limits ({figures}{split})"


class LimitWatch:
    """The reason shown, on ``clock``: a change among the reasons while bytes arrive is
    shown once it has held for ``hold_s``; any other change at once."""

    def __init__(self, clock, hold_s=REASON_HOLD_S):
        self.clock, self.hold_s = clock, hold_s
        self.shown = None
        self._next = None  # (kind, since when) of a reason not shown yet

    def see(self, limit):
        """The Limit to show now, given the one that holds now."""
        now = self.clock.now()
        settled = self.shown is not None and self.shown.kind in ARRIVING \
            and limit.kind in ARRIVING
        if not settled or limit.kind == self.shown.kind:
            self.shown, self._next = limit, None
            return limit
        if self._next is None or self._next[0] != limit.kind:
            self._next = (limit.kind, now)
        if now - self._next[1] >= self.hold_s:
            self.shown, self._next = limit, None
        return self.shown
