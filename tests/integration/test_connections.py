"""Connections cost nothing until they ask: both servers keep serving with hundreds of idle
or trickling connections open from another 'machine' (127.0.0.2), in this process; and the
fast path (a worker answering a keep-alive connection's next request itself) keeps every
request in order and lets no slow or idle client keep a worker or escape its deadlines."""

import os
import re
import select
import shutil
import socket
import tempfile
import threading
import time
import unittest

from p2p.http import server as httpkit
from p2p.core import registry as lb_core
from p2p.net import lb_server
from p2p.net.lb_client import LBClient
from p2p.net.sharing import FileServer, ShareIndex
from tests.support import quiet_logs, serve_in_thread, wait_for
from p2p.core.wire import FileRecord

ATTACKER = "127.0.0.2"
IDLE = 300  # connections that never send a byte
TRICKLING = 100  # connections that send their head a byte at a time, and never finish it
TRICKLE_INTERVAL_S = 0.2
HONEST_REQUESTS = 50
TRICKLED_BYTES = 5  # honest requests go on while the trickling connections send this much
MAX_EXTRA_THREADS = httpkit.LIMITS.workers + 4  # a worker pool, not a thread per connection
DEADLINE_S = 10.0


def open_from(source, port, count):
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


class Trickler:
    """Sends a request head a byte at a time on every socket, until stopped."""

    def __init__(self, socks):
        self.socks = socks
        self.sent = 0  # bytes sent on each socket so far
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        head = b"GET /status HTTP/1.1\r\nHost: lb\r\nX-Slow: " + b"a" * 10_000
        while not self.stop.wait(TRICKLE_INTERVAL_S) and self.sent < len(head):
            for s in self.socks:
                try:
                    s.send(head[self.sent:self.sent + 1])
                except OSError:
                    pass
            self.sent += 1

    def close(self):
        self.stop.set()
        self.thread.join(DEADLINE_S)


class ConnectionCostTests(unittest.TestCase):

    def setUp(self):
        quiet_logs(self)
        try:
            with socket.socket() as s:
                s.bind((ATTACKER, 0))
        except OSError:
            self.skipTest(f"no {ATTACKER} on this machine")

    def serve(self, server):
        return serve_in_thread(self, server)

    def attack(self, port):
        """IDLE idle and TRICKLING trickling connections from ATTACKER, closed at cleanup."""
        threads_before = threading.active_count()
        socks = open_from(ATTACKER, port, IDLE + TRICKLING)
        for s in socks:
            self.addCleanup(s.close)
        trickler = Trickler(socks[IDLE:])
        self.addCleanup(trickler.close)
        return trickler, threads_before + 1  # and the trickler's own thread

    def test_the_load_balancer_answers_picks_under_idle_and_trickling_connections(self):
        registry = lb_core.Registry()
        server = self.serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), registry))
        registry.register("10.0.0.1", 7000, [FileRecord("f", 1, "a" * 64)])
        trickler, threads = self.attack(server.port)
        honest = LBClient("127.0.0.1", server.port, timeout=DEADLINE_S)
        self.addCleanup(honest.close)
        started = time.monotonic()
        picks = 0
        while picks < HONEST_REQUESTS or trickler.sent < TRICKLED_BYTES:  # while it goes on
            honest.end(honest.pick("f").leases[0], "done")
            picks += 1
            self.assertLess(time.monotonic() - started, DEADLINE_S)
        fresh = LBClient("127.0.0.1", server.port, timeout=DEADLINE_S)  # a new connection
        self.addCleanup(fresh.close)
        self.assertEqual(len(fresh.status()["peers"]), 1)
        self.assertLessEqual(threading.active_count() - threads, MAX_EXTRA_THREADS)

    def test_the_file_server_serves_under_idle_and_trickling_connections(self):
        root = tempfile.mkdtemp(prefix="p2p-conn-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        content = os.urandom(1 << 20)
        with open(os.path.join(root, "f.bin"), "wb") as f:
            f.write(content)
        index = ShareIndex([root])
        index.refresh()
        self.assertTrue(index.wait_hashed(10))
        self.addCleanup(index.close)
        server = self.serve(FileServer(("127.0.0.1", 0), index))
        trickler, threads = self.attack(server.port)
        while trickler.sent < TRICKLED_BYTES:
            with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S) as s:
                s.sendall(b"GET /files/f.bin HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(1 << 20):
                    data += chunk
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "))
            self.assertTrue(data.endswith(content))
        self.assertLessEqual(threading.active_count() - threads, MAX_EXTRA_THREADS)

    def test_one_address_holds_at_most_its_share_and_its_oldest_idle_go_first(self):
        registry = lb_core.Registry()
        server = self.serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), registry,
                                                  max_connections=40))
        share = 40 // httpkit.LIMITS.source_share
        socks = open_from(ATTACKER, server.port, share + 3)
        for s in socks:
            self.addCleanup(s.close)
            s.settimeout(DEADLINE_S)
        for s in socks[:3]:  # the three oldest were closed to make room for the newest
            self.assertEqual(s.recv(1), b"")
        for s in socks[3:]:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: lb\r\n\r\n")
            self.assertTrue(s.recv(65536).startswith(b"HTTP/1.1 200 "))
        honest = LBClient("127.0.0.1", server.port, timeout=DEADLINE_S)
        self.addCleanup(honest.close)
        self.assertEqual(honest.status()["peers"], [])

    def test_idle_connections_are_closed_first_when_connections_run_short(self):
        registry = lb_core.Registry()
        server = self.serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), registry,
                                                  max_connections=8, timeout=DEADLINE_S))
        sources = [f"127.0.0.{i}" for i in range(1, 13)]  # one connection each: under its share
        trickling = []
        for source in sources[:4]:  # a head begun on each: not idle, kept while idle ones go
            (s,) = open_from(source, server.port, 1)
            self.addCleanup(s.close)
            s.sendall(b"GET /status HTTP/1.1\r\n")
            trickling.append(s)
        idle = []
        for source in sources[4:8]:
            (s,) = open_from(source, server.port, 1)
            self.addCleanup(s.close)
            s.settimeout(DEADLINE_S)
            idle.append(s)
        wait_for(lambda: len(server._conns) == 8, what="eight connections held")
        newcomers = []
        for source in sources[8:]:
            (s,) = open_from(source, server.port, 1)
            self.addCleanup(s.close)
            newcomers.append(s)
        for s in idle:
            self.assertEqual(s.recv(1), b"")
        for s in trickling:
            s.settimeout(DEADLINE_S)
            s.sendall(b"Host: lb\r\n\r\n")
        for s in newcomers:
            s.settimeout(DEADLINE_S)
            s.sendall(b"GET /status HTTP/1.1\r\nHost: lb\r\n\r\n")
        for s in trickling + newcomers:
            self.assertTrue(s.recv(65536).startswith(b"HTTP/1.1 200 "))

    def test_pipelined_requests_are_all_answered_in_order(self):
        registry = lb_core.Registry()
        server = self.serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), registry))
        body = b'{"port": 7000, "files": []}'
        register = (b"POST /peers HTTP/1.1\r\nHost: lb\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body))
        status = b"GET /status HTTP/1.1\r\nHost: lb\r\n\r\n"
        last = b"GET /status HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S) as s:
            s.sendall(status + register + last)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        self.assertEqual(re.findall(rb"HTTP/1\.1 ([0-9]{3}) ", data), [b"200", b"201", b"200"])
        self.assertEqual(data.count(b'"peers":[]'), 1)  # the first status, before the register


STATUS = b"GET /status HTTP/1.1\r\nHost: lb\r\n\r\n"
MISSING = b"GET /nothing-here HTTP/1.1\r\nHost: lb\r\n\r\n"
LINGER_S = httpkit.LIMITS.keepalive_linger_s


def read_replies(sock, count):
    """The status codes of the next ``count`` replies on ``sock`` (their bodies are small)."""
    data = b""
    while len(codes := re.findall(rb"HTTP/1\.1 ([0-9]{3}) ", data)) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [int(code) for code in codes]


def closed(sock):
    """Has the server closed ``sock`` (nothing more to read, or a reset)?"""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


class FastPathTests(unittest.TestCase):
    """A keep-alive connection's next request is served by the worker that answered the last
    one when it is whole already or arrives within LIMITS.keepalive_linger_s."""

    def setUp(self):
        quiet_logs(self)

    def start(self, **limits):
        return serve_in_thread(self, lb_server.LoadBalancerServer(("127.0.0.1", 0),
                                                                  lb_core.Registry(), **limits))

    def connect(self, server, source="127.0.0.1"):
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.settimeout(DEADLINE_S)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", server.port))
        return sock

    def phase(self, server):
        """The phase of the server's only connection."""
        (conn,) = list(server._conns.values()) or (None,)
        return conn.phase.state if conn else None

    def test_a_long_pipelined_sequence_and_a_split_head_are_answered_in_order(self):
        server = self.start()
        body = b'{"port": 7000, "files": []}'
        register = (b"POST /peers HTTP/1.1\r\nHost: lb\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body))
        sequence = [STATUS, MISSING] * 20 + [register] + [MISSING, STATUS] * 20
        sock = self.connect(server)
        sock.sendall(b"".join(sequence) + STATUS[:20])  # and half of one more head
        self.assertEqual(read_replies(sock, len(sequence)),
                         [200, 404] * 20 + [201] + [404, 200] * 20)
        sock.sendall(STATUS[20:])  # the worker, lingering, gets the rest of that head
        self.assertEqual(read_replies(sock, 1), [200])
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: lb\r\n")
        sock.sendall(b"Connection: close\r\n\r\n")
        self.assertEqual(read_replies(sock, 1), [200])
        self.assertTrue(closed(sock))

    def test_a_client_that_stops_mid_head_is_handed_back_and_cut_at_the_head_deadline(self):
        server = self.start(timeout=1.0)  # the head deadline is at most the timeout
        sock = self.connect(server)
        sock.sendall(STATUS)
        self.assertEqual(read_replies(sock, 1), [200])
        sock.sendall(STATUS[:20])
        started = time.monotonic()
        wait_for(lambda: self.phase(server) == "open", timeout=LINGER_S + DEADLINE_S,
                 what="the worker to give the connection back to the selector")
        self.assertTrue(closed(sock))
        self.assertLess(time.monotonic() - started, LINGER_S + 1.0 + 2.0)

    def test_a_client_trickling_its_next_head_does_not_keep_the_worker(self):
        server = self.start(timeout=2.0)
        sock = self.connect(server)
        sock.sendall(STATUS)
        self.assertEqual(read_replies(sock, 1), [200])
        stop = threading.Event()
        self.addCleanup(stop.set)

        def trickle():  # a byte every 20 ms: each wakes the lingering worker
            for byte in b"GET /status HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.02):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        wait_for(lambda: self.phase(server) == "open", timeout=LINGER_S + 1.0,
                 what="the worker to give the trickling connection back within its linger")
        wait_for(lambda: server._conns == {}, timeout=2.0 + 2.0,
                 what="the trickling connection to be cut at its head deadline")

    def test_an_idle_keep_alive_connection_times_out_while_another_is_served_fast(self):
        server = self.start(timeout=1.0)
        idle = self.connect(server)
        idle.sendall(STATUS)
        self.assertEqual(read_replies(idle, 1), [200])
        busy = self.connect(server)
        started = time.monotonic()
        answered = 0
        while not select.select([idle], [], [], 0)[0]:
            busy.sendall(STATUS)
            self.assertEqual(read_replies(busy, 1), [200])
            answered += 1
            self.assertLess(time.monotonic() - started, DEADLINE_S)
        self.assertTrue(closed(idle))
        self.assertGreater(answered, 0)
        self.assertGreater(time.monotonic() - started, 1.0 - 0.3)  # not before its timeout

    def test_an_idle_keep_alive_connection_is_evicted_first_once_given_back(self):
        try:
            with socket.socket() as s:
                s.bind((ATTACKER, 0))
        except OSError:
            self.skipTest(f"no {ATTACKER} on this machine")
        server = self.start(max_connections=4)  # one address may hold one
        kept = self.connect(server, "127.0.0.2")
        kept.sendall(STATUS)
        self.assertEqual(read_replies(kept, 1), [200])
        wait_for(lambda: self.phase(server) == "open", timeout=LINGER_S + DEADLINE_S,
                 what="the worker to give the idle connection back")
        others = [self.connect(server, f"127.0.0.{i}") for i in (3, 4, 5)]
        for sock in others:
            sock.sendall(b"GET /status HTTP/1.1\r\n")  # a head begun: not idle
        wait_for(lambda: len(server._conns) == 4, what="four connections held")
        newcomer = self.connect(server, "127.0.0.6")
        self.assertTrue(closed(kept))
        newcomer.sendall(STATUS)
        self.assertEqual(read_replies(newcomer, 1), [200])
