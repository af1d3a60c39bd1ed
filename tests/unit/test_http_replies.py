"""Tests of the replies' first lines (``p2p/http/replies.reply_head``): made once a second
for each kind of reply, with that second's ``Date``; no sockets."""

import unittest
from unittest import mock

from p2p.http import replies


class ReplyHeadTests(unittest.TestCase):
    def test_the_first_lines_of_a_reply(self):
        with mock.patch.object(replies.time, "time", return_value=784111777.5):
            self.assertEqual(replies.reply_head("HTTP/1.1", 201, "lb/1", "application/json"),
                             "HTTP/1.1 201 Created\r\nServer: lb/1\r\n"
                             "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                             "Content-Type: application/json\r\n")
            self.assertEqual(replies.reply_head("HTTP/1.1", 204, "lb/1", None),
                             "HTTP/1.1 204 No Content\r\nServer: lb/1\r\n"
                             "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n")

    def test_the_next_second_has_its_own_date(self):
        for second, date in [(784111777, "08:49:37"), (784111778, "08:49:38")]:
            with mock.patch.object(replies.time, "time", return_value=second):
                self.assertIn(f"Date: Sun, 06 Nov 1994 {date} GMT\r\n",
                              replies.reply_head("HTTP/1.1", 200, "p2p", None))


if __name__ == "__main__":
    unittest.main()
