"""Members only: the network secret (signed requests, replays, presigned URLs) and TLS.

Pure tests of ``members.py`` first, then the real servers in this process (port 0,
loopback) and, last, the programs as a person runs them.
"""

import dataclasses
import hashlib
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
from unittest import mock
from urllib.parse import parse_qs

from p2p.net import lb_client
from p2p.core import registry as lb_core
from p2p.net import lb_server
from p2p.net.download import DirectSource, Downloader
from p2p.http.server import AUTH_HEADER, LIMITS
from p2p.core.members import (MAX_CLOCK_SKEW_S, Members, NetworkSecret, NetworkTLS, ReplayFull,
                     ReplayGuard, SecretError, TLSSetupError, Unauthorized, names_this_server,
                     new_secret, parse_duration, read_secret)
from p2p.net.sharing import FileServer, ShareIndex
from tests.support import (PEER, ROOT, ProcessTestCase, free_port, quiet_logs, read_line, wait_for,
                           write_random)

TLS_DIR = os.path.join(ROOT, "tests", "tls")
SECRET = "correct horse battery staple, twice over"
DEADLINE_S = 10.0
HERE = "127.0.0.1:6969"  # the server a request is signed for


def tls_files(name):
    return os.path.join(TLS_DIR, f"{name}.pem"), os.path.join(TLS_DIR, f"{name}.key")


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


# ---------------------------------------------------------------------------
# Pure


class SignedRequestTests(unittest.TestCase):

    def setUp(self):
        self.clock = Clock()
        self.secret = NetworkSecret(SECRET, clock=self.clock)

    def test_a_signed_request_passes_once(self):
        value = self.secret.sign("POST", "/transfers", HERE, b"{}")
        signed = self.secret.check("POST", "/transfers", value, HERE)
        self.secret.check_body(signed, b"{}")
        with self.assertRaisesRegex(Unauthorized, "replay"):
            self.secret.check("POST", "/transfers", value, HERE)

    def test_every_signature_has_its_own_nonce(self):
        self.assertNotEqual(self.secret.sign("GET", "/status", HERE),
                            self.secret.sign("GET", "/status", HERE))

    def test_the_secret_is_not_in_the_header(self):
        value = self.secret.sign("GET", "/status", HERE)
        self.assertNotIn(SECRET, value)
        self.assertNotIn(SECRET.encode().hex(), value)

    def test_missing_header_says_what_to_do(self):
        with self.assertRaisesRegex(Unauthorized, "wrong or missing network secret"):
            self.secret.check("GET", "/status", None, HERE)

    def test_another_secret_is_refused(self):
        other = NetworkSecret("another secret of sixteen chars", clock=self.clock)
        with self.assertRaisesRegex(Unauthorized, "another secret"):
            self.secret.check("GET", "/status", other.sign("GET", "/status", HERE), HERE)

    def test_the_signature_covers_method_and_target(self):
        value = self.secret.sign("GET", "/files?q=a", HERE)
        for method, target in (("DELETE", "/files?q=a"), ("GET", "/files?q=b"),
                               ("GET", "/files")):
            with self.subTest(method=method, target=target), self.assertRaises(Unauthorized):
                self.secret.check(method, target, value, HERE)

    def test_the_signature_covers_the_server_addressed(self):
        value = self.secret.sign("GET", "/status", HERE)
        with self.assertRaisesRegex(Unauthorized, "another secret"):  # Host changed on the way
            self.secret.check("GET", "/status", value, "10.0.0.9:6969")
        with self.assertRaisesRegex(Unauthorized, "not for this server"):  # replayed elsewhere
            self.secret.check("GET", "/status", value, HERE, is_here=lambda authority: False)

    def test_the_signature_covers_the_body(self):
        signed = self.secret.check("PUT", "/peers/1", self.secret.sign(
            "PUT", "/peers/1", HERE, b'{"uploads": 0}'), HERE)
        with self.assertRaisesRegex(Unauthorized, "body"):
            self.secret.check_body(signed, b'{"uploads": 9}')

    def test_names_this_server(self):
        for authority, local, known, here in (
                ("127.0.0.1:6969", "127.0.0.1", (), True),
                ("localhost:6969", "::ffff:127.0.0.1", (), True),
                ("[::1]:6969", "::1", (), True),
                ("127.0.0.1:6970", "127.0.0.1", (), False),  # another server on this machine
                ("10.0.0.2:6969", "10.0.0.1", (), False),  # another machine
                ("lb.example:6969", "10.0.0.1", ("lb.example",), True),  # --advertise
                ("lb.example:6969", "10.0.0.1", (), False),
                ("garbage", "10.0.0.1", (), False)):
            with self.subTest(authority=authority):
                self.assertIs(names_this_server(authority, local, 6969, known), here)

    def test_an_answer_proves_the_secret(self):
        sent = self.secret.sign("GET", "/status", HERE)
        signed = self.secret.check("GET", "/status", sent, HERE)
        proof = self.secret.prove(signed.nonce, 200, b"{}")
        self.assertTrue(self.secret.answer_ok(sent, 200, b"{}", proof))
        other = NetworkSecret("another secret of sixteen chars", clock=self.clock)
        for status, body, proof in ((200, b"{}", other.prove(signed.nonce, 200, b"{}")),
                                    (200, b"{}", None), (404, b"{}", proof),
                                    (200, b"[]", proof)):
            with self.subTest(status=status, body=body, proof=proof):
                self.assertFalse(self.secret.answer_ok(sent, status, body, proof))

    def test_old_and_future_timestamps_are_refused(self):
        for shift in (-MAX_CLOCK_SKEW_S - 2, MAX_CLOCK_SKEW_S + 2):
            value = self.secret.sign("GET", "/status", HERE)
            self.clock.now += shift
            with self.subTest(shift=shift), self.assertRaisesRegex(Unauthorized, "clock"):
                self.secret.check("GET", "/status", value, HERE)
            self.clock.now -= shift

    def test_malformed_headers_are_refused(self):
        good = self.secret.sign("GET", "/", HERE)
        for value in ("", "Bearer x", good.replace("p2p-hmac-v2", "p2p-hmac-v3"),
                      good + " extra", good.replace("ts=", "ts=-"), "x" * 10_000):
            with self.subTest(value=value[:40]), self.assertRaises(Unauthorized):
                self.secret.check("GET", "/", value, HERE)
        with self.assertRaisesRegex(Unauthorized, "older peer.py"):
            self.secret.check("GET", "/", good.replace("p2p-hmac-v2", "p2p-hmac-v1"), HERE)


class ReplayGuardTests(unittest.TestCase):

    def test_forgets_nonces_once_their_second_leaves_the_window(self):
        guard = ReplayGuard(window_s=60, capacity=10)
        self.assertTrue(guard.first_time(1000, "a", now=1000))
        self.assertFalse(guard.first_time(1000, "a", now=1030))
        self.assertTrue(guard.first_time(1100, "b", now=1100))
        self.assertEqual(len(guard), 1)  # "a" aged out

    def test_full_guard_refuses_rather_than_forgets(self):
        guard = ReplayGuard(window_s=60, capacity=2)
        guard.first_time(1, "a", now=1)
        guard.first_time(1, "b", now=1)
        with self.assertRaises(ReplayFull):
            guard.first_time(1, "c", now=1)
        self.assertFalse(guard.first_time(1, "a", now=1))


class PresignedURLTests(unittest.TestCase):

    def setUp(self):
        self.clock = Clock()
        self.secret = NetworkSecret(SECRET, clock=self.clock)
        self.query = parse_qs(self.secret.url_query("dir/Café.txt", 600))

    def test_good_for_get_and_head_many_times_until_it_expires(self):
        for _ in range(3):
            self.secret.check_url("GET", "dir/Café.txt", self.query)
        self.secret.check_url("HEAD", "dir/Café.txt", self.query)
        self.clock.now += 601
        with self.assertRaisesRegex(Unauthorized, "expired"):
            self.secret.check_url("GET", "dir/Café.txt", self.query)

    def test_not_for_another_name_method_or_secret(self):
        with self.assertRaises(Unauthorized):
            self.secret.check_url("GET", "dir/other.txt", self.query)
        with self.assertRaises(Unauthorized):
            self.secret.check_url("DELETE", "dir/Café.txt", self.query)
        other = NetworkSecret("another secret of sixteen chars", clock=self.clock)
        with self.assertRaises(Unauthorized):
            other.check_url("GET", "dir/Café.txt", self.query)

    def test_a_changed_expiry_breaks_the_signature(self):
        longer = dict(self.query, **{"p2p-expires": [str(int(self.clock.now) + 99999)]})
        with self.assertRaisesRegex(Unauthorized, "does not match"):
            self.secret.check_url("GET", "dir/Café.txt", longer)

    def test_lifetime_is_bounded(self):
        with self.assertRaises(ValueError):
            self.secret.url_query("a", 8 * 86400)


class SecretSettingTests(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="p2p-members-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def write(self, text):
        path = os.path.join(self.tmp, "secret")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_a_new_secret_is_long_and_new(self):
        self.assertGreaterEqual(len(new_secret()), 43)
        self.assertNotEqual(new_secret(), new_secret())

    def test_read_from_file_then_environment(self):
        self.assertEqual(read_secret(self.write(SECRET + "\n"), {}), SECRET.encode())
        self.assertEqual(read_secret(None, {"P2P_SECRET": SECRET}), SECRET.encode())
        self.assertIsNone(read_secret(None, {}))

    def test_unusable_secrets_say_why(self):
        with self.assertRaisesRegex(SecretError, "shorter than"):
            read_secret(self.write("short"), {})
        with self.assertRaisesRegex(SecretError, "Cannot read"):
            read_secret(os.path.join(self.tmp, "missing"), {})

    def test_durations(self):
        self.assertEqual([parse_duration(t) for t in ("90", "30s", "10m", "2h", "1d")],
                         [90, 30, 600, 7200, 86400])
        for bad in ("", "10x", "-5m", "0"):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                parse_duration(bad)

    def test_tls_options_are_checked(self):
        cert, key = tls_files("network")
        with self.assertRaisesRegex(TLSSetupError, "go together"):
            Members.from_options(tls_cert=cert, environ={})
        with self.assertRaisesRegex(TLSSetupError, "no such file"):
            Members.from_options(tls_cert=cert, tls_key=key + ".missing", environ={})
        with self.assertRaisesRegex(TLSSetupError, "is the key the certificate's"):
            Members.from_options(tls_cert=cert, tls_key=tls_files("other")[1], environ={})

    def test_datagrams_are_signed_with_their_own_key(self):
        secret = NetworkSecret(SECRET)
        sig = secret.sign_datagram(b"p2p-lb 1 6969 office")
        self.assertTrue(secret.datagram_ok(b"p2p-lb 1 6969 office", sig))
        self.assertFalse(secret.datagram_ok(b"p2p-lb 1 6970 office", sig))
        self.assertFalse(NetworkSecret("another secret of sixteen chars")
                         .datagram_ok(b"p2p-lb 1 6969 office", sig))


# ---------------------------------------------------------------------------
# The servers, in this process


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class ClosedNetworkTests(unittest.TestCase):
    """A load balancer and a holder on one network; clients with and without its secret."""

    members = Members(NetworkSecret(SECRET))

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="p2p-members-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        quiet = mock.patch("p2p.http.messages.LIMITS",  # every refusal logged, to check
                           dataclasses.replace(LIMITS, quiet_log_interval_s=0))
        quiet.start()
        self.addCleanup(quiet.stop)
        quiet_logs(self)  # ...but not onto the test output
        self.lb_server = serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), lb_core.Registry(),
                                                     members=self.members))
        self.addCleanup(self.lb_server.server_close)
        self.addCleanup(self.lb_server.shutdown)
        self.shared = os.path.join(self.tmp, "shared")
        self.content = os.urandom(3 << 20)
        os.makedirs(self.shared)
        with open(os.path.join(self.shared, "song.mp3"), "wb") as f:
            f.write(self.content)
        self.index = ShareIndex([self.shared])
        self.index.refresh()
        self.assertTrue(self.index.wait_hashed(DEADLINE_S))
        self.addCleanup(self.index.close)
        self.holder = serve(FileServer(("127.0.0.1", 0), self.index, members=self.members))
        self.addCleanup(self.holder.server_close)
        self.addCleanup(self.holder.shutdown)
        self.client = self.lb_client(self.members)
        self.registration = self.client.register(self.holder.port,
                                                 [f.as_dict() for f in self.index.files()])

    def lb_client(self, members):
        client = lb_client.LBClient("127.0.0.1", self.lb_server.port, timeout=DEADLINE_S,
                             members=members)
        self.addCleanup(client.close)
        return client

    def raw(self, port, request):
        with self.members.connect(socket.create_connection(("127.0.0.1", port),
                                                           timeout=DEADLINE_S)) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1]), data

    def test_the_load_balancer_refuses_strangers_and_registers_nothing(self):
        for members in (Members(tls=self.members.tls),
                        Members(NetworkSecret("another secret of sixteen chars"), self.members.tls)):
            stranger = self.lb_client(members)
            with self.subTest(members=members.describe()):
                with self.assertRaisesRegex(lb_client.NotAdmitted,
                                            "wrong or missing network secret"):
                    stranger.register(1234, [{"name": "evil.bin", "size": 1,
                                              "sha256": "0" * 64}])
                with self.assertRaises(lb_client.NotAdmitted):
                    stranger.status()
        self.assertEqual([p["port"] for p in self.client.status()["peers"]], [self.holder.port])
        self.assertEqual(self.client.files("evil")["files"], [])

    def test_401_names_its_scheme_and_closes(self):
        status, data = self.raw(self.lb_server.port,
                                b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status, 401)
        self.assertIn(b"WWW-Authenticate: P2P-HMAC", data)
        self.assertIn(b"Connection: close", data)

    def test_a_captured_request_replayed_later_is_refused(self):
        here = f"127.0.0.1:{self.lb_server.port}"
        header = self.members.secret.sign("GET", "/status", here)
        request = (f"GET /status HTTP/1.1\r\nHost: {here}\r\nConnection: close\r\n"
                   f"{AUTH_HEADER}: {header}\r\n\r\n").encode()
        first, _ = self.raw(self.lb_server.port, request)
        again, data = self.raw(self.lb_server.port, request)
        self.assertEqual((first, again), (200, 401))
        self.assertIn(b"replay", data)
        held, _ = self.raw(self.holder.port, request.replace(b"/status", b"/files"))
        self.assertEqual(held, 401)  # signed for another target

    def test_a_request_signed_for_one_server_is_refused_by_another(self):
        other = serve(FileServer(("127.0.0.1", 0), self.index, members=self.members))
        self.addCleanup(other.server_close)
        self.addCleanup(other.shutdown)
        target, here = "/files/song.mp3", f"127.0.0.1:{self.holder.port}"
        request = (f"GET {target} HTTP/1.1\r\nHost: {here}\r\nConnection: close\r\n"
                   f"{AUTH_HEADER}: {self.members.secret.sign('GET', target, here)}\r\n\r\n")
        status, data = self.raw(other.port, request.encode())
        self.assertEqual(status, 401)
        self.assertIn(b"not for this server", data)
        self.assertNotIn(self.content[:64], data)
        self.assertEqual(self.raw(self.holder.port, request.encode())[0], 200)

    def test_a_signed_body_cannot_be_changed(self):
        here = f"127.0.0.1:{self.lb_server.port}"
        signed = self.members.secret.sign("POST", "/peers", here, b'{"port": 1, "files": []}')
        body = b'{"port": 2, "files": []}'
        status, data = self.raw(self.lb_server.port, (
            f"POST /peers HTTP/1.1\r\nHost: {here}\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n{AUTH_HEADER}: {signed}\r\n\r\n").encode() + body)
        self.assertEqual(status, 401)
        self.assertIn(b"body", data)
        self.assertEqual(len(self.client.status()["peers"]), 1)

    def test_the_load_balancer_proves_it_is_a_member(self):
        if self.members.secret is None:
            self.skipTest("no secret")
        open_lb = serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), lb_core.Registry(),
                                                     members=Members(tls=self.members.tls)))
        self.addCleanup(open_lb.server_close)
        self.addCleanup(open_lb.shutdown)
        member = lb_client.LBClient("127.0.0.1", open_lb.port, timeout=DEADLINE_S,
                                    members=self.members)
        self.addCleanup(member.close)
        with self.assertRaisesRegex(lb_client.NotAMember, "cannot prove .* secret"):
            member.register(self.holder.port, [f.as_dict() for f in self.index.files()])
        self.assertIn("policy", self.client.status())  # the network's own proves it

    def test_the_holder_serves_members_and_presigned_urls_only(self):
        status, data = self.raw(self.holder.port, b"GET /files/song.mp3 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status, 401)
        self.assertNotIn(self.content[:64], data)
        root = os.path.join(self.tmp, "downloads")
        result = Downloader(self.client, root, members=self.members).get("song.mp3")
        with open(result.path, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).digest(),
                             hashlib.sha256(self.content).digest())

    def test_a_named_holder_is_asked_directly_as_a_member_and_refuses_a_stranger(self):
        root = os.path.join(self.tmp, "direct")
        member = DirectSource("127.0.0.1", self.holder.port, members=self.members)
        result = Downloader(member, root, members=self.members).get("song.mp3")
        with open(result.path, "rb") as f:
            self.assertEqual(f.read(), self.content)
        stranger = DirectSource("127.0.0.1", self.holder.port, members=Members(
            NetworkSecret("another secret of sixteen chars"), self.members.tls))
        with self.assertRaisesRegex(lb_client.NotAdmitted, "refuses us: .*network secret"):
            stranger.pick("song.mp3")

    def test_a_holder_that_refuses_us_is_a_clear_failure(self):
        stranger_holder = serve(FileServer(("127.0.0.1", 0), self.index,
                                           members=Members(NetworkSecret("x" * 20),
                                                           self.members.tls)))
        self.addCleanup(stranger_holder.server_close)
        self.addCleanup(stranger_holder.shutdown)
        self.client.unregister(self.registration["peer_id"], self.registration["token"])
        self.client.register(stranger_holder.port, [f.as_dict() for f in self.index.files()])
        with self.assertRaisesRegex(Exception, "wrong or missing network secret"):
            Downloader(self.client, os.path.join(self.tmp, "d"), members=self.members).get(
                "song.mp3")

    def presigned(self, clock=time.time, lifetime=600, name="song.mp3"):
        query = NetworkSecret(SECRET, clock=clock).url_query(name, lifetime)
        return f"http://127.0.0.1:{self.holder.port}/files/{name}?{query}"

    def curl(self, *args):
        return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True,
                              timeout=DEADLINE_S)

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_curl_fetches_a_presigned_url_with_range_until_it_expires(self):
        out = os.path.join(self.tmp, "curl.bin")
        url = self.presigned()
        whole = self.curl("-f", "-o", out, url)
        self.assertEqual(whole.returncode, 0, whole.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.content)
        with open(out, "r+b") as f:  # a broken download: curl -C - resumes it
            f.truncate(1000)
        resumed = self.curl("-f", "-C", "-", "-o", out, url)
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.content)
        expired = self.presigned(clock=lambda: time.time() - 3600)
        late = self.curl("-o", "/dev/null", "-w", "%{http_code}", expired)
        self.assertEqual(late.stdout, "401")

    def test_the_load_balancer_redirects_a_presigned_url_to_a_holder(self):
        query = NetworkSecret(SECRET).url_query("song.mp3", 600)
        status, data = self.raw(self.lb_server.port, f"GET /files/song.mp3?{query} HTTP/1.1\r\n"
                                f"Host: x\r\nConnection: close\r\n\r\n".encode())
        self.assertEqual(status, 302)
        self.assertIn(f"Location: {self.members.scheme}://127.0.0.1:{self.holder.port}"
                      f"/files/song.mp3?{query}\r\n".encode(), data)
        unsigned, _ = self.raw(self.lb_server.port, b"GET /files/song.mp3 HTTP/1.1\r\n"
                                                    b"Host: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(unsigned, 401)

    def test_a_presigned_url_is_for_its_file_only(self):
        url = self.presigned(name="other.mp3").replace("other.mp3", "song.mp3")
        target = url.split(str(self.holder.port), 1)[1]
        status, _ = self.raw(self.holder.port,
                             f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.assertEqual(status, 401)



class TLSNetworkTests(ClosedNetworkTests):
    """The same, with every connection over TLS with the network certificate."""

    members = Members(NetworkSecret(SECRET), NetworkTLS(*tls_files("network")))

    def test_a_plain_client_is_told_to_use_tls_on_both_sides(self):
        with self.assertLogs("p2p.http", logging.WARNING) as logs:
            with self.assertRaisesRegex(lb_client.NotAdmitted, "speaks TLS only"):
                self.lb_client(Members(NetworkSecret(SECRET))).status()
        self.assertIn("this server speaks TLS only", "\n".join(logs.output))

    def test_another_certificate_is_refused_on_both_sides(self):
        other = Members(NetworkSecret(SECRET), NetworkTLS(*tls_files("other")))
        with self.assertLogs("p2p.http", logging.WARNING) as logs:
            with self.assertRaisesRegex(lb_client.Unreachable, "network certificate"):
                self.lb_client(other).status()
            wait_for(lambda: "network certificate" in "\n".join(logs.output),
                     what="the server to log the refused handshake")

    def test_a_tls_client_of_a_plain_server_is_told_on_both_sides(self):
        plain = serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), lb_core.Registry()))
        self.addCleanup(plain.server_close)
        self.addCleanup(plain.shutdown)
        client = lb_client.LBClient("127.0.0.1", plain.port, timeout=DEADLINE_S,
                                    members=self.members)
        self.addCleanup(client.close)
        with self.assertLogs("p2p.http", logging.WARNING) as logs:
            with self.assertRaisesRegex(lb_client.Unreachable, "does not speak TLS"):
                client.status()
            wait_for(lambda: "without --tls-cert" in "\n".join(logs.output),
                     what="the plain server to log the TLS client")

    def test_the_bytes_on_the_wire_are_encrypted(self):
        with socket.create_connection(("127.0.0.1", self.holder.port), timeout=DEADLINE_S) as s, \
                self.members.tls.client.wrap_socket(s) as tls:
            target, here = "/files/song.mp3", f"127.0.0.1:{self.holder.port}"
            signed = self.members.secret.sign("GET", target, here)
            tls.sendall(f"GET {target} HTTP/1.1\r\nHost: {here}\r\nConnection: close\r\n"
                        f"{AUTH_HEADER}: {signed}\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(1 << 20):
                data += chunk
        self.assertTrue(data.endswith(self.content))
        self.assertIsInstance(tls, ssl.SSLSocket)

    def presigned(self, clock=time.time, lifetime=600, name="song.mp3"):
        """curl checks the holder's certificate by the name in it (see the README)."""
        return super().presigned(clock, lifetime, name).replace(
            "http://127.0.0.1:", "https://p2p-network:")

    def curl(self, *args):
        cert, key = tls_files("network")
        return super().curl("--cert", cert, "--key", key, "--cacert", cert, "--resolve",
                            f"p2p-network:{self.holder.port}:127.0.0.1", *args)


class CANetworkTests(unittest.TestCase):

    def test_with_a_ca_any_certificate_it_signed_is_a_member(self):
        quiet_logs(self)
        ca = tls_files("ca")[0]
        member = Members(tls=NetworkTLS(*tls_files("member"), ca=ca))
        server = serve(lb_server.LoadBalancerServer(("127.0.0.1", 0), lb_core.Registry(), members=member))
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        for members, ok in ((member, True),
                            (Members(tls=NetworkTLS(*tls_files("network"), ca=ca)), False)):
            client = lb_client.LBClient("127.0.0.1", server.port, timeout=DEADLINE_S,
                                        members=members)
            self.addCleanup(client.close)
            with self.subTest(ok=ok):
                if ok:
                    self.assertEqual(client.status()["peers"], [])
                else:
                    with self.assertRaises(lb_client.Unreachable):
                        client.status()


# ---------------------------------------------------------------------------
# The programs


class ProgramTests(ProcessTestCase):

    def setUp(self):
        super().setUp()
        self.secret_file = os.path.join(self.tmp, "network.secret")
        made = self.run_peer("secret")
        self.assertEqual(made.returncode, 0, made.stderr)
        with open(self.secret_file, "w") as f:
            f.write(made.stdout)
        cert, key = tls_files("network")
        self.options = ["--secret-file", self.secret_file, "--tls-cert", cert, "--tls-key", key]

    def test_secret_and_tls_download_verifies_and_strangers_get_a_sentence(self):
        lb_proc = self.start_lb(*self.options)
        write_random(os.path.join(self.tmp, "alice", "shared", "big.bin"), 5 << 20)
        self.start_peer(lb_proc.port, "alice", *self.options)
        downloads = self.folder("bob", "downloads")
        got = wait_for(lambda: (r := self.get(lb_proc.port, "big.bin", downloads, *self.options))
                       .returncode == 0 and r, what="the download over TLS")
        self.assertIn("SHA-256 verified", got.stdout)
        stranger = self.run_peer("list", "--lb", f"127.0.0.1:{lb_proc.port}",
                                 "--tls-cert", self.options[3], "--tls-key", self.options[5])
        self.assertEqual(stranger.returncode, 1)
        self.assertIn("wrong or missing network secret", stranger.stderr)
        url = self.run_peer("url", "big.bin", "--lb", f"127.0.0.1:{lb_proc.port}",
                            "--expires", "10m", *self.options)
        self.assertEqual(url.returncode, 0, url.stderr)
        self.assertRegex(url.stdout, r"^https://127\.0\.0\.1:\d+/files/big\.bin\?p2p-expires="
                                     r"\d+&p2p-sig=[0-9a-f]{64}\n$")
        self.assertIn("--resolve p2p-network:", url.stderr)

    def test_get_from_a_named_peer_without_a_load_balancer_signs_and_uses_tls(self):
        lb_proc = self.start_lb(*self.options)
        write_random(os.path.join(self.tmp, "alice", "shared", "big.bin"), 1 << 20)
        alice = self.start_peer(lb_proc.port, "alice", *self.options)
        wait_for(lambda: "big.bin" in self.run_peer("list", "--lb", f"127.0.0.1:{lb_proc.port}",
                                                    *self.options).stdout, what="alice's file")
        self.terminate(lb_proc)
        got = self.get(lb_proc.port, "big.bin", self.folder("bob", "downloads"), "--from",
                       f"127.0.0.1:{alice.port}", *self.options)
        self.assertEqual(got.returncode, 0, got.stderr)
        self.assertIn("SHA-256 verified", got.stdout)
        stranger = self.get(lb_proc.port, "big.bin", self.folder("eve", "downloads"), "--from",
                            f"127.0.0.1:{alice.port}", *self.options[2:])
        self.assertEqual(stranger.returncode, 1)
        self.assertIn("Give every member the same --secret-file (or P2P_SECRET)", stranger.stderr)

    def test_a_signed_link_opens_the_load_balancers_page_in_a_browser(self):
        lb_proc = self.start_lb("--secret-file", self.secret_file)
        url = self.run_peer("url", "/", "--lb", f"127.0.0.1:{lb_proc.port}",
                            "--secret-file", self.secret_file)
        self.assertEqual(url.returncode, 0, url.stderr)
        self.assertRegex(url.stdout, rf"^http://127\.0\.0\.1:{lb_proc.port}/\?p2p-expires=\d+"
                                     r"&p2p-sig=[0-9a-f]{64}\n$")
        page = subprocess.run(["curl", "-sS", "-w", "%{http_code}", url.stdout.strip()],
                              capture_output=True, text=True, timeout=DEADLINE_S)
        self.assertTrue(page.stdout.endswith("200"), page.stdout[-300:])
        self.assertIn("<html", page.stdout)
        bare = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{lb_proc.port}/"],
                              capture_output=True, text=True, timeout=DEADLINE_S)
        self.assertIn("peer.py url /", bare.stdout)
        stranger = self.run_peer("list", "--lb", f"127.0.0.1:{lb_proc.port}")
        self.assertEqual(stranger.returncode, 1)
        self.assertIn("Give every member the same --secret-file (or P2P_SECRET)", stranger.stderr)

    def test_a_member_refuses_an_open_load_balancer_and_says_so(self):
        lb_proc = self.start_lb()
        for command in ("list", "serve"):
            with self.subTest(command=command):
                result = self.run_peer(command, "--lb", f"127.0.0.1:{lb_proc.port}",
                                       "--secret-file", self.secret_file,
                                       *(["--host", "127.0.0.1", "--shared", self.folder("s"),
                                          "--downloads", self.folder("d")]
                                         if command == "serve" else []))
                self.assertEqual(result.returncode, 1)
                self.assertIn("cannot prove that it holds this network's secret",
                              result.stderr)
                self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(self.status(lb_proc.port)["peers"], [])  # nothing registered there

    def test_a_peer_with_the_wrong_secret_says_so_and_does_not_start(self):
        lb_proc = self.start_lb("--secret-file", self.secret_file)
        for command in ("serve", "menu"):
            with self.subTest(command=command):
                result = self.run_peer(command, "--lb", f"127.0.0.1:{lb_proc.port}",
                                       "--host", "127.0.0.1",
                                       "--shared", self.folder("s"), "--downloads",
                                       self.folder("d"), input="0\n")
                self.assertEqual(result.returncode, 1)
                self.assertIn("wrong or missing network secret", result.stderr)
                self.assertNotIn("Traceback", result.stderr)
        status = self.run_peer("status", "--lb", f"127.0.0.1:{lb_proc.port}",
                               "--secret-file", self.secret_file)
        self.assertIn("0 peer(s)", status.stdout)

    def test_an_auto_started_load_balancer_gets_the_secret(self):
        port = free_port()
        peer = self.spawn([PEER, "serve", "--lb", f"127.0.0.1:{port}", "--host", "127.0.0.1",
                           "--shared", self.folder("s"), "--downloads", self.folder("d"),
                           *self.options])
        self.assertTrue(read_line(peer.stdout).startswith("listening on"))
        status = self.run_peer("status", "--lb", f"127.0.0.1:{port}", *self.options)
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn("1 peer(s)", status.stdout)
        members = Members.from_options(self.secret_file, *tls_files("network"))
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S, members=members)
        self.addCleanup(client.close)
        self.addCleanup(os.kill, client.status()["pid"], signal.SIGTERM)
        plain = self.run_peer("status", "--lb", f"127.0.0.1:{port}")
        self.assertEqual(plain.returncode, 1)
        self.assertIn("TLS only", plain.stderr)
        plain_peer = self.run_peer("serve", "--lb", f"127.0.0.1:{port}", "--host", "127.0.0.1",
                                   "--shared", self.folder("s2"), "--downloads",
                                   self.folder("d2"), "--secret-file", self.secret_file)
        self.assertEqual(plain_peer.returncode, 1)
        self.assertIn("speaks TLS only", plain_peer.stderr)
        self.assertIn("same --tls-cert", plain_peer.stderr)
        self.assertNotIn("Traceback", plain_peer.stderr)


if __name__ == "__main__":
    unittest.main()
