"""Tests of p2p/net/download.py's decisions without sockets: names, targets, response checks,
partial files, refusals and the queue of background downloads.
"""

import hashlib
import os
import tempfile
import threading
import time
import types
import unittest
from unittest import mock

from p2p.core.pieces import PieceList, piece_size
from p2p.core.wire import FileRecord
from p2p.core.progress import Progress
from p2p.core.swarm import PACE
from p2p.net import download, holder, sharing, worker
from p2p.net import partial as partials
from p2p.net.download_errors import DiskError
from p2p.net.holder import PeerFault
from p2p.net.sharing import BadName
from tests.fakes import FakeLB
from tests.support import write_file

WAIT_S = 5.0  # upper bound for any wait on a background thread


def sha(data):
    return hashlib.sha256(data).hexdigest()


def fake_lb(name, size, sha256):
    """A load balancer that hands out one transfer of a file from a holder that is only an address."""
    return FakeLB([types.SimpleNamespace(port=9, have=None)], file=FileRecord(name, size, sha256))


def make_temp_dir(test):
    tmp = tempfile.TemporaryDirectory()
    test.addCleanup(tmp.cleanup)
    return tmp.name


class CollisionNameTests(unittest.TestCase):
    def test_collision_names(self):
        cases = [
            ("a.txt", 0, "a.txt"),
            ("a.txt", 1, "a (1).txt"),
            ("a.txt", 10, "a (10).txt"),
            ("dir/report.pdf", 2, "dir/report (2).pdf"),
            ("dir/report.pdf", 0, "dir/report.pdf"),
            # Only the last extension is kept after the number.
            ("archive.tar.gz", 1, "archive.tar (1).gz"),
            ("noext", 1, "noext (1)"),
            ("dir.v2/noext", 1, "dir.v2/noext (1)"),
            ("a/b/c.d/e.f", 3, "a/b/c.d/e (3).f"),
            ("my file.txt", 1, "my file (1).txt"),
            ("日本語/ファイル.txt", 1, "日本語/ファイル (1).txt"),
        ]
        for name, n, expected in cases:
            with self.subTest(name=name, n=n):
                self.assertEqual(partials.collision_name(name, n), expected)
                sharing.check_name(partials.collision_name(name, n))

    def test_collision_names_are_distinct(self):
        names = [partials.collision_name("dir/report.pdf", n) for n in range(50)]
        self.assertEqual(len(set(names)), 50)


class PartialNameTests(unittest.TestCase):
    def test_partial_name_is_hidden_in_the_same_folder(self):
        digest = sha(b"x")
        self.assertTrue(partials.partial_name("a.txt", digest).startswith("."))
        nested = partials.partial_name("dir/sub/a.txt", digest)
        folder, _, base = nested.rpartition("/")
        self.assertEqual(folder, "dir/sub")
        self.assertTrue(base.startswith("."))
        self.assertIn("a.txt", base)
        with self.assertRaises(BadName):  # never shared: check_name refuses hidden files
            sharing.check_name(nested)

    def test_unfinished_downloads_are_found_by_name_and_removed_unless_running(self):
        root = make_temp_dir(self)
        digest = sha(b"x")
        for name in ("a.txt", "dir/日本語 b.txt"):
            write_file(root, partials.partial_name(name, digest), b"12345")
        write_file(root, "done.txt", b"done")
        write_file(root, ".x.part", b"not ours")
        found = partials.find_unfinished(root)
        self.assertEqual([(u.name, u.sha_prefix, u.done) for u in found],
                         [("a.txt", digest[:16], 5), ("dir/日本語 b.txt", digest[:16], 5)])
        self.assertEqual(partials.partial_of(os.path.basename(found[0].path)),
                         ("a.txt", digest[:16]))
        if partials.fcntl is not None:
            running = os.open(found[0].path, os.O_RDWR)
            self.addCleanup(os.close, running)
            partials.fcntl.flock(running, partials.fcntl.LOCK_EX)
            self.assertFalse(partials.remove_unfinished(found[0]))
            self.assertTrue(os.path.exists(found[0].path))
        self.assertTrue(partials.remove_unfinished(found[1]))
        self.assertFalse(os.path.exists(found[1].path))

    def test_partial_name_is_distinct_per_sha256(self):
        a = partials.partial_name("a.txt", sha(b"one"))
        b = partials.partial_name("a.txt", sha(b"two"))
        self.assertNotEqual(a, b)
        self.assertNotEqual(partials.partial_name("a.txt", sha(b"one")),
                            partials.partial_name("b.txt", sha(b"one")))
        self.assertEqual(a, partials.partial_name("a.txt", sha(b"one")))


    def test_a_long_legal_name_has_a_partial_file_that_can_be_written(self):
        root = make_temp_dir(self)
        for base in ("x" * 240, "é" * 125 + ".txt"):  # 240 characters; 254 bytes of UTF-8
            with self.subTest(base=base[:10]):
                with open(os.path.join(root, base), "wb"):  # the final name fits on disk
                    pass
                partial = partials.partial_name(f"dir/{base}", sha(b"one"))
                self.assertLessEqual(len(partial.split("/")[-1].encode()), 255)
                self.assertNotEqual(partial, partials.partial_name(f"dir/{base}", sha(b"two")))
                os.makedirs(os.path.join(root, "dir"), exist_ok=True)
                with open(partials.local_path(root, partial), "wb"):
                    pass


class DownloaderRefusalTests(unittest.TestCase):
    """Downloads refused before a byte moves leave nothing behind, inside or outside."""

    def setUp(self):
        self.base = make_temp_dir(self)
        self.root = os.path.join(self.base, "downloads")
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(self.root)
        os.makedirs(self.outside)

    def test_a_symlinked_folder_inside_downloads_creates_nothing_outside(self):
        os.symlink(self.outside, os.path.join(self.root, "linkdir"))
        lb = fake_lb("linkdir/new/x.bin", 10, sha(b"x"))
        with self.assertRaises(DiskError) as caught:
            download.Downloader(lb, self.root).get("linkdir/new/x.bin")
        self.assertIn("leads outside", caught.exception.message)
        self.assertEqual(os.listdir(self.outside), [])
        self.assertEqual(lb.outcomes("h0"), ["cancelled"])

    def test_a_download_refused_for_lack_of_space_leaves_no_partial_file(self):
        lb = fake_lb("huge.bin", 1 << 60, sha(b"huge"))
        with self.assertRaises(DiskError) as caught:
            download.Downloader(lb, self.root).get("huge.bin")
        self.assertIn("Not enough space", caught.exception.message)
        self.assertEqual(os.listdir(self.root), [])


class PlanTargetTests(unittest.TestCase):
    def setUp(self):
        self.root = make_temp_dir(self)
        self.data = b"the real file content"
        self.digest = sha(self.data)
        self.size = len(self.data)

    def partial_path(self, name="a.txt"):
        return partials.local_path(self.root, partials.partial_name(name, self.digest))

    def test_nothing_there_goes_to_the_partial_file(self):
        target = partials.plan_target(self.root, "a.txt", self.size, self.digest)
        self.assertIsNone(target.have)
        self.assertEqual(target.partial, self.partial_path())
        nested = partials.plan_target(self.root, "dir/a.txt", self.size, self.digest)
        self.assertEqual(nested.partial, self.partial_path("dir/a.txt"))
        self.assertEqual(os.path.dirname(nested.partial), os.path.join(self.root, "dir"))

    def test_an_existing_partial_is_the_one_filled(self):
        with open(self.partial_path(), "wb") as f:
            f.write(self.data[:7])
        target = partials.plan_target(self.root, "a.txt", self.size, self.digest)
        self.assertEqual((target.partial, target.have), (self.partial_path(), None))

    def test_a_partial_of_another_version_is_not_used(self):
        other = partials.local_path(self.root, partials.partial_name("a.txt", sha(b"other")))
        with open(other, "wb") as f:
            f.write(b"12345")
        target = partials.plan_target(self.root, "a.txt", self.size, self.digest)
        self.assertNotEqual(target.partial, other)

    def test_the_same_file_already_there(self):
        path = write_file(self.root, "a.txt", self.data)
        target = partials.plan_target(self.root, "a.txt", self.size, self.digest)
        self.assertEqual(target.have, path)

    def test_a_different_file_of_that_name_is_not_had(self):
        write_file(self.root, "a.txt", b"X" * self.size)  # same size, other content
        target = partials.plan_target(self.root, "a.txt", self.size, self.digest)
        self.assertIsNone(target.have)

    def test_a_different_size_is_not_hashed(self):
        write_file(self.root, "a.txt", b"short")
        hashed = []

        def hash_of(path):
            hashed.append(path)
            return sharing.sha256_file(path)

        target = partials.plan_target(self.root, "a.txt", self.size, self.digest,
                                      hash_of=hash_of)
        self.assertIsNone(target.have)
        self.assertEqual(hashed, [])

    def test_the_same_content_under_a_collision_name(self):
        write_file(self.root, "dir/a.txt", b"Y" * self.size)
        copy = write_file(self.root, "dir/a (1).txt", self.data)
        target = partials.plan_target(self.root, "dir/a.txt", self.size, self.digest)
        self.assertEqual(target.have, copy)

    def test_a_folder_of_that_name_is_not_had(self):
        os.makedirs(os.path.join(self.root, "a.txt"))
        target = partials.plan_target(self.root, "a.txt", self.size, self.digest)
        self.assertIsNone(target.have)


DIGEST = sha(b"0123456789")


SIZE = 10


def head(*lines):
    return "\r\n".join(lines).encode("latin-1")


class ParseResponseHeadTests(unittest.TestCase):
    def test_a_good_head(self):
        status, headers = holder.parse_response_head(head(
            "HTTP/1.1 206 Partial Content",
            "Content-Length: 5",
            "content-range:bytes 5-9/10",
            f'ETag:   "{DIGEST}"  ',
            "X-Odd: a: b",
            "no colon here",
        ))
        self.assertEqual(status, 206)
        self.assertEqual(headers["content-length"], "5")
        self.assertEqual(headers["content-range"], "bytes 5-9/10")
        self.assertEqual(headers["etag"], f'"{DIGEST}"')
        self.assertEqual(headers["x-odd"], "a: b")
        self.assertNotIn("no colon here", headers)

    def test_status_without_reason(self):
        self.assertEqual(holder.parse_response_head(b"HTTP/1.0 200")[0], 200)

    def test_garbage_is_a_peer_fault(self):
        for data in (b"", b"hello", b"SSH-2.0-OpenSSH_9.0", b"HTTP/1.1", b"HTTP/1.1 abc OK",
                     b"HTTP/1.1  200 OK", b"http 200 OK", b"\x00\xff\xfe",
                     b"GET / HTTP/1.1\r\nHost: x"):
            with self.subTest(data=data):
                with self.assertRaises(PeerFault):
                    holder.parse_response_head(data)


class CheckResponseTests(unittest.TestCase):
    """A holder's answer to ``Range: bytes=4-9`` of a 10-byte file."""

    def headers(self, **extra):
        """Good response headers, with ``extra`` changed (None: left out)."""
        base = {"content-length": "6", "content-range": "bytes 4-9/10", "etag": f'"{DIGEST}"'}
        base.update({k.replace("_", "-"): v for k, v in extra.items()})
        return {k: v for k, v in base.items() if v is not None}

    def check(self, status, headers, body=b""):
        return holder.check_response(status, headers, 4, 6, SIZE, DIGEST, body)

    def test_good_206(self):
        self.assertIsNone(self.check(206, self.headers()))

    def test_a_200_is_not_the_range_asked_for(self):
        with self.assertRaises(PeerFault) as caught:
            self.check(200, self.headers(content_range=None, content_length="10"))
        self.assertIsNone(caught.exception.busy)

    def test_wrong_content_range(self):
        for value in ("bytes 5-9/10", "bytes 4-8/10", "bytes 4-9/11", "bytes 4-9/*",
                      "items 4-9/10", "bytes */10", "", None):
            with self.subTest(value=value):
                with self.assertRaises(PeerFault) as caught:
                    self.check(206, self.headers(content_range=value))
                self.assertIsNone(caught.exception.busy)

    def test_missing_or_wrong_etag(self):
        for etag in (None, "", f'"{sha(b"other")}"', f'W/"{DIGEST}"', f'"{DIGEST[:-1]}"'):
            with self.subTest(etag=etag), self.assertRaises(PeerFault):
                self.check(206, self.headers(etag=etag))

    def test_wrong_content_length(self):
        for length in (None, "5", "7", "", "six", "-6", "10"):
            with self.subTest(length=length), self.assertRaises(PeerFault):
                self.check(206, self.headers(content_length=length))

    def test_busy_peer(self):
        cases = [
            (503, "2", 2.0),
            (503, "0", 1.0),
            (503, None, 1.0),
            (503, "Wed, 21 Oct 2015 07:28:00 GMT", 1.0),
            (503, "3600", PACE.busy_wait_max_s),
            (503, str(10**30), PACE.busy_wait_max_s),
            (429, "1", 1.0),
        ]
        for status, retry, busy in cases:
            with self.subTest(status=status, retry=retry):
                headers = {} if retry is None else {"retry-after": retry}
                with self.assertRaises(PeerFault) as caught:
                    self.check(status, headers)
                self.assertEqual(caught.exception.busy, busy)
                self.assertFalse(caught.exception.missing)

    def test_the_peers_reason_for_a_503_is_kept(self):
        body = b'{"error":"\'a.bin\' is still being written on this peer; try again shortly."}'
        with self.assertRaises(PeerFault) as caught:
            self.check(503, {"retry-after": "2"}, body)
        self.assertEqual(str(caught.exception), "the peer says: 'a.bin' is still being written "
                                                "on this peer; try again shortly.")
        for cut in (b"", b'{"error":"half', b"<html>", b'{"error": 3}', b"[1]"):
            with self.subTest(body=cut), self.assertRaises(PeerFault) as caught:
                self.check(503, {}, cut)
            self.assertEqual(str(caught.exception), "the peer is busy")

    def test_a_404_is_a_piece_missing_there_with_its_reason(self):
        body = b'{"error": "This peer has verified only 37 % of that file so far.", "missing": true}'
        with self.assertRaises(PeerFault) as caught:
            self.check(404, {}, body)
        self.assertTrue(caught.exception.missing)
        self.assertIsNone(caught.exception.busy)
        self.assertIn("37 %", str(caught.exception))

    def test_other_statuses_are_faults_without_busy(self):
        for status in (100, 204, 301, 400, 416, 500, 502, 504):
            with self.subTest(status=status):
                with self.assertRaises(PeerFault) as caught:
                    self.check(status, self.headers())
                self.assertIsNone(caught.exception.busy)
                self.assertFalse(caught.exception.missing)


class PiecesCase(unittest.TestCase):
    """A file of three whole pieces and a short one, and its partial file."""

    def setUp(self):
        self.root = make_temp_dir(self)
        self.path = os.path.join(self.root, ".a.part")
        self.data = os.urandom(3 * piece_size(1) + 100)  # three whole pieces and a short one
        digests = [sha(self.data[i:i + piece_size(1)])
                   for i in range(0, len(self.data), piece_size(1))]
        self.pieces = PieceList(sha(self.data), len(self.data), piece_size(1), tuple(digests))

    def partial(self, existing=None):
        if existing is not None:
            with open(self.path, "wb") as f:
                f.write(existing)
        partial = partials.PartialFile(self.path, os.open(self.path, os.O_RDWR | os.O_CREAT),
                                       self.pieces)
        self.addCleanup(partial.close)
        return partial

    def piece(self, index):
        start, length = self.pieces.span(index)
        return self.data[start:start + length]


class PartialFileTests(PiecesCase):
    """Pieces written at their offsets; on resume, only pieces whose bytes match are kept."""

    def test_pieces_land_at_their_offsets_in_any_order(self):
        partial = self.partial()
        for index in (3, 1, 0, 2):
            partial.write(index, memoryview(self.piece(index)))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertTrue(partial.verified().complete)

    def test_resume_keeps_good_pieces_only(self):
        damaged = bytearray(self.data[:2 * piece_size(1)])
        damaged[piece_size(1) + 5] ^= 1  # piece 1 is bad; piece 2 is not there at all
        have = self.partial(bytes(damaged)).verified()
        self.assertEqual([i for i in range(4) if i in have], [0])

    def test_holes_of_a_sparse_file_are_not_pieces(self):
        partial = self.partial()
        partial.write(2, memoryview(self.piece(2)))
        have = partial.verified()
        self.assertEqual([i for i in range(4) if i in have], [2])

    def test_a_full_disk_is_a_disk_error_saying_what_to_do(self):
        partial = self.partial()
        with mock.patch("os.pwrite", side_effect=OSError(28, "No space left on device")):
            with self.assertRaises(DiskError) as caught:
                partial.write(0, memoryview(self.piece(0)))
        self.assertIn("disk is full", caught.exception.message)


class WholeHashTests(PiecesCase):
    """The whole file's SHA-256 follows the pieces in order: from the buffer a piece came in
    when it is offered as the next one due, else read back from the partial file."""

    def setUp(self):
        super().setUp()
        self.cond = threading.Condition()
        self.ready = set()  # pieces on disk
        self.given_back = []

    def whole(self, on_disk):
        partial = self.partial(on_disk)
        whole = partials.WholeHash(partial, self.ready.__contains__, self.cond)
        self.addCleanup(whole.stop)
        return whole

    def land(self, whole, index, data):
        """Piece ``index`` is written, ``data`` its bytes: did the hash take the buffer?"""
        with self.cond:
            self.ready.add(index)
            return whole.landed(index, memoryview(data), lambda: self.given_back.append(index))

    def test_pieces_landed_in_order_are_hashed_from_memory_and_given_back(self):
        whole = self.whole(bytes(len(self.data)))  # zeros on disk: never read back
        for index in range(self.pieces.count):
            self.assertTrue(self.land(whole, index, self.piece(index)))
        self.assertEqual(whole.hexdigest(), self.pieces.sha256)
        self.assertEqual(self.given_back, list(range(self.pieces.count)))

    def test_a_piece_landed_before_its_turn_is_read_back_when_due(self):
        whole = self.whole(self.data)
        self.assertFalse(self.land(whole, 1, bytes(self.pieces.piece_size)))  # zeros: unused
        for index in (0, 2, 3):
            self.land(whole, index, self.piece(index))
        self.assertEqual(whole.hexdigest(), self.pieces.sha256)
        self.assertNotIn(1, self.given_back)  # the caller kept that buffer

    def test_after_a_disk_error_buffers_are_refused_and_the_error_is_raised(self):
        whole = self.whole(self.data[:self.pieces.piece_size])  # piece 1 shrank away
        self.land(whole, 1, self.piece(1))  # out of turn: to be read back
        self.land(whole, 0, self.piece(0))
        with self.assertRaises(DiskError):
            whole.hexdigest()
        self.assertFalse(self.land(whole, 2, self.piece(2)))


class BufferTests(unittest.TestCase):
    """The first holder of a download alone gets a longer lead over the whole file's hash
    (ALONE_BUFFER_BYTES of buffers); in a swarm each holder gets BUFFER_BUDGET_BYTES."""

    def buffers(self, alone, others, count=1000):
        swarm = types.SimpleNamespace(
            d=types.SimpleNamespace(connection=lambda lease, file: None), file=None,
            pieces=types.SimpleNamespace(piece_size=1 << 20, count=count),
            plan=types.SimpleNamespace(alone=alone), workers=dict.fromkeys(range(others)))
        lease = types.SimpleNamespace(transfer_id="t", address="10.0.0.7:1", name="")
        return worker.Worker(swarm, lease).free.qsize()

    def test_the_first_holder_alone_gets_the_alone_budget(self):
        self.assertEqual(self.buffers(alone=True, others=0), worker.ALONE_BUFFER_BYTES >> 20)

    def test_other_holders_and_a_swarm_get_the_usual_budget(self):
        self.assertEqual(self.buffers(alone=True, others=1), worker.BUFFER_BUDGET_BYTES >> 20)
        self.assertEqual(self.buffers(alone=False, others=0), worker.BUFFER_BUDGET_BYTES >> 20)

    def test_no_more_buffers_than_pieces(self):
        self.assertEqual(self.buffers(alone=True, others=0, count=3), 3)


class DownloadQueueTests(unittest.TestCase):

    def test_a_few_at_once_in_order_cancellable_each_reported_once(self):
        started, release = [], threading.Event()
        lock = threading.Lock()

        def start(job, on_progress):
            with lock:
                started.append(job.name)
            while not release.wait(0.01):
                on_progress(Progress(job.name, 1, 2, 1.0, "10.0.0.7:1"))
            if job.name == "bad":
                raise download.DownloadError("Nobody shares 'bad' right now.")
            return job.name

        queue = download.DownloadQueue(start, limit=2)
        jobs = [queue.submit(name)[0] for name in ("a", "b", "bad", "c")]
        self.assertEqual(queue.submit("a"), (jobs[0], True))  # the same file again
        deadline = time.monotonic() + WAIT_S
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(sorted(started), ["a", "b"])  # two at once; the others wait
        self.assertEqual([j.state for j in jobs[2:]], ["waiting", "waiting"])
        jobs[3].cancel.set()  # c: cancelled while waiting
        jobs[1].cancel.set()  # b: cancelled while running, at its next progress report
        while not jobs[1].ended and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        self.assertTrue(queue.wait(WAIT_S))
        self.assertEqual([j.state for j in jobs], ["done", "cancelled", "failed", "cancelled"])
        self.assertEqual(jobs[0].result, "a")
        self.assertIn("Nobody shares", jobs[2].error.message)
        self.assertNotIn("c", started)
        self.assertEqual(len(queue.take_ended()), 4)
        self.assertEqual(queue.take_ended(), [])
        self.assertEqual(queue.active(), [])


if __name__ == "__main__":
    unittest.main()
