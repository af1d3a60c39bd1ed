"""The base request handler of both servers: HTTP/1.1 keep-alive, JSON in and out, signed
requests checked before a body is read, routing by ``Routes``, logging to ``logging``.
"""

import functools
import http.server
import logging
import time
from http import HTTPStatus

from p2p.core.members import (AUTH_HEADER, PROOF_HEADER, NetworkSecret, ReplayFull, Unauthorized,
                              names_this_server)
from p2p.http.channel import Reader
from p2p.http.limits import LIMITS
from p2p.http.messages import (HTTP1_RE, STATUS_PHRASES, HTTPProblem, body_length, encode_json,
                               read_headers, warn_sometimes)
from p2p.http.routes import Routes

log = logging.getLogger("p2p.http")
_date_cache = [None, ""]  # [second, Date header]: formatted once a second, not per reply

def addressed_to(handler):
    """Whether an authority (the Host a request was signed for) names ``handler``'s server."""
    known = getattr(handler.server, "address", None)
    return functools.partial(names_this_server, local_ip=handler.connection.getsockname()[0],
                             port=handler.server.port,
                             known_hosts=[known.rpartition(":")[0].strip("[]")] if known else ())


def check_signed_body(handler, body):
    """HTTPProblem 401 unless ``body`` is the one the request was signed with."""
    if getattr(handler, "signed", None) is not None:
        try:
            NetworkSecret.check_body(handler.signed, body)
        except Unauthorized as e:
            handler.close_connection = True
            raise HTTPProblem(401, str(e)) from None


class JSONRequestHandler(http.server.BaseHTTPRequestHandler):
    """Base handler: HTTP/1.1 keep-alive, JSON in and out, logging to ``logging``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = LIMITS.reply_buffer_bytes
    max_body = LIMITS.max_body_bytes
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
                LIMITS.keepalive_linger_s, self.server.requests_waiting):
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
        self.command = self.signed = None  # signed: this request's members.Signed, once checked
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
            problem.headers["Retry-After"] = str(LIMITS.busy_retry_after_s)
        self.close_connection = True
        problem.headers["Connection"] = "close"
        self.send_problem(problem)
        return False

    def check_auth(self, secret):
        """Raise Unauthorized unless this request is signed with ``secret`` (a hook: the file
        server also takes presigned URLs)."""
        self.signed = secret.check(self.command, self.path, self.headers.get(AUTH_HEADER),
                                   self.headers.get("Host", ""), addressed_to(self))

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
        if getattr(self, "signed", None) is not None:  # prove we hold the secret too
            headers[PROOF_HEADER] = self.server.members.secret.prove(self.signed.nonce, status,
                                                                     body)
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
        check_signed_body(self, body)
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
        """A refused request: logged at most once per LIMITS.quiet_log_interval_s, so that a flood
        of them cannot fill the log."""
        warn_sometimes("refused", "%s %s", self.address_string(), format % args)
