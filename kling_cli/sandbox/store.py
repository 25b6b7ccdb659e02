"""The sandbox's task state, on disk so that one `--profile sandbox` process can follow another's task.

A task's state is derived from the clock: queued for the first quarter of its run time, then running,
then done with the outcome fixed at creation. Nothing has to advance it, so any process that opens the
same database sees the same state. Counters make scripted faults ("answer 429 twice") work across
processes too.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    dialect TEXT NOT NULL,
    kind TEXT NOT NULL,
    external_id TEXT,
    request TEXT NOT NULL,
    created REAL NOT NULL,
    seconds REAL NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    video_id TEXT NOT NULL,
    callback_url TEXT,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_external ON tasks (dialect, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_video ON tasks (video_id);
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""

QUEUED_SHARE = 0.25


class DuplicateExternalId(Exception):
    pass


@dataclass
class TaskRow:
    id: str
    dialect: str
    kind: str
    external_id: str | None
    request: dict[str, Any]
    created: float
    seconds: float
    outcome: str
    reason: str | None
    video_id: str
    callback_url: str | None
    meta: dict[str, Any]

    def phase(self, now: float | None = None) -> str:
        """queued, running, succeeded or failed, from the clock."""
        elapsed = (time.time() if now is None else now) - self.created
        if elapsed >= self.seconds:
            return self.outcome
        return "queued" if elapsed < self.seconds * QUEUED_SHARE else "running"

    def progress(self, now: float | None = None) -> float:
        elapsed = (time.time() if now is None else now) - self.created
        return 1.0 if self.seconds <= 0 else max(0.0, min(1.0, elapsed / self.seconds))

    def changed_at(self, now: float | None = None) -> float:
        """When the current phase began (seconds since the epoch)."""
        phase = self.phase(now)
        if phase == "queued":
            return self.created
        if phase == "running":
            return self.created + self.seconds * QUEUED_SHARE
        return self.created + self.seconds


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        #: the account model (see `core.Account`): may change a new task's run time and outcome before it is stored
        self.shape: Callable[[TaskRow], None] | None = None
        #: ids the next created tasks get instead of their dialect's own (POST /__sandbox/task-id)
        self.next_ids: list[str] = []

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(
        self,
        *,
        task_id: str,
        dialect: str,
        kind: str,
        request: dict[str, Any],
        external_id: str | None,
        seconds: float,
        outcome: str,
        reason: str | None,
        video_id: str,
        callback_url: str | None = None,
        meta: dict[str, Any] | None = None,
        created: float | None = None,
    ) -> TaskRow:
        with self._lock:
            task_id = self.next_ids.pop(0) if self.next_ids else task_id
        row = TaskRow(task_id, dialect, kind, external_id, request, time.time() if created is None else created,
                      seconds, outcome, reason, video_id, callback_url, meta or {})
        if self.shape is not None:
            self.shape(row)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (row.id, dialect, kind, external_id, json.dumps(request), row.created, row.seconds, row.outcome,
                     row.reason, video_id, callback_url, json.dumps(row.meta)),
                )
            except sqlite3.IntegrityError:
                raise DuplicateExternalId(external_id) from None
        return row

    def _one(self, where: str, args: tuple[Any, ...]) -> TaskRow | None:
        with self._lock:
            found = self._db.execute(f"SELECT * FROM tasks WHERE {where}", args).fetchone()
        if found is None:
            return None
        values = list(found)
        values[4] = json.loads(values[4])
        values[11] = json.loads(values[11])
        return TaskRow(*values)

    def get(self, dialect: str, task_id: str) -> TaskRow | None:
        return self._one("dialect = ? AND id = ?", (dialect, task_id))

    def get_by_external_id(self, dialect: str, external_id: str) -> TaskRow | None:
        return self._one("dialect = ? AND external_id = ?", (dialect, external_id))

    def by_video(self, video_id: str) -> TaskRow | None:
        return self._one("video_id = ?", (video_id,))

    def all(self) -> list[TaskRow]:
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM tasks ORDER BY created")]
        return [row for row in (self._one("id = ?", (task_id,)) for task_id in ids) if row is not None]

    def running(self, now: float) -> int:
        """How many tasks have not ended at `now` (queued or running), whatever their dialect."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM tasks WHERE created <= ? AND created + seconds > ?",
                                    (now, now)).fetchone()[0]

    def with_callbacks(self) -> list[TaskRow]:
        """Tasks with a callback URL whose callback has not been claimed yet."""
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM tasks WHERE callback_url IS NOT NULL AND instr(meta, '\"notified\"') = 0")]
        rows = [self._one("id = ?", (task_id,)) for task_id in ids]
        return [row for row in rows if row is not None]

    def claim(self, task_id: str, meta: dict[str, Any]) -> bool:
        """Record a task's callback as sent, unless another process got there first: True if it is ours."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE tasks SET meta = ? WHERE id = ? AND instr(meta, '\"notified\"') = 0",
                (json.dumps(meta), task_id))
            return cursor.rowcount == 1

    def bump(self, key: str) -> int:
        """Increment a named counter and return its new value, atomically across processes."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO counters VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET n = n + 1", (key,)
                )
                value = self._db.execute("SELECT n FROM counters WHERE key = ?", (key,)).fetchone()[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return value

    def counter(self, key: str) -> int:
        with self._lock:
            found = self._db.execute("SELECT n FROM counters WHERE key = ?", (key,)).fetchone()
        return found[0] if found else 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT dialect, kind, COUNT(*) FROM tasks GROUP BY dialect, kind").fetchall()
            counters = dict(self._db.execute("SELECT key, n FROM counters WHERE key LIKE 'stat:%'").fetchall())
        by_dialect: dict[str, dict[str, int]] = {}
        for dialect, kind, count in rows:
            by_dialect.setdefault(dialect, {})[kind] = count
        return {
            "tasks": sum(count for _d, _k, count in rows),
            "by_dialect": by_dialect,
            "counters": {k.removeprefix("stat:"): v for k, v in counters.items()},
        }

    def reset(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM tasks")
            self._db.execute("DELETE FROM counters")
