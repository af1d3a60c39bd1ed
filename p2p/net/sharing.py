"""The peer's file server: what it shares, and the bytes of it over HTTP/1.1.

Protocol (served by ``FileHandler`` on a ``BoundedHTTPServer``):

=====================================  ==============================================
request (``GET`` or ``HEAD``)          answer
=====================================  ==============================================
``/``                                  an HTML index, each file name a link
``/files``                             200 [{name, size, sha256, pieces}, ...]
``/files/{name}``                      200 with ``Content-Length``, ``Content-Type``
                                       (by extension), ``Accept-Ranges: bytes``,
                                       ``ETag: "<sha256>"``, ``Last-Modified``; one
                                       ``Range: bytes=a-b`` (or ``a-``, ``-n``) gives
                                       206 + ``Content-Range`` unless ``If-Range``
                                       names another version (then 200, the whole
                                       file); ``If-None-Match`` (or, without it,
                                       ``If-Modified-Since``) that matches 304;
                                       unsatisfiable 416; a bad name 400; unknown
                                       404; every upload slot busy, or the file
                                       being hashed, 503 + ``Retry-After``; with
                                       an upload limit, a 206 or 200 with a body
                                       says it (``X-Upload-Limit``, bytes/s for
                                       all uploads) and ``X-Uploads`` (the
                                       uploads it serves now, this one among them)
``/pieces/{sha256}``                   200 ``PieceList.as_json(have)`` (``pieces.py``):
                                       ``have`` null from a holder of the whole
                                       file, the bitfield of its verified pieces
                                       from a peer still downloading it; 404 when
                                       it has neither; 400 unless ``{sha256}`` is
                                       64 lower-case hex
``/have/{sha256}``                     200 {"have": the bitfield of the verified
                                       pieces, or null from a whole holder}: what
                                       ``/pieces`` says, without the list; 404 as it
``/blobs/{sha256}``                    the file with that SHA-256, content-addressed
                                       for downloaders: from a holder of the whole
                                       file exactly as ``/files/{name}``; from a
                                       peer still downloading it, only a
                                       ``Range`` wholly inside verified pieces
                                       (206, ``ETag``, ``Content-Range``, and its
                                       verified pieces now in ``X-P2P-Have``, as
                                       on its 404 for the others), anything
                                       else 404 ``{"error", "missing": true}``
                                       (never a 200, never an unverified byte);
                                       upload slots and limit as for ``/files``
``/sha1/{sha256}``                     200 {sha256, size, piece_size, pieces}: the
                                       SHA-1 of each piece (a .torrent's v1 pieces)
``/folder-sha1/{folder}/``             200 {folder, files: [{name, size, sha256}],
                                       piece_size, pieces}: the files under the
                                       folder in name order and the SHA-1 of each
                                       piece of their concatenation (a multi-file
                                       .torrent); 404 when it shares none
=====================================  ==============================================

``/`` and ``/files`` list shared files only, never one being downloaded; each
record carries ``pieces``, the hash of its piece list, once its pieces are
hashed. The files being downloaded are in ``PartialShares`` (``server.partials``),
which the downloader fills as it verifies pieces.

On a network with a secret every request must be signed (``members.py``), or
carry the query of a presigned URL for the file it asks for (``GET`` or
``HEAD /files/{name}?p2p-expires=...&p2p-sig=...``, made by ``peer.py url``).
Under TLS the bytes go out in reads of ``TLS_SEND_BYTES`` (no ``sendfile``).

Every reply says ``Server: p2p-peer/VERSION`` and names the peer's load
balancer in ``X-P2P-Load-Balancer``, so a client that took this peer for
the load balancer can say which address it wanted.

Names are relative paths with ``/`` between parts, percent-encoded as UTF-8
in the URL. ``wire.check_name`` refuses anything that could leave the
folder or hide in it (``..``, absolute paths, backslashes, NUL and control
characters, dotfiles); ``resolve`` checks again on disk that the real path,
symlinks followed, is inside the folder. Bodies go out with
``socket.sendfile``, paced in slices when an upload limit (one rate shared by
all uploads) is set, and each upload must end within a time its size allows.

``ShareIndex`` scans the shared folder (and the verified downloads), hashes
new or changed files in a background thread (the whole-file SHA-256 and each
piece's, in one read: ``hash_pieces``) and caches the hashes, keyed by
``stamp`` (size, mtime, ctime, inode), in the hidden file ``.p2p-hashes.json``
(never shared, like every dotfile), so a restart does not re-read gigabytes.
A file found changed when served is re-hashed (503 meanwhile), never sent
under its old ETag.
"""

import email.utils
import functools
import hashlib
import html
import itertools
import json
import logging
import mimetypes
import os
import re
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from stat import S_ISREG
from urllib.parse import parse_qs, quote, unquote, urlsplit

from p2p import VERSION
from p2p.core.bottleneck import UPLOAD_LIMIT_HEADER, UPLOADS_HEADER
from p2p.core.errors import Problem
from p2p.core.members import URL_SIG_PARAM, Unauthorized
from p2p.core.metalink import digest_headers, link_header
from p2p.core.pieces import (
    HEX64,
    READ_BYTES,
    Bitfield,
    PieceList,
    piece_count,
    piece_size,
    pieces_hash,
)
from p2p.core.units import human_size
from p2p.core.wire import BadName, check_name, format_address, parse_address, percent
from p2p.http.server import (
    LIMITS,
    BoundedHTTPServer,
    HTTPProblem,
    JSONRequestHandler,
    Routes,
    unmapped,
)
from p2p.net.duplicates import Duplicates
from p2p.net.holder_lists import LRU

log = logging.getLogger("p2p.share")

CACHE_NAME = ".p2p-hashes.json"
HASH_CHUNK_BYTES = 1 << 20
HASH_BATCH_S = 1.0  # announce what is hashed at least this often while hashing a big folder
RATE_SLICE_S = 0.05  # an upload limit is applied in sendfile slices of this duration
MIN_RATE_SLICE_BYTES = 256  # small, so even a low limit sends something every second or so
DEFAULT_UPLOAD_SLOTS = 8
UPLOAD_RETRY_AFTER_S = 2
MAX_SOURCES_ANNOUNCED = 8  # a download's heartbeat names at most this many holders sending
SPEED_CHANGE_SHARE = 0.25  # ...and says its rate again once it moved this much
PEER_HEADER = "X-P2P-Peer"  # a downloading peer's own address, shown in the uploads list
HAVE_HEADER = "X-P2P-Have"  # a partial holder's verified pieces (a Bitfield's text), in each answer
SENT_HEADER = "X-P2P-Sent"  # a whole holder's pieces sent to anyone so far (super-seeding)
MAX_SENT_FILES = 64  # files whose pieces sent so far a server keeps (least recently served go)
MAX_SENT_CLIENTS = 256  # ...and downloaders of each file
SENT_ACTIVE_S = 3.0  # a downloader's pieces count while it asked for one this recently
MAX_PEER_HEADER_CHARS = 100
UPLOAD_GRACE_S = 60.0  # an upload may take this long, plus its size at the slowest rate:
MIN_UPLOAD_RATE_BYTES_S = 256
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
TLS_SEND_BYTES = 256 * 1024  # under TLS (no sendfile) the file goes out in reads of this size
PEER_SERVER = f"p2p-peer/{VERSION}"  # the Server header: what answers here is a peer
LB_HEADER = "X-P2P-Load-Balancer"  # the peer's load balancer, for a client that mistook us
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_SHA1_LISTS = 64  # SHA-1 piece lists (for .torrents) kept in memory


class RangeNotSatisfiable(ValueError):
    pass


# ---------------------------------------------------------------------------
# Pure decisions: names, ranges, rates


def name_from_url_path(path):
    """``/files/a%20b.txt`` -> ``a b.txt`` (checked), or raise BadName."""
    return name_from_url(path[len("/files/"):])


def name_from_url(quoted):
    """``a%20b.txt`` (of ``/files/a%20b.txt``) -> ``a b.txt`` (checked), or raise BadName."""
    try:
        name = unquote(quoted, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadName("The file name is not valid UTF-8.") from None
    return check_name(name)


def target_path(target):
    """The path of a request-target, origin-form or absolute-form; HTTPProblem 400 if it is
    not a URL (an unbalanced '[' in the host, say)."""
    try:
        return urlsplit(target).path
    except ValueError:
        raise HTTPProblem(400, f"The request target {target[:100]!r} is not a URL.") from None


def url_for_name(name):
    return "/files/" + quote(name, safe="/")


def within(real_root, path):
    """``path`` with its symlinks followed, if that is inside ``real_root`` (a real path)."""
    real = os.path.realpath(path)
    return real if os.path.commonpath([real_root, real]) == real_root else None


def resolve(root, name):
    """The real path of ``name`` under ``root``, or None if it is missing or escapes ``root``."""
    path = within(os.path.realpath(root), os.path.join(root, *name.split("/")))
    return path if path and os.path.isfile(path) else None


def parse_range(header, size):
    """One ``bytes=`` range -> (start, end inclusive), or None to send the whole file.

    A missing, malformed or multi-range header is ignored (RFC 9110 allows it);
    a well-formed range that misses the file raises RangeNotSatisfiable.
    """
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*([0-9]{0,19})\s*-\s*([0-9]{0,19})\s*", header)
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(header)
    return start, min(end, size - 1)


def http_date(seconds):
    """Seconds since the epoch -> an HTTP date (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    return email.utils.formatdate(seconds, usegmt=True)


def parse_http_date(text):
    """An HTTP date -> whole seconds since the epoch, or None when it is not one."""
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return int(when.timestamp()) if when.tzinfo is not None else None


def etag_listed(header, etag):
    """Does an ``If-None-Match`` list (or ``*``) name ``etag``? Weak comparison (RFC 9110)."""
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in [t[2:] if t.startswith("W/") else t for t in tags]


def not_modified(if_none_match, if_modified_since, etag, modified):
    """Answer 304? ``If-None-Match`` decides when present, else ``If-Modified-Since``."""
    if if_none_match is not None:
        return etag_listed(if_none_match, etag)
    since = parse_http_date(if_modified_since) if if_modified_since else None
    return since is not None and modified <= since


def range_applies(if_range, etag, modified):
    """Honour a Range? Only when ``If-Range`` is absent or names this very version.

    An entity tag must match strongly (a weak one never does); a date must be the
    file's ``Last-Modified`` exactly. Otherwise the whole file goes out with 200, so a
    client resuming a file that changed cannot splice two versions (RFC 9110 13.1.5).
    """
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith(('"', "W/")):
        return if_range == etag
    return parse_http_date(if_range) == modified


def content_type(name):
    """The media type of a file by its extension; bytes of unknown kind otherwise."""
    kind, encoding = mimetypes.guess_type(name, strict=False)
    return kind if kind and not encoding else DEFAULT_CONTENT_TYPE


def render_index(files, peer_name, address, lb_address, folder=""):
    """The peer's ``/`` (or ``/files/FOLDER/``): an HTML page of what it shares there, each
    name a link to the file."""
    rows = "".join(
        f"<tr><td><a href=\"{html.escape(url_for_name(f.name))}\">{html.escape(f.name)}</a></td>"
        f"<td title=\"{f.size} bytes\">{human_size(f.size)}</td><td><code>{f.sha256}</code></td>"
        "</tr>" for f in files)
    who = html.escape(" · ".join(x for x in (peer_name, address) if x))
    where = f" in {html.escape(folder)}" if folder else ""
    lb = (f"<p>Load balancer: <a href=\"http://{html.escape(lb_address)}/\">"
          f"{html.escape(lb_address)}</a></p>" if lb_address else "")
    return f"""<!doctype html>
<html><head><meta charset=utf-8><title>P2P peer {who}</title><style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:.4em .8em;text-align:left}}</style></head><body>
<h1>P2P peer {who}</h1>{lb}
<p>{len(files)} shared file(s){where} · <a href="/files">JSON</a></p>
<table><tr><th>Name</th><th>Size</th><th>SHA-256</th></tr>{rows}</table></body></html>
"""


def parse_rate(text):
    """``2M`` -> 2097152 bytes/s; ``500K``, ``1G``, ``12345``; ``0`` means unlimited."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)i?B?(?:/s)?\s*", str(text), re.I)
    if not match:
        raise ValueError(f"{text!r} is not a rate like 500K or 2M (bytes per second).")
    value = float(match.group(1)) * UNITS[match.group(2).upper()]
    return max(1, int(value)) if value else 0


def sha256_file(path, chunk=HASH_CHUNK_BYTES):
    digest = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def hash_pieces(path):
    """(whole-file SHA-256, [piece SHA-256, ...]) of the file at ``path``, in one read.

    What ``pieces.hash_file`` computes, with the whole-file hash in a second thread
    (hashlib lets go of the GIL): each read goes to both, so hashing costs one
    SHA-256 pass, not two. Two buffers take turns: one is read into and hashed
    into its piece while the other is hashed into the whole.
    """
    whole = hashlib.sha256()
    digests = []
    buffers = [memoryview(bytearray(READ_BYTES)), memoryview(bytearray(READ_BYTES))]
    with open(path, "rb", buffering=0) as f, ThreadPoolExecutor(1) as pool:
        piece = piece_size(os.fstat(f.fileno()).st_size)
        current, left, behind, turn = hashlib.sha256(), piece, None, 0
        while n := f.readinto(buffers[turn][:min(READ_BYTES, left)]):
            chunk = buffers[turn][:n]
            if behind is not None:
                behind.result()  # the whole has the chunk before this one
            behind = pool.submit(whole.update, chunk)
            current.update(chunk)
            left -= n
            if left == 0:
                digests.append(current.hexdigest())
                current, left = hashlib.sha256(), piece
            turn ^= 1
        if behind is not None:
            behind.result()
    if left != piece:
        digests.append(current.hexdigest())
    return whole.hexdigest(), digests


# ---------------------------------------------------------------------------
# The index of shared files


def stamp(st):
    """What says a file is unchanged: size, modification and change times, inode.

    The change time (ctime) cannot be set back by ``cp -p``, ``rsync -t`` or ``touch``,
    so rewriting a file and restoring its mtime still counts as a change.
    """
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def cache_entry(st, sha256, digests):
    """One entry of the hash cache file, for the file whose ``os.stat`` is ``st``."""
    return {"stamp": list(stamp(st)), "sha256": sha256, "pieces": list(digests)}


def cached_hashes(entry):
    """(stamp, sha256, digests) of one entry of the hash cache file; ValueError if it is
    not one of this version (an entry without pieces, say: that file is hashed again)."""
    try:
        st, sha256, digests = tuple(entry["stamp"]), str(entry["sha256"]), entry["pieces"]
    except (TypeError, KeyError):
        raise ValueError("not a cache entry") from None
    if not (st and isinstance(st[0], int) and isinstance(digests, list)
            and len(digests) == piece_count(st[0]) and all(isinstance(d, str) for d in digests)):
        raise ValueError("not a cache entry")
    return st, sha256, tuple(digests)


@dataclass(frozen=True)
class SharedFile:
    name: str
    sha256: str
    root: str  # the shared folder it is in
    path: str  # where it is on disk (under root, symlinks not resolved)
    stamp: tuple  # stamp() of the file that was hashed
    digests: tuple | None = None  # each piece's SHA-256; None while they are being hashed

    @property
    def size(self):
        return self.stamp[0]

    @functools.cached_property
    def pieces(self):
        """Its PieceList, or None while its pieces are being hashed."""
        if self.digests is None:
            return None
        return PieceList(self.sha256, self.size, piece_size(self.size), self.digests)

    @functools.cached_property
    def pieces_hash(self):
        return None if self.digests is None else pieces_hash(self.digests)

    def as_dict(self):
        record = {"name": self.name, "size": self.size, "sha256": self.sha256}
        if self.digests is not None:
            record["pieces"] = self.pieces_hash
        return record


def load_cache(root):
    """{name: (stamp, sha256, digests)} of the hash cache file in ``root`` ({} without one)."""
    try:
        with open(os.path.join(root, CACHE_NAME), encoding="utf-8") as f:
            raw = dict(json.load(f))
    except (OSError, ValueError, TypeError):
        return {}  # missing or unreadable: hash everything again
    cache = {}
    for name, entry in raw.items():
        try:
            cache[name] = cached_hashes(entry)
        except ValueError:
            continue  # an entry from another version: hash that file again
    return cache


def write_cache(root, kept):
    """Write the hash cache file of ``root`` for ``kept`` (SharedFiles), atomically."""
    entries = {f.name: cache_entry_of(f) for f in kept}
    target = os.path.join(root, CACHE_NAME)
    temp = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(entries, f)
        os.replace(temp, target)
    except OSError as e:
        log.warning("cannot write the hash cache %s: %s", target, e)
        try:
            os.unlink(temp)
        except OSError:
            pass


def cache_entry_of(shared):
    return {"stamp": list(shared.stamp), "sha256": shared.sha256, "pieces": list(shared.digests)}


class NameFilter:
    """Which names may be shared (``check_name``), each name checked once."""

    def __init__(self):
        self._good = set()

    def __call__(self, name):
        if name in self._good:
            return True
        try:
            check_name(name)
        except BadName:
            return False
        self._good.add(name)
        return True


def scan_roots(roots, shareable):
    """name -> (root, path, stamp) for every shareable file under ``roots`` (first wins).

    One ``scandir`` per folder and one ``stat`` per file; the real path is looked
    at only for symlinks (a symlink out of the folder is never shared; symlinked
    folders are not followed); ``shareable(name)`` says whether a name may be shared.
    """
    found = {}
    for root in roots:
        if os.path.isdir(root):
            scan_root(root, shareable, found)
    return found


def scan_root(root, shareable, found):
    real_root = os.path.realpath(root)
    folders = [(root, "")]
    while folders:
        folder, prefix = folders.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden: never shared
            name = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append((entry.path, name + "/"))
                    continue
                if name in found:
                    continue
                st = entry.stat()
                if entry.is_symlink() and within(real_root, entry.path) is None:
                    continue
            except OSError:
                continue
            if S_ISREG(st.st_mode) and shareable(name):
                found[name] = (root, entry.path, stamp(st))


class BackgroundHasher:
    """The hashing half of ShareIndex: files waiting in ``_pending`` are hashed by one
    background thread, which puts each in ``_files`` if it did not change meanwhile and
    saves the cache and calls ``on_change`` at least every HASH_BATCH_S."""

    def is_pending(self, name):
        with self._lock:
            return name in self._pending

    def pending(self):
        with self._lock:
            return len(self._pending)

    def wait_hashed(self, timeout):
        """Wait until nothing is waiting for a hash (or timeout); True if done."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wakeup.wait(left)
            return True

    def _start_hasher(self):
        if self._hasher is None or not self._hasher.is_alive():
            self._hasher = threading.Thread(target=self._hash_loop, daemon=True, name="hasher")
            self._hasher.start()

    def _hash_loop(self):
        last_announce = time.monotonic()
        dirty = set()
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    if dirty:
                        break
                    self._wakeup.wait()
                if self._closed:
                    return
                item = next(iter(self._pending.items()), None)
            if item is not None:
                name, (root, path, before) = item
                try:
                    sha256, digests = hash_pieces(path)
                    after = stamp(os.stat(path))
                except OSError as e:
                    log.warning("cannot hash %s: %s", path, e)
                    sha256, digests, after = None, None, None
                with self._lock:
                    if self._pending.get(name) == (root, path, before):
                        del self._pending[name]
                        if after == before:  # else it changed while hashed: next refresh
                            self._files[name] = SharedFile(name, sha256, root, path, before,
                                                           tuple(digests))
                            self.version += 1
                            dirty.add(root)
                    if not self._pending:
                        self._wakeup.notify_all()
            now = time.monotonic()
            if dirty and (item is None or not self.pending() or now - last_announce > HASH_BATCH_S):
                for root in dirty:
                    self._save_cache(root)
                dirty.clear()
                last_announce = now
                self.on_change()

    def close(self):
        with self._lock:
            self._closed = True
            self._wakeup.notify_all()


class ShareIndex(BackgroundHasher):
    """What this peer shares: files under ``roots`` (first root wins a name), hashed.

    ``refresh()`` rescans (stat only) and queues new or changed files for the
    background hasher; ``on_change`` is called when the list of shared files
    changed, so the peer can announce it. Thread-safe.
    """

    def __init__(self, roots, on_change=None, settle_s=0.0, clock=time.time):
        self.roots = [os.path.abspath(r) for r in roots]
        self.settle_s = settle_s  # a file written to less than this long ago waits: it may
        self._clock = clock  # still be being copied in (see _settled)
        self._settling = set()  # names seen on disk, not yet still for settle_s
        self._shareable = NameFilter()
        self.on_change = on_change or (lambda: None)
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._files = {}  # name -> SharedFile
        self._by_hash = (None, {})  # (version it was made at, sha256 -> first SharedFile)
        self._caches = {root: load_cache(root) for root in self.roots}
        self._pending = {}  # name -> (root, path, stamp) waiting for a hash
        self._wakeup = threading.Condition(self._lock)
        self._hasher = None
        self._closed = False
        self.version = 0  # bumped whenever the shared list changes

    def _save_cache(self, root):
        with self._save_lock:  # one writer at a time: an older snapshot never lands last
            with self._lock:
                kept = [f for f in self._files.values()
                        if f.root == root and f.digests is not None]
                self._caches[root] = {f.name: (f.stamp, f.sha256, f.digests) for f in kept}
            write_cache(root, kept)

    def _settled(self, st):
        """Has the file of ``stamp`` ``st`` been still for ``settle_s``?

        By its change time, which every write moves to now and which, unlike the
        modification time, cannot be set to the future (``touch``, ``cp -p``).
        """
        return self.settle_s <= 0 or self._clock() - st[2] / 1e9 >= self.settle_s

    def refresh(self):
        """Rescan the folders; returns True if the shared list changed."""
        on_disk = scan_roots(self.roots, self._shareable)
        changed = False
        with self._lock:
            for name in list(self._files):
                entry = self._files[name]
                disk = on_disk.get(name)
                if disk is None or (disk[1], disk[2]) != (entry.path, entry.stamp):
                    del self._files[name]
                    changed = True
            self._settling.clear()
            for name, (root, path, now) in on_disk.items():
                if name in self._files:
                    continue
                cached = self._caches[root].get(name)
                if cached and cached[0] == now:
                    self._files[name] = SharedFile(name, cached[1], root, path, now, cached[2])
                    changed = True
                elif not self._settled(now):
                    self._settling.add(name)
                    self._pending.pop(name, None)
                else:
                    self._pending[name] = (root, path, now)
            for name in list(self._pending):
                if name not in on_disk:
                    del self._pending[name]
            if changed:
                self.version += 1
            if self._pending:
                self._start_hasher()
                self._wakeup.notify_all()
        if changed:
            for root in self.roots:
                if os.path.isdir(root):
                    self._save_cache(root)
        return changed

    def add_verified(self, root, path, sha256, digests=None):
        """A file we just downloaded and verified: share it without hashing it again.

        Without its piece ``digests`` it is shared at once and its pieces are hashed in
        the background (its piece list is announced when they are)."""
        root = os.path.abspath(root)
        st = os.stat(path)
        name = os.path.relpath(path, root).replace(os.sep, "/")
        with self._lock:
            if name in self._files:
                return
            self._files[name] = SharedFile(name, sha256, root, path, stamp(st),
                                           None if digests is None else tuple(digests))
            self.version += 1
            if digests is None:
                self._pending[name] = (root, path, stamp(st))
                self._start_hasher()
                self._wakeup.notify_all()
        self._save_cache(root)
        self.on_change()

    def invalidate(self, name):
        """``name`` changed on disk: stop sharing it until the hasher has hashed it again."""
        with self._lock:
            entry = self._files.pop(name, None)
            if entry is None:
                return
            self.version += 1
            try:
                self._pending[name] = (entry.root, entry.path, stamp(os.stat(entry.path)))
            except OSError:
                pass
            self._start_hasher()
            self._wakeup.notify_all()
        self.on_change()

    def is_settling(self, name):
        """Is ``name`` still being written (changed less than ``settle_s`` ago)?"""
        with self._lock:
            return name in self._settling

    def settling(self):
        with self._lock:
            return len(self._settling)

    # -- lookups ------------------------------------------------------------

    def get(self, name):
        with self._lock:
            return self._files.get(name)

    def files(self):
        with self._lock:
            return sorted(self._files.values(), key=lambda f: f.name)

    def find_by_hash(self, sha256):
        """A shared file with this content, or None (so a peer never fetches what it has).

        Asked for every ``/blobs`` request: the index by SHA-256 is made again only when
        the shared list changed (``version``), not searched file by file each time."""
        with self._lock:
            made_at, by_hash = self._by_hash
            if made_at != self.version:
                by_hash = {}
                for entry in self._files.values():
                    by_hash.setdefault(entry.sha256, entry)
                self._by_hash = (self.version, by_hash)
            return by_hash.get(sha256)

    def find_on_disk(self, sha256):
        """Like ``find_by_hash``, but checked on disk now: a file removed or changed since
        the last scan is not "had" (the folders are scanned again when one is found gone)."""
        entry = self.find_by_hash(sha256)
        if entry is None:
            return None
        try:
            unchanged = stamp(os.stat(entry.path)) == entry.stamp
        except OSError:
            unchanged = False
        if unchanged:
            return entry
        self.refresh()
        return self.find_by_hash(sha256)

    def __len__(self):
        with self._lock:
            return len(self._files)


# ---------------------------------------------------------------------------
# Files being downloaded, shared piece by piece


@dataclass(frozen=True)
class PartialShare:
    """A file this peer is downloading: its pieces, the verified ones (``have``), and the
    hidden partial file ``path`` where each verified piece is at its offset; ``progress``
    gives the bytes on disk so far (verified, or written unhashed while the download is
    alone), the download's true progress, or None: the verified bytes are."""
    name: str
    pieces: PieceList
    have: Bitfield
    path: str
    progress: object = None

    @property
    def size(self):
        return self.pieces.size

    @property
    def done(self):
        """Verified bytes."""
        count, have = self.pieces.count, len(self.have)
        if not have:
            return 0
        short = self.pieces.piece_size - self.pieces.span(count - 1)[1]
        return have * self.pieces.piece_size - (short if count - 1 in self.have else 0)

    def covers(self, start, end):
        """Is every byte from ``start`` to ``end`` (inclusive) in a verified piece?"""
        size = self.pieces.piece_size
        return all(i in self.have for i in range(start // size, end // size + 1))


class PartialShares:
    """The files this peer is downloading, by SHA-256, for its server and its heartbeat.

    Thread-safe. ``version`` grows on every ``add`` and ``remove`` and whenever the
    downloader says, with ``touch()``, that a ``have`` grew, or with ``set_speed`` that
    how fast a download goes changed enough to say; ``on_change`` is called then too,
    so the peer can announce it.
    """

    def __init__(self, on_change=None):
        self.on_change = on_change or (lambda: None)
        self._lock = threading.Lock()
        self._shares = {}  # sha256 -> PartialShare
        self._hashes = {}  # sha256 -> its piece-list hash, computed once
        self._stalled = set()  # sha256 of the downloads waiting for a holder to come back
        self._speed = {}  # sha256 -> {rate, sources, limit} as the heartbeat says it
        self.version = 0

    def add(self, name, pieces, have, path, progress=None):
        with self._lock:
            self._shares[pieces.sha256] = PartialShare(name, pieces, have, path, progress)
            self._hashes[pieces.sha256] = pieces.hash
            self.version += 1
        self.on_change()

    def remove(self, sha256):
        with self._lock:
            if self._shares.pop(sha256, None) is None:
                return
            del self._hashes[sha256]
            self._stalled.discard(sha256)
            self._speed.pop(sha256, None)
            self.version += 1
        self.on_change()

    def set_stalled(self, sha256, stalled):
        """The download of ``sha256`` waits for a holder to come back (or no longer does)."""
        with self._lock:
            if sha256 not in self._shares or (sha256 in self._stalled) == stalled:
                return
            (self._stalled.add if stalled else self._stalled.discard)(sha256)
            self.version += 1
        self.on_change()

    def set_speed(self, sha256, rate, sources, limit):
        """How fast the download of ``sha256`` goes: ``rate`` bytes/s, ``sources`` (each a
        ``bottleneck.Source`` sending, the fastest first) and ``limit`` (what holds it back,
        in words). Announced when the reason or the holders sending changed, or the rate
        by SPEED_CHANGE_SHARE."""
        said = {"rate": int(rate), "limit": limit,
                "sources": [{"address": s.address, "rate": int(s.rate)}
                            for s in sources[:MAX_SOURCES_ANNOUNCED]]}
        with self._lock:
            before = self._speed.get(sha256)
            if sha256 not in self._shares or not speed_changed(before, said):
                return
            self._speed[sha256] = said
            self.version += 1
        self.on_change()

    def touch(self):
        with self._lock:
            self.version += 1
        self.on_change()

    def get(self, sha256):
        with self._lock:
            return self._shares.get(sha256)

    def announced(self):
        """What the heartbeat says: [{name, size, sha256, pieces, done, stalled?, rate?,
        sources?, limit?}], done in bytes on disk (the download's progress), stalled (true)
        while the download waits for a holder to come back, and how fast it goes
        (``set_speed``) once it was said."""
        with self._lock:
            shares = [(s, self._hashes[k], k in self._stalled, self._speed.get(k, {}))
                      for k, s in self._shares.items()]
        return [{"name": s.name, "size": s.size, "sha256": s.pieces.sha256, "pieces": h,
                 "done": s.done if s.progress is None else s.progress(),
                 **({"stalled": True} if stalled else {}),
                 **{key: value for key, value in speed.items() if value}}
                for s, h, stalled, speed in shares]

    def __len__(self):
        with self._lock:
            return len(self._shares)


def speed_changed(before, now):
    """Is how fast a download goes (``PartialShares.set_speed``'s record) worth saying
    again: another reason, other holders sending, or a rate SPEED_CHANGE_SHARE away?"""
    if before is None:
        return True
    addresses = [sorted(s["address"] for s in x["sources"]) for x in (before, now)]
    return (before["limit"] != now["limit"] or addresses[0] != addresses[1]
            or abs(now["rate"] - before["rate"]) > SPEED_CHANGE_SHARE * before["rate"])


# ---------------------------------------------------------------------------
# Uploads in progress (for the menu and the heartbeat)


@dataclass
class Upload:
    id: int
    client: str
    name: str
    total: int  # bytes of this response (the whole file, or the range asked for)
    start: int = 0  # where the range starts in the file
    size: int = 0  # the whole file
    sent: int = 0
    pushed: int = 0  # ...or, when it broke, bytes the kernel took, some perhaps never received

    @property
    def pieces(self):
        """(first, last) index of the pieces its range touches."""
        piece = piece_size(self.size)
        return self.start // piece, (self.start + self.total - 1) // piece


class UploadSlots:
    """At most ``slots`` uploads at once; the rest are told to come back later."""

    def __init__(self, slots=DEFAULT_UPLOAD_SLOTS):
        self.slots = slots
        self._lock = threading.Lock()
        self._active = {}
        self._ids = itertools.count(1)

    def acquire(self, client, name, total, start=0, size=0):
        with self._lock:
            if len(self._active) >= self.slots:
                return None
            upload = Upload(next(self._ids), client, name, total, start, size or total)
            self._active[upload.id] = upload
            return upload

    def release(self, upload):
        with self._lock:
            self._active.pop(upload.id, None)

    def active(self):
        with self._lock:
            return list(self._active.values())

    def __len__(self):
        with self._lock:
            return len(self._active)


class SentPieces:
    """Which pieces of each whole file this server has sent to the downloaders fetching
    from it now (by ``/blobs`` ranges), for super-seeding (BitTorrent's BEP 16): every
    answer says them (``SENT_HEADER``), and downloaders ask a whole holder for the
    pieces it has not sent to anyone first, so that each piece leaves it once while the
    swarm lacks it, and the others get it from the peer that did.

    A piece counts from the moment it is asked for (so that others asking meanwhile take
    other pieces) until its upload stops short of it. A downloader's pieces count while
    it asks for more (within ``SENT_ACTIVE_S`` of its last request), and only until it
    has had every piece from here: one that fetched the whole file here, alone, is no
    help to the others. Kept for the MAX_SENT_FILES files served last, and at most
    MAX_SENT_CLIENTS downloaders each (the least recent go first).

    Strict (BEP 16 on the serving side): while some piece has been sent to none of them, a
    range whose every piece has been sent to another of them is *taken*: refused (a 404
    that says the pieces sent), so the seed's upload goes to pieces nobody has yet and the
    downloader asks the one that has it. A downloader's views of what was sent lag by the
    requests in flight; the refusal costs it one round trip instead of the seed a piece.
    Asked again for pieces it refused that downloader (or for pieces it sent it before),
    it sends them: the downloader has nothing better to ask for here (none of its holders
    may have them).
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._files = LRU(MAX_SENT_FILES)
        self._lock = threading.Lock()

    def _clients(self, entry):
        """{client: [last request time, bit mask of the pieces sent, of those refused]} of
        ``entry``."""
        clients = self._files.get(entry.sha256)
        if clients is None:
            clients = {}
            self._files.put(entry.sha256, clients)
        return clients

    def mark(self, entry, range_header, client):
        """``client`` asks for a range: (that range (start, end inclusive), the pieces sent
        to the downloaders fetching here now, as a Bitfield's text, and whether the range is
        taken: refused, nothing marked), or None for a request of no range."""
        try:
            wanted = parse_range(range_header, entry.size)
        except RangeNotSatisfiable:
            return None
        if wanted is None:
            return None
        count, piece = piece_count(entry.size), piece_size(entry.size)
        every = (1 << count) - 1
        asked = (1 << wanted[1] // piece + 1) - (1 << wanted[0] // piece)  # those pieces' bits
        now, others = self.clock(), 0
        with self._lock:
            clients = self._clients(entry)
            _, mask, refused = clients.pop(client, (now, 0, 0))
            for last, sent, _ in clients.values():
                if now - last <= SENT_ACTIVE_S and sent != every:
                    others |= sent
            taken = (asked & ~others == 0 and (others | mask) != every
                     and asked & ~refused & ~mask)
            clients[client] = ([now, mask, refused | asked] if taken  # the most recent last
                               else [now, mask | asked, refused & ~asked])
            while len(clients) > MAX_SENT_CLIENTS:
                del clients[next(iter(clients))]
            union = others | clients[client][1] if clients[client][1] != every else others
        return wanted, self._text(count, union), bool(taken)

    @staticmethod
    def _text(count, union):
        bits = Bitfield(count)
        for index in range(count):
            if union >> index & 1:
                bits.add(index)
        return bits.to_text()

    def stopped(self, entry, wanted, reached, client):
        """The upload of the range ``wanted`` to ``client`` stopped short at byte
        ``reached`` (of the file): the pieces it did not send whole do not count."""
        piece = piece_size(entry.size)
        with self._lock:
            record = self._clients(entry).get(client)
            if record is None:
                return
            for index in range(max(wanted[0] // piece, reached // piece),
                               wanted[1] // piece + 1):
                record[1] &= ~(1 << index)


# ---------------------------------------------------------------------------
# The HTTP handler


class PieceRoutes:
    """The content-addressed routes of FileHandler: ``/pieces``, ``/sha1``, ``/folder-sha1``
    and ``/blobs``."""

    def route_pieces(self, hex_digits):
        sha256 = sha256_from_url(hex_digits)
        entry = self.server.index.find_by_hash(sha256)
        if entry is not None:
            if entry.pieces is None:
                problem = HTTPProblem(503, f"The pieces of {entry.name!r} are being hashed on "
                                           "this peer; try again shortly.")
                problem.headers["Retry-After"] = str(UPLOAD_RETRY_AFTER_S)
                raise problem
            self.send_json(200, entry.pieces.as_json())
            return
        share = self.server.partials.get(sha256)
        if share is None:
            raise HTTPProblem(404, f"This peer has no file with SHA-256 {sha256}.")
        self.send_json(200, share.pieces.as_json(share.have))

    def route_have(self, hex_digits):
        """GET /have/{sha256}: the pieces verified here now, without the piece list (what a
        downloader asks again while it waits for new pieces)."""
        sha256 = sha256_from_url(hex_digits)
        if self.server.index.find_by_hash(sha256) is not None:
            self.send_json(200, {"have": None})
            return
        share = self.server.partials.get(sha256)
        if share is None:
            raise HTTPProblem(404, f"This peer has no file with SHA-256 {sha256}.")
        self.send_json(200, {"have": share.have.to_text()})

    def route_blob(self, hex_digits):
        """GET /blobs/{sha256}: a shared file as /files serves it, else verified bytes of a
        partial one, only by a range wholly inside verified pieces (never a 200)."""
        sha256 = sha256_from_url(hex_digits)
        send_body = self.command == "GET"  # a HEAD: the headers only
        entry = self.server.index.find_by_hash(sha256)
        if entry is not None:
            self.send_super_seeding(entry, send_body)
            return
        share = self.server.partials.get(sha256)
        if share is None:
            raise HTTPProblem(404, f"This peer has no file with SHA-256 {sha256}.")
        etag = f'"{sha256}"'
        header, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        try:  # without a Last-Modified here, only this ETag in If-Range lets a Range apply
            wanted = parse_range(header, share.size) if if_range in (None, etag) else None
        except RangeNotSatisfiable:
            raise unsatisfiable(header, share.size) from None
        if wanted is None or not share.covers(*wanted):
            raise missing(share, wanted)
        try:
            f = open(share.path, "rb")
        except OSError:  # finished (renamed away) or given up since we looked
            entry = self.server.index.find_by_hash(sha256)
            if entry is None:
                raise missing(share, wanted) from None
            self.send_shared(entry.name, entry, send_body)
            return
        with f:
            self.send_range(f, share, send_body,
                            {"ETag": etag, HAVE_HEADER: share.have.to_text()}, True)

    def send_super_seeding(self, entry, send_body):
        """A range of a whole file, saying which pieces have been sent to anyone so far
        (``SentPieces``); those its upload did not reach do not count."""
        client = self.client_name()
        marked = self.server.sent.mark(entry, self.headers.get("Range"),
                                       client) if send_body else None
        if marked is None:
            self.send_shared(entry.name, entry, send_body)
            return
        wanted, sent, taken = marked
        if taken:
            problem = HTTPProblem(404, "This peer has sent those pieces to other downloaders "
                                       "and not yet every piece to anyone: ask them "
                                       "(super-seeding).", missing=True)
            problem.headers[SENT_HEADER] = sent
            raise problem
        self.body_reached = self.body_pushed = None
        try:
            self.send_shared(entry.name, entry, send_body, {SENT_HEADER: sent})
        finally:
            reached = self.body_reached
            if reached is None or reached <= wanted[1]:
                self.server.sent.stopped(entry, wanted, reached or wanted[0], client)
            log.info("super-seeding: %d of bytes %d-%d of %s sent to %s",
                     (self.body_pushed or wanted[0]) - wanted[0], wanted[0], wanted[1],
                     entry.sha256, client)

    def route_sha1(self, hex_digits):
        """GET /sha1/{sha256}: the SHA-1 of each piece of a shared file (for a .torrent),
        hashed once and kept (``Sha1Lists``)."""
        entry = self.server.index.find_by_hash(sha256_from_url(hex_digits))
        if entry is None:
            raise HTTPProblem(404, f"This peer does not share the whole of {hex_digits}.")
        try:
            digests = self.server.sha1_lists.get(entry)
        except OSError:
            raise HTTPProblem(404, f"{entry.name!r} cannot be read on this peer now.") from None
        self.send_json(200, {"sha256": entry.sha256, "size": entry.size,
                             "piece_size": piece_size(entry.size), "pieces": list(digests)})

    def route_folder_sha1(self, quoted_folder):
        """GET /folder-sha1/{folder}/: the files under a folder in name order and the SHA-1
        of each piece of their concatenation (a multi-file .torrent), hashed once and kept."""
        try:
            folder = name_from_url(quoted_folder.rstrip("/")) + "/"
        except BadName as e:
            raise HTTPProblem(400, str(e)) from None
        entries = sorted((f for f in self.server.index.files() if f.name.startswith(folder)),
                         key=lambda f: f.name)
        if not entries:
            raise HTTPProblem(404, f"This peer shares nothing under {folder!r}.")
        try:
            digests = self.server.sha1_lists.get(*entries)
        except OSError:
            raise HTTPProblem(404, f"A file under {folder!r} cannot be read on this peer "
                                   "now.") from None
        self.send_json(200, {"folder": folder,
                             "files": [{"name": e.name, "size": e.size, "sha256": e.sha256}
                                       for e in entries],
                             "piece_size": piece_size(sum(e.size for e in entries)),
                             "pieces": list(digests)})


class FileHandler(PieceRoutes, JSONRequestHandler):
    """Serves ``self.server.index`` with ``self.server.uploads`` slots."""

    server_version = PEER_SERVER
    routes = Routes({
        "/": {"GET": "page"},
        "/files": {"GET": "files"},
        "/files/**": {"GET": "file"},
        "/pieces/**": {"GET": "pieces"},
        "/have/**": {"GET": "have"},
        "/blobs/**": {"GET": "blob"},
        "/sha1/**": {"GET": "sha1"},
        "/folder-sha1/**": {"GET": "folder_sha1"},
    })
    not_found = "There is nothing at {path!r} on this peer; try GET / or GET /files."

    def send_whole(self, status, body, content_type, headers=None):
        headers = dict(headers or {})
        if self.server.lb_address:
            headers[LB_HEADER] = self.server.lb_address
        super().send_whole(status, body, content_type, headers)

    def refuse_other_methods(self):
        self.discard_body()
        problem = HTTPProblem(405, "This peer only answers GET and HEAD.")
        problem.headers["Allow"] = "GET, HEAD"
        self.send_problem(problem)

    do_POST = do_PUT = do_DELETE = do_PATCH = refuse_other_methods

    def check_auth(self, secret):
        """A signed request, or a presigned URL of the file it asks for."""
        try:
            url = urlsplit(self.path)
        except ValueError:  # not a URL, so not a presigned one (serve answers 400)
            return super().check_auth(secret)
        query = parse_qs(url.query) if url.query else {}
        if URL_SIG_PARAM not in query:
            return super().check_auth(secret)
        try:
            name = name_from_url_path(url.path)
        except BadName:
            raise Unauthorized("A signed URL is good for /files/NAME only.") from None
        secret.check_url(self.command, name, query)

    def serve(self):
        try:
            self.discard_body()  # a body on GET/HEAD means nothing here; keep the stream in step
            self.request_read()
            self.dispatch(target_path(self.path))
        except Problem as problem:
            self.send_problem(problem)
        except Exception:
            self.send_unexpected()

    do_GET = do_HEAD = serve

    def route_page(self):
        page = render_index(self.server.index.files(), self.server.peer_name,
                            self.server.address, self.server.lb_address)
        self.send_whole(200, page.encode("utf-8"), "text/html; charset=utf-8")

    def route_files(self):
        self.send_json(200, [f.as_dict() for f in self.server.index.files()])

    def route_file(self, quoted_name):
        try:
            name = name_from_url(quoted_name.rstrip("/")) if quoted_name.strip("/") else ""
        except BadName as e:
            raise HTTPProblem(400, str(e)) from None
        if quoted_name.endswith("/") or not name:
            self.send_folder(name)
            return
        index = self.server.index
        entry = index.get(name)
        if entry is None and (index.is_pending(name) or index.is_settling(name)):
            doing = "is being hashed" if index.is_pending(name) else "is still being written"
            problem = HTTPProblem(503, f"{name!r} {doing} on this peer; try again shortly.")
            problem.headers["Retry-After"] = str(UPLOAD_RETRY_AFTER_S)
            raise problem
        self.send_shared(name, entry, self.command == "GET")  # a HEAD: the headers only

    def send_folder(self, folder):
        """GET /files/FOLDER/: the files under it, as HTML for a browser, else as JSON."""
        prefix = folder + "/" if folder else ""
        files = [f for f in self.server.index.files() if f.name.startswith(prefix)]
        if not files:
            raise HTTPProblem(404, f"This peer shares nothing under {prefix or '/'!r}.")
        if "text/html" in self.headers.get("Accept", ""):
            page = render_index(files, self.server.peer_name, self.server.address,
                                self.server.lb_address, folder=prefix)
            self.send_whole(200, page.encode("utf-8"), "text/html; charset=utf-8")
        else:
            self.send_json(200, {"folder": prefix, "files": [f.as_dict() for f in files]})

    def send_shared(self, name, entry, send_body, extra=None):
        """The bytes of shared file ``entry`` (None: not shared), as GET /files/{name}, with
        the ``extra`` headers."""
        real = entry and resolve(entry.root, name)
        if not real:
            raise HTTPProblem(404, f"This peer does not share {name!r}.")
        try:
            f = open(real, "rb")
        except OSError:
            raise HTTPProblem(404, f"This peer does not share {name!r}.") from None
        with f:
            if stamp(os.fstat(f.fileno())) != entry.stamp:
                self.server.index.invalidate(name)
                problem = HTTPProblem(503, f"{name!r} changed on disk and is being hashed again.")
                problem.headers["Retry-After"] = str(UPLOAD_RETRY_AFTER_S)
                raise problem
            etag, modified = f'"{entry.sha256}"', entry.stamp[1] // 1_000_000_000
            validators = {"ETag": etag, "Last-Modified": http_date(modified)}
            if not_modified(self.headers.get("If-None-Match"),
                            self.headers.get("If-Modified-Since"), etag, modified):
                self.send_whole(304, b"", None, validators)
                return
            use_range = range_applies(self.headers.get("If-Range"), etag, modified)
            headers = {**validators, **digest_headers(entry.sha256), **(extra or {})}
            duplicates = self.server.duplicates.urls(entry.name, entry.sha256)
            if duplicates:
                headers["Link"] = link_header(duplicates)
            self.send_range(f, entry, send_body, headers, use_range)

    def send_range(self, f, entry, send_body, validators, use_range):
        size = entry.size
        try:
            wanted = parse_range(self.headers.get("Range"), size) if use_range else None
        except RangeNotSatisfiable:
            raise unsatisfiable(self.headers.get("Range"), size) from None
        start, end = wanted if wanted else (0, size - 1)
        length = end - start + 1
        upload = None
        if send_body and length > 0:
            client = self.client_name()
            upload = self.server.uploads.acquire(client, entry.name, length, start, size)
            if upload is None:
                problem = HTTPProblem(503, "Every upload slot of this peer is busy; "
                                           "try again shortly or ask another peer.")
                problem.headers["Retry-After"] = str(UPLOAD_RETRY_AFTER_S)
                raise problem
        try:
            self.send_response(206 if wanted else 200)
            for key, value in body_headers(entry.name, length, validators,
                                           wanted and (start, end, size)):
                self.send_header(key, value)
            if upload is not None and self.server.limiter is not None:
                self.send_header(UPLOAD_LIMIT_HEADER, str(int(self.server.limiter.rate)))
                self.send_header(UPLOADS_HEADER, str(len(self.server.uploads)))
            self.end_headers()
            self.wfile.flush()
            if upload is not None:
                self.send_body(f, start, length, upload)
                self.body_reached = start + upload.sent
                self.body_pushed = start + max(upload.sent, upload.pushed)
        finally:
            if upload is not None:
                self.server.uploads.release(upload)

    def client_name(self):
        """The downloading peer's own address if it said one that parses, else the TCP one."""
        claimed = self.headers.get(PEER_HEADER, "")[:MAX_PEER_HEADER_CHARS]
        try:
            host, port = parse_address(claimed)
            return format_address(host, port) if port else host
        except ValueError:
            return format_address(unmapped(self.client_address[0]), self.client_address[1])

    def send_body(self, f, offset, count, upload):
        limiter = self.server.limiter
        # However slow the client, an upload ends within a time its size allows (with a limit
        # set, as if every upload slot shared it).
        slowest = MIN_UPLOAD_RATE_BYTES_S if limiter is None else min(
            MIN_UPLOAD_RATE_BYTES_S, limiter.rate / self.server.uploads.slots)
        self.server.set_deadline(self.connection, UPLOAD_GRACE_S + count / slowest)
        try:
            if limiter is None:
                upload.sent = send_file_range(self.connection, f, offset, count)
            else:
                while upload.sent < count:
                    n = min(limiter.slice_bytes, count - upload.sent)
                    limiter.wait(n)
                    sent = send_file_range(self.connection, f, offset + upload.sent, n)
                    if sent == 0:
                        break
                    upload.sent += sent
        except OSError as e:  # sendfile leaves the file where the kernel took it to
            upload.pushed = f.tell() - offset
            log.info("upload of %s to %s stopped: %s", upload.name, upload.client, e)
            self.close_connection = True
            return
        if upload.sent != count:
            self.close_connection = True  # the file shrank under us: the client sees a short body


def body_headers(name, length, validators, span):
    """The headers of a file's 200 or 206 (``span``: (start, end, size) of a 206)."""
    base = name.split("/")[-1]
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                    for c in base)
    headers = [("Content-Type", content_type(name)), ("Content-Length", str(length)),
               ("Accept-Ranges", "bytes"), *validators.items(),
               ("Content-Disposition",
                f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(base)}")]
    if span:
        start, end, size = span
        headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    return headers


def send_file_range(sock, f, offset, count):
    """Send ``count`` bytes of ``f`` from ``offset``; the bytes sent (fewer if the file shrank).

    Plain sockets use ``sendfile`` (the kernel copies). Python 3.11 has no kernel TLS, and an
    SSLSocket's own sendfile falls back to 8 KiB reads, so under TLS the file is read in
    TLS_SEND_BYTES slices into one reused buffer, each encrypted and sent with sendall.
    """
    if not isinstance(sock, ssl.SSLSocket):
        return sock.sendfile(f, offset, count)
    buf = bytearray(min(TLS_SEND_BYTES, count))
    sent = 0
    while sent < count:
        n = os.preadv(f.fileno(), [memoryview(buf)[:min(len(buf), count - sent)]], offset + sent)
        if n <= 0:
            break
        sock.sendall(memoryview(buf)[:n])
        sent += n
    return sent


class RateLimiter:
    """One upload rate (bytes/s) shared by every upload of a peer, paced in small slices."""

    def __init__(self, rate):
        self.rate = rate
        self.slice_bytes = max(MIN_RATE_SLICE_BYTES, int(rate * RATE_SLICE_S))
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def wait(self, nbytes):
        """Sleep until ``nbytes`` more may go out without exceeding the rate."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + nbytes / self.rate
        if start > now:
            time.sleep(start - now)


def sha256_from_url(sha256):
    """HEX of ``/blobs/HEX`` or ``/pieces/HEX``; HTTPProblem 400 unless 64 lower-case hex."""
    if not HEX64.fullmatch(sha256):
        raise HTTPProblem(400, f"{sha256[:100]!r} is not a SHA-256 (64 lower-case hex digits).")
    return sha256


def unsatisfiable(header, size):
    problem = HTTPProblem(416, f"The range {header!r} is outside the file's {size} bytes.")
    problem.headers["Content-Range"] = f"bytes */{size}"
    return problem


def missing(share, wanted):
    """The 404 of a partial holder asked for bytes it has not verified."""
    span = f"bytes {wanted[0]}-{wanted[1]}" if wanted else "the whole file"
    problem = HTTPProblem(404, f"This peer has verified only {percent(share.done, share.size)} "
                               f"% of that file so far; ask another peer for {span}.",
                          missing=True)
    problem.headers[HAVE_HEADER] = share.have.to_text()
    return problem


def sha1_pieces(paths, piece):
    """The hex SHA-1 of each ``piece``-byte piece of the files at ``paths`` one after another
    (a torrent's v1 pieces, which run across file boundaries)."""
    digests = []
    buf = memoryview(bytearray(min(READ_BYTES, piece)))
    current, left = hashlib.sha1(), piece
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf[:min(len(buf), left)]):
                current.update(buf[:n])
                left -= n
                if left == 0:
                    digests.append(current.hexdigest())
                    current, left = hashlib.sha1(), piece
    if left != piece:
        digests.append(current.hexdigest())
    return tuple(digests)


class Sha1Lists:
    """The SHA-1 piece lists of shared files, each hashed once (one file at a time) and kept
    while the file is unchanged; the MAX_SHA1_LISTS used last are kept."""

    def __init__(self, limit=MAX_SHA1_LISTS):
        self._lists = LRU(limit)
        self._lock = threading.Lock()

    def get(self, *entries):
        """The SHA-1 piece list of ``entries`` (shared files) one after another, at the
        network's piece size for their total size; OSError when one cannot be read."""
        key = tuple((e.sha256, e.stamp) for e in entries)
        total = sum(e.size for e in entries)
        with self._lock:
            digests = self._lists.get(key)
            if digests is None:
                digests = sha1_pieces([e.path for e in entries], piece_size(total))
                if len(digests) != piece_count(total):
                    raise OSError(f"{entries[0].path} changed while hashed")
                self._lists.put(key, digests)
        return digests


class FileServer(BoundedHTTPServer):
    peer_name = ""  # what the peer calls itself, shown on its page
    address = ""  # where other peers reach it, shown on its page
    lb_address = ""  # its load balancer, told to a client that mistook this peer for it

    def __init__(self, address, index, upload_slots=DEFAULT_UPLOAD_SLOTS, upload_limit=0,
                 partials=None, **limits):
        self.index = index
        self.partials = partials if partials is not None else PartialShares()
        self.uploads = UploadSlots(upload_slots)
        self.limiter = RateLimiter(upload_limit) if upload_limit else None
        self.sha1_lists = Sha1Lists()
        self.sent = SentPieces()
        self.duplicates = Duplicates(self)
        limits.setdefault("workers", LIMITS.workers + upload_slots)  # uploads hold theirs
        super().__init__(address, FileHandler, **limits)
