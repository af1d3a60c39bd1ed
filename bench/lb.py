"""Benchmark: how fast the load balancer hands out and takes back transfers.

    python bench/lb.py [--seconds S] [--clients N] [--client-procs P] [--peers 10,1000,10000]
                       [--network open,secret,tls,secret+tls]

For 10, 1,000 and 10,000 registered peers (10 shared files each, every distinct file held by
4 peers, so each pick chooses among 4 holders; the 10,000-peer case has 100,000 shared file
entries, 25,000 distinct files), it starts a ``LoadBalancerServer`` on 127.0.0.1, port 0, in
a thread of this process (peers are registered straight into its ``Registry``: registering
is not what is measured), then runs pick + end pairs over HTTP:

    POST /transfers {"name": ...}            -> 201
    DELETE /transfers/{id}?outcome=done      -> 204 (with the pick's secret)

(a) over one keep-alive connection, (b) over N concurrent connections (default 8), and
reports requests per second (each HTTP request counts), and p50 / p99 latency per request.

The limit of case (a), measured first in the same run: the same client on one connection
against a server that answers every request with the very bytes the load balancer sends
(a pick's 201, an end's 204) without parsing it or doing anything else, in a thread of
this process: what the client, loopback and the two processes' turns allow.

The clients (a minimal keep-alive socket client, or with ``--client lbclient`` the
``LBClient`` the peers use) run in separate processes
(``bench/lb.py --worker``, one thread per connection; the N connections of case (b) are
spread over P processes, default 4, because one Python process cannot drive 8 connections
as fast as the server answers them), so the figures are the server's, not the server
sharing its GIL with its own load generator. All workers of a case measure over the same
wall-clock window. Every loop is bounded by time and by count; loopback only.

With ``--network`` each case runs once per network mode: ``open``, ``secret``
(every request signed with X-P2P-Auth, checked and its nonce remembered by the
server), ``tls`` (mutual TLS with the test certificate in ``tests/tls/``) and
``secret+tls``. Connections are kept alive, so TLS costs one handshake per
connection and then its encryption per request.
"""

import collections

import argparse
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from p2p.core import registry as lb_core  # noqa: E402
from p2p.core.lb_answers import transfer_answer  # noqa: E402
from p2p.net import lb_server  # noqa: E402
from p2p.net.lb_client import LBClient, LBClientError, Lease, Pick  # noqa: E402
from p2p.core.members import Members, NetworkSecret, NetworkTLS  # noqa: E402
from p2p.core.wire import FileRecord  # noqa: E402

FILES_PER_PEER = 10
HOLDERS_PER_FILE = 4
WARMUP_PAIRS = 200
MAX_PAIRS_PER_CONNECTION = 2_000_000  # the count bound beside the time bound
WORKER_GRACE_S = 60.0  # a worker that overruns its time by this much is killed
NETWORK_MODES = ("open", "secret", "tls", "secret+tls")
BENCH_SECRET = "bench-only network secret, not for real use"
TLS_CERT = os.path.join(ROOT, "tests", "tls", "network.pem")
TLS_KEY = os.path.join(ROOT, "tests", "tls", "network.key")


def network_members(mode):
    return Members(NetworkSecret(BENCH_SECRET) if "secret" in mode else None,
                   NetworkTLS(TLS_CERT, TLS_KEY) if "tls" in mode else None)


def file_name(k):
    return f"file-{k:06d}.bin"


def distinct_files(peers):
    return peers * FILES_PER_PEER // HOLDERS_PER_FILE


def build_registry(peers):
    """A registry with ``peers`` peers; holder i of file k is peer (4k + i) mod peers."""
    registry = lb_core.Registry(heartbeat_s=3600.0)  # nobody expires during the run
    held = [[] for _ in range(peers)]
    for k in range(distinct_files(peers)):
        info = FileRecord(file_name(k), 1 << 20, f"{k:064x}")
        for i in range(HOLDERS_PER_FILE):
            held[(HOLDERS_PER_FILE * k + i) % peers].append(info)
    for p, files in enumerate(held):
        registry.register(f"10.{p >> 16 & 255}.{p >> 8 & 255}.{p & 255}", 7000, files)
    return registry


# ---------------------------------------------------------------------------
# The client side (a separate process)


def percentile(histogram, fraction):
    """The ``fraction`` percentile of a {microseconds: count} histogram, in milliseconds."""
    total = sum(histogram.values())
    if not total:
        return float("nan")
    rank = max(1, round(fraction * total))
    seen = 0
    for micros in sorted(histogram):
        seen += histogram[micros]
        if seen >= rank:
            return micros / 1000
    return max(histogram) / 1000


class RawClient:
    """A minimal keep-alive HTTP/1.1 client over one socket (so the figures are the server's).

    ``LBClient`` parses every reply with http.client and the email package, which costs about
    as much as the server's own work; ``--client lbclient`` measures with it instead.
    """

    def __init__(self, port, members):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = members.connect(sock)
        self.members = members
        self.authority = f"127.0.0.1:{port}"
        self.pending = b""

    def _call(self, method, target, headers=b"", body=b""):
        auth = b"".join(f"{key}: {value}\r\n".encode() for key, value in self.members.auth_headers(
            method, target, self.authority, body).items())  # Host, and the signature if any
        head = f"{method} {target} HTTP/1.1\r\n".encode() + headers + auth + b"\r\n"
        self.sock.sendall(head + body)
        data = self.pending
        while (end := data.find(b"\r\n\r\n")) < 0:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise LBClientError("the server closed the connection")
            data += chunk
        status = int(data[9:12])
        match = re.search(rb"\r\nContent-Length: (\d+)", data[:end])
        length = int(match.group(1)) if match else 0
        while len(data) < end + 4 + length:
            data += self.sock.recv(65536)
        self.pending = data[end + 4 + length:]
        reply = data[end + 4:end + 4 + length]
        if status >= 400:
            raise LBClientError(reply.decode(), status)
        return json.loads(reply) if reply else None

    def pick(self, name):
        """As ``LBClient.pick``, without checking the answer."""
        body = json.dumps({"name": name}).encode()
        answer = self._call("POST", "/transfers", b"Content-Type: application/json\r\n"
                            b"Content-Length: %d\r\n" % len(body), body)
        peer = answer["peer"]
        lease = Lease(answer["transfer_id"], answer["secret"], peer["id"], peer["host"],
                      peer["port"])
        return Pick(FileRecord(**answer["file"]), [lease], answer["renew_s"])

    def end(self, lease, outcome):
        return self._call("DELETE", f"/transfers/{lease.transfer_id}?outcome={outcome}",
                          f"Authorization: Bearer {lease.secret}\r\n".encode())

    def close(self):
        self.sock.close()


def make_client(kind, port, members):
    if kind == "raw":
        return RawClient(port, members)
    return LBClient("127.0.0.1", port, timeout=10.0, members=members)


def worker(port, names, connections, seconds, start_at, seed, kind, mode):
    """Run pick+end pairs on ``connections`` keep-alive connections from wall-clock time
    ``start_at`` for ``seconds``; print a JSON summary with a latency histogram."""
    barrier = threading.Barrier(connections)
    results = [None] * connections

    def run(slot):
        rng = random.Random(seed * 1000 + slot)
        client = make_client(kind, port, network_members(mode))
        latencies = []
        errors = 0
        try:
            for _ in range(WARMUP_PAIRS):
                client.end(client.pick(file_name(rng.randrange(names))).leases[0], "done")
            barrier.wait(30)
            wait = start_at - time.time()
            if wait > 0:
                time.sleep(min(wait, 30))  # line up with the other worker processes
            end = time.perf_counter() + seconds
            pairs = 0
            clock = time.perf_counter
            while pairs < MAX_PAIRS_PER_CONNECTION:
                t0 = clock()
                if t0 >= end:
                    break
                try:
                    lease = client.pick(file_name(rng.randrange(names))).leases[0]
                    t1 = clock()
                    client.end(lease, "done")
                    t2 = clock()
                except LBClientError:
                    errors += 1
                    continue
                latencies.append(t1 - t0)
                latencies.append(t2 - t1)
                pairs += 1
        finally:
            client.close()
        results[slot] = (latencies, errors)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + max(0.0, start_at - time.time()) + seconds + WORKER_GRACE_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    histogram = collections.Counter()
    for r in results:
        if r:
            histogram.update(round(x * 1e6) for x in r[0])
    print(json.dumps({
        "requests": sum(histogram.values()),
        "errors": sum(r[1] for r in results if r),
        "finished": sum(1 for r in results if r),
        "histogram_us": histogram,
    }))


def run_workers(port, names, connections, processes, seconds, kind, mode):
    """``connections`` connections spread over ``processes`` worker processes; merged result."""
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    start_at = time.time() + 1.0 + 0.2 * processes  # time for the workers to start and warm up
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", "--port", str(port),
         "--names", str(names), "--clients", str(share), "--seconds", str(seconds),
         "--start-at", repr(start_at), "--client", kind, "--network", mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for share in shares]
    histogram = collections.Counter()
    errors = finished = 0
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=(start_at - time.time()) + seconds
                                        + 2 * WORKER_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"bench worker failed:\n{err}")
        result = json.loads(out.strip().splitlines()[-1])
        histogram.update({int(k): v for k, v in result["histogram_us"].items()})
        errors += result["errors"]
        finished += result["finished"]
    if finished != connections:
        raise SystemExit(f"only {finished} of {connections} client connections finished")
    requests = sum(histogram.values())
    return {"connections": connections, "processes": processes, "requests": requests,
            "rate": requests / seconds, "errors": errors,
            "p50_ms": percentile(histogram, 0.50), "p99_ms": percentile(histogram, 0.99),
            "max_ms": max(histogram) / 1000 if histogram else float("nan")}


# ---------------------------------------------------------------------------
# The server side (this process)


class CannedServer:
    """The limit of one connection: the load balancer's own answers, sent as fixed bytes."""

    def __init__(self, registry):
        handout = registry.pick(file_name(0))
        registry.end(handout.first.id, handout.first.secret, "done")
        body = transfer_answer(handout, registry.renew_s)
        head = f"Server: {lb_server.LB_SERVER}\r\nDate: Mon, 07 Dec 2026 00:00:00 GMT\r\n"
        self.picked = (f"HTTP/1.1 201 Created\r\n{head}Content-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.ended = f"HTTP/1.1 204 No Content\r\n{head}\r\n".encode()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed: the measurement is over
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        data = b""
        with conn:
            while chunk := conn.recv(65536):
                data += chunk
                while (end := data.find(b"\r\n\r\n")) >= 0:
                    match = re.search(rb"\r\nContent-Length: (\d+)", data[:end])
                    length = int(match.group(1)) if match else 0
                    if len(data) < end + 4 + length:
                        break
                    conn.sendall(self.picked if data.startswith(b"POST") else self.ended)
                    data = data[end + 4 + length:]

    def close(self):
        self.listener.close()


def measure_limit(seconds, kind):
    """Case (a) against canned answers: the one-connection limit of this run."""
    registry = build_registry(10)
    server = CannedServer(registry)
    try:
        return run_workers(server.port, distinct_files(10), 1, 1, seconds, kind, "open")
    finally:
        server.close()


def measure(peers, seconds, clients, client_procs, kind, mode):
    started = time.perf_counter()
    registry = build_registry(peers)
    setup_s = time.perf_counter() - started
    server = lb_server.LoadBalancerServer(("127.0.0.1", 0), registry, members=network_members(mode))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    rows = []
    try:
        for connections, processes in ((1, 1), (clients, client_procs)):
            rows.append(run_workers(server.port, distinct_files(peers), connections, processes,
                                    seconds, kind, mode))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    status = registry.status()["peers"]
    leaked = sum(p["active"] for p in status)
    served = sum(p["served"] for p in status)
    return {"mode": mode, "peers": peers, "entries": peers * FILES_PER_PEER, "distinct": distinct_files(peers),
            "setup_s": setup_s, "rows": rows, "leaked": leaked, "served": served}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="measuring time per case (default 4; 6 cases)")
    parser.add_argument("--clients", type=int, default=8,
                        help="concurrent connections in case (b) (default 8)")
    parser.add_argument("--client-procs", type=int, default=4,
                        help="client processes sharing the connections of case (b) (default 4)")
    parser.add_argument("--peers", default="10,1000,10000",
                        help="comma-separated peer counts (default 10,1000,10000)")
    parser.add_argument("--client", choices=("raw", "lbclient"), default="raw",
                        help="load generator: a minimal socket client (default) or LBClient")
    parser.add_argument("--network", default="open",
                        help=f"comma-separated network modes, of {', '.join(NETWORK_MODES)} "
                             "(default open)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--names", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.port, args.names, args.clients, args.seconds, args.start_at,
               seed=args.port + os.getpid(), kind=args.client, mode=args.network)
        return 0
    if args.seconds <= 0 or args.clients < 1 or args.client_procs < 1:
        parser.error("--seconds, --clients and --client-procs must be positive")
    counts = [int(x) for x in args.peers.split(",")]
    modes = args.network.split(",")
    if any(mode not in NETWORK_MODES for mode in modes):
        parser.error(f"--network takes {', '.join(NETWORK_MODES)}")
    if any(n < HOLDERS_PER_FILE for n in counts):
        parser.error(f"each peer count must be at least {HOLDERS_PER_FILE}")

    print("load balancer benchmark: pick + end pairs (POST /transfers, DELETE /transfers/ID) "
          "over loopback")
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {args.seconds:g} s per case; policy least-connections")
    client = "a minimal socket client" if args.client == "raw" else "LBClient"
    print(f"server: LoadBalancerServer (selector, worker threads) in this process; clients: {client}, "
          "one thread per keep-alive connection, in separate processes")
    print(f"each peer shares {FILES_PER_PEER} files, each file held by {HOLDERS_PER_FILE} peers\n")
    header = (f"{'network':>10} {'peers':>7} {'file entries':>12} {'distinct':>9} {'connections':>11} "
              f"{'client procs':>12} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'max ms':>7}")
    if args.client == "raw":
        limit = measure_limit(args.seconds, args.client)
        print(f"the limit, same run: canned answers on 1 connection, {limit['rate']:,.0f} req/s "
              f"(p50 {limit['p50_ms']:.3f} ms)\n")
    print(header)
    print("-" * len(header))
    results = []
    for mode, peers in [(mode, peers) for mode in modes for peers in counts]:
        result = measure(peers, args.seconds, args.clients, args.client_procs, args.client, mode)
        results.append(result)
        for i, row in enumerate(result["rows"]):
            lead = (f"{mode:>10} {peers:>7,} {result['entries']:>12,} {result['distinct']:>9,}"
                    if i == 0 else " " * 41)
            print(f"{lead} {row['connections']:>11} {row['processes']:>12} {row['requests']:>9,} "
                  f"{row['rate']:>8,.0f} "
                  f"{row['p50_ms']:>7.3f} {row['p99_ms']:>7.3f} {row['max_ms']:>7.1f}"
                  + (f"  ({row['errors']} errors)" if row["errors"] else ""), flush=True)
        if result["leaked"]:
            print(f"        !! {result['leaked']} transfers still active after the run")
    print()
    for r in results:
        print(f"{r['mode']:>10} {r['peers']:>7,} peers: registered in {r['setup_s']:.2f} s; "
              f"{r['served']:,} transfers served, {r['leaked']} left active")
    by_peers = {r["peers"]: r for r in results if r["mode"] == modes[0]}
    if 10 in by_peers and 10_000 in by_peers:
        small, large = by_peers[10]["rows"][0]["rate"], by_peers[10_000]["rows"][0]["rate"]
        print(f"\none-connection rate, 10,000 peers / 10 peers: {large / small:.2f} "
              f"({large:,.0f} / {small:,.0f} req/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
