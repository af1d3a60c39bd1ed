"""The load balancer: who is online, who shares what, and who should send the next file.

A standalone threaded HTTP/1.1 + JSON server (``python load_balancer.py``). It
keeps soft state only, rebuilt from the peers' heartbeats after a restart:

==========================================  ==========================================
request                                     answer
==========================================  ==========================================
``POST /peers`` {port, host?, files}        201 {peer_id, token, heartbeat_s, host};
                                            409 another live peer has that address
``PUT /peers/{id}`` + Bearer token          200; 404 unknown (register again); 403
  {files?, uploads?}
``DELETE /peers/{id}`` + Bearer token       204
``GET /files?q=TEXT``                       200 {files: [{name, size, sha256, holders}]}
``POST /transfers`` {name, sha256?, peer?,  201 {transfer_id, secret, peer, file, renew_s,
  exclude?, requester?}                     versions?}; 404 nobody shares it; 409 several
                                            versions, none leading; 503 all excluded
``PUT /transfers/{id}`` + Bearer secret     200 renewed; 403 wrong secret
``DELETE /transfers/{id}?outcome=...``      204 (done, failed or cancelled); 403
  + Bearer secret
``GET /status``                             200 {policy, peers: [...]}
``GET /``                                   an HTML page of the same and of the files,
                                            refreshing itself
``GET /files/{name}[?sha256=HEX]``          302 to the least-loaded holder's
                                            ``/files/{name}``, counted as a transfer
==========================================  ==========================================

``HEAD`` is answered wherever ``GET`` is. Every error is ``{"error": "<a
sentence a person can act on>"}``; every reply says ``Server:
p2p-load-balancer/VERSION``, and ``LBClient`` recognises a peer's replies
(``Server: p2p-peer/...``), so a peer's address given as the load
balancer's is named as the mistake it is.

The decisions live in ``Registry`` (no sockets, thread-safe, injectable
clock): the index from file name to holders, grouped by (SHA-256, size);
the transfers handed out, each with a random id and a secret that only its
requester gets, expiring ``3 x renew_s`` after its last renewal and counting
against its holder only until the holder next reports its uploads; the
cool-down of holders whose transfers failed (for that requester, or for
everyone once two hosts saw it); addresses owned by their peers until they
leave or miss ``3`` heartbeats; and the picking policy, which looks only at
the holders of the requested file. ``LBHandler`` and ``LBClient`` (used by
``peer.py``) are the two ends of the wire around it.

It announces itself on the local network (``discovery.py``: UDP multicast on
each interface it listens on, under ``--network NAME``; ``--no-announce`` to
stay quiet), and stands down, exiting, when it hears a senior load balancer of
the same network: one load balancer per network.
"""

import argparse
import collections
import errno
import hmac
import html
import http.client
import json
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlencode

import discovery
from httpkit import (VERSION, BadName, BoundedHTTPServer, HTTPProblem, JSONRequestHandler,
                     check_name, format_address, parse_address, set_nodelay)
from members import (OPEN, URL_EXPIRES_PARAM, URL_SIG_PARAM, Members, SecretError, TLSSetupError,
                     Unauthorized, describe_tls_error)

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
MAX_PEERS = 100_000
MAX_LISTED_FILES = 1000  # GET /files answers at most this many entries
MAX_EXCLUDE = 1000
MAX_PEER_NAME_CHARS = 64
IDLE_CHECK_S = 1.0
CLIENT_TIMEOUT_S = 10.0
STATUS_REFRESH_S = 2
POLICIES = ("least-connections", "round-robin")
OUTCOMES = ("done", "failed", "cancelled")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
LB_SERVER = f"p2p-load-balancer/{VERSION}"  # the Server header: what answers here is one
PEER_SERVER_PREFIX = "p2p-peer/"  # what a peer's replies say they come from
PEER_LB_HEADER = "X-P2P-Load-Balancer"  # on a peer's replies: the load balancer it uses
PAGE_FILES = 200  # files listed on the page, with links


# ---------------------------------------------------------------------------
# Errors (each carries the HTTP status it is answered with)


class LBError(Exception):
    status = 500

    def __init__(self, message, **extra):
        super().__init__(message)
        self.message = message
        self.extra = extra


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


# ---------------------------------------------------------------------------
# The registry: pure state and decisions


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    sha256: str

    @property
    def key(self):
        """A file is its content and its length: (SHA-256, size)."""
        return self.sha256, self.size

    def as_dict(self):
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


class PeerRecord:
    __slots__ = ("id", "host", "port", "token", "source", "name", "files", "last_seen", "fresh",
                 "uploads", "served", "failed", "failures", "last_pick", "transfers")

    def __init__(self, peer_id, host, port, token, now, source=None, name=""):
        self.id, self.host, self.port, self.token = peer_id, host, port, token
        self.name = name  # what the peer calls itself (stable across restarts, unlike the port)
        self.source = source  # the address it registered from
        self.files = {}  # name -> FileInfo
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
    peer_id: str
    file: FileInfo
    expires_at: float
    source: str = None  # the requester's host
    counted: bool = True  # still in its holder's ``fresh`` count
    others: list = ()  # the other versions of the name, when it has several


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
        self._transfers = collections.OrderedDict()  # id -> Transfer, least recently renewed first
        self._picks = 0
        self._empty_since = clock()

    # -- peers --------------------------------------------------------------

    def register(self, host, port, files, source=None, name=""):
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
            self._peers[peer_id] = peer
            self._by_address[(host, port)] = peer_id
            self._set_files(peer, files)
            return peer

    def heartbeat(self, peer_id, token, files=None, uploads=None):
        with self._lock:
            now = self._clock()
            self._sweep(now)
            peer = self._authorised(peer_id, token)
            peer.last_seen = now
            self._peers.move_to_end(peer_id)
            if files is not None:
                self._set_files(peer, files)
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
        for name, info in new.items():
            if peer.files.get(name) != info:
                self._index.setdefault(name, {}).setdefault(info.key, {})[peer.id] = None
        peer.files = new

    def _unindex(self, peer_id, info):
        versions = self._index.get(info.name)
        if versions is None:
            return
        holders = versions.get(info.key)
        if holders is not None:
            holders.pop(peer_id, None)
            if not holders:
                del versions[info.key]
        if not versions:
            del self._index[info.name]

    def _drop_peer(self, peer_id):
        peer = self._peers.pop(peer_id)
        self._by_address.pop((peer.host, peer.port), None)
        for info in peer.files.values():
            self._unindex(peer_id, info)
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
        """Shared files whose name contains ``query`` (any case), by name; and truncated?"""
        needle = query.casefold()
        with self._lock:
            self._sweep(self._clock())
            found = []
            for name in sorted(self._index):
                if needle and needle not in name.casefold():
                    continue
                for holders in self._index[name].values():
                    info = self._peers[next(iter(holders))].files[name]
                    found.append({**info.as_dict(), "holders": len(holders)})
                if len(found) > limit:
                    break
            return found[:limit], len(found) > limit

    # -- transfers ----------------------------------------------------------

    def pick(self, name, sha256=None, peer=None, exclude=(), requester=None, source=None):
        """Hand out a transfer of ``name`` from the best holder; returns (Transfer, PeerRecord).

        ``peer`` is an optional (host, port-or-None) the user asked for; ``source`` the
        requester's host, whose own failure reports sideline a holder for it alone.
        Without ``sha256``, a name shared as several files is the version held by the most
        distinct machines (the others are listed in ``Transfer.others``), or Conflict when
        none leads. Costs O(holders of that file).
        """
        with self._lock:
            now = self._clock()
            self._sweep(now)
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
            holders, others = self._version(name, versions)
            candidates = [self._peers[pid] for pid in holders if pid != requester]
            if peer is not None:
                host, port = peer
                candidates = [p for p in candidates if p.host == host and port in (None, p.port)]
                if not candidates and requester in holders and self._at([requester], *peer):
                    raise NotFound(f"That address is you; you already share {name!r}.")
                if not candidates:
                    wanted = host if port is None else format_address(host, port)
                    others = [self._peers[pid].address for pid in holders if pid != requester]
                    raise NotFound(f"{wanted} does not share {name!r}"
                                   + (f"; it is shared by {', '.join(others[:5])}." if others
                                      else "."))
            else:
                if not candidates:
                    raise NotFound(f"Only you share {name!r}; no other peer has it.")
                excluded = set(exclude)
                candidates = [p for p in candidates if p.id not in excluded]
                if not candidates:
                    raise Unavailable(f"Every holder of {name!r} has been tried and failed; "
                                      "try again later.")
                healthy = [p for p in candidates if not p.cooling(source, now, self.cooldown_s)]
                candidates = healthy or candidates
            chosen = self._choose(candidates)
            self._picks += 1
            chosen.last_pick = self._picks
            chosen.fresh += 1
            transfer = Transfer(secrets.token_urlsafe(TRANSFER_ID_BYTES),
                                secrets.token_urlsafe(TRANSFER_SECRET_BYTES), chosen.id,
                                chosen.files[name], now + MISSED_BEATS * self.renew_s, source,
                                others=others)
            self._transfers[transfer.id] = transfer
            chosen.transfers.add(transfer.id)
            return transfer, chosen

    def _version(self, name, versions):
        """The holders to pick from among ``versions`` ({(sha256, size): holders}) of
        ``name``, and the other versions as listed to people; or Conflict.

        Contents (SHA-256s) are ranked by the distinct machines that hold them: one machine
        cannot outvote many, however many peers it registers. Sizes claimed for the leading
        SHA-256 are ranked the same way; when no size leads, all are candidates (the
        downloader's checks sort them out), so a wrong size claimed for a file never hides
        its true holders.
        """
        if len(versions) == 1:
            return next(iter(versions.values())), []
        by_content = {}
        for key, holders in versions.items():
            by_content.setdefault(key[0], []).append((key, holders))
        leader = self._leading(by_content)
        if leader is None:
            raise Conflict(f"{len(by_content)} different files are shared as {name!r} and none "
                           "is held by more hosts than the others; choose one by its sha256.",
                           versions=self._listed(name, versions))
        others = self._listed(name, {k: h for k, h in versions.items() if k[0] != leader})
        sizes = {key: [(key, h)] for key, h in by_content[leader]}
        size = self._leading(sizes)
        if size is not None:
            return versions[size], others
        return {pid: None for _, h in by_content[leader] for pid in h}, others

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

    def _listed(self, name, versions):
        return [{**self._peers[next(iter(h))].files[name].as_dict(), "holders": len(h)}
                for h in versions.values()]

    def _at(self, peer_ids, host, port):
        """Is one of ``peer_ids`` at ``host`` (and ``port``, unless None)?"""
        return any(self._peers[pid].host == host and port in (None, self._peers[pid].port)
                   for pid in peer_ids)

    def _choose(self, candidates):
        if self.policy == "round-robin":
            return min(candidates, key=lambda p: p.last_pick)
        return min(candidates, key=lambda p: (p.load, p.last_pick))

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
        peer = self._peers.get(transfer.peer_id)
        if peer is None:
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
                "served": p.served, "failed": p.failed,
                "last_seen_s": round(now - p.last_seen, 1),
            } for p in self._peers.values()]
        peers.sort(key=lambda p: (p["host"], p["port"]))
        return {"policy": self.policy, "heartbeat_s": self.heartbeat_s, "pid": os.getpid(),
                "peers": peers}


# ---------------------------------------------------------------------------
# Request validation (pure): JSON bodies -> typed values, or Invalid


def _field(body, key, kind, what, required=True):
    if key not in body:
        if required:
            raise Invalid(f"The field {key!r} ({what}) is missing.")
        return None
    value = body[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Invalid(f"The field {key!r} must be {what}.")
    return value


def check_file_name(name):
    try:
        return check_name(name)
    except BadName as e:
        raise Invalid(f"{e} ({name[:100]!r})") from None


def check_sha256(value, key="sha256"):
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise Invalid(f"The field {key!r} must be 64 lowercase hexadecimal digits.")
    return value


def parse_files(raw):
    if not isinstance(raw, list):
        raise Invalid("The field 'files' must be a list of {name, size, sha256}.")
    if len(raw) > MAX_FILES_PER_PEER:
        raise Invalid(f"A peer may share at most {MAX_FILES_PER_PEER} files.")
    files, seen = [], set()
    for entry in raw:
        if not isinstance(entry, dict):
            raise Invalid("Each entry of 'files' must be an object {name, size, sha256}.")
        name = check_file_name(_field(entry, "name", str, "a file name"))
        size = _field(entry, "size", int, "a size in bytes")
        if size < 0:
            raise Invalid(f"The size of {name!r} must not be negative.")
        sha256 = check_sha256(_field(entry, "sha256", str, "a SHA-256 in hex"))
        if name in seen:
            raise Invalid(f"{name!r} is listed twice in 'files'.")
        seen.add(name)
        files.append(FileInfo(name, size, sha256))
    return files


def check_host(host, key):
    if not host or len(host) > 255 or not host.isascii() \
            or any(c.isspace() or not c.isprintable() for c in host):
        raise Invalid(f"The field {key!r} must be a host name or IP address.")
    return host


def parse_register(body, default_host):
    port = _field(body, "port", int, "the peer's TCP port")
    if not 0 < port < 65536:
        raise Invalid("The field 'port' must be between 1 and 65535.")
    host = _field(body, "host", str, "a host name or IP address", required=False)
    if host is not None:
        check_host(host, "host")
    name = _field(body, "name", str, "the peer's name", required=False) or ""
    if len(name) > MAX_PEER_NAME_CHARS or not name.isprintable():
        raise Invalid(f"The field 'name' must be at most {MAX_PEER_NAME_CHARS} printable "
                      "characters.")
    return host or default_host, port, parse_files(body.get("files", [])), name


def parse_heartbeat(body):
    files = parse_files(body["files"]) if "files" in body else None
    uploads = _field(body, "uploads", int, "a count of uploads", required=False)
    if uploads is not None and uploads < 0:
        raise Invalid("The field 'uploads' must not be negative.")
    return files, uploads


def parse_transfer_request(body):
    name = check_file_name(_field(body, "name", str, "a file name"))
    sha256 = body.get("sha256")
    if sha256 is not None:
        check_sha256(sha256)
    peer = _field(body, "peer", str, "an address like host:port", required=False)
    if peer is not None:
        try:
            peer = parse_address(check_host(peer, "peer"))
        except ValueError as e:
            raise Invalid(str(e)) from None
    exclude = _field(body, "exclude", list, "a list of peer ids", required=False) or []
    if len(exclude) > MAX_EXCLUDE or not all(isinstance(x, str) for x in exclude):
        raise Invalid(f"The field 'exclude' must be a list of at most {MAX_EXCLUDE} peer ids.")
    requester = _field(body, "requester", str, "your peer id", required=False)
    return {"name": name, "sha256": sha256, "peer": peer, "exclude": exclude,
            "requester": requester}


# ---------------------------------------------------------------------------
# The HTTP server


def file_link(name, base="", sha256=None):
    """An HTML link to ``name`` under ``base`` (a peer's URL; blank: this redirector)."""
    url = f"{base}/files/{quote(name, safe='/')}" + (f"?sha256={sha256}" if sha256 else "")
    return f"<a href=\"{html.escape(url)}\">{html.escape(name)}</a>"


def render_status_page(status, files=(), truncated=False):
    """The status and ``files`` as an HTML page; everything that came from a peer is escaped.

    A file's name links here (the redirector: the least-loaded holder sends it); a name
    in a peer's row links to that peer.
    """
    peers = status["peers"]
    most = max([p["active"] for p in peers] + [1])
    rows = []
    for p in peers:
        address = format_address(p["host"], p["port"])
        base = f"http://{address}"
        names = ", ".join(file_link(n, base) for n in p["files"][:8])
        if len(p["files"]) > 8:
            names += f", … ({len(p['files']) - 8} more)"
        width = int(100 * p["active"] / most)
        who = html.escape(p.get("name") or "")
        rows.append(
            f"<tr><td><a href=\"{html.escape(base)}/\">{html.escape(address)}</a> {who}<br>"
            f"<small>{html.escape(p['id'])}</small></td>"
            f"<td>{len(p['files'])}<br><small>{names}</small></td>"
            f"<td><div class=bar><span style='width:{width}%'></span></div>{p['active']}"
            f" (uploads {p['uploads']})</td><td>{p['served']}</td><td>{p['failed']}</td>"
            f"<td>{p['last_seen_s']:.0f} s ago</td></tr>")
    table = "".join(rows) or "<tr><td colspan=6>No peer is registered.</td></tr>"
    file_rows = "".join(
        f"<tr><td>{file_link(f['name'], sha256=f['sha256'])}</td><td>{f['size']}</td>"
        f"<td>{f['holders']}</td><td><code>{f['sha256'][:16]}</code></td></tr>" for f in files)
    more = f"<p>Only the first {len(files)} files are listed.</p>" if truncated else ""
    return f"""<!doctype html>
<html><head><meta charset=utf-8><meta http-equiv=refresh content={STATUS_REFRESH_S}>
<title>P2P load balancer</title><style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:.4em .8em;text-align:left;vertical-align:top}}
.bar{{display:inline-block;width:8em;height:.8em;background:#eee;margin-right:.5em}}
.bar span{{display:block;height:100%;background:#4a8}}</style></head><body>
<h1>P2P load balancer</h1>
<p>Policy: <b>{html.escape(status['policy'])}</b> · {len(peers)} peer(s) ·
refreshes every {STATUS_REFRESH_S} s · <a href="/status">JSON</a></p>
<table><tr><th>Peer</th><th>Files</th><th>Active transfers</th><th>Served</th>
<th>Failed</th><th>Last seen</th></tr>{table}</table>
<h2>Files</h2><p>A name downloads from its least-loaded holder.</p>
<table><tr><th>Name</th><th>Bytes</th><th>Holders</th><th>SHA-256</th></tr>{file_rows}</table>
{more}</body></html>
"""


# (collection, has an id) -> {method: route}: /transfers is ("transfers", False),
# /transfers/ID is ("transfers", True).
ROUTES = {
    ("", False): {"GET": "page"},
    ("status", False): {"GET": "status"},
    ("files", False): {"GET": "files"},
    ("peers", False): {"POST": "register"},
    ("peers", True): {"PUT": "heartbeat", "DELETE": "unregister"},
    ("transfers", False): {"POST": "start_transfer"},
    ("transfers", True): {"PUT": "renew_transfer", "DELETE": "end_transfer"},
}


def route(path):
    """``/transfers/abc`` -> (the methods table, ["abc"]), or (None, []) for no such path."""
    parts = path.split("/")
    if parts[0] or len(parts) > 3 or (len(parts) == 3 and not parts[2]):
        return None, []
    return ROUTES.get((parts[1], len(parts) == 3)), parts[2:]


class LBHandler(JSONRequestHandler):
    """One request against ``self.server.registry``."""

    server_version = LB_SERVER

    def handle_request(self):
        try:
            self.body = self.read_body()
            self.request_read()
            path, _, query = self.path.partition("?")
            self.query = parse_qs(query) if query else {}
            if path.startswith("/files/") and self.command in ("GET", "HEAD"):
                self.route_redirect(path)
                return
            methods, ids = route(path)
            if methods is None:
                raise HTTPProblem(404, f"There is no {path} here; see GET /status or GET /.")
            action = methods.get("GET" if self.command == "HEAD" else self.command)
            if action is None:
                allowed = [*methods, "HEAD"] if "GET" in methods else list(methods)
                problem = HTTPProblem(405, f"{path} accepts {', '.join(allowed)}, "
                                           f"not {self.command}.")
                problem.headers["Allow"] = ", ".join(allowed)
                raise problem
            getattr(self, "route_" + action)(*ids)
        except HTTPProblem as problem:
            self.send_problem(problem)
        except LBError as e:
            self.send_json(e.status, {"error": e.message, **e.extra})
        except Exception:
            self.send_unexpected()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = handle_request

    def check_auth(self, secret):
        """A signed request, or a presigned URL of a file to redirect to its holder."""
        path, _, query = self.path.partition("?")
        signed = parse_qs(query) if query else {}
        if URL_SIG_PARAM not in signed or not path.startswith("/files/"):
            return super().check_auth(secret)
        try:
            name = unquote(path[len("/files/"):], errors="strict")
        except UnicodeDecodeError:
            raise Unauthorized("A signed URL is good for /files/NAME only.") from None
        secret.check_url(self.command, name, signed)

    @property
    def registry(self):
        return self.server.registry

    def json_body(self):
        if not self.body:
            return {}
        try:
            obj = json.loads(self.body)
        except (ValueError, RecursionError):
            raise Invalid("The body is not valid JSON (or nested too deeply).") from None
        if not isinstance(obj, dict):
            raise Invalid("The body must be a JSON object.")
        return obj

    def bearer(self):
        """The token of ``Authorization: Bearer TOKEN``, or '' without one."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def token(self):
        token = self.bearer()
        if not token:
            raise Forbidden("Send the token from registration as 'Authorization: Bearer TOKEN'.")
        return token

    # -- routes -------------------------------------------------------------

    def route_redirect(self, path):
        """``GET /files/NAME``: 302 to the least-loaded holder, counted like any pick.

        A mirror network's redirector: ``curl -L`` and browsers get the balancing too.
        The transfer is never ended by such a client, so it counts until it expires
        (``3 x renew_s``). ``HEAD`` says where a GET would go without counting.
        """
        try:
            name = unquote(path[len("/files/"):], errors="strict")
        except UnicodeDecodeError:
            raise Invalid("The file name is not valid UTF-8.") from None
        check_file_name(name)
        sha256 = self.query.get("sha256", [None])[0]
        if sha256 is not None:
            check_sha256(sha256)
        transfer, peer = self.registry.pick(name, sha256, source=self.source)
        if self.command == "HEAD":
            self.registry.end(transfer.id, transfer.secret, "cancelled")
        signed = {key: self.query[key][0] for key in (URL_EXPIRES_PARAM, URL_SIG_PARAM)
                  if key in self.query}  # a presigned URL is good on any holder of the name
        location = (f"{self.server.members.scheme}://{peer.address}/files/"
                    f"{quote(name, safe='/')}" + (f"?{urlencode(signed)}" if signed else ""))
        self.send_whole(302, b"", None, {"Location": location, "Cache-Control": "no-store"})

    def route_page(self):
        files, truncated = self.registry.find_files(limit=PAGE_FILES)
        page = render_status_page(self.registry.status(), files, truncated).encode("utf-8")
        self.send_whole(200, page, "text/html; charset=utf-8")

    def route_status(self):
        self.send_json(200, self.registry.status())

    def route_files(self):
        query = self.query.get("q", [""])[0]
        files, truncated = self.registry.find_files(query)
        self.send_json(200, {"files": files, "truncated": truncated})

    def route_register(self):
        host, port, files, name = parse_register(self.json_body(), self.source)
        peer = self.registry.register(host, port, files, source=self.source, name=name)
        log.info("peer %s registered at %s with %d files", peer.id, peer.address, len(files))
        self.send_json(201, {"peer_id": peer.id, "token": peer.token, "host": host,
                             "heartbeat_s": self.registry.heartbeat_s})

    def route_heartbeat(self, peer_id):
        files, uploads = parse_heartbeat(self.json_body())
        self.registry.heartbeat(peer_id, self.token(), files, uploads)
        self.send_json(200, {"heartbeat_s": self.registry.heartbeat_s})

    def route_unregister(self, peer_id):
        self.registry.unregister(peer_id, self.token())
        log.info("peer %s unregistered", peer_id)
        self.send_json(204)

    def route_start_transfer(self):
        request = parse_transfer_request(self.json_body())
        transfer, peer = self.registry.pick(**request, source=self.source)
        answer = {"transfer_id": transfer.id, "secret": transfer.secret, "peer": peer.public(),
                  "file": transfer.file.as_dict(), "renew_s": self.registry.renew_s}
        if transfer.others:
            answer["versions"] = transfer.others
        self.send_json(201, answer)

    def route_renew_transfer(self, transfer_id):
        self.registry.renew(transfer_id, self.bearer())
        self.send_json(200, {"renew_s": self.registry.renew_s})

    def route_end_transfer(self, transfer_id):
        outcome = self.query.get("outcome", ["done"])[0]
        self.registry.end(transfer_id, self.bearer(), outcome)
        self.send_json(204)


class LoadBalancerServer(BoundedHTTPServer):
    def __init__(self, address, registry, **limits):
        self.registry = registry
        super().__init__(address, LBHandler, **limits)


# ---------------------------------------------------------------------------
# The client the peer uses


class LBClientError(Exception):
    """The load balancer said no; ``message`` is its sentence, ``status`` its code."""

    def __init__(self, message, status=None, body=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body or {}


class LBUnreachable(LBClientError):
    """Nothing (or nothing sane) answers at the load balancer's address."""


class LBUnauthorized(LBClientError):
    """The load balancer refuses us as we are: wrong or missing network secret (401), or
    it speaks TLS and we do not."""


def not_a_load_balancer(address, server, told=None):
    """What to say when ``address`` answered as something else, from its Server header.

    A peer names its own load balancer (``told``) in its replies; None when the
    reply may well be from a load balancer.
    """
    if server.startswith(PEER_SERVER_PREFIX):
        where = f"; the load balancer is {told}" if told else ""
        return f"{address} is a peer, not a load balancer{where}. Give that to --lb."
    return None


def describe_socket_error(error):
    """A few words for a person: 'connection refused', not '[Errno 111] ...'."""
    if isinstance(error, ssl.SSLError):
        return describe_tls_error(error)
    if isinstance(error, ConnectionRefusedError):
        return "connection refused: is it running?"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, socket.gaierror):
        return "unknown host name"
    if isinstance(error, (ConnectionError, http.client.HTTPException)):
        return "the connection broke"
    return error.strerror or error.__class__.__name__


def connect_http(host, port, timeout, members=OPEN):
    """An http.client connection to a server of the network: TLS when it uses TLS, Nagle off."""
    if members.tls is None:
        return _Connection(host, port, timeout=timeout)
    return _TLSConnection(host, port, timeout=timeout, context=members.tls.client)


class _Connection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        set_nodelay(self.sock)


class _TLSConnection(http.client.HTTPSConnection):
    def connect(self):
        super().connect()
        set_nodelay(self.sock)


class LBClient:
    """A keep-alive client of one load balancer; thread-safe (one request at a time)."""

    def __init__(self, host, port, timeout=CLIENT_TIMEOUT_S, members=OPEN):
        self.host, self.port, self.timeout = host, port, timeout
        self.members = members
        self._conn = None
        self._lock = threading.Lock()
        self._interrupted = False
        self._secrets = {}  # transfer id -> its secret, from start_transfer until it ends

    @property
    def address(self):
        return format_address(self.host, self.port)

    def close(self):
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def retarget(self, host, port):
        """Talk to the load balancer at ``host:port`` from the next request on."""
        with self._lock:
            self.host, self.port = host, port
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def interrupt(self, timeout):
        """Cut short a request in flight in another thread, and use ``timeout`` from now on.

        The socket is shut down before taking the lock, so the request in flight fails at
        once (and does not reconnect) instead of holding the lock for its whole timeout.
        """
        self.timeout = timeout
        self._interrupted = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            self._interrupted = False
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _call(self, method, path, body=None, token=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        with self._lock:
            status, raw, server, told = self._roundtrip(method, path, data, headers)
        wrong = not_a_load_balancer(self.address, server, told)
        if wrong:
            raise LBUnreachable(wrong, status)
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise LBUnreachable(f"{self.address} answered, but not as a load balancer "
                                f"(HTTP {status}).", status) from None
        if status == 401 or (isinstance(answer, dict) and answer.get("tls_required")):
            message = answer.get("error") if isinstance(answer, dict) else None
            raise LBUnauthorized(f"The load balancer at {self.address} refuses us: "
                                 f"{message or 'wrong or missing network secret.'}", 401, answer)
        if status >= 400:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise LBClientError(message or f"The load balancer answered HTTP {status}.",
                                status, answer)
        return answer

    def _roundtrip(self, method, path, data, headers):
        for attempt in (1, 2):
            fresh = self._conn is None
            if fresh:
                self._conn = connect_http(self.host, self.port, self.timeout, self.members)
            try:  # signed on every attempt: a retry with the same nonce would be a replay
                headers.update(self.members.auth_headers(method, path))
                self._conn.request(method, path, body=data, headers=headers)
                response = self._conn.getresponse()
                raw = response.read()
                if response.will_close:
                    self._conn.close()
                    self._conn = None
                return (response.status, raw, response.getheader("Server", ""),
                        response.getheader(PEER_LB_HEADER))
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                self._conn.close()
                self._conn = None
                # A kept-alive connection the server closed: try once on a new one.
                if fresh or attempt == 2 or isinstance(e, (TimeoutError, ssl.SSLError)) \
                        or self._interrupted:
                    if isinstance(e, ssl.SSLError):
                        raise LBUnreachable(f"Cannot talk to the load balancer at "
                                            f"{self.address}: {describe_tls_error(e)}.") from None
                    raise LBUnreachable(f"No load balancer answers at {self.address} "
                                        f"({describe_socket_error(e)}).") from None
        raise AssertionError("unreachable")

    # -- the API ------------------------------------------------------------

    def register(self, port, files, host=None, name="", slots=None):
        body = {"port": port, "files": files}
        if host:
            body["host"] = host
        if name:
            body["name"] = name
        if slots is not None:
            body["slots"] = slots
        return self._call("POST", "/peers", body)

    def heartbeat(self, peer_id, token, files=None, uploads=None, slots=None, partial=None):
        body = {}
        for key, value in (("files", files), ("uploads", uploads), ("slots", slots),
                           ("partial", partial)):
            if value is not None:
                body[key] = value
        return self._call("PUT", f"/peers/{quote(peer_id)}", body, token)

    def unregister(self, peer_id, token):
        self._call("DELETE", f"/peers/{quote(peer_id)}", token=token)

    def files(self, query=""):
        return self._call("GET", "/files?q=" + quote(query))

    def start_transfer(self, name, sha256=None, peer=None, exclude=(), requester=None):
        body = {"name": name, "exclude": list(exclude)}
        for key, value in (("sha256", sha256), ("peer", peer), ("requester", requester)):
            if value:
                body[key] = value
        answer = self._call("POST", "/transfers", body)
        self._secrets[answer["transfer_id"]] = answer.get("secret", "")
        return answer

    def renew_transfer(self, transfer_id):
        self._call("PUT", f"/transfers/{quote(transfer_id)}",
                   token=self._secrets.get(transfer_id))

    def end_transfer(self, transfer_id, outcome="done"):
        try:
            self._call("DELETE", f"/transfers/{quote(transfer_id)}?outcome={quote(outcome)}",
                       token=self._secrets.get(transfer_id))
        finally:
            self._secrets.pop(transfer_id, None)

    def status(self):
        return self._call("GET", "/status")


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


def start_beacon(server, args):
    """Announce on the interfaces we listen on; stand down when a senior one is heard."""
    addresses = discovery.addresses_for(args.host)

    def stand_down(source, senior):
        print(f"load_balancer.py: the load balancer at {format_address(source, senior.port)} "
              f"has served network {args.network!r} for longer: standing down",
              file=sys.stderr, flush=True)
        server.shutdown()

    try:
        return discovery.Beacon(args.network, server.port, addresses, stand_down,
                                secret=args.members.secret).start()
    except OSError as e:
        log.warning("not announced on the local network: %s", e)
        return None


def watch_idle(server, registry, idle_exit_s, stop):
    while not stop.wait(IDLE_CHECK_S):
        if idle_exit_s is not None and registry.idle_seconds() >= idle_exit_s:
            log.warning("no peer for %.0f s: exiting", idle_exit_s)
            server.shutdown()
            return
        registry.sweep()


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    registry = Registry(policy=args.policy, heartbeat_s=args.heartbeat)
    try:
        server = LoadBalancerServer((args.host, args.port), registry, members=args.members)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(f"load_balancer.py: port {args.port} is already in use on {args.host} "
                  "(is another load balancer running?)", file=sys.stderr)
        else:
            print(f"load_balancer.py: cannot listen on {args.host}:{args.port}: {e.strerror}",
                  file=sys.stderr)
        return 1

    def stop_on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_signal)
    stop = threading.Event()
    beacon = None
    try:
        threading.Thread(target=watch_idle, args=(server, registry, args.idle_exit, stop),
                         daemon=True, name="idle-watch").start()
        print(f"listening on {format_address(args.host, server.port)}", flush=True)
        print(f"network: {args.members.describe()}", flush=True)
        if args.announce:
            beacon = start_beacon(server, args)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if beacon is not None:
            beacon.close()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
