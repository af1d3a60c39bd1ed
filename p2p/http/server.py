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
import io
import ipaddress
import json
import logging
import os
import queue
import re
import resource
import select
import selectors
import socket
import socketserver
import ssl
import sys
import threading
import time
from http import HTTPStatus

from p2p.core import admission
from p2p.core.admission import CLOSE, HANDSHAKE, PEEK, AdmissionLimits, Phase
from p2p.core.errors import Problem
from p2p.core.members import AUTH_HEADER, OPEN, ReplayFull, Unauthorized, describe_tls_error

log = logging.getLogger("p2p.http")
_date_cache = [None, ""]  # [second, Date header]: formatted once a second, not per reply

DEFAULT_SOCKET_TIMEOUT_S = 30.0  # idle keep-alive connection; each read or write of a request
DEFAULT_MAX_CONNECTIONS = 1000  # connections held at once, idle ones included
SOURCE_SHARE = 4  # one address may hold at most 1/SOURCE_SHARE of the connections
DEFAULT_WORKERS = 32  # threads serving whole requests at once
HEAD_DEADLINE_S = 10.0  # from a request's first byte (or the accept) to its whole head
MAX_HEAD_BYTES = 64 * 1024  # a request head larger than this is refused (431)
MAX_BUFFERED_BODY_BYTES = 64 * 1024  # bodies up to this size arrive before a worker is used
MAX_REQUEST_BUFFER_BYTES = MAX_HEAD_BYTES + MAX_BUFFERED_BODY_BYTES
READ_CHUNK_BYTES = 64 * 1024
ACCEPT_BATCH = 64  # connections accepted per wake-up of the selector
SELECT_TICK_S = 0.25  # how often the selector looks at deadlines
KEEPALIVE_LINGER_S = 0.5  # a worker waits this long for a keep-alive client's next request,
LINGER_SLICE_MS = 10  # looking this often whether another request needs it more
LINGER_READ_BYTES = 4096  # read at a time while lingering: requests are small, buffers cheap
REFUSE_LINGER_S = 1.0  # a refused connection is drained this long, so the answer arrives
RESERVED_FDS = 64  # file descriptors kept for files, logs and the load balancer client
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # JSON request bodies
REPLY_BUFFER_BYTES = 64 * 1024  # one write per small reply
MAX_HEADER_LINE_BYTES = 64 * 1024
MAX_HEADERS = 100
STATUS_PHRASES = {s.value: s.phrase for s in HTTPStatus}
HTTP1_RE = re.compile(r"HTTP/1\.[0-9]")
CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,18}")
BUSY_RETRY_AFTER_S = 1
REQUEST_DEADLINE_S = 60.0  # to send a whole request (line, headers, body), however slowly
REAP_INTERVAL_S = 1.0
TLS_RECORD_HANDSHAKE = 0x16  # the first byte a TLS client sends
HEAD_CONTENT_LENGTH_RE = re.compile(rb"\ncontent-length:[ \t]*([0-9]{1,18})[ \t]*\r?\n", re.I)
EXPECT_CONTINUE_RE = re.compile(rb"\nexpect:[ \t]*100-continue", re.I)
QUIET_LOG_INTERVAL_S = 10.0  # a warning about refused connections at most this often per kind


class HTTPProblem(Problem):
    """An error answer a handler raises: an HTTP status and a sentence."""

    def __init__(self, status, message, **extra):
        super().__init__(message, status, **extra)


_quiet_last = {}  # kind -> time.monotonic() of the last warning about it


def warn_sometimes(kind, message, *args):
    """Log a warning about refused input at most once per QUIET_LOG_INTERVAL_S per ``kind``,
    so that a flood of bad requests cannot fill the log."""
    now = time.monotonic()
    if now - _quiet_last.get(kind, -QUIET_LOG_INTERVAL_S) >= QUIET_LOG_INTERVAL_S:
        _quiet_last[kind] = now
        log.warning(message, *args)


def short_answer(status, message, headers="", **extra):
    """A whole error answer, ``Connection: close``, as bytes sent by the selector thread."""
    body = encode_json({"error": message, **extra})
    return (f"HTTP/1.1 {status} {STATUS_PHRASES[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}Connection: close\r\n\r\n"
            ).encode("ascii") + body


class Headers:
    """Request headers with the case-insensitive ``get``/``get_all`` of email.message.Message."""

    def __init__(self):
        self._values = {}

    def add(self, name, value):
        self._values.setdefault(name.lower(), []).append(value)

    def get(self, name, default=None):
        values = self._values.get(name.lower())
        return values[0] if values else default

    def get_all(self, name, default=None):
        return list(self._values.get(name.lower(), [])) or default


def header_field(line):
    """One header line, of a request or of a response -> (name, value without the white
    space around it), or None when it is not ``name: value`` (no colon, no name, or white
    space before the colon or the name). The one rule for header lines on both sides."""
    name, sep, value = line.partition(":")
    if not sep or not name or name != name.strip():
        return None
    return name, value.strip()


def read_headers(rfile):
    """Header lines up to the blank line -> Headers, or HTTPProblem (400 or 431)."""
    headers = Headers()
    for _ in range(MAX_HEADERS + 1):
        line = rfile.readline(MAX_HEADER_LINE_BYTES + 1)
        if len(line) > MAX_HEADER_LINE_BYTES:
            raise HTTPProblem(431, "A request header line is too long.")
        if line in (b"\r\n", b"\n", b""):
            return headers
        pair = header_field(line.decode("iso-8859-1"))
        if pair is None:
            raise HTTPProblem(400, f"Malformed request header line {line[:80]!r}.")
        headers.add(*pair)
    raise HTTPProblem(431, f"More than {MAX_HEADERS} request headers.")


def body_length(headers):
    """The body's length that ``headers`` frame (RFC 9112 §6.3): one plain byte count, or 0.

    Content-Length headers that disagree, or one that is not a plain count, are a 400: the
    request's end cannot be known, so the connection cannot be kept in step.
    """
    values = {value.strip() for value in headers.get_all("Content-Length") or ["0"]}
    raw = values.pop()
    if values or not CONTENT_LENGTH_RE.fullmatch(raw):
        raise HTTPProblem(400, f"Content-Length {raw!r} is not one plain byte count.")
    return int(raw)


class Routes:
    """A server's routing table: path patterns -> {method: route name}, as both servers use it.

    A pattern is a path (``/status``), a path and one more non-empty part (``/peers/*``: the
    part is the route's argument), or a prefix and whatever follows it, slashes and all
    (``/files/**``: what follows is the argument, maybe empty). ``JSONRequestHandler.dispatch``
    calls the handler's ``route_<name>`` for a request.
    """

    def __init__(self, table):
        self._exact, self._one, self._rest = {}, {}, []
        for pattern, methods in table.items():
            if pattern.endswith("/**"):
                self._rest.append((pattern[:-2], methods))
            elif pattern.endswith("/*"):
                self._one[pattern[:-1]] = methods
            else:
                self._exact[pattern] = methods

    def find(self, path):
        """``path`` -> ({method: route name}, [argument] or []), or (None, []) for no route."""
        methods = self._exact.get(path)
        if methods is not None:
            return methods, []
        head, _, last = path.rpartition("/")
        methods = self._one.get(head + "/")
        if methods is not None and last:
            return methods, [last]
        for prefix, methods in self._rest:
            if path.startswith(prefix):
                return methods, [path[len(prefix):]]
        return None, []


def encode_json(obj):
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from someone's input: escape, don't fail
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


BUSY_ANSWER = short_answer(503, "The server is at its connection limit; try again in a moment.",
                           f"Retry-After: {BUSY_RETRY_AFTER_S}\r\n")
PLAIN_ANSWER = short_answer(400, "This server speaks TLS only: use https:// with the network "
                                 "certificate (--tls-cert and --tls-key).", tls_required=True)
HEAD_TOO_LARGE_ANSWER = short_answer(431, f"The request head is larger than {MAX_HEAD_BYTES} "
                                          "bytes.")


class Connection:
    """One client connection, from accept to close, as the selector front keeps it."""

    __slots__ = ("sock", "address", "source", "buf", "deadline", "phase", "events")

    def __init__(self, sock, address, deadline, tls):
        self.sock, self.address = sock, address
        self.source = unmapped(address[0])
        self.buf = bytearray()  # what has arrived of the next request
        self.deadline = deadline  # time.monotonic() by which the next request must be in
        self.phase = Phase(tls)  # peek, handshake, open, busy, closed: see p2p/core/admission.py
        self.events = 0  # what the selector waits for on it


class _Pending(io.RawIOBase):
    """The raw stream under a handler's ``rfile``: the bytes the selector has read, then the
    socket; while ``held``, those bytes only (None when there are none, as a non-blocking
    stream says it has nothing for now)."""

    def __init__(self, conn):
        self.conn = conn
        self.held = False

    def readable(self):
        return True

    def readinto(self, b):
        buf = self.conn.buf
        if buf:
            n = min(len(b), len(buf))
            b[:n] = buf[:n]
            del buf[:n]
            return n
        if self.held:
            return None
        return self.conn.sock.recv_into(b)


class Reader(io.BufferedReader):
    """``rfile`` of a handler (C-speed readline); what it has buffered and not used goes
    back to the connection's buffer between requests and when it is closed."""

    def __init__(self, conn):
        self.pending = _Pending(conn)
        super().__init__(self.pending, READ_CHUNK_BYTES)
        self.conn = conn
        self.poller = None  # made when it first waits for a next request

    def give_back(self):
        self.pending.held = True
        try:
            data = self.peek()
            if data:
                self.read(len(data))
                self.conn.buf[:0] = data
        except (OSError, ValueError):  # broken or closed: nothing to keep
            pass
        finally:
            self.pending.held = False

    def close(self):
        self.give_back()
        super().close()

    def next_request(self, linger, give_way):
        """Wait up to ``linger`` seconds for the next whole request on this connection (a
        keep-alive client's next request often follows at once), unless ``give_way()`` says
        another request waits for a worker; False if none came.

        It waits with poll(), not with socket timeouts: changing a socket's timeout is a
        system call that lets other threads take the interpreter lock."""
        self.give_back()
        sock, buf = self.conn.sock, self.conn.buf
        if buf and request_ready(buf):
            return True
        if self.poller is None:
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)
        tls = isinstance(sock, ssl.SSLSocket)
        fd = sock.fileno()
        deadline = time.monotonic() + linger
        while True:
            if not (tls and sock.pending()) and not self.poller.poll(LINGER_SLICE_MS):
                if time.monotonic() >= deadline or give_way():
                    return False
                continue
            try:  # plain: one read() of the (non-blocking) descriptor poll() found readable
                chunk = sock.recv(LINGER_READ_BYTES) if tls else os.read(fd, LINGER_READ_BYTES)
            except (TimeoutError, BlockingIOError):  # readable, then nothing after all
                continue
            if not chunk:
                return False
            buf += chunk
            if request_ready(buf):
                return True
            if time.monotonic() >= deadline or len(buf) > MAX_REQUEST_BUFFER_BYTES:
                return False  # a slow or oversized head: the selector takes it from here


def head_end(buf):
    """Where the request head in ``buf`` ends (after its blank line), or -1."""
    end = buf.find(b"\n\r\n")
    if end >= 0:
        return end + 3
    end = buf.find(b"\n\n")
    return end + 2 if end >= 0 else -1


def request_ready(buf):
    """Is a whole request in ``buf``: its head, and its body unless that is large or the
    client waits for ``100 Continue`` before sending it?"""
    end = head_end(buf)
    if end < 0:
        return False
    if EXPECT_CONTINUE_RE.search(buf, 0, end):
        return True
    match = HEAD_CONTENT_LENGTH_RE.search(buf, 0, end)
    if match is None:
        return True  # no body, or one the handler refuses (chunked, a bad length)
    length = int(match.group(1))
    return length > MAX_BUFFERED_BODY_BYTES or len(buf) - end >= length


class BoundedHTTPServer(http.server.HTTPServer):
    """An HTTP server with a selector front and a pool of worker threads behind it.

    The thread in ``serve_forever`` accepts connections and reads each request head (and a
    small body) without blocking, the TLS handshake included; only a whole request goes to
    a worker thread, and a keep-alive connection comes back to the selector after each
    request. A connection costs a file descriptor and its buffer until then, never a thread.

    * at most ``max_connections`` connections at once, and at most ``max_connections //
      SOURCE_SHARE`` from one address; a new one over either limit closes the connection that
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

    def __init__(self, address, handler, max_connections=DEFAULT_MAX_CONNECTIONS,
                 timeout=DEFAULT_SOCKET_TIMEOUT_S, request_deadline=REQUEST_DEADLINE_S,
                 members=OPEN, workers=DEFAULT_WORKERS):
        self.members = members
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_limit != resource.RLIM_INFINITY:
            max_connections = max(1, min(max_connections, soft_limit - RESERVED_FDS))
        self.max_connections = max_connections
        self.max_per_source = max(1, max_connections // SOURCE_SHARE)
        self.admission = AdmissionLimits(self.max_connections, self.max_per_source)
        self.handler_timeout = timeout
        self.request_deadline = request_deadline
        self.head_deadline = min(HEAD_DEADLINE_S, timeout, request_deadline)
        self.workers = workers
        self._deadlines = {}  # connection -> time.monotonic() by which it must be done
        self._deadlines_lock = threading.Lock()
        self._closed = threading.Event()
        self._conns = {}  # socket -> Connection, for every open connection
        self._per_source = collections.Counter()
        self._waiting = collections.OrderedDict()  # Connection -> None, longest waiting first
        self._lingering = {}  # socket -> close by: refused, draining what the client sent
        self._ready = queue.SimpleQueue()  # whole requests for the workers
        self._returned = collections.deque()  # keep-alive connections the workers are done with
        self._idle_workers = 0
        self._threads = 0
        self._pool_lock = threading.Lock()
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
        threading.Thread(target=self._reap, daemon=True, name="deadlines").start()

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
                    for key, mask in self._selector.select(min(poll_interval, SELECT_TICK_S)):
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
        for _ in range(self._threads):
            self._ready.put(None)
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
        for _ in range(ACCEPT_BATCH):
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
        while len(conn.buf) < MAX_REQUEST_BUFFER_BYTES:
            try:
                chunk = sock.recv(READ_CHUNK_BYTES)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not chunk:
                self._forget(conn)
                return
            conn.buf += chunk
            if isinstance(sock, ssl.SSLSocket):
                if not sock.pending():
                    break
            elif len(chunk) < READ_CHUNK_BYTES:
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
        elif head_end(conn.buf) < 0 and len(conn.buf) > MAX_HEAD_BYTES:
            warn_sometimes("head", "connection from %s refused: a request head over %d bytes",
                           conn.source, MAX_HEAD_BYTES)
            self._forget(conn, refuse=HEAD_TOO_LARGE_ANSWER)

    def _dispatch(self, conn):
        """Hand a connection with a whole request to a worker thread."""
        self._unwait(conn)
        conn.phase.move("request-whole")
        with self._pool_lock:
            start = self._idle_workers == 0 and self._threads < self.workers
            if start:
                self._threads += 1
            else:
                self._idle_workers -= 1
        if start:
            threading.Thread(target=self._work, daemon=True, name="worker").start()
        self._ready.put(conn)

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
        self._lingering[sock] = time.monotonic() + REFUSE_LINGER_S

    def _drain(self, sock, mask):
        try:
            if sock.recv(READ_CHUNK_BYTES):
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
        return not self._ready.empty()

    def _work(self):
        while True:
            conn = self._ready.get()
            if conn is None:
                return
            self._serve(conn)
            with self._pool_lock:
                self._idle_workers += 1

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
        """Cut ``connection`` if it is still at it ``seconds`` from now (None: no deadline).

        Socket timeouts bound each read and write; this bounds the whole request, so a
        client that trickles its body or reads its answer a byte at a time cannot hold a
        worker thread for ever.
        """
        with self._deadlines_lock:
            if seconds is None:
                self._deadlines.pop(connection, None)
            else:
                self._deadlines[connection] = time.monotonic() + seconds

    def _reap(self):
        while not self._closed.wait(REAP_INTERVAL_S):
            now = time.monotonic()
            with self._deadlines_lock:  # held, so no new request can start in between
                late = [c for c, deadline in self._deadlines.items() if deadline < now]
                for connection in late:
                    del self._deadlines[connection]
                    warn_sometimes("deadline", "cutting a connection that overran its deadline")
                    try:
                        connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ssl.SSLError, ConnectionError)):  # the client's doing, not ours
            warn_sometimes("broken", "connection from %s broke: %s", client_address[0], error)
            return
        log.exception("unexpected error while serving %s", client_address)


class JSONRequestHandler(http.server.BaseHTTPRequestHandler):
    """Base handler: HTTP/1.1 keep-alive, JSON in and out, logging to ``logging``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = REPLY_BUFFER_BYTES
    max_body = DEFAULT_MAX_BODY_BYTES
    server_version = "p2p"
    routes = Routes({})  # each server's paths; see dispatch
    not_found = "There is no {path} here."  # the 404 of a path no route has

    def version_string(self):
        return self.server_version

    def setup(self):
        """``self.request`` is the server's Connection: its socket, and the bytes of the
        request the selector has read already."""
        self.connection = self.request.sock
        self.timeout = self.server.handler_timeout
        self.rfile = Reader(self.request)
        self.wfile = self.connection.makefile("wb", self.wbufsize)

    @property
    def source(self):
        """The client's host (an IPv4 address seen through IPv6 written as IPv4)."""
        return self.request.source

    def handle(self):
        """One request, and those the client sends right after it; then the connection goes
        back to the server's selector, or is closed."""
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and self.rfile.next_request(
                KEEPALIVE_LINGER_S, self.server.requests_waiting):
            self.handle_one_request()

    def handle_one_request(self):
        self.server.set_deadline(self.connection, self.server.request_deadline)
        try:
            super().handle_one_request()
        finally:
            self.server.set_deadline(self.connection, None)

    def request_read(self):
        """The whole request is in: the answer is not held to the request deadline."""
        self.server.set_deadline(self.connection, None)

    def parse_request(self):
        """http.server's parse_request, with a plain header parser (email.parser is slow).

        HTTP/1.0 and 1.1 only; on failure an error has been sent and it returns False.
        """
        self.command = None
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if not words:
            return False
        if len(words) != 3 or not HTTP1_RE.fullmatch(words[2]):
            self.send_error(400, f"Bad request line {self.requestline[:100]!r}; this server "
                                 "speaks HTTP/1.1.")
            return False
        self.command, self.path, self.request_version = words
        try:
            self.headers = read_headers(self.rfile)
        except HTTPProblem as problem:
            self.send_error(problem.status, problem.message)
            return False
        try:
            self.body_length = body_length(self.headers)
        except HTTPProblem as problem:
            self.send_error(problem.status, problem.message)
            return False
        connection = self.headers.get("Connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive")
        if self.server.members.secret is not None and not self.authorized():
            return False
        if self.headers.get("Expect", "").lower() == "100-continue" \
                and self.request_version != "HTTP/1.0":
            return self.handle_expect_100()
        return True

    def authorized(self):
        """Check the request's signature; on failure answer 401 (or 503), close, and say False."""
        try:
            self.check_auth(self.server.members.secret)
            return True
        except Unauthorized as e:
            warn_sometimes("auth", "%s refused: %s", self.address_string(), e)
            problem = HTTPProblem(401, str(e))
            problem.headers["WWW-Authenticate"] = 'P2P-HMAC realm="p2p"'
        except ReplayFull:
            problem = HTTPProblem(503, "Too many signed requests at once; try again shortly.")
            problem.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
        self.close_connection = True
        problem.headers["Connection"] = "close"
        self.send_problem(problem)
        return False

    def check_auth(self, secret):
        """Raise Unauthorized unless this request is signed with ``secret`` (a hook: the file
        server also takes presigned URLs)."""
        secret.check(self.command, self.path, self.headers.get(AUTH_HEADER))

    def date_time_string(self, timestamp=None):
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        cached = _date_cache
        if cached[0] != now:
            cached[:] = [now, super().date_time_string(now)]
        return cached[1]

    def log_request(self, code="-", size="-"):
        if log.isEnabledFor(logging.INFO):
            super().log_request(code, size)

    def dispatch(self, path):
        """Call the ``route_<name>`` that ``routes`` gives ``path`` and this request's method
        (HEAD as GET), with the path's argument; HTTPProblem 404 for no such path, 405 (with
        ``Allow``) for a method the path does not take."""
        methods, args = self.routes.find(path)
        if methods is None:
            raise HTTPProblem(404, self.not_found.format(path=path))
        name = methods.get("GET" if self.command == "HEAD" else self.command)
        if name is None:
            allowed = [*methods, "HEAD"] if "GET" in methods else list(methods)
            problem = HTTPProblem(405, f"{path} accepts {', '.join(allowed)}, not {self.command}.")
            problem.headers["Allow"] = ", ".join(allowed)
            raise problem
        getattr(self, "route_" + name)(*args)

    # -- output -------------------------------------------------------------

    def send_json(self, status, obj=None, headers=None):
        """Send ``obj`` as a JSON reply (no body when it is None)."""
        if obj is None:
            self.send_whole(status, b"", None, headers)
        else:
            self.send_whole(status, encode_json(obj), "application/json", headers)

    def send_whole(self, status, body, content_type, headers=None):
        """Send a whole reply: status line, headers and body built here, one write."""
        headers = dict(headers or {})
        if content_type:
            headers["Content-Type"] = content_type
        if status not in (204, 304):  # neither has a body, nor its length
            headers["Content-Length"] = len(body)
        if self.close_connection:
            headers.setdefault("Connection", "close")
        if headers.get("Connection", "").lower() == "close":
            self.close_connection = True
        self.log_request(status)
        head = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
        reply = (f"{self.protocol_version} {status} {STATUS_PHRASES.get(status, '')}\r\n"
                 f"Server: {self.server_version}\r\nDate: {self.date_time_string()}\r\n"
                 f"{head}\r\n").encode("latin-1")
        self.wfile.write(reply + body if self.command != "HEAD" else reply)

    def send_problem(self, problem):
        """Answer a Problem: its status (500 without one), its sentence and extra fields."""
        body = {"error": problem.message}
        body.update(problem.extra)
        self.send_json(problem.status or 500, body, problem.headers)

    def send_unexpected(self):
        """Answer 500 for a bug of ours (logged with its traceback) and close the connection."""
        log.exception("unexpected error answering %s %s", self.command, self.path)
        self.close_connection = True
        self.send_json(500, {"error": "The server hit an unexpected error; it is logged. "
                                      "Try again, and report it if it persists."})

    def handle_expect_100(self):
        """``Expect: 100-continue``: refuse an over-size body at once, else invite it (flushed)."""
        try:
            too_big = self.body_length > self.max_body
        except ValueError:
            too_big = False
        if too_big:
            self.close_connection = True
            self.send_problem(HTTPProblem(413, f"The body is larger than {self.max_body} bytes."))
            return False
        self.send_response_only(100)
        self.end_headers()
        self.wfile.flush()
        return True

    def send_error(self, code, message=None, explain=None):
        """Protocol-level errors from http.server itself, as JSON, then close."""
        if message is None:
            message = {
                400: "The request could not be parsed as HTTP/1.1.",
                414: "The request line is too long.",
                431: "The request headers are too large.",
                501: "That method is not supported here.",
            }.get(code, HTTPStatus(code).phrase)
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self.send_json(code, {"error": message}, {"Connection": "close"})

    # -- input --------------------------------------------------------------

    def read_body(self):
        """The request body as bytes, within ``max_body``."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise HTTPProblem(411, "Send the body with a Content-Length, not chunked.")
        length = self.body_length
        if length > self.max_body:
            self.close_connection = True
            raise HTTPProblem(413, f"The body is {length} bytes; the limit is {self.max_body}.")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise HTTPProblem(400, "The body ended before its Content-Length.")
        return body

    def discard_body(self):
        """Read and drop a body we do not use, so keep-alive stays in step."""
        try:
            self.read_body()
        except HTTPProblem:
            self.close_connection = True

    # -- logging ------------------------------------------------------------

    def log_message(self, format, *args):
        log.info("%s %s", self.address_string(), format % args)

    def log_error(self, format, *args):
        """A refused request: logged at most once per QUIET_LOG_INTERVAL_S, so that a flood
        of them cannot fill the log."""
        warn_sometimes("refused", "%s %s", self.address_string(), format % args)


def set_nodelay(sock):
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def unmapped(host):
    """``::ffff:10.0.0.7`` (IPv4 seen by an IPv6 socket) -> ``10.0.0.7``; others unchanged."""
    try:
        mapped = getattr(ipaddress.ip_address(host), "ipv4_mapped", None)
    except ValueError:
        return host
    return str(mapped) if mapped else host
