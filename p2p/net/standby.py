"""Standby load balancers (``--lb A,B[,C]``): one client over several, as BitTorrent's BEP 12.

The load balancers of a standby list share one network (one swarm across
trackers): every peer registers and heartbeats with each of them (one
``Member`` per load balancer, ``node.py``), so each knows every holder and
counts its own picks plus the uploads each holder reports.

``StandbyClient`` stands in for an ``LBClient`` everywhere else (listing,
status, picks): it asks the load balancers in the order ``core.membership.
Standby`` gives (the one that answered last first); one that does not answer,
or cannot prove it is a member, is skipped at once, remembered as down for
``LB_DOWN_S`` and then tried again in its turn. Each client has a short timeout
(``STANDBY_TIMEOUT_S``), so a vanished machine costs at most that once. A lease
is renewed and ended at the load balancer that handed it out (``Lease.via``);
a pick names this peer by the id that load balancer gave it.
"""

import threading

from p2p.core.clock import Clock
from p2p.core.membership import Standby
from p2p.net.lb_client import LBClient, NotAMember, Unreachable

STANDBY_TIMEOUT_S = 3.0  # each load balancer of a standby list answers within this, or is skipped


class StandbyClient:
    """Several load balancers of one network, asked in turn; thread-safe."""

    def __init__(self, clients, clock=None):
        self.clients = list(clients)
        self.standby = Standby(len(self.clients), clock or Clock())
        self._lock = threading.Lock()

    @classmethod
    def of(cls, addresses, members, timeout=STANDBY_TIMEOUT_S):
        """A client of each (host, port) of ``addresses``."""
        return cls([LBClient(host, port, timeout=timeout, members=members)
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

    def describe(self):
        """Each load balancer and whether it answered the last time it was asked."""
        return ", ".join(f"{c.address} ({'down' if self.standby.is_down(i) else 'up'})"
                         for i, c in enumerate(self.clients))

    # -- asking -------------------------------------------------------------

    def _ask(self, call):
        """``call(client)`` at the first load balancer that answers: (client, answer)."""
        with self._lock:
            order = self.standby.order()
        failures = []
        for index in order:
            client = self.clients[index]
            try:
                answer = call(client)
            except (Unreachable, NotAMember) as e:
                with self._lock:
                    self.standby.failed(index)
                failures.append(e.message)
                continue
            with self._lock:
                self.standby.answered(index)
            return client, answer
        raise Unreachable("No load balancer of the list answers: " + " ".join(failures))

    def files(self, query=""):
        return self._ask(lambda client: client.files(query))[1]

    def status(self):
        return self._ask(lambda client: client.status())[1]

    def pick(self, name, sha256=None, peer=None, exclude=(), requester=None, count=None):
        """As ``LBClient.pick``, at the first that answers; this peer named by its id there."""
        def pick_at(client):
            return client.pick(name, sha256=sha256, peer=peer, exclude=exclude, count=count,
                               requester=client.peer_id if requester is not None else None)
        client, pick = self._ask(pick_at)
        for lease in pick.leases:
            lease.via = client
        return pick

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
