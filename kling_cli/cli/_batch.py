"""`kling submit t2v|motion --from-csv FILE`: validation, --dry-run, the scheduled run and its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kling_cli.batch import BatchOptions, BatchRun, Planned, Plan, plan_rows
from kling_cli.cli._common import AppContext
from kling_cli.cli._many import DownloadPlan, Tally, finish_downloads, start_download
from kling_cli.errors import ExitCode, UsageError, WaitTimeout
from kling_cli.labels import label, row_prompt, shorten
from kling_cli.models import Task, TaskStatus
from kling_cli.progress import View
from kling_cli.waiting import PollPolicy, Waiter, format_duration


@dataclass
class RunOptions:
    dry_run: bool
    outs: list[Path]
    timeout: float
    interval: float | None
    download: DownloadPlan | None


def _report_problems(ctx: AppContext, opts: BatchOptions, plan: Plan) -> None:
    for _number, line, message in plan.problems:
        ctx.out.warn(f"{opts.csv_path}:{line}: {message}")


def rerun_state(journal, profile: str, identity: str) -> tuple[str, Any]:
    """What a run would do with a row, by what the journal says of its identity: `new` (send it), `done`
    (submitted before and finished: report it), `in_flight` (submitted before: follow it, send nothing),
    `uncertain` (its answer was lost: look it up where the provider can, else hold it back)."""
    entry = journal.find_identity(profile, identity) if journal is not None else None
    if entry is None:
        return "new", None
    if entry.state == "submitted" and entry.task_id:
        return ("done" if entry.status in ("succeeded", "failed") else "in_flight"), entry
    return "uncertain", entry


def dry_run(ctx: AppContext, opts: BatchOptions) -> int:
    """Print the resolved request of every row (inline media shown as a placeholder) and what a real run would
    do with it, by the journal; send nothing."""
    service = ctx.service()
    profile = service.resolved.profile
    journal = service.journal
    if journal is not None and not journal.history(limit=1, profile=profile):
        journal = None  # nothing submitted on this profile yet: every row is new
    states = {"new": 0, "done": 0, "in_flight": 0, "uncertain": 0}

    def show(row, req, identity: str, external_id: str) -> None:
        state, entry = rerun_state(journal, profile, identity)
        states[state] += 1
        req.external_id = entry.external_id if entry is not None else external_id
        if getattr(req, "image", None) is not None and not req.image.is_url:
            req.image_base64 = f"<base64 of {req.image.value}>"
        wire = service.dialect.build_submit(opts.kind, req)
        ctx.out.json({"row": row.number, "line": row.line, "identity": identity, "external_id": req.external_id,
                      "kind": opts.kind, "rerun": state, "task_id": entry.task_id if entry is not None else None,
                      "method": wire.method, "path": wire.path, "request": wire.json})

    plan = plan_rows(service, opts, on_row=show, keep=False)
    _report_problems(ctx, opts, plan)
    shard = f", {plan.out_of_shard} in other shards" if plan.out_of_shard else ""
    if service.dialect.lookup_by_external_id:
        lost = "looked up by external id first, sent only if it was never created"
    elif opts.resubmit_uncertain:
        lost = "sent again (--resubmit-uncertain): may pay twice"
    else:
        lost = "not sent again without --resubmit-uncertain"
    ctx.out.info(f"dry run: {states['new']} of {plan.total} rows would be submitted; "
                 f"{states['done']} already submitted and finished, {states['in_flight']} in flight (followed, not "
                 f"sent again), {states['uncertain']} uncertain ({lost}){shard}, {len(plan.problems)} invalid; "
                 "nothing was sent")
    return int(ExitCode.USAGE) if plan.problems and not opts.skip_invalid else 0


def run_batch(ctx: AppContext, opts: BatchOptions, run: RunOptions) -> int:
    if run.dry_run:
        return dry_run(ctx, opts)
    service = ctx.service(journal_required=True)
    out = ctx.out
    plan = plan_rows(service, opts)
    if plan.problems:
        _report_problems(ctx, opts, plan)
        if not opts.skip_invalid:
            raise UsageError(f"{len(plan.problems)} of {plan.total} rows of {opts.csv_path} are invalid; nothing was sent",
                             hint="fix them, or --skip-invalid to send the valid rows (see --dry-run)")
        out.warn(f"skipping {len(plan.problems)} invalid rows (--skip-invalid)")
    manifest = None
    if run.outs:
        from kling_cli.manifest import Manifest

        manifest = Manifest(run.outs)
        for number, line, message in plan.problems:
            manifest.update(number, line=line, status="invalid", error=message, task_id=None, identity=None)
    tally = Tally()
    view = View(out, total=len(plan.rows))
    printed: set[int] = set()  # each row's line goes to stdout once, when it ends for this run
    by_task: dict[str, Planned] = {}

    def print_row(item: Planned, state: str, detail: str, task: Task | None = None,
                  files: list[str] | None = None) -> None:
        if item.row.number not in printed:
            printed.add(item.row.number)
            _print_row(ctx, item, state, detail, task, files, row_prompt(item.row.values, opts.defaults))

    def downloaded(task: Task, paths: list[str]) -> None:
        print_row(by_task[task.id], task.status.value, "", task, paths)

    def on_event(item: Planned, state: str, detail: str, task: Task | None) -> None:
        if item.task_id and item.task_id not in by_task:
            by_task[item.task_id] = item
            view.labels[item.task_id] = label(item.row.number, row_prompt(item.row.values, opts.defaults))
        if state == "submitted" and item.task_id and item.task_id not in ctx.running:
            ctx.running.append(item.task_id)
        text = f"row {item.row.number} (line {item.row.line}): {state}" + (f": {detail}" if detail else "")
        if state in ("refused", "uncertain", "error"):
            out.warn(text)
            view.error(item.task_id or f"row {item.row.number}", detail, True, announce=False)
        elif not view.live_mode:  # on a terminal the live display shows it
            out.info(text)
        if task is not None:
            view.update(task)
        # a row's result line on stdout: terminal rows are printed by on_done
        if state in ("refused", "uncertain", "error") or (state == "submitted" and not opts.wait):
            print_row(item, state, detail)

    def on_done(item: Planned, task: Task) -> None:
        if task.id in ctx.running:
            ctx.running.remove(task.id)
        if task.status is TaskStatus.SUCCEEDED and run.download is not None:
            by_task[task.id] = item
            start_download(ctx, task, run.download, view, tally, downloaded, manifest)
        else:
            print_row(item, task.status.value, "", task)

    waiter = Waiter(lambda batch, deadline: service.get_many(batch, deadline=deadline), [], timeout=run.timeout,
                    policy=PollPolicy.from_options(run.interval), clock=service.clock, sleep=service.sleep,
                    on_update=view.update)
    batch = BatchRun(service, opts, plan, waiter, manifest=manifest, on_event=on_event, on_done=on_done)
    try:
        with view:
            result = batch.run()
            finish_downloads(ctx, tally)
    finally:
        if manifest is not None:
            manifest.flush(force=True)
    out.info(f"{plan.total} rows: {result.submitted} submitted now, {result.skipped} already submitted, "
             f"{result.succeeded} succeeded, {result.failed} failed, {result.refused} refused, "
             f"{result.uncertain} uncertain, {len(plan.problems)} invalid"
             + (f", {plan.out_of_shard} in other shards" if plan.out_of_shard else ""))
    if result.timed_out:
        ids = " ".join(result.pending)
        out.error(WaitTimeout(f"the batch is not finished after {format_duration(run.timeout)}"
                              + (f"; still running: {ids}" if ids else ""),
                              hint="run the same command again: it picks up where this one stopped",
                              extra={"task_ids": result.pending}))
        return int(ExitCode.TIMEOUT)
    if result.failed or result.refused:
        return int(ExitCode.TASK_FAILED)
    if result.uncertain:
        return int(ExitCode.UNAVAILABLE)
    if result.errors:
        return int(result.errors[0].exit_code)
    return tally.exit_code()


def _print_row(ctx: AppContext, item: Planned, state: str, detail: str, task: Task | None,
               files: list[str] | None, prompt: str) -> None:
    """`ROW<TAB>TASK ID<TAB>STATUS<TAB>RESULT<TAB>PROMPT START` whatever the outcome: RESULT is the video URL
    (the downloaded files with --download) or the reason (JSON: the task with row, line, identity, files)."""
    out = ctx.out
    if out.json_mode:
        body: dict[str, Any] = task.to_json(raw=out.raw) if task else {"id": item.task_id, "status": state}
        body.update({"row": item.row.number, "line": item.row.line, "identity": item.identity,
                     "external_id": item.external_id})
        if files is not None:
            body["files"] = files
        if task is None and detail and state in ("refused", "uncertain", "error"):
            body["error"] = {"code": state, "message": detail}
        out.json(body)
        return
    from kling_cli.render import one_line, outcome_text

    result = ""
    if files:
        result = " ".join(files)
    elif task is not None:
        result = outcome_text(task)
    elif state in ("refused", "uncertain", "error"):
        result = one_line(detail)
    out.data("\t".join((str(item.row.number), item.task_id or "-", state, result, shorten(prompt))))


def batch_options(kind: str, csv_path: Path, defaults: dict[str, Any], *, extra_columns: bool, skip_invalid: bool,
                  max_in_flight: int, rate: str | None, shard: str | None, resubmit_uncertain: bool,
                  wait: bool) -> BatchOptions:
    from kling_cli.batch import parse_rate, parse_shard

    return BatchOptions(csv_path=csv_path, kind=kind, defaults=defaults, extra_columns=extra_columns,
                        skip_invalid=skip_invalid, max_in_flight=max_in_flight, rate=parse_rate(rate),
                        shard=parse_shard(shard), resubmit_uncertain=resubmit_uncertain, wait=wait)

