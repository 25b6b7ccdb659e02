"""`kling report`: a batch as an HTML page, JUnit XML and a GitHub step summary."""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from kling_cli.cli._app import app
from kling_cli.cli._common import AppContext, command
from kling_cli.cli.tasks import FromOpt, TaskIdsArg
from kling_cli.errors import UsageError

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> str:
    """`90m`, `12h`, `1d`, `2w` ago, or an ISO date/time: the UTC ISO time entries must be created after."""
    match = _SINCE.match(text)
    if match:
        moment = datetime.now(timezone.utc) - timedelta(seconds=float(match.group(1)) * _SECONDS[match.group(2)])
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--since {text!r}: expected a span (90m, 12h, 1d, 2w) or a date (2026-03-28)") from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@command(app, "report", task_options=True)
def report(
    ctx: AppContext,
    task_ids: TaskIdsArg = None,
    from_file: FromOpt = None,
    since: Annotated[Optional[str], typer.Option("--since", metavar="SPAN|DATE", help="From the journal: tasks "
                                                 "submitted in the last SPAN (90m, 12h, 1d, 2w) or since DATE.",
                                                 show_default=False)] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Only tasks with this status (succeeded, "
                                                  "failed, refused, uncertain...).", show_default=False)] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Ask the provider for each task's status now, "
                                          "instead of using what was recorded.")] = False,
    html: Annotated[Optional[Path], typer.Option("--html", metavar="FILE", help="Write one self-contained HTML "
                                                 "page: a card per task with its video.", show_default=False)] = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", metavar="FILE", help="Write JUnit XML: a testcase "
                                                  "per row or task.", show_default=False)] = None,
    github: Annotated[bool, typer.Option("--github", help="Write Markdown to $GITHUB_STEP_SUMMARY (else stdout) "
                                         "and ::error::/::warning:: commands for rows that did not succeed.")] = False,
    title: Annotated[str, typer.Option("--title", help="The report's title.")] = "kling report",
) -> int:
    """Report tasks from a manifest (--from results.csv), an --events log, ids, or the journal (--since 1d,
    --status, --profile), using what was recorded unless --refresh.

    Example: kling report --from results.csv --html report.html --junit junit.xml --github
    """
    from kling_cli.report import counts

    if not (html or junit or github):
        raise UsageError("nothing to write: give --html FILE, --junit FILE and/or --github")
    if since and (task_ids or from_file):
        raise UsageError("--since reads the journal: give it without ids or --from")
    records = _records(ctx, task_ids, from_file, since, status)
    if refresh:
        _refresh(ctx, records)
    if status:
        records = [r for r in records if r.status == status]
    if html is not None:
        from kling_cli.report.html import render as render_html

        _write(html, render_html(records, html, title=title).encode("utf-8"))
    if junit is not None:
        from kling_cli.report.junit import render as render_junit

        _write(junit, render_junit(records, name=title))
    if github:
        _github(ctx, records, title)
    shown = ", ".join(f"{n} {s}" for s, n in counts(records).items()) or "no tasks"
    noun = "task" if len(records) == 1 else "tasks"
    ctx.out.info(f"report: {len(records)} {noun} ({shown})" + "".join(
        f"; wrote {path}" for path in (html, junit) if path is not None))
    return 0


def _write(path: Path, data: bytes) -> None:
    from kling_cli.fsutil import write_atomic

    if path.is_dir():
        raise UsageError(f"cannot write the report to {path}: it is a directory", hint="give a file name")
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {path}: {exc.strerror or exc}") from None


def _records(ctx: AppContext, task_ids, from_file, since, status):
    from kling_cli.report import Record, from_entry, from_event_log, from_manifest_row

    journal = ctx.journal()
    try:
        if from_file is not None or task_ids:
            from kling_cli.manifest import Manifest, is_manifest

            if from_file is not None and not task_ids and _is_event_log(from_file):
                records = from_event_log(from_file.read_text(encoding="utf-8"))
            elif from_file is not None and is_manifest(from_file) and not task_ids:
                rows = Manifest([from_file]).rows
                records = [from_manifest_row(rows[number]) for number in sorted(rows)]
            else:
                from kling_cli.taskrefs import collect

                records = []
                for ref in collect(task_ids or [], from_file, sys.stdin):
                    record = from_manifest_row(ref.row) if ref.row else Record(task_id=ref.id, kind=ref.kind)
                    if ref.task is not None:
                        record.apply_task(ref.task)
                    records.append(record)
            if journal is not None:
                entries = journal.find_tasks([r.task_id for r in records if r.task_id])
                for record in records:
                    if record.task_id in entries:
                        from_entry(entries[record.task_id], record)
            return records
        if journal is None:
            raise UsageError("the journal is off: give ids or --from FILE to report on")
        entries = journal.history(limit=None, status=status, profile=ctx.opts.profile,
                                  since=parse_since(since) if since else None)
        return [from_entry(entry) for entry in reversed(entries)]
    finally:
        if journal is not None:
            journal.close()


def _is_event_log(path: Path) -> bool:
    """An `--events` log (NDJSON with an `event` on each line), as `wait` and CSV runs write it."""
    from kling_cli.events import is_event_log

    try:
        with path.open(encoding="utf-8") as handle:
            return is_event_log(handle.readline())
    except (OSError, UnicodeDecodeError):
        return False


def _refresh(ctx: AppContext, records) -> None:
    from kling_cli.errors import KlingError
    from kling_cli.taskrefs import TaskRef

    refs = {r.task_id: TaskRef(r.task_id, r.kind) for r in records if r.task_id}
    if not refs:
        return
    found = ctx.service().get_many(list(refs.values()))
    missed = 0
    for record in records:
        result = found.get(record.task_id or "")
        if isinstance(result, KlingError):
            missed += 1
        elif result is not None:
            record.apply_task(result)
    if missed:
        ctx.out.warn(f"--refresh: {missed} tasks could not be queried on profile {ctx.resolved().profile}; "
                     "their recorded status is shown")


def _github(ctx: AppContext, records, title: str) -> None:
    from kling_cli.report.github import commands, summary

    text = summary(records, title=title)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        try:
            with open(target, "a", encoding="utf-8") as handle:  # GitHub expects each step to append
                handle.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write $GITHUB_STEP_SUMMARY ({target}): {exc.strerror}") from None
    else:
        ctx.out.data(text.rstrip("\n"))
    for line in commands(records):
        ctx.out.data(line)
