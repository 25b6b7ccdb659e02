"""The journal: every paid submit, recorded before it was sent, and the rows being submitted right now.

Each submit first writes its *intent* (profile, provider, kind, the resolved request and its hash, and
the external id it will carry) and only then sends; the provider's answer is recorded after. So a crash,
a Ctrl-C or a lost answer leaves a row that says what may have been paid for:

- `pending`: written, the answer never recorded (interrupted, or still in flight);
- `submitted`: the provider gave a task id;
- `refused`: the provider refused it, it never left, or a look-up by its external id showed it was never
  created: nothing was created, it may be sent again;
- `uncertain`: the answer was lost and the task could not be looked up: never sent again on its own.

Before a submit that another process could also make (a CSV row, a submit with `--external-id`), the
external id is *claimed* in one transaction (see `Journal.claim`): exactly one process wins, the others
follow it. Commands that learn about a submitted task (status, wait, batch-status, download) record its
status, videos and downloaded files. Reads are best-effort (a broken journal is a warning); writing an
intent or a claim is not: a submit that cannot record them is not sent.

Two backends, one schema and one set of named migrations (`schema.py`): a local SQLite file in WAL mode
(the default), and PostgreSQL (`--journal postgresql://...`), which several machines share.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from kling_cli.errors import ConfigError
from kling_cli.journal.owner import Owner
from kling_cli.journal.schema import MIGRATIONS
from kling_cli.models import Task, now_iso

FILENAME = "journal.db"
#: how long a claim holds against processes on other hosts, which cannot ask whether its process still
#: runs. A claim lasts one submit (seconds, at most a few minutes of retries), so this is generous.
LEASE = 600.0
#: claims are taken at once and queries are chunked at this many ids
CHUNK = 500

OWNED, HELD, KNOWN = "owned", "held", "known"


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
    #: the provider's own times for the task (migration 003), where it gave them
    task_created_at: str | None = None
    finished_at: str | None = None
    #: what its run time depends on (migration 004, `timing.timing_key`), and when a callback said it ended
    timing_key: str | None = None
    callback_at: str | None = None

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
                "error": {"code": None, "message": self.error} if self.error and self.status == "failed" else None,
                "created_at": self.task_created_at, "updated_at": self.finished_at}
        task = Task.from_json(body)
        task.request = self.request
        task.model = self.model
        return task

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.id, "task_id": self.task_id, "external_id": self.external_id, "state": self.state,
            "status": self.status, "raw_status": self.raw_status, "kind": self.kind, "model": self.model,
            "profile": self.profile, "provider": self.provider, "dialect": self.dialect, "error": self.error, "videos": self.videos,
            "cost": self.cost, "files": self.files, "batch": self.batch, "row": self.row,
            "request": self.request, "created_at": self.created_at, "updated_at": self.updated_at,
            "task_created_at": self.task_created_at, "finished_at": self.finished_at,
        }


def model_of(request: dict[str, Any]) -> str | None:
    model = request.get("model_name") or request.get("model")
    return model if isinstance(model, str) else None


def _entry(row: Mapping[str, Any]) -> Entry:
    values = dict(row)
    values["request"] = json.loads(values["request"])
    values["videos"] = json.loads(values["videos"] or "[]")
    values["cost"] = json.loads(values["cost"]) if values["cost"] else None
    values["files"] = json.loads(values["files"] or "[]")
    return Entry(**values)


@dataclass
class Claim:
    """What claiming an external id found.

    - `owned`: this process holds it. `entry` is the latest submit of it that may have cost money (pending
      or uncertain: reconcile it before sending anything), or None (nothing was ever sent: send it).
      `took_over`: the claim was another process's, which is gone.
    - `held`: another live process is submitting it (`holder` says which): follow it.
    - `known`: its task is recorded (`entry`); nothing to claim.
    """

    state: str
    entry: Entry | None = None
    took_over: bool = False
    holder: str = ""


@dataclass
class Watched:
    """A followed external id, as the journal has it now."""

    entry: Entry | None  # its submitted entry, once the task id is recorded
    held: bool  # a live process still claims it


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def _marks(items: list[Any]) -> str:
    return ",".join("?" * len(items))


class Journal:
    """The journal's operations in the SQL both backends speak (`?` placeholders); a backend supplies the
    connection, transactions and the few words that differ."""

    #: a backend's column types (schema.py), its clock in epoch seconds, and how it skips locked rows
    types: Mapping[str, str] = {}
    now_sql = ""
    skip_locked = ""
    #: a statement that makes concurrent first runs take turns at migrating (SQLite's write lock does)
    migration_lock = ""
    #: the exceptions its driver raises
    errors: tuple[type[BaseException], ...] = ()

    def __init__(self, where: str) -> None:
        #: where it is, fit to print (a password in a URL is masked)
        self.where = where
        self._lock = threading.RLock()
        self._closed = False

    # -- what a backend supplies -----------------------------------------------------------------
    def _run(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> tuple[list[dict[str, Any]], int]:
        """One statement: (rows, rowcount)."""
        raise NotImplementedError

    def _insert(self, sql: str, args: tuple[Any, ...]) -> int:
        """An INSERT into submissions: the new entry's id."""
        raise NotImplementedError

    def _run_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write transaction that holds the database's write lock (or row locks) from its start."""
        raise NotImplementedError
        yield

    def _close(self) -> None:
        raise NotImplementedError

    def _failed(self, doing: str, exc: BaseException) -> JournalError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return JournalError(f"cannot {doing} in the journal {self.where}: {first}",
                            hint="fix the journal (--journal, KLING_JOURNAL, KLING_DATA_DIR), or run with "
                            "--no-journal (then a lost answer cannot be reconciled)")

    # -- schema ----------------------------------------------------------------------------------
    def _applied(self) -> set[str]:
        try:
            return {row["name"] for row in self._run("SELECT name FROM _migrations")[0]}
        except self.errors:
            return set()

    def _migrate(self) -> None:
        """Every missing migration, in one transaction: a process that waited for another's sees them done."""
        with self._lock:
            if {name for name, _build in MIGRATIONS} <= self._applied():
                return
            with self._transaction():
                if self.migration_lock:
                    self._run(self.migration_lock)
                self._run("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
                done = {row["name"] for row in self._run("SELECT name FROM _migrations")[0]}
                for name, build in MIGRATIONS:
                    if name not in done:
                        for statement in build(self.types):
                            self._run(statement)
                        self._run("INSERT INTO _migrations VALUES (?, ?)", (name, now_iso()))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> int | None:
        """One update. Raises JournalError (a caller after a paid answer treats it as best-effort; one deciding
        whether to send stops)."""
        with self._lock:
            if self._closed:  # a worker thread outliving the command (Ctrl-C): nothing left to record into
                return None
            try:
                return self._run(sql, args)[1]
            except self.errors as exc:
                raise self._failed("record a change", exc) from None

    def _read(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[Entry]:
        """Entries. Raises JournalError (a caller that can do without them treats it as best-effort)."""
        with self._lock:
            if self._closed:
                return []
            try:
                return [_entry(row) for row in self._run(sql, args)[0]]
            except self.errors as exc:
                raise self._failed("read the submits", exc) from None

    # -- writes around a submit ---------------------------------------------------------------
    def record_intent(self, *, external_id: str, request_hash: str, profile: str, provider: str, dialect: str,
                      kind: str, request: dict[str, Any], batch: str | None = None, row: int | None = None,
                      timing_key: str | None = None) -> int:
        """Before the POST. Raises JournalError: a submit whose intent is not on disk must not be sent."""
        stamp = now_iso()
        with self._lock:
            if self._closed:
                raise JournalError("the journal is closed; nothing was sent")
            try:
                return self._insert(
                    "INSERT INTO submissions (external_id, request_hash, profile, provider, dialect, kind, request,"
                    " state, batch, row, created_at, updated_at, timing_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (external_id, request_hash, profile, provider, dialect, kind, json.dumps(request), "pending",
                     batch, row, stamp, stamp, timing_key))
            except self.errors as exc:
                failure = self._failed("record the submit", exc)
                raise JournalError(f"{failure.message}; nothing was sent", hint=failure.hint) from None

    def record_submitted(self, entry_id: int, task: Task) -> None:
        self._write("UPDATE submissions SET state = 'submitted', task_id = ?, updated_at = ? WHERE id = ?",
                    (task.id, now_iso(), entry_id))
        self.record_task(task)

    def record_state(self, entry_id: int, state: str, error: str | None = None) -> None:
        self._write("UPDATE submissions SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                    (state, error, now_iso(), entry_id))

    # -- claims ---------------------------------------------------------------------------------
    def claim(self, profile: str, external_id: str, owner: Owner, *, lease: float = LEASE) -> Claim:
        """Claim the submit of `external_id` on `profile` for `owner`, in one transaction.

        The claim is taken first (a unique key: exactly one INSERT wins), and only then is the submit's
        latest entry read, so a process that wins a claim another has just released sees what that one
        recorded. A claim whose process is gone is taken over, never sent blind: the caller reconciles the
        entry it left (with no entry, that process never recorded an intent, so it sent nothing). Raises
        JournalError: without a claim nothing may be sent.
        """
        try:
            with self._lock:
                if self._closed:
                    raise JournalError("the journal is closed; nothing was sent")
                with self._transaction():
                    return self._claim(profile, external_id, owner, lease)
        except self.errors as exc:
            raise self._failed("claim a submit", exc) from None

    def _claim(self, profile: str, external_id: str, owner: Owner, lease: float) -> Claim:
        now = self.now_sql
        took_over = False
        won = self._run(
            f"INSERT INTO claims (profile, external_id, run, host, pid, pid_start, claimed_at, lease_until)"
            f" VALUES (?, ?, ?, ?, ?, ?, {now}, {now} + ?) ON CONFLICT (profile, external_id) DO NOTHING",
            (profile, external_id, *owner.values(), lease))[1] == 1
        if not won:
            found = self._run(f"SELECT run, host, pid, pid_start, lease_until < {now} AS expired FROM claims"
                              f" WHERE profile = ? AND external_id = ?{self.skip_locked}", (profile, external_id))[0]
            if not found:  # another transaction is deciding about it this very moment
                return Claim(HELD, holder="another process")
            holder = found[0]
            if not owner.holds(holder) and owner.alive(holder):
                return Claim(HELD, holder=Owner.describe(holder))
            took_over = not owner.holds(holder)
            self._run(f"UPDATE claims SET run = ?, host = ?, pid = ?, pid_start = ?, claimed_at = {now},"
                      f" lease_until = {now} + ? WHERE profile = ? AND external_id = ?",
                      (*owner.values(), lease, profile, external_id))
        entry = self.find_external(profile, external_id)
        if entry is not None and entry.task_id:
            self._run("DELETE FROM claims WHERE profile = ? AND external_id = ?", (profile, external_id))
            return Claim(KNOWN, entry)
        return Claim(OWNED, entry, took_over)

    def release(self, profile: str, external_id: str, owner: Owner) -> None:
        """Give a claim up (its task id is recorded, or the submit is over without one)."""
        self._write("DELETE FROM claims WHERE profile = ? AND external_id = ? AND run = ?",
                    (profile, external_id, owner.run))

    def release_all(self, owner: Owner) -> None:
        self._write("DELETE FROM claims WHERE run = ?", (owner.run,))

    def submitted(self, profile: str, external_ids: list[str]) -> dict[str, Entry]:
        """The submitted entry of each of these external ids that has a task id, in a few queries.
        Raises JournalError: a batch cannot tell what is left to do without it."""
        found: dict[str, Entry] = {}
        for chunk in _chunks(external_ids):
            for entry in self._read(f"SELECT * FROM submissions WHERE profile = ? AND task_id IS NOT NULL"
                                    f" AND external_id IN ({_marks(chunk)}) ORDER BY id", (profile, *chunk)):
                found[entry.external_id] = entry
        return found

    def find_external(self, profile: str, external_id: str) -> Entry | None:
        """The latest submit of this external id that may have cost money (refused ones cost nothing), one with
        a task id first."""
        found = self._read("SELECT * FROM submissions WHERE profile = ? AND external_id = ? AND state != 'refused'"
                           " ORDER BY CASE WHEN task_id IS NULL THEN 1 ELSE 0 END, id DESC LIMIT 1",
                           (profile, external_id))
        return found[0] if found else None

    def watch(self, profile: str, external_ids: list[str], owner: Owner) -> dict[str, Watched]:
        """Where each followed external id stands: its task id once recorded, and whether a live process
        still claims it (when none does and there is no task id, the follower claims it itself)."""
        entries = self.submitted(profile, external_ids)
        held: set[str] = set()
        try:
            with self._lock:
                for chunk in _chunks(external_ids) if not self._closed else ():
                    rows = self._run(f"SELECT external_id, run, host, pid, pid_start, lease_until < {self.now_sql}"
                                     f" AS expired FROM claims WHERE profile = ? AND external_id IN"
                                     f" ({_marks(chunk)})", (profile, *chunk))[0]
                    held.update(row["external_id"] for row in rows if not owner.holds(row) and owner.alive(row))
        except self.errors as exc:
            raise self._failed("read the claims", exc) from None
        return {ext: Watched(entries.get(ext), ext in held) for ext in external_ids}

    # -- what later commands learn ------------------------------------------------------------
    def record_task(self, task: Task) -> None:
        self.record_tasks([task])

    def record_tasks(self, tasks: list[Task]) -> None:
        """What queries learned, in one transaction (a batch-status of 1,000 tasks is one commit)."""
        if not tasks:
            return
        stamp = now_iso()
        # the provider's time of a task's last change, once it has ended, is when it finished
        rows = [(task.status.value, task.raw_status, task.error.message if task.error else None,
                 json.dumps([v.to_json() for v in task.videos]),
                 json.dumps(task.cost.to_json()) if task.cost else None, stamp, task.created_at,
                 (task.updated_at or stamp) if task.terminal else None, task.id) for task in tasks]
        with self._lock:
            if self._closed:
                return
            try:
                with self._transaction():
                    self._run_many("UPDATE submissions SET status = ?, raw_status = ?, error = ?, videos = ?,"
                                   " cost = ?, updated_at = ?, task_created_at = COALESCE(?, task_created_at),"
                                   " finished_at = COALESCE(finished_at, ?) WHERE task_id = ?", rows)
            except self.errors as exc:
                raise self._failed("record what was learned of the tasks", exc) from None

    def record_files(self, task_id: str, paths: list[str]) -> None:
        with self._lock:
            if self._closed:
                return
            with self._transaction():
                rows = self._run("SELECT files FROM submissions WHERE task_id = ?", (task_id,))[0]
                if not rows:
                    return
                files = list(dict.fromkeys(json.loads(rows[0]["files"] or "[]") + paths))
                self._run("UPDATE submissions SET files = ?, updated_at = ? WHERE task_id = ?",
                          (json.dumps(files), now_iso(), task_id))

    # -- uploads (local files a provider needed as URLs) -----------------------------------------
    def upload_of(self, sha256: str, uploader: str) -> tuple[str, float] | None:
        """(URL, when it was uploaded) of a file this uploader put somewhere, or None."""
        with self._lock:
            if self._closed:
                return None
            rows = self._run("SELECT url, uploaded_at FROM uploads WHERE sha256 = ? AND uploader = ?",
                             (sha256, uploader))[0]
        return (rows[0]["url"], float(rows[0]["uploaded_at"])) if rows else None

    def record_upload(self, sha256: str, uploader: str, url: str, name: str, size: int, uploaded_at: float) -> None:
        self._write("INSERT INTO uploads (sha256, uploader, url, name, size, uploaded_at) VALUES (?,?,?,?,?,?)"
                    " ON CONFLICT (sha256, uploader) DO UPDATE SET url = excluded.url, name = excluded.name,"
                    " size = excluded.size, uploaded_at = excluded.uploaded_at",
                    (sha256, uploader, url, name, size, uploaded_at))

    # -- reads --------------------------------------------------------------------------------
    def find_task(self, task_id: str) -> Entry | None:
        found = self._read("SELECT * FROM submissions WHERE task_id = ? ORDER BY id DESC LIMIT 1", (task_id,))
        return found[0] if found else None

    def kinds(self, task_ids: list[str]) -> dict[str, str]:
        """The kind of each of these tasks that this journal recorded, in a few queries."""
        return dict(self._column("kind", task_ids))

    def models(self, task_ids: list[str]) -> dict[str, str]:
        """The model each of these tasks was submitted with, for those this journal recorded."""
        found = ((task_id, model_of(json.loads(request))) for task_id, request in self._column("request", task_ids))
        return {task_id: model for task_id, model in found if model}

    def _column(self, column: str, task_ids: list[str]) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        with self._lock:
            if self._closed:
                return found
            for chunk in _chunks(task_ids):
                rows = self._run(f"SELECT task_id, {column} FROM submissions WHERE task_id IN ({_marks(chunk)})",
                                 chunk)
                found += [(row["task_id"], row[column]) for row in rows[0]]
        return found

    def history(self, *, limit: int | None = 20, status: str | None = None, profile: str | None = None,
                since: str | None = None) -> list[Entry]:
        """Entries newest first; `since` is an ISO time (entries created at or after it)."""
        clauses, args = [], []
        if status:
            clauses.append("(status = ? OR state = ?)")
            args += [status, status]
        if profile:
            clauses.append("profile = ?")
            args.append(profile)
        if since:
            clauses.append("created_at >= ?")
            args.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        if limit is None:
            return self._read(f"SELECT * FROM submissions {where} ORDER BY id DESC", args)
        return self._read(f"SELECT * FROM submissions {where} ORDER BY id DESC LIMIT ?", (*args, limit))

    def run_times(self, provider: str, timing_key: str, *, limit: int) -> list[tuple[int, float]]:
        """(entry id, seconds from created to finished) of the latest ended tasks with this timing key, newest
        first: the provider's own times where it gave them, else when the submit was written and when an
        end was first seen."""
        from kling_cli.timing import run_seconds

        with self._lock:
            if self._closed:
                return []
            rows = self._run("SELECT id, created_at, task_created_at, finished_at FROM submissions WHERE provider = ?"
                             " AND timing_key = ? AND finished_at IS NOT NULL ORDER BY id DESC LIMIT ?",
                             (provider, timing_key, limit))[0]
        found = [(row["id"], run_seconds(row["task_created_at"] or row["created_at"], row["finished_at"]))
                 for row in rows]
        return [(entry, seconds) for entry, seconds in found if seconds is not None]

    def record_callback(self, task_id: str) -> bool:
        """A callback said this task ended (`kling callback listen`): a run following it queries it at once.
        False when the journal has no such task."""
        return bool(self._write("UPDATE submissions SET callback_at = COALESCE(callback_at, ?) WHERE task_id = ?",
                                (now_iso(), task_id)))

    def called_back(self, task_ids: list[str]) -> set[str]:
        """Which of these tasks a callback said had ended."""
        found: set[str] = set()
        with self._lock:
            for chunk in _chunks(task_ids) if not self._closed else ():
                rows = self._run(f"SELECT task_id FROM submissions WHERE callback_at IS NOT NULL AND task_id IN"
                                 f" ({_marks(chunk)})", chunk)[0]
                found.update(row["task_id"] for row in rows)
        return found

    def find_tasks(self, task_ids: list[str]) -> dict[str, Entry]:
        """The latest entry of each of these tasks, in a few queries."""
        found: dict[str, Entry] = {}
        for chunk in _chunks(task_ids):
            for entry in self._read(f"SELECT * FROM submissions WHERE task_id IN ({_marks(chunk)}) ORDER BY id",
                                    chunk):
                found[entry.task_id or ""] = entry
        return found


# --- which journal ---------------------------------------------------------------------------------

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(spec: str) -> bool:
    return spec.startswith(POSTGRES_SCHEMES)


def local_path(spec: str) -> Path:
    """The file of a SQLite journal: a path, or `sqlite:///abs/path` (`sqlite://` and the path after it)."""
    return Path(os.path.expanduser(spec[len("sqlite://"):] if spec.startswith("sqlite://") else spec))


def password(spec: str) -> str | None:
    """The password a journal URL carries (in its user part or as `password=`), to be masked in output."""
    if not is_postgres(spec):
        return None
    parts = urlsplit(spec)
    return parts.password or dict(parse_qsl(parts.query)).get("password")


def masked(spec: str) -> str:
    """The journal spec, fit to print: a password in it becomes ****."""
    if not is_postgres(spec):
        return spec
    parts = urlsplit(spec)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:****@{host}"
    query = parts.query
    if "password=" in query:
        query = urlencode([(k, "****" if k == "password" else v) for k, v in parse_qsl(query)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def open_journal(spec: str) -> Journal:
    """The journal `spec` names: a PostgreSQL URL, else a SQLite file. Raises JournalError."""
    if is_postgres(spec):
        from kling_cli.journal.postgres import PostgresJournal

        return PostgresJournal(spec)
    from kling_cli.journal.sqlite import SqliteJournal

    if spec.startswith(("sqlite:", "/", ".", "~")) or "://" not in spec:
        return SqliteJournal(local_path(spec))
    raise JournalError(f"--journal {masked(spec)!r}: not a journal: give a file path, sqlite:///path or "
                       "postgresql://user@host/db")
