"""The load balancer's page and the peer's page (pure rendering): figures that agree.

``p2p/net/lb_page.py`` renders ``Registry.status()``; ``sharing.render_index`` the peer's
``/``; both write sizes with ``core/units.human_size``, as the menu does.
"""

import re
import unittest

from p2p.core.units import human_size
from p2p.core.wire import FileRecord
from p2p.net import lb_page
from p2p.net.sharing import render_index

SHA = "ab" * 32
MIB_200 = 209715200


def peer(**fields):
    row = {"id": "p1", "name": "alice", "host": "10.0.0.1", "port": 7000, "files": ["a.bin"],
           "active": 0, "uploads": 0, "slots": 8, "served": 0, "failed": 0, "partial": [],
           "last_seen_s": 1.0}
    row.update(fields)
    return row


def page(*peers, files=()):
    return lb_page.render_status_page({"policy": "least-connections", "peers": list(peers)},
                                      list(files))


def bar_width(html):
    return int(re.search(r"width:(\d+)%", html).group(1))


class TestHumanSize(unittest.TestCase):
    def test_sizes(self):
        cases = {0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
                 MIB_200: "200.0 MiB", 5 * 2**30: "5.0 GiB", 2**50: "1024.0 TiB"}
        for size, text in cases.items():
            with self.subTest(size=size):
                self.assertEqual(human_size(size), text)


class TestLoadBalancerPage(unittest.TestCase):
    def test_the_load_bar_is_against_the_slots_and_says_what_fills_it(self):
        html = page(peer(active=1, uploads=0, slots=8))
        self.assertEqual(bar_width(html), 12)  # 1 of 8, not full
        self.assertIn("1 of 8 slots", html)
        self.assertIn("uploading 0, 1 handed out since its last report", html)
        html = page(peer(active=3, uploads=3, slots=8))
        self.assertIn("uploading 3<", html)
        self.assertNotIn("handed out", html)

    def test_a_peer_that_did_not_say_its_slots_is_drawn_against_the_busiest(self):
        html = page(peer(active=2, uploads=2, slots=None), peer(id="p2", port=7001, active=4,
                                                                uploads=4, slots=None))
        self.assertEqual(re.findall(r"width:(\d+)%", html), ["50", "100"])
        self.assertIn("4 transfers", html)

    def test_sizes_are_written_as_the_menu_writes_them(self):
        html = page(files=[{"name": "big.bin", "size": MIB_200, "sha256": SHA, "holders": 1,
                            "partial": 0}])
        self.assertIn(">200.0 MiB<", html)
        self.assertIn(f"title=\"{MIB_200} bytes\"", html)
        self.assertNotIn(f">{MIB_200}<", html)
        self.assertIn("<th>Size</th>", html)

    def test_a_get_shows_as_a_downloader_with_what_it_downloads_and_how_far(self):
        getter = peer(files=[], partial=[{"name": "big.bin", "sha256": SHA, "size": MIB_200,
                                          "done": MIB_200 * 37 // 100}])
        html = page(getter)
        self.assertIn("<b>downloader</b>", html)
        self.assertIn("downloading big.bin: 37 % of <span title=\"209715200 bytes\">"
                      "200.0 MiB</span>", html)
        self.assertNotIn("0 files", html)
        self.assertIn("shares nothing yet", page(peer(files=[])))

    def test_a_sharer_lists_its_files(self):
        html = page(peer(files=[f"f{i}" for i in range(10)]))
        self.assertIn("10 files", html)
        self.assertIn("… (2 more)", html)


class TestPeerPage(unittest.TestCase):
    def test_sizes_are_written_as_the_menu_writes_them(self):
        html = render_index([FileRecord("big.bin", MIB_200, SHA)], "alice", "10.0.0.1:7000", "")
        self.assertIn(">200.0 MiB<", html)
        self.assertNotIn(f">{MIB_200}<", html)
        self.assertIn("<th>Size</th>", html)


if __name__ == "__main__":
    unittest.main()
