"""Pieces: a file cut into fixed-size parts, each with its own SHA-256. Pure; no sockets.

Every holder cuts a file the same way, because the piece size depends on the
file's size alone (``piece_size``): the smallest power of two from 256 KiB up
that keeps the list at ``TARGET_PIECES`` pieces or fewer, at most 16 MiB (so a
file over 31.25 GiB, 2,000 pieces of 16 MiB, has more pieces). The last piece is shorter when the size is
not a multiple of it; an empty file has no pieces.

A file's piece list is the SHA-256 of each piece, in order. Its own hash,
``pieces_hash`` (SHA-256 over the 32-byte digests one after another), is what
holders announce with the file, so a downloader can check a list it fetched
from any one holder against what the holders agreed on. The file's identity
stays its whole SHA-256 and size: pieces only make blame, refetching, resuming
and sharing a partial file precise.

On the wire (``GET /pieces/{sha256}`` on a peer)::

    {"sha256": HEX, "size": N, "piece_size": N, "pieces": [HEX, ...],
     "have": null | BASE64}

``have`` is null from a holder of the whole file; from a peer still
downloading it, the pieces it has verified as a bitfield (BitTorrent's order:
piece 0 is the high bit of the first byte), base64-encoded.
"""

import base64
import binascii
import hashlib
import re
import threading
from dataclasses import dataclass

MIN_PIECE_BYTES = 256 * 1024
MAX_PIECE_BYTES = 16 * 1024 * 1024
TARGET_PIECES = 2000  # at most this many pieces, unless the file is over 32 GiB
READ_BYTES = 1 << 20  # hashing reads the file this much at a time
HEX64 = re.compile(r"[0-9a-f]{64}")


class BadPieceList(ValueError):
    """A piece list that does not describe the file it claims to (the message says how)."""


class OtherFile(BadPieceList):
    """A piece list of another file (another SHA-256 or size) than the one asked for."""


def piece_size(size):
    """The piece size of a file of ``size`` bytes (the same for every holder)."""
    piece = MIN_PIECE_BYTES
    while piece < MAX_PIECE_BYTES and -(-size // piece) > TARGET_PIECES:
        piece *= 2
    return piece


def piece_count(size, piece=None):
    piece = piece or piece_size(size)
    return -(-size // piece)


def piece_span(index, size, piece=None):
    """(start, length) in the file of piece ``index``."""
    piece = piece or piece_size(size)
    start = index * piece
    return start, min(piece, size - start)


def pieces_hash(digests):
    """The hash that names a piece list: SHA-256 of its raw digests, one after another."""
    return hashlib.sha256(b"".join(bytes.fromhex(d) for d in digests)).hexdigest()


def hash_file(f, size=None):
    """(whole-file SHA-256, [piece SHA-256, ...]) of an open binary file, in one read."""
    whole = hashlib.sha256()
    buf = bytearray(READ_BYTES)
    view = memoryview(buf)
    digests = []
    if size is None:
        size = f.seek(0, 2)
        f.seek(0)
    piece = piece_size(size)
    current, left = hashlib.sha256(), piece
    while n := f.readinto(view[:min(len(buf), left)]):
        whole.update(view[:n])
        current.update(view[:n])
        left -= n
        if left == 0:
            digests.append(current.hexdigest())
            current, left = hashlib.sha256(), piece
    if left != piece:
        digests.append(current.hexdigest())
    return whole.hexdigest(), digests


@dataclass(frozen=True)
class PieceList:
    """The pieces of the file (sha256, size): its piece size and each piece's SHA-256."""
    sha256: str
    size: int
    piece_size: int
    digests: tuple

    @property
    def count(self):
        return len(self.digests)

    @property
    def hash(self):
        return pieces_hash(self.digests)

    def span(self, index):
        return piece_span(index, self.size, self.piece_size)

    def matches(self, index, digest):
        return self.digests[index] == digest

    def as_json(self, have=None):
        return {"sha256": self.sha256, "size": self.size, "piece_size": self.piece_size,
                "pieces": list(self.digests), "have": None if have is None else have.to_text()}

    @classmethod
    def from_json(cls, body, sha256, size, trusted_hash=None):
        """The list in ``body`` for the file (sha256, size), checked; or BadPieceList.

        ``trusted_hash``, when given, is the piece-list hash the holders announced; a
        list that hashes otherwise is refused.
        """
        if not isinstance(body, dict):
            raise BadPieceList("the piece list is not a JSON object")
        if body.get("sha256") != sha256 or body.get("size") != size:
            raise OtherFile("the piece list is of another file")
        if body.get("piece_size") != piece_size(size):
            raise BadPieceList(f"the piece size is {body.get('piece_size')!r}, "
                               f"not {piece_size(size)}")
        digests = body.get("pieces")
        if not isinstance(digests, list) or len(digests) != piece_count(size) or not all(
                isinstance(d, str) and HEX64.fullmatch(d) for d in digests):
            raise BadPieceList(f"the list does not hold {piece_count(size)} SHA-256 digests")
        pieces = cls(sha256, size, piece_size(size), tuple(digests))
        if trusted_hash is not None and pieces.hash != trusted_hash:
            raise BadPieceList("the list is not the one the holders announced")
        return pieces


class Bitfield:
    """Which of ``count`` pieces are here. Thread-safe: the downloader sets, servers read."""

    def __init__(self, count, bits=None):
        self.count = count
        self._bits = bytearray(bits) if bits is not None else bytearray(-(-count // 8))
        self._have = sum(1 for i in range(count) if self._test(i))
        self._lock = threading.Lock()

    def _test(self, index):
        return self._bits[index >> 3] & (0x80 >> (index & 7))

    def __contains__(self, index):
        return 0 <= index < self.count and bool(self._test(index))

    def add(self, index):
        with self._lock:
            if not self._test(index):
                self._bits[index >> 3] |= 0x80 >> (index & 7)
                self._have += 1

    def discard(self, index):
        with self._lock:
            if self._test(index):
                self._bits[index >> 3] &= ~(0x80 >> (index & 7)) & 0xFF
                self._have -= 1

    def __len__(self):
        """How many pieces are here."""
        return self._have

    @property
    def complete(self):
        return self._have == self.count

    def missing(self):
        return [i for i in range(self.count) if not self._test(i)]

    def to_text(self):
        with self._lock:
            return base64.b64encode(bytes(self._bits)).decode("ascii")

    @classmethod
    def from_text(cls, count, text):
        """The bitfield a peer sent for ``count`` pieces; BadPieceList if it is not one."""
        try:
            bits = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, AttributeError, UnicodeEncodeError):
            raise BadPieceList("the bitfield is not base64") from None
        if len(bits) != -(-count // 8) or (count % 8 and bits[-1] & (0xFF >> (count % 8))):
            raise BadPieceList(f"the bitfield is not one of {count} pieces")
        return cls(count, bits)
