"""The commands, end to end over loopback HTTP against the sandbox (official dialect): outputs, JSON
fields, every exit code, and the faults a real provider throws at a paid submit."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import DATA, result_file, sandbox_stats
from test_batch import server_tasks
from kling_cli.sandbox.core import ASSET

TASK_FIELDS = {"id", "provider", "dialect", "profile", "kind", "model", "status", "raw_status", "progress", "videos",
               "error", "external_id", "created_at", "updated_at", "cost"}


def submit(kling, prompt="a red fox", *args):
    result = kling("submit", "t2v", prompt, "-q", *args)
    assert result.exit_code == 0, result
    return result.stdout.strip()


def attempts(sandbox) -> int:
    return sandbox_stats(sandbox)["counters"].get("kling:submit_attempts", 0)


def test_submit_json_has_exactly_the_documented_fields(kling, kling_profile):
    result = kling("submit", "t2v", "a fox", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    (task,) = result.json_lines()
    assert set(task) == TASK_FIELDS
    assert task["status"] == "queued" and task["raw_status"] == "submitted" and task["kind"] == "t2v"
    assert task["model"] == "kling-v2-6"
    assert (task["provider"], task["dialect"], task["profile"]) == ("custom", "kling", "test")
    assert isinstance(task["id"], str) and task["external_id"].startswith("kc-")
    assert task["created_at"].endswith("Z")


def test_raw_adds_the_provider_payload(kling, kling_profile):
    (task,) = kling("submit", "t2v", "a fox", "--json", "--raw").json_lines()
    assert task["raw"]["message"] == "SUCCEED" and task["raw"]["data"]["task_id"] == task["id"]


def test_status_block_and_json(kling, kling_profile):
    task_id = submit(kling, "a slow fox sandbox:slow")  # queued for its first 0.375 s
    human = kling("status", task_id, "--kind", "t2v")
    assert human.exit_code == 0
    assert re.search(rf"^id:\s+{task_id}$", human.stdout, re.M)
    assert re.search(r"^status:\s+(queued \(submitted\)|running \(processing\))$", human.stdout, re.M)
    (body,) = kling("status", task_id, "--json").json_lines()
    assert body["id"] == task_id and body["status"] in ("queued", "running") and body["videos"] == []


def test_status_finds_the_kind_by_itself_and_says_so(kling, kling_profile):
    task_id = kling("submit", "motion", "--image", "https://x.test/a.png", "--video", "https://x.test/d.mp4",
                    "--orientation", "video", "--mode", "std", "-q").stdout.strip()
    result = kling("status", task_id, "-v")
    assert result.exit_code == 0, result
    assert re.search(r"^kind:\s+motion$", result.stdout, re.M)
    assert "is a motion task (from the journal)" in result.stderr
    unjournaled = kling("status", task_id, "-v", "--no-journal")
    assert re.search(r"^kind:\s+motion$", unjournaled.stdout, re.M)
    assert "found by trying the kinds in turn" in unjournaled.stderr


def test_status_of_an_unknown_task_exits_5(kling, kling_profile):
    result = kling("status", "123456789012345678")
    assert result.exit_code == 5 and "no task 123456789012345678" in result.stderr
    assert kling("status", "123456789012345678", "--kind", "t2v").exit_code == 5


def test_wait_succeeded_exits_0_and_prints_the_url(kling, kling_profile):
    task_id = submit(kling)
    result = kling("wait", task_id)
    assert result.exit_code == 0
    identifier, status, url, label = result.stdout.rstrip("\n").split("\t")
    assert (identifier, status, label) == (task_id, "succeeded", "a red fox") and url.endswith(".mp4")
    assert f"task {task_id} (a red fox): succeeded" in result.stderr  # plain lines when stderr is not a terminal
    assert "\x1b[" not in result.stdout + result.stderr


def test_failed_task_exits_8_with_the_real_reason(kling, kling_profile):
    task_id = submit(kling, "a fox sandbox:fail")
    result = kling("wait", task_id)
    assert result.exit_code == 8
    assert result.stdout.startswith(f"{task_id}\tfailed\tFailure to pass the risk control system")
    assert f"kling: error: task {task_id} failed: Failure to pass the risk control system" in result.stderr
    as_json = kling("wait", task_id, "--json")
    assert as_json.exit_code == 8 and as_json.stderr == ""
    (body,) = as_json.json_lines()
    assert body["status"] == "failed" and body["raw_status"] == "failed"
    assert body["error"]["message"].startswith("Failure to pass the risk control system")
    assert kling("status", task_id).exit_code == 0  # the query worked


def test_deadline_exits_7_naming_the_task(kling, kling_profile):
    task_id = submit(kling, "a slow fox sandbox:slow")
    result = kling("wait", task_id, "--timeout", "300ms")
    assert result.exit_code == 7
    assert f"task {task_id} is still running" in result.stderr and f"kling wait {task_id}" in result.stderr
    as_json = kling("wait", task_id, "--timeout", "0.2s", "--json")
    assert as_json.exit_code == 7 and as_json.stderr == ""
    (body,) = as_json.json_lines()
    assert body["error"]["code"] == "wait_timeout" and body["error"]["task_ids"] == [task_id]


def test_bad_timeout_is_refused_before_anything_is_paid(kling, kling_profile, sandbox):
    result = kling("submit", "t2v", "fox", "--wait", "--timeout", "soon")
    assert result.exit_code == 2 and "not a duration" in result.stderr
    assert attempts(sandbox) == 0


def test_submit_wait_download_leaves_the_mp4(kling, kling_profile, tmp_path):
    result = kling("submit", "t2v", "a fox", "--download", tmp_path / "out")
    assert result.exit_code == 0, result
    path = result_file(result.stdout)
    assert path.parent == tmp_path / "out" and path.suffix == ".mp4"
    assert path.read_bytes() == ASSET.read_bytes()


def test_submit_wait_json_prints_the_final_task_only(kling, kling_profile, tmp_path):
    result = kling("submit", "t2v", "a fox", "--wait", "--json", "--download", tmp_path / "out")
    (body,) = result.json_lines()
    assert body["status"] == "succeeded" and len(body["files"]) == 1
    assert Path(body["files"][0]).exists()


def test_download_twice_skips_the_existing_file(kling, kling_profile, tmp_path):
    task_id = submit(kling)
    kling("wait", task_id)
    first = kling("download", task_id, "-o", tmp_path)
    second = kling("download", task_id, "-o", tmp_path)
    assert first.stdout == second.stdout and second.exit_code == 0 and "skipped" in second.stderr


def test_download_of_a_running_or_failed_task(kling, kling_profile, tmp_path):
    running = submit(kling, "slow fox sandbox:slow")
    result = kling("download", running, "-o", tmp_path)
    assert result.exit_code == 2 and "nothing to download yet" in result.stderr
    failed = submit(kling, "fox sandbox:fail")
    kling("wait", failed)
    assert kling("download", failed, "-o", tmp_path).exit_code == 8


def test_rate_limited_submit_is_retried_and_creates_one_task(kling, kling_profile, sandbox):
    task_id = submit(kling, "busy fox sandbox:429x1")
    assert task_id
    assert attempts(sandbox) == 2 and sandbox_stats(sandbox)["tasks"] == 1


def test_insufficient_balance_is_never_retried(kling, kling_profile, sandbox):
    result = kling("submit", "t2v", "poor fox sandbox:billing")
    assert result.exit_code == 5
    assert "Account balance not enough (code 1102)" in result.stderr and "retrying will not help" in result.stderr
    assert attempts(sandbox) == 1 and sandbox_stats(sandbox)["tasks"] == 0


def test_content_policy_refusal_exits_5(kling, kling_profile):
    result = kling("submit", "t2v", "fox sandbox:policy", "--json")
    assert result.exit_code == 5
    assert result.json_lines()[0]["error"]["code"] == "content_policy"


def test_lost_answer_is_reconciled_by_external_id_not_paid_twice(kling, kling_profile, sandbox):
    result = kling("submit", "t2v", "fox sandbox:lost", "--json")
    assert result.exit_code == 0, result
    (task,) = result.json_lines()
    stats = sandbox_stats(sandbox)
    assert stats["tasks"] == 1 and attempts(sandbox) == 1
    assert kling("status", task["id"]).exit_code == 0


def test_5xx_on_submit_is_checked_before_it_is_sent_again(kling, kling_profile, sandbox):
    task_id = submit(kling, "fox sandbox:500x1", "-v")
    assert task_id and sandbox_stats(sandbox)["tasks"] == 1 and attempts(sandbox) == 2


def test_external_id_is_passed_and_reusing_it_is_refused_by_the_provider(kling, kling_profile, sandbox):
    (task,) = kling("submit", "t2v", "fox", "--external-id", "job-42", "--json").json_lines()
    assert task["external_id"] == "job-42"
    again = kling("--no-journal", "submit", "t2v", "fox", "--external-id", "job-42")  # the provider's own check
    assert again.exit_code == 5 and "job-42 already exists" in again.stderr
    assert sandbox_stats(sandbox)["tasks"] == 1
    assert kling("status", "job-42", "--kind", "t2v", "--json").json_lines()[0]["id"] == task["id"]


@pytest.mark.parametrize("dialect", ["kling", "acedata"])  # acedata takes a reused id: only the journal stops it
def test_a_rerun_with_the_same_external_id_is_that_task_not_a_second_one(kling, sandbox, add_profile, dialect):
    add_profile("p", sandbox.base_url(dialect), dialect=dialect, auth="key" if dialect == "acedata" else "jwt")
    (task,) = kling("-p", "p", "submit", "t2v", "fox", "--external-id", "job-43", "--json").json_lines()
    again = kling("-p", "p", "submit", "t2v", "fox", "--external-id", "job-43", "--json")
    assert again.exit_code == 0, again
    assert again.json_lines()[0]["id"] == task["id"] and "not sent again" in again.stderr
    other = kling("-p", "p", "submit", "t2v", "a different fox", "--external-id", "job-43")
    assert other.exit_code == 2 and f"already names task {task['id']}, made from another request" in other.stderr
    assert len(server_tasks(sandbox, dialect)) == 1


def test_flaky_queries_are_retried(kling, kling_profile):
    task_id = submit(kling, "fox sandbox:flakyx2")
    assert kling("wait", task_id).exit_code == 0


def test_wrong_secret_exits_4_without_leaking_it(kling, sandbox, tmp_path):
    secret = tmp_path / "sk"
    secret.write_text("definitely-the-wrong-secret-key-value")
    kling("profile", "add", "bad", "--provider", "custom", "--dialect", "kling", "--base-url",
          sandbox.base_url("kling"), "--access-key", "sandbox-access-key", "--secret-key-file", secret)
    result = kling("submit", "t2v", "fox")
    assert result.exit_code == 4 and "Authentication failed (code 1000)" in result.stderr
    assert "definitely-the-wrong" not in result.stdout + result.stderr


def test_a_provider_echoing_the_key_is_masked(kling, scripted, add_profile):
    add_profile("echo", scripted.url, auth="key")
    scripted.add(400, {"code": 1201, "message": "bad token Bearer sandbox-api-key"})
    result = kling("submit", "t2v", "fox")
    assert result.exit_code == 5 and "sandbox-api-key" not in result.stderr and "****" in result.stderr


def test_extra_fields_reach_the_provider(kling, kling_profile):
    result = kling("submit", "t2v", "fox", "--extra", 'aspect_ratio="4:3"')
    assert result.exit_code == 5 and "aspect_ratio is invalid" in result.stderr
    assert kling("submit", "t2v", "fox", "--extra", "nonsense").exit_code == 2


def test_camera_control_json(kling, kling_profile):
    ok = kling("submit", "t2v", "fox", "--camera-control", '{"type":"simple","config":{"zoom":5}}')
    assert ok.exit_code == 0, ok
    assert kling("submit", "t2v", "fox", "--camera-control", "{zoom").exit_code == 2
    refused = kling("submit", "t2v", "fox", "--camera-control", '{"type":"simple","config":{"zoom":5,"pan":1}}')
    assert refused.exit_code == 5 and "exactly one non-zero" in refused.stderr


def test_motion_with_a_local_image_sends_raw_base64(kling, kling_profile, sandbox):
    result = kling("submit", "motion", "--image", DATA / "subject-400x600.jpg", "--video", "https://x.test/d.mp4",
                   "--orientation", "image", "--mode", "pro", "--no-keep-sound", "--json")
    assert result.exit_code == 0, result  # the sandbox refuses a data: prefix or non-image base64
    assert result.json_lines()[0]["kind"] == "motion"


def test_motion_local_video_needs_a_url_and_nothing_is_sent(kling, kling_profile, sandbox):
    result = kling("submit", "motion", "--image", DATA / "subject-480.png", "--video", DATA / "dance-12s.mov",
                   "--orientation", "video", "--mode", "std")
    assert result.exit_code == 2
    assert "as a URL only" in result.stderr and "dance-12s.mov" in result.stderr
    assert attempts(sandbox) == 0


@pytest.mark.parametrize(
    "image,video,orientation,needle",
    [
        ("missing.png", "https://x.test/d.mp4", "video", "image file not found"),
        ("small-200x200.png", "https://x.test/d.mp4", "video", "at least 300 px"),
        ("wide-1200x400.png", "https://x.test/d.mp4", "video", "between 1:2.5 and 2.5:1"),
        ("short-2s.mp4", "https://x.test/d.mp4", "video", "not a JPEG or PNG"),
        ("subject-480.png", "short-2s.mp4", "video", "at least 3 s"),
        ("subject-480.png", "dance-12s.mov", "image", "the limit is 10 s"),
    ],
)
def test_preflight_failures_exit_2_and_send_nothing(kling, kling_profile, sandbox, image, video, orientation, needle):
    video_arg = video if video.startswith("http") else DATA / video
    result = kling("submit", "motion", "--image", DATA / image, "--video", video_arg, "--orientation", orientation,
                   "--mode", "std")
    assert result.exit_code == 2, result
    assert needle in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("kling: error")]) == 1
    assert "Traceback" not in result.stderr
    assert attempts(sandbox) == 0


def test_overlong_prompts_are_refused_before_any_request(kling, kling_profile, sandbox):
    result = kling("submit", "t2v", "x" * 2501)
    assert result.exit_code == 2 and "2501 characters; the limit is 2500" in result.stderr
    result = kling("submit", "t2v", "fox", "--negative-prompt", "y" * 2501)
    assert result.exit_code == 2 and "negative prompt" in result.stderr
    assert attempts(sandbox) == 0


def test_motion_needs_orientation_and_mode(kling, kling_profile):
    result = kling("submit", "motion", "--image", "https://x/a.png", "--video", "https://x/d.mp4")
    assert result.exit_code == 2 and "--orientation and --mode are required" in result.stderr


def test_profile_defaults_fill_unset_options(kling, kling_profile):
    config = Path(os.environ["KLING_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + '\n[profiles.test.defaults]\norientation = "video"\nmode = "pro"\n'
                      'duration = 7\n')
    motion = kling("submit", "motion", "--image", "https://x/a.png", "--video", "https://x/d.mp4")
    assert motion.exit_code == 0, motion
    t2v = kling("submit", "t2v", "fox")  # duration 7 from the profile: refused before anything is sent
    assert t2v.exit_code == 2 and "duration 7 s is not offered" in t2v.stderr
    assert kling("submit", "t2v", "fox", "--model", "kling-v3").exit_code == 0


def test_usage_errors_exit_2_in_one_line_or_json(kling):
    result = kling("submit", "t2v", "fox", "--mode", "turbo")
    assert result.exit_code == 2
    assert result.stderr.startswith("kling: error: ") and "hint: see `kling submit t2v --help`" in result.stderr
    as_json = kling("submit", "t2v", "fox", "--mode", "turbo", "--json")
    assert as_json.exit_code == 2 and as_json.stderr == ""
    assert as_json.json_lines()[0]["error"]["code"] == "usage"


def test_unexpected_errors_are_one_line_without_debug(kling, kling_profile, monkeypatch):
    from kling_cli import service

    def boom(*_a, **_k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(service.Service, "get", boom)
    monkeypatch.delenv("KLING_DEBUG")
    result = kling("status", "1")
    assert result.exit_code == 1
    assert result.stderr.startswith("kling: error: unexpected RuntimeError: kaboom") and "Traceback" not in result.stderr
    monkeypatch.setenv("KLING_DEBUG", "1")
    with pytest.raises(RuntimeError):
        kling("status", "1")


def test_options_work_before_and_after_the_subcommand(kling, kling_profile):
    before = kling("--json", "submit", "t2v", "fox")
    after = kling("submit", "t2v", "fox", "--json")
    assert json.loads(before.stdout)["kind"] == json.loads(after.stdout)["kind"] == "t2v"


def test_sandbox_profile_runs_without_any_configuration(kling, tmp_path):
    result = kling("--profile", "sandbox", "submit", "t2v", "fox", "--download", tmp_path / "v")
    assert result.exit_code == 0, result
    assert result.stderr.startswith("sandbox: ")
    assert result_file(result.stdout).read_bytes() == ASSET.read_bytes()


def test_a_submit_answer_without_a_task_id_is_uncertain_and_journaled(kling, scripted, add_profile):
    add_profile("gw", scripted.url, dialect="newapi", auth="key")
    scripted.add(200, {"object": "video", "status": "queued"})  # no id anywhere
    result = kling("submit", "t2v", "fox", "--json")
    assert result.exit_code == 6 and result.json_lines()[0]["error"]["code"] == "submit_uncertain"
    (entry,) = kling("history", "--json").json_lines()
    assert entry["state"] == "uncertain" and entry["task_id"] is None


def test_a_base_url_that_answers_html_is_a_configuration_error(kling, scripted, add_profile):
    add_profile("web", scripted.url + "/wrong", auth="key")
    scripted.add(200, raw=b"<!doctype html><html><body>Welcome to our site</body></html>",
                 headers={"Content-Type": "text/html"})
    result = kling("status", "1", "--kind", "t2v")
    assert result.exit_code == 3 and "an HTML page" in result.stderr and "base URL" in result.stderr


def test_the_poll_interval_has_a_floor(kling, kling_profile):
    result = kling("wait", "1", "--interval", "0.1")
    assert result.exit_code == 2 and "--interval" in result.stderr
