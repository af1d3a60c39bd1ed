"""Which piece next for one holder's connection: a choice only, never a move. Pure.

The plan (``plan.py``) takes what is chosen here (``PieceBook.take``); picking
reads the book and changes nothing, so a choice can be tested on its own.

* **In order** (``in_order``) while the download is alone: consecutive pieces,
  so the whole-file SHA-256 runs alongside instead of after.
* **Rarest first** (``rarest``) otherwise: among the pieces this holder has that
  nobody is fetching, those the fewest known holders have, one at random (so
  downloaders that start together ask the seed for different pieces). A whole
  holder that says which pieces it has sent to anyone (``Source.sent``) is asked
  for the others first: super-seeding (BEP 16), each piece leaves the seed once
  while downloaders still lack it, and they swap the rest among themselves.
* **Endgame** (``endgame``): when every piece still missing is being fetched, a
  piece another connection is on, at most ``ENDGAME_COPIES`` at once, so the
  slowest holder does not set the finish time.
"""

from p2p.core.piece_states import MISSING

ENDGAME_COPIES = 2  # connections fetching one piece at once, at the end


class Availability:
    """How many known holders have each piece."""

    def __init__(self, count):
        self.counts = [0] * count

    def count(self, pieces, step):
        """A holder with ``pieces`` (a Bitfield, or None for all) came (+1) or went (-1)."""
        if pieces is None:
            self.counts = [n + step for n in self.counts]
        else:
            for i in range(len(self.counts)):
                if i in pieces:
                    self.counts[i] += step

    def __getitem__(self, index):
        return self.counts[index]


def free(book, source, index):
    """Is ``index`` missing, fetched by nobody, and one ``source`` may send?"""
    return book.state(index) == MISSING and source.may_send(index)


def in_order(book, source, lowest):
    """(the lowest free piece for ``source``, the new ``lowest``): no free piece lies below
    ``lowest``. When the lowest free piece is one ``source`` may not send, rarest first."""
    for index in range(lowest, book.count):
        if book.state(index) == MISSING:
            return (index if source.may_send(index) else None), index
    return None, book.count


def rarest(book, source, availability, rng):
    """A free piece for ``source`` that it has not sent to anyone yet (when it says) and
    the fewest holders have, or None."""
    best, choices = None, []
    sent = source.sent
    for index in book.open:
        if not free(book, source, index):
            continue
        n = (sent is not None and index in sent, availability[index])
        if best is None or n < best:
            best, choices = n, [index]
        elif n == best:
            choices.append(index)
    return rng.choice(sorted(choices)) if choices else None


def endgame(book, source):
    """A piece others are fetching, when ``source`` has nothing free left: the one with the
    fewest connections on it, the lowest among those; or None."""
    if any(free(book, source, i) for i in book.open):
        return None
    choices = [i for i, keys in book.fetchers.items()
               if source.key not in keys and len(keys) < ENDGAME_COPIES
               and source.may_send(i)]
    if not choices:
        return None
    return min(choices, key=lambda i: (len(book.fetchers[i]), i))
