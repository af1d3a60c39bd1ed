"""The worker pool behind the selector front, and the deadlines that bound each request.

``WorkerPool`` runs ``serve(conn)`` for each whole request on at most ``workers`` threads,
started as they are needed and kept. ``Deadlines`` cuts (shuts down) a connection still at
its request past the deadline set for it: socket timeouts bound each read and write, this
bounds the whole request, so a client that trickles its body or reads its answer a byte at a
time cannot hold a worker thread for ever. It looks every ``LIMITS.reap_interval_s``.
"""

import queue
import socket
import threading
import time

from p2p.http.limits import LIMITS
from p2p.http.messages import warn_sometimes


class WorkerPool:
    """Threads that serve the connections handed to ``submit``; ``close`` ends them."""

    def __init__(self, serve, workers):
        self.serve, self.workers = serve, workers
        self._ready = queue.SimpleQueue()  # whole requests for the workers
        self._idle = 0
        self._threads = 0
        self._lock = threading.Lock()

    def submit(self, conn):
        with self._lock:
            start = self._idle == 0 and self._threads < self.workers
            if start:
                self._threads += 1
            else:
                self._idle -= 1
        if start:
            threading.Thread(target=self._work, daemon=True, name="worker").start()
        self._ready.put(conn)

    def waiting(self):
        """Do whole requests wait for a worker?"""
        return not self._ready.empty()

    def close(self):
        for _ in range(self._threads):
            self._ready.put(None)

    def _work(self):
        while True:
            conn = self._ready.get()
            if conn is None:
                return
            self.serve(conn)
            with self._lock:
                self._idle += 1


class Deadlines:
    """Connection -> when it must be done; a thread cuts the late ones until ``closed`` is set."""

    def __init__(self, closed):
        self._closed = closed
        self._until = {}  # connection -> time.monotonic() by which it must be done
        self._lock = threading.Lock()
        threading.Thread(target=self._reap, daemon=True, name="deadlines").start()

    def set(self, connection, seconds):
        """Cut ``connection`` if it is still at it ``seconds`` from now (None: no deadline)."""
        with self._lock:
            if seconds is None:
                self._until.pop(connection, None)
            else:
                self._until[connection] = time.monotonic() + seconds

    def _reap(self):
        while not self._closed.wait(LIMITS.reap_interval_s):
            now = time.monotonic()
            with self._lock:  # held, so no new request can start in between
                late = [c for c, deadline in self._until.items() if deadline < now]
                for connection in late:
                    del self._until[connection]
                    warn_sometimes("deadline", "cutting a connection that overran its deadline")
                    try:
                        connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
