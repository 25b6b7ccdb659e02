"""Shared fixtures: every test gets its own config and data dirs, a clean environment, and (on request)
its own sandbox on loopback, which the CLI reaches over real HTTP.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from kling_cli.cli import main
from kling_cli.presets import SANDBOX_ACCESS_KEY, SANDBOX_API_KEY, SANDBOX_SECRET_KEY
from kling_cli.sandbox import new_sandbox
from kling_cli.sandbox.core import Sandbox

DATA = Path(__file__).parent / "data"
FIXTURES = Path(__file__).parent / "fixtures"
TASK_SECONDS = 0.3


def sourced(path: str) -> Any:
    """A fixture taken from a provider's own code or docs, `{"source": where from, "payload": ...}`."""
    body = json.loads((FIXTURES / path).read_text())
    assert isinstance(body.get("source"), str) and len(body["source"]) > 20, f"{path} names no source"
    return body["payload"]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("KLING_") or key in ("NO_COLOR", "FORCE_COLOR", "TERM") or key.lower().endswith("_proxy"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KLING_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("KLING_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KLING_SANDBOX_TASK_SECONDS", str(TASK_SECONDS))
    monkeypatch.setenv("KLING_POLL_INTERVAL", "0.05")
    # Unexpected exceptions propagate in tests instead of becoming one line.
    monkeypatch.setenv("KLING_DEBUG", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def default_sigint() -> None:
    """`preexec_fn` for a child the test will interrupt: run as a background job (`pytest &` in a script,
    nohup), the suite itself ignores SIGINT and a child would inherit that; Ctrl-C must reach it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def result_file(stdout: str) -> Path:
    """The file of a `wait --download` (or `submit --download`) line: `ID<TAB>STATUS<TAB>FILE<TAB>LABEL`."""
    (line,) = stdout.splitlines()
    return Path(line.split("\t")[2])


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"Result(exit_code={self.exit_code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


def run_kling(args: list[str], input: str | bytes | None = None, env: dict[str, str | None] | None = None) -> Result:
    """The real `kling` entry point, in-process, with stdout and stderr captured apart."""
    with CliRunner().isolation(input=input, env=env) as (out, err, _mixed):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return Result(code, out.getvalue().decode(), err.getvalue().decode())


#: a command `kling` suggests, in backquotes (hints, "follow it with", notes)
SUGGESTED = re.compile(r"`(kling [^`]*)`")
#: a command with a placeholder to fill in (NAME, FILE, ID, URL...) or an ellipsis is a template, not run
TEMPLATE = re.compile(r"\b[A-Z][A-Z0-9_]+\b|\.\.\.")
#: what a suggested command may exit with: it worked, or it did what it says (waited for a task that failed)
SUGGESTION_OK = (0, 8)


class Suggestions:
    """Every command `kling` suggests during a test, run as printed at the end of the test, in the same
    environment (config, journal, working directory, sandbox still up): each one must work when pasted."""

    def __init__(self) -> None:
        self.commands: dict[str, tuple[dict[str, str | None] | None, str]] = {}
        self.done = False

    def record(self, result: Result, env: dict[str, str | None] | None, source: str) -> None:
        texts = [result.stderr]
        for line in result.stdout.splitlines():
            if line.startswith('{"error"'):
                texts.append(json.loads(line)["error"].get("hint") or "")
        for text in texts:
            for command in SUGGESTED.findall(text):
                if not TEMPLATE.search(command):
                    self.commands.setdefault(command, (env, source))

    def run(self) -> None:
        if self.done:
            return
        self.done = True
        failures = []
        for command, (env, source) in self.commands.items():
            result = run_kling(shlex.split(command)[1:], env=env)
            if result.exit_code not in SUGGESTION_OK:
                failures.append(f"`{command}` (suggested by `{source}`) exited {result.exit_code}: "
                                f"{result.stderr.strip()[-600:]}")
        assert not failures, "suggested commands that fail when pasted:\n" + "\n".join(failures)


@pytest.fixture(autouse=True)
def suggestions(isolated) -> Suggestions:
    """Torn down before `isolated`: the environment the commands were suggested in is still there."""
    recorder = Suggestions()
    yield recorder
    recorder.run()


@pytest.fixture
def kling(suggestions):
    """Run the real `kling` entry point in-process; the commands it suggests are run at the end of the test."""

    def invoke(*args: str, input: str | bytes | None = None, env: dict[str, str | None] | None = None) -> Result:
        result = run_kling([str(a) for a in args], input=input, env=env)
        suggestions.record(result, env, shlex.join(["kling", *map(str, args)]))
        return result

    return invoke


@pytest.fixture
def sandbox(tmp_path: Path, suggestions):
    # Retry-After keeps rate-limit storms fast; the backoff without it has its own tests (test_transport).
    server = new_sandbox(tmp_path / "sandbox-state", task_seconds=TASK_SECONDS, retry_after=0.05).start()
    yield server
    try:
        suggestions.run()  # while the sandbox the commands name is up
    finally:
        server.close()


def sandbox_stats(server: Sandbox) -> dict[str, Any]:
    return httpx.get(f"{server.origin}/__sandbox/stats").json()


@pytest.fixture
def add_profile(kling, tmp_path: Path):
    """Create a profile pointing at a sandbox through the real `profile add` command."""

    def add(name: str, base_url: str, *, provider: str = "custom", dialect: str | None = "kling",
            auth: str = "jwt", default: bool = True, extra: tuple[str, ...] = ()) -> Result:
        args = ["profile", "add", name, "--provider", provider, "--base-url", base_url]
        if dialect and provider == "custom":
            args += ["--dialect", dialect]
        secret_file = tmp_path / f"{name}.secret"
        if auth == "jwt":
            secret_file.write_text(SANDBOX_SECRET_KEY + "\n")
            args += ["--access-key", SANDBOX_ACCESS_KEY, "--secret-key-file", str(secret_file)]
        elif auth == "key":
            secret_file.write_text(SANDBOX_API_KEY + "\n")
            args += ["--api-key-file", str(secret_file)]
        if default:
            args.append("--default")
        result = kling(*args, *extra)
        assert result.exit_code == 0, result
        return result

    return add


@pytest.fixture
def kling_profile(sandbox, add_profile) -> str:
    """A default profile on the official dialect of this test's sandbox, with AK/SK (JWT) auth."""
    add_profile("test", sandbox.base_url("kling"))
    return "test"


class ScriptedServer:
    """A loopback server that answers from a script, for what the sandbox cannot stage (Retry-After
    values, answers that never come). Records every request it sees."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.script: list[tuple[int, dict[str, str], bytes, float]] = []
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                        "body": body, "at": time.monotonic()})
                status, headers, payload, delay = server.script.pop(0) if server.script else (
                    500, {}, b'{"error": "script exhausted"}', 0.0)
                headers = dict(headers)
                if delay:
                    time.sleep(delay)
                length = headers.pop("Content-Length", None) or len(payload)
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {length}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                try:
                    self.wfile.write(head.encode() + b"\r\n" + payload)
                except OSError:
                    pass
                if str(length) != str(len(payload)):
                    self.close_connection = True  # a body cut short: the connection ends

            do_GET = do_POST = handle_one

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, status: int, payload: Any = None, *, headers: dict[str, str] | None = None, delay: float = 0.0,
            raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        base = {} if raw is not None else {"Content-Type": "application/json"}
        self.script.append((status, {**base, **(headers or {})}, body, delay))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    server = ScriptedServer()
    yield server
    server.close()
