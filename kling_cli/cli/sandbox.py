"""`kling sandbox serve`: the emulator in the foreground, for CI pipelines and manual tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kling_cli.cli._app import sandbox_app
from kling_cli.cli._common import AppContext, command, rule


@command(sandbox_app, "serve")
def sandbox_serve(
    ctx: AppContext,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (keep it loopback).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port).")] = 8765,
    task_seconds: Annotated[Optional[float], typer.Option("--task-seconds", callback=rule("task_seconds"), help="How "
                                                          "long each emulated task takes (default 4).",
                                                          show_default=False)] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="Where tasks are kept (default: the data "
                                                      "dir's sandbox/, shared with --profile sandbox).",
                                                      show_default=False)] = None,
    latency: Annotated[Optional[str], typer.Option("--latency", metavar="DURATION", help="Answer every API request "
                                                   "this late, e.g. 100ms (a slow network or provider).",
                                                   show_default=False)] = None,
    retry_after: Annotated[Optional[float], typer.Option("--retry-after", metavar="S",
                                                         callback=rule("number", low=0, high=3600), help="Send "
                                                         "Retry-After: S with every 429 (the providers document "
                                                         "none, so by default none is sent).",
                                                         show_default=False)] = None,
    max_running: Annotated[Optional[int], typer.Option("--max-running", metavar="N", min=1, help="Refuse a submit "
                                                       "while N tasks are running, as the provider does past an "
                                                       "account's limit (Kling: 429, code 1303).",
                                                       show_default=False)] = None,
    task_spread: Annotated[float, typer.Option("--task-spread", metavar="SIGMA", min=0.0, help="Draw each task's "
                                               "run time from a lognormal around --task-seconds with this spread "
                                               "(e.g. 0.3).")] = 0.0,
    failure_rate: Annotated[float, typer.Option("--failure-rate", metavar="P", min=0.0, max=1.0, help="Fail this "
                                                "share of the tasks (e.g. 0.03).")] = 0.0,
) -> int:
    """Run the sandbox until Ctrl-C and print its base URL for each dialect.

    Example: kling sandbox serve --port 8765 &  then  KLING_PROFILE=sandbox KLING_BASE_URL=http://127.0.0.1:8765/kling kling submit t2v "test"
    """
    from kling_cli.config import data_dir, load_config
    from kling_cli.presets import SANDBOX_ACCESS_KEY, SANDBOX_API_KEY, SANDBOX_SECRET_KEY
    from kling_cli.sandbox import new_sandbox, task_seconds_setting
    from kling_cli.sandbox.core import Account
    from kling_cli.waiting import parse_duration

    delay = parse_duration(latency) if latency is not None else 0.0
    settings = dict(load_config(warn=ctx.out.warn).sandbox)
    if task_seconds is not None:
        settings["task_seconds"] = task_seconds
    log = (lambda line: ctx.out.debug(line)) if ctx.opts.verbose else None
    try:
        sandbox = new_sandbox(state_dir or data_dir() / "sandbox", task_seconds=task_seconds_setting(settings),
                              host=host, port=port, log=log, latency=delay, retry_after=retry_after,
                              account=Account(max_running=max_running, spread=task_spread,
                                              failure_rate=failure_rate))
    except OSError as exc:
        from kling_cli.errors import UsageError

        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="pick another --port") from None
    urls = {dialect: sandbox.base_url(dialect) for dialect in sandbox.dialects}
    if ctx.out.json_mode:
        ctx.out.json({"origin": sandbox.origin, "base_urls": urls})
    else:
        for dialect, url in urls.items():
            ctx.out.data(f"{dialect}\t{url}")
    slow = f", answers {delay * 1000:g} ms late" if delay else ""
    ctx.out.info(f"sandbox: tasks take {sandbox.task_seconds:g}s{slow}; API key {SANDBOX_API_KEY}, "
                 f"access key {SANDBOX_ACCESS_KEY}, secret key {SANDBOX_SECRET_KEY}; Ctrl-C stops it")
    try:
        sandbox.serve_forever()
    except KeyboardInterrupt:
        ctx.out.info("sandbox stopped")
    finally:
        sandbox.server.server_close()
        sandbox.store.close()
    return 0
