"""The records both ends of the load balancer's wire share, and their checks. Pure.

A peer announces each file it shares as a file record, and the load balancer
hands the same record back with every pick::

    {"name": "dir/song.mp3", "size": 4096, "sha256": HEX64, "pieces": HEX64}

``pieces`` (optional) is the holder's piece-list hash (``pieces.pieces_hash``).
A file the peer is still downloading is a partial record: the file record plus
``"done"``, the bytes it has verified so far (0 to ``size``).

``FileRecord.parse`` and ``PartialRecord.parse`` turn a decoded JSON object
into a record or raise ``BadRecord`` with a sentence naming the field; the load
balancer answers that sentence with a 400, the client treats it as an answer
that is not a load balancer's.
"""

import re
from dataclasses import dataclass

from httpkit import BadName, Problem, check_name

SHA256_RE = re.compile(r"[0-9a-f]{64}")
SHOWN_NAME_CHARS = 100  # of a bad name quoted back in an error


class BadRecord(Problem, ValueError):
    """A record that does not say what it must; the message says which field and why."""

    status = 400


def field(obj, key, kind, what, required=True):
    """``obj[key]`` if it is a ``kind`` (a bool is not an int), None if absent and optional."""
    if key not in obj:
        if required:
            raise BadRecord(f"The field {key!r} ({what}) is missing.")
        return None
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRecord(f"The field {key!r} must be {what}.")
    return value


def check_sha256(value, key="sha256"):
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise BadRecord(f"The field {key!r} must be 64 lowercase hexadecimal digits.")
    return value


def check_file_name(name):
    try:
        return check_name(name)
    except BadName as e:
        raise BadRecord(f"{e} ({name[:SHOWN_NAME_CHARS]!r})") from None


@dataclass(frozen=True)
class FileRecord:
    """A file as the network knows it: its name at a holder, its length and contents."""
    name: str
    size: int
    sha256: str
    pieces: str | None = None  # the holder's piece-list hash, when it announced one

    @property
    def key(self):
        """A file is its content and its length: (SHA-256, size)."""
        return self.sha256, self.size

    def as_dict(self):
        record = {"name": self.name, "size": self.size, "sha256": self.sha256}
        if self.pieces is not None:
            record["pieces"] = self.pieces
        return record

    @classmethod
    def parse(cls, obj):
        """The record of a JSON object {name, size, sha256, pieces?}, or BadRecord."""
        if not isinstance(obj, dict):
            raise BadRecord("A file record must be an object {name, size, sha256, pieces?}.")
        name = check_file_name(field(obj, "name", str, "a file name"))
        size = field(obj, "size", int, "a size in bytes")
        if size < 0:
            raise BadRecord(f"The size of {name!r} must not be negative.")
        sha256 = check_sha256(field(obj, "sha256", str, "a SHA-256 in hex"))
        pieces = obj.get("pieces")
        if pieces is not None:
            check_sha256(pieces, "pieces")
        return cls(name, size, sha256, pieces)


@dataclass(frozen=True)
class PartialRecord:
    """A file a peer is downloading, and how many of its bytes it has verified."""
    file: FileRecord
    done: int

    @property
    def key(self):
        return self.file.key

    def as_dict(self):
        return {**self.file.as_dict(), "done": self.done}

    @classmethod
    def parse(cls, obj):
        """The record of a JSON object {name, size, sha256, pieces?, done}, or BadRecord."""
        file = FileRecord.parse(obj)
        done = field(obj, "done", int, "the verified bytes")
        if not 0 <= done <= file.size:
            raise BadRecord(f"The field 'done' of {file.name!r} must be between 0 and its "
                            f"size, {file.size}.")
        return cls(file, done)
