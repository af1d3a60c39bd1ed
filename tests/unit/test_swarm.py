"""Asking the load balancer for holders (core/swarm.py), on the FakeClock: when to ask, busy,
stalled with back-off, the user's patience, and the load balancer gone."""

import unittest

from p2p.core.clock import FakeClock
from p2p.core.swarm import BUSY, FETCHING, PACE, STALLED, Asking

HOUR_S = 3600.0


def asking(wait_s=None, soon=False):
    clock = FakeClock(100.0)
    return Asking("f.bin", clock, wait_s, PACE, soon=soon), clock


def questions_over(machine, clock, seconds, step=0.1):
    """How often the machine wants to ask over ``seconds`` with nobody online."""
    asked = 0
    end = clock.now() + seconds
    while clock.now() < end:
        if machine.due(0):
            asked += 1
            decision = machine.none_left(0, soon=False)
            assert not decision.give_up
        clock.advance(step)
    return asked


class WhenToAsk(unittest.TestCase):
    CASES = [  # (soon, active, seconds later, due?)
        (False, 1, PACE.ask_more_every_s - 0.1, False),
        (False, 1, PACE.ask_more_every_s, True),
        (True, 1, PACE.ask_soon_every_s - 0.01, False),
        (True, 1, PACE.ask_soon_every_s, True),
        (False, PACE.max_sources, HOUR_S, False),  # enough holders: never
    ]

    def test_more_holders_are_asked_for_at_the_pace(self):
        for soon, active, later, due in self.CASES:
            with self.subTest(soon=soon, active=active, later=later):
                machine, clock = asking(soon=soon)
                clock.advance(later)
                self.assertEqual(machine.due(active), due)


class Busy(unittest.TestCase):
    def test_busy_says_so_and_comes_back_after_retry_after_within_bounds(self):
        for retry_after, wait in ((0, PACE.ask_busy_min_s), (2, 2.0),
                                  (3600, PACE.busy_wait_max_s)):
            with self.subTest(retry_after=retry_after):
                machine, clock = asking()
                decision = machine.busy(3, retry_after, active=0)
                self.assertEqual(decision.waiting, "waiting for a free upload slot, 3 holders busy")
                self.assertEqual(machine.state, BUSY)
                self.assertAlmostEqual(machine.wait(), wait)

    def test_busy_while_others_download_it_asks_again_as_soon_as_they_may_share(self):
        machine, clock = asking()
        machine.busy(8, retry_after=1, active=0, soon=True)
        self.assertAlmostEqual(machine.wait(), PACE.ask_soon_every_s)
        self.assertEqual(machine.state, BUSY)

    def test_busy_gives_up_after_the_patience_only_with_no_connection_left(self):
        machine, clock = asking(wait_s=30)
        self.assertFalse(machine.busy(1, 5, active=0).give_up)
        clock.advance(30)
        self.assertFalse(machine.busy(1, 5, active=2).give_up)  # others still send
        decision = machine.busy(1, 5, active=0)
        self.assertTrue(decision.give_up)
        self.assertIn("Waited 30 s for a free upload slot for 'f.bin'", decision.why)

    def test_without_a_limit_busy_waits_for_ever(self):
        machine, clock = asking(wait_s=None)
        machine.busy(1, 5, active=0)
        clock.advance(HOUR_S * 24)
        self.assertFalse(machine.busy(1, 5, active=0).give_up)


class Stalled(unittest.TestCase):
    def test_no_holder_online_and_no_connection_left_is_stalled_and_says_so(self):
        machine, _ = asking()
        decision = machine.none_left(0, soon=False)
        self.assertEqual(machine.state, STALLED)
        self.assertTrue(machine.stalled)
        self.assertEqual(decision.waiting, "stalled: no holder of f.bin is online; waiting")
        self.assertFalse(decision.give_up)

    def test_with_connections_left_or_a_busy_holder_it_is_not_stalled(self):
        for active, busy_soon in ((2, False), (0, True)):
            with self.subTest(active=active, busy_soon=busy_soon):
                machine, _ = asking()
                self.assertFalse(machine.none_left(active, False, busy_soon).give_up)
                self.assertEqual(machine.state, FETCHING)

    def test_the_polls_back_off_and_stay_bounded(self):
        machine, clock = asking()
        gaps = []
        for _ in range(7):
            machine.none_left(0, soon=False)
            gaps.append(machine.wait())
            clock.advance(machine.wait())
        self.assertEqual(gaps, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0])
        self.assertEqual(gaps[0], PACE.stall_first_s)
        self.assertEqual(max(gaps), PACE.stall_max_s)

    def test_an_hour_stalled_is_a_few_hundred_questions_not_a_busy_loop(self):
        machine, clock = asking()
        machine.none_left(0, soon=False)
        asked = questions_over(machine, clock, HOUR_S, step=0.5)
        self.assertLessEqual(asked, HOUR_S / PACE.stall_max_s + 5)

    def test_the_wait_limit_gives_up_and_zero_gives_up_at_once(self):
        machine, _ = asking(wait_s=0)
        self.assertTrue(machine.none_left(0, soon=False).give_up)
        machine, clock = asking(wait_s=60)
        self.assertFalse(machine.none_left(0, soon=False).give_up)
        clock.advance(59)
        self.assertFalse(machine.none_left(0, soon=False).give_up)
        clock.advance(1)
        decision = machine.none_left(0, soon=False)
        self.assertTrue(decision.give_up)
        self.assertEqual(decision.why, " Waited 60 s for one to come back.")

    def test_holders_handed_out_end_the_stall_and_bytes_end_the_wait(self):
        machine, clock = asking(wait_s=60)
        machine.none_left(0, soon=False)
        clock.advance(40)
        machine.got(soon=False)
        self.assertFalse(machine.stalled)
        self.assertEqual(machine.waiting, "")
        clock.advance(30)  # the holder handed out was gone too: still the same wait
        self.assertTrue(machine.none_left(0, soon=False).give_up)
        machine, clock = asking(wait_s=60)
        machine.none_left(0, soon=False)
        clock.advance(40)
        machine.got(soon=False)
        machine.progressed()
        clock.advance(30)
        self.assertFalse(machine.none_left(0, soon=False).give_up)
        self.assertEqual(machine.wait(), PACE.stall_first_s)  # the back-off starts again


class LoadBalancerGone(unittest.TestCase):
    def test_the_holders_at_hand_go_on_without_it(self):
        machine, _ = asking(wait_s=0)
        decision = machine.unreachable(active=3)
        self.assertFalse(decision.give_up)
        self.assertEqual(machine.state, FETCHING)
        self.assertEqual(machine.wait(), PACE.ask_more_every_s)

    def test_with_no_holder_left_it_stalls_until_a_successor_answers(self):
        machine, clock = asking(wait_s=None)
        decision = machine.unreachable(active=0)
        self.assertTrue(machine.stalled)
        self.assertIn("no load balancer answers", decision.waiting)
        clock.advance(machine.wait())
        machine.got(soon=False)
        self.assertFalse(machine.stalled)


if __name__ == "__main__":
    unittest.main()
