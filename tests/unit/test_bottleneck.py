"""What holds a download back (``core/bottleneck.py``): a table of facts and the reason each
gives, the rates per source on a FakeClock, the holder's headers, and a reason that holds."""

import unittest

from p2p.core.bottleneck import (
    BUSY,
    LINK,
    MEASURING,
    REASON_HOLD_S,
    SETTLE_S,
    STALLED,
    UPLOAD_LIMIT,
    VERIFICATION,
    WAITING,
    Facts,
    Limit,
    LimitWatch,
    RateWindow,
    Source,
    SourceRates,
    limiting,
    upload_terms,
)
from p2p.core.clock import FakeClock

MIB = 1 << 20


def limited(rate, limit, uploads=1, address="a:1"):
    return Source(address, rate, limit, uploads)


CASES = [  # (what, facts, kind, text)
    ("nothing arrives, nobody online",
     Facts(0, stalled=True), STALLED, "waiting for a holder to come online"),
    ("nothing arrives, three answered busy",
     Facts(0, turned_away=3), BUSY, "waiting: every holder is busy (3 turned us away)"),
    ("nothing arrives, the load balancer says all are busy",
     Facts(0, all_busy=True), BUSY, "waiting: every holder is busy"),
    ("nothing arrives yet",
     Facts(0, (Source("a:1", 0),)), WAITING, "waiting for holders"),
    ("bytes arrive, but only just",
     Facts(MIB, (limited(MIB, MIB),), receiving_s=SETTLE_S / 2), MEASURING, ""),
    ("the verifiers are behind",
     Facts(90 * MIB, (Source("a:1", 90 * MIB),), verify_queue=6, verify_room=8,
           verify_rate=80 * MIB), VERIFICATION,
     "limited by verification (SHA-256 at 80.0 MiB/s)"),
    ("the verifiers keep up",
     Facts(90 * MIB, (Source("a:1", 90 * MIB),), verify_queue=1, verify_room=8),
     LINK, "limited by this machine's link"),
    ("two holders at their limit",
     Facts(8 * MIB, (limited(4 * MIB, 4 * MIB), limited(3.9 * MIB, 4 * MIB, address="b:2"))),
     UPLOAD_LIMIT, "limited by the holders' upload limits (2 × 4.0 MiB/s)"),
    ("two holders at different limits",
     Facts(6 * MIB, (limited(4 * MIB, 4 * MIB), limited(2 * MIB, 2 * MIB, address="b:2"))),
     UPLOAD_LIMIT, "limited by the holders' upload limits (4.0 MiB/s + 2.0 MiB/s)"),
    ("one holder at its limit, shared with another download",
     Facts(2 * MIB, (limited(2 * MIB, 4 * MIB, uploads=2),)),
     UPLOAD_LIMIT, "limited by the holder's upload limit (4.0 MiB/s, shared by 2 downloads)"),
    ("a holder with a limit it does not reach",
     Facts(1 * MIB, (limited(1 * MIB, 4 * MIB),)), LINK, "limited by this machine's link"),
    ("a limited holder carries too little of it",
     Facts(40 * MIB, (limited(4 * MIB, 4 * MIB), Source("b:2", 36 * MIB))),
     LINK, "limited by this machine's link"),
    ("some send, others answered busy",
     Facts(5 * MIB, (Source("a:1", 5 * MIB),), turned_away=2),
     BUSY, "limited by busy holders (2 turned us away)"),
    ("busy ones do not matter with every source in use",
     Facts(5 * MIB, (Source("a:1", 5 * MIB),), max_sources=1, turned_away=2),
     LINK, "limited by this machine's link"),
]


class LimitingTests(unittest.TestCase):
    def test_each_case_names_its_limit(self):
        for what, facts, kind, text in CASES:
            with self.subTest(what):
                self.assertEqual(limiting(facts), Limit(kind, text))


class RateTests(unittest.TestCase):
    def test_a_rate_is_over_the_last_window(self):
        clock, window = FakeClock(), RateWindow()
        self.assertEqual(window.add(clock.now(), 0), 0.0)
        for second in range(1, 6):
            rate = window.add(clock.advance(1.0), second * MIB if second <= 3 else 3 * MIB)
        self.assertEqual(rate, 0.0)  # nothing came in the last two seconds

    def test_each_source_has_its_own_rate_from_its_first_byte_and_a_gone_one_is_forgotten(self):
        clock, rates = FakeClock(), SourceRates()
        self.assertEqual(rates.update(clock.now(), {"a": 0, "b": 0}), {"a": 0.0, "b": 0.0})
        rates.update(clock.advance(5.0), {"a": MIB, "b": 0})  # a took 5 s to answer
        self.assertEqual(rates.update(clock.advance(1.0), {"a": 5 * MIB, "b": MIB}),
                         {"a": 4 * MIB, "b": 0.0})
        self.assertEqual(rates.update(clock.advance(1.0), {"b": 3 * MIB}), {"b": 2 * MIB})
        self.assertEqual(rates.update(clock.advance(1.0), {"a": 9 * MIB}), {"a": 0.0})


class HeaderTests(unittest.TestCase):
    def test_the_holders_headers(self):
        for headers, terms in [
                ({}, (0, 1)),
                ({"x-upload-limit": "4194304"}, (4194304, 1)),
                ({"x-upload-limit": "4194304", "x-uploads": "3"}, (4194304, 3)),
                ({"x-upload-limit": "4194304", "x-uploads": "0"}, (4194304, 1)),
                ({"x-upload-limit": "lots", "x-uploads": "3"}, (0, 1)),
                ({"x-upload-limit": "-5"}, (0, 1))]:
            with self.subTest(headers):
                self.assertEqual(upload_terms(headers), terms)


class WatchTests(unittest.TestCase):
    def test_a_new_reason_while_bytes_arrive_shows_once_it_held(self):
        clock = FakeClock()
        watch = LimitWatch(clock)
        link, capped = Limit(LINK, "link"), Limit(UPLOAD_LIMIT, "capped")
        self.assertEqual(watch.see(link), link)
        self.assertEqual(watch.see(capped), link)
        clock.advance(REASON_HOLD_S / 2)
        self.assertEqual(watch.see(link), link)  # it flickered back: starts again
        self.assertEqual(watch.see(capped), link)
        clock.advance(REASON_HOLD_S / 2)
        self.assertEqual(watch.see(capped), link)
        clock.advance(REASON_HOLD_S / 2)
        self.assertEqual(watch.see(capped), capped)

    def test_starting_and_stopping_to_arrive_show_at_once(self):
        clock = FakeClock()
        watch = LimitWatch(clock)
        waiting, link = Limit(WAITING, "waiting"), Limit(LINK, "link")
        measuring = Limit(MEASURING, "")
        self.assertEqual(watch.see(waiting), waiting)
        self.assertEqual(watch.see(measuring), measuring)
        self.assertEqual(watch.see(link), link)
        self.assertEqual(watch.see(waiting), waiting)

    def test_the_same_reason_with_new_figures_shows_at_once(self):
        clock = FakeClock()
        watch = LimitWatch(clock)
        watch.see(Limit(VERIFICATION, "at 1"))
        self.assertEqual(watch.see(Limit(VERIFICATION, "at 2")).text, "at 2")


if __name__ == "__main__":
    unittest.main()
