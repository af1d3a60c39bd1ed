"""A running peer: its file server, its share index, and its membership of the network.

``Peer.start()`` checks the folders, serves ``shared/`` (and, once verified, what it
downloaded, unless ``reshare`` is off; see ``sharing.py``) and registers with the
load balancer; ``Peer.stop()`` unregisters and closes. Membership: register under
its name and upload slots, heartbeat carrying its current uploads and, when they
changed, its files and the files it is downloading with how much of each is
verified (``partials``, at most once per ``PARTIAL_ANNOUNCE_S``); the folders are
scanned every ``SCAN_INTERVAL_S`` and a change is announced at once; register again
when the load balancer forgot it; a peer that found its load balancer by discovery
follows the network (``rediscover``), and one whose load balancer lives on its own
machine starts it again (``restart_lb``). With a standby list (``lb`` a
``standby.StandbyClient``) it is a member of each load balancer listed.
"""

import errno
import logging
import os
import threading
import time

from p2p.core.members import OPEN
from p2p.core.wire import format_address
from p2p.net.download import Downloader
from p2p.net.membership import Member, register_with_each
from p2p.net.sharing import DEFAULT_UPLOAD_SLOTS, FileServer, PartialShares, ShareIndex

try:
    import fcntl
except ImportError:  # Windows: no folder lock warning
    fcntl = None

log = logging.getLogger("p2p.peer")

INITIAL_HASH_WAIT_S = 3.0  # hash this long before the first registration; the rest follows
SCAN_INTERVAL_S = 1.0  # the folders are scanned (stat only) this often; changes go out at once
SCAN_CPU_SHARE = 0.1  # ...or less often, so that scanning takes at most this share of the time
SETTLE_S = 1.0  # a file is announced once it has not changed for this long (still copying?)
UNREGISTER_TIMEOUT_S = 2.0
FOLDER_LOCK_NAME = ".p2p-peer.lock"  # held by the peer sharing the folder (a dotfile: unshared)


class PeerError(Exception):
    """Something the person has to fix (a port in use, a folder that is not one)."""


class Peer:
    """A running peer. ``start()`` serves and registers; ``stop()`` unregisters and closes.

    With ``shared=None`` it shares no folder (``peer.py get``): it serves only the verified
    pieces of its downloads, which the downloader puts in ``partials``.
    """

    def __init__(self, lb, shared="shared", downloads="downloads", host="0.0.0.0", port=0,
                 advertise=None, upload_slots=DEFAULT_UPLOAD_SLOTS, upload_limit=0, name="",
                 restart_lb=None, reshare=True, members=OPEN, rediscover=None, elect=None,
                 watch=None):
        self.lb = lb
        self.reshare = reshare  # share verified downloads too
        self.name = name
        self.members = members
        self.shared = None if shared is None else os.path.abspath(shared)
        self.downloads = os.path.abspath(downloads)
        self.bind = (host, port)
        # the address other peers reach it at: said, else the one it listens on when that is
        # one address, else (None) what the load balancer sees it connect from
        self.advertise = advertise or (host if host not in ("", "0.0.0.0", "::") else None)
        self.upload_slots, self.upload_limit = upload_slots, upload_limit
        roots = [self.shared, self.downloads] if reshare else [self.shared]
        self.index = ShareIndex([r for r in roots if r is not None], on_change=self._wake_now,
                                settle_s=SETTLE_S)
        self.partials = PartialShares(on_change=self._wake_now)  # filled by the downloader
        self.server = None
        # rediscover: () -> (host, port) or None, to follow the network's load balancer;
        # elect: () -> (event, (host, port) or None), a successor; restart_lb: (host,
        # port) -> the started process or None; watch: a beacon.Watch of the network.
        self._stop = threading.Event()
        self.memberships = [Member(self, client, self._stop, rediscover=rediscover, elect=elect,
                                   restart_lb=restart_lb, watch=watch)
                            for client in getattr(lb, "clients", [lb])]
        self._folder_lock = None

    # -- life cycle ---------------------------------------------------------

    def start(self):
        for folder in filter(None, (self.shared, self.downloads)):
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise PeerError(f"{folder} is not a folder.")
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise PeerError(f"Cannot create the folder {folder}: {e.strerror}.") from None
        if self.shared is not None and not self._lock_folder():
            raise PeerError(f"Another peer on this machine already shares {self.shared}; give "
                            "each peer its own --shared and --downloads folders.")
        try:
            self.server = FileServer(self.bind, self.index, self.upload_slots, self.upload_limit,
                                     partials=self.partials, members=self.members)
        except OSError as e:
            hint = " (choose another --port)" if e.errno == errno.EADDRINUSE else ""
            raise PeerError(f"Cannot listen on {format_address(*self.bind)}: "
                            f"{e.strerror}{hint}.") from None
        self.server.peer_name, self.server.lb_address = self.name, self.lb.address
        threading.Thread(target=self.server.serve_forever, daemon=True,
                         name="file-server").start()
        self._first_scan()
        refused = register_with_each(self.memberships)
        if refused is not None:  # the person must fix it, not wait for it
            self.stop()
            raise PeerError(refused.message)
        for member in self.memberships:
            member.start()
        threading.Thread(target=self._scan_loop, daemon=True, name="scanner").start()
        return self

    def _first_scan(self):
        """Scan, and wait a little for new files to settle and be hashed: the first
        registration then has them; the rest follows as it is ready."""
        deadline = time.monotonic() + INITIAL_HASH_WAIT_S
        while True:
            self.index.refresh()
            left = deadline - time.monotonic()
            if left <= 0 or not (self.index.settling() or self.index.pending()):
                return
            if self.index.settling():
                self._stop.wait(min(left, SCAN_INTERVAL_S))  # until it has been still a moment
            else:
                self.index.wait_hashed(left)

    def _scan_loop(self):
        """Look at the folders every SCAN_INTERVAL_S (less often when a scan is costly:
        at most SCAN_CPU_SHARE of the time); announce a change at once."""
        took = 0.0
        while not self._stop.wait(max(SCAN_INTERVAL_S, took / SCAN_CPU_SHARE)):
            started = time.monotonic()
            if self.index.refresh():
                self._wake_now()
            took = time.monotonic() - started

    def _lock_folder(self):
        """Hold a lock in the shared folder; False if another peer already shares it."""
        if fcntl is None:
            return True
        try:
            self._folder_lock = os.open(os.path.join(self.shared, FOLDER_LOCK_NAME),
                                        os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                                        0o644)
        except OSError:
            return True  # a read-only folder, say: nothing to tell
        try:
            fcntl.flock(self._folder_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            os.close(self._folder_lock)
            self._folder_lock = None
            return False

    def stop(self):
        """Unregister (True if the load balancer heard it), stop serving, let go of folders.

        Only the first call does it; later ones answer False."""
        if self._stop.is_set():
            return False
        # Cut short a heartbeat in flight; a vanished load balancer must not hold us up.
        self.lb.interrupt(UNREGISTER_TIMEOUT_S)
        for member in self.memberships:
            member.stop(UNREGISTER_TIMEOUT_S + 1)
        unregistered = [member.unregister() for member in self.memberships]
        unregistered = any(unregistered)
        self.lb.close()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.index.close()
        if self._folder_lock is not None:
            os.close(self._folder_lock)
        return unregistered

    @property
    def port(self):
        return self.server.port

    @property
    def address(self):
        seen_as = next((m.seen_as for m in self.memberships if m.seen_as), None)
        host = self.advertise or seen_as or self.bind[0]
        return format_address(host, self.port)

    @property
    def title(self):
        """'name ip:port', the peer as the menu and the status name it."""
        return f"{self.name} {self.address}" if self.name else self.address

    @property
    def member(self):
        """The membership of the (first) load balancer."""
        return self.memberships[0]

    @property
    def peer_id(self):
        """This peer's id at the load balancer asked first."""
        return self.lb.peer_id

    @property
    def lb_problem(self):
        """Why no load balancer is reachable, when none is (else None)."""
        if any(m.problem is None for m in self.memberships):
            return None
        return " ".join(m.problem for m in self.memberships)

    def describe_lb(self):
        """The load balancer, or each of a standby list with whether it is up."""
        if len(self.memberships) == 1:
            return self.lb.address + ("" if self.lb_problem is None
                                      else " (not answering; retrying)")
        return ", ".join(f"{m.lb.address} ({'up' if m.up else 'down'})"
                         for m in self.memberships)

    def _wake_now(self):
        for member in self.memberships:
            member.wake.set()

    def refresh_now(self):
        """Rescan the shared folder and announce at once (the menu does this)."""
        self.index.refresh()
        self._wake_now()

    # -- downloads ----------------------------------------------------------

    def downloader(self, on_progress=None, direct=None, wait_s=None):
        """A Downloader through the load balancer, or through ``direct`` (a DirectSource),
        sharing the verified pieces of what it downloads."""
        return Downloader(direct or self.lb, self.downloads, requester=lambda: self.peer_id,
                          on_progress=on_progress, on_verified=self._verified,
                          have=self.index.find_on_disk, identity=self.address,
                          members=self.members, partials=self.partials, wait_s=wait_s)

    def _verified(self, root, path, sha256, digests):
        if self.reshare:
            self.index.add_verified(root, path, sha256, digests)
