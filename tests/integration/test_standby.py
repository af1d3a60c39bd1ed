"""Standby load balancers (``--lb A,B``), in this process: two load balancers of one
network, peers that are members of both, and one load balancer killed."""

import hashlib
import io
import os
import shutil
import tempfile
import threading
import time
import unittest

from p2p.cli.menu import Menu
from p2p.cli.view import PeerView
from p2p.core import registry as lb_core
from p2p.core.members import OPEN
from p2p.core.wire import FileRecord
from p2p.net.lb_client import Lease, Pick, Unreachable
from p2p.net import lb_server
from p2p.net.node import Peer
from p2p.net.standby import StandbyClient
from tests.support import quiet_logs, wait_for, write_random

DEADLINE_S = 30.0
SKIPPED_FAST_S = 1.0  # a killed load balancer costs at most this, once
SIZE = 8 << 20
UPLOAD_LIMIT = 4 << 20  # the holder sends at most this many bytes/s: the download takes ~2 s


class StandbyListTests(unittest.TestCase):

    def setUp(self):
        quiet_logs(self)
        self.tmp = tempfile.mkdtemp(prefix="p2p-standby-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.lbs = [self.start_lb(), self.start_lb()]
        self.content_path = os.path.join(self.tmp, "holder", "shared", "big.bin")
        write_random(self.content_path, SIZE)
        self.holder = self.start_peer("holder", upload_limit=UPLOAD_LIMIT)
        self.downloader = self.start_peer("downloader")
        for lb in self.lbs:
            wait_for(lambda lb=lb: [f["holders"] for f in lb.registry.find_files("big")[0]]
                     == [1] and len(lb.registry.status()["peers"]) == 2,
                     what="both peers registered with each load balancer")

    def start_lb(self, port=0):
        server = lb_server.LoadBalancerServer(("127.0.0.1", port), lb_core.Registry())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(self.kill, server)
        return server

    @staticmethod
    def kill(server):
        """Stop a load balancer and close every connection it has, as a killed one would."""
        if server.socket.fileno() != -1:
            server.shutdown()
            server.server_close()

    def standby_client(self):
        return StandbyClient.of([("127.0.0.1", lb.port) for lb in self.lbs], OPEN)

    def start_peer(self, name, **options):
        shared = os.path.join(self.tmp, name, "shared")
        os.makedirs(shared, exist_ok=True)
        peer = Peer(self.standby_client(), shared, os.path.join(self.tmp, name, "downloads"),
                    host="127.0.0.1", name=name, **options).start()
        self.addCleanup(peer.stop)
        return peer

    def test_with_one_killed_list_picks_and_downloads_go_on(self):
        self.assertEqual(self.downloader.describe_lb(),
                         ", ".join(f"127.0.0.1:{lb.port} (up)" for lb in self.lbs))
        self.kill(self.lbs[0])
        lb = self.downloader.lb
        started = time.monotonic()
        self.assertEqual([f["name"] for f in lb.files()["files"]], ["big.bin"])
        self.assertLess(time.monotonic() - started, SKIPPED_FAST_S)
        self.assertEqual(lb.address, f"127.0.0.1:{self.lbs[1].port}")
        started = time.monotonic()
        self.assertEqual(lb.files("big")["files"][0]["holders"], 1)  # the dead one not asked
        self.assertLess(time.monotonic() - started, SKIPPED_FAST_S / 4)
        result = self.downloader.downloader().get("big.bin")
        self.assert_same(result.path)
        wait_for(lambda: "down" in self.downloader.describe_lb(), timeout=DEADLINE_S,
                 what="the menu's line to say which load balancer is down")
        self.assertEqual(self.downloader.describe_lb(),
                         f"127.0.0.1:{self.lbs[0].port} (down), "
                         f"127.0.0.1:{self.lbs[1].port} (up)")
        self.assertIsNone(self.downloader.lb_problem)

    def test_the_menu_says_which_load_balancers_are_up(self):
        self.kill(self.lbs[0])
        wait_for(lambda: "down" in self.downloader.describe_lb(), timeout=DEADLINE_S,
                 what="the peer to notice the dead load balancer")
        out = io.StringIO()
        menu = Menu(PeerView(self.downloader), out=out, read=lambda prompt: "0")
        menu.banner()
        menu.show_status()
        self.assertIn(f"load balancers 127.0.0.1:{self.lbs[0].port} (down), "
                      f"127.0.0.1:{self.lbs[1].port} (up)", out.getvalue())
        self.assertIn(f"Load balancer 127.0.0.1:{self.lbs[1].port} · ", out.getvalue())
        self.assertIn("Load balancers of the list: ", out.getvalue())

    def test_a_load_balancer_that_comes_back_gets_every_peer_again(self):
        port = self.lbs[0].port
        self.kill(self.lbs[0])
        wait_for(lambda: "down" in self.holder.describe_lb(), timeout=DEADLINE_S,
                 what="the holder to notice the dead load balancer")
        self.lbs[0] = back = self.start_lb(port)  # restarted empty: state is soft
        wait_for(lambda: len(back.registry.status()["peers"]) == 2
                 and [f["holders"] for f in back.registry.find_files("big")[0]] == [1],
                 timeout=DEADLINE_S, what="both peers registered again with the one back")
        wait_for(lambda: "down" not in self.holder.describe_lb(), timeout=DEADLINE_S,
                 what="the menu's line to say it is up again")

    def test_a_download_in_flight_rides_through_the_kill_of_its_load_balancer(self):
        progress = []
        done = {}

        def run():
            done["result"] = self.downloader.downloader(on_progress=progress.append).get(
                "big.bin")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        wait_for(lambda: any(p.done for p in progress), what="the download to start")
        self.kill(self.lbs[0])  # the one that handed out the pick: asked first
        thread.join(DEADLINE_S)
        self.assertFalse(thread.is_alive(), "the download did not end")
        self.assert_same(done["result"].path)

    def assert_same(self, path):
        with open(path, "rb") as got, open(self.content_path, "rb") as want:
            self.assertEqual(hashlib.sha256(got.read()).digest(),
                             hashlib.sha256(want.read()).digest())


class SlowClient:
    """Stands in for an LBClient: answers after ``delay_s`` (or is down: Unreachable)."""

    def __init__(self, name, delay_s=0.0, down=False):
        self.address, self.delay_s, self.down = name, delay_s, down
        self.peer_id = None
        self.ended = []

    def _answer(self, value):
        time.sleep(self.delay_s)  # stands for a slow network, not a synchronisation
        if self.down:
            raise Unreachable(f"No load balancer answers at {self.address}.")
        return value

    def files(self, query=""):
        return self._answer({"files": [], "from": self.address})

    def pick(self, name, **options):
        return self._answer(Pick(FileRecord(name, 1, "0" * 64), [Lease(
            "t-" + self.address, "s", "p", "127.0.0.1", 1)], 1.0))

    def end(self, lease, outcome="done"):
        self.ended.append((lease.transfer_id, outcome))


class WhicheverAnswersFirstTests(unittest.TestCase):

    def test_a_silent_first_costs_a_head_start_not_a_timeout(self):
        silent, quick = SlowClient("a", delay_s=2.0, down=True), SlowClient("b")
        client = StandbyClient([silent, quick])
        started = time.monotonic()
        self.assertEqual(client.files()["from"], "b")
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(client.address, "b")

    def test_a_pick_answered_late_is_cancelled_where_it_was_made(self):
        slow, quick = SlowClient("a", delay_s=0.6), SlowClient("b")
        pick = StandbyClient([slow, quick]).pick("f.bin")
        self.assertEqual(pick.leases[0].via, quick)
        wait_for(lambda: slow.ended == [("t-a", "cancelled")], what="the late pick cancelled")
        self.assertEqual(quick.ended, [])

    def test_every_one_down_says_so_for_each(self):
        client = StandbyClient([SlowClient("a", down=True), SlowClient("b", down=True)])
        with self.assertRaisesRegex(Unreachable, "list answers: .* at a\\. .* at b\\."):
            client.files()
        self.assertEqual(client.describe(), "a (down), b (down)")


if __name__ == "__main__":
    unittest.main()
