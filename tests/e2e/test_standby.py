"""Standby load balancers on test hosts (``tests/hosts.py``): ``--lb A,B`` with one of them
killed, its machine's cable cut. Skipped, with the reason, without root or ``ip``.

Hosts 1 and 2 run ``load_balancer.py`` by hand (unannounced: a network without
multicast); host 3 shares a file at a limited rate; host 4 downloads it and lists,
naming both load balancers.
"""

import os
import time
import unittest

from tests import hosts as testhosts
from tests.support import (LB, PEER, clean_env, read_line, same_bytes,
                           wait_for, wait_partial, write_random)

MiB = 1 << 20
LB_PORT = 6969
LB_URL = "http://{}:6969/status"
RUN_TIMEOUT_S = 60.0
LIST_AFTER_KILL_S = 5.0  # a list right after the kill answers within this (the goal: no gap)


class StandbyListTests(testhosts.HostsTestCase):

    def setUp(self):
        super().setUp()
        self.hosts = testhosts.Hosts(4)
        self.addCleanup(self.hosts.close)
        self.lb_list = ",".join(f"{self.hosts.address(i)}:{LB_PORT}" for i in (1, 2))

    def run_on(self, i, args):
        return self.hosts.run(i, args, cwd=self.tmp, env=clean_env(self.tmp))

    def holders_seen(self, lb_host):
        status = self.hosts.fetch_json(4, LB_URL.format(self.hosts.address(lb_host)))
        return None if status is None else sum(bool(p.get("files")) for p in status["peers"])

    def list_on_4(self):
        proc = self.run_on(4, [PEER, "list", "--lb", self.lb_list])
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        return proc.returncode, out.decode(), err.decode()

    def test_a_standby_list_with_one_load_balancer_killed(self):
        for i in (1, 2):
            lb = self.run_on(i, [LB, "--port", str(LB_PORT), "--no-announce"])
            self.assertTrue(read_line(lb.stdout).startswith("listening on"))
        shared = self.folder("h3", "shared")
        write_random(os.path.join(shared, "f.bin"), 12 * MiB)
        holder = self.run_on(3, [PEER, "serve", "--lb", self.lb_list, "--name", "h3",
                                 "--upload-limit", "2M", "--shared", shared,
                                 "--downloads", self.folder("h3", "downloads")])
        read_line(holder.stdout)
        for i in (1, 2):
            wait_for(lambda i=i: self.holders_seen(i) == 1, what=f"the holder on LB {i}")
        downloads = self.folder("h4", "downloads")
        get = self.run_on(4, [PEER, "get", "f.bin", "--lb", self.lb_list,
                              "--downloads", downloads])
        self.addCleanup(lambda: get.poll() is None and get.kill())
        wait_partial(downloads, MiB)
        self.hosts.kill_all(1)  # the first of the list: the one that handed out the pick
        self.hosts.cut(1)
        started = time.monotonic()
        code, out, err = self.list_on_4()
        self.assertEqual(code, 0, err)
        self.assertIn("f.bin", out)
        self.assertLess(time.monotonic() - started, LIST_AFTER_KILL_S)
        out, err = get.communicate(timeout=RUN_TIMEOUT_S)
        self.assertEqual(get.returncode, 0, err)
        self.assertTrue(same_bytes(os.path.join(shared, "f.bin"),
                                   os.path.join(downloads, "f.bin")))
        again = self.run_on(4, [PEER, "get", "f.bin", "--lb", self.lb_list, "--downloads",
                                self.folder("h4", "again")])
        _, err = again.communicate(timeout=RUN_TIMEOUT_S)
        self.assertEqual(again.returncode, 0, err)


if __name__ == "__main__":
    unittest.main()
