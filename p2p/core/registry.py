"""The load balancer's decisions: who is online, who shares what, who sends next.

Pure state and policy, no sockets (thread-safe, injectable clock), and the
validation of the load balancer's JSON request bodies. ``Registry`` holds the
index from file name to holders, grouped by (SHA-256, size), and of partial
holders by (SHA-256, size); the transfers handed out, each with a random id
and a secret that only its requester gets, expiring ``3 x renew_s`` after its
last renewal and counting against its holder only until the holder next
reports its uploads; the cool-down of holders whose transfers failed (for that
requester, or for everyone once two hosts saw it); addresses owned by their
peers until they leave or miss ``3`` heartbeats; and the picking policy
(``Registry.pick``: choose the version, gather the candidates, hand out the
best ``count`` as ``ORDER`` ranks them), which looks only at the holders of the
requested file. ``p2p.net.lb_server`` is the wire around it and describes the
protocol.
"""

import collections
import heapq
import hmac
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass

from p2p.core.errors import Problem
from p2p.core.wire import (
    FileRecord,
    PartialRecord,
    check_file_name,
    check_sha256,
    field,
    format_address,
    parse_address,
)

log = logging.getLogger("p2p.lb")

DEFAULT_PORT = 6969
DEFAULT_HEARTBEAT_S = 10.0
MISSED_BEATS = 3  # heartbeats or renewals missed before a peer or transfer is dropped
FAIL_COOLDOWN_S = 10.0  # a holder whose transfer failed is skipped this long (nginx fail_timeout)
FAIL_QUORUM = 2  # distinct requester hosts whose failures sideline a holder for everyone
MAX_FAILURE_SOURCES = 64  # requester hosts remembered per holder for its cool-down
TRANSFER_ID_BYTES = 12  # random bytes of a transfer id: not guessable from another one
TRANSFER_SECRET_BYTES = 18  # random bytes of the secret that renews or ends a transfer
MAX_FILES_PER_PEER = 100_000
MAX_PARTIAL_PER_PEER = 1000  # files one peer may announce it is downloading
MAX_SLOTS = 1000  # upload slots a peer may announce
MAX_SOURCES = 8  # holders one POST /transfers may ask for ("count")
BUSY_RETRY_S = 1  # Retry-After of "every holder is busy": a slot frees in about this long
MAX_PEERS = 100_000
MAX_LISTED_FILES = 1000  # GET /files answers at most this many entries
MAX_EXCLUDE = 1000
MAX_PEER_NAME_CHARS = 64
OUTCOMES = ("done", "failed", "cancelled")


# ---------------------------------------------------------------------------
# Errors (each carries the HTTP status it is answered with)


class LBError(Problem):
    """A decision of the Registry against a request: ``message`` and ``extra`` are its answer."""

    status = 500


class Invalid(LBError):
    status = 400


class Forbidden(LBError):
    status = 403


class NotFound(LBError):
    status = 404


class Conflict(LBError):
    status = 409


class Unavailable(LBError):
    status = 503


class Busy(Unavailable):
    """Every holder left has all its upload slots taken: ask again after ``retry_after``."""

    def __init__(self, message, busy, retry_after=BUSY_RETRY_S):
        super().__init__(message, busy=busy, retry_after=retry_after)
        self.headers = {"Retry-After": str(retry_after)}


# ---------------------------------------------------------------------------
# The registry: pure state and decisions


class PeerRecord:
    __slots__ = ("id", "host", "port", "token", "source", "name", "files", "partial", "slots",
                 "last_seen", "fresh", "uploads", "served", "failed", "failures", "last_pick",
                 "transfers")

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
        per machine when versions of a name are ranked, whatever hosts it claims."""
        return self.source or self.host

    def public(self):
        return {"id": self.id, "name": self.name, "host": self.host, "port": self.port}


@dataclass
class Transfer:
    id: str
    secret: str  # given only to the requester; needed to renew or end the transfer
    holder: PeerRecord
    file: FileRecord
    expires_at: float
    source: str = None  # the requester's host
    counted: bool = True  # still in its holder's ``fresh`` count
    done: int = None  # None from a full holder; the bytes a partial holder had verified


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


@dataclass
class Candidate:
    """A holder that may be handed out: ``done`` is None for a full holder."""
    peer: PeerRecord
    file: FileRecord
    done: int = None
    cooling: bool = False


# How each policy ranks candidates, best first: the sort key of a Candidate. Holders that
# failed recently go last; under least-connections, full holders before partial ones at an
# equal load; the least recently picked breaks ties (round-robin among equals).
ORDER = {
    "least-connections": lambda c: (c.cooling, c.peer.load, c.done is not None, c.peer.last_pick),
    "round-robin": lambda c: (c.cooling, c.peer.last_pick),
}
POLICIES = tuple(ORDER)


class Registry:
    """Peers, their files, and the transfers handed out. Thread-safe; no I/O.

    ``clock`` returns seconds (``time.monotonic`` by default) so that tests can
    move time by hand. Expiry is swept lazily on every call, oldest first, so
    each call costs O(expired) plus its own work, never O(all peers).
    """

    def __init__(self, policy="least-connections", heartbeat_s=DEFAULT_HEARTBEAT_S,
                 renew_s=None, cooldown_s=FAIL_COOLDOWN_S, clock=time.monotonic):
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
        self.policy = policy
        self.heartbeat_s = float(heartbeat_s)
        self.renew_s = float(renew_s if renew_s is not None else heartbeat_s)
        self.cooldown_s = float(cooldown_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._peers = collections.OrderedDict()  # id -> PeerRecord, least recently seen first
        self._by_address = {}  # (host, port) -> id
        self._index = {}  # name -> {(sha256, size) -> {peer_id: None}} (dicts as ordered sets)
        self._partials = {}  # (sha256, size) -> {peer_id: None}: who is downloading it
        self._transfers = collections.OrderedDict()  # id -> Transfer, least recently renewed first
        self._picks = 0
        self._empty_since = clock()

    # -- peers --------------------------------------------------------------

    def register(self, host, port, files, source=None, name="", slots=None, partial=()):
        """Add a peer; returns its record.

        An address belongs to its peer until it unregisters or is dropped after
        MISSED_BEATS heartbeats of silence. A new registration there replaces it only from
        the same ``source`` (the host it connected from: the same machine, where one process
        at a time can listen on a port, so a restarted peer); otherwise the address is
        someone else's: Conflict.
        """
        with self._lock:
            now = self._clock()
            self._sweep(now)
            old = self._peers.get(self._by_address.get((host, port)))
            if old is not None:
                if old.source != source:
                    raise Conflict(f"Another peer is registered at {old.address}; "
                                   "use another --port or --advertise.")
                self._drop_peer(old.id)
            elif len(self._peers) >= MAX_PEERS:
                raise Unavailable(f"The load balancer already has {MAX_PEERS} peers.")
            peer_id = secrets.token_hex(6)
            peer = PeerRecord(peer_id, host, port, secrets.token_urlsafe(18), now, source, name)
            peer.slots = slots
            self._peers[peer_id] = peer
            self._by_address[(host, port)] = peer_id
            self._set_files(peer, files)
            self._set_partial(peer, partial)
            return peer

    def heartbeat(self, peer_id, token, files=None, uploads=None, slots=None, partial=None):
        """The peer is alive; what is not None replaces what it said before."""
        with self._lock:
            now = self._clock()
            self._sweep(now)
            peer = self._authorised(peer_id, token)
            peer.last_seen = now
            self._peers.move_to_end(peer_id)
            if files is not None:
                self._set_files(peer, files)
            if partial is not None:
                self._set_partial(peer, partial)
            if slots is not None:
                peer.slots = slots
            if uploads is not None:
                peer.uploads = uploads
                peer.fresh = 0
                for transfer_id in peer.transfers:
                    self._transfers[transfer_id].counted = False

    def unregister(self, peer_id, token):
        with self._lock:
            self._sweep(self._clock())
            self._authorised(peer_id, token)
            self._drop_peer(peer_id)

    def _authorised(self, peer_id, token):
        peer = self._peers.get(peer_id)
        if peer is None:
            raise NotFound(f"Peer {peer_id} is not registered (the load balancer may have "
                           "restarted); register again with POST /peers.")
        if not hmac.compare_digest(peer.token.encode(), str(token).encode()):
            raise Forbidden(f"The token does not match peer {peer_id}.")
        return peer

    def _set_files(self, peer, files):
        new = {f.name: f for f in files}
        for name, old in peer.files.items():
            if new.get(name) != old:
                self._unindex(peer.id, old)
        for name, record in new.items():
            if peer.files.get(name) != record:
                self._index.setdefault(name, {}).setdefault(record.key, {})[peer.id] = None
        peer.files = new

    def _unindex(self, peer_id, record):
        versions = self._index.get(record.name)
        if versions is None:
            return
        holders = versions.get(record.key)
        if holders is not None:
            holders.pop(peer_id, None)
            if not holders:
                del versions[record.key]
        if not versions:
            del self._index[record.name]

    def _set_partial(self, peer, partial):
        """Replace the files ``peer`` is downloading, indexed by (sha256, size)."""
        for key in peer.partial:
            holders = self._partials[key]
            holders.pop(peer.id, None)
            if not holders:
                del self._partials[key]
        peer.partial = {record.key: record for record in partial}
        for key in peer.partial:
            self._partials.setdefault(key, {})[peer.id] = None

    def _drop_peer(self, peer_id):
        peer = self._peers.pop(peer_id)
        self._by_address.pop((peer.host, peer.port), None)
        for record in peer.files.values():
            self._unindex(peer_id, record)
        self._set_partial(peer, ())
        for transfer_id in peer.transfers:
            self._transfers.pop(transfer_id, None)
        if not self._peers:
            self._empty_since = self._clock()

    def _sweep(self, now):
        while self._transfers:
            transfer = next(iter(self._transfers.values()))
            if transfer.expires_at > now:
                break
            log.info("transfer %s expired without renewal", transfer.id)
            self._finish(transfer.id, "cancelled", now)
        peer_ttl = MISSED_BEATS * self.heartbeat_s
        while self._peers:
            peer = next(iter(self._peers.values()))
            if now - peer.last_seen <= peer_ttl:
                break
            log.info("peer %s at %s silent for %.0f s: dropped", peer.id, peer.address,
                     now - peer.last_seen)
            self._drop_peer(peer.id)

    def sweep(self):
        with self._lock:
            self._sweep(self._clock())

    def idle_seconds(self):
        """Seconds since the last peer left, or 0 while any peer is registered."""
        with self._lock:
            now = self._clock()
            self._sweep(now)
            return 0.0 if self._peers else now - self._empty_since

    # -- files --------------------------------------------------------------

    def find_files(self, query="", limit=MAX_LISTED_FILES):
        """Shared files whose name contains ``query`` (any case), by name; and truncated?

        Each entry says how many peers hold it whole and how many are downloading it.
        """
        needle = query.casefold()
        with self._lock:
            self._sweep(self._clock())
            found = []
            for name in sorted(self._index):
                if needle and needle not in name.casefold():
                    continue
                for key, holders in self._index[name].items():
                    record = self._peers[next(iter(holders))].files[name]
                    found.append({**record.as_dict(), "holders": len(holders),
                                  "partial": len(self._partials.get(key, ()))})
                if len(found) > limit:
                    break
            return found[:limit], len(found) > limit

    def holders_of(self, name, sha256, limit=MAX_SOURCES):
        """The whole holders of ``name`` with content ``sha256``, least loaded first, at most
        ``limit`` (public records); nothing is counted (a holder's ``Link`` headers)."""
        with self._lock:
            self._sweep(self._clock())
            ids = [pid for key, h in self._index.get(name, {}).items() if key[0] == sha256
                   for pid in h]
            peers = heapq.nsmallest(limit, (self._peers[pid] for pid in ids),
                                    key=lambda p: (p.load, p.last_pick))
            return [p.public() for p in peers]

    # -- transfers ----------------------------------------------------------

    def pick(self, name, sha256=None, peer=None, exclude=(), requester=None, source=None,
             count=None):
        """Hand out transfers of ``name`` from its best holders; returns a Handout.

        In three steps: choose the version of the name; gather the candidates among its
        holders for this requester; hand out the best ``count`` (as ORDER ranks them).
        Without ``count``: one holder of the whole file (what ``GET /files/NAME`` needs);
        with it, up to ``count``, partial holders included. ``peer`` is an optional
        (host, port-or-None) the user asked for; ``source`` the requester's host, whose own
        failure reports sideline a holder for it alone. Costs O(holders of that file).
        """
        with self._lock:
            now = self._clock()
            self._sweep(now)
            version, others = self._choose_version(name, sha256, peer)
            downloading = sum(1 for key in version for pid in self._partials.get(key, ())
                              if pid != requester)
            try:
                candidates = self._candidates(name, version, peer, exclude, requester,
                                              partial=count is not None)
                chosen = self._best(name, candidates, source, now, count or 1)
            except Unavailable as e:  # busy, or none left: still says who else downloads it
                if downloading:
                    e.extra["downloading"] = downloading
                raise
            transfers = [self._hand_out(candidate, source, now) for candidate in chosen]
            return Handout(transfers, others, self._agreed_pieces(name, version), downloading)

    def _choose_version(self, name, sha256, peer):
        """Step 1: the version of ``name`` to hand out, as {(sha256, size): holders} (several
        sizes when holders disagree on it), and the other versions as listed to people.

        Without ``sha256``, a name shared as several files is the version held by the most
        distinct machines (or the named peer's), or Conflict when none leads.
        """
        versions = self._index.get(name)
        if not versions:
            raise NotFound(f"Nobody shares {name!r} right now; list the shared files to see "
                           "what there is.")
        if sha256 is not None:
            versions = {key: h for key, h in versions.items() if key[0] == sha256}
            if not versions:
                raise NotFound(f"Nobody shares {name!r} with SHA-256 {sha256}.")
        elif len(versions) > 1 and peer is not None:  # the named peer's version, if one
            versions = {key: h for key, h in versions.items() if self._at(h, *peer)} or versions
        return self._version(name, versions)

    def _candidates(self, name, version, peer, exclude, requester, partial):
        """Step 2: who may send ``version`` to this requester: its full holders and, when
        ``partial``, the peers that have verified some of it; never the requester; only
        the named ``peer``, or else none that is in ``exclude``."""
        candidates = [Candidate(self._peers[pid], self._peers[pid].files[name])
                      for holders in version.values() for pid in holders if pid != requester]
        if partial:
            full = {c.peer.id for c in candidates}
            for key in version:
                for pid in self._partials.get(key, ()):
                    downloading = self._peers[pid].partial[key]
                    if pid != requester and pid not in full and downloading.done > 0:
                        record = FileRecord(name, key[1], key[0], downloading.file.pieces)
                        candidates.append(Candidate(self._peers[pid], record, downloading.done))
        if peer is not None:
            return self._at_named(name, version, candidates, peer, requester)
        if not candidates:
            raise NotFound(f"Only you share {name!r}; no other peer has it.")
        excluded = set(exclude)
        candidates = [c for c in candidates if c.peer.id not in excluded]
        if not candidates:
            raise Unavailable(f"Every holder of {name!r} has been tried and failed; "
                              "try again later.")
        return candidates

    def _at_named(self, name, version, candidates, peer, requester):
        host, port = peer
        named = [c for c in candidates if c.peer.host == host and port in (None, c.peer.port)]
        if named:
            return named
        holders = [pid for h in version.values() for pid in h]
        if requester in holders and self._at([requester], *peer):
            raise NotFound(f"That address is you; you already share {name!r}.")
        wanted = host if port is None else format_address(host, port)
        others = [self._peers[pid].address for pid in holders if pid != requester]
        raise NotFound(f"{wanted} does not share {name!r}"
                       + (f"; it is shared by {', '.join(others[:5])}." if others else "."))

    def _best(self, name, candidates, source, now, count):
        """Step 3: the ``count`` best candidates that have a free upload slot, or Busy."""
        free = [c for c in candidates if not c.peer.busy]
        if not free:
            n = len(candidates)
            raise Busy(f"Every holder of {name!r} is busy ({n} holder{'s' * (n != 1)}); "
                       "waiting for a free upload slot.", busy=n)
        for candidate in free:
            candidate.cooling = candidate.peer.cooling(source, now, self.cooldown_s)
        return heapq.nsmallest(count, free, key=ORDER[self.policy])

    def _hand_out(self, candidate, source, now):
        """A transfer from ``candidate``, counted against it until it ends or expires."""
        holder = candidate.peer
        self._picks += 1
        holder.last_pick = self._picks
        holder.fresh += 1
        transfer = Transfer(secrets.token_urlsafe(TRANSFER_ID_BYTES),
                            secrets.token_urlsafe(TRANSFER_SECRET_BYTES), holder,
                            candidate.file, now + MISSED_BEATS * self.renew_s, source,
                            done=candidate.done)
        self._transfers[transfer.id] = transfer
        holder.transfers.add(transfer.id)
        return transfer

    def _version(self, name, versions):
        """The versions to pick from among ``versions`` ({(sha256, size): holders}) of
        ``name``, and the other versions as listed to people; or Conflict.

        Contents (SHA-256s) are ranked by the distinct machines that hold them: one machine
        cannot outvote many, however many peers it registers. Sizes claimed for the leading
        SHA-256 are ranked the same way; when no size leads, all are candidates (the
        downloader's checks sort them out), so a wrong size claimed for a file never hides
        its true holders.
        """
        if len(versions) == 1:
            return versions, []
        by_content = {}
        for key, holders in versions.items():
            by_content.setdefault(key[0], []).append((key, holders))
        leader = self._leading(by_content)
        if leader is None:
            raise Conflict(f"{len(by_content)} different files are shared as {name!r} and none "
                           "is held by more hosts than the others; choose one by its sha256.",
                           versions=self._listed(name, versions))
        others = self._listed(name, {k: h for k, h in versions.items() if k[0] != leader})
        size = self._leading({key: [(key, h)] for key, h in by_content[leader]})
        if size is not None:
            return {size: versions[size]}, others
        return dict(by_content[leader]), others

    def _leading(self, groups):
        """The key of ``groups`` ({key: [(version, holders)]}) held by the most distinct
        machines, or None on a tie."""
        if len(groups) == 1:
            return next(iter(groups))
        hosts = {key: len({self._peers[pid].machine for _, h in group for pid in h})
                 for key, group in groups.items()}
        ranked = sorted(hosts.values(), reverse=True)
        if ranked[0] == ranked[1]:
            return None
        return max(hosts, key=hosts.get)

    def _agreed_pieces(self, name, version):
        """The piece-list hash the most distinct machines announced among the full holders
        of ``version``; None when none announced one, or on a tie."""
        announced = {}
        for key, holders in version.items():
            for pid in holders:
                pieces = self._peers[pid].files[name].pieces
                if pieces is not None:
                    announced.setdefault(pieces, []).append((key, [pid]))
        return self._leading(announced) if announced else None

    def _listed(self, name, versions):
        return [{**self._peers[next(iter(h))].files[name].as_dict(), "holders": len(h)}
                for h in versions.values()]

    def _at(self, peer_ids, host, port):
        """Is one of ``peer_ids`` at ``host`` (and ``port``, unless None)?"""
        return any(self._peers[pid].host == host and port in (None, self._peers[pid].port)
                   for pid in peer_ids)

    def renew(self, transfer_id, secret):
        with self._lock:
            now = self._clock()
            self._sweep(now)
            self._owned(transfer_id, secret).expires_at = now + MISSED_BEATS * self.renew_s
            self._transfers.move_to_end(transfer_id)

    def end(self, transfer_id, secret, outcome="done"):
        if outcome not in OUTCOMES:
            raise Invalid(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}.")
        with self._lock:
            now = self._clock()
            self._sweep(now)
            self._owned(transfer_id, secret)
            self._finish(transfer_id, outcome, now)

    def _owned(self, transfer_id, secret):
        """The transfer, if ``secret`` is the one it was handed out with."""
        transfer = self._transfers.get(transfer_id)
        if transfer is None:
            raise NotFound(f"Transfer {transfer_id} is not running (it ended or expired).")
        if not secret:
            raise Forbidden("Send the transfer's secret (from POST /transfers) as "
                            "'Authorization: Bearer SECRET'.")
        if not hmac.compare_digest(transfer.secret.encode(), str(secret).encode()):
            raise Forbidden(f"The secret does not match transfer {transfer_id}; only the "
                            "requester it was handed to may renew or end it.")
        return transfer

    def _finish(self, transfer_id, outcome, now):
        transfer = self._transfers.pop(transfer_id)
        peer = transfer.holder
        if self._peers.get(peer.id) is not peer:
            return
        peer.transfers.discard(transfer_id)
        if transfer.counted:
            peer.fresh -= 1
        if outcome == "done":
            peer.served += 1
        elif outcome == "failed":
            peer.blame(transfer.source, now)

    # -- views --------------------------------------------------------------

    def status(self):
        with self._lock:
            now = self._clock()
            self._sweep(now)
            peers = [{
                "id": p.id, "name": p.name, "host": p.host, "port": p.port,
                "files": sorted(p.files), "active": p.load, "uploads": p.uploads,
                "slots": p.slots, "served": p.served, "failed": p.failed,
                "partial": sorted(({"name": r.file.name, "sha256": r.file.sha256,
                                    "size": r.file.size, "done": r.done}
                                   for r in p.partial.values()), key=lambda r: r["name"]),
                "last_seen_s": round(now - p.last_seen, 1),
            } for p in self._peers.values()]
        peers.sort(key=lambda p: (p["host"], p["port"]))
        return {"policy": self.policy, "heartbeat_s": self.heartbeat_s, "pid": os.getpid(),
                "peers": peers}


# ---------------------------------------------------------------------------
# Request validation (pure): JSON bodies -> typed values, or Invalid (BadRecord from
# wire.py for a field of a file record; both are answered 400)


def parse_files(raw):
    if not isinstance(raw, list):
        raise Invalid("The field 'files' must be a list of {name, size, sha256, pieces?}.")
    if len(raw) > MAX_FILES_PER_PEER:
        raise Invalid(f"A peer may share at most {MAX_FILES_PER_PEER} files.")
    files, seen = [], set()
    for entry in raw:
        record = FileRecord.parse(entry)
        if record.name in seen:
            raise Invalid(f"{record.name!r} is listed twice in 'files'.")
        seen.add(record.name)
        files.append(record)
    return files


def parse_partial(raw):
    """The files a peer is downloading: [{name, size, sha256, pieces?, done}]."""
    if not isinstance(raw, list):
        raise Invalid("The field 'partial' must be a list of {name, size, sha256, pieces, "
                      "done}.")
    if len(raw) > MAX_PARTIAL_PER_PEER:
        raise Invalid(f"A peer may announce at most {MAX_PARTIAL_PER_PEER} partial files.")
    partial = {}
    for entry in raw:
        record = PartialRecord.parse(entry)
        if record.key in partial:
            raise Invalid(f"The file with SHA-256 {record.file.sha256} is listed twice in "
                          "'partial'.")
        partial[record.key] = record
    return list(partial.values())


def parse_slots(body):
    slots = field(body, "slots", int, "a whole number of upload slots", required=False)
    if slots is not None and not 1 <= slots <= MAX_SLOTS:
        raise Invalid(f"The field 'slots' must be a whole number of upload slots from 1 to "
                      f"{MAX_SLOTS}, not {slots}.")
    return slots


def check_host(host, key):
    if not host or len(host) > 255 or not host.isascii() \
            or any(c.isspace() or not c.isprintable() for c in host):
        raise Invalid(f"The field {key!r} must be a host name or IP address.")
    return host


def parse_register(body, default_host):
    """The keyword arguments of ``Registry.register`` (but ``source``) from a POST /peers."""
    port = field(body, "port", int, "the peer's TCP port")
    if not 0 < port < 65536:
        raise Invalid("The field 'port' must be between 1 and 65535.")
    host = field(body, "host", str, "a host name or IP address", required=False)
    if host is not None:
        check_host(host, "host")
    name = field(body, "name", str, "the peer's name", required=False) or ""
    if len(name) > MAX_PEER_NAME_CHARS or not name.isprintable():
        raise Invalid(f"The field 'name' must be at most {MAX_PEER_NAME_CHARS} printable "
                      "characters.")
    return {"host": host or default_host, "port": port,
            "files": parse_files(body.get("files", [])), "name": name,
            "slots": parse_slots(body), "partial": parse_partial(body.get("partial", []))}


def parse_heartbeat(body):
    """The keyword arguments of ``Registry.heartbeat`` (but the peer) from a PUT /peers/ID."""
    uploads = field(body, "uploads", int, "a count of uploads", required=False)
    if uploads is not None and uploads < 0:
        raise Invalid("The field 'uploads' must not be negative.")
    return {"files": parse_files(body["files"]) if "files" in body else None,
            "uploads": uploads, "slots": parse_slots(body),
            "partial": parse_partial(body["partial"]) if "partial" in body else None}


def parse_transfer_request(body):
    name = check_file_name(field(body, "name", str, "a file name"))
    sha256 = body.get("sha256")
    if sha256 is not None:
        check_sha256(sha256)
    peer = field(body, "peer", str, "an address like host:port", required=False)
    if peer is not None:
        try:
            peer = parse_address(check_host(peer, "peer"))
        except ValueError as e:
            raise Invalid(str(e)) from None
    exclude = field(body, "exclude", list, "a list of peer ids", required=False) or []
    if len(exclude) > MAX_EXCLUDE or not all(isinstance(x, str) for x in exclude):
        raise Invalid(f"The field 'exclude' must be a list of at most {MAX_EXCLUDE} peer ids.")
    requester = field(body, "requester", str, "your peer id", required=False)
    count = field(body, "count", int, "a number of holders", required=False)
    if count is not None and not 1 <= count <= MAX_SOURCES:
        raise Invalid(f"The field 'count' must be a number of holders from 1 to {MAX_SOURCES}, "
                      f"not {count}.")
    return {"name": name, "sha256": sha256, "peer": peer, "exclude": exclude,
            "requester": requester, "count": count}

