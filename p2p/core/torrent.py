"""BitTorrent v1 metainfo with webseeds (BEP 3 + BEP 19). Pure; no sockets.

``GET /torrent/NAME`` on the load balancer answers a ``.torrent`` made here::

    {"info": {"name": "f.bin", "length": N, "piece length": P,
              "pieces": <20-byte SHA-1 of each piece, concatenated>},
     "url-list": ["http://holder-a/files/f.bin", ...],
     "created by": "p2p-load-balancer/VERSION", "creation date": UNIX}

The piece length is the network's own (``pieces.piece_size``), and the SHA-1
of each piece comes from a holder (``GET /sha1/{sha256}``), which hashes
the file once. No tracker (``announce``) is given, and no BitTorrent wire
protocol is spoken: the clients fetch the pieces over HTTP from the
``url-list`` (BEP 19 "GetRight-style" webseeds), the least loaded first.
For a file inside a folder the torrent's name is its last part, and each
webseed URL names the file itself. ``private`` is set on a members-only
network, so clients do not look for other peers by DHT or PEX.

A folder (``GET /torrent/Photos/``) is a multi-file torrent::

    {"info": {"name": "Photos", "piece length": P, "pieces": ...,
              "files": [{"length": N, "path": ["2024", "a.jpg"]}, ...]}, ...}

Its pieces run across file boundaries, as BEP 3 lays them out (the files one
after another in name order), so one holder of the whole folder hashes them
(``GET /folder-sha1/Photos/``); its piece length is the network's for the
folder's total size. Each ``url-list`` entry is a holder's ``/files/`` URL of
the folder's parent, ending in ``/``: BEP 19 clients append the torrent's
name and each file's path.
"""

import re

from p2p.core.bencode import encode

SHA1_BYTES = 20
HEX40 = re.compile(r"[0-9a-f]{40}")
MEDIA_TYPE = "application/x-bittorrent"


class BadTorrent(ValueError):
    """A torrent that cannot be made (the message says why)."""


def metainfo(name, size, piece_length, sha1_hex, urls, generator, created, private=False):
    """The bencoded metainfo of one file; ``sha1_hex`` are its pieces' SHA-1s (hex)."""
    if not urls:
        raise BadTorrent(f"No holder has the whole of {name!r}.")
    info = {"name": name.rsplit("/", 1)[-1], "length": size, "piece length": piece_length,
            "pieces": _pieces(name, size, piece_length, sha1_hex)}
    return _document(info, urls, generator, created, private)


def folder_metainfo(folder, files, piece_length, sha1_hex, urls, generator, created,
                    private=False):
    """The bencoded metainfo of ``folder`` (a name ending in ``/``): ``files`` are
    [(name under the network, size)] in name order, ``sha1_hex`` the SHA-1 of each piece of
    their concatenation, ``urls`` the holders' base URLs (each ending in ``/``)."""
    if not urls:
        raise BadTorrent(f"No peer has every file under {folder!r}.")
    if not files:
        raise BadTorrent(f"Nobody shares a file under {folder!r}.")
    pieces = _pieces(folder, sum(size for _, size in files), piece_length, sha1_hex)
    entries = []
    for name, size in files:
        if not name.startswith(folder) or name == folder:
            raise BadTorrent(f"{name!r} is not under {folder!r}.")
        entries.append({"length": size, "path": name[len(folder):].split("/")})
    info = {"name": folder.rstrip("/").rsplit("/", 1)[-1], "piece length": piece_length,
            "pieces": pieces, "files": entries}
    return _document(info, urls, generator, created, private)


def folder_parent(folder):
    """What comes before a folder's own name: ``'Music/'`` for ``'Music/Jazz/'``, ``''`` for
    ``'Photos/'`` (a webseed URL names the parent; the client appends the torrent's name)."""
    return folder.rstrip("/").rpartition("/")[0] + "/" if "/" in folder.rstrip("/") else ""


def _pieces(label, total, piece_length, sha1_hex):
    """The ``pieces`` string of ``total`` bytes cut at ``piece_length``, or BadTorrent."""
    count = -(-total // piece_length) if total else 0
    if len(sha1_hex) != count or not all(HEX40.fullmatch(h) for h in sha1_hex):
        raise BadTorrent(f"{label!r} needs {count} SHA-1 piece hashes, not {len(sha1_hex)}.")
    return b"".join(bytes.fromhex(h) for h in sha1_hex)


def _document(info, urls, generator, created, private):
    if private:
        info["private"] = 1
    return encode({"info": info, "url-list": list(urls), "created by": generator,
                   "creation date": int(created)})
