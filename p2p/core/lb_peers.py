"""The load balancer's table of peers: who is online, from which host, sharing what.

Pure state, no lock and no clock of its own (``Registry`` holds both). ``Peers`` keeps
the peers least recently seen first, so that dropping the silent ones costs O(dropped);
the index from file name to holders, grouped by (SHA-256, size); the index of partial
holders by (SHA-256, size); and how many peers each host has registered. An address
belongs to its peer until it unregisters or misses ``MISSED_BEATS`` heartbeats; one host
may hold at most ``max_per_host`` registrations (``HostFull`` beyond).
"""

import collections
import hmac
import secrets
from json.encoder import encode_basestring as quoted

from p2p.core.lb_errors import Conflict, Forbidden, HostFull, NotFound, Unavailable
from p2p.core.lb_limits import (
    FAIL_QUORUM,
    MAX_FAILURE_SOURCES,
    MAX_PEERS,
    MAX_PEERS_PER_HOST,
    PEER_ID_BYTES,
    PEER_TOKEN_BYTES,
)
from p2p.core.wire import format_address


class PeerRecord:
    """One registered peer: its address, files, load and failures."""

    __slots__ = ("id", "host", "port", "token", "source", "name", "files", "partial", "slots",
                 "last_seen", "fresh", "uploads", "served", "failed", "failures", "last_pick",
                 "transfers", "_public_json")

    def __init__(self, peer_id, host, port, token, now, source=None, name=""):
        self.id, self.host, self.port, self.token = peer_id, host, port, token
        self.name = name  # what the peer calls itself (stable across restarts, unlike the port)
        self.source = source  # the address it registered from
        self.files = {}  # name -> FileRecord
        self.partial = {}  # (sha256, size) -> PartialRecord: the files it is downloading
        self.slots = None  # its upload slots, when it said; None: never busy here
        self.last_seen = now
        self.fresh = 0  # transfers handed out since its last report of uploads, not yet ended
        self.uploads = 0  # uploads the peer itself reports
        self.served = 0
        self.failed = 0
        self.failures = collections.OrderedDict()  # requester host -> last failure, oldest first
        self.last_pick = 0  # pick sequence number: round-robin among equals
        self.transfers = set()
        self._public_json = None  # public() as JSON, made at its first pick

    @property
    def load(self):
        """Its own count of uploads, plus the transfers handed out since it reported it: a
        transfer that is never used stops counting at the holder's next heartbeat."""
        return self.uploads + self.fresh

    @property
    def busy(self):
        """Are all its upload slots taken (as far as the load balancer knows)?"""
        return self.slots is not None and self.load >= self.slots

    def cooling(self, source, now, cooldown_s):
        """Is it sidelined for a requester at ``source``: that requester saw it fail, or
        FAIL_QUORUM different requesters did, within ``cooldown_s``?"""
        while self.failures and next(iter(self.failures.values())) <= now - cooldown_s:
            self.failures.popitem(last=False)
        return source in self.failures or len(self.failures) >= FAIL_QUORUM

    def blame(self, source, now):
        self.failed += 1
        self.failures.pop(source, None)
        self.failures[source] = now
        if len(self.failures) > MAX_FAILURE_SOURCES:
            self.failures.popitem(last=False)

    @property
    def address(self):
        return format_address(self.host, self.port)

    @property
    def machine(self):
        """The host it registered from (the host it claims, when that is unknown): one vote
        per machine when versions of a name are ranked, one share of the picks per machine,
        and the host its registrations count against, whatever hosts it claims."""
        return self.source or self.host

    def public(self):
        return {"id": self.id, "name": self.name, "host": self.host, "port": self.port}

    def public_json(self):
        """``public()`` as compact JSON text (its id, name and address never change)."""
        if self._public_json is None:
            self._public_json = (f'{{"id":{quoted(self.id)},"name":{quoted(self.name)},'
                                 f'"host":{quoted(self.host)},"port":{int(self.port)}}}')
        return self._public_json


class Peers:
    """The peers, their files and partial downloads, indexed for the picker."""

    def __init__(self, max_per_host=MAX_PEERS_PER_HOST):
        self.max_per_host = max_per_host
        self.by_id = collections.OrderedDict()  # id -> PeerRecord, least recently seen first
        self._by_address = {}  # (host, port) -> id
        self.per_host = collections.Counter()  # machine -> live registrations
        self.index = {}  # name -> {(sha256, size) -> {peer_id: None}} (dicts as ordered sets)
        self.partials = {}  # (sha256, size) -> {peer_id: None}: who is downloading it

    def __len__(self):
        return len(self.by_id)

    def __getitem__(self, peer_id):
        return self.by_id[peer_id]

    def at_address(self, host, port):
        return self.by_id.get(self._by_address.get((host, port)))

    def admit(self, host, port, source, now, name=""):
        """A new PeerRecord at (host, port), registered from ``source``; the old one there,
        if any, is returned to be dropped by the caller (a restarted peer).

        A new registration at an address replaces the peer there only from the same
        ``source`` (the same machine, where one process at a time can listen on a port);
        otherwise the address is someone else's: Conflict.
        """
        old = self.at_address(host, port)
        if old is not None and old.source != source:
            raise Conflict(f"Another peer is registered at {old.address}; "
                           "use another --port or --advertise.")
        machine = source or host
        if old is None:
            if len(self.by_id) >= MAX_PEERS:
                raise Unavailable(f"The load balancer already has {MAX_PEERS} peers.")
            if self.per_host[machine] >= self.max_per_host:
                raise HostFull(f"{machine} already has {self.max_per_host} peers registered "
                               "here, the most one host may have; stop one of them first "
                               "(or start the load balancer with a higher "
                               "--max-peers-per-host).")
        peer = PeerRecord(secrets.token_hex(PEER_ID_BYTES), host, port,
                          secrets.token_urlsafe(PEER_TOKEN_BYTES), now, source, name)
        return peer, old

    def add(self, peer):
        self.by_id[peer.id] = peer
        self._by_address[(peer.host, peer.port)] = peer.id
        self.per_host[peer.machine] += 1

    def authorised(self, peer_id, token):
        """The peer ``peer_id`` if ``token`` is its token; NotFound or Forbidden."""
        peer = self.by_id.get(peer_id)
        if peer is None:
            raise NotFound(f"Peer {peer_id} is not registered (the load balancer may have "
                           "restarted); register again with POST /peers.")
        if not hmac.compare_digest(peer.token.encode(), str(token).encode()):
            raise Forbidden(f"The token does not match peer {peer_id}.")
        return peer

    def seen(self, peer, now):
        peer.last_seen = now
        self.by_id.move_to_end(peer.id)

    def silent(self, now, ttl_s):
        """The least recently seen peer if it has been silent longer than ``ttl_s``."""
        if not self.by_id:
            return None
        peer = next(iter(self.by_id.values()))
        return peer if now - peer.last_seen > ttl_s else None

    def next_silence(self, ttl_s):
        """When the least recently seen peer has been silent ``ttl_s`` (infinity without one)."""
        if not self.by_id:
            return float("inf")
        return next(iter(self.by_id.values())).last_seen + ttl_s

    def remove(self, peer_id):
        """Forget the peer and everything it announced; returns its record."""
        peer = self.by_id.pop(peer_id)
        self._by_address.pop((peer.host, peer.port), None)
        self.per_host[peer.machine] -= 1
        if not self.per_host[peer.machine]:
            del self.per_host[peer.machine]
        for record in peer.files.values():
            self._unindex(peer_id, record)
        self.set_partial(peer, ())
        return peer

    def set_files(self, peer, files):
        """Replace the files ``peer`` shares; the index changes only where they changed."""
        new = {f.name: f for f in files}
        for name, old in peer.files.items():
            if new.get(name) != old:
                self._unindex(peer.id, old)
        for name, record in new.items():
            if peer.files.get(name) != record:
                self.index.setdefault(name, {}).setdefault(record.key, {})[peer.id] = None
        peer.files = new

    def _unindex(self, peer_id, record):
        versions = self.index.get(record.name)
        if versions is None:
            return
        holders = versions.get(record.key)
        if holders is not None:
            holders.pop(peer_id, None)
            if not holders:
                del versions[record.key]
        if not versions:
            del self.index[record.name]

    def set_partial(self, peer, partial):
        """Replace the files ``peer`` is downloading, indexed by (sha256, size)."""
        for key in peer.partial:
            holders = self.partials[key]
            holders.pop(peer.id, None)
            if not holders:
                del self.partials[key]
        peer.partial = {record.key: record for record in partial}
        for key in peer.partial:
            self.partials.setdefault(key, {})[peer.id] = None

    def at(self, peer_ids, host, port):
        """Is one of ``peer_ids`` at ``host`` (and ``port``, unless None)?"""
        return any(self.by_id[pid].host == host and port in (None, self.by_id[pid].port)
                   for pid in peer_ids)
