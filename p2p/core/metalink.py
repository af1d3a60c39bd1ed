"""Metalink 4 (RFC 5854) documents and Metalink/HTTP (RFC 6249) headers. Pure; no sockets.

What the load balancer sends for ``GET /metalink/NAME`` (and for ``GET
/files/NAME`` asked with ``Accept: application/metalink4+xml``)::

    <?xml version="1.0" encoding="UTF-8"?>
    <metalink xmlns="urn:ietf:params:xml:ns:metalink">
      <generator>p2p-load-balancer/VERSION</generator>
      <file name="Photos/a.jpg">
        <size>1048576</size>
        <hash type="sha-256">HEX</hash>
        <pieces length="262144" type="sha-256"><hash>HEX</hash>...</pieces>
        <url priority="1">http://holder-a/files/Photos/a.jpg</url>
        <url priority="2">http://holder-b/files/Photos/a.jpg</url>
      </file>
    </metalink>

One ``<file>`` per file (a folder gives several); the ``<url>`` elements are
the whole holders, least loaded first, ``priority`` 1, 2, ... (RFC 5854
4.2.16.1: a lower value is preferred). ``<pieces>`` is left out when the list
is longer than ``MAX_PIECES`` (the whole-file hash still checks the file).
A name with a character XML 1.0 cannot carry is refused (``BadDocument``),
as is a document with no file or a file with no URL: never an empty one.

On a holder's file replies (RFC 6249): ``Link: <URL>; rel=duplicate`` for a
few other whole holders, ``Digest: SHA-256=<base64>`` (RFC 3230, what aria2
checks) and ``Repr-Digest: sha-256=:<base64>:`` (RFC 9530).
"""

import base64
import re
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

MEDIA_TYPE = "application/metalink4+xml"
NAMESPACE = "urn:ietf:params:xml:ns:metalink"
MAX_PIECES = 100_000  # about 7 MB of XML; a longer list is left out
MAX_DUPLICATES = 4  # Link: rel=duplicate headers on one holder reply
# Characters XML 1.0 allows (its production 2, "Char")
XML_CHARS = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


class BadDocument(ValueError):
    """A Metalink that cannot be made (the message says why, for a person)."""


@dataclass
class MetalinkFile:
    """One file of a document: its name (a relative path), size, SHA-256, its piece
    hashes (``piece_length`` bytes each; empty when unknown) and its URLs, best first."""
    name: str
    size: int
    sha256: str
    urls: list
    piece_length: int = 0
    pieces: list = field(default_factory=list)


def check_xml_text(text):
    if not XML_CHARS.fullmatch(text):
        raise BadDocument(f"{text[:100]!r} has a character an XML document cannot carry.")
    return text


def render(files, generator):
    """The Metalink 4 document of ``files`` (MetalinkFile, in order) as UTF-8 bytes."""
    if not files:
        raise BadDocument("A Metalink needs at least one file.")
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n',
             f'<metalink xmlns="{NAMESPACE}">\n',
             f"  <generator>{escape(check_xml_text(generator))}</generator>\n"]
    for f in files:
        parts.append(render_file(f))
    parts.append("</metalink>\n")
    return "".join(parts).encode("utf-8")


def render_file(f):
    """The ``<file>`` element of one MetalinkFile."""
    if not f.urls:
        raise BadDocument(f"No holder has the whole of {f.name!r}.")
    lines = [f"  <file name={quoteattr(check_xml_text(f.name))}>\n",
             f"    <size>{int(f.size)}</size>\n",
             f'    <hash type="sha-256">{f.sha256}</hash>\n']
    if f.pieces and len(f.pieces) <= MAX_PIECES:
        hashes = "".join(f"<hash>{h}</hash>" for h in f.pieces)
        lines.append(f'    <pieces length="{int(f.piece_length)}" type="sha-256">'
                     f"{hashes}</pieces>\n")
    for rank, url in enumerate(f.urls, 1):
        lines.append(f'    <url priority="{rank}">{escape(check_xml_text(url))}</url>\n')
    lines.append("  </file>\n")
    return "".join(lines)


def wants_metalink(accept):
    """Does an ``Accept`` header name the Metalink 4 media type (with q above 0)?"""
    for item in (accept or "").split(","):
        kind, *params = [p.strip() for p in item.split(";")]
        if kind.lower() != MEDIA_TYPE:
            continue
        q = next((p.partition("=")[2] for p in params if p.lower().startswith("q=")), "1")
        try:
            return float(q) > 0
        except ValueError:
            return True
    return False


def digest_headers(sha256):
    """The RFC 3230 and RFC 9530 digest headers of a file whose SHA-256 is ``sha256`` (hex)."""
    b64 = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
    return {"Digest": f"SHA-256={b64}", "Repr-Digest": f"sha-256=:{b64}:"}


def link_header(urls):
    """One ``Link`` value naming ``urls`` (the first MAX_DUPLICATES) as duplicates, or ''."""
    return ", ".join(f"<{url}>; rel=duplicate; pri={rank}"
                     for rank, url in enumerate(urls[:MAX_DUPLICATES], 1))
