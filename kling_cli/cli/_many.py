"""Waiting for and downloading many tasks: shared by `wait`, `download` and `submit --wait`.

The poll loop runs in the main thread; queries and downloads run on worker threads. Results are printed
on stdout as they come (a task when it finishes, or once its files are downloaded), so a pipeline can
consume them while the rest is still running. Each command has one line format whatever the outcome:
`wait` prints `ID<TAB>STATUS<TAB>URL, FILES OR REASON<TAB>LABEL`, `download` one path per file.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kling_cli.cli._common import AppContext
from kling_cli.downloads import Downloader
from kling_cli.errors import ExitCode, KlingError, NoVideo, TaskFailed, UsageError, WaitTimeout
from kling_cli.events import DOWNLOADED, ERROR, FAILED, STATUS, Event, EventLog, Stream
from kling_cli.manifest import Manifest
from kling_cli.models import Task, TaskStatus
from kling_cli.progress import View, summary_line
from kling_cli.taskrefs import TaskRef
from kling_cli.timing import learned_policy
from kling_cli.waiting import Waiter, format_duration


@dataclass
class DownloadPlan:
    out_dir: Path
    template: str = "{id}"
    force: bool = False
    to_stdout: bool = False


@dataclass
class Tally:
    """What went wrong, to pick the exit code once everything is done."""

    errors: list[KlingError] = field(default_factory=list)
    downloads: list[Future] = field(default_factory=list)
    files: int = 0
    skipped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, skipped: bool) -> None:  # from download threads
        with self.lock:
            if skipped:
                self.skipped += 1
            else:
                self.files += 1

    def exit_code(self) -> int:
        """8 if any task failed (the README's promise for wait), else the first error's code."""
        if any(isinstance(error, TaskFailed) for error in self.errors):
            return int(ExitCode.TASK_FAILED)
        return int(self.errors[0].exit_code) if self.errors else 0


def _report_failure(ctx: AppContext, task: Task, tally: Tally, label: str = "") -> None:
    ctx.out.task(task, label=label)
    reason = task.error.message if task.error else "no reason given"
    error = TaskFailed(f"task {task.id} failed: {reason}", extra={"task_ids": [task.id]})
    if not ctx.out.json_mode:
        ctx.out.error(error)
    tally.errors.append(error)


def record_files(ctx: AppContext, manifest: Manifest | None) -> Callable[[Event], None]:
    """The consumer that keeps downloaded files: in the journal, and in the manifest when there is one."""
    service = ctx.service()

    def record(event: Event) -> None:
        if event.name == DOWNLOADED and event.file and event.task is not None:
            service.remember_files(event.task.id, [event.file])
            if manifest is not None:
                manifest.update_task(event.task, file=event.file, sha256=event.sha256)

    return record


def _report_no_video(ctx: AppContext, task: Task, tally: Tally, label: str = "") -> None:
    error = NoVideo.of(task.id, task.raw)
    # the task, its no_video error (and with --json the provider's payload) on one line
    ctx.out.task(task, raw=ctx.out.json_mode, label=label)
    if not ctx.out.json_mode:
        ctx.out.error(error)
    tally.errors.append(error)


#: prints a finished task: (task, the paths written, or None when nothing was to be downloaded)
Report = Callable[[Task, "list[str] | None"], None]


def print_paths(ctx: AppContext) -> Report:
    """`download`'s stdout: each file's path (with --json, the task with its files)."""
    def report(task: Task, paths: list[str] | None) -> None:
        if ctx.out.json_mode:
            ctx.out.task(task, files=paths)
        else:
            for path in paths or []:
                ctx.out.data(path)

    return report


def start_download(ctx: AppContext, task: Task, plan: DownloadPlan, view: View, tally: Tally, events: Stream,
                   report: Report) -> None:
    """Download every video of a succeeded task on the worker pool; `report` it once its files are in."""
    service = ctx.service()
    downloader = service.downloader

    def job() -> None:
        if task.request is None:  # the sidecar says what was asked for, where this machine knows it
            entry = ctx.entry(task.id)
            task.request = entry.request if entry is not None else None
        paths = []
        for index, video in enumerate(task.videos):
            if not video.url:
                continue
            refresh = lambda: service.get(task.id, task.kind)  # noqa: E731 - a fresh signed URL, on demand
            if plan.to_stdout:
                downloader.fetch_to_stream(task, index, sys.stdout.buffer, refresh=refresh, progress=view.file_bar())
                continue
            done = downloader.fetch_video(task, index, plan.out_dir, template=plan.template, force=plan.force,
                                          refresh=refresh, progress=view.file_bar())
            paths.append(str(done.path))
            events.emit(Event(DOWNLOADED, task=task, file=str(done.path), sha256=done.sha256, skipped=done.skipped))
            tally.count(done.skipped)
            if done.skipped:
                ctx.out.info(f"{done.path} is already complete, skipped (use --force to download again)")
            else:
                ctx.out.info(f"downloaded {done.path} ({done.size} bytes, sha256 {done.sha256[:12]}...)")
        if not plan.to_stdout:
            report(task, paths)

    tally.downloads.append(service.download_pool.submit(job))


def finish_downloads(ctx: AppContext, tally: Tally) -> None:
    wait(tally.downloads)  # every download settles before anything is reported or raised
    for future in tally.downloads:
        error = future.exception()
        if isinstance(error, KlingError):
            ctx.out.error(error)
            tally.errors.append(error)
        elif error is not None:
            raise error


def wait_many(
    ctx: AppContext,
    refs: list[TaskRef],
    *,
    timeout: float,
    interval: float | None,
    download: DownloadPlan | None = None,
    fail_fast: bool = False,
    manifest: Manifest | None = None,
    events_log: Path | None = None,
    labels: dict[str, str] | None = None,
) -> int:
    service = ctx.service()
    out = ctx.out
    ctx.running[:] = [ref.id for ref in refs]
    tally = Tally()
    view = View(out, [ref.id for ref in refs], labels=labels)

    def report(task: Task, paths: list[str] | None) -> None:
        out.task(task, files=paths, label=view.labels.get(task.id, ""))

    def show(event: Event) -> None:
        """The live view, each finished task on stdout (or its download started), and what went wrong."""
        if event.name == ERROR:
            view.error(event.task_id, event.detail, event.final)
            if event.final:
                if event.task_id in ctx.running:
                    ctx.running.remove(event.task_id)
                tally.errors.append(event.error)
            return
        if event.name not in (STATUS, FAILED):
            return
        task = event.task
        view.update(task)
        if manifest is not None:
            manifest.update_task(task)
        if not event.ended:
            return
        if task.id in ctx.running:
            ctx.running.remove(task.id)
        if task.status is TaskStatus.FAILED:
            _report_failure(ctx, task, tally, view.labels.get(task.id, ""))
        elif task.without_video:
            _report_no_video(ctx, task, tally, view.labels.get(task.id, ""))
        elif download is not None:
            try:
                Downloader.check_ready(task, str(download.out_dir), suggest=ctx.suggest)
            except KlingError as exc:
                out.error(exc)
                tally.errors.append(exc)
                return
            start_download(ctx, task, download, view, tally, events, report)
        else:
            report(task, None)

    events = Stream().subscribe(record_files(ctx, manifest)).subscribe(show)
    log = EventLog(events_log) if events_log is not None else None
    if log is not None:
        events.subscribe(log)
    waiter = Waiter(
        lambda batch, deadline: service.get_many(batch, deadline=deadline),
        refs,
        timeout=timeout,
        policy=learned_policy(service, interval),
        clock=service.clock,
        sleep=service.sleep,
        fail_fast=fail_fast,
        **events.waiter_hooks(),
    )
    try:
        with view:
            outcome = waiter.run()
            finish_downloads(ctx, tally)
    finally:
        if log is not None:
            log.close()
    if len(refs) > 1:
        out.info(summary_line(view.counts()))
    elif view.live_mode and not out.shared_terminal:
        # the live display is gone and the result went elsewhere: leave the outcome on screen
        line = view.final_line(refs[0].id)
        if line:
            out.info(line)
    if outcome.timed_out and outcome.pending:
        ids = " ".join(outcome.pending)
        one = len(outcome.pending) == 1
        which = f"task {ids} is" if one else f"{len(outcome.pending)} tasks are"
        listed = "" if one else f": {ids}"
        error = WaitTimeout(f"{which} still running after {format_duration(timeout)}{listed}",
                            hint=f"{'it keeps' if one else 'they keep'} running remotely; wait again with "
                            f"`{ctx.suggest('wait', *outcome.pending)}`",
                            extra={"task_ids": outcome.pending})
        out.error(error)
        return int(ExitCode.TIMEOUT)
    if outcome.stopped_early and outcome.pending:
        out.warn(f"stopped at the first failure (--fail-fast); still running remotely: {' '.join(outcome.pending)}")
    return tally.exit_code()


def download_many(ctx: AppContext, refs: list[TaskRef], plan: DownloadPlan, manifest: Manifest | None = None) -> int:
    """Look up what the input did not carry, then download every video of every succeeded task."""
    service = ctx.service()
    out = ctx.out
    tally = Tally()
    lookup = [ref for ref in refs if ref.task is None or not ref.task.terminal]
    found = service.get_many(lookup) if lookup else {}
    ready: list[Task] = []
    for ref in refs:
        result = found.get(ref.id, ref.task)
        try:
            if isinstance(result, KlingError):
                raise result
            assert result is not None
            Downloader.check_ready(result, str(plan.out_dir), suggest=ctx.suggest)
            ready.append(result)
        except KlingError as exc:
            out.error(exc)
            tally.errors.append(exc)
    if plan.to_stdout and sum(1 for t in ready for v in t.videos if v.url) != 1:
        raise UsageError("-o - writes exactly one video to stdout", hint="give one task with one video, or -o DIR")
    events = Stream().subscribe(record_files(ctx, manifest))
    with View(out) as view:
        for task in ready:
            start_download(ctx, task, plan, view, tally, events, print_paths(ctx))
        finish_downloads(ctx, tally)
    if len(refs) > 1 or tally.skipped:
        out.info(f"{tally.files} downloaded, {tally.skipped} already complete, {len(tally.errors)} failed")
    return tally.exit_code()
