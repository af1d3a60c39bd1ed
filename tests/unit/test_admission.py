"""Tests of p2p/core/admission.py and p2p/core/clock.py: a connection's phases as a table,
admission and eviction, and what the bytes read say to do next; no sockets."""

import unittest

from p2p.core import admission
from p2p.core.admission import (BUSY, CLOSE, CLOSED, HANDSHAKE, OPEN, PEEK, AdmissionLimits,
                                IllegalTransition, Phase)
from p2p.core.clock import Clock, FakeClock

STATES = (PEEK, HANDSHAKE, OPEN, BUSY, CLOSED)
EVENTS = ("tls-hello", "handshake-done", "request-whole", "kept-alive", CLOSE)
EXPECTED = {  # (state, event) -> next state; every pair not here raises
    (PEEK, "tls-hello"): HANDSHAKE,
    (HANDSHAKE, "handshake-done"): OPEN,
    (OPEN, "request-whole"): BUSY,
    (BUSY, "kept-alive"): OPEN,
    (PEEK, CLOSE): CLOSED,
    (HANDSHAKE, CLOSE): CLOSED,
    (OPEN, CLOSE): CLOSED,
    (BUSY, CLOSE): CLOSED,
}


def in_state(state):
    phase = Phase(tls=True)
    phase.state = state
    return phase


class PhaseTests(unittest.TestCase):
    def test_every_state_and_event_moves_as_the_table_says_or_raises(self):
        for state in STATES:
            for event in EVENTS:
                with self.subTest(state=state, event=event):
                    phase = in_state(state)
                    if (state, event) in EXPECTED:
                        self.assertEqual(phase.move(event), EXPECTED[state, event])
                        self.assertEqual(phase.state, EXPECTED[state, event])
                    else:
                        with self.assertRaises(IllegalTransition):
                            phase.move(event)
                        self.assertEqual(phase.state, state, "a refused move changed the state")

    def test_a_tls_connection_starts_at_peek_and_a_plain_one_open(self):
        self.assertEqual(Phase(tls=True).state, PEEK)
        self.assertEqual(Phase(tls=False).state, OPEN)

    def test_a_tls_keep_alive_life(self):
        phase = Phase(tls=True)
        for event, state in [("tls-hello", HANDSHAKE), ("handshake-done", OPEN),
                             ("request-whole", BUSY), ("kept-alive", OPEN),
                             ("request-whole", BUSY), (CLOSE, CLOSED)]:
            self.assertEqual(phase.move(event), state)


class AdmissionTests(unittest.TestCase):
    LIMITS = AdmissionLimits(max_connections=8, max_per_source=2)

    def test_admit(self):
        for held, by_source, fate in [(0, 0, admission.ROOM), (7, 1, admission.ROOM),
                                      (8, 1, admission.EVICT_ANY), (3, 2, admission.EVICT_OWN),
                                      (8, 2, admission.EVICT_OWN)]:
            with self.subTest(held=held, by_source=by_source):
                self.assertEqual(admission.admit(self.LIMITS, held, by_source), fate)

    def test_idle_connections_go_first_then_the_longest_partial(self):
        waiting = [("a", "10.0.0.1", OPEN, 5), ("b", "10.0.0.2", HANDSHAKE, 0),
                   ("c", "10.0.0.2", OPEN, 0), ("d", "10.0.0.1", PEEK, 0)]
        cases = [(waiting, None, "c"), (waiting, "10.0.0.1", "d"), (waiting[:2], None, "a"),
                 (waiting[1:2], "10.0.0.2", "b"), (waiting[1:2], "10.0.0.1", None), ([], None, None)]
        for candidates, source, expected in cases:
            with self.subTest(candidates=candidates, source=source):
                self.assertEqual(admission.victim(candidates, source), expected)

    def test_idle_means_nothing_in_and_not_in_a_handshake(self):
        for state, buffered, idle in [(OPEN, 0, True), (PEEK, 0, True), (OPEN, 1, False),
                                      (HANDSHAKE, 0, False)]:
            with self.subTest(state=state, buffered=buffered):
                self.assertEqual(admission.is_idle(state, buffered), idle)


class ReadingTests(unittest.TestCase):
    MAX_HEAD = 100

    def test_after_peek(self):
        for first, verdict in [(None, admission.DROP), (0x16, admission.START_TLS),
                               (ord("G"), admission.REFUSE_PLAIN), (0, admission.REFUSE_PLAIN)]:
            with self.subTest(first=first):
                self.assertEqual(admission.after_peek(first), verdict)

    def test_after_read(self):
        G, TLS = ord("G"), 0x16
        cases = [  # buffered, first byte, TLS server, head whole, request whole -> verdict
            (0, None, False, False, False, admission.WAIT),
            (5, G, False, False, False, admission.WAIT),  # a head under way
            (40, G, False, True, True, admission.SERVE),
            (40, G, False, True, False, admission.WAIT),  # head in, small body still coming
            (101, G, False, False, False, admission.REFUSE_LARGE),
            (101, G, False, True, False, admission.WAIT),  # a large head that ended: a body
            (100, G, False, False, False, admission.WAIT),  # at the limit, not over it
            (5, TLS, False, False, False, admission.DROP),  # TLS to a plain server
            (40, TLS, True, True, True, admission.SERVE),  # decrypted bytes on a TLS server
        ]
        for buffered, first, tls, head, whole, verdict in cases:
            with self.subTest(buffered=buffered, first=first, tls=tls, head=head, whole=whole):
                self.assertEqual(admission.after_read(buffered, first, tls, head, whole,
                                                      self.MAX_HEAD), verdict)

    def test_next_wait_is_the_head_deadline_once_a_byte_is_in(self):
        for buffered, until in [(0, 130.0), (1, 110.0), (5000, 110.0)]:
            with self.subTest(buffered=buffered):
                self.assertEqual(admission.next_wait(100.0, buffered, 10.0, 30.0), until)

    def test_after_answer_serves_a_whole_next_request_else_lingers_then_hands_back(self):
        cases = [  # whole, buffered, lingered out, others wait -> verdict
            (True, 40, False, False, admission.SERVE),
            (True, 40, True, True, admission.SERVE),  # whole: served even at the end
            (False, 0, False, False, admission.WAIT),
            (False, 10, False, False, admission.WAIT),  # part of a head: the linger goes on
            (False, 10, True, False, admission.HAND_BACK),  # a slow head: the selector's
            (False, 0, False, True, admission.HAND_BACK),  # another request needs a worker
            (False, 101, False, False, admission.HAND_BACK),  # more than the selector holds
        ]
        for whole, buffered, out, others, verdict in cases:
            with self.subTest(whole=whole, buffered=buffered, out=out, others=others):
                self.assertEqual(admission.after_answer(whole, buffered, self.MAX_HEAD, out,
                                                        others), verdict)


class ClockTests(unittest.TestCase):
    def test_the_fake_clock_moves_only_when_advanced_and_the_real_one_never_back(self):
        clock = FakeClock(10.0)
        self.assertEqual(clock.now(), 10.0)
        clock.advance(2.5)
        self.assertEqual(clock.now(), 12.5)
        real = Clock()
        first = real.now()
        self.assertGreaterEqual(real.now(), first)


if __name__ == "__main__":
    unittest.main()
