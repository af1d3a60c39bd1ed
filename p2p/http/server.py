"""Shared HTTP/1.1 plumbing for the load balancer and the peer's file server.

Both servers are a selector front with a pool of worker threads behind it (the
shape of waitress), with ``http.server`` handlers (a handler per request,
``do_GET`` and friends), and the limits a server on an open network needs:

* a connection costs a file descriptor and a buffer, never a thread, until its
  request head (and a small body) has arrived whole: hundreds of idle or
  trickling connections do not take a server off the network;
* at most ``max_connections`` connections at once, a fair share of them per
  client address; when they run short the connection waiting longest without
  a request is closed first, and with none to close the next one gets a
  ``503`` with ``Retry-After``;
* a request head has a short deadline, an idle keep-alive connection a longer
  one, every socket a timeout, and every request a deadline to arrive in
  whole, so a client that sends half a request, trickles it, or stops reading
  cannot pin a thread for long;
* header lines are capped at 64 KiB and 100 (431 beyond), JSON bodies at
  ``max_body`` (413 beyond); headers are read by a plain parser, not the
  email package, which cost as much as all the rest of a request;
* Nagle is off and each small reply leaves in one write (the handler's output
  is buffered and flushed once per request), so a keep-alive client does not
  stall 40 ms per request on delayed ACKs.

On a closed network (``members.py``) both servers also check, before a
request's body is read, that it is signed with the network secret (401
otherwise, and the connection is closed), and, with a network certificate,
speak only TLS: the handshake is done by the selector without blocking, and a
plain-HTTP client gets a plain 400 that says to use TLS.

The modules, in the shape of waitress: ``server`` (this one: the accepting selector front,
admission by ``p2p/core/admission.py``), ``pool`` (the worker threads and the request
deadlines), ``channel`` (one connection and the stream a handler reads it by), ``handler``
(``JSONRequestHandler``), ``routes`` (``Routes``), ``messages`` (headers, framing, errors,
short answers) and ``limits`` (every timeout and size, with its unit, in the frozen
``LIMITS``). The names the servers above use are importable from here:
``BoundedHTTPServer``, ``JSONRequestHandler``, ``HTTPProblem``, ``Routes``, ``LIMITS``,
``set_nodelay``, ``unmapped``, ``header_field``.

Both servers route one way: a ``Routes`` table (path patterns -> a
``route_<name>`` method per HTTP method), followed by
``JSONRequestHandler.dispatch``, which answers 404 and 405 (with ``Allow``).

Errors are JSON: ``{"error": "<a sentence a person can act on>"}``. Every
module's errors derive from ``Problem`` (a status and a sentence); a handler
answers any ``Problem`` that escapes it with its status (``HTTPProblem`` when
it names the status itself), and everything else is a 500 and is logged.
"""

import collections
import http.server
import logging
import resource
import selectors
import socket
import socketserver
import ssl
import sys
import threading
import time

from p2p.core import admission
from p2p.core.admission import CLOSE, HANDSHAKE, PEEK, AdmissionLimits
from p2p.core.members import AUTH_HEADER, OPEN, describe_tls_error
from p2p.http.channel import Connection, head_end, request_ready
from p2p.http.handler import JSONRequestHandler
from p2p.http.limits import LIMITS
from p2p.http.messages import (HTTPProblem, header_field, set_nodelay, short_answer, unmapped,
                               warn_sometimes)
from p2p.http.pool import Deadlines, WorkerPool
from p2p.http.routes import Routes

__all__ = ["AUTH_HEADER", "LIMITS", "BoundedHTTPServer", "HTTPProblem", "JSONRequestHandler",
           "Routes", "header_field", "set_nodelay", "unmapped"]

log = logging.getLogger("p2p.http")


TLS_RECORD_HANDSHAKE = 0x16  # the first byte a TLS client sends

BUSY_ANSWER = short_answer(503, "The server is at its connection limit; try again in a moment.",
                           f"Retry-After: {LIMITS.busy_retry_after_s}\r\n")

PLAIN_ANSWER = short_answer(400, "This server speaks TLS only: use https:// with the network "
                                 "certificate (--tls-cert and --tls-key).", tls_required=True)

HEAD_TOO_LARGE_ANSWER = short_answer(
    431, f"The request head is larger than {LIMITS.max_head_bytes} bytes.")

class BoundedHTTPServer(http.server.HTTPServer):
    """An HTTP server with a selector front and a pool of worker threads behind it.

    The thread in ``serve_forever`` accepts connections and reads each request head (and a
    small body) without blocking, the TLS handshake included; only a whole request goes to
    a worker thread, and a keep-alive connection comes back to the selector after each
    request. A connection costs a file descriptor and its buffer until then, never a thread.

    * at most ``max_connections`` connections at once, and at most ``max_connections //
      LIMITS.source_share`` from one address; a new one over either limit closes the connection that
      has waited longest without sending anything (an idle keep-alive one, or one that never
      spoke; then one still sending its head), of that address when it is over its share;
      with nothing to close, it gets a ``503`` with ``Retry-After``;
    * a request head must arrive whole within ``head_deadline`` of its first byte (of the
      accept, for a new connection), an idle keep-alive connection is closed after
      ``handler_timeout``, and the rest of a request (its body) within ``request_deadline``;
    * at most ``workers`` requests are served at once; the next whole ones wait their turn.
    """

    block_on_close = False
    request_queue_size = 1024  # listen backlog: bursts of connects are accepted, not dropped

    def __init__(self, address, handler, max_connections=LIMITS.max_connections,
                 timeout=LIMITS.socket_timeout_s, request_deadline=LIMITS.request_deadline_s,
                 members=OPEN, workers=LIMITS.workers):
        self.members = members
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_limit != resource.RLIM_INFINITY:
            max_connections = max(1, min(max_connections, soft_limit - LIMITS.reserved_fds))
        self.max_connections = max_connections
        self.max_per_source = max(1, max_connections // LIMITS.source_share)
        self.admission = AdmissionLimits(self.max_connections, self.max_per_source)
        self.handler_timeout = timeout
        self.request_deadline = request_deadline
        self.head_deadline = min(LIMITS.head_deadline_s, timeout, request_deadline)
        self.workers = workers
        self._closed = threading.Event()
        self._conns = {}  # socket -> Connection, for every open connection
        self._per_source = collections.Counter()
        self._waiting = collections.OrderedDict()  # Connection -> None, longest waiting first
        self._lingering = {}  # socket -> close by: refused, draining what the client sent
        self._returned = collections.deque()  # keep-alive connections the workers are done with
        self._pool = WorkerPool(self._serve, workers)
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        super().__init__(address, handler)
        self.socket.setblocking(False)
        self._selector.register(self.socket, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._woken)
        self._deadlines = Deadlines(self._closed)

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) we don't need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    @property
    def port(self):
        return self.server_address[1]

    # -- the selector thread --------------------------------------------------

    def serve_forever(self, poll_interval=0.5):
        self._stopped.clear()
        try:
            while not self._stop:
                try:
                    tick = min(poll_interval, LIMITS.select_tick_s)
                    for key, mask in self._selector.select(tick):
                        key.data(key.fileobj, mask)
                    self._take_back()
                    self._expire(time.monotonic())
                except Exception:  # a bug of ours must not stop the server for everyone
                    log.exception("unexpected error in the connection loop")
                self.service_actions()
        finally:
            self._stop = False
            self._stopped.set()

    def shutdown(self):
        self._stop = True
        self._wake()
        self._stopped.wait()

    def server_close(self):
        self._closed.set()
        super().server_close()
        self._pool.close()
        for sock in list(self._conns) + list(self._lingering):
            self._close(sock)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:  # its buffer is full: a wake-up is already pending
            pass

    def _woken(self, sock, mask):
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass

    def _accept(self, listener, mask):
        self._take_back()  # the connections workers just finished with may make room
        for _ in range(LIMITS.accept_batch):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors, say: try again at the next tick
                warn_sometimes("accept", "cannot accept connections: %s", e)
                return
            self.process_request(sock, address)

    def process_request(self, request, client_address):
        """A new connection: keep it if there is room (made by closing an idle one)."""
        request.setblocking(False)
        set_nodelay(request)
        source = unmapped(client_address[0])
        fate = admission.admit(self.admission, len(self._conns), self._per_source[source])
        room = fate == admission.ROOM or self._evict(
            source if fate == admission.EVICT_OWN else None)
        if not room:
            warn_sometimes("full", "connection from %s refused: the server holds %d connections "
                           "(%d from that address)", source, len(self._conns),
                           self._per_source[source])
            self._refuse(request, BUSY_ANSWER)
            return
        conn = Connection(request, client_address, time.monotonic() + self.head_deadline,
                          tls=self.members.tls is not None)
        self._conns[request] = conn
        self._per_source[source] += 1
        self._wait(conn, selectors.EVENT_READ)

    def _evict(self, source):
        """Close the connection (of ``source``, if given) that waited longest without sending
        anything, else the one sending its head for longest; False if none waits."""
        conn = admission.victim(((c, c.source, c.phase.state, len(c.buf)) for c in self._waiting),
                                source)
        if conn is None:
            return False
        self._forget(conn)
        return True

    def _wait(self, conn, events):
        """Let the selector watch ``conn`` for ``events``."""
        if conn.events:
            self._selector.modify(conn.sock, events, self._on_event)
        else:
            self._selector.register(conn.sock, events, self._on_event)
        conn.events = events
        self._waiting[conn] = None

    def _unwait(self, conn):
        if conn.events:
            self._selector.unregister(conn.sock)
            conn.events = 0
        self._waiting.pop(conn, None)

    def _on_event(self, sock, mask):
        conn = self._conns.get(sock)
        if conn is None:
            return
        try:
            state = conn.phase.state
            if state == PEEK:
                self._peek_tls(conn)
            elif state == HANDSHAKE:
                self._handshake(conn)
            else:
                self._read_head(conn)
        except OSError as e:
            if isinstance(e, ssl.SSLError):
                warn_sometimes("tls", "TLS connection from %s refused: %s", conn.source,
                               describe_tls_error(e))
            self._forget(conn)

    def _peek_tls(self, conn):
        try:
            first = conn.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):  # a wakeup with nothing to read yet
            return
        if not first:
            self._forget(conn)
        elif first[0] != TLS_RECORD_HANDSHAKE:
            warn_sometimes("plain", "plain HTTP from %s refused: this server speaks TLS only",
                           conn.source)
            self._forget(conn, refuse=PLAIN_ANSWER)
        else:
            self._unwait(conn)
            del self._conns[conn.sock]
            conn.sock = self.members.tls.server.wrap_socket(
                conn.sock, server_side=True, do_handshake_on_connect=False)
            self._conns[conn.sock] = conn
            conn.phase.move("tls-hello")
            self._handshake(conn)

    def _handshake(self, conn):
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._wait(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._wait(conn, selectors.EVENT_WRITE)
            return
        conn.phase.move("handshake-done")
        self._wait(conn, selectors.EVENT_READ)
        self._read_head(conn)  # the request may be in already, inside TLS where select misses it

    def _read_head(self, conn):
        sock = conn.sock
        was_empty = not conn.buf
        while len(conn.buf) < LIMITS.max_request_buffer_bytes:
            try:
                chunk = sock.recv(LIMITS.read_chunk_bytes)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not chunk:
                self._forget(conn)
                return
            conn.buf += chunk
            if isinstance(sock, ssl.SSLSocket):
                if not sock.pending():
                    break
            elif len(chunk) < LIMITS.read_chunk_bytes:
                break
        if not conn.buf:
            return
        if was_empty:  # the first byte of a request: now its head has a deadline
            conn.deadline = min(conn.deadline, time.monotonic() + self.head_deadline)
        if conn.buf[0] == TLS_RECORD_HANDSHAKE and self.members.tls is None:
            warn_sometimes("tls-on-plain", "a TLS client connected from %s, but this server "
                           "was started without --tls-cert", conn.source)
            self._forget(conn)  # it cannot read a plain answer: just close
        elif request_ready(conn.buf):
            self._dispatch(conn)
        elif head_end(conn.buf) < 0 and len(conn.buf) > LIMITS.max_head_bytes:
            warn_sometimes("head", "connection from %s refused: a request head over %d bytes",
                           conn.source, LIMITS.max_head_bytes)
            self._forget(conn, refuse=HEAD_TOO_LARGE_ANSWER)

    def _dispatch(self, conn):
        """Hand a connection with a whole request to a worker thread."""
        self._unwait(conn)
        conn.phase.move("request-whole")
        self._pool.submit(conn)

    def _take_back(self):
        """Connections the workers are done with: closed, or kept alive for the next request."""
        now = time.monotonic()
        while self._returned:
            conn, keep = self._returned.popleft()
            if conn.sock not in self._conns:
                continue
            if keep:
                try:
                    conn.sock.setblocking(False)
                except OSError:
                    keep = False
            if not keep:
                self._forget(conn)
                continue
            conn.phase.move("kept-alive")
            if request_ready(conn.buf):
                self._dispatch(conn)
            else:
                conn.deadline = now + (self.head_deadline if conn.buf else self.handler_timeout)
                self._wait(conn, selectors.EVENT_READ)

    def _expire(self, now):
        for conn in [c for c in self._waiting if c.deadline < now]:
            if not admission.is_idle(conn.phase.state, conn.buf):
                warn_sometimes("head", "connection from %s closed: no whole request within "
                               "%g s", conn.source, self.head_deadline)
            self._forget(conn)
        for sock in [s for s, until in self._lingering.items() if until < now]:
            self._close(sock)

    def _forget(self, conn, refuse=None):
        """Close a connection the selector holds (after a short answer, if ``refuse``)."""
        self._unwait(conn)
        self._drop(conn)
        if refuse is None:
            self._close(conn.sock)
        else:
            self._refuse(conn.sock, refuse)

    def _drop(self, conn):
        if self._conns.pop(conn.sock, None) is not None:
            conn.phase.move(CLOSE)
            self._per_source[conn.source] -= 1
            if not self._per_source[conn.source]:
                del self._per_source[conn.source]

    def _refuse(self, sock, answer):
        """Send a short answer without blocking, then drain the client for a moment so that
        closing does not reset the answer away."""
        try:
            sock.send(answer)
            sock.shutdown(socket.SHUT_WR)
            self._selector.register(sock, selectors.EVENT_READ, self._drain)
        except OSError:
            self._close(sock)
            return
        self._lingering[sock] = time.monotonic() + LIMITS.refuse_linger_s

    def _drain(self, sock, mask):
        try:
            if sock.recv(LIMITS.read_chunk_bytes):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close(sock)

    def _close(self, sock):
        if self._lingering.pop(sock, None) is not None:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
        try:
            self.shutdown_request(sock)
        except OSError:
            pass

    # -- the worker threads ---------------------------------------------------

    def requests_waiting(self):
        """Do whole requests wait for a worker?"""
        return self._pool.waiting()

    def _serve(self, conn):
        keep = False
        try:
            conn.sock.settimeout(self.handler_timeout)
            handler = self.RequestHandlerClass(conn, conn.address, self)
            keep = not handler.close_connection
            if keep and isinstance(conn.sock, ssl.SSLSocket):
                while conn.sock.pending():  # decrypted already, where select cannot see it
                    conn.buf += conn.sock.recv(conn.sock.pending())
        except Exception:
            self.handle_error(conn.sock, conn.address)
            keep = False
        self._returned.append((conn, keep))
        self._wake()

    def set_deadline(self, connection, seconds):
        """Cut ``connection`` if it is still at it ``seconds`` from now (None: no deadline)."""
        self._deadlines.set(connection, seconds)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ssl.SSLError, ConnectionError)):  # the client's doing, not ours
            warn_sometimes("broken", "connection from %s broke: %s", client_address[0], error)
            return
        log.exception("unexpected error while serving %s", client_address)
