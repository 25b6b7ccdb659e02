"""When to poll a task, learned from how long tasks like it took.

A task's run time depends on what it is: the provider, the kind, the model, the mode, the video's length
(its *timing key*). The journal records when each task was created and when it ended; from the recent run
times of the same key a lognormal is fitted (its spread pulled towards a prior while there are few), and
the polls go where the ends are. The gap before the next poll is the square-root rule: where the hazard
h(age) (the chance per second that a task still running at that age ends now) is high, polls are dense,
where it is near zero (early on) they are sparse, at most the policy's cap apart:

    gap = sqrt(2 * lam / h(age + gap / 2))       between the policy's minimum and its cap

which minimises the time a task's end goes unnoticed plus `lam` seconds per query. `lam` is chosen so that,
on run times drawn like the recorded ones, the schedule spends 92% of the queries per task the growing
interval would (2 s, x1.5, up to 30 s): fewer queries, placed where they find ends. Past nearly all of them
(a task later than its kind almost ever is) the model knows nothing: the gap grows again as the growing
interval's does. Without enough history the growing interval is used unchanged.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from kling_cli.waiting import PollPolicy

#: recorded run times needed before they shape the schedule, and how many recent ones are used
MIN_HISTORY = 5
RECENT = 100
#: the spread assumed before there is much history (log-seconds), worth this many run times
PRIOR_SIGMA = 0.35
PRIOR_WEIGHT = 3
#: never poll a task more often than this (seconds, divided by the time scale)
MIN_GAP = 1.0
#: the fitted run times are weighed at this many quantiles; the schedule may spend this share of the queries
#: the growing interval would on them
CALIBRATION_POINTS = 200
BUDGET_SHARE = 0.92
#: past this quantile of the fitted run times the history is no guide: the gap grows as the policy's does
LATE_QUANTILE = 0.995
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


def timing_key(dialect: str, kind: str, model: Any, mode: Any, duration: Any) -> str:
    """What a task's run time depends on (the provider is recorded beside it)."""
    return "/".join(str(part) if part not in (None, "") else "-" for part in (dialect, kind, model, mode, duration))


def run_seconds(created: str | None, finished: str | None) -> float | None:
    """Seconds between two UTC ISO 8601 times, or None when either is missing or the result is implausible."""
    if not created or not finished:
        return None
    try:
        seconds = (datetime.fromisoformat(finished.replace("Z", "+00:00"))
                   - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return None
    return seconds if 0 < seconds < 86400 else None


@dataclass
class Timing:
    """Run times of one timing key, fitted: `gap(age, previous)` is the delay before the next poll."""

    mu: float
    sigma: float
    count: int
    #: query cost in seconds of unnoticed end, set by `fit`
    lam: float
    min_gap: float
    cap: float
    factor: float
    #: the poll ages of a task followed from its creation (the first poll at ages[0])
    ages: tuple[float, ...] = ()

    @classmethod
    def fit(cls, durations: Iterable[float], policy: PollPolicy) -> Timing | None:
        seconds = [d for d in durations if d > 0]
        if len(seconds) < MIN_HISTORY:
            return None
        logs = [math.log(d) for d in seconds]
        mu = sum(logs) / len(logs)
        squares = sum((x - mu) ** 2 for x in logs) + PRIOR_WEIGHT * PRIOR_SIGMA ** 2
        sigma = max(math.sqrt(squares / (len(logs) - 1 + PRIOR_WEIGHT)), 0.02)
        timing = cls(mu, sigma, len(seconds), lam=1.0, min_gap=MIN_GAP / policy.scale, cap=policy.cap,
                     factor=policy.factor)
        timing._calibrate(policy)
        return timing

    # -- the fitted distribution -------------------------------------------------------------------
    @property
    def median(self) -> float:
        return math.exp(self.mu)

    def quantile(self, p: float) -> float:
        from statistics import NormalDist

        return math.exp(self.mu + self.sigma * NormalDist().inv_cdf(p))

    def hazard(self, age: float) -> float:
        """The chance per second that a task still running at `age` ends then."""
        if age <= 0:
            return 0.0
        z = (math.log(age) - self.mu) / self.sigma
        if z > 30:  # the Mills ratio's limit, where the tail underflows
            return z / (self.sigma * age)
        survival = 0.5 * math.erfc(z / _SQRT2)
        if survival <= 0:
            return z / (self.sigma * age)
        return math.exp(-z * z / 2) / (_SQRT2PI * self.sigma * age) / survival

    # -- the schedule ------------------------------------------------------------------------------
    def _rule(self, age: float, lam: float) -> float:
        """The largest gap g (min_gap..cap) with g^2 * h(age + g/2) <= 2 lam: bisected (it grows with g)."""
        low, high = self.min_gap, self.cap
        if high * high * self.hazard(age + high / 2) <= 2 * lam:
            return high
        if low * low * self.hazard(age + low / 2) > 2 * lam:
            return low
        for _ in range(14):
            middle = (low + high) / 2
            if middle * middle * self.hazard(age + middle / 2) <= 2 * lam:
                low = middle
            else:
                high = middle
        return low

    def _ages(self, lam: float, horizon: float) -> list[float]:
        ages, age, gap = [], 0.0, None
        late = self.quantile(LATE_QUANTILE)
        while age < horizon and len(ages) < 10_000:
            gap = self._late_gap(gap) if age > late else self._rule(age, lam)
            age += gap
            ages.append(age)
        return ages

    def _late_gap(self, previous: float | None) -> float:
        return min(self.cap, max(previous or self.min_gap, self.min_gap) * self.factor)

    def _calibrate(self, policy: PollPolicy) -> None:
        """Pick `lam` so that run times like the recorded ones (the fitted distribution, tail included: a
        sample of a hundred says little about it) cost no more queries than the policy's growing interval,
        less a margin: the fit's median is off by a few percent from one hundred run times to the next, and
        the dense polls then start a little early; and the growing interval's gaps count from each actual
        poll, so in a busy loop they drift later and it spends a little less than on paper."""
        from statistics import NormalDist

        from kling_cli.waiting import today_ages

        normal = NormalDist()
        durations = [math.exp(self.mu + self.sigma * normal.inv_cdf((i + 0.5) / CALIBRATION_POINTS))
                     for i in range(CALIBRATION_POINTS)]
        horizon = durations[-1] * 1.01
        budget = _queries(today_ages(policy, horizon), durations) * BUDGET_SHARE
        low, high = 1e-4 * self.median, 10.0 * self.median  # lam, in seconds of unnoticed end
        for _ in range(24):
            lam = math.sqrt(low * high)
            if _queries(self._ages(lam, horizon), durations) > budget:
                low = lam
            else:
                high = lam
        self.lam = high
        self.ages = tuple(self._ages(high, max(horizon, self.quantile(LATE_QUANTILE))))

    def gap(self, age: float, previous: float | None = None) -> float:
        """Seconds from now (the task's `age`) to its next poll."""
        index = bisect.bisect_right(self.ages, age + self.min_gap / 2)
        if index < len(self.ages):
            return max(self.ages[index] - age, self.min_gap)
        return self._late_gap(previous)


def _queries(ages: list[float], durations: list[float]) -> float:
    """Mean queries per task (the first poll at or after each run time ends it) for sorted poll ages."""
    total = 0
    for duration in durations:
        total += min(bisect.bisect_left(ages, duration), len(ages) - 1) + 1
    return total / len(durations)


class History:
    """The journal's run times, as each followed task's `Timing` (refitted as tasks end) and its age."""

    #: refit a timing key once this share of its run times is new (and at least REFIT_MIN)
    REFIT_SHARE = 0.1
    REFIT_MIN = 3

    def __init__(self, journal, provider: str, policy: PollPolicy, clock, wall=None) -> None:
        import time

        self.journal = journal
        self.provider = provider
        self.policy = policy
        self.clock = clock
        self.wall = wall or time.time
        #: task id -> (timing key, when its intent was written, seconds since the epoch)
        self._tasks: dict[str, tuple[str | None, float | None]] = {}
        #: timing key -> (its fit, the newest entry id in it, when it was read)
        self._fits: dict[str, tuple[Timing | None, int, float]] = {}

    def know(self, task_ids: list[str]) -> None:
        """Read what the journal has on these tasks, in a few queries (a `wait` on many tasks)."""
        unknown = [task_id for task_id in task_ids if task_id not in self._tasks]
        try:
            entries = self.journal.find_tasks(unknown) if unknown else {}
        except Exception:  # best-effort: without it a task gets the growing interval
            entries = {}
        for task_id in unknown:
            entry = entries.get(task_id)
            born = None
            if entry is not None:
                created = entry.task_created_at or entry.created_at
                try:
                    born = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
                except (AttributeError, ValueError):
                    born = None
            self._tasks[task_id] = (entry.timing_key if entry is not None else None, born)

    def _task(self, task_id: str) -> tuple[str | None, float | None]:
        if task_id not in self._tasks:
            self.know([task_id])
        return self._tasks[task_id]

    def age(self, ref) -> float | None:
        """Seconds since the task was created, where the journal knows."""
        born = self._task(ref.id)[1]
        return None if born is None else max(0.0, self.wall() - born)

    def timing(self, ref) -> Timing | None:
        key = self._task(ref.id)[0]
        if key is None:
            return None
        fit, newest, read_at = self._fits.get(key, (None, -1, float("-inf")))
        if self.clock() - read_at < self.policy.cap:
            return fit
        try:
            times = self.journal.run_times(self.provider, key, limit=RECENT)
        except Exception:
            times = []
        fresh = sum(1 for entry, _seconds in times if entry > newest)
        if times and (fit is None or fresh >= max(self.REFIT_MIN, self.REFIT_SHARE * len(times))):
            fit, newest = Timing.fit([seconds for _entry, seconds in times], self.policy), times[0][0]
        self._fits[key] = (fit, newest, self.clock())
        return fit


def learned_policy(service, interval: float | None, *, callbacks: bool = False) -> PollPolicy:
    """The poll policy of `wait` and CSV runs: --interval or the growing interval, learning from the journal's
    run times where there is one, held back by the provider's rate-limit gate, and (`callbacks`) told by the
    journal which tasks a callback reported ended."""
    from kling_cli.waiting import PollPolicy

    policy = PollPolicy.from_options(interval)
    policy.gate = service.gate
    journal = service.journal
    if journal is not None:
        if policy.fixed is None:
            policy.history = History(journal, service.resolved.provider, policy, service.clock)
        if callbacks:
            policy.ended = journal.called_back
    return policy
