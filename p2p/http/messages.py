"""HTTP/1.1 messages for both servers: the error an answer is made of, request headers read
by a plain parser, a request's framing (RFC 9112 §6.3), short answers the selector sends,
JSON, and a few socket and address helpers.

A request head is parsed in one piece (``parse_head``), from the bytes the connection holds:
the selector, or the worker's fast path, has seen it whole before a handler runs.
"""

import ipaddress
import json
import logging
import re
import socket
import time
from http import HTTPStatus
from urllib.parse import parse_qs

from p2p.core.errors import Problem
from p2p.http.limits import LIMITS

log = logging.getLogger("p2p.http")

STATUS_PHRASES = {s.value: s.phrase for s in HTTPStatus}

HTTP1_RE = re.compile(r"HTTP/1\.[0-9]")
HTTP1_VERSIONS = frozenset(("HTTP/1.1", "HTTP/1.0"))  # the versions sent, matched without HTTP1_RE

HEAD_CONTENT_LENGTH_RE = re.compile(rb"\ncontent-length:[ \t]*([0-9]{1,18})[ \t]*\r?\n", re.I)

EXPECT_CONTINUE_RE = re.compile(rb"\nexpect:[ \t]*100-continue", re.I)

class HTTPProblem(Problem):
    """An error answer a handler raises: an HTTP status and a sentence."""

    def __init__(self, status, message, **extra):
        super().__init__(message, status, **extra)

_quiet_last = {}  # kind -> time.monotonic() of the last warning about it

def warn_sometimes(kind, message, *args):
    """Log a warning about refused input at most once per LIMITS.quiet_log_interval_s per ``kind``,
    so that a flood of bad requests cannot fill the log."""
    now = time.monotonic()
    if now - _quiet_last.get(kind, -LIMITS.quiet_log_interval_s) >= LIMITS.quiet_log_interval_s:
        _quiet_last[kind] = now
        log.warning(message, *args)

def short_answer(status, message, headers="", **extra):
    """A whole error answer, ``Connection: close``, as bytes sent by the selector thread."""
    body = encode_json({"error": message, **extra})
    return (f"HTTP/1.1 {status} {STATUS_PHRASES[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}Connection: close\r\n\r\n"
            ).encode("ascii") + body

class Headers:
    """Request headers with the case-insensitive ``get``/``get_all`` of email.message.Message;
    ``by_name`` maps each lower-case name to its values in the order received (the HTTP
    layer's own lookups, without a call). What the layer asks of every request is worked out
    once per block of header lines: ``length``, the body's (``body_length``; -1 when it is
    not one plain count), ``connection`` (its first value, lower case, or ''), ``chunked``
    and ``expects_continue``."""

    __slots__ = ("by_name", "length", "connection", "chunked", "expects_continue")

    def __init__(self, by_name):
        self.by_name = by_name
        try:
            self.length = body_length(self)
        except HTTPProblem:
            self.length = -1  # the handler asks body_length for its 400
        connection = by_name.get("connection")
        coding = by_name.get("transfer-encoding")
        expect = by_name.get("expect")
        self.connection = connection[0].lower() if connection else ""
        self.chunked = coding is not None and "chunked" in coding[0].lower()
        self.expects_continue = expect is not None and expect[0].lower() == "100-continue"

    def get(self, name, default=None):
        values = self.by_name.get(name.lower())
        return values[0] if values else default

    def get_all(self, name, default=None):
        values = self.by_name.get(name.lower())
        return list(values) if values else default

def header_field(line):
    """One header line, of a request or of a response -> (name, value without the white
    space around it), or None when it is not ``name: value`` (no colon, no name, or white
    space before the colon or the name). The one rule for header lines on both sides."""
    name, sep, value = line.partition(":")
    if not sep or not name or name != name.strip():
        return None
    return name, value.strip()

def parse_head(head):
    """A request head (bytes, its blank line included) -> (method, target, version, Headers),
    or None for an empty request line (the client is done: close without a word); an
    HTTPProblem (400, 414 or 431) for a bad one. HTTP/1.0 and 1.1 only.

    A keep-alive client sends the same head, or the same header lines, again and again:
    the last ``LIMITS.parsed_heads_kept`` heads and blocks of header lines (each up to
    ``LIMITS.parsed_head_max_bytes``) are remembered parsed, and shared read-only."""
    text = head.decode("iso-8859-1")
    parsed = _parsed_heads.get(text)
    if parsed is None:
        parsed, seen = parse_new_head(text)
        if seen:  # a head whose header lines are new each time (a secret in them) is not kept
            remember(_parsed_heads, text, parsed)
    return parsed

def parse_new_head(text):
    """``parse_head`` of a head not remembered, as text; and whether its block of header
    lines was remembered already."""
    end = text.find("\n")
    line = text[:end]
    if line.endswith("\r"):
        line = line[:-1]
    if len(line) > LIMITS.max_header_line_bytes:
        raise HTTPProblem(414, "The request line is too long.")
    words = line.split()
    if not words:
        return None, False
    if len(words) != 3 or words[2] not in HTTP1_VERSIONS and not HTTP1_RE.fullmatch(words[2]):
        raise HTTPProblem(400, f"Bad request line {line[:100]!r}; this server speaks HTTP/1.1.")
    block = text[end + 1:]
    headers = _parsed_blocks.get(block)
    seen = headers is not None
    if not seen:
        headers = Headers(parse_header_lines(block))
        remember(_parsed_blocks, block, headers)
    return (words[0], words[1], words[2], headers), seen

def remember(kept, text, parsed):
    """Keep a short ``text`` parsed in ``kept``, which starts afresh when it is full."""
    if len(text) <= LIMITS.parsed_head_max_bytes:
        if len(kept) >= LIMITS.parsed_heads_kept:
            kept.clear()
        kept[text] = parsed

_parsed_heads = {}  # whole heads -> (method, target, version, Headers), never changed
_parsed_blocks = {}  # header lines, their blank line included -> Headers, never changed

def parse_header_lines(block):
    """The header lines of a request head, then its blank line -> {lower-case name: [value,
    ...]}; an HTTPProblem (400 or 431) for a bad one."""
    lines = block.split("\n")
    del lines[-2:]  # the blank line, and what follows its line feed
    if len(lines) > LIMITS.max_headers:
        raise HTTPProblem(431, f"More than {LIMITS.max_headers} request headers.")
    by_name = {}
    max_line = LIMITS.max_header_line_bytes
    for line in lines:  # header_field, inline: this loop is hot
        name, sep, value = line.partition(":")
        if len(line) > max_line or not sep or not name or name != name.strip():
            if len(line) > max_line:
                raise HTTPProblem(431, "A request header line is too long.")
            raise HTTPProblem(400, f"Malformed request header line {line[:80]!r}.")
        by_name.setdefault(name.lower(), []).append(value.strip())
    return by_name

def body_length(headers):
    """The body's length that ``headers`` frame (RFC 9112 §6.3): one plain byte count, or 0.

    Content-Length headers that disagree, or one that is not a plain count, are a 400: the
    request's end cannot be known, so the connection cannot be kept in step.
    """
    values = headers.by_name.get("content-length")
    if values is None:
        return 0
    raw = values[0].strip()
    if len(values) > 1 and any(value.strip() != raw for value in values) or not (
            len(raw) <= 18 and raw.isascii() and raw.isdigit()):
        raise HTTPProblem(400, f"Content-Length {raw!r} is not one plain byte count.")
    return int(raw)

UTF8_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # made once, not per reply
ASCII_JSON = json.JSONEncoder(separators=(",", ":"))

def encode_json(obj):
    try:
        return UTF8_JSON.encode(obj).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from someone's input: escape, don't fail
        return ASCII_JSON.encode(obj).encode("ascii")

JSON_DECODER = json.JSONDecoder()

def decode_json(body):
    """``json.loads(body)`` of a request body (bytes): one that opens with ``{`` and no NUL
    is UTF-8 to ``json.detect_encoding``, and is decoded here without its calls."""
    if body[:1] == b"{" and body[1:2] != b"\0":
        text = body.decode("utf-8", "surrogatepass")
        if text[-1] == "}":  # nothing after the object: its end is the text's, or an error
            obj, end = JSON_DECODER.raw_decode(text)
            if end == len(text):
                return obj
    return json.loads(body)

def parse_query(query):
    """``urllib.parse.parse_qs(query)``: {name: [value, ...]}, fields without a value left
    out; a query with nothing to unquote (no ``%`` or ``+``) is split here, at a fifth of
    the cost."""
    if "%" in query or "+" in query:
        return parse_qs(query)
    args = {}
    for field in query.split("&"):
        name, _, value = field.partition("=")
        if value:
            known = args.get(name)
            if known is None:
                args[name] = [value]
            else:
                known.append(value)
    return args

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
