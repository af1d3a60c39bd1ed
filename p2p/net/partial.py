"""The partial file of a download: its name, its lock, its verified pieces, its final name.

A download writes into a hidden ``.<name>.<sha256[:16]>.part`` next to where the
file goes (``partial_name``), locked (``flock``) while it runs; each verified
piece lands at its offset (``PartialFile``), so a download stopped by Ctrl-C, a
crash or a full disk keeps every piece, and the next run keeps what still matches
its SHA-256 (``PartialFile.verified``). ``WholeHash`` follows the pieces in order
for the whole file's SHA-256. Only when it and the size match does the file get
its final name (``commit``), with a hard link that never replaces an existing
file: a different file of that name keeps it, the new one becomes ``name (1).ext``
(``collision_name``). ``find_unfinished`` lists the partial files under a folder;
``remove_unfinished`` deletes one that is not running. ``plan_target`` decides
from what is on disk whether there is anything to download at all.
"""

import collections
import errno
import hashlib
import os
import re
import shutil
import threading
from dataclasses import dataclass

from p2p.core.pieces import Bitfield
from p2p.net.download_errors import DiskError, DownloadError
from p2p.net.holder import BUFFER_BYTES
from p2p.net.sharing import sha256_file, within

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one download per file at a time is on you
    fcntl = None

PARTIAL_SHA_DIGITS = 16  # of the SHA-256 in a partial file's name
PARTIAL_RE = re.compile(r"\.(.+)\.([0-9a-f]{16})\.part")
MAX_NAME_BYTES = 255  # of one file name on disk (NAME_MAX of Linux, macOS and Windows)
MAX_NAME_VARIANTS = 1000  # name, name (1), ... name (999): then a clear error
READ_BACK = object()  # the whole file's SHA-256 reads its next piece back from the file


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


def check_folder(root, partial):
    """Create the partial file's folder, never through a link leading out of ``root``."""
    folder = os.path.dirname(partial)
    existing = folder
    while existing != root and not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if os.path.exists(existing) and within(os.path.realpath(root), existing) is None:
        raise DiskError(f"{folder} leads outside {root} (a symlink?); not writing there.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DiskError(f"Cannot create {folder}: {e.strerror}.") from None


def open_partial(root, path, size):
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
        free = shutil.disk_usage(root).free
        needed = size - min(st.st_blocks * 512, st.st_size)
        if free < needed:
            if st.st_size == 0:  # ours (locked) and empty: leave nothing behind
                os.unlink(path)
            raise DiskError(f"Not enough space in {root}: {needed} bytes "
                            f"needed, {free} free.")
        return fd
    except BaseException:
        os.close(fd)
        raise


def commit(root, partial, name, size, sha256):
    """Give the verified partial file its final name without replacing anything."""
    for target in name_variants(root, name):
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
    raise DiskError(f"Too many files named like {name!r} in {root}.")


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
    """The whole file's SHA-256, in a thread of its own that follows the pieces in order.

    Each piece written is reported with ``landed``. The next piece due comes with its
    buffer and is hashed from there, the buffer then going back to its owner: no
    read-back, and the hash never waits for the disk. Any other piece (it came out of
    order, from a swarm) is read back from the partial file when its turn comes (the
    page cache has it). ``ready(index)`` says a piece is on disk; ``cond`` guards it
    (the plan) and this hash's turn (``_due``); the hash sleeps on a condition of its
    own (``_wake``, taken after ``cond``, never before), so a piece written wakes it and
    nobody else.
    """

    def __init__(self, partial, ready, cond):
        self.partial, self.ready, self.cond = partial, ready, cond
        self._digest = hashlib.sha256()
        self._next = 0  # the first piece not hashed yet (the hash's thread only)
        self._due = 0  # the first piece neither hashed nor handed over (under cond)
        self._wake = threading.Condition()  # guards the three below
        self._offered = collections.deque()  # (view, give_back) of pieces _next.._due-1
        self._landed = 0  # pieces reported written so far
        self._stop = False
        self.error = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="whole-hash")
        self._thread.start()

    def landed(self, index, view, give_back):
        """Piece ``index`` is written, its bytes in ``view`` (the caller holds ``cond``
        and has told the plan). The next piece due is hashed from ``view``, then
        ``give_back()`` is called: True. False leaves the buffer to the caller (the piece
        is read back from the file when due)."""
        with self._wake:
            self._landed += 1
            self._wake.notify()
            if self._stop or index != self._due:
                return False
            self._offered.append((view, give_back))
            self._due += 1
            return True

    def _run(self):
        pieces = self.partial.pieces
        buf = bytearray(min(BUFFER_BYTES, pieces.piece_size) if pieces.count else 0)
        try:
            while self._next < pieces.count:
                turn = self._turn()
                if turn is None:
                    return
                if turn is READ_BACK:
                    self._read_back(self._next, buf)
                else:
                    view, give_back = turn
                    self._digest.update(view)
                    give_back()
                self._next += 1
        except (OSError, DiskError) as e:
            self.error = e
        finally:
            with self._wake:
                self._stop = True
                offered, self._offered = self._offered, collections.deque()
            for _, give_back in offered:
                give_back()

    def _turn(self):
        """Wait for the next piece: (view, give_back) of one handed over, READ_BACK for
        one on disk, None when stopped."""
        while True:
            with self._wake:
                if self._stop:
                    return None
                if self._offered:
                    return self._offered.popleft()
                seen = self._landed
            with self.cond:
                if self._due > self._next:  # handed over meanwhile: in _offered now
                    continue
                if self.ready(self._next):
                    self._due = self._next + 1
                    return READ_BACK
            with self._wake:
                self._wake.wait_for(lambda: self._stop or self._landed != seen)

    def _read_back(self, index, buf):
        """Hash piece ``index`` from the partial file, ``buf`` at a time."""
        start, length = self.partial.pieces.span(index)
        while length:
            view = memoryview(buf)[:min(len(buf), length)]
            n = os.preadv(self.partial.fd, [view], start)
            if n <= 0:
                raise DiskError("The partial file shrank while being read.")
            self._digest.update(view[:n])
            start, length = start + n, length - n

    def hexdigest(self):
        self._thread.join()
        if self.error is not None:
            raise self.error if isinstance(self.error, DiskError) else DiskError(
                f"Cannot read the partial file back: {self.error.strerror}.")
        return self._digest.hexdigest()

    def stop(self):
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join()
