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

Reading a request, on the selector (``after_peek``, ``after_read``, ``next_wait``) and on
the worker that just answered one (``after_answer``): what the bytes in say to do next.
The worker serves a keep-alive connection's next request itself only while it is whole
already or arrives whole within a short linger, and nobody else waits for a worker; a slow
or large head goes back to the selector, where it costs no thread and its deadlines apply.
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

TLS_RECORD_HANDSHAKE = 0x16  # the first byte a TLS client sends

# What to do with a connection after reading from it
WAIT = "wait"  # for more bytes (on the selector) or the linger (on the worker)
SERVE = "serve"  # a whole request is in: a worker serves it
HAND_BACK = "hand-back"  # the worker gives the connection back to the selector
DROP = "drop"  # close without a word (the client cannot read one, or has gone)
REFUSE_PLAIN = "refuse-plain"  # plain HTTP to a TLS server: a short answer, then close
REFUSE_LARGE = "refuse-large"  # a head over the limit: 431, then close
START_TLS = "start-tls"  # its first byte opens a TLS handshake


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


def after_peek(first):
    """A TLS server's new connection, its first byte seen (None: it closed before one)."""
    if first is None:
        return DROP
    return START_TLS if first == TLS_RECORD_HANDSHAKE else REFUSE_PLAIN


def after_read(buffered, first, tls_server, head_whole, request_whole, max_head):
    """The selector read what there was: ``buffered`` bytes (the first ``first``) of which
    the head is whole or not, and with it the request (head and small body)."""
    if not buffered:
        return WAIT
    if first == TLS_RECORD_HANDSHAKE and not tls_server:
        return DROP  # a TLS client on a plain server cannot read a plain answer
    if request_whole:
        return SERVE
    if not head_whole and buffered > max_head:
        return REFUSE_LARGE
    return WAIT


def next_wait(now, buffered, head_deadline, idle_timeout):
    """When a connection on the selector must have its next request whole: the head's
    deadline once a byte of it is in, else the idle keep-alive timeout."""
    return now + (head_deadline if buffered else idle_timeout)


def after_answer(request_whole, buffered, max_buffer, lingered_out, others_wait):
    """A worker that answered a request, about the same connection's next one: ``SERVE`` it
    when it is whole, ``HAND_BACK`` when the linger is over, another connection waits for a
    worker, or the head grows past what the selector would hold; else ``WAIT``."""
    if request_whole:
        return SERVE
    if lingered_out or others_wait or buffered > max_buffer:
        return HAND_BACK
    return WAIT
