"""Benchmark: both servers under idle and trickling connections from another address.

    python bench/abuse.py [--seconds 60] [--idle 500] [--trickling 200] [--size-mib 64]

Starts a load balancer and a holder (``peer.py serve``) as processes on 127.0.0.1, the
holder sharing a random file of ``--size-mib``. Then, for each server and each attack in
turn, for ``--seconds``:

* idle: ``--idle`` connections from 127.0.0.2 (another "machine" on loopback; 127.0.0.1
  when there is none) that never send a byte; one the server closes is opened again;
* trickling: ``--trickling`` connections from there that send a request head a byte a
  second, and never finish it; one the server closes is opened again.

Meanwhile an honest client on 127.0.0.1 picks the file (``POST /transfers`` then ``DELETE``)
PICKS_PER_S times a second on one keep-alive connection, and downloads the file with
``Downloader.get`` (best of three). It reports the picks answered and their p50/p99
latency, the download time against the same download with no attack, and the largest
resident memory and thread count of the attacked server during the attack (from /proc).
Only loopback.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from p2p.net.download import Downloader  # noqa: E402
from p2p.net.lb_client import LBClient, LBClientError  # noqa: E402
from tests.support import read_line, wait_for, write_random  # noqa: E402

MiB = 1 << 20
ATTACKER = "127.0.0.2"
PICKS_PER_S = 50
TRICKLE_INTERVAL_S = 1.0
SAMPLE_INTERVAL_S = 1.0
CONNECT_TIMEOUT_S = 5.0


def attacker_address():
    try:
        with socket.socket() as s:
            s.bind((ATTACKER, 0))
        return ATTACKER
    except OSError:
        return "127.0.0.1"


def proc_status(pid):
    """(resident MiB, threads) of a process, from /proc."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            values[key] = value.split()
    return int(values["VmRSS"][0]) / 1024, int(values["Threads"][0])


class Attack:
    """Connections from ``source`` to ``port``: idle, or trickling a head a byte a second."""

    def __init__(self, source, port, count, trickle):
        self.source, self.port = source, port
        self.socks = [self.connect() for _ in range(count)]
        self.reopened = 0
        self.stop = threading.Event()
        self.trickling = trickle
        self.thread = threading.Thread(target=self.keep_up, daemon=True)
        self.thread.start()

    def connect(self):
        s = socket.socket()
        s.settimeout(CONNECT_TIMEOUT_S)
        s.bind((self.source, 0))
        s.connect(("127.0.0.1", self.port))
        s.setblocking(False)
        return s

    def keep_up(self):
        """Every second: open again the connections the server closed, and trickle."""
        head = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
        sent = [0] * len(self.socks)
        while not self.stop.wait(TRICKLE_INTERVAL_S):
            for i, s in enumerate(self.socks):
                try:
                    if s.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:  # closed by the server: open another one
                    s.close()
                    self.socks[i], sent[i] = self.connect(), 0
                    self.reopened += 1
                    s = self.socks[i]
                if not self.trickling:
                    continue
                try:
                    s.send(head[sent[i]:sent[i] + 1])
                    sent[i] += 1
                except OSError:
                    pass

    def closed_by_server(self):
        closed = 0
        for s in self.socks:
            try:
                closed += s.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        return closed

    def close(self):
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


class Picker:
    """Picks and ends transfers PICKS_PER_S times a second; records latencies."""

    def __init__(self, lb_port, name):
        self.client = LBClient("127.0.0.1", lb_port)
        self.name = name
        self.latencies, self.failures = [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(1 / PICKS_PER_S):
            started = time.perf_counter()
            try:
                pick = self.client.pick(self.name)
                self.latencies.append(time.perf_counter() - started)
                self.client.end(pick.leases[0], "cancelled")
            except LBClientError:
                self.failures += 1

    def close(self):
        self.stop.set()
        self.thread.join()
        self.client.close()

    def percentile(self, p):
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 \
            if ordered else float("nan")


def download_seconds(lb_port, tmp, label):
    downloads = os.path.join(tmp, label)
    client = LBClient("127.0.0.1", lb_port)
    started = time.perf_counter()
    Downloader(client, downloads).get("big.bin")
    elapsed = time.perf_counter() - started
    client.close()
    shutil.rmtree(downloads)
    return elapsed


def run_case(server_name, pid, port, lb_port, kind, args, tmp, baseline):
    source = attacker_address()
    count = args.idle if kind == "idle" else args.trickling
    attack = Attack(source, port, count, trickle=kind == "trickling")
    picker = Picker(lb_port, "big.bin")
    rss, threads = proc_status(pid)
    started = time.monotonic()
    download = None
    try:
        while time.monotonic() - started < args.seconds:
            if download is None and time.monotonic() - started > min(15, args.seconds / 4):
                download = min(download_seconds(lb_port, tmp, f"{server_name}-{kind}{i}")
                               for i in range(3))
            r, t = proc_status(pid)
            rss, threads = max(rss, r), max(threads, t)
            time.sleep(SAMPLE_INTERVAL_S)
        closed = attack.closed_by_server() + attack.reopened
    finally:
        picker.close()
        attack.close()
    answered = len(picker.latencies)
    print(f"{server_name:>13} {kind:>9} {count:>5} {closed:>6} {answered:>6} "
          f"{picker.failures:>5} {picker.percentile(50):>7.2f} {picker.percentile(99):>7.2f} "
          f"{download:>7.2f} {download / baseline:>6.2f} {rss:>7.1f} {threads:>7}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="each attack's length")
    parser.add_argument("--idle", type=int, default=500, help="idle connections")
    parser.add_argument("--trickling", type=int, default=200, help="trickling connections")
    parser.add_argument("--size-mib", type=int, default=64, help="the downloaded file's size")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="p2p-abuse-")
    procs = []
    try:
        shared = os.path.join(tmp, "holder", "shared")
        write_random(os.path.join(shared, "big.bin"), args.size_mib * MiB)
        lb = subprocess.Popen([sys.executable, os.path.join(ROOT, "load_balancer.py"),
                               "--host", "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
        procs.append(lb)
        lb_port = int(read_line(lb.stdout).rsplit(":", 1)[1])
        holder = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "peer.py"), "serve", "--lb",
             f"127.0.0.1:{lb_port}", "--host", "127.0.0.1", "--shared", shared,
             "--downloads", os.path.join(tmp, "holder", "downloads")], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        procs.append(holder)
        holder_port = int(read_line(holder.stdout).rsplit(":", 1)[1])
        client = LBClient("127.0.0.1", lb_port)
        wait_for(lambda: client.files()["files"], timeout=120,
                 what="the holder to hash and announce the file")
        client.close()
        baseline = min(download_seconds(lb_port, tmp, f"baseline{i}") for i in range(3))
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; attacker "
              f"{attacker_address()}; {args.seconds:g} s per attack; {PICKS_PER_S} picks/s; "
              f"download of {args.size_mib} MiB with no attack: {baseline:.2f} s (best of 3)")
        print("closed: attack connections the server closed (each opened again at once)")
        print(f"{'server':>13} {'attack':>9} {'conns':>5} {'closed':>6} {'picks':>6} "
              f"{'fails':>5} {'p50 ms':>7} {'p99 ms':>7} {'dl s':>7} {'ratio':>6} "
              f"{'RSS MiB':>7} {'threads':>7}")
        for name, proc, port in (("load balancer", lb, lb_port), ("peer", holder, holder_port)):
            for kind in ("idle", "trickling"):
                run_case(name, proc.pid, port, lb_port, kind, args, tmp, baseline)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
            proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
