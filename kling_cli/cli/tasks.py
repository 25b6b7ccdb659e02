"""`kling status`, `kling wait` and `kling download`: following tasks that were already submitted."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from kling_cli.cli._app import app
from kling_cli.cli._common import AppContext, command
from kling_cli.cli.submit import IntervalOpt


class Kind(str, Enum):
    t2v = "t2v"
    motion = "motion"


TaskIdArg = Annotated[str, typer.Argument(metavar="TASK_ID", help="The id printed by `kling submit`.",
                                          show_default=False)]
KindOpt = Annotated[Optional[Kind], typer.Option("--kind", help="The task's kind (part of the query URL); "
                                                 "tried in turn when not given.", show_default=False)]


@command(app, "status", task_options=True)
def status(ctx: AppContext, task_id: TaskIdArg, kind: KindOpt = None) -> int:
    """Query a task once and print it (exit 0 even if the task failed: the query worked).

    Example: kling status 866889456698785798 --json
    """
    task = ctx.service().get(task_id, kind.value if kind else None)
    ctx.out.task(task, detail=True)
    return 0


@command(app, "wait", task_options=True)
def wait(
    ctx: AppContext,
    task_id: TaskIdArg,
    kind: KindOpt = None,
    timeout: Annotated[str, typer.Option("--timeout", help="Give up after this long (90s, 20m, 1h); the task keeps "
                                         "running remotely.")] = "1h",
    interval: IntervalOpt = None,
    download: Annotated[Optional[Path], typer.Option("--download", metavar="DIR", help="Download the videos into "
                                                     "DIR once the task succeeds.", show_default=False)] = None,
) -> int:
    """Wait until a task succeeds or fails, then print it.

    Exit 0 if it succeeded, 8 if it failed, 7 if the deadline passed first.

    Example: kling wait 866889456698785798 --timeout 20m --download videos
    """
    from kling_cli.cli._follow import follow, report
    from kling_cli.waiting import parse_duration

    seconds = parse_duration(timeout)
    task = follow(ctx, task_id, kind.value if kind else None, timeout=seconds, interval=interval)
    return report(ctx, task, download=download)


@command(app, "download", task_options=True)
def download(
    ctx: AppContext,
    task_id: TaskIdArg,
    kind: KindOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="DIR", help="Directory for the videos.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", "-f", help="Download again even if the file exists.")] = False,
) -> int:
    """Download the videos of a succeeded task (prints each file's path).

    Files are named TASK_ID.mp4 and written through TASK_ID.mp4.part, so an interrupted download resumes.

    Example: kling download 866889456698785798 -o videos
    """
    service = ctx.service()
    task = service.get(task_id, kind.value if kind else None)
    paths = service.download(task, output, force=force)
    if ctx.out.json_mode:
        ctx.out.task(task, files=[str(p) for p in paths])
    for path in paths:
        ctx.out.info(f"downloaded {path}")
        if not ctx.out.json_mode:
            ctx.out.data(str(path))
    return 0
