"""pieces.py, pure: the piece size, hashing a file into pieces, the piece list's checks,
bitfields. No sockets."""

import hashlib
import io
import os
import shutil
import tempfile
import unittest

from p2p.net import sharing
from p2p.core.pieces import (MAX_PIECE_BYTES, MIN_PIECE_BYTES, TARGET_PIECES, BadPieceList, Bitfield,
                    PieceList, hash_file, piece_count, piece_size, piece_span, pieces_hash)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def sha(data):
    return hashlib.sha256(data).hexdigest()


def cut(data):
    piece = piece_size(len(data))
    return [sha(data[i:i + piece]) for i in range(0, len(data), piece)]


class PieceSizeTests(unittest.TestCase):
    SIZES = [0, 1, 256 * KiB - 1, 256 * KiB, 256 * KiB + 1, 100 * MiB, 500 * MiB,
             500 * MiB + 1, GiB, 4 * GiB + 7, TARGET_PIECES * MAX_PIECE_BYTES,
             32 * GiB, 100 * GiB, 1 << 40]

    def test_between_256_kib_and_16_mib_and_a_power_of_two(self):
        for size in self.SIZES:
            with self.subTest(size=size):
                piece = piece_size(size)
                self.assertGreaterEqual(piece, MIN_PIECE_BYTES)
                self.assertLessEqual(piece, MAX_PIECE_BYTES)
                self.assertEqual(piece & (piece - 1), 0)

    def test_at_most_2000_pieces_while_16_mib_pieces_allow_it(self):
        for size in self.SIZES:
            with self.subTest(size=size):
                if size <= TARGET_PIECES * MAX_PIECE_BYTES:
                    self.assertLessEqual(piece_count(size), TARGET_PIECES)
                else:
                    self.assertEqual(piece_size(size), MAX_PIECE_BYTES)

    def test_the_smallest_size_that_keeps_the_count(self):
        self.assertEqual(piece_size(TARGET_PIECES * MIN_PIECE_BYTES), MIN_PIECE_BYTES)
        self.assertEqual(piece_size(TARGET_PIECES * MIN_PIECE_BYTES + 1), 2 * MIN_PIECE_BYTES)

    def test_spans_cover_the_file_once(self):
        size = 3 * MIN_PIECE_BYTES + 5
        spans = [piece_span(i, size) for i in range(piece_count(size))]
        self.assertEqual(spans, [(0, MIN_PIECE_BYTES), (MIN_PIECE_BYTES, MIN_PIECE_BYTES),
                                 (2 * MIN_PIECE_BYTES, MIN_PIECE_BYTES), (3 * MIN_PIECE_BYTES, 5)])
        self.assertEqual(piece_count(0), 0)


class HashFileTests(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="p2p-pieces-")
        self.addCleanup(shutil.rmtree, self.folder, ignore_errors=True)

    def test_whole_hash_and_each_piece_in_one_read(self):
        piece = MIN_PIECE_BYTES
        for size in (0, 1, piece - 1, piece, piece + 1, 4 * piece + 1000):
            with self.subTest(size=size):
                data = os.urandom(size)
                self.assertEqual(hash_file(io.BytesIO(data)), (sha(data), cut(data)))
                path = os.path.join(self.folder, f"{size}.bin")
                with open(path, "wb") as f:
                    f.write(data)
                self.assertEqual(sharing.hash_pieces(path), (sha(data), cut(data)))


class PieceListTests(unittest.TestCase):
    def setUp(self):
        self.data = os.urandom(2 * MIN_PIECE_BYTES + 10)
        self.sha, self.size = sha(self.data), len(self.data)
        self.pieces = PieceList(self.sha, self.size, piece_size(self.size), tuple(cut(self.data)))
        self.body = self.pieces.as_json()

    def parse(self, body, trusted=None):
        return PieceList.from_json(body, self.sha, self.size, trusted)

    def test_round_trip_and_its_hash(self):
        self.assertEqual(self.body["have"], None)
        self.assertEqual(self.parse(self.body, self.pieces.hash), self.pieces)
        self.assertEqual(self.pieces.hash, pieces_hash(cut(self.data)))
        self.assertEqual(self.pieces.count, 3)
        self.assertEqual(self.pieces.span(2), (2 * MIN_PIECE_BYTES, 10))
        self.assertTrue(self.pieces.matches(1, sha(self.data[MIN_PIECE_BYTES:2 * MIN_PIECE_BYTES])))

    def test_refusals(self):
        other = "0" * 64
        cases = {
            "not an object": [],
            "another file": {**self.body, "sha256": other},
            "another size": {**self.body, "size": self.size + 1},
            "wrong piece size": {**self.body, "piece_size": 2 * MIN_PIECE_BYTES},
            "too few": {**self.body, "pieces": self.body["pieces"][:2]},
            "too many": {**self.body, "pieces": self.body["pieces"] + [other]},
            "upper-case hex": {**self.body, "pieces": [d.upper() for d in self.body["pieces"]]},
            "not hex": {**self.body, "pieces": ["zz" * 32] * 3},
            "not a list": {**self.body, "pieces": "abc"},
        }
        for what, body in cases.items():
            with self.subTest(what):
                with self.assertRaises(BadPieceList):
                    self.parse(body)
        with self.assertRaises(BadPieceList):
            self.parse(self.body, trusted=pieces_hash([other] * 3))


class BitfieldTests(unittest.TestCase):
    def test_round_trip(self):
        bits = Bitfield(11)
        for index in (0, 3, 10, 3):
            bits.add(index)
        self.assertEqual(len(bits), 3)
        self.assertEqual(bits.missing(), [1, 2, 4, 5, 6, 7, 8, 9])
        self.assertFalse(bits.complete)
        self.assertNotIn(11, bits)
        self.assertNotIn(-1, bits)
        again = Bitfield.from_text(11, bits.to_text())
        self.assertEqual([i for i in range(11) if i in again], [0, 3, 10])
        self.assertEqual(len(again), 3)
        for index in again.missing():
            again.add(index)
        self.assertTrue(again.complete)

    def test_bittorrent_order(self):
        bits = Bitfield(9)
        bits.add(0)
        bits.add(8)
        self.assertEqual(bits.to_text(), "gIA=")  # 0x80 0x80

    def test_refusals(self):
        for what, count, text in (("not base64", 8, "!!!!"), ("too short", 9, "gA=="),
                                  ("too long", 8, "gIA="), ("a spare bit set", 9, "gMA="),
                                  ("not text", 8, None)):
            with self.subTest(what):
                with self.assertRaises(BadPieceList):
                    Bitfield.from_text(count, text)


if __name__ == "__main__":
    unittest.main()
