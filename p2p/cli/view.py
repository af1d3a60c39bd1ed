"""The menu's view of a running peer: the few things it shows and the one thing it starts.

``PeerView`` stands between ``menu.py`` and ``p2p/net/node.py``'s ``Peer``: the
files on the network and the load balancer's status (through the peer's load
balancer client), this peer's shares and uploads, the downloads the menu started
(a ``DownloadQueue``: at most ``parallel`` at once, the others waiting their turn)
and how they ended. The menu touches nothing else, so its tests give it a fake view.
"""

import os

from p2p.cli.autostart import open_to
from p2p.cli.lookup import direct_source, nothing_answers, unfinished_downloads
from p2p.cli.text import describe_openness, describe_sharing
from p2p.core.folder import FolderError, is_folder
from p2p.core.wire import format_address
from p2p.net.download import DEFAULT_PARALLEL, DownloadError, DownloadQueue
from p2p.net.folder import folder_result, get_folder
from p2p.net.lb_client import LBClientError


class PeerView:
    """What the menu sees of ``peer`` (a started ``Peer``), and its downloads."""

    def __init__(self, peer, parallel=DEFAULT_PARALLEL):
        self._peer = peer
        self._queue = DownloadQueue(self._run_job, parallel)

    # -- this peer ----------------------------------------------------------

    @property
    def title(self):
        return self._peer.title

    @property
    def peer_id(self):
        return self._peer.peer_id

    @property
    def lb_address(self):
        return self._peer.lb.address

    def describe_lb(self):
        """The load balancer's address (or each of a standby list, up or down)."""
        return self._peer.describe_lb()

    @property
    def standbys(self):
        """'A (up), B (down)' when the peer uses a standby list, else None."""
        lb = self._peer.lb
        return lb.describe() if hasattr(lb, "describe") else None

    @property
    def lb_port(self):
        return self._peer.lb.port

    @property
    def lb_problem(self):
        """Why the load balancer does not answer, or None when it does."""
        return self._peer.lb_problem

    def sharing(self):
        """'3 files from shared/ and 2 downloaded'."""
        peer = self._peer
        mine = sum(1 for f in peer.index.files() if f.root == peer.shared)
        return describe_sharing(mine, len(peer.index) - mine, peer.shared)

    @property
    def upload_limit(self):
        """All uploads together at most this many bytes/s; 0: no limit."""
        return self._peer.upload_limit

    def openness(self):
        peer = self._peer
        return describe_openness(open_to(peer.bind[0], peer.port), peer.reshare, peer.members)

    def shares(self):
        """(the files shared now, how many more are being hashed), after a fresh scan."""
        self._peer.refresh_now()
        return self._peer.index.files(), self._peer.index.pending()

    def uploading(self):
        """How many uploads run now (asks nobody)."""
        return len(self._peer.server.uploads.active())

    def uploads(self):
        """[(Upload, who: 'name ip:port' when the load balancer knows that peer, or None)]."""
        uploads = self._peer.server.uploads.active()
        if not uploads:
            return []
        try:
            names = {format_address(p["host"], p["port"]): p.get("name")
                     for p in self.status()["peers"]}
        except LBClientError:
            names = {}
        return [(u, f"{names[u.client]} {u.client}" if names.get(u.client) else None)
                for u in uploads]

    def have(self, sha256):
        """The path of a file with this content that this peer has, or None."""
        mine = self._peer.index.find_on_disk(sha256)
        return None if mine is None else mine.path

    # -- the network --------------------------------------------------------

    def files(self, query=""):
        """The load balancer's answer: {"files": [...], "truncated"?: bool}."""
        return self._peer.lb.files(query)

    def names(self):
        """Every name on the network, or none when the load balancer does not answer."""
        try:
            return list(dict.fromkeys(f["name"] for f in self.files()["files"]))
        except LBClientError:
            return []

    def status(self):
        return self._peer.lb.status()

    def unfinished(self):
        """[(Unfinished, the file on the network or None)] in the downloads folder."""
        return unfinished_downloads(self._peer.lb, self._peer.downloads)

    def unreachable(self, where):
        """Why nothing answers at the peer ``where`` ("ip:port"), or None."""
        return nothing_answers(where)

    def check_direct(self, where):
        """ValueError with a sentence when ``where`` cannot be asked without a load balancer."""
        direct_source(where, self._peer.members)

    # -- downloads ----------------------------------------------------------

    def download(self, name, sha256=None, where=None):
        """Start downloading in the background; True if it was being downloaded already."""
        _, again = self._queue.submit(name, sha256, where)
        return again

    def active(self):
        return self._queue.active()

    def take_ended(self):
        return self._queue.take_ended()

    def history(self):
        """[(Job, whether its saved file is still there)] of the downloads that ended."""
        return [(job, job.state != "done" or os.path.exists(job.result.path))
                for job in self._queue.jobs() if job.ended]

    def stop(self, job):
        """Stop one download (running, waiting its turn, or stalled); its partial file stays."""
        self._queue.cancel(job)

    def wait_downloads(self, timeout=None):
        return self._queue.wait(timeout)

    def stop_downloads(self, timeout):
        self._queue.cancel_all()
        self._queue.wait(timeout)

    def _run_job(self, job, on_progress):
        """One queued download (in its own thread)."""
        if is_folder(job.name):
            return self._run_folder(job, on_progress)
        peer = self._peer
        direct = (direct_source(job.peer, peer.members)
                  if job.peer and peer.lb_problem else None)
        return peer.downloader(on_progress, direct).get(job.name, job.sha256, job.peer)

    def _run_folder(self, job, on_progress):
        """A queued folder: every file under it (``folder.py``), one progress."""
        peer = self._peer
        try:
            results, failures = get_folder(peer.lb, job.name, peer.downloader, on_progress)
        except FolderError as e:
            raise DownloadError(str(e)) from None
        if failures:
            raise DownloadError(f"{len(failures)} of the files under {job.name!r} failed: "
                                + "; ".join(f"{n}: {m}" for n, m in failures[:3]))
        return folder_result(job.name, peer.downloads, results)
