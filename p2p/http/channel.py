"""One client connection (a channel, in waitress's words): its socket, the bytes of its next
request read so far, and its phase (``p2p/core/admission.py``).

The selector front calls the non-blocking half: ``peek`` (a TLS server's first byte),
``start_tls``, ``handshake`` and ``read_some``, each followed by a pure decision of
``admission``. A worker thread calls ``service``: a handler answers the request; then, on the
fast path, the same worker answers the next request of a keep-alive connection that is whole
in the buffer already (pipelined) or arrives whole within ``LIMITS.keepalive_linger_s``
(``next_request``), with no hand-off between threads; otherwise the connection goes back to
the selector, which holds it without a thread. ``take_head`` and ``BodyReader`` give the
handler its request straight from the buffer: the head in one piece, the body through
``rfile``, so that nothing is read past the request and nothing has to be put back.
"""

import os
import select
import selectors
import socket
import ssl
import time

from p2p.core import admission
from p2p.core.admission import Phase
from p2p.http.limits import LIMITS
from p2p.http.messages import EXPECT_CONTINUE_RE, HEAD_CONTENT_LENGTH_RE, unmapped


class Connection:
    """One client connection, from accept to close."""

    __slots__ = ("sock", "address", "source", "buf", "deadline", "phase", "events", "tls",
                 "poller")

    def __init__(self, sock, address, deadline, tls):
        self.sock, self.address = sock, address
        self.source = unmapped(address[0])
        self.buf = bytearray()  # what has arrived of the next request
        self.deadline = deadline  # time.monotonic() by which the next request must be in
        self.phase = Phase(tls)  # peek, handshake, open, busy, closed: see p2p/core/admission.py
        self.events = 0  # what the selector waits for on it
        self.tls = False  # wrapped in TLS yet
        self.poller = None  # a worker's poll() object, made when it first lingers

    # -- on the selector: never blocks -------------------------------------------------

    def peek(self):
        """A TLS server's new connection: its first byte, None if it closed, -1 if none yet."""
        try:
            first = self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):  # a wakeup with nothing to read yet
            return -1
        return first[0] if first else None

    def start_tls(self, context):
        """Wrap the socket (its file descriptor stays) for a handshake without blocking."""
        self.sock = context.wrap_socket(self.sock, server_side=True,
                                        do_handshake_on_connect=False)
        self.tls = True
        self.phase.move("tls-hello")

    def handshake(self):
        """Go on with the TLS handshake: None when done, else the selector event it waits for."""
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            return selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            return selectors.EVENT_WRITE
        self.phase.move("handshake-done")
        return None

    def read_some(self):
        """Read what has arrived, up to what the selector holds of a request; False when the
        client has closed."""
        sock, buf = self.sock, self.buf
        while len(buf) < LIMITS.max_request_buffer_bytes:
            try:
                chunk = sock.recv(LIMITS.read_chunk_bytes)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True
            if not chunk:
                return False
            buf += chunk
            if self.tls:
                if not sock.pending():
                    return True
            elif len(chunk) < LIMITS.read_chunk_bytes:
                return True
        return True

    # -- on a worker thread ---------------------------------------------------------

    def service(self, server):
        """Answer this connection's request (and the next ones, on the fast path); then give
        it back to ``server``: kept alive, or to be closed."""
        keep = False
        try:
            self.sock.settimeout(server.handler_timeout)
            handler = server.RequestHandlerClass(self, self.address, server)
            keep = not handler.close_connection
            if keep and self.tls:
                while self.sock.pending():  # decrypted already, where select cannot see it
                    self.buf += self.sock.recv(self.sock.pending())
        except Exception:
            server.handle_error(self.sock, self.address)
            keep = False
        server.take_back(self, keep)

    def write(self, data):
        """Send ``data`` (a whole small reply): one write() of the descriptor when it all fits
        in the socket's buffer, which it nearly always does, else the socket's blocking
        ``sendall`` for the rest."""
        if self.tls:
            self.sock.sendall(data)
            return
        try:
            sent = os.write(self.sock.fileno(), data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def take_head(self):
        """The next request's head, its blank line included, taken from the buffer (whole:
        the selector or ``next_request`` saw to that)."""
        buf = self.buf
        end = buf.find(b"\n\r\n")  # head_end, inline: this is called for every request
        end = end + 3 if end >= 0 else buf.find(b"\n\n") + 2
        head = buf[:end]  # a bytearray of its own, decoded by parse_head
        del buf[:end]
        return head

    def next_request(self, linger_s, others_wait):
        """Is the next request of this keep-alive connection whole, or does it arrive whole
        within ``linger_s`` (unless ``others_wait()`` says another request waits for a
        worker)? False: hand the connection back to the selector.

        It waits with poll(), in slices, not with socket timeouts: changing a socket's
        timeout is a system call that lets other threads take the interpreter lock."""
        buf = self.buf
        if buf and request_ready(buf):
            return True  # pipelined: no system call at all
        sock, tls = self.sock, self.tls
        if self.poller is None:
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)
        poll, fd = self.poller.poll, sock.fileno()
        deadline = time.monotonic() + linger_s
        ready = not tls  # plain: read before polling, the next request is often in already
        while True:
            whole = False
            if ready or tls and sock.pending() or poll(LIMITS.linger_slice_ms):
                try:  # plain: one read() of the non-blocking descriptor, no poll first
                    chunk = sock.recv(LIMITS.linger_read_bytes) if tls else \
                        os.read(fd, LIMITS.linger_read_bytes)
                except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
                    chunk = None  # nothing yet (or only part of a TLS record)
                if chunk == b"":
                    return False
                if chunk:
                    buf += chunk
                    whole = request_ready(buf)
            ready = False
            verdict = admission.after_answer(whole, len(buf), LIMITS.max_request_buffer_bytes,
                                             time.monotonic() >= deadline, others_wait())
            if verdict != admission.WAIT:
                return verdict == admission.SERVE


class BodyReader:
    """A handler's ``rfile``: the request body, from the connection's buffer, then from its
    socket (blocking, with the socket's timeout); never more than asked for. Only a body
    that is not in the buffer yet puts the request under ``server.request_deadline``: one
    that is in cannot keep a worker waiting."""

    def __init__(self, conn, server):
        self.conn, self.server = conn, server
        self.timed = False  # whether a read put the request under its deadline

    def read(self, size):
        buf = self.conn.buf
        if size <= len(buf):
            data = bytes(buf[:size])
            del buf[:size]
            return data
        parts = [bytes(buf)]
        buf.clear()
        missing = size - len(parts[0])
        sock = self.conn.sock
        self.server.set_deadline(sock, self.server.request_deadline)
        self.timed = True
        while missing > 0:
            chunk = sock.recv(min(missing, LIMITS.read_chunk_bytes))
            if not chunk:
                break
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)


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
    end = buf.find(b"\n\r\n")  # head_end, inline: this is called for every request
    if end >= 0:
        end += 3
    else:
        end = buf.find(b"\n\n")
        if end < 0:
            return False
        end += 2
    match = HEAD_CONTENT_LENGTH_RE.search(buf, 0, end)
    if match is None or EXPECT_CONTINUE_RE.search(buf, 0, end):
        return True  # no body, one the handler refuses (chunked, a bad length), or 100 first
    length = int(match.group(1))
    return length > LIMITS.max_buffered_body_bytes or len(buf) - end >= length
