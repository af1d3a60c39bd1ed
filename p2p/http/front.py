"""The selector front of the HTTP servers (waitress's accepting dispatcher): the connections
held, their admission and eviction, their TLS handshakes and request heads read without
blocking, the hand-off of a whole request to the worker pool and the connections given back.

Every decision is a pure function of ``p2p/core/admission.py``; this class does the I/O
around them, on the server's one selector thread. A connection is in ``waiting`` (watched by
the selector, deadline ticking) or with a worker, never both.
"""

import collections
import selectors
import ssl
import time

from p2p.core import admission
from p2p.core.admission import CLOSE, HANDSHAKE, PEEK
from p2p.core.members import describe_tls_error
from p2p.http.channel import Connection, head_end, request_ready
from p2p.http.limits import LIMITS
from p2p.http.messages import set_nodelay, short_answer, unmapped, warn_sometimes
from p2p.http.refuse import Refusals

BUSY_ANSWER = short_answer(503, "The server is at its connection limit; try again in a moment.",
                           f"Retry-After: {LIMITS.busy_retry_after_s}\r\n")

PLAIN_ANSWER = short_answer(400, "This server speaks TLS only: use https:// with the network "
                                 "certificate (--tls-cert and --tls-key).", tls_required=True)

HEAD_TOO_LARGE_ANSWER = short_answer(
    431, f"The request head is larger than {LIMITS.max_head_bytes} bytes.")


class Front:
    """The connections of ``server`` (a ``BoundedHTTPServer``) on ``selector``: ``admit`` a
    new one, ``on_event`` when one is ready, ``take_back`` those the workers are done with,
    ``expire`` the late ones."""

    def __init__(self, server, selector, limits, pool, trigger):
        self.server, self.limits = server, limits
        self._selector, self._pool, self._trigger = selector, pool, trigger
        self._refusals = Refusals(selector, server.shutdown_request)
        self.conns = {}  # file descriptor -> Connection, for every open connection
        self.per_source = collections.Counter()
        self.waiting = collections.OrderedDict()  # Connection -> None, longest waiting first

    def admit(self, request, client_address):
        """A new connection: keep it if there is room (made by closing an idle one)."""
        request.setblocking(False)
        set_nodelay(request)
        source = unmapped(client_address[0])
        fate = admission.admit(self.limits, len(self.conns), self.per_source[source])
        if fate != admission.ROOM and not self._evict(
                source if fate == admission.EVICT_OWN else None):
            warn_sometimes("full", "connection from %s refused: the server holds %d connections "
                           "(%d from that address)", source, len(self.conns),
                           self.per_source[source])
            self._refusals.refuse(request, BUSY_ANSWER)
            return
        conn = Connection(request, client_address, time.monotonic() + self.server.head_deadline,
                          tls=self.server.members.tls is not None)
        self.conns[request.fileno()] = conn
        self.per_source[source] += 1
        self._wait(conn, selectors.EVENT_READ)

    def _evict(self, source):
        """Close the connection (of ``source``, if given) that waited longest without sending
        anything, else the one sending its head for longest; False if none waits."""
        conn = admission.victim(((c, c.source, c.phase.state, len(c.buf)) for c in self.waiting),
                                source)
        if conn is None:
            return False
        self.forget(conn)
        return True

    def _wait(self, conn, events):
        """Let the selector watch ``conn`` for ``events``."""
        if conn.events:
            self._selector.modify(conn.sock, events, conn)
        else:
            self._selector.register(conn.sock, events, conn)
        conn.events = events
        self.waiting[conn] = None

    def _unwait(self, conn):
        if conn.events:
            self._selector.unregister(conn.sock)
            conn.events = 0
        self.waiting.pop(conn, None)

    def on_event(self, conn):
        try:
            state = conn.phase.state
            if state == PEEK:
                self._peek(conn)
            elif state == HANDSHAKE:
                self._handshake(conn)
            else:
                self._read(conn)
        except OSError as e:
            if isinstance(e, ssl.SSLError):
                warn_sometimes("tls", "TLS connection from %s refused: %s", conn.source,
                               describe_tls_error(e))
            self.forget(conn)

    def _peek(self, conn):
        first = conn.peek()
        if first == -1:
            return
        verdict = admission.after_peek(first)
        if verdict == admission.DROP:
            self.forget(conn)
        elif verdict == admission.REFUSE_PLAIN:
            warn_sometimes("plain", "plain HTTP from %s refused: this server speaks TLS only",
                           conn.source)
            self.forget(conn, refuse=PLAIN_ANSWER)
        else:
            self._unwait(conn)  # before the wrap: the selector knows the plain socket
            conn.start_tls(self.server.members.tls.server)
            self._handshake(conn)

    def _handshake(self, conn):
        events = conn.handshake()
        self._wait(conn, events or selectors.EVENT_READ)
        if events is None:
            self._read(conn)  # the request may be in already, inside TLS where select misses it

    def _read(self, conn):
        was_empty = not conn.buf
        if not conn.read_some():
            self.forget(conn)
            return
        buf = conn.buf
        if was_empty and buf:  # the first byte of a request: now its head has a deadline
            conn.deadline = min(conn.deadline, time.monotonic() + self.server.head_deadline)
        verdict = admission.after_read(len(buf), buf[0] if buf else None,
                                       self.server.members.tls is not None, head_end(buf) >= 0,
                                       request_ready(buf), LIMITS.max_head_bytes)
        if verdict == admission.SERVE:
            self._dispatch(conn)
        elif verdict == admission.DROP:
            warn_sometimes("tls-on-plain", "a TLS client connected from %s, but this server "
                           "was started without --tls-cert", conn.source)
            self.forget(conn)
        elif verdict == admission.REFUSE_LARGE:
            warn_sometimes("head", "connection from %s refused: a request head over %d bytes",
                           conn.source, LIMITS.max_head_bytes)
            self.forget(conn, refuse=HEAD_TOO_LARGE_ANSWER)

    def _dispatch(self, conn):
        """Hand a connection with a whole request to a worker thread."""
        self._unwait(conn)
        conn.phase.move("request-whole")
        self._pool.submit(conn)

    def take_back(self):
        """Connections the workers are done with: closed, or kept alive for the next request."""
        returned = self._trigger.returned
        now = time.monotonic()
        while returned:
            conn, keep = returned.popleft()
            if self.conns.get(conn.sock.fileno()) is not conn:
                continue
            if keep:
                try:
                    conn.sock.setblocking(False)
                except OSError:
                    keep = False
            if not keep:
                self.forget(conn)
                continue
            conn.phase.move("kept-alive")
            if request_ready(conn.buf):
                self._dispatch(conn)
            else:
                conn.deadline = admission.next_wait(now, len(conn.buf), self.server.head_deadline,
                                                    self.server.handler_timeout)
                self._wait(conn, selectors.EVENT_READ)

    def expire(self, now):
        for conn in [c for c in self.waiting if c.deadline < now]:
            if not admission.is_idle(conn.phase.state, conn.buf):
                warn_sometimes("head", "connection from %s closed: no whole request within "
                               "%g s", conn.source, self.server.head_deadline)
            self.forget(conn)
        self._refusals.expire(now)

    def forget(self, conn, refuse=None):
        """Close a connection the selector holds (after a short answer, if ``refuse``)."""
        self._unwait(conn)
        if self.conns.pop(conn.sock.fileno(), None) is not None:
            conn.phase.move(CLOSE)
            self.per_source[conn.source] -= 1
            if not self.per_source[conn.source]:
                del self.per_source[conn.source]
        if refuse is None:
            self.server.shutdown_request(conn.sock)
        else:
            self._refusals.refuse(conn.sock, refuse)

    def close_all(self):
        """The server closes: every connection the selector holds, and the refused ones."""
        for conn in list(self.conns.values()):
            self.forget(conn)
        for sock in self._refusals:
            self._refusals.close(sock)
