"""The download plan: which piece next from whom, and whom to blame. Pure: no sockets, no files.

The downloader feeds it what happens (a holder joined with these pieces, a copy
of a piece arrived and did or did not verify, a connection broke, a holder is
slow) and asks it what to do (``next_piece``: this piece from that holder, or
nothing for now). Time is passed in, never read, so tests drive it by hand.

Each piece's state lives in a ``PieceBook`` (``piece_states.py``: missing,
requested, writing, unchecked, have; an illegal move raises). Choosing a piece
is ``picker.py`` (in order while alone, rarest first, endgame); the plan takes
the choice (``take``), so choosing and taking are separate steps.

Blame (libtorrent's smart-ban, at piece level): a piece that fails its hash
is thrown away and fetched again from someone else; its sender gets a strike,
and ``BAN_STRIKES`` strikes drop it for the rest of the download. A holder's
transfer ends ``failed`` (blamed at the load balancer) when it sent a bad
piece, its connection broke or it lied about its pieces; ``done`` when it
delivered; ``cancelled`` otherwise (busy, slow, nothing we needed): busy is
never blame. A holder much slower than the fastest (``SLOW_RATIO``, after
``SLOW_GRACE_S``) is let go (``slow``), so a trickle never holds a download.
"""

import random
from dataclasses import dataclass, field

from p2p.core import picker
from p2p.core.piece_states import HERE, PieceBook

BAN_STRIKES = 2  # bad pieces from one holder before it is dropped for this download
SLOW_RATIO = 8  # a holder this many times slower than the fastest is let go...
SLOW_GRACE_S = 5.0  # ...once both have been sending for this long
SUPER_SEED_TAIL_PIECES = 16  # a seed with fewer pieces than this sent to nobody: one at a time


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
    sent: object = None  # a whole holder's Bitfield of pieces it sent to anyone (super-seeding)
    taken: set = field(default_factory=set)  # ...it refused, sent to others: asked last

    def has(self, index):
        return self.pieces is None or index in self.pieces

    def may_send(self, index):
        return self.has(index) and index not in self.spoiled and index not in self.taken

    @property
    def banned(self):
        return self.strikes >= BAN_STRIKES

    def rate(self, now):
        if self.since is None or now <= self.since:
            return 0.0
        return self.received / (now - self.since)

    @property
    def outcome(self):
        if self.strikes or self.faulted:
            return "failed"
        return "done" if self.delivered else "cancelled"


@dataclass
class Arrival:
    """What a copy that arrived changed: ``new`` (it claimed the piece: write it), ``bad``,
    ``banned``, and the other connections fetching the same piece, to cut short."""
    new: bool = False
    bad: bool = False
    banned: bool = False
    cancel: list = field(default_factory=list)


class Holders:
    """The holders a plan fetches from (``sources``), what each has, and their blame. The
    plan's half about holders; ``Plan`` adds the pieces (``book``)."""

    def __init__(self, count):
        self.sources = {}  # key -> Source
        self.availability = picker.Availability(count)
        self.shunned = set()  # peer ids that broke down, lied or were banned: not asked again

    def add_source(self, key, peer_id, pieces=None):
        """A holder to fetch from: ``pieces`` is its Bitfield, None when it has it all."""
        self.sources[key] = source = Source(key, peer_id, pieces)
        self.availability.count(pieces, +1)
        if pieces is not None:
            self.alone = False
        return source

    def update_source(self, key, pieces):
        """A partial holder said again what it has."""
        source = self.sources[key]
        self.availability.count(source.pieces, -1)
        source.pieces = pieces
        self.availability.count(pieces, +1)

    def remove_source(self, key):
        """The holder's connection is over; returns the outcome to end its transfer with."""
        source = self.sources.pop(key)
        for index in list(source.fetching):
            self.book.release(index, key)
        self.availability.count(source.pieces, -1)
        return source.outcome

    def wants(self, key):
        """Does this holder have a piece we still need to fetch?"""
        source = self.sources[key]
        return not source.banned and any(source.may_send(i) for i in self.book.open)

    def banned(self):
        """Peer ids never to ask again in this download."""
        return set(self.shunned)

    def sent(self, key, nbytes, now):
        """Bytes arrived from a holder (for its rate)."""
        source = self.sources[key]
        if source.since is None:
            source.since = now
        source.received += nbytes

    def _strike(self, source, index):
        source.strikes += 1
        source.spoiled.add(index)
        if source.banned:
            self.shunned.add(source.peer_id)

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


class Plan(Holders):
    """The pieces of one download: their states, who fetches what, and what arrived."""

    def __init__(self, count, have, rng=None):
        self.count = count
        self.book = PieceBook(count, have)
        self.have = have  # a Bitfield of the verified pieces (the server shares these)
        super().__init__(count)
        self.alone = True  # in order (see picker.py), until others appear
        self._rng = rng or random.Random()
        self._lowest = 0  # in order: no free piece below this one

    @property
    def done(self):
        return self.book.done

    @property
    def missing(self):
        """The pieces not on disk whole yet (to fetch, being fetched or being written)."""
        return {i for i in range(self.count) if self.book.state(i) not in HERE}

    @property
    def fetchers(self):
        return self.book.fetchers

    def check_invariant(self):
        self.book.check_invariant()
        for key, source in self.sources.items():
            for index in source.fetching:
                assert key in self.book.fetchers.get(index, ()), (key, index)

    # -- which piece next: choose (picker.py), then take ----------------------

    def choose(self, key):
        """The piece this holder's connection should fetch now, or None; nothing moves."""
        source = self.sources[key]
        if source.banned:
            return None
        index = None
        if self.alone:
            index, self._lowest = picker.in_order(self.book, source, self._lowest)
        if index is None:
            index = picker.rarest(self.book, source, self.availability, self._rng)
        if index is None:
            index = picker.endgame(self.book, source)
        if index is None and source.taken:  # nothing else to ask it: ask again (it will send)
            source.taken.clear()
            return self.choose(key)
        return index

    def taken(self, key, indexes):
        """A whole holder refused ``indexes`` (super-seeding): it has sent them to other
        downloaders and not yet every piece to anyone. Others are asked for them; this
        holder again only when it has nothing else for us (it sends a piece asked twice)."""
        self.sources[key].taken.update(indexes)

    def pipelines(self, key):
        """May this holder's connection ask for the next piece before this one is in? Not
        a whole holder with only a few pieces it has sent to nobody yet (the end of
        super-seeding): a piece asked of it early is one the others cannot see is taken,
        and among a few they would often ask for it too."""
        sent = self.sources[key].sent
        return sent is None or not 0 < self.count - len(sent) < SUPER_SEED_TAIL_PIECES

    def take(self, key, index):
        self.book.take(index, key)
        self.sources[key].fetching.add(index)

    def next_piece(self, key):
        """Choose and take: the piece this holder's connection fetches now, or None."""
        index = self.choose(key)
        if index is not None:
            self.take(key, index)
        return index

    def next_run(self, key, most):
        """Up to ``most`` consecutive pieces for this holder's connection to fetch with one
        request (more than one only in order, and no more than half a fair share of the
        pieces nobody is fetching, so every connection has some); [] for none now."""
        index = self.next_piece(key)
        if index is None:
            return []
        run = [index]
        source = self.sources[key]
        most = min(most, max(1, (len(self.book.open) - len(self.book.fetchers))
                             // (2 * len(self.sources))))
        while self.alone and len(run) < most:
            following = run[-1] + 1
            if following >= self.count or not picker.free(self.book, source, following):
                break
            self.take(key, following)
            run.append(following)
        return run

    # -- what happened ------------------------------------------------------

    def claim(self, key, peer_id, index):
        """A good (or, alone, unhashed) copy of ``index`` arrived from ``key`` (``peer_id``;
        its connection may be gone by now): ``new`` if it claims the piece, to be written and
        then reported with ``written``."""
        self._unfetch(key, index)
        others = self.book.claim(index, peer_id)
        source = self.sources.get(key)
        if source is not None and others is not None:
            source.delivered += 1
        for other in others or ():
            self.sources[other].fetching.discard(index)
        return Arrival(new=others is not None, cancel=sorted(others or (), key=str))

    def written(self, index, verified):
        """The claimed copy of ``index`` is on disk: verified (shared from now on) or not."""
        self.book.written(index, verified)

    def unwritten(self, index):
        self.book.unwritten(index)
        self._lowest = min(self._lowest, index)

    def bad(self, key, index):
        """A copy of ``index`` from ``key`` failed its hash: a strike for its sender."""
        self._unfetch(key, index)
        source = self.sources.get(key)
        if source is None:
            return Arrival(bad=True)
        self._strike(source, index)
        return Arrival(bad=True, banned=source.banned)

    def arrived(self, key, index, good):
        """A copy of ``index`` arrived from ``key``, hashed: ``good`` claims it and it is
        written at once (for callers that write before telling the plan)."""
        if not good:
            return self.bad(key, index)
        arrival = self.claim(key, self.sources[key].peer_id, index)
        if arrival.new:
            self.written(index, verified=True)
        return arrival

    def landed(self, key, peer_id, index):
        """Claimed and written unhashed at once, while alone (see ``arrived``)."""
        arrival = self.claim(key, peer_id, index)
        if arrival.new:
            self.written(index, verified=False)
        return arrival

    def checked(self, index, good):
        """A piece written unhashed was hashed after all: now verified, or (``good`` false)
        missing again, its sender struck as for any bad piece. The sender's peer id when it
        was bad."""
        sender = self.book.checked(index, good)
        if good:
            return None
        self._lowest = min(self._lowest, index)
        for source in self.sources.values():
            if source.peer_id == sender:
                self._strike(source, index)
        return sender

    def landed_or_verified(self, index):
        return self.book.is_here(index)

    def unchecked(self):
        """The pieces written unhashed, not yet hashed."""
        return self.book.unchecked()

    def release(self, key, index):
        """A piece this holder was fetching will not come from it (cancelled, or missing
        there after all); someone else may fetch it."""
        self._unfetch(key, index)

    def _unfetch(self, key, index):
        source = self.sources.get(key)
        if source is not None:
            source.fetching.discard(index)
        self.book.release(index, key)
        self._lowest = min(self._lowest, index)

    def lacks(self, key, index):
        """The holder said it does not have this piece (its bitfield was out of date)."""
        self.release(key, index)
        source = self.sources[key]
        if source.pieces is not None and index in source.pieces:
            source.pieces.discard(index)
            self.availability.counts[index] -= 1

    @property
    def here(self):
        """Pieces on disk whole, verified or unchecked."""
        return self.book.here()

    def progress(self, piece_bytes, size):
        """Bytes on disk so far, verified or unchecked (the last piece may be short)."""
        full = self.here * piece_bytes
        if self.count and self.book.is_here(self.count - 1):
            full -= self.count * piece_bytes - size
        return full
