"""Tests of p2p/core/wire.py's records and of lb_client's reading of refusals, without sockets.
"""

import hashlib
import re
import unittest

from p2p.core.wire import BadRecord, FileRecord, PartialRecord
from p2p.net import lb_client


def sha(text):
    return hashlib.sha256(str(text).encode()).hexdigest()


def info(name, version=0, size=100):
    return FileRecord(name, size, sha(f"{name}#{version}"))


def wire(name, version=0, size=100):
    return info(name, version, size).as_dict()


class TestWireRecords(unittest.TestCase):
    """wire.py's records and lb_client's reading of refusals, without sockets."""

    def test_a_file_record_round_trips_and_bad_fields_are_named(self):
        record = FileRecord.parse({**wire("a/b.txt"), "pieces": sha("p")})
        self.assertEqual(FileRecord.parse(record.as_dict()), record)
        self.assertEqual(record.key, (sha("a/b.txt#0"), 100))
        self.assertNotIn("pieces", info("f").as_dict())
        for obj, needle in [([], "object"), ({"size": 1, "sha256": sha(1)}, "'name'"),
                            ({**wire("f"), "size": -1}, "negative"),
                            ({**wire("f"), "size": True}, "'size'"),
                            ({**wire("f"), "sha256": "ABC"}, "'sha256'"),
                            ({**wire("f"), "pieces": 5}, "'pieces'"),
                            ({**wire("f"), "name": "../x"}, "../x")]:
            with self.subTest(obj=obj), self.assertRaisesRegex(BadRecord, re.escape(needle)):
                FileRecord.parse(obj)

    def test_a_partial_record_says_its_verified_bytes_within_the_size(self):
        record = PartialRecord.parse({**wire("f"), "done": 100})
        self.assertEqual((record.done, record.key), (100, info("f").key))
        self.assertEqual(PartialRecord.parse(record.as_dict()), record)
        for done in (-1, 101, "1", None):
            with self.subTest(done=done), self.assertRaisesRegex(BadRecord, "'done'"):
                PartialRecord.parse({**wire("f"), "done": done})

    def test_a_partial_record_says_when_it_is_stalled(self):
        record = PartialRecord.parse({**wire("f"), "done": 10, "stalled": True})
        self.assertTrue(record.stalled)
        self.assertEqual(record.as_dict()["stalled"], True)
        self.assertNotIn("stalled", PartialRecord.parse({**wire("f"), "done": 10}).as_dict())
        with self.assertRaisesRegex(BadRecord, "'stalled'"):
            PartialRecord.parse({**wire("f"), "done": 10, "stalled": "yes"})

    def test_a_partial_record_may_say_how_fast_it_goes_and_older_ones_still_parse(self):
        speed = {"rate": 7 << 20, "limit": "limited by this machine's link",
                 "sources": [{"address": "10.0.0.7:41237", "rate": 4 << 20},
                             {"address": "[::1]:7001", "rate": 3 << 20}]}
        record = PartialRecord.parse({**wire("f"), "done": 10, **speed})
        self.assertEqual((record.rate, record.limit, record.sources),
                         (7 << 20, speed["limit"],
                          (("10.0.0.7:41237", 4 << 20), ("[::1]:7001", 3 << 20))))
        self.assertEqual(PartialRecord.parse(record.as_dict()), record)
        self.assertEqual({k: record.shown()[k] for k in speed}, speed)
        old = PartialRecord.parse({**wire("f"), "done": 10})  # a peer from before
        self.assertEqual((old.rate, old.sources, old.limit), (0, (), ""))
        self.assertEqual(set(old.shown()), {"name", "sha256", "size", "done"})
        for bad, needle in [({"rate": -1}, "'rate'"), ({"rate": 1.5}, "'rate'"),
                            ({"limit": 5}, "'limit'"), ({"limit": "x" * 201}, "'limit'"),
                            ({"limit": "a\x1b[2J"}, "'limit'"),
                            ({"sources": {}}, "'sources'"), ({"sources": [1]}, "'sources'"),
                            ({"sources": [{"address": "a:1"}]}, "'rate'"),
                            ({"sources": [{"address": "a\n", "rate": 1}]}, "'sources'"),
                            ({"sources": [{"address": "a:1", "rate": 1}] * 33}, "'sources'")]:
            with self.subTest(bad=bad), self.assertRaisesRegex(BadRecord, needle):
                PartialRecord.parse({**wire("f"), "done": 10, **bad})

    def test_refusals_become_the_error_the_caller_acts_on(self):
        versions = [{**wire("f", v), "holders": 1} for v in (1, 2)]
        cases = [(404, {}, lb_client.NotKnown), (409, {"versions": versions}, lb_client.Ambiguous),
                 (409, {}, lb_client.LBClientError), (503, {}, lb_client.NoHolderLeft),
                 (503, {"busy": 3, "retry_after": 2}, lb_client.AllBusy),
                 (400, {}, lb_client.LBClientError)]
        for status, extra, kind in cases:
            with self.subTest(status=status, extra=extra):
                error = lb_client.refusal(status, {"error": "why", **extra},
                                          lb_client.NoHolderLeft)
                self.assertIs(type(error), kind)
                self.assertEqual((error.message, error.status), ("why", status))
        busy = lb_client.refusal(503, {"error": "why", "busy": 3, "retry_after": 2})
        self.assertEqual((busy.busy, busy.retry_after), (3, 2))
        self.assertEqual(lb_client.refusal(409, {"versions": versions}).versions, versions)
        self.assertEqual(lb_client.refusal(503, {"busy": 1, "retry_after": "x"}).retry_after,
                         lb_client.DEFAULT_RETRY_AFTER_S)

    def test_a_pick_is_read_from_its_sources_or_from_an_older_top_level_answer(self):
        peer = {"id": "p1", "host": "10.0.0.1", "port": 7000, "name": "alice"}
        answer = {"transfer_id": "t1", "secret": "s1", "peer": peer, "file": wire("f"),
                  "renew_s": 10}
        older = lb_client.Pick.parse(answer)
        self.assertEqual(older.leases, [lb_client.Lease("t1", "s1", "p1", "10.0.0.1", 7000,
                                                        "alice")])
        self.assertEqual((older.file, older.pieces, older.versions), (info("f"), None, []))
        second = {"transfer_id": "t2", "secret": "s2", "done": 37,
                  "peer": {"id": "p2", "host": "::1", "port": 7001}}
        pick = lb_client.Pick.parse({**answer, "pieces": sha("p"), "sources": [
            {**{k: answer[k] for k in ("transfer_id", "secret", "peer")}, "done": None}, second]})
        self.assertEqual([(lease.address, lease.done) for lease in pick.leases],
                         [("10.0.0.1:7000", None), ("[::1]:7001", 37)])
        self.assertEqual(pick.pieces, sha("p"))
        for broken in ({**answer, "renew_s": 0}, {**answer, "file": {}},
                       {**answer, "peer": {**peer, "port": "7000"}}):
            with self.subTest(broken=broken), self.assertRaises((KeyError, ValueError)):
                lb_client.Pick.parse(broken)


if __name__ == "__main__":
    unittest.main()
