"""Tests of p2p/net/sharing.py's decisions without sockets: names, ranges, rates, the share index.
"""

import hashlib
import json
import os
import tempfile
import threading
import unittest
from unittest import mock

from p2p.core import wire
from p2p.core.bottleneck import Source
from p2p.core.pieces import Bitfield, PieceList, piece_size, pieces_hash
from p2p.core.registry import peer_status
from p2p.net import sharing
from p2p.net.sharing import BadName, RangeNotSatisfiable
from tests.support import write_file

WAIT_S = 5.0  # upper bound for any wait on a background thread


def piece_digests(data):
    """Each piece's SHA-256 of ``data``, cut as pieces.piece_size says."""
    piece = piece_size(len(data))
    return [sha(data[i:i + piece]) for i in range(0, len(data), piece)]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def make_temp_dir(test):
    tmp = tempfile.TemporaryDirectory()
    test.addCleanup(tmp.cleanup)
    return tmp.name


HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "...",
    "../x",
    "../../etc/passwd",
    "a/../b",
    "a/..",
    "dir/..",
    "/etc/passwd",
    "/",
    "//server/share",
    "C:/x",
    "c:x",
    "C:\\x",
    "a\\b",
    "..\\x",
    "\\\\server\\share",
    "a\x00b",
    "\x00",
    "a\nb",
    "a\rb",
    "a\tb",
    "\x1b[31m",
    "\x7f",
    "a\x7fb",
    "\u0085",  # C1 control (NEL)
    "a\u009bb",  # C1 control (CSI)
    ".hidden",
    "dir/.hidden",
    ".git/config",
    "dir/.git/config",
    ".p2p-hashes.json",
    "a//b",
    "a/",
    "./a",
    "a/./b",
    "x" * 1025,
    "/".join(["a"] * 65),
    "\ud800",  # lone surrogate
    "a\udfffb",
    # names a Windows peer could not write safely
    "CON",
    "con",
    "NUL.txt",
    "dir/aux.tar.gz",
    "COM1",
    "lpt9.log",
    "COM\u00b9",
    "CON .txt",
    "a:b",
    "dir/a:b.txt",
    "file.",
    "trailing space ",
    "dir./x",
    "a*b",
    "a?b.txt",
    "a<b",
    "a>b",
    "a|b",
    'a"b',
]


GOOD_NAMES = [
    "a.txt",
    "my file.txt",
    "résumé.pdf",
    "日本語/ファイル.txt",
    "🎉 party.mp4",
    "a/b/c.txt",
    "v1.2.tar.gz",
    "-x",
    "--help",
    "a..b",
    "a/b..c/d",
    "100%.txt",
    "a+b=c&d.txt",
    "console.txt",
    "CONFIG",
    "com10",
    "nul-x.txt",
    " leading space",
    "a. b",
    "#hash.txt",
    "x" * 1024,
    "/".join(["a"] * 64),
]


class CheckNameTests(unittest.TestCase):
    def test_enough_hostile_names(self):
        self.assertGreaterEqual(len(HOSTILE_NAMES), 30)

    def test_hostile_names_are_rejected(self):
        for name in HOSTILE_NAMES:
            with self.subTest(name=name[:80]):
                with self.assertRaises(BadName):
                    sharing.check_name(name)

    def test_bad_name_is_a_value_error_with_a_reason(self):
        with self.assertRaises(ValueError) as caught:
            sharing.check_name("../x")
        self.assertTrue(str(caught.exception))

    def test_non_strings_are_rejected(self):
        for value in (None, b"a.txt", 5, ["a.txt"]):
            with self.subTest(value=value):
                with self.assertRaises(BadName):
                    sharing.check_name(value)

    def test_normal_names_are_accepted_unchanged(self):
        for name in GOOD_NAMES:
            with self.subTest(name=name[:80]):
                self.assertEqual(sharing.check_name(name), name)

    def test_length_and_depth_limits_are_exact(self):
        self.assertEqual(sharing.check_name("x" * wire.MAX_NAME_CHARS),
                         "x" * wire.MAX_NAME_CHARS)
        with self.assertRaises(BadName):
            sharing.check_name("x" * (wire.MAX_NAME_CHARS + 1))
        deep = "/".join(["d"] * wire.MAX_NAME_PARTS)
        self.assertEqual(sharing.check_name(deep), deep)
        with self.assertRaises(BadName):
            sharing.check_name(deep + "/d")


class NameFromUrlPathTests(unittest.TestCase):
    def test_decodes_percent_escapes(self):
        cases = {
            "/files/a%20b.txt": "a b.txt",
            "/files/plain.txt": "plain.txt",
            "/files/dir%2Ffile.txt": "dir/file.txt",
            "/files/dir/file.txt": "dir/file.txt",
            "/files/a+b.txt": "a+b.txt",  # a path, not a form: + stays +
            "/files/%E2%82%AC.txt": "€.txt",
            "/files/r%C3%A9sum%C3%A9.pdf": "résumé.pdf",
        }
        for path, name in cases.items():
            with self.subTest(path=path):
                self.assertEqual(sharing.name_from_url_path(path), name)

    def test_decodes_only_once(self):
        self.assertEqual(sharing.name_from_url_path("/files/%252e%252e%252fx"), "%2e%2e%2fx")

    def test_hostile_paths_are_rejected(self):
        for path in ("/files/", "/files/%2e%2e/x", "/files/..%2fetc%2fpasswd",
                     "/files/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "/files/a%5cb", "/files/a%00b",
                     "/files/a%0Ab", "/files/%1b[31m", "/files/%2fetc%2fpasswd",
                     "/files/%2e/x", "/files/%2ehidden", "/files/dir/%2egit/config",
                     "/files/%ff", "/files/a%C3", "/files/%c0%ae%c0%ae/x",
                     "/files/%ED%A0%80"):
            with self.subTest(path=path):
                with self.assertRaises(BadName):
                    sharing.name_from_url_path(path)

    def test_url_for_name_round_trips(self):
        for name in GOOD_NAMES + ["a&b#c.txt", "50% off/%20.txt"]:
            with self.subTest(name=name[:80]):
                url = sharing.url_for_name(name)
                self.assertTrue(url.startswith("/files/"))
                self.assertNotIn(" ", url)
                self.assertNotIn("?", url)
                self.assertNotIn("#", url)
                self.assertEqual(sharing.name_from_url_path(url), name)


class ResolveTests(unittest.TestCase):
    def setUp(self):
        self.root = make_temp_dir(self)
        self.outside = make_temp_dir(self)
        self.inside_file = write_file(self.root, "a.txt", b"inside")
        write_file(self.root, "sub/b.txt", b"nested")
        self.outside_file = write_file(self.outside, "secret.txt", b"outside")

    def test_file_inside_gives_its_real_path(self):
        self.assertEqual(sharing.resolve(self.root, "a.txt"), os.path.realpath(self.inside_file))
        self.assertEqual(sharing.resolve(self.root, "sub/b.txt"),
                         os.path.realpath(os.path.join(self.root, "sub", "b.txt")))

    def test_missing_gives_none(self):
        self.assertIsNone(sharing.resolve(self.root, "missing.txt"))
        self.assertIsNone(sharing.resolve(self.root, "sub/missing.txt"))
        self.assertIsNone(sharing.resolve(self.root, "nosuchdir/x.txt"))

    def test_directory_gives_none(self):
        self.assertIsNone(sharing.resolve(self.root, "sub"))

    def test_dot_dot_cannot_escape_even_unchecked(self):
        rel = os.path.relpath(self.outside_file, self.root).replace(os.sep, "/")
        self.assertTrue(rel.startswith(".."))
        self.assertIsNone(sharing.resolve(self.root, rel))

    @unittest.skipUnless(hasattr(os, "symlink"), "needs symlinks")
    def test_symlink_to_outside_gives_none(self):
        os.symlink(self.outside_file, os.path.join(self.root, "link.txt"))
        os.symlink(self.outside, os.path.join(self.root, "outdir"))
        self.assertIsNone(sharing.resolve(self.root, "link.txt"))
        self.assertIsNone(sharing.resolve(self.root, "outdir/secret.txt"))

    @unittest.skipUnless(hasattr(os, "symlink"), "needs symlinks")
    def test_symlink_to_inside_resolves_to_the_target(self):
        os.symlink(self.inside_file, os.path.join(self.root, "alias.txt"))
        os.symlink("b.txt", os.path.join(self.root, "sub", "relative-alias.txt"))
        self.assertEqual(sharing.resolve(self.root, "alias.txt"),
                         os.path.realpath(self.inside_file))
        self.assertEqual(sharing.resolve(self.root, "sub/relative-alias.txt"),
                         os.path.realpath(os.path.join(self.root, "sub", "b.txt")))

    @unittest.skipUnless(hasattr(os, "symlink"), "needs symlinks")
    def test_root_that_is_itself_a_symlink(self):
        linked_root = os.path.join(self.outside, "root-link")
        os.symlink(self.root, linked_root)
        self.assertEqual(sharing.resolve(linked_root, "a.txt"),
                         os.path.realpath(self.inside_file))


class ParseRangeTests(unittest.TestCase):
    def test_ignored_headers_mean_the_whole_file(self):
        for header in (None, "", "bytes=", "bytes=-", "items=0-1", "bytes=a-b", "bytes=0-1,3-4",
                       "bytes=5-2", "bytes 0-1", "0-1", "bytes=1.5-2"):
            with self.subTest(header=header):
                self.assertIsNone(sharing.parse_range(header, 100))

    def test_satisfiable_ranges(self):
        cases = [
            ("bytes=0-0", 100, (0, 0)),
            ("bytes=0-99", 100, (0, 99)),
            ("bytes=10-19", 100, (10, 19)),
            ("bytes=10-", 100, (10, 99)),
            ("bytes=99-", 100, (99, 99)),
            ("bytes=-5", 100, (95, 99)),
            ("bytes=-1", 100, (99, 99)),
            ("bytes=-100", 100, (0, 99)),
            ("bytes=-1000", 100, (0, 99)),
            ("bytes=50-1000", 100, (50, 99)),  # end past the size is clamped
            ("bytes=0-0", 1, (0, 0)),
            ("bytes=-1", 1, (0, 0)),
            (" bytes = 3 - 4 ", 100, (3, 4)),
        ]
        for header, size, expected in cases:
            with self.subTest(header=header, size=size):
                self.assertEqual(sharing.parse_range(header, size), expected)

    def test_unsatisfiable_ranges(self):
        cases = [
            ("bytes=100-", 100),  # start == size, open end (what curl -C - sends)
            ("bytes=100-100", 100),
            ("bytes=10-", 5),
            ("bytes=0-", 0),
            ("bytes=100-200", 100),
            ("bytes=150-200", 100),
            ("bytes=-0", 100),
            ("bytes=0-0", 0),
            ("bytes=0-10", 0),
            ("bytes=5-9", 0),
            ("bytes=-5", 0),
            ("bytes=-0", 0),
        ]
        for header, size in cases:
            with self.subTest(header=header, size=size):
                with self.assertRaises(RangeNotSatisfiable):
                    sharing.parse_range(header, size)

    def test_offsets_past_4_gib(self):
        size = 5 * 2**30
        self.assertEqual(sharing.parse_range("bytes=4294967296-", size), (2**32, size - 1))
        self.assertEqual(sharing.parse_range("bytes=4294967296-4294967299", size),
                         (2**32, 2**32 + 3))
        self.assertEqual(sharing.parse_range("bytes=-4294967296", size),
                         (size - 2**32, size - 1))
        self.assertEqual(sharing.parse_range(f"bytes={size - 1}-", size), (size - 1, size - 1))
        with self.assertRaises(RangeNotSatisfiable):
            sharing.parse_range(f"bytes={size}-{size + 10}", size)
        with self.assertRaises(RangeNotSatisfiable):
            sharing.parse_range(f"bytes={size}-", size)


class ParseRateTests(unittest.TestCase):
    def test_rates(self):
        cases = {
            "2M": 2 * 2**20,
            "500K": 500 * 2**10,
            "500k": 500 * 2**10,
            "1G": 2**30,
            "12345": 12345,
            "1.5M": int(1.5 * 2**20),
            "2MB/s": 2 * 2**20,
            "2MiB/s": 2 * 2**20,
            " 2 M ": 2 * 2**20,
            "100B": 100,
            "0": 0,
        }
        for text, expected in cases.items():
            with self.subTest(text=text):
                self.assertEqual(sharing.parse_rate(text), expected)

    def test_bad_rates(self):
        for text in ("fast", "-1", "", " ", "M", "2T", "1e6", "2 M M", "1,5M"):
            with self.subTest(text=text):
                with self.assertRaises(ValueError):
                    sharing.parse_rate(text)


class CountingHash:
    """Stands in for sharing.hash_pieces and counts its calls."""

    def __init__(self):
        self.calls = []
        self._real = sharing.hash_pieces

    def __call__(self, path, *args, **kwargs):
        self.calls.append(path)
        return self._real(path, *args, **kwargs)


class ShareIndexTests(unittest.TestCase):
    def setUp(self):
        self.root = make_temp_dir(self)
        self.outside = make_temp_dir(self)
        self.changed = threading.Event()

    def new_index(self, roots=None):
        holder = []

        def on_change():
            if holder and holder[0].pending() == 0:
                self.changed.set()

        index = sharing.ShareIndex(roots or [self.root], on_change=on_change)
        holder.append(index)
        self.addCleanup(index.close)
        return index

    def hash_all(self, index):
        """refresh, then wait for the hasher to finish and announce (cache written first)."""
        self.changed.clear()
        index.refresh()
        self.assertTrue(index.wait_hashed(WAIT_S), "hashing did not finish")
        self.assertTrue(self.changed.wait(WAIT_S), "on_change was not called after hashing")

    def read_cache(self, root=None):
        with open(os.path.join(root or self.root, sharing.CACHE_NAME), encoding="utf-8") as f:
            return json.load(f)

    def test_scan_hash_and_cache(self):
        contents = {
            "a.txt": b"alpha",
            "my file.txt": b"with spaces",
            "résumé.pdf": b"%PDF unicode",
            "日本語/ファイル.txt": "日本".encode(),
            "sub/deep/er/b.bin": os.urandom(3000),
            "empty.dat": b"",
        }
        for name, data in contents.items():
            write_file(self.root, name, data)
        for hidden in (".hidden", ".git/config", "sub/.secret", ".dotdir/inner.txt",
                       "sub/.dotdir/x.txt"):
            write_file(self.root, hidden, b"hidden")
        write_file(self.root, "bad\nname.txt", b"control character")
        write_file(self.root, "back\\slash.txt", b"backslash")
        if hasattr(os, "symlink"):
            outside_file = write_file(self.outside, "secret.txt", b"outside")
            os.symlink(outside_file, os.path.join(self.root, "escape.txt"))
            os.symlink(self.outside, os.path.join(self.root, "escape-dir"))
            os.symlink(os.path.join(self.root, "a.txt"), os.path.join(self.root, "alias.txt"))
            contents["alias.txt"] = contents["a.txt"]

        index = self.new_index()
        self.hash_all(index)

        self.assertEqual({f.name for f in index.files()}, set(contents))
        self.assertEqual(len(index), len(contents))
        for name, data in contents.items():
            with self.subTest(name=name):
                entry = index.get(name)
                self.assertEqual(entry.sha256, sha(data))
                self.assertEqual(entry.size, len(data))
                self.assertEqual(entry.root, os.path.abspath(self.root))
                self.assertEqual(entry.as_dict(),
                                 {"name": name, "size": len(data), "sha256": sha(data),
                                  "pieces": pieces_hash(piece_digests(data))})
        self.assertEqual(index.find_by_hash(sha(b"with spaces")).name, "my file.txt")
        self.assertIsNone(index.find_by_hash(sha(b"nobody has this")))

        cache = self.read_cache()
        self.assertEqual(set(cache), set(contents))
        for name, data in contents.items():
            st = os.stat(os.path.join(self.root, *name.split("/")))
            self.assertEqual(cache[name],
                             sharing.cache_entry(st, sha(data), piece_digests(data)))
            self.assertEqual(cache[name]["stamp"][0], len(data))

        # The cache file now exists on disk and is still never shared.
        self.assertFalse(index.refresh())
        self.assertNotIn(sharing.CACHE_NAME, {f.name for f in index.files()})
        self.assertIsNone(index.get(sharing.CACHE_NAME))

    def test_a_file_still_being_written_waits_until_it_has_been_still(self):
        path = write_file(self.root, "copying.bin", b"part of it")
        written = os.stat(path)
        now = [written.st_ctime + 0.5]
        announced = threading.Event()
        index = sharing.ShareIndex([self.root], on_change=announced.set, settle_s=1.0,
                                   clock=lambda: now[0])
        self.addCleanup(index.close)
        self.assertFalse(index.refresh())
        self.assertEqual((index.settling(), index.pending()), (1, 0))
        self.assertTrue(index.is_settling("copying.bin"))
        self.assertIsNone(index.get("copying.bin"))  # not announced at its partial size
        now[0] += 1.0
        index.refresh()
        self.assertEqual(index.settling(), 0)
        self.assertTrue(index.wait_hashed(WAIT_S))
        self.assertTrue(announced.wait(WAIT_S))  # the cache is written before it is announced
        self.assertEqual(index.get("copying.bin").sha256, sha(b"part of it"))

    def test_found_on_disk_means_on_disk_now(self):
        path = write_file(self.root, "here.txt", b"here")
        index = self.new_index()
        self.hash_all(index)
        self.assertEqual(index.find_on_disk(sha(b"here")).name, "here.txt")
        os.unlink(path)
        self.assertIsNotNone(index.find_by_hash(sha(b"here")))  # the index has not looked yet
        self.assertIsNone(index.find_on_disk(sha(b"here")))
        self.assertIsNone(index.get("here.txt"))

    def test_second_index_reads_hashes_from_the_cache(self):
        contents = {"a.txt": b"alpha", "sub/b.txt": b"beta" * 1000}
        for name, data in contents.items():
            write_file(self.root, name, data)
        self.hash_all(self.new_index())

        counting = CountingHash()
        with mock.patch.object(sharing, "hash_pieces", counting):
            second = self.new_index()
            self.assertTrue(second.refresh())
            self.assertEqual(second.pending(), 0)
            self.assertTrue(second.wait_hashed(0))
        self.assertEqual(counting.calls, [])
        self.assertEqual({f.name: f.sha256 for f in second.files()},
                         {name: sha(data) for name, data in contents.items()})

    def test_a_cache_entry_for_the_exact_size_and_mtime_is_believed(self):
        path = write_file(self.root, "a.txt", b"real content")
        st = os.stat(path)
        fake = "ab" * 32
        with open(os.path.join(self.root, sharing.CACHE_NAME), "w", encoding="utf-8") as f:
            json.dump({"a.txt": sharing.cache_entry(st, fake, [fake])}, f)
        index = self.new_index()
        self.assertTrue(index.refresh())
        self.assertEqual(index.pending(), 0)
        self.assertEqual(index.get("a.txt").sha256, fake)

    def test_same_size_rewrite_with_the_old_mtime_is_hashed_again(self):
        path = write_file(self.root, "a.txt", b"version one")
        index = self.new_index()
        self.hash_all(index)
        old = os.stat(path)
        with open(path, "wb") as f:
            f.write(b"version two")  # same size
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # as cp -p or rsync -t would
        fresh = self.new_index()
        self.hash_all(fresh)
        self.assertEqual(fresh.get("a.txt").sha256, sha(b"version two"))

    def test_a_stale_or_broken_cache_is_not_believed(self):
        path = write_file(self.root, "a.txt", b"real content")
        write_file(self.root, "b.txt", b"other content")
        st = os.stat(path)
        with open(os.path.join(self.root, sharing.CACHE_NAME), "w", encoding="utf-8") as f:
            stale = sharing.cache_entry(st, "ab" * 32, ["ab" * 32])
            stale["stamp"][1] -= 1
            json.dump({"a.txt": stale, "b.txt": "not an entry"}, f)
        index = self.new_index()
        self.hash_all(index)
        self.assertEqual(index.get("a.txt").sha256, sha(b"real content"))
        self.assertEqual(index.get("b.txt").sha256, sha(b"other content"))

        with open(os.path.join(self.root, sharing.CACHE_NAME), "w", encoding="utf-8") as f:
            f.write("{not json")
        self.changed.clear()
        again = self.new_index()
        self.hash_all(again)
        self.assertEqual(again.get("a.txt").sha256, sha(b"real content"))

    def test_a_changed_file_is_hashed_again(self):
        path = write_file(self.root, "a.txt", b"version one")
        index = self.new_index()
        self.hash_all(index)
        old = index.get("a.txt")
        self.assertEqual(old.sha256, sha(b"version one"))

        with open(path, "wb") as f:
            f.write(b"version two, longer")
        os.utime(path, ns=(old.stamp[1] + 5 * 10**9, old.stamp[1] + 5 * 10**9))
        self.changed.clear()
        self.assertTrue(index.refresh())  # the old entry is withdrawn at once
        during = index.get("a.txt")  # the hasher may already be done: never the old hash
        self.assertTrue(during is None or during.sha256 == sha(b"version two, longer"))
        self.assertTrue(index.wait_hashed(WAIT_S))
        self.assertTrue(self.changed.wait(WAIT_S))
        new = index.get("a.txt")
        self.assertEqual(new.sha256, sha(b"version two, longer"))
        self.assertEqual(new.stamp[1], old.stamp[1] + 5 * 10**9)
        self.assertEqual(self.read_cache()["a.txt"]["sha256"], sha(b"version two, longer"))

    def test_same_size_new_mtime_is_hashed_again(self):
        path = write_file(self.root, "a.txt", b"AAAA")
        index = self.new_index()
        self.hash_all(index)
        mtime = index.get("a.txt").stamp[1]
        with open(path, "wb") as f:
            f.write(b"BBBB")
        os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
        self.hash_all(index)
        self.assertEqual(index.get("a.txt").sha256, sha(b"BBBB"))

    def test_a_removed_file_disappears(self):
        write_file(self.root, "keep.txt", b"keep")
        gone = write_file(self.root, "gone.txt", b"gone")
        index = self.new_index()
        self.hash_all(index)
        self.assertIsNotNone(index.get("gone.txt"))
        os.remove(gone)
        self.assertTrue(index.refresh())
        self.assertIsNone(index.get("gone.txt"))
        self.assertEqual([f.name for f in index.files()], ["keep.txt"])
        self.assertFalse(index.refresh())  # nothing else changed
        self.assertEqual(set(self.read_cache()), {"keep.txt"})

    def test_refresh_reports_no_change_when_nothing_changed(self):
        write_file(self.root, "a.txt", b"a")
        index = self.new_index()
        self.hash_all(index)
        version = index.version
        self.assertFalse(index.refresh())
        self.assertEqual(index.version, version)

    def test_the_first_root_wins_a_name(self):
        second = make_temp_dir(self)
        write_file(self.root, "a.txt", b"from the first root")
        write_file(second, "a.txt", b"from the second root")
        write_file(second, "b.txt", b"only in the second")
        index = self.new_index([self.root, second])
        self.hash_all(index)
        self.assertEqual(index.get("a.txt").sha256, sha(b"from the first root"))
        self.assertEqual(index.get("a.txt").root, os.path.abspath(self.root))
        self.assertEqual(index.get("b.txt").sha256, sha(b"only in the second"))
        self.assertEqual(index.get("b.txt").root, os.path.abspath(second))
        self.assertEqual(len(index), 2)

    def test_a_missing_root_is_skipped(self):
        write_file(self.root, "a.txt", b"a")
        index = self.new_index([self.root, os.path.join(self.outside, "does-not-exist")])
        self.hash_all(index)
        self.assertEqual([f.name for f in index.files()], ["a.txt"])

    def test_add_verified_shares_without_hashing(self):
        downloads = make_temp_dir(self)
        index = self.new_index([self.root, downloads])
        index.refresh()
        path = write_file(downloads, "got/it.bin", b"downloaded bytes")
        fake = "cd" * 32  # not the real hash: proves nothing re-hashed it
        counting = CountingHash()
        with mock.patch.object(sharing, "hash_pieces", counting):
            self.changed.clear()
            index.add_verified(downloads, path, fake, ["ef" * 32])
            self.assertTrue(self.changed.wait(WAIT_S), "on_change was not called")
            entry = index.get("got/it.bin")
            self.assertEqual((entry.sha256, entry.size), (fake, len(b"downloaded bytes")))
            self.assertEqual(entry.root, os.path.abspath(downloads))
            self.assertEqual(self.read_cache(downloads)["got/it.bin"]["sha256"], fake)
            self.assertFalse(index.refresh())
            self.assertEqual(index.pending(), 0)
            self.assertEqual(index.get("got/it.bin").sha256, fake)
        self.assertEqual(counting.calls, [])


class RateLimiterTests(unittest.TestCase):
    def test_low_upload_limits_send_small_slices_often(self):
        for rate in (200, 1024, 2 << 20):
            limiter = sharing.RateLimiter(rate)
            self.assertLessEqual(limiter.slice_bytes / rate, 1.5, rate)


class PartialSpeedTests(unittest.TestCase):
    """How fast a download goes, from ``PartialShares.set_speed`` to the load balancer's
    status: said again only when it changed enough, and read by ``PartialRecord``."""

    def setUp(self):
        self.changes = []
        self.shares = sharing.PartialShares(on_change=lambda: self.changes.append(1))
        self.sha = "ab" * 32
        pieces = PieceList(self.sha, 100, 64, ("cd" * 32, "ef" * 32))
        self.shares.add("f.bin", pieces, Bitfield(2), "/tmp/.f.bin.part")

    def test_the_heartbeat_says_how_fast_and_why_once_it_changed_enough(self):
        two = (Source("a:1", 4 << 20), Source("b:2", 3 << 20))
        version = self.shares.version
        self.shares.set_speed(self.sha, 7 << 20, two, "limited by this machine's link")
        self.assertEqual(self.shares.version, version + 1)
        self.shares.set_speed(self.sha, 8 << 20, two[::-1], "limited by this machine's link")
        self.assertEqual(self.shares.version, version + 1)  # a small change: not said again
        self.shares.set_speed(self.sha, 7 << 20, two[:1], "limited by this machine's link")
        self.shares.set_speed(self.sha, 7 << 20, two[:1], "limited by verification")
        self.shares.set_speed(self.sha, 3 << 20, two[:1], "limited by verification")
        self.assertEqual(self.shares.version, version + 4)
        self.assertEqual(len(self.changes), 5)  # the add and four changes
        record = wire.PartialRecord.parse(self.shares.announced()[0])
        self.assertEqual((record.rate, record.sources, record.limit),
                         (3 << 20, (("a:1", 4 << 20),), "limited by verification"))
        peer = mock.Mock(partial={record.key: record}, files={}, last_seen=0)
        self.assertEqual(peer_status(peer, 1)["partial"][0]["limit"], "limited by verification")

    def test_nothing_is_said_of_a_download_that_is_not_there(self):
        self.shares.remove(self.sha)
        version = self.shares.version
        self.shares.set_speed(self.sha, 1, (), "waiting for holders")
        self.assertEqual((self.shares.version, self.shares.announced()), (version, []))


class SuperSeeding(unittest.TestCase):
    """SentPieces: which pieces of a whole file have gone out to the downloaders (BEP 16)."""

    def setUp(self):
        self.piece = piece_size(1)
        self.entry = mock.Mock(sha256="a" * 64, size=8 * self.piece)
        self.now = [100.0]
        self.sent = sharing.SentPieces(clock=lambda: self.now[0])

    def mark(self, first, last, client, taken=False):
        """Pieces ``first``..``last`` asked for by ``client``: (range, pieces said sent);
        refused as taken only when ``taken``."""
        wanted, text, refused = self.sent.mark(self.entry, f"bytes={first * self.piece}-"
                                               f"{(last + 1) * self.piece - 1}", client)
        self.assertEqual(refused, taken)
        bits = sharing.Bitfield.from_text(8, text)
        return wanted, [i for i in range(8) if i in bits]

    def test_pieces_sent_to_others_are_refused_while_some_went_to_nobody(self):
        self.mark(2, 3, "a:1")
        self.assertEqual(self.mark(3, 3, "b:1", taken=True)[1], [2, 3],
                         "refused, saying what was sent: b asks a for it")
        self.assertEqual(self.mark(3, 3, "b:1")[1], [2, 3],
                         "asked again: b has nothing better to ask here, it is sent")
        self.mark(3, 3, "b:1")
        self.mark(2, 4, "b:1")  # some of it went to nobody: sent
        self.mark(4, 4, "a:1", taken=True)
        self.mark(2, 2, "a:1")  # its own piece again: sent

    def test_once_every_piece_went_to_someone_nothing_is_refused(self):
        self.mark(0, 6, "a:1")
        self.mark(7, 7, "b:1")
        self.mark(0, 0, "b:1")

    def test_pieces_count_as_sent_when_asked_for_until_an_upload_stops_short_of_them(self):
        wanted, said = self.mark(2, 5, "a:1")
        self.assertEqual(said, [2, 3, 4, 5], "counted from the moment they are asked for")
        self.sent.stopped(self.entry, wanted, 3 * self.piece + 10, "a:1")  # cut in piece 3
        self.assertEqual(self.mark(0, 0, "b:1")[1], [0, 2])
        self.assertIsNone(self.sent.mark(self.entry, None, "b:1"), "no range: not a piece")

    def test_only_downloaders_still_fetching_and_lacking_pieces_count(self):
        self.mark(0, 7, "alone:1")  # had the whole file from here: no help to others
        self.assertEqual(self.mark(1, 1, "a:1")[1], [1])
        self.now[0] += sharing.SENT_ACTIVE_S + 1  # a:1 has not asked for a while: gone
        self.assertEqual(self.mark(4, 4, "b:1")[1], [4])


if __name__ == "__main__":
    unittest.main()
