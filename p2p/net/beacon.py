"""Finding the load balancer on the local network: UDP multicast, as BitTorrent's BEP 14.

A load balancer announces itself to the multicast group ``GROUP`` (organisation-local
scope, TTL 1: never routed off the LAN) on UDP port ``DISCOVERY_PORT``, on each IPv4
interface it listens on, once at start, every ``ANNOUNCE_INTERVAL_S``, and at once
(at most every ``ANSWER_GAP_S``) when a peer asks. A peer started without ``--lb``
asks, listens for up to ``DISCOVERY_WAIT_S``, and connects to the address the
announcement came from and the port it names. Loopback is on, so peers on the load
balancer's own machine hear it too.

The datagrams and the seniority rule are in ``p2p/core/discovery.py``.
"""

import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time

from p2p.core.discovery import (
    MAX_DATAGRAM_BYTES,
    Announce,
    BadDatagram,
    HostileLog,
    Query,
    check_signature,
    choose,
    format_datagram,
    is_signed,
    new_id,
    parse_datagram,
    senior,
)

try:
    import fcntl
except ImportError:  # not on Windows: discovery then uses the default interface only
    fcntl = None

log = logging.getLogger("p2p.discovery")

GROUP = "239.192.69.69"  # organisation-local multicast scope (RFC 2365)
DISCOVERY_PORT = 6969  # UDP; the same number as the load balancer's default TCP port
DISCOVERY_ON_ENV = "P2P_DISCOVERY_ON"  # the interface addresses to use, instead of all
ANNOUNCE_INTERVAL_S = 1.0
ANSWER_GAP_S = 0.2  # answers to queries are at least this far apart
DISCOVERY_WAIT_S = 2.0  # a peer listens this long before deciding there is none
QUERY_EVERY_S = 0.5  # a listening peer asks again this often (a lost datagram)
GATHER_S = 0.1  # after the first answer, listen this much longer for the others
RECEIVE_POLL_S = 0.25  # how often a listening thread looks whether it should stop
SIOCGIFADDR = 0x8915  # Linux ioctls: an interface's IPv4 address, and its flags
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1


def interface_addresses(environ=os.environ):
    """The IPv4 address of every interface that is up (loopback included), or the addresses
    listed in ``$P2P_DISCOVERY_ON`` (comma-separated) when it is set."""
    chosen = [a.strip() for a in environ.get(DISCOVERY_ON_ENV, "").split(",") if a.strip()]
    if chosen:
        return chosen
    if fcntl is None or not hasattr(socket, "if_nameindex"):
        return ["0.0.0.0"]  # the system's default multicast interface
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                flags = struct.unpack("H", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, request)[16:18])[0]
                address = socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFADDR, request)[20:24])
            except OSError:  # no IPv4 address
                continue
            if flags & IFF_UP and address not in found:
                found.append(address)
    return found


def addresses_for(host):
    """The interface addresses to use for a server listening on ``host``."""
    if host in ("", "0.0.0.0", "::"):
        return interface_addresses()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            return [socket.gethostbyname(host)]
        except OSError:
            return []
    return [str(address)] if address.version == 4 else []


def open_listener(addresses):
    """A UDP socket that receives the group's datagrams on the interfaces of ``addresses``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((GROUP, DISCOVERY_PORT))  # Linux: only the group's datagrams
        except OSError:
            sock.bind(("", DISCOVERY_PORT))
        joined = 0
        for address in addresses:
            membership = socket.inet_aton(GROUP) + socket.inet_aton(address)
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
                joined += 1
            except OSError as e:
                log.info("cannot listen for discovery on %s: %s", address, e.strerror)
        if not joined:
            raise OSError(f"cannot join {GROUP} on any of {', '.join(addresses) or 'no address'}")
        return sock
    except OSError:
        sock.close()
        raise


def open_sender():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return sock


def send(sock, message, addresses, secret=None):
    """Send ``message`` to the group out of each interface; True if it left on one."""
    sent = False
    for address in addresses:
        data = format_datagram(message, secret, address)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
            sock.sendto(data, (GROUP, DISCOVERY_PORT))
            sent = True
        except OSError as e:
            log.debug("cannot send discovery on %s: %s", address, e.strerror)
    return sent


def receive(sock, timeout, hostile, secret=None, closed=None):
    """(source address, message) of the next well-formed datagram, or None at the timeout.

    Without a secret, a signed datagram (a members-only network's) is skipped; its
    (source, message) goes into ``closed``, when given."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return None
        try:
            data, (source, _) = sock.recvfrom(MAX_DATAGRAM_BYTES + 1)
        except OSError:
            return None
        try:
            message = parse_datagram(data)
            if secret is None and is_signed(data):
                if closed is not None:
                    closed.append((source, message))
                continue
            check_signature(data, source, secret)
            return source, message
        except BadDatagram as e:
            hostile.drop(source, e)


def discover(network, wait_s=DISCOVERY_WAIT_S, addresses=None, secret=None, closed=None):
    """Ask for and listen to the load balancers of ``network``: (host, port) or None.

    Without a secret, members-only load balancers of ``network`` heard are put in
    ``closed`` (a list) as (source, Announce)."""
    heard_closed = []
    addresses = interface_addresses() if addresses is None else addresses
    try:
        listener = open_listener(addresses)
    except OSError as e:
        log.warning("cannot listen for load balancers on the network: %s", e)
        return None
    heard, hostile = [], HostileLog()
    with listener, open_sender() as sender:
        deadline = time.monotonic() + wait_s
        next_query = 0.0
        while (now := time.monotonic()) < deadline:
            if not heard and now >= next_query:
                send(sender, Query(network), addresses, secret)
                next_query = now + QUERY_EVERY_S
            until = deadline if heard else min(deadline, next_query)
            got = receive(listener, until - now, hostile, secret, heard_closed)
            if got is None:
                continue
            source, message = got
            if isinstance(message, Announce) and message.network == network:
                if not heard:
                    deadline = min(deadline, time.monotonic() + GATHER_S)
                heard.append((source, message))
    if closed is not None:
        closed.extend((s, m) for s, m in heard_closed
                      if isinstance(m, Announce) and m.network == network)
    return choose(heard)


class Beacon:
    """A load balancer's announcer: announces, answers queries, and watches for a senior one.

    ``on_senior(source, announce)`` is called once, from the beacon's thread, when a
    senior load balancer of the same network is heard; the beacon then falls silent.
    """

    def __init__(self, network, port, addresses, on_senior, since_ms=None, ident=None,
                 secret=None):
        self.me = Announce(network, port, int(time.time() * 1000) if since_ms is None
                           else since_ms, ident or new_id())
        self.addresses = addresses
        self.on_senior = on_senior
        self.secret = secret
        self._stop = threading.Event()
        self._listener = open_listener(addresses)
        self._sender = open_sender()
        self._thread = threading.Thread(target=self._run, daemon=True, name="beacon")

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(RECEIVE_POLL_S * 4)
        self._listener.close()
        self._sender.close()

    def _run(self):
        hostile = HostileLog()
        next_announce = last_answer = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_announce:
                send(self._sender, self.me, self.addresses, self.secret)
                next_announce, last_answer = now + ANNOUNCE_INTERVAL_S, now
            got = receive(self._listener, min(RECEIVE_POLL_S, next_announce - now), hostile,
                          self.secret)
            if got is None:
                continue
            source, message = got
            if message.network != self.me.network:
                continue
            if isinstance(message, Query):
                if time.monotonic() - last_answer >= ANSWER_GAP_S:
                    send(self._sender, self.me, self.addresses, self.secret)
                    last_answer = time.monotonic()
            elif message.id != self.me.id and senior(message, self.me) is message:
                self._stop.set()
                self.on_senior(source, message)


class Watch:
    """A peer's ear on the load balancers of its network: when each was last heard.

    ``silent(host, port, for_s)`` is True once a load balancer heard before has not
    announced itself for ``for_s``; one never heard is not judged (the heartbeat is).
    """

    def __init__(self, network, addresses, secret=None, clock=time.monotonic):
        self.network, self.secret, self.clock = network, secret, clock
        self._heard = {}  # (source address, port) -> when last heard
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = open_listener(addresses)
        self._thread = threading.Thread(target=self._run, daemon=True, name="lb-watch")

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(RECEIVE_POLL_S * 4)
        self._listener.close()

    def silent(self, host, port, for_s):
        with self._lock:
            last = self._heard.get((host, port))
        return last is not None and self.clock() - last > for_s

    def _run(self):
        hostile = HostileLog()
        while not self._stop.is_set():
            got = receive(self._listener, RECEIVE_POLL_S, hostile, self.secret)
            if got is None:
                continue
            source, message = got
            if isinstance(message, Announce) and message.network == self.network:
                with self._lock:
                    self._heard[(source, message.port)] = self.clock()
