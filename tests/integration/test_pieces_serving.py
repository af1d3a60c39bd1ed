"""Pieces on the peer's file server: /pieces and /blobs from full and partial holders,
PartialShares, and piece hashes in the hash cache. In-process servers on port 0."""

import hashlib
import json
import os
import shutil
import tempfile
import threading
import unittest
from unittest import mock

from p2p.net import sharing
from p2p.core.members import Members, NetworkSecret
from p2p.cli.text import upload_line
from p2p.core.membership import REFUSED
from p2p.net.lb_client import LBClientError
from p2p.net.node import Peer
from p2p.core.pieces import MIN_PIECE_BYTES, Bitfield, PieceList, hash_file, piece_size
from p2p.net.sharing import CACHE_NAME, FileServer, PartialShares, ShareIndex, Upload
from tests.support import (COMMAND_TIMEOUT_S, PEER, ProcessTestCase, free_port, http_json,
                           http_request, quiet_logs, serve_in_thread, wait_for, write_file,
                           write_random)

PIECE = MIN_PIECE_BYTES
MiB = 1 << 20
WAIT_S = 10.0  # upper bound for hashing a few small files in the background


def sha(data):
    return hashlib.sha256(data).hexdigest()


def piece_list(data):
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        whole, digests = hash_file(f)
    return PieceList(whole, len(data), piece_size(len(data)), tuple(digests))


class PiecesServingTests(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="p2p-pieces-")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        self.shared = os.path.join(self.root, "shared")
        self.downloads = os.path.join(self.root, "downloads")
        self.full = os.urandom(3 * PIECE + 1000)  # 4 pieces, the last short
        write_file(self.shared, "whole.bin", self.full)
        self.index = ShareIndex([self.shared, self.downloads])
        self.addCleanup(self.index.close)
        self.index.refresh()
        self.assertTrue(self.index.wait_hashed(WAIT_S))

        # A file being downloaded: pieces 0 and 2 verified; the rest of the partial
        # file is junk that must never go out.
        self.song = os.urandom(4 * PIECE + 10)  # 5 pieces
        self.song_sha = sha(self.song)
        self.pieces = piece_list(self.song)
        self.have = Bitfield(self.pieces.count)
        junk = bytearray(os.urandom(len(self.song)))
        for index in (0, 2):
            start, length = self.pieces.span(index)
            junk[start:start + length] = self.song[start:start + length]
            self.have.add(index)
        self.part = write_file(self.downloads, f".song.mp3.{self.song_sha[:16]}.part", junk)
        self.partials = PartialShares()
        self.partials.add("song.mp3", self.pieces, self.have, self.part)
        self.start()

    def start(self, **options):
        server = FileServer(("127.0.0.1", 0), self.index, partials=self.partials, **options)
        self.server = serve_in_thread(self, server)
        return server

    def request(self, method, path, headers=None):
        return http_request(self.server.port, method, path, headers)

    def ranged(self, start, end, method="GET", target=None):
        return self.request(method, target or f"/blobs/{self.song_sha}",
                            {"Range": f"bytes={start}-{end}"})

    def assert_missing(self, response, body):
        self.assertEqual(response.status, 404)
        answer = json.loads(body)
        self.assertIs(answer["missing"], True)
        self.assertIn("verified only 49 %", answer["error"])  # 2 full pieces of 4 and 10 bytes
        self.assertNotIn(self.song[PIECE:PIECE + 64], body)

    # -- /pieces --------------------------------------------------------------

    def test_pieces_from_a_full_holder(self):
        entry = self.index.get("whole.bin")
        response, body = self.request("GET", f"/pieces/{sha(self.full)}")
        self.assertEqual(response.status, 200)
        answer = json.loads(body)
        self.assertIsNone(answer["have"])
        parsed = PieceList.from_json(answer, sha(self.full), len(self.full),
                                     entry.as_dict()["pieces"])
        self.assertEqual(parsed, piece_list(self.full))
        response, body = self.request("HEAD", f"/pieces/{sha(self.full)}")
        self.assertEqual((response.status, body), (200, b""))

    def test_pieces_from_a_partial_holder(self):
        response, body = self.request("GET", f"/pieces/{self.song_sha}")
        self.assertEqual(response.status, 200)
        answer = json.loads(body)
        self.assertEqual(PieceList.from_json(answer, self.song_sha, len(self.song),
                                             self.pieces.hash), self.pieces)
        have = Bitfield.from_text(self.pieces.count, answer["have"])
        self.assertEqual([i for i in range(self.pieces.count) if i in have], [0, 2])

    def test_have_says_what_is_verified_without_the_list_and_every_answer_says_it(self):
        response, body = self.request("GET", f"/have/{self.song_sha}")
        self.assertEqual(response.status, 200)
        have = Bitfield.from_text(self.pieces.count, json.loads(body)["have"])
        self.assertEqual([i for i in range(self.pieces.count) if i in have], [0, 2])
        response, body = self.request("GET", f"/have/{sha(self.full)}")
        self.assertEqual(json.loads(body), {"have": None}, "a whole holder has it all")
        self.have.add(4)
        for start in (0, PIECE):  # a 206 and a 404 both say what is verified now
            response, _ = self.ranged(start, start + 9)
            said = Bitfield.from_text(self.pieces.count, response.getheader("X-P2P-Have"))
            self.assertEqual([i for i in range(self.pieces.count) if i in said], [0, 2, 4])

    def test_a_whole_holder_says_which_pieces_it_has_sent_to_anyone(self):
        digest, count = sha(self.full), self.index.get("whole.bin").pieces.count
        for start, sent in ((PIECE + 5, [1]), (3 * PIECE - 1, [1, 2, 3])):
            with self.subTest(start=start):
                response, _ = self.ranged(start, start + 9, target=f"/blobs/{digest}")
                said = Bitfield.from_text(count, response.getheader("X-P2P-Sent"))
                self.assertEqual([i for i in range(count) if i in said], sent)
        response, _ = self.request("HEAD", f"/blobs/{digest}", {"Range": "bytes=0-9"})
        self.assertIsNone(response.getheader("X-P2P-Sent"), "a HEAD sends nothing")

    def test_bad_and_unknown_hashes(self):
        for route in ("pieces", "blobs"):
            for bad in ("abc", sha(b"x").upper(), sha(b"x") + "0", "%2e%2e"):
                with self.subTest(route=route, bad=bad):
                    response, _ = self.request("GET", f"/{route}/{bad}")
                    self.assertEqual(response.status, 400)
            with self.subTest(route=route, unknown=True):
                response, body = self.request("GET", f"/{route}/{sha(b'nobody')}")
                self.assertEqual(response.status, 404)
                self.assertNotIn("missing", json.loads(body))

    # -- /blobs from a full holder ---------------------------------------------

    def test_blobs_from_a_full_holder_as_files(self):
        digest = sha(self.full)
        response, body = self.request("GET", f"/blobs/{digest}")
        self.assertEqual((response.status, body), (200, self.full))
        self.assertEqual(response.getheader("ETag"), f'"{digest}"')
        response, body = self.ranged(PIECE - 5, PIECE + 4, target=f"/blobs/{digest}")
        self.assertEqual((response.status, body), (206, self.full[PIECE - 5:PIECE + 5]))
        self.assertEqual(response.getheader("Content-Range"),
                         f"bytes {PIECE - 5}-{PIECE + 4}/{len(self.full)}")
        self.assertEqual(response.getheader("ETag"), f'"{digest}"')
        response, _ = self.ranged(len(self.full), len(self.full) + 9, target=f"/blobs/{digest}")
        self.assertEqual(response.status, 416)
        response, body = self.request("HEAD", f"/blobs/{digest}")
        self.assertEqual((response.status, body), (200, b""))
        self.assertEqual(response.getheader("Content-Length"), str(len(self.full)))

    # -- /blobs from a partial holder ------------------------------------------

    def test_a_partial_holder_serves_ranges_inside_verified_pieces(self):
        etag = f'"{self.song_sha}"'
        for start, end in ((0, PIECE - 1), (10, 20), (2 * PIECE, 3 * PIECE - 1)):
            with self.subTest(start=start, end=end):
                response, body = self.ranged(start, end)
                self.assertEqual((response.status, body), (206, self.song[start:end + 1]))
                self.assertEqual(response.getheader("ETag"), etag)
                self.assertEqual(response.getheader("Content-Range"),
                                 f"bytes {start}-{end}/{len(self.song)}")
        response, body = self.ranged(0, PIECE - 1, method="HEAD")
        self.assertEqual((response.status, body), (206, b""))

    def test_a_partial_holder_refuses_what_it_has_not_verified(self):
        for start, end in ((PIECE, 2 * PIECE - 1), (PIECE - 1, PIECE), (2 * PIECE, 4 * PIECE),
                           (0, len(self.song) - 1)):
            with self.subTest(start=start, end=end):
                self.assert_missing(*self.ranged(start, end))
        for method in ("GET", "HEAD"):
            with self.subTest(method=method, range=None):
                response, body = self.request(method, f"/blobs/{self.song_sha}")
                self.assertEqual(response.status, 404)
                if method == "GET":
                    self.assert_missing(response, body)
        response, body = self.request("GET", f"/blobs/{self.song_sha}",
                                      {"Range": "bytes=0-9", "If-Range": f'"{sha(b"other")}"'})
        self.assert_missing(response, body)
        response, _ = self.ranged(len(self.song), len(self.song) + 1)
        self.assertEqual(response.status, 416)

    def test_a_partial_file_is_never_listed(self):
        response, body = self.request("GET", "/files")
        self.assertEqual([f["name"] for f in json.loads(body)], ["whole.bin"])
        response, body = self.request("GET", "/")
        self.assertIn(b"whole.bin", body)
        self.assertNotIn(b"song", body)
        response, _ = self.request("GET", "/files/song.mp3")
        self.assertEqual(response.status, 404)

    def test_a_finished_download_is_served_from_the_index(self):
        final = write_file(self.downloads, "song.mp3", self.song)
        os.unlink(self.part)
        self.assert_missing(*self.ranged(0, 9))  # gone, and not yet shared
        self.index.add_verified(self.downloads, final, self.song_sha, self.pieces.digests)
        self.partials.remove(self.song_sha)
        response, body = self.request("GET", f"/blobs/{self.song_sha}")
        self.assertEqual((response.status, body), (200, self.song))
        response, body = self.request("GET", f"/pieces/{self.song_sha}")
        self.assertIsNone(json.loads(body)["have"])

    def test_busy_slots_answer_503_for_blobs(self):
        server = self.start(upload_slots=1)
        taken = server.uploads.acquire("someone", "other.bin", 10)
        self.addCleanup(server.uploads.release, taken)
        for target, headers in ((f"/blobs/{sha(self.full)}", {}),
                                (f"/blobs/{self.song_sha}", {"Range": "bytes=0-9"})):
            with self.subTest(target=target):
                response, _ = self.request("GET", target, headers)
                self.assertEqual(response.status, 503)
                self.assertEqual(response.getheader("Retry-After"), "2")

    def test_the_upload_names_its_file_range_and_pieces(self):
        seen = []
        real = sharing.send_file_range

        def watched(sock, f, offset, count):  # what the uploads list says while it sends
            seen.extend(self.server.uploads.active())
            return real(sock, f, offset, count)

        with mock.patch.object(sharing, "send_file_range", watched):
            response, body = self.ranged(2 * PIECE + 3, 3 * PIECE - 1)
        self.assertEqual(response.status, 206)
        (upload,) = seen
        self.assertEqual((upload.name, upload.start, upload.total, upload.size),
                         ("song.mp3", 2 * PIECE + 3, PIECE - 3, len(self.song)))
        self.assertEqual(upload.pieces, (2, 2))
        self.assertEqual(Upload(1, "c", "x", 2 * PIECE, PIECE - 1, 5 * PIECE).pieces, (0, 2))


class SignedPiecesTests(PiecesServingTests):
    """On a network with a secret, /pieces and /blobs are signed like every request; a
    presigned URL is good for /files only."""

    def start(self, **options):
        quiet_logs(self)
        self.members = Members(NetworkSecret("the tests' own network secret"))
        return super().start(members=self.members, **options)

    def request(self, method, path, headers=None, sign=True):
        signed = (self.members.auth_headers(method, path, f"127.0.0.1:{self.server.port}")
                  if sign else {})
        return super().request(method, path, {**(headers or {}), **signed})

    def test_unsigned_or_presigned_requests_are_refused(self):
        query = self.members.secret.url_query("whole.bin")
        for path in (f"/pieces/{self.song_sha}", f"/blobs/{sha(self.full)}"):
            with self.subTest(path=path):
                response, _ = self.request("GET", path, sign=False)
                self.assertEqual(response.status, 401)
                response, _ = self.request("GET", f"{path}?{query}", sign=False)
                self.assertEqual(response.status, 401)
        response, _ = self.request("GET", f"/files/whole.bin?{query}", sign=False)
        self.assertEqual(response.status, 200)


class UploadLineTests(unittest.TestCase):
    def test_option_4_names_the_pieces_of_a_range(self):
        whole = 40 * PIECE
        cases = [(Upload(1, "127.0.0.1:4242", "song.mp3", 2 * PIECE, 16 * PIECE, whole),
                  "pieces 17-18 of song.mp3 to 127.0.0.1:4242: 0 B / 512.0 KiB (bytes 4.0 MiB "
                  "to 4.5 MiB of 10.0 MiB)"),
                 (Upload(1, "127.0.0.1:4242", "song.mp3", 10, 16 * PIECE + 5, whole),
                  "piece 17 of song.mp3 to 127.0.0.1:4242: 0 B / 10 B"),
                 (Upload(1, "127.0.0.1:4242", "song.mp3", whole, 0, whole),
                  "song.mp3 to 127.0.0.1:4242: 0 B / 10.0 MiB")]
        for upload, line in cases:
            with self.subTest(line=line):
                self.assertTrue(upload_line(upload).startswith(line), upload_line(upload))


class PartialSharesTests(unittest.TestCase):
    def test_versions_and_what_is_announced(self):
        changes = []
        partials = PartialShares(on_change=lambda: changes.append(1))
        data = os.urandom(2 * PIECE + 10)
        pieces = piece_list(data)
        have = Bitfield(pieces.count)
        partials.add("a.bin", pieces, have, "/nowhere")
        first = partials.version
        self.assertEqual(partials.announced(), [{"name": "a.bin", "size": len(data),
                                                 "sha256": sha(data), "pieces": pieces.hash,
                                                 "done": 0}])
        have.add(2)
        partials.touch()
        self.assertGreater(partials.version, first)
        self.assertEqual(partials.announced()[0]["done"], 10)
        have.add(0)
        partials.touch()
        self.assertEqual(partials.announced()[0]["done"], PIECE + 10)
        self.assertEqual(partials.get(sha(data)).name, "a.bin")
        before = partials.version
        partials.remove(sha(data))
        partials.remove(sha(data))
        self.assertEqual(partials.version, before + 1)
        self.assertEqual((partials.announced(), len(partials)), ([], 0))
        self.assertEqual(len(changes), 4)

    def test_a_stalled_download_is_announced_as_such_until_it_moves(self):
        partials = PartialShares()
        pieces = piece_list(os.urandom(PIECE))
        partials.add("a.bin", pieces, Bitfield(pieces.count), "/nowhere")
        before = partials.version
        partials.set_stalled(pieces.sha256, True)
        partials.set_stalled(pieces.sha256, True)  # no change: no new version
        self.assertEqual(partials.version, before + 1)
        self.assertIs(partials.announced()[0]["stalled"], True)
        partials.set_stalled(pieces.sha256, False)
        self.assertNotIn("stalled", partials.announced()[0])
        partials.set_stalled("0" * 64, True)  # not being downloaded: nothing
        self.assertEqual(partials.version, before + 2)


class RecordingLB:
    """Stands in for the peer's LBClient: answers at once and records what it was told."""
    host, port, address = "127.0.0.1", 9, "127.0.0.1:9"

    def __init__(self):
        self.registered, self.heartbeats, self.hosts = [], [], []
        self.beat = threading.Condition()

    def register(self, port, files, host=None, name="", slots=None):
        self.registered.append(slots)
        self.hosts.append(host)
        return {"peer_id": "p1", "token": "t", "heartbeat_s": 0.01}

    def heartbeat(self, peer_id, token, files=None, uploads=None, slots=None, partial=None):
        with self.beat:
            self.heartbeats.append(partial)
            self.beat.notify_all()

    def wait_beats(self, count):
        with self.beat:
            self.beat.wait_for(lambda: len(self.heartbeats) >= count, WAIT_S)
            return list(self.heartbeats)

    def unregister(self, peer_id, token):
        pass

    def interrupt(self, timeout):
        pass

    def close(self):
        pass


class PeerAnnouncesPartialsTests(unittest.TestCase):
    def test_slots_at_registration_and_partials_when_they_change(self):
        root = tempfile.mkdtemp(prefix="p2p-peer-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        lb = RecordingLB()
        me = Peer(lb, None, os.path.join(root, "downloads"), "127.0.0.1", upload_slots=3)
        me.start()
        self.addCleanup(me.stop)
        self.assertEqual(lb.registered, [3])
        self.assertEqual(lb.hosts, ["127.0.0.1"])  # listening on one address: that one
        self.assertEqual(os.listdir(root), ["downloads"])  # no shared folder, no lock file
        self.assertIs(me.server.partials, me.partials)
        first = len(lb.wait_beats(1))
        data = os.urandom(PIECE + 1)
        pieces = piece_list(data)
        have = Bitfield(pieces.count)
        me.partials.add("a.bin", pieces, have, os.path.join(root, "downloads", ".a.part"))
        beats = lb.wait_beats(first + 2)
        announced = [b for b in beats if b]
        self.assertEqual(announced, [me.partials.announced()])
        self.assertEqual(beats[-1], None)  # said once, until it changes
        have.add(1)
        me.partials.touch()
        with lb.beat:
            lb.beat.wait_for(lambda: any(b and b[0]["done"] == 1 for b in lb.heartbeats), WAIT_S)
        self.assertEqual([b[0]["done"] for b in lb.heartbeats if b], [0, 1])


class GetServesTests(ProcessTestCase):
    def test_get_is_a_peer_while_it_runs_and_leaves_when_done(self):
        lb = self.start_lb("--heartbeat", "1")
        write_random(os.path.join(self.folder("holder", "shared"), "big.bin"), 16 * MiB)
        self.start_peer(lb.port, "holder", "--upload-limit", "4M", wait_files=["big.bin"])
        port = free_port()
        downloads = self.folder("me", "downloads")
        get = self.spawn([PEER, "get", "big.bin", "--lb", f"127.0.0.1:{lb.port}", "--downloads",
                          downloads, "--host", "127.0.0.1", "--port", str(port)])
        wait_for(lambda: self.peer_entry(lb.port, port) is not None, what="get to register")
        self.assertEqual(self.peer_files(lb.port, port), set())  # it shares nothing whole
        code, body = http_json(port, "GET", f"/pieces/{sha(b'not here')}")
        self.assertEqual(code, 404, body)
        out, err = get.communicate(timeout=COMMAND_TIMEOUT_S)
        self.assertEqual(get.returncode, 0, err)
        self.assertNotIn(b"listening on", out)
        self.assertIsNone(self.peer_entry(lb.port, port))
        self.assertEqual(os.listdir(downloads), ["big.bin"])


class PieceHashCacheTests(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="p2p-cache-")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        self.data = os.urandom(PIECE + 1)
        self.path = write_file(self.root, "a.bin", self.data)

    def index(self, hashes=True):
        """A new index of the folder, once what it hashes is hashed and in the cache file."""
        saved = threading.Event()
        index = ShareIndex([self.root], on_change=saved.set)
        self.addCleanup(index.close)
        index.refresh()
        self.assertTrue(index.wait_hashed(WAIT_S))
        if hashes:
            self.assertTrue(saved.wait(WAIT_S), "the hasher did not announce")
        return index

    def cache(self):
        with open(os.path.join(self.root, CACHE_NAME), encoding="utf-8") as f:
            return json.load(f)

    def test_pieces_survive_a_restart_without_hashing(self):
        first = self.index().get("a.bin")
        self.assertEqual(first.digests, piece_list(self.data).digests)
        self.assertEqual(self.cache()["a.bin"]["pieces"], list(first.digests))
        with mock.patch.object(sharing, "hash_pieces", side_effect=AssertionError("hashed")):
            again = self.index(hashes=False).get("a.bin")
        self.assertEqual((again.digests, again.as_dict()), (first.digests, first.as_dict()))

    def test_an_old_entry_without_pieces_is_hashed_again(self):
        st = os.stat(self.path)
        with open(os.path.join(self.root, CACHE_NAME), "w", encoding="utf-8") as f:
            json.dump({"a.bin": {"stamp": list(sharing.stamp(st)), "sha256": sha(self.data)}}, f)
        entry = self.index().get("a.bin")
        self.assertEqual(entry.digests, piece_list(self.data).digests)
        self.assertEqual(entry.as_dict()["pieces"], piece_list(self.data).hash)
        self.assertEqual(self.cache()["a.bin"]["pieces"], list(entry.digests))

    def test_a_verified_download_without_pieces_gets_them(self):
        index = self.index()
        path = write_file(self.root, "got.bin", self.data)  # as if downloaded by an older downloader
        index.add_verified(self.root, path, sha(self.data))
        self.assertIsNone(index.get("got.bin").pieces)
        self.assertNotIn("pieces", index.get("got.bin").as_dict())
        self.assertTrue(index.wait_hashed(WAIT_S))
        self.assertEqual(index.get("got.bin").pieces, piece_list(self.data))


if __name__ == "__main__":
    unittest.main()


class RefusingLB(RecordingLB):
    """A load balancer that answers, but refuses the registration (413: too many files)."""
    peer_id = None

    def __init__(self):
        super().__init__()
        self.asked = threading.Event()

    def register(self, port, files, host=None, name="", slots=None):
        self.asked.set()
        raise LBClientError("The list of files is too long for this load balancer.", 413)


class RefusedPeerTests(unittest.TestCase):
    def test_a_refusal_keeps_the_load_balancer_and_never_searches_or_elects(self):
        root = tempfile.mkdtemp(prefix="p2p-peer-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        lb, moves = RefusingLB(), []
        me = Peer(lb, None, os.path.join(root, "downloads"), "127.0.0.1",
                  rediscover=lambda: moves.append("search"),
                  elect=lambda: moves.append("elect") or ("failed", None))
        me.start()
        self.addCleanup(me.stop)
        self.assertTrue(lb.asked.wait(COMMAND_TIMEOUT_S))
        member = me.memberships[0]
        wait_for(lambda: member.machine.state == REFUSED, what="the refusal to be taken")
        self.assertIn("too long", me.lb_problem)
        self.assertEqual(moves, [])
