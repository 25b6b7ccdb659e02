"""The local journal: every paid submit this machine made, recorded before it was sent.

Each submit first writes its *intent* (profile, provider, kind, the resolved request and its hash, and
the external id it will carry) and only then sends; the provider's answer is recorded after. So a crash,
a Ctrl-C or a lost answer leaves a row that says what may have been paid for:

- `pending`: written, the answer never recorded (interrupted, or still in flight);
- `submitted`: the provider gave a task id;
- `refused`: the provider refused it, or it never left: nothing was created, it may be sent again;
- `uncertain`: the answer was lost and the task could not be looked up: never sent again on its own.

Commands that learn about a submitted task (status, wait, batch-status, download) record its status,
videos and downloaded files. Reads are best-effort (a broken journal is a warning); writing an intent is
not: a submit that cannot record it is not sent.

SQLite (stdlib) in WAL mode, so concurrent `kling` processes can share it; schema changes are named,
ordered migrations, each applied once and recorded in `_migrations`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kling_cli.errors import ConfigError
from kling_cli.models import Task, now_iso

FILENAME = "journal.db"

def _m001_submissions(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript() would commit the migration's transaction half-way.
    db.execute(
        """
        CREATE TABLE submissions (
            id INTEGER PRIMARY KEY,
            external_id TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            profile TEXT NOT NULL,
            provider TEXT NOT NULL,
            dialect TEXT NOT NULL,
            kind TEXT NOT NULL,
            request TEXT NOT NULL,
            state TEXT NOT NULL,
            task_id TEXT,
            status TEXT,
            raw_status TEXT,
            error TEXT,
            videos TEXT,
            cost TEXT,
            files TEXT,
            batch TEXT,
            row INTEGER,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX submissions_task ON submissions (task_id)")
    db.execute("CREATE INDEX submissions_identity ON submissions (profile, request_hash)")
    db.execute("CREATE INDEX submissions_external ON submissions (profile, external_id)")


#: applied in this order, each once; append new ones, never edit a released one
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_submissions", _m001_submissions),
]


class JournalError(ConfigError):
    code = "journal"


@dataclass
class Entry:
    id: int
    external_id: str
    request_hash: str
    profile: str
    provider: str
    dialect: str
    kind: str
    request: dict[str, Any]
    state: str
    task_id: str | None
    status: str | None
    raw_status: str | None
    error: str | None
    videos: list[dict[str, Any]]
    cost: dict[str, Any] | None
    files: list[str]
    batch: str | None
    row: int | None
    created_at: str
    updated_at: str

    @property
    def model(self) -> str | None:
        """The model the request named (`model_name` on the Kling-format bodies, `model` on AceData's text to
        video and aigw's)."""
        return model_of(self.request)

    def to_task(self) -> Task:
        """The task as the journal last saw it (a rerun uses this instead of asking again)."""
        body = {"id": self.task_id, "kind": self.kind, "status": self.status or "unknown",
                "raw_status": self.raw_status, "videos": self.videos, "external_id": self.external_id,
                "provider": self.provider, "dialect": self.dialect, "profile": self.profile, "cost": self.cost,
                "error": {"code": None, "message": self.error} if self.error and self.status == "failed" else None}
        task = Task.from_json(body)
        task.request = self.request
        task.model = self.model
        return task

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.id, "task_id": self.task_id, "external_id": self.external_id, "state": self.state,
            "status": self.status, "raw_status": self.raw_status, "kind": self.kind, "model": self.model,
            "profile": self.profile,
            "provider": self.provider, "dialect": self.dialect, "error": self.error, "videos": self.videos,
            "cost": self.cost, "files": self.files, "batch": self.batch, "row": self.row,
            "request": self.request, "created_at": self.created_at, "updated_at": self.updated_at,
        }


def model_of(request: dict[str, Any]) -> str | None:
    model = request.get("model_name") or request.get("model")
    return model if isinstance(model, str) else None


def _entry(row: sqlite3.Row) -> Entry:
    values = dict(row)
    values["request"] = json.loads(values["request"])
    values["videos"] = json.loads(values["videos"] or "[]")
    values["cost"] = json.loads(values["cost"]) if values["cost"] else None
    values["files"] = json.loads(values["files"] or "[]")
    return Entry(**values)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the journal {path}: {exc}",
                               hint="fix the data directory (KLING_DATA_DIR), or run with --no-journal") from None

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
            done = {name for (name,) in self._db.execute("SELECT name FROM _migrations")}
            for name, migration in MIGRATIONS:
                if name in done:
                    continue
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    # another process may have applied it while we waited for the lock
                    if not self._db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                        migration(self._db)
                        self._db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, now_iso()))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor | None:
        with self._lock:
            if self._closed:  # a worker thread outliving the command (Ctrl-C): nothing left to record into
                return None
            return self._db.execute(sql, args)

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Entry]:
        with self._lock:
            if self._closed:
                return []
            return [_entry(row) for row in self._db.execute(sql, args).fetchall()]

    # -- writes around a submit ---------------------------------------------------------------
    def record_intent(self, *, external_id: str, request_hash: str, profile: str, provider: str, dialect: str,
                      kind: str, request: dict[str, Any], batch: str | None = None, row: int | None = None) -> int:
        """Before the POST. Raises JournalError: a submit whose intent is not on disk must not be sent."""
        stamp = now_iso()
        try:
            cursor = self._write(
                "INSERT INTO submissions (external_id, request_hash, profile, provider, dialect, kind, request, state,"
                " batch, row, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (external_id, request_hash, profile, provider, dialect, kind, json.dumps(request), "pending", batch,
                 row, stamp, stamp),
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot record the submit in the journal {self.path}: {exc}; nothing was sent",
                               hint="fix the data directory, or run with --no-journal (then a lost answer cannot "
                               "be reconciled)") from None
        if cursor is None:
            raise JournalError("the journal is closed; nothing was sent")
        return int(cursor.lastrowid)

    def record_submitted(self, entry_id: int, task: Task) -> None:
        self._write("UPDATE submissions SET state = 'submitted', task_id = ?, updated_at = ? WHERE id = ?",
                    (task.id, now_iso(), entry_id))
        self.record_task(task)

    def record_state(self, entry_id: int, state: str, error: str | None = None) -> None:
        self._write("UPDATE submissions SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                    (state, error, now_iso(), entry_id))

    # -- what later commands learn ------------------------------------------------------------
    def record_task(self, task: Task) -> None:
        self.record_tasks([task])

    def record_tasks(self, tasks: list[Task]) -> None:
        """What queries learned, in one transaction (a batch-status of 1,000 tasks is one commit)."""
        stamp = now_iso()
        rows = [(task.status.value, task.raw_status, task.error.message if task.error else None,
                 json.dumps([v.to_json() for v in task.videos]),
                 json.dumps(task.cost.to_json()) if task.cost else None, stamp, task.id) for task in tasks]
        with self._lock:
            if self._closed:
                return
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "UPDATE submissions SET status = ?, raw_status = ?, error = ?, videos = ?, cost = ?,"
                    " updated_at = ? WHERE task_id = ?", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def record_files(self, task_id: str, paths: list[str]) -> None:
        with self._lock:
            if self._closed:
                return
            row = self._db.execute("SELECT files FROM submissions WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                return
            files = list(dict.fromkeys(json.loads(row["files"] or "[]") + paths))
            self._db.execute("UPDATE submissions SET files = ?, updated_at = ? WHERE task_id = ?",
                             (json.dumps(files), now_iso(), task_id))

    # -- reads --------------------------------------------------------------------------------
    def find_task(self, task_id: str) -> Entry | None:
        found = self._read("SELECT * FROM submissions WHERE task_id = ? ORDER BY id DESC LIMIT 1", (task_id,))
        return found[0] if found else None

    def kinds(self, task_ids: list[str]) -> dict[str, str]:
        """The kind of each of these tasks that this machine submitted, in a few queries."""
        return dict(self._column("kind", task_ids))

    def models(self, task_ids: list[str]) -> dict[str, str]:
        """The model each of these tasks was submitted with, for those this machine submitted."""
        found = ((task_id, model_of(json.loads(request))) for task_id, request in self._column("request", task_ids))
        return {task_id: model for task_id, model in found if model}

    def _column(self, column: str, task_ids: list[str]) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = []
        with self._lock:
            if self._closed:
                return rows
            for start in range(0, len(task_ids), 500):
                chunk = task_ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows += [(row["task_id"], row[column]) for row in self._db.execute(
                    f"SELECT task_id, {column} FROM submissions WHERE task_id IN ({marks})", chunk)]
        return rows

    def find_identity(self, profile: str, request_hash: str) -> Entry | None:
        """The latest entry for this identity that may have cost money (refused ones cost nothing)."""
        found = self._read(
            "SELECT * FROM submissions WHERE profile = ? AND request_hash = ? AND state != 'refused'"
            " ORDER BY id DESC LIMIT 1", (profile, request_hash))
        return found[0] if found else None

    def history(self, *, limit: int = 20, status: str | None = None, profile: str | None = None) -> list[Entry]:
        clauses, args = [], []
        if status:
            clauses.append("(status = ? OR state = ?)")
            args += [status, status]
        if profile:
            clauses.append("profile = ?")
            args.append(profile)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._read(f"SELECT * FROM submissions {where} ORDER BY id DESC LIMIT ?", (*args, limit))
