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
    count = -(-size // piece_length) if size else 0
    if len(sha1_hex) != count or not all(HEX40.fullmatch(h) for h in sha1_hex):
        raise BadTorrent(f"{name!r} needs {count} SHA-1 piece hashes, not {len(sha1_hex)}.")
    info = {"name": name.rsplit("/", 1)[-1], "length": size, "piece length": piece_length,
            "pieces": b"".join(bytes.fromhex(h) for h in sha1_hex)}
    if private:
        info["private"] = 1
    return encode({"info": info, "url-list": list(urls), "created by": generator,
                   "creation date": int(created)})
