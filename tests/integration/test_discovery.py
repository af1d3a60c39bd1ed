"""Discovery: the datagram format, hostile datagrams, who wins, and a beacon on loopback.

The pure functions are tested without sockets; the last tests send multicast on the
loopback interface only, each under a network name of its own, so tests running at the
same time never hear each other.
"""

import random
import secrets
import socket
import threading
import unittest
from unittest import mock

from p2p.cli import autostart, peer
from p2p.core import registry as lb_core
from p2p.net import lb_server
from p2p.net.node import PeerError
from p2p.core import discovery
from p2p.core.discovery import (Announce, BadDatagram, HostileLog, Query, check_signature, choose,
                                format_datagram, parse_datagram, senior)
from p2p.net import beacon
from p2p.net.beacon import Beacon, discover
from p2p.core.members import MAX_CLOCK_SKEW_S, OPEN, NetworkSecret
from tests.support import quiet_logs, serve_in_thread, wait_for

WAIT_S = 5.0
# a members-only beacon answers no stranger's query, so a stranger hears only its periodic
# announcements: listen long enough for two of them
CLOSED_WAIT_S = 2 * beacon.ANNOUNCE_INTERVAL_S + 0.5
A = Announce("home", 6969, 1_700_000_000_000, "0123456789abcdef")


class DatagramTests(unittest.TestCase):

    def test_round_trip(self):
        for message in (A, Query("home"), Announce("a.b_c-D", 1, 0, "f" * 16)):
            self.assertEqual(parse_datagram(format_datagram(message)), message)

    def test_documented_layout(self):
        self.assertEqual(format_datagram(A), b"p2p-lb 1 announce home 6969 1700000000000 "
                                             b"0123456789abcdef")
        self.assertEqual(format_datagram(Query("home")), b"p2p-lb 1 query home")

    def test_trailing_key_value_fields_are_accepted_and_ignored(self):
        self.assertEqual(parse_datagram(format_datagram(A) + b" sig=abcdef01 x-y="), A)
        self.assertEqual(parse_datagram(b"p2p-lb 1 query home sig=00"), Query("home"))

    def test_hostile_datagrams_are_refused_with_a_reason(self):
        good = format_datagram(A)
        hostile = {
            "too long": good + b" " + b"k=" + b"v" * discovery.MAX_DATAGRAM_BYTES,
            "garbage": bytes(range(256)),
            "empty": b"",
            "not ascii": "p2p-lb 1 query hôme".encode(),
            "other magic": b"bt-lsd 1 query home",
            "wrong version": b"p2p-lb 2 announce home 6969 1 0123456789abcdef",
            "no version": b"p2p-lb announce home 6969",
            "unknown kind": b"p2p-lb 1 shout home",
            "bad network": b"p2p-lb 1 query ho/me",
            "long network": b"p2p-lb 1 query " + b"n" * 33,
            "port 0": b"p2p-lb 1 announce home 0 1 0123456789abcdef",
            "port too big": b"p2p-lb 1 announce home 65536 1 0123456789abcdef",
            "port not digits": b"p2p-lb 1 announce home 69x9 1 0123456789abcdef",
            "negative port": b"p2p-lb 1 announce home -1 1 0123456789abcdef",
            "huge port": b"p2p-lb 1 announce home " + b"9" * 40 + b" 1 0123456789abcdef",
            "missing fields": b"p2p-lb 1 announce home 6969",
            "bad since": b"p2p-lb 1 announce home 6969 1e9 0123456789abcdef",
            "short id": b"p2p-lb 1 announce home 6969 1 0123",
            "upper-case id": b"p2p-lb 1 announce home 6969 1 0123456789ABCDEF",
            "double space": b"p2p-lb 1  query home",
            "newline": b"p2p-lb 1 query home\n",
            "bad extra": good + b" not-a-pair",
            "too many extras": good + b" a=1 b=2 c=3 d=4 e=5",
        }
        for what, data in hostile.items():
            with self.subTest(what):
                with self.assertRaises(BadDatagram):
                    parse_datagram(data)

    def test_signed_datagrams_hold_only_for_their_secret_source_and_time(self):
        secret = NetworkSecret("the network's secret, 16+ chars")
        now = 1_800_000_000
        for message in (A, Query("home")):
            data = format_datagram(message, secret, "198.18.0.1", now=now)
            self.assertEqual(parse_datagram(data), message)
            check_signature(data, "198.18.0.1", secret, now=now + MAX_CLOCK_SKEW_S)
            check_signature(data, "198.18.0.1", None)  # an open network takes any
            refused = {
                "another source": (data, "198.18.0.66", secret, now),
                "another secret": (data, "198.18.0.1",
                                   NetworkSecret("another secret, 16+ chars"), now),
                "unsigned": (format_datagram(message), "198.18.0.1", secret, now),
                "stale": (data, "198.18.0.1", secret, now + MAX_CLOCK_SKEW_S + 1),
                "changed": (data.replace(b"home", b"hone"), "198.18.0.1", secret, now),
            }
            for what, (datagram, source, key, when) in refused.items():
                with self.subTest(what, message=message), self.assertRaises(BadDatagram):
                    check_signature(datagram, source, key, now=when)

    def test_network_names(self):
        for name in ("p2p", "lab-2", "A.b_c", "x" * 32):
            self.assertEqual(discovery.check_network(name), name)
        for name in ("", "x" * 33, "a b", "a/b", "é", None):
            with self.assertRaises(ValueError):
                discovery.check_network(name)


class DecisionTests(unittest.TestCase):

    def test_the_older_load_balancer_is_senior_and_the_id_breaks_ties(self):
        older = Announce("n", 1, 100, "f" * 16)
        younger = Announce("n", 2, 200, "0" * 16)
        self.assertIs(senior(older, younger), older)
        self.assertIs(senior(younger, older), older)
        twin = Announce("n", 3, 100, "0" * 16)
        self.assertIs(senior(older, twin), twin)
        self.assertIs(senior(twin, older), twin)

    def test_choose_the_senior_one_at_a_non_loopback_address(self):
        older = Announce("n", 7000, 100, "a" * 16)
        younger = Announce("n", 6969, 200, "b" * 16)
        heard = [("198.18.0.9", younger), ("127.0.0.1", older), ("198.18.0.5", older),
                 ("10.0.0.5", older)]
        self.assertEqual(choose(heard), ("10.0.0.5", 7000))
        self.assertEqual(choose([("127.0.0.1", older)]), ("127.0.0.1", 7000))
        self.assertIsNone(choose([]))

    def test_backoff_is_within_its_bound(self):
        rng = random.Random(7)
        values = [discovery.backoff(rng) for _ in range(200)]
        self.assertTrue(all(0 <= v <= discovery.MAX_BACKOFF_S for v in values))
        self.assertGreater(max(values) - min(values), discovery.MAX_BACKOFF_S / 2)

    def test_hostile_datagrams_are_logged_at_most_once_in_a_while(self):
        now = [0.0]
        hostile = HostileLog(every_s=60, clock=lambda: now[0])
        with self.assertLogs("p2p.discovery", "WARNING") as logs:
            logged = [hostile.drop("198.18.0.66", "garbage") for _ in range(100)]
            now[0] = 61.0
            logged.append(hostile.drop("198.18.0.66", "garbage"))
        self.assertEqual(logged.count(True), 2)
        self.assertEqual(len(logs.output), 2)
        self.assertIn("ignored 100 discovery datagram(s)", logs.output[1])

    def test_the_interfaces_can_be_chosen(self):
        self.assertEqual(beacon.interface_addresses({"P2P_DISCOVERY_ON": "127.0.0.1, "
                                                                            "198.18.0.1"}),
                         ["127.0.0.1", "198.18.0.1"])
        self.assertIn("127.0.0.1", beacon.interface_addresses({}))

    def test_addresses_for_a_listening_host(self):
        self.assertEqual(beacon.addresses_for("127.0.0.1"), ["127.0.0.1"])
        self.assertEqual(beacon.addresses_for("::1"), [])
        self.assertIn("127.0.0.1", beacon.addresses_for("0.0.0.0"))


class CommandLineTests(unittest.TestCase):
    """--lb or P2P_LB skips discovery altogether; neither means discovery."""

    def parse(self, argv, **env):
        with mock.patch.dict("os.environ", env, clear=True):
            return peer.parse_args(argv)

    def test_discovery_only_without_lb_and_p2p_lb(self):
        self.assertTrue(self.parse(["status"]).discover)
        self.assertFalse(self.parse(["status", "--lb", "10.0.0.5"]).discover)
        args = self.parse(["status"], P2P_LB="10.0.0.5:7000")
        self.assertFalse(args.discover)
        self.assertEqual((args.lb_host, args.lb_port), ("10.0.0.5", 7000))

    def test_a_standby_list_from_option_or_environment(self):
        for args in (self.parse(["status", "--lb", "10.0.0.5:7000, 10.0.0.6"]),
                     self.parse(["status"], P2P_LB="10.0.0.5:7000,10.0.0.6")):
            self.assertFalse(args.discover)
            self.assertEqual(args.lbs, [("10.0.0.5", 7000), ("10.0.0.6", 6969)])
            client = autostart.lb_client_for(args)
            self.assertEqual([c.address for c in client.clients], ["10.0.0.5:7000",
                                                                   "10.0.0.6:6969"])
        for bad in ("10.0.0.5,,10.0.0.6", "10.0.0.5,", ",".join(["10.0.0.1"] * 2 + [
                f"10.0.0.{i}" for i in range(2, 10)])):
            with self.subTest(bad=bad), mock.patch("sys.stderr"), \
                    self.assertRaises(SystemExit):
                self.parse(["list", "--lb", bad])

    def test_standby_load_balancers_are_never_started_by_a_peer(self):
        args = self.parse(["serve", "--lb", "127.0.0.1:7000,127.0.0.1:7001"])
        with mock.patch("p2p.cli.autostart.ensure_load_balancer") as ensure:
            autostart.find_or_start_load_balancer(args, say=self.fail)
        ensure.assert_not_called()
        self.assertEqual(autostart.membership_hooks(args), {"restart_lb": None})

    def test_network_from_option_or_environment(self):
        self.assertEqual(self.parse(["list"]).network, discovery.DEFAULT_NETWORK)
        self.assertEqual(self.parse(["list"], P2P_NETWORK="lab").network, "lab")
        self.assertEqual(self.parse(["--network", "lab2", "list"], P2P_NETWORK="lab").network,
                         "lab2")
        with mock.patch("sys.stderr"), self.assertRaises(SystemExit):
            self.parse(["list", "--network", "no spaces"])

    def test_a_given_load_balancer_is_used_without_listening_first(self):
        args = self.parse(["serve", "--lb", "127.0.0.1:7000"])
        with mock.patch("p2p.net.beacon.discover", side_effect=AssertionError("listened")), \
                mock.patch("p2p.cli.autostart.ensure_load_balancer") as ensure:
            autostart.find_or_start_load_balancer(args, say=lambda text: None)
        ensure.assert_called_once_with("127.0.0.1", 7000, mock.ANY, members=args.members,
                                       member_options=[])

    def test_found_on_the_network_starts_nothing(self):
        args = self.parse(["serve"])
        said = []
        with mock.patch("p2p.net.beacon.discover", return_value=("198.18.0.1", 6969)), \
                mock.patch("p2p.cli.autostart.ensure_load_balancer") as ensure:
            autostart.find_or_start_load_balancer(args, said.append)
        ensure.assert_not_called()
        self.assertEqual((args.lb_host, args.lb_port), ("198.18.0.1", 6969))
        self.assertIn("at 198.18.0.1:6969", said[0])

    def test_joining_an_existing_network_says_how_big_and_how_old_and_how_to_stay_apart(self):
        server = serve_in_thread(self, lb_server.LoadBalancerServer(("127.0.0.1", 0),
                                                                    lb_core.Registry()))
        server.registry.register(port=4000, files=[], host="127.0.0.1")
        args = self.parse(["serve"])
        said = []
        with mock.patch("p2p.net.beacon.discover", return_value=("127.0.0.1", server.port)), \
                mock.patch("p2p.cli.autostart.ensure_load_balancer") as ensure:
            autostart.find_or_start_load_balancer(args, said.append)
        ensure.assert_not_called()
        self.assertRegex(said[0], r"joined this existing network: 1 peer, running for "
                                  r"\d+ s\. .*--network NAME")

    def test_none_found_listens_again_then_starts_an_announced_one(self):
        args = self.parse(["serve", "--host", "127.0.0.1"])
        with mock.patch("p2p.net.beacon.discover", side_effect=[None, None, ("127.0.0.1", 6969)]), \
                mock.patch("p2p.cli.autostart.network_at", return_value=None), \
                mock.patch("p2p.cli.autostart.ensure_load_balancer") as ensure:
            autostart.find_or_start_load_balancer(args, say=lambda text: None)
        ensure.assert_called_once_with("127.0.0.1", 6969, mock.ANY, network="p2p",
                                       listen="127.0.0.1", members=args.members,
                                       member_options=[])


class LoopbackTests(unittest.TestCase):
    """Real multicast, on the loopback interface only."""

    LO = ["127.0.0.1"]

    def setUp(self):
        self.network = "t-" + secrets.token_hex(6)

    def beacon(self, port, on_senior=lambda source, announce: None, **kwargs):
        started = Beacon(self.network, port, self.LO, on_senior, **kwargs).start()
        self.addCleanup(started.close)
        return started

    def test_a_peer_finds_the_load_balancer_of_its_network_only(self):
        self.beacon(4242)
        self.assertEqual(discover(self.network, WAIT_S, self.LO), ("127.0.0.1", 4242))
        self.assertIsNone(discover(self.network + "-other", 0.3, self.LO))

    def test_the_younger_of_two_stands_down(self):
        heard = []
        done = threading.Event()
        self.beacon(4242, since_ms=100)
        self.beacon(4343, since_ms=200,
                    on_senior=lambda source, announce: (heard.append(announce), done.set()))
        self.assertTrue(done.wait(WAIT_S))
        self.assertEqual([a.port for a in heard], [4242])

    def test_with_a_secret_only_members_find_it_and_strangers_cannot_unseat_it(self):
        secret = NetworkSecret("the network's secret, 16+ chars")
        stood_down = threading.Event()
        self.beacon(4242, since_ms=200, secret=secret,
                    on_senior=lambda source, announce: stood_down.set())
        with self.assertLogs("p2p.discovery", "WARNING") as logs:
            self.beacon(4343, since_ms=100)  # older, but unsigned: not of this network
            wait_for(lambda: "not signed" in "\n".join(logs.output), timeout=WAIT_S,
                     what="the member's beacon to drop the stranger's announcement")
        self.assertFalse(stood_down.is_set())
        self.assertEqual(discover(self.network, WAIT_S, self.LO, secret=secret),
                         ("127.0.0.1", 4242))
        self.assertIsNone(discover(self.network, 0.3, self.LO,
                                   secret=NetworkSecret("another secret, 16+ chars")))

    def test_without_the_secret_a_members_only_network_is_not_found_and_says_so(self):
        quiet_logs(self)  # the member's beacon logs the stranger's queries
        secret = NetworkSecret("the network's secret, 16+ chars")
        self.beacon(4242, since_ms=100, secret=secret)
        closed = []
        self.assertIsNone(discover(self.network, CLOSED_WAIT_S, self.LO, closed=closed))
        self.assertEqual({(source, a.port) for source, a in closed}, {("127.0.0.1", 4242)})
        args = peer.parse_args(["list", "--network", self.network])
        with mock.patch("p2p.net.beacon.interface_addresses", return_value=self.LO), \
                self.assertRaisesRegex(PeerError, "members only.*--secret-file \\(or P2P_SECRET\\)"):
            autostart.find_on_lan(args, say=self.fail, wait_s=CLOSED_WAIT_S)

    def test_an_open_load_balancer_does_not_stand_down_for_a_members_only_one(self):
        quiet_logs(self)
        stood_down = threading.Event()
        self.beacon(4343, since_ms=200, on_senior=lambda source, announce: stood_down.set())
        self.beacon(4242, since_ms=100, secret=NetworkSecret("the network's secret, 16+ chars"))
        self.assertEqual(discover(self.network, WAIT_S, self.LO), ("127.0.0.1", 4343))
        self.assertFalse(stood_down.wait(1.5))  # older, but another (members-only) network

    def test_hostile_datagrams_do_not_stop_a_beacon(self):
        self.beacon(4242)
        with self.assertLogs("p2p.discovery", "WARNING"), beacon.open_sender() as s:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            for data in (b"\xff" * 600, b"p2p-lb 9 query x", bytes(range(200))):
                s.sendto(data, (beacon.GROUP, beacon.DISCOVERY_PORT))
            self.assertEqual(discover(self.network, WAIT_S, self.LO), ("127.0.0.1", 4242))


if __name__ == "__main__":
    unittest.main()


class OtherNetworkTests(unittest.TestCase):
    """A load balancer of another network at the default address is never used: a serving
    peer starts its network's own beside it, a command says so."""

    def setUp(self):
        quiet_logs(self)
        self.server = lb_server.LoadBalancerServer(("127.0.0.1", 0), lb_core.Registry())
        self.server.network = "p2p"
        serve_in_thread(self, self.server)

    def args(self, *argv):
        with mock.patch.dict("os.environ", {}, clear=True):
            args = peer.parse_args(list(argv))
        args.lb_port = self.server.port  # where the other network's load balancer answers
        return args

    def test_the_status_names_the_network(self):
        self.assertEqual("p2p", autostart.network_at("127.0.0.1", self.server.port, OPEN))

    def test_a_serving_peer_starts_its_own_beside_it(self):
        args = self.args("serve", "--host", "127.0.0.1", "--network", "lab")
        with mock.patch("p2p.net.beacon.discover", return_value=None), \
                mock.patch("p2p.cli.autostart.ensure_load_balancer") as ensure:
            autostart.find_or_start_load_balancer(args, say=lambda text: None)
        port = ensure.call_args.args[1]
        self.assertIn(port, range(self.server.port + 1,
                                  self.server.port + 1 + autostart.OWN_PORTS_TRIED))
        self.assertEqual("lab", ensure.call_args.kwargs["network"])

    def test_a_peer_of_that_network_uses_it(self):
        args = self.args("serve", "--host", "127.0.0.1")
        with mock.patch("p2p.net.beacon.discover", return_value=None), \
                mock.patch("p2p.cli.autostart.ensure_load_balancer") as ensure:
            autostart.find_or_start_load_balancer(args, say=lambda text: None)
        self.assertEqual(self.server.port, ensure.call_args.args[1])

    def test_a_command_says_whose_it_is(self):
        args = self.args("list", "--network", "lab")
        with self.assertRaises(PeerError) as caught:
            autostart.check_fallback(args)
        self.assertIn(f"the one at 127.0.0.1:{self.server.port} belongs to network 'p2p'",
                      str(caught.exception))
        autostart.check_fallback(self.args("list"))  # its own network's: no error
