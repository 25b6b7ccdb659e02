"""What only a real process shows: the entry points, one invocation following another's sandbox task,
plain non-terminal output, and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import default_sigint, result_file
from kling_cli import __version__
from kling_cli.sandbox.core import ASSET

KLING = [sys.executable, "-m", "kling_cli"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KLING, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def test_python_m_and_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"kling-cli {__version__}"


def test_help_lists_the_exit_codes():
    result = run("--help")
    assert result.returncode == 0
    for line in ("  0  success", "  7  the wait deadline passed", "130  interrupted"):
        assert line in result.stdout


def test_one_process_follows_another_processes_sandbox_task(tmp_path):
    submitted = run("--profile", "sandbox", "submit", "t2v", "x", "-q")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    assert task_id.isdigit()
    assert submitted.stderr.startswith("sandbox: ")  # even with -q: nobody mistakes it for a real video
    waited = run("--profile", "sandbox", "wait", task_id, "--download", str(tmp_path))
    assert waited.returncode == 0, waited.stderr
    assert result_file(waited.stdout).read_bytes() == ASSET.read_bytes()


def test_non_terminal_output_is_plain(tmp_path):
    result = run("--profile", "sandbox", "submit", "t2v", "x sandbox:fail", "--wait")
    assert result.returncode == 8
    assert "\x1b[" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("task ") and ": queued" in line for line in lines)
    assert any(line.startswith("kling: error: task ") for line in lines)


def test_ctrl_c_exits_130_and_names_the_running_task():
    env = {**os.environ, "KLING_SANDBOX_TASK_SECONDS": "60", "KLING_POLL_INTERVAL": "0.2"}
    proc = subprocess.Popen([*KLING, "--profile", "sandbox", "submit", "t2v", "x", "--wait"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=default_sigint)
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if ": queued" in line:
            break
    task_id = next(line.split()[3] for line in seen if line.startswith("submitted t2v task"))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert f"still running remotely: {task_id}" in err
    assert f"`kling --profile sandbox wait {task_id}`" in err  # pasted in this shell, it works


def test_sandbox_serve_for_ci(tmp_path):
    server = subprocess.Popen([*KLING, "sandbox", "serve", "--port", "0", "--task-seconds", "0.2"], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              preexec_fn=default_sigint)
    try:
        urls = dict(server.stdout.readline().strip().split("\t") for _ in range(5))
        assert set(urls) == {"kling", "cometapi", "newapi", "acedata", "aigw"}
        env = {"KLING_PROFILE": "sandbox", "KLING_BASE_URL": urls["newapi"]}
        result = run("--dialect", "newapi", "submit", "t2v", "fox", "--download", str(tmp_path), env=env)
        assert result.returncode == 0, result.stderr
        assert result_file(result.stdout).read_bytes() == ASSET.read_bytes()
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) == 0
