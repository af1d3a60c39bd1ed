"""One download from many holders at once: threads and sockets around the plan and the asking.

``Swarm.run`` fills a partial file from the holders the load balancer hands out:
one ``Worker`` thread per holder (``worker.py``) takes pieces from the plan
(``core/plan.py``) and receives them; ``Landing`` hashes each (``VERIFY_THREADS``
threads; alone, the holder's own thread writes unhashed and the whole file's
SHA-256 checks), writes it and tells the plan; ``WholeHash`` follows in order.
The caller's thread (``Swarm._loop``) reports progress, lets slow holders go and,
when ``core/swarm.Asking`` says so, asks the load balancer for more holders and
hands the answer back: every decision is the plan's or the asking's, on a Clock;
this module only moves bytes.

When the load balancer is gone, the holders at hand go on, and ``Leases`` keeps
trying to renew (failures are logged only). When every holder is gone, the
download is *stalled*: it keeps every verified piece, asks again with back-off
and carries on by itself once a holder of that version is handed out.
"""

import functools
import hashlib
import logging
import queue
import threading

from p2p.core.bottleneck import RateWindow
from p2p.core.piece_states import UNCHECKED
from p2p.core.progress import Progress
from p2p.net.download_errors import DiskError, DownloadError, FalseList, Spoiled
from p2p.net.lb_client import AllBusy, LBClientError, NoHolderLeft, NotKnown, Unreachable
from p2p.net.partial import WholeHash
from p2p.net.sharing import sha256_file
from p2p.net.speed import Speed
from p2p.net.worker import Worker

log = logging.getLogger("p2p.download")

VERIFY_THREADS = 2  # threads hashing and writing pieces (hashlib releases the GIL)
PROGRESS_EVERY_S = 0.2  # the caller's thread looks around (and reports progress) this often
WORKER_JOIN_S = 5.0  # a holder's thread stopped at the end is waited for this long
CHECK_LANDED = object()  # a verifier's task: hash the pieces written unhashed


class Leases:
    """The transfers of one download at the load balancer: one thread renews them all
    every ``renew_s``; ``end`` ends one. Errors (a load balancer gone) are only logged:
    the holders at hand go on."""

    def __init__(self, lb, renew_s):
        self.lb, self.renew_s = lb, renew_s
        self._active = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="renewer")
        self._thread.start()

    def add(self, lease):
        with self._lock:
            self._active[lease.transfer_id] = lease

    def _run(self):
        while not self._stop.wait(self.renew_s):
            with self._lock:
                leases = list(self._active.values())
            for lease in leases:
                try:
                    self.lb.renew(lease)
                except LBClientError as e:
                    log.info("could not renew transfer %s: %s", lease.transfer_id, e)

    def end(self, lease, outcome):
        with self._lock:
            if self._active.pop(lease.transfer_id, None) is None:
                return
        try:
            self.lb.end(lease, outcome)
        except LBClientError as e:
            log.info("could not end transfer %s: %s", lease.transfer_id, e)

    def end_all(self, outcome):
        with self._lock:
            leases = list(self._active.values())
        for lease in leases:
            self.end(lease, outcome)

    def stop(self):
        self._stop.set()


class Swarm:
    """Fills a partial file from the holders the load balancer hands out (see the module)."""

    def __init__(self, downloader, name, pick, partial, plan, leases, result, asking,
                 named=False):
        self.d = downloader
        # the address of the holder the person named (no other is asked), or None
        self.named = pick.leases[0].address if named else None
        self.name, self.file, self.partial = name, pick.file, partial
        self.pieces = partial.pieces
        self.plan, self.leases, self.result, self.asking = plan, leases, result, asking
        self.partials, self.clock = downloader.partials, downloader.clock
        self.cond = threading.Condition()
        self.workers = {}  # lease transfer id -> Worker
        self.finished = {}  # the same -> Lease, of holders still there when every piece was
        self.busy = {}  # peer id -> when it last turned us away as busy
        self.others = 0  # other peers downloading this file, as the last pick said
        self.problem = None  # a DiskError from a verifier, raised in run()
        self.last_fault = ""
        self.landing = Landing(self)
        self.speed = Speed(self)

    def run(self, pick, list_from):
        """Until every piece is here and verified, and the whole file's SHA-256 with it;
        FalseList (the piece list from ``list_from``, a Lease, is blamed) if it is not the
        file's, Spoiled if pieces written unhashed were bad."""
        try:
            self._add(pick)
            self.asking.got(self._soon())
            self._loop()
            log.info("%s: every piece is here", self.name)
            digest = self.landing.whole.hexdigest()
            log.info("%s: the whole file's SHA-256 is checked", self.name)
        finally:
            self._stop_all()
        if digest != self.file.sha256 and self.landing.refetched:  # a bad piece was hashed
            digest = sha256_file(self.partial.path)
        spoilers = self.landing.check_landed() if digest != self.file.sha256 else set()
        with self.cond:
            blamed = spoilers or ({list_from.peer_id} if digest != self.file.sha256 else ())
            for key, source in list(self.plan.sources.items()):
                if source.peer_id in blamed:
                    self.plan.fault(key, source.peer_id)
            ended = [(lease, self.plan.remove_source(key))
                     for key, lease in self.finished.items()]
        for lease, outcome in ended:
            self.leases.end(lease, outcome)
        if spoilers:
            raise Spoiled(f"{self.name!r}: some pieces did not match their SHA-256", spoilers)
        if digest != self.file.sha256:
            raise FalseList(f"{self.name!r} from {list_from.address} did not match its "
                            "SHA-256, though every piece matched the piece list it gave",
                            list_from.peer_id)

    def _loop(self):
        rate, active, received = RateWindow(), -1, 0
        while True:
            with self.cond:  # woken by every piece: look up only when something changed
                before = active
                self.cond.wait_for(lambda: self.problem is not None or self.plan.done
                                   or len(self.workers) != before, PROGRESS_EVERY_S)
                if self.problem is not None:
                    raise self.problem
                if self.plan.done:
                    return
                active = len(self.workers)
            now = self.clock.now()
            if self.result.received != received:
                received = self.result.received
                self.asking.progressed()
            self._progress(rate.add(now, received))
            self._let_slow_go(now)
            if self.named and not active:
                raise DownloadError(f"Could not download {self.name!r}: {self.named} "
                                    f"failed ({self.last_fault}).{self._kept()}")
            if not self.named and self.asking.due(active):
                self._ask(active)

    def _ask(self, active):
        """Ask the load balancer for more holders; the asking decides what its answer means."""
        was_stalled = self.asking.stalled
        try:
            more = self.d.lb.pick(self.name, sha256=self.file.sha256, exclude=self._exclude(),
                                  requester=self.d.requester_id(),
                                  count=self.asking.pace.max_sources - active)
        except AllBusy as e:
            self._others(e.downloading)
            decision = self.asking.busy(e.busy, e.retry_after, active, self._soon())
            why = decision.why
        except (NotKnown, NoHolderLeft) as e:
            self._others(getattr(e, "downloading", 0))
            decision = self.asking.none_left(active, self._soon(), self._busy_soon())
            last = f" (last: {self.last_fault})" if self.last_fault else ""
            why = f"Could not download {self.name!r}: {e.message}{last}{decision.why}"
        except Unreachable as e:
            decision = self.asking.unreachable(active)
            why = e.message + decision.why
        except LBClientError as e:
            if not active:
                raise DownloadError(f"{e.message}{self._kept()}") from None
            decision = self.asking.unreachable(active)
            why = e.message
        else:
            self._add(more)
            self.asking.got(self._soon())
            self._announce_stall(was_stalled)
            return
        if decision.give_up:
            raise DownloadError(why + self._kept())
        if self.asking.stalled and not was_stalled:
            log.warning("%s", decision.waiting)
        self._announce_stall(was_stalled)

    def _announce_stall(self, was_stalled):
        """Tell the peer's heartbeat when this download stalls or moves again, so the load
        balancer's status (option 3, 'peer.py status', its page) says so."""
        if self.partials is not None and self.asking.stalled != was_stalled:
            self.partials.set_stalled(self.file.sha256, self.asking.stalled)

    def _kept(self):
        return (" The partial file is kept: try again later to resume."
                if self.plan.here else "")

    def _busy_soon(self):
        """Did a holder turn us away as busy a moment ago (so it is worth asking again)?"""
        recent = self.clock.now() - self.asking.pace.busy_wait_max_s
        return any(when > recent for when in self.busy.values())

    def _exclude(self):
        with self.cond:
            return sorted(self.plan.banned() | {w.lease.peer_id for w in self.workers.values()})

    def _others(self, downloading):
        """The load balancer says ``downloading`` other peers download this file now (it
        counts them at every pick): if that ends being alone, hash what landed unhashed, to
        share it with them; the runs being fetched in order are cut short (``Worker``)."""
        self.others = downloading
        if downloading and self.plan.alone:
            self.plan.alone = False
            self.landing.check_later()

    def taken(self, key, indexes):
        """A whole holder refused ``indexes``: it sent them to other downloaders (so there
        are others) and not yet every piece to anyone; they are asked of others first."""
        with self.cond:
            if key in self.plan.sources:
                self.plan.taken(key, indexes)
        self._others(max(1, self.others))

    def _soon(self):
        """Ask the load balancer again soon: alone (each pick says whether others came), or
        it says more peers download this file than we fetch from (it hands them out as
        soon as they have verified pieces to share)."""
        with self.cond:
            partial = sum(1 for w in self.workers.values() if w.lease.done is not None)
        return self.plan.alone or self.others > partial

    def _add(self, pick):
        self._others(pick.downloading)
        for lease in pick.leases:
            self.leases.add(lease)
            worker = Worker(self, lease)
            with self.cond:
                self.workers[worker.key] = worker
            worker.start()

    def _let_slow_go(self, now):
        with self.cond:
            for key in self.plan.slow(now):
                if key in self.workers:
                    log.info("%s: letting a slow holder go", self.name)
                    self.workers[key].stop()

    def _progress(self, rate):
        done = self.plan.progress(self.pieces.piece_size, self.file.size)
        with self.cond:
            workers = list(self.workers.values())
        sending = [w for w in workers if w.sending]
        main = max(sending, key=lambda w: w.received, default=None)
        silent = next((w.lease.address for w in workers if w.conn.awaiting), None)
        waiting = "" if sending else self.asking.waiting or (
            f"waiting for {silent} to answer" if silent else "")
        each, limit = self.speed.look(rate, workers)
        self.d.on_progress(Progress(
            self.name, done, self.file.size, rate, main.lease.address if main else "",
            sources=len(sending), waiting=waiting, stalled=self.asking.stalled,
            each=each, limit=limit))

    def _stop_all(self):
        with self.cond:
            workers = list(self.workers.values())
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(WORKER_JOIN_S)
        self.landing.stop()


class Landing:
    """Where the pieces that arrive go: hashed (unless alone), claimed in the plan, written
    at their offset, the plan told; and the whole file's SHA-256, in order.

    Alone (in order, from whole holders, nobody to share with) a holder's own thread
    lands its pieces unhashed: the whole file's SHA-256, which runs anyway, checks them,
    and ``check_landed`` hashes them only if that fails, or when others appear (to share
    them). That keeps the fast path at one hash per byte instead of two, and every byte
    received once, written once and hashed once from the buffer it came in (``WholeHash``
    takes each piece from its buffer in order); the verifier threads start only when
    there is a swarm.
    """

    def __init__(self, swarm):
        self.swarm = swarm
        self.refetched = False  # a piece written unhashed was bad, and fetched again
        self.hashed = 0  # bytes of pieces hashed here (to tell how fast verification goes)
        self.queue = queue.Queue()
        self.threads = []  # the verifiers, started at the first piece they get
        self._starting = threading.Lock()  # ...by one holder's thread
        self._stopped = False
        self.whole = WholeHash(swarm.partial, swarm.plan.landed_or_verified, swarm.cond)

    def hand_over(self, worker, index, buf, length):
        """A whole piece is in ``buf``: land it here when alone, else in a verifier."""
        if self.swarm.plan.alone:
            self.land(worker, index, buf, length)
        else:
            self._verify((worker, index, buf, length))

    def check_later(self):
        self._verify(CHECK_LANDED)

    def _verify(self, item):
        """Hand ``item`` to the verifiers, starting them the first time."""
        with self._starting:
            if not self.threads and not self._stopped:
                self.threads = [threading.Thread(target=self._run, daemon=True, name="verify")
                                for _ in range(VERIFY_THREADS)]
                for thread in self.threads:
                    thread.start()
        self.queue.put(item)

    def _run(self):
        while (item := self.queue.get()) is not None:
            if item is CHECK_LANDED:
                self.check_landed()
            else:
                self.land(*item)

    def land(self, worker, index, buf, length):
        """Hash the piece (unless alone); the first good copy claims it, is written and
        handed to the whole file's SHA-256 (which gives the buffer back once hashed)."""
        swarm, plan, cond = self.swarm, self.swarm.plan, self.swarm.cond
        view = memoryview(buf)[:length]
        verified = not plan.alone
        kept = False  # the whole file's SHA-256 took the buffer
        try:
            good = not verified or swarm.pieces.matches(index, hashlib.sha256(view).hexdigest())
            with cond:
                self.hashed += length if verified else 0
                arrival = plan.claim(worker.key, worker.lease.peer_id, index) if good \
                    else plan.bad(worker.key, index)
                for key in arrival.cancel:
                    if key in swarm.workers:
                        swarm.workers[key].cancel(index)
                if not arrival.new:
                    self._not_new(worker, index, arrival)
            if arrival.new:
                kept = self._write(index, view, verified, functools.partial(worker.give_back,
                                                                            buf))
        except DiskError as e:
            with cond:
                swarm.problem = e
                cond.notify_all()
            return
        finally:
            if not kept:
                worker.give_back(buf)
        if arrival.new and swarm.partials is not None:  # verified or not: progress
            swarm.partials.touch()

    def _not_new(self, worker, index, arrival):
        """A copy that claimed nothing: bad (its sender struck, maybe banned), or late."""
        swarm = self.swarm
        if arrival.bad:
            log.warning("%s: piece %d from %s did not match its SHA-256%s", swarm.name,
                        index, worker.source, "; not asking it again" if arrival.banned else "")
            if arrival.banned:
                worker.stop()
        swarm.cond.notify_all()

    def _write(self, index, view, verified, give_back):
        """Write a claimed piece, tell the plan, and hand it to the whole file's SHA-256:
        True if that took the buffer (``give_back`` is called once it is hashed). From one
        holder alone, the caller's progress loop is not woken for each piece, only at the
        last (other holders' threads may wait for the end game's copies)."""
        plan, cond = self.swarm.plan, self.swarm.cond
        try:
            self.swarm.partial.write(index, view)
        except DiskError:
            with cond:
                plan.unwritten(index)
            raise
        with cond:
            plan.written(index, verified)
            if plan.done or not plan.alone or len(self.swarm.workers) > 1:
                cond.notify_all()  # from one holder alone, only the whole file's hash waits
            return self.whole.landed(index, view, give_back)

    def check_landed(self):
        """Hash the pieces written unhashed: the good ones are verified (and shared) now,
        the bad ones missing again, to be fetched from others. The peer ids that sent bad
        ones."""
        swarm, plan, cond = self.swarm, self.swarm.plan, self.swarm.cond
        spoilers = set()
        buf = bytearray(swarm.pieces.piece_size)
        with cond:
            landed = sorted(plan.unchecked())
        for index in landed:
            good = swarm.partial.piece_matches(index, buf)
            with cond:
                if plan.book.state(index) != UNCHECKED:
                    continue
                sender = plan.checked(index, good)
                cond.notify_all()
            if sender is not None:
                log.warning("%s: piece %d from %s did not match its SHA-256", swarm.name,
                            index, sender)
                spoilers.add(sender)
                self.refetched = True
        if swarm.partials is not None:
            swarm.partials.touch()
        return spoilers

    def stop(self):
        with self._starting:
            self._stopped = True
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join(WORKER_JOIN_S)
        self.whole.stop()
