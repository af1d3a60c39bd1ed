"""HTTP by the book (RFC 9110) on both servers: the pure rules, then each checked with curl.

The servers run in this process on 127.0.0.1 port 0; curl runs as a subprocess with a
timeout. Skipped where curl is not installed.
"""

import hashlib
import html.parser
import os
import re
import shutil
import subprocess
import unittest

from p2p.core import registry as lb_core
from p2p.net import lb_server
from p2p.net.lb_client import LBClient, Unreachable, not_a_load_balancer
from p2p.net.sharing import (FileServer, content_type, etag_listed, http_date, not_modified,
                     parse_http_date, range_applies)
from tests.support import hashed_index, quiet_logs, raw_request, serve_in_thread
from p2p.core.wire import FileRecord

CURL_TIMEOUT_S = 20
ETAG = '"' + "ab" * 32 + '"'


class RuleTests(unittest.TestCase):

    def test_if_range_needs_this_very_version(self):
        self.assertTrue(range_applies(None, ETAG, 1000))
        self.assertTrue(range_applies(ETAG, ETAG, 1000))
        self.assertFalse(range_applies('"' + "cd" * 32 + '"', ETAG, 1000))
        self.assertFalse(range_applies("W/" + ETAG, ETAG, 1000))  # weak never matches
        self.assertTrue(range_applies(http_date(1000), ETAG, 1000))
        self.assertFalse(range_applies(http_date(999), ETAG, 1000))
        self.assertFalse(range_applies("yesterday", ETAG, 1000))

    def test_if_none_match_then_if_modified_since(self):
        self.assertTrue(etag_listed(f'"x", {ETAG}', ETAG))
        self.assertTrue(etag_listed("*", ETAG))
        self.assertTrue(etag_listed("W/" + ETAG, ETAG))  # weak comparison here
        self.assertFalse(etag_listed('"x"', ETAG))
        self.assertTrue(not_modified(ETAG, None, ETAG, 1000))
        self.assertFalse(not_modified('"x"', http_date(2000), ETAG, 1000))  # the tag decides
        self.assertTrue(not_modified(None, http_date(1000), ETAG, 1000))
        self.assertFalse(not_modified(None, http_date(999), ETAG, 1000))
        self.assertFalse(not_modified(None, "garbage", ETAG, 1000))
        self.assertFalse(not_modified(None, None, ETAG, 1000))

    def test_dates_and_types(self):
        self.assertEqual(parse_http_date(http_date(784111777)), 784111777)
        self.assertEqual(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT")
        self.assertIsNone(parse_http_date("not a date"))
        self.assertEqual(content_type("a/song.mp3"), "audio/mpeg")
        self.assertEqual(content_type("notes.txt"), "text/plain")
        self.assertEqual(content_type("data.tar.gz"), "application/octet-stream")
        self.assertEqual(content_type("no-extension"), "application/octet-stream")

    def test_a_peer_is_told_apart_from_a_load_balancer(self):
        said = not_a_load_balancer("10.0.0.7:41237", "p2p-peer/1.1", "10.0.0.5:6969")
        self.assertEqual(said, "10.0.0.7:41237 is a peer, not a load balancer; the load "
                               "balancer is 10.0.0.5:6969. Give that to --lb.")
        self.assertIn("is a peer", not_a_load_balancer("h:1", "p2p-peer/1.1"))
        self.assertIsNone(not_a_load_balancer("h:1", "p2p-load-balancer/1.1"))
        self.assertIsNone(not_a_load_balancer("h:1", "nginx"))


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])


def head_only(port, path):
    """Does a HEAD of ``path`` get headers and nothing after them?"""
    _, data = raw_request(port, path, "HEAD")
    return data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\n") \
        and data.count(b"\r\n\r\n") == 1


def links(page):
    parser = Links()
    parser.feed(page)
    return parser.hrefs


@unittest.skipIf(shutil.which("curl") is None, "needs curl")
class CurlTests(unittest.TestCase):
    """A peer's file server and a load balancer it is registered with, both in this process."""

    def setUp(self):
        self.content = os.urandom(50_000)
        self.root, self.index = hashed_index(self, "p2p-http-", {
            "song.mp3": self.content, "sub/日本語 notes.txt": b"hello"})
        self.peer = self.serve(FileServer(("127.0.0.1", 0), self.index))
        self.registry = lb_core.Registry()
        self.lb = self.serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), self.registry))
        self.peer.lb_address = f"127.0.0.1:{self.lb.port}"
        self.peer.peer_name = "alice"
        self.peer.address = f"127.0.0.1:{self.peer.port}"
        self.registry.register("127.0.0.1", self.peer.port,
                               [FileRecord(f.name, f.size, f.sha256) for f in self.index.files()])
        self.etag = '"' + hashlib.sha256(self.content).hexdigest() + '"'

    def serve(self, server):
        return serve_in_thread(self, server)

    def curl(self, port, path, *options):
        """curl's answer: (status, {lower-case header: value}, body bytes) of the last reply.

        ``-L`` follows redirects; ``-I`` makes it a HEAD request, whose body is None
        (``head_only`` checks that none comes).
        """
        head_file, body_file = (os.path.join(self.root, f".curl-{x}") for x in ("head", "body"))
        result = subprocess.run(["curl", "-sS", "-D", head_file, "-o", body_file, *options,
                                 f"http://127.0.0.1:{port}{path}"],
                                capture_output=True, timeout=CURL_TIMEOUT_S)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(head_file, "rb") as f:
            head = f.read().decode("latin-1").rstrip("\r\n").split("\r\n\r\n")[-1]
        body = b""
        if "-I" in options:
            body = None
        elif os.path.exists(body_file):
            with open(body_file, "rb") as f:
                body = f.read()
            os.unlink(body_file)
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers, body

    def test_if_range_that_does_not_match_gets_the_whole_file(self):
        status, headers, body = self.curl(self.peer.port, "/files/song.mp3", "-r", "100-",
                                          "-H", f"If-Range: {self.etag}")
        self.assertEqual((status, body), (206, self.content[100:]))
        status, headers, body = self.curl(self.peer.port, "/files/song.mp3", "-r", "100-",
                                          "-H", 'If-Range: "0000"')
        self.assertEqual((status, body), (200, self.content))
        self.assertNotIn("content-range", headers)
        status, _, body = self.curl(self.peer.port, "/files/song.mp3", "-r", "100-", "-H",
                                    f"If-Range: {headers['last-modified']}")
        self.assertEqual((status, body), (206, self.content[100:]))

    def test_if_none_match_and_if_modified_since_get_304(self):
        status, headers, body = self.curl(self.peer.port, "/files/song.mp3",
                                          "-H", f"If-None-Match: {self.etag}")
        self.assertEqual((status, body), (304, b""))
        self.assertEqual(headers["etag"], self.etag)
        status, headers, _ = self.curl(self.peer.port, "/files/song.mp3")
        self.assertEqual(status, 200)
        self.assertEqual(parse_http_date(headers["last-modified"]),
                         int(os.stat(os.path.join(self.root, "song.mp3")).st_mtime))
        status, _, _ = self.curl(self.peer.port, "/files/song.mp3",
                                 "-H", f"If-Modified-Since: {headers['last-modified']}")
        self.assertEqual(status, 304)
        status, _, body = self.curl(self.peer.port, "/files/song.mp3", "-H", 'If-None-Match: "x"')
        self.assertEqual((status, body), (200, self.content))

    def test_content_type_by_extension_and_a_server_header(self):
        _, headers, _ = self.curl(self.peer.port, "/files/song.mp3", "-I")
        self.assertEqual(headers["content-type"], "audio/mpeg")
        self.assertTrue(headers["server"].startswith("p2p-peer/"))
        _, headers, body = self.curl(self.peer.port, "/files/sub/%E6%97%A5%E6%9C%AC%E8%AA%9E"
                                                     "%20notes.txt")
        self.assertEqual((headers["content-type"], body), ("text/plain", b"hello"))
        _, headers, _ = self.curl(self.lb.port, "/status")
        self.assertTrue(headers["server"].startswith("p2p-load-balancer/"))

    def test_the_peer_index_links_every_file(self):
        status, headers, body = self.curl(self.peer.port, "/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        page = body.decode()
        self.assertIn("alice", page)
        hrefs = links(page)
        self.assertIn("/files/song.mp3", hrefs)
        self.assertIn("/files/sub/%E6%97%A5%E6%9C%AC%E8%AA%9E%20notes.txt", hrefs)
        self.assertIn(f"http://127.0.0.1:{self.lb.port}/", hrefs)
        status, headers, _ = self.curl(self.peer.port, "/", "-I")
        self.assertEqual(status, 200)
        self.assertTrue(head_only(self.peer.port, "/"))
        self.assertEqual(headers["x-p2p-load-balancer"], f"127.0.0.1:{self.lb.port}")

    def test_the_load_balancer_redirects_to_the_least_loaded_holder_and_counts_it(self):
        status, headers, _ = self.curl(self.lb.port, "/files/song.mp3")
        self.assertEqual(status, 302)
        self.assertEqual(headers["location"], f"http://127.0.0.1:{self.peer.port}/files/song.mp3")
        self.assertEqual(self.registry.status()["peers"][0]["active"], 1)  # counted as load
        status, _, body = self.curl(self.lb.port, "/files/song.mp3", "-L")
        self.assertEqual((status, body), (200, self.content))
        status, headers, _ = self.curl(self.lb.port, "/files/song.mp3", "-I")
        self.assertEqual(status, 302)  # HEAD says where, and counts nothing
        self.assertEqual(self.registry.status()["peers"][0]["active"], 2)
        status, _, body = self.curl(self.lb.port, "/files/nothing.bin")
        self.assertEqual(status, 404)
        self.assertIn(b"Nobody shares", body)

    def test_the_load_balancer_answers_head_wherever_it_answers_get(self):
        for path in ("/", "/status", "/files"):
            with self.subTest(path=path):
                get_status, get_headers, _ = self.curl(self.lb.port, path)
                status, headers, _ = self.curl(self.lb.port, path, "-I")
                self.assertEqual(status, get_status)
                self.assertTrue(head_only(self.lb.port, path))
                self.assertEqual(headers["content-length"], get_headers["content-length"])

    def test_the_load_balancer_page_links_files_to_the_redirector_and_to_holders(self):
        _, _, body = self.curl(self.lb.port, "/")
        hrefs = links(body.decode())
        sha = self.etag.strip('"')
        self.assertIn(f"/files/song.mp3?sha256={sha}", hrefs)
        self.assertIn(f"http://127.0.0.1:{self.peer.port}/files/song.mp3", hrefs)
        self.assertTrue(any(re.fullmatch(r"/files/sub/%E6.*notes\.txt\?sha256=[0-9a-f]{64}", h)
                            for h in hrefs), hrefs)
        status, headers, _ = self.curl(self.lb.port, f"/files/song.mp3?sha256={sha}")
        self.assertEqual(status, 302)

    def test_a_load_balancer_client_pointed_at_a_peer_says_so(self):
        client = LBClient("127.0.0.1", self.peer.port, timeout=5)
        self.addCleanup(client.close)
        for call in (client.files, client.status):
            with self.subTest(call=call.__name__):
                with self.assertRaises(Unreachable) as caught:
                    call()
                self.assertEqual(caught.exception.message,
                                 f"127.0.0.1:{self.peer.port} is a peer, not a load balancer; "
                                 f"the load balancer is 127.0.0.1:{self.lb.port}. "
                                 "Give that to --lb.")


if __name__ == "__main__":
    unittest.main()


class FramingTests(unittest.TestCase):
    """A request whose end is uncertain (RFC 9112 §6.3) gets 400 from both servers."""

    def test_two_different_content_lengths_are_refused_by_both_servers(self):
        quiet_logs(self)
        _, index = hashed_index(self, "p2p-framing-", {"a.bin": b"0123456789"})
        servers = [FileServer(("127.0.0.1", 0), index),
                   lb_server.LoadBalancerServer(("127.0.0.1", 0), lb_core.Registry())]
        targets = ["/files/a.bin", "/status"]
        for server, target in zip(servers, targets):
            serve_in_thread(self, server)
            for headers, status in [("Content-Length: 0\r\n", (200, 206)),
                                    ("Content-Length: 0\r\nContent-Length: 5\r\n", (400,)),
                                    ("Content-Length: 0\r\nContent-Length: 0\r\n", (200, 206)),
                                    ("Content-Length: +5\r\n", (400,))]:
                with self.subTest(target=target, headers=headers):
                    got, data = raw_request(server.port, target, "GET",
                                            "Range: bytes=0-3\r\n" + headers)
                    self.assertIn(got, status, data[:200])
