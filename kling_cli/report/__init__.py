"""`kling report`: what a batch did, as people and CI systems read it.

The records come from a manifest (`--from results.csv`), from task ids, or from the journal; each is
completed from the journal (the request's prompt, model, mode and duration, the provider's times, the
files downloaded) and, with `--refresh`, from the provider. Writers turn them into one HTML page
(`html`), JUnit XML (`junit`) and GitHub step-summary Markdown with workflow commands (`github`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kling_cli.models import Cost, Task, to_number

#: statuses of tasks that never ended: a report written after the deadline shows them as timed out
UNFINISHED = ("submitted", "queued", "running", "pending", "following", "unknown")


@dataclass
class Record:
    row: int | None = None
    line: int | None = None
    external_id: str | None = None
    task_id: str | None = None
    kind: str | None = None
    status: str = "unknown"
    error: str | None = None
    prompt: str | None = None
    model: str | None = None
    mode: str | None = None
    duration: int | None = None
    provider: str | None = None
    profile: str | None = None
    video_url: str | None = None
    #: the downloaded files, as recorded (paths as written by the command that downloaded them)
    files: list[str] = field(default_factory=list)
    cost: Cost | None = None
    estimate: Cost | None = None
    created_at: str | None = None
    finished_at: str | None = None

    @property
    def name(self) -> str:
        """How CI lists it: the row number and external id, else the task id."""
        if self.row is not None:
            return f"row {self.row}" + (f" ({self.external_id})" if self.external_id else "")
        return f"task {self.task_id}" if self.task_id else f"submit {self.external_id or '(no id)'}"

    @property
    def seconds(self) -> float | None:
        start, end = parse_time(self.created_at), parse_time(self.finished_at)
        return max((end - start).total_seconds(), 0.0) if start and end else None

    def apply_task(self, task: Task) -> None:
        """What the provider (or the journal) says about the task now."""
        self.task_id = task.id or self.task_id
        self.kind = task.kind or self.kind
        self.status = task.status.value
        self.error = task.error.message if task.error else None
        self.video_url = next((v.url for v in task.videos if v.url), self.video_url)
        self.cost = task.cost or self.cost
        self.provider = task.provider or self.provider
        self.profile = task.profile or self.profile
        self.external_id = self.external_id or task.external_id
        self.created_at = task.created_at or self.created_at
        if task.terminal:
            self.finished_at = task.updated_at or self.finished_at


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_cost(value: Any) -> Cost | None:
    """A cost as a manifest cell ("5 units") or as the journal keeps it ({"amount", "unit"})."""
    if isinstance(value, dict):
        amount = to_number(value.get("amount"))
        return Cost(amount, str(value.get("unit") or "")) if amount is not None else None
    if isinstance(value, str) and value.strip():
        amount, _, unit = value.strip().partition(" ")
        number = to_number(amount)
        return Cost(number, unit.strip()) if number is not None else None
    return None


def from_manifest_row(row: dict[str, Any]) -> Record:
    def number(key: str) -> int | None:
        value = to_number(row.get(key))
        return int(value) if value is not None else None

    return Record(row=number("row"), line=number("line"), external_id=row.get("external_id") or None,
                  task_id=str(row["task_id"]) if row.get("task_id") else None, kind=row.get("kind") or None,
                  status=str(row.get("status") or "unknown"), error=row.get("error") or None,
                  video_url=row.get("video_url") or None, files=[str(row["file"])] if row.get("file") else [],
                  cost=parse_cost(row.get("cost")))


def from_event_log(text: str) -> list[Record]:
    """Records folded from an `--events` log: each row's (or task's) last state, its files, and the times
    the events were seen."""
    import json

    records: dict[tuple[str, Any], Record] = {}
    for line in text.splitlines():
        try:
            body = json.loads(line)
        except ValueError:
            continue  # a line being written while this one reads
        if not isinstance(body, dict) or "event" not in body:
            continue
        key = ("row", body["row"]) if body.get("row") is not None else ("task", body.get("task_id"))
        record = records.setdefault(key, Record(row=body.get("row"), created_at=body.get("time")))
        record.line = body.get("line") or record.line
        record.external_id = body.get("external_id") or record.external_id
        record.task_id = body.get("task_id") or record.task_id
        record.kind = body.get("kind") or record.kind
        record.video_url = body.get("video_url") or record.video_url
        record.cost = parse_cost(body.get("cost")) or record.cost
        name = body["event"]
        if name == "downloaded":
            if body.get("file") and body["file"] not in record.files:
                record.files.append(body["file"])
        elif name == "error":
            if body.get("final"):
                record.status, record.error = "error", body.get("error")
        elif name not in ("requeued", "following"):
            record.status = body.get("status") or name
            record.error = body.get("error") if record.status != "succeeded" else None
            if record.status in ("succeeded", "failed"):
                record.finished_at = body.get("time")
    return sorted(records.values(), key=lambda r: (r.row is None, r.row or 0))


def from_entry(entry, record: Record | None = None) -> Record:
    """Complete a record (or make one) from the journal's entry for its task."""
    from kling_cli.pricing import estimate, with_defaults

    record = record or Record(row=entry.row, status=entry.status if entry.task_id and entry.status else entry.state)
    record.task_id = record.task_id or entry.task_id
    record.external_id = record.external_id or entry.external_id
    record.kind = record.kind or entry.kind
    record.provider, record.profile = entry.provider, entry.profile
    request = entry.request
    prompt = request.get("prompt") or (request.get("params") or {}).get("prompt")
    record.prompt = str(prompt) if prompt else record.prompt
    record.model, record.mode, record.duration = with_defaults(entry.provider, entry.dialect, entry.kind, request)
    record.estimate = estimate(entry.provider, entry.dialect, entry.kind, request).cost
    if record.status in UNFINISHED + ("unknown",) and entry.task_id and entry.status:
        record.status = entry.status  # the journal learned more than the manifest says
    record.error = record.error or entry.error
    record.video_url = record.video_url or next((v.get("url") for v in entry.videos if v.get("url")), None)
    record.files = record.files or list(entry.files)
    record.cost = record.cost or parse_cost(entry.cost)
    record.created_at = entry.task_created_at or entry.created_at
    record.finished_at = entry.finished_at
    return record


def local_video(record: Record, page_dir: Path) -> tuple[str, str | None] | None:
    """The downloaded file and its poster frame (an image of the same name beside it, e.g. `ID.jpg`), relative
    to the page's folder as URL paths, when the file is still there."""
    import os
    from urllib.parse import quote

    def relative(path: Path) -> str:
        return quote(Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix())

    for name in record.files:
        path = Path(name)
        if path.suffix.lower() in (".mp4", ".mov") and path.is_file():
            poster = next((path.with_suffix(ext) for ext in (".jpg", ".jpeg", ".png", ".webp")
                           if path.with_suffix(ext).is_file()), None)
            return relative(path), relative(poster) if poster else None
    return None


def counts(records: list[Record]) -> dict[str, int]:
    found: dict[str, int] = {}
    for record in records:
        found[record.status] = found.get(record.status, 0) + 1
    return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))


def cost_totals(records: list[Record]):
    """(reported, estimated) totals per unit."""
    from kling_cli.pricing import Totals

    reported, estimated = Totals(), Totals()
    for record in records:
        if record.task_id:
            reported.add(record.cost)
            estimated.add(record.estimate)
    return reported, estimated


def cost_line(records: list[Record]) -> str:
    reported, estimated = cost_totals(records)
    return (f"cost reported {reported.text('not reported')}; estimated from the price table "
            f"{estimated.text('without an estimate')}")
