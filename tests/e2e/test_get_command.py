"""``peer.py get`` and ``serve`` as a script sees them: a peer that is not there, progress
in a pipe, ``-o`` and ``-q``, and a second peer on a folder that is already shared."""

import os
import re
import unittest

from tests.support import ProcessTestCase, read_line, same_bytes, write_random

MiB = 1 << 20
PROGRESS_LINE = re.compile(r"^\s*\d+\.\d%  [\d.]+ \w?i?B / [\d.]+ \w?i?B  ")


class GetTests(ProcessTestCase):

    def setUp(self):
        super().setUp()
        self.lb = self.start_lb("--heartbeat", "1", "--network", f"get-{os.getpid()}")
        self.song = os.path.join(self.folder("holder", "shared"), "song.mp3")
        write_random(self.song, 8 * MiB)
        self.holder = self.start_peer(self.lb.port, "holder", "--upload-limit", "4M",
                                      wait_files=["song.mp3"])

    def test_a_named_peer_that_is_not_there_is_said_so(self):
        result = self.get(self.lb.port, "song.mp3", self.folder("me", "downloads"),
                          "--from", "127.0.0.1:1")
        self.assertEqual(result.returncode, 1)
        self.assertIn("peer.py: Nothing answers at 127.0.0.1:1 (connection refused)",
                      result.stderr)
        self.assertNotIn("does not share", result.stderr)

    def test_progress_in_a_pipe_then_o_saves_under_that_name_and_never_over_another(self):
        downloads = self.folder("me", "downloads")
        out = os.path.join(self.tmp, "mine.mp3")
        result = self.get(self.lb.port, "song.mp3", downloads, "-o", out)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = [line for line in result.stderr.splitlines() if PROGRESS_LINE.match(line)]
        self.assertGreaterEqual(len(lines), 2, result.stderr)  # the first and the last
        self.assertTrue(lines[-1].startswith("100.0%"), lines)
        self.assertIn(f"Saved {out} (8.0 MiB, SHA-256 verified)", result.stdout)
        self.assertTrue(same_bytes(self.song, out))
        self.assertEqual(os.listdir(downloads), [])

        other = os.path.join(self.tmp, "other.mp3")
        with open(other, "w") as f:
            f.write("mine")
        result = self.get(self.lb.port, "song.mp3", downloads, "-o", other)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"{other} exists and is a different file; it is not overwritten",
                      result.stderr)
        with open(other) as f:
            self.assertEqual(f.read(), "mine")
        again = self.get(self.lb.port, "song.mp3", downloads, "-o", out)
        self.assertIn(f"Already have it: {out} has the same content", again.stdout)

    def test_quiet_says_nothing_but_errors(self):
        result = self.get(self.lb.port, "song.mp3", self.folder("me", "downloads"), "-q")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))
        missing = self.get(self.lb.port, "nothing.bin", self.folder("me", "downloads"), "-q")
        self.assertEqual(missing.returncode, 1)
        self.assertIn("nothing.bin", missing.stderr)

    def test_serve_says_its_upload_limit(self):
        lines = [read_line(self.holder.stdout) for _ in range(3)]  # after 'listening on'
        self.assertEqual(lines[2], "Uploads limited to 4.0 MiB/s in all (--upload-limit).\n")

    def test_a_second_peer_on_a_shared_folder_is_refused(self):
        shared = os.path.join(self.tmp, "holder", "shared")
        result = self.run_peer("serve", "--lb", f"127.0.0.1:{self.lb.port}", "--host",
                               "127.0.0.1", "--shared", shared,
                               "--downloads", self.folder("second", "downloads"))
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"peer.py: Another peer on this machine already shares {shared}; give "
                      "each peer its own --shared and --downloads folders.", result.stderr)
        self.assertEqual(len(self.status(self.lb.port)["peers"]), 1)
        self.assertNotIn(".p2p-peer.lock", self.peer_files(self.lb.port, self.holder.port))


if __name__ == "__main__":
    unittest.main()
