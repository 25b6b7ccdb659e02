"""Following tasks to the end: one poll loop for any number of tasks.

Each task is polled on its own schedule: where the journal recorded how long tasks like it took, polls are
sparse early and dense around its likely end (see `timing`); otherwise the interval grows from a few
seconds to a cap. Tasks that fall due together are queried together (in batches where the provider has a
batch query), the deadline is real wall-clock time and also bounds each HTTP call, and each task has a
budget of consecutive transient errors. A rate limit seen by one query holds back every query to that
provider (see `transport`): no poll goes out before it passes, whatever the schedule says. A callback
that reports a task's end (recorded by `kling callback listen`) makes it due at once.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from kling_cli import envvars
from kling_cli.errors import ConfigError, DeadlineExceeded, KlingError, ProviderUnavailable, UsageError
from kling_cli.models import Task, TaskStatus
from kling_cli.taskrefs import TaskRef

DEFAULT_TIMEOUT = 3600.0
POLL_START = 2.0
POLL_FACTOR = 1.5
POLL_CAP = 30.0
#: consecutive failed polls (each already retried by the transport) before a task is given up on
TRANSIENT_BUDGET = 5
#: tasks falling due this close together are queried in the same round
COALESCE = 0.25
#: how often the journal is asked which tasks a callback reported ended (seconds, scaled like the schedule)
CALLBACK_CHECK = 1.0

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?"
                       r"(?:(\d+(?:\.\d+)?)ms)?")
_UNITS = (3600.0, 60.0, 1.0, 0.001)


def parse_duration(text: str) -> float:
    """`90s`, `20m`, `1h`, `1.5h`, `250ms`, compound `1h30m` or `2m30s`, or plain seconds."""
    # spaces may separate a number from its unit, and one part from the next ("1h 30m", "90 s")
    compact = re.sub(r"(?<=\d)\s+(?=[a-z])|(?<=[a-z])\s+(?=\d)", "", (text or "").strip())
    match = _DURATION.fullmatch(compact)
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        seconds = float(compact)
    elif match is not None:
        seconds = sum(float(value) * unit for value, unit in zip(match.groups(), _UNITS) if value is not None)
    else:
        seconds = math.nan
    if not compact or not math.isfinite(seconds):  # too many digits make inf
        raise UsageError(f"not a duration: {text!r}", hint="use numbers with h, m, s or ms, e.g. 90s, 20m, 1h30m")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 10 and round(seconds, 1) != round(seconds):
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class PollPolicy:
    start: float = POLL_START
    factor: float = POLL_FACTOR
    cap: float = POLL_CAP
    fixed: float | None = None
    #: KLING_TIME_SCALE: this policy's times are divided by it (a bench scaling a real account down)
    scale: float = 1.0
    #: where the schedule learns each task's likely run time and age (`timing.History`); None: never
    history: Any = None
    #: the clock time before which the provider asked for no request (the transport's rate-limit gate)
    gate: Callable[[], float] | None = None
    #: of these task ids, those a callback reported ended (None: no callbacks are expected)
    ended: Callable[[list[str]], set[str]] | None = None

    def next(self, previous: float | None) -> float:
        """The growing interval: `start`, then `factor` times the previous one, up to `cap`."""
        if self.fixed is not None:
            return self.fixed
        if previous is None:
            return self.start
        return min(previous * self.factor, self.cap)

    def delay(self, previous: float | None, age: float | None = None, timing: Any = None) -> float:
        """Seconds to the next poll of a task last polled `previous` seconds before (None: never), now `age`
        seconds old: the learned schedule where its kind has a history (`timing`, a `timing.Timing`), else the
        growing interval. A fixed interval (--interval) wins over both."""
        if self.fixed is not None or timing is None or age is None:
            return self.next(previous)
        return timing.gap(age, previous)

    @property
    def coalesce(self) -> float:
        return COALESCE / self.scale

    @classmethod
    def from_options(cls, interval: float | None, env: Mapping[str, str] = os.environ) -> PollPolicy:
        if interval is not None:
            return cls(fixed=interval)
        if env.get(envvars.POLL_INTERVAL):
            # a development knob (the tests poll every 50 ms); never a busy loop
            try:
                return cls(fixed=min(max(parse_duration(env[envvars.POLL_INTERVAL]), 0.01), POLL_CAP))
            except UsageError as exc:  # a setting from the environment: configuration, exit 3
                raise ConfigError(f"{envvars.POLL_INTERVAL}: {exc.message}", hint=exc.hint, code="bad_option") from None
        scale = time_scale(env)
        return cls(start=POLL_START / scale, cap=POLL_CAP / scale, scale=scale)


def today_ages(policy: PollPolicy, horizon: float) -> list[float]:
    """The ages at which the growing interval polls a task followed from its creation, up to `horizon`."""
    ages, age, interval = [], 0.0, None
    while age < horizon:
        interval = policy.next(interval)
        age += interval
        ages.append(age)
    return ages


def time_scale(env: Mapping[str, str] = os.environ) -> float:
    """KLING_TIME_SCALE, a development knob: a bench that models a real account at 1:30 sets 30, and every wait
    `kling` chooses (poll intervals, a row's requeue delay) is 30 times shorter."""
    try:
        scale = float(env.get(envvars.TIME_SCALE) or 1.0)
    except ValueError:  # a setting from the environment: configuration, exit 3
        raise ConfigError(f"{envvars.TIME_SCALE}: not a number: {env[envvars.TIME_SCALE]!r}",
                          code="bad_option") from None
    return scale if 0 < scale < float("inf") else 1.0




@dataclass
class _Tracked:
    ref: TaskRef
    due: float
    interval: float | None = None
    failures: int = 0
    task: Task | None = None
    #: the clock time the task was created, where known (the learned schedule needs its age)
    born: float | None = None
    #: a callback reported its end: queried at once, not again for that
    hinted: bool = False
    #: queried at least once (a deadline that passed before then still allows one look)
    polled: bool = False


@dataclass
class WaitOutcome:
    #: terminal tasks, in the order they finished
    finished: list[Task] = field(default_factory=list)
    #: ids still running when the wait stopped (deadline, --fail-fast)
    pending: list[str] = field(default_factory=list)
    #: ids whose queries failed for good (unknown id, provider down beyond the budget)
    errors: dict[str, KlingError] = field(default_factory=dict)
    timed_out: bool = False
    stopped_early: bool = False
    #: how many queries were sent, for the benchmarks
    queries: int = 0


class Waiter:
    def __init__(
        self,
        get_many: Callable[[list[TaskRef], float | None], dict[str, Task | KlingError]],
        refs: list[TaskRef],
        *,
        timeout: float,
        policy: PollPolicy,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        fail_fast: bool = False,
        on_update: Callable[[Task], None] = lambda _t: None,
        on_done: Callable[[Task], None] = lambda _t: None,
        on_error: Callable[[str, KlingError, bool], None] = lambda _i, _e, _final: None,
    ) -> None:
        self.get_many = get_many
        self.refs = refs
        self.timeout = timeout
        self.policy = policy
        self.clock = clock
        self.sleep = sleep
        self.fail_fast = fail_fast
        self.on_update = on_update
        self.on_done = on_done
        self.on_error = on_error
        self.outcome = WaitOutcome()
        self.tracked: dict[str, _Tracked] = {}
        self.deadline = float("inf")
        self.next_check = 0.0
        #: callbacks arrive: polls are only a fallback, at the policy's cap
        self.called_back = False
        #: tasks polls saw end since the journal was last asked about callbacks: did one come for them?
        self._ended_since: list[str] = []

    def start(self) -> None:
        self.deadline = self.clock() + self.timeout
        if self.policy.history is not None and self.refs:
            self.policy.history.know([ref.id for ref in self.refs])
        for ref in self.refs:
            self.add(ref)

    def add(self, ref: TaskRef, *, fresh: bool = False) -> None:
        """Follow one more task (a batch adds each as it is submitted), first polled now, or (`fresh`: it was
        just created) when its schedule says."""
        if ref.task is not None and ref.task.terminal:
            self._finish(ref.task)  # a finished task in the input does not change: no query needed
            return
        now = self.clock()
        tracked = _Tracked(ref, now, born=now if fresh else None)
        history = self.policy.history
        if fresh:
            tracked.interval = self._delay(tracked, now) or None
            tracked.due = now + (tracked.interval or 0.0)
        elif history is not None:
            age = history.age(ref)
            tracked.born = None if age is None else now - age
        self.tracked[ref.id] = tracked

    def _delay(self, tracked: _Tracked, now: float) -> float:
        history = self.policy.history
        timing = history.timing(tracked.ref) if history is not None else None
        age = None if tracked.born is None else now - tracked.born
        delay = self.policy.delay(tracked.interval, age, timing)
        return max(delay, self.policy.cap) if self.called_back else delay

    def step(self) -> float | None:
        """Query the tasks that are due; return the seconds until the next one is, or None if none is left."""
        if not self.tracked or self.outcome.stopped_early:
            return None
        now = self.clock()
        if now >= self.deadline:
            unseen = [t for t in self.tracked.values() if not t.polled]
            if not unseen:
                self.outcome.timed_out = True
                return None
            # a deadline already past (`--timeout 0`) still gets one look at each task, on the requests' own timeout
            self._poll(unseen, None)
            return 0.0
        if self.policy.ended is not None and now >= self.next_check:
            self._check_callbacks(now)
        if self.policy.gate is not None and self.policy.gate() > now:
            return self.policy.gate() - now  # the provider asked us to wait: that wins over any schedule
        wake = min(t.due for t in self.tracked.values())
        if self.policy.ended is not None:
            wake = min(wake, self.next_check)
        if wake > now:
            return wake - now
        self._poll([t for t in self.tracked.values() if t.due <= now + self.policy.coalesce], self.deadline)
        return 0.0

    def _poll(self, due: list[_Tracked], deadline: float | None) -> None:
        self.outcome.queries += len(due)
        results = self.get_many([t.ref for t in due], deadline)
        for tracked in due:
            tracked.polled = True
            self._record(tracked, results.get(tracked.ref.id), self.deadline)
            if self.outcome.stopped_early:
                break

    def _check_callbacks(self, now: float) -> None:
        """Tasks a callback reported ended are due now (their result still comes from a query)."""
        assert self.policy.ended is not None
        self.next_check = now + CALLBACK_CHECK / self.policy.scale
        asked, self._ended_since = [i for i, t in self.tracked.items() if not t.hinted] + self._ended_since, []
        try:
            ended = self.policy.ended(asked) if asked else set()
        except Exception:  # the journal is best-effort here: polls go on
            return
        for task_id in ended:
            self.called_back = True
            tracked = self.tracked.get(task_id)
            if tracked is not None and not tracked.hinted:
                tracked.hinted, tracked.due = True, now

    def run(self) -> WaitOutcome:
        self.start()
        while True:
            wait = self.step()
            if wait is None:
                break
            if wait > 0:
                self.sleep(min(wait, max(self.deadline - self.clock(), 0.0)))
        self.outcome.pending = list(self.tracked)
        return self.outcome

    def _record(self, tracked: _Tracked, result: Task | KlingError | None, deadline: float) -> None:
        task_id = tracked.ref.id
        if isinstance(result, Task):
            tracked.failures = 0
            tracked.task = result
            tracked.ref.kind = result.kind
            if result.terminal:
                del self.tracked[task_id]
                self._finish(result)
                return
            self.on_update(result)
            now = self.clock()
            tracked.interval = self._delay(tracked, now)
            tracked.due = now + tracked.interval
            return
        if isinstance(result, DeadlineExceeded):
            self.outcome.timed_out = True
            tracked.due = deadline
            return
        if isinstance(result, ProviderUnavailable) and tracked.failures < TRANSIENT_BUDGET:
            tracked.failures += 1
            self.on_error(task_id, result, False)
            tracked.interval = self.policy.next(tracked.interval)
            tracked.due = self.clock() + tracked.interval
            return
        error = result if isinstance(result, KlingError) else KlingError(f"no answer about task {task_id}")
        del self.tracked[task_id]
        self.outcome.errors[task_id] = error
        self.on_error(task_id, error, True)

    def _finish(self, task: Task) -> None:
        if self.policy.ended is not None and not self.called_back:
            self._ended_since.append(task.id)
        self.outcome.finished.append(task)
        self.on_done(task)
        if self.fail_fast and task.status is TaskStatus.FAILED:
            self.outcome.stopped_early = True
