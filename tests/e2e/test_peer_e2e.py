"""End to end: a real load balancer and real peers as processes, moving real files on loopback."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import unittest

from p2p.net.sharing import cache_entry, hash_pieces
from tests.support import (COMMAND_TIMEOUT_S, PEER, ProcessTestCase, clean_env, free_port,
                           http_json, raw_get, read_line, same_bytes, wait_for, wait_partial,
                           write_random)

MiB = 1 << 20


class DownloadTests(ProcessTestCase):

    def setUp(self):
        super().setUp()
        self.lb = self.start_lb("--heartbeat", "1")

    def holders(self, name, size, count, *extra, content=None):
        """``count`` peers sharing the same random file; returns (procs, source path)."""
        source = os.path.join(self.tmp, "source", name)
        if content is None:
            write_random(source, size)
        procs = []
        for i in range(count):
            target = os.path.join(self.folder(f"holder{i}", "shared"), name)
            shutil.copyfile(source, target)  # a hard link would change the ctime of both
            procs.append(self.start_peer(self.lb.port, f"holder{i}", *extra, wait_files=[name]))
        return procs, source

    def test_get_from_two_holders_is_byte_identical(self):
        _, source = self.holders("big.bin", 64 * MiB, 2)
        downloads = self.folder("me", "downloads")
        result = self.run_peer("get", "big.bin", "--lb", f"127.0.0.1:{self.lb.port}",
                               "--downloads", downloads)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("SHA-256 verified", result.stdout)
        self.assertTrue(same_bytes(source, os.path.join(downloads, "big.bin")))
        self.assertEqual(sorted(os.listdir(downloads)), ["big.bin"])  # no partial left behind

    def test_ten_concurrent_gets_are_spread_over_both_holders(self):
        procs, source = self.holders("song.mp3", 2 * MiB, 2, "--upload-limit", "4M")
        gets = [subprocess.Popen(
            [sys.executable, PEER, "get", "song.mp3", "--lb", f"127.0.0.1:{self.lb.port}",
             "--downloads", self.folder(f"client{i}")], cwd=self.tmp, env=clean_env(self.tmp),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(10)]
        for proc in gets:
            out, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, err)
        for i in range(10):
            self.assertTrue(same_bytes(source, os.path.join(self.tmp, f"client{i}", "song.mp3")))
        served = [self.peer_entry(self.lb.port, p.port)["served"] for p in procs]
        self.assertGreaterEqual(sum(served), 10)  # a download may take pieces from both
        self.assertGreaterEqual(min(served), 3, served)

    def test_twelve_downloaders_one_holder_with_eight_slots_all_complete(self):
        procs, source = self.holders("crowd.bin", 4 * MiB, 1, "--upload-limit", "4M")
        gets = [subprocess.Popen(
            [sys.executable, PEER, "get", "crowd.bin", "--lb", f"127.0.0.1:{self.lb.port}",
             "--downloads", self.folder(f"crowd{i}"), "--host", "127.0.0.1",
             "--upload-limit", "4M"], cwd=self.tmp, env=clean_env(self.tmp),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(12)]
        for proc in gets:
            self.addCleanup(lambda p=proc: p.poll() is None and p.kill())
        for proc in gets:  # busy is waited out, never reported as a failure
            out, err = proc.communicate(timeout=COMMAND_TIMEOUT_S)
            self.assertEqual(proc.returncode, 0, err)
        for i in range(12):
            self.assertTrue(same_bytes(source, os.path.join(self.tmp, f"crowd{i}", "crowd.bin")))
        self.assertEqual(self.peer_entry(self.lb.port, procs[0].port)["failed"], 0)

    def test_holder_killed_mid_file_the_others_finish_it(self):
        procs, source = self.holders("movie.mkv", 24 * MiB, 2, "--upload-limit", "8M")
        downloads = self.folder("me", "downloads")
        get = subprocess.Popen(
            [sys.executable, PEER, "get", "movie.mkv", "--lb", f"127.0.0.1:{self.lb.port}",
             "--downloads", downloads], cwd=self.tmp, env=clean_env(self.tmp), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: get.poll() is None and get.kill())
        wait_partial(downloads, 2 * MiB)
        victim, survivor = procs
        victim.kill()
        out, err = get.communicate(timeout=60)
        self.assertEqual(get.returncode, 0, err)
        self.assertRegex(out, rf"holder\d 127\.0\.0\.1:{survivor.port}\b")  # name, address
        self.assertTrue(same_bytes(source, os.path.join(downloads, "movie.mkv")))

    def test_lying_holder_is_caught_and_the_honest_one_serves(self):
        size = 3 * MiB
        _, source = self.holders("data.bin", size, 1)
        _, files = http_json(self.lb.port, "GET", "/files?q=data.bin")
        honest_sha = files["files"][0]["sha256"]
        liar_shared = self.folder("liar", "shared")
        liar_file = os.path.join(liar_shared, "data.bin")
        write_random(liar_file, size)
        st = os.stat(liar_file)
        with open(os.path.join(liar_shared, ".p2p-hashes.json"), "w") as f:
            json.dump({"data.bin": cache_entry(st, honest_sha, hash_pieces(liar_file)[1])}, f)
        liar = self.start_peer(self.lb.port, "liar", wait_files=["data.bin"])

        downloads = self.folder("me", "downloads")
        result = self.get(self.lb.port, "data.bin", downloads, "--from", f"127.0.0.1:{liar.port}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(same_bytes(source, os.path.join(downloads, "data.bin")))
        self.assertEqual(self.peer_entry(self.lb.port, liar.port)["failed"], 1)

    def test_lying_only_holder_gives_a_clear_error_and_no_file(self):
        liar_shared = self.folder("liar", "shared")
        liar_file = os.path.join(liar_shared, "data.bin")
        write_random(liar_file, MiB)
        st = os.stat(liar_file)
        with open(os.path.join(liar_shared, ".p2p-hashes.json"), "w") as f:
            json.dump({"data.bin": cache_entry(st, "ab" * 32, hash_pieces(liar_file)[1])}, f)
        self.start_peer(self.lb.port, "liar", wait_files=["data.bin"])
        downloads = self.folder("me", "downloads")
        result = self.get(self.lb.port, "data.bin", downloads)
        self.assertEqual(result.returncode, 1)
        *progress, reason = result.stderr.strip().splitlines()
        self.assertIn("did not match its SHA-256", reason)  # one line, the last
        for line in progress:  # in a pipe, get's progress lines come before it
            self.assertRegex(line, r"^ *\d+\.\d%  ", result.stderr)
        self.assertEqual(os.listdir(downloads), [])

    def test_interrupted_get_resumes_from_the_partial_file(self):
        _, source = self.holders("iso.img", 16 * MiB, 1, "--upload-limit", "8M")
        downloads = self.folder("me", "downloads")
        args = [sys.executable, PEER, "get", "iso.img", "--lb", f"127.0.0.1:{self.lb.port}",
                "--downloads", downloads]
        first = subprocess.Popen(args, cwd=self.tmp, env=clean_env(self.tmp), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        partial = wait_partial(downloads, 4 * MiB)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=30)
        self.assertEqual(first.returncode, 130, err)
        kept = os.path.getsize(partial)
        self.assertGreaterEqual(kept, 4 * MiB)
        self.assertFalse(os.path.exists(os.path.join(downloads, "iso.img")))
        wait_for(lambda: all(p["active"] == 0 for p in self.status(self.lb.port)["peers"]),
                 what="the cancelled transfer to be released")

        second = self.get(self.lb.port, "iso.img", downloads)
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertIn("resumed at", second.stdout)
        self.assertTrue(same_bytes(source, os.path.join(downloads, "iso.img")))
        self.assertEqual(os.listdir(downloads), ["iso.img"])

    def test_get_wait_0_gives_up_at_once_when_the_only_holder_dies_and_keeps_the_partial(self):
        procs, _ = self.holders("iso.img", 16 * MiB, 1, "--upload-limit", "4M")
        downloads = self.folder("me", "downloads")
        get = subprocess.Popen([sys.executable, PEER, "get", "iso.img", "--lb",
                                f"127.0.0.1:{self.lb.port}", "--downloads", downloads,
                                "--wait", "0"], cwd=self.tmp, env=clean_env(self.tmp),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: get.poll() is None and get.kill())
        partial = wait_partial(downloads, 4 * MiB)
        procs[0].kill()
        out, err = get.communicate(timeout=COMMAND_TIMEOUT_S)
        self.assertEqual(get.returncode, 1, err)
        self.assertIn("The partial file is kept", err)
        self.assertGreaterEqual(os.path.getsize(partial), 4 * MiB)
        self.assertFalse(os.path.exists(os.path.join(downloads, "iso.img")))

    def test_bad_or_oversized_partial_file_is_not_trusted_and_the_holder_not_blamed(self):
        _, source = self.holders("doc.pdf", 200_000, 1)
        _, files = http_json(self.lb.port, "GET", "/files?q=doc.pdf")
        sha = files["files"][0]["sha256"]
        for junk in (50_000, 300_000):  # a wrong prefix to resume from; longer than the file
            downloads = self.folder(f"me{junk}", "downloads")
            with open(os.path.join(downloads, f".doc.pdf.{sha[:16]}.part"), "wb") as f:
                f.write(os.urandom(junk))
            result = self.get(self.lb.port, "doc.pdf", downloads)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertTrue(same_bytes(source, os.path.join(downloads, "doc.pdf")))
            self.assertEqual(os.listdir(downloads), ["doc.pdf"])
        self.assertEqual(self.status(self.lb.port)["peers"][0]["failed"], 0)

    def test_full_disk_is_a_clear_error_and_no_final_file(self):
        self.holders("big.bin", 4 * MiB, 1)
        downloads = self.folder("me", "downloads")

        def small_disk():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, MiB))

        result = self.get(self.lb.port, "big.bin", downloads, preexec_fn=small_disk)
        self.assertEqual(result.returncode, 1)
        self.assertIn("disk is full", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(downloads, "big.bin")))
        self.assertEqual(self.status(self.lb.port)["peers"][0]["failed"], 0)  # not the holder's fault

    def test_existing_different_file_is_never_overwritten(self):
        _, source = self.holders("notes.txt", 1000, 1)
        downloads = self.folder("me", "downloads")
        with open(os.path.join(downloads, "notes.txt"), "w") as f:
            f.write("my own notes")
        result = self.get(self.lb.port, "notes.txt", downloads)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(downloads, "notes.txt")) as f:
            self.assertEqual(f.read(), "my own notes")
        self.assertTrue(same_bytes(source, os.path.join(downloads, "notes (1).txt")))
        again = self.get(self.lb.port, "notes.txt", downloads)
        self.assertIn("Already have it", again.stdout)
        self.assertEqual(sorted(os.listdir(downloads)), ["notes (1).txt", "notes.txt"])

    def test_downloaded_file_is_shared_from_then_on(self):
        _, source = self.holders("pic.png", 5000, 1)
        me = self.start_peer(self.lb.port, "me")
        # The running peer downloads through its own menu-less API: use a second process get
        # into its downloads folder; its next scan announces the verified file.
        result = self.get(self.lb.port, "pic.png", os.path.join(self.tmp, "me", "downloads"))
        self.assertEqual(result.returncode, 0, result.stderr)
        wait_for(lambda: self.peer_files(self.lb.port, me.port) == {"pic.png"},
                 what="the downloaded file to be announced")
        _, files = http_json(self.lb.port, "GET", "/files?q=pic")
        self.assertEqual(files["files"][0]["holders"], 2)
        self.assertTrue(same_bytes(source, os.path.join(self.tmp, "me", "downloads", "pic.png")))

    def test_sha256_may_be_given_by_its_first_characters(self):
        _, source = self.holders("v.bin", 1000, 1)
        _, files = http_json(self.lb.port, "GET", "/files?q=v.bin")
        sha = files["files"][0]["sha256"]
        downloads = self.folder("me")
        result = self.get(self.lb.port, "v.bin", downloads, "--sha256", sha[:12].upper())
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(same_bytes(source, os.path.join(downloads, "v.bin")))
        wrong = "0" * 12 if not sha.startswith("0" * 12) else "1" * 12
        result = self.get(self.lb.port, "v.bin", self.folder("me2"), "--sha256", wrong)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"No version of 'v.bin' has a SHA-256 starting with {wrong}", result.stderr)

    def test_unknown_file_and_unreachable_lb_exit_non_zero_with_one_line(self):
        result = self.get(self.lb.port, "nothing.here", self.folder("me"))
        self.assertEqual(result.returncode, 1)
        self.assertIn("Nobody shares 'nothing.here'", result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1)
        result = self.get(free_port(), "x", self.folder("me"))
        self.assertEqual(result.returncode, 1)
        self.assertIn("No load balancer answers", result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1)


class MembershipTests(ProcessTestCase):

    def test_lb_restart_every_peer_registers_again_within_three_heartbeats(self):
        lb = self.start_lb("--heartbeat", "1")
        peers = [self.start_peer(lb.port, f"p{i}", "--no-lb-start") for i in range(3)]
        wait_for(lambda: len(self.status(lb.port)["peers"]) == 3, what="3 peers")
        lb.kill()
        lb.wait(10)
        again = self.start_lb("--heartbeat", "1", port=lb.port)
        started = time.monotonic()
        wait_for(lambda: {p["port"] for p in self.status(again.port)["peers"]}
                 == {p.port for p in peers}, timeout=10, what="every peer to register again")
        self.assertLess(time.monotonic() - started, 3 * 1 + 1.5)

    def test_sigterm_unregisters_and_exits_zero(self):
        lb = self.start_lb("--heartbeat", "1")
        peer = self.start_peer(lb.port, "p")
        wait_for(lambda: self.peer_entry(lb.port, peer.port), what="registration")
        self.assertEqual(self.terminate(peer), 0)
        self.assertIsNone(self.peer_entry(lb.port, peer.port))

    def test_closing_the_terminal_sighup_unregisters_too(self):
        lb = self.start_lb("--heartbeat", "1")
        peer = self.start_peer(lb.port, "p")
        wait_for(lambda: self.peer_entry(lb.port, peer.port), what="registration")
        self.assertEqual(self.terminate(peer, signal.SIGHUP), 0)
        self.assertIsNone(self.peer_entry(lb.port, peer.port))

    def test_new_and_removed_files_reach_the_lb_long_before_a_heartbeat(self):
        lb = self.start_lb("--heartbeat", "600")  # no heartbeat could carry the change in time
        peer = self.start_peer(lb.port, "p", wait_files=[])
        shared = os.path.join(self.tmp, "p", "shared")
        with open(os.path.join(shared, "new.txt"), "w") as f:
            f.write("new")
        wait_for(lambda: self.peer_files(lb.port, peer.port) == {"new.txt"}, timeout=15,
                 what="the new file on the load balancer")
        os.unlink(os.path.join(shared, "new.txt"))
        wait_for(lambda: self.peer_files(lb.port, peer.port) == set(), timeout=15,
                 what="the removed file gone from the load balancer")

    def test_options_may_come_before_the_command(self):
        lb = self.start_lb()
        result = self.run_peer("--lb", f"127.0.0.1:{lb.port}", "status")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"Load balancer 127.0.0.1:{lb.port} · policy least-connections", result.stdout)

    def test_auto_starts_one_load_balancer_for_two_peers_starting_together(self):
        port = free_port()
        procs = [self.spawn([PEER, "serve", "--lb", f"127.0.0.1:{port}", "--host", "127.0.0.1",
                             "--shared", self.folder(f"s{i}"), "--downloads", self.folder(f"d{i}")])
                 for i in range(2)]
        lines = [read_line(p.stdout) for p in procs]
        self.assertTrue(all(line.startswith("listening on") for line in lines),
                        [p.poll() is not None and p.stderr.read() for p in procs])
        _, status = http_json(port, "GET", "/status")
        self.addCleanup(os.kill, status["pid"], signal.SIGTERM)
        wait_for(lambda: len(http_json(port, "GET", "/status")[1]["peers"]) == 2,
                 what="both peers registered with the one load balancer")
        for p in procs:
            self.assertEqual(self.terminate(p), 0)
        messages = "".join(p.stderr.read().decode() for p in procs)
        self.assertEqual(messages.count(f"started one in the background (pid {status['pid']}"), 1,
                         messages)
        os.kill(status["pid"], 0)  # it outlives the peers (until its idle exit)


class FileServerOverTheWireTests(ProcessTestCase):

    def setUp(self):
        super().setUp()
        self.lb = self.start_lb()
        outside = self.folder("outside")
        with open(os.path.join(outside, "secret.txt"), "w") as f:
            f.write("TOP-SECRET")
        shared = self.folder("p", "shared")
        with open(os.path.join(shared, "ok.txt"), "w") as f:
            f.write("fine")
        with open(os.path.join(shared, ".hidden"), "w") as f:
            f.write("TOP-SECRET")
        os.symlink(os.path.join(outside, "secret.txt"), os.path.join(shared, "link.txt"))
        self.peer = self.start_peer(self.lb.port, "p", wait_files=["ok.txt"])

    def raw(self, target):
        return raw_get(self.peer.port, target)

    def test_symlink_out_and_dotfile_are_not_listed_or_served(self):
        self.assertEqual(self.peer_files(self.lb.port, self.peer.port), {"ok.txt"})
        for target in ("/files/link.txt", "/files/.hidden", "/files/.p2p-hashes.json"):
            status, data = self.raw(target)
            self.assertIn(status, (400, 404), target)
            self.assertNotIn(b"TOP-SECRET", data)

    def test_traversal_requests_get_4xx_and_the_server_keeps_serving(self):
        hostile = ["/files/../outside/secret.txt", "/files/%2e%2e/%2e%2e/outside/secret.txt",
                   "/files/..%2f..%2foutside%2fsecret.txt", "/files/..%5c..%5csecret.txt",
                   "/files/ok.txt%00.png", "/files//etc/passwd", "/files/%2fetc%2fpasswd",
                   "/files/%ff", "/../../etc/passwd"]
        for target in hostile:
            status, data = self.raw(target)
            self.assertTrue(400 <= status < 500, (target, status))
            self.assertNotIn(b"TOP-SECRET", data)
            self.assertNotIn(b"root:", data)
            status, data = self.raw("/files/ok.txt")
            self.assertEqual(status, 200)
            self.assertTrue(data.endswith(b"\r\n\r\nfine"))


class LoadBalancerCrashTests(ProcessTestCase):

    def test_peer_keeps_serving_while_the_lb_is_down(self):
        lb = self.start_lb("--heartbeat", "1")
        shared = self.folder("p", "shared")
        with open(os.path.join(shared, "a.txt"), "w") as f:
            f.write("still here")
        peer = self.start_peer(lb.port, "p", "--no-lb-start", wait_files=["a.txt"])
        lb.kill()
        lb.wait(10)
        status, data = raw_get(peer.port, "/files/a.txt")
        self.assertEqual(status, 200)
        self.assertTrue(data.endswith(b"still here"))
        self.assertIsNone(peer.poll())

    def test_get_from_a_named_peer_works_without_a_load_balancer(self):
        lb = self.start_lb("--heartbeat", "1")
        write_random(os.path.join(self.folder("p", "shared"), "a.bin"), 300_000)
        with open(os.path.join(self.folder("p", "shared"), "b.txt"), "w") as f:
            f.write("bee")
        peer = self.start_peer(lb.port, "p", "--no-lb-start", wait_files=["a.bin", "b.txt"])
        lb.kill()
        lb.wait(10)
        downloads = self.folder("me", "downloads")
        result = self.run_peer("get", "a.bin", "b.txt", "--lb", f"127.0.0.1:{lb.port}",
                               "--downloads", downloads, "--from", f"127.0.0.1:{peer.port}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"Saved .*a\.bin .*\nSaved .*b\.txt ")
        self.assertTrue(same_bytes(os.path.join(self.tmp, "p", "shared", "a.bin"),
                                   os.path.join(downloads, "a.bin")))
        result = self.get(lb.port, "nothing.txt", downloads, "--from", f"127.0.0.1:{peer.port}")
        self.assertEqual((result.returncode, result.stderr),
                         (1, f"peer.py: 127.0.0.1:{peer.port} does not share 'nothing.txt'.\n"))
        result = self.get(lb.port, "a.bin", downloads, "--from", "127.0.0.1")
        self.assertIn("give the peer's port too", result.stderr)

    def test_a_peer_starts_the_load_balancer_again_when_it_is_gone(self):
        lb = self.start_lb("--heartbeat", "1")
        peer = self.start_peer(lb.port, "p")
        wait_for(lambda: self.peer_entry(lb.port, peer.port), what="registration")
        lb.kill()
        lb.wait(10)

        def restarted():
            try:
                return self.peer_entry(lb.port, peer.port) and self.status(lb.port)
            except OSError:
                return None

        status = wait_for(restarted, timeout=30, what="a new load balancer with the peer in it")
        self.addCleanup(os.kill, status["pid"], signal.SIGTERM)  # it runs in its own session
        self.assertNotEqual(status["pid"], lb.pid)


class DiscoveryTests(ProcessTestCase):
    """Peers without --lb on loopback: multicast on the loopback interface only."""

    def serve_without_lb(self, name):
        proc = self.spawn([PEER, "serve", "--host", "127.0.0.1",
                           "--shared", self.folder(name, "shared"),
                           "--downloads", self.folder(name, "downloads")])
        self.assertTrue(read_line(proc.stdout).startswith("listening on 127.0.0.1:"))
        return proc

    def test_a_peer_without_lb_finds_the_announced_load_balancer(self):
        lb = self.start_lb("--heartbeat", "1")
        proc = self.serve_without_lb("p")
        self.assertIn(f"load balancer 127.0.0.1:{lb.port}", read_line(proc.stdout))
        wait_for(lambda: len(self.status(lb.port)["peers"]) == 1, what="registration")
        self.assertEqual(self.terminate(proc), 0)
        self.assertIn(f"Found the load balancer of network 't-{os.path.basename(self.tmp)}' "
                      f"at 127.0.0.1:{lb.port}", proc.stderr.read().decode())

    def test_a_peer_that_found_its_load_balancer_follows_the_network_to_the_next(self):
        first = self.start_lb("--heartbeat", "1")
        proc = self.serve_without_lb("p")
        wait_for(lambda: len(self.status(first.port)["peers"]) == 1, what="registration")
        first.kill()
        first.wait(10)
        second = self.start_lb("--heartbeat", "1")
        wait_for(lambda: len(self.status(second.port)["peers"]) == 1, timeout=20,
                 what="the peer to register with the load balancer announced now")
        self.assertEqual(self.terminate(proc), 0)
        self.assertIn(f"moving to the load balancer at 127.0.0.1:{second.port}",
                      proc.stderr.read().decode())

    def test_of_two_load_balancers_of_one_network_the_younger_stands_down(self):
        older = self.start_lb()
        younger = self.start_lb()
        self.assertEqual(younger.wait(10), 0)
        self.assertIn("standing down", younger.stderr.read().decode())
        self.assertIsNone(older.poll())

    def test_another_network_is_not_joined(self):
        lb = self.start_lb("--network", "elsewhere")
        result = self.run_peer("status", "--network", "t-" + os.path.basename(self.tmp) + "x")
        self.assertIn("No load balancer of network", result.stderr)
        self.assertNotIn(f":{lb.port}", result.stdout + result.stderr)


if __name__ == "__main__":
    unittest.main()
