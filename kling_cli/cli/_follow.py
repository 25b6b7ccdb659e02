"""Waiting for a task with feedback, then reporting or downloading it: shared by `wait` and `submit --wait`."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from kling_cli.cli._common import AppContext
from kling_cli.errors import ExitCode, TaskFailed
from kling_cli.models import Task, TaskStatus
from kling_cli.waiting import PollPolicy, format_duration, wait_one


class _Spinner:
    """A one-line live status on stderr (terminals only)."""

    def __init__(self, ctx: AppContext) -> None:
        self.status = ctx.out.console().status("waiting...")

    def __enter__(self) -> _Spinner:
        self.status.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.status.__exit__(*exc)

    def update(self, text: str) -> None:
        self.status.update(text)


def follow(ctx: AppContext, task_id: str, kind: str | None, *, timeout: float, interval: float | None) -> Task:
    service = ctx.service()
    out = ctx.out
    started = time.monotonic()
    last: list[TaskStatus | None] = [None]
    spinner = _Spinner(ctx) if out.live else None

    def describe(task: Task) -> str:
        progress = f" {task.progress:.0%}" if task.progress is not None and not task.terminal else ""
        return f"task {task.id}: {task.status.value}{progress} ({format_duration(time.monotonic() - started)})"

    def on_update(task: Task) -> None:
        if spinner is not None:
            spinner.update(describe(task))
        elif task.status is not last[0]:
            out.info(describe(task))
        last[0] = task.status

    def on_error(exc: Exception) -> None:
        out.warn(f"polling {task_id} failed ({getattr(exc, 'message', exc)}); trying again")

    ctx.running.append(task_id)
    resolved_kind = [kind]

    def get(deadline: float) -> Task:
        task = service.get(task_id, resolved_kind[0], deadline=deadline)
        resolved_kind[0] = task.kind
        return task

    with spinner if spinner is not None else nullcontext():
        return wait_one(get, task_id, timeout=timeout, policy=PollPolicy.from_options(interval),
                        clock=service.clock, sleep=service.sleep, on_update=on_update, on_error=on_error)


def report(ctx: AppContext, task: Task, *, download: Path | None, force: bool = False) -> int:
    """Print a terminal task (stdout), download it if asked, and return the exit code it means."""
    out = ctx.out
    if task.status is TaskStatus.FAILED:
        out.task(task)
        reason = task.error.message if task.error else "no reason given"
        if not out.json_mode:
            out.error(TaskFailed(f"task {task.id} failed: {reason}"))
        return int(ExitCode.TASK_FAILED)
    if ctx.running and task.id in ctx.running:
        ctx.running.remove(task.id)
    if download is None:
        out.task(task)
        return 0
    paths = ctx.service().download(task, download)
    if out.json_mode:
        out.task(task, files=[str(p) for p in paths])
    for path in paths:
        out.info(f"downloaded {path}")
        if not out.json_mode:
            out.data(str(path))
    return 0
