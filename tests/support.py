"""Helpers for the end-to-end tests: real processes on loopback, every wait with a deadline."""

import http.client
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from p2p.net.sharing import ShareIndex

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "peer.py")
LB = os.path.join(ROOT, "load_balancer.py")
START_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 60.0
HASH_WAIT_S = 10.0  # for a few small files to be hashed in the background
SERVER_STOP_S = 5.0  # a server run in a thread stops within this at the end of a test


def wait_for(predicate, timeout=10.0, what="a condition", interval=0.05):
    """Poll ``predicate`` until it returns something true; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def read_line(stream, timeout=START_TIMEOUT_S):
    """One line from a process's pipe, or AssertionError at the deadline."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no line within {timeout:.0f} s (got {line!r})")
            chunk = os.read(stream.fileno(), 1)
            if not chunk:
                break
            line += chunk
        return line.decode()


def write_file(root, name, data):
    """Write ``data`` to ``root/name`` (``/`` between folders, made as needed); its path."""
    path = os.path.join(root, *name.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def hashed_index(test, prefix, files):
    """A ShareIndex over a new temporary folder holding ``files`` ({name: bytes}), hashed,
    both removed after ``test``; (the folder, the index)."""
    root = tempfile.mkdtemp(prefix=prefix)
    test.addCleanup(shutil.rmtree, root, ignore_errors=True)
    for name, data in files.items():
        write_file(root, name, data)
    index = ShareIndex([root])
    index.refresh()
    test.assertTrue(index.wait_hashed(HASH_WAIT_S))
    test.addCleanup(index.close)
    return root, index


def http_request(port, method, path, headers=None, conn=None):
    """One request to a server on loopback, on ``conn`` (kept open) or a connection of its
    own; (response, body)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        if own:
            conn.close()


def raw_get(port, target):
    """One GET of ``target`` as raw bytes (no client-side normalising): (status, response)."""
    return raw_request(port, target, "GET")


def raw_request(port, target, method, headers=""):
    """One request of ``target`` as raw bytes, read until the server closes: (status, response).

    ``headers``: more header lines, each ending in CRLF."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
                  .encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def wait_partial(folder, at_least):
    """The partial download in ``folder``, once it holds ``at_least`` bytes."""
    partial = os.path.join(folder, wait_for(
        lambda: [n for n in os.listdir(folder) if n.endswith(".part")], what="a partial file")[0])
    wait_for(lambda: os.path.getsize(partial) >= at_least, what=f"{at_least} bytes to arrive")
    return partial


def quiet_logs(test):
    """Keep the servers' warnings about refused input out of the test output, for ``test``."""
    quiet = logging.NullHandler()
    logger = logging.getLogger("p2p")
    logger.addHandler(quiet)
    logger.propagate = False
    test.addCleanup(setattr, logger, "propagate", True)
    test.addCleanup(logger.removeHandler, quiet)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port, method, path, body=None, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def clean_env(tmp):
    """The environment for a process of a test: no P2P_LB, its logs under ``tmp``, a
    network name of the test's own, so that no test finds another's load balancer, and
    discovery on loopback only, so that no datagram leaves the machine."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=tmp,
               P2P_NETWORK="t-" + os.path.basename(tmp), P2P_DISCOVERY_ON="127.0.0.1")
    env.pop("P2P_LB", None)
    return env


def serve_in_thread(test, server):
    """Run ``server`` (a socketserver) in a thread until ``test`` ends: shut down, closed,
    and its thread joined within SERVER_STOP_S; returns ``server``."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    test.addCleanup(thread.join, SERVER_STOP_S)
    test.addCleanup(server.server_close)
    test.addCleanup(server.shutdown)
    return server


def write_random(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            f.write(chunk)
            left -= len(chunk)


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


class ProcessTestCase(unittest.TestCase):
    """Starts load balancers and peers as subprocesses and always cleans them up."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="p2p-test-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def spawn(self, args, **kwargs):
        env = clean_env(self.tmp)
        proc = subprocess.Popen([sys.executable, *args], stdin=kwargs.pop("stdin", subprocess.DEVNULL),
                                stdout=subprocess.PIPE, stderr=kwargs.pop("stderr", subprocess.PIPE),
                                cwd=kwargs.pop("cwd", self.tmp), env=env, **kwargs)
        self.addCleanup(self._reap, proc)
        return proc

    @staticmethod
    def _reap(proc):
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream:
                stream.close()

    def start_lb(self, *extra, port=0):
        proc = self.spawn([LB, "--host", "127.0.0.1", "--port", str(port), *extra])
        line = read_line(proc.stdout)
        self.assertTrue(line.startswith("listening on 127.0.0.1:"), line)
        proc.port = int(line.rsplit(":", 1)[1])
        return proc

    def folder(self, *parts):
        path = os.path.join(self.tmp, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def start_peer(self, lb_port, name, *extra, wait_files=None):
        """``peer.py serve`` with its own shared/ and downloads/ under tmp/name."""
        proc = self.spawn([PEER, "serve", "--lb", f"127.0.0.1:{lb_port}", "--host", "127.0.0.1",
                           "--name", name, "--shared", self.folder(name, "shared"),
                           "--downloads", self.folder(name, "downloads"), *extra])
        line = read_line(proc.stdout)
        self.assertTrue(line.startswith("listening on 127.0.0.1:"), line)
        proc.port = int(line.rsplit(":", 1)[1])
        if wait_files is not None:
            wait_for(lambda: self.peer_files(lb_port, proc.port) == set(wait_files),
                     what=f"peer {name} to announce {sorted(wait_files)}")
        return proc

    def status(self, lb_port):
        code, body = http_json(lb_port, "GET", "/status")
        self.assertEqual(code, 200)
        return body

    def peer_entry(self, lb_port, peer_port):
        for p in self.status(lb_port)["peers"]:
            if p["port"] == peer_port:
                return p
        return None

    def peer_files(self, lb_port, peer_port):
        entry = self.peer_entry(lb_port, peer_port)
        return set(entry["files"]) if entry else None

    def run_peer(self, *args, timeout=COMMAND_TIMEOUT_S, **kwargs):
        return subprocess.run([sys.executable, PEER, *args], capture_output=True, text=True,
                              timeout=timeout, cwd=kwargs.pop("cwd", self.tmp),
                              env=clean_env(self.tmp), **kwargs)

    def get(self, lb_port, name, downloads, *extra, timeout=COMMAND_TIMEOUT_S, **kwargs):
        return self.run_peer("get", name, "--lb", f"127.0.0.1:{lb_port}",
                             "--downloads", downloads, *extra, timeout=timeout, **kwargs)

    def terminate(self, proc, sig=signal.SIGTERM, timeout=10.0):
        proc.send_signal(sig)
        return proc.wait(timeout)
