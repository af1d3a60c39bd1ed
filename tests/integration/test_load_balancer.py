"""Tests of load_balancer.py (and the httpkit plumbing under it).

Tier 1: ``Registry`` and the pure helpers, with a fake clock (no sockets, no time passes).
Tier 2: the HTTP API of ``LoadBalancerServer`` over real loopback sockets, via ``LBClient``,
        ``http.client`` and raw sockets.
Tier 3: ``python load_balancer.py`` as a subprocess.

Nothing sleeps to synchronise: the registry's clock is moved by hand, and every socket or
process wait has a deadline. Servers bind port 0 on 127.0.0.1.
"""

import collections
import hashlib
import http.client
import json
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

from p2p.http import server as httpkit
from p2p.net import lb_client
from p2p.core import registry as lb_core
from p2p.net import lb_server
from tests.support import ROOT, wait_for
from p2p.core.wire import MAX_NAME_CHARS, BadRecord, FileRecord, PartialRecord

DEADLINE_S = 5.0  # every socket or process wait here is bounded by this or a stated deadline

_quiet = logging.NullHandler()


def setUpModule():
    # The servers log expected errors (bad requests, timeouts); keep them off the test output.
    logging.getLogger("p2p").addHandler(_quiet)


def tearDownModule():
    logging.getLogger("p2p").removeHandler(_quiet)


# ---------------------------------------------------------------------------
# Helpers


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def sha(text):
    return hashlib.sha256(str(text).encode()).hexdigest()


def info(name, version=0, size=100):
    return FileRecord(name, size, sha(f"{name}#{version}"))


def wire(name, version=0, size=100):
    return info(name, version, size).as_dict()


def active_by_id(registry):
    return {p["id"]: p["active"] for p in registry.status()["peers"]}


# ---------------------------------------------------------------------------
# Tier 1: the registry and pure functions


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
        self.assertEqual(self.registry._partials, {})

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


class TestWireRecords(unittest.TestCase):
    """wire.py's records and lb_client's reading of refusals, without sockets."""

    def test_a_file_record_round_trips_and_bad_fields_are_named(self):
        record = FileRecord.parse({**wire("a/b.txt"), "pieces": sha("p")})
        self.assertEqual(FileRecord.parse(record.as_dict()), record)
        self.assertEqual(record.key, (sha("a/b.txt#0"), 100))
        self.assertNotIn("pieces", info("f").as_dict())
        for obj, needle in [([], "object"), ({"size": 1, "sha256": sha(1)}, "'name'"),
                            ({**wire("f"), "size": -1}, "negative"),
                            ({**wire("f"), "size": True}, "'size'"),
                            ({**wire("f"), "sha256": "ABC"}, "'sha256'"),
                            ({**wire("f"), "pieces": 5}, "'pieces'"),
                            ({**wire("f"), "name": "../x"}, "../x")]:
            with self.subTest(obj=obj), self.assertRaisesRegex(BadRecord, re.escape(needle)):
                FileRecord.parse(obj)

    def test_a_partial_record_says_its_verified_bytes_within_the_size(self):
        record = PartialRecord.parse({**wire("f"), "done": 100})
        self.assertEqual((record.done, record.key), (100, info("f").key))
        self.assertEqual(PartialRecord.parse(record.as_dict()), record)
        for done in (-1, 101, "1", None):
            with self.subTest(done=done), self.assertRaisesRegex(BadRecord, "'done'"):
                PartialRecord.parse({**wire("f"), "done": done})

    def test_refusals_become_the_error_the_caller_acts_on(self):
        versions = [{**wire("f", v), "holders": 1} for v in (1, 2)]
        cases = [(404, {}, lb_client.NotFound), (409, {"versions": versions}, lb_client.Ambiguous),
                 (409, {}, lb_client.LBClientError), (503, {}, lb_client.NoHolderLeft),
                 (503, {"busy": 3, "retry_after": 2}, lb_client.AllBusy),
                 (400, {}, lb_client.LBClientError)]
        for status, extra, kind in cases:
            with self.subTest(status=status, extra=extra):
                error = lb_client.refusal(status, {"error": "why", **extra},
                                          lb_client.NoHolderLeft)
                self.assertIs(type(error), kind)
                self.assertEqual((error.message, error.status), ("why", status))
        busy = lb_client.refusal(503, {"error": "why", "busy": 3, "retry_after": 2})
        self.assertEqual((busy.busy, busy.retry_after), (3, 2))
        self.assertEqual(lb_client.refusal(409, {"versions": versions}).versions, versions)
        self.assertEqual(lb_client.refusal(503, {"busy": 1, "retry_after": "x"}).retry_after,
                         lb_client.DEFAULT_RETRY_AFTER_S)

    def test_a_pick_is_read_from_its_sources_or_from_an_older_top_level_answer(self):
        peer = {"id": "p1", "host": "10.0.0.1", "port": 7000, "name": "alice"}
        answer = {"transfer_id": "t1", "secret": "s1", "peer": peer, "file": wire("f"),
                  "renew_s": 10}
        older = lb_client.Pick.parse(answer)
        self.assertEqual(older.leases, [lb_client.Lease("t1", "s1", "p1", "10.0.0.1", 7000,
                                                        "alice")])
        self.assertEqual((older.file, older.pieces, older.versions), (info("f"), None, []))
        second = {"transfer_id": "t2", "secret": "s2", "done": 37,
                  "peer": {"id": "p2", "host": "::1", "port": 7001}}
        pick = lb_client.Pick.parse({**answer, "pieces": sha("p"), "sources": [
            {**{k: answer[k] for k in ("transfer_id", "secret", "peer")}, "done": None}, second]})
        self.assertEqual([(lease.address, lease.done) for lease in pick.leases],
                         [("10.0.0.1:7000", None), ("[::1]:7001", 37)])
        self.assertEqual(pick.pieces, sha("p"))
        for broken in ({**answer, "renew_s": 0}, {**answer, "file": {}},
                       {**answer, "peer": {**peer, "port": "7000"}}):
            with self.subTest(broken=broken), self.assertRaises((KeyError, ValueError)):
                lb_client.Pick.parse(broken)


class TestConcurrency(RegistryTestCase):
    def test_many_threads_pick_and_end(self):
        registry = lb_core.Registry(clock=FakeClock(), cooldown_s=10.0)
        holders = [registry.register(f"10.0.0.{i}", 7000, [info("f"), info("g")]) for i in range(5)]
        threads_n, pairs = 8, 10_000
        errors, lowest = [], [0]
        done = threading.Event()
        start = threading.Barrier(threads_n + 1)

        def worker(seed):
            try:
                start.wait(DEADLINE_S)
                for i in range(pairs):
                    transfer = registry.pick("f" if (i + seed) % 2 else "g").first
                    outcome = "failed" if (i * 7 + seed) % 5 == 0 else "done"
                    registry.end(transfer.id, transfer.secret, outcome)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        def monitor():
            while not done.is_set():
                for p in registry.status()["peers"]:
                    lowest[0] = min(lowest[0], p["active"])

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(threads_n)]
        watcher = threading.Thread(target=monitor)
        for t in threads:
            t.start()
        watcher.start()
        start.wait(DEADLINE_S)
        for t in threads:
            t.join(60)
        done.set()
        watcher.join(DEADLINE_S)
        self.assertFalse(any(t.is_alive() for t in threads), "workers did not finish")
        self.assertEqual(errors, [])
        self.assertEqual(lowest[0], 0, "an active count went negative")
        status = registry.status()["peers"]
        self.assertEqual({p["id"]: p["active"] for p in status}, {p.id: 0 for p in holders})
        self.assertEqual(sum(p["served"] + p["failed"] for p in status), threads_n * pairs)
        self.assertEqual(sum(p["failed"] for p in status), threads_n * pairs // 5)


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


# ---------------------------------------------------------------------------
# Tier 2: the HTTP API over loopback


class CountingServer(lb_server.LoadBalancerServer):
    """A LoadBalancerServer that counts accepted and finished connections."""

    def __init__(self, *args, **kwargs):
        self.accepted = 0
        self.finished = 0
        self.connections = []
        self.cond = threading.Condition()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self.cond:
            self.accepted += 1
            self.connections.append(request)
        super().process_request(request, client_address)

    def drop_connections(self):
        """Cut every connection, as the death of the server process would."""
        with self.cond:
            for request in self.connections:
                try:
                    request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close_request(self, request):
        super().close_request(request)
        with self.cond:
            self.finished += 1
            self.cond.notify_all()

    def wait_finished(self, count, timeout=DEADLINE_S):
        with self.cond:
            return self.cond.wait_for(lambda: self.finished >= count, timeout)


class ServerTestCase(unittest.TestCase):
    server_kwargs = {}
    registry_kwargs = {}

    def setUp(self):
        self.clock = FakeClock()
        self.registry = lb_core.Registry(clock=self.clock, **self.registry_kwargs)
        self.server = self.start_server(self.registry, **self.server_kwargs)
        self.port = self.server.port
        self.client = lb_client.LBClient("127.0.0.1", self.port, timeout=DEADLINE_S)
        self.addCleanup(self.client.close)

    def start_server(self, registry, server_class=CountingServer, port=0, host="127.0.0.1",
                     **kwargs):
        server = server_class((host, port), registry, **kwargs)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()

        def stop():
            server.shutdown()
            server.server_close()
            thread.join(DEADLINE_S)

        self.addCleanup(stop)
        return server

    def connection(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE_S)
        self.addCleanup(conn.close)
        return conn

    def raw_socket(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE_S)
        self.addCleanup(sock.close)
        return sock

    def request(self, method, path, body=None, headers=None, conn=None):
        """One request; returns (response, raw body, parsed JSON or None)."""
        conn = conn or self.connection()
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        parsed = None
        if response.getheader("Content-Type", "").startswith("application/json") and raw:
            parsed = json.loads(raw)
        return response, raw, parsed

    def assert_serving(self, conn=None):
        """The server answers a good request (on ``conn`` if given, else a new connection)."""
        response, _, body = self.request("GET", "/status", conn=conn)
        self.assertEqual(response.status, 200)
        self.assertIn("peers", body)

    def assert_error(self, method, path, status, body=None, headers=None):
        """A request answered with ``status`` and a JSON error; the server keeps serving."""
        conn = self.connection()
        response, raw, parsed = self.request(method, path, body, headers, conn=conn)
        self.assertEqual(response.status, status, raw)
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertIsInstance(parsed, dict)
        self.assertIsInstance(parsed.get("error"), str)
        self.assertTrue(parsed["error"].strip())
        if not response.will_close:
            self.assert_serving(conn)  # the same keep-alive connection is still in step
        self.assert_serving()
        return response, parsed

    def register(self, files=(), port=7000, host=None):
        return self.client.register(port, [wire(f) if isinstance(f, str) else f for f in files],
                                    host=host)


def select_readable(sock, timeout):
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def status_or_error(server_port, method, path, body=None):
    """The status of one request on a fresh connection, or the exception's repr."""
    conn = http.client.HTTPConnection("127.0.0.1", server_port, timeout=DEADLINE_S)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as e:
        return repr(e)
    finally:
        conn.close()


class TestRoutes(ServerTestCase):
    def test_register_heartbeat_unregister(self):
        conn = self.connection()
        response, _, body = self.request("POST", "/peers", {"port": 7001, "files": [wire("a.txt")]},
                                         conn=conn)
        self.assertEqual(response.status, 201)
        self.assertLessEqual({"peer_id", "token", "heartbeat_s"}, set(body))
        self.assertEqual(body["host"], "127.0.0.1")  # defaults to the TCP source address
        self.assertEqual(body["heartbeat_s"], self.registry.heartbeat_s)
        auth = {"Authorization": f"Bearer {body['token']}"}
        response, _, hb = self.request("PUT", f"/peers/{body['peer_id']}",
                                       {"files": [wire("b.txt")], "uploads": 2}, auth, conn=conn)
        self.assertEqual(response.status, 200)
        self.assertIsInstance(hb, dict)
        peer = self.registry.status()["peers"][0]
        self.assertEqual((peer["files"], peer["uploads"]), (["b.txt"], 2))
        response, raw, _ = self.request("DELETE", f"/peers/{body['peer_id']}", headers=auth,
                                        conn=conn)
        self.assertEqual((response.status, raw), (204, b""))
        self.assertEqual(self.registry.status()["peers"], [])
        self.assertEqual(self.server.accepted, 1)

    def test_register_with_explicit_host(self):
        answer = self.register(["a"], port=7002, host="peer.example")
        self.assertEqual(answer["host"], "peer.example")
        peer = self.registry.status()["peers"][0]
        self.assertEqual((peer["host"], peer["port"]), ("peer.example", 7002))

    def test_files_query(self):
        self.register(["Holiday.zip", "notes.txt"], port=7001)
        self.register(["holiday.zip"], port=7002)
        response, _, body = self.request("GET", "/files?q=HOLI")
        self.assertEqual(response.status, 200)
        self.assertEqual([(f["name"], f["holders"]) for f in body["files"]],
                         [("Holiday.zip", 1), ("holiday.zip", 1)])
        self.assertEqual(set(body["files"][0]), {"name", "size", "sha256", "holders", "partial"})
        _, _, body = self.request("GET", "/files")
        self.assertEqual(len(body["files"]), 3)
        _, _, body = self.request("GET", "/files?q=" + "notes%20")
        self.assertEqual(body["files"], [])

    def test_transfer_lifecycle(self):
        a = self.register(["movie.mkv"], port=7001)
        conn = self.connection()
        response, _, body = self.request("POST", "/transfers", {"name": "movie.mkv"}, conn=conn)
        self.assertEqual(response.status, 201)
        self.assertEqual(body["peer"], {"id": a["peer_id"], "name": "", "host": "127.0.0.1",
                                        "port": 7001})
        self.assertEqual(body["file"], wire("movie.mkv"))
        self.assertEqual(body["renew_s"], self.registry.renew_s)
        tid = body["transfer_id"]
        secret = {"Authorization": f"Bearer {body['secret']}"}
        self.assertEqual(self.registry.status()["peers"][0]["active"], 1)
        for headers in ({}, {"Authorization": "Bearer nope"}):
            self.assert_error("PUT", f"/transfers/{tid}", 403, None, headers)
            self.assert_error("DELETE", f"/transfers/{tid}?outcome=failed", 403, None, headers)
        response, _, _ = self.request("PUT", f"/transfers/{tid}", conn=conn, headers=secret)
        self.assertEqual(response.status, 200)
        response, raw, _ = self.request("DELETE", f"/transfers/{tid}?outcome=failed", conn=conn,
                                        headers=secret)
        self.assertEqual((response.status, raw), (204, b""))
        peer = self.registry.status()["peers"][0]
        self.assertEqual((peer["active"], peer["failed"]), (0, 1))
        _, _, body = self.request("POST", "/transfers", {"name": "movie.mkv"}, conn=conn)
        response, _, _ = self.request("DELETE", f"/transfers/{body['transfer_id']}", conn=conn,
                                      headers={"Authorization": f"Bearer {body['secret']}"})
        self.assertEqual(response.status, 204)
        self.assertEqual(self.registry.status()["peers"][0]["served"], 1)  # default outcome: done

    def test_transfer_options_over_http(self):
        a = self.register([wire("f", 1)], port=7001)
        b = self.register([wire("f", 1)], port=7002)
        c = self.register([wire("f", 2)], port=7003)
        _, body = self.assert_error("POST", "/transfers", 409, {"name": "f"})
        self.assertEqual({v["sha256"] for v in body["versions"]}, {info("f", 1).sha256,
                                                                  info("f", 2).sha256})
        for request, expected in [
            ({"sha256": info("f", 2).sha256}, c["peer_id"]),
            ({"sha256": info("f", 1).sha256, "peer": "127.0.0.1:7002"}, b["peer_id"]),
            ({"sha256": info("f", 1).sha256, "exclude": [b["peer_id"]]}, a["peer_id"]),
            ({"sha256": info("f", 1).sha256, "requester": a["peer_id"]}, b["peer_id"]),
        ]:
            response, _, body = self.request("POST", "/transfers", {"name": "f", **request})
            self.assertEqual(response.status, 201, body)
            self.assertEqual(body["peer"]["id"], expected, request)

    def test_status_json_shape(self):
        a = self.register(["x", "y"], port=7001)
        self.client.pick("x")  # counted until a's next report of its uploads
        self.client.heartbeat(a["peer_id"], a["token"], uploads=4)
        self.client.pick("x")
        response, _, body = self.request("GET", "/status")
        self.assertEqual(response.status, 200)
        self.assertEqual(body["policy"], "least-connections")
        (peer,) = body["peers"]
        self.assertTrue(set(peer) >= {"id", "host", "port", "files", "active", "uploads",
                                      "served", "last_seen_s"}, peer)
        self.assertEqual(peer["id"], a["peer_id"])
        self.assertEqual((peer["host"], peer["port"]), ("127.0.0.1", 7001))
        self.assertEqual(peer["files"], ["x", "y"])
        self.assertEqual((peer["active"], peer["uploads"], peer["served"]), (5, 4, 0))
        self.assertIsInstance(peer["last_seen_s"], (int, float))

    def test_html_page_lists_peer_and_escapes_names(self):
        hostile = "x'onmouseover='alert(1).txt"  # names cannot hold <>: attributes are the risk
        self.register([hostile, "plain & simple.txt"], port=7001)
        self.register(["z"], port=7002, host="<script>alert(2)</script>")
        response, raw, _ = self.request("GET", "/")
        self.assertEqual(response.status, 200)
        self.assertTrue(response.getheader("Content-Type").startswith("text/html"))
        page = raw.decode("utf-8")
        self.assertEqual(int(response.getheader("Content-Length")), len(raw))
        self.assertIn("127.0.0.1:7001", page)
        self.assertIn("x&#x27;onmouseover=&#x27;alert(1).txt", page)
        self.assertIn("&lt;script&gt;alert(2)&lt;/script&gt;", page)
        self.assertIn("plain &amp; simple.txt", page)
        self.assertNotIn("<script", page.lower())

    def test_html_page_with_no_peers(self):
        response, raw, _ = self.request("GET", "/")
        self.assertEqual(response.status, 200)
        self.assertIn(b"No peer", raw)

    def test_keep_alive_reuses_one_connection(self):
        conn = self.connection()
        self.request("GET", "/status", conn=conn)
        sock = conn.sock
        self.assertIsNotNone(sock)
        a = self.request("POST", "/peers", {"port": 7001, "files": [wire("f")]}, conn=conn)[2]
        for method, path, body in [
            ("GET", "/files?q=f", None),
            ("POST", "/transfers", {"name": "f"}),
            ("GET", "/", None),
            ("PUT", f"/peers/{a['peer_id']}", {}),
            ("GET", "/status", None),
        ]:
            headers = {"Authorization": f"Bearer {a['token']}"} if method == "PUT" else {}
            response, _, _ = self.request(method, path, body, headers, conn=conn)
            self.assertLess(response.status, 300, (method, path))
            self.assertFalse(response.will_close)
            self.assertIs(conn.sock, sock)
        self.assertEqual(self.server.accepted, 1)


    def test_keep_alive_requests_do_not_stall(self):
        # Nagle + delayed ACK on a reply sent in two writes costs ~40 ms a request; 100
        # round trips normally take a few tens of milliseconds in all.
        self.register(["f"])
        self.client.status()
        started = time.monotonic()
        for _ in range(50):
            self.client.end(self.client.pick("f").leases[0])
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 2.0, f"100 keep-alive requests took {elapsed:.2f} s")
        self.assertEqual(self.server.accepted, 1)


class TestErrors(ServerTestCase):
    def test_malformed_json(self):
        for body in [b"{not json", b"\xff\xfe\xfa", b"[1, 2]", b'"text"', b"{"]:
            with self.subTest(body=body):
                self.assert_error("POST", "/peers", 400, body)
        self.assert_error("POST", "/transfers", 400, b"{,}")

    def test_wrong_types(self):
        cases = [
            {"port": "7000"},
            {"port": True},
            {"port": 7000.5},
            {},
            {"port": 0},
            {"port": 70000},
            {"port": 7000, "host": ""},
            {"port": 7000, "host": "a b"},
            {"port": 7000, "files": "f"},
            {"port": 7000, "files": [{"name": "f", "size": -1, "sha256": sha("f")}]},
            {"port": 7000, "files": [{"name": "f", "size": "1", "sha256": sha("f")}]},
            {"port": 7000, "files": [{"name": "f", "size": 1, "sha256": "zz" * 32}]},
            {"port": 7000, "files": [{"name": "f", "size": 1, "sha256": sha("f")[:-1]}]},
            {"port": 7000, "files": [{"name": "f", "size": 1}]},
            {"port": 7000, "files": [wire("f"), wire("f", 2)]},
            {"port": 7000, "files": ["f"]},
        ]
        for body in cases:
            with self.subTest(body=body):
                self.assert_error("POST", "/peers", 400, body)
        self.assertEqual(self.registry.status()["peers"], [])

    def test_bad_names(self):
        self.register(["ok"], port=7001)
        for name in ["", "x" * (MAX_NAME_CHARS + 1), "bad\nname", "tab\tname", "CON",
                     "NUL.txt", "a:b", "dot.", "space ", "a*b", "a?b", "a<b>", "a|b"]:
            with self.subTest(name=name[:20]):
                self.assert_error("POST", "/peers", 400,
                                  {"port": 7002, "files": [{"name": name, "size": 1,
                                                            "sha256": sha(name)}]})
                self.assert_error("POST", "/transfers", 400, {"name": name})
        # exactly the limit is fine
        long_name = "y" * MAX_NAME_CHARS
        self.register([long_name], port=7003)
        response, _, _ = self.request("POST", "/transfers", {"name": long_name})
        self.assertEqual(response.status, 201)

    def test_bad_transfer_requests(self):
        self.register(["f"], port=7001)
        for body in [{"name": 5}, {}, {"name": "f", "sha256": "abc"}, {"name": "f", "peer": 5},
                     {"name": "f", "peer": "h:notaport"}, {"name": "f", "exclude": "x"},
                     {"name": "f", "exclude": [1]}, {"name": "f", "requester": 3},
                     {"name": "f", "exclude": ["x"] * (lb_core.MAX_EXCLUDE + 1)}]:
            with self.subTest(body=body):
                self.assert_error("POST", "/transfers", 400, body)
        _, _, body = self.request("POST", "/transfers", {"name": "f"})
        self.assert_error("DELETE", f"/transfers/{body['transfer_id']}?outcome=maybe", 400)

    def test_heartbeat_bad_fields(self):
        a = self.register(["f"], port=7001)
        auth = {"Authorization": f"Bearer {a['token']}"}
        for body in [{"uploads": -1}, {"uploads": "2"}, {"files": None}, {"files": [1]}]:
            with self.subTest(body=body):
                self.assert_error("PUT", f"/peers/{a['peer_id']}", 400, body, auth)

    def test_forbidden(self):
        a = self.register(["f"], port=7001)
        path = f"/peers/{a['peer_id']}"
        self.assert_error("PUT", path, 403, {}, {"Authorization": f"Bearer {a['token']}x"})
        self.assert_error("PUT", path, 403, {}, {"Authorization": f"Basic {a['token']}"})
        self.assert_error("PUT", path, 403, {})
        self.assert_error("DELETE", path, 403, None, {"Authorization": "Bearer nope"})
        self.assertEqual(len(self.registry.status()["peers"]), 1)

    def test_not_found(self):
        self.register(["f"], port=7001)
        self.assert_error("PUT", "/peers/0123456789ab", 404, {},
                          {"Authorization": "Bearer whatever"})
        self.assert_error("DELETE", "/peers/0123456789ab", 404, None,
                          {"Authorization": "Bearer whatever"})
        self.assert_error("PUT", "/transfers/feedfacefeedface", 404)
        self.assert_error("DELETE", "/transfers/feedfacefeedface?outcome=done", 404)
        self.assert_error("GET", "/nowhere", 404)
        self.assert_error("GET", "/peers/a/b", 404)
        _, body = self.assert_error("POST", "/transfers", 404, {"name": "missing.bin"})
        self.assertIn("missing.bin", body["error"])
        self.assert_error("POST", "/transfers", 404, {"name": "f", "peer": "10.9.9.9"})

    def test_method_not_allowed_with_allow_header(self):
        for method, path, allow in [("GET", "/peers", {"POST"}),
                                    ("DELETE", "/status", {"GET", "HEAD"}),
                                    ("POST", "/", {"GET", "HEAD"}),
                                    ("GET", "/transfers/abc", {"PUT", "DELETE"}),
                                    ("POST", "/peers/abc", {"PUT", "DELETE"}),
                                    ("PATCH", "/files", {"GET", "HEAD"})]:
            with self.subTest(method=method, path=path):
                response, _ = self.assert_error(method, path, 405,
                                                b"{}" if method == "POST" else None)
                self.assertEqual({m.strip() for m in response.getheader("Allow").split(",")},
                                 allow)

    def test_conflict(self):
        self.register([wire("same", 1)], port=7001)
        self.register([wire("same", 2)], port=7002)
        _, body = self.assert_error("POST", "/transfers", 409, {"name": "same"})
        self.assertEqual(len(body["versions"]), 2)

    def test_all_excluded_is_unavailable(self):
        a = self.register(["f"], port=7001)
        b = self.register(["f"], port=7002)
        self.assert_error("POST", "/transfers", 503,
                          {"name": "f", "exclude": [a["peer_id"], b["peer_id"]]})

    def test_over_size_body(self):
        sock = self.raw_socket()
        sock.sendall(("POST /peers HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {httpkit.DEFAULT_MAX_BODY_BYTES + 1}\r\n\r\n").encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = json.loads(response.read())
        self.assertEqual(response.status, 413)
        self.assertTrue(body["error"])
        self.assertEqual(sock.recv(1), b"")  # and it closed the connection
        self.assert_serving()

    def test_error_that_closes_the_connection_says_so(self):
        # Regression (fixed in 6525336): after a 400/411/413 about the framing the server
        # closed the connection without saying "Connection: close", so a keep-alive client
        # believed it could send its next request on it.
        sock = self.raw_socket()
        sock.sendall(("POST /peers HTTP/1.1\r\nHost: lb\r\n"
                      f"Content-Length: {httpkit.DEFAULT_MAX_BODY_BYTES + 1}\r\n\r\n").encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        self.assertEqual(response.status, 413)
        self.assertEqual((response.getheader("Connection") or "").lower(), "close")

    def test_bad_framing(self):
        for head, status in [
            ("POST /peers HTTP/1.1\r\nHost: lb\r\nContent-Length: lots\r\n\r\n", 400),
            ("POST /peers HTTP/1.1\r\nHost: lb\r\nContent-Length: -5\r\n\r\n", 400),
            ("POST /peers HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
            ("GET /status HTTP/1.1\r\n" + "X-Pad: 1\r\n" * 101 + "\r\n", 431),
            ("OPTIONS /status HTTP/1.1\r\nHost: lb\r\n\r\n", 501),
        ]:
            with self.subTest(head=head[:40]):
                sock = self.raw_socket()
                sock.sendall(head.encode())
                response = http.client.HTTPResponse(sock)
                response.begin()
                self.assertEqual(response.status, status)
                self.assertTrue(json.loads(response.read())["error"])
                self.assert_serving()

    def test_content_length_must_be_plain_digits_and_unambiguous(self):
        # BUG (httpkit.py, JSONRequestHandler.read_body): Content-Length is parsed with int(),
        # which also takes "+58" and "5_8", and only the first of two different
        # Content-Length headers is looked at. RFC 9112 (section 6.3) makes each of these an
        # unrecoverable framing error (400, close): a proxy in front may frame the message
        # differently (request smuggling). Fix: require re.fullmatch(r"[0-9]+", raw) and
        # reject differing duplicates (self.headers.get_all("Content-Length")).
        body = json.dumps({"port": 7001, "files": []}).encode()
        n = len(body)
        for lengths in [[f"+{n}"], [f"{n // 10}_{n % 10}"], [str(n), str(n + 5)]]:
            with self.subTest(lengths=lengths):
                sock = self.raw_socket()
                sock.sendall(("POST /peers HTTP/1.1\r\nHost: lb\r\n"
                              + "".join(f"Content-Length: {x}\r\n" for x in lengths)
                              + "\r\n").encode() + body)
                response = http.client.HTTPResponse(sock)
                response.begin()
                self.assertEqual(response.status, 400, json.loads(response.read()))
        self.assertEqual(self.registry.status()["peers"], [])

    def test_garbage_request_line_gets_an_error_and_a_close(self):
        # http.server answers a request line whose version it cannot read the HTTP/0.9 way
        # (body only, no status line); what matters is a JSON error, a close, and no harm.
        for head in ["this is not http\r\n\r\n", "GET /status HTTP/7.0\r\n\r\n",
                     "GET /" + "a" * 70_000 + " HTTP/1.1\r\n\r\n"]:
            with self.subTest(head=head[:30]):
                sock = self.raw_socket()
                sock.sendall(head.encode())
                data = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.assertIn(b'{"error":"', data)
                self.assert_serving()

    def test_unexpected_exception_is_a_500_and_server_keeps_serving(self):
        # Regression (fixed in 6525336): httpkit's docstring promised "everything else that
        # escapes a handler is a 500", but the connection was dropped with no answer.
        class Broken(lb_core.Registry):
            def find_files(self, *args, **kwargs):
                raise RuntimeError("boom")

        server = self.start_server(Broken(clock=FakeClock()))
        result = status_or_error(server.port, "GET", "/files")
        self.assertEqual(result, 500, "an unexpected error should be answered 500 JSON")
        self.assertEqual(status_or_error(server.port, "GET", "/status"), 200)

    def test_deeply_nested_json_is_a_400(self):
        # Regression (fixed in 6525336): json.loads raises RecursionError (not ValueError)
        # on deeply nested input; it escaped the handler and the client got no answer.
        result = status_or_error(self.port, "POST", "/peers", b"[" * 100_000)
        self.assertEqual(result, 400)
        self.assert_serving()

    def test_lone_surrogate_in_file_name_does_not_break_status(self):
        # Regression (fixed in 6525336): a file name with a lone surrogate ("\ud800" in
        # JSON) was accepted; afterwards every GET /status, GET /files and GET / failed
        # (UnicodeEncodeError in encode_json, connection dropped) until that peer left.
        body = ('{"port": 7001, "files": [{"name": "x\\ud800y", "size": 1, "sha256": "%s"}]}'
                % sha("x")).encode()
        registered = status_or_error(self.port, "POST", "/peers", body)
        self.assertIn(registered, (201, 400))
        for path in ["/status", "/files", "/"]:
            self.assertEqual(status_or_error(self.port, "GET", path), 200, path)

    def test_lone_surrogate_in_host_does_not_break_status(self):
        # Regression (fixed in 6525336): the same through "host".
        body = b'{"port": 7001, "host": "h\\udc80"}'
        self.assertIn(status_or_error(self.port, "POST", "/peers", body), (201, 400))
        for path in ["/status", "/"]:
            self.assertEqual(status_or_error(self.port, "GET", path), 200, path)

    def test_body_of_unrouted_method_is_consumed(self):
        # Regression (fixed in 6525336): the body was read only for POST/PUT/DELETE; a
        # PATCH (405) or GET with a body left it in the stream, and the next request on that
        # keep-alive connection was parsed starting with it (501).
        for method in ["PATCH", "GET"]:
            with self.subTest(method=method):
                conn = self.connection()
                response, _, _ = self.request(method, "/status", b'{"x": 1}', conn=conn)
                self.assertIn(response.status, (200, 405))
                if not response.will_close:
                    self.assert_serving(conn)

    def test_expect_100_continue_is_answered(self):
        # Regression (fixed in 6525336): http.server wrote the interim "100 Continue" into
        # the buffered wfile and never flushed it, so a client that waits for it (curl does,
        # for larger bodies) stalled until its own timeout.
        body = json.dumps({"port": 7001, "files": [wire("f")]}).encode()
        sock = self.raw_socket()
        sock.settimeout(1.0)
        sock.sendall((f"POST /peers HTTP/1.1\r\nHost: lb\r\nContent-Length: {len(body)}\r\n"
                      "Expect: 100-continue\r\n\r\n").encode())
        try:
            interim = sock.recv(64)
        except TimeoutError:
            interim = b"(nothing within 1 s)"
        self.assertTrue(interim.startswith(b"HTTP/1.1 100"), interim)
        sock.settimeout(DEADLINE_S)
        sock.sendall(body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        self.assertEqual(response.status, 201)
        self.assertEqual(len(self.registry.status()["peers"]), 1)

    def test_expect_100_continue_with_over_size_body_is_refused_at_once(self):
        sock = self.raw_socket()
        sock.sendall(("POST /peers HTTP/1.1\r\nHost: lb\r\nExpect: 100-continue\r\n"
                      f"Content-Length: {httpkit.DEFAULT_MAX_BODY_BYTES + 1}\r\n\r\n").encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        self.assertEqual(response.status, 413)
        self.assertTrue(json.loads(response.read())["error"])
        self.assertTrue(response.will_close)
        self.assert_serving()

    def test_lone_surrogate_in_requested_peer_is_answered(self):
        # BUG (load_balancer.py, parse_transfer_request / LBHandler.handle_request): the
        # "peer" field is not checked like register's "host", so "h\ud800" reaches the
        # NotFound sentence ("h\ud800 does not share ..."); encoding that answer raises
        # UnicodeEncodeError inside the `except LBError` clause, which the new
        # `except Exception` beside it does not catch: the client gets no answer at all.
        self.register(["f"], port=7001)
        for peer in ["h\\ud800", "h\\ud800:80", "[\\udc80]:80"]:
            with self.subTest(peer=peer):
                body = ('{"name": "f", "peer": "%s"}' % peer).encode()
                result = status_or_error(self.port, "POST", "/transfers", body)
                self.assertIn(result, (400, 404), "the requester should get an answer")
        self.assert_serving()


class TestRobustness(ServerTestCase):
    def test_stalled_client_does_not_block_others(self):
        stalled = self.raw_socket()
        stalled.sendall(b"GET /status HTTP/1.1\r\nHost: lb\r\n")  # half the headers
        stalled_body = self.raw_socket()
        stalled_body.sendall(b"POST /peers HTTP/1.1\r\nHost: lb\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        self.assert_serving()  # 5 s socket timeout on this client
        self.register(["f"])
        self.assertLess(time.monotonic() - started, DEADLINE_S)

    def test_server_times_out_a_silent_client(self):
        server = self.start_server(lb_core.Registry(clock=FakeClock()), timeout=0.3)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: lb\r\n")
        started = time.monotonic()
        self.assertEqual(sock.recv(1024), b"")  # closed by the server, long before 5 s
        self.assertLess(time.monotonic() - started, DEADLINE_S)
        self.assertTrue(server.wait_finished(1))

    def test_connection_limit_refuses_with_503_only_when_no_connection_is_idle(self):
        server = self.start_server(lb_core.Registry(clock=FakeClock()), max_connections=1)
        idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=DEADLINE_S)
        self.addCleanup(idle.close)
        idle.request("GET", "/status")
        reply = idle.getresponse()
        reply.read()
        self.assertEqual(reply.status, 200)  # this keep-alive connection holds the only place
        wait_for(lambda: not any(c.busy for c in list(server._conns.values())),
                 what="the worker to give the connection back")
        self.assertEqual(status_or_error(server.port, "GET", "/status"), 200)  # it made room
        self.assertTrue(server.wait_finished(2))  # the idle one, and that one
        busy = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
        self.addCleanup(busy.close)
        busy.sendall(b"POST /peers HTTP/1.1\r\nHost: lb\r\nContent-Length: %d\r\n\r\n"
                     % (httpkit.MAX_BUFFERED_BODY_BYTES + 1))  # a worker waits for the body
        wait_for(lambda: server._conns and all(c.busy for c in list(server._conns.values())),
                 what="a worker to take the request")
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: lb\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        self.assertEqual(response.status, 503)
        self.assertTrue(response.getheader("Retry-After"))
        self.assertTrue(json.loads(response.read())["error"])
        busy.close()  # frees the place
        self.assertTrue(server.wait_finished(4))  # and the refused one
        self.assertEqual(status_or_error(server.port, "GET", "/status"), 200)


class TestClient(ServerTestCase):
    def test_full_cycle(self):
        a = self.client.register(7001, [wire("song.ogg")])
        b = self.client.register(7002, [wire("song.ogg")], host="127.0.0.2")
        self.assertLessEqual({"peer_id", "token", "heartbeat_s"}, set(a))
        self.assertEqual(self.client.heartbeat(a["peer_id"], a["token"], uploads=1)["heartbeat_s"],
                         self.registry.heartbeat_s)
        files = self.client.files("SONG")["files"]
        self.assertEqual([(f["name"], f["holders"]) for f in files], [("song.ogg", 2)])
        (t,) = self.client.pick("song.ogg", exclude=[b["peer_id"]]).leases
        self.assertEqual(t.peer_id, a["peer_id"])
        (t2,) = self.client.pick("song.ogg", sha256=sha("song.ogg#0"), peer="127.0.0.2:7002").leases
        self.assertEqual((t2.peer_id, t2.address, t2.done), (b["peer_id"], "127.0.0.2:7002", None))
        self.assertIsNone(self.client.renew(t))
        self.client.end(t, "done")
        self.client.end(t2, "failed")
        peers = {p["id"]: p for p in self.client.status()["peers"]}
        self.assertEqual((peers[a["peer_id"]]["served"], peers[b["peer_id"]]["failed"]), (1, 1))
        self.client.unregister(b["peer_id"], b["token"])
        self.assertEqual([p["id"] for p in self.client.status()["peers"]], [a["peer_id"]])
        self.assertEqual(self.server.accepted, 1)  # all over one keep-alive connection
        self.assertEqual(self.client.address, f"127.0.0.1:{self.port}")

    def test_errors_carry_the_servers_sentence_and_status(self):
        a = self.client.register(7001, [wire("f")])
        raw = self.request("PUT", f"/peers/{a['peer_id']}", {},
                           {"Authorization": "Bearer wrong"})[2]
        with self.assertRaises(lb_client.LBClientError) as cm:
            self.client.heartbeat(a["peer_id"], "wrong")
        self.assertNotIsInstance(cm.exception, lb_client.Unreachable)
        self.assertEqual(cm.exception.status, 403)
        self.assertEqual(cm.exception.message, raw["error"])
        self.assertEqual(str(cm.exception), raw["error"])
        unknown = lb_client.Lease("ffff", "s", "p", "127.0.0.1", 1)
        for call, status, error in [
                (lambda: self.client.pick("nope"), 404, lb_client.NotFound),
                (lambda: self.client.heartbeat("0123456789ab", "t"), 404, lb_client.NotFound),
                (lambda: self.client.end(unknown), 404, lb_client.NotFound),
                (lambda: self.client.pick("f", exclude=[a["peer_id"]]), 503,
                 lb_client.NoHolderLeft),
                (lambda: self.client.register(0, []), 400, lb_client.LBClientError)]:
            with self.assertRaises(error) as cm:
                call()
            self.assertEqual(cm.exception.status, status)
            self.assertTrue(cm.exception.message)
        self.client.register(7002, [wire("f", 2)])
        with self.assertRaises(lb_client.Ambiguous) as cm:
            self.client.pick("f")
        self.assertEqual(cm.exception.status, 409)
        self.assertEqual(len(cm.exception.versions), 2)

    def test_unreachable_when_nothing_listens(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        started = time.monotonic()
        with self.assertRaises(lb_client.Unreachable) as cm:
            client.status()
        self.assertLess(time.monotonic() - started, DEADLINE_S)
        self.assertIn(f"127.0.0.1:{port}", cm.exception.message)
        self.assertIsInstance(cm.exception, lb_client.LBClientError)

    def test_unreachable_when_something_else_answers(self):
        import http.server

        class NotALoadBalancer(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"<html>hello</html>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotALoadBalancer)
        threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.addCleanup(other.server_close)
        self.addCleanup(other.shutdown)
        client = lb_client.LBClient("127.0.0.1", other.server_address[1], timeout=DEADLINE_S)
        self.addCleanup(client.close)
        with self.assertRaises(lb_client.Unreachable):
            client.status()

    def test_reconnects_once_after_server_closed_keep_alive(self):
        server = self.start_server(lb_core.Registry(clock=FakeClock()), timeout=0.2)
        client = lb_client.LBClient("127.0.0.1", server.port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        client.register(7001, [wire("f")])
        # The server drops the idle keep-alive connection after 0.2 s.
        self.assertTrue(server.wait_finished(1))
        self.assertEqual(server.accepted, 1)
        self.assertEqual(len(client.status()["peers"]), 1)  # no error: reconnected
        self.assertEqual(server.accepted, 2)

    def test_reconnects_after_server_restart(self):
        registry = lb_core.Registry(clock=FakeClock())
        first = CountingServer(("127.0.0.1", 0), registry)
        port = first.port
        thread = threading.Thread(target=first.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        peer = client.register(7001, [])
        first.shutdown()
        first.server_close()
        first.drop_connections()  # the client's keep-alive connection dies with the server
        self.assertTrue(first.wait_finished(1))
        thread.join(DEADLINE_S)
        with self.assertRaises(lb_client.Unreachable):
            lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S).status()
        second = self.start_server(lb_core.Registry(clock=FakeClock()), port=port)
        self.assertEqual(second.port, port)
        with self.assertRaises(lb_client.LBClientError) as cm:  # the new registry does not know us
            client.heartbeat(peer["peer_id"], peer["token"])
        self.assertNotIsInstance(cm.exception, lb_client.Unreachable)
        self.assertEqual(cm.exception.status, 404)
        self.assertEqual(second.accepted, 1)


# ---------------------------------------------------------------------------
# Tier 3: the command line


LISTENING_RE = re.compile(r"listening on (\S+):(\d+)$")


def read_line(stream, deadline_s):
    """The first line of a pipe, waiting at most ``deadline_s``; b'' on EOF or timeout."""
    fd = stream.fileno()
    data = b""
    end = time.monotonic() + deadline_s
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = end - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                break
            chunk = os.read(fd, 1)
            if not chunk:
                break
            data += chunk
    return data


class TestSwarmWire(ServerTestCase):
    """The swarm's fields through the real handler and LBClient."""

    def partial(self, name="f", done=37, **fields):
        return {**wire(name), "pieces": sha("pieces"), "done": done, **fields}

    def test_slots_and_partial_are_announced_and_shown(self):
        a = self.client.register(7001, [wire("f")], slots=3)
        b = self.client.register(7002, [], host="127.0.0.2", slots=2,
                                 partial=[self.partial(done=0)])
        self.client.heartbeat(b["peer_id"], b["token"], partial=[self.partial(done=37)])
        status = self.client.status()
        peers = {p["id"]: p for p in status["peers"]}
        self.assertEqual((peers[a["peer_id"]]["slots"], peers[a["peer_id"]]["partial"]), (3, []))
        self.assertEqual(peers[b["peer_id"]]["partial"],
                         [{"name": "f", "sha256": sha("f#0"), "size": 100, "done": 37}])
        self.assertGreaterEqual(status["requests"], 3)  # the two registrations and the heartbeat
        self.assertGreater(self.client.status()["requests"], status["requests"])
        (entry,) = self.client.files("f")["files"]
        self.assertEqual((entry["holders"], entry["partial"]), (1, 1))
        _, page, _ = self.request("GET", "/")
        self.assertIn("downloading f 37 %", page.decode())

    def test_count_answers_sources_and_the_agreed_piece_list(self):
        pieces = sha("pieces")
        a = self.client.register(7001, [{**wire("f"), "pieces": pieces}])
        b = self.client.register(7002, [], host="127.0.0.2", partial=[self.partial()])
        _, _, body = self.request("POST", "/transfers", {"name": "f", "count": 4})
        self.assertEqual([(s["peer"]["id"], s["done"]) for s in body["sources"]],
                         [(a["peer_id"], None), (b["peer_id"], 37)])
        self.assertEqual((body["transfer_id"], body["secret"], body["peer"]),
                         tuple(body["sources"][0][k] for k in ("transfer_id", "secret", "peer")))
        self.assertEqual(body["pieces"], pieces)
        self.assertEqual(body["file"], {**wire("f"), "pieces": pieces})
        pick = self.client.pick("f", count=4)
        self.assertEqual([(lease.peer_id, lease.done) for lease in pick.leases],
                         [(a["peer_id"], None), (b["peer_id"], 37)])
        self.assertEqual((pick.file.sha256, pick.pieces, pick.renew_s),
                         (sha("f#0"), pieces, self.registry.renew_s))
        for lease in pick.leases:
            self.client.renew(lease)
            self.client.end(lease, "cancelled")
        self.assertEqual(active_by_id(self.registry),  # the raw request's two are left
                         {a["peer_id"]: 1, b["peer_id"]: 1})

    def test_every_holder_busy_is_a_503_with_the_busy_count_and_retry_after(self):
        self.client.register(7001, [wire("f")], slots=1)
        self.client.pick("f")  # its one slot is taken
        response, parsed = self.assert_error("POST", "/transfers", 503, {"name": "f"})
        self.assertEqual((parsed["busy"], parsed["retry_after"]), (1, lb_core.BUSY_RETRY_S))
        self.assertEqual(response.getheader("Retry-After"), str(lb_core.BUSY_RETRY_S))
        self.assertIn("busy (1 holder)", parsed["error"])
        with self.assertRaises(lb_client.AllBusy) as cm:
            self.client.pick("f", count=2)
        self.assertEqual((cm.exception.busy, cm.exception.retry_after, cm.exception.status),
                         (1, lb_core.BUSY_RETRY_S, 503))
        self.assertEqual(self.request("GET", "/files/f")[0].status, 503)  # the redirector too

    def test_bad_count_slots_and_partial_get_a_400_that_names_the_field(self):
        a = self.register(["f"])
        auth = {"Authorization": f"Bearer {a['token']}"}
        for count in (0, lb_core.MAX_SOURCES + 1, "2", True, 1.5):
            with self.subTest(count=count):
                _, parsed = self.assert_error("POST", "/transfers", 400,
                                              {"name": "f", "count": count})
                self.assertIn("'count'", parsed["error"])
        bad_partial = [
            ("x", "'partial'"), ([5], "file record"), ([{**wire("g")}], "'done'"),
            ([self.partial(done=101)], "'done'"), ([self.partial(done=-1)], "'done'"),
            ([self.partial(pieces="abc")], "'pieces'"), ([self.partial(sha256="x")], "'sha256'"),
            ([self.partial(), self.partial()], "twice"),
            ([self.partial()] * (lb_core.MAX_PARTIAL_PER_PEER + 1), "at most")]
        for slots in (0, lb_core.MAX_SLOTS + 1, "4", True):
            bad = ({"slots": slots}, "'slots'")
            for body, needle in [bad] + [({"partial": p}, n) for p, n in bad_partial]:
                with self.subTest(body=str(body)[:60]):
                    _, parsed = self.assert_error("PUT", f"/peers/{a['peer_id']}", 400, body,
                                                  auth)
                    self.assertIn(needle, parsed["error"])
                    _, parsed = self.assert_error("POST", "/peers", 400, {"port": 7009, **body})
                    self.assertIn(needle, parsed["error"])
        self.assertEqual(len(self.client.status()["peers"]), 1)


class TestCommandLine(unittest.TestCase):
    def start(self, *args):
        """Start ``load_balancer.py``, not announced: a load balancer of the same network
        elsewhere on this machine would be heard as senior and this one would stand down."""
        proc = subprocess.Popen(
            [sys.executable, "load_balancer.py", "--host", "127.0.0.1", "--no-announce", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def cleanup():
            if proc.poll() is None:
                proc.kill()
            proc.wait(DEADLINE_S)
            proc.stdout.close()
            proc.stderr.close()

        self.addCleanup(cleanup)
        line = read_line(proc.stdout, 10).decode().strip()
        match = LISTENING_RE.fullmatch(line)
        self.assertIsNotNone(match, f"first line was {line!r}")
        self.assertEqual(match.group(1), "127.0.0.1")
        port = int(match.group(2))
        self.assertGreater(port, 0)
        return proc, port

    def run_cli(self, *args, timeout=15):
        return subprocess.run([sys.executable, "load_balancer.py", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def test_listens_answers_and_stops_on_sigterm(self):
        proc, port = self.start("--port", "0")
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        status = client.status()
        self.assertEqual((status["policy"], status["peers"]), ("least-connections", []))
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(10), 0)
        self.assertNotIn(b"Traceback", proc.stderr.read())

    def test_sigint_stops_cleanly(self):
        proc, port = self.start("--port", "0")
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        self.assertEqual(client.status()["peers"], [])
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(10), 0)
        self.assertNotIn(b"Traceback", proc.stderr.read())

    def test_signal_right_after_listening_line_exits_cleanly(self):
        # BUG (load_balancer.py, main): "listening on ..." is printed before the SIGTERM
        # handler is installed and before the `try:` around serve_forever; a SIGTERM or
        # Ctrl-C that arrives in between (a script that starts the load balancer and stops
        # it at once, e.g. a test or the peer's auto-start) escapes as KeyboardInterrupt
        # from Thread.start(): a traceback and death by SIGINT (-2) instead of exit 0.
        # Fix: install the handler first, and cover everything after the print with the
        # try/except KeyboardInterrupt (or print the line last, just before serving).
        # (A race: a few tries per signal, so that a loaded machine does not hide it.)
        for sig in (signal.SIGTERM, signal.SIGINT):
            for attempt in range(3):
                with self.subTest(signal=sig.name, attempt=attempt):
                    proc, _ = self.start("--port", "0")
                    proc.send_signal(sig)
                    self.assertEqual(proc.wait(10), 0)
                    self.assertNotIn(b"Traceback", proc.stderr.read())

    def test_policy_and_heartbeat_options(self):
        proc, port = self.start("--port", "0", "--policy", "round-robin", "--heartbeat", "2.5")
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        self.assertEqual(client.register(7001, [])["heartbeat_s"], 2.5)
        self.assertEqual(client.status()["policy"], "round-robin")

    def test_second_instance_on_same_port_fails_cleanly(self):
        proc, port = self.start("--port", "0")
        result = self.run_cli("--host", "127.0.0.1", "--port", str(port))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn(str(port), lines[0])
        self.assertNotIn("Traceback", result.stderr)
        self.assertIsNone(proc.poll())  # the first one is unharmed
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        self.assertEqual(client.status()["peers"], [])

    def test_idle_exit_without_peers(self):
        started = time.monotonic()
        proc, _ = self.start("--port", "0", "--idle-exit", "1")
        self.assertEqual(proc.wait(10), 0)
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        self.assertNotIn(b"Traceback", proc.stderr.read())

    def test_idle_exit_waits_while_a_peer_is_registered(self):
        proc, port = self.start("--port", "0", "--idle-exit", "1")
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        peer = client.register(7001, [])
        with self.assertRaises(subprocess.TimeoutExpired):
            proc.wait(2.2)  # over two idle periods with a peer registered: still running
        client.unregister(peer["peer_id"], peer["token"])
        self.assertEqual(proc.wait(10), 0)

    def test_help(self):
        result = self.run_cli("--help")
        self.assertEqual(result.returncode, 0)
        for option in ["--port", "--host", "--policy", "--idle-exit", "--heartbeat"]:
            self.assertIn(option, result.stdout)

    def test_bad_option_is_an_error_without_traceback(self):
        result = self.run_cli("--policy", "random")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("policy", result.stderr)
        self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
    unittest.main()


class TestDeadlinesAndAddresses(ServerTestCase):
    def test_a_trickled_request_is_cut_at_its_deadline_and_the_server_serves_on(self):
        server = self.start_server(lb_core.Registry(clock=FakeClock()), request_deadline=1.0)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
        self.addCleanup(sock.close)
        started = time.monotonic()
        cut = False
        for byte in b"GET /status HTTP/1.1\r\nHost: lb\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                cut = True
                break
            if time.monotonic() - started > DEADLINE_S:
                break
            readable = select_readable(sock, 0.1)
            if readable and sock.recv(1) == b"":
                cut = True
                break
        self.assertTrue(cut, "the trickling client was never cut off")
        self.assertLess(time.monotonic() - started, 1.0 + 2 * httpkit.REAP_INTERVAL_S + 1.0)
        self.assertEqual(status_or_error(server.port, "GET", "/status"), 200)

    def test_ipv6_loopback_if_the_machine_has_it(self):
        try:
            server = self.start_server(lb_core.Registry(clock=FakeClock()), host="::1")
        except OSError:
            self.skipTest("no IPv6 loopback here")
        client = lb_client.LBClient("::1", server.port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        self.assertEqual(client.status()["peers"], [])


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
