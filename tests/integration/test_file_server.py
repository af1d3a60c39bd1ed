"""The peer's file server over a real socket, in this process (port 0, loopback)."""

import hashlib
import http.client
import json
import logging
import os
import socket
import time
import unittest

from p2p.core.pieces import piece_count
from p2p.net.sharing import CACHE_NAME, FileServer, ShareIndex, cache_entry
from tests.support import hashed_index, http_request, raw_get, serve_in_thread, write_file

GiB = 1 << 30


class FileServerTests(unittest.TestCase):

    def setUp(self):
        self.content = os.urandom(100_000)
        self.root, self.index = hashed_index(self, "p2p-fs-", {
            "a file.txt": self.content, "sub/ñ.txt": b"nested"})
        self.start()

    def start(self, **options):
        server = FileServer(("127.0.0.1", 0), self.index, **options)
        self.server = serve_in_thread(self, server)
        return server

    def write(self, name, data):
        return write_file(self.root, name, data)

    def request(self, method, path, headers=None, conn=None):
        return http_request(self.server.port, method, path, headers, conn)

    def test_list(self):
        response, body = self.request("GET", "/files")
        self.assertEqual(response.status, 200)
        names = {f["name"]: f for f in json.loads(body)}
        self.assertEqual(set(names), {"a file.txt", "sub/ñ.txt"})
        self.assertEqual(names["a file.txt"]["sha256"], hashlib.sha256(self.content).hexdigest())

    def test_get_head_and_etag(self):
        sha = hashlib.sha256(self.content).hexdigest()
        response, body = self.request("GET", "/files/a%20file.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(body, self.content)
        self.assertEqual(response.getheader("ETag"), f'"{sha}"')
        self.assertEqual(response.getheader("Accept-Ranges"), "bytes")
        response, body = self.request("HEAD", "/files/a%20file.txt")
        self.assertEqual((response.status, body), (200, b""))
        self.assertEqual(response.getheader("Content-Length"), str(len(self.content)))
        response, body = self.request("GET", "/files/sub/%C3%B1.txt")
        self.assertEqual(body, b"nested")

    def test_ranges(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        self.addCleanup(conn.close)
        for header, start, end in (("bytes=10-19", 10, 19), ("bytes=99990-", 99990, 99999),
                                   ("bytes=-5", 99995, 99999), ("bytes=0-999999", 0, 99999)):
            response, body = self.request("GET", "/files/a%20file.txt", {"Range": header}, conn)
            self.assertEqual(response.status, 206, header)
            self.assertEqual(body, self.content[start:end + 1], header)
            self.assertEqual(response.getheader("Content-Range"), f"bytes {start}-{end}/100000")
        response, body = self.request("GET", "/files/a%20file.txt", {"Range": "bytes=100000-"},
                                      conn)
        self.assertEqual(response.status, 416)
        self.assertEqual(response.getheader("Content-Range"), "bytes */100000")
        self.assertIn("error", json.loads(body))
        response, body = self.request("GET", "/files/a%20file.txt", {"Range": "bytes=5-1"}, conn)
        self.assertEqual((response.status, len(body)), (200, 100000))

    def test_unknown_bad_and_wrong_method(self):
        response, body = self.request("GET", "/files/nope.txt")
        self.assertEqual(response.status, 404)
        self.assertIn("does not share", json.loads(body)["error"])
        response, body = self.request("GET", "/files/a%2F..%2F..%2Fetc%2Fpasswd")
        self.assertEqual(response.status, 400)
        response, _ = self.request("POST", "/files/a%20file.txt")
        self.assertEqual(response.status, 405)
        response, _ = self.request("GET", "/elsewhere")
        self.assertEqual(response.status, 404)
        response, body = self.request("GET", "/files/a%20file.txt")
        self.assertEqual(body, self.content)  # still serving

    def test_an_absolute_form_target_that_is_not_a_url_is_a_400(self):
        for target in ("http://[::1/files/x", "http://[/files/a%20file.txt", "http://]x[/files"):
            with self.subTest(target=target):
                status, data = raw_get(self.server.port, target)
                self.assertEqual(status, 400, data)
        status, data = raw_get(self.server.port, f"http://127.0.0.1:{self.server.port}"
                                                 "/files/a%20file.txt")
        self.assertEqual(status, 200)
        self.assertTrue(data.endswith(self.content))

    def test_a_flood_of_refused_requests_adds_only_a_few_log_lines(self):
        lines = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lines.append
        logger = logging.getLogger("p2p")
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        for i in range(200):
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as s:
                s.sendall(b"NONSENSE %d\r\n\r\n" % i)
                self.assertTrue(s.recv(65536).startswith(b"HTTP/1.1 400 "))
        self.assertLessEqual(len(lines), 1)
        response, body = self.request("GET", "/files/a%20file.txt")
        self.assertEqual(body, self.content)

    def test_busy_slots_answer_503_with_retry_after(self):
        self.write("slow.bin", os.urandom(4 << 20))
        self.index.refresh()
        self.assertTrue(self.index.wait_hashed(10))
        server = self.start(upload_slots=1, upload_limit=1 << 20)
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(slow.close)
        slow.sendall(b"GET /files/slow.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        slow.recv(1024)
        deadline = time.monotonic() + 5
        while len(server.uploads) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(len(server.uploads), 1)
        self.assertEqual(server.uploads.active()[0].name, "slow.bin")
        response, body = self.request("GET", "/files/a%20file.txt")
        self.assertEqual(response.status, 503)
        self.assertEqual(response.getheader("Retry-After"), "2")
        self.assertIn("busy", json.loads(body)["error"])
        response, _ = self.request("HEAD", "/files/a%20file.txt")
        self.assertEqual(response.status, 200)  # HEAD takes no slot

    def test_a_limited_peer_states_its_upload_limit_with_the_bytes(self):
        response, _ = self.request("GET", "/files/a%20file.txt", {"Range": "bytes=0-99"})
        self.assertEqual((response.status, response.getheader("X-Upload-Limit")), (206, None))
        self.start(upload_limit=4 << 20)
        sha = hashlib.sha256(self.content).hexdigest()
        for path, status in [("/files/a%20file.txt", 200), (f"/blobs/{sha}", 206)]:
            response, body = self.request("GET", path, {"Range": "bytes=0-"}
                                          if status == 206 else {})
            with self.subTest(path=path):
                self.assertEqual((response.status, body), (status, self.content))
                self.assertEqual(response.getheader("X-Upload-Limit"), str(4 << 20))
                self.assertEqual(response.getheader("X-Uploads"), "1")  # this one
        response, _ = self.request("HEAD", "/files/a%20file.txt")
        self.assertIsNone(response.getheader("X-Upload-Limit"))  # no body, no upload

    def test_file_changed_on_disk_is_not_served_with_the_old_etag(self):
        path = os.path.join(self.root, "a file.txt")
        with open(path, "r+b") as f:
            f.write(b"X")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        response, body = self.request("GET", "/files/a%20file.txt")
        self.assertIn(response.status, (404, 503))
        self.assertNotEqual(body, self.content)

    def test_offsets_past_4_gib(self):
        big = os.path.join(self.root, "huge.img")
        with open(big, "wb") as f:
            f.truncate(5 * GiB)
            f.seek(4 * GiB + 7)
            f.write(b"needle")
        st = os.stat(big)
        with open(os.path.join(self.root, CACHE_NAME), "w") as f:  # skip hashing 5 GiB
            zeros = ["0" * 64] * piece_count(5 * GiB)
            json.dump({"huge.img": cache_entry(st, "0" * 64, zeros)}, f)
        index = ShareIndex([self.root])
        index.refresh()
        self.addCleanup(index.close)
        self.index = index
        self.start()
        self.assertEqual(index.get("huge.img").size, 5 * GiB)
        response, body = self.request("GET", "/files/huge.img",
                                      {"Range": f"bytes={4 * GiB + 5}-{4 * GiB + 14}"})
        self.assertEqual(response.status, 206)
        self.assertEqual(body, b"\0\0needle\0\0")
        self.assertEqual(response.getheader("Content-Range"),
                         f"bytes {4 * GiB + 5}-{4 * GiB + 14}/{5 * GiB}")


if __name__ == "__main__":
    unittest.main()
