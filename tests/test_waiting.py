"""The poll loop's policy, on a fake clock: intervals, the transient-error budget, grouping, the deadline."""

from __future__ import annotations

import pytest

from kling_cli.errors import NotFound, ProviderUnavailable, UsageError
from kling_cli.models import Task, TaskStatus
from kling_cli.taskrefs import TaskRef
from kling_cli.waiting import TRANSIENT_BUDGET, PollPolicy, Waiter, parse_duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def waiter(get_many, refs, clock, **kwargs) -> Waiter:
    return Waiter(get_many, refs, timeout=kwargs.pop("timeout", 3600), policy=kwargs.pop("policy", PollPolicy()),
                  clock=clock, sleep=clock.sleep, **kwargs)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("20m", 1200), ("1h", 3600), ("1.5h", 5400), ("250ms", 0.25),
                                          ("7", 7)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_durations():
    for text in ("soon", "", "1d", "-5s"):
        with pytest.raises(UsageError):
            parse_duration(text)


def test_the_default_interval_grows_from_2_s_to_a_30_s_cap():
    policy, seen, interval = PollPolicy(), [], None
    for _ in range(10):
        interval = policy.next(interval)
        seen.append(interval)
    assert seen[:4] == [2.0, 3.0, 4.5, 6.75] and seen[-1] == 30.0
    assert PollPolicy(fixed=5).next(30) == 5


def test_each_task_is_polled_on_its_own_growing_interval_and_due_tasks_together():
    clock = Clock()
    calls: list[tuple[float, list[str]]] = []
    done_at = {"a": 9.0, "b": 30.0}

    def get_many(refs, deadline):
        calls.append((clock.now, [r.id for r in refs]))
        return {r.id: Task(r.id, "t2v", TaskStatus.SUCCEEDED if clock.now >= done_at[r.id] else TaskStatus.RUNNING)
                for r in refs}

    outcome = waiter(get_many, [TaskRef("a"), TaskRef("b")], clock).run()
    assert [t.id for t in outcome.finished] == ["a", "b"]
    assert calls[0] == (0.0, ["a", "b"])  # grouped while they fall due together
    assert [round(t, 2) for t, _ in calls] == [0.0, 2.0, 5.0, 9.5, 16.25, 26.38, 41.56]
    assert outcome.queries == 11  # a done at its 4th poll, b at its 7th


def test_five_transient_failures_in_a_row_give_a_task_up():
    clock = Clock()
    errors: list[tuple[str, bool]] = []

    def get_many(refs, deadline):
        return {r.id: ProviderUnavailable("down", retryable=True) for r in refs}

    outcome = waiter(get_many, [TaskRef("x")], clock, policy=PollPolicy(fixed=1),
                     on_error=lambda i, e, final: errors.append((i, final))).run()
    assert errors == [("x", False)] * TRANSIENT_BUDGET + [("x", True)]
    assert "x" in outcome.errors and outcome.pending == []


def test_an_unknown_task_is_dropped_at_once_and_others_go_on():
    clock = Clock()

    def get_many(refs, deadline):
        return {r.id: NotFound("no such task") if r.id == "gone" else Task(r.id, "t2v", TaskStatus.SUCCEEDED)
                for r in refs}

    outcome = waiter(get_many, [TaskRef("gone"), TaskRef("ok")], clock).run()
    assert list(outcome.errors) == ["gone"] and [t.id for t in outcome.finished] == ["ok"]


def test_the_deadline_stops_the_loop_with_the_running_ids():
    clock = Clock()

    def get_many(refs, deadline):
        return {r.id: Task(r.id, "t2v", TaskStatus.RUNNING) for r in refs}

    outcome = waiter(get_many, [TaskRef("slow")], clock, timeout=10).run()
    assert outcome.timed_out and outcome.pending == ["slow"] and clock.now <= 10.0


def test_a_finished_task_in_the_input_is_not_queried():
    clock = Clock()

    def get_many(refs, deadline):
        raise AssertionError("queried")

    done = Task("d", "t2v", TaskStatus.SUCCEEDED)
    outcome = waiter(get_many, [TaskRef("d", task=done)], clock).run()
    assert outcome.finished == [done]
