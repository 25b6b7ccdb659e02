"""`kling history`: the journal's entries, newest first."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from kling_cli.cli._app import app
from kling_cli.cli._common import AppContext, command


@command(app, "history", journal_option=True)
def history(
    ctx: AppContext,
    # no -n: in `submit`, -n is --dry-run
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000, help="How many entries.")] = 20,
    status: Annotated[Optional[str], typer.Option("--status", help="Only entries with this status (queued, "
                                                  "running, succeeded, failed) or journal state (pending, "
                                                  "submitted, refused, uncertain).", show_default=False)] = None,
    cost: Annotated[bool, typer.Option("--cost", help="Sum what the tasks cost (reported, and estimated from the "
                                       "price table) by day, profile and model, over the whole journal.")] = False,
) -> int:
    """List the tasks in the journal, newest first (--profile P keeps one profile's).

    Example: kling history --status failed --json; kling history --cost
    """
    from kling_cli.journal import is_postgres, local_path, open_journal

    spec = ctx.journal_spec()
    if not is_postgres(spec) and not local_path(spec).exists():
        ctx.out.info(f"the journal is empty ({local_path(spec)} does not exist yet)")
        return 0
    journal = open_journal(spec)
    try:
        entries = journal.history(limit=None if cost else limit, status=status, profile=ctx.opts.profile)
    finally:
        journal.close()
    if cost:
        _print_costs(ctx, entries)
        return 0
    if ctx.out.json_mode:
        for entry in entries:
            ctx.out.json(entry.to_json())
        return 0
    for entry in entries:
        prompt = str(entry.request.get("prompt") or entry.request.get("params", {}).get("prompt") or "")
        prompt = prompt if len(prompt) <= 50 else prompt[:49] + "…"
        shown = entry.status or entry.state
        ctx.out.data("\t".join([entry.created_at, entry.task_id or "-", shown, entry.kind, entry.model or "-",
                                entry.profile, prompt]))
    return 0


def _print_costs(ctx: AppContext, entries) -> None:
    """Tasks per day, profile and model, with the cost reported and the cost the price table estimates."""
    from kling_cli.models import Cost
    from kling_cli.pricing import Totals, estimate, with_defaults

    groups: dict[tuple[str, str, str], dict] = {}
    for entry in reversed(entries):  # oldest first
        if not entry.task_id:
            continue  # refused, uncertain or pending: nothing known to be billed
        model = with_defaults(entry.provider, entry.dialect, entry.kind, entry.request)[0] or "-"
        group = groups.setdefault((entry.created_at[:10], entry.profile, model),
                                  {"tasks": 0, "reported": Totals(), "estimated": Totals()})
        group["tasks"] += 1
        if entry.cost:
            group["reported"].add(Cost(float(entry.cost.get("amount") or 0), str(entry.cost.get("unit"))))
        else:
            group["reported"].unknown += 1
        group["estimated"].add(estimate(entry.provider, entry.dialect, entry.kind, entry.request).cost)
    for (day, profile, model), group in groups.items():
        if ctx.out.json_mode:
            ctx.out.json({"day": day, "profile": profile, "model": model, "tasks": group["tasks"],
                          "reported": group["reported"].sums, "not_reported": group["reported"].unknown,
                          "estimated": group["estimated"].sums, "no_estimate": group["estimated"].unknown})
        else:
            ctx.out.data("\t".join([day, profile, model, str(group["tasks"]), group["reported"].text("not reported"),
                                    "estimated " + group["estimated"].text("without an estimate")]))
