"""Benchmark: a verified ``peer.py get`` over loopback, against the raw loopback limit.

    python bench/transfer.py [--size-mib 1024] [--runs 3] [--network open,secret,tls]
                             [--compare /path/to/another/checkout]

Measures, in one run on this machine, ``--runs`` rounds of each (steps 1 to 4 take
turns within each round, so a passing load on a shared machine weighs on the
limits and the downloads alike):

1. raw: ``socket.sendfile`` of the file into a socket whose reader does
   ``recv_into`` a reused 1 MiB buffer with ``MSG_WAITALL`` and drops the bytes
   (no disk, no hash: the most a Python pair can move over loopback);
2. sha256: hashlib over the file from the page cache, one core (the ceiling of
   any verified download that hashes the whole file as one stream);
3. Downloader.get: the downloader in this process, from a ``peer.py serve``
   holder through a load balancer, into a fresh folder: request, receive,
   write, SHA-256 in a second thread, rename;
4. peer.py get: the same as a whole command, interpreter start included (with
   its bytecode cached, as on any run after the first: every program here runs
   with ``PYTHONPYCACHEPREFIX`` in the run's folder); ``--compare`` also times
   the ``peer.py get`` of another checkout (say the main branch), same holder;
5. curl: the same holder into ``curl -o /dev/null``, if curl is installed;
6. nginx: nginx (``sendfile on``) serving the same file into the same curl, if
   both are installed: what a C server gives curl on this machine.

Steps 1 to 5 run once per network mode given with ``--network`` (default
``open``): ``open``, ``secret`` (every request signed with a network secret;
curl gets a presigned URL), ``tls`` (mutual TLS with the test network
certificate in ``tests/tls/``; the holder reads and encrypts instead of
``sendfile``) and ``secret+tls``.

It prints each rate (best and median) and the median's ratio to raw and to
sha256, then the goals of the verified download against both limits: ``peer.py
get`` at least ``GOAL_OF_SHA256`` of sha256 and ``GOAL_OF_RAW`` of raw, with the
most any verification of the whole file as one SHA-256 stream can reach (sha256
over raw), and the CPU seconds per GiB of sha256 and of each ``peer.py get``
with its holder: when the machine's other programs leave a run about one core,
the rate ratios tend to the CPU ratios, whatever the threads overlap. Only
loopback, bounded runs.
"""

import argparse
import os
import resource
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

from p2p.net.download import Downloader  # noqa: E402
from p2p.net.lb_client import LBClient  # noqa: E402
from p2p.core.members import NETWORK_CERT_NAME, Members  # noqa: E402
from p2p.net.sharing import sha256_file  # noqa: E402
from tests.support import free_port, read_line, wait_for, write_random  # noqa: E402

MiB = 1 << 20
NETWORK_MODES = ("open", "secret", "tls", "secret+tls")
BENCH_SECRET = "bench-only network secret, not for real use"
TLS_CERT = os.path.join(ROOT, "tests", "tls", "network.pem")
TLS_KEY = os.path.join(ROOT, "tests", "tls", "network.key")
GOAL_OF_SHA256 = 0.8  # peer.py get's median rate over one core of SHA-256 (issue 18)
GOAL_OF_RAW = 0.4  # ...and over raw loopback


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


def network_options(mode, tmp):
    """(command-line options, Members) of a network mode; the secret goes to a file in tmp."""
    secret_file = cert = key = None
    if "secret" in mode:
        secret_file = os.path.join(tmp, "network.secret")
        with open(secret_file, "w") as f:
            f.write(BENCH_SECRET)
    if "tls" in mode:
        cert, key = TLS_CERT, TLS_KEY
    members = Members.from_options(secret_file, cert, key, environ={})
    return members.options(secret_file), members


def curl_command(mode, members, port):
    """curl -o /dev/null of the holder's file: a presigned URL with a secret, the
    certificate with TLS."""
    name = "big.bin"
    query = "?" + members.secret.url_query(name) if members.secret else ""
    if members.tls is None:
        return ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}",
                f"http://127.0.0.1:{port}/files/{name}{query}"]
    return ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "--cert", TLS_CERT,
            "--key", TLS_KEY, "--cacert", TLS_CERT, "--resolve",
            f"{NETWORK_CERT_NAME}:{port}:127.0.0.1",
            f"https://{NETWORK_CERT_NAME}:{port}/files/{name}{query}"]


def cpu_seconds(pid):
    """User and system CPU seconds a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    """CPU seconds of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_get(root, downloads, lb_port, options, size, holder):
    """(seconds, CPU seconds of the get's process and the ``holder``'s) of ``root``'s
    ``peer.py get`` of the file into ``downloads`` (then removed)."""
    cpu = children_cpu() + cpu_seconds(holder.pid)
    started = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(root, "peer.py"), "get", "big.bin", "-q",
                    "--lb", f"127.0.0.1:{lb_port}", "--downloads", downloads, *options],
                   check=True, stdout=subprocess.DEVNULL, timeout=600)
    elapsed = time.perf_counter() - started
    cpu = children_cpu() + cpu_seconds(holder.pid) - cpu
    if os.path.getsize(os.path.join(downloads, "big.bin")) != size:
        raise SystemExit("the download has the wrong size")
    shutil.rmtree(downloads)
    return elapsed, cpu


def time_in_process(client, downloads, members):
    """Seconds of ``Downloader.get`` of the file in this process (the folder then removed)."""
    started = time.perf_counter()
    Downloader(client, downloads, members=members).get("big.bin")
    elapsed = time.perf_counter() - started
    shutil.rmtree(downloads)
    return elapsed


def measure_network(mode, tmp, shared, size, runs, procs, limits, compare=()):
    """Downloader.get, peer.py get (of this checkout and of each ``compare``) and curl
    timings (seconds) on a network of ``mode``. Each round measures the limits too
    (``limits()``) and then each download in turn, so a load that comes and goes on a
    shared machine weighs on the limits and the downloads alike."""
    options, members = network_options(mode, tmp)
    lb = subprocess.Popen([sys.executable, os.path.join(ROOT, "load_balancer.py"),
                           "--host", "127.0.0.1", "--port", "0", *options],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # its log
    procs.append(lb)
    lb_port = int(read_line(lb.stdout).rsplit(":", 1)[1])
    holder = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "peer.py"), "serve", "--lb",
         f"127.0.0.1:{lb_port}", "--host", "127.0.0.1", "--shared", shared,
         "--downloads", os.path.join(tmp, "holder", "downloads"), *options],
        stdout=subprocess.PIPE)
    procs.append(holder)
    holder_port = int(read_line(holder.stdout).rsplit(":", 1)[1])
    client = LBClient("127.0.0.1", lb_port, members=members)
    wait_for(lambda: client.files()["files"], timeout=120,
             what="the holder to hash and announce the file")

    inprocess, gets, compared = [], [], [[] for _ in compare]
    cpu = {root: [] for root in (ROOT, *compare)}
    for i in range(runs):
        limits()
        inprocess.append(time_in_process(client, os.path.join(tmp, f"in{i}"), members))
        for root, times in zip((ROOT, *compare), (gets, *compared)):
            elapsed, used = time_get(root, os.path.join(tmp, f"get{i}"), lb_port, options,
                                     size, holder)
            times.append(elapsed)
            cpu[root].append(used)
    client.close()

    curls = []
    if shutil.which("curl"):
        for _ in range(runs):
            out = subprocess.run(curl_command(mode, members, holder_port), check=True,
                                 capture_output=True, text=True, timeout=600).stdout
            curls.append(float(out))
    for proc in (holder, lb):
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    return inprocess, gets, compared, curls, cpu


NGINX_CONF = """
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx.log;
events {{ worker_connections 64; }}
http {{ access_log off; sendfile on; tcp_nopush on;
       client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
       uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
       server {{ listen 127.0.0.1:{port}; root {root}; }} }}
"""


def nginx_times(tmp, shared, runs):
    """Seconds for ``curl -o /dev/null`` of the file from nginx, or [] without nginx or curl."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if nginx is None or not shutil.which("curl"):
        return []
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, port=port, root=shared))
    server = subprocess.Popen([nginx, "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/big.bin"
        wait_for(lambda: subprocess.run(["curl", "-sf", "-r", "0-0", "-o", "/dev/null", url])
                 .returncode == 0, what="nginx to answer")
        return [float(subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}",
                                      url], check=True, capture_output=True, text=True,
                                     timeout=600).stdout) for _ in range(runs)]
    finally:
        server.terminate()
        server.wait(10)


def rate(size, seconds):
    return size / seconds / MiB


def print_rows(rows, size):
    """Each row's best and median rate, and its median against raw's and sha256's."""
    raw, hashes = statistics.median(rows[0][1]), statistics.median(rows[1][1])
    print(f"{'':34}{'best MiB/s':>12}{'median MiB/s':>14}{'/ raw':>8}{'/ sha256':>10}")
    for label, times in rows:
        median = statistics.median(times)
        print(f"{label:34}{rate(size, min(times)):12.0f}{rate(size, median):14.0f}"
              f"{raw / median:8.2f}{hashes / median:10.2f}")


def print_goals(mode, size, raw, hashes, gets):
    """peer.py get's median against the goals, and the most one SHA-256 stream allows."""
    raw, hashes, get = (statistics.median(times) for times in (raw, hashes, gets))
    ceiling = raw / hashes
    print(f"\ngoals, {mode}: peer.py get {rate(size, get):.0f} MiB/s is "
          f"{hashes / get:.2f} of sha256 (goal >= {GOAL_OF_SHA256}: "
          f"{'met' if hashes / get >= GOAL_OF_SHA256 else 'NOT met'}) and {raw / get:.2f} "
          f"of raw (goal >= {GOAL_OF_RAW}: {'met' if raw / get >= GOAL_OF_RAW else 'NOT met'})")
    print(f"  a download verified by one SHA-256 stream reaches at most sha256/raw = "
          f"{ceiling:.2f} of raw here" + ("" if ceiling >= GOAL_OF_RAW else
                                          ": the raw goal is beyond one stream on this machine"))


def print_cpu(mode, size, hash_cpu, cpu):
    """CPU seconds per GiB (medians) of sha256 and of each peer.py get with its holder: on a
    machine whose other programs leave a run about one core, the rate ratios tend to these
    CPU ratios."""
    per_gib = (1 << 30) / size
    line = ", ".join(f"{os.path.basename(root.rstrip('/')) if root != ROOT else 'peer.py get'} "
                     f"{statistics.median(times) * per_gib:.2f}" for root, times in cpu.items())
    print(f"  CPU s per GiB, {mode}: sha256 {statistics.median(hash_cpu) * per_gib:.2f}; "
          f"with the holder's: {line}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--network", default="open",
                        help=f"comma-separated network modes, of {', '.join(NETWORK_MODES)}")
    parser.add_argument("--compare", action="append", default=[], metavar="CHECKOUT",
                        help="also time peer.py get of this checkout (say the main branch)")
    args = parser.parse_args()
    args.network = args.network.split(",")
    if any(mode not in NETWORK_MODES for mode in args.network):
        parser.error(f"--network takes {', '.join(NETWORK_MODES)}")
    size = args.size_mib * MiB
    tmp = tempfile.mkdtemp(prefix="p2p-bench-")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the programs' bytecode is cached...
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")  # ...here
    procs = []
    try:
        shared = os.path.join(tmp, "holder", "shared")
        source = os.path.join(shared, "big.bin")
        print(f"writing a {args.size_mib} MiB random file ...", flush=True)
        write_random(source, size)

        raw, hashes, hash_cpu = [], [], []

        def limits():
            raw.append(raw_loopback(source, size))
            started, cpu = time.perf_counter(), time.process_time()
            sha256_file(source)
            hashes.append(time.perf_counter() - started)
            hash_cpu.append(time.process_time() - cpu)

        measured = [measure_network(mode, tmp, shared, size, args.runs, procs, limits,
                                    args.compare) for mode in args.network]
        nginx = nginx_times(tmp, shared, args.runs)

        print(f"\n{args.size_mib} MiB over loopback, {args.runs} runs each, "
              f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        rows = [("raw sendfile -> recv_into", raw), ("sha256 of the file, 1 core", hashes)]
        for mode, (inprocess, gets, compared, curls, _) in zip(args.network, measured):
            suffix = "" if len(args.network) == 1 else f", {mode}"
            rows += [(f"Downloader.get{suffix}", inprocess), (f"peer.py get{suffix}", gets)]
            rows += [(f"peer.py get of {os.path.basename(other.rstrip('/'))}{suffix}", times)
                     for other, times in zip(args.compare, compared)]
            if curls:
                rows.append((f"peer server -> curl{suffix}", curls))
        if nginx:
            rows.append(("nginx -> curl", nginx))
        print_rows(rows, size)
        for mode, (_, gets, _, _, cpu) in zip(args.network, measured):
            print_goals(mode, size, raw, hashes, gets)
            print_cpu(mode, size, hash_cpu, cpu)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
