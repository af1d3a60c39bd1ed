"""Tests of the HTTP plumbing's pure parts: a request head parsed in one piece
(``p2p/http/messages.parse_head``), its framing (``body_length``), and where a request
ends in a buffer (``p2p/http/channel.head_end`` and ``request_ready``); no sockets."""

import json
import unittest
from urllib.parse import parse_qs

from p2p.http.channel import head_end, request_ready
from p2p.http.limits import LIMITS
from p2p.http.messages import HTTPProblem, body_length, decode_json, parse_head, parse_query


class ParseHeadTests(unittest.TestCase):
    def test_a_head_gives_its_request_line_and_headers(self):
        for head in [b"POST /transfers HTTP/1.1\r\nHost: lb\r\nContent-Length:  7 \r\n"
                     b"X-A: 1\r\nx-a: 2\r\n\r\n",
                     b"POST /transfers HTTP/1.1\nHost: lb\nContent-Length: 7\nX-A: 1\nx-a: 2\n\n"]:
            with self.subTest(head=head):
                method, target, version, headers = parse_head(head)
                self.assertEqual((method, target, version), ("POST", "/transfers", "HTTP/1.1"))
                self.assertEqual(headers.get("host"), "lb")
                self.assertEqual(headers.get("CONTENT-LENGTH"), "7")
                self.assertEqual(headers.get_all("X-A"), ["1", "2"])
                self.assertIsNone(headers.get("Accept"))

    def test_a_request_line_alone_and_an_empty_one(self):
        self.assertEqual(parse_head(b"GET / HTTP/1.0\r\n\r\n")[:3], ("GET", "/", "HTTP/1.0"))
        self.assertIsNone(parse_head(b"\r\n\r\n"))
        self.assertIsNone(parse_head(b"\n\n"))

    def test_bad_heads_are_refused_with_their_status(self):
        long_line = b"X: " + b"a" * LIMITS.max_header_line_bytes
        cases = [
            (b"GET /\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 400),
            (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nName : x\r\n\r\n", 400),
            (b"GET /" + b"a" * LIMITS.max_header_line_bytes + b" HTTP/1.1\r\n\r\n", 414),
            (b"GET / HTTP/1.1\r\n" + long_line + b"\r\n\r\n", 431),
            (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * (LIMITS.max_headers + 1) + b"\r\n", 431),
        ]
        for head, status in cases:
            with self.subTest(head=head[:40], status=status):
                with self.assertRaises(HTTPProblem) as cm:
                    parse_head(head)
                self.assertEqual(cm.exception.status, status)

    def test_a_repeated_block_of_header_lines_is_parsed_once_and_shared_read_only(self):
        first = parse_head(b"POST /a HTTP/1.1\r\nHost: lb\r\nX: 1\r\n\r\n")
        again = parse_head(b"GET /b HTTP/1.0\r\nHost: lb\r\nX: 1\r\n\r\n")
        self.assertEqual(again[:3], ("GET", "/b", "HTTP/1.0"))
        self.assertIs(again[3].by_name, first[3].by_name)
        again[3].get_all("X").append("2")
        self.assertEqual(first[3].get_all("X"), ["1"])
        for _ in range(2):  # a bad block is refused every time, never remembered
            with self.assertRaises(HTTPProblem):
                parse_head(b"GET / HTTP/1.1\r\nno colon\r\n\r\n")

    def test_a_head_seen_again_is_kept_parsed_a_bad_one_never(self):
        head = b"DELETE /t/1?x=y HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer s\r\n\r\n"
        first = parse_head(head)  # its header lines are new: the head is not kept yet
        self.assertIsNot(parse_head(head), first)
        self.assertIs(parse_head(bytearray(head)), parse_head(head))
        self.assertEqual(parse_head(head), first)
        for _ in range(2):
            with self.assertRaises(HTTPProblem):
                parse_head(b"GET / HTTP/2.0\r\nHost: lb\r\n\r\n")

    def test_what_every_request_is_asked_is_worked_out_with_its_headers(self):
        cases = [
            (b"", (0, "", False, False)),
            (b"Content-Length: 12\r\nConnection: Keep-Alive\r\n", (12, "keep-alive", False, False)),
            (b"Content-Length: 1\r\ncontent-length: 2\r\n", (-1, "", False, False)),
            (b"Transfer-Encoding: gzip, Chunked\r\nExpect: 100-Continue\r\n",
             (0, "", True, True)),
            (b"Expect: nothing\r\nConnection: close\r\n", (0, "close", False, False)),
        ]
        for lines, expected in cases:
            with self.subTest(lines=lines):
                headers = parse_head(b"POST / HTTP/1.1\r\n" + lines + b"\r\n")[3]
                self.assertEqual((headers.length, headers.connection, headers.chunked,
                                  headers.expects_continue), expected)

    def test_the_most_headers_allowed_pass(self):
        head = b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * LIMITS.max_headers + b"\r\n"
        self.assertEqual(len(parse_head(head)[3].get_all("X")), LIMITS.max_headers)


class ParseQueryTests(unittest.TestCase):
    def test_it_is_parse_qs(self):
        for query in ["outcome=done", "a=1&a=2&b=3", "a=&b", "&&a=1&", "=x", "a=b=c",
                      "name=caf%C3%A9+x", "p2p-expires=1&p2p-sig=abc-_", "a=%zz", "a+b=c d",
                      "a;b=1", "\u00e9=\u00e8"]:
            with self.subTest(query=query):
                self.assertEqual(parse_query(query), parse_qs(query))


class DecodeJsonTests(unittest.TestCase):
    def test_it_is_json_loads(self):
        for body in [b'{"name": "f"}', '{"name": "\u00e9"}'.encode("utf-8"),
                     '{"name": "\u00e9"}'.encode("utf-16"), '{"a": 1}'.encode("utf-16-le"),
                     '{"a": 1}'.encode("utf-32"), b'\xef\xbb\xbf{"a": 1}', b'[1, 2]',
                     b'{"a": "\\ud800"}']:
            with self.subTest(body=body):
                self.assertEqual(decode_json(body), json.loads(body))
        for body in [b"{", b'{"a": 1} x', b'{"a": "\xff"}']:
            with self.subTest(body=body), self.assertRaises(ValueError):
                decode_json(body)


class FramingTests(unittest.TestCase):
    def length(self, *values):
        head = b"POST / HTTP/1.1\r\n" + b"".join(b"Content-Length: %s\r\n" % v for v in values)
        return body_length(parse_head(head + b"\r\n")[3])

    def test_one_plain_count_or_none(self):
        self.assertEqual(self.length(), 0)
        self.assertEqual(self.length(b"12"), 12)
        self.assertEqual(self.length(b"12", b" 12"), 12)

    def test_anything_else_is_a_400(self):
        for values in [(b"1", b"2"), (b"-1",), (b"+1",), (b"",), (b"1 2",), (b"0x10",),
                       (b"1" * 19,), ("\u00b2".encode("latin-1"),)]:
            with self.subTest(values=values):
                with self.assertRaises(HTTPProblem) as cm:
                    self.length(*values)
                self.assertEqual(cm.exception.status, 400)


class RequestEndTests(unittest.TestCase):
    def test_head_end(self):
        for buf, end in [(b"", -1), (b"GET / HTTP/1.1\r\n", -1), (b"GET / HTTP/1.1\r\n\r\nX", 18),
                         (b"GET / HTTP/1.1\n\nX", 16)]:
            with self.subTest(buf=buf):
                self.assertEqual(head_end(bytearray(buf)), end)

    def test_a_request_is_whole_with_its_small_body_or_when_the_body_waits_for_the_handler(self):
        big = LIMITS.max_buffered_body_bytes + 1
        cases = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n", False),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True),
            (b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\nab", False),
            (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd", True),
            (b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % big, True),  # a worker reads it
            (b"POST / HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n", True),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", True),  # refused later
        ]
        for buf, whole in cases:
            with self.subTest(buf=buf):
                self.assertEqual(request_ready(bytearray(buf)), whole)


if __name__ == "__main__":
    unittest.main()
