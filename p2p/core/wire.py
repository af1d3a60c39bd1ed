"""What both ends of the wire share, and its checks: file records, file names and
addresses. Pure.

A peer announces each file it shares as a file record, and the load balancer
hands the same record back with every pick::

    {"name": "dir/song.mp3", "size": 4096, "sha256": HEX64, "pieces": HEX64}

``pieces`` (optional) is the holder's piece-list hash (``pieces.pieces_hash``).
A file the peer is still downloading is a partial record: the file record plus
``"done"``, the bytes it has verified so far (0 to ``size``), ``"stalled": true``
while it waits for a holder to come back, and (each optional, for ``status``)
how fast it goes: ``"rate"`` (bytes/s lately), ``"sources"`` (``[{"address":
"host:port", "rate": bytes/s}]``, the holders sending, the fastest first) and
``"limit"`` (what holds it back now, in words: ``core/bottleneck.py``). A record
without them is read as before, and a reader that does not know them skips them.

``FileRecord.parse`` and ``PartialRecord.parse`` turn a decoded JSON object
into a record or raise ``BadRecord`` with a sentence naming the field; the load
balancer answers that sentence with a 400, the client treats it as an answer
that is not a load balancer's.

Every side (the load balancer, the peer's server, its downloader and its menu)
uses one rule for what a file name may be (``check_name``: a relative path that
cannot leave or hide in a folder, and that every system can write) and one
way to write an address (``parse_address``, ``format_address``).
"""

import re
import unicodedata
from dataclasses import dataclass

from p2p.core.errors import Problem

SHA256_RE = re.compile(r"[0-9a-f]{64}")
SHOWN_NAME_CHARS = 100  # of a bad name quoted back in an error
MAX_RECORD_SOURCES = 32  # a partial record's "sources": at most this many holders...
MAX_ADDRESS_CHARS = 100  # ...each address at most this long
MAX_LIMIT_CHARS = 200  # its "limit": at most this long
MAX_NAME_CHARS = 1024
MAX_NAME_PARTS = 64
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
WINDOWS_FORBIDDEN_CHARS = frozenset('<>:"|?*')
WINDOWS_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{n}" for port in ("COM", "LPT") for n in "123456789\u00b9\u00b2\u00b3"])


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
    """A file a peer is downloading, how many of its bytes it has verified, whether it
    is stalled (waiting for a holder to come back), and how fast it goes: ``rate``
    (bytes/s), ``sources`` ((address, bytes/s) of each holder sending) and ``limit``
    (what holds it back, in words)."""
    file: FileRecord
    done: int
    stalled: bool = False
    rate: int = 0
    sources: tuple = ()
    limit: str = ""

    @property
    def key(self):
        return self.file.key

    def as_dict(self):
        return {**self.file.as_dict(), "done": self.done, **self.state()}

    def shown(self):
        """What the load balancer's status says of it: {name, sha256, size, done, ...}."""
        return {"name": self.file.name, "sha256": self.file.sha256, "size": self.file.size,
                "done": self.done, **self.state()}

    def state(self):
        """The optional fields that are set: stalled, rate, sources, limit."""
        return {**({"stalled": True} if self.stalled else {}),
                **({"rate": self.rate} if self.rate else {}),
                **({"sources": [{"address": a, "rate": r} for a, r in self.sources]}
                   if self.sources else {}),
                **({"limit": self.limit} if self.limit else {})}

    @classmethod
    def parse(cls, obj):
        """The record of a JSON object {name, size, sha256, pieces?, done, stalled?, rate?,
        sources?, limit?}, or BadRecord."""
        file = FileRecord.parse(obj)
        done = field(obj, "done", int, "the verified bytes")
        if not 0 <= done <= file.size:
            raise BadRecord(f"The field 'done' of {file.name!r} must be between 0 and its "
                            f"size, {file.size}.")
        stalled = field(obj, "stalled", bool, "true or false (waiting for a holder)",
                        required=False)
        rate = field(obj, "rate", int, "bytes/s", required=False) or 0
        limit = field(obj, "limit", str, "a sentence", required=False) or ""
        if rate < 0:
            raise BadRecord(f"The field 'rate' of {file.name!r} must not be negative.")
        if len(limit) > MAX_LIMIT_CHARS or not limit.isprintable():
            raise BadRecord(f"The field 'limit' must be printable text of at most "
                            f"{MAX_LIMIT_CHARS} characters.")
        return cls(file, done, bool(stalled), rate, parse_sources(obj), limit)


def parse_sources(obj):
    """A partial record's "sources" as ((address, bytes/s), ...), or BadRecord."""
    what = f"a list of at most {MAX_RECORD_SOURCES} {{address, rate}}"
    sources = field(obj, "sources", list, what, required=False) or []
    if len(sources) > MAX_RECORD_SOURCES or not all(isinstance(s, dict) for s in sources):
        raise BadRecord(f"The field 'sources' must be {what}.")
    pairs = tuple((field(s, "address", str, "a holder's address"),
                   field(s, "rate", int, "bytes/s")) for s in sources)
    if any(len(a) > MAX_ADDRESS_CHARS or not a.isprintable() or r < 0 for a, r in pairs):
        raise BadRecord(f"Each of 'sources' must be a printable address of at most "
                        f"{MAX_ADDRESS_CHARS} characters and a rate not negative.")
    return pairs


# ---------------------------------------------------------------------------
# Names on the wire: both ends, the load balancer and the peers, use one rule


class BadName(ValueError):
    """A file name that is not a safe relative path; the message says why."""


def check_name(name):
    """Return ``name`` if it is a safe relative path under a shared folder, else raise BadName."""
    if not isinstance(name, str) or not name:
        raise BadName("The file name is empty.")
    if len(name) > MAX_NAME_CHARS:
        raise BadName(f"The file name is longer than {MAX_NAME_CHARS} characters.")
    if "\\" in name:
        raise BadName("The file name contains a backslash; use / between folders.")
    if not (name.isascii() and name.isprintable()) and any(  # printable ASCII: none of them
            unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in BIDI_CONTROLS for c in name):
        raise BadName("The file name contains NUL, control or text-direction characters.")
    if name.startswith("/"):
        raise BadName("The file name is an absolute path; names are relative to the shared folder.")
    if re.match(r"[A-Za-z]:", name):  # before the rule on ':' below, for the clearer reason
        raise BadName("The file name starts with a drive letter (like C:); names are relative "
                      "to the shared folder.")
    parts = name.split("/")
    if len(parts) > MAX_NAME_PARTS:
        raise BadName(f"The file name has more than {MAX_NAME_PARTS} folders.")
    for part in parts:
        if part in ("", ".", ".."):
            raise BadName("The file name has an empty, '.' or '..' part.")
        if part.startswith("."):
            raise BadName("Hidden files (names starting with '.') are not shared.")
        check_windows_part(part)
    return name


def check_windows_part(part):
    """Raise BadName for a name a Windows peer could not write safely: the characters
    ``<>:"|?*``, a trailing dot or space, or a device name such as ``CON`` or ``nul.txt``."""
    if not WINDOWS_FORBIDDEN_CHARS.isdisjoint(part):
        raise BadName('The file name contains one of <>:"|?*, which Windows cannot use in names.')
    if part.endswith((".", " ")):
        raise BadName("A part of the file name ends with a dot or a space, which Windows drops.")
    if part.split(".")[0].rstrip(" ").upper() in WINDOWS_DEVICE_NAMES:
        raise BadName(f"{part!r} is a device name on Windows (like CON, NUL, COM1), "
                      "not a file name.")


# ---------------------------------------------------------------------------
# Addresses: host:port, [v6]:port


def format_address(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text, default_port=None):
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port or default).

    Raises ValueError with a sentence when the text is not an address.
    """
    text = text.strip()
    if not text:
        raise ValueError("The address is empty.")
    port = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not an address like [::1]:6969.")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    if not re.fullmatch(r"[A-Za-z0-9._%:-]+", host) or host.isdigit():
        raise ValueError(f"{text!r} is not an address like 192.168.1.5 or 192.168.1.5:41237.")
    if port is None:
        return host, default_port
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError(f"{port!r} in {text!r} is not a port number (1-65535).")
    return host, int(port)


def percent(done, size):
    """``done`` of ``size`` bytes in whole per cent, rounded down (100 only when complete):
    how far a partial holder is, wherever it is shown."""
    return 100 if done >= size else done * 100 // size
