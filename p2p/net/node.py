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
machine starts it again (``restart_lb``).
"""

import errno
import logging
import os
import threading
import time

from p2p.core.members import OPEN
from p2p.core.wire import format_address
from p2p.net.download import Downloader
from p2p.net.lb_client import LBClientError, NotFound, Unauthorized
from p2p.net.sharing import DEFAULT_UPLOAD_SLOTS, FileServer, PartialShares, ShareIndex

try:
    import fcntl
except ImportError:  # Windows: no folder lock warning
    fcntl = None

log = logging.getLogger("p2p.peer")

RECONNECT_S = 3.0  # retry a load balancer that does not answer this often
INITIAL_HASH_WAIT_S = 3.0  # hash this long before the first registration; the rest follows
SCAN_INTERVAL_S = 1.0  # the folders are scanned (stat only) this often; changes go out at once
SCAN_CPU_SHARE = 0.1  # ...or less often, so that scanning takes at most this share of the time
SETTLE_S = 1.0  # a file is announced once it has not changed for this long (still copying?)
PARTIAL_ANNOUNCE_S = 1.0  # while downloads progress, a heartbeat says so at most this often
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
                 restart_lb=None, reshare=True, members=OPEN, rediscover=None):
        self.lb = lb
        self.reshare = reshare  # share verified downloads too
        self.name = name
        self.restart_lb = restart_lb  # (host, port) -> started process or None, or None
        self.members = members
        self.rediscover = rediscover  # () -> (host, port) or None: follow the network's LB
        self.shared = None if shared is None else os.path.abspath(shared)
        self.downloads = os.path.abspath(downloads)
        self.bind = (host, port)
        self.advertise = advertise
        self.upload_slots, self.upload_limit = upload_slots, upload_limit
        roots = [self.shared, self.downloads] if reshare else [self.shared]
        self.index = ShareIndex([r for r in roots if r is not None], on_change=self._wake_now,
                                settle_s=SETTLE_S)
        self.partials = PartialShares(on_change=self._wake_now)  # filled by the downloader
        self._partials_announced = -1
        self._partials_sent_at = -PARTIAL_ANNOUNCE_S
        self.server = None
        self.peer_id = self.token = None
        self.seen_as = None  # the host the load balancer sees us as
        self.heartbeat_s = RECONNECT_S
        self.lb_problem = None  # why the load balancer is not reachable, when it is not
        self.downloads_done = []
        self._announced = -1
        self._folder_lock = None
        self.shares_folder_with_another = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    # -- life cycle ---------------------------------------------------------

    def start(self):
        for folder in filter(None, (self.shared, self.downloads)):
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise PeerError(f"{folder} is not a folder.")
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise PeerError(f"Cannot create the folder {folder}: {e.strerror}.") from None
        self.shares_folder_with_another = self.shared is not None and not self._lock_folder()
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
        try:
            self._register()
        except Unauthorized as e:
            self.stop()
            hint = ("Give every member the same --tls-cert and --tls-key." if e.tls_required
                    else "Give every member the same --secret-file (or P2P_SECRET).")
            raise PeerError(f"{e.message} {hint}") from None
        self._thread = threading.Thread(target=self._membership, daemon=True, name="membership")
        self._thread.start()
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
                self._wake.set()
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
            return False

    def stop(self):
        """Unregister (True if the load balancer heard it), stop serving, let go of folders.

        Only the first call does it; later ones answer False."""
        if self._stop.is_set():
            return False
        self._stop.set()
        self._wake.set()
        # Cut short a heartbeat in flight; a vanished load balancer must not hold us up.
        self.lb.interrupt(UNREGISTER_TIMEOUT_S)
        if self._thread is not None:
            self._thread.join(UNREGISTER_TIMEOUT_S + 1)
        unregistered = False
        if self.peer_id is not None:
            try:
                self.lb.unregister(self.peer_id, self.token)
                unregistered = True
            except LBClientError as e:
                log.info("could not unregister: %s", e)
            self.peer_id = None
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
        host = self.advertise or self.seen_as or self.bind[0]
        return format_address(host, self.port)

    @property
    def title(self):
        """'name ip:port', the peer as the menu and the status name it."""
        return f"{self.name} {self.address}" if self.name else self.address

    # -- membership ---------------------------------------------------------

    def _wake_now(self):
        self._wake.set()

    def _files(self):
        version = self.index.version
        return version, [f.as_dict() for f in self.index.files()]

    def _register(self):
        version, files = self._files()
        try:
            answer = self.lb.register(self.port, files, host=self.advertise, name=self.name,
                                      slots=self.upload_slots)
        except Unauthorized as e:
            if self._thread is None:  # starting: the person must fix it, not wait for it
                raise
            self.lb_problem = e.message
            log.warning("cannot register with the load balancer: %s", e.message)
            return False
        except LBClientError as e:
            self.lb_problem = e.message
            log.warning("cannot register with the load balancer: %s", e.message)
            return False
        self.peer_id, self.token = answer["peer_id"], answer["token"]
        self.seen_as = answer.get("host")
        self.server.address = self.address
        self.heartbeat_s = float(answer.get("heartbeat_s", RECONNECT_S))
        self._announced = version
        self._partials_announced = -1  # the next heartbeat says what is being downloaded
        if len(self.partials):
            self._wake.set()
        self.lb_problem = None
        log.info("registered as %s at %s with %d files", self.peer_id, self.address, len(files))
        return True

    def _heartbeat(self):
        files = partial = None
        version = self.index.version
        if version != self._announced:
            version, files = self._files()
        partial_version = self.partials.version
        if partial_version != self._partials_announced:
            partial = self.partials.announced()
        try:
            self.lb.heartbeat(self.peer_id, self.token, files=files,
                              uploads=len(self.server.uploads), slots=self.upload_slots,
                              partial=partial)
        except LBClientError as e:
            if isinstance(e, NotFound) and not self._stop.is_set():  # it restarted, forgot us
                log.warning("the load balancer forgot this peer; registering again")
                self.peer_id = None
                return self._register()
            self.lb_problem = e.message
            log.warning("heartbeat failed: %s", e.message)
            return False
        self._announced = version
        if partial is not None:
            self._partials_announced = partial_version
            self._partials_sent_at = time.monotonic()
        self.lb_problem = None
        return True

    def _membership(self):
        while not self._stop.is_set():
            healthy = self.lb_problem is None
            self._wake.wait(self.heartbeat_s if healthy else min(self.heartbeat_s, RECONNECT_S))
            self._wake.clear()
            if self.partials.version != self._partials_announced:
                self._stop.wait(self._partials_sent_at + PARTIAL_ANNOUNCE_S - time.monotonic())
            if self._stop.is_set():
                return
            heard = self._register() if self.peer_id is None else self._heartbeat()
            if not heard and self.rediscover is not None and not self._stop.is_set():
                heard = self._follow()
            if not heard and self.restart_lb is not None and not self._stop.is_set():
                self._start_lb_again()

    def _follow(self):
        """The load balancer found by discovery is gone: move to the one announced now."""
        found = self.rediscover()
        if found is None or found == (self.lb.host, self.lb.port):
            return False
        log.warning("moving to the load balancer at %s", format_address(*found))
        self.lb.retarget(*found)
        self.peer_id = None
        return self._register()

    def _start_lb_again(self):
        """The load balancer is gone: start it again if its address is on this machine."""
        try:
            if self.restart_lb(self.lb.host, self.lb.port):
                self._wake.set()  # register with it at once
        except PeerError as e:
            log.warning("%s", e)

    def refresh_now(self):
        """Rescan the shared folder and announce at once (the menu does this)."""
        self.index.refresh()
        self._wake.set()

    # -- downloads ----------------------------------------------------------

    def downloader(self, on_progress=None, direct=None, wait_s=None):
        """A Downloader through the load balancer, or through ``direct`` (a DirectSource),
        sharing the verified pieces of what it downloads."""
        return Downloader(direct or self.lb, self.downloads, requester=self.peer_id,
                          on_progress=on_progress, on_verified=self._verified,
                          have=self.index.find_on_disk, identity=self.address,
                          members=self.members, partials=self.partials, wait_s=wait_s)

    def _verified(self, root, path, sha256, digests):
        if self.reshare:
            self.index.add_verified(root, path, sha256, digests)
