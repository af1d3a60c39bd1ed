"""One keep-alive connection to a holder: its piece list and byte ranges of one file.

The protocol (a holder's side is ``sharing.py``): ``GET /pieces/{sha256}`` gives the
piece list (``pieces.py``), ``GET /have/{sha256}`` only what a partial holder has
verified now, ``GET /blobs/{sha256}`` with ``Range: bytes=a-b`` gives 206 and the
bytes (a partial holder's verified pieces in ``X-P2P-Have``, the pieces a whole
holder has sent to anyone in ``X-P2P-Sent``); 503/429 with Retry-After is busy
(never blame), 404 from a partial holder is "not verified here yet"; the upload limit a
holder states in a range answer (``X-Upload-Limit``, ``X-Uploads``:
``bottleneck.upload_terms``) is kept for the progress (``speed.py``).
``parse_response_head``, ``peer_says``
and ``check_response`` are the pure checks of an answer; ``HolderConnection`` the
socket around them (``Exchange``: its requests and answers, in order).

Time limits: connecting takes at most ``CONNECT_TIMEOUT_S``; an answer's head must
start within ``ANSWER_TIMEOUT_S`` of the request (a holder that accepts and never
answers is let go within seconds, and the download moves on to other holders)
and be whole within ``HEAD_DEADLINE_S``; inside a body, ``STALL_TIMEOUT_S`` with no
byte is a fault.
"""

import json
import re
import socket
import struct
import time

from p2p.core.bottleneck import upload_terms
from p2p.core.members import OPEN
from p2p.core.pieces import BadPieceList, Bitfield, OtherFile, PieceList
from p2p.core.swarm import PACE
from p2p.core.wire import format_address
from p2p.http.server import header_field
from p2p.net.lb_client import authority, describe_socket_error
from p2p.net.sharing import HAVE_HEADER, PEER_HEADER, SENT_HEADER

CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 4.0  # a holder that has not begun to answer a request by then is let go
HEAD_DEADLINE_S = 30.0  # the holder's response headers must be whole within this
STALL_TIMEOUT_S = 15.0  # no byte of a body from the holder for this long is a fault
BUFFER_BYTES = 1 << 20  # each recv_into fills up to this much
MAX_HEAD_BYTES = 64 * 1024
MAX_SMALL_BODY_BYTES = 4 << 20  # an error or a piece list (2,000+ digests) fits in this


class PeerFault(Exception):
    """A holder failed us. ``busy``: it asked us to come back in that many seconds;
    ``missing``: it does not have what we asked for (``have``: what it has then, as a
    Bitfield's text, when it said), or, a whole holder super-seeding, has sent it to
    others (``sent``: the pieces it has sent to anyone, as a Bitfield's text)."""

    def __init__(self, message, busy=None, missing=False, other_file=False):
        super().__init__(message)
        self.busy, self.missing, self.other_file = busy, missing, other_file
        self.have = self.sent = None




def parse_response_head(data):
    """Raw bytes up to the blank line -> (status, {lower-case name: value})."""
    lines = data.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") \
            or not re.fullmatch(r"[0-9]{3}", parts[1]):
        raise PeerFault(f"the peer answered something that is not HTTP: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        pair = header_field(line)
        if pair:  # a line that is not a header is skipped
            headers[pair[0].lower()] = pair[1]
    return int(parts[1]), headers


def peer_says(body):
    """The sentence of a peer's JSON error body (its start, as far as it came), or None."""
    try:
        said = json.loads(body.decode("utf-8")).get("error")
    except (ValueError, AttributeError):
        return None
    return said if isinstance(said, str) and said.strip() else None


def check_response(status, headers, start, length, size, sha256, body=b""):
    """Check a holder's answer to ``Range: bytes=start-(start+length-1)`` of the file
    (sha256, size): None when the range follows, else PeerFault (``busy`` for a 503 or
    429 with its Retry-After, ``missing`` for a partial holder's 404)."""
    if status in (503, 429):
        retry = headers.get("retry-after", "")
        seconds = int(retry) if re.fullmatch(r"[0-9]+", retry) else 1  # or an HTTP date
        said = peer_says(body)
        raise PeerFault(f"the peer says: {said}" if said else "the peer is busy",
                        busy=min(PACE.busy_wait_max_s, max(seconds, 1)))
    if status == 404:
        raise PeerFault(peer_says(body) or "the peer does not have it", missing=True)
    if status == 401:
        raise PeerFault("the peer refused us: wrong or missing network secret")
    if status != 206:
        raise PeerFault(f"the peer answered HTTP {status}")
    unit, _, spec = headers.get("content-range", "").partition(" ")
    expected = f"{start}-{start + length - 1}/{size}"
    if unit != "bytes" or spec != expected:
        raise PeerFault(f"the peer sent range {spec!r}, not {expected!r}")
    if headers.get("etag", "").strip('"') != sha256:
        raise PeerFault("the peer's copy is not the advertised version (ETag differs)")
    if headers.get("content-length") != str(length):
        raise PeerFault(f"the peer announced {headers.get('content-length')} bytes, "
                        f"not {length}")


def _set_socket_timeouts(sock, seconds):
    """OS-level timeouts on a blocking socket, so recv(MSG_WAITALL) still gives up on a stall."""
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class Exchange:
    """One keep-alive connection to a holder about one file: requests go out (``_send``,
    several before their answers if need be), answers come back in order (``_answer``,
    ``_small_body``, ``_recv``); ``abort`` (from another thread) cuts it short, and the
    next request connects again."""

    def __init__(self, host, port, sha256, size, members=OPEN, identity=None,
                 stall_timeout=STALL_TIMEOUT_S, answer_timeout=ANSWER_TIMEOUT_S):
        self.host, self.port = host, port
        self.address = format_address(host, port)
        self.sha256, self.size = sha256, size
        self.members, self.identity = members, identity
        self.stall_timeout, self.answer_timeout = stall_timeout, answer_timeout
        self.awaiting = False  # a request is out and its answer has not begun
        self.upload_limit, self.uploads = 0, 1  # as the holder's last range answer said
        self.sock = None
        self._aborted = None  # the socket abort() cut, if it is still the one in use
        self._leftover = b""

    def _connect(self):
        try:
            plain = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT_S)
        except OSError as e:
            raise PeerFault(f"cannot connect to it: {describe_socket_error(e)}") from None
        try:
            sock = self.members.connect(plain)
        except OSError as e:
            plain.close()
            raise PeerFault(f"cannot connect to it: {describe_socket_error(e)}") from None
        if self.members.tls is None:
            sock.settimeout(None)
        self.sock, self._leftover = sock, b""

    def _patience(self, seconds):
        """How long a read may wait for a byte from now on."""
        if self.members.tls is None:
            _set_socket_timeouts(self.sock, seconds)
        else:  # no MSG_WAITALL on an SSLSocket: plain timeouts, and _recv fills the buffer
            self.sock.settimeout(seconds)

    def _request(self, target, extra=""):
        self._send(target, extra)
        return self._answer()

    def _send(self, target, extra=""):
        """Send a request (connecting first if need be); its answer is read by ``_answer``,
        after the answers of the requests sent before it (pipelining)."""
        if self.sock is not None and self.sock is self._aborted:
            self.close()  # cut short after its last answer had arrived whole: start afresh
        if self.sock is None:
            self._connect()
        auth = "".join(f"{key}: {value}\r\n" for key, value
                       in self.members.auth_headers("GET", target,
                                                    authority(self.sock, self.port)).items())
        request = (f"GET {target} HTTP/1.1\r\n{extra}"
                   + (f"{PEER_HEADER}: {self.identity}\r\n" if self.identity else "")
                   + auth + "\r\n")
        self._patience(self.stall_timeout)
        self.sock.sendall(request.encode("ascii"))

    def _answer(self):
        if self.sock is None:
            raise PeerFault("the connection was closed before its answer")
        self.awaiting = True
        try:
            return self._read_head()
        finally:
            self.awaiting = False

    @property
    def open(self):
        """Is the connection up and usable (its next answer, if asked for, still due)?"""
        return self.sock is not None and self.sock is not self._aborted

    def _read_head(self):
        """The answer's status and headers: its first byte within ``answer_timeout``."""
        data = bytearray(self._leftover)
        deadline = time.monotonic() + HEAD_DEADLINE_S
        if not data:
            self._patience(self.answer_timeout)
            try:
                data += self._head_part()
            except (BlockingIOError, TimeoutError):
                raise PeerFault(f"no answer within {self.answer_timeout:.0f} s") from None
            finally:
                self._patience(self.stall_timeout)
        while (end := data.find(b"\r\n\r\n")) < 0:
            if len(data) > MAX_HEAD_BYTES:
                raise PeerFault("the peer's response headers are too large")
            if time.monotonic() > deadline:
                raise PeerFault(f"no complete answer within {HEAD_DEADLINE_S:.0f} s")
            data += self._head_part()
        status, headers = parse_response_head(bytes(data[:end]))
        self._leftover = bytes(data[end + 4:])
        return status, headers

    def _head_part(self):
        chunk = self.sock.recv(MAX_HEAD_BYTES)
        if not chunk:
            raise PeerFault("the peer closed the connection without answering")
        return chunk

    def _small_body(self, headers):
        """The body of a short answer (JSON), read whole; PeerFault when too long."""
        length = headers.get("content-length", "")
        if not length.isdigit() or int(length) > MAX_SMALL_BODY_BYTES:
            raise PeerFault("the peer's answer has no usable length")
        body = bytearray(self._leftover[:int(length)])
        self._leftover = self._leftover[int(length):]
        while len(body) < int(length):
            chunk = self.sock.recv(int(length) - len(body))
            if not chunk:
                raise PeerFault("the connection ended inside an answer")
            body += chunk
        if headers.get("connection", "").lower() == "close":
            self.close()
        return bytes(body)

    def _recv(self, view):
        """Fill ``view``: fewer bytes only at a stall, a signal or the end."""
        if self.members.tls is None:
            return self.sock.recv_into(view, len(view), socket.MSG_WAITALL)
        got = 0
        while got < len(view):  # one TLS record (16 KiB at most) per recv_into
            try:
                n = self.sock.recv_into(view[got:])
            except TimeoutError:
                if got:
                    return got
                raise
            if n == 0:
                break
            got += n
        return got

    def abort(self):
        """Cut the connection short (from another thread): a fetch in progress ends."""
        sock = self._aborted = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class HolderConnection(Exchange):
    """One keep-alive connection to a holder, asking for byte ranges of one file.

    ``ask_range`` asks for a range (``send_range`` and ``answer_range``: the next range
    may be asked for before the answer to this one); ``receive`` takes it, in parts,
    straight into a caller's buffers (``recv_into`` with ``MSG_WAITALL`` on a plain
    socket); ``abort`` (from another thread) cuts the connection short, and the next
    call connects again.
    """

    def _get_small(self, path):
        """(status, body) of a GET with a small JSON answer; PeerFault if the connection
        fails."""
        try:
            status, headers = self._request(path)
            return status, self._small_body(headers)
        except OSError as e:
            self.close()
            raise PeerFault(describe_socket_error(e)) from None

    def piece_list(self, trusted_hash):
        """(PieceList, Bitfield of what it has or None for all), from ``GET /pieces/SHA``."""
        status, body = self._get_small(f"/pieces/{self.sha256}")
        if status == 401:
            raise PeerFault("the peer refused us: wrong or missing network secret")
        if status != 200:
            raise PeerFault(peer_says(body) or f"the peer answered HTTP {status} for the "
                            "piece list", missing=status == 404)
        try:
            answer = json.loads(body)
            pieces = PieceList.from_json(answer, self.sha256, self.size, trusted_hash)
            have = answer.get("have")
            return pieces, None if have is None else Bitfield.from_text(pieces.count, have)
        except OtherFile as e:
            raise PeerFault(f"its piece list is wrong: {e}", other_file=True) from None
        except (ValueError, BadPieceList) as e:
            raise PeerFault(f"its piece list is wrong: {e}") from None

    def have(self, count):
        """What a partial holder has verified now (``GET /have/SHA``): a Bitfield of
        ``count`` pieces, or None when it has the whole file."""
        status, body = self._get_small(f"/have/{self.sha256}")
        if status != 200:
            raise PeerFault(peer_says(body) or f"the peer answered HTTP {status} for its "
                            "pieces", missing=status == 404)
        try:
            have = json.loads(body).get("have")
            return None if have is None else Bitfield.from_text(count, have)
        except (ValueError, AttributeError, BadPieceList) as e:
            raise PeerFault(f"its list of pieces is wrong: {e}") from None

    def ask_range(self, start, length):
        """Ask for ``length`` bytes from ``start`` and read the answer (``send_range``, then
        ``answer_range``)."""
        self.send_range(start, length)
        return self.answer_range(start, length)

    def send_range(self, start, length):
        """Ask for ``length`` bytes from ``start``; the answer is read by ``answer_range``
        (other ranges may be asked for before then: they are answered in order)."""
        try:
            self._send(f"/blobs/{self.sha256}", f"Range: bytes={start}-{start + length - 1}\r\n")
        except OSError as e:
            self.close()
            raise PeerFault(describe_socket_error(e)) from None

    def answer_range(self, start, length):
        """The answer to the range asked for: PeerFault unless its bytes follow. Then
        ``receive`` takes them, in as many parts as the caller likes. Returns (what a
        partial holder says it has now, what a whole holder says it has sent to anyone so
        far), each a Bitfield's text or None."""
        try:
            status, headers = self._answer()
            body = self._small_body(headers) if status in (404, 503) else b""
            have = headers.get(HAVE_HEADER.lower())
            try:
                check_response(status, headers, start, length, self.size, self.sha256, body)
            except PeerFault as fault:
                fault.have, fault.sent = have, headers.get(SENT_HEADER.lower())
                raise
            self.upload_limit, self.uploads = upload_terms(headers)
            return have, headers.get(SENT_HEADER.lower())
        except PeerFault as fault:
            if not fault.missing:
                self.close()
            raise
        except OSError as e:
            self.close()
            raise PeerFault(describe_socket_error(e)) from None

    def receive(self, view, on_bytes):
        """Fill ``view`` with the next bytes of the range asked for, or PeerFault.

        ``on_bytes(n)`` is called as bytes arrive (at least every BUFFER_BYTES)."""
        length = len(view)
        try:
            got = min(len(self._leftover), length)
            view[:got] = self._leftover[:got]
            self._leftover = self._leftover[got:]
            on_bytes(got)
            while got < length:
                try:
                    n = self._recv(view[got:got + BUFFER_BYTES])
                except (BlockingIOError, TimeoutError):
                    raise PeerFault(f"no data for {self.stall_timeout:.0f} s") from None
                if n == 0:
                    raise PeerFault("the connection ended inside a piece")
                got += n
                on_bytes(n)
        except PeerFault:
            self.close()
            raise
        except OSError as e:
            self.close()
            raise PeerFault(describe_socket_error(e)) from None
