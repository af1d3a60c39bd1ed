"""Bencoding (BitTorrent's BEP 3): the encoding of a .torrent file. Pure; no sockets.

Integers ``i42e``, byte strings ``4:spam`` (``str`` is encoded as UTF-8),
lists ``l...e`` and dictionaries ``d...e`` with byte-string keys in sorted
order (raw bytes order, as BEP 3 requires). ``decode`` is strict: it refuses
leading zeros, ``-0``, unsorted or repeated keys, trailing bytes, and nesting
deeper than ``MAX_DEPTH``, so what it accepts encodes back to the same bytes.
"""

MAX_DEPTH = 64  # lists and dictionaries nested deeper than this are refused
DIGITS = b"0123456789"


class BencodeError(ValueError):
    """Bytes that are not one bencoded value, or a value that cannot be encoded."""


def encode(value):
    """``value`` (int, str, bytes, list, tuple, dict with str/bytes keys) as bencoded bytes."""
    out = []
    _encode(value, out)
    return b"".join(out)


def _key(key):
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    raise BencodeError(f"a dictionary key must be a string, not {type(key).__name__}")


def _encode(value, out):
    if isinstance(value, bool):
        raise BencodeError("bencoding has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        _encode(value.encode("utf-8"), out)
    elif isinstance(value, (bytes, bytearray)):
        out.append(b"%d:" % len(value))
        out.append(bytes(value))
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        items = sorted((_key(k), v) for k, v in value.items())
        if len({k for k, _ in items}) != len(items):
            raise BencodeError("a dictionary has the same key twice")
        out.append(b"d")
        for key, item in items:
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode a {type(value).__name__}")


def decode(data):
    """The value of ``data`` (bytes): ints, bytes, lists and dicts with bytes keys."""
    value, end = _decode(bytes(data), 0, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes follow the value")
    return value


def _decode(data, at, depth):
    if depth > MAX_DEPTH:
        raise BencodeError(f"nested deeper than {MAX_DEPTH}")
    if at >= len(data):
        raise BencodeError("the data ends inside a value")
    kind = data[at:at + 1]
    if kind == b"i":
        end = data.find(b"e", at)
        text = data[at + 1:end] if end > 0 else b""
        body = text[1:] if text.startswith(b"-") else text
        if not body or any(c not in DIGITS for c in body) or (
                body.startswith(b"0") and (len(body) > 1 or text != body)):
            raise BencodeError(f"a bad integer at byte {at}")
        return int(text), end + 1
    if kind in (b"l", b"d"):
        items, at = [], at + 1
        while data[at:at + 1] != b"e":
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        if kind == b"l":
            return items, at + 1
        keys = items[0::2]
        if len(items) % 2 or not all(isinstance(k, bytes) for k in keys):
            raise BencodeError("a dictionary's keys must be byte strings, each with a value")
        if keys != sorted(set(keys)):
            raise BencodeError("a dictionary's keys are not sorted, or repeated")
        return dict(zip(keys, items[1::2])), at + 1
    if kind and kind in DIGITS:
        colon = data.find(b":", at)
        length = data[at:colon] if colon > 0 else b""
        if not length or any(c not in DIGITS for c in length) or (
                length.startswith(b"0") and len(length) > 1):
            raise BencodeError(f"a bad string length at byte {at}")
        end = colon + 1 + int(length)
        if end > len(data):
            raise BencodeError("the data ends inside a string")
        return data[colon + 1:end], end
    raise BencodeError(f"no value starts with {kind!r} (byte {at})")
