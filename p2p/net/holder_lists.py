"""Piece lists fetched from holders, for the load balancer's Metalinks and torrents.

The load balancer never reads files: the SHA-256 piece list of a version is
``GET /pieces/{sha256}`` on one of its whole holders, checked against the
piece-list hash the holders announced (``PieceList.from_json``), and cached
by that hash; the SHA-1 list of a torrent is ``GET /sha1/{sha256}`` on a
holder (which hashes the file once, ``sharing.py``), cached by (SHA-256,
size); a folder's, for a multi-file torrent, is ``GET /folder-sha1/{folder}/``
on a holder of every file under it, checked to list exactly the network's
files there. Each cache keeps the ``MAX_CACHED`` lists used last. A holder that does
not answer in ``FETCH_TIMEOUT_S`` or answers something else is skipped for
the next; the caller learns which holders failed (``Fetched.failed``), so a
holder that vanished between the pick and the document is left out of it.
"""

import http.client
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import quote

from p2p.core.pieces import BadPieceList, PieceList, piece_count, piece_size
from p2p.core.torrent import HEX40
from p2p.net.lb_client import authority

log = logging.getLogger("p2p.lb")

FETCH_TIMEOUT_S = 5.0  # a holder asked for a piece list answers within this
FOLDER_FETCH_TIMEOUT_S = 30.0  # ... and for a folder's SHA-1s, which it may hash first
MAX_LIST_BYTES = 64 << 20  # a piece-list reply longer than this is refused
MAX_CACHED = 256  # piece lists kept per cache (the least recently used go first)


class ListUnavailable(Exception):
    """No holder gave a good list."""


@dataclass
class Fetched:
    """A list (or None) and the holders (PeerRecord) that could not be reached for it."""
    value: object
    failed: list = field(default_factory=list)


def get_json(members, host, port, target, timeout=FETCH_TIMEOUT_S):
    """The JSON of ``GET target`` on a holder (signed on a members-only network)."""
    if members.tls is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                           context=members.tls.client)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.connect()
        conn.request("GET", target,
                     headers=members.auth_headers("GET", target, authority(conn.sock, port)))
        reply = conn.getresponse()
        body = reply.read(MAX_LIST_BYTES + 1)
    finally:
        conn.close()
    if reply.status != 200 or len(body) > MAX_LIST_BYTES:
        raise ValueError(f"answered {reply.status}")
    return json.loads(body)


def check_sha1_list(body, sha256, size):
    """The hex SHA-1s of ``body`` (a ``/sha1`` reply) for the file (sha256, size)."""
    if not isinstance(body, dict) or body.get("sha256") != sha256 or body.get("size") != size:
        raise ValueError("a SHA-1 list of another file")
    return sha1_digests(body, size, "file")


def sha1_digests(body, total, what):
    """The hex SHA-1s in ``body`` if they are one per piece of ``total`` bytes."""
    digests = body.get("pieces")
    if body.get("piece_size") != piece_size(total) or not isinstance(digests, list) or len(
            digests) != piece_count(total) or not all(
            isinstance(d, str) and HEX40.fullmatch(d) for d in digests):
        raise ValueError(f"not a SHA-1 piece list of that {what}")
    return tuple(digests)


def check_folder_sha1(body, folder, files):
    """The hex SHA-1s of ``body`` (a ``/folder-sha1`` reply) for ``files`` (FileRecords
    under ``folder``, in name order): the holder's files must be exactly those."""
    if not isinstance(body, dict) or body.get("folder") != folder:
        raise ValueError("a SHA-1 list of another folder")
    expected = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in files]
    if body.get("files") != expected:
        raise ValueError(f"other files under {folder!r} than the network's")
    return sha1_digests(body, sum(f.size for f in files), "folder")


class LRU:
    def __init__(self, limit=MAX_CACHED):
        self.limit = limit
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def __len__(self):
        with self._lock:
            return len(self._items)


class HolderLists:
    """The SHA-256 and SHA-1 piece lists of files, from their holders, cached."""

    def __init__(self, members, limit=MAX_CACHED):
        self.members = members
        self.sha256_lists = LRU(limit)  # piece-list hash -> PieceList
        self.sha1_lists = LRU(limit)  # (sha256, size) -> (hex SHA-1, ...)

    def pieces(self, record, holders, agreed):
        """Fetched(PieceList or None) of ``record`` (a FileRecord) from ``holders`` in turn,
        checked against ``agreed``, the piece-list hash the holders announced (None: no
        list is trusted, so none is fetched)."""
        if agreed is None:
            return Fetched(None)
        cached = self.sha256_lists.get(agreed)
        if cached is not None and (cached.sha256, cached.size) == (record.sha256, record.size):
            return Fetched(cached)

        def parse(body):
            return PieceList.from_json(body, record.sha256, record.size, agreed)
        fetched = self._first(holders, f"/pieces/{record.sha256}", parse)
        if fetched.value is not None:
            self.sha256_lists.put(agreed, fetched.value)
        return fetched

    def sha1(self, record, holders):
        """Fetched(hex SHA-1s) of ``record``'s pieces from ``holders`` in turn."""
        key = (record.sha256, record.size)
        cached = self.sha1_lists.get(key)
        if cached is not None:
            return Fetched(cached)

        def parse(body):
            return check_sha1_list(body, record.sha256, record.size)
        fetched = self._first(holders, f"/sha1/{record.sha256}", parse)
        if fetched.value is not None:
            self.sha1_lists.put(key, fetched.value)
        return fetched

    def folder_sha1(self, folder, files, holders):
        """Fetched(hex SHA-1s) of the pieces of ``files`` (FileRecords under ``folder``, in
        name order) one after another, from ``holders`` (each holding all of them) in turn."""
        key = (folder, tuple((f.name, f.sha256, f.size) for f in files))
        cached = self.sha1_lists.get(key)
        if cached is not None:
            return Fetched(cached)

        def parse(body):
            return check_folder_sha1(body, folder, files)
        fetched = self._first(holders, f"/folder-sha1/{quote(folder)}", parse,
                              FOLDER_FETCH_TIMEOUT_S)
        if fetched.value is not None:
            self.sha1_lists.put(key, fetched.value)
        return fetched

    def _first(self, holders, target, parse, timeout=FETCH_TIMEOUT_S):
        failed = []
        for holder in holders:
            try:
                return Fetched(parse(get_json(self.members, holder.host, holder.port, target,
                                              timeout)), failed)
            except OSError as e:  # refused, reset, timed out: gone since the pick
                log.info("no list %s from %s: %s", target, holder.address, e)
                failed.append(holder)
            except (ValueError, http.client.HTTPException, BadPieceList) as e:
                log.info("no list %s from %s: %s", target, holder.address, e)
        return Fetched(None, failed)
