"""The membership driver: a thin thread that does what ``p2p/core/membership.py`` decides.

``Member`` registers the peer with its load balancer, heartbeats (its uploads, and
its files and partial downloads when they changed: ``partials`` at most once per
``PARTIAL_ANNOUNCE_S``), registers again when the load balancer forgot it, and when
the load balancer stops answering does what the machine says: a peer that found it
by discovery listens for the network's load balancer and moves to it
(``rediscover``), or, when none is announced, takes part in electing a successor
(``elect``: a random back-off while listening, then one started here; seniority
settles two started at once); a peer whose load balancer lives on its own machine
starts it again (``restart_lb``); any other tries again every ``RECONNECT_S``. A load
balancer that answers but refuses what the peer sent (too many files, too many peers from
this machine) is kept: the peer says why and asks again later (``refuses``).

A peer with a standby list (``--lb A,B[,C]``, ``standby.py``) has one ``Member``
per load balancer listed, each on its own thread: each load balancer knows every
holder, and one that is gone costs only its own thread's retries.

A peer that follows the network also listens to the load balancers' announcements
(``beacon.Watch``): one that falls silent for ``LB_SILENT_S`` counts as gone at once,
without waiting for the next heartbeat to fail.
"""

import logging
import threading
import time

from p2p.core.clock import Clock
from p2p.core.membership import BEATING, LOST, REFUSED, REGISTER, STOPPED, Membership, Policy
from p2p.core.wire import format_address
from p2p.net.lb_client import LBClientError, NotAMember, NotKnown, NotAdmitted

log = logging.getLogger("p2p.peer")

RECONNECT_S = 3.0  # retry a load balancer that does not answer this often
PARTIAL_ANNOUNCE_S = 0.25  # while downloads progress, a heartbeat says so at most this often
LB_SILENT_S = 2.0  # a followed load balancer unheard this long is gone (it announces every 1 s)
WATCH_CHECK_S = 0.25  # a following peer looks this often whether its load balancer fell silent



def refuses(error):
    """Whether the load balancer answered, refusing what was sent (400, 413, 429: too many
    files, too many peers from this machine): it is there, so it is kept, never searched
    past or replaced; the peer asks again later."""
    return error.status is not None and 400 <= error.status < 500 and not isinstance(
        error, (NotKnown, NotAdmitted, NotAMember))

class Member:
    """The membership of ``peer`` (its index, partials and server) in the network of ``lb``
    (an LBClient: one load balancer; the peer has one Member per load balancer listed)."""

    def __init__(self, peer, lb, stopping, rediscover=None, elect=None, restart_lb=None,
                 watch=None):
        self.peer, self.lb = peer, lb
        self.rediscover, self.elect, self.restart_lb = rediscover, elect, restart_lb
        self.watch = watch  # beacon.Watch, or None
        policy = Policy(follows=rediscover is not None,
                        may_start=(elect if rediscover is not None else restart_lb) is not None,
                        retry_s=RECONNECT_S)
        self.machine = Membership(Clock(), policy, heartbeat_s=RECONNECT_S)
        self.token = None
        self.seen_as = None  # the host the load balancer sees us as
        self.problem = None  # why the load balancer is not reachable, when it is not
        self._announced = self._partials_announced = -1
        self._partials_sent_at = -PARTIAL_ANNOUNCE_S
        self.wake = threading.Event()
        self.stopping = stopping  # set when the peer leaves
        self._thread = None

    @property
    def peer_id(self):
        """This peer's id at the load balancer (None until registered), kept on the client
        so that picks through it name this peer."""
        return self.lb.peer_id

    @peer_id.setter
    def peer_id(self, value):
        self.lb.peer_id = value

    @property
    def up(self):
        return self.peer_id is not None and self.problem is None

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"membership {self.lb.address}")
        self._thread.start()

    def stop(self, timeout):
        self.stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.machine.state != STOPPED:
            self.machine.fire("stop")
        if self.watch is not None:
            self.watch.close()

    # -- the loop -----------------------------------------------------------

    def _run(self):
        while not self.stopping.is_set():
            self._sleep()
            if self.stopping.is_set():
                return
            state = self.machine.state
            if state in (REGISTER, BEATING):
                event = self.register() if state == REGISTER else self.heartbeat()
            elif state in (LOST, REFUSED):
                event = self.machine.way_back(self.peer_id is not None)
            else:
                event = getattr(self, "_" + state)()
            if not self.stopping.is_set():
                self.machine.fire(event)

    def _sleep(self):
        """Until the machine's next action is due, a change to announce, or the followed
        load balancer falls silent."""
        while not self.stopping.is_set():
            left = self.machine.wait_s()
            if left <= 0:
                return
            check = WATCH_CHECK_S if self.watch is not None else left
            if self.wake.wait(min(left, check)):
                self.wake.clear()
                if self.machine.state == BEATING:
                    self._hold_partials()
                    return
            if self.machine.state == BEATING and self._silent():
                log.warning("the load balancer at %s fell silent", self.lb.address)
                self.machine.fire("failed")

    def _hold_partials(self):
        """Announce download progress at most once per PARTIAL_ANNOUNCE_S."""
        if self.peer.partials.version != self._partials_announced:
            self.stopping.wait(self._partials_sent_at + PARTIAL_ANNOUNCE_S - time.monotonic())

    def _silent(self):
        lb = self.lb
        return self.watch is not None and self.watch.silent(lb.host, lb.port, LB_SILENT_S)

    def _searching(self):
        found = self.rediscover()
        event = self.machine.after_search(found, (self.lb.host, self.lb.port))
        if event == "moved":
            self._move(found)
        return event

    def _electing(self):
        outcome, found = self.elect()
        if found is not None:
            self._move(found)
        return outcome

    def _restarting(self):
        started = self.restart_lb(self.lb.host, self.lb.port)
        return "ok" if started else "failed"

    def _move(self, found):
        log.warning("moving to the load balancer at %s", format_address(*found))
        self.lb.retarget(*found)
        self.peer_id = None

    # -- talking to the load balancer --------------------------------------

    def _files(self):
        version = self.peer.index.version
        return version, [f.as_dict() for f in self.peer.index.files()]

    def register(self):
        """Register; "ok" or "failed". At start (no thread yet) NotAdmitted is raised."""
        peer = self.peer
        version, files = self._files()
        try:
            answer = self.lb.register(peer.port, files, host=peer.advertise, name=peer.name,
                                      slots=peer.upload_slots)
        except LBClientError as e:
            if isinstance(e, (NotAdmitted, NotAMember)) and self._thread is None:
                raise  # starting: the person must fix it, not wait for it
            self.problem = e.message
            self._note(False)
            log.warning("cannot register with the load balancer: %s", e.message)
            return "refused" if refuses(e) else "failed"
        self.peer_id, self.token = answer["peer_id"], answer["token"]
        self.seen_as = answer.get("host")
        peer.server.address = peer.address
        self.machine.heartbeat_s = float(answer.get("heartbeat_s", RECONNECT_S))
        self._announced = version
        self._partials_announced = -1  # the next heartbeat says what is being downloaded
        if len(peer.partials):
            self.wake.set()
        self.problem = None
        self._note(True)
        log.info("registered as %s at %s with %d files", self.peer_id, peer.address, len(files))
        return "ok"

    def heartbeat(self):
        """One heartbeat; "ok", "forgotten" (register again) or "failed"."""
        peer = self.peer
        files = partial = None
        version = peer.index.version
        if version != self._announced:
            version, files = self._files()
        partial_version = peer.partials.version
        if partial_version != self._partials_announced:
            partial = peer.partials.announced()
        try:
            self.lb.heartbeat(self.peer_id, self.token, files=files,
                              uploads=len(peer.server.uploads), slots=peer.upload_slots,
                              partial=partial)
        except LBClientError as e:
            if isinstance(e, NotKnown):  # it restarted, or is a successor: it forgot us
                log.warning("the load balancer forgot this peer; registering again")
                self.peer_id = None
                return "forgotten"
            self.problem = e.message
            self._note(False)
            log.warning("heartbeat failed: %s", e.message)
            return "refused" if refuses(e) else "failed"
        self._announced = version
        if partial is not None:
            self._partials_announced = partial_version
            self._partials_sent_at = time.monotonic()
        if self.problem is not None:
            self._note(True)
        self.problem = None
        return "ok"

    def _note(self, answered):
        """Tell a standby list whether this load balancer answers (skipped while down)."""
        note = getattr(self.peer.lb, "note", None)
        if note is not None:
            note(self.lb, answered)

    def unregister(self):
        """True if the load balancer heard us leave."""
        if self.peer_id is None:
            return False
        try:
            self.lb.unregister(self.peer_id, self.token)
            return True
        except LBClientError as e:
            log.info("could not unregister: %s", e)
            return False
        finally:
            self.peer_id = None


def register_with_each(members):
    """Register each Member with its load balancer at once (a dead one costs its timeout
    once, not once per load balancer); the first refusal (NotAdmitted, NotAMember) the
    person must fix, or None."""
    refusals = []

    def register(member):
        try:
            member.machine.fire(member.register())
        except (NotAdmitted, NotAMember) as e:
            refusals.append(e)
    threads = [threading.Thread(target=register, args=(m,), daemon=True, name="registering")
               for m in members[1:]]
    for thread in threads:
        thread.start()
    register(members[0])
    for thread in threads:
        thread.join()
    return refusals[0] if refusals else None
