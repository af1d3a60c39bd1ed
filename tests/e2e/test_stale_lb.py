"""A stale load balancer that comes back, on test hosts (``tests/hosts.py``): it must stand
down or be followed, never split the network. Skipped, with the reason, without root or
``ip``.

Four hosts, no ``--lb``: host 1's peer starts the network's load balancer, hosts 2 and 3
share a file. Host 1's cable is cut (its processes live on), a successor is elected on
host 2 or 3; then the cable is mended. The old load balancer is the senior one: the
successor stands down and every peer follows the old one; one load balancer remains.
"""

import os
import unittest

from tests import hosts as testhosts
from tests.support import PEER, read_line, wait_for, write_random

MiB = 1 << 20
LB_URL = "http://{}:6969/status"
RUN_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 30.0


class StaleLoadBalancerTests(testhosts.HostsTestCase):

    def serve_on(self, hosts, i, size=0):
        shared = self.folder(f"h{i}", "shared")
        if size:
            write_random(os.path.join(shared, "f.bin"), size)
        proc = self.run_on(hosts, i, [PEER, "serve", "--name", f"h{i}", "--shared", shared,
                                      "--downloads", self.folder(f"h{i}", "downloads")])
        read_line(proc.stdout)

    def holders_seen(self, hosts, lb_host, from_host=4):
        status = hosts.fetch_json(from_host, LB_URL.format(hosts.address(lb_host)))
        return None if status is None else sum(bool(p.get("files")) for p in status["peers"])

    def test_a_stale_load_balancer_that_comes_back_is_followed_and_the_successor_stands_down(self):
        hosts = testhosts.Hosts(4)
        self.addCleanup(hosts.close)
        self.serve_on(hosts, 1)
        self.serve_on(hosts, 2, size=MiB)
        self.serve_on(hosts, 3, size=MiB)
        wait_for(lambda: self.holders_seen(hosts, 1) == 2, what="both holders registered")
        hosts.cut(1)  # its load balancer lives on, unheard
        wait_for(lambda: [self.holders_seen(hosts, i) for i in (2, 3)].count(2) == 1,
                 timeout=SETTLE_TIMEOUT_S, what="one successor, with both holders")
        hosts.mend(1)

        def one_network_on_the_old_one():
            return [self.holders_seen(hosts, i) for i in (1, 2, 3)] == [2, None, None]
        wait_for(one_network_on_the_old_one, timeout=SETTLE_TIMEOUT_S,
                 what="the successor to stand down and everyone to follow the senior one")
        listing = self.run_on(hosts, 4, [PEER, "list"])
        out, err = listing.communicate(timeout=RUN_TIMEOUT_S)
        self.assertIn(b"f.bin", out, err)


if __name__ == "__main__":
    unittest.main()
