"""One stream of what happens to tasks and batch rows.

The batch engine, the poll loop and the downloads emit events here and know nothing of who listens; the
command layer subscribes what it needs: the live view and the printed lines, the manifest, the journal's
record of downloaded files, the `--events` NDJSON log (and so `kling report`, which can read that log).

Event names, as `--events` writes them:

- `submitted`: a row's task exists (sent now, by another process, or in an earlier run and still running);
- `status`: a task's status as last seen (`succeeded` once it has ended well);
- `failed`: a task ended in failure;
- `downloaded`: a video of a task is on disk (`file`, `sha256`);
- `uncertain`: a row's submit may or may not have created a task: it is not sent again;
- `refused`: the provider refused a row (nothing was created);
- `requeued`: a row was put back for later (too many running tasks);
- `following`: another process is submitting a row;
- `error`: a task's query failed (`final`: it is given up on).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kling_cli.models import Task, TaskStatus

SUBMITTED, STATUS, FAILED, DOWNLOADED = "submitted", "status", "failed", "downloaded"
UNCERTAIN, REFUSED, REQUEUED, FOLLOWING, ERROR = "uncertain", "refused", "requeued", "following", "error"


@dataclass
class Event:
    name: str
    task: Task | None = None
    task_id: str | None = None
    #: the batch row (`batch.Planned`) the event is about, when there is one
    row: Any = None
    #: what happened, in words (a refusal's message, "done in an earlier run"...)
    detail: str = ""
    #: an error that ends the following of its task (False: one poll failed, it is tried again)
    final: bool = True
    error: Any = None
    file: str | None = None
    sha256: str | None = None
    #: a download found the file already complete
    skipped: bool = False
    #: when it happened (seconds since the epoch)
    at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.task_id is None and self.task is not None:
            self.task_id = self.task.id

    @property
    def state(self) -> str:
        """The row's or task's state after this event: a task's status, else the event's name."""
        if self.name in (STATUS, FAILED) and self.task is not None:
            return self.task.status.value
        return self.name

    @property
    def ended(self) -> bool:
        return self.name in (STATUS, FAILED) and self.task is not None and self.task.terminal


class Stream:
    """Subscribers see every event, in order, one at a time (downloads emit from worker threads)."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], None]] = []
        self._lock = threading.RLock()
        #: the batch row of a task id, for events the poll loop emits about tasks (set by the batch engine)
        self.locate: Callable[[str], Any] = lambda _task_id: None

    def subscribe(self, subscriber: Callable[[Event], None]) -> Stream:
        self._subscribers.append(subscriber)
        return self

    def emit(self, event: Event) -> None:
        with self._lock:
            if event.row is None and event.task_id:
                event.row = self.locate(event.task_id)
            for subscriber in list(self._subscribers):
                subscriber(event)

    # -- the poll loop's hooks (`Waiter(on_update=..., on_done=..., on_error=...)`) --------------------
    def waiter_hooks(self) -> dict[str, Callable]:
        def done(task: Task) -> None:
            self.emit(Event(FAILED if task.status is TaskStatus.FAILED else STATUS, task=task))

        return {"on_update": lambda task: self.emit(Event(STATUS, task=task)), "on_done": done,
                "on_error": lambda task_id, error, final: self.emit(
                    Event(ERROR, task_id=task_id, error=error, detail=error.message, final=final))}


class EventLog:
    """`--events FILE`: one JSON object per line, appended and flushed as it happens, so that another step can
    tail it. A task seen again with the same status writes nothing."""

    def __init__(self, path: Path) -> None:
        from kling_cli.errors import UsageError

        try:
            self._handle = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--events: cannot write {path}: {exc.strerror}") from None
        self._path = path
        self._seen: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        from kling_cli.models import epoch_to_iso

        if event.task is not None and event.name in (SUBMITTED, STATUS, FAILED):
            if event.name == STATUS and self._seen.get(event.task.id) == event.task.status.value:
                return
            self._seen[event.task.id] = event.task.status.value
        row = event.row  # a batch.Planned
        body: dict[str, Any] = {"event": event.name, "time": epoch_to_iso(event.at, unit="s"),
                                "row": row.row.number if row is not None else None,
                                "task_id": event.task_id or getattr(row, "task_id", None)}
        if row is not None:
            body.update(line=row.row.line, external_id=row.external_id, kind=row.kind)
        if event.task is not None:
            body.update(status=event.task.status.value, kind=event.task.kind)
            if event.task.error is not None:
                body["error"] = event.task.error.message
            if event.task.cost is not None:
                body["cost"] = event.task.cost.to_json()
            url = next((v.url for v in event.task.videos if v.url), None)
            if url and event.ended:
                body["video_url"] = url
        if event.detail and event.name in (UNCERTAIN, REFUSED, REQUEUED, FOLLOWING, ERROR):
            body["error" if event.name in (UNCERTAIN, REFUSED, ERROR) else "detail"] = event.detail
        if event.name == ERROR:
            body["final"] = event.final
        if event.file:
            body.update(file=event.file, sha256=event.sha256)
        try:
            self._handle.write(json.dumps({k: v for k, v in body.items() if v is not None}, ensure_ascii=False)
                               + "\n")
            self._handle.flush()
        except OSError as exc:  # a full disk: one clean error (what was sent is in the journal)
            from kling_cli.fsutil import cannot_write

            raise cannot_write(self._path.parent, exc) from None

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError:
            pass  # each event is flushed as it is written: only a line whose write already failed is left


def is_event_log(first_line: str) -> bool:
    try:
        body = json.loads(first_line)
    except ValueError:
        return False
    return isinstance(body, dict) and "event" in body and "time" in body
