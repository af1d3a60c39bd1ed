"""The download plan: which piece next from whom, and whom to blame. Pure: no sockets, no files.

``download.py`` feeds it what happens (a holder joined with these pieces, a
piece arrived and did or did not verify, a connection broke, a holder is slow)
and asks it what to do (``next_piece``: this piece from that holder, or
nothing for now). Time is passed in, never read, so tests drive it by hand.

Which piece next (``next_piece``), in one place:

* **In order** while the download is alone: every holder has the whole file
  and no other peer is downloading it. Connections then take consecutive
  pieces, and the whole-file SHA-256 runs alongside instead of after.
* **Rarest first** otherwise: among the pieces this holder has that nobody is
  fetching, the ones the fewest known holders have, chosen at random among
  those (so downloaders that start together ask the seed for different pieces
  and then have something to swap).
* **Endgame**: when every missing piece is being fetched, an idle connection
  fetches a piece another connection is already on (at most ``ENDGAME_COPIES``
  at once), so the slowest holder does not set the finish time; the first copy
  that verifies wins and the others are cancelled.

Blame (libtorrent's smart-ban, at piece level): a piece that fails its hash
is thrown away and fetched again from someone else; its sender gets a strike,
and ``BAN_STRIKES`` strikes drop it for the rest of the download. A holder's
transfer ends ``failed`` (blamed at the load balancer) when it sent a bad
piece or its connection broke, ``done`` when it delivered, ``cancelled``
otherwise (busy, slow, nothing we needed): busy is never blame.

A holder much slower than the fastest (``SLOW_RATIO``, after ``SLOW_GRACE_S``)
is let go (``slow``), so a trickle never holds a download while faster
holders are online.
"""

import random
from dataclasses import dataclass, field

ENDGAME_COPIES = 2  # connections fetching one piece at once, at the end
BAN_STRIKES = 2  # bad pieces from one holder before it is dropped for this download
SLOW_RATIO = 8  # a holder this many times slower than the fastest is let go...
SLOW_GRACE_S = 5.0  # ...once both have been sending for this long


@dataclass
class Source:
    """What the plan knows of one holder it fetches from (one connection, one lease)."""
    key: object
    peer_id: str
    pieces: object = None  # a Bitfield of what it has, or None: the whole file
    strikes: int = 0
    faulted: bool = False
    delivered: int = 0  # pieces it sent that verified
    received: int = 0  # bytes it sent
    since: float = None  # when it started sending
    fetching: set = field(default_factory=set)
    spoiled: set = field(default_factory=set)  # pieces it sent bad: asked of others instead

    def has(self, index):
        return self.pieces is None or index in self.pieces

    def may_send(self, index):
        return self.has(index) and index not in self.spoiled

    @property
    def banned(self):
        return self.strikes >= BAN_STRIKES

    def rate(self, now):
        if self.since is None or now <= self.since:
            return 0.0
        return self.received / (now - self.since)


@dataclass
class Arrival:
    """What a piece that arrived changed: new (first good copy), bad, banned, and the other
    connections fetching the same piece, to cancel."""
    new: bool = False
    verified: bool = True  # hashed (False: landed unhashed while alone)
    bad: bool = False
    banned: bool = False
    cancel: list = field(default_factory=list)


class Plan:
    """The pieces of one download: what is here, what is being fetched, from whom."""

    def __init__(self, count, have, rng=None):
        self.count = count
        self.have = have  # a Bitfield, filled with what is already verified on disk
        self.missing = set(have.missing())
        self.fetchers = {}  # piece -> keys of the sources fetching it
        self.sources = {}  # key -> Source
        self.availability = [0] * count  # how many known holders have each piece
        self.alone = True  # in order (see the module docstring), until others appear
        self.shunned = set()  # peer ids that broke down or were banned: not asked again
        self.unchecked = {}  # piece -> peer id that sent it, written unhashed while alone
        self._rng = rng or random.Random()
        self._lowest = 0  # in order: no free piece below this one

    @property
    def done(self):
        return not self.missing

    # -- holders ------------------------------------------------------------

    def add_source(self, key, peer_id, pieces=None):
        """A holder to fetch from: ``pieces`` is its Bitfield, None when it has it all."""
        self.sources[key] = source = Source(key, peer_id, pieces)
        self._count(source, +1)
        if pieces is not None:
            self.alone = False
        return source

    def update_source(self, key, pieces):
        """A partial holder said again what it has."""
        source = self.sources[key]
        self._count(source, -1)
        source.pieces = pieces
        self._count(source, +1)

    def _count(self, source, step):
        if source.pieces is None:
            self.availability = [n + step for n in self.availability]
        else:
            for i in range(self.count):
                if i in source.pieces:
                    self.availability[i] += step

    def remove_source(self, key):
        """The holder's connection is over; returns the outcome to end its transfer with."""
        source = self.sources.pop(key)
        for index in list(source.fetching):
            self.release(key, index)
        self._count(source, -1)
        return self.outcome(source)

    @staticmethod
    def outcome(source):
        if source.strikes or source.faulted:
            return "failed"
        return "done" if source.delivered else "cancelled"

    def wants(self, key):
        """Does this holder have a piece we still miss?"""
        source = self.sources[key]
        return not source.banned and any(source.may_send(i) for i in self.missing)

    def banned(self):
        """Peer ids never to ask again in this download."""
        return set(self.shunned)

    # -- which piece next ---------------------------------------------------

    def next_piece(self, key):
        """The piece this holder's connection should fetch now, or None."""
        source = self.sources[key]
        if source.banned:
            return None
        index = self._in_order(source) if self.alone else self._rarest(source)
        if index is None:
            index = self._endgame(source)
        if index is not None:
            self._take(source, index)
        return index

    def _take(self, source, index):
        self.fetchers.setdefault(index, set()).add(source.key)
        source.fetching.add(index)

    def next_run(self, key, most):
        """Up to ``most`` consecutive pieces for this holder's connection to fetch with one
        request (more than one only in order, and no more than half a fair share of the
        pieces nobody is fetching, so every connection has some); [] for none now."""
        index = self.next_piece(key)
        if index is None:
            return []
        run = [index]
        source = self.sources[key]
        most = min(most, max(1, (len(self.missing) - len(self.fetchers))
                             // (2 * len(self.sources))))
        while self.alone and len(run) < most:
            following = run[-1] + 1
            if following not in self.missing or following in self.fetchers \
                    or not source.may_send(following):
                break
            self._take(source, following)
            run.append(following)
        return run

    def _in_order(self, source):
        for index in range(self._lowest, self.count):
            if index in self.missing and index not in self.fetchers:
                self._lowest = index
                return index if source.may_send(index) else self._rarest(source)
        self._lowest = self.count
        return None

    def _rarest(self, source):
        best, rarest = None, []
        for index in self.missing:
            if index in self.fetchers or not source.may_send(index):
                continue
            n = self.availability[index]
            if best is None or n < best:
                best, rarest = n, [index]
            elif n == best:
                rarest.append(index)
        return self._rng.choice(rarest) if rarest else None

    def _endgame(self, source):
        """A piece others are fetching, when nothing else is left: the one with the fewest
        connections on it, and among those the one fetched longest."""
        if any(i not in self.fetchers for i in self.missing if source.may_send(i)):
            return None
        choices = [i for i, keys in self.fetchers.items()
                   if source.key not in keys and len(keys) < ENDGAME_COPIES
                   and i in self.missing and source.may_send(i)]
        if not choices:
            return None
        return min(choices, key=lambda i: (len(self.fetchers[i]), i))

    # -- what happened ------------------------------------------------------

    def sent(self, key, nbytes, now):
        """Bytes arrived from a holder (for its rate)."""
        source = self.sources[key]
        if source.since is None:
            source.since = now
        source.received += nbytes

    def arrived(self, key, index, good):
        """A whole piece arrived from ``key`` and did (``good``) or did not verify."""
        source = self.sources.get(key)
        self._unfetch(key, index)
        if not good:
            if source is None:
                return Arrival(bad=True)
            source.strikes += 1
            source.spoiled.add(index)
            if source.banned:
                self.shunned.add(source.peer_id)
            return Arrival(bad=True, banned=source.banned)
        if source is not None:
            source.delivered += 1
        if index not in self.missing:
            return Arrival()
        self.missing.discard(index)
        self.have.add(index)
        others = self.fetchers.pop(index, set())
        for other in others:
            self.sources[other].fetching.discard(index)
        return Arrival(new=True, cancel=sorted(others, key=str))

    def landed(self, key, peer_id, index):
        """A whole piece arrived from ``key`` (``peer_id``; its connection may be gone by
        now) while the download is alone: written without
        its own hash (the whole file's SHA-256 checks it, see ``download.py``), so it is
        no longer missing, but not verified (not in ``have``, never shared)."""
        source = self.sources.get(key)
        self._unfetch(key, index)
        if index not in self.missing:
            return Arrival()
        self.missing.discard(index)
        self.unchecked[index] = peer_id
        if source is not None:
            source.delivered += 1
        others = self.fetchers.pop(index, set())
        for other in others:
            self.sources[other].fetching.discard(index)
        return Arrival(new=True, verified=False, cancel=sorted(others, key=str))

    def checked(self, index, good):
        """A piece that landed unhashed was hashed after all: now verified, or (``good``
        false) missing again, its sender struck as for any bad piece. Returns the sender's
        peer id when it was bad."""
        sender = self.unchecked.pop(index, None)
        if good:
            self.have.add(index)
            return None
        self.missing.add(index)
        self._lowest = min(self._lowest, index)
        for source in self.sources.values():
            if source.peer_id == sender:
                source.strikes += 1
                source.spoiled.add(index)
                if source.banned:
                    self.shunned.add(sender)
        return sender

    def landed_or_verified(self, index):
        return index in self.have or index in self.unchecked

    def release(self, key, index):
        """A piece this holder was fetching will not come from it (cancelled, or missing
        there after all); someone else may fetch it."""
        self._unfetch(key, index)

    def _unfetch(self, key, index):
        source = self.sources.get(key)
        if source is not None:
            source.fetching.discard(index)
        keys = self.fetchers.get(index)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.fetchers[index]
        self._lowest = min(self._lowest, index)

    def lacks(self, key, index):
        """The holder said it does not have this piece (its bitfield was out of date)."""
        self.release(key, index)
        source = self.sources[key]
        if source.pieces is not None and index in source.pieces:
            source.pieces.discard(index)
            self.availability[index] -= 1

    def fault(self, key, peer_id):
        """The holder's connection broke or it broke the protocol (perhaps before it was
        added, with a false piece list): not asked again; its transfer ends ``failed``."""
        source = self.sources.get(key)
        if source is not None:
            source.faulted = True
        self.shunned.add(peer_id)

    def slow(self, now):
        """Holders much slower than the fastest, to let go while faster ones are online."""
        rates = {key: s.rate(now) for key, s in self.sources.items()
                 if s.since is not None and now - s.since >= SLOW_GRACE_S}
        if len(rates) < 2:
            return []
        fastest = max(rates.values())
        return [key for key, rate in rates.items() if rate * SLOW_RATIO < fastest]

    @property
    def here(self):
        """Pieces here, verified or landed."""
        return self.count - len(self.missing)

    def progress(self, piece_bytes, size):
        """Bytes here so far, verified or landed (the last piece may be short)."""
        full = self.here * piece_bytes
        if self.count and (self.count - 1) not in self.missing:
            full -= self.count * piece_bytes - size
        return full
