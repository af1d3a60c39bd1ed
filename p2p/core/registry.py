"""The load balancer's decisions: who is online, who shares what, who sends next.

``Registry`` is the one object the server (``p2p.net.lb_server``, which describes the
protocol) calls: thread-safe (one lock), no I/O, with an injectable clock
(``p2p.core.clock``). It composes pure parts, each a module of its own:

* ``lb_peers.Peers``: the peers, their files and partial downloads, indexed by name and
  by (SHA-256, size); addresses owned by their peers until they leave or miss
  ``MISSED_BEATS`` heartbeats; at most ``max_per_host`` registrations per host;
* ``lb_leases.Leases``: the transfers handed out, each with a random id and a secret that
  only its requester gets, expiring ``MISSED_BEATS x renew_s`` after its last renewal
  and counting against its holder only until the holder next reports its uploads;
* ``lb_picking``: the picking policy as plain functions (choose the version, gather the
  candidates, hand out the best ``count``, spread over hosts), which look only at the
  holders of the requested file; with the cool-down of holders whose transfers failed
  (for that requester, or for everyone once ``FAIL_QUORUM`` hosts saw it);
* ``lb_requests``: the validation of the JSON request bodies; ``lb_errors``: the
  refusals; ``lb_limits``: every setting and limit.

Expiry is swept lazily on every call, oldest first, so each call costs O(expired) plus
its own work, never O(all peers). This module also names what the rest of the program
uses of those parts (``__all__``).
"""

import heapq
import logging
import os
import threading
from dataclasses import dataclass

from p2p.core import lb_picking as picking
from p2p.core.clock import Clock
from p2p.core.lb_errors import (
    Busy,
    Conflict,
    Forbidden,
    HostFull,
    Invalid,
    LBError,
    NotFound,
    Unavailable,
)
from p2p.core.lb_leases import Leases
from p2p.core.lb_limits import (
    BUSY_RETRY_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_PORT,
    FAIL_COOLDOWN_S,
    MAX_EXCLUDE,
    MAX_LISTED_FILES,
    MAX_PARTIAL_PER_PEER,
    MAX_PEERS_PER_HOST,
    MAX_SLOTS,
    MAX_SOURCES,
    MISSED_BEATS,
    OUTCOMES,
)
from p2p.core.lb_peers import Peers
from p2p.core.lb_picking import POLICIES
from p2p.core.lb_requests import parse_heartbeat, parse_register, parse_transfer_request
from p2p.core.wire import format_address, parse_address

__all__ = [
    "Registry", "Handout", "POLICIES",
    "LBError", "Invalid", "Forbidden", "NotFound", "Conflict", "HostFull", "Unavailable",
    "Busy", "BUSY_RETRY_S", "DEFAULT_HEARTBEAT_S", "DEFAULT_PORT", "MAX_EXCLUDE",
    "MAX_PARTIAL_PER_PEER", "MAX_PEERS_PER_HOST", "MAX_SLOTS", "MAX_SOURCES", "MISSED_BEATS",
    "parse_heartbeat", "parse_register", "parse_transfer_request", "format_address",
    "parse_address",
]

log = logging.getLogger("p2p.lb")


@dataclass
class Handout:
    """What one pick hands out: a transfer per holder chosen, the best first."""
    transfers: list
    others: list  # the other versions of the name, as listed to people, when it has several
    pieces: str = None  # the piece-list hash the most machines announced for this version
    downloading: int = 0  # other peers downloading this version now (partial holders)

    @property
    def first(self):
        return self.transfers[0]


class Registry:
    """Peers, their files, and the transfers handed out. Thread-safe; no I/O.

    ``clock`` (``Clock()`` by default) gives seconds through ``now()``; tests pass a
    ``FakeClock`` and move time by hand.
    """

    def __init__(self, policy="least-connections", heartbeat_s=DEFAULT_HEARTBEAT_S,
                 renew_s=None, cooldown_s=FAIL_COOLDOWN_S, clock=None,
                 max_per_host=MAX_PEERS_PER_HOST):
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
        self.policy = policy
        self.heartbeat_s = float(heartbeat_s)
        self.renew_s = float(renew_s if renew_s is not None else heartbeat_s)
        self.cooldown_s = float(cooldown_s)
        self._clock = clock or Clock()
        self._lock = threading.Lock()
        self._peers = Peers(max_per_host)
        self._leases = Leases(self.renew_s)
        self._empty_since = self._clock.now()
        self._due = float("-inf")  # nothing expires before this: the sweep waits till then

    def _now(self):
        """The time, after dropping what expired by then (call with the lock held). Until the
        first lease's expiry or the least recently seen peer's silence, nothing can have
        expired, and nothing is looked at."""
        now = self._clock.now()
        if now < self._due:
            return now
        while (transfer := self._leases.expired(now)) is not None:
            log.info("transfer %s expired without renewal", transfer.id)
            self._leases.finish(transfer.id, "cancelled", now, self._live)
        ttl_s = MISSED_BEATS * self.heartbeat_s
        while (peer := self._peers.silent(now, ttl_s)) is not None:
            log.info("peer %s at %s silent for %.0f s: dropped", peer.id, peer.address,
                     now - peer.last_seen)
            self._drop_peer(peer.id)
        self._due = min(self._leases.next_expiry(), self._peers.next_silence(ttl_s))
        return now

    def _due_by(self, deadline):
        """Something new expires at ``deadline``: sweep then at the latest."""
        if deadline < self._due:
            self._due = deadline

    def _live(self, peer):
        return self._peers.by_id.get(peer.id) is peer

    def _drop_peer(self, peer_id):
        self._leases.drop_holder(self._peers.remove(peer_id))
        if not self._peers:
            self._empty_since = self._clock.now()

    # -- peers --------------------------------------------------------------

    def register(self, host, port, files, source=None, name="", slots=None, partial=()):
        """Add a peer; returns its record. A registration at a live peer's address replaces
        it only from the same ``source`` (a restarted peer), else Conflict; one host may
        have ``max_per_host`` peers (HostFull beyond)."""
        with self._lock:
            now = self._now()
            peer, old = self._peers.admit(host, port, source, now, name)
            if old is not None:
                self._drop_peer(old.id)
            peer.slots = slots
            self._peers.add(peer)
            self._due_by(now + MISSED_BEATS * self.heartbeat_s)
            self._peers.set_files(peer, files)
            self._peers.set_partial(peer, partial)
            return peer

    def heartbeat(self, peer_id, token, files=None, uploads=None, slots=None, partial=None):
        """The peer is alive; what is not None replaces what it said before."""
        with self._lock:
            now = self._now()
            peer = self._peers.authorised(peer_id, token)
            self._peers.seen(peer, now)
            if files is not None:
                self._peers.set_files(peer, files)
            if partial is not None:
                self._peers.set_partial(peer, partial)
            if slots is not None:
                peer.slots = slots
            if uploads is not None:
                peer.uploads = uploads
                self._leases.reported(peer)

    def unregister(self, peer_id, token):
        with self._lock:
            self._now()
            self._peers.authorised(peer_id, token)
            self._drop_peer(peer_id)

    def sweep(self):
        with self._lock:
            self._now()

    def idle_seconds(self):
        """Seconds since the last peer left, or 0 while any peer is registered."""
        with self._lock:
            now = self._now()
            return 0.0 if self._peers else now - self._empty_since

    # -- files --------------------------------------------------------------

    def find_files(self, query="", limit=MAX_LISTED_FILES):
        """Shared files whose name contains ``query`` (any case), by name; and truncated?

        Each entry says how many peers hold it whole and how many are downloading it.
        """
        needle = query.casefold()
        with self._lock:
            self._now()
            index, found = self._peers.index, []
            for name in sorted(index):
                if needle and needle not in name.casefold():
                    continue
                for key, holders in index[name].items():
                    record = self._peers[next(iter(holders))].files[name]
                    found.append({**record.as_dict(), "holders": len(holders),
                                  "partial": len(self._peers.partials.get(key, ()))})
                if len(found) > limit:
                    break
            return found[:limit], len(found) > limit

    def holders_of(self, name, sha256, limit=MAX_SOURCES):
        """The whole holders of ``name`` with content ``sha256``, least loaded first, at most
        ``limit`` (public records); nothing is counted (a holder's ``Link`` headers)."""
        with self._lock:
            self._now()
            ids = [pid for key, h in self._peers.index.get(name, {}).items()
                   if key[0] == sha256 for pid in h]
            peers = heapq.nsmallest(limit, (self._peers[pid] for pid in ids),
                                    key=lambda p: (p.load, p.last_pick))
            return [p.public() for p in peers]

    # -- transfers ----------------------------------------------------------

    def pick(self, name, sha256=None, peer=None, exclude=(), requester=None, source=None,
             count=None):
        """Hand out transfers of ``name`` from its best holders; returns a Handout.

        In three steps (``lb_picking``): choose the version of the name; gather the
        candidates among its holders for this requester; hand out the best ``count``.
        Without ``count``: one holder of the whole file (what ``GET /files/NAME`` needs);
        with it, up to ``count``, partial holders included. ``peer`` is an optional
        (host, port-or-None) the user asked for; ``source`` the requester's host, whose own
        failure reports sideline a holder for it alone. Costs O(holders of that file).
        """
        with self._lock:
            now = self._now()
            version, others = picking.choose_version(self._peers, name, sha256, peer)
            downloading = picking.downloading(self._peers, version, requester,
                                              self._leases.swarming)
            try:
                found = picking.candidates(self._peers, name, version, peer, exclude,
                                           requester, partial=count is not None)
                chosen = picking.best(name, found, self.policy, count or 1,
                                      lambda p: p.cooling(source, now, self.cooldown_s))
            except Unavailable as e:  # busy, or none left: still says who else downloads it
                if downloading:
                    e.extra["downloading"] = downloading
                raise
            swarm = requester if count is not None else None
            transfers = [self._leases.hand_out(c.peer, c.file, source, now, c.done, swarm)
                         for c in chosen]
            self._due_by(transfers[0].expires_at)
            return Handout(transfers, others, picking.agreed_pieces(self._peers, name, version),
                           downloading)

    def renew(self, transfer_id, secret):
        with self._lock:
            now = self._now()
            self._leases.renew(self._leases.owned(transfer_id, secret), now)

    def end(self, transfer_id, secret, outcome="done"):
        if outcome not in OUTCOMES:
            raise Invalid(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}.")
        with self._lock:
            now = self._now()
            self._leases.owned(transfer_id, secret)
            self._leases.finish(transfer_id, outcome, now, self._live)

    # -- views --------------------------------------------------------------

    def status(self):
        with self._lock:
            now = self._now()
            peers = [peer_status(p, now) for p in self._peers.by_id.values()]
        peers.sort(key=lambda p: (p["host"], p["port"]))
        return {"policy": self.policy, "heartbeat_s": self.heartbeat_s, "pid": os.getpid(),
                "peers": peers}


def peer_status(peer, now):
    """One peer as ``GET /status`` lists it."""
    return {
        "id": peer.id, "name": peer.name, "host": peer.host, "port": peer.port,
        "files": sorted(peer.files), "active": peer.load, "uploads": peer.uploads,
        "slots": peer.slots, "served": peer.served, "failed": peer.failed,
        "partial": sorted((r.shown() for r in peer.partial.values()),
                          key=lambda r: r["name"]),
        "last_seen_s": round(now - peer.last_seen, 1),
    }
