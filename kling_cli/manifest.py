"""The results manifest of a CSV batch: one row per input row, written as rows progress.

`results.csv` is rewritten whole (atomically, at most every `FLUSH_EVERY` seconds, and at the end), so
it is always a complete, valid CSV; `results.ndjson` gets one line per change (the last line of a row
wins), flushed at once. Both can be given. `wait`, `batch-status` and `download` accept either with
`--from` and update it with what they learn. The journal remains the source of truth: a rerun rebuilds
whatever a crash kept out of the manifest.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

from kling_cli.errors import UsageError
from kling_cli.fsutil import cannot_write, write_atomic
from kling_cli.models import Task

FIELDS = ["row", "line", "identity", "kind", "external_id", "prompt_start", "task_id", "status", "error", "video_url",
          "file", "sha256", "cost"]
FLUSH_EVERY = 0.5


def is_manifest(path: Path) -> bool:
    """A manifest (rather than a plain list of ids or tasks) has a `row` for each task."""
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix == ".ndjson" or first.lstrip().startswith("{"):
        return '"row"' in first
    return {"row", "task_id"} <= {cell.strip() for cell in first.split(",")}


class Manifest:
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.rows: dict[int, dict[str, Any]] = {}
        self._by_task: dict[str, int] = {}
        self._dirty = False
        self._flushed = 0.0
        # download threads report files while the main thread reports statuses
        self._lock = threading.RLock()
        for path in paths:
            if path.exists():
                self._load(path)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".ndjson" or text.lstrip().startswith("{"):
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
                records = [{**r, "task_id": r.get("id", r.get("task_id"))} for r in records if isinstance(r, dict)]
            else:
                records = list(csv.DictReader(io.StringIO(text)))
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
            raise UsageError(f"{path} is not a readable manifest: {exc}",
                             hint="give another --out file, or move this one away") from None
        for record in records:
            try:
                number = int(record["row"])
            except (KeyError, TypeError, ValueError):
                continue
            kept = {k: record.get(k) for k in FIELDS if record.get(k) not in (None, "")}
            self.rows.setdefault(number, {}).update(kept)
            if kept.get("task_id"):
                self._by_task[str(kept["task_id"])] = number

    def update(self, number: int, **fields: Any) -> None:
        with self._lock:
            self._update(number, fields)

    def _update(self, number: int, fields: dict[str, Any]) -> None:
        row = self.rows.get(number)
        identity = fields.get("identity")
        if row is None or (identity and row.get("identity") not in (None, "", identity)):
            row = self.rows[number] = {"row": number}  # a new row, or the CSV changed under this number
        if fields.get("status") == "refused" and row.get("task_id") and not fields.get("task_id"):
            # this row names a task: a later refusal (its external id sent again, and taken) created nothing
            fields = {k: v for k, v in fields.items() if k not in ("status", "error")}
        # None clears a field (a refused row that now succeeded loses its old error)
        changes = {k: "" if v is None else v for k, v in fields.items()
                   if str("" if v is None else v) != str(row.get(k, ""))}
        if not changes:
            return  # what a poll saw again: no NDJSON line, no rewrite
        row.update(changes)
        if row.get("task_id"):
            self._by_task[str(row["task_id"])] = number
        self._dirty = True
        for path in self.paths:
            if path.suffix == ".ndjson":
                try:
                    with path.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(self._ndjson(row), ensure_ascii=False) + "\n")
                        handle.flush()
                except OSError as exc:
                    raise cannot_write(path.parent, exc) from None
        self._flush(False)

    def update_task(self, task: Task, **extra: Any) -> None:
        """What a later command learned about a task named in this manifest."""
        number = self._by_task.get(task.id)
        if number is not None:
            self.update(number, **task_fields(task), **extra)

    def _ndjson(self, row: dict[str, Any]) -> dict[str, Any]:
        # `id` as in a --json task, so `--from results.ndjson` finds the task ids
        body = {"id": row.get("task_id") or None}
        body.update({k: v for k, v in row.items() if k != "task_id" and v != ""})
        return body

    def flush(self, *, force: bool = False) -> None:
        with self._lock:
            self._flush(force)

    def _flush(self, force: bool) -> None:
        if not self._dirty or (not force and time.monotonic() - self._flushed < FLUSH_EVERY):
            return
        for path in self.paths:
            if path.suffix != ".ndjson":
                buffer = io.StringIO()
                writer = csv.DictWriter(buffer, fieldnames=FIELDS, extrasaction="ignore")
                writer.writeheader()
                for number in sorted(self.rows):
                    writer.writerow(self.rows[number])
                try:
                    write_atomic(path, buffer.getvalue().encode("utf-8"))
                except OSError as exc:
                    raise cannot_write(path.parent, exc) from None
        self._dirty = False
        self._flushed = time.monotonic()


def task_fields(task: Task) -> dict[str, Any]:
    url = next((v.url for v in task.videos if v.url), None)
    return {
        "task_id": task.id,
        "kind": task.kind,
        "status": task.status.value,
        "error": task.error.message if task.error else None,
        "video_url": url,
        "cost": f"{task.cost.amount:g} {task.cost.unit}" if task.cost else None,
    }
