"""Metalink 4 documents, RFC 6249 headers, bencoding, torrents and folders: pure, no sockets."""

import unittest
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from p2p.core import bencode, folder, metalink, torrent
from p2p.core.metalink import BadDocument, MetalinkFile

NS = {"m": metalink.NAMESPACE}


@dataclass
class Progress:  # the fields of download.Progress that FolderProgress reads and replaces
    name: str
    done: int
    total: int
    rate: float
    source: str
    finished: bool = False
SHA = "ab" * 32


class MetalinkTests(unittest.TestCase):
    def test_renders_urls_in_order_with_priorities(self):
        doc = ET.fromstring(metalink.render([MetalinkFile(
            "a&b.txt", 5, SHA, ["http://x/files/a%26b.txt?s=1&t=2", "http://y/files/a"],
            4, ["cd" * 32, "ef" * 32])], "gen <1>"))
        f = doc.find("m:file", NS)
        self.assertEqual("a&b.txt", f.get("name"))
        self.assertEqual(["1", "2"], [u.get("priority") for u in f.findall("m:url", NS)])
        self.assertEqual("http://x/files/a%26b.txt?s=1&t=2", f.find("m:url", NS).text)
        self.assertEqual("4", f.find("m:pieces", NS).get("length"))
        self.assertEqual("gen <1>", doc.find("m:generator", NS).text)

    def test_refuses_an_empty_document_and_a_file_without_urls(self):
        with self.assertRaises(BadDocument):
            metalink.render([], "g")
        with self.assertRaisesRegex(BadDocument, "No holder"):
            metalink.render([MetalinkFile("a", 1, SHA, [])], "g")

    def test_refuses_characters_xml_cannot_carry(self):
        with self.assertRaisesRegex(BadDocument, "XML"):
            metalink.render([MetalinkFile("a\ufffeb", 1, SHA, ["http://x/"])], "g")

    def test_a_huge_piece_list_is_left_out(self):
        body = metalink.render([MetalinkFile("a", 1, SHA, ["http://x/"], 1,
                                             ["00" * 32] * (metalink.MAX_PIECES + 1))], "g")
        self.assertNotIn(b"<pieces", body)
        self.assertIn(b'<hash type="sha-256">', body)

    def test_accept_negotiation(self):
        self.assertTrue(metalink.wants_metalink(
            "*/*,application/metalink4+xml,application/metalink+xml"))
        self.assertFalse(metalink.wants_metalink("application/metalink4+xml;q=0"))
        self.assertFalse(metalink.wants_metalink("*/*"))
        self.assertFalse(metalink.wants_metalink(None))

    def test_digest_and_link_headers(self):
        headers = metalink.digest_headers("00" * 32)
        self.assertEqual("SHA-256=" + "A" * 43 + "=", headers["Digest"])
        self.assertEqual(":", headers["Repr-Digest"][-1])
        urls = [f"http://h{i}/f" for i in range(9)]
        link = metalink.link_header(urls)
        self.assertEqual(metalink.MAX_DUPLICATES, link.count("rel=duplicate"))
        self.assertTrue(link.startswith("<http://h0/f>; rel=duplicate; pri=1"))


class BencodeTests(unittest.TestCase):
    def test_round_trip_with_sorted_keys(self):
        value = {"b": [1, -2, b"\x00"], "a": {"é": "x"}}
        data = bencode.encode(value)
        self.assertEqual(b"d1:ad2:\xc3\xa91:xe1:bli1ei-2e1:\x00ee", data)
        self.assertEqual({b"a": {"é".encode(): b"x"}, b"b": [1, -2, b"\x00"]},
                         bencode.decode(data))

    def test_strict_decoding(self):
        for bad in (b"i01e", b"i-0e", b"ie", b"d1:bi1e1:ai2ee", b"4:abc", b"i1ei2e", b"l",
                    b"x", b"03:abc", b"l" * 100 + b"e" * 100):
            with self.subTest(bad=bad), self.assertRaises(bencode.BencodeError):
                bencode.decode(bad)

    def test_refuses_what_bencoding_has_not(self):
        for bad in (True, 1.5, None, {1: 2}):
            with self.subTest(bad=bad), self.assertRaises(bencode.BencodeError):
                bencode.encode(bad)


class TorrentTests(unittest.TestCase):
    def test_single_file_metainfo(self):
        data = torrent.metainfo("d/f.bin", 5, 4, ["aa" * 20, "bb" * 20], ["http://x/files/d/f.bin"],
                                "gen", 1000, private=True)
        meta = bencode.decode(data)
        self.assertEqual(b"f.bin", meta[b"info"][b"name"])
        self.assertEqual(bytes.fromhex("aa" * 20 + "bb" * 20), meta[b"info"][b"pieces"])
        self.assertEqual(1, meta[b"info"][b"private"])
        self.assertEqual([b"http://x/files/d/f.bin"], meta[b"url-list"])

    def test_refuses_a_wrong_piece_count_or_no_urls(self):
        with self.assertRaises(torrent.BadTorrent):
            torrent.metainfo("f", 5, 4, ["aa" * 20], ["http://x/"], "g", 0)
        with self.assertRaises(torrent.BadTorrent):
            torrent.metainfo("f", 5, 4, ["aa" * 20] * 2, [], "g", 0)


    def test_folder_metainfo_lists_each_file_by_its_path_under_the_folder(self):
        data = torrent.folder_metainfo("M/J/", [("M/J/a", 3), ("M/J/s/b", 6)], 4,
                                       ["aa" * 20, "bb" * 20, "cc" * 20], ["http://x/files/M/"],
                                       "g", 0)
        info = bencode.decode(data)[b"info"]
        self.assertEqual(b"J", info[b"name"])
        self.assertEqual([{b"length": 3, b"path": [b"a"]}, {b"length": 6, b"path": [b"s", b"b"]}],
                         info[b"files"])
        self.assertEqual(60, len(info[b"pieces"]))  # 9 bytes in pieces of 4, across the files
        self.assertNotIn(b"length", info)

    def test_folder_metainfo_refuses_a_wrong_count_no_urls_or_a_stray_file(self):
        files = [("M/a", 3), ("M/b", 6)]
        for args in ((files, ["aa" * 20] * 2, ["u/"]), (files, ["aa" * 20] * 3, []),
                     ([("N/a", 1)], ["aa" * 20], ["u/"]), ([], [], ["u/"])):
            with self.subTest(args=args), self.assertRaises(torrent.BadTorrent):
                torrent.folder_metainfo("M/", args[0], 4, args[1], args[2], "g", 0)

    def test_folder_parent(self):
        self.assertEqual("", torrent.folder_parent("Photos/"))
        self.assertEqual("Music/", torrent.folder_parent("Music/Jazz/"))
        self.assertEqual("a/b/", torrent.folder_parent("a/b/c/"))


class FolderTests(unittest.TestCase):
    def test_files_under_a_folder_by_name(self):
        listing = [{"name": "P/b", "size": 2}, {"name": "P/a/c", "size": 3},
                   {"name": "P/b", "size": 5}, {"name": "Q/x", "size": 1}, {"name": "PX", "size": 1}]
        self.assertEqual([("P/a/c", 3), ("P/b", 5)], folder.folder_files("P/", listing))

    def test_none_or_too_many(self):
        with self.assertRaisesRegex(folder.FolderError, "Nobody shares"):
            folder.folder_files("P/", [{"name": "Q/x", "size": 1}])
        with self.assertRaisesRegex(folder.FolderError, "more than"):
            folder.folder_files("P/", [{"name": "P/x", "size": 1}], truncated=True)

    def test_one_progress_for_the_folder(self):
        seen = []
        progress = folder.FolderProgress("P/", [("P/a", 10), ("P/b", 30)], seen.append)
        progress(Progress("P/a", 10, 10, 1.0, "h", finished=True))
        progress.file_done(10)
        progress(Progress("P/b", 15, 30, 1.0, "h"))
        progress(Progress("P/b", 30, 30, 1.0, "h", finished=True))
        self.assertEqual([(10, 40, False), (25, 40, False), (40, 40, True)],
                         [(p.done, p.total, p.finished) for p in seen])
        self.assertEqual("P/ (2/2)", seen[-1].name)
        self.assertTrue(folder.is_folder("P/"))
        self.assertFalse(folder.is_folder("/"))
