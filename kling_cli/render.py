"""All terminal output goes through `Output`: results to stdout, everything else to stderr.

`--json` makes stdout one JSON object per line and turns errors into `{"error": {...}}` on stdout.
Human text may change between releases; the JSON fields are the stable interface.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, TextIO

from kling_cli import envvars

if TYPE_CHECKING:  # models and json are imported on use: `kling --help` needs neither
    from kling_cli.errors import KlingError
    from kling_cli.models import Task

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
        #: a terminal that cannot move its cursor: no colour, no live display (plain lines, as in a log)
        self.dumb = os.environ.get("TERM") == "dumb"
        self._no_color = no_color or bool(os.environ.get(envvars.NO_COLOR)) or self.dumb
        self._console = None
        # Download and callback threads print results too: one line at a time.
        self._lock = threading.Lock()
        #: set by a live display drawn on the terminal stdout also goes to: writes a stdout line above it
        self.above: Callable[[Callable[[], None]], None] | None = None
        #: the origin of a sandbox that lives only as long as this process, and whether stdout named it
        self.ephemeral_origin: str | None = None
        self.ephemeral_printed = False

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
    def live(self) -> bool:
        """Animations (spinners, bars) only for a human watching a terminal that can redraw."""
        return self.stderr_tty and not self.dumb and not self.quiet and not self.json_mode

    @property
    def shared_terminal(self) -> bool:
        """stdout and stderr are the same terminal (a live display on one must make room for the other)."""
        if not (self.stdout_tty and self.stderr_tty):
            return False
        try:
            return os.path.samestat(os.fstat(self.stdout.fileno()), os.fstat(self.stderr.fileno()))
        except (AttributeError, OSError, ValueError):
            return True

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "****")
        return text

    def _err(self, text: str) -> None:
        line = self._clean(text) + "\n"
        if self._console is not None and self.live:
            # above a live display; never wrapped by rich (a hint cut by a newline cannot be pasted)
            self._console.print(line, end="", markup=False, highlight=False, soft_wrap=True)
            return
        with self._lock:
            self.stderr.write(line)
            self.stderr.flush()

    # -- stdout: results ------------------------------------------------------------------------
    def data(self, text: str) -> None:
        """One line of data on stdout, written as it is: never wrapped, padded or restyled, whatever the
        terminal (a person may pipe a copy of what they saw)."""
        line = self._clean(text) + "\n"
        if self.ephemeral_origin and self.ephemeral_origin in line:
            self.ephemeral_printed = True

        def write() -> None:
            self.stdout.write(line)
            self.stdout.flush()

        with self._lock:
            if self.above is not None:
                self.above(write)
            else:
                write()

    def json(self, obj: Any) -> None:
        import json

        self.data(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    def task(self, task: Task, *, detail: bool = False, files: list[str] | None = None, raw: bool = False,
             label: str = "") -> None:
        if self.json_mode:
            body = task.to_json(raw=self.raw or raw)
            if files is not None:
                body["files"] = files
            self.json(body)
        elif detail:
            self.data(format_task_block(task))
        else:
            self.data(format_task_line(task, files=files, label=label))

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


def one_line(text: str) -> str:
    """Text for one field of a tab-separated line: tabs and newlines (a provider's reason may hold them) become
    spaces."""
    return " ".join(text.split())


def outcome_text(task: Task) -> str:
    urls = [v.url for v in task.videos if v.url]
    if task.error and (task.status.value == "failed" or not urls):
        return one_line(task.error.message)
    return " ".join(urls)


def format_task_line(task: Task, *, files: list[str] | None = None, label: str = "") -> str:
    """`ID<TAB>STATUS<TAB>RESULT<TAB>LABEL`, whatever the outcome: RESULT is the video URL (the downloaded
    files, when there are some) or the failure reason, LABEL the task's row and prompt start (or empty)."""
    result = " ".join(files) if files else outcome_text(task)
    return "\t".join((task.id, task.status.value, result, label))


def format_task_block(task: Task) -> str:
    status = task.status.value
    if task.raw_status and task.raw_status != status:
        status += f" ({task.raw_status})"
    rows = [
        ("id", task.id),
        ("kind", task.kind),
        ("status", status),
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
