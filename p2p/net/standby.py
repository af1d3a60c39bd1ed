"""Standby load balancers (``--lb A,B[,C]``): one client over several, as BitTorrent's BEP 12.

The load balancers of a standby list share one network (one swarm across
trackers): every peer registers and heartbeats with each of them (one
``Member`` per load balancer, ``node.py``), so each knows every holder and
counts its own picks plus the uploads each holder reports.

``StandbyClient`` stands in for an ``LBClient`` everywhere else (listing,
status, picks) and takes the answer of whichever load balancer answers first:
it asks them in the order ``core.membership.Standby`` gives (the one that
answered last first), each given a head start of ``HEAD_START_S`` before the
next is asked too (as Happy Eyeballs, RFC 8305, does for addresses), so a
vanished machine costs about that, not a timeout. One that does not answer, or
cannot prove it is a member, is remembered as down for ``LB_DOWN_S`` (asked
last) and then tried again in its turn; a refusal (nobody shares it, all busy)
is an answer. A pick answered late, after another won, is cancelled there. A
lease is renewed and ended at the load balancer that handed it out
(``Lease.via``); a pick names this peer by the id that load balancer gave it.
"""

import logging
import queue
import threading

from p2p.core.clock import Clock
from p2p.core.membership import Standby
from p2p.net.lb_client import LBClient, LBClientError, NotAMember, Unreachable

log = logging.getLogger("p2p.peer")

STANDBY_TIMEOUT_S = 3.0  # each load balancer of a standby list answers within this, or is down
STANDBY_CONNECT_TIMEOUT_S = 1.0  # ...and takes a connection within this (a LAN takes < 1 ms)
HEAD_START_S = 0.25  # the load balancer asked first has this long before the next is asked too


class StandbyClient:
    """Several load balancers of one network, asked in turn; thread-safe."""

    def __init__(self, clients, clock=None):
        self.clients = list(clients)
        self.standby = Standby(len(self.clients), clock or Clock())
        self._lock = threading.Lock()

    @classmethod
    def of(cls, addresses, members, timeout=STANDBY_TIMEOUT_S):
        """A client of each (host, port) of ``addresses``."""
        return cls([LBClient(host, port, timeout=timeout, members=members,
                             connect_timeout=STANDBY_CONNECT_TIMEOUT_S)
                    for host, port in addresses])

    # -- what the rest of the peer reads ----------------------------------

    @property
    def current(self):
        return self.clients[self.standby.current]

    @property
    def address(self):
        """The load balancer asked first (the one that answered last)."""
        return self.current.address

    @property
    def host(self):
        return self.current.host

    @property
    def port(self):
        return self.current.port

    @property
    def peer_id(self):
        """This peer's id at the load balancer asked first (None when not registered)."""
        return self.current.peer_id

    def note(self, client, answered):
        """What the membership of ``client`` saw: it answered, or it did not."""
        index = self.clients.index(client)
        with self._lock:
            (self.standby.answered_keep_current if answered else self.standby.failed)(index)

    def describe(self):
        """Each load balancer and whether it answered the last time it was asked."""
        return ", ".join(f"{c.address} ({'down' if self.standby.is_down(i) else 'up'})"
                         for i, c in enumerate(self.clients))

    # -- asking -------------------------------------------------------------

    def _ask(self, call, undo=None):
        """``call(client)`` at the load balancer that answers first: (client, answer); its
        refusal is raised. ``undo(client, answer)`` takes back a late success."""
        with self._lock:
            order = self.standby.order()
        results = queue.Queue()
        asked = answered = 0
        failures = []
        while answered < len(order):
            if asked == answered or (asked < len(order) and results.empty()
                                     and not self._wait(results, HEAD_START_S)):
                self._start(call, order[asked], results)
                asked += 1
                continue
            index, outcome, value = results.get()
            answered += 1
            with self._lock:
                (self.standby.failed if outcome == "down" else self.standby.answered)(index)
            if outcome == "down":
                failures.append(value.message)
                continue
            if asked > answered and undo is not None:
                threading.Thread(target=self._undo_late, args=(results, asked - answered, undo),
                                 daemon=True, name="standby-undo").start()
            if outcome == "refused":
                raise value
            return self.clients[index], value
        raise Unreachable("No load balancer of the list answers: " + " ".join(failures))

    @staticmethod
    def _wait(results, timeout):
        """True once an answer is waiting in ``results`` (within ``timeout``)."""
        try:
            item = results.get(timeout=timeout)
        except queue.Empty:
            return False
        results.put(item)
        return True

    def _start(self, call, index, results):
        def run():
            try:
                results.put((index, "ok", call(self.clients[index])))
            except (Unreachable, NotAMember) as e:
                results.put((index, "down", e))
            except LBClientError as e:  # an answer: nobody shares it, all busy...
                results.put((index, "refused", e))
        threading.Thread(target=run, daemon=True, name="standby-ask").start()

    def _undo_late(self, results, count, undo):
        for _ in range(count):
            index, outcome, value = results.get()
            if outcome == "ok":
                try:
                    undo(self.clients[index], value)
                except LBClientError as e:
                    log.info("could not cancel a late pick at %s: %s",
                             self.clients[index].address, e)

    def files(self, query=""):
        return self._ask(lambda client: client.files(query))[1]

    def status(self):
        return self._ask(lambda client: client.status())[1]

    def pick(self, name, sha256=None, peer=None, exclude=(), requester=None, count=None):
        """As ``LBClient.pick``, at the first that answers; this peer named by its id there."""
        def pick_at(client):
            return client.pick(name, sha256=sha256, peer=peer, exclude=exclude, count=count,
                               requester=client.peer_id if requester is not None else None)
        client, pick = self._ask(pick_at, undo=self._cancel)
        for lease in pick.leases:
            lease.via = client
        return pick

    @staticmethod
    def _cancel(client, pick):
        for lease in pick.leases:
            client.end(lease, "cancelled")

    def renew(self, lease):
        (lease.via or self.current).renew(lease)

    def end(self, lease, outcome="done"):
        (lease.via or self.current).end(lease, outcome)

    def interrupt(self, timeout):
        for client in self.clients:
            client.interrupt(timeout)

    def close(self):
        for client in self.clients:
            client.close()
