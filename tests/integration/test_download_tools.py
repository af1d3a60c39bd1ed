"""Metalink 4, Metalink/HTTP and .torrent webseeds: an in-process load balancer and holders
on loopback, read by the tests and by the real clients (aria2c, transmission-cli) when they
are installed (``.ci/run`` installs aria2 where it can)."""

import base64
import hashlib
import http.client
import os
import shutil
import subprocess
import tempfile
import unittest
import xml.etree.ElementTree as ET

from p2p.core import registry as lb_core
from p2p.core.bencode import decode
from p2p.core.members import OPEN, Members, NetworkSecret
from p2p.core.pieces import piece_size
from p2p.net import lb_server
from p2p.net.sharing import FileServer
from tests.support import hashed_index, http_request, quiet_logs, serve_in_thread, wait_for

MiB = 1 << 20
NS = {"m": "urn:ietf:params:xml:ns:metalink"}
CLIENT_TIMEOUT_S = 60.0
ARIA2 = shutil.which("aria2c")
TRANSMISSION = shutil.which("transmission-cli")
ARIA2_QUIET = ["--console-log-level=warn", "--summary-interval=0", "--file-allocation=none",
               "--allow-overwrite=true", "--auto-file-renaming=false", "--enable-dht=false",
               "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--seed-time=0"]


def data_of(size, seed):
    return hashlib.shake_256(seed.encode()).digest(size)


class Network:
    """A load balancer and holders, each a server on port 0 in this process."""

    def __init__(self, test, members=OPEN):
        self.test = test
        self.members = members
        self.registry = lb_core.Registry()
        self.lb = self.serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), self.registry,
                                                          members=members))
        self.lb_port = self.lb.server_address[1]
        self.holders = []
        self.sent = {}  # holder port -> bytes uploaded

    def serve(self, server):
        return serve_in_thread(self.test, server)

    def holder(self, files, upload_limit=0, register=True):
        _, index = hashed_index(self.test, "p2p-tools-", files)
        host = f"127.0.0.{len(self.holders) + 1}"  # the clients count connections per host
        server = self.serve(FileServer((host, 0), index, upload_limit=upload_limit,
                                       members=self.members))
        port = server.server_address[1]
        server.address, server.lb_address = f"{host}:{port}", f"127.0.0.1:{self.lb_port}"
        self.sent[port] = 0
        release = server.uploads.release

        def counted(upload):
            self.sent[port] += upload.sent
            release(upload)
        server.uploads.release = counted
        if register:
            body = {"port": port, "files": [f.as_dict() for f in index.files()]}
            self.registry.register(**lb_core.parse_register(body, host), source=host)
        self.holders.append(server)
        return server

    def get(self, target, headers=None, server=None):
        if server is None:
            return http_request(self.lb_port, "GET", target, headers)
        host, port = server.server_address[:2]
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            return http_request(port, "GET", target, headers, conn)
        finally:
            conn.close()


class MetalinkDocumentTests(unittest.TestCase):
    def setUp(self):
        quiet_logs(self)
        self.data = data_of(3 * MiB + 5, "a")
        self.net = Network(self)
        self.a = self.net.holder({"f.bin": self.data})
        self.b = self.net.holder({"f.bin": self.data})

    def metalink(self, target="/metalink/f.bin"):
        response, body = self.net.get(target)
        self.assertEqual(200, response.status, body)
        self.assertEqual("application/metalink4+xml", response.getheader("Content-Type"))
        return ET.fromstring(body)

    def test_lists_every_whole_holder_by_load_with_hashes_and_size(self):
        self.net.registry.pick("f.bin")  # one transfer on a holder: it goes second
        busy = self.net.registry.status()["peers"]
        loaded = next(p["port"] for p in busy if p["active"] == 1)
        doc = self.metalink()
        (f,) = doc.findall("m:file", NS)
        self.assertEqual("f.bin", f.get("name"))
        self.assertEqual(str(len(self.data)), f.find("m:size", NS).text)
        self.assertEqual(hashlib.sha256(self.data).hexdigest(), f.find("m:hash", NS).text)
        urls = f.findall("m:url", NS)
        self.assertEqual(["1", "2"], [u.get("priority") for u in urls])
        self.assertTrue(urls[1].text.endswith(f":{loaded}/files/f.bin"), urls[1].text)
        pieces = f.find("m:pieces", NS)
        step = piece_size(len(self.data))
        self.assertEqual(str(step), pieces.get("length"))
        expected = [hashlib.sha256(self.data[i:i + step]).hexdigest()
                    for i in range(0, len(self.data), step)]
        self.assertEqual(expected, [h.text for h in pieces.findall("m:hash", NS)])

    def test_picks_count_as_load_and_head_counts_nothing(self):
        http_request(self.net.lb_port, "HEAD", "/metalink/f.bin")
        self.assertEqual([0, 0], [p["active"] for p in self.net.registry.status()["peers"]])
        self.metalink()
        self.assertEqual([1, 1], [p["active"] for p in self.net.registry.status()["peers"]])

    def test_accept_header_on_files_gives_the_metalink(self):
        response, _ = self.net.get("/files/f.bin")
        self.assertEqual(302, response.status)
        response, body = self.net.get("/files/f.bin", {
            "Accept": "*/*,application/metalink4+xml,application/metalink+xml"})
        self.assertEqual(200, response.status)
        self.assertIn(b"urn:ietf:params:xml:ns:metalink", body)

    def test_several_versions_is_409_and_sha256_chooses(self):
        other = data_of(1000, "b")
        self.net.holder({"f.bin": other})
        self.net.holder({"f.bin": other})  # two machines each: neither version leads
        response, body = self.net.get("/metalink/f.bin")
        self.assertEqual(409, response.status, body)
        sha = hashlib.sha256(other).hexdigest()
        doc = self.metalink(f"/metalink/f.bin?sha256={sha}")
        self.assertEqual(sha, doc.find("m:file/m:hash", NS).text)

    def test_names_needing_quoting_in_xml_and_urls(self):
        name = "R&D's é.txt"
        self.net.holder({name: b"x" * 10})
        _, body = self.net.get("/metalink/R%26D%27s%20%C3%A9.txt")
        self.assertIn(b"R&amp;D", body)
        doc = self.metalink("/metalink/R%26D%27s%20%C3%A9.txt")
        f = doc.find("m:file", NS)
        self.assertEqual(name, f.get("name"))
        self.assertTrue(f.find("m:url", NS).text.endswith("/files/R%26D%27s%20%C3%A9.txt"))

    def test_no_whole_holder_is_404_not_an_empty_document(self):
        response, body = self.net.get("/metalink/nothing.bin")
        self.assertEqual(404, response.status)
        self.assertIn(b"Nobody shares", body)

    def test_a_holder_gone_since_its_registration_is_left_out(self):
        self.a.shutdown()
        self.a.server_close()
        doc = self.metalink()
        urls = [u.text for u in doc.findall("m:file/m:url", NS)]
        self.assertEqual([f"http://127.0.0.2:{self.b.server_address[1]}/files/f.bin"], urls)

    def test_folder_has_one_file_element_per_file(self):
        self.net.holder({"Photos/x.jpg": b"x" * 100, "Photos/y/z.jpg": b"z" * 50,
                         "Other.txt": b"o"})
        doc = self.metalink("/metalink/Photos/")
        self.assertEqual(["Photos/x.jpg", "Photos/y/z.jpg"],
                         [f.get("name") for f in doc.findall("m:file", NS)])


class HolderHeaderTests(unittest.TestCase):
    def setUp(self):
        quiet_logs(self)
        self.data = data_of(300_000, "h")
        self.net = Network(self)
        self.a = self.net.holder({"f.bin": self.data, "Photos/p.jpg": b"p"})
        self.b = self.net.holder({"f.bin": self.data})

    def test_digest_and_duplicates(self):
        response, body = self.net.get("/files/f.bin", server=self.a)
        self.assertEqual(self.data, body)
        b64 = base64.b64encode(hashlib.sha256(self.data).digest()).decode()
        self.assertEqual(f"SHA-256={b64}", response.getheader("Digest"))
        self.assertEqual(f"sha-256=:{b64}:", response.getheader("Repr-Digest"))
        self.assertEqual(f"<http://127.0.0.2:{self.b.server_address[1]}/files/f.bin>; "
                         "rel=duplicate; pri=1", response.getheader("Link"))

    def test_folder_listing_json_and_html(self):
        response, body = self.net.get("/files/Photos/", server=self.a)
        self.assertEqual(200, response.status)
        self.assertIn(b'"Photos/p.jpg"', body)
        response, body = self.net.get("/files/Photos/", {"Accept": "text/html"}, server=self.a)
        self.assertIn(b'href="/files/Photos/p.jpg"', body)
        response, _ = self.net.get("/files/None/", server=self.a)
        self.assertEqual(404, response.status)

    def test_sha1_pieces(self):
        sha = hashlib.sha256(self.data).hexdigest()
        response, body = self.net.get(f"/sha1/{sha}", server=self.a)
        self.assertEqual(200, response.status)
        self.assertIn(hashlib.sha1(self.data[:piece_size(len(self.data))]).hexdigest().encode(),
                      body)


class TorrentTests(unittest.TestCase):
    def setUp(self):
        quiet_logs(self)
        self.data = data_of(MiB + 7, "t")
        self.net = Network(self)
        self.net.holder({"d/f.bin": self.data})
        self.net.holder({"d/f.bin": self.data})

    def test_metainfo_names_the_holders_as_webseeds(self):
        response, body = self.net.get("/torrent/d/f.bin")
        self.assertEqual(200, response.status, body)
        meta = decode(body)
        info = meta[b"info"]
        self.assertEqual(b"f.bin", info[b"name"])
        self.assertEqual(len(self.data), info[b"length"])
        step = info[b"piece length"]
        self.assertEqual(b"".join(hashlib.sha1(self.data[i:i + step]).digest()
                                  for i in range(0, len(self.data), step)), info[b"pieces"])
        self.assertEqual(2, len(meta[b"url-list"]))
        self.assertTrue(all(u.endswith(b"/files/d/f.bin") for u in meta[b"url-list"]))



FOLDER = {"Music/Jazz/b.bin": data_of(300_001, "b"), "Music/Jazz/a.bin": data_of(200_003, "a"),
          "Music/Jazz/sub/c d.bin": data_of(5, "c"), "Music/Other.txt": b"o"}
JAZZ = sorted(n for n in FOLDER if n.startswith("Music/Jazz/"))


def concatenated_sha1s(names, step):
    data = b"".join(FOLDER[n] for n in names)
    return b"".join(hashlib.sha1(data[i:i + step]).digest() for i in range(0, len(data), step))


class FolderTorrentTests(unittest.TestCase):
    """A folder's torrent: one multi-file torrent whose pieces run across files, hashed by a
    holder of the whole folder; its webseeds are the peers holding every file."""

    def setUp(self):
        quiet_logs(self)
        self.net = Network(self)

    def torrent(self, target="/torrent/Music/Jazz/", status=200):
        response, body = self.net.get(target)
        self.assertEqual(status, response.status, body)
        return decode(body) if status == 200 else body

    def test_pieces_run_across_files_and_webseeds_name_the_parent(self):
        a, b = self.net.holder(FOLDER), self.net.holder(FOLDER)
        meta = self.torrent()
        info = meta[b"info"]
        self.assertEqual(b"Jazz", info[b"name"])
        self.assertEqual([[b"a.bin"], [b"b.bin"], [b"sub", b"c d.bin"]],
                         [f[b"path"] for f in info[b"files"]])
        self.assertEqual([len(FOLDER[n]) for n in JAZZ], [f[b"length"] for f in info[b"files"]])
        self.assertEqual(concatenated_sha1s(JAZZ, info[b"piece length"]), info[b"pieces"])
        self.assertEqual(sorted(f"http://{h.address}/files/Music/".encode() for h in (a, b)),
                         sorted(meta[b"url-list"]))
        self.assertEqual([1, 1], [p["active"] for p in self.net.registry.status()["peers"]])

    def test_only_peers_holding_every_file_are_webseeds(self):
        whole = self.net.holder(FOLDER)
        self.net.holder({n: FOLDER[n] for n in JAZZ[:1]})
        meta = self.torrent()
        self.assertEqual([f"http://{whole.address}/files/Music/".encode()], meta[b"url-list"])
        active = {p["port"]: p["active"] for p in self.net.registry.status()["peers"]}
        self.assertEqual({whole.server_address[1]: 1}, {k: v for k, v in active.items() if v})

    def test_no_peer_with_the_whole_folder_is_404_with_the_way_to_get_it(self):
        self.net.holder({n: FOLDER[n] for n in JAZZ[:1]})
        self.net.holder({n: FOLDER[n] for n in JAZZ[1:]})
        body = self.torrent(status=404)
        self.assertIn(b"/metalink/Music/Jazz/", body)
        self.assertEqual([0, 0], [p["active"] for p in self.net.registry.status()["peers"]])

    def test_a_holder_listing_other_files_is_not_believed(self):
        holder = self.net.holder(FOLDER)
        files = holder.index.files
        holder.index.files = lambda: [f for f in files() if f.name != JAZZ[0]]  # lost one
        body = self.torrent(status=503)
        self.assertIn(b"SHA-1 piece hashes", body)
        self.assertEqual([0], [p["active"] for p in self.net.registry.status()["peers"]])


class MembersOnlyTests(unittest.TestCase):
    """With a network secret every URL in a document is presigned; unsigned asks are refused
    with the way to get a signed URL."""

    def setUp(self):
        quiet_logs(self)
        self.secret = NetworkSecret("s" * 32)
        self.data = data_of(MiB, "m")
        self.net = Network(self, Members(self.secret))
        self.net.holder({"f.bin": self.data})
        self.net.holder({"f.bin": self.data})

    def test_unsigned_is_refused_with_the_way_to_sign(self):
        for target in ("/metalink/f.bin", "/torrent/f.bin"):
            response, body = self.net.get(target)
            self.assertEqual(401, response.status)
            self.assertIn(b"peer.py url", body)

    def test_a_folder_torrent_is_refused_with_the_way_to_get_its_metalink(self):
        self.net.holder({"d/g.bin": b"g"})
        query = self.secret.url_query("d/")
        response, body = self.net.get(f"/torrent/d/?{query}")
        self.assertEqual(400, response.status, body)
        self.assertIn(b"/metalink/d/", body)

    def test_presigned_documents_carry_presigned_urls(self):
        query = self.secret.url_query("f.bin")
        response, body = self.net.get(f"/metalink/f.bin?{query}")
        self.assertEqual(200, response.status, body)
        doc = ET.fromstring(body)
        urls = [u.text for u in doc.findall("m:file/m:url", NS)]
        self.assertEqual(2, len(urls))
        self.assertTrue(all("p2p-sig=" in u for u in urls), urls)
        self.assertIsNotNone(doc.find("m:file/m:pieces", NS))  # fetched with signed requests
        host, rest = urls[0].split("//", 1)[1].split("/", 1)
        holder = next(h for h in self.net.holders if h.address == host)
        response, got = self.net.get("/" + rest, server=holder)
        self.assertEqual(self.data, got)
        response, body = self.net.get(f"/torrent/f.bin?{query}")
        self.assertEqual(200, response.status, body)
        self.assertEqual(1, decode(body)[b"info"][b"private"])


@unittest.skipUnless(ARIA2, "aria2c is not installed (apt-get install aria2)")
class Aria2Tests(unittest.TestCase):
    """The real aria2c: both holders send, every piece is checked."""

    def setUp(self):
        quiet_logs(self)
        self.data = data_of(8 * MiB, "aria2")
        self.net = Network(self)
        limit = 4 * MiB  # one holder alone would take 2 s
        self.a = self.net.holder({"f.bin": self.data}, upload_limit=limit)
        self.b = self.net.holder({"f.bin": self.data}, upload_limit=limit)
        self.out = tempfile.mkdtemp(prefix="p2p-aria2-")
        self.addCleanup(shutil.rmtree, self.out, ignore_errors=True)

    def aria2c(self, *args):
        done = subprocess.run([ARIA2, "-d", self.out, *ARIA2_QUIET, *args], capture_output=True,
                              text=True, timeout=CLIENT_TIMEOUT_S, check=False)
        self.assertEqual(0, done.returncode, done.stdout + done.stderr)
        with open(os.path.join(self.out, "f.bin"), "rb") as f:
            self.assertEqual(self.data, f.read())

    def assert_both_served(self):
        wait_for(lambda: sum(self.net.sent.values()) >= len(self.data), what="uploads ended")
        for port, sent in self.net.sent.items():
            self.assertGreater(sent, MiB, f"holder {port} sent only {sent} bytes")

    def test_through_the_load_balancer(self):
        self.aria2c("-s", "4", "--min-split-size=1M",
                    f"http://127.0.0.1:{self.net.lb_port}/files/f.bin")
        self.assert_both_served()

    def test_from_one_holder_finds_the_other(self):
        self.aria2c("-s", "4", "--min-split-size=1M",
                    f"http://127.0.0.1:{self.a.server_address[1]}/files/f.bin")
        self.assert_both_served()

    def test_with_the_torrent(self):
        response, body = self.net.get("/torrent/f.bin")
        self.assertEqual(200, response.status)
        path = os.path.join(self.out, "f.torrent")
        with open(path, "wb") as f:
            f.write(body)
        self.aria2c("-s", "4", "--min-split-size=1M", "--check-integrity=true", path)
        self.assert_both_served()


@unittest.skipUnless(TRANSMISSION, "transmission-cli is not installed (apt-get install "
                                   "transmission-cli)")
class TransmissionTests(unittest.TestCase):
    def test_downloads_the_torrent_from_the_webseeds(self):
        quiet_logs(self)
        data = data_of(2 * MiB + 3, "tr")
        net = Network(self)
        net.holder({"t.bin": data})
        net.holder({"t.bin": data})
        out = tempfile.mkdtemp(prefix="p2p-tr-")
        self.addCleanup(shutil.rmtree, out, ignore_errors=True)
        _, body = net.get("/torrent/t.bin")
        path = os.path.join(out, "t.torrent")
        with open(path, "wb") as f:
            f.write(body)
        home = os.path.join(out, "config")
        proc = subprocess.Popen([TRANSMISSION, "-w", os.path.join(out, "dl"), "-g", home, "-D",
                                 "-er", "-p", "0", path], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "HOME": out})
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.kill)
        target = os.path.join(out, "dl", "t.bin")

        def complete():
            try:
                with open(target, "rb") as f:
                    return f.read() == data
            except OSError:
                return False
        wait_for(complete, timeout=CLIENT_TIMEOUT_S, what="transmission to finish")
        self.assertGreater(sum(net.sent.values()), len(data) - 1)


class FolderWithClientsTests(unittest.TestCase):
    """The real clients with a folder's multi-file torrent: every file, checked, at its path."""

    def setUp(self):
        quiet_logs(self)
        self.net = Network(self)
        self.net.holder(FOLDER)
        self.net.holder(FOLDER)
        self.out = tempfile.mkdtemp(prefix="p2p-folder-")
        self.addCleanup(shutil.rmtree, self.out, ignore_errors=True)
        response, body = self.net.get("/torrent/Music/Jazz/")
        self.assertEqual(200, response.status, body)
        self.path = os.path.join(self.out, "Jazz.torrent")
        with open(self.path, "wb") as f:
            f.write(body)

    def complete(self, root):
        for name in JAZZ:
            try:
                with open(os.path.join(root, "Jazz", name[len("Music/Jazz/"):]), "rb") as f:
                    if f.read() != FOLDER[name]:
                        return False
            except OSError:
                return False
        return True

    @unittest.skipUnless(ARIA2, "aria2c is not installed (apt-get install aria2)")
    def test_aria2c(self):
        done = subprocess.run([ARIA2, "-d", self.out, *ARIA2_QUIET, "--check-integrity=true",
                               self.path], capture_output=True, text=True,
                              timeout=CLIENT_TIMEOUT_S, check=False)
        self.assertEqual(0, done.returncode, done.stdout + done.stderr)
        self.assertTrue(self.complete(self.out))

    @unittest.skipUnless(TRANSMISSION, "transmission-cli is not installed (apt-get install "
                                       "transmission-cli)")
    def test_transmission(self):
        dl = os.path.join(self.out, "dl")
        proc = subprocess.Popen([TRANSMISSION, "-w", dl, "-g", os.path.join(self.out, "config"),
                                 "-D", "-er", "-p", "0", self.path], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "HOME": self.out})
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.kill)
        wait_for(lambda: self.complete(dl), timeout=CLIENT_TIMEOUT_S,
                 what="transmission to finish the folder")
