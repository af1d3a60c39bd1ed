"""The download plan without sockets: which piece next from whom, end game, blame, slow holders."""

import random
import unittest

from p2p.core.pieces import Bitfield
from p2p.core.picker import ENDGAME_COPIES, ORDER_WINDOW
from p2p.core.plan import BAN_STRIKES, SLOW_GRACE_S, SLOW_RATIO, SUPER_SEED_TAIL_PIECES, Plan


def bits(count, indices):
    field = Bitfield(count)
    for i in indices:
        field.add(i)
    return field


def drain(plan, key):
    """Fetch and deliver, good, every piece ``key`` is given, in the order given."""
    order = []
    while (index := plan.next_piece(key)) is not None:
        order.append(index)
        plan.arrived(key, index, True)
    return order


class InOrder(unittest.TestCase):
    def test_alone_with_full_holders_the_pieces_go_in_order(self):
        plan = Plan(6, Bitfield(6))
        plan.add_source("a", "A")
        plan.add_source("b", "B")
        self.assertEqual([plan.next_piece("a"), plan.next_piece("b"), plan.next_piece("a")],
                         [0, 1, 2])
        self.assertTrue(plan.alone)

    def test_a_released_piece_is_taken_again_first(self):
        plan = Plan(4, Bitfield(4))
        plan.add_source("a", "A")
        plan.add_source("b", "B")
        self.assertEqual(plan.next_piece("a"), 0)
        self.assertEqual(plan.next_piece("b"), 1)
        plan.release("a", 0)
        self.assertEqual(plan.next_piece("b"), 0)

    def test_what_is_verified_on_disk_is_not_fetched_again(self):
        plan = Plan(5, bits(5, [0, 1, 3]))
        plan.add_source("a", "A")
        self.assertEqual(drain(plan, "a"), [2, 4])
        self.assertTrue(plan.done)


class RarestFirst(unittest.TestCase):
    def test_a_partial_holder_ends_the_in_order_mode(self):
        plan = Plan(4, Bitfield(4))
        plan.add_source("a", "A")
        plan.add_source("b", "B", bits(4, [1]))
        self.assertFalse(plan.alone)

    def test_the_piece_fewest_holders_have_comes_first(self):
        plan = Plan(4, Bitfield(4), rng=random.Random(1))
        plan.add_source("seed", "S")
        plan.add_source("p1", "P1", bits(4, [0, 1, 2]))
        plan.add_source("p2", "P2", bits(4, [0, 1]))
        self.assertEqual(plan.next_piece("seed"), 3)  # only the seed has piece 3
        self.assertEqual(plan.next_piece("p1"), 2)  # two holders have 2, three have 0 and 1

    def test_a_holder_is_only_asked_for_what_it_has(self):
        plan = Plan(8, Bitfield(8))
        plan.add_source("p", "P", bits(8, [2, 5]))
        self.assertEqual(sorted(drain(plan, "p")), [2, 5])
        self.assertFalse(plan.done)

    def test_downloaders_that_start_together_ask_for_different_pieces(self):
        firsts = set()
        for seed in range(20):
            plan = Plan(64, Bitfield(64), rng=random.Random(seed))
            plan.alone = False  # other peers are downloading it too
            plan.add_source("seed", "S")
            firsts.add(plan.next_piece("seed"))
        self.assertGreater(len(firsts), 10)

    def test_a_seed_is_asked_first_for_the_pieces_it_has_sent_to_nobody(self):
        plan = Plan(8, Bitfield(8), rng=random.Random(3))
        plan.alone = False
        plan.add_source("seed", "S").sent = bits(8, [0, 1, 2, 3, 4, 6, 7])
        self.assertEqual(plan.next_piece("seed"), 5, "super-seeding: the piece nobody got")
        taken = {plan.next_piece("seed") for _ in range(7)}
        self.assertEqual(taken, {0, 1, 2, 3, 4, 6, 7}, "then the others, all of them")

    def test_pieces_come_roughly_in_order_for_the_whole_files_hash(self):
        plan = Plan(8 * ORDER_WINDOW, Bitfield(8 * ORDER_WINDOW), rng=random.Random(5))
        plan.alone = False
        plan.add_source("seed", "S")
        firsts = []
        for _ in range(ORDER_WINDOW):
            free = sorted(set(range(plan.count)) - set(firsts))
            firsts.append(plan.next_piece("seed"))
            self.assertIn(firsts[-1], free[:ORDER_WINDOW], "at random among the lowest free")
        self.assertNotEqual(firsts, sorted(firsts), "not in order: downloaders differ")

    def test_a_common_piece_at_the_start_is_not_left_for_last(self):
        count = 2 * ORDER_WINDOW
        plan = Plan(count, Bitfield(count))
        plan.add_source("p1", "P1", bits(count, range(count)))
        plan.add_source("p2", "P2", bits(count, range(ORDER_WINDOW)))
        self.assertLess(plan.next_piece("p1"), ORDER_WINDOW,
                        "rarest within the lowest pieces, not over the whole file")

    def test_pieces_a_seed_refused_are_asked_of_it_only_when_nothing_else_is_left(self):
        plan = Plan(4, Bitfield(4), rng=random.Random(2))
        plan.alone = False
        plan.add_source("seed", "S")
        plan.add_source("p", "P", bits(4, [1]))
        plan.taken("seed", [0, 1])  # sent to others: ask them
        self.assertEqual(sorted([plan.next_piece("seed"), plan.next_piece("seed")]), [2, 3])
        self.assertEqual(plan.next_piece("p"), 1, "the partial holder is asked for it")
        self.assertEqual(plan.next_piece("seed"), 0, "nothing else left: asked again")
        self.assertEqual(plan.sources["seed"].taken, set())

    def test_a_holder_that_lacks_a_piece_after_all_is_not_asked_for_it_again(self):
        plan = Plan(3, Bitfield(3))
        have = bits(3, [0, 1])
        plan.add_source("p", "P", have)
        first = plan.next_piece("p")
        plan.lacks("p", first)
        self.assertEqual(plan.next_piece("p"), ({0, 1} - {first}).pop())
        self.assertIsNone(plan.next_piece("p"))
        self.assertEqual(plan.availability[first], 0)


class EndGame(unittest.TestCase):
    def test_idle_connections_double_up_on_the_last_pieces_and_the_loser_is_cancelled(self):
        plan = Plan(2, Bitfield(2))
        for key in ("a", "b", "c"):
            plan.add_source(key, key.upper())
        self.assertEqual(plan.next_piece("a"), 0)
        self.assertEqual(plan.next_piece("b"), 1)
        self.assertEqual(plan.next_piece("c"), 0)  # every piece taken: the end game
        arrival = plan.arrived("c", 0, True)
        self.assertTrue(arrival.new)
        self.assertEqual(arrival.cancel, ["a"])
        self.assertNotIn(0, plan.sources["a"].fetching)

    def test_no_piece_is_fetched_more_than_endgame_copies_times(self):
        plan = Plan(1, Bitfield(1))
        keys = [f"k{i}" for i in range(ENDGAME_COPIES + 2)]
        for key in keys:
            plan.add_source(key, key)
        given = [plan.next_piece(key) for key in keys]
        self.assertEqual(given.count(0), ENDGAME_COPIES)

    def test_a_late_duplicate_changes_nothing(self):
        plan = Plan(1, Bitfield(1))
        plan.add_source("a", "A")
        plan.add_source("b", "B")
        plan.next_piece("a"), plan.next_piece("b")
        plan.arrived("a", 0, True)
        arrival = plan.arrived("b", 0, True)
        self.assertFalse(arrival.new)
        self.assertTrue(plan.done)


class Blame(unittest.TestCase):
    def test_a_bad_piece_costs_the_piece_and_a_strike_then_a_ban(self):
        plan = Plan(4, Bitfield(4))
        plan.add_source("liar", "L")
        plan.add_source("honest", "H")
        piece = plan.next_piece("liar")
        arrival = plan.arrived("liar", piece, False)
        self.assertTrue(arrival.bad)
        self.assertFalse(arrival.banned)
        self.assertIn(piece, plan.missing)
        self.assertNotEqual(plan.next_piece("liar"), piece)  # not asked of it again
        self.assertEqual(plan.next_piece("honest"), piece)  # but of someone else
        for _ in range(BAN_STRIKES - 1):
            arrival = plan.arrived("liar", plan.next_piece("liar"), False)
        self.assertTrue(arrival.banned)
        self.assertIsNone(plan.next_piece("liar"))
        self.assertEqual(plan.banned(), {"L"})
        self.assertEqual(plan.remove_source("liar"), "failed")

    def test_outcomes_busy_or_useless_is_cancelled_and_delivered_is_done(self):
        plan = Plan(2, Bitfield(2))
        plan.add_source("a", "A")
        plan.add_source("b", "B")
        plan.add_source("c", "C")
        plan.arrived("a", plan.next_piece("a"), True)
        plan.next_piece("b")
        plan.fault("b", "B")
        self.assertEqual(plan.remove_source("a"), "done")
        self.assertEqual(plan.remove_source("b"), "failed")
        self.assertEqual(plan.remove_source("c"), "cancelled")
        self.assertIn(1, plan.missing)
        self.assertEqual(plan.fetchers, {})  # b's piece is free for someone else

    def test_an_honest_holder_is_never_blamed_for_a_liars_piece(self):
        plan = Plan(3, Bitfield(3))
        plan.add_source("liar", "L")
        plan.add_source("honest", "H")
        plan.arrived("liar", plan.next_piece("liar"), False)
        drain(plan, "honest")
        self.assertTrue(plan.done)
        self.assertEqual(plan.sources["honest"].strikes, 0)
        self.assertEqual(plan.remove_source("honest"), "done")


class Alone(unittest.TestCase):
    def test_pieces_landed_unhashed_are_not_shared_until_checked(self):
        plan = Plan(3, Bitfield(3))
        plan.add_source("a", "A")
        for _ in range(3):
            plan.landed("a", "A", plan.next_piece("a"))
        self.assertTrue(plan.done)
        self.assertEqual(len(plan.have), 0)  # landed, not verified: never offered to others
        self.assertEqual(plan.progress(10, 30), 30)
        self.assertIsNone(plan.checked(0, True))
        self.assertIn(0, plan.have)
        self.assertEqual(plan.checked(2, False), "A")  # bad after all: fetched again
        self.assertEqual(plan.missing, {2})
        self.assertEqual(plan.sources["a"].strikes, 1)
        self.assertNotEqual(plan.next_piece("a"), 2)  # ...from someone else


class Slow(unittest.TestCase):
    def test_a_holder_much_slower_than_the_fastest_is_let_go_after_the_grace(self):
        plan = Plan(100, Bitfield(100))
        plan.add_source("fast", "F")
        plan.add_source("slow", "S")
        plan.sent("fast", 1, 0.0)
        plan.sent("slow", 1, 0.0)
        plan.sent("fast", 10_000_000, SLOW_GRACE_S - 1)
        self.assertEqual(plan.slow(SLOW_GRACE_S - 1), [])
        plan.sent("slow", 10_000_000 // (SLOW_RATIO * 2), SLOW_GRACE_S)
        self.assertEqual(plan.slow(SLOW_GRACE_S), ["slow"])

    def test_one_holder_alone_is_never_too_slow(self):
        plan = Plan(10, Bitfield(10))
        plan.add_source("only", "O")
        plan.sent("only", 1, 0.0)
        self.assertEqual(plan.slow(SLOW_GRACE_S * 10), [])


class Progress(unittest.TestCase):
    def test_verified_bytes_count_the_short_last_piece(self):
        plan = Plan(3, bits(3, [0, 2]))
        self.assertEqual(plan.progress(100, 250), 150)


if __name__ == "__main__":
    unittest.main()


class Pipelining(unittest.TestCase):
    def test_a_seed_with_few_pieces_sent_to_nobody_is_asked_one_piece_at_a_time(self):
        count = 4 * SUPER_SEED_TAIL_PIECES
        plan = Plan(count, Bitfield(count))
        plan.add_source("peer", "P", bits(count, [0]))
        plan.add_source("seed", "S")
        self.assertTrue(plan.pipelines("seed"), "a holder that says nothing of what it sent")
        plan.sources["seed"].sent = bits(count, [0, 1])
        self.assertTrue(plan.pipelines("seed"), "many pieces sent to nobody: seldom the same")
        plan.sources["seed"].sent = bits(count, range(count - 2))
        self.assertFalse(plan.pipelines("seed"), "among two, the others would ask for it too")
        plan.sources["seed"].sent = bits(count, range(count))
        self.assertTrue(plan.pipelines("seed"), "every piece has gone out once")
        self.assertTrue(plan.pipelines("peer"))
