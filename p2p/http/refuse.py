"""Closing connections the selector front refuses, so that the client reads why.

A refused connection gets a short answer without blocking (a ``503`` when the server is
full, a ``400`` for plain HTTP to a TLS server, a ``431`` for an oversized head), its
sending side is shut, and what the client still sends is drained for
``LIMITS.refuse_linger_s`` before the socket is closed: closing a socket with unread bytes
would reset the connection and throw the answer away.
"""

import selectors
import socket
import time

from p2p.http.limits import LIMITS


class Refusals:
    """Refused sockets draining on ``selector`` until their close-by time; ``close`` is the
    server's own (its ``shutdown_request``)."""

    def __init__(self, selector, close):
        self._selector = selector
        self._close = close
        self._until = {}  # socket -> time.monotonic() by which it is closed

    def __iter__(self):
        return iter(list(self._until))

    def refuse(self, sock, answer):
        """Send ``answer``, then drain the client for a moment before closing."""
        try:
            sock.send(answer)
            sock.shutdown(socket.SHUT_WR)
            self._selector.register(sock, selectors.EVENT_READ, self._drain)
        except OSError:
            self._close(sock)
            return
        self._until[sock] = time.monotonic() + LIMITS.refuse_linger_s

    def expire(self, now):
        for sock in [s for s, until in self._until.items() if until < now]:
            self.close(sock)

    def close(self, sock):
        if self._until.pop(sock, None) is not None:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
        self._close(sock)

    def _drain(self, sock):
        try:
            if sock.recv(LIMITS.read_chunk_bytes):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.close(sock)
