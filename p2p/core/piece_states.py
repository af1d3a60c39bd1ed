"""Each piece's state as data: the transition table, and the book of every piece. Pure.

A download's pieces move through five states (libtorrent's piece picker keeps its
block states the same way, with a ``check_invariant``)::

    missing    nobody is fetching it
    requested  one or more connections fetch it (more than one only in the endgame)
    writing    a copy arrived and is being written: the first copy claims the piece
    unchecked  written without its own hash while the download is alone; the whole
               file's SHA-256 checks it, or it is hashed when others appear
    have       verified and written: shared from now on, never fetched again

``TRANSITIONS`` lists every move, as (state, event): the next state (h11 keeps its
connection states the same way). ``PieceBook.move`` refuses any other with
``IllegalTransition``: a move the table lacks is a bug of the downloader, never the
holder's doing. Choosing a piece (``picker.py``) is separate from taking it here.
"""

from p2p.core.errors import IllegalTransition

MISSING, REQUESTED, WRITING, UNCHECKED, HAVE = (
    "missing", "requested", "writing", "unchecked", "have")

TRANSITIONS = {  # (state, event): the state it leads to
    (MISSING, "take"): REQUESTED,  # a connection fetches it
    (REQUESTED, "take"): REQUESTED,  # another one too, in the endgame
    (REQUESTED, "let-go"): MISSING,  # the last connection on it let it go
    (REQUESTED, "arrive"): WRITING,  # the first good copy claims it
    (MISSING, "arrive"): WRITING,  # ...even one whose connection had let it go meanwhile
    (WRITING, "written-unhashed"): UNCHECKED,  # alone: the whole file's SHA-256 checks it
    (WRITING, "written-verified"): HAVE,
    (WRITING, "write-failed"): MISSING,
    (UNCHECKED, "hash-good"): HAVE,  # hashed after all
    (UNCHECKED, "hash-bad"): MISSING,  # ...and fetched again from someone else
}
STATES = (MISSING, REQUESTED, WRITING, UNCHECKED, HAVE)
EVENTS = tuple(dict.fromkeys(event for _, event in TRANSITIONS))
OPEN = (MISSING, REQUESTED)  # still to fetch
HERE = (UNCHECKED, HAVE)  # on disk, whole


class PieceBook:
    """The state of each of ``count`` pieces, who fetches each, and who sent each copy
    being written or written unhashed. ``have`` (a Bitfield) is kept equal to the pieces
    in state ``have``: the peer's server shares exactly those."""

    def __init__(self, count, have):
        self.count = count
        self.have = have
        self.states = [HAVE if i in have else MISSING for i in range(count)]
        self.open = {i for i in range(count) if i not in have}
        self.fetchers = {}  # requested piece -> keys of the connections fetching it
        self.senders = {}  # writing or unchecked piece -> peer id of the copy's sender
        self.writing = 0

    def state(self, index):
        return self.states[index]

    def move(self, index, event):
        """Piece ``index`` goes where ``event`` leads from its state, or IllegalTransition."""
        now = self.states[index]
        to = TRANSITIONS.get((now, event))
        if to is None:
            raise IllegalTransition(f"piece {index} is {now}: {event} is not a move from there")
        self.states[index] = to
        if to in OPEN:
            self.open.add(index)
        else:
            self.open.discard(index)
        self.writing += (to == WRITING) - (now == WRITING)
        if to == HAVE:
            self.have.add(index)

    @property
    def done(self):
        """Every piece is on disk whole (verified or unchecked), none being written."""
        return not self.open and not self.writing

    def here(self):
        """How many pieces are on disk whole."""
        return self.count - len(self.open) - self.writing

    def is_here(self, index):
        return self.states[index] in HERE

    def unchecked(self):
        return [i for i, s in self.senders.items() if self.states[i] == UNCHECKED]

    # -- the moves, by event ------------------------------------------------

    def take(self, index, key):
        """Connection ``key`` fetches piece ``index`` (missing, or requested in the endgame)."""
        self.move(index, "take")
        self.fetchers.setdefault(index, set()).add(key)

    def release(self, index, key):
        """Connection ``key`` no longer fetches piece ``index``: missing again when it was the
        last one on it. A piece already claimed by another copy stays as it is."""
        keys = self.fetchers.get(index)
        if keys is None or key not in keys:
            return
        keys.discard(key)
        if not keys:
            del self.fetchers[index]
            self.move(index, "let-go")

    def claim(self, index, sender):
        """A copy of piece ``index`` from ``sender`` arrived: the first one claims the piece
        (writing) and gets the keys of the other connections fetching it, to cut short;
        None when another copy came first."""
        if self.states[index] not in OPEN:
            return None
        self.move(index, "arrive")
        others = self.fetchers.pop(index, set())
        self.senders[index] = sender
        return others

    def written(self, index, verified):
        """The claimed copy is on disk: ``have`` when it was hashed, else ``unchecked``."""
        self.move(index, "written-verified" if verified else "written-unhashed")
        if verified:
            self.senders.pop(index, None)

    def unwritten(self, index):
        """Writing the claimed copy failed: the piece is missing again."""
        self.move(index, "write-failed")
        self.senders.pop(index, None)

    def checked(self, index, good):
        """An unchecked piece was hashed: ``have``, or missing again. Its sender's peer id."""
        self.move(index, "hash-good" if good else "hash-bad")
        return self.senders.pop(index, None)

    def check_invariant(self):
        """AssertionError if the book disagrees with itself."""
        for index, state in enumerate(self.states):
            assert state in STATES, (index, state)
            assert (index in self.open) == (state in OPEN), (index, state)
            assert (index in self.have) == (state == HAVE), (index, state)
            assert (index in self.fetchers) == (state == REQUESTED), (index, state)
            assert (index in self.senders) == (state in (WRITING, UNCHECKED)), (index, state)
        assert all(self.fetchers.values()), "a requested piece with nobody fetching it"
        assert self.writing == self.states.count(WRITING)
