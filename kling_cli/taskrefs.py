"""Where the task ids of a multi-task command come from: arguments, stdin (`-`), or `--from FILE`.

Each source may hold plain ids (one per line), NDJSON tasks as `--json` prints them (so
`kling submit ... --json | kling wait -` works), or a CSV with a `task_id` column (a batch manifest).
Duplicates are collapsed, first occurrence first.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

from kling_cli.errors import UsageError
from kling_cli.models import KINDS, Task, id_problem, quoted


@dataclass
class TaskRef:
    id: str
    kind: str | None = None
    #: the whole task, when the input carried one (its video URLs save a query)
    task: Task | None = None
    #: the manifest row the id came from, if any
    row: dict[str, Any] | None = field(default=None, repr=False)


def check_id(task_id: str, where: str) -> str:
    """A task id from the user, refused (exit 2, nothing sent) unless it can be one."""
    problem = id_problem(task_id)
    if problem:
        raise UsageError(f"{where}: {quoted(task_id)} is not a task id: {problem}",
                         hint="give the id that kling submit printed")
    return task_id


def _from_lines(lines: Iterable[str], source: str) -> list[TaskRef]:
    refs = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("{"):
            try:
                body = json.loads(text)
            except ValueError:
                raise UsageError(f"{source}, line {number}: not valid JSON") from None
            if not isinstance(body, dict) or "error" in body and "id" not in body:
                continue  # an error object printed by an earlier command: nothing to follow
            where = f"{source}, line {number}"
            if "row" in body:  # a batch manifest line: its id and kind, not a task to trust as is
                if body.get("id"):
                    kind = body.get("kind")
                    refs.append(TaskRef(check_id(str(body["id"]), where), kind if kind in KINDS else None, row=body))
                continue
            task = Task.from_json(body)
            if not task.id:
                raise UsageError(f"{where}: a JSON object without an id")
            refs.append(TaskRef(check_id(task.id, where), task.kind, task))
        else:
            refs.append(TaskRef(check_id(text.split()[0], f"{source}, line {number}")))
    return refs


def _from_csv(text: str, source: str) -> list[TaskRef]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        if not reader.fieldnames or "task_id" not in reader.fieldnames:
            raise UsageError(f"{source}: a CSV needs a task_id column")
        refs = []
        for row in reader:
            task_id = (row.get("task_id") or "").strip()
            if task_id:  # rows not submitted yet have none
                kind = (row.get("kind") or "").strip()
                refs.append(TaskRef(check_id(task_id, f"{source}, line {reader.line_num}"),
                                    kind if kind in KINDS else None, row=row))
    except csv.Error as exc:
        raise UsageError(f"{source}, line {reader.line_num}: not readable as CSV ({exc})") from None
    return refs


def parse_text(text: str, source: str) -> list[TaskRef]:
    first = next((line for line in text.splitlines() if line.strip()), "")
    if "," in first and "task_id" in [cell.strip() for cell in first.split(",")]:
        return _from_csv(text, source)
    return _from_lines(text.splitlines(), source)


def collect(ids: list[str], from_file: Path | None, stdin: TextIO) -> list[TaskRef]:
    refs: list[TaskRef] = []
    for arg in ids:
        if arg == "-":
            refs += parse_text(stdin.read(), "stdin")
        else:
            refs.append(TaskRef(check_id(arg, "argument")))
    if from_file is not None:
        try:
            text = from_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"--from: file not found: {from_file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--from: cannot read {from_file}: {getattr(exc, 'strerror', None) or exc}") from None
        refs += parse_text(text, str(from_file))
    if not refs:
        raise UsageError("no task ids given", hint="pass ids as arguments, '-' to read them from stdin, or --from FILE")
    return dedupe(refs)


def dedupe(refs: list[TaskRef]) -> list[TaskRef]:
    seen: dict[str, TaskRef] = {}
    for ref in refs:
        kept = seen.get(ref.id)
        if kept is None:
            seen[ref.id] = ref
        else:
            kept.kind = kept.kind or ref.kind
            kept.task = kept.task or ref.task
            kept.row = kept.row or ref.row
    return list(seen.values())
