"""Finding the load balancer, or starting one in the background: the peer's start-up rules.

Without ``--lb`` (or ``P2P_LB``) a command first looks for the load balancer of
its ``--network`` on the local network (``p2p/net/beacon.py``). When none is
found, a serving peer listens again for a random while (``backoff``: peers
starting together then mostly find the first one started) and only then starts
``load_balancer.py`` as a background process of its own, announced on the
network; seniority (``p2p/core/discovery.py``) settles two started at once.
With ``--lb`` on this machine and nothing answering there, it starts one there
too, unannounced. An auto-started load balancer exits by itself once no peer has
been registered for ``AUTO_LB_IDLE_EXIT_S``; it gets the network's secret and
certificate options (``members.py``).

When the network's load balancer is gone, a peer that found it by discovery first
listens ``SEARCH_WAIT_S`` for another, then runs the same rules again
(``elect_successor``): a random back-off while listening, then a successor of its
own; the seniority rule leaves exactly one (``membership_hooks``).

``--lb A,B[,C]`` (or ``P2P_LB`` holding such a list) names standby load balancers
of one network, for networks without multicast (``p2p/net/standby.py``): the peer
is a member of each, and none is started or looked for; they are started by hand.
"""

import functools
import ipaddress
import logging
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

from p2p.core import discovery
from p2p.core.members import OPEN
from p2p.core.registry import DEFAULT_PORT
from p2p.core.wire import format_address, parse_address
from p2p.net import beacon
from p2p.net.lb_client import SECRET_FIX, LBClient, LBClientError, NotAMember, NotAdmitted
from p2p.net.standby import StandbyClient
from p2p.net.node import PeerError

log = logging.getLogger("p2p.peer")

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LB_SCRIPT = os.path.join(TOP, "load_balancer.py")  # the program a user starts by hand
DEFAULT_LB = f"127.0.0.1:{DEFAULT_PORT}"
AUTO_LB_IDLE_EXIT_S = 60  # an auto-started load balancer exits after this long without peers
LB_START_TIMEOUT_S = 10.0  # wait this long for an auto-started load balancer to answer
LB_PROBE_TIMEOUT_S = 1.0
START_POLL_S = 0.05  # while it starts, ask whether it answers this often
SEARCH_WAIT_S = 0.3  # a peer whose load balancer is gone listens this long for another
# (a live one answers a query at once; one missed here is still heard in the election)
MAX_STANDBY_LBS = 8  # load balancers in one --lb list
OWN_PORTS_TRIED = 16  # another network's load balancer on the port: start ours on one of the next


def parse_lb_list(text):
    """``HOST:PORT[,HOST:PORT...]`` -> [(host, port)], each once; ValueError with a sentence."""
    addresses = []
    for part in text.split(","):
        if not part.strip():
            raise ValueError(f"{text!r} has an empty address; separate addresses with commas "
                             "only, like 10.0.0.1:6969,10.0.0.2:6969.")
        address = parse_address(part, DEFAULT_PORT)
        if address not in addresses:
            addresses.append(address)
    if len(addresses) > MAX_STANDBY_LBS:
        raise ValueError(f"at most {MAX_STANDBY_LBS} load balancers, not {len(addresses)}.")
    return addresses


def is_standby_list(args):
    return len(getattr(args, "lbs", ())) > 1


def lb_client_for(args):
    """The client of the load balancer ``args`` names: one, or a standby list."""
    if is_standby_list(args):
        return StandbyClient.of(args.lbs, args.members)
    return LBClient(args.lb_host, args.lb_port, members=args.members)


def lb_answers(host, port, timeout=LB_PROBE_TIMEOUT_S):
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def is_local_address(host):
    """True if ``host`` names this machine (we could listen on it)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.bind((sockaddr[0], 0))
                return True
        except OSError:
            continue
    return False


def user_tag():
    return str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")


def auto_lb_log_path(port):
    return os.path.join(tempfile.gettempdir(), f"p2p-load-balancer-{port}-{user_tag()}.log")


def open_to(host, port):
    """Who can reach a server listening on ``host``:``port``, in words."""
    if host in ("0.0.0.0", "::", ""):
        return f"anyone who can reach this machine on port {port} (every network interface)"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return "this machine only"
    return f"anyone who can reach {format_address(host, port)}"


def lb_bind_host(host):
    """Where an auto-started load balancer listens: only on loopback when its address is
    a loopback one (no other machine could use that address), else on every interface."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        loopback = all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)
    except (OSError, ValueError):
        loopback = False
    if loopback:
        return host
    return "::" if ":" in host else "0.0.0.0"


def ensure_load_balancer(host, port, say=print, network=None, listen=None, members=OPEN,
                         member_options=()):
    """Start ``load_balancer.py`` in the background if none answers at a local address.

    Returns the started process, or None when one was already there (or the
    address is not on this machine). Two peers starting at once end up with
    one load balancer: the second one's port is taken and it exits. With a
    ``network`` (the peer found none on the LAN), it listens on ``listen`` and
    announces itself there; without, it does not announce. The new load
    balancer gets ``member_options`` (the network secret and certificate).
    """
    if lb_answers(host, port) or not is_local_address(host):
        return None
    log_path = auto_lb_log_path(port)
    listen = listen or lb_bind_host(host)
    command = [sys.executable, LB_SCRIPT, "--host", listen, "--port", str(port),
               "--idle-exit", str(AUTO_LB_IDLE_EXIT_S),
               *(["--network", network] if network else ["--no-announce"]), *member_options]
    detach = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt"
              else {"start_new_session": True})
    try:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                         | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        log_path, log_fd = os.devnull, os.open(os.devnull, os.O_WRONLY)
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_fd,
                                   stderr=subprocess.STDOUT, close_fds=True, **detach)
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + LB_START_TIMEOUT_S
    client = LBClient(host, port, timeout=LB_PROBE_TIMEOUT_S, members=members)
    while True:
        try:
            pid = client.status().get("pid")
            break
        except (NotAdmitted, NotAMember) as e:  # another one, of another network, won the race
            raise PeerError(e.message) from None
        except LBClientError:
            exited = process.poll() is not None  # lost a race (then another answers) or failed
            if time.monotonic() > deadline or (exited and not lb_answers(host, port)):
                raise PeerError(f"Could not start a load balancer on port {port}; see "
                                f"{log_path}, or start one with: python load_balancer.py "
                                f"--port {port}") from None
            time.sleep(START_POLL_S)
        finally:
            client.close()
    if pid == process.pid:
        where = (f"on network {network!r} on the local network" if network
                 else f"at {format_address(host, port)}")
        say(f"No load balancer was running {where}: started one in the background "
            f"(pid {process.pid}, log {log_path}), open to {open_to(listen, port)}; it exits "
            f"{AUTO_LB_IDLE_EXIT_S} s after the last peer leaves.")
        return process
    try:  # another peer's won the race: ours finds the port taken and exits
        process.wait(LB_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("a second load balancer (pid %d) did not exit", process.pid)
    return None



def discovery_addresses(args):
    """Where to look: the interfaces a serving peer listens on, or every one."""
    return beacon.addresses_for(getattr(args, "host", "0.0.0.0"))

def find_on_lan(args, say, wait_s=beacon.DISCOVERY_WAIT_S, joining=False):
    """Look for the network's load balancer; when found, use it (in ``args``) and say so
    (``joining``: that an existing network is joined, how big and how old).

    PeerError when only a members-only one answers and this command has no secret."""
    closed = []
    found = beacon.discover(args.network, wait_s, discovery_addresses(args),
                            secret=args.members.secret, closed=closed)
    if found is None:
        if closed:
            raise PeerError(
                f"The load balancer of network {args.network!r} at {closed[0][0]} takes "
                "members only (its announcements are signed), and this command has no "
                f"secret. {SECRET_FIX} Or give a group of your own another --network NAME.")
        return False
    args.lb_host, args.lb_port = found
    where = format_address(*found)
    if joining:
        say(describe_joined(args, where))
    else:
        say(f"Found the load balancer of network {args.network!r} at {where} on the local "
            "network.")
    return True


def describe_joined(args, where):
    """What a peer says when it joins a network that was already there."""
    text = (f"Found the load balancer of network {args.network!r} at {where} on the local "
            "network, and joined this existing network")
    client = LBClient(args.lb_host, args.lb_port, timeout=LB_PROBE_TIMEOUT_S,
                      members=args.members)
    try:
        status = client.status()
        peers, uptime = len(status.get("peers", [])), status.get("uptime_s")
        text += f": {peers} peer{'' if peers == 1 else 's'}"
        if isinstance(uptime, (int, float)):
            text += f", running for {describe_age(uptime)}"
    except LBClientError:
        pass
    finally:
        client.close()
    return (f"{text}. Peers that share a --network name (default {discovery.DEFAULT_NETWORK!r}) "
            "on this LAN form one network: to keep a group apart, give each of its peers the "
            "same --network NAME (or P2P_NETWORK).")


def describe_age(seconds):
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 days``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"

def find_or_start_load_balancer(args, say):
    """The load balancer a serving peer uses: given, found on the LAN, or started here.

    Without ``--lb``: look on the LAN; if none is there, listen again for a random
    while (peers starting together then mostly find the first one started), and only
    then do as with the default ``--lb``: use or start one on this machine, now
    announced, and look again to learn its address as other machines see it.
    """
    if not args.discover:
        if args.lb_start and not is_standby_list(args):
            ensure_load_balancer(args.lb_host, args.lb_port, say, **lb_start_options(args))
        return
    if find_on_lan(args, say, joining=True) \
            or find_on_lan(args, say, discovery.backoff(), joining=True) or not args.lb_start:
        return
    if args.host not in ("", "0.0.0.0", "::"):
        args.lb_host = args.host
    other = another_network_at(args)
    if other is not None:
        args.lb_port = own_port(args, other)
    ensure_load_balancer(args.lb_host, args.lb_port, say, **lb_start_options(args))
    find_on_lan(args, say)

def network_at(host, port, members):
    """The network name the load balancer answering at ``host``:``port`` announces, or None
    (nothing answers, it does not announce, or it does not answer us)."""
    client = LBClient(host, port, timeout=LB_PROBE_TIMEOUT_S, members=members)
    try:
        return client.status().get("network")
    except LBClientError:
        return None
    finally:
        client.close()


def another_network_at(args):
    """The name of another network whose load balancer answers at ``args``' address (the
    default one when none of ours was found on the LAN), or None."""
    other = network_at(args.lb_host, args.lb_port, args.members)
    return other if other not in (None, args.network) else None


def check_fallback(args):
    """PeerError when the address asked instead of a load balancer found on the LAN is
    another network's: its files are not this network's."""
    other = another_network_at(args)
    if other is not None:
        raise PeerError(f"No load balancer of network {args.network!r} runs on the local "
                        f"network, and the one at {format_address(args.lb_host, args.lb_port)} "
                        f"belongs to network {other!r}. Start a peer of network {args.network!r} "
                        f"first (python peer.py --network {args.network}), or name its load "
                        "balancer with --lb.")


def own_port(args, other):
    """The first port after ``args.lb_port`` where no load balancer answers: network
    ``other``'s holds that one, and ours starts beside it (peers find it by discovery)."""
    for port in range(args.lb_port + 1, min(args.lb_port + 1 + OWN_PORTS_TRIED, 65536)):
        if not lb_answers(args.lb_host, port):
            return port
    raise PeerError(f"Network {other!r}'s load balancer holds port {args.lb_port}, and the "
                    f"next {OWN_PORTS_TRIED} ports answer too; start this network's with "
                    "python load_balancer.py --network NAME --port PORT.")


def lb_start_options(args):
    """How this peer starts a load balancer: announced on its network when it looked there
    for one, and with the network's secret and certificate."""
    options = {"members": args.members,
               "member_options": args.members.options(args.secret_file)}
    if args.discover:
        options.update(network=args.network, listen=args.host)
    return options


def membership_hooks(args):
    """What a serving peer's membership does when its load balancer is gone (the
    keyword arguments of ``Peer``): with ``--lb``, start it again when it is on this
    machine; without, follow the network: listen to its announcements (``watch``),
    move to the one announced (``rediscover``), or elect a successor (``elect``)."""
    if not args.discover:
        return {"restart_lb": functools.partial(restart_quietly, args)
                if args.lb_start and not is_standby_list(args) else None}
    addresses = discovery_addresses(args)
    listen = functools.partial(beacon.discover, args.network, addresses=addresses,
                               secret=args.members.secret)
    try:
        watch = beacon.Watch(args.network, addresses, secret=args.members.secret).start()
    except OSError as e:
        log.warning("not listening to the load balancers' announcements: %s", e)
        watch = None
    return {"rediscover": functools.partial(listen, SEARCH_WAIT_S), "watch": watch,
            "elect": functools.partial(elect_successor, args, listen) if args.lb_start
            else None}


def restart_quietly(args, host, port):
    """Start the load balancer at ``host``:``port`` again if it is on this machine; the
    started process, or None (with the reason logged)."""
    try:
        return ensure_load_balancer(host, port, log.warning, **lb_start_options(args))
    except PeerError as e:
        log.warning("%s", e)
        return None


def elect_successor(args, listen, rng=random):
    """The network's load balancer is gone and none is announced: the start-up rules
    again. Listen a random back-off (another peer's successor may appear), then start
    one here, announced; the senior of two started at once stays, the other stands
    down. (event, (host, port) or None) for the membership machine."""
    found = listen(discovery.backoff(rng, discovery.MAX_SUCCESSOR_BACKOFF_S))
    if found is not None:
        return "found", found
    host = args.host if args.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    log.warning("no load balancer of network %r answers: starting a successor here",
                args.network)
    if restart_quietly(args, host, args.lb_port) is None and not lb_answers(host, args.lb_port):
        return "failed", None
    found = listen(beacon.DISCOVERY_WAIT_S)
    return ("elected", found) if found is not None else ("failed", None)
