"""The local journal: a SQLite file (stdlib) in WAL mode, shared by the `kling` processes of one machine."""

from __future__ import annotations

import random
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from kling_cli.journal import Journal, JournalError
from kling_cli.journal.schema import SQLITE_TYPES

#: seconds to wait for another process's write lock, for every statement, opening included
BUSY_TIMEOUT = 10.0


class SqliteJournal(Journal):
    types = SQLITE_TYPES
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"
    errors = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            _until_unlocked(self._setup)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the journal {path}: {exc}",
                               hint="fix the data directory (KLING_DATA_DIR), or run with --no-journal") from None

    def _setup(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _run(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> tuple[list[dict[str, Any]], int]:
        cursor = self._db.execute(sql, args)
        rows = [dict(row) for row in cursor.fetchall()] if cursor.description else []
        return rows, cursor.rowcount

    def _insert(self, sql: str, args: tuple[Any, ...]) -> int:
        return int(self._db.execute(sql, args).lastrowid)

    def _run_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._db.executemany(sql, rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock now, so what is read next cannot go stale
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _close(self) -> None:
        self._db.close()


def _until_unlocked(step: Callable[[], None]) -> None:
    """busy_timeout makes a statement wait for another process's lock, but SQLite answers "locked" at once
    where waiting could deadlock (switching a new file to WAL while another process opens it, upgrading a
    read to a write): those steps are tried again, until the same timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(random.uniform(0.005, 0.05))
