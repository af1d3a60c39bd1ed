"""The interactive peer as a person sees it: through a pseudo-terminal and through piped stdin."""

import codecs
import fcntl
import hashlib
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import time
import unittest

from tests.support import (PEER, ROOT, ProcessTestCase, clean_env, free_port, http_json, same_bytes,
                           wait_for, wait_partial, write_random)

MiB = 1 << 20
POLL_S = 0.3


def take_terminal():
    """In the child, after setsid: make the pty its controlling terminal, so ^C is SIGINT."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class TerminalSession:
    """``peer.py`` on a pseudo-terminal: type lines, wait for text, with deadlines."""

    def __init__(self, args, cwd):
        master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, PEER, *args], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=cwd, env=clean_env(cwd), close_fds=True,
                                     start_new_session=True, preexec_fn=take_terminal)
        os.close(slave)
        self.master = master
        self.output = ""
        self.pos = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def send(self, line):
        os.write(self.master, (line + "\n").encode())

    def expect(self, pattern, timeout=15.0):
        """Read until ``pattern`` (a regex) matches the output after the last match."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.output[self.pos:])
            if match:
                self.pos += match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout:.0f} s; screen:\n"
                                     f"{self.output[self.pos:][-2000:]}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError(f"the peer exited; screen:\n{self.output[-2000:]}")
                self.output += self.decoder.decode(data)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


class MenuTests(ProcessTestCase):

    def setUp(self):
        super().setUp()
        self.lb = self.start_lb("--heartbeat", "1")
        self.song = os.path.join(self.folder("holder", "shared"), "song.mp3")
        write_random(self.song, 12 * MiB)
        self.holder = self.start_peer(self.lb.port, "holder", "--upload-limit", "4M",
                                      wait_files=["song.mp3"])

    def menu_args(self, name):
        return ["--lb", f"127.0.0.1:{self.lb.port}", "--host", "127.0.0.1", "--name", name,
                "--shared", self.folder(name, "shared"), "--downloads", self.folder(name, "downloads")]

    def start_download(self, name):
        """A terminal menu peer 'me' that has just been asked for ``name`` with option 2."""
        me = TerminalSession(self.menu_args("me"), self.tmp)
        self.addCleanup(me.close)
        me.expect(r"Choose 0-[45]: ")
        me.send("2")
        me.expect(r"File name or a number of option 1's list, Tab completes: ")
        me.send(name)
        me.expect(r"blank: the least-loaded holder\): ")
        me.send("")
        me.expect(rf"Downloading {re.escape(repr(name))} in the background")
        return me

    def until(self, session, pattern, timeout=30.0):
        """Ask for option 4 (the menu is shown again after it) until ``pattern`` shows up:
        what ends in the background is reported when the menu is shown. The session
        must be at the menu's prompt; it is left there."""
        deadline = time.monotonic() + timeout
        while True:
            start = session.pos
            session.send("4")
            session.expect(r"Choose 0-[45]: ")
            match = re.search(pattern, session.output[start:session.pos])
            if match:
                return match
            self.assertLess(time.monotonic(), deadline, f"no {pattern!r} within {timeout:.0f} s")
            time.sleep(POLL_S)  # a person's pace: the peer is not kept busy redrawing

    def piped(self, name, lines, timeout=60):
        return subprocess.run([sys.executable, PEER, *self.menu_args(name)], input=lines,
                              capture_output=True, text=True, timeout=timeout, cwd=self.tmp,
                              env=clean_env(self.tmp))

    def test_piped_menu_lists_shows_status_and_quits_unregistered(self):
        with open(os.path.join(self.folder("me", "shared"), "mine.txt"), "w") as f:
            f.write("mine")
        result = self.piped("me", "1\n\n3\n4\n9\n\n0\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout
        banner = re.search(r"Peer me 127\.0\.0\.1:(\d+) · sharing 1 file from .*shared/ · "
                           rf"load balancer 127\.0\.0\.1:{self.lb.port}", out)
        self.assertTrue(banner, out)
        self.assertIn(" 2) Download a file", out)
        self.assertRegex(out, r"\d\)\s+song\.mp3\s+12\.0 MiB\s+1 ")  # option 1: #, name, size,
        self.assertRegex(out, r"\d\)\s+mine\.txt\s+4 B\s+1 ")  # holders
        self.assertIn("policy least-connections · 2 peer(s)", out)  # option 3
        self.assertRegex(out, rf"me 127\.0\.0\.1:{banner.group(1)} \(me\)\s+1  mine\.txt")
        self.assertRegex(out, r"Sharing 1 files? from")  # option 4
        self.assertIn("Uploads in progress: 0", out)
        self.assertIn("Type a number from 0 to 4", out)  # 9
        self.assertIn("Nothing typed", out)  # empty line
        self.assertRegex(out, r"Bye: me 127\.0\.0\.1:\d+ left the network; the load balancer has "
                              r"forgotten it\.\n$")
        self.assertEqual(result.stderr, "")  # no log lines over the menu
        self.assertIsNone(self.peer_entry(self.lb.port, int(banner.group(1))))

    def test_piped_download_by_number_then_a_suggestion_by_number_then_the_end_waits(self):
        result = self.piped("me", "1\n\n2\n1\n\n2\nsong.mp\n1\n\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Option 2 takes a number from this list.", result.stdout)
        self.assertIn("File name or number (1-1), Tab completes: ", result.stdout)
        self.assertIn("Downloading 'song.mp3' in the background", result.stdout)
        self.assertIn("Nobody shares 'song.mp' right now. Did you mean:\n 1) song.mp3\n"
                      "Which one (1-1, blank for none): ", result.stdout)
        self.assertIn("'song.mp3' is being downloaded already", result.stdout)
        self.assertIn("Waiting for 1 download to finish", result.stdout)
        self.assertIn("SHA-256 verified", result.stdout)
        self.assertTrue(same_bytes(self.song, os.path.join(self.tmp, "me", "downloads", "song.mp3")))

    def test_two_files_under_one_name_let_the_person_choose(self):
        contents = {}
        for who in ("x", "y"):
            path = os.path.join(self.folder(who, "shared"), "dup.txt")
            with open(path, "w") as f:
                f.write(f"version from {who}")
            self.start_peer(self.lb.port, who, wait_files=["dup.txt"])
            with open(path, "rb") as f:
                contents[hashlib.sha256(f.read()).hexdigest()[:16]] = f"version from {who}"
        result = self.piped("me", "2\ndup.txt\n\n2\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Several different files are shared as 'dup.txt':", result.stdout)
        second = re.search(r" 2\) 14 B, SHA-256 ([0-9a-f]{16})…", result.stdout).group(1)
        with open(os.path.join(self.tmp, "me", "downloads", "dup.txt")) as f:
            self.assertEqual(f.read(), contents[second])

    def test_end_of_input_at_any_question_quits_cleanly(self):
        for lines in ("", "1\n", "2\n", "2\nsong.mp3\n"):
            result = self.piped("me", lines)
            self.assertEqual(result.returncode, 0, (lines, result.stderr))
            self.assertNotIn("Traceback", result.stdout + result.stderr)
            self.assertIn("Choose 0-4:", result.stdout)

    def test_a_file_i_share_myself_is_not_downloaded_again(self):
        shutil.copyfile(self.song, os.path.join(self.folder("me", "shared"), "mine.mp3"))
        result = self.piped("me", "2\nsong.mp3\n\n0\n")  # same bytes, other name
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"Already have it: .*mine\.mp3 has the same content")
        self.assertEqual(os.listdir(os.path.join(self.tmp, "me", "downloads")), [])

    def test_typos_get_a_useful_answer(self):
        result = self.piped("me", "2\nSONG.MP3\n\n2\nsong.mp3\nnonsense-host\n"
                                  "2\nsong.mp3\n127.0.0.1:1\n2\n../etc/passwd\nQ\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Nobody shares 'SONG.MP3' right now. Did you mean:\n 1) song.mp3", result.stdout)
        self.assertIn("Nothing downloaded.", result.stdout)
        self.assertIn("There is no host called 'nonsense-host'", result.stdout)
        self.assertIn("least-loaded holder): Nothing answers at 127.0.0.1:1 (connection "
                      "refused)", result.stdout)  # at once, not after the next Enter
        self.assertIn("The file name has an empty, '.' or '..' part.", result.stdout)

    def test_a_missing_shared_folder_is_an_error_not_a_new_folder(self):
        missing = os.path.join(self.tmp, "typo")
        result = subprocess.run([sys.executable, PEER, "--lb", f"127.0.0.1:{self.lb.port}",
                                 "--shared", missing], capture_output=True, text=True,
                                timeout=30, env=clean_env(self.tmp), cwd=self.tmp)
        self.assertEqual(result.returncode, 2)
        self.assertIn("there is no such folder", result.stderr)
        self.assertFalse(os.path.exists(missing))

    def test_end_of_input_quits_cleanly(self):
        result = self.piped("me", "")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Choose 0-4:", result.stdout)

    def test_terminal_download_progress_and_holder_active_count(self):
        # Slowed, so that the upload is still running while options 3 and 4 look at it.
        holder = TerminalSession(self.menu_args("holder2") + ["--upload-limit", "2M"], self.tmp)
        self.addCleanup(holder.close)
        shutil.copyfile(self.song, os.path.join(self.tmp, "holder2", "shared", "song.mp3"))
        holder.expect(r"Choose 0-[45]: ")
        self.holder.send_signal(signal.SIGTERM)  # leave the terminal holder the only one
        self.holder.wait(10)
        wait_for(lambda: len(self.status(self.lb.port)["peers"]) == 1, what="one holder")

        me = self.start_download("song.mp3")
        me.expect(r"Choose 0-[45]: ")
        self.until(me, r"Downloads running or waiting: 1\s+song\.mp3 \d+ % [\d.]+ \w?i?B/s from "
                       r"127\.0\.0\.1:\d+(.|\n)*Downloading: song\.mp3 \d+ % .* from "
                       r"127\.0\.0\.1:\d+\r?\n 1\) List")  # how far it is, while the menu works

        holder.send("3")
        row = holder.expect(r"\(me\)\s+1  song\.mp3\s+(\d+)")
        self.assertEqual(row.group(1), "1")  # one active transfer while it uploads
        holder.expect(r"Choose 0-[45]: ")
        holder.send("4")
        holder.expect(r"Uploads in progress: 1\s+(pieces? [\d-]+ of )?song\.mp3 to me 127\.0\.0\.1:\d+")
        holder.expect(r"Choose 0-[45]: ")
        holder.send("0")
        holder.expect(r"1 upload to other peers is running: quitting cuts it off, .* Quit now\? "
                      r"\[y/N\] ")
        holder.send("n")
        holder.expect(r"Choose 0-[45]: ")

        self.until(me, r"Saved .*song\.mp3 \(12\.0 MiB, SHA-256 verified\)")
        self.assertTrue(same_bytes(self.song, os.path.join(self.tmp, "me", "downloads", "song.mp3")))
        me.send("0")
        self.assertEqual(me.proc.wait(10), 0)

    def test_ctrl_c_at_the_menu_asks_before_stopping_downloads_which_resume_later(self):
        me = self.start_download("song.mp3")
        me.expect(r"Choose 0-[45]: ")
        downloads = os.path.join(self.tmp, "me", "downloads")
        wait_partial(downloads, 1 * MiB)
        os.write(me.master, b"\x03")  # Ctrl-C, through the terminal
        me.expect(r"1 download is running: quitting stops it, and it resumes where it stopped "
                  r"when you start this peer again\. Quit now\? \[y/N\] ")
        me.send("n")
        me.expect(r"Choose 0-[45]: ")
        os.write(me.master, b"\x03")
        me.expect(r"Quit now\? \[y/N\] ")
        me.send("y")
        me.expect(r"Bye: me ")
        self.assertEqual(me.proc.wait(10), 0)
        self.assertTrue([n for n in os.listdir(downloads) if n.endswith(".part")])
        self.assertFalse(os.path.exists(os.path.join(downloads, "song.mp3")))

        later = TerminalSession(self.menu_args("me"), self.tmp)
        self.addCleanup(later.close)
        later.expect(r"Resume now\? \[Y/n\] ")
        later.send("n")
        later.expect(r"Choose 0-[45]: ")
        later.send("4")
        later.expect(r"Unfinished downloads: 1 .*\s+song\.mp3  \d+\.\d %  \([\d.]+ \w?i?B of 12\.0 "
                     r"MiB\)")
        later.expect(r"Choose 0-[45]: ")
        os.write(later.master, b"\x04")  # Ctrl-D at the prompt quits
        self.assertEqual(later.proc.wait(10), 0)

        status = self.run_peer("status", "--lb", f"127.0.0.1:{self.lb.port}",
                               "--downloads", downloads)
        self.assertRegex(status.stdout, r"Unfinished downloads in .*downloads/ .*\n"
                                        r"  song\.mp3  \d+\.\d %")
        again = TerminalSession(self.menu_args("me"), self.tmp)  # the menu offers to resume
        self.addCleanup(again.close)
        again.expect(r"1 unfinished download from before:\s+song\.mp3  \d+\.\d %")
        again.expect(r"Resume now\? \[Y/n\] ")
        again.send("")
        again.expect(r"Choose 0-[45]: ")
        self.until(again, r"Saved .*song\.mp3 \(12\.0 MiB, SHA-256 verified, resumed at ")
        self.assertTrue(same_bytes(self.song, os.path.join(downloads, "song.mp3")))
        again.send("0")
        self.assertEqual(again.proc.wait(10), 0)

    def test_clean_deletes_unfinished_downloads(self):
        downloads = self.folder("me", "downloads")
        with open(os.path.join(downloads, ".song.mp3.0123456789abcdef.part"), "wb") as f:
            f.write(b"x" * 2048)
        with open(os.path.join(downloads, "kept.txt"), "w") as f:
            f.write("kept")
        result = self.run_peer("clean", "--downloads", downloads)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"Deleted 1 unfinished download \(2\.0 KiB\) from .*")
        self.assertEqual(os.listdir(downloads), ["kept.txt"])


    def test_tab_completes_names_and_ctrl_d_at_a_question_goes_back_to_the_menu(self):
        name = "Café déjà vu — 日本語 file.txt"
        with open(os.path.join(self.folder("holder", "shared"), name), "w") as f:
            f.write("wide")
        wait_for(lambda: name in self.peer_files(self.lb.port, self.holder.port),
                 what="the new file on the network")
        me = TerminalSession(self.menu_args("me"), self.tmp)
        self.addCleanup(me.close)
        me.expect(r"Choose 0-[45]: ")
        me.send("2")
        me.expect(r"Tab completes: ")
        os.write(me.master, b"Caf\t")
        me.expect(re.escape(name))
        me.send("")
        me.expect(r"blank: the least-loaded holder\): ")
        os.write(me.master, b"\x04")  # Ctrl-D at a question: back to the menu, still running
        me.expect(r"Cancelled\.")
        me.expect(r"Choose 0-[45]: ")
        me.send("1")
        me.expect(r"Filter \(blank for all\): ")
        me.send("")
        me.expect(r"1\)\s+Café déjà vu — 日本語 file\.txt  4 B\s+1 ")  # wide letters aligned
        me.expect(r"2\)\s+song\.mp3\s+12\.0 MiB")
        me.expect(r"Choose 0-[45]: ")
        me.send("0")
        me.expect(r"Bye: me 127\.0\.0\.1:\d+ left the network")
        self.assertEqual(me.proc.wait(10), 0)

    def test_the_banner_says_to_whom_it_is_open_and_no_reshare_keeps_downloads_private(self):
        me = TerminalSession(self.menu_args("me") + ["--no-reshare"], self.tmp)
        self.addCleanup(me.close)
        port = int(me.expect(r"Peer me 127\.0\.0\.1:(\d+) ").group(1))
        me.expect(r"Open to this machine only; downloads stay private \(--no-reshare\)\.")
        me.expect(r"Choose 0-[45]: ")
        me.send("2")
        me.expect(r"Tab completes: ")
        me.send("song.mp3")
        me.expect(r"blank: the least-loaded holder\): ")
        me.send("")
        me.expect(r"Choose 0-[45]: ")
        self.until(me, r"Saved .*song\.mp3 ")
        me.send("4")
        me.expect(r"Sharing 0 files from me/shared/:\s+Uploads")  # not "and 1 downloaded"
        self.assertEqual(self.peer_files(self.lb.port, port), set())

    def test_closing_the_window_twice_still_unregisters(self):
        # Right after the prompt, a signal can come before the read blocks: the menu must
        # not wait for the next Enter (it did, about one time in four: hence the tries).
        for attempt in range(4):
            with self.subTest(attempt=attempt):
                me = TerminalSession(self.menu_args("me"), self.tmp)
                self.addCleanup(me.close)
                port = int(me.expect(r"Peer me 127\.0\.0\.1:(\d+) ").group(1))
                me.expect(r"Choose 0-[45]: ")
                self.assertIsNotNone(self.peer_entry(self.lb.port, port))
                me.proc.send_signal(signal.SIGHUP)
                me.proc.send_signal(signal.SIGHUP)
                self.assertEqual(me.proc.wait(10), 0)
                self.assertIsNone(self.peer_entry(self.lb.port, port))  # forgotten at once

    def test_a_peer_address_given_as_the_load_balancer_is_named_as_such(self):
        wrong = f"127.0.0.1:{self.holder.port}"
        for command in ("list", "status"):
            result = self.run_peer(command, "--lb", wrong)
            self.assertEqual(result.returncode, 1)
            self.assertEqual(result.stderr, f"peer.py: {wrong} is a peer, not a load balancer; the "
                                            f"load balancer is 127.0.0.1:{self.lb.port}. Give that "
                                            "to --lb.\n")


class LoadBalancerGoneTests(ProcessTestCase):

    def test_unreachable_lb_is_explained_local_options_work_and_it_registers_again(self):
        lb = self.start_lb("--heartbeat", "1")
        args = ["--lb", f"127.0.0.1:{lb.port}", "--host", "127.0.0.1", "--name", "me",
                "--no-lb-start",
                "--shared", self.folder("me", "shared"), "--downloads", self.folder("me", "downloads")]
        me = TerminalSession(args, self.tmp)
        self.addCleanup(me.close)
        port = int(me.expect(r"Peer me 127\.0\.0\.1:(\d+) ").group(1))
        me.expect(r"Choose 0-[45]: ")
        lb.kill()
        lb.wait(10)
        me.send("3")
        me.expect(rf"No load balancer answers at 127\.0\.0\.1:{lb.port} .*Options 2 \(naming a "
                  r"peer\), 4 and 0 still work")
        me.expect(r"Choose 0-[45]: ")
        me.send("1")
        me.expect(r"Filter \(blank for all\): ")
        me.send("")
        me.expect(r"No load balancer answers")
        me.expect(r"Choose 0-[45]: ")
        me.send("4")
        me.expect(r"Uploads in progress: 0")
        again = self.start_lb("--heartbeat", "1", port=lb.port)
        wait_for(lambda: self.peer_entry(again.port, port), timeout=10,
                 what="the peer to register with the new load balancer")
        me.expect(r"Choose 0-[45]: ")
        me.send("3")
        me.expect(rf"127\.0\.0\.1:{port} \(me\)")
        me.expect(r"Choose 0-[45]: ")
        me.send("0")
        self.assertEqual(me.proc.wait(10), 0)


class FreshCloneTests(unittest.TestCase):
    """The README's peer command, run in a fresh clone, so a missing file fails the suite."""

    def test_readme_peer_command_in_a_fresh_clone(self):
        if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
            self.skipTest("needs git and a git checkout")
        tmp = tempfile.mkdtemp(prefix="p2p-clone-")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        clone = os.path.join(tmp, "p2p")
        subprocess.run(["git", "clone", "-q", ROOT, clone], check=True, timeout=60)
        port = free_port()
        env = dict(clean_env(tmp), P2P_LB=f"127.0.0.1:{port}")  # the README's peer command, off 6969
        result = subprocess.run([sys.executable, "peer.py"], input="3\n0\n", capture_output=True,
                                text=True, cwd=clone, env=env, timeout=60)
        _, status = http_json(port, "GET", "/status")
        os.kill(status["pid"], signal.SIGTERM)  # the load balancer it started for us
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("started one in the background", result.stderr)
        self.assertRegex(result.stdout, r"Peer .* · sharing 0 files from shared/ · load balancer")
        self.assertRegex(result.stdout, r"\(me\)")
        self.assertEqual(status["peers"], [])


if __name__ == "__main__":
    unittest.main()
