"""One client connection (a channel, in waitress's words) as the selector front keeps it, and
the stream a handler reads it by: the bytes the selector has read first, then the socket.

A keep-alive connection's next request is served by the same worker when it is already
whole or follows within ``LIMITS.keepalive_linger_s`` (``Reader.next_request``); otherwise the
connection goes back to the selector, which holds it without a thread.
"""

import io
import os
import select
import ssl
import time

from p2p.core.admission import Phase
from p2p.http.limits import LIMITS
from p2p.http.messages import EXPECT_CONTINUE_RE, HEAD_CONTENT_LENGTH_RE, unmapped


class Connection:
    """One client connection, from accept to close, as the selector front keeps it."""

    __slots__ = ("sock", "address", "source", "buf", "deadline", "phase", "events")

    def __init__(self, sock, address, deadline, tls):
        self.sock, self.address = sock, address
        self.source = unmapped(address[0])
        self.buf = bytearray()  # what has arrived of the next request
        self.deadline = deadline  # time.monotonic() by which the next request must be in
        self.phase = Phase(tls)  # peek, handshake, open, busy, closed: see p2p/core/admission.py
        self.events = 0  # what the selector waits for on it

class _Pending(io.RawIOBase):
    """The raw stream under a handler's ``rfile``: the bytes the selector has read, then the
    socket; while ``held``, those bytes only (None when there are none, as a non-blocking
    stream says it has nothing for now)."""

    def __init__(self, conn):
        self.conn = conn
        self.held = False

    def readable(self):
        return True

    def readinto(self, b):
        buf = self.conn.buf
        if buf:
            n = min(len(b), len(buf))
            b[:n] = buf[:n]
            del buf[:n]
            return n
        if self.held:
            return None
        return self.conn.sock.recv_into(b)

class Reader(io.BufferedReader):
    """``rfile`` of a handler (C-speed readline); what it has buffered and not used goes
    back to the connection's buffer between requests and when it is closed."""

    def __init__(self, conn):
        self.pending = _Pending(conn)
        super().__init__(self.pending, LIMITS.read_chunk_bytes)
        self.conn = conn
        self.poller = None  # made when it first waits for a next request

    def give_back(self):
        self.pending.held = True
        try:
            data = self.peek()
            if data:
                self.read(len(data))
                self.conn.buf[:0] = data
        except (OSError, ValueError):  # broken or closed: nothing to keep
            pass
        finally:
            self.pending.held = False

    def close(self):
        self.give_back()
        super().close()

    def next_request(self, linger, give_way):
        """Wait up to ``linger`` seconds for the next whole request on this connection (a
        keep-alive client's next request often follows at once), unless ``give_way()`` says
        another request waits for a worker; False if none came.

        It waits with poll(), not with socket timeouts: changing a socket's timeout is a
        system call that lets other threads take the interpreter lock."""
        self.give_back()
        sock, buf = self.conn.sock, self.conn.buf
        if buf and request_ready(buf):
            return True
        if self.poller is None:
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)
        tls = isinstance(sock, ssl.SSLSocket)
        fd = sock.fileno()
        deadline = time.monotonic() + linger
        while True:
            if not (tls and sock.pending()) and not self.poller.poll(LIMITS.linger_slice_ms):
                if time.monotonic() >= deadline or give_way():
                    return False
                continue
            try:  # plain: one read() of the (non-blocking) descriptor poll() found readable
                size = LIMITS.linger_read_bytes
                chunk = sock.recv(size) if tls else os.read(fd, size)
            except (TimeoutError, BlockingIOError):  # readable, then nothing after all
                continue
            if not chunk:
                return False
            buf += chunk
            if request_ready(buf):
                return True
            if time.monotonic() >= deadline or len(buf) > LIMITS.max_request_buffer_bytes:
                return False  # a slow or oversized head: the selector takes it from here

def head_end(buf):
    """Where the request head in ``buf`` ends (after its blank line), or -1."""
    end = buf.find(b"\n\r\n")
    if end >= 0:
        return end + 3
    end = buf.find(b"\n\n")
    return end + 2 if end >= 0 else -1

def request_ready(buf):
    """Is a whole request in ``buf``: its head, and its body unless that is large or the
    client waits for ``100 Continue`` before sending it?"""
    end = head_end(buf)
    if end < 0:
        return False
    if EXPECT_CONTINUE_RE.search(buf, 0, end):
        return True
    match = HEAD_CONTENT_LENGTH_RE.search(buf, 0, end)
    if match is None:
        return True  # no body, or one the handler refuses (chunked, a bad length)
    length = int(match.group(1))
    return length > LIMITS.max_buffered_body_bytes or len(buf) - end >= length
