"""The downloader against in-process fakes: many holders, liars, droppers, busy, resume.

The load balancer is ``tests.fakes.FakeLB`` and the holders ``FakeHolder`` servers on
loopback; the downloader is the real one. Each case runs in well under a second.
"""

import hashlib
import io
import os
import re
import shutil
import tempfile
import threading
import time
import types
import unittest
from dataclasses import replace
from types import SimpleNamespace
from unittest import mock

from p2p.net import download
from p2p.net.download import DownloadError, Downloader, VerifyFailed
from p2p.net.download_errors import DownloadCancelled
from p2p.net.partial import partial_name
from p2p.net import swarm
from p2p.net.swarm import VERIFY_THREADS, Landing
from p2p.core.pieces import MIN_PIECE_BYTES, Bitfield
from p2p.core.picker import ENDGAME_COPIES
from p2p.core.swarm import PACE
from p2p.cli.progress import progress_line
from p2p.core.pieces import PieceList, hash_file, piece_size
from p2p.core.wire import FileRecord
from p2p.net.sharing import FileServer, PartialShares
from tests.fakes import FakeHolder, FakeLB, SilentHolder, make_data
from tests.support import hashed_index, quiet_logs, serve_in_thread

DOWNLOAD_DEADLINE_S = 60.0  # each case takes well under a second; a hang fails here
ASK_AGAIN_S = 0.05  # the load balancer is asked again this soon here (2 s in real use)
STALL_S = 4.0  # a holder's silence that took this long to notice was not let go in time
PIECES = 12
SIZE = PIECES * MIN_PIECE_BYTES - 1000  # a short last piece


class DownloadCase(unittest.TestCase):
    def setUp(self):
        self.data = make_data(SIZE)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root, True)
        self.holders = []
        self.progress = []
        quiet_logs(self)
        self.pace = replace(PACE, ask_more_every_s=ASK_AGAIN_S, ask_busy_min_s=ASK_AGAIN_S)

    def holder(self, **misbehaviour):
        holder = FakeHolder(self.data, **misbehaviour)
        self.holders.append(holder)
        self.addCleanup(holder.close)
        return holder

    crowd = 0  # other peers downloading the file, as the load balancer says

    def lb(self, holders, **options):
        return FakeLB(holders, downloading=self.crowd, **options)

    def download(self, lb, **options):
        """The download's Result (or its error, raised), failing the test at a deadline."""
        options.setdefault("pace", self.pace)
        return self.run_download(Downloader(lb, self.root, on_progress=self.progress.append,
                                            **options))

    def run_download(self, downloader):
        ended = {}

        def run():
            try:
                ended["result"] = downloader.get("file.bin")
            except BaseException as e:  # handed to the test's thread
                ended["error"] = e

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(DOWNLOAD_DEADLINE_S)
        self.assertFalse(thread.is_alive(), f"no end within {DOWNLOAD_DEADLINE_S:.0f} s")
        if "error" in ended:
            raise ended["error"]
        return ended["result"]

    def assert_saved(self, result):
        with open(result.path, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), self.sha256)
        self.assertEqual([n for n in os.listdir(self.root) if n.endswith(".part")], [])

    def pieces_asked(self, holder):
        """Every piece asked of ``holder``, in order (a request may ask for several)."""
        piece = MIN_PIECE_BYTES
        return [i for start, end in holder.requests for i in range(start // piece,
                                                                    end // piece + 1)]


class ManyHolders(DownloadCase):
    def test_four_holders_each_send_part_of_the_file_and_it_verifies(self):
        holders = [self.holder() for _ in range(4)]
        lb = self.lb(holders)
        result = self.download(lb)
        self.assert_saved(result)
        senders = [h for h in holders if h.requests]
        self.assertGreater(len(senders), 1)
        asked = [i for h in holders for i in self.pieces_asked(h)]
        self.assertEqual(set(asked), set(range(PIECES)))
        self.assertLessEqual(max(map(asked.count, asked)), ENDGAME_COPIES)
        self.assertTrue(all(o in ("done", "cancelled") for _, o in lb.ended))
        self.assertTrue(self.progress[-1].finished)

    def test_progress_says_how_many_holders_send(self):
        holders = [self.holder(trickle=0.0005) for _ in range(3)]
        self.download(self.lb(holders))
        self.assertGreater(max(p.sources for p in self.progress), 1)


class WhyThisFast(DownloadCase):
    """Two real file servers with an upload limit: the progress shows each one's rate, and
    names their upload limit as what holds the download back; so does the heartbeat."""

    LIMIT = 1 << 20  # bytes/s per holder...
    SIZE = 6 << 20  # ...so the file takes about 3 s from the two, 2 s of it measured

    def test_two_holders_at_their_upload_limit_are_named_as_the_limit(self):
        self.data = make_data(self.SIZE)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        _, index = hashed_index(self, "p2p-why-", {"file.bin": self.data})
        servers = [serve_in_thread(self, FileServer(("127.0.0.1", 0), index,
                                                    upload_limit=self.LIMIT))
                   for _ in range(2)]
        holders = [SimpleNamespace(port=s.server_address[1], have=None) for s in servers]
        pieces = PieceList(self.sha256, self.SIZE, piece_size(self.SIZE),
                           tuple(hash_file(io.BytesIO(self.data))[1])).hash
        lb = FakeLB(holders, file=FileRecord("file.bin", self.SIZE, self.sha256),
                    pieces=pieces)
        partials, said = PartialShares(), []
        partials.on_change = lambda: said.extend(partials.announced())
        self.assert_saved(self.download(lb, partials=partials))
        both = [p for p in self.progress if len(p.each) == 2]
        self.assertTrue(both, "no progress named two holders sending")
        self.assertEqual({s.address for s in both[-1].each},
                         {f"127.0.0.1:{h.port}" for h in holders})
        self.assertTrue(all(s.upload_limit == self.LIMIT for s in both[-1].each))
        reason = "limited by the holders' upload limits (2 × 1.0 MiB/s)"
        self.assertIn(reason, [p.limit for p in self.progress])
        self.assertIn(reason, [d.get("limit") for d in said])
        self.assertTrue(self.progress[-1].limit.startswith("limited by"))  # the last line too
        line = progress_line(next(p for p in both if p.limit == reason), 50.0)
        self.assertRegex(line, re.escape(reason) + r"  from 2 peers \(127\.0\.0\.1:\d+ "
                         r"[0-9.]+ [KM]iB/s, 127\.0\.0\.1:\d+ [0-9.]+ [KM]iB/s\)$")

class FastPath(DownloadCase):
    """Alone, each byte is received, written and hashed once: the whole file's SHA-256 takes
    every piece from the buffer it came in, nothing is read back from the partial file,
    and no verifier thread runs (they are for a swarm)."""

    def test_alone_nothing_is_read_back_from_the_partial_file(self):
        with mock.patch("p2p.net.partial.os.preadv", wraps=os.preadv) as preadv:
            result = self.download(self.lb([self.holder()]))
        self.assert_saved(result)
        self.assertEqual(preadv.call_count, 0)

    def test_alone_no_verifier_thread_starts(self):
        with mock.patch.object(Landing, "_run", autospec=True, side_effect=Landing._run) as run:
            self.assert_saved(self.download(self.lb([self.holder(), self.holder()])))
        self.assertEqual(run.call_count, 0)

    def test_alone_the_progress_loop_is_not_woken_for_each_piece(self):
        wakes = self.count_wakes(crowd=0)
        self.assertLess(wakes, PIECES // 2)

    def test_in_a_crowd_each_piece_wakes_who_waits_for_it(self):
        self.assertGreaterEqual(self.count_wakes(crowd=2), PIECES)

    def count_wakes(self, crowd):
        """How often a download from one holder notified its swarm's condition."""
        wakes = []

        class Counting(threading.Condition):
            def notify_all(self):
                wakes.append(1)
                super().notify_all()

        self.crowd = crowd
        only_here = types.SimpleNamespace(Condition=Counting, Lock=threading.Lock,
                                          Event=threading.Event, Thread=threading.Thread)
        with mock.patch.object(swarm, "threading", only_here):
            self.assert_saved(self.download(self.lb([self.holder()])))
        return len(wakes)

    def test_in_a_crowd_the_verifiers_hash_each_piece(self):
        self.crowd = 2
        with mock.patch.object(Landing, "_run", autospec=True, side_effect=Landing._run) as run:
            self.assert_saved(self.download(self.lb([self.holder(), self.holder()])))
        self.assertEqual(run.call_count, VERIFY_THREADS)


class Liars(DownloadCase):
    """Alone with whole holders, pieces are written unhashed and the whole file's SHA-256
    checks them; when it fails, the pieces are hashed, the bad ones fetched again from
    others and their senders blamed."""

    def test_a_corrupt_piece_is_fetched_again_elsewhere_and_only_its_sender_is_blamed(self):
        liar = self.holder(corrupt_first=1)
        honest = self.holder()
        lb = self.lb([liar, honest])
        result = self.download(lb)
        self.assert_saved(result)
        bad = self.pieces_asked(liar)[0]
        self.assertIn(bad, self.pieces_asked(honest))  # the bad piece, fetched again
        # the bad piece again, and per connection an end-game copy and the one cut short
        self.assertLessEqual(result.received,
                             SIZE + MIN_PIECE_BYTES * (1 + 2 * len(self.holders)))
        self.assertEqual(lb.outcomes("h0"), ["failed"])
        self.assertNotIn("failed", lb.outcomes("h1"))

    def test_a_holder_sending_only_bad_pieces_is_dropped_and_the_file_comes_from_others(self):
        liar = self.holder(corrupt_first=PIECES)
        honest = self.holder()
        lb = self.lb([liar, honest])
        self.assert_saved(self.download(lb))
        self.assertEqual(lb.outcomes("h0"), ["failed"])
        self.assertEqual(set(self.pieces_asked(honest)), set(range(PIECES)))

    def test_a_holder_that_corrupts_then_drops_is_blamed_and_the_rest_comes_from_others(self):
        liar = self.holder(corrupt_first=1, drop_at=MIN_PIECE_BYTES * 2 + 100)
        honest = self.holder()
        lb = self.lb([liar, honest])
        self.assert_saved(self.download(lb))
        self.assertEqual(lb.outcomes("h0"), ["failed"])
        self.assertNotIn("failed", lb.outcomes("h1"))

    def test_a_false_piece_list_from_one_holder_is_refused_and_another_is_asked(self):
        forger = self.holder(bad_list=[hashlib.sha256(b"x").hexdigest()] * PIECES)
        honest = self.holder()
        self.assert_saved(self.download(self.lb([forger, honest])))

    def test_a_false_list_all_holders_agree_on_saves_nothing(self):
        holder = FakeHolder(make_data(SIZE, seed=1))  # other bytes, with their own pieces,
        self.addCleanup(holder.close)
        holder.sha256 = self.sha256  # ...served as the file we want
        holder.pieces = replace(holder.pieces, sha256=self.sha256)
        lb = self.lb([holder])
        lb.pieces = holder.pieces.hash
        with self.assertRaises(VerifyFailed) as caught:
            self.download(lb)
        self.assertIn("Nothing was saved", caught.exception.message)
        self.assertEqual(os.listdir(self.root), [])
        self.assertEqual(lb.outcomes("h0"), ["failed"])


class PartialLiars(DownloadCase):
    """Issue 20 item 3: a partial holder whose piece list is wrong crashed a holder's thread
    (KeyError in the plan) and was blamed only sometimes."""

    def lying_partial(self, **lie):
        have = Bitfield(PIECES)
        for i in range(PIECES // 2):
            have.add(i)
        return self.holder(have=have, **lie)

    def assert_blamed_without_a_traceback(self, lb, liar_id):
        crashed = []
        self.enterContext(mock.patch.object(threading, "excepthook", crashed.append))
        self.assert_saved(self.download(lb))
        self.assertEqual(crashed, [])
        self.assertEqual(lb.outcomes(liar_id), ["failed"])

    def test_a_false_list_from_a_partial_holder_is_blamed_and_the_seed_delivers(self):
        liar = self.lying_partial(bad_list=[hashlib.sha256(b"x").hexdigest()] * PIECES)
        seed = self.holder(trickle=0.001)  # slow enough that the liar is always asked
        self.assert_blamed_without_a_traceback(self.lb([seed, liar]), "h1")

    def test_a_partial_holder_asked_first_for_the_list_is_blamed_once_and_not_used(self):
        liar = self.lying_partial(bad_list=[hashlib.sha256(b"x").hexdigest()] * PIECES)
        self.assert_blamed_without_a_traceback(self.lb([liar, self.holder()]), "h0")
        self.assertEqual(liar.requests, [])

    def test_a_bitfield_of_the_wrong_length_is_blamed(self):
        liar = self.lying_partial()
        liar.have = Bitfield(PIECES + 8)
        seed = self.holder(trickle=0.001)  # slow enough that the liar is always asked
        self.assert_blamed_without_a_traceback(self.lb([seed, liar]), "h1")


class BlamedOnce(DownloadCase):
    """A holder blamed in one try of a download (its pieces spoiled the whole file) is not
    asked again in the next, however often that one asks the load balancer for more."""

    def test_a_holder_blamed_in_one_try_is_not_asked_again_in_the_next(self):
        liar = self.holder(corrupt_first=PIECES)
        honest = self.holder(trickle=0.0001)  # the next try lasts long enough to ask for more
        lb = self.lb([liar, honest])
        self.assert_saved(self.download(lb))
        self.assertGreater(lb.picks, 2)
        self.assertEqual(lb.outcomes("h0"), ["failed"])


class LiarsInACrowd(Liars):
    """The same, with other peers downloading the file: every piece is hashed as it comes,
    and a holder is dropped at its second bad piece."""
    crowd = 3


class JoinedByOthers(DownloadCase):
    def test_pieces_landed_alone_are_checked_and_shared_once_others_download_it(self):
        shares = Shares()
        holders = [self.holder(trickle=0.001), self.holder(trickle=0.001)]
        lb = self.lb(holders, most=1)  # the second holder comes with the second pick...
        lb.downloading_after_first_pick = 2  # ...which says others are downloading it now
        self.download(lb, partials=shares)
        self.assertTrue(shares.touched)  # told the peer's server it has pieces to share
        self.assertTrue(shares.shared_whole)  # ...and all of them verified by the end

    def test_alone_its_true_progress_is_announced_as_pieces_land_unhashed(self):
        shares = Shares()
        self.download(self.lb([self.holder()]), partials=shares)
        self.assertEqual(len(shares.have), 0, "alone, nothing was hashed piece by piece...")
        self.assertGreaterEqual(shares.touched, PIECES, "...yet every piece landing is told")
        self.assertEqual(shares.announced, sorted(shares.announced))
        self.assertEqual(shares.announced[-1], SIZE, "the progress announced is the true one")

    def test_alone_ends_when_the_load_balancer_says_so_while_no_holder_is_left(self):
        shares = Shares()
        lb = self.lb([self.holder(trickle=0.001)])  # one seed: later picks find none left...
        lb.downloading_after_first_pick = 1  # ...but say another peer downloads it now
        self.download(lb, partials=shares)
        self.assertGreater(lb.picks, 1)
        self.assertTrue(shares.touched)  # its pieces were hashed, to share with that peer


class Shares:
    """Stands in for the peer's PartialShares: records what the download offered."""

    def __init__(self):
        self.have, self.touched, self.shared_whole = None, 0, False
        self.stalls = []  # what set_stalled said, in order
        self.progress, self.announced = None, []  # progress() as each touch() saw it

    def add(self, name, pieces, have, path, progress=None):
        self.have, self.progress = have, progress

    def touch(self):
        self.touched += 1
        self.announced.append(self.progress())

    def remove(self, sha256):
        self.shared_whole = self.have.complete

    def set_stalled(self, sha256, stalled):
        self.stalls.append(stalled)

    def set_speed(self, sha256, rate, sources, limit):
        self.limit = limit


class Slow(DownloadCase):
    def test_a_trickling_holder_does_not_hold_the_download(self):
        slow = self.holder(trickle=0.05)  # about 20 KiB/s: a piece would take 13 s
        fast = self.holder()
        result = self.download(self.lb([slow, fast]))
        self.assert_saved(result)
        self.assertLess(slow.sent, MIN_PIECE_BYTES)  # it never delivered a whole piece


class Busy(DownloadCase):
    def test_while_every_holder_is_busy_it_waits_and_says_so(self):
        lb = self.lb([self.holder()], busy_rounds=2)
        self.assert_saved(self.download(lb))
        self.assertIn("waiting for a free upload slot, 2 holders busy",
                      [p.waiting for p in self.progress])
        self.assertFalse([o for _, o in lb.ended if o == "failed"])

    def test_a_holder_answering_busy_is_asked_again_not_blamed(self):
        holder = self.holder(busy=1)
        lb = self.lb([holder])
        self.assert_saved(self.download(lb))
        self.assertNotIn("failed", lb.outcomes("h0"))

    def test_the_wait_has_the_limit_the_user_set(self):
        lb = self.lb([self.holder()], busy_rounds=10_000)
        with self.assertRaises(DownloadError) as caught:
            self.download(lb, wait_s=0.3)
        self.assertIn("Waited", caught.exception.message)


class Partial(DownloadCase):
    def test_a_partial_holder_is_asked_only_for_what_it_has(self):
        have = Bitfield(PIECES)
        for i in range(0, PIECES, 2):
            have.add(i)
        partial = self.holder(have=have)
        seed = self.holder()
        self.assert_saved(self.download(self.lb([partial, seed])))
        self.assertTrue(all(i % 2 == 0 for i in self.pieces_asked(partial)))


class Resume(DownloadCase):
    def test_verified_pieces_on_disk_are_kept_and_a_half_piece_is_fetched_again(self):
        path = os.path.join(self.root, partial_name("file.bin", self.sha256))
        with open(path, "wb") as f:
            f.write(self.data[:MIN_PIECE_BYTES * 5 + 100])  # 5 pieces and a bit
        holder = self.holder()
        result = self.download(self.lb([holder]))
        self.assert_saved(result)
        self.assertEqual(self.pieces_asked(holder), list(range(5, PIECES)))
        self.assertEqual(result.resumed_from, MIN_PIECE_BYTES * 5)

    def test_a_corrupt_piece_on_disk_is_fetched_again(self):
        path = os.path.join(self.root, partial_name("file.bin", self.sha256))
        damaged = bytearray(self.data[:MIN_PIECE_BYTES * 3])
        damaged[MIN_PIECE_BYTES + 7] ^= 1
        with open(path, "wb") as f:
            f.write(damaged)
        holder = self.holder()
        self.assert_saved(self.download(self.lb([holder])))
        self.assertEqual(self.pieces_asked(holder), [1] + list(range(3, PIECES)))


class Silent(DownloadCase):
    """Issue 20 item 2: a holder that accepts the connection and never answers is let go
    within ANSWER_S, and the download says whom it waits for meanwhile."""
    ANSWER_S = 0.5

    def silent(self):
        holder = SilentHolder(self.data)
        self.addCleanup(holder.close)
        return holder

    def timed_download(self, lb):
        started = time.monotonic()
        result = self.download(lb, answer_timeout=self.ANSWER_S)
        return result, time.monotonic() - started

    def test_a_silent_holder_asked_for_the_piece_list_is_let_go_and_others_asked(self):
        silent = self.silent()
        lb = self.lb([silent, self.holder()])
        result, took = self.timed_download(lb)
        self.assert_saved(result)
        self.assertLess(took, STALL_S)  # not the body's stall timeout: the answer's
        self.assertIn(lb.outcomes("h0"), (["failed"], ["cancelled"]))  # let go either way
        self.assertIn(f"waiting for 127.0.0.1:{silent.port} to answer",
                      [p.waiting for p in self.progress])

    def test_several_silent_holders_asked_first_cost_a_moment_each_not_their_timeout(self):
        lb = self.lb([self.silent(), self.silent(), self.silent(), self.holder()])
        with mock.patch.object(download, "LIST_STAGGER_S", 0.05):
            result, took = self.timed_download(lb)
        self.assert_saved(result)
        self.assertLess(took, 3 * self.ANSWER_S)  # one after another would take 1.5 s or more

    def test_a_silent_holder_among_others_is_let_go_and_blamed(self):
        honest = self.holder(trickle=0.0002)
        lb = self.lb([honest, self.silent(), self.silent()])
        result, took = self.timed_download(lb)
        self.assert_saved(result)
        self.assertLess(took, STALL_S)
        self.assertEqual(lb.outcomes("h1"), ["failed"])
        self.assertEqual(lb.outcomes("h2"), ["failed"])


class Stalled(DownloadCase):
    """Issue 17 item 3: a download that loses every holder waits, stalled, polling with
    back-off, and carries on by itself, with every piece kept, when a holder returns."""
    AWAY_S = 1.0  # how long the only holder stays away
    MAX_POLLS = 12  # questions to the load balancer while it is away (a busy loop: ~20+)

    def setUp(self):
        super().setUp()
        self.pace = replace(self.pace, stall_first_s=0.05, stall_max_s=0.2)

    def vanish_at(self, holder, fraction):
        """A progress callback: the holder vanishes once ``fraction`` of the file is here."""
        def on_progress(p):
            self.progress.append(p)
            if not holder.gone and p.total and p.done >= fraction * p.total:
                holder.vanish()
        return on_progress

    def test_the_only_holder_vanishes_and_returns_and_the_download_completes(self):
        seed = self.holder(trickle=0.0002)
        lb = self.lb([seed])
        vanish = self.vanish_at(seed, 0.3)
        came_back = self.holder()
        stalled = {}

        def on_progress(p):
            vanish(p)
            if p.stalled and "since" not in stalled:
                stalled.update(since=time.monotonic(), picks=lb.picks)
            if "since" in stalled and "polls" not in stalled \
                    and time.monotonic() - stalled["since"] >= self.AWAY_S:
                stalled["polls"] = lb.picks - stalled["picks"]
                lb.add(came_back)  # the seed is back, with a new peer id

        shares = Shares()
        downloader = Downloader(lb, self.root, on_progress=on_progress, pace=self.pace,
                                partials=shares)
        result = self.run_download(downloader)
        self.assert_saved(result)
        self.assertIn("stalled: no holder of file.bin is online; waiting",
                      [p.waiting for p in self.progress])
        self.assertEqual(shares.stalls, [True, False])  # announced: stalled, then moving
        self.assertLessEqual(stalled["polls"], self.MAX_POLLS)
        kept = set(range(PIECES)) - set(self.pieces_asked(came_back))
        self.assertGreaterEqual(len(kept), PIECES * 0.3 - 1)  # what came before was kept
        self.assertEqual(lb.outcomes("h0"), ["failed"])

    def test_the_wait_has_the_limit_the_user_set_and_keeps_the_partial_file(self):
        seed = self.holder(trickle=0.0002)
        downloader = Downloader(self.lb([seed]), self.root, pace=self.pace, wait_s=0.5,
                                on_progress=self.vanish_at(seed, 0.3))
        with self.assertRaises(DownloadError) as caught:
            self.run_download(downloader)
        self.assertIn("Waited 0.5 s for one to come back", caught.exception.message)
        self.assertIn("partial file is kept", caught.exception.message)
        self.assertTrue(os.path.exists(os.path.join(
            self.root, partial_name("file.bin", self.sha256))))

    def test_a_stalled_download_in_the_background_stops_when_removed(self):
        seed = self.holder(trickle=0.0002)
        vanish = self.vanish_at(seed, 0.3)

        def on_progress(p):
            vanish(p)
            if p.stalled:
                raise DownloadCancelled()  # what the menu's removal does

        downloader = Downloader(self.lb([seed]), self.root, pace=self.pace,
                                on_progress=on_progress)
        with self.assertRaises(DownloadCancelled):
            self.run_download(downloader)
        self.assertTrue(os.path.exists(os.path.join(
            self.root, partial_name("file.bin", self.sha256))))


class Errors(DownloadCase):
    def test_every_holder_failing_is_a_clear_error_and_keeps_verified_pieces(self):
        holder = self.holder(drop_at=MIN_PIECE_BYTES * 2 + 10)
        with self.assertRaises(DownloadError) as caught:
            self.download(self.lb([holder]), wait_s=0)
        self.assertIn("partial file is kept", caught.exception.message)
        partial = os.path.join(self.root, partial_name("file.bin", self.sha256))
        with open(partial, "rb") as f:
            self.assertEqual(f.read(MIN_PIECE_BYTES * 2), self.data[:MIN_PIECE_BYTES * 2])

    def test_the_same_content_already_here_moves_nothing(self):
        with open(os.path.join(self.root, "file.bin"), "wb") as f:
            f.write(self.data)
        holder = self.holder()
        result = self.download(self.lb([holder]))
        self.assertTrue(result.already)
        self.assertEqual(holder.requests, [])


if __name__ == "__main__":
    unittest.main()
