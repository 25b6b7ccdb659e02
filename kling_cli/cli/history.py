"""`kling history`: the journal's entries, newest first."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from kling_cli.cli._app import app
from kling_cli.cli._common import AppContext, command


@command(app, "history")
def history(
    ctx: AppContext,
    # no -n: in `submit`, -n is --dry-run
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many entries.")] = 20,
    status: Annotated[Optional[str], typer.Option("--status", help="Only entries with this status (queued, "
                                                  "running, succeeded, failed) or journal state (pending, "
                                                  "submitted, refused, uncertain).", show_default=False)] = None,
) -> int:
    """List the tasks this machine submitted, newest first (--profile P keeps one profile's).

    Example: kling history --status failed --json
    """
    from kling_cli.config import data_dir
    from kling_cli.journal import FILENAME, Journal

    path = data_dir() / FILENAME
    if not path.exists():
        ctx.out.info(f"the journal is empty ({path} does not exist yet)")
        return 0
    journal = Journal(path)
    try:
        entries = journal.history(limit=limit, status=status, profile=ctx.opts.profile)
    finally:
        journal.close()
    if ctx.out.json_mode:
        for entry in entries:
            ctx.out.json(entry.to_json())
        return 0
    for entry in entries:
        prompt = str(entry.request.get("prompt") or entry.request.get("params", {}).get("prompt") or "")
        prompt = prompt if len(prompt) <= 50 else prompt[:49] + "…"
        shown = entry.status or entry.state
        ctx.out.data("\t".join([entry.created_at, entry.task_id or "-", shown, entry.kind, entry.profile, prompt]))
    return 0
