"""Connection admission for the HTTP servers' selector front: pure decisions, no sockets.

A connection's phase is a state machine kept as data, ``TRANSITIONS``:

    peek --tls-hello--> handshake --handshake-done--> open      (a TLS server)
                                                      open      (a plain server starts here)
    open --request-whole--> busy --kept-alive--> open
    any but closed --close--> closed

``peek``: its first byte has not said yet whether it speaks TLS; ``handshake``: the TLS
handshake is under way; ``open``: the selector reads its next request head; ``busy``: a
worker thread serves it. Any other move raises ``IllegalTransition``.

Admission: a new connection is kept if its address holds less than its share and the server
less than its limit (``admit``); otherwise one waiting connection makes room (``victim``):
one idle since accept or since its last answer first (nothing of a request in, not in a
handshake), else the one sending its head for longest.
"""

from dataclasses import dataclass

from p2p.core.errors import IllegalTransition

PEEK, HANDSHAKE, OPEN, BUSY, CLOSED = "peek", "handshake", "open", "busy", "closed"
CLOSE = "close"

TRANSITIONS = {
    (PEEK, "tls-hello"): HANDSHAKE,  # its first byte opens a TLS handshake record
    (HANDSHAKE, "handshake-done"): OPEN,
    (OPEN, "request-whole"): BUSY,  # handed to a worker thread
    (BUSY, "kept-alive"): OPEN,  # the worker gives it back for its next request
}

ROOM, EVICT_OWN, EVICT_ANY = "room", "evict-own", "evict-any"


class Phase:
    """One connection's phase; ``move`` follows ``TRANSITIONS`` or raises."""

    __slots__ = ("state",)

    def __init__(self, tls):
        self.state = PEEK if tls else OPEN

    def move(self, event):
        if event == CLOSE and self.state != CLOSED:
            self.state = CLOSED
            return self.state
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise IllegalTransition(f"a connection in {self.state!r} cannot take {event!r}") \
                from None
        return self.state


@dataclass(frozen=True)
class AdmissionLimits:
    """How many connections a server holds at once, idle ones included, and of one address."""

    max_connections: int
    max_per_source: int


def admit(limits, held, held_by_source):
    """A new connection's fate: ``ROOM``, or make room by closing one of its own address's
    (``EVICT_OWN``) or any (``EVICT_ANY``) waiting connections."""
    if held_by_source >= limits.max_per_source:
        return EVICT_OWN
    if held >= limits.max_connections:
        return EVICT_ANY
    return ROOM


def is_idle(state, buffered):
    """Waiting without a request under way: nothing of one in, and not in a TLS handshake."""
    return not buffered and state != HANDSHAKE


def victim(waiting, source=None):
    """The key of the connection to close for room, or None.

    ``waiting``: (key, source, state, buffered bytes) of the waiting connections, longest
    waiting first; with ``source``, only that address's connections are candidates.
    """
    partial = None
    for key, its_source, state, buffered in waiting:
        if source is not None and its_source != source:
            continue
        if is_idle(state, buffered):
            return key
        if partial is None:
            partial = key
    return partial
