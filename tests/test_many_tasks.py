"""Many tasks at once, against the sandbox: batch-status, wait over hundreds of tasks, downloads that
resume and verify, and every way of passing ids."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import sandbox_stats
from kling_cli.presets import SANDBOX_API_KEY
from kling_cli.sandbox.core import ASSET

ASSET_SHA = hashlib.sha256(ASSET.read_bytes()).hexdigest()


def make_tasks(sandbox, count: int, prompt: str = "fox", dialect: str = "kling") -> list[str]:
    """Submit straight to the sandbox (the submit path has its own tests): ids in order."""
    headers = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
    with httpx.Client(base_url=sandbox.base_url(dialect), headers=headers) as client:
        if dialect == "acedata":
            return [client.post("/kling/videos", json={"action": "text2video", "prompt": prompt, "async": True})
                    .json()["task_id"] for _ in range(count)]
        return [client.post("/v1/videos/text2video", json={"prompt": prompt}).json()["data"]["task_id"]
                for _ in range(count)]


def ids_file(tmp_path: Path, ids: list[str], name: str = "ids.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(ids) + "\n")
    return path


def printed_ids(result) -> list[str]:
    return [line.split("\t")[0] for line in result.stdout.splitlines()]


# --- wait ------------------------------------------------------------------------------------------

def test_200_tasks_waited_at_once_each_printed_exactly_once(kling, kling_profile, sandbox, tmp_path):
    ids = make_tasks(sandbox, 200)
    result = kling("wait", "--from", ids_file(tmp_path, ids), "--concurrency", "32")
    assert result.exit_code == 0, result.stderr[-2000:]
    assert sorted(printed_ids(result)) == sorted(ids)
    assert all(line.split("\t")[1] == "succeeded" for line in result.stdout.splitlines())
    assert "200 succeeded" in result.stderr


def test_mixed_outcomes_exit_8_and_print_every_task(kling, kling_profile, sandbox, tmp_path):
    good, bad = make_tasks(sandbox, 5), make_tasks(sandbox, 2, "fox sandbox:fail")
    result = kling("wait", *good, *bad, "--json")
    assert result.exit_code == 8
    tasks = {t["id"]: t for t in result.json_lines()}
    assert set(tasks) == set(good + bad)
    assert {tasks[i]["status"] for i in bad} == {"failed"} and {tasks[i]["status"] for i in good} == {"succeeded"}


def test_fail_fast_stops_at_the_first_failure(kling, kling_profile, sandbox):
    slow = make_tasks(sandbox, 3, "fox sandbox:slow")
    bad = make_tasks(sandbox, 1, "fox sandbox:fail")
    result = kling("wait", *slow, *bad, "--fail-fast")
    assert result.exit_code == 8
    assert printed_ids(result) == bad
    assert "still running remotely" in result.stderr and all(i in result.stderr for i in slow)


def test_deadline_exits_7_listing_only_the_running_ids(kling, kling_profile, sandbox):
    quick, slow = make_tasks(sandbox, 3), make_tasks(sandbox, 2, "fox sandbox:slow")
    result = kling("wait", *quick, *slow, "--timeout", "0.8s")
    assert result.exit_code == 7
    assert sorted(printed_ids(result)) == sorted(quick)
    error_line = next(line for line in result.stderr.splitlines() if line.startswith("kling: error:"))
    assert "2 tasks are still running" in error_line and all(i in error_line for i in slow)
    assert not any(i in error_line for i in quick)


def test_a_429_storm_slows_polling_and_still_completes(kling, kling_profile, sandbox):
    ids = make_tasks(sandbox, 20)
    httpx.post(f"{sandbox.origin}/__sandbox/storm", json={"count": 40, "retry_after": 0.2})
    result = kling("wait", *ids, "-v")
    assert result.exit_code == 0, result.stderr[-2000:]
    assert sorted(printed_ids(result)) == sorted(ids)
    assert "request rate limit exceeded (code 1302)" in result.stderr


def test_unknown_ids_are_reported_not_fatal(kling, kling_profile, sandbox):
    ids = make_tasks(sandbox, 2)
    result = kling("wait", ids[0], "999999999999999999", ids[1])
    assert result.exit_code == 5
    assert sorted(printed_ids(result)) == sorted(ids)
    assert "999999999999999999" in result.stderr


def test_wait_download_fetches_each_as_it_succeeds(kling, kling_profile, sandbox, tmp_path):
    ids = make_tasks(sandbox, 6)
    result = kling("wait", *ids, "--download", tmp_path / "v", "--json")
    assert result.exit_code == 0, result
    tasks = result.json_lines()
    assert sorted(t["id"] for t in tasks) == sorted(ids)
    for task in tasks:
        (path,) = task["files"]
        assert Path(path).read_bytes() == ASSET.read_bytes()


# --- where ids come from -----------------------------------------------------------------------

def test_ids_from_stdin_plain_and_ndjson_duplicates_collapsed(kling, kling_profile, sandbox):
    ids = make_tasks(sandbox, 3)
    plain = kling("wait", "-", input="\n".join(ids + ids[:1]) + "\n")
    assert plain.exit_code == 0 and sorted(printed_ids(plain)) == sorted(ids)
    ndjson = "\n".join(json.dumps({"id": i, "kind": "t2v", "status": "queued"}) for i in ids)
    piped = kling("wait", "-", input=ndjson)
    assert piped.exit_code == 0 and sorted(printed_ids(piped)) == sorted(ids)


def test_submit_json_piped_into_wait(kling, kling_profile):
    submitted = kling("submit", "t2v", "fox", "--json")
    result = kling("wait", "-", "--json", input=submitted.stdout)
    assert result.exit_code == 0 and result.json_lines()[0]["status"] == "succeeded"


@pytest.mark.parametrize("fmt", ["ids", "ndjson", "csv"])
def test_from_file_in_each_format(kling, kling_profile, sandbox, tmp_path, fmt):
    ids = make_tasks(sandbox, 3)
    if fmt == "ids":
        path = ids_file(tmp_path, ["# a comment", *ids, ""])
    elif fmt == "ndjson":
        path = tmp_path / "tasks.ndjson"
        path.write_text("".join(json.dumps({"id": i, "kind": "t2v", "status": "running"}) + "\n" for i in ids))
    else:
        path = tmp_path / "manifest.csv"
        path.write_text("row,prompt,task_id,status\n" + "".join(f"{n},fox,{i},queued\n" for n, i in enumerate(ids))
                        + "4,not submitted,,\n")
    result = kling("batch-status", "--from", path, "--json")
    assert result.exit_code == 0, result
    assert sorted(t["id"] for t in result.json_lines()) == sorted(ids)


def test_no_ids_is_a_usage_error(kling, kling_profile):
    assert kling("wait").exit_code == 2
    assert kling("batch-status", "--from", "missing.txt").exit_code == 2


# --- batch-status ------------------------------------------------------------------------------

def test_batch_status_lines_summary_and_check(kling, kling_profile, sandbox):
    good, bad = make_tasks(sandbox, 2), make_tasks(sandbox, 1, "fox sandbox:fail")
    kling("wait", *good, *bad)
    result = kling("batch-status", *good, *bad)
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == good + bad
    assert rows[2][2] == "failed" and rows[2][5].startswith("Failure to pass the risk control system")
    assert rows[0][5].endswith(".mp4")
    assert result.stderr.strip().endswith("2 succeeded, 1 failed")
    assert kling("batch-status", *good, *bad, "--check").exit_code == 8
    assert "\x1b[" not in result.stdout + result.stderr


def test_batch_status_unknown_id(kling, kling_profile, sandbox):
    ids = make_tasks(sandbox, 1)
    result = kling("batch-status", ids[0], "123456789012345678", "--json")
    assert result.exit_code == 5
    lines = result.json_lines()
    assert lines[0]["id"] == ids[0] and lines[1]["error"]["task_id"] == "123456789012345678"


def test_batch_status_uses_the_batch_query(kling, sandbox, add_profile):
    add_profile("ace", sandbox.base_url("acedata"), dialect="acedata", auth="key")
    ids = make_tasks(sandbox, 120, dialect="acedata")
    result = kling("batch-status", *ids, "--json", "-vv")
    assert result.exit_code == 0
    assert [t["id"] for t in result.json_lines()] == ids
    assert result.stderr.count("POST /kling/tasks") == 3  # 120 ids in batches of 50


# --- download ----------------------------------------------------------------------------------

def test_download_writes_a_verified_sidecar_and_skips_on_rerun(kling, kling_profile, sandbox, tmp_path):
    (task_id,) = make_tasks(sandbox, 1)
    kling("wait", task_id)
    first = kling("download", task_id, "-o", tmp_path)
    assert first.exit_code == 0, first
    video = tmp_path / f"{task_id}.mp4"
    assert first.stdout.strip() == str(video) and video.read_bytes() == ASSET.read_bytes()
    meta = json.loads((tmp_path / f"{task_id}.json").read_text())
    assert meta["sha256"] == ASSET_SHA and meta["size"] == ASSET.stat().st_size and meta["task_id"] == task_id
    assert meta["provider"] == "custom" and meta["url"].endswith(".mp4") and meta["downloaded_at"].endswith("Z")
    again = kling("download", task_id, "-o", tmp_path)
    assert again.exit_code == 0 and again.stdout == first.stdout and "already complete" in again.stderr


def test_download_never_overwrites_a_different_file(kling, kling_profile, sandbox, tmp_path):
    (task_id,) = make_tasks(sandbox, 1)
    kling("wait", task_id)
    mine = tmp_path / f"{task_id}.mp4"
    mine.write_bytes(b"my own video")
    refused = kling("download", task_id, "-o", tmp_path)
    assert refused.exit_code == 2 and "--force" in refused.stderr and mine.read_bytes() == b"my own video"
    forced = kling("download", task_id, "-o", tmp_path, "--force")
    assert forced.exit_code == 0 and mine.read_bytes() == ASSET.read_bytes()


def test_interrupted_download_resumes_with_range(kling, kling_profile, sandbox, tmp_path):
    (task_id,) = make_tasks(sandbox, 1, "fox sandbox:cut")
    kling("wait", task_id)
    result = kling("download", task_id, "-o", tmp_path, "-v")
    assert result.exit_code == 0, result
    assert hashlib.sha256((tmp_path / f"{task_id}.mp4").read_bytes()).hexdigest() == ASSET_SHA
    assert sandbox_stats(sandbox)["counters"]["files:ranges"] == 1
    assert "resuming" in result.stderr


def test_expired_url_is_refreshed_once(kling, kling_profile, sandbox, tmp_path):
    (task_id,) = make_tasks(sandbox, 1, "fox sandbox:expiredx1")
    waited = kling("wait", task_id, "--json")
    result = kling("download", "-", "-o", tmp_path, "-v", input=waited.stdout)  # the URL from the JSON has expired
    assert result.exit_code == 0, result
    assert "asking the provider for a fresh one" in result.stderr
    assert (tmp_path / f"{task_id}.mp4").read_bytes() == ASSET.read_bytes()


def test_video_gone_for_good(kling, kling_profile, sandbox, tmp_path):
    (task_id,) = make_tasks(sandbox, 1, "fox sandbox:expiredx2")
    kling("wait", task_id)
    result = kling("download", task_id, "-o", tmp_path)
    assert result.exit_code == 5 and "is gone" in result.stderr and "30 days" in result.stderr


def test_name_template_is_sanitized(kling, kling_profile, sandbox, tmp_path):
    # kling refuses such an external id from the user (it is a path segment), so the provider sends it
    with httpx.Client(base_url=sandbox.base_url("kling"), headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}) as c:
        task_id = c.post("/v1/videos/text2video", json={"prompt": "fox", "external_task_id": "../../evil/x"}).json()[
            "data"]["task_id"]
    kling("wait", task_id)
    result = kling("download", task_id, "-o", tmp_path / "out", "--name", "{external_id}-{kind}-{provider}")
    assert result.exit_code == 0, result
    assert Path(result.stdout.strip()) == tmp_path / "out" / "evil_x-t2v-custom.mp4"
    assert kling("download", task_id, "--name", "{nope}").exit_code == 2


def test_many_downloads_in_parallel(kling, kling_profile, sandbox, tmp_path):
    ids = make_tasks(sandbox, 8)
    kling("wait", *ids)
    result = kling("download", *ids, "-o", tmp_path, "--concurrency", "4")
    assert result.exit_code == 0
    assert sorted(Path(p).name for p in result.stdout.split()) == sorted(f"{i}.mp4" for i in ids)


def test_download_reports_failed_and_running_tasks_and_fetches_the_rest(kling, kling_profile, sandbox, tmp_path):
    (good,) = make_tasks(sandbox, 1)
    (bad,) = make_tasks(sandbox, 1, "fox sandbox:fail")
    kling("wait", good, bad)
    (running,) = make_tasks(sandbox, 1, "fox sandbox:slow")
    result = kling("download", running, good, bad, "-o", tmp_path)
    assert result.exit_code == 8  # a failed task outranks the running one (2)
    assert result.stdout.strip() == str(tmp_path / f"{good}.mp4")
    assert f"task {running} is queued" in result.stderr or f"task {running} is running" in result.stderr


def test_download_to_stdout(kling_profile, sandbox):
    (task_id,) = make_tasks(sandbox, 1)
    done = subprocess.run([sys.executable, "-m", "kling_cli", "wait", task_id], capture_output=True,
                          env=os.environ, stdin=subprocess.DEVNULL)
    assert done.returncode == 0
    result = subprocess.run([sys.executable, "-m", "kling_cli", "download", task_id, "-o", "-"], capture_output=True,
                            env=os.environ, stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and result.stdout == ASSET.read_bytes()


def test_a_task_printed_by_an_earlier_sandbox_run_still_downloads(kling, tmp_path):
    """Sandbox URLs name the port of the process that answered; a later run asks for a fresh one."""
    waited = kling("--profile", "sandbox", "submit", "t2v", "fox", "--wait", "--json")
    assert waited.exit_code == 0
    result = kling("--profile", "sandbox", "download", "-", "-o", tmp_path, "-v", input=waited.stdout)
    assert result.exit_code == 0, result
    assert "refused the connection" in result.stderr
    assert Path(result.stdout.strip()).read_bytes() == ASSET.read_bytes()


def json_task(task_id: str, *urls: str) -> str:
    return json.dumps({"id": task_id, "kind": "t2v", "status": "succeeded",
                       "videos": [{"id": f"v{n}", "url": url, "duration": 5} for n, url in enumerate(urls)]})


def test_a_server_that_ignores_range_gets_a_full_download(kling, scripted, tmp_path):
    full = ASSET.read_bytes()
    scripted.add(200, raw=full[:20000], headers={"Content-Length": str(len(full))})  # cut after 20 kB
    scripted.add(200, raw=full)  # the resume's Range is ignored: the whole file again
    result = kling("--profile", "sandbox", "download", "-", "-o", tmp_path, "-v",
                   input=json_task("t1", f"{scripted.url}/v.mp4"))
    assert result.exit_code == 0, result
    assert (tmp_path / "t1.mp4").read_bytes() == full
    assert scripted.requests[1]["headers"].get("Range") == "bytes=20000-"


def test_a_body_that_is_not_a_video_is_refused_and_not_kept(kling, scripted, tmp_path):
    scripted.add(200, raw=b"<html>Access denied</html>", headers={"Content-Type": "text/html"})
    out = tmp_path / "v"
    result = kling("--profile", "sandbox", "download", "-", "-o", out, input=json_task("t2", f"{scripted.url}/v"))
    assert result.exit_code == 5 and "did not return an MP4 file (Content-Type text/html)" in result.stderr
    assert list(out.iterdir()) == []


def test_a_download_that_keeps_breaking_says_how_to_resume(kling, scripted, tmp_path):
    full = ASSET.read_bytes()
    scripted.add(200, raw=full[:10000], headers={"Content-Length": str(len(full))})
    for _ in range(3):
        scripted.add(503, raw=b"busy")
    result = kling("--profile", "sandbox", "download", "-", "-o", tmp_path, input=json_task("t3", f"{scripted.url}/v"))
    assert result.exit_code == 6 and "it resumes from t3.mp4.part" in result.stderr
    assert (tmp_path / "t3.mp4.part").stat().st_size == 10000 and not (tmp_path / "t3.mp4").exists()


def test_several_videos_get_their_index(kling, scripted, tmp_path):
    scripted.add(200, raw=ASSET.read_bytes())
    scripted.add(200, raw=ASSET.read_bytes())
    result = kling("--profile", "sandbox", "download", "-", "-o", tmp_path,
                   input=json_task("t4", f"{scripted.url}/a.mp4", f"{scripted.url}/b.mp4"))
    assert result.exit_code == 0, result
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["t4-1.mp4", "t4-2.mp4"]
    assert json.loads((tmp_path / "t4-2.json").read_text())["video_index"] == 2


def test_a_name_clash_leaves_the_download_in_flight_alone(tmp_path):
    # task a's download has opened its .part and awaits the first bytes when task b turns out to want the same
    # name: b is refused, and a's .part must still be there for a to finish into
    from kling_cli.downloads import Downloader
    from kling_cli.errors import UsageError
    from kling_cli.models import Task, TaskStatus, Video

    def task(task_id: str) -> Task:
        return Task(id=task_id, kind="t2v", status=TaskStatus.SUCCEEDED,
                    videos=[Video(id=None, url=f"http://127.0.0.1:9/{task_id}.mp4")])

    downloader = Downloader(out=None)
    try:
        downloader._claim(tmp_path / "same.mp4", "a video 1")
        part = tmp_path / "same.mp4.part"
        part.touch()
        with pytest.raises(UsageError) as refused:
            downloader.fetch_video(task("b"), 0, tmp_path, template="same")
        assert refused.value.code == "name_clash" and part.exists()
    finally:
        downloader.close()
