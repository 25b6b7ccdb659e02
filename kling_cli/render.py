"""All terminal output goes through `Output`: results to stdout, everything else to stderr.

`--json` makes stdout one JSON object per line and turns errors into `{"error": {...}}` on stdout.
Human text may change between releases; the JSON fields are the stable interface.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from kling_cli import envvars

if TYPE_CHECKING:  # models and json are imported on use: `kling --help` needs neither
    from kling_cli.errors import KlingError
    from kling_cli.models import Task

_STATUS_COLORS = {"queued": "33", "running": "36", "succeeded": "32", "failed": "31", "unknown": "35"}
STATUS_STYLES = {"queued": "yellow", "running": "cyan", "succeeded": "green", "failed": "red", "unknown": "magenta"}


class Output:
    def __init__(
        self,
        *,
        json_mode: bool = False,
        quiet: int = 0,
        verbose: int = 0,
        no_color: bool = False,
        raw: bool = False,
        secrets: list[str] | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.raw = raw
        self.secrets = list(secrets or [])
        self._no_color = no_color or bool(os.environ.get(envvars.NO_COLOR)) or os.environ.get("TERM") == "dumb"
        self._console = None
        # Download and callback threads print results too: one line at a time.
        self._lock = threading.Lock()

    # Streams are looked up at each write: test runners and redirections swap sys.stdout/stderr.
    @property
    def stdout(self) -> TextIO:
        return sys.stdout

    @property
    def stderr(self) -> TextIO:
        return sys.stderr

    @property
    def stderr_tty(self) -> bool:
        return isatty(self.stderr)

    @property
    def stdout_tty(self) -> bool:
        return isatty(self.stdout)

    @property
    def color(self) -> bool:
        return not self._no_color and self.stderr_tty

    @property
    def stdout_color(self) -> bool:
        return not self._no_color and self.stdout_tty

    @property
    def live(self) -> bool:
        """Animations (spinners, bars) only for a human watching a terminal."""
        return self.stderr_tty and not self.quiet and not self.json_mode

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "****")
        return text

    def _err(self, text: str) -> None:
        line = self._clean(text) + "\n"
        if self._console is not None and self.live:
            self._console.print(line, end="", markup=False, highlight=False)  # above a live display, not through it
            return
        with self._lock:
            self.stderr.write(line)
            self.stderr.flush()

    # -- stdout: results ------------------------------------------------------------------------
    def data(self, text: str) -> None:
        line = self._clean(text) + "\n"
        with self._lock:
            self.stdout.write(line)
            self.stdout.flush()

    def json(self, obj: Any) -> None:
        import json

        self.data(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    def task(self, task: Task, *, detail: bool = False, files: list[str] | None = None, raw: bool = False) -> None:
        if self.json_mode:
            body = task.to_json(raw=self.raw or raw)
            if files is not None:
                body["files"] = files
            self.json(body)
        elif detail:
            self.data(format_task_block(task, color=self.stdout_color))
        else:
            self.data(format_task_line(task))

    # -- stderr: chatter ------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet and not self.json_mode:
            self._err(message)

    def warn(self, message: str) -> None:
        if self.quiet < 2:
            self._err(message)

    def debug(self, message: str, level: int = 1) -> None:
        if self.verbose >= level:
            self._err(message)

    def error(self, exc: KlingError) -> None:
        if self.json_mode:
            body = exc.to_json()
            body["error"]["message"] = self._clean(body["error"]["message"])
            self.json(body)
            return
        label = "\033[1;31merror\033[0m" if self.color else "error"
        self._err(f"kling: {label}: {exc.message}")
        if exc.hint:
            self._err(f"hint: {exc.hint}")

    def console(self):
        """A rich console on stderr, created on first use (rich costs tens of ms to import)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, no_color=self._no_color, highlight=False)
        return self._console


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def paint(text: str, status: str, color: bool) -> str:
    return f"\033[{_STATUS_COLORS.get(status, '0')}m{text}\033[0m" if color else text


def outcome_text(task: Task) -> str:
    urls = [v.url for v in task.videos if v.url]
    if task.error and (task.status.value == "failed" or not urls):
        return task.error.message
    return " ".join(urls)


def format_task_line(task: Task) -> str:
    """id, status and the video URL or failure reason, tab-separated for `cut` and `awk`."""
    return "\t".join(part for part in (task.id, task.status.value, outcome_text(task)) if part)


def format_task_block(task: Task, *, color: bool = False) -> str:
    status = task.status.value
    if task.raw_status and task.raw_status != status:
        status += f" ({task.raw_status})"
    rows = [
        ("id", task.id),
        ("kind", task.kind),
        ("status", paint(status, task.status.value, color)),
        ("progress", f"{task.progress:.0%}" if task.progress is not None else None),
        ("external id", task.external_id),
        ("created", task.created_at),
        ("updated", task.updated_at),
        ("profile", f"{task.profile} ({task.provider}, {task.dialect} dialect)" if task.profile else None),
    ]
    if task.error:
        rows.append(("reason", task.error.message))
    for index, video in enumerate(task.videos, 1):
        duration = f" ({video.duration:g} s)" if video.duration is not None else ""
        rows.append((f"video {index}", f"{video.url or '(no url)'}{duration}"))
    width = max(len(label) for label, value in rows if value)
    return "\n".join(f"{label + ':':<{width + 1}} {value}" for label, value in rows if value)
