"""A bounded fuzz test: thousands of random and malformed requests to each server, in this
process, on loopback. Never a 500, never a hang, and a normal request is answered after."""

import json
import os
import random
import re
import shutil
import socket
import tempfile
import unittest

from p2p.core import registry as lb_core
from p2p.net import lb_server
from p2p.net.lb_client import LBClient
from p2p.net.sharing import FileServer, ShareIndex
from tests.support import quiet_logs, serve_in_thread

REQUESTS_PER_SERVER = 2500
SEED = 20261125
ANSWER_TIMEOUT_S = 10.0  # a server that has not answered (or closed) by then hangs
STATUS_RE = re.compile(rb"HTTP/1\.[01] ([0-9]{3}) ")

METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE",
           b"CONNECT", b"get", b"G\x00T", b"", b"\xff\xfe", b"X" * 300]
TARGETS = [b"/", b"/status", b"/files", b"/files?q=a", b"/files/a.txt", b"/files/sub/b.txt",
           b"/files/%zz", b"/files/%00", b"/files/%ff%fe", b"/files/..%2F..%2Fetc%2Fpasswd",
           b"/files/CON", b"/files/a%3Ab", b"/peers", b"/peers/abc", b"/transfers",
           b"/transfers/abc?outcome=failed", b"/transfers/?outcome=", b"*", b"", b"//",
           b"http://[::1/files/x", b"http://[/files", b"http://h/files/a.txt", b"https://]x[/",
           b"/files/a.txt?p2p-expires=1&p2p-sig=zz", b"/files/" + b"a" * 5000, b"/\xff\xfe",
           b"/files/\xc3\xa9", b"/status?" + b"&" * 1000, b"/%", b"/files/a.txt#frag"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.", b"http/1.1", b"HTTP/1.1x", b""]
HEADERS = [b"Host: x", b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: 1e3",
           b"Content-Length: 99999999999999999999", b"Content-Length: 2\r\nContent-Length: 3",
           b"Transfer-Encoding: chunked", b"Range: bytes=0-0", b"Range: bytes=-0",
           b"Range: bytes=5-1", b"Range: bytes=0-1,2-3", b"Range: lines=1-2",
           b"Range: bytes=99999999999999999999-", b"Expect: 100-continue", b"Connection: close",
           b"Connection: keep-alive", b"X-P2P-Peer: [::1", b"X-P2P-Auth: p2p-hmac-v1 ts=x",
           b"Authorization: Bearer", b"Authorization: Bearer \xff", b"no colon here",
           b" leading: space", b": empty name", b"X: " + b"v" * 70000, b"X-Nul: a\x00b",
           b"Content-Type: application/json"]
BODIES = [b"", b"{}", b"[]", b"null", b"{", b'{"name": "a.txt"}', b'{"name": "CON"}',
          b'{"port": 7000, "files": [{"name": "a:b", "size": 1, "sha256": "' + b"a" * 64 + b'"}]}',
          b'{"port": 70000}', b'{"port": true}', b'{"name": "\\ud800"}', b"[" * 100000,
          b'{"exclude": [1, 2]}', b'{"peer": "[::1"}', b'{"peer": "a:b:c"}', b"\xff" * 100]


def random_request(rng):
    """One request, most of them almost right, some of them plain noise."""
    if rng.random() < 0.05:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    line = b" ".join(x for x in (rng.choice(METHODS), rng.choice(TARGETS), rng.choice(VERSIONS))
                     if rng.random() < 0.97)
    headers = [rng.choice(HEADERS) for _ in range(rng.randrange(4))]
    body = rng.choice(BODIES)
    if rng.random() < 0.5:
        headers.append(b"Content-Length: %d" % len(body))
    head = b"\r\n".join([line, *headers]) + b"\r\n\r\n"
    if rng.random() < 0.1:  # cut short anywhere
        return (head + body)[:rng.randrange(1, len(head) + len(body) + 1)]
    return head + body


def exchange(port, data):
    """Send ``data``, close our side, and read until the server closes: the statuses seen."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # it answered and closed before reading it all: fine
            pass
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return [int(m) for m in STATUS_RE.findall(answer)]


class FuzzTests(unittest.TestCase):

    def setUp(self):
        quiet_logs(self)

    def serve(self, server):
        return serve_in_thread(self, server)

    def fuzz(self, port):
        rng = random.Random(SEED)
        for i in range(REQUESTS_PER_SERVER):
            data = random_request(rng)
            try:
                statuses = exchange(port, data)
            except TimeoutError:
                self.fail(f"request {i} hung the server: {data[:200]!r}")
            self.assertNotIn(500, statuses, f"request {i}: {data[:200]!r}")

    def test_load_balancer(self):
        registry = lb_core.Registry()
        server = self.serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), registry))
        self.fuzz(server.port)
        client = LBClient("127.0.0.1", server.port)
        self.addCleanup(client.close)
        self.assertIn("peers", client.status())

    def test_file_server(self):
        root = tempfile.mkdtemp(prefix="p2p-fuzz-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        os.makedirs(os.path.join(root, "sub"))
        for name, data in (("a.txt", b"alpha" * 100), ("sub/b.txt", b"beta")):
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
        index = ShareIndex([root])
        index.refresh()
        self.assertTrue(index.wait_hashed(10))
        self.addCleanup(index.close)
        server = self.serve(FileServer(("127.0.0.1", 0), index))
        self.fuzz(server.port)
        statuses = exchange(server.port, b"GET /files/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(statuses, [200])
        self.assertEqual([f["name"] for f in json.loads(
            socket_get_body(server.port, b"/files"))], ["a.txt", "sub/b.txt"])


def socket_get_body(port, target):
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer.split(b"\r\n\r\n", 1)[1]
