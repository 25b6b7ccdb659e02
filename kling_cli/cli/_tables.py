"""The `batch-status` lines: tab-separated wherever stdout goes (on a terminal too), JSON with --json."""

from __future__ import annotations

from datetime import datetime, timezone

from kling_cli.errors import KlingError
from kling_cli.models import Task
from kling_cli.render import Output, outcome_text
from kling_cli.taskrefs import TaskRef
from kling_cli.waiting import format_duration

HEADER = ("ID", "KIND", "STATUS", "PROGRESS", "AGE", "VIDEO OR REASON", "LABEL")


def _age(created_at: str | None) -> str:
    if not created_at:
        return ""
    try:
        created = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return format_duration(max(0.0, (datetime.now(timezone.utc) - created).total_seconds()))


def _row(ref: TaskRef, result: Task | KlingError, label: str) -> tuple[str, ...]:
    if isinstance(result, KlingError):
        return (ref.id, ref.kind or "", "error", "", "", result.message, label)
    progress = f"{result.progress:.0%}" if result.progress is not None else ""
    return (result.id, result.kind, result.status.value, progress, _age(result.created_at), outcome_text(result),
            label)


def print_status_table(out: Output, refs: list[TaskRef], results: dict[str, Task | KlingError],
                       labels: dict[str, str]) -> None:
    if out.json_mode:
        for ref in refs:
            result = results[ref.id]
            if isinstance(result, KlingError):
                body = result.to_json()
                body["error"]["task_id"] = ref.id
                out.json(body)
            else:
                out.json(result.to_json(raw=out.raw))
        return
    if out.stdout_tty:  # the column names, for the person reading; a pipe gets the lines only
        out.info("\t".join(HEADER))
    for ref in refs:
        out.data("\t".join(_row(ref, results[ref.id], labels.get(ref.id, ""))))
