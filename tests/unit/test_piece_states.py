"""Each piece's state machine (core/piece_states.py), table-driven: every move the table has
is allowed, every other raises, and the book never disagrees with itself. Also the plan's
invariant over random runs of events."""

import itertools
import random
import unittest

from p2p.core.errors import IllegalTransition
from p2p.core.pieces import Bitfield
from p2p.core.piece_states import (
    EVENTS,
    HAVE,
    MISSING,
    REQUESTED,
    STATES,
    TRANSITIONS,
    UNCHECKED,
    WRITING,
    PieceBook,
)
from p2p.core.plan import Plan

# How to bring piece 0 of a fresh book into each state, by events.
REACH = {
    MISSING: [],
    REQUESTED: [("take", "a")],
    WRITING: [("take", "a"), ("claim", "A")],
    UNCHECKED: [("take", "a"), ("claim", "A"), ("written", False)],
    HAVE: [("take", "a"), ("claim", "A"), ("written", True)],
}


def book_in(state):
    book = PieceBook(2, Bitfield(2))
    for event, arg in REACH[state]:
        getattr(book, event)(0, arg)
    book.check_invariant()
    assert book.state(0) == state
    return book


class Table(unittest.TestCase):
    def test_every_move_in_the_table_is_allowed_and_every_other_raises(self):
        for now, event in itertools.product(STATES, EVENTS):
            with self.subTest(now=now, event=event):
                book = book_in(now)
                if (now, event) in TRANSITIONS:
                    book.move(0, event)
                    self.assertEqual(book.state(0), TRANSITIONS[now, event])
                else:
                    with self.assertRaises(IllegalTransition):
                        book.move(0, event)
                    self.assertEqual(book.state(0), now)  # a refused move changes nothing

    def test_have_is_final(self):
        self.assertFalse([event for state, event in TRANSITIONS if state == HAVE])


class Events(unittest.TestCase):
    CASES = [  # (events on piece 0, its state after them)
        ([("take", "a")], REQUESTED),
        ([("take", "a"), ("release", "a")], MISSING),
        ([("take", "a"), ("take", "b"), ("release", "a")], REQUESTED),  # b is still on it
        ([("take", "a"), ("release", "b")], REQUESTED),  # b was never on it
        ([("take", "a"), ("claim", "A")], WRITING),
        ([("claim", "A")], WRITING),  # a copy whose connection had let it go
        ([("take", "a"), ("claim", "A"), ("claim", "B")], WRITING),  # a late copy: ignored
        ([("take", "a"), ("claim", "A"), ("written", True)], HAVE),
        ([("take", "a"), ("claim", "A"), ("written", False)], UNCHECKED),
        ([("take", "a"), ("claim", "A"), ("unwritten", None)], MISSING),
        ([("claim", "A"), ("written", False), ("checked", True)], HAVE),
        ([("claim", "A"), ("written", False), ("checked", False)], MISSING),
        ([("claim", "A"), ("written", True), ("release", "a")], HAVE),
    ]

    def test_each_run_of_events_ends_in_its_state_and_the_book_agrees_with_itself(self):
        for events, state in self.CASES:
            with self.subTest(events=events):
                book = PieceBook(3, Bitfield(3))
                for event, arg in events:
                    if arg is None:
                        getattr(book, event)(0)
                    else:
                        getattr(book, event)(0, arg)
                    book.check_invariant()
                self.assertEqual(book.state(0), state)

    ILLEGAL = [  # (state, event): refused
        (HAVE, ("take", "a")),
        (WRITING, ("take", "a")),
        (UNCHECKED, ("take", "a")),
        (MISSING, ("written", True)),
        (REQUESTED, ("written", False)),
        (HAVE, ("checked", True)),
        (WRITING, ("checked", False)),
    ]

    def test_an_event_the_state_does_not_allow_raises(self):
        for state, (event, arg) in self.ILLEGAL:
            with self.subTest(state=state, event=event):
                book = book_in(state)
                with self.assertRaises(IllegalTransition):
                    getattr(book, event)(0, arg)

    def test_the_first_copy_gets_the_other_fetchers_to_cut_short(self):
        book = PieceBook(1, Bitfield(1))
        book.take(0, "a")
        book.take(0, "b")
        self.assertEqual(book.claim(0, "B"), {"a", "b"})
        self.assertIsNone(book.claim(0, "A"))

    def test_done_waits_for_the_writing_to_end(self):
        book = PieceBook(1, Bitfield(1))
        book.claim(0, "A")
        self.assertFalse(book.done)
        book.written(0, False)
        self.assertTrue(book.done)
        self.assertEqual(len(book.have), 0)  # unchecked: not shared

    def test_pieces_verified_on_disk_start_as_have(self):
        have = Bitfield(3)
        have.add(1)
        book = PieceBook(3, have)
        self.assertEqual([book.state(i) for i in range(3)], [MISSING, HAVE, MISSING])
        book.check_invariant()


class PlanInvariant(unittest.TestCase):
    def test_random_runs_of_events_keep_the_plan_consistent(self):
        for seed in range(30):
            rng = random.Random(seed)
            plan = Plan(8, Bitfield(8), rng=random.Random(seed))
            plan.alone = seed % 2 == 0
            keys = ["a", "b", "c"]
            for key in keys:
                plan.add_source(key, key.upper())
            for _ in range(60):
                key = rng.choice(keys)
                fetching = sorted(plan.sources[key].fetching)
                roll = rng.random()
                if fetching and roll < 0.3:
                    plan.release(key, rng.choice(fetching))
                elif fetching and roll < 0.8:
                    index = rng.choice(fetching)
                    arrival = plan.claim(key, key.upper(), index)
                    if arrival.new:
                        plan.written(index, verified=not plan.alone)
                else:
                    plan.next_run(key, 3)
                plan.check_invariant()
            with self.subTest(seed=seed):
                self.assertEqual(plan.here + len(plan.missing), plan.count)


if __name__ == "__main__":
    unittest.main()
