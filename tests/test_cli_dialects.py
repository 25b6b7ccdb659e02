"""The same commands against every dialect of the sandbox, over loopback HTTP: both kinds, status, wait,
download, and each error class with its exit code."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

import pytest

from conftest import DATA, result_file, sandbox_stats
from kling_cli.sandbox.core import ASSET

DIALECTS = ["kling", "cometapi", "newapi", "acedata", "aigw"]
#: dialects that can take the motion subject image inline (base64) rather than as a URL
INLINE_IMAGE = {"kling", "cometapi", "newapi"}


@pytest.fixture(params=DIALECTS)
def dialect(request, sandbox, add_profile) -> str:
    name = request.param
    add_profile(name, sandbox.base_url(name), dialect=name, auth="jwt" if name == "kling" else "key")
    return name


def counters(sandbox, dialect: str) -> tuple[int, int]:
    stats = sandbox_stats(sandbox)
    return (stats["counters"].get(f"{dialect}:submit_attempts", 0), stats["by_dialect"].get(dialect, {}).get("t2v", 0)
            + stats["by_dialect"].get(dialect, {}).get("motion", 0))


def motion_args(*extra: str) -> list[str]:
    return ["submit", "motion", "--image", "https://x.test/me.png", "--video", "https://x.test/dance.mp4",
            "--orientation", "video", "--mode", "std", "--prompt", "a dancer", *extra]


def test_t2v_submit_status_wait_download(kling, dialect, tmp_path):
    submitted = kling("submit", "t2v", "a red fox", "--json")
    assert submitted.exit_code == 0, submitted
    (task,) = submitted.json_lines()
    assert task["dialect"] == dialect and task["kind"] == "t2v" and isinstance(task["id"], str)
    assert task["status"] in ("queued", "running")
    status = kling("status", task["id"], "--json")
    assert status.exit_code == 0 and status.json_lines()[0]["id"] == task["id"]
    waited = kling("wait", task["id"], "--json")
    assert waited.exit_code == 0, waited
    (done,) = waited.json_lines()
    assert done["status"] == "succeeded" and done["videos"][0]["url"].startswith("http://127.0.0.1")
    got = kling("download", task["id"], "-o", tmp_path)
    assert got.exit_code == 0 and Path(got.stdout.strip()).read_bytes() == ASSET.read_bytes()


def test_motion_submit_and_wait(kling, dialect):
    result = kling(*motion_args("--wait", "--json"))
    if dialect == "cometapi":  # not offered there: a clear refusal, not a crash
        assert result.exit_code == 5
        assert "motion control is not available on this provider" in result.json_lines()[0]["error"]["message"]
        return
    assert result.exit_code == 0, result
    (task,) = result.json_lines()
    assert task["kind"] == "motion" and task["status"] == "succeeded"


def test_motion_with_a_local_image(kling, dialect, sandbox):
    result = kling("submit", "motion", "--image", DATA / "subject-480.png", "--video", "https://x.test/d.mp4",
                   "--orientation", "image", "--mode", "pro", "--prompt", "a dancer")
    if dialect in INLINE_IMAGE - {"cometapi"}:
        assert result.exit_code == 0, result
    elif dialect == "cometapi":
        assert result.exit_code == 5
    else:
        assert result.exit_code == 2 and "as a URL only" in result.stderr
        assert counters(sandbox, dialect)[0] == 0


def test_status_without_kind_finds_motion_tasks(kling, dialect):
    if dialect == "cometapi":
        pytest.skip("no motion control on CometAPI")
    task_id = kling(*motion_args("-q")).stdout.strip()
    result = kling("status", task_id, "--json")
    assert result.exit_code == 0, result
    assert result.json_lines()[0]["kind"] == "motion"


def test_failed_task_exits_8_with_the_real_reason(kling, dialect):
    task_id = kling("submit", "t2v", "fox sandbox:fail", "-q").stdout.strip()
    result = kling("wait", task_id, "--json")
    assert result.exit_code == 8
    (task,) = result.json_lines()
    assert task["status"] == "failed" and task["error"]["message"]
    assert task["error"]["message"].lower() not in ("succeed", "success", "the provider gave no reason")


def test_deadline_exits_7(kling, dialect):
    task_id = kling("submit", "t2v", "fox sandbox:slow", "-q").stdout.strip()
    result = kling("wait", task_id, "--timeout", "0.2s")
    assert result.exit_code == 7 and task_id in result.stderr


def test_unknown_task_exits_5(kling, dialect):
    result = kling("status", "nonexistent-0000", "--json")
    assert result.exit_code == 5, result
    assert result.json_lines()[0]["error"]["code"] == "not_found"


def test_wrong_key_exits_4(kling, dialect, sandbox, tmp_path):
    key = tmp_path / "wrong"
    key.write_text("not-the-sandbox-key-at-all")
    args = ["profile", "add", "wrong", "--provider", "custom", "--dialect", dialect, "--base-url",
            sandbox.base_url(dialect), "--api-key-file", key, "--default"]
    assert kling(*args).exit_code == 0
    result = kling("submit", "t2v", "fox")
    assert result.exit_code == 4, result
    assert "not-the-sandbox-key" not in result.stderr
    assert counters(sandbox, dialect)[1] == 0


def test_insufficient_balance_exits_5_and_is_not_retried(kling, dialect, sandbox):
    result = kling("submit", "t2v", "fox sandbox:billing", "--json")
    assert result.exit_code == 5, result
    assert result.json_lines()[0]["error"]["code"] == "insufficient_balance"
    assert counters(sandbox, dialect) == (1, 0)


def test_policy_refusal_exits_5(kling, dialect, sandbox):
    result = kling("submit", "t2v", "fox sandbox:policy")
    assert result.exit_code == 5, result
    assert counters(sandbox, dialect)[1] == 0


def test_rate_limit_is_retried(kling, dialect, sandbox):
    result = kling("submit", "t2v", "fox sandbox:429x1", "-q")
    assert result.exit_code == 0, result
    assert counters(sandbox, dialect) == (2, 1)


def test_lost_answer_is_never_paid_twice(kling, dialect, sandbox):
    result = kling("submit", "t2v", "fox sandbox:lost", "--json")
    attempts, created = counters(sandbox, dialect)
    assert created == 1 and attempts == 1  # whatever the dialect, the submit was sent once
    if dialect in ("kling", "cometapi"):  # found again by its external id
        (task,) = result.json_lines()
        assert result.exit_code == 0 and task["external_id"].startswith("kc-")
        assert task["id"] in {t["id"] for t in httpx.get(f"{sandbox.origin}/__sandbox/tasks").json()["tasks"]}
    else:  # no way to look it up: reported, not resent
        assert result.exit_code == 6
        assert result.json_lines()[0]["error"]["code"] == "submit_uncertain"


def test_5xx_on_submit(kling, dialect, sandbox):
    result = kling("submit", "t2v", "fox sandbox:500x1", "-q")
    attempts, created = counters(sandbox, dialect)
    if dialect == "kling":  # looked up by external id (absent), then safely sent again
        assert result.exit_code == 0 and (attempts, created) == (2, 1)
    else:  # CometAPI finding nothing by external id proves nothing: not sent again either
        assert result.exit_code == 6 and (attempts, created) == (1, 0)
        assert "cannot be charged twice" in result.stderr


def test_flaky_queries_are_retried(kling, dialect):
    task_id = kling("submit", "t2v", "fox sandbox:flakyx2", "-q").stdout.strip()
    assert kling("wait", task_id).exit_code == 0


def test_sandbox_profile_speaks_every_dialect(kling, tmp_path):
    for name in DIALECTS:
        result = kling("--profile", "sandbox", "--dialect", name, "submit", "t2v", "fox", "--download", tmp_path / name)
        assert result.exit_code == 0, (name, result)
        assert f"sandbox: emulating the {name} dialect" in result.stderr


def test_aigw_profile_options_reach_the_wire(kling, sandbox, tmp_path):
    """The README's aigw overrides, end to end: another auth header, the fields at the top level."""
    key = tmp_path / "key"
    key.write_text("sandbox-api-key")
    assert kling("profile", "add", "gw", "--provider", "aigw", "--base-url", sandbox.base_url("aigw"),
                 "--api-key-file", key, "--default").exit_code == 0
    config = Path(os.environ["KLING_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + '\n[profiles.gw.options]\nauth_header = "X-API-Key"\n'
                      'auth_prefix = ""\nparams_key = ""\n')
    result = kling("submit", "t2v", "a fox", "--download", tmp_path / "v", "-vv")
    assert result.exit_code == 0, result
    assert result_file(result.stdout).read_bytes() == ASSET.read_bytes()
    (task,) = [t for t in httpx.get(f"{sandbox.origin}/__sandbox/tasks").json()["tasks"]]
    assert task["prompt"] == "a fox"
