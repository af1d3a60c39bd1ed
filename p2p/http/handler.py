"""The base request handler of both servers: HTTP/1.1 keep-alive, JSON in and out, signed
requests checked before a body is read, routing by ``Routes``, logging to ``logging``.

A handler lives for one visit of a worker to a connection: it answers the request the
selector found whole, then, while the client keeps the connection alive, each next request
that is whole already or arrives within ``LIMITS.keepalive_linger_s`` (``Connection.
next_request``). Each request's head is parsed in one piece from the connection's buffer
(``parse_head``); its body is read through ``rfile`` (``BodyReader``), within the
server's request deadline when it is not in yet; the reply (``replies.py``) leaves in one
write.
"""

import functools
import http.server
import logging

from p2p.core.members import (AUTH_HEADER, NetworkSecret, ReplayFull, Unauthorized,
                              names_this_server)
from p2p.http.channel import BodyReader
from p2p.http.limits import LIMITS
from p2p.http.messages import HTTPProblem, body_length, parse_head, warn_sometimes
from p2p.http.replies import Replies
from p2p.http.routes import Routes

log = logging.getLogger("p2p.http")


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


class JSONRequestHandler(Replies, http.server.BaseHTTPRequestHandler):
    """Base handler: HTTP/1.1 keep-alive, JSON in and out, logging to ``logging``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = LIMITS.reply_buffer_bytes
    max_body = LIMITS.max_body_bytes
    server_version = "p2p"
    routes = Routes({})  # each server's paths; see dispatch
    not_found = "There is no {path} here."  # the 404 of a path no route has
    signed = None  # the request's members.Signed, once its signature is checked

    def version_string(self):
        return self.server_version

    def setup(self):
        """``self.request`` is the server's Connection: its socket, and the bytes of the
        request the selector has read already."""
        self.connection = self.request.sock
        self.timeout = self.server.handler_timeout
        self.rfile = BodyReader(self.request, self.server)
        self.wfile = self.connection.makefile("wb", self.wbufsize)

    def finish(self):
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except OSError:
                pass
        self.wfile.close()

    @property
    def source(self):
        """The client's host (an IPv4 address seen through IPv6 written as IPv4)."""
        return self.request.source

    def handle(self):
        """One request, and those the client sends right after it; then the connection goes
        back to the server's selector, or is closed."""
        self.close_connection = True
        self.handle_one_request()
        linger = min(LIMITS.keepalive_linger_s, self.timeout)
        while not self.close_connection and self.request.next_request(
                linger, self.server.requests_waiting):
            self.handle_one_request()

    def handle_one_request(self):
        """Parse the request whole in the buffer, call its ``do_<METHOD>``, flush the reply.
        Whatever deadline the request was put under (reading its body, sending a file) ends
        with it."""
        try:
            if not self.parse_request():
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(501, f"Unsupported method ({self.command!r}).")
                return
            method()
            self.wfile.flush()
        except TimeoutError as e:
            self.log_error("Request timed out: %r", e)
            self.close_connection = True
        finally:
            self.server.clear_deadline(self.connection)

    def request_read(self):
        """The whole request is in: the answer is not held to the request deadline (set only
        when its body had to be read from the socket)."""
        if self.rfile.timed:
            self.rfile.timed = False
            self.server.clear_deadline(self.connection)

    def parse_request(self):
        """Parse the head (``parse_head``) and check what a request must have before its body
        is read: its framing, and on a closed network its signature. On failure an error
        has been sent and it returns False."""
        self.command = self.signed = None  # signed: this request's members.Signed, once checked
        self.request_version = self.default_request_version
        self.close_connection = True
        try:
            parsed = parse_head(self.request.take_head())
            if parsed is None:
                return False
            self.command, self.path, version, headers = parsed
            self.request_version, self.headers = version, headers
            self.body_length = headers.length
            if headers.length < 0:
                body_length(headers)  # raises its 400
        except HTTPProblem as problem:
            self.send_error(problem.status, problem.message)
            return False
        connection = headers.connection
        self.close_connection = connection == "close" or (
            version == "HTTP/1.0" and connection != "keep-alive")
        if self.server.members.secret is not None and not self.authorized():
            return False
        if headers.expects_continue and version != "HTTP/1.0":
            return self.handle_expect_100()
        return True

    @property
    def requestline(self):
        """The request line, for the log: made only when something is logged."""
        return f"{self.command} {self.path} {self.request_version}" if self.command else ""

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

    # -- input --------------------------------------------------------------

    def read_body(self):
        """The request body as bytes, within ``max_body``."""
        if self.headers.chunked:
            self.close_connection = True
            raise HTTPProblem(411, "Send the body with a Content-Length, not chunked.")
        length = self.body_length
        if length and length > self.max_body:
            self.close_connection = True
            raise HTTPProblem(413, self.body_too_large(length))
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self.close_connection = True
            raise HTTPProblem(400, "The body ended before its Content-Length.")
        if self.signed is not None:
            check_signed_body(self, body)
        return body

    def body_too_large(self, length):
        """Why a body of ``length`` bytes, over ``max_body``, is refused (413)."""
        return f"The body is {length} bytes; the limit is {self.max_body}."

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
