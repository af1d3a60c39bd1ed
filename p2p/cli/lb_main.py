"""``python load_balancer.py``: the load balancer's command line.

Parses the options (listen address, policy, heartbeat, idle exit, network name
and membership), starts the server of ``p2p.net.lb_server`` around a
``Registry``, announces it on the local network unless ``--no-announce``, and
runs until Ctrl-C or SIGTERM (or, with ``--idle-exit``, until no peer has been
registered for that long). Its first line on standard output is ``listening on
HOST:PORT``. Its log (standard error; an auto-started one's goes to a file) has a
time on every line: a line when it starts, and one saying why it exits.
"""

import argparse
import errno
import logging
import os
import signal
import sys
import threading

from p2p import VERSION
from p2p.cli.autostart import AUTO_LB_IDLE_EXIT_S
from p2p.core import discovery
from p2p.core.members import Members, SecretError, TLSSetupError
from p2p.core.registry import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_PORT,
    MAX_PEERS_PER_HOST,
    MISSED_BEATS,
    POLICIES,
    Registry,
)
from p2p.core.wire import format_address
from p2p.net import beacon
from p2p.net.lb_server import LoadBalancerServer

log = logging.getLogger("p2p.lb")
life = logging.getLogger("p2p.lb.life")  # start and exit: logged whatever --verbose says

IDLE_CHECK_S = 1.0
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


# ---------------------------------------------------------------------------
# Command line


def port_number(text):
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return port


def positive_seconds(text):
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def positive_count(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="load_balancer.py",
        description="The P2P load balancer: tracks peers and their files and tells each "
                    "downloader which peer should send the file.")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--policy", choices=POLICIES, default="least-connections",
                        help="how to pick a holder (default least-connections)")
    parser.add_argument("--idle-exit", type=positive_seconds, metavar="SECONDS",
                        help="exit once no peer has been registered for this long")
    parser.add_argument("--heartbeat", type=positive_seconds, default=DEFAULT_HEARTBEAT_S,
                        metavar="SECONDS", help="heartbeat interval given to peers "
                        f"(default {DEFAULT_HEARTBEAT_S:g}); a peer silent for {MISSED_BEATS} "
                        "intervals is dropped")
    parser.add_argument("--max-peers-per-host", type=positive_count, metavar="N",
                        default=MAX_PEERS_PER_HOST, help="peers one host may register at once "
                        f"(default {MAX_PEERS_PER_HOST})")
    parser.add_argument("--network", type=network_name, metavar="NAME",
                        default=os.environ.get("P2P_NETWORK", discovery.DEFAULT_NETWORK),
                        help="the network name announced on the LAN, which keeps groups on "
                             "one LAN apart (env P2P_NETWORK, default "
                             f"{discovery.DEFAULT_NETWORK})")
    parser.add_argument("--no-announce", dest="announce", action="store_false",
                        help="do not announce this load balancer on the local network")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    add_member_options(parser)
    args = parser.parse_args(argv)
    args.members = members_from_args(parser, args)
    return args


def add_member_options(parser):
    """--secret-file and the TLS options: the load balancer and every peer command take them."""
    group = parser.add_argument_group("members only (see README: 'Members only')")
    group.add_argument("--secret-file", metavar="FILE",
                       help="the network secret (env P2P_SECRET holds the secret itself); "
                            "requests without it are refused")
    group.add_argument("--tls-cert", metavar="FILE", help="the network certificate (PEM): "
                       "all traffic over TLS, and only members that present it are accepted")
    group.add_argument("--tls-key", metavar="FILE", help="the key of --tls-cert (PEM)")
    group.add_argument("--tls-ca", metavar="FILE",
                       help="accept any certificate this CA signed, not only --tls-cert")


def members_from_args(parser, args):
    """The Members of these options, or a parser error with the reason."""
    try:
        return Members.from_options(args.secret_file, args.tls_cert, args.tls_key, args.tls_ca)
    except (SecretError, TLSSetupError) as e:
        parser.error(str(e))


def network_name(text):
    try:
        return discovery.check_network(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class Ending:
    """Why the server stops (for the last line of the log), and stopping it for that."""

    def __init__(self, server):
        self.server = server
        self.reason = None

    def now(self, reason):
        self.reason = reason
        self.server.shutdown()


def start_beacon(server, args, ending):
    """Announce on the interfaces we listen on; stand down when a senior one is heard."""
    addresses = beacon.addresses_for(args.host)

    def stand_down(source, senior):
        ending.now(f"the load balancer at {format_address(source, senior.port)} has served "
                   f"network {args.network!r} for longer: standing down")

    try:
        return beacon.Beacon(args.network, server.port, addresses, stand_down,
                             secret=args.members.secret).start()
    except OSError as e:
        log.warning("not announced on the local network: %s", e)
        return None


def watch_idle(ending, registry, idle_exit_s, stop):
    while not stop.wait(IDLE_CHECK_S):
        if idle_exit_s is not None and registry.idle_seconds() >= idle_exit_s:
            ending.now(f"no peer for {idle_exit_s:g} s (--idle-exit)")
            return
        registry.sweep()


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=LOG_FORMAT)
    life.setLevel(logging.INFO)
    registry = Registry(policy=args.policy, heartbeat_s=args.heartbeat,
                        max_per_host=args.max_peers_per_host)
    try:
        server = LoadBalancerServer((args.host, args.port), registry, members=args.members)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(f"load_balancer.py: port {args.port} is already in use on {args.host} "
                  "(is another load balancer running? One that a peer started exits "
                  f"{AUTO_LB_IDLE_EXIT_S} s after its last peer leaves). To run another network "
                  "beside it, give this one its own --port and --network (like --port "
                  f"{args.port + 1 if args.port < 65535 else 6970} --network team) and its peers the same --network.",
                  file=sys.stderr)
        else:
            print(f"load_balancer.py: cannot listen on {args.host}:{args.port}: {e.strerror}",
                  file=sys.stderr)
        return 1
    server.network = args.network if args.announce else None
    ending = Ending(server)

    def stop_on_signal(signum, frame):
        ending.reason = f"stopped by {signal.Signals(signum).name}"
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_signal)
    stop = threading.Event()
    announcer = None
    try:
        threading.Thread(target=watch_idle, args=(ending, registry, args.idle_exit, stop),
                         daemon=True, name="idle-watch").start()
        print(f"listening on {format_address(args.host, server.port)}", flush=True)
        print(f"network: {args.members.describe()}", flush=True)
        life.info("started (pid %d): listening on %s, network %r, %s, policy %s%s", os.getpid(),
                  format_address(args.host, server.port), args.network,
                  args.members.describe(), args.policy,
                  "" if args.idle_exit is None else f", exits after {args.idle_exit:g} s "
                                                    "without peers")
        if args.announce:
            announcer = start_beacon(server, args, ending)
        server.serve_forever()
    except KeyboardInterrupt:
        ending.reason = ending.reason or "stopped by Ctrl-C"
    finally:
        stop.set()
        if announcer is not None:
            announcer.close()
        server.server_close()
        life.info("exiting: %s", ending.reason or "stopped")
    return 0
