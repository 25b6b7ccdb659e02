"""`kling callback verify` and `kling callback listen`."""

from __future__ import annotations

import os
import sys
import threading
from typing import Annotated, Optional

import typer

from kling_cli import envvars
from kling_cli.cli._app import callback_app
from kling_cli.cli._common import AppContext, command
from kling_cli.errors import ConfigError, ExitCode, KlingError, UsageError

SecretFileOpt = Annotated[Optional[str], typer.Option(
    "--webhook-secret-file", metavar="PATH|-", help="The official API's webhook secret (whsec_...); default: "
    "$KLING_WEBHOOK_SECRET, then the profile's stored one.", show_default=False)]


class CallbackRejected(KlingError):
    exit_code = ExitCode.REJECTED
    code = "invalid_callback"


def _keys(ctx: AppContext, secret_file: str | None) -> tuple[str | None, str | None]:
    """The API key (aigw signs with it) and the webhook secret (official API), wherever they are set."""
    from kling_cli.credentials import read_secret

    api_key = stored_secret = None
    try:
        creds = ctx.resolved().credentials
        api_key, stored_secret = creds.api_key, creds.webhook_secret
    except ConfigError as exc:
        ctx.out.debug(f"no profile to take keys from: {exc.message}")
    if secret_file:
        secret = read_secret(secret_file, what="webhook secret", stdin_is_tty=ctx.stdin_is_tty,
                             no_input=ctx.no_input)
    else:
        secret = os.environ.get(envvars.WEBHOOK_SECRET) or stored_secret
    if secret:
        ctx.out.secrets.append(secret)
    return api_key, secret


def _headers(items: list[str] | None) -> dict[str, str]:
    headers = {}
    for item in items or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {item!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


@command(callback_app, "verify")
def callback_verify(
    ctx: AppContext,
    header: Annotated[Optional[list[str]], typer.Option("--header", "-H", metavar="'NAME: VALUE'", help="A request "
                                                        "header, e.g. -H 'webhook-signature: v1,...' (repeatable).",
                                                        show_default=False)] = None,
    webhook_secret_file: SecretFileOpt = None,
) -> int:
    """Check the signature of a callback body read from stdin and print its task (exit 0 valid, 5 invalid).

    aigw callbacks carry their own `sign`; official Kling webhooks are checked when their headers are given.

    Example: kling callback verify --profile gw < body.json
    """
    from kling_cli.callbacks import InvalidCallback, read_callback

    if ctx.stdin_is_tty:
        raise UsageError("pipe the callback body in on stdin", hint="`kling callback verify < FILE`")
    body = sys.stdin.buffer.read()
    if not body.strip():  # nothing to check: not a question of keys
        raise UsageError("the callback body on stdin is empty",
                         hint="pipe in the body the provider POSTed: `kling callback verify < FILE`")
    headers = _headers(header)
    api_key, secret = _keys(ctx, webhook_secret_file)
    try:
        callback = read_callback(body, headers, api_key=api_key, webhook_secret=secret)
    except InvalidCallback as exc:
        raise CallbackRejected(f"invalid callback: {exc}", hint="check the key or secret of the profile") from None
    if not callback.signed:
        raise CallbackRejected("the callback is not signed, so it cannot be verified",
                               hint="give its webhook-* headers with -H, or set a webhook secret in the Kling console")
    ctx.out.info(f"valid {callback.source} callback signature")
    ctx.out.task(callback.task)
    return 0


@command(callback_app, "listen", journal_option=True)
def callback_listen(
    ctx: AppContext,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (keep it loopback).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port).")] = 8787,
    count: Annotated[Optional[int], typer.Option("--count", min=1, help="Stop after this many accepted callbacks.",
                                                 show_default=False)] = None,
    webhook_secret_file: SecretFileOpt = None,
) -> int:
    """Receive callbacks on loopback and print each one as a JSON task per line, for local development.

    Signed callbacks are verified (a wrong signature is answered 401 and not printed). A task's end is noted
    in the journal, so that a CSV run given --callback-url to this address learns of it at once.

    Example: kling callback listen --port 8787 --profile gw   (then submit with --callback-url http://127.0.0.1:8787/)
    """
    from kling_cli.callbacks import InvalidCallback, read_callback
    from kling_cli.sandbox.server import App, HTTPServer, Request, Response, json_response

    api_key, secret = _keys(ctx, webhook_secret_file)
    journal = ctx.journal()
    lock = threading.Lock()
    accepted = [0]

    def receive(req: Request) -> Response:
        if req.method != "POST":
            return json_response(405, {"error": "POST a callback here"})
        try:
            callback = read_callback(req.body, dict(req.headers.items()), api_key=api_key, webhook_secret=secret)
        except InvalidCallback as exc:
            ctx.out.warn(f"rejected a callback ({exc.status}): {exc}")
            return json_response(exc.status, {"error": str(exc)})
        with lock:
            ctx.out.json(callback.task.to_json(raw=ctx.opts.raw))
            accepted[0] += 1
            done = count is not None and accepted[0] >= count
        if journal is not None and callback.task.terminal and callback.task.id:
            try:
                journal.record_callback(callback.task.id)
            except Exception as exc:  # the journal is best-effort here: a run following the task polls it
                ctx.out.warn(f"journal: could not note the callback of task {callback.task.id}: {exc}")
        state = "signature valid" if callback.signed else "unsigned"
        ctx.out.info(f"{callback.source} callback: task {callback.task.id} {callback.task.status.value} ({state})")
        if done:
            threading.Thread(target=server.shutdown, daemon=True).start()
        return json_response(200, {"ok": True})

    app = App()
    app.not_found = receive
    try:
        server = HTTPServer((host, port), app)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="pick another --port") from None
    ctx.out.info(f"listening for callbacks on http://{host}:{server.port}/ (Ctrl-C stops)")
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        ctx.out.info("stopped")
    finally:
        server.server_close()
        if journal is not None:
            journal.close()
    return 0
