"""`kling submit t2v|motion --from-csv FILE`: validation, --dry-run, the scheduled run and its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kling_cli.batch import BatchOptions, BatchRun, Planned, Plan, plan_rows
from kling_cli.cli._common import AppContext
from kling_cli.cli._many import DownloadPlan, Tally, finish_downloads, record_files, start_download
from kling_cli.errors import ExitCode, KlingError, UsageError, WaitTimeout
from kling_cli.events import DOWNLOADED, ERROR, FOLLOWING, REQUEUED, STATUS, Event, EventLog, Stream
from kling_cli.labels import label, row_prompt, shorten
from kling_cli.models import Task, TaskStatus
from kling_cli.progress import View
from kling_cli.timing import learned_policy
from kling_cli.waiting import Waiter, format_duration


@dataclass
class RunOptions:
    dry_run: bool
    outs: list[Path]
    timeout: float
    interval: float | None
    download: DownloadPlan | None
    #: --events FILE: the NDJSON log of what happens
    events: Path | None = None


def _report_problems(ctx: AppContext, opts: BatchOptions, plan: Plan) -> None:
    for _number, line, message in plan.problems:
        ctx.out.warn(f"{opts.csv_path}:{line}: {message}")


def rerun_state(journal, profile: str, external_id: str) -> tuple[str, Any]:
    """What a run would do with a row, by what the journal says of its external id: `new` (send it), `done`
    (submitted before and finished: report it), `in_flight` (submitted before: follow it, send nothing),
    `uncertain` (its answer was lost: look it up where the provider can, else hold it back)."""
    entry = journal.find_external(profile, external_id) if journal is not None else None
    if entry is None:
        return "new", None
    if entry.task_id:
        return ("done" if entry.status in ("succeeded", "failed") else "in_flight"), entry
    return "uncertain", entry


def dry_run(ctx: AppContext, opts: BatchOptions) -> int:
    """Print the resolved request of every row (inline media shown as a placeholder), what a real run would do
    with it by the journal, and what it would cost; send nothing."""
    from kling_cli.pricing import Totals

    service = ctx.service()
    totals = Totals()
    profile = service.resolved.profile
    journal = service.journal
    if journal is not None and not journal.history(limit=1, profile=profile):
        journal = None  # nothing submitted on this profile yet: every row is new
    states = {"new": 0, "done": 0, "in_flight": 0, "uncertain": 0}
    files: dict[str, dict[str, Any]] = {}

    def show(row, req, identity: str, external_id: str) -> None:
        state, entry = rerun_state(journal, profile, external_id)
        states[state] += 1
        req.external_id = entry.external_id if entry is not None else external_id
        body, guess = dry_run_request(service, opts.kind, req)
        if state in ("new", "uncertain"):
            totals.add(guess.cost)
            files.update({upload["sha256"]: upload for upload in body.get("uploads", [])})
        ctx.out.json({"row": row.number, "line": row.line, "identity": identity, "external_id": req.external_id,
                      "rerun": state, "task_id": entry.task_id if entry is not None else None, **body})

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
    ctx.out.info(f"estimated cost: {totals.text()}" + (" (no public price for some rows: see the README's price "
                                                       "table)" if totals.unknown else ""))
    say_uploads(ctx, list(files.values()))
    return int(ExitCode.USAGE) if plan.problems and not opts.skip_invalid else 0


def dry_run_request(service, kind: str, req) -> tuple[dict[str, Any], Any]:
    """What a submit would send (inline media shown as a placeholder) and what it would cost."""
    from kling_cli.pricing import estimate

    uploads = service.upload_plan(kind, req)
    for attr in ("image", "image_tail"):
        ref = getattr(req, attr, None)
        if ref is not None and not ref.is_url:
            setattr(req, f"{attr}_base64", f"<base64 of {ref.value}>")
    wire = service.dialect.build_submit(kind, req)
    resolved = service.resolved
    guess = estimate(resolved.provider, resolved.dialect, kind, wire.json)
    return {"kind": kind, "model": service.dialect.model_for(kind, req.model), "method": wire.method,
            "path": wire.path, "request": wire.json,
            "estimate": {"cost": guess.cost.to_json() if guess.cost else None, "unit": guess.unit,
                         "source": guess.source, "for": guess.what},
            **({"uploads": uploads} if uploads else {})}, guess


def say_uploads(ctx: AppContext, uploads: list[dict[str, Any]]) -> None:
    """--dry-run: which local files would be uploaded, and which have a URL already (this uploader's, still
    fresh)."""
    from kling_cli.uploads import shown

    for upload in uploads:
        ctx.out.info(f"already uploaded: {upload['file']} -> {shown(upload['url'])}" if upload["url"] else
                     f"would upload: {upload['file']} (sha256 {upload['sha256'][:12]}...)")


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

    def print_row(item: Planned, state: str, detail: str, task: Task | None = None,
                  files: list[str] | None = None) -> None:
        if item.row.number not in printed:
            printed.add(item.row.number)
            _print_row(ctx, item, state, detail, task, files, row_prompt(item.row.values, opts.defaults))

    def downloaded(task: Task, paths: list[str]) -> None:
        print_row(events.locate(task.id), task.status.value, "", task, paths)

    def show(event: Event) -> None:
        """What a person sees and a pipeline reads: the live view, a line per row on stderr, the results on stdout."""
        item = event.row
        if item is not None and item.task_id and item.task_id not in view.labels:
            view.labels[item.task_id] = label(item.row.number, row_prompt(item.row.values, opts.defaults))
        if event.name == STATUS and not event.ended:
            view.update(event.task)  # a poll saw it move
            return
        if item is None or event.name == DOWNLOADED or (event.name == ERROR and not event.final):
            return
        state, detail, task = event.state, event.detail, event.task
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
        if state in ("refused", "uncertain", "error") or (state == "submitted" and not opts.wait):
            print_row(item, state, detail)
        if not event.ended:
            return
        if task.id in ctx.running:
            ctx.running.remove(task.id)
        if task.status is TaskStatus.SUCCEEDED and run.download is not None and not task.without_video:
            start_download(ctx, task, run.download, view, tally, events, downloaded)
        else:
            print_row(item, task.status.value, "", task)

    events = Stream()
    if manifest is not None:
        events.subscribe(lambda event: _to_manifest(manifest, event, opts.defaults))
    events.subscribe(record_files(ctx, manifest)).subscribe(show)
    log = EventLog(run.events) if run.events is not None else None
    if log is not None:
        events.subscribe(log)
    waiter = Waiter(lambda batch, deadline: service.get_many(batch, deadline=deadline), [], timeout=run.timeout,
                    policy=learned_policy(service, run.interval, callbacks=_callbacks(opts, plan)),
                    clock=service.clock, sleep=service.sleep)
    batch = BatchRun(service, opts, plan, waiter, events, manifest=manifest)
    try:
        with view:
            result = batch.run()
            finish_downloads(ctx, tally)
    finally:
        if manifest is not None:
            manifest.flush(force=True)
        if log is not None:
            log.close()
    out.info(f"{plan.total} rows: {result.submitted} submitted now, {result.skipped} already submitted, "
             f"{result.succeeded} succeeded, {result.failed} failed, {result.refused} refused, "
             f"{result.uncertain} uncertain, {len(plan.problems)} invalid"
             + (f", {plan.out_of_shard} in other shards" if plan.out_of_shard else "")
             + (f", {result.followed} submitted by other processes" if result.followed else "")
             + (f", {result.no_video} succeeded without a video" if result.no_video else ""))
    if result.budget is not None:
        budget = result.budget
        out.info(f"cost: {result.spent:g} {budget.unit} of --max-cost {budget.amount:g} {budget.unit} (reported where "
                 "the provider reported it, else estimated)")
    if result.journal_lost is not None:
        return _journal_lost(ctx, result)
    if result.budget_stopped:
        out.error(KlingError(f"--max-cost {result.budget.amount:g} {result.budget.unit} reached: stopped submitting, "
                             f"{result.not_sent} rows not sent", code="budget",
                             hint="run the same command again with a higher --max-cost to send the rest; rows "
                             "already sent are not paid again"))
        return int(ExitCode.BUDGET)
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


def _callbacks(opts: BatchOptions, plan: Plan) -> bool:
    """Whether the rows' tasks will call back (--callback-url, or the CSV's column): then a `kling callback
    listen` on that address records their ends in the journal, and polls are only a fallback."""
    return bool(opts.defaults.get("callback_url")) or any(item.row.values.get("callback_url", "").strip()
                                                         for item in plan.rows)


def _to_manifest(manifest, event: Event, defaults: dict[str, Any]) -> None:
    """A row's state as the batch decided it; what polls see on the way is not written."""
    from kling_cli.manifest import task_fields

    item = event.row
    if item is None or event.name in (REQUEUED, FOLLOWING, DOWNLOADED) or (event.name == STATUS and not event.ended) \
            or (event.name == ERROR and not event.final):
        return
    values = {"line": item.row.line, "identity": item.identity, "kind": item.kind, "external_id": item.external_id,
              "prompt_start": shorten(row_prompt(item.row.values, defaults))}
    if event.task is not None:
        values.update(task_fields(event.task))
    else:
        values["status"] = event.state
    if event.error is not None:
        values["error"] = event.error
    manifest.update(item.row.number, **values)


def _journal_lost(ctx: AppContext, result) -> int:
    """The journal stopped answering mid-batch: no row can be claimed, so none more was sent."""
    lost = result.journal_lost
    running = f"; still running: {' '.join(result.pending)}" if result.pending else ""
    ctx.out.error(KlingError(f"{lost.message}: stopped submitting, {result.not_sent} rows not sent{running}",
                             hint="run the same command again once the journal is back: it picks up where this "
                             "one stopped, without paying twice", code=lost.code,
                             extra={"task_ids": result.pending}))
    return int(lost.exit_code)


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
                  max_in_flight: str, rate: str | None, shard: str | None, resubmit_uncertain: bool,
                  wait: bool, max_cost: str | None = None) -> BatchOptions:
    from kling_cli.batch import parse_max_in_flight, parse_rate, parse_shard

    return BatchOptions(csv_path=csv_path, kind=kind, defaults=defaults, extra_columns=extra_columns,
                        skip_invalid=skip_invalid, max_in_flight=parse_max_in_flight(max_in_flight),
                        rate=parse_rate(rate),
                        shard=parse_shard(shard), resubmit_uncertain=resubmit_uncertain, wait=wait,
                        max_cost=max_cost)

