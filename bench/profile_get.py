"""Profile: where the time of one ``peer.py get`` over loopback goes, thread by thread.

    python bench/profile_get.py [--size-mib 1024] [--top 12] [--counters] [--strace]
                                [--checkout /path/to/another/checkout]

Starts a load balancer and a ``peer.py serve`` holder of a random file (as
``transfer.py`` does), then runs ``peer.py get`` of it in a child process with a
``cProfile.Profile`` in every thread (cProfile alone sees only the main thread).
For each thread it prints its wall and CPU time and the functions where that
thread spent its own time (``tottime``: recv_into, pwrite, hash updates, lock
waits...), then the time the whole get took. ``--counters`` runs it unprofiled instead,
with clocks (wall and CPU time) around the calls that move the bytes: each
``recv_into``, ``pwrite``, SHA-256 update, read-back and request, per thread,
and each thread's total. ``--strace`` runs the get once more
under ``strace -f -c`` for the system calls' count and time (strace slows it).
``--checkout`` profiles the ``peer.py get`` of another checkout (say the main
branch) against the same holder. Only loopback, one bounded run.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from p2p.net.lb_client import LBClient  # noqa: E402
from tests.support import read_line, wait_for, write_random  # noqa: E402
from bench.transfer import cpu_seconds  # noqa: E402

MiB = 1 << 20

# Run in the child: peer.py with a profiler per thread, a report per thread at the end.
CHILD = r"""
import cProfile, io, os, pstats, runpy, sys, threading, time
top = int(sys.argv.pop(1))
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
reports = []
lock = threading.Lock()

def report(name, profile, wall, cpu):
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    body = out.getvalue()
    body = body[body.find("   ncalls"):]
    with lock:
        reports.append(f"== thread {name}: wall {wall:.2f} s, cpu {cpu:.2f} s\n{body}")

original_run = threading.Thread.run

def profiled_run(self):
    profile = cProfile.Profile()
    wall, cpu = time.perf_counter(), time.thread_time()
    profile.enable()
    try:
        original_run(self)
    finally:
        profile.disable()
        report(self.name, profile, time.perf_counter() - wall, time.thread_time() - cpu)

threading.Thread.run = profiled_run
sys.argv = sys.argv[1:]
profile = cProfile.Profile()
wall, cpu = time.perf_counter(), time.thread_time()
profile.enable()
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
finally:
    profile.disable()
    report("main", profile, time.perf_counter() - wall, time.thread_time() - cpu)
    for text in reports:
        if "wall 0.0" not in text.split("\n")[0]:
            print(text)
"""

# Run in the child with --counters: peer.py unprofiled, with clocks around the calls that move
# bytes (receive, write, hash, read back, each request) and each thread's wall and CPU time.
COUNTERS = r"""
import collections, hashlib, os, runpy, sys, threading, time, types
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
from p2p.net import holder, partial, swarm

spent = collections.defaultdict(lambda: [0, 0.0, 0.0])  # (thread, what): calls, wall, cpu
lock = threading.Lock()

def kind(thread):
    return thread.name.split("-")[0].split()[0]

def counted(what, call):
    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return call(*args, **kwargs)
        finally:
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            with lock:
                entry = spent[kind(threading.current_thread()), what]
                entry[0] += 1
                entry[1] += wall
                entry[2] += cpu
    return wrapper

class CountedHash:
    def __init__(self, data=b""):
        self._hash = hashlib.sha256(data)
        self.update = counted("sha256 update", self._hash.update)

    def hexdigest(self):
        return self._hash.hexdigest()

partial.hashlib = swarm.hashlib = types.SimpleNamespace(sha256=CountedHash)
os.pwrite = counted("pwrite", os.pwrite)
os.preadv = counted("preadv (read back)", os.preadv)
holder.HolderConnection._recv = counted("recv_into", holder.HolderConnection._recv)
holder.HolderConnection._request = counted("request: send, answer's head",
                                           holder.HolderConnection._request)
original_run = threading.Thread.run

def counted_run(self):
    counted("thread (all)", original_run)(self)

threading.Thread.run = counted_run
sys.argv = sys.argv[1:]
try:
    counted("thread (all)", runpy.run_path)(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
finally:
    print(f"{'thread':14}{'what':32}{'calls':>7}{'wall s':>8}{'cpu s':>8}")
    for (thread, what), (calls, wall, cpu) in sorted(spent.items()):
        if cpu >= 0.005 or (what != "thread (all)" and wall >= 0.005):
            print(f"{thread:14}{what:32}{calls:7}{wall:8.2f}{cpu:8.2f}")
"""


def start(tmp, size_mib):
    """A load balancer and a holder of ``big.bin``; (processes, the load balancer's port)."""
    shared = os.path.join(tmp, "holder", "shared")
    write_random(os.path.join(shared, "big.bin"), size_mib * MiB)
    lb = subprocess.Popen([sys.executable, os.path.join(ROOT, "load_balancer.py"),
                           "--host", "127.0.0.1", "--port", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lb_port = int(read_line(lb.stdout).rsplit(":", 1)[1])
    holder = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "peer.py"), "serve", "--lb",
         f"127.0.0.1:{lb_port}", "--host", "127.0.0.1", "--shared", shared,
         "--downloads", os.path.join(tmp, "holder", "downloads")], stdout=subprocess.PIPE)
    client = LBClient("127.0.0.1", lb_port)
    wait_for(lambda: client.files()["files"], timeout=120,
             what="the holder to hash and announce the file")
    client.close()
    return [holder, lb], lb_port


def get_command(tmp, lb_port, run, root=ROOT):
    return [os.path.join(root, "peer.py"), "get", "big.bin", "-q",
            "--lb", f"127.0.0.1:{lb_port}", "--downloads", os.path.join(tmp, f"get{run}")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--top", type=int, default=12, help="functions shown per thread")
    parser.add_argument("--counters", action="store_true",
                        help="clocks around receive, write and hash instead of cProfile")
    parser.add_argument("--checkout", default=ROOT,
                        help="profile the peer.py get of this checkout (the holder is ours)")
    parser.add_argument("--strace", action="store_true", help="also run it under strace -c")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="p2p-profile-")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as transfer.py does
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
    procs = []
    try:
        procs, lb_port = start(tmp, args.size_mib)
        holder_cpu = cpu_seconds(procs[0].pid)
        started = time.perf_counter()
        child = [COUNTERS] if args.counters else [CHILD, str(args.top)]
        subprocess.run([sys.executable, "-c", *child,
                        *get_command(tmp, lb_port, 0, args.checkout)], check=True, timeout=600)
        elapsed = time.perf_counter() - started
        holder_cpu = cpu_seconds(procs[0].pid) - holder_cpu
        print(f"peer.py get of {args.size_mib} MiB: {elapsed:.2f} s, "
              f"{args.size_mib / elapsed:.0f} MiB/s"
              + ("" if args.counters else " (the profiler slows it)")
              + f"; the holder's process used {holder_cpu:.2f} s of CPU meanwhile; load "
              f"average {os.getloadavg()[0]:.2f}")
        if args.strace and shutil.which("strace"):
            subprocess.run(["strace", "-f", "-c", "-o", os.path.join(tmp, "strace.txt"),
                            sys.executable, *get_command(tmp, lb_port, 1, args.checkout)],
                           check=True, timeout=600)
            with open(os.path.join(tmp, "strace.txt")) as f:
                print(f.read())
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
            proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
