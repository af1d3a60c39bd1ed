"""In-process fakes for the downloader's tests: a load balancer and holders that misbehave.

``FakeLB`` answers ``pick``/``renew``/``end`` from memory and records every outcome.
``FakeHolder`` is a small keep-alive HTTP server on loopback (port 0) serving
``/pieces/{sha256}`` and ``/blobs/{sha256}`` from bytes in memory, and can lie,
drop, trickle, be busy, hold only some pieces or vanish mid-transfer.
``SilentHolder`` accepts connections and never answers. All are thin: the
downloader under test is the real one.
"""

import hashlib
import io
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from p2p.net.lb_client import AllBusy, Lease, NoHolderLeft, NotKnown, Pick
from p2p.core.pieces import PieceList, hash_file, piece_size
from p2p.core.wire import FileRecord


STOP_POLL_S = 0.01  # how often a fake holder's server looks whether close() asked it to stop


def make_data(size, seed=0):
    """``size`` bytes that differ from piece to piece."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    out = bytearray()
    n = 0
    while len(out) < size:
        out += hashlib.sha256(block + n.to_bytes(8, "big")).digest() * 1024
        n += 1
    return bytes(out[:size])


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server whose handlers die quietly when the downloader under test
    hangs up on them (which it does on purpose: cancelled pieces, let-go holders)."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeHolder:
    """A holder of ``data``. Misbehaviour, each optional:

    ``corrupt_first``: the first n pieces it sends have their first byte flipped; ``drop_at``: the connection is cut
    after this many body bytes in all; ``busy``: the first n requests for bytes get 503;
    ``have``: a Bitfield, making it a partial holder; ``trickle``: seconds between
    1 KiB chunks; ``bad_list``: piece digests it claims instead of the true ones.
    """

    def __init__(self, data, corrupt_first=0, drop_at=None, busy=0, have=None, trickle=0.0,
                 bad_list=None):
        self.data = data
        self.sha256, digests = hash_file(io.BytesIO(data))
        self.pieces = PieceList(self.sha256, len(data), piece_size(len(data)),
                                tuple(bad_list or digests))
        self.corrupt_first, self.drop_at, self.busy = corrupt_first, drop_at, busy
        self.have, self.trickle = have, trickle
        self.sent = 0
        self.gone = False  # vanished: every connection is cut, nothing more is served
        self.requests = []  # (start, end) of each range asked for
        self.lock = threading.Lock()
        holder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                holder.serve(self)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(STOP_POLL_S,),
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def vanish(self):
        """Gone at once, as a killed process: no new connection, the open ones cut."""
        self.gone = True
        self.close()

    def reply(self, handler, status, body, headers=()):
        handler.send_response(status)
        for key, value in headers:
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def serve(self, handler):
        if self.gone:
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if handler.path == f"/pieces/{self.sha256}":
            self.reply(handler, 200, json.dumps(self.pieces.as_json(self.have)).encode())
            return
        if handler.path != f"/blobs/{self.sha256}":
            self.reply(handler, 404, b'{"error": "no such thing"}')
            return
        start, end = map(int, handler.headers["Range"].removeprefix("bytes=").split("-"))
        with self.lock:
            self.requests.append((start, end))
            busy = self.busy > 0
            self.busy -= busy
        if busy:
            self.reply(handler, 503, b'{"error": "Every upload slot is busy."}',
                       [("Retry-After", "1")])
            return
        piece = self.pieces.piece_size
        if self.have is not None and any(i not in self.have
                                         for i in range(start // piece, end // piece + 1)):
            self.reply(handler, 404, b'{"error": "not verified here yet", "missing": true}')
            return
        body = bytearray(self.data[start:end + 1])
        with self.lock:
            for at in range(-start % piece, len(body), piece):  # each piece that starts here
                if self.corrupt_first:
                    self.corrupt_first -= 1
                    body[at] ^= 0xFF
        handler.send_response(206)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Range", f"bytes {start}-{end}/{len(self.data)}")
        handler.send_header("ETag", f'"{self.sha256}"')
        handler.end_headers()
        self.send_body(handler, bytes(body))

    def send_body(self, handler, body):
        step = 1024 if self.trickle else len(body)
        for at in range(0, len(body), step):
            chunk = body[at:at + step]
            if self.gone:
                handler.close_connection = True
                handler.connection.shutdown(socket.SHUT_RDWR)
                return
            with self.lock:
                if self.drop_at is not None and self.sent + len(chunk) > self.drop_at:
                    chunk = chunk[:max(0, self.drop_at - self.sent)]
                    dropped = True
                else:
                    dropped = False
                self.sent += len(chunk)
            try:
                handler.wfile.write(chunk)
                handler.wfile.flush()
            except OSError:
                return
            if dropped:
                handler.close_connection = True
                handler.connection.shutdown(2)
                return
            if self.trickle:
                time.sleep(self.trickle)  # the misbehaviour itself: a slow holder


class SilentHolder:
    """Accepts every connection on loopback and never answers (a Sybil's socket)."""

    def __init__(self, data):
        self.data, self.have = data, None
        self.sha256, digests = hash_file(io.BytesIO(data))
        self.pieces = PieceList(self.sha256, len(data), piece_size(len(data)), tuple(digests))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def close(self):
        self.listener.close()
        for conn in self.accepted:
            conn.close()


class FakeLB:
    """Hands out every holder not excluded (least asked first), in memory.

    ``busy_rounds``: how many picks answer AllBusy first; ``most``: holders per pick. ``ended`` records
    (peer id, outcome) of every transfer ended. ``file``: the record to hand out, for holders that
    are only an address (``port``, ``have``) and no bytes.
    """

    def __init__(self, holders, name="file.bin", busy_rounds=0, busy_holders=2, downloading=0,
                 pieces=None, most=8, file=None):
        self.holders = {f"h{i}": h for i, h in enumerate(holders)}
        sample = holders[0]
        self.file = file or FileRecord(name, len(sample.data), sample.sha256)
        self.pieces = pieces if pieces is not None or file else PieceList(
            sample.sha256, len(sample.data), sample.pieces.piece_size,
            tuple(hash_file(io.BytesIO(sample.data))[1])).hash
        self.busy_rounds, self.busy_holders = busy_rounds, busy_holders
        self.downloading = downloading
        self.downloading_after_first_pick = None  # what later picks say, if it changes
        self.most = most  # holders handed out per pick
        self.ended = []
        self.renewed = 0
        self.picks = 0
        self._ids = 0
        self.lock = threading.Lock()

    def pick(self, name, sha256=None, peer=None, exclude=(), requester=None, count=1):
        with self.lock:
            self.picks += 1
            if name != self.file.name:
                raise NotKnown(f"Nobody shares {name!r} right now.", 404)
            if self.busy_rounds:
                self.busy_rounds -= 1
                raise AllBusy("Every holder is busy.", busy=self.busy_holders, retry_after=0)
            free = [pid for pid in self.holders if pid not in exclude][:min(count, self.most)]
            if not free:
                raise NoHolderLeft("Every holder has been tried and failed.", 503,
                                   self.downloading)
            leases = []
            for pid in free:
                self._ids += 1
                holder = self.holders[pid]
                leases.append(Lease(f"t{self._ids}", "secret", pid, "127.0.0.1", holder.port,
                                    done=None if holder.have is None else len(holder.have)))
            pick = Pick(self.file, leases, 30.0, self.pieces, [], self.downloading)
            if self.downloading_after_first_pick is not None:
                self.downloading = self.downloading_after_first_pick
            return pick

    def add(self, holder):
        """Another holder registers (a restarted seed gets a new peer id)."""
        with self.lock:
            self.holders[f"h{len(self.holders)}"] = holder

    def renew(self, lease):
        with self.lock:
            self.renewed += 1

    def end(self, lease, outcome="done"):
        with self.lock:
            self.ended.append((lease.peer_id, outcome))

    def outcomes(self, peer_id):
        with self.lock:
            return [outcome for pid, outcome in self.ended if pid == peer_id]
