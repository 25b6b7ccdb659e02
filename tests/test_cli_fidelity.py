"""Where the providers' own code differs from what kling-cli first assumed, end to end through the sandbox:
aigw's list results and successes without a video, AceData's top-level state, CometAPI's limits and lookup by
external id, one default model on every dialect, new-api gateways without motion control."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import sandbox_stats
from kling_cli.sandbox.core import ASSET


def profile(add_profile, sandbox, dialect: str, base: str | None = None) -> None:
    add_profile(dialect, sandbox.base_url(base or dialect), dialect=dialect, auth="jwt" if dialect == "kling" else "key")


# --- 1. list results, and a success without a video ----------------------------------------------------

def test_aigw_list_result_downloads(kling, sandbox, add_profile, tmp_path):
    profile(add_profile, sandbox, "aigw")
    result = kling("submit", "t2v", "a fox", "--download", tmp_path / "v", "--json")
    assert result.exit_code == 0, result
    (task,) = result.json_lines()
    assert Path(task["files"][0]).read_bytes() == ASSET.read_bytes()


@pytest.mark.parametrize("dialect", ["kling", "aigw", "acedata"])
def test_success_without_a_video_is_never_a_plain_success(kling, sandbox, add_profile, tmp_path, dialect):
    profile(add_profile, sandbox, dialect)
    task_id = kling("submit", "t2v", "a fox sandbox:novideo", "-q").stdout.strip()
    waited = kling("wait", task_id)
    assert waited.exit_code == 5  # its line says so, in wait's one format
    assert waited.stdout.split("\t")[:3] == [task_id, "succeeded", "the provider says the task succeeded but gave "
                                              "no video URL"]
    assert f"task {task_id} succeeded without a video" in waited.stderr
    as_json = kling("wait", task_id, "--json")
    (task,) = as_json.json_lines()
    assert as_json.exit_code == 5 and task["status"] == "succeeded" and task["videos"] == []
    assert task["error"]["code"] == "no_video" and task["raw"]  # the provider's payload, kept
    got = kling("download", task_id, "-o", tmp_path, "--json")
    (error,) = got.json_lines()
    assert got.exit_code == 5 and error["error"]["code"] == "no_video" and error["error"]["raw"]
    assert list(tmp_path.glob("*.mp4")) == []


def test_a_csv_row_that_succeeded_without_a_video_is_not_a_plain_success(kling, sandbox, add_profile, tmp_path):
    profile(add_profile, sandbox, "aigw")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt\na fox\na boat sandbox:novideo\n")
    result = kling("submit", "t2v", "--from-csv", jobs, "--wait", "--download", tmp_path / "v")
    assert result.exit_code == 5, result
    lines = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert lines["1"][2] == "succeeded" and Path(lines["1"][3]).exists()
    assert lines["2"][2] == "succeeded" and "gave no video URL" in lines["2"][3]
    assert "1 succeeded" in result.stderr and "1 succeeded without a video" in result.stderr


# --- 2. AceData's top-level state ---------------------------------------------------------------------

def test_acedata_cancelled_record_ends_the_wait(kling, sandbox, add_profile):
    profile(add_profile, sandbox, "acedata")
    result = kling("submit", "t2v", "a fox sandbox:cancelled", "--wait", "--timeout", "20s", "--json")
    assert result.exit_code == 8, result
    (task,) = result.json_lines()
    assert task["status"] == "failed" and task["raw_status"] == "cancelled"
    assert task["error"]["message"] == "AceData marked the task cancelled"


# --- 4. one default model, on every dialect --------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["kling", "cometapi", "newapi", "acedata", "aigw"])
def test_the_default_model_is_sent_and_shown(kling, sandbox, add_profile, tmp_path, dialect):
    profile(add_profile, sandbox, dialect)
    expected = "kling_2.6_text_to_video" if dialect == "aigw" else "kling-v2-6"
    submitted = kling("submit", "t2v", "a fox", "--wait", "--json")
    assert submitted.exit_code == 0, submitted
    assert submitted.json_lines()[0]["model"] == expected
    (entry,) = kling("history", "--json").json_lines()
    assert entry["model"] == expected
    assert (entry["request"].get("model_name") or entry["request"].get("model")) == expected
    assert expected in kling("history").stdout
    status = kling("status", entry["task_id"], "--json")
    assert status.json_lines()[0]["model"] == expected  # the journal knows it when the answer does not


def test_profile_and_flag_override_the_default(kling, sandbox, kling_profile, tmp_path):
    import os

    config = Path(os.environ["KLING_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + '\n[profiles.test.defaults]\nmodel = "kling-v2-5-turbo"\n')
    assert kling("submit", "t2v", "a fox", "--json").json_lines()[0]["model"] == "kling-v2-5-turbo"
    assert kling("submit", "t2v", "a fox", "--model", "kling-v3", "--json").json_lines()[0]["model"] == "kling-v3"
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt,model\na fox,\na whale,kling-v1-6\n")
    rows = kling("submit", "t2v", "--from-csv", jobs, "--dry-run").json_lines()
    assert [row["model"] for row in rows] == ["kling-v2-5-turbo", "kling-v1-6"]
    assert [row["request"]["model_name"] for row in rows] == ["kling-v2-5-turbo", "kling-v1-6"]


# --- 5. a model the gateway drops -------------------------------------------------------------------------

def test_newapi_warns_when_the_motion_model_would_be_dropped(kling, sandbox, add_profile):
    profile(add_profile, sandbox, "newapi")
    args = ["submit", "motion", "--image", "https://x.test/me.png", "--video", "https://x.test/d.mp4",
            "--orientation", "video", "--mode", "std", "--prompt", "a dancer"]
    plain = kling(*args)
    assert plain.exit_code == 0 and "drops the model" not in plain.stderr
    asked = kling(*args, "--model", "kling-v3")
    assert asked.exit_code == 0, asked
    assert "drops the model of motion tasks: kling-v3 is what the gateway routes and bills" in asked.stderr
    assert sandbox_stats(sandbox)["counters"]["newapi:created"] == 2


# --- 3. CometAPI's limits, checked before anything is paid for ------------------------------------------

def attempts(sandbox, dialect: str) -> int:
    return sandbox_stats(sandbox)["counters"].get(f"{dialect}:submit_attempts", 0)


def test_cometapi_prompt_limits_are_checked_first(kling, sandbox, add_profile):
    profile(add_profile, sandbox, "cometapi")
    long = kling("submit", "t2v", "f" * 501)
    assert long.exit_code == 2 and "the limit on the cometapi dialect is 500" in long.stderr
    negative = kling("submit", "t2v", "a fox", "--negative-prompt", "n" * 201)
    assert negative.exit_code == 2 and "negative prompt has 201 characters" in negative.stderr
    assert attempts(sandbox, "cometapi") == 0
    assert kling("submit", "t2v", "f" * 500, "--negative-prompt", "n" * 200, "-q").exit_code == 0
    # the sandbox refuses what CometAPI documents it refuses
    import httpx

    refused = httpx.post(sandbox.base_url("cometapi") + "/kling/v1/videos/text2video", json={"prompt": "f" * 501},
                         headers={"Authorization": "Bearer sandbox-api-key"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_request"


def test_aspect_ratios_per_dialect(kling, sandbox, add_profile):
    profile(add_profile, sandbox, "cometapi")
    profile(add_profile, sandbox, "kling")
    wide = kling("--profile", "cometapi", "submit", "t2v", "a fox", "--aspect-ratio", "3:2", "--wait")
    assert wide.exit_code == 0, wide
    refused = kling("--profile", "kling", "submit", "t2v", "a fox", "--aspect-ratio", "3:2")
    assert refused.exit_code == 2 and "aspect ratio 3:2 is not offered by the kling dialect" in refused.stderr
    assert attempts(sandbox, "kling") == 0


# --- 7. CometAPI finds a lost submit by its external id ---------------------------------------------------

def test_cometapi_reconciles_a_lost_submit(kling, sandbox, add_profile):
    profile(add_profile, sandbox, "cometapi")
    result = kling("submit", "t2v", "a fox sandbox:lost", "--external-id", "mine-1", "--json", "-v")
    assert result.exit_code == 0, result
    (task,) = result.json_lines()
    assert task["external_id"] == "mine-1" and task["status"] in ("queued", "running")
    assert "looking the task up by external id mine-1" in result.stderr
    assert sandbox_stats(sandbox)["counters"]["cometapi:submit_attempts"] == 1  # found, not sent again


def test_cometapi_lookup_that_finds_nothing_keeps_the_submit_uncertain(kling, sandbox, add_profile):
    profile(add_profile, sandbox, "cometapi")
    result = kling("submit", "t2v", "a fox sandbox:500x1", "--external-id", "mine-2", "--json")
    assert result.exit_code == 6, result
    error = result.json_lines()[0]["error"]
    assert error["code"] == "submit_uncertain" and "found no task with external id mine-2" in error["hint"]
    assert sandbox_stats(sandbox)["counters"]["cometapi:submit_attempts"] == 1


# --- 6. a new-api gateway without motion control ------------------------------------------------------------

def test_upstream_newapi_has_no_motion_control(kling, sandbox, add_profile):
    profile(add_profile, sandbox, "newapi", base="newapi-upstream")
    result = kling("submit", "motion", "--image", "https://x.test/me.png", "--video", "https://x.test/d.mp4",
                   "--orientation", "video", "--mode", "std", "--prompt", "a dancer")
    assert result.exit_code == 5, result
    assert "this gateway does not offer motion control" in result.stderr and "hint: use a gateway" in result.stderr
    assert kling("submit", "t2v", "a fox", "--wait").exit_code == 0  # text to video works there
    unknown = kling("status", "842250903629086785")
    assert unknown.exit_code == 5 and "no task 842250903629086785" in unknown.stderr


def test_newapi_fork_answering_invalid_url(kling, scripted, add_profile):
    """A fork listing /kling among its API prefixes answers JSON 404 "Invalid URL" (the sandbox emulates
    upstream, which answers its web page)."""
    from conftest import sourced

    answer = sourced("newapi/motion_control_not_routed.json")[0]
    scripted.add(404, raw=answer["body"].encode(), headers={"Content-Type": "application/json"})
    add_profile("fork", scripted.url, dialect="newapi", auth="key")
    result = kling("submit", "motion", "--image", "https://x.test/me.png", "--video", "https://x.test/d.mp4",
                   "--orientation", "video", "--mode", "std", "--prompt", "a dancer", "--json")
    assert result.exit_code == 5
    error = result.json_lines()[0]["error"]
    assert error["code"] == "unsupported" and "does not offer motion control (it answered 404 Invalid URL)" in (
        error["message"])


# --- 8. cfg_scale on kling-v2 models: taken by Kling (new-api sends it always), without effect -------------

def test_cfg_scale_on_the_default_model_warns_and_is_sent(kling, sandbox, kling_profile):
    on_default = kling("submit", "t2v", "a fox", "--cfg-scale", "0.5", "-q")
    assert on_default.exit_code == 0, on_default
    assert "--cfg-scale has no effect on kling-v2-6 (the default model)" in on_default.stderr
    on_v1 = kling("submit", "t2v", "a fox", "--cfg-scale", "0.5", "--model", "kling-v1-6", "-q")
    assert on_v1.exit_code == 0 and "no effect" not in on_v1.stderr
