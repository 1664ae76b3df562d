"""How ``qapp race`` turns answers into lost and repeated counts, on hand-made runs."""

from __future__ import annotations

from qapp.tools.race import Outcome, tally

A, B = 101, 202  # two worker pids


def counts(
    strategy: str,
    answers: list[tuple[int, int]],
    finals: dict[int | None, int],
    store: str = "sqlite",
) -> Outcome:
    return tally(strategy, store, None, len(answers), answers, 0, 1.0, finals)


def test_locked_on_two_workers_repeats_but_loses_nothing() -> None:
    """Two workers that each count alone repeat numbers without losing an increment."""
    outcome = counts("locked", [(1, A), (2, A), (3, A), (1, B), (2, B)], {A: 3, B: 2})
    assert (outcome.distinct, outcome.repeated, outcome.lost) == (3, 2, 0)
    assert outcome.workers_seen == 2


def test_unsafe_in_one_worker_loses_what_it_repeats() -> None:
    """Three increments that hand out 1, 1, 2 and leave the counter at 2 lost one update."""
    outcome = counts("unsafe", [(1, A), (1, A), (2, A)], {A: 2})
    assert (outcome.repeated, outcome.lost) == (1, 1)


def test_a_counter_written_backwards_loses_more_than_it_repeats() -> None:
    """A stale write can lower the counter: answers 1, 2, 1 leaving 1 lost two updates."""
    outcome = counts("unsafe", [(1, A), (2, A), (1, A)], {A: 1})
    assert (outcome.repeated, outcome.lost) == (1, 2)


def test_shared_counter_counts_from_where_it_started() -> None:
    """A shared counter that started at 10 and handed out 11..13 lost and repeated nothing."""
    outcome = counts("atomic", [(12, A), (11, B), (13, A)], {None: 13})
    assert (outcome.distinct, outcome.repeated, outcome.lost) == (3, 0, 0)


def test_shared_unsafe_across_workers_is_one_counter() -> None:
    """Two workers racing on one shared counter: 4 answers that left it at 2 lost 2."""
    outcome = counts("shared-unsafe", [(1, A), (1, B), (2, A), (2, B)], {None: 2})
    assert (outcome.repeated, outcome.lost) == (2, 2)


def test_unread_worker_counts_from_its_highest_answer() -> None:
    """A worker whose final value could not be read is counted up to its highest number."""
    outcome = counts("locked", [(1, A), (2, A), (1, B)], {A: 2})
    assert outcome.lost == 0


def test_memory_store_makes_shared_strategies_per_worker() -> None:
    """On memory:// each worker has its own store, so atomic counts per worker there."""
    answers = [(1, A), (2, A), (1, B)]
    outcome = counts("atomic", answers, {A: 2, B: 1}, store="memory")
    assert (outcome.repeated, outcome.lost) == (1, 0)


def test_no_answers_count_nothing() -> None:
    """A run in which every request failed reports zero answers and nothing lost."""
    outcome = tally("atomic", "redis", 4, 50, [], 50, 1.0, {})
    assert (outcome.answers, outcome.errors, outcome.lost, outcome.distinct) == (0, 50, 0, 0)
    assert outcome.as_dict()["requests_per_second"] == 50.0
