"""The downloader: a file from many holders at once into ``downloads/``, verified.

Steps (DESIGN "Download", "Pieces and the swarm"):

1. Ask the load balancer for up to ``Pace.max_sources`` holders
   (``lb_client.LBClient.pick``): each is a transfer it counts (a ``Lease``),
   renewed by one thread for the whole download and ended with how it went. While
   every holder is busy the download waits and says so; busy is never failure.
2. Fetch the file's piece list (``GET /pieces/{sha256}``, see ``core/pieces.py``)
   from a holder, checked against the piece-list hash the holders announced; a
   holder that gives a false one is blamed and not fetched from.
3. ``swarm.Swarm`` fetches the pieces from every holder at once (``worker.py``,
   ``holder.py``), verifies and writes them into the hidden partial file
   (``partial.py``), asks for more holders as ``core/swarm.Asking`` decides, and
   waits as *stalled* while no holder is online (up to ``wait_s``).
4. Only when the whole SHA-256 and size match does the file get its final name
   (``partial.commit``), never replacing an existing file.
5. The caller shares the verified file from then on.

A piece list that turns out false, or pieces written unhashed that were bad, start
the download again from other holders (``MAX_LIST_TRIES`` times), keeping every
verified piece. ``DirectSource`` stands in for the load balancer when there is
none and the person named the peer to ask; ``DownloadQueue`` runs downloads in
background threads, a few at once, each cancellable.
"""

import http.client
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace

from p2p.core.clock import Clock
from p2p.core.members import OPEN
from p2p.core.plan import Plan
from p2p.core.progress import Progress, Result
from p2p.core.swarm import PACE, Asking
from p2p.core.wire import FileRecord, format_address
from p2p.net.download_errors import (
    DownloadCancelled,
    DownloadError,
    FalseList,
    NoPieceList,
    Spoiled,
    VerifyFailed,
)
from p2p.net.holder import (
    ANSWER_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    STALL_TIMEOUT_S,
    HolderConnection,
    PeerFault,
)
from p2p.net.lb_client import (
    AllBusy,
    LBClientError,
    Lease,
    NoHolderLeft,
    NotKnown,
    Pick,
    SECRET_FIX,
    TLS_FIX,
    NotAdmitted,
    Unreachable,
    authority,
    connect_http,
    describe_socket_error,
)
from p2p.net.partial import PartialFile, check_folder, commit, open_partial, plan_target
from p2p.net.sharing import check_name
from p2p.net.swarm import PROGRESS_EVERY_S, Leases, Swarm

log = logging.getLogger("p2p.download")

MAX_LIST_TRIES = 3  # piece lists tried (each from another holder) before a download gives up
DEFAULT_RENEW_S = 10.0  # a DirectSource's transfers: nothing to renew, but a Pick has one
DEFAULT_PARALLEL = 3  # downloads running at once in the background (the rest wait their turn)
LIST_STAGGER_S = 0.5  # no piece list yet: ask the next holder too after this long


class Downloader:
    """Downloads through one load balancer into ``root``; ``on_progress`` sees Progress.

    ``partials`` (a ``sharing.PartialShares``) is told about each download's verified
    pieces, so the peer's server can share them while it runs; ``wait_s`` limits how
    long a download waits with nothing arriving, every holder busy or none online
    (None: for ever; 0: not at all). ``requester`` is this peer's id at the load
    balancer, or a function giving it (it changes when the peer registers again with
    a successor).
    """

    def __init__(self, lb, root, requester=None, on_progress=None, on_verified=None,
                 have=None, identity=None, stall_timeout=STALL_TIMEOUT_S, members=OPEN,
                 partials=None, wait_s=None, pace=PACE, answer_timeout=ANSWER_TIMEOUT_S):
        self.lb = lb
        self.members = members
        self.root = os.path.abspath(root)
        self.requester = requester
        self.pace, self.answer_timeout = pace, answer_timeout
        self.clock = Clock()
        self.on_progress = on_progress or (lambda progress: None)
        self.on_verified = on_verified or (lambda root, path, sha256, digests: None)
        self.have = have or (lambda sha256: None)  # a SharedFile we already have, or None
        self.identity = identity  # this peer's address, shown to the holders we fetch from
        self.stall_timeout = stall_timeout
        self.partials = partials
        self.wait_s = wait_s

    def requester_id(self):
        return self.requester() if callable(self.requester) else self.requester

    def connection(self, lease, file):
        """A connection to the holder of ``lease``, for ``file`` (a FileRecord)."""
        return HolderConnection(lease.host, lease.port, file.sha256, file.size, self.members,
                                self.identity, self.stall_timeout, self.answer_timeout)

    def get(self, name, sha256=None, peer=None):
        """Download ``name`` (that version, from that peer if given); returns a Result.

        The Result names the other versions of ``name`` on the network, if any.
        """
        check_name(name)
        liars, broken, last = [], [], None
        for _ in range(MAX_LIST_TRIES):
            shunned = [lie.peer_id for lie in liars] + broken  # not asked again
            try:
                pick = self._first_pick(name, sha256, peer if last is None else None, shunned)
            except (NotKnown, NoHolderLeft):
                if last is None:
                    raise
                break
            sha256 = pick.file.sha256
            leases = Leases(self.lb, pick.renew_s)
            for lease in pick.leases:
                leases.add(lease)
            try:
                result = self._get(name, pick, leases, named=peer is not None and last is None,
                                   shunned=shunned)
            except FalseList as lie:
                liars.append(lie)
                last = lie
            except Spoiled as e:
                broken += sorted(e.peer_ids)
                last = e
            except NoPieceList as e:
                if not e.broken or peer is not None:
                    raise
                broken += e.broken
                last = e
            else:
                result.others = pick.versions
                return result
            finally:
                leases.end_all("cancelled")
                leases.stop()
            log.warning("%s; asking other holders", last.message)
        if liars:
            raise VerifyFailed(" and ".join(lie.message for lie in liars)
                               + "; no other holder is left. Nothing was saved.")
        raise last

    def _first_pick(self, name, sha256, peer, exclude):
        """The first holders; while every one is busy, wait (and say so) for a free slot."""
        asking = Asking(name, self.clock, self.wait_s, self.pace)
        while True:
            try:
                return self.lb.pick(name, sha256=sha256, peer=peer, exclude=exclude,
                                    requester=self.requester_id(),
                                    count=1 if peer else self.pace.max_sources)
            except AllBusy as e:
                decision = asking.busy(e.busy, e.retry_after, 0, soon=e.downloading > 0)
                if decision.give_up:
                    raise DownloadError(decision.why + " Try again later.") from None
                while (left := asking.wait()) > 0:
                    self.on_progress(Progress(name, 0, 0, 0.0, "", sources=0,
                                              waiting=decision.waiting))
                    time.sleep(min(PROGRESS_EVERY_S, left))

    def _get(self, name, pick, leases, named, shunned=()):
        """One try: ``shunned`` are the peer ids earlier tries blamed (never asked again);
        after such a try every piece is hashed as it comes."""
        size, sha256 = pick.file.size, pick.file.sha256
        mine = self.have(sha256)
        if mine is not None:
            return Result(mine.path, name, size, sha256, already=True)
        target = plan_target(self.root, name, size, sha256)
        if target.have:
            return Result(target.have, name, size, sha256, already=True)
        check_folder(self.root, target.partial)
        fd = open_partial(self.root, target.partial, size)
        plan = None
        try:  # the partial file stays locked until it has its final name
            pieces, list_from, pick = self._piece_list(pick, leases)
            partial = PartialFile(target.partial, fd, pieces)
            have = partial.verified()
            plan = Plan(pieces.count, have)
            plan.shunned.update(shunned)
            plan.alone = plan.alone and not shunned
            result = Result("", name, size, sha256, started=self.clock.now(),
                            resumed_from=plan.progress(pieces.piece_size, size))
            if self.partials is not None:
                self.partials.add(name, pieces, have, target.partial,
                                  lambda: plan.progress(pieces.piece_size, size))
            try:
                asking = Asking(name, self.clock, self.wait_s, self.pace, plan.alone)
                Swarm(self, name, pick, partial, plan, leases, result, asking,
                      named).run(pick, list_from)
            finally:
                if self.partials is not None:
                    self.partials.remove(sha256)
            result.path = commit(self.root, target.partial, name, size, sha256)
        except VerifyFailed:
            os.unlink(target.partial)
            raise
        except BaseException:
            if not plan.here if plan is not None else os.fstat(fd).st_size == 0:
                os.unlink(target.partial)  # no piece here to resume from: leave nothing
            raise
        finally:
            os.close(fd)
        elapsed = max(self.clock.now() - result.started, 1e-6)
        self.on_progress(Progress(name, size, size, result.received / elapsed,
                                  ", ".join(dict.fromkeys(result.sources)), finished=True,
                                  sources=len(set(result.sources)), limit=result.limit))
        self.on_verified(self.root, result.path, sha256, list(pieces.digests))
        return result

    def _piece_list(self, pick, leases):
        """The file's piece list, from the first holder that gives one the holders agree on
        (``pick.pieces``); the Lease of that holder; and the pick without the holders that
        failed to give it. The first holder is asked, and one more every LIST_STAGGER_S
        while none has answered (so a silent holder costs a moment, not its timeout). A
        holder that cannot be reached or answers nonsense has its transfer ended
        ``failed``; NoPieceList if none gives the list."""
        answers, problems, broken, failed = queue.Queue(), [], [], set()
        waiting = [*pick.leases]
        asked = 0
        while waiting or asked:
            if waiting:
                self._ask_list(waiting.pop(0), pick, answers)
                asked += 1
            try:
                lease, pieces, fault = answers.get(timeout=LIST_STAGGER_S if waiting else None)
            except queue.Empty:
                continue
            asked -= 1
            if pieces is not None:
                return pieces, lease, replace(pick, leases=[
                    other for other in pick.leases if other.peer_id not in failed])
            problems.append(f"{lease.address}: {fault}")
            failed.add(lease.peer_id)
            if not fault.other_file:  # another size claimed for it: the pick's record may lie
                broken.append(lease.peer_id)
                leases.end(lease, "failed")
        raise NoPieceList(f"No holder gave the piece list of {pick.file.name!r} ("
                          + "; ".join(problems) + "); try again later.", broken)

    def _ask_list(self, lease, pick, answers):
        """Ask ``lease``'s holder for the piece list in a thread; (lease, list or None,
        PeerFault or None) goes into ``answers``."""
        self.on_progress(Progress(pick.file.name, 0, pick.file.size, 0.0, lease.address,
                                  sources=0, waiting=f"waiting for {lease.address} to answer"))

        def ask():
            conn = self.connection(lease, pick.file)
            try:
                answers.put((lease, conn.piece_list(pick.pieces)[0], None))
            except PeerFault as e:
                answers.put((lease, None, e))
            finally:
                conn.close()

        threading.Thread(target=ask, daemon=True, name=f"list-{lease.address}").start()


# ---------------------------------------------------------------------------
# Without a load balancer


class DirectSource:
    """Stands in for the load balancer when there is none and the person named a peer.

    That peer is the only holder: its ``GET /files`` says the file's size, SHA-256 and
    piece-list hash; there is nothing to renew or end, and no other holder to turn to
    when it fails.
    """

    def __init__(self, host, port, timeout=CONNECT_TIMEOUT_S, members=OPEN):
        self.host, self.port, self.timeout = host, port, timeout
        self.members = members
        self.address = format_address(host, port)

    def pick(self, name, sha256=None, peer=None, exclude=(), requester=None, count=1):
        if exclude:
            raise NoHolderLeft(f"{self.address} failed, and without a load balancer there "
                               "is no other holder to ask.", 503)
        conn = connect_http(self.host, self.port, self.timeout, self.members)
        try:
            conn.connect()
            conn.request("GET", "/files", headers=self.members.auth_headers(
                "GET", "/files", authority(conn.sock, self.port)))
            response = conn.getresponse()
            listing = json.loads(response.read())
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"No peer answers at {self.address} "
                              f"({describe_socket_error(e)}).") from None
        except ValueError:
            raise Unreachable(f"{self.address} answered, but not as a peer.") from None
        finally:
            conn.close()
        if response.status == 401 or (isinstance(listing, dict) and listing.get("tls_required")):
            tls = bool(listing.get("tls_required"))
            raise NotAdmitted(f"{self.address} refuses us: "
                               f"{listing.get('error') or 'wrong or missing network secret.'} "
                               f"{TLS_FIX if tls else SECRET_FIX}", 401, tls)
        versions = [f for f in listing if isinstance(f, dict) and f.get("name") == name
                    and sha256 in (None, f.get("sha256"))] if isinstance(listing, list) else []
        if not versions:
            raise NotKnown(f"{self.address} does not share {name!r}.", 404)
        try:
            record = FileRecord.parse(versions[0])
        except ValueError:
            raise Unreachable(f"{self.address} answered, but not as a peer.") from None
        lease = Lease(transfer_id="", secret="", peer_id=self.address, host=self.host,
                      port=self.port)
        return Pick(file=record, leases=[lease], renew_s=DEFAULT_RENEW_S,
                    pieces=record.pieces)

    def renew(self, lease):
        """Nothing to renew: no load balancer counts this transfer."""

    def end(self, lease, outcome="done"):
        """Nothing to end: no load balancer counts this transfer."""


# ---------------------------------------------------------------------------
# Downloads in the background


@dataclass
class Job:
    """One download asked for: waiting for its turn, running, or ended (and how)."""
    id: int
    name: str
    sha256: str = None
    peer: str = None
    state: str = "waiting"  # waiting, running, done, failed, cancelled
    progress: Progress = None
    result: Result = None
    error: DownloadError = None
    cancel: threading.Event = field(default_factory=threading.Event)
    reported: bool = False

    @property
    def ended(self):
        return self.state in ("done", "failed", "cancelled")


class DownloadQueue:
    """Downloads in background threads, at most ``limit`` at once, in the order asked.

    ``start(job, on_progress)`` runs one download and returns its Result (or raises
    DownloadError); its progress callback raises DownloadCancelled once the job is
    cancelled, so a running download stops at its next progress report (at least
    every second or so while bytes arrive) and keeps its partial file.
    """

    def __init__(self, start, limit=DEFAULT_PARALLEL):
        self._start = start
        self.limit = limit
        self._cond = threading.Condition()
        self._jobs = []
        self._threads = []
        self._running = 0

    def submit(self, name, sha256=None, peer=None):
        """Queue a download; returns (its Job, False), or (the same one queued before, True)."""
        with self._cond:
            for job in self._jobs:  # the same file, or a version of it not yet chosen
                if not job.ended and job.name == name and (
                        job.sha256 == sha256 or None in (job.sha256, sha256)):
                    return job, True
            job = Job(len(self._jobs) + 1, name, sha256, peer)
            self._jobs.append(job)
            thread = threading.Thread(target=self._run, args=(job,), daemon=True,
                                      name=f"download-{job.id}")
            self._threads.append(thread)
        thread.start()
        return job, False

    def _run(self, job):
        with self._cond:
            self._cond.wait_for(lambda: self._running < self.limit or job.cancel.is_set())
            if job.cancel.is_set():
                job.state = "cancelled"
                return
            self._running += 1
            job.state = "running"
        try:
            job.result = self._start(job, lambda p: self._progress(job, p))
            job.state = "done"
        except DownloadCancelled:
            job.state = "cancelled"
        except (DownloadError, LBClientError) as e:
            job.error, job.state = e, "failed"
        except Exception as e:  # a bug of ours: logged, and the other downloads go on
            log.exception("download of %s failed", job.name)
            job.error, job.state = DownloadError(f"Unexpected error: {e!r}"), "failed"
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @staticmethod
    def _progress(job, progress):
        job.progress = progress
        if job.cancel.is_set():
            raise DownloadCancelled()

    def jobs(self):
        with self._cond:
            return list(self._jobs)

    def active(self):
        """The jobs waiting or running."""
        return [job for job in self.jobs() if not job.ended]

    def take_ended(self):
        """The jobs that ended since the last call (each is returned once)."""
        with self._cond:
            ended = [job for job in self._jobs if job.ended and not job.reported]
            for job in ended:
                job.reported = True
            return ended

    def cancel(self, job):
        """Stop ``job``: at its next progress report if it runs, at once if it waits."""
        with self._cond:
            job.cancel.set()
            self._cond.notify_all()

    def cancel_all(self):
        with self._cond:
            for job in self._jobs:
                job.cancel.set()
            self._cond.notify_all()

    def wait(self, timeout=None):
        """Wait for every job to end (or ``timeout``); True if they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            threads = list(self._threads)
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.active()
