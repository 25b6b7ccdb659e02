"""Following tasks to the end: a poll interval that grows to a cap, a real wall-clock deadline, and a
budget of consecutive transient errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Mapping

from kling_cli import envvars
from kling_cli.errors import DeadlineExceeded, ProviderUnavailable, UsageError, WaitTimeout
from kling_cli.models import Task

DEFAULT_TIMEOUT = 3600.0
POLL_START = 2.0
POLL_FACTOR = 1.5
POLL_CAP = 30.0
#: consecutive failed polls (each already retried by the transport) before a task is given up on
TRANSIENT_BUDGET = 5

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """`90s`, `20m`, `1h`, `1.5h`, `250ms` or plain seconds."""
    match = _DURATION.match(text or "")
    if not match:
        raise UsageError(f"not a duration: {text!r}", hint="use a number with s, m or h, e.g. 90s, 20m, 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
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

    def next(self, previous: float | None) -> float:
        if self.fixed is not None:
            return self.fixed
        if previous is None:
            return self.start
        return min(previous * self.factor, self.cap)

    @classmethod
    def from_options(cls, interval: float | None, env: Mapping[str, str] = os.environ) -> PollPolicy:
        if interval is not None:
            return cls(fixed=interval)
        if env.get(envvars.POLL_INTERVAL):
            return cls(fixed=parse_duration(env[envvars.POLL_INTERVAL]))
        return cls()


def wait_one(
    get: Callable[[float], Task],
    task_id: str,
    *,
    timeout: float,
    policy: PollPolicy,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    on_update: Callable[[Task], None] = lambda _t: None,
    on_error: Callable[[Exception], None] = lambda _e: None,
) -> Task:
    """Poll `get(deadline)` until the task is terminal or the deadline passes."""
    deadline = clock() + timeout
    interval: float | None = None
    failures = 0
    while True:
        try:
            task = get(deadline)
        except DeadlineExceeded:
            raise _timed_out(task_id, timeout) from None
        except ProviderUnavailable as exc:
            failures += 1
            if failures > TRANSIENT_BUDGET:
                raise
            on_error(exc)
        else:
            failures = 0
            on_update(task)
            if task.terminal:
                return task
        interval = policy.next(interval)
        remaining = deadline - clock()
        if remaining <= 0:
            raise _timed_out(task_id, timeout)
        sleep(min(interval, remaining))


def _timed_out(task_id: str, timeout: float) -> WaitTimeout:
    return WaitTimeout(
        f"task {task_id} is still running after {format_duration(timeout)}",
        hint=f"it keeps running remotely; wait again with `kling wait {task_id}`",
        extra={"task_ids": [task_id]},
    )
