"""The `batch-status` table: aligned columns on a terminal, tab-separated lines otherwise, JSON with --json."""

from __future__ import annotations

from datetime import datetime, timezone

from kling_cli.errors import KlingError
from kling_cli.models import Task
from kling_cli.render import Output, outcome_text, paint
from kling_cli.taskrefs import TaskRef
from kling_cli.waiting import format_duration

HEADER = ("ID", "KIND", "STATUS", "PROGRESS", "AGE", "VIDEO OR REASON")


def _age(created_at: str | None) -> str:
    if not created_at:
        return ""
    try:
        created = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return format_duration(max(0.0, (datetime.now(timezone.utc) - created).total_seconds()))


def _row(ref: TaskRef, result: Task | KlingError) -> tuple[str, ...]:
    if isinstance(result, KlingError):
        return (ref.id, ref.kind or "", "error", "", "", result.message)
    progress = f"{result.progress:.0%}" if result.progress is not None else ""
    return (result.id, result.kind, result.status.value, progress, _age(result.created_at), outcome_text(result))


def print_status_table(out: Output, refs: list[TaskRef], results: dict[str, Task | KlingError]) -> None:
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
    rows = [_row(ref, results[ref.id]) for ref in refs]
    if not out.stdout_tty:
        for row in rows:
            out.data("\t".join(row))
        return
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER) - 1)]
    color = out.stdout_color
    out.data("  ".join(h.ljust(w) for h, w in zip(HEADER, widths)) + "  " + HEADER[-1])
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        cells[2] = paint(cells[2], row[2], color)
        out.data("  ".join(cells) + "  " + row[-1])
