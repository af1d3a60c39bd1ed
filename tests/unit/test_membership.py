"""The membership machine (p2p/core/membership.py): its table, its timing, on a FakeClock."""

import unittest

from p2p.core import membership as m
from p2p.core.clock import FakeClock


def machine(follows=False, may_start=False, heartbeat_s=10.0, retry_s=3.0):
    clock = FakeClock(100.0)
    policy = m.Policy(follows=follows, may_start=may_start, retry_s=retry_s)
    return clock, m.Membership(clock, policy, heartbeat_s)


class TableTests(unittest.TestCase):
    PATHS = [  # events from REGISTER, and the state they end in
        (["ok"], m.BEATING),
        (["ok", "ok", "ok"], m.BEATING),
        (["ok", "forgotten"], m.REGISTER),
        (["ok", "failed"], m.LOST),
        (["failed", "retry_register"], m.REGISTER),
        (["ok", "failed", "retry"], m.BEATING),
        (["ok", "failed", "search", "moved"], m.REGISTER),
        (["ok", "failed", "search", "same"], m.LOST),
        (["ok", "failed", "search", "none", "found"], m.REGISTER),
        (["ok", "failed", "search", "none", "elected", "ok"], m.BEATING),
        (["ok", "failed", "search", "none", "failed"], m.LOST),
        (["ok", "failed", "restart", "ok"], m.REGISTER),
        (["ok", "failed", "search", "stop"], m.STOPPED),
        (["refused"], m.REFUSED),
        (["ok", "refused", "retry_register", "ok"], m.BEATING),
    ]
    ILLEGAL = [  # events that the state before the last one does not allow
        ["forgotten"],
        ["ok", "moved"],
        ["ok", "failed", "ok"],
        ["ok", "failed", "search", "ok"],
        ["ok", "failed", "search", "none", "moved"],
        ["stop", "ok"],
        ["refused", "search"],  # a load balancer that answers is never searched past
        ["refused", "ok"],
    ]

    def test_paths(self):
        for events, end in self.PATHS:
            with self.subTest(events=events):
                _, machine_ = machine()
                for event in events:
                    machine_.fire(event)
                self.assertEqual(machine_.state, end)

    def test_illegal_transitions_raise_and_change_nothing(self):
        for events in self.ILLEGAL:
            with self.subTest(events=events):
                _, machine_ = machine()
                for event in events[:-1]:
                    machine_.fire(event)
                before = machine_.state
                with self.assertRaises(m.IllegalTransition):
                    machine_.fire(events[-1])
                self.assertEqual(machine_.state, before)

    def test_every_target_is_a_state(self):
        states = {m.REGISTER, m.BEATING, m.REFUSED, m.LOST, m.SEARCHING, m.ELECTING,
                  m.RESTARTING}
        self.assertTrue(set(m.TRANSITIONS.values()) <= states)
        self.assertEqual({s for s, _ in m.TRANSITIONS}, states)


class DecisionTests(unittest.TestCase):
    CASES = [  # (follows, may_start, registered) -> the way out of LOST
        ((True, True, True), "search"),
        ((True, False, False), "search"),
        ((False, True, True), "restart"),
        ((False, False, True), "retry"),
        ((False, False, False), "retry_register"),
    ]

    def test_what_a_lost_peer_does(self):
        for (follows, may_start, registered), event in self.CASES:
            with self.subTest(follows=follows, may_start=may_start, registered=registered):
                _, machine_ = machine(follows=follows, may_start=may_start)
                self.assertEqual(machine_.lost_action(registered), event)

    def test_a_follower_that_may_elect_and_found_its_own_again_retries_it(self):
        _, machine_ = machine(follows=True, may_start=True)
        for event in ("ok", "failed", "search", "same"):
            machine_.fire(event)
        self.assertEqual(machine_.lost_action(registered=True), "retry")  # not "restart"

    def test_a_follower_that_found_only_its_own_again_retries_it(self):
        clock, machine_ = machine(follows=True, retry_s=3.0)
        for event in ("ok", "failed", "search", "same"):
            machine_.fire(event)
        self.assertEqual(machine_.lost_action(registered=True), "retry")
        clock.advance(3.0)
        machine_.fire("retry")
        self.assertEqual(machine_.wait_s(), 0.0)  # the retried heartbeat goes at once
        machine_.fire("failed")
        self.assertEqual(machine_.lost_action(registered=True), "search")

    def test_what_a_search_found(self):
        here = ("198.18.0.1", 6969)
        for may_start, found, event in [(True, None, "none"), (False, None, "none_here"),
                                        (True, here, "same"), (True, ("198.18.0.2", 6969),
                                                               "moved")]:
            with self.subTest(may_start=may_start, found=found):
                _, machine_ = machine(follows=True, may_start=may_start)
                self.assertEqual(machine_.after_search(found, here), event)


class TimingTests(unittest.TestCase):
    def test_heartbeats_come_every_heartbeat_s(self):
        clock, machine_ = machine(heartbeat_s=10.0)
        self.assertEqual(machine_.wait_s(), 0.0)  # register at once
        machine_.fire("ok")
        self.assertEqual(machine_.wait_s(), 10.0)
        clock.advance(4.0)
        self.assertEqual(machine_.wait_s(), 6.0)
        clock.advance(7.0)
        self.assertEqual(machine_.wait_s(), 0.0)

    def test_a_following_peer_searches_at_once_then_every_retry_s(self):
        clock, machine_ = machine(follows=True, retry_s=3.0)
        machine_.fire("ok")
        machine_.fire("failed")
        self.assertEqual(machine_.wait_s(), 0.0)
        machine_.fire("search")
        self.assertEqual(machine_.wait_s(), 0.0)
        machine_.fire("same")
        self.assertEqual(machine_.wait_s(), 3.0)
        clock.advance(3.0)
        self.assertEqual(machine_.wait_s(), 0.0)

    def test_a_peer_with_a_given_address_waits_retry_s(self):
        _, machine_ = machine(retry_s=3.0)
        machine_.fire("ok")
        machine_.fire("failed")
        self.assertEqual(machine_.wait_s(), 3.0)

    def test_a_refused_peer_asks_again_after_refused_s_even_when_it_follows(self):
        clock, machine_ = machine(follows=True, may_start=True)
        machine_.fire("ok")
        machine_.fire("refused")
        self.assertEqual(machine_.way_back(True), "retry_register")  # never a search
        self.assertEqual(machine_.wait_s(), m.Policy().refused_s)
        clock.advance(m.Policy().refused_s)
        self.assertEqual(machine_.wait_s(), 0.0)

    def test_stopped_has_nothing_due(self):
        _, machine_ = machine()
        machine_.fire("stop")
        self.assertIsNone(machine_.due())
        self.assertIsNone(machine_.wait_s())

    def test_the_fake_clock_only_goes_forward(self):
        clock = FakeClock()
        with self.assertRaises(ValueError):
            clock.advance(-1)
        self.assertEqual(clock.advance(2.5), 2.5)


if __name__ == "__main__":
    unittest.main()


class StandbyTests(unittest.TestCase):
    """--lb A,B,C: the order in which the load balancers are asked."""

    def test_the_one_that_answered_first_then_as_listed(self):
        standby = m.Standby(3, FakeClock())
        self.assertEqual(standby.order(), [0, 1, 2])
        standby.answered(2)
        self.assertEqual(standby.order(), [2, 0, 1])

    def test_a_failed_one_is_asked_last_until_it_has_been_down_a_while(self):
        clock = FakeClock()
        standby = m.Standby(3, clock, down_s=10.0)
        standby.failed(0)
        clock.advance(1.0)
        standby.failed(1)
        self.assertEqual(standby.order(), [2, 0, 1])
        self.assertTrue(standby.is_down(0))
        clock.advance(9.5)  # 0 is back in its turn; 1 is still down
        self.assertEqual(standby.order(), [0, 2, 1])
        standby.answered(2)
        self.assertEqual(standby.order(), [2, 0, 1])
        clock.advance(1.0)
        self.assertEqual(standby.order(), [2, 0, 1])
        self.assertFalse(standby.is_down(1))

    def test_a_heartbeat_answered_brings_it_back_without_making_it_first(self):
        standby = m.Standby(2, FakeClock())
        standby.failed(0)
        standby.answered(1)
        standby.answered_keep_current(0)
        self.assertEqual(standby.order(), [1, 0])
        self.assertFalse(standby.is_down(0))

    def test_an_empty_list_is_refused(self):
        with self.assertRaises(ValueError):
            m.Standby(0, FakeClock())
