"""`kling status`, `batch-status`, `wait` and `download`: following tasks that were already submitted."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from kling_cli.cli._app import app
from kling_cli.cli._common import AppContext, command
from kling_cli.cli._common import IntervalOpt


class Kind(str, Enum):
    t2v = "t2v"
    i2v = "i2v"
    motion = "motion"


TaskIdArg = Annotated[str, typer.Argument(metavar="TASK_ID", help="The id printed by `kling submit`.",
                                          show_default=False)]
TaskIdsArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="TASK_ID...", help="Task ids; '-' reads ids or JSON tasks (one per line) from stdin.",
    show_default=False)]
FromOpt = Annotated[Optional[Path], typer.Option(
    "--from", metavar="FILE", help="Read ids from a file: one id per line, JSON tasks (NDJSON), or a CSV with "
    "a task_id column (a batch manifest).", show_default=False)]
KindOpt = Annotated[Optional[Kind], typer.Option("--kind", help="The tasks' kind (part of the query URL); "
                                                 "tried in turn when not given.", show_default=False)]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", min=1, max=256, help="Requests in parallel.")]
NameOpt = Annotated[str, typer.Option("--name", metavar="TEMPLATE", help="File name: {id}, {external_id}, "
                                      "{index}, {kind}, {provider} (default {id}; -{index} is added for several "
                                      "videos).")]
TimeoutOpt = Annotated[str, typer.Option("--timeout", help="Give up after this long (90s, 20m, 1h30m; 0: check "
                                         "once); the tasks keep running remotely.")]


def _refs(ctx: AppContext, ids: list[str] | None, from_file: Path | None, kind: Kind | None):
    import sys

    from kling_cli.taskrefs import collect

    refs = collect(ids or [], from_file, sys.stdin)
    for ref in refs:
        ref.kind = ref.kind or (kind.value if kind else None)
    return refs


def _labels(ctx: AppContext, refs) -> dict[str, str]:
    """Row and prompt start of each task, from the journal (which also gives the profile and the kind of the
    tasks this machine submitted) or the manifest."""
    from kling_cli.labels import task_labels

    entries = ctx.follow([ref.id for ref in refs])
    for ref in refs:
        if ref.kind is None and ref.id in entries:
            ref.kind = entries[ref.id].kind
    return task_labels(refs, entries)


def _manifest(from_file: Path | None):
    """A batch manifest given with --from is updated with what the command learns."""
    from kling_cli.manifest import Manifest, is_manifest

    return Manifest([from_file]) if from_file is not None and is_manifest(from_file) else None


@command(app, "status", task_options=True)
def status(ctx: AppContext, task_id: TaskIdArg, kind: KindOpt = None) -> int:
    """Query a task once and print it (exit 0 even if the task failed: the query worked).

    Example: kling status 866889456698785798 --json
    """
    from kling_cli.taskrefs import check_id

    check_id(task_id, "TASK_ID")
    ctx.follow([task_id])
    task = ctx.service().get(task_id, kind.value if kind else None)
    ctx.out.task(task, detail=True)
    return 0


@command(app, "batch-status", task_options=True)
def batch_status(
    ctx: AppContext,
    task_ids: TaskIdsArg = None,
    from_file: FromOpt = None,
    kind: KindOpt = None,
    concurrency: ConcurrencyOpt = 16,
    check: Annotated[bool, typer.Option("--check", help="Exit 8 if any task failed.")] = False,
) -> int:
    """Query many tasks at once: a table on a terminal, a line (or JSON task) per task otherwise.

    Uses the provider's batch query where it has one. Exit 0 when every query worked.

    Example: kling batch-status --from manifest.csv --json
    """
    from kling_cli.cli._tables import print_status_table
    from kling_cli.errors import ExitCode, KlingError, TaskFailed
    from kling_cli.models import TaskStatus
    from kling_cli.progress import summary_line

    refs = _refs(ctx, task_ids, from_file, kind)
    manifest = _manifest(from_file)  # opened first: a broken one is refused before any query
    labels = _labels(ctx, refs)
    service = ctx.service()
    service.concurrency = concurrency
    results = service.get_many(refs)
    counts: dict[str, int] = {}
    errors: list[KlingError] = []
    for ref in refs:
        result = results[ref.id]
        if isinstance(result, KlingError):
            errors.append(result)
            counts["error"] = counts.get("error", 0) + 1
        else:
            counts[result.status.value] = counts.get(result.status.value, 0) + 1
    print_status_table(ctx.out, refs, results, labels)
    if manifest is not None:
        for result in results.values():
            if not isinstance(result, KlingError):
                manifest.update_task(result)
        manifest.flush(force=True)
    ctx.out.info(summary_line(counts))
    if errors:
        if not ctx.out.json_mode:  # (with --json each failed query already is an error object on stdout)
            ctx.out.error(KlingError(f"{len(errors)} of {len(refs)} queries failed; the first: {errors[0].message}",
                                     hint=errors[0].hint))
        return int(errors[0].exit_code)
    if check and counts.get(TaskStatus.FAILED.value):
        failed = [ref.id for ref in refs if getattr(results[ref.id], "status", None) is TaskStatus.FAILED]
        ctx.out.error(TaskFailed(f"{len(failed)} of {len(refs)} tasks failed (--check)", extra={"task_ids": failed}))
        return int(ExitCode.TASK_FAILED)
    return 0


@command(app, "wait", task_options=True)
def wait(
    ctx: AppContext,
    task_ids: TaskIdsArg = None,
    from_file: FromOpt = None,
    kind: KindOpt = None,
    timeout: TimeoutOpt = "1h",
    interval: IntervalOpt = None,
    download: Annotated[Optional[Path], typer.Option("--download", metavar="DIR", help="Download each task's videos "
                                                     "into DIR as soon as it succeeds.", show_default=False)] = None,
    name: NameOpt = "{id}",
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed task.")] = False,
    concurrency: ConcurrencyOpt = 16,
    events: Annotated[Optional[Path], typer.Option("--events", metavar="FILE", help="Append what happens to FILE "
                                                   "as NDJSON (status, downloaded, failed...), one flushed line per "
                                                   "event, for another step to tail.", show_default=False)] = None,
) -> int:
    """Wait until tasks succeed or fail, printing each one as it finishes.

    Exit 0 if all succeeded, 8 if any failed, 7 if the deadline passed first (the running ids are listed).

    Example: kling submit t2v "a fox" --json | kling wait - --timeout 20m --download videos
    """
    from kling_cli.cli._many import DownloadPlan, wait_many
    from kling_cli.downloads import check_template
    from kling_cli.waiting import parse_duration

    seconds = parse_duration(timeout)
    check_template(name)
    refs = _refs(ctx, task_ids, from_file, kind)
    labels = _labels(ctx, refs)
    ctx.service().concurrency = concurrency
    plan = DownloadPlan(download, name) if download is not None else None
    manifest = _manifest(from_file)
    try:
        return wait_many(ctx, refs, timeout=seconds, interval=interval, download=plan, fail_fast=fail_fast,
                         manifest=manifest, events_log=events, labels=labels)
    finally:
        if manifest is not None:
            manifest.flush(force=True)


@command(app, "download", task_options=True)
def download(
    ctx: AppContext,
    task_ids: TaskIdsArg = None,
    from_file: FromOpt = None,
    kind: KindOpt = None,
    output: Annotated[str, typer.Option("--output", "-o", metavar="DIR", help="Directory for the videos, or '-' "
                                        "to write a single video to stdout.")] = ".",
    name: NameOpt = "{id}",
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64, help="Downloads in parallel.")] = 4,
    force: Annotated[bool, typer.Option("--force", "-f", help="Download again, replacing existing files.")] = False,
) -> int:
    """Download the videos of succeeded tasks, in parallel, resuming partial files.

    Each video is written through NAME.mp4.part, checked, renamed to NAME.mp4, and described in a NAME.json
    sidecar (sha256, size, source). A complete file is skipped; a different one is never overwritten
    without --force. Prints each file's path.

    Example: kling download 866889456698785798 -o videos --name "{external_id}"
    """
    from kling_cli.cli._many import DownloadPlan, download_many
    from kling_cli.downloads import check_template

    check_template(name)
    refs = _refs(ctx, task_ids, from_file, kind)
    ctx.follow([ref.id for ref in refs])
    ctx.service().download_concurrency = concurrency
    plan = DownloadPlan(Path(output), name, force, to_stdout=output == "-")
    manifest = _manifest(from_file)
    try:
        return download_many(ctx, refs, plan, manifest)
    finally:
        if manifest is not None:
            manifest.flush(force=True)
