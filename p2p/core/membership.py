"""A peer's membership of the network as a state machine: a transition table and its timing.

The states say what the peer does next; the driver (``p2p/net/membership.py``)
does it and reports how it went as an event::

    REGISTER    register with the load balancer              ok -> BEATING, failed -> LOST,
                                                             refused -> REFUSED
    BEATING     heartbeat every heartbeat_s (or at a change) ok -> BEATING,
                                                             forgotten -> REGISTER, failed -> LOST,
                                                             refused -> REFUSED
    REFUSED     it answers, but refuses what this peer sent (too many files, too many peers
                from this machine): keep it, and after refused_s register again
                                                             retry_register -> REGISTER
    LOST        it does not answer: a peer that found it by discovery searches at once
                (after a search that found only it, it tries it again in retry_s), one
                whose load balancer is on its own machine restarts it, any other retries
                every retry_s (a retried heartbeat goes at once)
                                                             search -> SEARCHING, restart ->
                                                             RESTARTING, retry -> BEATING or
                                                             REGISTER (retry_register)
    SEARCHING   listen for the network's load balancer       moved -> REGISTER, same -> LOST,
                                                             none -> ELECTING or LOST (none_here)
    ELECTING    the successor election, as at start-up: listen a random back-off,
                then start a load balancer here; seniority settles two started at once
                                                             found -> REGISTER, elected ->
                                                             REGISTER, failed -> LOST
    RESTARTING  start the load balancer on this machine again  ok -> REGISTER, failed -> LOST
    STOPPED     the peer left                                (stop, from any state)

An event the table does not list for the state raises ``IllegalTransition``.

With a standby list (``--lb A,B[,C]``) the peer is a member of each load balancer
listed, one machine each, and ``Standby`` orders them for everything else
(listing, picks): the one that answered last first, then the others as listed;
one that failed goes last for ``LB_DOWN_S`` and is then tried in its turn again.
"""

from dataclasses import dataclass

from p2p.core.errors import IllegalTransition

REGISTER, BEATING, REFUSED, LOST, SEARCHING, ELECTING, RESTARTING, STOPPED = (
    "register", "beating", "refused", "lost", "searching", "electing", "restarting", "stopped")

TRANSITIONS = {
    (REGISTER, "ok"): BEATING,
    (REGISTER, "failed"): LOST,
    (REGISTER, "refused"): REFUSED,
    (BEATING, "ok"): BEATING,
    (BEATING, "forgotten"): REGISTER,
    (BEATING, "failed"): LOST,
    (BEATING, "refused"): REFUSED,
    (REFUSED, "retry_register"): REGISTER,
    (LOST, "search"): SEARCHING,
    (LOST, "restart"): RESTARTING,
    (LOST, "retry"): BEATING,
    (LOST, "retry_register"): REGISTER,
    (SEARCHING, "moved"): REGISTER,
    (SEARCHING, "same"): LOST,
    (SEARCHING, "none"): ELECTING,
    (SEARCHING, "none_here"): LOST,
    (ELECTING, "found"): REGISTER,
    (ELECTING, "elected"): REGISTER,
    (ELECTING, "failed"): LOST,
    (RESTARTING, "ok"): REGISTER,
    (RESTARTING, "failed"): LOST,
}
NOW_STATES = (REGISTER, SEARCHING, ELECTING, RESTARTING)  # acted on at once
LB_DOWN_S = 10.0  # a load balancer of a standby list that failed is asked last this long


@dataclass(frozen=True)
class Policy:
    """What this peer may do when its load balancer is gone."""

    follows: bool = False  # found it by discovery: search the network, elect a successor
    may_start: bool = False  # may start a load balancer on this machine
    retry_s: float = 3.0  # a load balancer that does not answer is tried again this often
    refused_s: float = 30.0  # one that refused what this peer sent is asked again after this


class Membership:
    """The state, when it was entered, and when the next action is due (``due``)."""

    def __init__(self, clock, policy=Policy(), heartbeat_s=3.0):
        self.clock, self.policy = clock, policy
        self.heartbeat_s = heartbeat_s
        self.state = REGISTER
        self.since = clock.now()
        self.came_from = None

    def fire(self, event):
        """Move on ``event``; the new state. ``stop`` is allowed from anywhere."""
        if event == "stop":
            target = STOPPED
        else:
            target = TRANSITIONS.get((self.state, event))
            if target is None:
                raise IllegalTransition(f"{event!r} in state {self.state!r}")
        self.came_from, self.state, self.since = self.state, target, self.clock.now()
        return target

    def way_back(self, registered):
        """The event that leaves LOST (``lost_action``) or REFUSED (register again)."""
        return "retry_register" if self.state == REFUSED else self.lost_action(registered)

    def lost_action(self, registered):
        """The event that leaves LOST: what this peer does about a silent load balancer.

        A follower searches, except right after a search that found it again (or found
        none, and it may not start one): then it tries that one again. (A follower that
        may start one does so by election, never by restarting the one it followed.)"""
        if self.policy.follows and self.came_from != SEARCHING:
            return "search"
        if self.policy.may_start and not self.policy.follows:
            return "restart"
        return "retry" if registered else "retry_register"

    def after_search(self, found, current):
        """The event that ends SEARCHING, from what was heard (``found``: (host, port) or None)."""
        if found is None:
            return "none" if self.policy.may_start else "none_here"
        return "same" if found == current else "moved"

    def due(self):
        """When the current state's action is due (clock time); None once stopped."""
        if self.state == STOPPED:
            return None
        if self.state in NOW_STATES:
            return self.since
        if self.state == BEATING:
            return self.since + (0.0 if self.came_from == LOST else self.heartbeat_s)
        if self.state == REFUSED:
            return self.since + self.policy.refused_s
        fresh = self.came_from in (REGISTER, BEATING) and self.policy.follows
        return self.since + (0.0 if fresh else self.policy.retry_s)

    def wait_s(self):
        """Seconds from now until the next action (0 when due)."""
        due = self.due()
        return None if due is None else max(0.0, due - self.clock.now())


class Standby:
    """In which order to ask the load balancers of a standby list (indexes into it)."""

    def __init__(self, count, clock, down_s=LB_DOWN_S):
        if count < 1:
            raise ValueError("a standby list has at least one load balancer")
        self.count, self.clock, self.down_s = count, clock, down_s
        self.current = 0  # the one that answered last
        self._down_until = [None] * count

    def is_down(self, index):
        until = self._down_until[index]
        return until is not None and self.clock.now() < until

    def order(self):
        """The current one, the others as listed; those down last, the soonest back first."""
        ranked = sorted(range(self.count), key=lambda i: (i != self.current, i))
        up = [i for i in ranked if not self.is_down(i)]
        down = sorted((i for i in ranked if self.is_down(i)), key=lambda i: self._down_until[i])
        return up + down

    def answered(self, index):
        self._down_until[index] = None
        self.current = index

    def answered_keep_current(self, index):
        """It answered (a heartbeat), without becoming the one asked first."""
        self._down_until[index] = None

    def failed(self, index):
        self._down_until[index] = self.clock.now() + self.down_s
