"""The menu in-process over a fake view of the peer: what a person types, what it says.

``Menu`` takes ``out=`` and ``read=``; ``FakeView`` stands in for ``PeerView`` (the
files on the network, my shares and uploads, the downloads started), so no socket,
thread or terminal is involved.
"""

import io
import unittest
from types import SimpleNamespace

from p2p.cli.menu import MENU, Menu
from p2p.core.bottleneck import Source
from p2p.net.download import Job, Progress, Result
from p2p.net.lb_client import Unreachable
from p2p.net.sharing import Upload

SONG = {"name": "song.mp3", "size": 12 << 20, "sha256": "ab" * 32, "holders": 2}
NOTES = {"name": "notes.txt", "size": 4, "sha256": "cd" * 32, "holders": 1}


class FakeView:
    """What the menu sees of a peer; records the downloads it is asked to start."""

    title, peer_id = "me 127.0.0.1:5000", "p-me"
    lb_address, lb_port = "127.0.0.1:6969", 6969

    def __init__(self, files=(SONG, NOTES)):
        self.network = list(files)
        self.lb_problem = None
        self.standbys = None  # 'A (up), B (down)' with a standby list
        self.started, self.jobs, self.ended, self.past = [], [], [], []
        self.upload_rows, self.mine, self.unfinished_rows = [], {}, []
        self.answering = {}  # address -> why nothing answers there
        self.upload_limit = 0
        self.stopped = False

    def sharing(self):
        return "1 file from shared/"

    def describe_lb(self):
        return self.lb_address + ("" if self.lb_problem is None else " (not answering; retrying)")

    def openness(self):
        return "Open to this machine only; downloads are shared too."

    def files(self, query=""):
        if self.lb_problem:
            raise Unreachable(self.lb_problem)
        return {"files": [f for f in self.network if query in f["name"]]}

    def names(self):
        return [f["name"] for f in self.network]

    def status(self):
        return {"policy": "least-connections", "peers": [
            {"id": "p-me", "name": "me", "host": "127.0.0.1", "port": 5000,
             "files": ["notes.txt"], "active": 0, "served": 3, "last_seen_s": 1.0}]}

    def shares(self):
        return [SimpleNamespace(name="notes.txt", size=4, sha256="cd" * 32)], 0

    def uploads(self):
        return self.upload_rows

    def uploading(self):
        return len(self.upload_rows)

    def have(self, sha256):
        return self.mine.get(sha256)

    def unfinished(self):
        return self.unfinished_rows

    def unreachable(self, where):
        return self.answering.get(where)

    def check_direct(self, where):
        if ":" not in where:
            raise ValueError("give the port too")

    def download(self, name, sha256=None, where=None):
        again = any(s[0] == name for s in self.started)
        self.started.append((name, sha256, where))
        if not again:
            self.jobs.append(Job(len(self.started), name, sha256, where, state="running"))
        return again

    def active(self):
        return [job for job in self.jobs if not job.ended]

    def take_ended(self):
        ended = [job for job in self.jobs if job.ended and not job.reported]
        for job in ended:
            job.reported = True
        return ended

    def history(self):
        return [(job, job.result is None or job.result.path != "gone")
                for job in self.jobs if job.ended]

    def wait_downloads(self, timeout=None):
        return True

    def stop_downloads(self, timeout):
        self.stopped = True

    def stop(self, job):
        job.state = "cancelled"


def finish(job, path="downloads/song.mp3"):
    job.state = "done"
    job.result = Result(path, job.name, 12 << 20, "ab" * 32, sources=["bob 127.0.0.1:7000"])


class MenuCase(unittest.TestCase):

    def run_menu(self, lines, view=None):
        """Run the menu over ``view`` with ``lines`` typed; the whole screen."""
        self.view = view or FakeView()
        out = io.StringIO()
        typed = list(lines)

        def read(prompt, complete=False, remember=False):
            out.write(prompt)
            if not typed:
                raise EOFError
            line = typed.pop(0)
            if callable(line):
                line = line()
            out.write(line + "\n")
            return line

        Menu(self.view, out=out, read=read).run()
        return out.getvalue()


class OptionTests(MenuCase):

    def test_banner_list_status_and_bad_choices(self):
        screen = self.run_menu(["1", "", "3", "9", "", "0"])
        self.assertIn("Peer me 127.0.0.1:5000 · sharing 1 file from shared/ · load balancer "
                      "127.0.0.1:6969", screen)
        self.assertRegex(screen, r"1\)\s+song\.mp3\s+12\.0 MiB\s+2\s+abababababab")
        self.assertIn("Option 2 takes a number from this list.", screen)
        self.assertIn("policy least-connections · 1 peer(s)", screen)
        self.assertRegex(screen, r"me 127\.0\.0\.1:5000 \(me\)\s+1  notes\.txt")
        self.assertIn("Type a number from 0 to 4", screen)
        self.assertIn("Nothing typed", screen)
        self.assertTrue(self.view.stopped)

    def test_download_by_number_after_the_list(self):
        self.run_menu(["1", "", "2", "2", "", "0", "y"])
        self.assertEqual(self.view.started, [("notes.txt", "cd" * 32, None)])

    def test_a_name_nobody_shares_offers_numbered_suggestions(self):
        screen = self.run_menu(["2", "song.mp", "1", "", "0", "y"])
        self.assertIn("Nobody shares 'song.mp' right now. Did you mean:\n 1) song.mp3", screen)
        self.assertEqual(self.view.started, [("song.mp3", None, None)])

    def test_a_file_i_have_is_not_downloaded(self):
        view = FakeView()
        view.mine["ab" * 32] = "shared/mine.mp3"
        screen = self.run_menu(["2", "song.mp3"], view)
        self.assertIn("Already have it: shared/mine.mp3 has the same content", screen)
        self.assertEqual(view.started, [])

    def test_versions_to_choose_from(self):
        other = dict(SONG, sha256="ef" * 32, size=5)
        screen = self.run_menu(["2", "song.mp3", "", "2"], FakeView([SONG, other]))
        self.assertIn("Several different files are shared as 'song.mp3':", screen)
        self.assertIn(" 2) 5 B, SHA-256 efefefefefefefef…, 2 holder(s)", screen)
        self.assertEqual(self.view.started, [("song.mp3", "ef" * 32, None)])

    def test_no_load_balancer_options_say_so_and_option_2_asks_for_the_peer(self):
        view = FakeView()
        view.lb_problem = "No load balancer answers at 127.0.0.1:6969."
        screen = self.run_menu(["3", "2", "song.mp3", "127.0.0.1:7000"], view)
        self.assertIn("Options 2 (naming a peer), 4 and 0 still work", screen)
        self.assertIn("(to start one: python load_balancer.py --port 6969)", screen)
        self.assertEqual(view.started, [("song.mp3", None, "127.0.0.1:7000")])

    def test_what_ended_is_said_once_when_the_menu_is_shown_again(self):
        view = FakeView()
        screen = self.run_menu(["2", "song.mp3", "", lambda: finish(view.jobs[0]) or "3", "3"],
                               view)
        self.assertEqual(screen.count("Saved downloads/song.mp3 (12.0 MiB, SHA-256 verified) "
                                      "from bob 127.0.0.1:7000."), 1)

    def test_end_of_input_waits_for_the_downloads(self):
        screen = self.run_menu(["2", "song.mp3", ""])
        self.assertIn("Waiting for 1 download to finish", screen)

    def test_the_progress_line_above_the_menu(self):
        view = FakeView()
        screen = self.run_menu(["2", "song.mp3", "", lambda: setattr(
            view.jobs[0], "progress", Progress("song.mp3", 6 << 20, 12 << 20, 2 << 20,
                                               "127.0.0.1:7000")) or "3"], view)
        self.assertIn("Downloading: song.mp3 50 % 2.0 MiB/s from 127.0.0.1:7000", screen)

    def test_option_4_shows_each_holders_rate_and_what_limits_the_download(self):
        view = FakeView()
        each = (Source("127.0.0.1:7000", 4 << 20, 4 << 20), Source("10.0.0.8:7001", 3 << 20))
        limit = "limited by the holders' upload limits (2 × 4.0 MiB/s)"
        screen = self.run_menu(["2", "song.mp3", "", lambda: setattr(
            view.jobs[0], "progress", Progress("song.mp3", 6 << 20, 12 << 20, 7 << 20,
                                               "127.0.0.1:7000", sources=2, each=each,
                                               limit=limit)) or "4"], view)
        self.assertIn("Downloading: song.mp3 50 % 7.0 MiB/s from 2 peers, limited by", screen)
        self.assertIn("Downloads running or waiting: 1\n"
                      "  song.mp3 50 % 7.0 MiB/s from 2 peers, " + limit + "\n"
                      "    127.0.0.1:7000  4.0 MiB/s\n"
                      "    10.0.0.8:7001   3.0 MiB/s\n", screen)

    def test_option_3_shows_how_fast_each_peer_downloads_and_why(self):
        view = FakeView()
        status = view.status()
        status["peers"][0]["partial"] = [
            {"name": "song.mp3", "sha256": "ab" * 32, "size": 12 << 20, "done": 6 << 20,
             "rate": 7 << 20, "limit": "limited by this machine's link",
             "sources": [{"address": "127.0.0.1:7000", "rate": 4 << 20},
                         {"address": "10.0.0.8:7001", "rate": 3 << 20}]},
            {"name": "notes.txt", "sha256": "cd" * 32, "size": 4, "done": 0}]
        view.status = lambda: status
        screen = self.run_menu(["3"], view)
        self.assertIn("downloading song.mp3 50 %, notes.txt 0 %", screen)
        self.assertIn("\nDownloads in progress:\n  me 127.0.0.1:5000: song.mp3 50 %, 7.0 MiB/s "
                      "from 127.0.0.1:7000 4.0 MiB/s, 10.0.0.8:7001 3.0 MiB/s, limited by "
                      "this machine's link\n", screen)
        self.assertNotIn("notes.txt 0 %,", screen)  # an older peer says no rate: no line

    def test_option_5_stops_a_stalled_download_and_shows_only_while_one_runs(self):
        view = FakeView()
        screen = self.run_menu(["5", "2", "song.mp3", "", lambda: setattr(
            view.jobs[0], "progress", Progress("song.mp3", 6 << 20, 12 << 20, 0, None,
                                               waiting="stalled: no holder of song.mp3 is "
                                                       "online; waiting", stalled=True))
            or "5", "1", "5"], view)
        before, during = screen.split("Downloading 'song.mp3' in the background", 1)
        self.assertIn("Choose 0-4: 5\nType a number from 0 to 4", before)
        self.assertNotIn("5) Stop a download", before)
        self.assertIn(" 5) Stop a download\n 0) Quit\nChoose 0-5: ", during)
        self.assertIn(" 1) song.mp3 50 % stalled: no holder of song.mp3 is online", during)
        self.assertIn("Stopping 'song.mp3'; its partial file is kept", during)
        self.assertEqual("cancelled", view.jobs[0].state)
        self.assertTrue(during.rstrip().endswith("Type a number from 0 to 4 and press Enter.\n\n"
                                                 + MENU.format(stop="") + "\nChoose 0-4:"),
                        during[-300:])


class NewcomerTests(MenuCase):
    """Issue 20's menu items: each fails without its fix."""

    def test_a_named_peer_that_is_not_there_is_said_at_once(self):
        view = FakeView()
        view.answering["127.0.0.1:1"] = "Nothing answers at 127.0.0.1:1 (connection refused)."
        screen = self.run_menu(["2", "song.mp3", "127.0.0.1:1"], view)
        self.assertIn("Nothing answers at 127.0.0.1:1 (connection refused).\n", screen)
        self.assertEqual(view.started, [])

    def test_without_a_load_balancer_a_peer_that_is_not_there_is_said_at_once(self):
        view = FakeView()
        view.lb_problem = "No load balancer answers at 127.0.0.1:6969."
        view.answering["127.0.0.1:1"] = "Nothing answers at 127.0.0.1:1 (connection refused)."
        screen = self.run_menu(["2", "song.mp3", "127.0.0.1:1"], view)
        self.assertIn("Nothing answers at 127.0.0.1:1", screen)
        self.assertEqual(view.started, [])

    def test_a_number_works_before_option_1_and_the_prompt_says_so(self):
        screen = self.run_menu(["2", "1", ""])
        self.assertIn("File name or a number of option 1's list, Tab completes: 1", screen)
        self.assertIn("File 1 of option 1's list: song.mp3", screen)
        self.assertEqual(self.view.started, [("song.mp3", "ab" * 32, None)])

    def test_a_number_past_the_list_and_a_file_named_like_a_number(self):
        screen = self.run_menu(["2", "7"])
        self.assertIn("There is no file 7 in option 1's list (2 files on the network)", screen)
        self.assertEqual(self.view.started, [])
        named = dict(NOTES, name="7")
        self.run_menu(["2", "7", ""], FakeView([SONG, named]))
        self.assertEqual(self.view.started, [("7", None, None)])

    def test_option_4_lists_each_ended_download_once_with_failures_and_deleted_files(self):
        view = FakeView()
        for name in ("song.mp3", "gone.bin", "bad.bin"):
            view.download(name)
        finish(view.jobs[0])
        finish(view.jobs[1], path="gone")
        view.jobs[2].state = "failed"
        view.jobs[2].error = Unreachable("No holder of 'bad.bin' answers.")
        screen = self.run_menu(["4", "3"], view)
        self.assertIn("Downloads ended this session: 3", screen)
        self.assertEqual(screen.count("Saved downloads/song.mp3"), 1)  # above the menu
        self.assertIn("song.mp3: saved as downloads/song.mp3 (12.0 MiB)", screen)
        self.assertIn("gone.bin: saved as gone, since deleted", screen)
        self.assertIn("bad.bin: failed: No holder of 'bad.bin' answers.", screen)

    def test_uploads_name_the_peer(self):
        view = FakeView()
        upload = Upload(1, "127.0.0.1:7000", "song.mp3", 12 << 20, size=12 << 20, sent=1 << 20)
        view.upload_rows = [(upload, "bob 127.0.0.1:7000"), (upload, None)]
        screen = self.run_menu(["4"], view)
        self.assertIn("song.mp3 to bob 127.0.0.1:7000: 1.0 MiB / 12.0 MiB", screen)
        self.assertIn("song.mp3 to 127.0.0.1:7000: 1.0 MiB / 12.0 MiB", screen)

    def test_the_quit_question_says_what_quitting_does(self):
        view = FakeView()
        view.download("song.mp3")
        screen = self.run_menu(["0", "n", "0", "y"], view)
        self.assertIn("1 download is running: quitting stops it, and it resumes where it "
                      "stopped when you start this peer again. Quit now? [y/N] n", screen)
        view.download("notes.txt")
        view.upload_rows = [(None, None)] * 2
        screen = self.run_menu(["0", "y"], view)
        self.assertIn("2 downloads are running: quitting stops them, and they resume where "
                      "they stopped when you start this peer again. 2 uploads to other peers "
                      "are running: quitting cuts them off, and those peers carry on from "
                      "another holder if there is one. Quit now? [y/N] ", screen)

    def test_a_standby_list_is_in_the_banner_and_option_3(self):
        view = FakeView()
        view.standbys = "127.0.0.1:6969 (up), 127.0.0.2:6969 (down)"
        out = self.run_menu(["3", "0"], view)
        self.assertIn("· load balancers 127.0.0.1:6969", out)
        self.assertIn("Load balancers of the list: 127.0.0.1:6969 (up), 127.0.0.2:6969 (down)",
                      out)

    def test_the_banner_says_the_upload_limit(self):
        view = FakeView()
        self.assertNotIn("--upload-limit", self.run_menu([], view))
        view.upload_limit = 2 << 20
        self.assertIn("Uploads limited to 2.0 MiB/s in all (--upload-limit).",
                      self.run_menu([], view))


if __name__ == "__main__":
    unittest.main()
