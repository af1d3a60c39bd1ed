"""Shared HTTP/1.1 plumbing for the load balancer and the peer's file server.

Both servers are CPython ``ThreadingHTTPServer`` subclasses (a thread per
connection, a handler per request, ``do_GET`` and friends) with the limits a
server on an open network needs:

* at most ``max_connections`` connections are served at once; the next one
  gets a ``503`` with ``Retry-After`` and is closed, it never waits in a queue;
* every socket has a timeout, and every request a deadline to arrive in
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
speak only TLS: the handshake is done in the connection's worker thread, and a
plain-HTTP client gets a plain 400 that says to use TLS.

Errors are JSON: ``{"error": "<a sentence a person can act on>"}``.
``HTTPProblem`` is the one exception the handlers raise to answer with an
error; everything else that escapes a handler is a 500 and is logged.

Both ends of the protocol also share here what a file name may be
(``check_name``: a relative path that cannot leave or hide in a folder) and
how an address is written (``parse_address``, ``format_address``).
"""

import http.server
import ipaddress
import json
import logging
import re
import socket
import socketserver
import ssl
import sys
import threading
import time
import unicodedata
from http import HTTPStatus

from members import AUTH_HEADER, OPEN, ReplayFull, Unauthorized, describe_tls_error

log = logging.getLogger("p2p.http")
_date_cache = [None, ""]  # [second, Date header]: formatted once a second, not per reply

DEFAULT_SOCKET_TIMEOUT_S = 30.0  # idle keep-alive or half-sent request
DEFAULT_MAX_CONNECTIONS = 64  # concurrent connections per server
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # JSON request bodies
REPLY_BUFFER_BYTES = 64 * 1024  # one write per small reply
MAX_HEADER_LINE_BYTES = 64 * 1024
MAX_HEADERS = 100
STATUS_PHRASES = {s.value: s.phrase for s in HTTPStatus}
MAX_NAME_CHARS = 1024
MAX_NAME_PARTS = 64
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
WINDOWS_FORBIDDEN_CHARS = frozenset('<>:"|?*')
WINDOWS_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{n}" for port in ("COM", "LPT") for n in "123456789\u00b9\u00b2\u00b3"])
HTTP1_RE = re.compile(r"HTTP/1\.[0-9]")
CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,18}")
BUSY_RETRY_AFTER_S = 1
REQUEST_DEADLINE_S = 60.0  # to send a whole request (line, headers, body), however slowly
REAP_INTERVAL_S = 1.0
TLS_HANDSHAKE_DEADLINE_S = 10.0  # to finish the TLS handshake, however slowly
TLS_RECORD_HANDSHAKE = 0x16  # the first byte a TLS client sends
PLAIN_DRAIN_BYTES = 64 * 1024  # read (and drop) this much of a plain request before closing
QUIET_LOG_INTERVAL_S = 10.0  # a warning about refused connections at most this often per kind


class HTTPProblem(Exception):
    """An error answer: an HTTP status and a sentence for the person reading it."""

    def __init__(self, status, message, **extra):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.extra = extra
        self.headers = {}


_quiet_last = {}  # kind -> time.monotonic() of the last warning about it


def warn_sometimes(kind, message, *args):
    """Log a warning about refused input at most once per QUIET_LOG_INTERVAL_S per ``kind``,
    so that a flood of bad requests cannot fill the log."""
    now = time.monotonic()
    if now - _quiet_last.get(kind, -QUIET_LOG_INTERVAL_S) >= QUIET_LOG_INTERVAL_S:
        _quiet_last[kind] = now
        log.warning(message, *args)


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


def read_headers(rfile):
    """Header lines up to the blank line -> Headers, or HTTPProblem (400 or 431)."""
    headers = Headers()
    for _ in range(MAX_HEADERS + 1):
        line = rfile.readline(MAX_HEADER_LINE_BYTES + 1)
        if len(line) > MAX_HEADER_LINE_BYTES:
            raise HTTPProblem(431, "A request header line is too long.")
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, sep, value = line.decode("iso-8859-1").partition(":")
        if not sep or not name or name != name.strip() or name[0] in " \t":
            raise HTTPProblem(400, f"Malformed request header line {line[:80]!r}.")
        headers.add(name, value.strip())
    raise HTTPProblem(431, f"More than {MAX_HEADERS} request headers.")


def encode_json(obj):
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from someone's input: escape, don't fail
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


class BoundedHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server with a cap on concurrent connections."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address, handler, max_connections=DEFAULT_MAX_CONNECTIONS,
                 timeout=DEFAULT_SOCKET_TIMEOUT_S, request_deadline=REQUEST_DEADLINE_S,
                 members=OPEN):
        self.members = members
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.slots = threading.BoundedSemaphore(max_connections)
        self.handler_timeout = timeout
        self.request_deadline = request_deadline
        self._deadlines = {}  # connection -> time.monotonic() by which it must be done
        self._deadlines_lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(address, handler)
        threading.Thread(target=self._reap, daemon=True, name="deadlines").start()

    def set_deadline(self, connection, seconds):
        """Cut ``connection`` if it is still at it ``seconds`` from now (None: no deadline).

        Socket timeouts bound each read and write; this bounds the whole request, so a
        client that trickles a byte at a time cannot hold a thread (or a slot) for ever.
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

    def server_close(self):
        self._closed.set()
        super().server_close()

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) we don't need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    @property
    def port(self):
        return self.server_address[1]

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            if self.members.tls is not None:
                request = self._start_tls(request, client_address)
            if request is not None:
                super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _start_tls(self, request, client_address):
        """The connection wrapped in TLS (handshake done), or None when it was refused."""
        request.settimeout(self.handler_timeout)
        self.set_deadline(request, TLS_HANDSHAKE_DEADLINE_S)
        try:
            first = request.recv(1, socket.MSG_PEEK)
            if first and first[0] != TLS_RECORD_HANDSHAKE:
                self._refuse_plain(request, client_address)
                return None
            if first:
                return self.members.tls.server.wrap_socket(request, server_side=True)
        except ssl.SSLError as e:
            warn_sometimes("tls", "TLS connection from %s refused: %s", client_address[0],
                           describe_tls_error(e))
        except OSError:
            pass
        finally:
            self.set_deadline(request, None)
        self.shutdown_request(request)
        return None

    def _refuse_plain(self, request, client_address):
        """A plain-HTTP client on a TLS server: a plain answer it can read, then close."""
        warn_sometimes("plain", "plain HTTP from %s refused: this server speaks TLS only",
                       client_address[0])
        body = encode_json({"error": "This server speaks TLS only: use https:// with the "
                                     "network certificate (--tls-cert and --tls-key)."})
        head = ("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("ascii")
        try:
            request.sendall(head + body)
            request.shutdown(socket.SHUT_WR)
            request.settimeout(1.0)
            request.recv(PLAIN_DRAIN_BYTES)  # so closing does not reset the answer away
        except OSError:
            pass
        self.shutdown_request(request)

    def _refuse(self, request):
        body = encode_json({"error": "The server is at its connection limit; "
                                     "try again in a moment."})
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: {BUSY_RETRY_AFTER_S}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass
        self.shutdown_request(request)

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

    def version_string(self):
        return self.server_version

    def setup(self):
        self.timeout = self.server.handler_timeout
        super().setup()

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
        if self.raw_requestline[:1] == bytes([TLS_RECORD_HANDSHAKE]):
            warn_sometimes("tls-on-plain", "a TLS client connected from %s, but this server was "
                           "started without --tls-cert", self.client_address[0])
            return False  # it cannot read a plain answer: just close
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
        if status != 204:
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
        body = {"error": problem.message}
        body.update(problem.extra)
        self.send_json(problem.status, body, problem.headers)

    def send_unexpected(self):
        """Answer 500 for a bug of ours (logged with its traceback) and close the connection."""
        log.exception("unexpected error answering %s %s", self.command, self.path)
        self.close_connection = True
        self.send_json(500, {"error": "The server hit an unexpected error; it is logged. "
                                      "Try again, and report it if it persists."})

    def handle_expect_100(self):
        """``Expect: 100-continue``: refuse an over-size body at once, else invite it (flushed)."""
        try:
            too_big = int(self.headers.get("Content-Length", "0")) > self.max_body
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
        values = set(self.headers.get_all("Content-Length") or ["0"])
        raw = values.pop()
        if values or not CONTENT_LENGTH_RE.fullmatch(raw.strip()):
            self.close_connection = True
            raise HTTPProblem(400, f"Content-Length {raw!r} is not one plain byte count.")
        length = int(raw)
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


# ---------------------------------------------------------------------------
# Names on the wire: both ends, the load balancer and the peers, use one rule


class BadName(ValueError):
    """A file name that is not a safe relative path; the message says why."""


def check_name(name):
    """Return ``name`` if it is a safe relative path under a shared folder, else raise BadName."""
    if not isinstance(name, str) or not name:
        raise BadName("The file name is empty.")
    if len(name) > MAX_NAME_CHARS:
        raise BadName(f"The file name is longer than {MAX_NAME_CHARS} characters.")
    if "\\" in name:
        raise BadName("The file name contains a backslash; use / between folders.")
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in BIDI_CONTROLS for c in name):
        raise BadName("The file name contains NUL, control or text-direction characters.")
    if name.startswith("/"):
        raise BadName("The file name is an absolute path; names are relative to the shared folder.")
    if re.match(r"[A-Za-z]:", name):  # before the rule on ':' below, for the clearer reason
        raise BadName("The file name starts with a drive letter (like C:); names are relative "
                      "to the shared folder.")
    parts = name.split("/")
    if len(parts) > MAX_NAME_PARTS:
        raise BadName(f"The file name has more than {MAX_NAME_PARTS} folders.")
    for part in parts:
        if part in ("", ".", ".."):
            raise BadName("The file name has an empty, '.' or '..' part.")
        if part.startswith("."):
            raise BadName("Hidden files (names starting with '.') are not shared.")
        check_windows_part(part)
    return name


def check_windows_part(part):
    """Raise BadName for a name a Windows peer could not write safely: the characters
    ``<>:"|?*``, a trailing dot or space, or a device name such as ``CON`` or ``nul.txt``."""
    if any(c in WINDOWS_FORBIDDEN_CHARS for c in part):
        raise BadName('The file name contains one of <>:"|?*, which Windows cannot use in names.')
    if part.endswith((".", " ")):
        raise BadName("A part of the file name ends with a dot or a space, which Windows drops.")
    if part.split(".")[0].rstrip(" ").upper() in WINDOWS_DEVICE_NAMES:
        raise BadName(f"{part!r} is a device name on Windows (like CON, NUL, COM1), "
                      "not a file name.")



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


def format_address(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text, default_port=None):
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port or default).

    Raises ValueError with a sentence when the text is not an address.
    """
    text = text.strip()
    if not text:
        raise ValueError("The address is empty.")
    port = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not an address like [::1]:6969.")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    if not re.fullmatch(r"[A-Za-z0-9._%:-]+", host) or host.isdigit():
        raise ValueError(f"{text!r} is not an address like 192.168.1.5 or 192.168.1.5:41237.")
    if port is None:
        return host, default_port
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError(f"{port!r} in {text!r} is not a port number (1-65535).")
    return host, int(port)
