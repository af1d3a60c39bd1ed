"""The downloader: a file from the least-loaded holder into ``downloads/``, verified.

Steps (DESIGN "Download"):

1. Ask the load balancer for a transfer (``POST /transfers``): it names the
   holder and the file's size and SHA-256. The user may name a peer instead.
2. ``GET /files/{name}`` from that peer (``Range: bytes=N-`` when resuming),
   streaming into the hidden partial file ``.<name>.<sha256[:16]>.part`` next
   to the final name, hashing in a second thread as the bytes arrive, renewing
   the transfer while it runs.
3. On a fault of the holder (refused, reset, timeout, short body, 5xx, wrong
   ETag) end its transfer as ``failed``, ask for another holder with the failed
   ones excluded, and continue from the byte reached.
4. Only when size and SHA-256 match does the file get its final name, with a
   hard link that never replaces an existing file (a different file of that
   name keeps it; the new one becomes ``name (1).ext``). A mismatch deletes the
   partial file, blames the holders that sent it and starts again from an
   honest one, or fails with a clear error when none is left.
5. The caller shares the verified file from then on.

A download stopped by Ctrl-C, a crash or a full disk keeps its partial file
and resumes from it next time (``Range`` with ``If-Range: "<sha256>"``, so a
holder of another version sends the whole file instead); ``find_unfinished``
lists those files and ``remove_unfinished`` deletes one that is not running.
A 503 carries the holder's own reason (busy, hashing, still being written),
which reaches the user. ``plan_target``, ``collision_name``,
``parse_response_head``, ``check_response`` and ``Blame`` (who failed, whom to
ask next) are the pure decisions.

``DownloadQueue`` runs downloads in background threads, a few at once, each
cancellable; ``DirectSource`` stands in for the load balancer when there is
none and the person named the peer to ask.
"""

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

from httpkit import format_address
from lb_client import (AllBusy, Ambiguous, LBClientError, Lease, NoHolderLeft, NotFound, Pick,
                       Unauthorized, Unreachable, connect_http, describe_socket_error)
from members import OPEN
from sharing import PEER_HEADER, check_name, sha256_file, url_for_name, within
from wire import FileRecord

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one download per file at a time is on you
    fcntl = None

log = logging.getLogger("p2p.download")

BUFFER_BYTES = 1 << 20  # each recv_into fills up to this much
PIPELINE_BUFFERS = 4  # buffers in flight between the receiving and hashing threads
CONNECT_TIMEOUT_S = 5.0
STALL_TIMEOUT_S = 15.0  # no byte from the holder for this long is a fault
MAX_HEAD_BYTES = 64 * 1024
MAX_ATTEMPTS = 20  # transfers tried for one download before giving up
PROGRESS_EVERY_S = 0.2
BUSY_WAIT_MAX_S = 5.0  # longest Retry-After honoured when every holder is busy
BUSY_ROUNDS = 3  # times to wait for busy holders before giving up
DEFAULT_RENEW_S = 10.0
HEAD_DEADLINE_S = 30.0  # the holder's response headers must arrive within this
SLOW_WINDOW_S = 60.0  # a holder sending less than MIN_RATE over this window is a fault
MIN_RATE_BYTES_S = 64  # catches a holder trickling bytes, not one with a low upload limit
DEFAULT_PARALLEL = 3  # downloads running at once in the background (the rest wait their turn)
PARTIAL_SHA_DIGITS = 16  # of the SHA-256 in a partial file's name
PARTIAL_RE = re.compile(r"\.(.+)\.([0-9a-f]{16})\.part")
MAX_NAME_BYTES = 255  # of one file name on disk (NAME_MAX of Linux, macOS and Windows)


class DownloadError(Exception):
    """A download could not finish; the message says what happened and what to do."""

    def __init__(self, message, status=None, versions=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.versions = versions or []


class DiskError(DownloadError):
    pass


class OtherSize(Exception):
    """The next holder has the file with another size than the partial file was made for."""

    def __init__(self, pick):
        super().__init__(pick.file.size)
        self.pick = pick


class VerifyFailed(DownloadError):
    pass


class PeerFault(Exception):
    """The holder failed us: try another. ``busy`` is a Retry-After in seconds, if any."""

    def __init__(self, message, busy=None):
        super().__init__(message)
        self.busy = busy


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
    """A partial download on disk: the file's name, the start of its SHA-256, bytes so far."""
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
            try:
                done = os.stat(path, follow_symlinks=False).st_size
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


class Blame:
    """Who failed a download, and whom to ask next: the failover decisions, without I/O.

    A holder that breaks down is excluded and its transfer ends ``failed`` (a cool-down at
    the load balancer). A busy one is set aside without blame (``cancelled``) and asked
    again after its Retry-After once nobody else is left, at most BUSY_ROUNDS times. A file
    that does not verify blames every holder that sent bytes of it, unless some bytes came
    from before a resume: then it starts once more from byte 0 before anybody is blamed.
    """

    def __init__(self, resumed=False):
        self.failed = set()
        self.busy = {}  # peer id -> seconds it asked us to wait
        self.contributors = set()  # holders that sent bytes of the current attempt
        self.busy_rounds = 0
        self.doubt_resumed = resumed

    def sending(self, peer_id):
        self.contributors.add(peer_id)

    def fault(self, peer_id, busy=None):
        """A holder failed us; returns the outcome to end its transfer with."""
        if busy is None:
            self.failed.add(peer_id)
            return "failed"
        self.busy[peer_id] = busy
        return "cancelled"

    def excluded(self):
        return self.failed | set(self.busy)

    def wait_for_busy(self):
        """Seconds to wait before asking the busy holders again, or None to give up."""
        if not self.busy or self.busy_rounds >= BUSY_ROUNDS:
            return None
        self.busy_rounds += 1
        wait = max(self.busy.values())
        self.busy.clear()
        return wait

    def mismatch(self):
        """The whole file did not verify: True to start again without blame, else blamed."""
        doubt, self.doubt_resumed = self.doubt_resumed, False
        if not doubt:
            self.failed |= self.contributors
        self.contributors.clear()
        return doubt


@dataclass
class Plan:
    """Where a download goes: ``have`` is set when the file is already there."""
    partial: str
    offset: int
    have: str = None


def plan_target(root, name, size, sha256, hash_of=sha256_file, max_names=1000):
    """Decide from what is on disk: already have it, or resume the partial from where."""
    for n in range(max_names):
        candidate = local_path(root, collision_name(name, n))
        if not os.path.lexists(candidate):
            break
        if os.path.isfile(candidate) and os.path.getsize(candidate) == size \
                and hash_of(candidate) == sha256:
            return Plan(partial="", offset=0, have=candidate)
    partial = local_path(root, partial_name(name, sha256))
    try:
        offset = os.path.getsize(partial)
    except OSError:
        offset = 0
    return Plan(partial=partial, offset=offset if offset <= size else 0)


def parse_response_head(data):
    """Raw bytes up to the blank line -> (status, {lower-case name: value})."""
    lines = data.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") \
            or not re.fullmatch(r"[0-9]{3}", parts[1]):
        raise PeerFault(f"the peer answered something that is not HTTP: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


def peer_says(body):
    """The sentence of a peer's JSON error body (its start, as far as it came), or None."""
    try:
        said = json.loads(body.decode("utf-8")).get("error")
    except (ValueError, AttributeError):
        return None
    return said if isinstance(said, str) and said.strip() else None


def check_response(status, headers, offset, size, sha256, body=b""):
    """Where the body starts in the file, or PeerFault. Also checks length and ETag.

    ``body`` is what came after the head so far: a 503 carries the peer's reason
    (every slot busy, the file being hashed or still being written) in it.
    """
    if status in (503, 429):
        retry = headers.get("retry-after", "")
        seconds = int(retry) if re.fullmatch(r"[0-9]+", retry) else 1  # or an HTTP date
        said = peer_says(body)
        raise PeerFault(f"the peer says: {said}" if said else "the peer is busy",
                        busy=min(BUSY_WAIT_MAX_S, seconds))
    if status == 200:
        start = 0
    elif status == 206:
        unit, _, spec = headers.get("content-range", "").partition(" ")
        expected = f"{offset}-{size - 1}/{size}"
        if unit != "bytes" or spec != expected:
            raise PeerFault(f"the peer sent range {spec!r}, not {expected!r}")
        start = offset
    elif status == 401:
        raise PeerFault("the peer refused us: wrong or missing network secret")
    else:
        raise PeerFault(f"the peer answered HTTP {status}")
    if headers.get("etag", "").strip('"') != sha256:
        raise PeerFault("the peer's copy is not the advertised version (ETag differs)")
    if headers.get("content-length") != str(size - start):
        raise PeerFault(f"the peer announced {headers.get('content-length')} bytes, "
                        f"not {size - start}")
    return start


# ---------------------------------------------------------------------------
# Hashing in a second thread


class HashPipe:
    """SHA-256 of the buffers given to ``submit``, computed in a second thread.

    The receiving thread takes a free buffer with ``buffer()``, fills it, and
    hands it over; hashlib releases the GIL, so receiving and hashing overlap.
    """

    def __init__(self, buffers=PIPELINE_BUFFERS, size=BUFFER_BYTES):
        self._digest = hashlib.sha256()
        self._free = queue.Queue()
        self._full = queue.Queue()
        for _ in range(buffers):
            self._free.put(bytearray(size))
        self._thread = threading.Thread(target=self._run, daemon=True, name="hash-pipe")
        self._thread.start()

    def _run(self):
        while (item := self._full.get()) is not None:
            buf, n = item
            self._digest.update(memoryview(buf)[:n])
            self._free.put(buf)

    def buffer(self):
        return self._free.get()

    def submit(self, buf, n):
        self._full.put((buf, n))

    def give_back(self, buf):
        self._free.put(buf)

    def hexdigest(self):
        self.close()
        return self._digest.hexdigest()

    def close(self):
        if self._thread.is_alive():
            self._full.put(None)
            self._thread.join()


# ---------------------------------------------------------------------------
# Keeping the transfer alive


class Renewer:
    """Renews the current lease every ``renew_s`` until stopped; errors are only logged."""

    def __init__(self, lb, renew_s, lease):
        self.lb, self.renew_s = lb, renew_s
        self.lease = lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="renewer")
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.renew_s):
            if self.lease.transfer_id:
                try:
                    self.lb.renew(self.lease)
                except LBClientError as e:
                    log.info("could not renew transfer %s: %s", self.lease.transfer_id, e)

    def stop(self):
        self._stop.set()


@dataclass
class Progress:
    name: str
    done: int
    total: int
    rate: float  # bytes/s, recent
    source: str
    finished: bool = False


@dataclass
class Result:
    path: str
    name: str
    size: int
    sha256: str
    already: bool = False  # the same content was already there: nothing moved
    received: int = 0  # bytes that came over the network this time
    resumed_from: int = 0
    sources: list = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    others: list = field(default_factory=list)  # other versions of the name on the network


# ---------------------------------------------------------------------------
# The downloader


def _set_socket_timeouts(sock, seconds):
    """OS-level timeouts on a blocking socket, so recv(MSG_WAITALL) still gives up on a stall."""
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class PartialFile:
    """The hidden partial file being filled, and the running hash of its bytes."""

    def __init__(self, fd, offset):
        self.fd, self.offset = fd, 0
        self.pipe = HashPipe()
        try:
            while self.offset < offset:  # resuming: hash what is already there
                buf = self.pipe.buffer()
                n = os.preadv(fd, [memoryview(buf)[:min(len(buf), offset - self.offset)]],
                              self.offset)
                if n <= 0:
                    self.pipe.give_back(buf)
                    raise DiskError("The partial file shrank while being read.")
                self.pipe.submit(buf, n)
                self.offset += n
        except BaseException:
            self.pipe.close()
            raise

    def buffer(self):
        return self.pipe.buffer()

    def give_back(self, buf):
        self.pipe.give_back(buf)

    def append(self, buf, n):
        """Write the first ``n`` bytes of ``buf`` at the end, and hash them in the pipe."""
        view = memoryview(buf)[:n]
        start = self.offset
        try:
            while view:
                written = os.pwrite(self.fd, view, self.offset)
                view = view[written:]
                self.offset += written
        except OSError as e:
            self.pipe.give_back(buf)
            self.offset = start
            os.ftruncate(self.fd, start)
            if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise DiskError("The disk is full (or a file size limit was reached) while "
                                "saving; free some space and run the same download again "
                                "to resume.") from None
            raise DiskError(f"Cannot write the partial file: {e.strerror}.") from None
        self.pipe.submit(buf, n)

    def restart(self):
        """Throw the bytes away and start again from byte 0."""
        os.ftruncate(self.fd, 0)
        self.pipe.close()
        self.pipe, self.offset = HashPipe(), 0

    def hexdigest(self):
        return self.pipe.hexdigest()

    def close(self):
        self.pipe.close()
        os.close(self.fd)


class Downloader:
    """Downloads through one load balancer into ``root``; ``on_progress`` sees Progress."""

    def __init__(self, lb, root, requester=None, on_progress=None, on_verified=None,
                 have=None, identity=None, stall_timeout=STALL_TIMEOUT_S, members=OPEN):
        self.lb = lb
        self.members = members
        self.root = os.path.abspath(root)
        self.requester = requester
        self.on_progress = on_progress or (lambda progress: None)
        self.on_verified = on_verified or (lambda root, path, sha256: None)
        self.have = have or (lambda sha256: None)  # a SharedFile we already have, or None
        self.identity = identity  # this peer's address, shown to the holders we fetch from
        self.stall_timeout = stall_timeout

    # -- talking to the load balancer ---------------------------------------

    def _ask(self, name, sha256=None, peer=None, exclude=()):
        """A Pick of one holder; while every holder is busy, waits its Retry-After (at most
        BUSY_WAIT_MAX_S) up to BUSY_ROUNDS times."""
        for busy_round in range(BUSY_ROUNDS + 1):
            try:
                return self.lb.pick(name, sha256=sha256, peer=peer, exclude=exclude,
                                    requester=self.requester)
            except AllBusy as e:
                if busy_round == BUSY_ROUNDS:
                    raise DownloadError(e.message, e.status) from None
                time.sleep(min(e.retry_after, BUSY_WAIT_MAX_S))
            except Ambiguous as e:
                raise DownloadError(e.message, e.status, e.versions) from None
            except LBClientError as e:
                raise DownloadError(e.message, e.status) from None

    def _end(self, pick, outcome):
        lease = pick.leases[0]
        try:
            self.lb.end(lease, outcome)
        except LBClientError as e:
            log.info("could not end transfer %s: %s", lease.transfer_id, e)

    # -- the download -------------------------------------------------------

    def get(self, name, sha256=None, peer=None):
        """Download ``name`` (that version, from that peer if given); returns a Result.

        The Result names the other versions of ``name`` on the network, if any.
        """
        check_name(name)
        pick = self._ask(name, sha256, peer)
        blame = Blame()
        for _attempt in range(MAX_ATTEMPTS):
            try:
                result = self._get(name, pick, blame)
            except OtherSize as e:  # holders claim two sizes for the SHA-256: try the other
                pick = e.pick
                continue
            result.others = pick.versions
            return result
        raise DownloadError(f"Gave up on {name!r} after {MAX_ATTEMPTS} attempts.")

    def _get(self, name, pick, blame):
        size, sha256 = pick.file.size, pick.file.sha256
        renewer = Renewer(self.lb, pick.renew_s, pick.leases[0])
        try:
            try:
                mine = self.have(sha256)
                if mine is not None:
                    self._end(pick, "cancelled")
                    return Result(mine.path, name, size, sha256, already=True)
                plan = plan_target(self.root, name, size, sha256)
                if plan.have:
                    self._end(pick, "cancelled")
                    return Result(plan.have, name, size, sha256, already=True)
                self._check_folder(plan.partial)
                partial = self._open_partial(plan.partial, size)
            except BaseException:
                self._end(pick, "cancelled")
                raise
            try:  # the partial file stays locked until it has its final name
                blame.doubt_resumed = partial.offset > 0
                result = self._run(partial, pick, name, size, sha256, renewer, blame)
                result.path = self._commit(plan.partial, name, size, sha256)
            except VerifyFailed:
                os.unlink(plan.partial)
                raise
            except BaseException:
                if partial.offset == 0:  # nothing to resume from: leave no empty partial file
                    os.unlink(plan.partial)
                raise
            finally:
                partial.close()
        finally:
            renewer.stop()
        self.on_verified(self.root, result.path, sha256)
        return result

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
        if within(os.path.realpath(self.root), folder) is None:
            raise DiskError(f"{folder} leads outside {self.root} (a symlink?); not writing there.")

    def _open_partial(self, path, size):
        """Open, lock and check the partial file; a PartialFile at the byte to resume from."""
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
            offset = st.st_size if st.st_size <= size else 0  # longer than the file: not ours
            if offset != st.st_size:
                os.ftruncate(fd, offset)
            free = shutil.disk_usage(self.root).free
            if free < size - offset:
                if offset == 0:  # ours (locked) and empty: leave nothing behind
                    os.unlink(path)
                raise DiskError(f"Not enough space in {self.root}: {size - offset} bytes "
                                f"needed, {free} free.")
            return PartialFile(fd, offset)
        except BaseException:
            os.close(fd)
            raise

    def _run(self, partial, pick, name, size, sha256, renewer, blame):
        """Fill ``partial`` from holder after holder until it verifies; returns a Result, or
        OtherSize when the next holder has another size for the file."""
        result = Result("", name, size, sha256, resumed_from=partial.offset)
        for _attempt in range(MAX_ATTEMPTS):
            if pick.file.size != size:
                raise OtherSize(pick)
            lease = renewer.lease = pick.leases[0]
            source = " ".join(x for x in (lease.name, lease.address) if x)
            result.sources.append(source)
            try:
                if partial.offset < size:
                    blame.sending(lease.peer_id)
                    self._fetch(partial, lease, name, size, sha256, result)
            except PeerFault as fault:
                log.warning("%s from %s failed at byte %d: %s", name, source, partial.offset,
                            fault)
                self._end(pick, blame.fault(lease.peer_id, fault.busy))
                try:
                    pick = self._ask(name, sha256, exclude=blame.excluded())
                except DownloadError as e:
                    wait = blame.wait_for_busy() if e.status == 503 else None
                    if wait is None:
                        kept = (" The partial file is kept: try again later to resume."
                                if partial.offset else "")
                        raise DownloadError(f"Could not download {name!r}: {source} failed "
                                            f"({fault}). {e.message}{kept}", e.status) from None
                    time.sleep(wait)
                    pick = self._ask(name, sha256, exclude=blame.excluded())
                continue
            except BaseException:
                self._end(pick, "cancelled")
                raise
            if partial.hexdigest() == sha256:
                self._end(pick, "done")
                elapsed = max(time.monotonic() - result.started, 1e-6)
                self.on_progress(Progress(name, size, size, result.received / elapsed, source,
                                          finished=True))
                return result
            partial.restart()
            if blame.mismatch():
                log.warning("%s: SHA-256 mismatch after resuming; starting again from byte 0",
                            name)
                result.resumed_from = 0
                continue
            log.warning("%s: SHA-256 mismatch after the bytes from %s", name,
                        ", ".join(result.sources))
            self._end(pick, "failed")
            try:
                pick = self._ask(name, sha256, exclude=blame.excluded())
            except DownloadError:
                liars = " and ".join(dict.fromkeys(result.sources))
                raise VerifyFailed(f"{name!r} from {liars} did not match its SHA-256 and no "
                                   "other holder is left; nothing was saved.") from None
        raise DownloadError(f"Gave up on {name!r} after {MAX_ATTEMPTS} attempts.")

    def _fetch(self, partial, lease, name, size, sha256, result):
        """Receive from ``lease``'s holder into ``partial`` until the file is complete, or
        PeerFault."""
        source = lease.address
        try:
            sock = socket.create_connection((lease.host, lease.port), CONNECT_TIMEOUT_S)
            sock = self.members.connect(sock)
        except OSError as e:
            raise PeerFault(f"cannot connect to it: {describe_socket_error(e)}") from None
        with sock:
            if self.members.tls is None:
                sock.settimeout(None)
                _set_socket_timeouts(sock, self.stall_timeout)
            else:  # no MSG_WAITALL on an SSLSocket: plain timeouts, and _recv fills the buffer
                sock.settimeout(self.stall_timeout)
            try:
                target = url_for_name(name)
                auth = "".join(f"{key}: {value}\r\n" for key, value
                               in self.members.auth_headers("GET", target).items())
                request = (f"GET {target} HTTP/1.1\r\nHost: {source}\r\n"
                           + (f"Range: bytes={partial.offset}-\r\nIf-Range: \"{sha256}\"\r\n"
                              if partial.offset else "")
                           + (f"{PEER_HEADER}: {self.identity}\r\n" if self.identity else "")
                           + auth + "Connection: close\r\n\r\n")
                sock.sendall(request.encode("ascii"))
                status, headers, leftover = self._read_head(sock)
                start = check_response(status, headers, partial.offset, size, sha256, leftover)
                if start != partial.offset:  # the holder ignored the range: start over
                    partial.restart()
                self._receive(sock, partial, leftover, size, name, source, result)
            except OSError as e:
                raise PeerFault(self._describe(e)) from None

    @staticmethod
    def _read_head(sock):
        data = bytearray()
        deadline = time.monotonic() + HEAD_DEADLINE_S
        while (end := data.find(b"\r\n\r\n")) < 0:
            if len(data) > MAX_HEAD_BYTES:
                raise PeerFault("the peer's response headers are too large")
            if time.monotonic() > deadline:
                raise PeerFault(f"no complete answer within {HEAD_DEADLINE_S:.0f} s")
            chunk = sock.recv(MAX_HEAD_BYTES)
            if not chunk:
                raise PeerFault("the peer closed the connection without answering")
            data += chunk
        status, headers = parse_response_head(bytes(data[:end]))
        return status, headers, bytes(data[end + 4:])

    def _receive(self, sock, partial, leftover, size, name, source, result):
        window_start, window_bytes = time.monotonic(), 0
        slow_start, slow_bytes = window_start, 0
        rate = 0.0
        last_report = 0.0
        while partial.offset < size:
            buf = partial.buffer()
            view = memoryview(buf)[:min(len(buf), size - partial.offset)]
            if leftover:
                n = min(len(leftover), len(view))
                view[:n] = leftover[:n]
                leftover = leftover[n:]
            else:
                try:
                    n = self._recv(sock, view)
                except (BlockingIOError, TimeoutError):
                    partial.give_back(buf)
                    raise PeerFault(f"no data for {self.stall_timeout:.0f} s") from None
                except BaseException:
                    partial.give_back(buf)
                    raise
            partial.append(buf, n)  # n < len(view): a stall or a signal; the next recv tells
            result.received += n
            window_bytes += n
            slow_bytes += n
            now = time.monotonic()
            if now - slow_start >= SLOW_WINDOW_S:
                if slow_bytes < MIN_RATE_BYTES_S * (now - slow_start):
                    raise PeerFault(f"slower than {MIN_RATE_BYTES_S} bytes/s for "
                                    f"{SLOW_WINDOW_S:.0f} s")
                slow_start, slow_bytes = now, 0
            if now - window_start >= 1.0:
                rate, window_start, window_bytes = window_bytes / (now - window_start), now, 0
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                shown = rate or window_bytes / max(now - window_start, 1e-3)
                self.on_progress(Progress(name, partial.offset, size, shown, source))
            if n == 0:
                raise PeerFault(f"the connection ended at byte {partial.offset} of {size}")

    def _recv(self, sock, view):
        """Fill ``view`` from ``sock``: fewer bytes only at a stall, a signal or the end."""
        if self.members.tls is None:
            return sock.recv_into(view, len(view), socket.MSG_WAITALL)
        got = 0
        while got < len(view):  # one TLS record (16 KiB at most) per recv_into
            try:
                n = sock.recv_into(view[got:])
            except TimeoutError:
                if got:
                    return got
                raise
            if n == 0:
                break
            got += n
        return got

    @staticmethod
    def _describe(error):
        if isinstance(error, BlockingIOError):
            return "no answer in time"
        return describe_socket_error(error)

    def _commit(self, partial, name, size, sha256):
        """Give the verified partial file its final name without replacing anything."""
        for n in range(1000):
            target = local_path(self.root, collision_name(name, n))
            if os.path.lexists(target):
                if os.path.isfile(target) and os.path.getsize(target) == size \
                        and sha256_file(target) == sha256:
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

    That peer is the only holder: its ``GET /files`` says the file's size and SHA-256;
    there is nothing to renew or end, and no other holder to turn to when it fails.
    """

    def __init__(self, host, port, timeout=CONNECT_TIMEOUT_S, members=OPEN):
        self.host, self.port, self.timeout = host, port, timeout
        self.members = members
        self.address = format_address(host, port)

    def pick(self, name, sha256=None, peer=None, exclude=(), requester=None, count=None):
        if exclude:
            raise NoHolderLeft(f"{self.address} failed, and without a load balancer there "
                               "is no other holder to ask.", 404)
        conn = connect_http(self.host, self.port, self.timeout, self.members)
        try:
            conn.request("GET", "/files", headers=self.members.auth_headers("GET", "/files"))
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
            raise Unauthorized(f"{self.address} refuses us: "
                               f"{listing.get('error') or 'wrong or missing network secret.'}")
        versions = [f for f in listing if isinstance(f, dict) and f.get("name") == name
                    and sha256 in (None, f.get("sha256"))] if isinstance(listing, list) else []
        if not versions:
            raise NotFound(f"{self.address} does not share {name!r}.", 404)
        file = versions[0]
        return Pick(FileRecord(name, file["size"], file["sha256"]),
                    [Lease("", "", self.address, self.host, self.port)], DEFAULT_RENEW_S)

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
        except DownloadError as e:
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
