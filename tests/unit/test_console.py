"""The menu's pure pieces: numbered choices, completion, widths on a terminal, arguments."""

import unittest
import unittest.mock

from p2p.cli import args as cli_args, run, text
from p2p.cli.console import Choices, completions


class ChoicesTests(unittest.TestCase):

    def test_numbers_pick_what_was_shown_last(self):
        choices = Choices()
        self.assertIsNone(choices.pick("1"))
        self.assertEqual(choices.show([("a.txt", "aa"), ("b.txt", None)]), [1, 2])
        self.assertEqual(choices.pick(" 2 "), ("b.txt", None))
        self.assertEqual(choices.pick("1"), ("a.txt", "aa"))
        for typed in ("0", "3", "", "a.txt", "-1", "١"):  # ١: an Arabic-Indic digit
            self.assertIsNone(choices.pick(typed), typed)
        choices.show([("c.txt", None)])
        self.assertEqual((choices.pick("1"), choices.pick("2")), (("c.txt", None), None))

    def test_completions_same_case_first(self):
        names = ["Café.txt", "café notes.txt", "song.mp3"]
        self.assertEqual(completions("caf", names), ["café notes.txt", "Café.txt"])
        self.assertEqual(completions("Caf", names), ["Café.txt", "café notes.txt"])
        self.assertEqual(completions("", names), names)
        self.assertEqual(completions("x", names), [])


class WidthTests(unittest.TestCase):

    def test_wide_and_combining_characters(self):
        self.assertEqual(text.text_width("abc"), 3)
        self.assertEqual(text.text_width("日本語"), 6)
        self.assertEqual(text.text_width("e\u0301"), 1)  # e + combining acute accent
        lines = text.table([("日本語.txt", "1"), ("ab", "2")], ("name", "n")).split("\n")
        self.assertEqual([text.text_width(line[:-1]) for line in lines[2:]], [12, 12])

    def test_names_fit_the_width_and_say_how_many_more(self):
        names = ["a.txt", "b.txt", "c.txt"]
        self.assertEqual(text.fit_names(names, 100), "a.txt, b.txt, c.txt")
        self.assertEqual(text.fit_names(names, 19), "a.txt, b.txt, c.txt")
        self.assertEqual(text.fit_names(names, 14), "a.txt, … +2")
        self.assertEqual(text.fit_names(["x" * 30, "b"], 11), "xxxx…, … +1")
        self.assertEqual(text.fit_names(["日本語 file.txt"], 8), "日本語…")
        self.assertEqual(text.fit_names([], 10), "")


class ArgumentTests(unittest.TestCase):

    def test_help_is_a_command(self):
        self.assertEqual(cli_args.command_first(["help"]), ["--help"])
        self.assertEqual(cli_args.command_first(["help", "get"]), ["get", "--help"])
        self.assertEqual(cli_args.command_first(["--version"]), ["--version"])

    def test_name_defaults_to_the_host_and_names_the_log(self):
        args = cli_args.parse_args(["serve", "--shared", "."])
        self.assertTrue(args.name)
        self.assertTrue(run.log_path_for("my laptop/1").endswith("-my_laptop_1.log"))
        with self.assertRaises(SystemExit), unittest.mock.patch("sys.stderr"):
            cli_args.parse_args(["serve", "--shared", ".", "--name", ""])


if __name__ == "__main__":
    unittest.main()
