"""Tests of p2p/cli/peer.py's pure helpers: name suggestions and the command's place.
"""

import unittest


class SuggestNamesTests(unittest.TestCase):
    def test_case_then_containing_then_alike_and_never_the_name_itself(self):
        from p2p.cli.text import suggest_names
        names = ["notes.txt", "photos/2024/trip.txt", "hello.txt", "Hello.TXT.bak", "bob.txt"]
        self.assertEqual(suggest_names("trip.txt", names)[0], "photos/2024/trip.txt")
        self.assertEqual(suggest_names("HELLO.TXT", names)[0], "hello.txt")
        self.assertEqual(suggest_names("hello.txt", names), [])
        self.assertIn("notes.txt", suggest_names("notse.txt", names))
        self.assertEqual(suggest_names("zzzzzz", names), [])


class CommandLineTests(unittest.TestCase):
    def test_the_command_may_follow_options_but_an_option_value_is_not_a_command(self):
        from p2p.cli.args import command_first
        self.assertEqual(command_first([]), ["menu"])
        self.assertEqual(command_first(["--lb", "h:1", "status"]), ["status", "--lb", "h:1"])
        self.assertEqual(command_first(["--shared", "status"]), ["menu", "--shared", "status"])
        self.assertEqual(command_first(["get", "list"]), ["get", "list"])
        self.assertEqual(command_first(["-h"]), ["-h"])


if __name__ == "__main__":
    unittest.main()
