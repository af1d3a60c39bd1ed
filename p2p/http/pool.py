"""The worker pool behind the selector front, the way back to it, and the deadlines that
bound each request.

``WorkerPool`` runs ``conn.service(server)`` for each whole request on at most ``workers``
threads, started as they are needed and kept. ``Trigger`` (waitress's name) is how a worker
gives a connection back: it queues it and wakes the selector through a socket pair.
``Deadlines`` cuts (shuts down) a connection still at its request past the deadline set for
it: socket timeouts bound each read and write, this bounds the whole request, so a client
that trickles its body or reads its answer a byte at a time cannot hold a worker thread for
ever. It looks every ``LIMITS.reap_interval_s``.
"""

import collections
import queue
import socket
import threading
import time

from p2p.http.limits import LIMITS
from p2p.http.messages import warn_sometimes


class WorkerPool:
    """Threads that serve the connections handed to ``submit``; ``close`` ends them."""

    def __init__(self, server, workers):
        self.server, self.workers = server, workers
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
            conn.service(self.server)
            with self._lock:
                self._idle += 1


class Trigger:
    """Connections the workers are done with, queued for the selector, which ``pull`` wakes."""

    def __init__(self):
        self.returned = collections.deque()  # (connection, keep it alive)
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def put(self, conn, keep):
        self.returned.append((conn, keep))
        self.pull()

    def pull(self):
        """Wake the selector."""
        try:
            self._writer.send(b"x")
        except OSError:  # its buffer is full: a wake-up is already pending
            pass

    def drain(self):
        """The selector woke: empty the socket pair."""
        try:
            while self.reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self):
        self.reader.close()
        self._writer.close()


class Deadlines:
    """Connection -> when it must be done; a thread cuts the late ones until ``closed`` is set.

    A request sets and clears its deadline without a lock (one dictionary store each, atomic
    under the interpreter lock); the reaper cuts a connection only if the deadline it found
    late is still the one set."""

    def __init__(self, closed):
        self._closed = closed
        self._until = {}  # connection -> time.monotonic() by which it must be done
        threading.Thread(target=self._reap, daemon=True, name="deadlines").start()

    def set(self, connection, seconds):
        """Cut ``connection`` if it is still at it ``seconds`` from now (None: no deadline)."""
        if seconds is None:
            self._until.pop(connection, None)
        else:
            self._until[connection] = time.monotonic() + seconds

    def clear(self, connection):
        """``connection`` is done with what it was cut short for: no deadline now."""
        if self._until:  # nearly always empty: no request overruns
            self._until.pop(connection, None)

    def _reap(self):
        while not self._closed.wait(LIMITS.reap_interval_s):
            now = time.monotonic()
            for connection, deadline in list(self._until.items()):
                if deadline < now and self._until.get(connection) == deadline:
                    self._until.pop(connection, None)
                    warn_sometimes("deadline", "cutting a connection that overran its deadline")
                    try:
                        connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
