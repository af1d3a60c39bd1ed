"""On several test hosts (``tests/hosts.py``): discovery, one load balancer, cut links.

Each test makes its own hosts (network namespaces on a bridge, 198.18.0.<i>) and runs
the real ``load_balancer.py`` and ``peer.py`` in them, without ``--lb``: they find each
other by multicast on the hosts' own link. Skipped, with the reason, without root or
``ip``. Load balancers beat every second, so a silent host expires within seconds.
"""

import os
import shutil
import unittest
from unittest import mock

from tests import hosts as testhosts
from tests.support import (LB, PEER, read_line, same_bytes,
                           wait_for, wait_partial, write_random)

MiB = 1 << 20
LB_URL = "http://{}:6969/status"
RUN_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 60.0  # three load balancers started at once settle on one within this


class HostTests(testhosts.HostsTestCase):

    def start_lb_on(self, hosts, i):
        proc = self.run_on(hosts, i, [LB, "--heartbeat", "1"])
        self.assertEqual(read_line(proc.stdout), "listening on 0.0.0.0:6969\n")
        return proc

    def serve_on(self, hosts, i, *extra):
        """``peer.py serve`` without --lb on host ``i``, with folders tmp/h<i>/."""
        return self.run_on(hosts, i, [PEER, "serve", "--name", f"h{i}",
                                      "--shared", self.folder(f"h{i}", "shared"),
                                      "--downloads", self.folder(f"h{i}", "downloads"), *extra])

    def shared_file(self, i, name, size):
        path = os.path.join(self.folder(f"h{i}", "shared"), name)
        write_random(path, size)
        return path

    def peers_seen(self, hosts, lb_host, from_host=None, lb_address=None):
        """The peer addresses the load balancer on ``lb_host`` lists (None: no answer)."""
        status = hosts.fetch_json(from_host or lb_host,
                                  LB_URL.format(lb_address or hosts.address(lb_host)))
        return None if status is None else {p["host"] for p in status["peers"]}

    def test_four_hosts_find_the_load_balancer_and_download_directly(self):
        hosts = self.make_hosts(4)
        self.start_lb_on(hosts, 1)
        source = self.shared_file(2, "song.bin", 4 * MiB)
        serving = [self.serve_on(hosts, i) for i in (2, 3)]
        for i, proc in zip((2, 3), serving):
            self.assertTrue(read_line(proc.stdout).startswith("listening on 0.0.0.0:"))
            line = read_line(proc.stdout)
            self.assertIn(f"as h{i} {hosts.address(i)}:", line)
            self.assertIn(f"load balancer {hosts.address(1)}:6969", line)
        wait_for(lambda: self.peers_seen(hosts, 1) == {hosts.address(2), hosts.address(3)},
                 what="both peers registered at their own addresses")
        downloads = self.folder("h4", "downloads")
        get = self.run_on(hosts, 4, [PEER, "get", "song.bin", "--downloads", downloads])
        out, err = get.communicate(timeout=RUN_TIMEOUT_S)
        self.assertEqual(get.returncode, 0, err)
        self.assertIn(f"from h2 {hosts.address(2)}:", out.decode())
        self.assertIn(f"at {hosts.address(1)}:6969 on the local network", err.decode())
        self.assertTrue(same_bytes(source, os.path.join(downloads, "song.bin")))

    def test_with_a_secret_members_find_each_other_and_a_stranger_finds_nothing(self):
        hosts = self.make_hosts(3)
        secret = os.path.join(self.tmp, "network.secret")
        with open(secret, "w") as f:
            f.write("a secret of the tests' own network")
        lb = self.run_on(hosts, 1, [LB, "--heartbeat", "1", "--secret-file", secret])
        self.assertEqual(read_line(lb.stdout), "listening on 0.0.0.0:6969\n")
        member = self.run_on(hosts, 2, [PEER, "list", "--secret-file", secret])
        out, err = member.communicate(timeout=RUN_TIMEOUT_S)
        self.assertEqual(member.returncode, 0, err)
        self.assertIn(f"at {hosts.address(1)}:6969 on the local network", err.decode())
        with open(secret + ".other", "w") as f:
            f.write("another network's secret")
        stranger = self.run_on(hosts, 3, [PEER, "list", "--secret-file", secret + ".other"])
        out, err = stranger.communicate(timeout=RUN_TIMEOUT_S)
        self.assertIn("No load balancer of network", err.decode())

    def test_a_host_on_two_lans_announces_and_is_found_on_each(self):
        hosts = testhosts.Hosts(3, lans=[[1, 2], [1, 3]])
        self.addCleanup(hosts.close)
        self.start_lb_on(hosts, 1)
        for i, lan in ((2, 0), (3, 1)):
            proc = self.serve_on(hosts, i)
            read_line(proc.stdout)
            self.assertIn(f"load balancer {hosts.address(1, lan)}:6969", read_line(proc.stdout))
        wait_for(lambda: self.peers_seen(hosts, 1) == {hosts.address(2), hosts.address(3, 1)},
                 what="a peer of each LAN registered")
        status = self.run_on(hosts, 3, [PEER, "status"])
        out, err = status.communicate(timeout=RUN_TIMEOUT_S)
        self.assertEqual(status.returncode, 0, err)
        self.assertIn(f"Load balancer {hosts.address(1, 1)}:6969", out.decode())

    def test_three_hosts_started_together_end_up_on_one_load_balancer(self):
        hosts = self.make_hosts(3)
        for i in (1, 2, 3):
            self.serve_on(hosts, i)
        everyone = {hosts.address(i) for i in (1, 2, 3)}

        def one_load_balancer_with_everyone():
            answers = {i: self.peers_seen(hosts, i) for i in (1, 2, 3)}
            running = [seen for seen in answers.values() if seen is not None]
            return running == [everyone]

        wait_for(one_load_balancer_with_everyone, timeout=SETTLE_TIMEOUT_S,
                 what="one load balancer with all three peers")

    def test_a_holder_cut_mid_download_the_other_finishes_and_it_comes_back(self):
        """Both holders send pieces; one host's link is cut mid-file."""
        hosts = self.make_hosts(4)
        self.start_lb_on(hosts, 1)
        source = self.shared_file(2, "movie.mkv", 8 * MiB)
        shutil.copyfile(source, os.path.join(self.folder("h3", "shared"), "movie.mkv"))
        for i in (2, 3):
            self.serve_on(hosts, i, "--upload-limit", "2M")
        holders = {hosts.address(2), hosts.address(3)}
        wait_for(lambda: self.peers_seen(hosts, 1) == holders, what="both holders registered")
        downloads = self.folder("h4", "downloads")
        get = self.run_on(hosts, 4, [PEER, "get", "movie.mkv", "--downloads", downloads])
        self.addCleanup(lambda: get.poll() is None and get.kill())
        wait_partial(downloads, MiB)
        cut, other = 2, hosts.address(3)  # both send pieces: cut one of them
        hosts.cut(cut)
        getter = hosts.address(4)  # get is a peer too while it runs, serving its pieces
        wait_for(lambda: self.peers_seen(hosts, 1) == {other, getter}, timeout=15,
                 what="the load balancer to expire the silent host")
        out, err = get.communicate(timeout=RUN_TIMEOUT_S)
        self.assertEqual(get.returncode, 0, err)
        self.assertIn(f"h3 {other}:", out.decode())
        self.assertTrue(same_bytes(source, os.path.join(downloads, "movie.mkv")))
        hosts.mend(cut)
        wait_for(lambda: self.peers_seen(hosts, 1) == holders, timeout=30,
                 what="the mended host to register again")

    def test_the_load_balancer_host_cut_transfers_finish_and_peers_register_again(self):
        hosts = self.make_hosts(3)
        self.start_lb_on(hosts, 1)
        source = self.shared_file(2, "iso.img", 12 * MiB)
        self.serve_on(hosts, 2, "--upload-limit", "2M")
        holder = {hosts.address(2)}
        wait_for(lambda: self.peers_seen(hosts, 1) == holder, what="the holder registered")
        downloads = self.folder("h3", "downloads")
        get = self.run_on(hosts, 3, [PEER, "get", "iso.img", "--downloads", downloads])
        self.addCleanup(lambda: get.poll() is None and get.kill())
        partial = wait_partial(downloads, MiB)
        hosts.cut(1)
        inside = dict(from_host=1, lb_address="127.0.0.1")  # ask from the cut host itself
        wait_for(lambda: self.peers_seen(hosts, 1, **inside) == set(), timeout=15,
                 what="the cut load balancer to expire the holder")
        reached = os.path.getsize(partial)
        wait_for(lambda: os.path.exists(partial) and os.path.getsize(partial) > reached + MiB,
                 what="the transfer to go on while the load balancer is cut")
        hosts.mend(1)
        out, err = get.communicate(timeout=RUN_TIMEOUT_S)
        self.assertEqual(get.returncode, 0, err)
        self.assertTrue(same_bytes(source, os.path.join(downloads, "iso.img")))
        wait_for(lambda: self.peers_seen(hosts, 1) == holder, timeout=30,
                 what="the holder to register again")


class HelperTests(unittest.TestCase):
    """The helper itself, without making hosts."""

    def test_without_root_the_reason_is_one_line(self):
        with mock.patch("os.geteuid", return_value=1000):
            reason = testhosts.unavailable()
        self.assertIn("need root", reason)
        self.assertNotIn("\n", reason)

    def test_link_names_fit_the_kernel_limit_and_carry_the_pid(self):
        for pid in (1, 4_194_304):  # Linux's largest pid
            tag = f"{testhosts.PREFIX}{testhosts.base36(pid, testhosts.PID_DIGITS)}z"
            name = f"{tag}v9{testhosts.MAX_HOSTS}"
            self.assertLessEqual(len(name), 15)  # IFNAMSIZ - 1
            self.assertEqual(int(testhosts.LINK_RE.match(name).group(1), 36), pid)


if __name__ == "__main__":
    unittest.main()
