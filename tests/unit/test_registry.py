"""Tests of p2p/core/registry.py: ``Registry`` and ``parse_address`` with a fake clock.

No sockets and no time passes: the registry's clock is moved by hand.
"""

import collections
import hashlib
import json
import random
import unittest

from p2p.cli import lb_main
from p2p.core import lb_limits, lb_peers, lb_requests
from p2p.core import lb_picking as picking
from p2p.core import registry as lb_core
from p2p.core.wire import FileRecord, PartialRecord
from p2p.core.clock import FakeClock


def sha(text):
    return hashlib.sha256(str(text).encode()).hexdigest()


def info(name, version=0, size=100):
    return FileRecord(name, size, sha(f"{name}#{version}"))


def wire(name, version=0, size=100):
    return info(name, version, size).as_dict()


def active_by_id(registry):
    return {p["id"]: p["active"] for p in registry.status()["peers"]}


class RegistryTestCase(unittest.TestCase):
    def make(self, **kwargs):
        self.clock = FakeClock()
        kwargs.setdefault("heartbeat_s", 10.0)
        kwargs.setdefault("cooldown_s", 10.0)
        self.registry = lb_core.Registry(clock=self.clock, **kwargs)
        return self.registry

    def peers(self, count, files, host_prefix="10.0.0."):
        """Register ``count`` peers sharing ``files``; returns their records in order."""
        return [self.registry.register(f"{host_prefix}{i + 1}", 7000 + i, list(files))
                for i in range(count)]


class TestLeastConnections(RegistryTestCase):
    def test_held_picks_spread_evenly(self):
        self.make()
        holders = self.peers(4, [info("movie.mkv")])
        counts = collections.Counter(self.registry.pick("movie.mkv").first.holder.id
                                     for _ in range(100))
        self.assertEqual(counts, {p.id: 25 for p in holders})
        self.assertEqual(active_by_id(self.registry), {p.id: 25 for p in holders})

    def test_released_picks_rotate_evenly(self):
        self.make()
        holders = self.peers(4, [info("movie.mkv")])
        counts = collections.Counter()
        for _ in range(40):
            transfer = self.registry.pick("movie.mkv").first
            peer = transfer.holder
            counts[peer.id] += 1
            self.registry.end(transfer.id, transfer.secret, "done")
        self.assertEqual(counts, {p.id: 10 for p in holders})
        status = {p["id"]: p for p in self.registry.status()["peers"]}
        for p in holders:
            self.assertEqual(status[p.id]["active"], 0)
            self.assertEqual(status[p.id]["served"], 10)

    def test_only_holders_of_the_file_are_considered(self):
        self.make()
        a, b = self.peers(2, [info("a.txt")])
        c = self.registry.register("10.0.9.9", 7000, [info("other.txt")])
        picked = {self.registry.pick("a.txt").first.holder.id for _ in range(10)}
        self.assertEqual(picked, {a.id, b.id})
        self.assertEqual(self.registry.pick("other.txt").first.holder.id, c.id)

    def test_reported_uploads_plus_picks_since_the_report_drive_the_pick(self):
        self.make()
        a, b = self.peers(2, [info("f")])
        self.registry.heartbeat(a.id, a.token, uploads=3)
        seq = [self.registry.pick("f").first.holder.id for _ in range(7)]
        # a counts as 3 busy: b first until it has 3, then ties alternate.
        self.assertEqual(seq, [b.id, b.id, b.id, a.id, b.id, a.id, b.id])
        # a reports 10 uploads: its picks before the report are in that figure.
        self.registry.heartbeat(a.id, a.token, uploads=10)
        self.assertEqual([self.registry.pick("f").first.holder.id for _ in range(5)], [b.id] * 5)
        # a reports none: the picks it was handed and never saw no longer count.
        self.registry.heartbeat(a.id, a.token, uploads=0)
        self.assertEqual(self.registry.pick("f").first.holder.id, a.id)  # a: 0 < b: 10
        status = {p["id"]: p for p in self.registry.status()["peers"]}
        self.assertEqual((status[a.id]["active"], status[a.id]["uploads"]), (1, 0))
        self.assertEqual(status[b.id]["active"], 10)

    def test_picks_never_used_stop_counting_at_the_holders_next_heartbeat(self):
        self.make()
        a, b = self.peers(2, [info("f")])
        hoarded = [self.registry.pick("f", peer=(a.host, a.port)).first for _ in range(50)]
        self.assertEqual(self.registry.pick("f").first.holder.id, b.id)  # a looks busy, for now
        self.registry.heartbeat(a.id, a.token, uploads=0)  # a: nobody is connected
        for transfer in hoarded:  # renewing them does not make them count again
            self.registry.renew(transfer.id, transfer.secret)
        self.assertEqual(self.registry.pick("f").first.holder.id, a.id)
        self.registry.end(hoarded[0].id, hoarded[0].secret, "cancelled")
        self.assertEqual(active_by_id(self.registry), {a.id: 1, b.id: 1})


class TestRoundRobin(RegistryTestCase):
    def test_strict_rotation_even_when_loads_differ(self):
        self.make(policy="round-robin")
        a, b, c = self.peers(3, [info("f")])
        self.registry.heartbeat(a.id, a.token, uploads=50)
        for _ in range(5):  # b gets 5 transfers that stay open
            self.registry.pick("f", peer=(b.host, b.port))
        seq = [self.registry.pick("f").first.holder.id for _ in range(12)]
        self.assertEqual(set(seq[:3]), {a.id, b.id, c.id})
        for i, peer_id in enumerate(seq):
            self.assertEqual(peer_id, seq[i % 3], f"rotation broken at pick {i}: {seq}")

    def test_least_connections_would_not_rotate_with_these_loads(self):
        # The same loads under the default policy: c (idle) gets everything, so the
        # round-robin test above really does exercise a different policy.
        self.make()
        a, b, c = self.peers(3, [info("f")])
        self.registry.heartbeat(a.id, a.token, uploads=50)
        for _ in range(5):
            self.registry.pick("f", peer=(b.host, b.port))
        seq = [self.registry.pick("f").first.holder.id for _ in range(4)]
        self.assertEqual(seq, [c.id] * 4)

    def test_unknown_policy_rejected(self):
        with self.assertRaises(ValueError):
            lb_core.Registry(policy="random")


class TestExcludeAndRequester(RegistryTestCase):
    def test_exclude_is_honoured(self):
        self.make()
        a, b, c = self.peers(3, [info("f")])
        picked = {self.registry.pick("f", exclude=[a.id, c.id]).first.holder.id for _ in range(6)}
        self.assertEqual(picked, {b.id})

    def test_every_holder_excluded_is_unavailable(self):
        self.make()
        a, b = self.peers(2, [info("f")])
        with self.assertRaises(lb_core.Unavailable) as cm:
            self.registry.pick("f", exclude=[a.id, b.id])
        self.assertEqual(cm.exception.status, 503)
        self.assertIn("f", cm.exception.message)

    def test_requester_never_gets_itself(self):
        self.make()
        a, b = self.peers(2, [info("f")])
        picked = {self.registry.pick("f", requester=a.id).first.holder.id for _ in range(10)}
        self.assertEqual(picked, {b.id})

    def test_requester_as_only_holder_is_not_found(self):
        self.make()
        (a,) = self.peers(1, [info("f")])
        with self.assertRaises(lb_core.NotFound) as cm:
            self.registry.pick("f", requester=a.id)
        self.assertEqual(cm.exception.status, 404)
        self.assertEqual(active_by_id(self.registry), {a.id: 0})

    def test_nobody_shares_is_not_found(self):
        self.make()
        self.peers(2, [info("f")])
        with self.assertRaises(lb_core.NotFound) as cm:
            self.registry.pick("nothing.bin")
        self.assertIn("nothing.bin", cm.exception.message)


class TestVersions(RegistryTestCase):
    def test_two_files_under_one_name_held_by_as_many_hosts_conflict(self):
        self.make()
        v1, v2 = info("linux.iso", 1), info("linux.iso", 2)
        a = self.registry.register("10.0.0.1", 7000, [v1])
        b = self.registry.register("10.0.0.1", 7001, [v1])  # one host, two peers: one vote
        c = self.registry.register("10.0.0.3", 7000, [v2])
        with self.assertRaises(lb_core.Conflict) as cm:
            self.registry.pick("linux.iso")
        self.assertEqual(cm.exception.status, 409)
        versions = cm.exception.extra["versions"]
        self.assertEqual({v["sha256"]: v["holders"] for v in versions},
                         {v1.sha256: 2, v2.sha256: 1})
        for v in versions:
            self.assertEqual(v["name"], "linux.iso")
        picked = {self.registry.pick("linux.iso", sha256=v1.sha256).first.holder.id
                  for _ in range(6)}
        self.assertEqual(picked, {a.id, b.id})
        transfer = self.registry.pick("linux.iso", sha256=v2.sha256).first
        peer = transfer.holder
        self.assertEqual(peer.id, c.id)
        self.assertEqual(transfer.file, v2)
        with self.assertRaises(lb_core.NotFound):
            self.registry.pick("linux.iso", sha256=sha("no such version"))

    def test_the_version_most_hosts_hold_is_picked_and_the_others_named(self):
        self.make()
        real, fake = info("song.mp3", 1), info("song.mp3", 2)
        honest = [self.registry.register(f"10.0.0.{i}", 7000, [real]) for i in (1, 2)]
        self.registry.register("10.6.6.6", 7000, [fake])
        for _ in range(4):
            handout = self.registry.pick("song.mp3")
            self.assertIn(handout.first.holder.id, {p.id for p in honest})
            self.assertEqual(handout.first.file, real)
            self.assertEqual([(v["sha256"], v["holders"]) for v in handout.others],
                             [(fake.sha256, 1)])
        handout = self.registry.pick("song.mp3", sha256=fake.sha256)
        self.assertEqual(handout.first.file, fake)
        self.assertFalse(handout.others)

    def test_a_wrong_size_claimed_for_a_sha256_never_hides_its_true_holders(self):
        self.make()
        real = info("song.mp3", size=100)
        liar = self.registry.register("10.6.6.6", 7000, [FileRecord("song.mp3", 999,
                                                                     real.sha256)])
        honest = self.registry.register("10.0.0.1", 7000, [real])  # announced after the liar
        files, _ = self.registry.find_files("song.mp3")
        self.assertEqual(sorted((f["size"], f["holders"]) for f in files), [(100, 1), (999, 1)])
        picked = set()
        for _ in range(4):  # one host each: both are candidates, the downloader checks sizes
            transfer = self.registry.pick("song.mp3").first
            peer = transfer.holder
            picked.add((peer.id, transfer.file.size))
            self.registry.end(transfer.id, transfer.secret)
        self.assertEqual(picked, {(liar.id, 999), (honest.id, 100)})
        self.registry.register("10.0.0.2", 7000, [real])  # two hosts agree on the size
        for _ in range(4):
            self.assertEqual(self.registry.pick("song.mp3", sha256=real.sha256).first.file, real)


class TestExplicitPeer(RegistryTestCase):
    def test_explicit_peer_selects_that_holder(self):
        self.make()
        a, b = self.peers(2, [info("f")])
        # b is made the busiest, and is still the one picked when asked for by name.
        for _ in range(3):
            self.assertEqual(self.registry.pick("f", peer=(b.host, None)).first.holder.id, b.id)
        self.assertEqual(self.registry.pick("f", peer=(b.host, b.port)).first.holder.id, b.id)
        named = lb_core.parse_address(f"{a.host}:{a.port}")
        self.assertEqual(self.registry.pick("f", peer=named).first.holder.id, a.id)
        named = lb_core.parse_address(b.host)
        self.assertEqual(self.registry.pick("f", peer=named).first.holder.id, b.id)

    def test_explicit_peer_that_does_not_share_is_not_found_naming_holders(self):
        self.make()
        a, b = self.peers(2, [info("f")])
        c = self.registry.register("10.0.0.3", 7777, [info("other")])
        for wanted in [(c.host, None), (c.host, c.port), (a.host, a.port + 1000)]:
            with self.assertRaises(lb_core.NotFound) as cm:
                self.registry.pick("f", peer=wanted)
            self.assertIn(a.address, cm.exception.message)
            self.assertIn(b.address, cm.exception.message)
        self.assertEqual(sum(active_by_id(self.registry).values()), 0)


    def test_explicit_peer_chooses_its_own_version_of_an_ambiguous_name(self):
        self.make()
        a = self.registry.register("10.0.0.1", 7001, [info("f", version=1)])
        b = self.registry.register("10.0.0.2", 7002, [info("f", version=2)])
        with self.assertRaises(lb_core.Conflict):
            self.registry.pick("f")
        transfer = self.registry.pick("f", peer=(b.host, None)).first
        peer = transfer.holder
        self.assertEqual((peer.id, transfer.file), (b.id, info("f", version=2)))
        self.assertEqual(self.registry.pick("f", peer=(a.host, a.port)).first.file,
                         info("f", version=1))

    def test_asking_for_yourself_by_address_says_so(self):
        self.make()
        a, b = self.peers(2, [info("f")])
        with self.assertRaises(lb_core.NotFound) as cm:
            self.registry.pick("f", peer=(a.host, a.port), requester=a.id)
        self.assertIn("is you", cm.exception.message)


class TestCooldown(RegistryTestCase):
    def test_one_requesters_failures_sideline_a_holder_for_it_alone(self):
        self.make(cooldown_s=10.0)
        a, b = self.peers(2, [info("f")])
        for _ in range(20):  # an attacker ending its own transfers of a as failed
            transfer = self.registry.pick("f", peer=(a.host, a.port), source="10.6.6.6").first
            self.registry.end(transfer.id, transfer.secret, "failed")
        for _ in range(2):
            transfer = self.registry.pick("f", source="10.6.6.6").first
            peer = transfer.holder
            self.assertEqual(peer.id, b.id)
            self.registry.end(transfer.id, transfer.secret)
        picked = set()
        for _ in range(4):  # everyone else still gets a in turn
            transfer = self.registry.pick("f", source="10.0.0.9").first
            peer = transfer.holder
            picked.add(peer.id)
            self.registry.end(transfer.id, transfer.secret)
        self.assertEqual(picked, {a.id, b.id})
        transfer = self.registry.pick("f", peer=(a.host, a.port), source="10.0.0.8").first
        self.registry.end(transfer.id, transfer.secret, "failed")  # a second host saw it fail
        for _ in range(3):
            transfer = self.registry.pick("f", source="10.0.0.9").first
            peer = transfer.holder
            self.assertEqual(peer.id, b.id)
            self.registry.end(transfer.id, transfer.secret)

    def test_failed_holder_skipped_then_back_after_cooldown(self):
        self.make(cooldown_s=10.0)
        a, b, c = self.peers(3, [info("f")])
        transfer = self.registry.pick("f", peer=(a.host, a.port)).first
        peer = transfer.holder
        self.registry.end(transfer.id, transfer.secret, "failed")
        seq = []
        for _ in range(6):
            transfer = self.registry.pick("f").first
            peer = transfer.holder
            seq.append(peer.id)
            self.registry.end(transfer.id, transfer.secret, "done")
        self.assertNotIn(a.id, seq)
        self.assertEqual(set(seq), {b.id, c.id})
        self.clock.advance(9.9)
        transfer = self.registry.pick("f").first
        peer = transfer.holder
        self.assertNotEqual(peer.id, a.id)
        self.registry.end(transfer.id, transfer.secret, "done")
        self.clock.advance(0.2)  # 10.1 s after the failure
        transfer = self.registry.pick("f").first
        peer = transfer.holder
        self.assertEqual(peer.id, a.id)  # idle and least recently picked
        status = {p["id"]: p for p in self.registry.status()["peers"]}
        self.assertEqual(status[a.id]["failed"], 1)

    def test_all_holders_failing_still_picks(self):
        self.make(cooldown_s=10.0)
        holders = self.peers(2, [info("f")])
        for p in holders:
            transfer = self.registry.pick("f", peer=(p.host, p.port)).first
            self.registry.end(transfer.id, transfer.secret, "failed")
        picked = set()
        for _ in range(4):
            transfer = self.registry.pick("f").first
            peer = transfer.holder
            picked.add(peer.id)
            self.registry.end(transfer.id, transfer.secret, "done")
        self.assertEqual(picked, {p.id for p in holders})

    def test_only_holder_that_failed_is_still_picked(self):
        self.make()
        (a,) = self.peers(1, [info("f")])
        transfer = self.registry.pick("f").first
        self.registry.end(transfer.id, transfer.secret, "failed")
        self.assertEqual(self.registry.pick("f").first.holder.id, a.id)


class TestExpiry(RegistryTestCase):
    def test_silent_peer_dropped_with_transfers_and_files(self):
        self.make(heartbeat_s=10.0, renew_s=1000.0)
        a = self.registry.register("10.0.0.1", 7000, [info("shared"), info("only-a")])
        b = self.registry.register("10.0.0.2", 7000, [info("shared")])
        transfer = self.registry.pick("shared", peer=(a.host, a.port)).first
        self.clock.advance(20)
        self.registry.heartbeat(b.id, b.token)
        self.clock.advance(9.9)  # a silent for just under 3 x heartbeat: still there
        self.assertEqual({p["id"] for p in self.registry.status()["peers"]}, {a.id, b.id})
        self.clock.advance(0.2)  # now a is over the limit; b was seen 10.1 s ago
        self.assertEqual([p["id"] for p in self.registry.status()["peers"]], [b.id])
        with self.assertRaises(lb_core.NotFound):
            self.registry.end(transfer.id, transfer.secret, "done")
        with self.assertRaises(lb_core.NotFound):
            self.registry.heartbeat(a.id, a.token)
        with self.assertRaises(lb_core.NotFound):
            self.registry.pick("only-a")
        files, _ = self.registry.find_files("")
        self.assertEqual([(f["name"], f["holders"]) for f in files], [("shared", 1)])
        self.assertEqual(self.registry.pick("shared").first.holder.id, b.id)

    def test_silent_peer_behind_a_live_one_is_dropped(self):
        # The first-registered peer keeps beating; the later one goes silent.
        self.make(heartbeat_s=10.0)
        a, b = self.peers(2, [info("f")])
        for _ in range(4):
            self.clock.advance(9)
            self.registry.heartbeat(a.id, a.token)
        self.assertEqual([p["id"] for p in self.registry.status()["peers"]], [a.id])
        self.assertEqual(self.registry.find_files("f")[0][0]["holders"], 1)

    def test_heartbeating_peer_stays(self):
        self.make(heartbeat_s=10.0)
        (a,) = self.peers(1, [info("f")])
        for _ in range(10):
            self.clock.advance(9)
            self.registry.heartbeat(a.id, a.token)
        self.assertEqual([p["id"] for p in self.registry.status()["peers"]], [a.id])
        self.assertEqual(self.registry.pick("f").first.holder.id, a.id)

    def test_unrenewed_transfer_expires_renewed_one_does_not(self):
        self.make(heartbeat_s=1000.0, renew_s=5.0)
        (a,) = self.peers(1, [info("f")])
        t1 = self.registry.pick("f").first
        t2 = self.registry.pick("f").first
        self.assertEqual(active_by_id(self.registry), {a.id: 2})
        self.clock.advance(10)
        self.registry.renew(t2.id, t2.secret)
        self.clock.advance(4.9)  # t1 just under 3 x renew_s old: still counted
        self.assertEqual(active_by_id(self.registry), {a.id: 2})
        self.clock.advance(0.2)
        self.assertEqual(active_by_id(self.registry), {a.id: 1})
        with self.assertRaises(lb_core.NotFound):
            self.registry.renew(t1.id, t1.secret)
        with self.assertRaises(lb_core.NotFound):
            self.registry.end(t1.id, t1.secret, "done")
        self.registry.renew(t2.id, t2.secret)
        self.clock.advance(14.9)
        self.assertEqual(active_by_id(self.registry), {a.id: 1})
        self.clock.advance(0.2)
        self.assertEqual(active_by_id(self.registry), {a.id: 0})
        status = self.registry.status()["peers"][0]
        self.assertEqual((status["served"], status["failed"]), (0, 0))  # expiry is neither

    def test_ended_transfer_cannot_be_ended_twice(self):
        self.make()
        (a,) = self.peers(1, [info("f")])
        transfer = self.registry.pick("f").first
        self.registry.end(transfer.id, transfer.secret, "done")
        with self.assertRaises(lb_core.NotFound):
            self.registry.end(transfer.id, transfer.secret, "done")
        self.assertEqual(active_by_id(self.registry), {a.id: 0})

    def test_bad_outcome_is_invalid(self):
        self.make()
        self.peers(1, [info("f")])
        transfer = self.registry.pick("f").first
        with self.assertRaises(lb_core.Invalid) as cm:
            self.registry.end(transfer.id, transfer.secret, "exploded")
        self.assertEqual(cm.exception.status, 400)

    def test_idle_seconds(self):
        self.make(heartbeat_s=1000.0)
        self.clock.advance(5)
        self.assertEqual(self.registry.idle_seconds(), 5)
        (a,) = self.peers(1, [])
        self.clock.advance(100)
        self.assertEqual(self.registry.idle_seconds(), 0)
        self.registry.unregister(a.id, a.token)
        self.clock.advance(7)
        self.assertEqual(self.registry.idle_seconds(), 7)


class TestPeersAndIndex(RegistryTestCase):
    def test_heartbeat_wrong_token_forbidden_unknown_id_not_found(self):
        self.make()
        (a,) = self.peers(1, [info("f")])
        with self.assertRaises(lb_core.Forbidden) as cm:
            self.registry.heartbeat(a.id, a.token + "x")
        self.assertEqual(cm.exception.status, 403)
        with self.assertRaises(lb_core.Forbidden):
            self.registry.unregister(a.id, "")
        with self.assertRaises(lb_core.NotFound) as cm:
            self.registry.heartbeat("0123456789ab", a.token)
        self.assertEqual(cm.exception.status, 404)
        self.registry.heartbeat(a.id, a.token)  # the right token works

    def test_register_again_at_same_address_replaces(self):
        self.make()
        old = self.registry.register("10.0.0.1", 7000, [info("old.txt")])
        transfer = self.registry.pick("old.txt").first
        new = self.registry.register("10.0.0.1", 7000, [info("new.txt")])
        self.assertNotEqual(old.id, new.id)
        self.assertEqual([p["id"] for p in self.registry.status()["peers"]], [new.id])
        with self.assertRaises(lb_core.NotFound):
            self.registry.heartbeat(old.id, old.token)
        with self.assertRaises(lb_core.NotFound):
            self.registry.pick("old.txt")
        with self.assertRaises(lb_core.NotFound):
            self.registry.end(transfer.id, transfer.secret)
        self.assertEqual(self.registry.pick("new.txt").first.holder.id, new.id)
        # A different port on the same host is a different peer.
        other = self.registry.register("10.0.0.1", 7001, [])
        self.assertEqual({p["id"] for p in self.registry.status()["peers"]}, {new.id, other.id})

    def test_unregister_removes_peer_and_files(self):
        self.make()
        a, b = self.peers(2, [info("f")])
        self.registry.unregister(a.id, a.token)
        self.assertEqual([p["id"] for p in self.registry.status()["peers"]], [b.id])
        self.assertEqual(self.registry.find_files("f")[0][0]["holders"], 1)
        with self.assertRaises(lb_core.NotFound):
            self.registry.unregister(a.id, a.token)

    def test_heartbeat_with_new_file_list_updates_index(self):
        self.make()
        (a,) = self.peers(1, [info("one"), info("two")])
        self.registry.heartbeat(a.id, a.token, files=[info("two"), info("three")])
        with self.assertRaises(lb_core.NotFound):
            self.registry.pick("one")
        self.assertEqual([f["name"] for f in self.registry.find_files("")[0]], ["three", "two"])
        self.assertEqual(self.registry.pick("three").first.holder.id, a.id)
        # files=None keeps the list; a changed file (new sha256) replaces the old version.
        self.registry.heartbeat(a.id, a.token, uploads=1)
        self.assertEqual(len(self.registry.find_files("")[0]), 2)
        self.registry.heartbeat(a.id, a.token, files=[info("two", version=9)])
        files = self.registry.find_files("")[0]
        self.assertEqual([(f["name"], f["sha256"]) for f in files],
                         [("two", info("two", 9).sha256)])
        transfer = self.registry.pick("two").first  # no conflict with the old version
        self.assertEqual(transfer.file.sha256, info("two", 9).sha256)
        self.registry.heartbeat(a.id, a.token, files=[])
        self.assertEqual(self.registry.find_files("")[0], [])

    def test_find_files_substring_case_insensitive_with_holders(self):
        self.make()
        self.registry.register("10.0.0.1", 7000, [info("Holiday Photos.zip"), info("notes.txt")])
        self.registry.register("10.0.0.2", 7000, [info("Holiday Photos.zip"), info("HOLIDAY.txt")])
        self.registry.register("10.0.0.3", 7000, [info("notes.txt", version=2)])
        files, truncated = self.registry.find_files("holiday")
        self.assertFalse(truncated)
        self.assertEqual([(f["name"], f["holders"]) for f in files],
                         [("HOLIDAY.txt", 1), ("Holiday Photos.zip", 2)])
        self.assertEqual(files[1]["sha256"], info("Holiday Photos.zip").sha256)
        self.assertEqual(files[1]["size"], 100)
        files, _ = self.registry.find_files("NOTES")
        self.assertEqual(sorted(f["sha256"] for f in files),
                         sorted([info("notes.txt").sha256, info("notes.txt", 2).sha256]))
        self.assertEqual(len(self.registry.find_files("")[0]), 4)
        self.assertEqual(self.registry.find_files("xyz")[0], [])

    def test_find_files_limit(self):
        self.make()
        self.registry.register("10.0.0.1", 7000, [info(f"f{i:02d}") for i in range(10)])
        files, truncated = self.registry.find_files("", limit=4)
        self.assertTrue(truncated)
        self.assertEqual([f["name"] for f in files], ["f00", "f01", "f02", "f03"])

    def test_find_files_not_truncated_when_exactly_at_limit(self):
        # Regression (fixed in 6525336): truncated was True as soon as `limit` entries were
        # found, even when nothing more matched.
        self.make()
        self.registry.register("10.0.0.1", 7000, [info("a"), info("b")])
        files, truncated = self.registry.find_files("", limit=2)
        self.assertEqual(len(files), 2)
        self.assertFalse(truncated, "2 files, limit 2: the listing is complete, not truncated")


class TestSwarmPicks(RegistryTestCase):
    """Several holders per pick, partial holders, busy holders and the agreed piece list."""

    def loaded(self, loads, files=(info("f"),)):
        """Peers sharing ``files``, each reporting the uploads in ``loads``."""
        peers = self.peers(len(loads), files)
        for peer, uploads in zip(peers, loads):
            self.registry.heartbeat(peer.id, peer.token, uploads=uploads)
        return peers

    def downloading(self, host, done, record=info("f"), port=7100):
        """A peer that has verified ``done`` bytes of ``record`` and shares nothing whole."""
        return self.registry.register(host, port, [],
                                      partial=[PartialRecord(record, done)])

    def test_count_hands_out_that_many_distinct_least_loaded_holders_each_counted(self):
        self.make()
        a, b, c, d, e = self.loaded([3, 0, 1, 0, 2])
        handout = self.registry.pick("f", count=3)
        self.assertEqual([t.holder.id for t in handout.transfers], [b.id, d.id, c.id])
        self.assertEqual(len({t.id for t in handout.transfers}), 3)
        self.assertEqual(active_by_id(self.registry),
                         {a.id: 3, b.id: 1, c.id: 2, d.id: 1, e.id: 2})
        self.assertEqual(len(self.registry.pick("f", count=lb_core.MAX_SOURCES).transfers), 5)

    def test_without_count_one_holder_of_the_whole_file_and_no_partial_holder(self):
        self.make()
        (a,) = self.loaded([5])
        self.downloading("10.0.1.1", done=50)
        for _ in range(3):
            handout = self.registry.pick("f")
            self.assertEqual([(t.holder.id, t.done) for t in handout.transfers], [(a.id, None)])

    def test_partial_holders_join_with_verified_bytes_never_the_requester(self):
        self.make()
        (a,) = self.peers(1, [info("f")])
        self.downloading("10.0.1.1", done=0)
        helper = self.downloading("10.0.1.2", done=50)
        requester = self.downloading("10.0.1.3", done=80)
        handout = self.registry.pick("f", count=4, requester=requester.id)
        self.assertEqual([(t.holder.id, t.done) for t in handout.transfers],
                         [(a.id, None), (helper.id, 50)])  # at equal load, whole files first
        self.assertEqual(handout.transfers[1].file, info("f"))
        self.assertEqual(active_by_id(self.registry)[helper.id], 1)

    def test_a_partial_holder_of_another_version_or_size_is_no_candidate(self):
        self.make()
        self.peers(1, [info("f")])
        self.downloading("10.0.1.1", done=50, record=info("f", version=2))
        self.downloading("10.0.1.2", done=50, record=info("f", size=200))
        self.assertEqual(len(self.registry.pick("f", count=4).transfers), 1)

    def test_a_swarm_pick_says_who_else_downloads_before_any_heartbeat_announces_it(self):
        self.make()
        seed, first, second = [*self.peers(1, [info("f")]),
                               *self.peers(2, [], host_prefix="10.0.2.")]
        handout = self.registry.pick("f", count=4, requester=first.id)
        self.assertEqual(handout.downloading, 0, "the first of two started together is alone")
        later = self.registry.pick("f", count=4, requester=second.id)
        self.assertEqual(later.downloading, 1, "the second learns of the first at once")
        again = self.registry.pick("f", count=4, requester=first.id)
        self.assertEqual(again.downloading, 1, "...and the first of the second, at its next")
        self.assertEqual(self.registry.pick("f").downloading, 2,
                         "a pick of the whole file is nobody's swarm download")
        for transfer in later.transfers:
            self.registry.end(transfer.id, transfer.secret, "done")
        self.assertEqual(self.registry.pick("f", count=4, requester=first.id).downloading, 0,
                         "the second's transfers ended: the first is alone again")
        for _ in range(2 * lb_limits.MISSED_BEATS):  # the seed and the second beat on
            self.clock.advance(self.registry.renew_s / 2 + 0.1)
            for peer in (seed, second):
                self.registry.heartbeat(peer.id, peer.token)
        self.assertEqual(self.registry.pick("f", count=4, requester=second.id).downloading, 0,
                         "the first's transfers expired unrenewed: it downloads no more")

    def test_a_holder_whose_slots_are_taken_is_busy_and_not_handed_out(self):
        self.make()
        a, b = self.peers(2, [info("f")])
        self.registry.heartbeat(a.id, a.token, slots=1, uploads=1)
        self.assertEqual([t.holder.id for t in self.registry.pick("f", count=2).transfers],
                         [b.id])
        self.registry.heartbeat(b.id, b.token, slots=2)
        self.registry.pick("f")  # b: 2 of 2 slots now
        with self.assertRaises(lb_core.Busy) as cm:
            self.registry.pick("f", count=2)
        self.assertEqual(cm.exception.status, 503)
        self.assertEqual(cm.exception.extra, {"busy": 2, "retry_after": lb_core.BUSY_RETRY_S})
        self.assertEqual(cm.exception.headers, {"Retry-After": str(lb_core.BUSY_RETRY_S)})
        self.assertIn("Every holder of 'f' is busy (2 holders)", cm.exception.message)
        self.assertEqual(active_by_id(self.registry), {a.id: 1, b.id: 2})  # nothing counted

    def test_a_busy_partial_holder_is_counted_busy_too(self):
        self.make()
        (a,) = self.peers(1, [info("f")])
        helper = self.downloading("10.0.1.1", done=50)
        for peer in (a, helper):
            self.registry.heartbeat(peer.id, peer.token, slots=1, uploads=1)
        with self.assertRaises(lb_core.Busy) as cm:
            self.registry.pick("f", count=2)
        self.assertEqual(cm.exception.extra["busy"], 2)

    def test_every_holder_excluded_is_no_holder_left_not_busy(self):
        self.make()
        a, b = self.peers(2, [info("f")])
        self.registry.heartbeat(a.id, a.token, slots=1, uploads=1)
        with self.assertRaises(lb_core.Unavailable) as cm:
            self.registry.pick("f", count=2, exclude=[a.id, b.id])
        self.assertNotIsInstance(cm.exception, lb_core.Busy)
        self.assertNotIn("busy", cm.exception.extra)

    def test_cooling_holders_come_last(self):
        self.make()
        a, b, c = self.peers(3, [info("f")])
        failed = self.registry.pick("f", peer=(a.host, a.port), source="10.9.9.9").first
        self.registry.end(failed.id, failed.secret, "failed")
        handout = self.registry.pick("f", count=3, source="10.9.9.9")
        self.assertEqual(handout.transfers[-1].holder.id, a.id)

    def test_round_robin_rotates_over_holders_and_partial_holders(self):
        self.make(policy="round-robin")
        a, b = self.peers(2, [info("f")])
        helper = self.downloading("10.0.1.1", done=50)
        seen = [t.holder.id for _ in range(3) for t in self.registry.pick("f", count=1).transfers]
        self.assertEqual(sorted(seen), sorted([a.id, b.id, helper.id]))

    def test_the_piece_list_most_machines_announced_is_handed_out(self):
        self.make()
        good, bad = sha("pieces good"), sha("pieces bad")
        record = info("f")
        with_pieces = FileRecord(record.name, record.size, record.sha256, good)
        self.peers(2, [with_pieces])
        liar = FileRecord(record.name, record.size, record.sha256, bad)
        for port in (7100, 7101, 7102):  # one machine, three peers: one vote
            self.registry.register("10.6.6.6", port, [liar], source="10.6.6.6")
        self.registry.register("10.0.0.9", 7000, [record])  # announced none
        self.assertEqual(self.registry.pick("f").pieces, good)
        self.registry.register("10.6.6.7", 7000, [liar], source="10.6.6.7")
        self.assertIsNone(self.registry.pick("f").pieces)  # a tie: no list is trusted

    def test_no_piece_list_when_no_holder_announced_one(self):
        self.make()
        self.peers(2, [info("f")])
        self.assertIsNone(self.registry.pick("f", count=2).pieces)

    def test_status_and_files_show_slots_and_partial_holders(self):
        self.make()
        (a,) = self.peers(1, [info("f")])
        self.registry.heartbeat(a.id, a.token, slots=4)
        helper = self.downloading("10.0.1.1", done=37)
        peers = {p["id"]: p for p in self.registry.status()["peers"]}
        self.assertEqual((peers[a.id]["slots"], peers[a.id]["partial"]), (4, []))
        self.assertEqual(peers[helper.id]["slots"], None)
        self.assertEqual(peers[helper.id]["partial"],
                         [{"name": "f", "sha256": info("f").sha256, "size": 100, "done": 37}])
        files, _ = self.registry.find_files("f")
        self.assertEqual([(f["holders"], f["partial"]) for f in files], [(1, 1)])
        self.registry.heartbeat(helper.id, helper.token,
                                partial=[PartialRecord(info("f"), 37, stalled=True)])
        peers = {p["id"]: p for p in self.registry.status()["peers"]}
        self.assertEqual(peers[helper.id]["partial"][0]["stalled"], True)

    def test_partial_list_is_replaced_and_leaves_with_its_peer(self):
        self.make()
        self.peers(1, [info("f")])
        helper = self.downloading("10.0.1.1", done=37)
        self.registry.heartbeat(helper.id, helper.token, uploads=0)  # no list: kept
        self.assertEqual(self.registry.find_files("f")[0][0]["partial"], 1)
        self.registry.heartbeat(helper.id, helper.token, partial=[])
        self.assertEqual(self.registry.find_files("f")[0][0]["partial"], 0)
        self.assertEqual(len(self.registry.pick("f", count=2).transfers), 1)
        again = self.downloading("10.0.1.2", done=37)
        self.registry.unregister(again.id, again.token)
        self.assertEqual(self.registry.find_files("f")[0][0]["partial"], 0)

    def test_every_source_is_renewed_ended_and_expired_as_one_transfer(self):
        self.make(heartbeat_s=1000.0, renew_s=10.0)
        a, b = self.peers(2, [info("f")])
        helper = self.downloading("10.0.1.1", done=50)
        first = self.registry.pick("f", count=3).transfers
        self.assertEqual(active_by_id(self.registry), {a.id: 1, b.id: 1, helper.id: 1})
        self.clock.advance(25)
        for transfer in first:
            self.registry.renew(transfer.id, transfer.secret)
        self.clock.advance(25)  # 50 s after the pick, 25 s after the renewal: running
        self.assertEqual(active_by_id(self.registry), {a.id: 1, b.id: 1, helper.id: 1})
        self.registry.end(first[0].id, first[0].secret, "done")
        self.registry.end(first[1].id, first[1].secret, "failed")
        ended = {first[0].holder.id, first[1].holder.id}
        self.assertEqual({pid for pid, n in active_by_id(self.registry).items() if n == 0},
                         ended)
        self.clock.advance(31)  # the third was not renewed again: expired
        self.assertEqual(set(active_by_id(self.registry).values()), {0})
        with self.assertRaises(lb_core.NotFound):
            self.registry.renew(first[2].id, first[2].secret)


class TestRegistryOwnership(unittest.TestCase):
    def setUp(self):
        self.clock = FakeClock()
        self.registry = lb_core.Registry(clock=self.clock, heartbeat_s=10)

    def test_someone_else_cannot_take_a_live_peers_address(self):
        first = self.registry.register("10.0.0.1", 7000, [info("f")], source="10.0.0.1")
        with self.assertRaises(lb_core.Conflict):
            self.registry.register("10.0.0.1", 7000, [], source="10.6.6.6")
        again = self.registry.register("10.0.0.1", 7000, [info("f")], source="10.0.0.1")
        self.assertNotEqual(again.id, first.id)  # the same machine restarting: replaced
        self.clock.advance(29)  # silent for almost three heartbeats: still its address
        with self.assertRaises(lb_core.Conflict):
            self.registry.register("10.0.0.1", 7000, [], source="10.6.6.6")
        self.clock.advance(1.1)  # expired after the full silence: the address is free
        taken = self.registry.register("10.0.0.1", 7000, [], source="10.6.6.6")
        self.assertEqual([p["id"] for p in self.registry.status()["peers"]], [taken.id])

    def test_only_the_requester_may_renew_or_end_its_transfer(self):
        self.registry.register("10.0.0.1", 7000, [info("f")])
        first = self.registry.pick("f").first
        second = self.registry.pick("f").first
        self.assertNotEqual(first.secret, second.secret)
        self.assertEqual(len({first.id, second.id}), 2)
        for secret in (second.secret, "", None):
            with self.assertRaises(lb_core.Forbidden):
                self.registry.renew(first.id, secret)
            with self.assertRaises(lb_core.Forbidden):
                self.registry.end(first.id, secret, "failed")
        self.registry.end(first.id, first.secret, "done")
        self.assertEqual(self.registry.status()["peers"][0]["failed"], 0)


class TestPicksSpreadOverHosts(RegistryTestCase):
    """One host's many peers get the share of one host (a Sybil flood), not one share each."""

    def flood(self, count, host="10.6.6.6", files=(info("f"),)):
        """``count`` peers registered from ``host``, each claiming ``files``."""
        return [self.registry.register(host, 9000 + i, list(files), source=host)
                for i in range(count)]

    def test_held_picks_go_half_to_the_honest_host(self):
        self.make(max_per_host=200)
        self.flood(200)
        honest = self.registry.register("10.0.0.1", 7000, [info("f")], source="10.0.0.1")
        picked = [self.registry.pick("f", source="10.0.0.9").first.holder for _ in range(60)]
        self.assertEqual(sum(p.id == honest.id for p in picked), 30)
        flood_ids = [p.id for p in picked if p.id != honest.id]
        self.assertEqual(len(set(flood_ids)), 30)  # and spread over the flood's peers

    def test_released_picks_alternate_between_hosts(self):
        self.make(max_per_host=50)
        self.flood(50)
        honest = self.registry.register("10.0.0.1", 7000, [info("f")], source="10.0.0.1")
        seq = []
        for _ in range(60):
            transfer = self.registry.pick("f").first
            seq.append(transfer.holder.id == honest.id)
            self.registry.end(transfer.id, transfer.secret, "done")
        self.assertEqual(sum(seq), 30)
        self.assertTrue(all(a != b for a, b in zip(seq, seq[1:])), seq)  # round-robin

    def test_the_least_loaded_host_goes_first_then_its_least_loaded_peer(self):
        self.make()
        a1, a2 = self.flood(2, host="10.0.0.1")
        b = self.registry.register("10.0.0.2", 7000, [info("f")], source="10.0.0.2")
        self.registry.heartbeat(a1.id, a1.token, uploads=2)
        self.registry.heartbeat(b.id, b.token, uploads=1)
        # host A: 2 + 0 = 2 uploads, host B: 1. B first though a2 alone is idle.
        self.assertEqual(self.registry.pick("f").first.holder.id, b.id)
        # now 2 : 2, A picked less recently: its least-loaded peer, a2.
        self.assertEqual(self.registry.pick("f").first.holder.id, a2.id)

    def test_several_sources_come_from_several_hosts_first(self):
        self.make()
        crowd = self.flood(3, host="10.0.0.1")
        b = self.registry.register("10.0.0.2", 7000, [info("f")], source="10.0.0.2")
        c = self.registry.register("10.0.0.3", 7000, [info("f")], source="10.0.0.3")
        chosen = [t.holder for t in self.registry.pick("f", count=3).transfers]
        self.assertEqual({p.machine for p in chosen}, {"10.0.0.1", "10.0.0.2", "10.0.0.3"})
        five = {t.holder.id for t in self.registry.pick("f", count=5).transfers}
        self.assertEqual(five, {p.id for p in crowd} | {b.id, c.id})

    def test_a_host_cooling_down_comes_after_every_other_host(self):
        self.make()
        a1, a2 = self.flood(2, host="10.0.0.1")
        b = self.registry.register("10.0.0.2", 7000, [info("f")], source="10.0.0.2")
        failed = self.registry.pick("f", peer=(b.host, b.port), source="10.0.0.9").first
        self.registry.end(failed.id, failed.secret, "failed")
        chosen = [t.holder.id for t in self.registry.pick("f", count=3, source="10.0.0.9")
                  .transfers]
        self.assertEqual(chosen[2], b.id)
        self.assertEqual(set(chosen[:2]), {a1.id, a2.id})

    def test_round_robin_rotates_hosts_then_peers(self):
        self.make(policy="round-robin")
        a1, a2 = self.flood(2, host="10.0.0.1")
        b = self.registry.register("10.0.0.2", 7000, [info("f")], source="10.0.0.2")
        seq = [self.registry.pick("f").first.holder.id for _ in range(8)]
        self.assertEqual(seq.count(b.id), 4)
        self.assertTrue(all((x == b.id) != (y == b.id) for x, y in zip(seq, seq[1:])), seq)


class TestRegistrationsPerHost(RegistryTestCase):
    def test_a_host_may_register_at_most_max_per_host_peers(self):
        self.make(max_per_host=3)
        for i in range(3):  # whatever hosts it claims, they count against where it is
            self.registry.register(f"10.0.0.{i + 1}", 7000, [info("f")], source="10.6.6.6")
        with self.assertRaises(lb_core.HostFull) as cm:
            self.registry.register("10.0.0.9", 7000, [info("f")], source="10.6.6.6")
        self.assertEqual(cm.exception.status, 429)
        self.assertIn("10.6.6.6 already has 3 peers registered here", cm.exception.message)
        self.assertIn("--max-peers-per-host", cm.exception.message)
        self.registry.register("10.0.0.1", 7001, [], source="10.7.7.7")  # another host: fine

    def test_a_restart_at_the_same_address_is_not_one_more(self):
        self.make(max_per_host=2)
        first = self.registry.register("10.0.0.1", 7000, [], source="10.0.0.1")
        self.registry.register("10.0.0.1", 7001, [], source="10.0.0.1")
        again = self.registry.register("10.0.0.1", 7000, [], source="10.0.0.1")
        self.assertNotEqual(again.id, first.id)
        self.registry.unregister(again.id, again.token)
        self.registry.register("10.0.0.1", 7002, [], source="10.0.0.1")  # a place came free

    def test_silent_peers_free_their_places(self):
        self.make(max_per_host=1)
        self.registry.register("10.0.0.1", 7000, [], source="10.0.0.1")
        self.clock.advance(31)  # three heartbeats of 10 s missed
        self.registry.register("10.0.0.1", 7001, [], source="10.0.0.1")

    def test_the_default_bound_is_the_named_constant(self):
        self.make()
        for i in range(lb_core.MAX_PEERS_PER_HOST):
            self.registry.register("10.0.0.1", 7000 + i, [], source="10.0.0.1")
        with self.assertRaises(lb_core.HostFull):
            self.registry.register("10.0.0.1", 6000, [], source="10.0.0.1")


    def test_the_load_balancers_command_line_sets_the_bound(self):
        self.assertEqual(lb_main.parse_args([]).max_peers_per_host, lb_core.MAX_PEERS_PER_HOST)
        self.assertEqual(lb_main.parse_args(["--max-peers-per-host", "500"]).max_peers_per_host,
                         500)


class TestStandbyLoadBalancers(unittest.TestCase):
    """Two load balancers of one network (``--lb A,B``): each counts its own picks plus the
    uploads each holder reports to both, so each sees the other's picks once the holders
    have reported them, and its own at once."""

    def setUp(self):
        self.clock = FakeClock()
        self.lbs = [lb_core.Registry(clock=self.clock, heartbeat_s=10) for _ in range(2)]
        hosts = ("10.0.0.1", "10.0.0.2")
        self.holders = [[lb.register(host, 7000, [info("f")], source=host) for lb in self.lbs]
                        for host in hosts]  # [holder][load balancer] -> its record there

    def report(self, uploads):
        """Each holder heartbeats every load balancer with its own count of uploads."""
        for records, count in zip(self.holders, uploads):
            for lb, record in zip(self.lbs, records):
                lb.heartbeat(record.id, record.token, uploads=count)

    def loads(self, lb):
        return [p["active"] for p in lb.status()["peers"]]

    def test_each_counts_its_own_picks_and_learns_the_others_from_the_reports(self):
        a, b = self.lbs
        for _ in range(3):
            a.pick("f")  # a hands out 3: two to the first holder, one to the second
        self.assertEqual(self.loads(a), [2, 1])
        self.assertEqual(self.loads(b), [0, 0])  # b cannot know yet
        self.assertEqual(b.pick("f").first.holder.host, "10.0.0.1")  # so it may double up
        self.report([3, 1])  # the downloads connected: the holders say so to both
        self.assertEqual(self.loads(a), [3, 1])
        self.assertEqual(self.loads(b), [3, 1])
        self.assertEqual(b.pick("f").first.holder.host, "10.0.0.2")  # now b spreads too
        self.assertEqual(a.pick("f").first.holder.host, "10.0.0.2")
        self.assertEqual((self.loads(a), self.loads(b)), ([3, 2], [3, 2]))

    def test_a_report_replaces_the_picks_it_covers_and_later_picks_add_to_it(self):
        a, _ = self.lbs
        transfers = [a.pick("f", peer=("10.0.0.1", 7000)).first for _ in range(4)]
        self.report([1, 0])  # only one of the four connected so far
        self.assertEqual(self.loads(a), [1, 0])  # the report replaces the picks it covers
        a.pick("f", peer=("10.0.0.1", 7000))
        self.assertEqual(self.loads(a), [2, 0])  # reported uploads plus picks since
        for transfer in transfers:
            a.end(transfer.id, transfer.secret, "done")
        self.assertEqual(self.loads(a), [2, 0])  # ended picks the report covered: no change


class TestLimitsAgree(unittest.TestCase):
    def test_a_peers_body_holds_its_most_files_with_names_of_100_bytes(self):
        record = FileRecord("n" * 100, 10**12, sha("f"), sha("p")).as_dict()
        self.assertLessEqual(len(json.dumps(record)) + 2, lb_limits.FILE_RECORD_BUDGET_BYTES)
        self.assertGreaterEqual(lb_limits.MAX_PEER_BODY_BYTES,
                                lb_limits.MAX_FILES_PER_PEER * lb_limits.FILE_RECORD_BUDGET_BYTES)

    def test_a_refused_list_says_why_and_what_to_do(self):
        sentence = lb_requests.peer_body_too_large(40_000_000)
        self.assertIn("The list of files is 40,000,000 bytes", sentence)
        self.assertIn(f"{lb_limits.MAX_PEER_BODY_BYTES:,} bytes", sentence)
        self.assertIn("Share fewer files", sentence)


class TestPeersTable(unittest.TestCase):
    """``lb_peers.Peers`` alone: its indexes are emptied as peers leave."""

    def test_indexes_and_host_counts_leave_with_their_peers(self):
        table = lb_peers.Peers()
        records = []
        for i in range(3):
            peer, old = table.admit("10.0.0.1", 7000 + i, "10.0.0.1", 0.0)
            self.assertIsNone(old)
            table.add(peer)
            table.set_files(peer, [info("f"), info(f"own{i}")])
            table.set_partial(peer, [PartialRecord(info("g"), 10)])
            records.append(peer)
        self.assertEqual(table.per_host, {"10.0.0.1": 3})
        self.assertEqual(len(table.index["f"][info("f").key]), 3)
        for peer in records:
            table.remove(peer.id)
        self.assertEqual((table.index, table.partials, dict(table.per_host), len(table)),
                         ({}, {}, {}, 0))

    def test_a_changed_file_moves_in_the_index(self):
        table = lb_peers.Peers()
        peer, _ = table.admit("10.0.0.1", 7000, None, 0.0)
        table.add(peer)
        table.set_files(peer, [info("f", version=1)])
        table.set_files(peer, [info("f", version=2)])
        self.assertEqual(list(table.index["f"]), [info("f", version=2).key])


class TestParseAddress(unittest.TestCase):
    def test_valid(self):
        cases = {
            "example.org": ("example.org", None),
            "10.0.0.5:6969": ("10.0.0.5", 6969),
            "  10.0.0.5:80 ": ("10.0.0.5", 80),
            "[::1]:80": ("::1", 80),
            "[::1]": ("::1", None),
            "::1": ("::1", None),  # bare IPv6: no port
            "h:1": ("h", 1),
            "h:65535": ("h", 65535),
        }
        for text, expected in cases.items():
            with self.subTest(text=text):
                self.assertEqual(lb_core.parse_address(text), expected)
        self.assertEqual(lb_core.parse_address("host", default_port=6969), ("host", 6969))
        self.assertEqual(lb_core.parse_address("[fe80::2]", 7), ("fe80::2", 7))

    def test_invalid(self):
        for text in ["", "   ", "h:", ":80", "h:0", "h:65536", "h:-1", "h:http", "h:8o",
                     "[::1", "[::1]80", "[]:80", "a b:80", "h:99999999999999999999"]:
            with self.subTest(text=text):
                with self.assertRaises(ValueError) as cm:
                    lb_core.parse_address(text)
                self.assertTrue(str(cm.exception))

    def test_bracketed_host_with_empty_port_is_rejected_like_host_colon(self):
        # Regression (fixed in 6525336): "[::1]:" silently meant the default port, while
        # "h:" is an error.
        with self.assertRaises(ValueError):
            lb_core.parse_address("[::1]:")

    def test_non_ascii_digits_are_not_a_port(self):
        # Regression (fixed in 6525336): str.isdigit() accepted any Unicode digit, so
        # "h:\u0668\u0660" (Arabic-Indic) was port 80; "h:\u00b2" raised int()'s own message.
        with self.assertRaises(ValueError):
            lb_core.parse_address("h:\u0668\u0660")
        with self.assertRaises(ValueError) as cm:
            lb_core.parse_address("h:\u00b2")
        self.assertIn("port", str(cm.exception))

    def test_format_address_round_trip(self):
        for host, port in [("10.0.0.1", 80), ("::1", 6969), ("example.org", 1)]:
            self.assertEqual(lb_core.parse_address(lb_core.format_address(host, port)), (host, port))
        self.assertEqual(lb_core.format_address("::1", 80), "[::1]:80")


if __name__ == "__main__":
    unittest.main()


class TestBestOnHostsOfTheirOwn(unittest.TestCase):
    """``lb_picking.best`` ranks holders that are each on a host of their own as holders;
    that must be what ranking their hosts gives (``best_of_hosts``)."""

    def test_the_same_choice_as_ranking_hosts(self):
        rng = random.Random(16)
        record = info("f")
        for trial in range(150):
            found = []
            for i in range(rng.randint(1, 6)):
                peer = lb_peers.PeerRecord(f"p{i}", f"10.0.0.{i}", 7000, "t", 0.0)
                peer.uploads, peer.fresh = rng.randint(0, 2), rng.randint(0, 2)
                peer.last_pick = rng.choice([0, rng.randint(1, 5)])
                peer.slots = rng.choice([None, None, 3])
                done = rng.choice([None, None, rng.randint(1, 99)])
                found.append(picking.Candidate(peer, record, done, rng.random() < 0.2))
            free = [c for c in found if not c.peer.busy]
            if not free:
                continue
            for policy in picking.POLICIES:
                for count in (1, 2, 4):
                    with self.subTest(trial=trial, policy=policy, count=count):
                        chosen = picking.best("f", found, policy, count, lambda p: False)
                        self.assertEqual(
                            [c.peer.id for c in chosen],
                            [c.peer.id for c in picking.best_of_hosts(found, free, policy,
                                                                      count)])
