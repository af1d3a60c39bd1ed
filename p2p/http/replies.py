"""The output half of both servers' request handler: whole replies built in one piece and
written once (JSON, errors, ``100 Continue``), and the ``Date`` header formatted once a
second. ``JSONRequestHandler`` (``handler.py``) mixes it into ``http.server``'s handler, whose
``send_response``/``send_header``/``end_headers`` remain for streamed replies (files).
"""

import email.utils
import logging
import time
from http import HTTPStatus

from p2p.core.members import PROOF_HEADER
from p2p.http.messages import STATUS_PHRASES, HTTPProblem, encode_json

log = logging.getLogger("p2p.http")
_date_cache = [None, ""]  # [second, Date header]: formatted once a second, not per reply
_heads = {}  # (version, status, server, content type, second) -> a reply's first lines
HEADS_KEPT = 64  # kinds of reply whose first lines are kept (a handful are made a second)

PROTOCOL_ERRORS = {  # the sentence of an error http.server's own code sends
    400: "The request could not be parsed as HTTP/1.1.",
    414: "The request line is too long.",
    431: "The request headers are too large.",
    501: "That method is not supported here.",
}


def http_date():
    """Now, as the ``Date`` header says it (``http.server``'s format), made once a second."""
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return cached[1]


def reply_head(version, status, server, content_type):
    """A reply's status line, ``Server``, ``Date`` and ``Content-Type`` (when not None) header
    lines: made once a second for each kind of reply."""
    key = (version, status, server, content_type, int(time.time()))
    head = _heads.get(key)
    if head is None:
        head = (f"{version} {status} {STATUS_PHRASES.get(status, '')}\r\n"
                f"Server: {server}\r\nDate: {http_date()}\r\n")
        if content_type:
            head = f"{head}Content-Type: {content_type}\r\n"
        if len(_heads) >= HEADS_KEPT:
            _heads.clear()
        _heads[key] = head
    return head


class Replies:
    """Replies of a ``BaseHTTPRequestHandler`` whose ``request`` is a ``Connection``: each
    whole one leaves in one write, straight to the socket."""

    def date_time_string(self, timestamp=None):
        if timestamp is not None:
            return super().date_time_string(timestamp)
        return http_date()

    def send_json(self, status, obj=None, headers=None):
        """Send ``obj`` as a JSON reply (no body when it is None)."""
        if obj is None:
            self.send_whole(status, b"", None, headers)
        else:
            self.send_whole(status, encode_json(obj), "application/json", headers)

    def send_whole(self, status, body, content_type, headers=None):
        """Send a whole reply: status line, headers and body built here, one write."""
        head = reply_head(self.protocol_version, status, self.server_version, content_type)
        if status != 204 and status != 304:  # neither has a body, nor its length
            head = f"{head}Content-Length: {len(body)}\r\n"
        if headers:
            head += self.extra_headers(headers)
        elif self.close_connection:
            head += "Connection: close\r\n"
        if self.signed is not None:  # prove we hold the secret too
            proof = self.server.members.secret.prove(self.signed.nonce, status, body)
            head = f"{head}{PROOF_HEADER}: {proof}\r\n"
        reply = f"{head}\r\n".encode("latin-1")
        self.wfile.flush()  # anything written before it goes first
        self.request.write(reply + body if body and self.command != "HEAD" else reply)
        if log.isEnabledFor(logging.INFO):  # after the write: while the client reads it
            self.log_request(status)

    def extra_headers(self, headers):
        """``headers`` as header lines, and ``Connection: close`` when the connection is to be
        closed and they do not say it (a ``Connection: close`` among them closes it)."""
        lines = []
        for key, value in headers.items():
            lines.append(f"{key}: {value}\r\n")
            if key == "Connection" and value.lower() == "close":
                self.close_connection = True
        if self.close_connection and "Connection" not in headers:
            lines.append("Connection: close\r\n")
        return "".join(lines)

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
        if self.body_length > self.max_body:
            self.close_connection = True
            self.send_problem(HTTPProblem(413, f"The body is larger than {self.max_body} bytes."))
            return False
        self.send_response_only(100)
        self.end_headers()
        self.wfile.flush()
        return True

    def send_error(self, code, message=None, explain=None):
        """Protocol-level errors, as JSON, then close."""
        if message is None:
            message = PROTOCOL_ERRORS.get(code, HTTPStatus(code).phrase)
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self.send_json(code, {"error": message}, {"Connection": "close"})
