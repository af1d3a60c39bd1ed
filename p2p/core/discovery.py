"""Discovery's datagrams, pure: their format, signatures, seniority (BEP 14-like).

The sockets (sending, listening, the load balancer's ``Beacon``) are in
``p2p/net/beacon.py``; this module only reads and writes the datagrams and decides.

A load balancer announces itself to the multicast group ``GROUP`` (organisation-local
scope, TTL 1: never routed off the LAN) on UDP port ``DISCOVERY_PORT``, on each IPv4
interface it listens on, once at start, every ``ANNOUNCE_INTERVAL_S``, and at once
(at most every ``ANSWER_GAP_S``) when a peer asks. A peer started without ``--lb``
asks, listens for up to ``DISCOVERY_WAIT_S``, and connects to the address the
announcement came from and the port it names. Loopback is on, so peers on the load
balancer's own machine hear it too.

A datagram is one line of ASCII, fields separated by single spaces, at most
``MAX_DATAGRAM_BYTES`` long::

    p2p-lb 1 announce NETWORK PORT SINCE ID [EXTRA ...]
    p2p-lb 1 query NETWORK [EXTRA ...]

``1`` is the protocol version; NETWORK a name of 1 to 32 letters, digits, ``.``,
``_`` or ``-`` that keeps groups on one LAN apart; PORT the load balancer's TCP
port (1-65535); SINCE the time it started, in milliseconds since the Unix epoch;
ID 16 hex digits drawn at random when it started. Up to ``MAX_EXTRA_FIELDS``
trailing ``key=value`` fields may follow; unknown ones are ignored. Anything else
is hostile input: dropped, and logged at most once every ``HOSTILE_LOG_EVERY_S``.

On a network with a secret (``members.py``) every datagram ends with two more
fields, ``ts=<unix seconds> sig=<64 hex>``: ``sig`` is HMAC-SHA256, keyed with
the secret's datagram key, over the datagram up to the space before ``sig=``, a
newline, and the IPv4 address it is sent from. A member drops datagrams that are
unsigned, signed with another secret, sent from another address than the one
signed (a captured announcement replayed elsewhere), or whose ``ts`` is more
than ``MAX_CLOCK_SKEW_S`` from its clock: a stranger can neither point members
at itself nor make their load balancer stand down. The other way round, a
process without the secret drops signed datagrams (``is_signed``): a members-only
network is never "found" by a command that cannot join it (it is told so), and
never makes an open load balancer stand down.

One load balancer per network: when two announce the same network, the senior one
(the smaller ``(SINCE, ID)``: the older, and the random ID for a tie) stays and the
other stands down (``senior``). A peer hearing several picks the senior one, at a
non-loopback address when it has one (``choose``). Peers that find none wait a
random ``0..MAX_BACKOFF_S`` while still listening before starting one of their own,
so that peers starting together mostly find the first one started; the seniority
rule settles the rest.
"""

import ipaddress
import logging
import random
import re
import secrets
import time
from dataclasses import dataclass

from p2p.core.members import MAX_CLOCK_SKEW_S

log = logging.getLogger("p2p.discovery")

MAGIC = "p2p-lb"
VERSION = 1
DEFAULT_NETWORK = "p2p"
MAX_DATAGRAM_BYTES = 512
MAX_EXTRA_FIELDS = 4
MAX_BACKOFF_S = 1.5  # before starting a load balancer of one's own
MAX_SUCCESSOR_BACKOFF_S = 1.0  # ...a successor: its peers have noticed the loss within ~0.25 s
HOSTILE_LOG_EVERY_S = 60.0
NETWORK_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")
ID_RE = re.compile(r"[0-9a-f]{16}")
SIG_RE = re.compile(r"[0-9a-f]{64}")
DIGITS_RE = re.compile(r"[0-9]{1,15}")
EXTRA_RE = re.compile(r"[a-z][a-z0-9-]{0,15}=[\x21-\x7e]{0,256}")


class BadDatagram(ValueError):
    """A datagram that is not ours, or not well formed; the reason says which."""


@dataclass(frozen=True)
class Announce:
    network: str
    port: int
    since_ms: int
    id: str

    @property
    def seniority(self):
        return (self.since_ms, self.id)


@dataclass(frozen=True)
class Query:
    network: str


def check_network(name):
    if not isinstance(name, str) or not NETWORK_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a network name (1-32 letters, digits, '.', '_' "
                         "or '-')")
    return name


def new_id():
    return secrets.token_hex(8)


def format_datagram(message, secret=None, source=None, now=None):
    """The bytes of an ``Announce`` or a ``Query``; signed for ``source`` with a secret."""
    if isinstance(message, Announce):
        fields = ["announce", message.network, str(message.port), str(message.since_ms),
                  message.id]
    else:
        fields = ["query", message.network]
    text = " ".join([MAGIC, str(VERSION), *fields])
    if secret is not None:
        text += f" ts={int(time.time() if now is None else now)}"
        text += f" sig={secret.sign_datagram(signed_part(text, source))}"
    return text.encode("ascii")


def signed_part(text, source):
    return f"{text}\n{source}".encode("ascii")


def check_signature(data, source, secret, now=None):
    """Return if ``data`` (well formed) is signed for ``source`` with ``secret`` and fresh;
    BadDatagram otherwise. Without a secret every datagram passes."""
    if secret is None:
        return
    text = data.decode("ascii")
    head, sep, sig = text.rpartition(" sig=")
    if not sep or not SIG_RE.fullmatch(sig):
        raise BadDatagram("not signed (this network has a secret)")
    if not secret.datagram_ok(signed_part(head, source), sig):
        raise BadDatagram("signed with another secret, or sent from another address")
    stamp = [f[3:] for f in head.split(" ") if f.startswith("ts=")]
    if not stamp or not DIGITS_RE.fullmatch(stamp[-1]) or abs(
            (time.time() if now is None else now) - int(stamp[-1])) > MAX_CLOCK_SKEW_S:
        raise BadDatagram("an old or future time stamp")


def is_signed(data):
    """Is a well-formed datagram signed (a members-only network's)?"""
    return any(f.startswith("sig=") for f in data.decode("ascii").split(" ")[4:])


def parse_datagram(data):
    """An ``Announce`` or a ``Query``; ``BadDatagram`` with a reason for anything else."""
    if len(data) > MAX_DATAGRAM_BYTES:
        raise BadDatagram(f"{len(data)} bytes, more than {MAX_DATAGRAM_BYTES}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise BadDatagram("not ASCII") from None
    fields = text.split(" ")
    if len(fields) < 4 or fields[0] != MAGIC:
        raise BadDatagram("not a p2p-lb datagram")
    if fields[1] != str(VERSION):
        raise BadDatagram(f"protocol version {fields[1][:8]!r}, not {VERSION}")
    kind, network = fields[2], fields[3]
    if not NETWORK_RE.fullmatch(network):
        raise BadDatagram("a bad network name")
    if kind == "query":
        body, extra = [], fields[4:]
    elif kind == "announce":
        body, extra = fields[4:7], fields[7:]
        if len(body) < 3:
            raise BadDatagram("an announcement without port, start time and id")
    else:
        raise BadDatagram(f"an unknown kind {kind[:16]!r}")
    if len(extra) > MAX_EXTRA_FIELDS or not all(EXTRA_RE.fullmatch(f) for f in extra):
        raise BadDatagram("bad trailing fields")
    if kind == "query":
        return Query(network)
    port, since, ident = body
    if not DIGITS_RE.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise BadDatagram(f"a bad port {port[:16]!r}")
    if not DIGITS_RE.fullmatch(since):
        raise BadDatagram("a bad start time")
    if not ID_RE.fullmatch(ident):
        raise BadDatagram("a bad id")
    return Announce(network, int(port), int(since), ident)


def senior(a, b):
    """Of two announcements of one network, the load balancer that stays."""
    return min(a, b, key=lambda x: x.seniority)


def choose(heard):
    """The load balancer to use, as (host, port), from [(source address, Announce)].

    The senior one; of the addresses it was heard from, a non-loopback one first (what
    the load balancer sees a peer as is what other peers are told), then the lowest.
    """
    if not heard:
        return None
    best = min((a for _, a in heard), key=lambda a: a.seniority)
    sources = [s for s, a in heard if a.seniority == best.seniority]
    host = min(sources, key=lambda s: (ipaddress.ip_address(s).is_loopback,
                                       ipaddress.ip_address(s)))
    return host, best.port


def backoff(rng=random, max_s=MAX_BACKOFF_S):
    """How long a peer that found nothing listens again before starting a load balancer."""
    return rng.uniform(0, max_s)


class HostileLog:
    """Logs a dropped datagram at most once every ``every_s``, with how many were dropped."""

    def __init__(self, every_s=HOSTILE_LOG_EVERY_S, clock=time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.last = None
        self.dropped = 0

    def drop(self, source, reason):
        """Count one; returns True when it was logged."""
        self.dropped += 1
        now = self.clock()
        if self.last is not None and now - self.last < self.every_s:
            return False
        log.warning("ignored %d discovery datagram(s), the last from %s: %s",
                    self.dropped, source, reason)
        self.last, self.dropped = now, 0
        return True
