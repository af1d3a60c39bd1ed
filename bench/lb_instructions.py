"""Benchmark: what one load-balancer request costs, counted in instructions, not timed.

    python bench/lb_instructions.py [--pairs N] [--part pair,http,registry]
    python bench/lb_instructions.py --profile [--part pair]

Timing on a shared machine moves with everyone else's load; an instruction count does not.
Each part runs ``--pairs`` and then twice as many pick + end pairs in one process under
valgrind (``--tool=cachegrind --cache-sim=no``); the difference of the two totals, divided by
the requests it adds, is the cost of one request (start-up and warm-up cancel out):

* ``pair``: the whole server side of ``bench/lb.py``'s one-connection case, in process, with
  no system call: ``LBHandler.handle_one_request`` on a fake connection whose buffer holds
  the request and whose ``write`` keeps the reply: ``POST /transfers {"name": ...}`` and then
  ``DELETE /transfers/{id}?outcome=done`` with the pick's secret (10 peers, 4 holders a file);
* ``http``: the HTTP layer alone: the same ``DELETE`` to a route that answers 204 at once;
* ``registry``: ``Registry.pick`` and ``Registry.end`` of one pair, and the pick's answer.

``--profile`` runs a part under cProfile instead and prints where its time goes.
``--run PART N`` is what valgrind runs.
"""

import argparse
import cProfile
import os
import pstats
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.lb import build_registry, file_name  # noqa: E402
from p2p.core.lb_answers import transfer_answer  # noqa: E402
from p2p.net.lb_server import LBHandler, LoadBalancerServer  # noqa: E402

PARTS = ("pair", "http", "registry")
PEERS = 10
NAMES = 25  # distinct files of 10 peers, 10 files each, 4 holders a file
SECRET_RE = re.compile(rb'"transfer_id":"([^"]+)","secret":"([^"]+)"')


class FakeSocket:
    """What a handler asks of its socket, with no system call."""

    def settimeout(self, timeout):
        pass

    def getsockname(self):
        return ("127.0.0.1", 1)

    def makefile(self, mode, size):
        return open(os.devnull, mode, size)


class FakeConnection:
    """A ``Connection`` whose next request is put in its buffer and whose reply is kept."""

    def __init__(self):
        from p2p.http.channel import Connection
        self.sock, self.address, self.source = FakeSocket(), ("127.0.0.1", 2), "127.0.0.1"
        self.buf, self.tls, self.reply = bytearray(), False, b""
        self.take_head = Connection.take_head.__get__(self)

    def write(self, data):
        self.reply = data


class EndAtOnce(LBHandler):
    """The HTTP layer alone: a transfer's end answered 204 without the registry."""

    def route_end_transfer(self, transfer_id):
        self.send_json(204)


def handler_on(server, handler_class):
    conn = FakeConnection()
    handler = handler_class.__new__(handler_class)
    handler.request, handler.client_address, handler.server = conn, conn.address, server
    handler.setup()
    return handler, conn


def ask(handler, conn, request):
    conn.buf += request
    handler.handle_one_request()
    return conn.reply


def pick_request(k):
    body = b'{"name":"%s"}' % file_name(k % NAMES).encode()
    return (b"POST /transfers HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def end_request(transfer_id, secret):
    return (b"DELETE /transfers/%s?outcome=done HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"
            b"Authorization: Bearer %s\r\n\r\n" % (transfer_id, secret))


def run(part, pairs):
    """``pairs`` pick + end pairs of ``part``."""
    registry = build_registry(PEERS)
    if part == "registry":
        for k in range(pairs):
            handout = registry.pick(file_name(k % NAMES), source="127.0.0.1")
            transfer_answer(handout, registry.renew_s)
            registry.end(handout.first.id, handout.first.secret, "done")
        return
    server = LoadBalancerServer(("127.0.0.1", 0), registry)
    try:
        handler, conn = handler_on(server, EndAtOnce if part == "http" else LBHandler)
        for k in range(pairs):
            if part == "http":
                ask(handler, conn, end_request(b"%d" % k, b"s%030d" % k))
                ask(handler, conn, end_request(b"%d" % k, b"t%030d" % k))
                continue
            reply = ask(handler, conn, pick_request(k))
            transfer_id, secret = SECRET_RE.search(reply).groups()
            assert b" 204 " in ask(handler, conn, end_request(transfer_id, secret))
    finally:
        server.server_close()


def instructions(part, pairs):
    """Instructions valgrind counts for a whole run of ``pairs`` pairs."""
    done = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, os.path.abspath(__file__), "--run", part, str(pairs)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"})  # the same dictionaries every run
    return int(re.search(r"I\s+refs:\s+([0-9,]+)", done.stderr).group(1).replace(",", ""))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--part", default=",".join(PARTS))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--run", nargs=2, metavar=("PART", "PAIRS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        run(args.run[0], int(args.run[1]))
        return
    for part in args.part.split(","):
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(run, part, args.pairs)
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
            continue
        added = instructions(part, 2 * args.pairs) - instructions(part, args.pairs)
        per = "pair (pick, answer and end)" if part == "registry" else "request"
        requests = args.pairs if part == "registry" else 2 * args.pairs
        print(f"{part}: {added / requests:,.0f} instructions per {per}")


if __name__ == "__main__":
    main()
