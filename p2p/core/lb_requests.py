"""The load balancer's requests, validated: JSON bodies to the typed arguments of ``Registry``.

Pure. Each ``parse_*`` takes a decoded JSON object and returns keyword arguments, or
raises ``Invalid`` (``BadRecord`` from ``wire.py`` for a field of a file record); both
are answered 400 with a sentence that names the field and its bounds
(``lb_limits.py``).

A pick names a file that was checked before, nearly always: ``checked_name`` remembers the
last ``CHECKED_NAMES_KEPT`` names that passed ``check_file_name`` (a name that fails is
checked again each time, and refused each time).
"""

import functools

from p2p.core.lb_errors import Invalid
from p2p.core.lb_limits import (
    CHECKED_NAMES_KEPT,
    FILE_RECORD_BUDGET_BYTES,
    MAX_EXCLUDE,
    MAX_FILES_PER_PEER,
    MAX_PARTIAL_PER_PEER,
    MAX_PEER_BODY_BYTES,
    MAX_PEER_NAME_CHARS,
    MAX_SLOTS,
    MAX_SOURCES,
)
from p2p.core.wire import (
    FileRecord,
    PartialRecord,
    check_file_name,
    check_sha256,
    field,
    parse_address,
)


def peer_body_too_large(length):
    """Why a registration or heartbeat of ``length`` bytes is refused (413)."""
    return (f"The list of files is {length:,} bytes; a load balancer takes at most "
            f"{MAX_PEER_BODY_BYTES:,} bytes from a peer ({MAX_FILES_PER_PEER:,} files of "
            f"about {FILE_RECORD_BUDGET_BYTES} bytes each). Share fewer files, or files with "
            "shorter names.")


def parse_files(raw):
    if not isinstance(raw, list):
        raise Invalid("The field 'files' must be a list of {name, size, sha256, pieces?}.")
    if len(raw) > MAX_FILES_PER_PEER:
        raise Invalid(f"A peer may share at most {MAX_FILES_PER_PEER:,} files, not "
                      f"{len(raw):,}; share fewer (several peers, each with its own "
                      "--shared folder, may share more).")
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


@functools.lru_cache(maxsize=CHECKED_NAMES_KEPT)
def checked_name(name):
    """``check_file_name(name)``, remembered for the names that pass (``name``: a str)."""
    return check_file_name(name)


def parse_transfer_request(body):
    """The keyword arguments of ``Registry.pick`` (but ``source``) from a POST /transfers."""
    name = checked_name(field(body, "name", str, "a file name"))
    if len(body) == 1:  # the name alone, as most picks are
        return {"name": name, "sha256": None, "peer": None, "exclude": [], "requester": None,
                "count": None}
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

