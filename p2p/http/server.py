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
  stall 40 ms per request on delayed ACKs;
* a keep-alive connection's next request, when it is whole in the buffer already
  (pipelined) or arrives whole within a short linger, is answered by the same
  worker with no hand-off to the selector and back (the fast path); a slow or
  large one goes back to the selector and its deadlines.

On a closed network (``members.py``) both servers also check, before a
request's body is read, that it is signed with the network secret (401
otherwise, and the connection is closed), and, with a network certificate,
speak only TLS: the handshake is done by the selector without blocking, and a
plain-HTTP client gets a plain 400 that says to use TLS.

The modules, in the shape of waitress: ``server`` (this one: the accepting selector front,
its decisions by ``p2p/core/admission.py``), ``channel`` (one connection: its non-blocking
reads on the selector, its service on a worker, the fast path to its next request),
``pool`` (the worker threads, the trigger that gives connections back to the selector, the
request deadlines), ``refuse`` (short answers to refused connections), ``handler``
(``JSONRequestHandler``) with ``replies`` (its output), ``routes`` (``Routes``),
``messages`` (the head parser, framing, errors, short answers) and ``limits`` (every timeout
and size, with its unit, in the frozen ``LIMITS``); the selector's per-connection work is in
``front``. The names the servers above use are importable from here: ``BoundedHTTPServer``,
``JSONRequestHandler``, ``HTTPProblem``, ``Routes``, ``LIMITS``, ``set_nodelay``,
``unmapped``, ``header_field``.

Both servers route one way: a ``Routes`` table (path patterns -> a
``route_<name>`` method per HTTP method), followed by
``JSONRequestHandler.dispatch``, which answers 404 and 405 (with ``Allow``).

Errors are JSON: ``{"error": "<a sentence a person can act on>"}``. Every
module's errors derive from ``Problem`` (a status and a sentence); a handler
answers any ``Problem`` that escapes it with its status (``HTTPProblem`` when
it names the status itself), and everything else is a 500 and is logged.
"""

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

from p2p.core.admission import AdmissionLimits
from p2p.core.members import AUTH_HEADER, OPEN
from p2p.http.channel import Connection
from p2p.http.front import Front
from p2p.http.handler import JSONRequestHandler
from p2p.http.limits import LIMITS
from p2p.http.messages import HTTPProblem, header_field, set_nodelay, unmapped, warn_sometimes
from p2p.http.pool import Deadlines, Trigger, WorkerPool
from p2p.http.routes import Routes

__all__ = ["AUTH_HEADER", "LIMITS", "BoundedHTTPServer", "HTTPProblem", "JSONRequestHandler",
           "Routes", "header_field", "set_nodelay", "unmapped"]

log = logging.getLogger("p2p.http")

class BoundedHTTPServer(http.server.HTTPServer):
    """An HTTP server with a selector front and a pool of worker threads behind it.

    The thread in ``serve_forever`` accepts connections and reads each request head (and a
    small body) without blocking, the TLS handshake included; only a whole request goes to
    a worker thread, and a keep-alive connection comes back to the selector when its next
    request is not whole within a short linger. A connection costs a file descriptor and its
    buffer until then, never a thread.

    * at most ``max_connections`` connections at once, and at most ``max_connections //
      LIMITS.source_share`` from one address; a new one over either limit closes the
      connection that has waited longest without sending anything (an idle keep-alive one,
      or one that never spoke; then one still sending its head), of that address when it is
      over its share; with nothing to close, it gets a ``503`` with ``Retry-After``;
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
        self.handler_timeout = timeout
        self.request_deadline = request_deadline
        self.head_deadline = min(LIMITS.head_deadline_s, timeout, request_deadline)
        self.workers = workers
        self._closed = threading.Event()
        self._pool = WorkerPool(self, workers)
        self._trigger = Trigger()
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._selector = selectors.DefaultSelector()
        self._front = Front(self, self._selector, AdmissionLimits(max_connections,
                                                                  self.max_per_source),
                            self._pool, self._trigger)
        self._conns = self._front.conns  # file descriptor -> Connection, for every open one
        super().__init__(address, handler)
        self.socket.setblocking(False)
        self._selector.register(self.socket, selectors.EVENT_READ, self._accept)
        self._selector.register(self._trigger.reader, selectors.EVENT_READ,
                                lambda sock: self._trigger.drain())
        self._deadlines = Deadlines(self._closed)
        # Called for every request, so the pool's and the deadlines' own methods, not ours:
        self.requests_waiting = self._pool.waiting  # do whole requests wait for a worker?
        self.clear_deadline = self._deadlines.clear  # (connection): no deadline for it now

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
                    for key, mask in self._selector.select(min(poll_interval,
                                                               LIMITS.select_tick_s)):
                        if isinstance(key.data, Connection):
                            self._front.on_event(key.data)
                        else:
                            key.data(key.fileobj)
                    self._front.take_back()
                    self._front.expire(time.monotonic())
                except Exception:  # a bug of ours must not stop the server for everyone
                    log.exception("unexpected error in the connection loop")
                self.service_actions()
        finally:
            self._stop = False
            self._stopped.set()

    def shutdown(self):
        self._stop = True
        self._trigger.pull()
        self._stopped.wait()

    def server_close(self):
        self._closed.set()
        super().server_close()
        self._pool.close()
        self._front.close_all()
        self._selector.close()
        self._trigger.close()

    def _accept(self, listener):
        self._front.take_back()  # the connections workers just finished with may make room
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
        """A new connection (socketserver's hook): the front keeps it, or refuses it."""
        self._front.admit(request, client_address)

    # -- called by the worker threads -----------------------------------------

    def take_back(self, conn, keep):
        """A worker is done with ``conn``: the selector keeps it alive (``keep``) or closes it."""
        self._trigger.put(conn, keep)

    def set_deadline(self, connection, seconds):
        """Cut ``connection`` if it is still at it ``seconds`` from now (None: no deadline)."""
        self._deadlines.set(connection, seconds)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ssl.SSLError, ConnectionError)):  # the client's doing, not ours
            warn_sometimes("broken", "connection from %s broke: %s", client_address[0], error)
            return
        log.exception("unexpected error while serving %s", client_address)
