"""Tests of p2p/cli's pure helpers: name suggestions, the command line, progress lines,
screen widths, and where ``get -o`` puts a file.
"""

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import unittest
from dataclasses import replace

from p2p.cli import args as cli_args
from p2p.cli.output import AlreadyThere, check_target, place, target_path
from p2p.cli.progress import PLAIN_EVERY_S, PLAIN_STILL_S, ProgressPrinter, progress_line
from p2p.cli.text import (downloading_line, fit_names, quit_question, suggest_names, table,
                          text_width)
from p2p.core.bottleneck import Source
from p2p.core.clock import FakeClock
from p2p.net.download import DownloadError, Progress, Result


class SuggestNamesTests(unittest.TestCase):
    def test_case_then_containing_then_alike_and_never_the_name_itself(self):
        names = ["notes.txt", "photos/2024/trip.txt", "hello.txt", "Hello.TXT.bak", "bob.txt"]
        self.assertEqual(suggest_names("trip.txt", names)[0], "photos/2024/trip.txt")
        self.assertEqual(suggest_names("HELLO.TXT", names)[0], "hello.txt")
        self.assertEqual(suggest_names("hello.txt", names), [])
        self.assertIn("notes.txt", suggest_names("notse.txt", names))
        self.assertEqual(suggest_names("zzzzzz", names), [])


def usage_error(argv):
    """parse_args(argv)'s exit status and what it printed on standard error."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli_args.parse_args(argv)
        except SystemExit as e:
            return e.code, err.getvalue()
    return None, err.getvalue()


class CommandLineTests(unittest.TestCase):
    def test_the_command_may_follow_options_but_an_option_value_is_not_a_command(self):
        command_first = cli_args.command_first
        self.assertEqual(command_first([]), ["menu"])
        self.assertEqual(command_first(["--lb", "h:1", "status"]), ["status", "--lb", "h:1"])
        self.assertEqual(command_first(["--shared", "status"]), ["menu", "--shared", "status"])
        self.assertEqual(command_first(["get", "list"]), ["get", "list"])
        self.assertEqual(command_first(["-h"]), ["-h"])
        self.assertEqual(command_first(["--lb", "h:1", "help", "get"]), ["get", "--help"])
        self.assertEqual(command_first(["get", "-o", "list", "x"]), ["get", "-o", "list", "x"])

    def test_a_wrong_option_shows_the_usage_of_its_command(self):
        code, err = usage_error(["list", "--bogus"])
        self.assertEqual(code, 2)
        self.assertTrue(err.startswith("usage: peer.py list "), err)
        self.assertIn("peer.py list: error: unrecognized arguments: --bogus", err)
        code, err = usage_error(["list", "--shared", "x"])
        self.assertIn("peer.py list: error: --shared is an option of 'menu' and 'serve'", err)

    def test_help_lists_help(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit):
            cli_args.parse_args(["--help"])
        self.assertRegex(out.getvalue(), r"\n    help +the options of a command")

    def test_get_output_and_quiet(self):
        args = cli_args.parse_args(["get", "a.txt", "-o", "b.txt", "-q"])
        self.assertEqual((args.output, args.quiet), ("b.txt", True))
        for argv, said in ((["get", "a", "b", "-o", "c"], "-o names one file"),
                           (["get", "Photos/", "-o", "c"], "-o names one file"),
                           (["get", "a", "-o", "-"], "-o -: standard output is not supported"),
                           (["get", "a", "-o", "/no/such/dir/x"], "-o /no/such/dir/x: there is no folder")):
            code, err = usage_error(argv)
            self.assertEqual(code, 2, argv)
            self.assertIn("peer.py get: error: " + said, err)


def progress(done, total=100, source="a:1", waiting="", finished=False):
    return Progress("f", done, total, 10.0, source, finished=finished, waiting=waiting)


class StatusLineTests(unittest.TestCase):
    def test_a_stalled_download_says_so_in_option_3_and_status(self):
        p = {"name": "f.bin", "size": 200, "done": 74}
        self.assertEqual("f.bin 37 %", downloading_line(p))
        self.assertEqual("f.bin 37 % (stalled)", downloading_line({**p, "stalled": True}))


class ProgressTests(unittest.TestCase):
    def test_no_source_yet_says_connecting_not_an_empty_from(self):
        self.assertTrue(progress_line(progress(7, source=None), 7.0).endswith("connecting"))
        self.assertTrue(progress_line(progress(7), 7.0).endswith("from a:1"))

    def test_the_line_says_what_limits_it_then_each_holders_rate(self):
        p = Progress("f", 50, 100, 7 << 20, "a:1", sources=2, limit="limited by verification",
                     each=(Source("a:1", 4 << 20), Source("b:2", 3 << 20)))
        self.assertTrue(progress_line(p, 50.0).endswith(
            "ETA 0:00  limited by verification  from 2 peers (a:1 4.0 MiB/s, b:2 3.0 MiB/s)"))
        many = tuple(Source(f"h{i}:1", 1 << 20) for i in range(6))
        self.assertTrue(progress_line(replace(p, sources=6, each=many), 50.0).endswith(
            "h3:1 1.0 MiB/s, +2 more)"))

    def test_a_plain_line_comes_when_what_limits_it_changes(self):
        out, clock = io.StringIO(), FakeClock()
        printer = ProgressPrinter(out, tty=False, clock=clock.now)
        printer(replace(progress(1), limit="limited by this machine's link"))
        clock.advance(PLAIN_EVERY_S)
        printer(replace(progress(2), limit="limited by this machine's link"))
        clock.advance(PLAIN_EVERY_S)
        printer(replace(progress(3), limit="limited by verification"))
        self.assertEqual([line.split("%")[0].strip() for line in out.getvalue().splitlines()],
                         ["1.0", "3.0"])

    def test_plain_lines_need_both_the_time_and_five_percent_but_come_while_stalled(self):
        out, clock = io.StringIO(), FakeClock()
        printer = ProgressPrinter(out, tty=False, clock=clock.now)
        printer(progress(1))  # the first report: a line
        clock.advance(1)
        printer(progress(50))  # half of it, but too soon
        clock.advance(PLAIN_EVERY_S)
        printer(progress(52))  # late enough and 51 % more since the last line
        clock.advance(PLAIN_EVERY_S)
        printer(progress(54))  # late enough, but under 5 % more
        clock.advance(PLAIN_STILL_S)
        printer(progress(54))  # stalled: a line anyway
        clock.advance(PLAIN_EVERY_S)
        printer(progress(54, waiting="waiting for a free upload slot, 1 holder busy"))
        clock.advance(1)
        printer(progress(100, finished=True))
        lines = out.getvalue().splitlines()
        self.assertEqual([line.split("%")[0].strip() for line in lines],
                         ["1.0", "52.0", "54.0", "54.0", "100.0"])
        self.assertIn("waiting for a free upload slot", lines[3])

    def test_a_terminal_line_fits_in_cells(self):
        out = io.StringIO()
        printer = ProgressPrinter(out, tty=True)
        printer(progress(10, source="日本語" * 100))
        self.assertLess(text_width(out.getvalue().split("\x1b[K")[1]), 200)


class WidthTests(unittest.TestCase):
    def test_marks_and_format_characters_take_no_cell(self):
        self.assertEqual(text_width("ที่"), 1)  # Thai: a letter and two marks above it
        self.assertEqual(text_width("❤\ufe0f"), 1)  # a variation selector
        self.assertEqual(text_width("a\u200db"), 2)  # a zero-width joiner
        lines = table([("ที่.txt", "1"), ("abcde", "2")], ("name", "n")).split("\n")
        self.assertEqual([text_width(line[:-1]) for line in lines[2:]], [7, 7])
        self.assertEqual(fit_names(["ที่.txt"], 5), "ที่.txt")


class QuitQuestionTests(unittest.TestCase):
    def test_singular_and_plural(self):
        self.assertEqual(quit_question(0, 0), "")
        self.assertIn("1 download is running: quitting stops it, and it resumes",
                      quit_question(1, 0))
        self.assertIn("3 downloads are running: quitting stops them, and they resume",
                      quit_question(3, 0))
        self.assertIn("1 upload to other peers is running: quitting cuts it off",
                      quit_question(0, 1))
        self.assertTrue(quit_question(1, 2).endswith(" Quit now? [y/N] "))


class OutputTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="p2p-out-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def file(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def result(self, data, already=False):
        path = self.file("downloaded", data)
        return Result(path, "song.mp3", len(data), hashlib.sha256(data).hexdigest(),
                      already=already)

    def test_the_file_moves_to_the_name_or_into_the_folder(self):
        result = self.result(b"song")
        target = target_path(os.path.join(self.tmp, "mine.mp3"), "music/song.mp3")
        self.assertEqual(place(result, target), os.path.join(self.tmp, "mine.mp3"))
        self.assertFalse(os.path.exists(result.path))
        folder = os.path.join(self.tmp, "dir")
        os.mkdir(folder)
        self.assertEqual(target_path(folder, "music/song.mp3"), os.path.join(folder, "song.mp3"))

    def test_a_file_that_was_there_already_is_copied_not_moved(self):
        result = self.result(b"song", already=True)
        place(result, os.path.join(self.tmp, "copy.mp3"))
        self.assertTrue(os.path.exists(result.path))

    def test_a_different_file_is_never_overwritten(self):
        other = self.file("other.mp3", b"other")
        result = self.result(b"song")
        with self.assertRaisesRegex(DownloadError, "is a different file.*kept at"):
            place(result, other)
        with open(other, "rb") as f:
            self.assertEqual(f.read(), b"other")
        self.assertTrue(os.path.exists(result.path))
        version = {"size": 4, "sha256": hashlib.sha256(b"song").hexdigest()}
        with self.assertRaisesRegex(DownloadError, "is a different file"):
            check_target(other, [version])
        with self.assertRaises(AlreadyThere):
            check_target(self.file("same.mp3", b"song"), [version])
        check_target(os.path.join(self.tmp, "new.mp3"), [version])


if __name__ == "__main__":
    unittest.main()
