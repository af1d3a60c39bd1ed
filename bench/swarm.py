"""Benchmark: a flash crowd, many sources at once, and the load balancer's share of a download.

    python bench/swarm.py [--size-mib 64] [--crowd 16] [--holders 4] [--limit 4M]
                          [--lbcost-mib 1024] [--rounds 3] [--only crowd,pair,sources,lbcost]
                          [--quick]

Runs the real programs as processes of their own, all on 127.0.0.1: a fresh
``load_balancer.py --port 0`` per phase, ``peer.py serve`` holders and ``peer.py get``
downloaders (``--lb 127.0.0.1:PORT``), each with folders of its own under one temporary
folder that is removed at the end, in the tests' clean environment (discovery on
127.0.0.1 only, a network name of its own; the programs' bytecode cached in that folder,
as an installed program's is). Ports are read back from the ``listening on HOST:PORT``
first line.

1. crowd: one seed (``serve --upload-limit LIMIT``) shares a random SIZE MiB file. One
   ``get`` alone from it, then CROWD ``get``s started at once, each into its own
   ``--downloads`` folder and with ``--upload-limit LIMIT`` (a downloader serves what it
   has while it runs; a ``get`` that does not accept the option runs without it, and the
   output says so). A download counts when ``get`` exits 0 and the file's SHA-256 matches
   the seed's. Reports how many completed, the median and slowest time (each from its own
   start, interpreter included), slowest / alone (goal: all of them, within 2x), and the
   load balancer's peak request rate: the ``requests`` field of its ``GET /status``
   sampled every 0.5 s, the sampling's own requests taken off ("n/a" when the load
   balancer does not report it), against the limit measured in the same run: the
   requests/s that load balancer then answers on one keep-alive connection.
   pair: one ``get`` alone, then two started together, ROUNDS times against one seed:
   they swap pieces from the start, so the slower of the two ends within 1.15x one
   download alone (the seed sends each piece once, each downloader passes on what it
   got). Reports the median of the rounds' ratios (each round's pair against the
   download alone just before it, so a change in the machine's load between rounds
   does not count).
2. sources: HOLDERS ``serve --upload-limit LIMIT``, each sharing the same file from its own
   folder. One ``get`` while only the first is online, one with all of them: MiB/s of
   each and their ratio (goal: at least 3.5x).
3. lbcost: one ``get`` of a random LBCOST MiB file from HOLDERS holders without a limit:
   the load balancer's requests during it (the delta of ``requests``, the sampling's own
   taken off) and per GiB.

Every wait has a deadline: 10x the time the upload limit implies (a crowd: 10x the goal of
2x one download alone) plus 60 s; a download still running then is killed and counts as
failed. Each ``get`` writes its stdout and stderr to log files; a failed download is listed
under the table with the last line of its stderr. The machine's load average is printed
before and after, since other work on the machine shows in the figures.
"""

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from p2p.net.sharing import parse_rate, sha256_file  # noqa: E402
from tests.support import LB, PEER, clean_env, http_json, wait_for, write_random  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
PHASES = ("crowd", "pair", "sources", "lbcost")
FULL = {"size_mib": 64, "crowd": 16, "lbcost_mib": 1024}
QUICK = {"size_mib": 8, "crowd": 4, "lbcost_mib": 64}
CROWD_GOAL_SLOWDOWN = 2.0    # the slowest of the crowd within 2x one download alone
PAIR_GOAL_SLOWDOWN = 1.15    # the slower of two started together within 1.15x alone
SOURCES_GOAL_RATIO = 3.5     # HOLDERS holders at least 3.5x one holder
DEADLINE_FACTOR = 10         # a phase's deadline: 10x its expected time ...
DEADLINE_GRACE_S = 60.0      # ... plus 60 s
UNLIMITED_MIB_S = 50.0       # the slowest rate expected of a download with no upload limit
HASH_MIB_S = 50.0            # the slowest hashing rate expected of a holder at start
START_TIMEOUT_S = 15.0       # for a program's first line
STATUS_EVERY_S = 0.5         # the load balancer's request count is sampled this often
STATUS_TIMEOUT_S = 2.0
POLL_S = 0.05                # how often running downloads are checked
KILL_WAIT_S = 10.0
CAPACITY_S = 2.0             # the load balancer's capacity is measured over this long
GET_OPTIONS = ("--upload-limit", "--host")  # passed to ``get`` only when it accepts them
FILE_NAME = "swarm.bin"
BIG_NAME = "big.bin"


@dataclass
class Download:
    """One ``peer.py get`` run: its process, folders, logs and outcome."""
    label: str
    folder: str
    proc: subprocess.Popen
    err_path: str
    started: float
    seconds: float | None = None   # set when it exits
    killed: bool = False

    def last_error(self):
        with open(self.err_path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else "(nothing on stderr)"


class Bench:
    """The temporary folder, the child processes (always killed) and the program calls."""

    def __init__(self, tmp, limit, get_options):
        self.tmp = tmp
        self.limit = limit
        self.get_options = get_options
        self.env = clean_env(tmp)
        self.env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.procs = []
        self.logs = 0
        self.failures = []  # one line per failed download

    def folder(self, *parts):
        path = os.path.join(self.tmp, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def spawn(self, args, label):
        """A child with stdout and stderr in log files: (process, stdout path, stderr path)."""
        self.logs += 1
        out_path = os.path.join(self.folder("logs"), f"{self.logs:03d}-{label}.out")
        err_path = out_path[:-4] + ".err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, cwd=self.tmp, env=self.env)
        self.procs.append(proc)
        return proc, out_path, err_path

    def listening_port(self, proc, out_path, err_path, what):
        """The port of a child's ``listening on HOST:PORT`` first line."""
        def first_line():
            if proc.poll() is not None:
                with open(err_path, errors="replace") as f:
                    raise SystemExit(f"{what} exited with {proc.returncode}: {f.read().strip()}")
            with open(out_path) as f:
                line = f.readline()
            return line if line.endswith("\n") else None
        line = wait_for(first_line, timeout=START_TIMEOUT_S, what=f"{what} to start")
        if not line.startswith("listening on "):
            raise SystemExit(f"{what} said {line.strip()!r}, not 'listening on HOST:PORT'")
        return int(line.rsplit(":", 1)[1])

    def start_lb(self):
        proc, out, err = self.spawn([LB, "--host", "127.0.0.1", "--port", "0"], "lb")
        return proc, self.listening_port(proc, out, err, "the load balancer")

    def start_holder(self, lb_port, label, source, limited):
        """``peer.py serve`` sharing a hard link to ``source`` from a folder of its own."""
        shared = self.folder(label, "shared")
        os.link(source, os.path.join(shared, os.path.basename(source)))
        limit = ["--upload-limit", self.limit] if limited else []
        proc, out, err = self.spawn(
            [PEER, "serve", "--lb", f"127.0.0.1:{lb_port}", "--host", "127.0.0.1", "--port", "0",
             "--name", label, "--shared", shared, "--downloads", self.folder(label, "downloads"),
             "--no-lb-start", *limit], label)
        self.listening_port(proc, out, err, f"holder {label}")
        return proc

    def wait_holders(self, lb_port, name, holders, size):
        """Until the load balancer lists ``holders`` holders of ``name``."""
        def listed():
            code, body = http_json(lb_port, "GET", "/files")
            return code == 200 and any(f["name"] == name and f["holders"] >= holders
                                       for f in body["files"])
        wait_for(listed, timeout=DEADLINE_GRACE_S + holders * size / MiB / HASH_MIB_S,
                 interval=STATUS_EVERY_S, what=f"{holders} holder(s) to announce {name}")

    def start_get(self, lb_port, name, label, limited):
        folder = self.folder(label, "downloads")
        options = [*(["--upload-limit", self.limit] if limited and "--upload-limit"
                     in self.get_options else []),
                   *(["--host", "127.0.0.1"] if "--host" in self.get_options else [])]
        proc, _, err = self.spawn([PEER, "get", name, "--lb", f"127.0.0.1:{lb_port}",
                                   "--downloads", folder, *options], label)
        return Download(label, folder, proc, err, time.monotonic())

    def kill(self, procs):
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(KILL_WAIT_S)

    def kill_all(self):
        self.kill(self.procs)
        self.procs = []


class RequestCounter:
    """Samples ``requests`` of the load balancer's GET /status; its own requests taken off."""

    def __init__(self, lb_port):
        self.lb_port = lb_port
        self.sent = 0
        self.samples = []   # (monotonic time, requests, status requests sent so far)
        self.next_at = 0.0

    def sample(self):
        self.sent += 1
        self.next_at = time.monotonic() + STATUS_EVERY_S
        try:
            code, body = http_json(self.lb_port, "GET", "/status", timeout=STATUS_TIMEOUT_S)
        except OSError:
            return None
        if code != 200 or "requests" not in body:
            return None
        self.samples.append((time.monotonic(), body["requests"], self.sent))
        return body["requests"]

    def sample_when_due(self):
        if time.monotonic() >= self.next_at:
            self.sample()

    def delta(self, first, last):
        """Requests between two samples, not counting the sampling's."""
        return (last[1] - first[1]) - (last[2] - first[2])

    def peak_rate(self):
        """The highest requests/s between consecutive samples, or None without samples."""
        pairs = zip(self.samples, self.samples[1:])
        rates = [self.delta(a, b) / (b[0] - a[0]) for a, b in pairs]
        return max(rates) if rates else None


def lb_capacity(lb_port, seconds=CAPACITY_S):
    """Requests/s the load balancer answers on one keep-alive connection: the limit the
    crowd's peak rate is measured against, in the same run (``GET /files?q=NAME``, what
    a peer asks most besides picks)."""
    conn = http.client.HTTPConnection("127.0.0.1", lb_port, timeout=STATUS_TIMEOUT_S)
    answered = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            conn.request("GET", f"/files?q={FILE_NAME}")
            conn.getresponse().read()
            answered += 1
    finally:
        conn.close()
    return answered / (time.monotonic() - started)


def run_downloads(downloads, deadline_s, counter=None):
    """Wait for ``downloads`` to end, at most ``deadline_s``; kill those still running."""
    deadline = time.monotonic() + deadline_s
    running = list(downloads)
    while running and time.monotonic() < deadline:
        for d in list(running):
            if d.proc.poll() is not None:
                d.seconds = time.monotonic() - d.started
                running.remove(d)
        if counter:
            counter.sample_when_due()
        time.sleep(POLL_S)
    for d in running:
        d.proc.kill()
        d.proc.wait(KILL_WAIT_S)
        d.seconds = time.monotonic() - d.started
        d.killed = True


def verified(download, name, sha256):
    path = os.path.join(download.folder, name)
    return (download.proc.returncode == 0 and not download.killed and os.path.exists(path)
            and sha256_file(path) == sha256)


def failure(download):
    how = "killed at the deadline" if download.killed else f"exit {download.proc.returncode}"
    return f"{download.label}: {how} after {download.seconds:.1f} s: {download.last_error()}"


def one_download(bench, lb_port, name, sha256, label, deadline_s, limited):
    """Seconds of one verified ``get``, or None (its failure noted in ``bench.failures``)."""
    download = bench.start_get(lb_port, name, label, limited)
    run_downloads([download], deadline_s)
    if verified(download, name, sha256):
        return download.seconds
    bench.failures.append(failure(download))
    return None


def crowd_phase(bench, source, sha256, crowd):
    """(seconds alone or None, [seconds of each verified crowd download], peak req/s or None,
    the load balancer's capacity in req/s)."""
    size = os.path.getsize(source)
    expected = size / parse_rate(bench.limit)
    lb, lb_port = bench.start_lb()
    seed = bench.start_holder(lb_port, "seed", source, limited=True)
    bench.wait_holders(lb_port, FILE_NAME, 1, size)
    alone = one_download(bench, lb_port, FILE_NAME, sha256, "alone",
                         DEADLINE_FACTOR * expected + DEADLINE_GRACE_S, limited=True)
    counter = RequestCounter(lb_port)
    counter.sample()
    downloads = [bench.start_get(lb_port, FILE_NAME, f"crowd-{i:02d}", limited=True)
                 for i in range(crowd)]
    run_downloads(downloads, DEADLINE_FACTOR * CROWD_GOAL_SLOWDOWN * expected
                  + DEADLINE_GRACE_S, counter)
    counter.sample()
    capacity = lb_capacity(lb_port)
    bench.kill([seed, lb])
    times = []
    for d in downloads:
        if verified(d, FILE_NAME, sha256):
            times.append(d.seconds)
        else:
            bench.failures.append(failure(d))
    return alone, times, counter.peak_rate(), capacity


def pair_phase(bench, source, sha256, rounds):
    """[(seconds alone, seconds of the slower of two started together)] per round, None
    for a failure."""
    size = os.path.getsize(source)
    deadline_s = DEADLINE_FACTOR * size / parse_rate(bench.limit) + DEADLINE_GRACE_S
    lb, lb_port = bench.start_lb()
    seed = bench.start_holder(lb_port, "pair-seed", source, limited=True)
    bench.wait_holders(lb_port, FILE_NAME, 1, size)
    figures = []
    for round_ in range(rounds):
        alone = one_download(bench, lb_port, FILE_NAME, sha256, f"pair-alone-{round_}",
                             deadline_s, limited=True)
        two = [bench.start_get(lb_port, FILE_NAME, f"pair-{round_}-{i}", limited=True)
               for i in range(2)]
        run_downloads(two, deadline_s)
        for d in two:
            if not verified(d, FILE_NAME, sha256):
                bench.failures.append(failure(d))
        slower = max(d.seconds for d in two) if all(
            verified(d, FILE_NAME, sha256) for d in two) else None
        figures.append((alone, slower))
    bench.kill([seed, lb])
    return figures


def sources_phase(bench, source, sha256, holders):
    """(seconds from one holder, seconds from ``holders`` holders), None for a failure."""
    size = os.path.getsize(source)
    deadline_s = DEADLINE_FACTOR * size / parse_rate(bench.limit) + DEADLINE_GRACE_S
    lb, lb_port = bench.start_lb()
    procs = [lb, bench.start_holder(lb_port, "holder-0", source, limited=True)]
    bench.wait_holders(lb_port, FILE_NAME, 1, size)
    one = one_download(bench, lb_port, FILE_NAME, sha256, "from-1", deadline_s, limited=True)
    procs += [bench.start_holder(lb_port, f"holder-{i}", source, limited=True)
              for i in range(1, holders)]
    bench.wait_holders(lb_port, FILE_NAME, holders, size)
    many = one_download(bench, lb_port, FILE_NAME, sha256, f"from-{holders}", deadline_s,
                        limited=True)
    bench.kill(procs)
    return one, many


def lbcost_phase(bench, source, sha256, holders):
    """(seconds, load balancer requests or None) of one download from unlimited holders."""
    size = os.path.getsize(source)
    lb, lb_port = bench.start_lb()
    procs = [lb, *(bench.start_holder(lb_port, f"big-{i}", source, limited=False)
                   for i in range(holders))]
    bench.wait_holders(lb_port, BIG_NAME, holders, size)
    counter = RequestCounter(lb_port)
    counter.sample()
    seconds = one_download(bench, lb_port, BIG_NAME, sha256, "lbcost",
                           DEADLINE_FACTOR * size / MiB / UNLIMITED_MIB_S + DEADLINE_GRACE_S,
                           limited=False)
    counter.sample()
    bench.kill(procs)
    requests = (counter.delta(counter.samples[0], counter.samples[-1])
                if len(counter.samples) == 2 else None)
    return seconds, requests


def accepted_get_options(env):
    """Which of GET_OPTIONS this build's ``peer.py get`` accepts."""
    usage = subprocess.run([sys.executable, PEER, "get", "--help"], capture_output=True,
                           text=True, env=env, timeout=START_TIMEOUT_S, check=True).stdout
    return [option for option in GET_OPTIONS if option in usage]


def random_file(path, size_mib):
    write_random(path, size_mib * MiB)
    return sha256_file(path)


def seconds_text(value):
    return "failed" if value is None else f"{value:.1f} s"


def mib_s_text(size, seconds):
    return "failed" if seconds is None else f"{size / MiB / seconds:.1f} MiB/s"


def load_text():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int,
                        help=f"the crowd's and sources' file (default {FULL['size_mib']})")
    parser.add_argument("--crowd", type=int, help=f"downloaders at once (default {FULL['crowd']})")
    parser.add_argument("--holders", type=int, default=4, help="holders in sources and lbcost "
                        "(default 4)")
    parser.add_argument("--limit", default="4M", help="the upload limit of every peer in crowd "
                        "and sources, as peer.py takes it (default 4M)")
    parser.add_argument("--lbcost-mib", type=int,
                        help=f"the file of lbcost (default {FULL['lbcost_mib']})")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of pair (default 3)")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases, of {', '.join(PHASES)} (default all)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: " + ", ".join(f"{k.replace('_', '-')} {v}"
                                                         for k, v in QUICK.items()))
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    phases = args.only.split(",")
    if any(phase not in PHASES for phase in phases):
        parser.error(f"--only takes {', '.join(PHASES)}")
    if min(args.size_mib, args.crowd, args.holders, args.lbcost_mib, args.rounds) < 1:
        parser.error("sizes, --crowd and --holders must be positive")
    try:
        if not parse_rate(args.limit):
            parser.error("--limit must be a limit, not 0")
    except ValueError as e:
        parser.error(str(e))

    tmp = tempfile.mkdtemp(prefix="p2p-swarm-")
    load_before = load_text()
    bench = Bench(tmp, args.limit, accepted_get_options(clean_env(tmp)))
    rows = []
    try:
        if {"crowd", "pair", "sources"} & set(phases):
            source = os.path.join(bench.folder("files"), FILE_NAME)
            sha256 = random_file(source, args.size_mib)
        if "crowd" in phases:
            alone, times, rate, capacity = crowd_phase(bench, source, sha256, args.crowd)
            rows += [
                (f"flash crowd: 1 seed, {args.crowd} downloaders, {args.size_mib} MiB, "
                 f"limit {args.limit}", None, None),
                ("  one download alone", seconds_text(alone), ""),
                ("  completed verified", f"{len(times)} of {args.crowd}",
                 f"all {args.crowd}"),
                ("  median of the completed", seconds_text(statistics.median(times))
                 if times else "-", ""),
                ("  slowest of the completed", seconds_text(max(times)) if times else "-", ""),
                ("  slowest / alone", f"{max(times) / alone:.1f}x" if times and alone else "-",
                 f"<= {CROWD_GOAL_SLOWDOWN:g}x"),
                ("  load balancer peak rate", "n/a" if rate is None else f"{rate:.0f} req/s",
                 ""),
                ("  load balancer capacity, 1 connection", f"{capacity:.0f} req/s", ""),
                ("  peak / capacity", "-" if rate is None else f"{rate / capacity:.1%}", ""),
            ]
        if "pair" in phases:
            figures = pair_phase(bench, source, sha256, args.rounds)
            ratios = [slower / alone for alone, slower in figures if alone and slower]
            rows += [
                (f"pair: 1 seed, 2 downloaders started together, {args.size_mib} MiB, "
                 f"limit {args.limit}, {args.rounds} rounds", None, None),
                *((f"  round {k + 1}: alone, the slower of two",
                   f"{seconds_text(alone)}, {seconds_text(slower)}", "")
                  for k, (alone, slower) in enumerate(figures)),
                ("  rounds completed verified", f"{len(ratios)} of {args.rounds}",
                 f"all {args.rounds}"),
                ("  slower / alone, median", f"{statistics.median(ratios):.2f}x"
                 if ratios else "-", f"<= {PAIR_GOAL_SLOWDOWN:g}x"),
            ]
        if "sources" in phases:
            one, many = sources_phase(bench, source, sha256, args.holders)
            size = args.size_mib * MiB
            rows += [
                (f"many sources: 1 downloader, {args.size_mib} MiB, limit {args.limit}", None,
                 None),
                ("  from 1 holder", mib_s_text(size, one), ""),
                (f"  from {args.holders} holders", mib_s_text(size, many), ""),
                ("  ratio", f"{one / many:.2f}x" if one and many else "-",
                 f">= {SOURCES_GOAL_RATIO:g}x"),
            ]
        if "lbcost" in phases:
            big = os.path.join(bench.folder("files"), BIG_NAME)
            big_sha256 = random_file(big, args.lbcost_mib)
            seconds, requests = lbcost_phase(bench, big, big_sha256, args.holders)
            rows += [
                (f"load balancer cost: {args.lbcost_mib} MiB from {args.holders} unlimited "
                 "holders", None, None),
                ("  download", mib_s_text(args.lbcost_mib * MiB, seconds), ""),
                ("  load balancer requests", "n/a" if requests is None else str(requests), ""),
                ("  per GiB", "n/a" if requests is None
                 else f"{requests * GiB / (args.lbcost_mib * MiB):.0f}", ""),
            ]
    finally:
        bench.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)

    lacking = [option for option in GET_OPTIONS if option not in bench.get_options]
    print(f"swarm benchmark over loopback: {os.cpu_count()} cores, Python "
          f"{sys.version.split()[0]}, load average {load_before} before, {load_text()} after")
    if lacking:
        print("this peer.py get does not accept these options, so the downloaders ran "
              f"without them: {', '.join(lacking)}")
    print()
    width = max(len(label) for label, value, _ in rows if value is not None) + 2
    print(f"{'':{width}}{'measured':>16}  goal")
    for label, value, goal in rows:
        print(label if value is None else f"{label:{width}}{value:>16}  {goal}".rstrip())
    if bench.failures:
        print("\nfailed downloads (the last line of each one's stderr):")
        for line in bench.failures:
            print(f"  {line}")


if __name__ == "__main__":
    main()
