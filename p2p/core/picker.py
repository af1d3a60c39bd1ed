"""Which piece next for one holder's connection: a choice only, never a move. Pure.

The plan (``plan.py``) takes what is chosen here (``PieceBook.take``); picking
reads the book and changes nothing, so a choice can be tested on its own.

* **In order** (``in_order``) while the download is alone: consecutive pieces,
  so the whole-file SHA-256 runs alongside instead of after.
* **Rarest first** (``rarest``) otherwise: among the lowest ``ORDER_WINDOW`` pieces
  this holder has that nobody is fetching, those the fewest known holders have, one
  at random (so downloaders that start together ask the seed for different pieces,
  yet the pieces come roughly in order and the whole file's SHA-256, which follows
  them in order, is not left with much of the file to hash after the last piece;
  rarest first over the whole file leaves a common piece at the start for last). A whole
  holder that says which pieces it has sent to anyone (``Source.sent``) is asked
  for the others first: super-seeding (BEP 16), each piece leaves the seed once
  while downloaders still lack it, and they swap the rest among themselves.
* **Endgame** (``endgame``): when every piece still missing is being fetched, a
  piece another connection is on, at most ``ENDGAME_COPIES`` at once, so the
  slowest holder does not set the finish time.
"""

from p2p.core.piece_states import MISSING

ENDGAME_COPIES = 2  # connections fetching one piece at once, at the end
ORDER_WINDOW = 64  # pieces: rarest first picks at random among the lowest this many


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
    """A free piece for ``source``: one it has not sent to anyone yet (when it says), among
    the lowest ORDER_WINDOW of those by index, one of the fewest holders have, at random;
    or None."""
    choices = sorted(i for i in book.open if free(book, source, i))
    sent = source.sent
    if sent is not None:
        choices = [i for i in choices if i not in sent] or choices
    choices = choices[:ORDER_WINDOW]
    if not choices:
        return None
    least = min(availability[i] for i in choices)
    return rng.choice([i for i in choices if availability[i] == least])


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
