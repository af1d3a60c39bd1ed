"""Benchmark on test hosts (``tests/hosts.py``; needs root and ``ip``, ``tc`` for links).

    python bench/hosts.py [--part downloads|lb|both] [--hosts 8] [--mbit 100]
                          [--size-mib 128] [--timeline] [--logs DIR]
                          [--peers 10000] [--seconds 20]
    python bench/hosts.py --only failover [--rounds 3]

downloads: ``--hosts`` hosts, each with a ``--mbit`` link (tc tbf, both directions). Host 1
  runs the load balancer, host 2 a seed sharing one ``--size-mib`` file; every other host
  runs ``peer.py get`` of it, all started together, without ``--lb`` (they find the load
  balancer on the link). Reports each host's time, from its start to its exit, against the
  optimum: Kumar & Ross's minimum distribution time for N downloaders of upload u_i and a
  seed of upload u_s, T* = max(F/u_s, N*F/(u_s + sum u_i)), which is F/u on equal links
  (every host can finish at its link's speed, if the crowd's upload carries the copies).
  Also the same from each host's first bytes received (its program's start-up, on this
  one machine's shared cores, left out), and the seed's upload efficiency: the bytes it
  sent (its link's count, headers included) over F; 1.0 is perfect, every byte sent once.
  Beside the nominal T*/time, T*pay/time: the same against the links' TCP payload rate,
  PAYLOAD_SHARE = 1448/1514 of the nominal (tc counts each 1514-byte frame at MTU 1500,
  Ethernet header included; 1448 of it is payload after 20 bytes of IP, 20 of TCP and 12
  of TCP timestamps), the most any download can reach on these links. Per host: its
  start-up (its start to its first FIRST_BYTES received) and its last bytes received to
  its exit (to within SAMPLE_EVERY_S). The seed runs with ``--verbose`` (its log in the
  ``--logs`` folder, or the temporary one), which says each range it sent: from it, the
  seed's *first full copy* (when every piece had left it whole at least once: the
  optimum has it at F/u_seed) and how many pieces it had sent twice before then (each
  delays everyone). ``--timeline`` adds, second by
  second, the seed's upload, the downloaders' upload (and its share of their links), their
  download and how many have ended, and when each host received its first bytes: where the
  time goes. ``--logs DIR`` keeps each ``get``'s ``--verbose`` log there. The load average
  is printed with the figures: the programs share this machine's cores.
lb: the load balancer on host 1 (default heartbeat interval), ``--peers`` simulated peers
  registered from host 2 (one file each, every file held by 4 of them), heartbeating from
  host 2 at the default interval, evenly spread; meanwhile host 3 asks for 50 picks a second
  (pick, then end). Reports the load balancer's CPU share (of one core, from /proc) and the
  pick latencies, against the same picks with no heartbeats. Three times headroom is the
  goal: at most a third of a core.

failover: four hosts, no ``--lb``. Host 1's ``peer.py serve`` starts the load balancer,
  hosts 2 and 3 share f.bin. Every process of host 1 is killed and its cable cut; host 4
  runs ``peer.py list`` back to back. Reports the time from the kill to the end of the
  first list that shows f.bin (the goal: within 5 s).

Every loop is bounded by time; all traffic stays on the test hosts.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.transfer import cpu_seconds  # noqa: E402
from p2p.core.pieces import piece_size  # noqa: E402
from p2p.net.lb_client import LBClient, LBClientError  # noqa: E402
from tests import hosts as testhosts  # noqa: E402
from tests.support import read_line, wait_for, write_random  # noqa: E402

MiB = 1 << 20
LB_PORT = 6969
HOLDERS_PER_FILE = 4
HEARTBEAT_THREADS = 4
PICKS_PER_S = 50
QUIET_PICKS_S = 10.0
DOWNLOAD_TIMEOUT_S = 600.0
WORKER_GRACE_S = 60.0
FAILOVER_TIMEOUT_S = 60.0  # give up on one failover round after this long
FAILOVER_LIST_TIMEOUT_S = 20.0  # one 'peer.py list' (or a peer's first line) at most this
SAMPLE_EVERY_S = 0.1  # link counters are sampled this often (when each host's bytes began)...
TIMELINE_EVERY_S = 1.0  # ...and --timeline shows them this often
FIRST_BYTES = 256 << 10  # a host has started receiving the file once this much came in
LAST_BYTES = 64 << 10  # ...and is still receiving it while this much comes in a sample
# TCP payload per byte on the link at MTU 1500: a full frame is 1514 bytes as tc counts it
# (the 14-byte Ethernet header, 20 IP, 20 TCP, 12 of TCP timestamps) carrying 1448
PAYLOAD_SHARE = 1448 / 1514
SENT_LINE = re.compile(r"^(\S+ \S+) p2p\.share INFO super-seeding: (\d+) of bytes (\d+)-\d+ of ")
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


# ---------------------------------------------------------------------------
# Workers, run inside a test host


def register_and_beat(lb_host, peers, seconds):
    """Register ``peers`` simulated peers, then beat each every heartbeat interval."""
    clients = [LBClient(lb_host, LB_PORT) for _ in range(HEARTBEAT_THREADS)]
    members = [None] * peers
    files = peers // HOLDERS_PER_FILE or 1

    def register(t):
        for j in range(t, peers, HEARTBEAT_THREADS):
            sha = f"{j % files:064x}"
            answer = clients[t].register(1 + j, [{"name": f"file-{j % files:06d}.bin",
                                                  "size": 1000, "sha256": sha}])
            members[j] = (answer["peer_id"], answer["token"], answer["heartbeat_s"])

    run_threads(register)
    interval = members[0][2]
    print(json.dumps({"registered": peers, "heartbeat_s": interval}), flush=True)
    start = time.monotonic()
    done, late, failed = [0] * HEARTBEAT_THREADS, [0.0] * HEARTBEAT_THREADS, [0] * HEARTBEAT_THREADS

    def beat(t):
        mine = list(range(t, peers, HEARTBEAT_THREADS))
        k = 0
        while True:
            j = mine[k % len(mine)]
            due = start + (k // len(mine)) * interval + j / peers * interval
            if due - start >= seconds:
                return
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            late[t] = max(late[t], -wait)
            try:
                clients[t].heartbeat(members[j][0], members[j][1], uploads=0)
                done[t] += 1
            except LBClientError:
                failed[t] += 1
            k += 1

    run_threads(beat)
    elapsed = time.monotonic() - start
    print(json.dumps({"heartbeats": sum(done), "failed": sum(failed), "seconds": elapsed,
                      "most_late_s": max(late)}), flush=True)


def picks(lb_host, names, seconds):
    """Pick and end at PICKS_PER_S for ``seconds``: the pick latencies in ms, as JSON."""
    client = LBClient(lb_host, LB_PORT)
    latencies = []
    start = time.monotonic()
    for k in range(int(seconds * PICKS_PER_S)):
        wait = start + k / PICKS_PER_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        began = time.perf_counter()
        pick = client.pick(f"file-{k % names:06d}.bin")
        latencies.append((time.perf_counter() - began) * 1000)
        client.end(pick.leases[0])
    print(json.dumps(latencies), flush=True)


def run_threads(target):
    threads = [threading.Thread(target=target, args=(t,)) for t in range(HEARTBEAT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# ---------------------------------------------------------------------------
# The two parts


def seed_sends(path, wall_started):
    """The seed's uploads from its --verbose log: (seconds since ``wall_started``, first
    byte, bytes sent), in order."""
    sends = []
    with open(path, errors="replace") as f:
        for line in f:
            m = SENT_LINE.match(line)
            if m:
                at = datetime.datetime.strptime(m.group(1), LOG_TIME).timestamp()
                sends.append((at - wall_started, int(m.group(3)), int(m.group(2))))
    return sends


def first_copy(sends, size, piece):
    """(when the seed had sent every piece whole at least once, or None; how many pieces
    it had sent whole again before then) from its ``sends`` (``seed_sends``)."""
    count = -(-size // piece)
    seen, again = set(), 0
    for at, start, sent in sends:
        first = -(-start // piece)
        for index in range(first, count):
            if min((index + 1) * piece, size) > start + sent:
                break
            if index in seen:
                again += 1
            seen.add(index)
        if len(seen) == count:
            return at, again
    return None, again


def optimum_s(size, seed_rate, rates):
    """Kumar & Ross's minimum distribution time (s) of ``size`` bytes from a seed uploading
    ``seed_rate`` bytes/s to peers uploading ``rates`` (downloads unconstrained)."""
    return max(size / seed_rate, len(rates) * size / (seed_rate + sum(rates)))


class Timeline:
    """Every host's link counters (bytes sent and received, headers included), sampled every
    TIMELINE_EVERY_S while the downloads run: where the time goes (start-up, the seed, the
    downloaders' uplinks, the tail)."""

    def __init__(self, hosts, seed, downloaders):
        self.hosts, self.seed, self.downloaders = hosts, seed, list(downloaders)
        self.started = time.monotonic()
        self.samples = []  # (seconds since start, {host: (sent, received)})
        self.first_byte = {}  # host -> seconds since start when it had received FIRST_BYTES
        self.last_byte = {}  # host -> the last sample (s) in which LAST_BYTES or more came in
        self.sample()

    def counters(self, i):
        return self.hosts.sent_bytes(i), self.hosts.received_bytes(i)

    def sample(self):
        now = time.monotonic() - self.started
        counts = {i: self.counters(i) for i in (self.seed, *self.downloaders)}
        base = self.samples[0][1] if self.samples else counts
        for i in self.downloaders:
            if i not in self.first_byte and counts[i][1] - base[i][1] >= FIRST_BYTES:
                self.first_byte[i] = now
            if self.samples and counts[i][1] - self.samples[-1][1][i][1] >= LAST_BYTES:
                self.last_byte[i] = now
        self.samples.append((now, counts))

    def sample_when_due(self):
        if time.monotonic() - self.started >= self.samples[-1][0] + SAMPLE_EVERY_S:
            self.sample()

    def report(self, link, ended):
        """Per interval: the seed's upload, the downloaders' upload (sum, and as a share of
        their links), their download, how many had ended."""
        print(f"\ntimeline (every {TIMELINE_EVERY_S:g} s; MB/s = 10^6 bytes/s, link "
              f"{link / 1e6:.1f} MB/s):")
        print("   at  seed up  peers up  (of links)  peers down  ended")
        n = len(self.downloaders)
        shown = [self.samples[0]]
        for sample in self.samples[1:]:
            if sample[0] - shown[-1][0] >= TIMELINE_EVERY_S or sample is self.samples[-1]:
                shown.append(sample)
        for (t0, c0), (t1, c1) in zip(shown, shown[1:]):
            span = t1 - t0

            def rate(hosts, k):
                return sum(c1[i][k] - c0[i][k] for i in hosts) / span
            up = rate(self.downloaders, 0)
            print(f"{t1:5.1f}  {rate([self.seed], 0) / 1e6:7.2f}  {up / 1e6:8.2f}  "
                  f"{up / (n * link):9.0%}  {rate(self.downloaders, 1) / 1e6:10.2f}  "
                  f"{sum(1 for e in ended.values() if e - self.started <= t1):5d}")
        if self.first_byte:
            firsts = sorted(self.first_byte.values())
            print(f"first {FIRST_BYTES >> 10} KiB received: earliest host {firsts[0]:.2f} s, "
                  f"latest {firsts[-1]:.2f} s after the start")


def bench_downloads(args, tmp):
    # the programs' bytecode is cached (in the temporary folder), as for an installed
    # program: the load balancer and the seed compile it before the downloaders start
    env = dict(os.environ, TMPDIR=tmp, PYTHONUNBUFFERED="1", P2P_NETWORK="bench",
               PYTHONPYCACHEPREFIX=os.path.join(tmp, "pycache"))
    env.pop("P2P_LB", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with testhosts.Hosts(args.hosts, rate_mbit=args.mbit) as hosts:
        lb = hosts.run(1, [os.path.join(ROOT, "load_balancer.py")], env=env, cwd=tmp)
        read_line(lb.stdout)
        seed_shared = os.path.join(tmp, "seed")
        os.makedirs(seed_shared)
        size = args.size_mib * MiB
        write_random(os.path.join(seed_shared, "big.bin"), size)
        seed_log = os.path.join(args.logs or tmp, "seed.log")
        os.makedirs(os.path.dirname(seed_log), exist_ok=True)
        with open(seed_log, "w") as seed_err:
            seed = hosts.run(2, [os.path.join(ROOT, "peer.py"), "serve", "--verbose",
                                 "--shared", seed_shared,
                                 "--downloads", os.path.join(tmp, "seed-downloads")],
                             env=env, cwd=tmp, stderr=seed_err)
        read_line(seed.stdout)
        url = f"http://{hosts.address(1)}:{LB_PORT}/status"
        wait_for(lambda: any(p.get("files") for p in
                             (hosts.fetch_json(1, url) or {"peers": []})["peers"]),
                 timeout=120, what="the seed to announce its file")
        downloaders = range(3, args.hosts + 1)
        timeline = Timeline(hosts, 2, downloaders)
        started, wall_started = timeline.started, time.time()
        gets = {i: hosts.run(i, [os.path.join(ROOT, "peer.py"), "get", "big.bin",
                                 "--downloads", os.path.join(tmp, f"h{i}"),
                                 *(["--verbose"] if args.logs else [])], env=env, cwd=tmp,
                             stderr=log_file(args.logs, i))
                for i in downloaders}
        ended = {}
        deadline = started + DOWNLOAD_TIMEOUT_S
        while len(ended) < len(gets) and time.monotonic() < deadline:
            for i, proc in gets.items():
                if i not in ended and proc.poll() is not None:
                    ended[i] = time.monotonic()
            timeline.sample_when_due()
            time.sleep(0.02)
        timeline.sample()
        first, last = timeline.samples[0][1][2][0], timeline.samples[-1][1][2][0]
        seed_sent = last - first
        link = args.mbit * 1e6 / 8
        best = optimum_s(size, link, [link] * len(gets))
        print(f"\n{args.hosts} hosts, {args.mbit} Mbit/s links (tc tbf): the load balancer on "
              f"h1, a seed on h2, {len(gets)} downloaders of one {args.size_mib} MiB file "
              f"started together; the optimum T* = {best:.1f} s at the links' nominal rate "
              f"(T*pay = {best / PAYLOAD_SHARE:.1f} s at their TCP payload rate, "
              f"{PAYLOAD_SHARE:.4f} of it: 1448 bytes in each 1514-byte frame at MTU 1500):")
        report_hosts(gets, ended, started, timeline, best)
        copy_at, again = first_copy(seed_sends(seed_log, wall_started), size, piece_size(size))
        print(f"the seed's upload efficiency (bytes it sent on its link / F; 1.0 is perfect): "
              f"{seed_sent / size:.2f}; its first full copy (every piece sent whole once): "
              + (f"{copy_at:.1f} s after the start (F/u = {size / link:.1f} s, at the payload "
                 f"rate {size / link / PAYLOAD_SHARE:.1f} s), {again} pieces sent again before"
                 if copy_at is not None else f"never ({again} pieces sent again)"))
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.timeline:
            timeline.report(link, ended)


def report_hosts(gets, ended, started, timeline, best):
    """Each host's time from start to exit against T* (nominal and at the payload rate),
    its start-up (start to its first bytes), the same from its first bytes, and its last
    bytes to its exit."""
    pay = best / PAYLOAD_SHARE
    print("host  exit  seconds  T*/time  T*pay/time  start-up  from first bytes: s  T*/time"
          "  last bytes->exit")
    fractions, payload, moving, startup, tail = [], [], [], [], []
    for i, proc in gets.items():
        if i not in ended:
            print(f"h{i}    did not finish within {DOWNLOAD_TIMEOUT_S:.0f} s")
            continue
        seconds = ended[i] - started
        fractions.append(best / seconds)
        payload.append(pay / seconds)
        line = (f"h{i:<4} {proc.returncode:>4}  {seconds:7.1f}  {best / seconds:7.2f}  "
                f"{pay / seconds:10.2f}")
        if i in timeline.first_byte:
            first = timeline.first_byte[i]
            startup.append(first)
            moving.append(best / (seconds - first))
            line += f"  {first:8.2f}  {seconds - first:19.1f}  {best / (seconds - first):7.2f}"
        if i in timeline.last_byte:
            tail.append(seconds - timeline.last_byte[i])
            line += f"  {tail[-1]:16.2f}"
        print(line)
    if fractions:
        print(f"T*/time: worst host {min(fractions):.2f}, median {percentile(fractions, 0.5):.2f}"
              f"; T*pay/time: worst {min(payload):.2f}, median {percentile(payload, 0.5):.2f}; "
              f"from first bytes: worst {min(moving, default=0):.2f}, median "
              f"{percentile(moving, 0.5):.2f}")
        print(f"start-up (start to first {FIRST_BYTES >> 10} KiB): median "
              f"{percentile(startup, 0.5):.2f} s, worst {max(startup, default=0):.2f} s; last "
              f"bytes to exit (to within {SAMPLE_EVERY_S:g} s): median {percentile(tail, 0.5):.2f}"
              f" s, worst {max(tail, default=0):.2f} s")


def log_file(folder, i):
    """Where host ``i``'s ``get`` writes its standard error: ``--logs`` or nowhere."""
    if not folder:
        return subprocess.DEVNULL
    os.makedirs(folder, exist_ok=True)
    log = open(os.path.join(folder, f"h{i}.log"), "w")
    log.write(f"started {datetime.datetime.now().isoformat(' ', 'milliseconds')}\n")
    log.flush()
    return log


def bench_lb(args, tmp):
    env = dict(os.environ, TMPDIR=tmp, PYTHONUNBUFFERED="1")
    me = [os.path.join(ROOT, "bench", "hosts.py")]
    names = max(1, args.peers // HOLDERS_PER_FILE)
    with testhosts.Hosts(3) as hosts:
        lb = hosts.run(1, [os.path.join(ROOT, "load_balancer.py"), "--no-announce",
                           "--max-peers-per-host", str(args.peers)], env=env, cwd=tmp)
        read_line(lb.stdout)
        lb_host = hosts.address(1)
        simulator = hosts.run(2, [*me, "--worker", "beat", "--lb-host", lb_host,
                                  "--peers", str(args.peers), "--seconds", str(args.seconds)],
                              env=env, cwd=tmp)
        registered = json.loads(read_line(simulator.stdout, timeout=600))
        cpu_before, wall_before = cpu_seconds(lb.pid), time.monotonic()
        loaded = hosts.run(3, [*me, "--worker", "picks", "--lb-host", lb_host, "--names",
                               str(names), "--seconds", str(args.seconds)], env=env, cwd=tmp)
        beats = json.loads(read_line(simulator.stdout, timeout=args.seconds + WORKER_GRACE_S))
        cpu_share = (cpu_seconds(lb.pid) - cpu_before) / (time.monotonic() - wall_before)
        loaded_ms = json.loads(read_line(loaded.stdout, timeout=WORKER_GRACE_S))
        quiet = hosts.run(3, [*me, "--worker", "picks", "--lb-host", lb_host, "--names",
                              str(names), "--seconds", str(QUIET_PICKS_S)], env=env, cwd=tmp)
        quiet_ms = json.loads(read_line(quiet.stdout, timeout=QUIET_PICKS_S + WORKER_GRACE_S))
        print(f"\nload balancer on host 1; {registered['registered']} simulated peers on host 2 "
              f"beating every {registered['heartbeat_s']:g} s; picks from host 3 at "
              f"{PICKS_PER_S}/s:")
        print(f"heartbeats: {beats['heartbeats']} in {beats['seconds']:.1f} s "
              f"({beats['heartbeats'] / beats['seconds']:.0f}/s), {beats['failed']} failed, "
              f"at most {beats['most_late_s'] * 1000:.0f} ms behind schedule")
        print(f"load balancer CPU: {cpu_share:.1%} of one core "
              f"(headroom {1 / cpu_share if cpu_share else float('inf'):.1f}x)")
        for what, values in (("during heartbeats", loaded_ms), ("no heartbeats after", quiet_ms)):
            print(f"picks {what}: {len(values)}, p50 {percentile(values, 0.5):.2f} ms, "
                  f"p99 {percentile(values, 0.99):.2f} ms, max {max(values):.2f} ms")


def run_peer_on(hosts, i, tmp, env, *args):
    return hosts.run(i, [os.path.join(ROOT, "peer.py"), *args], env=env, cwd=tmp)


def listed_after(hosts, i, tmp, env, name, deadline):
    """Run ``peer.py list`` on host ``i`` back to back until one lists ``name``; when that
    one ended (None at the deadline)."""
    while time.monotonic() < deadline:
        proc = run_peer_on(hosts, i, tmp, env, "list")
        try:
            out, _ = proc.communicate(timeout=FAILOVER_LIST_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # a list that hangs is killed and run again
            proc.kill()
            proc.communicate()
            continue
        if name.encode() in out:
            return time.monotonic()
    return None


def start_failover_network(hosts, tmp, env):
    """Host 1's ``peer.py serve`` starts the load balancer; hosts 2 and 3 share f.bin."""
    for i in (1, 2, 3):
        shared = os.path.join(tmp, f"h{i}-shared")
        os.makedirs(shared)
        if i > 1:
            write_random(os.path.join(shared, "f.bin"), MiB)
        proc = run_peer_on(hosts, i, tmp, env, "serve", "--name", f"h{i}", "--shared", shared,
                           "--downloads", os.path.join(tmp, f"h{i}-downloads"))
        read_line(proc.stdout, timeout=FAILOVER_LIST_TIMEOUT_S)
    url = f"http://{hosts.address(1)}:{LB_PORT}/status"
    wait_for(lambda: sum(bool(p.get("files")) for p in
                         (hosts.fetch_json(4, url) or {"peers": []})["peers"]) == 2,
             timeout=60, what="hosts 2 and 3 to announce f.bin")


def bench_failover(args, tmp):
    env = dict(os.environ, TMPDIR=tmp, PYTHONUNBUFFERED="1", P2P_NETWORK="failover")
    env.pop("P2P_LB", None)
    print(f"\nfailover: host 1's peer started the load balancer, hosts 2 and 3 share f.bin; "
          f"host 1 is killed (every process) and cut; host 4 runs 'peer.py list' until it "
          f"lists f.bin. {args.rounds} rounds:")
    figures = []
    for round_ in range(args.rounds):
        with testhosts.Hosts(4) as hosts:
            os.makedirs(os.path.join(tmp, str(round_)))
            here = os.path.join(tmp, str(round_))
            start_failover_network(hosts, here, env)
            killed = time.monotonic()
            hosts.kill_all(1)
            hosts.cut(1)
            listed = listed_after(hosts, 4, here, env, "f.bin", killed + FAILOVER_TIMEOUT_S)
        figures.append(None if listed is None else listed - killed)
        print(f"round {round_ + 1}: " + ("not listed within "
                                         f"{FAILOVER_TIMEOUT_S:.0f} s" if listed is None
                                         else f"listed again {listed - killed:.1f} s after "
                                              "the kill"))
    done = sorted(f for f in figures if f is not None)
    if done:
        print(f"kill to listed: median {percentile(done, 0.5):.1f} s, worst {done[-1]:.1f} s "
              f"({len(done)} of {len(figures)} rounds)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("downloads", "lb", "both"), default="both")
    parser.add_argument("--only", choices=("failover",),
                        help="only this scenario (failover: the load balancer's host dies)")
    parser.add_argument("--rounds", type=int, default=3, help="failover rounds")
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--mbit", type=int, default=100)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--peers", type=int, default=10_000)
    parser.add_argument("--timeline", action="store_true",
                        help="downloads: print every host's link rates second by second")
    parser.add_argument("--logs", help="downloads: keep each get's --verbose log in this folder")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--worker", choices=("beat", "picks"), help=argparse.SUPPRESS)
    parser.add_argument("--lb-host", help=argparse.SUPPRESS)
    parser.add_argument("--names", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "beat":
        return register_and_beat(args.lb_host, args.peers, args.seconds)
    if args.worker == "picks":
        return picks(args.lb_host, args.names, args.seconds)
    if args.only == "failover":
        return run_in_tmp(bench_failover, args)
    reason = testhosts.unavailable() or (args.part != "lb" and testhosts.rate_limit_unavailable())
    if reason:
        print(f"bench/hosts.py: {reason}", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="p2p-bench-hosts-")
    try:
        if args.part in ("downloads", "both"):
            bench_downloads(args, tmp)
        if args.part in ("lb", "both"):
            bench_lb(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def run_in_tmp(bench, args):
    reason = testhosts.unavailable()
    if reason:
        print(f"bench/hosts.py: {reason}", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="p2p-bench-hosts-")
    try:
        bench(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
