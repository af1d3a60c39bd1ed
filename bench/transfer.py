"""Benchmark: a verified ``peer.py get`` over loopback, against the raw loopback limit.

    python bench/transfer.py [--size-mib 1024] [--runs 3]

Measures, in one run on this machine:

1. raw: ``socket.sendfile`` of the file into a socket whose reader does
   ``recv_into`` a reused 1 MiB buffer with ``MSG_WAITALL`` and drops the bytes
   (no disk, no hash: the most a Python pair can move over loopback);
2. sha256: hashlib over the file from the page cache, one core (the ceiling of
   any verified download that hashes the whole file as one stream);
3. Downloader.get: the downloader in this process, from a ``peer.py serve``
   holder through a load balancer, into a fresh folder: request, receive,
   write, SHA-256 in a second thread, rename;
4. peer.py get: the same as a whole command, interpreter start included;
5. curl: the same holder into ``curl -o /dev/null``, if curl is installed.

It prints each rate and its ratio to raw. Only loopback, bounded runs.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from download import Downloader  # noqa: E402
from load_balancer import LBClient  # noqa: E402
from sharing import sha256_file  # noqa: E402
from tests.support import read_line, wait_for, http_json, write_random  # noqa: E402

MiB = 1 << 20


SENDER = """
import socket, sys
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
with conn, open(sys.argv[1], "rb") as f:
    conn.sendfile(f)
"""


def raw_loopback(path, size):
    """Seconds to move ``size`` bytes sendfile -> recv_into(MSG_WAITALL), discarding them.

    The sender is a process of its own, as a holder is.
    """
    sender = subprocess.Popen([sys.executable, "-c", SENDER, path], stdout=subprocess.PIPE)
    port = int(read_line(sender.stdout))
    buf = bytearray(MiB)
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.perf_counter()
        left = size
        while left:
            n = sock.recv_into(view, min(MiB, left), socket.MSG_WAITALL)
            if not n:
                raise RuntimeError("raw sender stopped early")
            left -= n
        elapsed = time.perf_counter() - started
    sender.wait(10)
    sender.stdout.close()
    return elapsed


def rate(size, seconds):
    return size / seconds / MiB


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB
    tmp = tempfile.mkdtemp(prefix="p2p-bench-")
    procs = []
    try:
        shared = os.path.join(tmp, "holder", "shared")
        source = os.path.join(shared, "big.bin")
        print(f"writing a {args.size_mib} MiB random file ...", flush=True)
        write_random(source, size)

        raw = [raw_loopback(source, size) for _ in range(args.runs)]
        hashes = []
        for _ in range(args.runs):
            started = time.perf_counter()
            sha256_file(source)
            hashes.append(time.perf_counter() - started)

        lb = subprocess.Popen([sys.executable, os.path.join(ROOT, "load_balancer.py"),
                               "--host", "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE)
        procs.append(lb)
        lb_port = int(read_line(lb.stdout).rsplit(":", 1)[1])
        holder = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "peer.py"), "serve", "--lb",
             f"127.0.0.1:{lb_port}", "--host", "127.0.0.1", "--shared", shared,
             "--downloads", os.path.join(tmp, "holder", "downloads")], stdout=subprocess.PIPE)
        procs.append(holder)
        holder_port = int(read_line(holder.stdout).rsplit(":", 1)[1])
        wait_for(lambda: http_json(lb_port, "GET", "/files")[1]["files"], timeout=120,
                 what="the holder to hash and announce the file")

        inprocess = []
        for i in range(args.runs):
            downloads = os.path.join(tmp, f"in{i}")
            started = time.perf_counter()
            Downloader(LBClient("127.0.0.1", lb_port), downloads).get("big.bin")
            inprocess.append(time.perf_counter() - started)
            shutil.rmtree(downloads)

        gets = []
        for i in range(args.runs):
            downloads = os.path.join(tmp, f"get{i}")
            started = time.perf_counter()
            subprocess.run([sys.executable, os.path.join(ROOT, "peer.py"), "get", "big.bin",
                            "--lb", f"127.0.0.1:{lb_port}", "--downloads", downloads],
                           check=True, stdout=subprocess.DEVNULL, timeout=600)
            gets.append(time.perf_counter() - started)
            if os.path.getsize(os.path.join(downloads, "big.bin")) != size:
                raise SystemExit("the download has the wrong size")
            shutil.rmtree(downloads)

        curls = []
        if shutil.which("curl"):
            for _ in range(args.runs):
                out = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}",
                     f"http://127.0.0.1:{holder_port}/files/big.bin"],
                    check=True, capture_output=True, text=True, timeout=600).stdout
                curls.append(float(out))

        best_raw = min(raw)
        print(f"\n{args.size_mib} MiB over loopback, {args.runs} runs each, "
              f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
        print(f"{'':28}{'best MiB/s':>12}{'median MiB/s':>14}{'ratio':>8}")
        rows = [("raw sendfile -> recv_into", raw), ("sha256 of the file, 1 core", hashes),
                ("Downloader.get (verified)", inprocess), ("peer.py get (verified)", gets)]
        if curls:
            rows.append(("peer server -> curl", curls))
        for label, times in rows:
            print(f"{label:28}{rate(size, min(times)):12.0f}"
                  f"{rate(size, statistics.median(times)):14.0f}{best_raw / min(times):8.2f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
