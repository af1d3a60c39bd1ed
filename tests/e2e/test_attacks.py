"""End to end: attacks from another machine on the network fail, and honest peers download on.

"Another machine" is a second loopback address (127.0.0.2 for the attacker, 127.0.0.3 for a
second honest host): the load balancer sees requests from there as coming from another host.
"""

import hashlib
import http.client
import json
import os
import shutil
import socket
import threading
import time

from p2p.core.lb_limits import MAX_PEERS_PER_HOST
from p2p.net.lb_client import LBClient
from p2p.net.sharing import DEFAULT_UPLOAD_SLOTS, FileServer, ShareIndex
from tests.support import ProcessTestCase, free_port, same_bytes, wait_for, write_random

MiB = 1 << 20
ATTACKER = "127.0.0.2"
OTHER_HONEST_HOST = "127.0.0.3"
HIJACK_S = 2.5  # how long the attacker keeps trying to take an address: over two heartbeats
SYBILS = 200  # registrations the attacker tries from its one host
SYBIL_PICKS = 60


class Remote:
    """A JSON client of the load balancer that speaks from ``source`` (another 'machine')."""

    def __init__(self, test, lb_port, source):
        self.test, self.lb_port, self.source = test, lb_port, source

    def call(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.lb_port, timeout=5,
                                          source_address=(self.source, 0))
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers or {})
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        except OSError as e:
            self.test.skipTest(f"cannot speak from {self.source} here: {e}")
        finally:
            conn.close()


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class AttackTests(ProcessTestCase):

    def setUp(self):
        super().setUp()
        self.lb = self.start_lb("--heartbeat", "1")
        self.attacker = Remote(self, self.lb.port, ATTACKER)

    def holder(self, name, source, label):
        shutil.copyfile(source, os.path.join(self.folder(label, "shared"), name))
        return self.start_peer(self.lb.port, label, wait_files=[name])

    def honest_get(self, name, label, *extra):
        downloads = self.folder(label, "downloads")
        result = self.get(self.lb.port, name, downloads, *extra)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result, os.path.join(downloads, name)

    def test_forged_transfer_reports_and_unused_picks_cannot_steer_downloads(self):
        source = os.path.join(self.tmp, "source", "f.bin")
        write_random(source, MiB)
        a, b = self.holder("f.bin", source, "a"), self.holder("f.bin", source, "b")

        honest = LBClient("127.0.0.1", self.lb.port)
        self.addCleanup(honest.close)
        (mine,) = honest.pick("f.bin").leases
        status, theirs = self.attacker.call("POST", "/transfers", {"name": "f.bin"})
        self.assertEqual(status, 201)
        for headers in ({}, {"Authorization": f"Bearer {theirs['secret']}"}):
            for method, path in (("PUT", f"/transfers/{mine.transfer_id}"),
                                 ("DELETE", f"/transfers/{mine.transfer_id}?outcome=failed")):
                self.assertEqual(self.attacker.call(method, path, headers=headers)[0], 403)
        honest.end(mine, "cancelled")

        picks, busy = [], None
        for _ in range(50):  # picks of a that are never used: a looks busy, for a moment
            status, body = self.attacker.call("POST", "/transfers",
                                              {"name": "f.bin", "peer": f"127.0.0.1:{a.port}"})
            if status == 503:  # its upload slots are taken: no more is handed out
                busy = body["busy"]
                break
            self.assertEqual(status, 201, body)
            picks.append(body)
        self.assertEqual(busy, 1)
        self.assertGreaterEqual(len(picks), DEFAULT_UPLOAD_SLOTS)  # a heartbeat may free some
        for pick in picks[:DEFAULT_UPLOAD_SLOTS // 2]:  # and its own transfers ended as failed
            auth = {"Authorization": f"Bearer {pick['secret']}"}
            status, _ = self.attacker.call("DELETE",
                                           f"/transfers/{pick['transfer_id']}?outcome=failed",
                                           headers=auth)
            self.assertEqual(status, 204)
        wait_for(lambda: self.peer_entry(self.lb.port, a.port)["active"] == 0, timeout=10,
                 what="a's own report of its uploads to outweigh the unused picks")

        for i in range(4):
            _, path = self.honest_get("f.bin", f"me{i}")
            self.assertTrue(same_bytes(source, path))
        served = {p.port: self.peer_entry(self.lb.port, p.port)["served"] for p in (a, b)}
        self.assertGreaterEqual(served[a.port], 1, served)  # a stays in everyone's rotation
        self.assertLessEqual(sum(served.values()), 8)  # each download from a, b or both

    def test_a_live_peers_address_cannot_be_hijacked(self):
        source = os.path.join(self.tmp, "source", "f.bin")
        write_random(source, MiB)
        a = self.holder("f.bin", source, "a")
        claim = {"host": "127.0.0.1", "port": a.port, "files": []}
        answers = set()
        deadline = time.monotonic() + HIJACK_S
        while time.monotonic() < deadline:  # a beats every second: every gap is tried
            answers.add(self.attacker.call("POST", "/peers", claim)[0])
        self.assertEqual(answers, {409})
        self.assertEqual(self.peer_files(self.lb.port, a.port), {"f.bin"})
        _, path = self.honest_get("f.bin", "me")
        self.assertTrue(same_bytes(source, path))
        self.assertEqual(self.terminate(a), 0)  # a leaves: now the address is free
        status, _ = self.attacker.call("POST", "/peers", claim)
        self.assertEqual(status, 201)

    def share_from_another_host(self, name, source):
        """An honest holder on OTHER_HONEST_HOST: a file server in this process, registered
        from there."""
        root = self.folder("other-host", "shared")
        shutil.copyfile(source, os.path.join(root, name))
        index = ShareIndex([root])
        index.refresh()
        self.assertTrue(index.wait_hashed(10))
        self.addCleanup(index.close)
        server = FileServer((OTHER_HONEST_HOST, 0), index)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        files = [f.as_dict() for f in index.files()]
        status, body = Remote(self, self.lb.port, OTHER_HONEST_HOST).call(
            "POST", "/peers", {"host": OTHER_HONEST_HOST, "port": server.port, "files": files})
        self.assertEqual(status, 201, body)

    def announce(self, name, sha256, size):
        """The attacker announces a file it does not serve."""
        status, body = self.attacker.call("POST", "/peers", {
            "host": ATTACKER, "port": free_port(),
            "files": [{"name": name, "sha256": sha256, "size": size}]})
        self.assertEqual(status, 201, body)

    def test_one_host_cannot_poison_a_name(self):
        source = os.path.join(self.tmp, "source", "song.mp3")
        write_random(source, MiB)
        real = sha256_of(source)
        self.holder("song.mp3", source, "a")
        self.share_from_another_host("song.mp3", source)
        fake = hashlib.sha256(b"not the song").hexdigest()
        self.announce("song.mp3", fake, MiB)
        self.announce("song.mp3", real, 3 * MiB)  # the real SHA-256 with a wrong size
        for i in range(2):
            result, path = self.honest_get("song.mp3", f"me{i}")
            self.assertTrue(same_bytes(source, path))
            self.assertIn(fake[:12], result.stdout)
            self.assertIn("--sha256", result.stdout)
        result = self.get(self.lb.port, "song.mp3", self.folder("me-fake", "downloads"),
                          "--sha256", fake)
        self.assertEqual(result.returncode, 1)  # asked for by hand: the fake fails its check
        self.assertEqual(os.listdir(self.folder("me-fake", "downloads")), [])

    def test_a_wrong_size_announced_first_does_not_hide_the_real_holder(self):
        source = os.path.join(self.tmp, "source", "song.mp3")
        write_random(source, MiB)
        self.announce("song.mp3", sha256_of(source), 2 * MiB)
        self.holder("song.mp3", source, "a")
        result, path = self.honest_get("song.mp3", "me")
        self.assertTrue(same_bytes(source, path))
        self.assertNotIn("other files", result.stdout)

    def silent_listener(self):
        """A socket on the attacker's host that accepts connections and never answers."""
        sock = socket.socket()
        self.addCleanup(sock.close)
        try:
            sock.bind((ATTACKER, 0))
        except OSError as e:
            self.skipTest(f"cannot listen on {ATTACKER} here: {e}")
        sock.listen(64)
        return sock.getsockname()[1]

    def test_a_sybil_flood_from_one_host_gets_the_share_of_one_host(self):
        source = os.path.join(self.tmp, "source", "f.bin")
        write_random(source, MiB)
        honest = self.holder("f.bin", source, "a")
        claim = [{"name": "f.bin", "size": MiB, "sha256": sha256_of(source)}]
        answers = [self.attacker.call("POST", "/peers", {
            "host": ATTACKER, "port": self.silent_listener(), "files": claim})
            for _ in range(SYBILS)]
        self.assertEqual([status for status, _ in answers],
                         [201] * MAX_PEERS_PER_HOST + [429] * (SYBILS - MAX_PEERS_PER_HOST))
        self.assertIn(f"{ATTACKER} already has {MAX_PEERS_PER_HOST} peers registered",
                      answers[-1][1]["error"])

        client = LBClient("127.0.0.1", self.lb.port)
        self.addCleanup(client.close)
        honest_picks = 0
        for _ in range(SYBIL_PICKS):  # picked and let go at once, as a downloader that
            (lease,) = client.pick("f.bin").leases  # finds a holder dead would
            honest_picks += lease.port == honest.port
            client.end(lease, "cancelled")
        # Two hosts hold the file: the honest one gets half, however many peers the other
        # registered (more if the flood's silent peers are dropped meanwhile).
        self.assertGreaterEqual(honest_picks, SYBIL_PICKS * 2 // 5)
