"""What a human sees on stderr while tasks are waited on and videos downloaded.

On a terminal: one live display (rich) with a row per task (id, row and prompt start, status, progress
bar where the provider reports progress, elapsed time), an overall bar, and a bar per download (size,
speed, ETA; a spinner and byte count when the size is unknown). Past `MAX_ROWS` tasks only the rows that
changed state lately are shown. Anywhere else (CI logs, TERM=dumb): one plain line per state change, no
animation. Quiet or --json: nothing. Data lines on stdout never pass through the display: on a terminal
shared with it, the display makes room and the line is written as it is.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from kling_cli.labels import shorten
from kling_cli.models import Task, TaskStatus
from kling_cli.render import STATUS_STYLES, Output
from kling_cli.waiting import format_duration

MAX_ROWS = 20
REFRESH_PER_SECOND = 4


class _FileBar:
    """One download's bar, as the downloader's `Progress`."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.task_id: Any = None
        self.name = ""

    def start(self, name: str, total: int | None, done: int) -> None:
        self.name = name
        bars = self.view.bars
        if bars is not None:
            with self.view.lock:
                if self.task_id is None:
                    self.task_id = bars.add_task(name, total=total, completed=done)
                else:
                    bars.reset(self.task_id, total=total, completed=done, description=name)

    def advance(self, count: int) -> None:
        if self.task_id is not None and self.view.bars is not None:
            self.view.bars.advance(self.task_id, count)

    def finish(self) -> None:
        if self.task_id is not None and self.view.bars is not None:
            with self.view.lock:
                self.view.bars.remove_task(self.task_id)


class View:
    def __init__(self, out: Output, ids: list[str] | None = None, *, total: int | None = None,
                 labels: dict[str, str] | None = None) -> None:
        self.out = out
        #: what tells a person which task is which (row, prompt start), by task id
        self.labels = labels if labels is not None else {}
        #: what the overall bar counts to, when tasks join as they are submitted (a CSV batch)
        self.total = total
        self.live_mode = out.live
        self.lock = threading.RLock()
        self.started = time.monotonic()
        self.tasks: OrderedDict[str, Task | None] = OrderedDict((i, None) for i in ids or [])
        self.finished_at: dict[str, float] = {}
        #: ids in the order their state last changed (most recent last)
        self.changes: OrderedDict[str, None] = OrderedDict()
        self.errors: dict[str, str] = {}
        self.bars = None
        self._live = None
        #: bumped by every change that shows: the rendered table is reused until it, the second or the width moves
        self._version = 0
        self._cache_key: tuple | None = None
        self._cache_lines: list = []

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> View:
        if self.live_mode:
            from rich.console import Group
            from rich.live import Live
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.out.console())
            parts = [self, self.bars] if self.tasks or self.total else [self.bars]
            # stdout is never redirected through rich, which would wrap lines and expand tabs (and send them
            # to stderr): see `_print_above`.
            self._live = Live(Group(*parts), console=self.out.console(), refresh_per_second=REFRESH_PER_SECOND,
                              transient=True, redirect_stdout=False)
            self._live.__enter__()
            if self.out.shared_terminal:
                self.out.above = self._print_above
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self.out.above = None
            self._live.__exit__(*exc)
            self._live = None

    def _print_above(self, write) -> None:
        """Write a stdout line on the terminal the display is drawn on: the display is erased, the line
        written byte for byte, and the display drawn again below it."""
        live = self._live
        with live._lock:
            render = live._live_render
            self.out.console().control(render.position_cursor())
            render._shape = None  # the cursor is back where the display starts: nothing left to erase
            write()
            live.refresh()

    # -- events -----------------------------------------------------------------------------------
    def update(self, task: Task) -> None:
        with self.lock:
            previous = self.tasks.get(task.id)
            self.tasks[task.id] = task
            changed = previous is None or previous.status is not task.status
            if changed or previous.progress != task.progress:
                self._version += 1
            if changed:
                self.changes.pop(task.id, None)
                self.changes[task.id] = None
                if task.terminal:
                    self.finished_at[task.id] = time.monotonic()
        if changed and not self.live_mode:
            self.out.info(self._line(task))

    def error(self, task_id: str, message: str, final: bool, *, announce: bool = True) -> None:
        with self.lock:
            if final:
                self._version += 1
                self.tasks.setdefault(task_id, None)
                self.errors[task_id] = message
                self.changes.pop(task_id, None)
                self.changes[task_id] = None
        if announce and (final or not self.live_mode):
            self.out.warn(f"{self.name(task_id)}: {message}" + ("" if final else "; trying again"))

    def file_bar(self) -> _FileBar:
        return _FileBar(self)

    # -- rendering --------------------------------------------------------------------------------
    def _elapsed(self, task_id: str, now: float | None = None) -> str:
        end = self.finished_at.get(task_id, time.monotonic() if now is None else now)
        return format_duration(end - self.started)

    def name(self, task_id: str) -> str:
        """`task ID` and its label, as stderr lines name a task."""
        label = self.labels.get(task_id)
        return f"task {task_id} ({label})" if label else f"task {task_id}"

    def _line(self, task: Task) -> str:
        progress = f" {task.progress:.0%}" if task.progress is not None and not task.terminal else ""
        reason = f": {task.error.message}" if task.status is TaskStatus.FAILED and task.error else ""
        return f"{self.name(task.id)}: {task.status.value}{progress} ({self._elapsed(task.id)}){reason}"

    def final_line(self, task_id: str) -> str | None:
        """The last state of one task, as a plain line (what stays on screen once the display is gone)."""
        task = self.tasks.get(task_id)
        if task_id in self.errors:
            return f"{self.name(task_id)}: error: {self.errors[task_id]}"
        return self._line(task) if task is not None else None

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.lock:
            for task_id, task in self.tasks.items():
                key = "error" if task_id in self.errors else (task.status.value if task else "waiting")
                counts[key] = counts.get(key, 0) + 1
        return counts

    def __rich_console__(self, console, options):
        """The task rows and the overall line, rendered again only when they change.

        The live display is redrawn a few times a second, and rendering the table is what costs (~3 ms with
        rich): elapsed times are shown in whole seconds, so between polls the rows change once a second at
        most and the other redraws reuse the rendered lines.
        """
        from rich.segment import Segment

        now = time.monotonic()
        key = (self._version, int(now - self.started), options.max_width)
        if key != self._cache_key:
            seconds = float(int(now - self.started))
            self._cache_lines = console.render_lines(self._renderable(seconds, options.max_width),
                                                     options.update(height=None), pad=False)
            self._cache_key = key
        newline = Segment.line()
        for line in self._cache_lines:
            yield from line
            yield newline

    def _renderable(self, seconds: float, width: int = 100):
        """The rows and the overall line, for a terminal `width` columns wide: ids and statuses are never cut;
        the label gives way first, then the bars narrow."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = self.started + seconds
        with self.lock:
            ids = list(self.tasks)
            if len(ids) > MAX_ROWS:
                ids = list(self.changes)[-MAX_ROWS // 2:]
            id_width = max((len(i) for i in ids), default=0)
            bar_width = 20 if width >= id_width + 70 else 10
            # id, status (9), bar, elapsed (6) and the gaps between five columns
            room = min(32, width - id_width - 9 - bar_width - 6 - 8)
            table = Table(box=None, pad_edge=False, show_header=False)
            table.add_column("id", no_wrap=True, min_width=id_width)
            if room >= 8:
                table.add_column("label", no_wrap=True, max_width=room)
            table.add_column("status", no_wrap=True, min_width=9)
            table.add_column("bar", no_wrap=True)
            table.add_column("elapsed", no_wrap=True)
            for task_id in ids:
                task = self.tasks.get(task_id)
                cells = [task_id]
                if room >= 8:
                    cells.append(Text(shorten(self.labels.get(task_id, ""), room), style="dim"))
                if task_id in self.errors:
                    table.add_row(*cells, Text("error", style="red"),
                                  Text(shorten(self.errors[task_id], bar_width), style="red"), "")
                    continue
                status = task.status.value if task else "waiting"
                table.add_row(*cells, Text(status, style=STATUS_STYLES.get(status, "")), _bar(task, bar_width),
                              self._elapsed(task_id, now))
            total = self.total or len(self.tasks)
            done = sum(1 for t in self.tasks.values() if t is not None and t.terminal) + len(self.errors)
        counts = self.counts()
        summary = " · ".join(f"{n} {name}" for name, n in counts.items())
        overall = Table(box=None, pad_edge=False, show_header=False)
        overall.add_column("bar", no_wrap=True)
        overall.add_column("summary", no_wrap=True, overflow="ellipsis")
        # all done is green only when nothing failed
        end = "yellow" if counts.get(TaskStatus.FAILED.value) or counts.get("error") else "bar.finished"
        overall.add_row(ProgressBar(total=max(total, 1), completed=done, width=min(40, width // 4),
                                    finished_style=end),
                        f" {done}/{total} done · {summary} · {format_duration(seconds)}")
        return Group(table, overall)


def _bar(task: Task | None, width: int):
    """The row's bar: progress where the provider reports it; a failed task's is red, never a full green bar."""
    from rich.progress_bar import ProgressBar
    from rich.text import Text

    if task is not None and task.status is TaskStatus.FAILED:
        return ProgressBar(total=1.0, completed=task.progress or 0.0, width=width, style="red",
                           complete_style="red", finished_style="red")
    if task is None or task.progress is None:
        return Text("-" * width, style="dim")
    return ProgressBar(total=1.0, completed=task.progress, width=width)


def summary_line(counts: dict[str, int]) -> str:
    order = [s.value for s in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.RUNNING, TaskStatus.QUEUED,
                               TaskStatus.UNKNOWN)] + ["waiting", "error"]
    parts = [f"{counts[name]} {name}" for name in order if counts.get(name)]
    return ", ".join(parts) or "nothing"
