"""One holder's connection in a download: a thread that takes pieces from the plan and
receives them.

A ``Worker`` asks a partial holder what it has (``GET /pieces/{sha256}``; a list
that is not the file's is a lie, blamed), then loops: the plan's next run of
pieces (``pieces_per_request``: longer from a fast holder), one ``Range`` request
for it (``holder.py``; while others download the file, the next is asked for before
this one's bytes are in: ``PIPELINE_RUNS``), each piece into a buffer of its own,
handed to the swarm's ``Landing``. A run of several pieces (in order, while alone) is
cut short when others start downloading the file. A holder that answers busy is
asked again later and never blamed; one whose connection breaks, stays silent or
lies ends ``failed``. Each answer of a partial holder says what it has now
(``X-P2P-Have``), each of a whole holder what it has sent to anyone (``X-P2P-Sent``:
super-seeding, see ``core/picker.py``). A partial holder with nothing we need is
asked again what it has (``GET /have/{sha256}``) every ``PARTIAL_REFRESH_S``, and
let go after ``PARTIAL_IDLE_S``. Another connection delivering the same piece first
cuts this one's fetch short (``cancel``); ``stop`` ends it.
"""

import logging
import queue
import threading

from p2p.core.pieces import BadPieceList, Bitfield
from p2p.net.holder import PeerFault

log = logging.getLogger("p2p.download")

BUFFER_BUDGET_BYTES = 8 << 20  # piece buffers per holder: receiving while others are verified
ALONE_BUFFER_BYTES = 32 << 20  # ...for the first holder of a download alone: its lead over the
# whole file's SHA-256, so the hash goes on while the holder's process waits for a core
MIN_BUFFERS_PER_SOURCE = 2  # ...at least this many, however big the pieces (and at most
# one per piece of the file)
REQUEST_BYTES = 8 << 20  # in order, one request asks for this much (consecutive pieces)...
REQUEST_S = 0.05  # ...or for what the holder sends in this long at its rate so far, if more...
MAX_REQUEST_BYTES = 64 << 20  # ...up to this much
PARTIAL_REFRESH_S = 0.5  # ask a partial holder what it has again after this long idle
PARTIAL_IDLE_S = 5.0  # let a partial holder go after having nothing we need this long
PIPELINE_RUNS = 2  # requests out at once on one connection (not alone, not super-seeding):
#                    the next is asked before this one's bytes are in (no round trip lost)


def pieces_per_request(rate, piece):
    """Pieces of ``piece`` bytes one in-order request asks for from a holder sending
    ``rate`` bytes/s: REQUEST_BYTES, or REQUEST_S of its rate when that is more (up to
    MAX_REQUEST_BYTES). Each request costs a round trip with nothing arriving and the
    holder's work; a fast holder gets few, long requests, a slow one stays at
    REQUEST_BYTES (a few seconds at most in order, so others soon have pieces to swap)."""
    return max(1, int(min(MAX_REQUEST_BYTES, max(REQUEST_BYTES, rate * REQUEST_S))) // piece)



class Fetching:
    """The half of a ``Worker`` that asks its holder for runs of pieces and receives them
    (pipelined, cut short when others come), and hears what the holder says it has."""

    def _heard(self, have, sent=None):
        """With its answer, a partial holder said what it has now, a whole holder what it
        has sent to anyone so far (each a Bitfield's text, or None): the plan sees a
        partial holder's new pieces at once, without asking for its list again, and asks a
        whole holder first for what it has not sent (super-seeding)."""
        count, plan = self.swarm.pieces.count, self.swarm.plan
        try:
            have, sent = (None if text is None else Bitfield.from_text(count, text)
                          for text in (have, sent))
        except BadPieceList as e:
            raise PeerFault(f"its list of pieces is wrong: {e}") from None
        with self.swarm.cond:
            if have is not None and self.pieces_change_locked():
                plan.update_source(self.key, have)
                self.refreshed = self.swarm.clock.now()
            if sent is not None and self.key in plan.sources:
                plan.sources[self.key].sent = sent

    def _cut(self, rest):
        """Give the rest of a run back to the plan and cut the connection short, so that
        its bytes are not waited for (the next request connects again)."""
        with self.swarm.cond:
            for index in rest:
                self.swarm.plan.release(self.key, index)
        self.conn.abort()

    def _span(self, run):
        start = self.swarm.pieces.span(run[0])[0]
        return start, sum(self.swarm.pieces.span(run[-1])) - start

    def _fetch_runs(self, run):
        """Fetch ``run`` and, while others download the file, the runs after it, with up
        to PIPELINE_RUNS requests out at once; until the plan has nothing more for this
        holder, or the connection is cut short (then what was asked is given back)."""
        swarm, cond = self.swarm, self.swarm.cond
        runs = [run]
        self.conn.send_range(*self._span(run))
        while runs:
            if len(runs) < PIPELINE_RUNS and not swarm.plan.alone and self.conn.open:
                with cond:
                    more = [] if swarm.plan.done or self._stopped or not \
                        swarm.plan.pipelines(self.key) else swarm.plan.next_run(
                            self.key, pieces_per_request(
                                swarm.plan.sources[self.key].rate(swarm.clock.now()),
                                swarm.pieces.piece_size))
                if more:
                    self.conn.send_range(*self._span(more))
                    runs.append(more)
            if not self._fetch(runs.pop(0)) or not self.conn.open:
                with cond:
                    for index in (i for rest in runs for i in rest):
                        swarm.plan.release(self.key, index)
                return

    def _fetch(self, run):
        """Receive ``run``, consecutive pieces asked for with one request; each piece is
        landed (or handed to the verifiers) as soon as it is in. False when it was cut
        short on purpose (the connection with it)."""
        swarm, cond = self.swarm, self.swarm.cond
        start, length = self._span(run)
        self._cancelled = None

        def arrived(n):
            self.received += n
            self.sending = True
            with cond:
                swarm.result.received += n
                swarm.plan.sent(self.key, n, swarm.clock.now())

        for at, index in enumerate(run):
            if at and not swarm.plan.alone:  # others came: the rest is chosen rarest first
                self._cut(run[at:])
                return False
            buf, size = self.free.get(), swarm.pieces.span(index)[1]
            self._fetching = index
            try:
                if at == 0:
                    self._heard(*self.conn.answer_range(start, length))
                self.conn.receive(memoryview(buf)[:size], arrived)
            except PeerFault as fault:
                self.give_back(buf)
                with cond:
                    for left in run[at:]:
                        swarm.plan.release(self.key, left)
                    if fault.missing and self.pieces_change_locked():
                        swarm.plan.lacks(self.key, index)
                if fault.missing and fault.sent is not None:  # sent to others: ask them
                    swarm.taken(self.key, run[at:])
                if fault.missing and (self.pieces_change or fault.sent is not None):
                    self._heard(fault.have, fault.sent)
                    return True
                if self._cancelled == index or self._stopped:
                    return False  # cut short on purpose: not the holder's fault
                raise
            finally:
                self._fetching = None
            swarm.landing.hand_over(self, index, buf, size)
        return True


class Worker(Fetching):
    """One holder's connection: asks the plan for pieces and receives them."""

    def __init__(self, swarm, lease):
        self.swarm, self.lease = swarm, lease
        self.key = lease.transfer_id or lease.address
        self.source = " ".join(x for x in (lease.name, lease.address) if x)
        self.conn = swarm.d.connection(lease, swarm.file)
        self.free = queue.Queue()
        piece = swarm.pieces.piece_size
        budget = ALONE_BUFFER_BYTES if swarm.plan.alone and not swarm.workers \
            else BUFFER_BUDGET_BYTES
        for _ in range(min(swarm.pieces.count, max(MIN_BUFFERS_PER_SOURCE, budget // piece))):
            self.free.put(bytearray(piece))
        self.received = 0
        self.sending = False  # has sent bytes
        self.refreshed = 0.0  # when a partial holder last said what it has
        self._stopped = False
        self._fetching = None  # the piece being fetched now
        self._cancelled = None  # ...once another holder delivered it
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"source-{lease.address}")

    def start(self):
        self._thread.start()

    def join(self, timeout):
        self._thread.join(timeout)

    def give_back(self, buf):
        self.free.put(buf)

    def stop(self):
        """Stop after (or during) the piece being fetched; the caller holds no lock needed."""
        self._stopped = True
        self.conn.abort()

    def cancel(self, index):
        """Another holder delivered ``index``, which this one is fetching: cut it short."""
        if self._fetching == index:
            self._cancelled = index
            self.conn.abort()

    def _run(self):
        swarm, plan, cond = self.swarm, self.swarm.plan, self.swarm.cond
        outcome = "cancelled"
        try:
            has = None
            if self.lease.done is not None:  # a partial holder: what does it have?
                _, has = self.conn.piece_list(swarm.pieces.hash)
                self.refreshed = swarm.clock.now()
            with cond:
                plan.add_source(self.key, self.lease.peer_id, has)
            swarm.result.sources.append(self.source)
            self._fetch_loop()
        except PeerFault as fault:
            with cond:
                if fault.busy is not None:
                    swarm.busy[self.lease.peer_id] = swarm.clock.now()
                elif not self._stopped:
                    plan.fault(self.key, self.lease.peer_id)
                    outcome = "failed"
                    swarm.last_fault = f"{self.source}: {fault}"
                    log.warning("%s from %s failed: %s", swarm.name, self.source, fault)
        except Exception:  # a bug of ours: logged, and the other holders go on
            log.exception("fetching %s from %s", swarm.name, self.source)
        finally:
            self.conn.close()
            with cond:
                swarm.workers.pop(self.key, None)
                cond.notify_all()
                if plan.done and self.key in plan.sources:  # the whole file's check decides
                    swarm.finished[self.key] = self.lease
                    return
                if self.key in plan.sources:
                    outcome = plan.remove_source(self.key)
            swarm.leases.end(self.lease, outcome)

    def _refresh(self):
        """Ask a partial holder again what it has."""
        have = self.conn.have(self.swarm.pieces.count)
        with self.swarm.cond:
            self.swarm.plan.update_source(self.key, have)
        self.refreshed = self.swarm.clock.now()

    def _fetch_loop(self):
        """Pieces until the file is complete. With nothing to fetch for now (the end game
        is covered, or a partial holder has nothing new), wait for the plan to change; a
        partial holder is asked again what it has, and let go after PARTIAL_IDLE_S of
        having nothing we need."""
        plan, cond, clock = self.swarm.plan, self.swarm.cond, self.swarm.clock
        useful = clock.now()
        while not self._stopped:
            with cond:
                if plan.done:
                    return
                rate = plan.sources[self.key].rate(clock.now())
                run = plan.next_run(self.key, pieces_per_request(
                    rate, self.swarm.pieces.piece_size))
                if not run:
                    if plan.wants(self.key):
                        useful = clock.now()
                    elif clock.now() - useful > PARTIAL_IDLE_S:
                        return
                    cond.wait(PARTIAL_REFRESH_S)
            if run:
                useful = clock.now()
                self._fetch_runs(run)
            elif self.pieces_change and clock.now() - self.refreshed >= PARTIAL_REFRESH_S:
                self._refresh()

    @property
    def pieces_change(self):
        """Is this a partial holder (its pieces grow while we download)?"""
        with self.swarm.cond:
            return self.pieces_change_locked()

    def pieces_change_locked(self):
        source = self.swarm.plan.sources.get(self.key)
        return source is not None and source.pieces is not None
