"""The downloader: a file from many holders at once into ``downloads/``, verified.

Steps (DESIGN "Download", "Pieces and the swarm"):

1. Ask the load balancer for up to MAX_SOURCES holders (``lb_client.LBClient.pick``):
   each is a transfer it counts (a ``Lease``), renewed by one thread for the
   whole download and ended with how it went. While every holder is busy the
   download waits and says so, for as long as holders are online (or
   ``wait_s``); busy is never failure.
2. Fetch the file's piece list (``GET /pieces/{sha256}``, see ``pieces.py``)
   from a holder, checked against the piece-list hash the holders announced.
3. One connection per holder (``HolderConnection``, keep-alive) asks for the
   pieces ``plan.Plan`` gives it (``GET /blobs/{sha256}`` with ``Range``,
   straight into a buffer of its own); verifier threads hash each piece and
   write it at its offset of the hidden partial file
   ``.<name>.<sha256[:16]>.part`` only when it matches, then tell the plan and
   the peer's server (``partials``: a downloading peer shares what it has
   verified). Bad pieces are fetched again elsewhere and blamed; slow holders
   are let go; every few seconds the load balancer is asked for more holders.
4. ``WholeHash`` follows the verified pieces in order; only when the whole
   SHA-256 and size match does the file get its final name, with a hard link
   that never replaces an existing file (a different file of that name keeps
   it; the new one becomes ``name (1).ext``).
5. The caller shares the verified file from then on.

A download stopped by Ctrl-C, a crash or a full disk keeps its partial file;
the next run keeps every piece in it that still matches its SHA-256 and
fetches the rest. ``find_unfinished`` lists those files and
``remove_unfinished`` deletes one that is not running. ``plan_target``,
``collision_name``, ``parse_response_head`` and ``check_response`` are pure
decisions; which piece next and whom to blame is ``plan.py``.

``DownloadQueue`` runs downloads in background threads, a few at once, each
cancellable; ``DirectSource`` stands in for the load balancer when there is
none and the person named the peer to ask.
"""

import collections
import errno
import hashlib
import http.client
import json
import logging
import os
import queue
import re
import shutil
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from p2p.core.errors import Problem
from p2p.core.members import OPEN
from p2p.core.pieces import BadPieceList, Bitfield, OtherFile, PieceList
from p2p.core.plan import Plan
from p2p.core.wire import FileRecord, format_address
from p2p.http.server import header_field
from p2p.net.lb_client import (
    AllBusy,
    LBClientError,
    Lease,
    NoHolderLeft,
    NotFound,
    Pick,
    Unauthorized,
    Unreachable,
    SECRET_FIX,
    TLS_FIX,
    authority,
    connect_http,
    describe_socket_error,
)
from p2p.net.sharing import PEER_HEADER, check_name, sha256_file, within

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one download per file at a time is on you
    fcntl = None

log = logging.getLogger("p2p.download")

MAX_SOURCES = 8  # holders one download fetches from at once
MAX_LIST_TRIES = 3  # piece lists tried (each from another holder) before a download gives up
BUFFER_BYTES = 1 << 20  # each recv_into fills up to this much
BUFFER_BUDGET_BYTES = 8 << 20  # piece buffers per holder: receiving while others are verified
MIN_BUFFERS_PER_SOURCE = 2  # ...at least this many, however big the pieces
REQUEST_BYTES = 8 << 20  # in order, one request asks for this much (consecutive pieces)
VERIFY_THREADS = 2  # threads hashing and writing pieces (hashlib releases the GIL)
CONNECT_TIMEOUT_S = 5.0
STALL_TIMEOUT_S = 15.0  # no byte from the holder for this long is a fault
MAX_HEAD_BYTES = 64 * 1024
MAX_SMALL_BODY_BYTES = 4 << 20  # an error or a piece list (2,000+ digests) fits in this
PROGRESS_EVERY_S = 0.2
RATE_WINDOW_S = 2.0  # the rate shown is over this much time
BUSY_WAIT_MAX_S = 5.0  # longest Retry-After honoured when every holder is busy
ASK_BUSY_MIN_S = 0.5  # shortest wait before asking again while every holder is busy
ASK_MORE_EVERY_S = 2.0  # while below MAX_SOURCES, ask the load balancer for more this often
ALONE_ASK_EVERY_S = 0.5  # ...and this often while alone: is anyone else downloading it now?
PARTIAL_REFRESH_S = 1.0  # ask a partial holder what it has again after this long idle
PARTIAL_IDLE_S = 5.0  # let a partial holder go after having nothing we need this long
WORKER_JOIN_S = 5.0  # a holder's thread stopped at the end is waited for this long
DEFAULT_RENEW_S = 10.0
HEAD_DEADLINE_S = 30.0  # the holder's response headers must arrive within this
DEFAULT_PARALLEL = 3  # downloads running at once in the background (the rest wait their turn)
PARTIAL_SHA_DIGITS = 16  # of the SHA-256 in a partial file's name
PARTIAL_RE = re.compile(r"\.(.+)\.([0-9a-f]{16})\.part")
MAX_NAME_BYTES = 255  # of one file name on disk (NAME_MAX of Linux, macOS and Windows)
MAX_NAME_VARIANTS = 1000  # name, name (1), ... name (999): then a clear error


class DownloadError(Problem):
    """A download could not finish; the message says what happened and what to do."""


class DiskError(DownloadError):
    pass


class VerifyFailed(DownloadError):
    pass


class NoPieceList(DownloadError):
    """No holder handed out gave the file's piece list; ``broken``: the peer ids that failed."""

    def __init__(self, message, broken):
        super().__init__(message)
        self.broken = broken


class Spoiled(DownloadError):
    """Pieces written unhashed (while alone) turned out bad: ``peer_ids`` sent them. The
    good ones are kept; the download goes on from other holders, checking every piece."""

    def __init__(self, message, peer_ids):
        super().__init__(message)
        self.peer_ids = peer_ids


class FalseList(VerifyFailed):
    """Every piece matched a holder's piece list, but the whole file did not: the list
    (from ``peer_id``) is false."""

    def __init__(self, message, peer_id):
        super().__init__(message)
        self.peer_id = peer_id


class PeerFault(Exception):
    """A holder failed us. ``busy``: it asked us to come back in that many seconds;
    ``missing``: it does not have what we asked for."""

    def __init__(self, message, busy=None, missing=False, other_file=False):
        super().__init__(message)
        self.busy, self.missing, self.other_file = busy, missing, other_file


# ---------------------------------------------------------------------------
# Pure decisions


def collision_name(name, n):
    """``dir/report.pdf``, 2 -> ``dir/report (2).pdf`` (n = 0 is the name itself)."""
    if n == 0:
        return name
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    if not stem:  # no extension
        stem, dot, ext = base, "", ""
    renamed = f"{stem} ({n}){dot}{ext}"
    return f"{folder}/{renamed}" if folder else renamed


def partial_name(name, sha256):
    """``dir/a.txt`` -> ``dir/.a.txt.<16 hex>.part``, within MAX_NAME_BYTES: a long name's
    base is cut short in the partial file's name (the SHA-256 still tells files apart)."""
    folder, _, base = name.rpartition("/")
    tail = f".{sha256[:PARTIAL_SHA_DIGITS]}.part"
    room = MAX_NAME_BYTES - len(tail) - 1
    base = base.encode("utf-8")[:room].decode("utf-8", "ignore")
    hidden = f".{base}{tail}"
    return f"{folder}/{hidden}" if folder else hidden


def partial_of(filename):
    """``.song.mp3.0123456789abcdef.part`` -> (``song.mp3``, ``0123456789abcdef``), or None."""
    match = PARTIAL_RE.fullmatch(filename)
    return (match.group(1), match.group(2)) if match else None


@dataclass
class Unfinished:
    """A partial download on disk: the file's name, the start of its SHA-256, bytes written."""
    name: str
    sha_prefix: str
    path: str
    done: int


def find_unfinished(root):
    """Every partial download under ``root``, by name."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        prefix = os.path.relpath(folder, root).replace(os.sep, "/")
        for filename in files:
            parsed = partial_of(filename)
            if parsed is None:
                continue
            path = os.path.join(folder, filename)
            try:  # pieces land anywhere in a sparse file: count what is written
                st = os.stat(path, follow_symlinks=False)
                done = min(st.st_size, st.st_blocks * 512)
            except OSError:
                continue
            name = parsed[0] if prefix == "." else f"{prefix}/{parsed[0]}"
            found.append(Unfinished(name, parsed[1], path, done))
    return sorted(found, key=lambda u: u.name)


def remove_unfinished(unfinished):
    """Delete a partial download unless a download of it is running; True if deleted."""
    try:
        fd = os.open(unfinished.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # running: its lock is held
        os.unlink(unfinished.path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def local_path(root, name):
    return os.path.join(root, *name.split("/"))


@dataclass
class Target:
    """Where a download goes: ``have`` is set when the file is already there."""
    partial: str
    have: str = None


def name_variants(root, name):
    """The collision walk: ``name``, ``name (1).ext``, ... as paths under ``root``, up to
    MAX_NAME_VARIANTS of them."""
    for n in range(MAX_NAME_VARIANTS):
        yield local_path(root, collision_name(name, n))


def same_content(path, size, sha256, hash_of=sha256_file):
    """Is ``path`` a regular file of that size and SHA-256 (hashed only if the size fits)?"""
    return os.path.isfile(path) and os.path.getsize(path) == size and hash_of(path) == sha256


def plan_target(root, name, size, sha256, hash_of=sha256_file):
    """Decide from what is on disk: already have it (a file of that content under the name
    or one of its ``name (n).ext`` variants), or the partial file to fill."""
    for candidate in name_variants(root, name):
        if not os.path.lexists(candidate):
            break
        if same_content(candidate, size, sha256, hash_of):
            return Target(partial="", have=candidate)
    return Target(partial=local_path(root, partial_name(name, sha256)))


def parse_response_head(data):
    """Raw bytes up to the blank line -> (status, {lower-case name: value})."""
    lines = data.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") \
            or not re.fullmatch(r"[0-9]{3}", parts[1]):
        raise PeerFault(f"the peer answered something that is not HTTP: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        pair = header_field(line)
        if pair:  # a line that is not a header is skipped
            headers[pair[0].lower()] = pair[1]
    return int(parts[1]), headers


def peer_says(body):
    """The sentence of a peer's JSON error body (its start, as far as it came), or None."""
    try:
        said = json.loads(body.decode("utf-8")).get("error")
    except (ValueError, AttributeError):
        return None
    return said if isinstance(said, str) and said.strip() else None


def check_response(status, headers, start, length, size, sha256, body=b""):
    """Check a holder's answer to ``Range: bytes=start-(start+length-1)`` of the file
    (sha256, size): None when the range follows, else PeerFault (``busy`` for a 503 or
    429 with its Retry-After, ``missing`` for a partial holder's 404)."""
    if status in (503, 429):
        retry = headers.get("retry-after", "")
        seconds = int(retry) if re.fullmatch(r"[0-9]+", retry) else 1  # or an HTTP date
        said = peer_says(body)
        raise PeerFault(f"the peer says: {said}" if said else "the peer is busy",
                        busy=min(BUSY_WAIT_MAX_S, max(seconds, 1)))
    if status == 404:
        raise PeerFault(peer_says(body) or "the peer does not have it", missing=True)
    if status == 401:
        raise PeerFault("the peer refused us: wrong or missing network secret")
    if status != 206:
        raise PeerFault(f"the peer answered HTTP {status}")
    unit, _, spec = headers.get("content-range", "").partition(" ")
    expected = f"{start}-{start + length - 1}/{size}"
    if unit != "bytes" or spec != expected:
        raise PeerFault(f"the peer sent range {spec!r}, not {expected!r}")
    if headers.get("etag", "").strip('"') != sha256:
        raise PeerFault("the peer's copy is not the advertised version (ETag differs)")
    if headers.get("content-length") != str(length):
        raise PeerFault(f"the peer announced {headers.get('content-length')} bytes, "
                        f"not {length}")


@dataclass
class Progress:
    name: str
    done: int
    total: int
    rate: float  # bytes/s, recent
    source: str  # the holder sending the most, or the one being waited for
    finished: bool = False
    sources: int = 1  # holders sending now
    waiting: str = ""  # why nothing arrives: "waiting for a free upload slot, 3 holders busy"


@dataclass
class Result:
    path: str
    name: str
    size: int
    sha256: str
    already: bool = False  # the same content was already there: nothing moved
    received: int = 0  # bytes that came over the network this time
    resumed_from: int = 0  # verified bytes found on disk at the start
    sources: list = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    others: list = field(default_factory=list)  # other versions of the name on the network


# ---------------------------------------------------------------------------
# The transfer layer: byte ranges from one holder, the partial file, the whole hash


def _set_socket_timeouts(sock, seconds):
    """OS-level timeouts on a blocking socket, so recv(MSG_WAITALL) still gives up on a stall."""
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class HolderConnection:
    """One keep-alive connection to a holder, asking for byte ranges of one file.

    ``ask_range`` asks for a range; ``receive`` takes it, in parts, straight into a
    caller's buffers (``recv_into`` with ``MSG_WAITALL`` on a plain socket); ``abort``
    (from another thread) cuts the connection short, and the next call connects again.
    """

    def __init__(self, host, port, sha256, size, members=OPEN, identity=None,
                 stall_timeout=STALL_TIMEOUT_S):
        self.host, self.port = host, port
        self.address = format_address(host, port)
        self.sha256, self.size = sha256, size
        self.members, self.identity = members, identity
        self.stall_timeout = stall_timeout
        self.sock = None
        self._aborted = None  # the socket abort() cut, if it is still the one in use
        self._leftover = b""

    def _connect(self):
        try:
            plain = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT_S)
        except OSError as e:
            raise PeerFault(f"cannot connect to it: {describe_socket_error(e)}") from None
        try:
            sock = self.members.connect(plain)
        except OSError as e:
            plain.close()
            raise PeerFault(f"cannot connect to it: {describe_socket_error(e)}") from None
        if self.members.tls is None:
            sock.settimeout(None)
            _set_socket_timeouts(sock, self.stall_timeout)
        else:  # no MSG_WAITALL on an SSLSocket: plain timeouts, and _recv fills the buffer
            sock.settimeout(self.stall_timeout)
        self.sock, self._leftover = sock, b""

    def _request(self, target, extra=""):
        if self.sock is not None and self.sock is self._aborted:
            self.close()  # cut short after its last answer had arrived whole: start afresh
        if self.sock is None:
            self._connect()
        auth = "".join(f"{key}: {value}\r\n" for key, value
                       in self.members.auth_headers("GET", target,
                                                    authority(self.sock, self.port)).items())
        request = (f"GET {target} HTTP/1.1\r\n{extra}"
                   + (f"{PEER_HEADER}: {self.identity}\r\n" if self.identity else "")
                   + auth + "\r\n")
        self.sock.sendall(request.encode("ascii"))
        return self._read_head()

    def _read_head(self):
        data = bytearray(self._leftover)
        deadline = time.monotonic() + HEAD_DEADLINE_S
        while (end := data.find(b"\r\n\r\n")) < 0:
            if len(data) > MAX_HEAD_BYTES:
                raise PeerFault("the peer's response headers are too large")
            if time.monotonic() > deadline:
                raise PeerFault(f"no complete answer within {HEAD_DEADLINE_S:.0f} s")
            chunk = self.sock.recv(MAX_HEAD_BYTES)
            if not chunk:
                raise PeerFault("the peer closed the connection without answering")
            data += chunk
        status, headers = parse_response_head(bytes(data[:end]))
        self._leftover = bytes(data[end + 4:])
        return status, headers

    def _small_body(self, headers):
        """The body of a short answer (JSON), read whole; PeerFault when too long."""
        length = headers.get("content-length", "")
        if not length.isdigit() or int(length) > MAX_SMALL_BODY_BYTES:
            raise PeerFault("the peer's answer has no usable length")
        body = bytearray(self._leftover[:int(length)])
        self._leftover = self._leftover[int(length):]
        while len(body) < int(length):
            chunk = self.sock.recv(int(length) - len(body))
            if not chunk:
                raise PeerFault("the connection ended inside an answer")
            body += chunk
        if headers.get("connection", "").lower() == "close":
            self.close()
        return bytes(body)

    def piece_list(self, trusted_hash):
        """(PieceList, Bitfield of what it has or None for all), from ``GET /pieces/SHA``."""
        try:
            status, headers = self._request(f"/pieces/{self.sha256}")
            body = self._small_body(headers)
        except OSError as e:
            self.close()
            raise PeerFault(describe_socket_error(e)) from None
        if status == 401:
            raise PeerFault("the peer refused us: wrong or missing network secret")
        if status != 200:
            raise PeerFault(peer_says(body) or f"the peer answered HTTP {status} for the "
                            "piece list", missing=status == 404)
        try:
            answer = json.loads(body)
            pieces = PieceList.from_json(answer, self.sha256, self.size, trusted_hash)
            have = answer.get("have")
            return pieces, None if have is None else Bitfield.from_text(pieces.count, have)
        except OtherFile as e:
            raise PeerFault(f"its piece list is wrong: {e}", other_file=True) from None
        except (ValueError, BadPieceList) as e:
            raise PeerFault(f"its piece list is wrong: {e}") from None

    def ask_range(self, start, length):
        """Ask for ``length`` bytes from ``start``; PeerFault unless they follow. Then
        ``receive`` takes them, in as many parts as the caller likes."""
        try:
            status, headers = self._request(
                f"/blobs/{self.sha256}", f"Range: bytes={start}-{start + length - 1}\r\n")
            body = self._small_body(headers) if status in (404, 503) else b""
            check_response(status, headers, start, length, self.size, self.sha256, body)
        except PeerFault as fault:
            if not fault.missing:
                self.close()
            raise
        except OSError as e:
            self.close()
            raise PeerFault(describe_socket_error(e)) from None

    def receive(self, view, on_bytes):
        """Fill ``view`` with the next bytes of the range asked for, or PeerFault.

        ``on_bytes(n)`` is called as bytes arrive (at least every BUFFER_BYTES)."""
        length = len(view)
        try:
            got = min(len(self._leftover), length)
            view[:got] = self._leftover[:got]
            self._leftover = self._leftover[got:]
            on_bytes(got)
            while got < length:
                try:
                    n = self._recv(view[got:got + BUFFER_BYTES])
                except (BlockingIOError, TimeoutError):
                    raise PeerFault(f"no data for {self.stall_timeout:.0f} s") from None
                if n == 0:
                    raise PeerFault("the connection ended inside a piece")
                got += n
                on_bytes(n)
        except PeerFault:
            self.close()
            raise
        except OSError as e:
            self.close()
            raise PeerFault(describe_socket_error(e)) from None

    def _recv(self, view):
        """Fill ``view``: fewer bytes only at a stall, a signal or the end."""
        if self.members.tls is None:
            return self.sock.recv_into(view, len(view), socket.MSG_WAITALL)
        got = 0
        while got < len(view):  # one TLS record (16 KiB at most) per recv_into
            try:
                n = self.sock.recv_into(view[got:])
            except TimeoutError:
                if got:
                    return got
                raise
            if n == 0:
                break
            got += n
        return got

    def abort(self):
        """Cut the connection short (from another thread): a fetch in progress ends."""
        sock = self._aborted = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class PartialFile:
    """The hidden, locked partial file: verified pieces written at their offsets."""

    def __init__(self, path, fd, pieces):
        self.path, self.fd, self.pieces = path, fd, pieces

    def write(self, index, view):
        start, _ = self.pieces.span(index)
        try:
            while view:
                written = os.pwrite(self.fd, view, start)
                view, start = view[written:], start + written
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise DiskError("The disk is full (or a file size limit was reached) while "
                                "saving; free some space and run the same download again "
                                "to resume.") from None
            raise DiskError(f"Cannot write the partial file: {e.strerror}.") from None

    def verified(self):
        """A Bitfield of the pieces already on disk whose bytes match their SHA-256
        (from an earlier run stopped by Ctrl-C, a crash or a full disk)."""
        have = Bitfield(self.pieces.count)
        on_disk = os.fstat(self.fd).st_size
        buf = bytearray(self.pieces.piece_size)
        for index in range(self.pieces.count):
            start, length = self.pieces.span(index)
            if start + length > on_disk:
                break
            if self._has_data(start, length) and self.piece_matches(index, buf):
                have.add(index)
        return have

    def piece_matches(self, index, buf):
        """Do the bytes of piece ``index`` on disk match its SHA-256? (``buf``: room for a
        piece, reused.)"""
        start, length = self.pieces.span(index)
        view = memoryview(buf)[:length]
        return os.preadv(self.fd, [view], start) == length and \
            self.pieces.matches(index, hashlib.sha256(view).hexdigest())

    def _has_data(self, start, length):
        """False when the piece lies in a hole of the sparse file (never written); True
        where holes cannot be seen (no SEEK_DATA), so the piece is hashed to find out."""
        if not hasattr(os, "SEEK_DATA"):
            return True
        try:
            return os.lseek(self.fd, start, os.SEEK_DATA) < start + length
        except OSError:  # ENXIO: no data after start
            return False

    def close(self):
        os.close(self.fd)


class WholeHash:
    """The whole file's SHA-256, in a thread that follows the pieces in order as they are
    written (verified, or landed unhashed while alone), reading them back from the
    partial file (the page cache has them)."""

    def __init__(self, partial, ready, cond):
        self.partial, self.ready, self.cond = partial, ready, cond
        self._digest = hashlib.sha256()
        self._next = 0
        self._stop = False
        self.error = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="whole-hash")
        self._thread.start()

    def _run(self):
        pieces = self.partial.pieces
        buf = bytearray(min(BUFFER_BYTES, pieces.piece_size) if pieces.count else 0)
        try:
            while self._next < pieces.count:
                with self.cond:
                    self.cond.wait_for(lambda: self._stop or self.ready(self._next))
                    if self._stop:
                        return
                start, length = pieces.span(self._next)
                while length:
                    view = memoryview(buf)[:min(len(buf), length)]
                    n = os.preadv(self.partial.fd, [view], start)
                    if n <= 0:
                        raise DiskError("The partial file shrank while being read.")
                    self._digest.update(view[:n])
                    start, length = start + n, length - n
                self._next += 1
        except (OSError, DiskError) as e:
            self.error = e

    def hexdigest(self):
        self._thread.join()
        if self.error is not None:
            raise self.error if isinstance(self.error, DiskError) else DiskError(
                f"Cannot read the partial file back: {self.error.strerror}.")
        return self._digest.hexdigest()

    def stop(self):
        with self.cond:
            self._stop = True
            self.cond.notify_all()
        self._thread.join()


class Leases:
    """The transfers of one download at the load balancer: one thread renews them all
    every ``renew_s``; ``end`` ends one. Errors are only logged."""

    def __init__(self, lb, renew_s):
        self.lb, self.renew_s = lb, renew_s
        self._active = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="renewer")
        self._thread.start()

    def add(self, lease):
        with self._lock:
            self._active[lease.transfer_id] = lease

    def _run(self):
        while not self._stop.wait(self.renew_s):
            with self._lock:
                leases = list(self._active.values())
            for lease in leases:
                try:
                    self.lb.renew(lease)
                except LBClientError as e:
                    log.info("could not renew transfer %s: %s", lease.transfer_id, e)

    def end(self, lease, outcome):
        with self._lock:
            if self._active.pop(lease.transfer_id, None) is None:
                return
        try:
            self.lb.end(lease, outcome)
        except LBClientError as e:
            log.info("could not end transfer %s: %s", lease.transfer_id, e)

    def end_all(self, outcome):
        with self._lock:
            leases = list(self._active.values())
        for lease in leases:
            self.end(lease, outcome)

    def stop(self):
        self._stop.set()


# ---------------------------------------------------------------------------
# One download from many holders: threads around the plan


class Swarm:
    """Fills a partial file from the holders the load balancer hands out.

    One thread per holder (its ``HolderConnection``) asks the plan for pieces and
    receives them into buffers of its own; VERIFY_THREADS threads hash each piece,
    write it when it matches and tell the plan; ``WholeHash`` follows in order. The
    caller's thread (``run``) asks the load balancer for more holders, waits while
    every holder is busy, lets slow holders go and reports progress. Every decision
    is the plan's; this class only moves bytes and keeps time.
    """

    def __init__(self, downloader, name, pick, partial, plan, leases, result, partials,
                 named=False):
        self.d = downloader
        self.named = named  # the person named the holder: no other is asked
        self.name, self.file, self.partial = name, pick.file, partial
        self.pieces = partial.pieces
        self.plan, self.leases, self.result = plan, leases, result
        self.partials = partials
        self.cond = threading.Condition()
        self.workers = {}  # lease transfer id -> Worker
        self.finished = {}  # the same -> Lease, of holders still there when every piece was
        self.refetched = False  # a piece written unhashed was bad, and fetched again
        self.writing = set()  # pieces one copy of which is being written now
        self.busy = {}  # peer id -> when it last turned us away as busy
        self.problem = None  # a DiskError from a verifier, raised in run()
        self.last_fault = ""
        self.verify_queue = queue.Queue()
        self.verifiers = [threading.Thread(target=self._verify_loop, daemon=True,
                                           name="verify") for _ in range(VERIFY_THREADS)]
        for thread in self.verifiers:
            thread.start()
        self.whole = WholeHash(partial, self._written, self.cond)

    # -- the caller's thread ------------------------------------------------

    def run(self, pick, list_from):
        """Until every piece is here and verified, and the whole file's SHA-256 with it;
        VerifyFailed (the piece list from ``list_from``, a Lease, is blamed) if it is not
        the file's."""
        try:
            self._add(pick)
            self._loop(pick)
            digest = self.whole.hexdigest()
        finally:
            self._stop_all()
        if digest != self.file.sha256 and self.refetched:  # the whole hash saw a bad piece
            digest = sha256_file(self.partial.path)
        spoilers = self._check_landed() if digest != self.file.sha256 else set()
        with self.cond:
            blamed = spoilers or ({list_from.peer_id} if digest != self.file.sha256 else ())
            for key, source in list(self.plan.sources.items()):
                if source.peer_id in blamed:
                    self.plan.fault(key)
            ended = [(lease, self.plan.remove_source(key))
                     for key, lease in self.finished.items()]
        for lease, outcome in ended:
            self.leases.end(lease, outcome)
        if spoilers:
            raise Spoiled(f"{self.name!r}: some pieces did not match their SHA-256", spoilers)
        if digest != self.file.sha256:
            raise FalseList(f"{self.name!r} from {list_from.address} did not match its "
                            "SHA-256, though every piece matched the piece list it gave",
                            list_from.peer_id)

    def _check_landed(self):
        """Hash the pieces written unhashed while alone: the good ones are verified (and
        shared) now, the bad ones missing again, to be fetched from others. At the end, when
        the whole file did not match; or when other downloaders appear, so that they can
        have what is here. The peer ids that sent bad ones."""
        spoilers = set()
        buf = bytearray(self.pieces.piece_size)
        with self.cond:  # a piece still being written is left for the whole-file check
            landed = sorted(i for i in self.plan.unchecked if i not in self.writing)
        for index in landed:
            good = self.partial.piece_matches(index, buf)
            with self.cond:
                sender = self.plan.checked(index, good)
                self.cond.notify_all()
            if sender is not None:
                log.warning("%s: piece %d from %s did not match its SHA-256", self.name, index,
                            sender)
                spoilers.add(sender)
                self.refetched = True
        if self.partials is not None:
            self.partials.touch()
        return spoilers

    def _loop(self, pick):
        named = self.named
        ask_at = time.monotonic() + self._ask_every()
        waiting_since, waiting = None, ""
        rate = RateWindow()
        active = len(pick.leases)
        while True:
            with self.cond:  # woken by every piece: look up only when something changed
                before = active
                self.cond.wait_for(lambda: self.problem is not None or self.plan.done
                                   or len(self.workers) != before, PROGRESS_EVERY_S)
                if self.problem is not None:
                    raise self.problem
                done = self.plan.done
                active = len(self.workers)
            now = time.monotonic()
            if done:
                return
            self._progress(rate.add(now, self.result.received), waiting, active)
            with self.cond:
                for key in self.plan.slow(now):
                    log.info("%s: letting a slow holder go", self.name)
                    self.workers[key].stop()
            if named:
                if not active:
                    raise DownloadError(f"Could not download {self.name!r}: "
                                        f"{pick.leases[0].address} failed "
                                        f"({self.last_fault}).{self._kept()}")
                continue
            if active >= MAX_SOURCES or now < ask_at:
                continue
            try:
                more = self.d.lb.pick(self.name, sha256=self.file.sha256,
                                      exclude=self._exclude(),
                                      requester=self.d.requester,
                                      count=MAX_SOURCES - active)
            except AllBusy as e:
                self._others(e.downloading)
                waiting_since = waiting_since or now
                waiting = (f"waiting for a free upload slot, {e.busy} "
                           f"{'holder' if e.busy == 1 else 'holders'} busy")
                ask_at = now + min(BUSY_WAIT_MAX_S, max(e.retry_after, ASK_BUSY_MIN_S))
                if not active and self.d.wait_s is not None \
                        and now - waiting_since > self.d.wait_s:
                    raise DownloadError(f"Waited {self.d.wait_s:.0f} s for a free upload slot "
                                        f"for {self.name!r}; every holder is busy."
                                        + self._kept()) from None
                continue
            except (NotFound, NoHolderLeft) as e:
                self._others(getattr(e, "downloading", 0))
                if not active and not self._busy_soon(now):
                    raise DownloadError(f"Could not download {self.name!r}: {e.message}"
                                        + (f" (last: {self.last_fault})" if self.last_fault
                                           else "") + self._kept()) from None
                ask_at = now + self._ask_every()
                continue
            except LBClientError as e:
                if not active:
                    raise DownloadError(f"{e.message}{self._kept()}") from None
                ask_at = now + ASK_MORE_EVERY_S
                continue
            waiting_since, waiting = None, ""
            ask_at = now + self._ask_every()
            self._add(more)

    def _kept(self):
        return (" The partial file is kept: try again later to resume."
                if self.plan.here else "")

    def _busy_soon(self, now):
        """Did a holder turn us away as busy a moment ago (so it is worth asking again)?"""
        return any(when > now - BUSY_WAIT_MAX_S for when in self.busy.values())

    def _exclude(self):
        with self.cond:
            return sorted(self.plan.banned() | {w.lease.peer_id for w in self.workers.values()})

    def _ask_every(self):
        """Alone, the load balancer is asked more often: others may start any moment."""
        return ALONE_ASK_EVERY_S if self.plan.alone else ASK_MORE_EVERY_S

    def _others(self, downloading):
        """The load balancer says ``downloading`` other peers download this file now: if
        that ends being alone, hash what landed unhashed, to share it with them."""
        if downloading and self.plan.alone:
            self.plan.alone = False
            self.verify_queue.put(CHECK_LANDED)

    def _add(self, pick):
        self._others(pick.downloading)
        for lease in pick.leases:
            self.leases.add(lease)
            worker = Worker(self, lease)
            with self.cond:
                self.workers[lease.transfer_id or lease.address] = worker
            worker.start()

    def _progress(self, rate, waiting, active):
        done = self.plan.progress(self.pieces.piece_size, self.file.size)
        with self.cond:
            sending = [w for w in self.workers.values() if w.sending]
        main = max(sending, key=lambda w: w.received, default=None)
        source = main.lease.address if main is not None else ""
        self.d.on_progress(Progress(self.name, done, self.file.size, rate, source,
                                    sources=len(sending), waiting="" if sending else waiting))

    def _stop_all(self):
        with self.cond:
            workers = list(self.workers.values())
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(WORKER_JOIN_S)
        for _ in self.verifiers:
            self.verify_queue.put(None)
        for thread in self.verifiers:
            thread.join(WORKER_JOIN_S)
        self.whole.stop()

    # -- the verifier threads ----------------------------------------------

    def _verify_loop(self):
        """Verifier threads: ``land`` each piece handed over (with other downloaders about)
        and run ``_check_landed`` when asked. Alone (in order, from whole holders, nobody to
        share with) a holder's own thread lands its pieces unhashed: the whole file's
        SHA-256, which runs anyway, checks them, and ``run`` hashes the pieces only if that
        fails. That keeps the fast path at one hash per byte instead of two."""
        while (item := self.verify_queue.get()) is not None:
            if item is CHECK_LANDED:
                self._check_landed()
            else:
                self.land(*item)

    def land(self, worker, index, buf, length):
        """Hash the piece (unless alone), write it if it matches, tell the plan; in a
        verifier thread, or in the holder's own thread when alone (nothing to hash)."""
        view = memoryview(buf)[:length]
        try:
            if self.plan.alone:
                arrival = self._land_unhashed(worker, index, view)
            else:
                good = self.pieces.matches(index, hashlib.sha256(view).hexdigest())
                if good and index in self.plan.missing:  # any good copy: the same bytes
                    self.partial.write(index, view)
                with self.cond:
                    arrival = self.plan.arrived(worker.key, index, good)
        except DiskError as e:
            with self.cond:
                self.problem = e
                self.cond.notify_all()
            return
        finally:
            worker.give_back(buf)
        with self.cond:
            for key in arrival.cancel:
                if key in self.workers:
                    self.workers[key].cancel(index)
            if arrival.bad:
                log.warning("%s: piece %d from %s did not match its SHA-256%s", self.name,
                            index, worker.source, "; not asking it again"
                            if arrival.banned else "")
                if arrival.banned:
                    worker.stop()
            self.cond.notify_all()
        if arrival.new and arrival.verified and self.partials is not None:
            self.partials.touch()

    def _land_unhashed(self, worker, index, view):
        """Alone: the first copy of a piece to arrive claims it and is written (so the
        sender the plan records is the sender of the bytes on disk); the whole-file hash
        waits for the writing to end."""
        with self.cond:
            arrival = self.plan.landed(worker.key, worker.lease.peer_id, index)
            if arrival.new:
                self.writing.add(index)
        if arrival.new:
            try:
                self.partial.write(index, view)
            finally:
                with self.cond:
                    self.writing.discard(index)
        return arrival

    def _written(self, index):
        """Is piece ``index`` on disk, verified or landed unhashed (for WholeHash)?"""
        return self.plan.landed_or_verified(index) and index not in self.writing


CHECK_LANDED = object()  # a verifier's task: hash the pieces written unhashed (_check_landed)


class RateWindow:
    """Bytes per second over the last RATE_WINDOW_S, from a running total."""

    def __init__(self):
        self.samples = collections.deque()

    def add(self, now, total):
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()
        then, before = self.samples[0]
        return (total - before) / (now - then) if now > then else 0.0


class Worker:
    """One holder's connection: asks the plan for pieces and receives them."""

    def __init__(self, swarm, lease):
        self.swarm, self.lease = swarm, lease
        self.key = lease.transfer_id or lease.address
        self.source = " ".join(x for x in (lease.name, lease.address) if x)
        d = swarm.d
        self.conn = HolderConnection(lease.host, lease.port, swarm.file.sha256, swarm.file.size,
                                     d.members, d.identity, d.stall_timeout)
        self.free = queue.Queue()
        piece = swarm.pieces.piece_size
        self.per_request = max(1, REQUEST_BYTES // piece)  # pieces one request asks for
        for _ in range(max(MIN_BUFFERS_PER_SOURCE, BUFFER_BUDGET_BYTES // piece)):
            self.free.put(bytearray(piece))
        self.received = 0
        self.sending = False  # has sent bytes
        self.refreshed = 0.0  # when a partial holder last said what it has
        self._stopped = False
        self._fetching = None  # the piece being fetched now
        self._cancelled = None  # ...once another holder delivered it
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"source-{lease.address}")

    def start(self):
        self._thread.start()

    def join(self, timeout):
        self._thread.join(timeout)

    def give_back(self, buf):
        self.free.put(buf)

    def stop(self):
        """Stop after (or during) the piece being fetched; the caller holds no lock needed."""
        self._stopped = True
        self.conn.abort()

    def cancel(self, index):
        """Another holder delivered ``index``, which this one is fetching: cut it short."""
        if self._fetching == index:
            self._cancelled = index
            self.conn.abort()

    def _run(self):
        swarm, plan, cond = self.swarm, self.swarm.plan, self.swarm.cond
        outcome = "cancelled"
        try:
            has = None
            if self.lease.done is not None:  # a partial holder: what does it have?
                _, has = self.conn.piece_list(swarm.pieces.hash)
                self.refreshed = time.monotonic()
            with cond:
                plan.add_source(self.key, self.lease.peer_id, has)
            swarm.result.sources.append(self.source)
            self._fetch_loop()
        except PeerFault as fault:
            with cond:
                if fault.busy is not None:
                    swarm.busy[self.lease.peer_id] = time.monotonic()
                elif not self._stopped:
                    plan.fault(self.key)
                    swarm.last_fault = f"{self.source}: {fault}"
                    log.warning("%s from %s failed: %s", swarm.name, self.source, fault)
        except Exception:  # a bug of ours: logged, and the other holders go on
            log.exception("fetching %s from %s", swarm.name, self.source)
        finally:
            self.conn.close()
            with cond:
                swarm.workers.pop(self.key, None)
                cond.notify_all()
                if plan.done and self.key in plan.sources:  # the whole file's check decides
                    swarm.finished[self.key] = self.lease
                    return
                if self.key in plan.sources:
                    outcome = plan.remove_source(self.key)
            swarm.leases.end(self.lease, outcome)

    def _refresh(self):
        """Ask a partial holder again what it has."""
        _, have = self.conn.piece_list(self.swarm.pieces.hash)
        with self.swarm.cond:
            self.swarm.plan.update_source(self.key, have)
        self.refreshed = time.monotonic()

    def _fetch_loop(self):
        """Pieces until the file is complete. With nothing to fetch for now (the end game
        is covered, or a partial holder has nothing new), wait for the plan to change; a
        partial holder is asked again what it has, and let go after PARTIAL_IDLE_S of
        having nothing we need."""
        plan, cond = self.swarm.plan, self.swarm.cond
        useful = time.monotonic()
        while not self._stopped:
            with cond:
                if plan.done:
                    return
                run = plan.next_run(self.key, self.per_request)
                if not run:
                    if plan.wants(self.key):
                        useful = time.monotonic()
                    elif time.monotonic() - useful > PARTIAL_IDLE_S:
                        return
                    cond.wait(PARTIAL_REFRESH_S)
            if run:
                useful = time.monotonic()
                self._fetch(run)
            elif self.pieces_change and time.monotonic() - self.refreshed >= PARTIAL_REFRESH_S:
                self._refresh()

    @property
    def pieces_change(self):
        """Is this a partial holder (its pieces grow while we download)?"""
        with self.swarm.cond:
            return self.pieces_change_locked()

    def pieces_change_locked(self):
        source = self.swarm.plan.sources.get(self.key)
        return source is not None and source.pieces is not None

    def _fetch(self, run):
        """Fetch ``run``, consecutive pieces, with one request; each piece is landed (or
        handed to the verifiers) as soon as it is in."""
        swarm, cond = self.swarm, self.swarm.cond
        start = swarm.pieces.span(run[0])[0]
        end = sum(swarm.pieces.span(run[-1]))
        self._cancelled = None

        def arrived(n):
            self.received += n
            self.sending = True
            with cond:
                swarm.result.received += n
                swarm.plan.sent(self.key, n, time.monotonic())

        for at, index in enumerate(run):
            buf, length = self.free.get(), swarm.pieces.span(index)[1]
            self._fetching = index
            try:
                if at == 0:
                    self.conn.ask_range(start, end - start)
                self.conn.receive(memoryview(buf)[:length], arrived)
            except PeerFault as fault:
                self.give_back(buf)
                with cond:
                    for left in run[at:]:
                        swarm.plan.release(self.key, left)
                    if fault.missing and self.pieces_change_locked():
                        swarm.plan.lacks(self.key, index)
                        return
                if self._cancelled == index or self._stopped:
                    return  # cut short on purpose: not the holder's fault
                raise
            finally:
                self._fetching = None
            if swarm.plan.alone:  # unhashed: no need to hand it to another thread
                swarm.land(self, index, buf, length)
            else:
                swarm.verify_queue.put((self, index, buf, length))


# ---------------------------------------------------------------------------
# The downloader


class Downloader:
    """Downloads through one load balancer into ``root``; ``on_progress`` sees Progress.

    ``partials`` (a ``sharing.PartialShares``) is told about each download's verified
    pieces, so the peer's server can share them while it runs; ``wait_s`` limits how
    long a download waits while every holder is busy (None: as long as holders are
    online).
    """

    def __init__(self, lb, root, requester=None, on_progress=None, on_verified=None,
                 have=None, identity=None, stall_timeout=STALL_TIMEOUT_S, members=OPEN,
                 partials=None, wait_s=None):
        self.lb = lb
        self.members = members
        self.root = os.path.abspath(root)
        self.requester = requester
        self.on_progress = on_progress or (lambda progress: None)
        self.on_verified = on_verified or (lambda root, path, sha256, digests: None)
        self.have = have or (lambda sha256: None)  # a SharedFile we already have, or None
        self.identity = identity  # this peer's address, shown to the holders we fetch from
        self.stall_timeout = stall_timeout
        self.partials = partials
        self.wait_s = wait_s

    def get(self, name, sha256=None, peer=None):
        """Download ``name`` (that version, from that peer if given); returns a Result.

        The Result names the other versions of ``name`` on the network, if any.
        """
        check_name(name)
        liars, broken, last = [], [], None
        for _ in range(MAX_LIST_TRIES):
            try:
                pick = self._first_pick(name, sha256, peer if last is None else None,
                                        [lie.peer_id for lie in liars] + broken)
            except (NotFound, NoHolderLeft):
                if last is None:
                    raise
                break
            sha256 = pick.file.sha256
            leases = Leases(self.lb, pick.renew_s)
            for lease in pick.leases:
                leases.add(lease)
            try:
                result = self._get(name, pick, leases, named=peer is not None and last is None,
                                   check_every_piece=last is not None)
            except FalseList as lie:
                liars.append(lie)
                last = lie
            except Spoiled as e:
                broken += sorted(e.peer_ids)
                last = e
            except NoPieceList as e:
                if not e.broken or peer is not None:
                    raise
                broken += e.broken
                last = e
            else:
                result.others = pick.versions
                return result
            finally:
                leases.end_all("cancelled")
                leases.stop()
            log.warning("%s; asking other holders", last.message)
        if liars:
            raise VerifyFailed(" and ".join(lie.message for lie in liars)
                               + "; no other holder is left. Nothing was saved.")
        raise last

    def _first_pick(self, name, sha256, peer, exclude):
        """The first holders; while every one is busy, wait (and say so) for a free slot."""
        started = time.monotonic()
        while True:
            try:
                return self.lb.pick(name, sha256=sha256, peer=peer, exclude=exclude,
                                    requester=self.requester,
                                    count=1 if peer else MAX_SOURCES)
            except AllBusy as e:
                waited = time.monotonic() - started
                if self.wait_s is not None and waited > self.wait_s:
                    raise DownloadError(f"Waited {self.wait_s:.0f} s for a free upload slot "
                                        f"for {name!r}; every holder is busy. Try again "
                                        "later.") from None
                waiting = (f"waiting for a free upload slot, {e.busy} "
                           f"{'holder' if e.busy == 1 else 'holders'} busy")
                until = time.monotonic() + min(BUSY_WAIT_MAX_S, max(e.retry_after,
                                                                    ASK_BUSY_MIN_S))
                while time.monotonic() < until:
                    self.on_progress(Progress(name, 0, 0, 0.0, "", sources=0, waiting=waiting))
                    time.sleep(min(PROGRESS_EVERY_S, max(0.0, until - time.monotonic())))

    def _get(self, name, pick, leases, named, check_every_piece=False):
        size, sha256 = pick.file.size, pick.file.sha256
        mine = self.have(sha256)
        if mine is not None:
            return Result(mine.path, name, size, sha256, already=True)
        target = plan_target(self.root, name, size, sha256)
        if target.have:
            return Result(target.have, name, size, sha256, already=True)
        self._check_folder(target.partial)
        fd = self._open_partial(target.partial, size)
        plan = None
        try:  # the partial file stays locked until it has its final name
            pieces, list_from = self._piece_list(pick, leases)
            partial = PartialFile(target.partial, fd, pieces)
            have = partial.verified()
            plan = Plan(pieces.count, have)
            plan.alone = plan.alone and not check_every_piece
            result = Result("", name, size, sha256,
                            resumed_from=plan.progress(pieces.piece_size, size))
            if self.partials is not None:
                self.partials.add(name, pieces, have, target.partial)
            try:
                Swarm(self, name, pick, partial, plan, leases, result, self.partials,
                      named).run(pick, list_from)
            finally:
                if self.partials is not None:
                    self.partials.remove(sha256)
            result.path = self._commit(target.partial, name, size, sha256)
        except VerifyFailed:
            os.unlink(target.partial)
            raise
        except BaseException:
            if not plan.here if plan is not None else os.fstat(fd).st_size == 0:
                os.unlink(target.partial)  # no piece here to resume from: leave nothing
            raise
        finally:
            os.close(fd)
        elapsed = max(time.monotonic() - result.started, 1e-6)
        self.on_progress(Progress(name, size, size, result.received / elapsed,
                                  ", ".join(dict.fromkeys(result.sources)), finished=True,
                                  sources=len(set(result.sources))))
        self.on_verified(self.root, result.path, sha256, list(pieces.digests))
        return result

    def _piece_list(self, pick, leases):
        """The file's piece list, from the first holder that gives one the holders agree on
        (``pick.pieces``); and the Lease of that holder. A holder that cannot be reached
        or answers nonsense has its transfer ended ``failed``; NoPieceList if none gives it."""
        problems, broken = [], []
        for lease in pick.leases:
            conn = HolderConnection(lease.host, lease.port, pick.file.sha256, pick.file.size,
                                    self.members, self.identity, self.stall_timeout)
            try:
                return conn.piece_list(pick.pieces)[0], lease
            except PeerFault as e:
                problems.append(f"{lease.address}: {e}")
                if not e.other_file:  # another size claimed for it: the pick's record may lie
                    broken.append(lease.peer_id)
                    leases.end(lease, "failed")
            finally:
                conn.close()
        raise NoPieceList(f"No holder gave the piece list of {pick.file.name!r} ("
                          + "; ".join(problems) + "); try again later.", broken)

    def _check_folder(self, partial):
        folder = os.path.dirname(partial)
        existing = folder
        while existing != self.root and not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if os.path.exists(existing) and within(os.path.realpath(self.root), existing) is None:
            raise DiskError(f"{folder} leads outside {self.root} (a symlink?); not writing there.")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise DiskError(f"Cannot create {folder}: {e.strerror}.") from None

    def _open_partial(self, path, size):
        """Open, lock and check the partial file; its descriptor."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise DiskError(f"Cannot write {path}: {e.strerror}.") from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise DownloadError("Another download of this file into the same folder "
                                        "is running; wait for it to finish.") from None
            st = os.fstat(fd)
            try:
                same = st.st_ino == os.stat(path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # another download finished and moved this partial file into place
                raise DownloadError("Another download of this file just finished; run it "
                                    "again to find it in place.")
            if st.st_size > size:  # longer than the file: not ours
                os.ftruncate(fd, 0)
            free = shutil.disk_usage(self.root).free
            needed = size - min(st.st_blocks * 512, st.st_size)
            if free < needed:
                if st.st_size == 0:  # ours (locked) and empty: leave nothing behind
                    os.unlink(path)
                raise DiskError(f"Not enough space in {self.root}: {needed} bytes "
                                f"needed, {free} free.")
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _commit(self, partial, name, size, sha256):
        """Give the verified partial file its final name without replacing anything."""
        for target in name_variants(self.root, name):
            if os.path.lexists(target):
                if same_content(target, size, sha256):
                    os.unlink(partial)
                    return target
                continue
            try:
                os.link(partial, target)
            except FileExistsError:
                continue
            except OSError:  # no hard links here (FAT, some network file systems):
                try:  # claim the name first, then replace only our own placeholder
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                except FileExistsError:
                    continue
                os.replace(partial, target)
                return target
            os.unlink(partial)
            return target
        raise DiskError(f"Too many files named like {name!r} in {self.root}.")


# ---------------------------------------------------------------------------
# Without a load balancer


class DirectSource:
    """Stands in for the load balancer when there is none and the person named a peer.

    That peer is the only holder: its ``GET /files`` says the file's size, SHA-256 and
    piece-list hash; there is nothing to renew or end, and no other holder to turn to
    when it fails.
    """

    def __init__(self, host, port, timeout=CONNECT_TIMEOUT_S, members=OPEN):
        self.host, self.port, self.timeout = host, port, timeout
        self.members = members
        self.address = format_address(host, port)

    def pick(self, name, sha256=None, peer=None, exclude=(), requester=None, count=1):
        if exclude:
            raise NoHolderLeft(f"{self.address} failed, and without a load balancer there "
                               "is no other holder to ask.", 503)
        conn = connect_http(self.host, self.port, self.timeout, self.members)
        try:
            conn.connect()
            conn.request("GET", "/files", headers=self.members.auth_headers(
                "GET", "/files", authority(conn.sock, self.port)))
            response = conn.getresponse()
            listing = json.loads(response.read())
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"No peer answers at {self.address} "
                              f"({describe_socket_error(e)}).") from None
        except ValueError:
            raise Unreachable(f"{self.address} answered, but not as a peer.") from None
        finally:
            conn.close()
        if response.status == 401 or (isinstance(listing, dict) and listing.get("tls_required")):
            tls = bool(listing.get("tls_required"))
            raise Unauthorized(f"{self.address} refuses us: "
                               f"{listing.get('error') or 'wrong or missing network secret.'} "
                               f"{TLS_FIX if tls else SECRET_FIX}", 401, tls)
        versions = [f for f in listing if isinstance(f, dict) and f.get("name") == name
                    and sha256 in (None, f.get("sha256"))] if isinstance(listing, list) else []
        if not versions:
            raise NotFound(f"{self.address} does not share {name!r}.", 404)
        try:
            record = FileRecord.parse(versions[0])
        except ValueError:
            raise Unreachable(f"{self.address} answered, but not as a peer.") from None
        lease = Lease(transfer_id="", secret="", peer_id=self.address, host=self.host,
                      port=self.port)
        return Pick(file=record, leases=[lease], renew_s=DEFAULT_RENEW_S,
                    pieces=record.pieces)

    def renew(self, lease):
        """Nothing to renew: no load balancer counts this transfer."""

    def end(self, lease, outcome="done"):
        """Nothing to end: no load balancer counts this transfer."""


# ---------------------------------------------------------------------------
# Downloads in the background


class DownloadCancelled(Exception):
    """A background download was cancelled (raised from its progress callback)."""


@dataclass
class Job:
    """One download asked for: waiting for its turn, running, or ended (and how)."""
    id: int
    name: str
    sha256: str = None
    peer: str = None
    state: str = "waiting"  # waiting, running, done, failed, cancelled
    progress: Progress = None
    result: Result = None
    error: DownloadError = None
    cancel: threading.Event = field(default_factory=threading.Event)
    reported: bool = False

    @property
    def ended(self):
        return self.state in ("done", "failed", "cancelled")


class DownloadQueue:
    """Downloads in background threads, at most ``limit`` at once, in the order asked.

    ``start(job, on_progress)`` runs one download and returns its Result (or raises
    DownloadError); its progress callback raises DownloadCancelled once the job is
    cancelled, so a running download stops at its next progress report (at least
    every second or so while bytes arrive) and keeps its partial file.
    """

    def __init__(self, start, limit=DEFAULT_PARALLEL):
        self._start = start
        self.limit = limit
        self._cond = threading.Condition()
        self._jobs = []
        self._threads = []
        self._running = 0

    def submit(self, name, sha256=None, peer=None):
        """Queue a download; returns (its Job, False), or (the same one queued before, True)."""
        with self._cond:
            for job in self._jobs:  # the same file, or a version of it not yet chosen
                if not job.ended and job.name == name and (
                        job.sha256 == sha256 or None in (job.sha256, sha256)):
                    return job, True
            job = Job(len(self._jobs) + 1, name, sha256, peer)
            self._jobs.append(job)
            thread = threading.Thread(target=self._run, args=(job,), daemon=True,
                                      name=f"download-{job.id}")
            self._threads.append(thread)
        thread.start()
        return job, False

    def _run(self, job):
        with self._cond:
            self._cond.wait_for(lambda: self._running < self.limit or job.cancel.is_set())
            if job.cancel.is_set():
                job.state = "cancelled"
                return
            self._running += 1
            job.state = "running"
        try:
            job.result = self._start(job, lambda p: self._progress(job, p))
            job.state = "done"
        except DownloadCancelled:
            job.state = "cancelled"
        except (DownloadError, LBClientError) as e:
            job.error, job.state = e, "failed"
        except Exception as e:  # a bug of ours: logged, and the other downloads go on
            log.exception("download of %s failed", job.name)
            job.error, job.state = DownloadError(f"Unexpected error: {e!r}"), "failed"
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @staticmethod
    def _progress(job, progress):
        job.progress = progress
        if job.cancel.is_set():
            raise DownloadCancelled()

    def jobs(self):
        with self._cond:
            return list(self._jobs)

    def active(self):
        """The jobs waiting or running."""
        return [job for job in self.jobs() if not job.ended]

    def take_ended(self):
        """The jobs that ended since the last call (each is returned once)."""
        with self._cond:
            ended = [job for job in self._jobs if job.ended and not job.reported]
            for job in ended:
                job.reported = True
            return ended

    def cancel_all(self):
        with self._cond:
            for job in self._jobs:
                job.cancel.set()
            self._cond.notify_all()

    def wait(self, timeout=None):
        """Wait for every job to end (or ``timeout``); True if they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            threads = list(self._threads)
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.active()
