"""The poll schedule learned from recorded run times, as a pure function and in the poll loop on a fake clock:
history moves the polls towards the expected end, no history is the growing interval, the rate-limit gate
wins, callbacks make a task due at once."""

from __future__ import annotations

import math
import random

import pytest

from kling_cli.models import Task, TaskStatus
from kling_cli.taskrefs import TaskRef
from kling_cli.timing import MIN_HISTORY, Timing, _queries, run_seconds, timing_key
from kling_cli.waiting import PollPolicy, Waiter, today_ages

from test_waiting import Clock


def lognormal(median: float, sigma: float, count: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [median * math.exp(rng.gauss(0, sigma)) for _ in range(count)]


def ages_of(policy: PollPolicy, timing: Timing | None, until: float) -> list[float]:
    """The poll ages of a task followed from its creation, by the policy's pure function."""
    ages, age, previous = [], 0.0, None
    while age < until:
        previous = policy.delay(previous, age, timing)
        age += previous
        ages.append(age)
    return ages


class StubHistory:
    """What `timing.History` answers, without a journal: every task has the same run times."""

    def __init__(self, timing: Timing | None, ages: dict[str, float] | None = None) -> None:
        self._timing, self._ages = timing, ages or {}

    def timing(self, ref: TaskRef) -> Timing | None:
        return self._timing

    def age(self, ref: TaskRef) -> float | None:
        return self._ages.get(ref.id)


def follow(policy: PollPolicy, ends: dict[str, float], clock: Clock) -> tuple[list[tuple[float, str]], Waiter]:
    """Submit each task at t=0 (as a batch does) and poll it on a fake clock until it ends at `ends[id]`."""
    calls: list[tuple[float, str]] = []

    def get_many(refs, deadline):
        calls.extend((clock.now, r.id) for r in refs)
        return {r.id: Task(r.id, "t2v", TaskStatus.SUCCEEDED if clock.now >= ends[r.id] else TaskStatus.RUNNING)
                for r in refs}

    waiter = Waiter(get_many, [], timeout=3600, policy=policy, clock=clock, sleep=clock.sleep)
    waiter.start()
    for task_id in ends:
        waiter.add(TaskRef(task_id, "t2v"), fresh=True)
    waiter.run()
    return calls, waiter


def test_without_history_the_schedule_is_the_growing_interval():
    policy = PollPolicy()
    assert Timing.fit([90.0] * (MIN_HISTORY - 1), policy) is None
    assert ages_of(policy, None, 60) == pytest.approx([2, 5, 9.5, 16.25, 26.375, 41.5625, 64.34375])
    calls, _ = follow(PollPolicy(history=StubHistory(None)), {"a": 50.0}, Clock())
    assert [round(t, 2) for t, _ in calls] == [2.0, 5.0, 9.5, 16.25, 26.38, 41.56, 64.34]


def test_history_moves_polls_towards_the_expected_end_for_the_same_queries():
    policy = PollPolicy()
    history = lognormal(90, 0.3, 60)
    timing = Timing.fit(history, policy)
    learned = ages_of(policy, timing, 300)
    today = ages_of(policy, None, 300)
    # sparse early: no more than two polls in the first minute (the growing interval makes six)...
    assert sum(a < 60 for a in learned) <= 2 < sum(a < 60 for a in today)
    # ...dense where the recorded tasks ended: gaps of a few seconds between their 25th and 75th percentiles
    q25, q75 = sorted(history)[15], sorted(history)[45]
    gaps = [b - a for a, b in zip(learned, learned[1:]) if q25 <= a <= q75]
    assert gaps and max(gaps) < 10 and min(today[i + 1] - today[i] for i, a in enumerate(today[:-1]) if a >= q25) >= 22
    # the same queries per task on the recorded run times, each end noticed far sooner
    ordered = sorted(history)
    assert _queries(learned, ordered) <= _queries(today_ages(policy, 400), ordered)
    lag = lambda ages: sum(min(a for a in ages if a >= d) - d for d in ordered) / len(ordered)  # noqa: E731
    assert lag(learned) < lag(today) / 3


def test_in_the_poll_loop_history_finds_an_end_within_seconds_where_the_growing_interval_takes_half_a_minute():
    timing = Timing.fit(lognormal(90, 0.3, 60), PollPolicy())
    learned, _ = follow(PollPolicy(history=StubHistory(timing)), {"a": 97.0, "b": 83.0}, Clock())
    today, _ = follow(PollPolicy(history=StubHistory(None)), {"a": 97.0, "b": 83.0}, Clock())
    seen = lambda calls, task: max(t for t, i in calls if i == task)  # noqa: E731
    assert seen(learned, "a") - 97 < 6 and seen(today, "a") - 97 > 25
    assert seen(learned, "b") - 83 < 6 and seen(today, "b") - 83 > 10
    assert len(learned) <= len(today)


def test_short_tasks_are_not_jumped_over_and_late_ones_are_not_hammered():
    policy = PollPolicy()
    short = Timing.fit(lognormal(8, 0.2, 30), policy)
    assert policy.delay(None, 0.0, short) < 8  # the first poll comes before the recorded tasks end, not at the cap
    slow = Timing.fit(lognormal(90, 0.2, 30), policy)
    # a task far later than any recorded one: the gap grows back to the cap, as the growing interval's does
    gaps, previous = [], None
    for age in range(600, 1200, 30):
        previous = policy.delay(previous, float(age), slow)
        gaps.append(previous)
    assert gaps[-1] == policy.cap and gaps == sorted(gaps)


def test_a_fixed_interval_wins_over_history():
    timing = Timing.fit(lognormal(90, 0.3, 30), PollPolicy())
    assert PollPolicy(fixed=5).delay(None, 10.0, timing) == 5 == PollPolicy(fixed=5).delay(5, 88.0, timing)


def test_the_rate_limit_gate_wins_over_the_schedule():
    timing = Timing.fit(lognormal(90, 0.2, 60), PollPolicy())
    clock = Clock()
    policy = PollPolicy(history=StubHistory(timing), gate=lambda: 150.0)  # a 429 asked for quiet until t=150
    calls, _ = follow(policy, {"a": 92.0}, clock)
    assert calls == [(150.0, "a")]


def test_a_callback_makes_the_task_due_at_once_and_polls_become_a_fallback():
    clock = Clock()
    ends = {"a": 20.0, "b": 400.0}
    # the journal, as `callback listen` fills it: a's callback came when it ended, b's was lost
    policy = PollPolicy(ended=lambda ids: {i for i in ids if i == "a" and clock.now >= ends[i]})
    calls, waiter = follow(policy, ends, clock)
    a_polls = [t for t, i in calls if i == "a"]
    assert 20 <= a_polls[-1] <= 21  # at the next journal check after its callback, not at 26.4
    b_polls = [t for t, i in calls if i == "b" and t > 21]
    gaps = [later - earlier for earlier, later in zip(b_polls, b_polls[1:])]
    assert waiter.called_back and gaps and all(gap >= policy.cap - 1e-9 for gap in gaps)
    assert 400 <= b_polls[-1] <= 400 + policy.cap  # no callback for b: the fallback polls still find its end


def test_timing_keys_and_run_seconds():
    assert timing_key("kling", "t2v", "kling-v2-6", "std", 5) == "kling/t2v/kling-v2-6/std/5"
    assert timing_key("aigw", "motion", None, "pro", None) == "aigw/motion/-/pro/-"
    assert run_seconds("2026-01-01T00:00:00.000Z", "2026-01-01T00:01:30.500Z") == 90.5
    assert run_seconds(None, "2026-01-01T00:01:30Z") is None
    assert run_seconds("2026-01-01T00:02:00Z", "2026-01-01T00:01:00Z") is None  # clocks disagree: ignored


def test_a_batch_records_what_the_schedule_learns_from(kling, kling_profile, sandbox, tmp_path):
    import os
    import time
    from pathlib import Path

    from conftest import TASK_SECONDS
    from kling_cli.journal import open_journal
    from kling_cli.timing import History

    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt\n" + "".join(f"fox {n}\n" for n in range(MIN_HISTORY)))
    result = kling("submit", "t2v", "--from-csv", jobs, "--model", "kling-v2-6", "--mode", "std", "--duration", "5",
                   "--wait")
    assert result.exit_code == 0, result
    journal = open_journal(str(Path(os.environ["KLING_DATA_DIR"]) / "journal.db"))
    try:
        entries = journal.history(limit=None)
        assert {e.timing_key for e in entries} == {"kling/t2v/kling-v2-6/std/5"}
        times = journal.run_times("custom", "kling/t2v/kling-v2-6/std/5", limit=100)
        # the provider's own created and finished times: the run time the sandbox gave each task, to the ms
        assert len(times) == MIN_HISTORY and all(abs(seconds - TASK_SECONDS) < 0.01 for _e, seconds in times)
        history = History(journal, "custom", PollPolicy(), time.monotonic)
        ref = TaskRef(entries[0].task_id)
        assert history.timing(ref).median == pytest.approx(TASK_SECONDS, abs=0.01)
        assert 0 < history.age(ref) < 60
        assert history.timing(TaskRef("not-in-the-journal")) is None
    finally:
        journal.close()
