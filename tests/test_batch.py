"""CSV batches that never pay twice, against the sandbox with its fault markers: the journal, resumable
manifests, sharding, and the in-flight/rate scheduler. Tasks are counted server-side."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from conftest import DATA, default_sigint, sandbox_stats

KLING = [sys.executable, "-m", "kling_cli"]


def server_tasks(sandbox, dialect: str) -> list[dict]:
    return [t for t in httpx.get(f"{sandbox.origin}/__sandbox/tasks").json()["tasks"] if t["dialect"] == dialect]


def attempts(sandbox, dialect: str = "kling") -> int:
    return sandbox_stats(sandbox)["counters"].get(f"{dialect}:submit_attempts", 0)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue())
    return path


def storm_rows(count: int) -> list[list[str]]:
    """Every tenth row is refused twice as rate-limited (1303), answered 500 once, or loses its answer."""
    rows = []
    for n in range(count):
        marker = {0: " sandbox:429x2", 1: " sandbox:500x1", 2: " sandbox:lostx1"}.get(n % 10, "")
        rows.append([f"row {n} fox{marker}", "5"])
    return rows


def manifest(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_storms_on_the_official_dialect_end_with_each_row_paid_once(kling, kling_profile, sandbox, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt", "duration"], storm_rows(200))
    result = kling("submit", "t2v", "--from-csv", jobs, "--out", tmp_path / "results.csv", "--max-in-flight", "50")
    assert result.exit_code == 0, result.stderr[-3000:]
    tasks = server_tasks(sandbox, "kling")
    assert len(tasks) == 200
    assert max(Counter(t["prompt"] for t in tasks).values()) == 1
    # 20 rows refused twice, 20 answered 500 once then sent again after a lookup found nothing
    assert attempts(sandbox) == 200 + 20 * 2 + 20
    rows = manifest(tmp_path / "results.csv")
    assert len(rows) == 200 and all(r["task_id"] for r in rows)
    assert {r["task_id"] for r in rows} == {t["id"] for t in tasks}
    assert len(result.stdout.splitlines()) == 200


def test_storms_without_lookup_leave_lost_rows_uncertain_never_resent(kling, sandbox, add_profile, tmp_path):
    add_profile("ez", sandbox.base_url("newapi"), dialect="newapi", auth="key")
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt", "duration"], storm_rows(100))
    first = kling("submit", "t2v", "--from-csv", jobs, "--out", tmp_path / "r.csv", "--max-in-flight", "50")
    assert first.exit_code == 6, first.stderr[-2000:]
    tasks = server_tasks(sandbox, "newapi")
    assert max(Counter(t["prompt"] for t in tasks).values()) == 1
    assert len(tasks) == 90  # the ten 500 rows created nothing; the ten lost ones did
    rows = {int(r["row"]): r for r in manifest(tmp_path / "r.csv")}
    uncertain = {n for n, r in rows.items() if r["status"] == "uncertain"}
    assert uncertain == {n + 1 for n in range(100) if n % 10 in (1, 2)}
    sent = attempts(sandbox, "newapi")
    again = kling("submit", "t2v", "--from-csv", jobs, "--out", tmp_path / "r.csv")
    assert again.exit_code == 6 and attempts(sandbox, "newapi") == sent  # nothing sent again
    assert "--resubmit-uncertain" in again.stderr


def test_rerun_of_a_finished_run_sends_nothing_that_creates_tasks(kling, kling_profile, sandbox, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [[f"fox {n}"] for n in range(10)])
    first = kling("submit", "t2v", "--from-csv", jobs, "--wait", "--json")
    assert first.exit_code == 0
    sent = attempts(sandbox)
    again = kling("submit", "t2v", "--from-csv", jobs, "--wait", "--json")
    assert again.exit_code == 0 and attempts(sandbox) == sent
    assert sorted(t["id"] for t in again.json_lines()) == sorted(t["id"] for t in first.json_lines())
    summary = kling("submit", "t2v", "--from-csv", jobs)
    assert "10 already submitted" in summary.stderr and attempts(sandbox) == sent


def test_identical_rows_are_distinct_tasks_and_stay_so_on_rerun(kling, kling_profile, sandbox, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [["same fox"], ["same fox"], ["other"]])
    assert kling("submit", "t2v", "--from-csv", jobs).exit_code == 0
    assert kling("submit", "t2v", "--from-csv", jobs).exit_code == 0
    assert len(server_tasks(sandbox, "kling")) == 3


def test_interrupted_at_random_points_and_rerun(kling_profile, sandbox, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [[f"fox {n}"] for n in range(40)])
    args = [*KLING, "submit", "t2v", "--from-csv", str(jobs), "--out", str(tmp_path / "r.csv"), "--wait",
            "--max-in-flight", "8"]
    rng = random.Random(7)
    codes = []
    for _ in range(12):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                env=os.environ, preexec_fn=default_sigint)
        time.sleep(rng.uniform(0.2, 1.2))
        proc.send_signal(signal.SIGINT)
        codes.append(proc.wait(timeout=30))
        if codes[-1] == 0:
            break
    assert 130 in codes
    final = subprocess.run(args, capture_output=True, text=True, env=os.environ, stdin=subprocess.DEVNULL, timeout=60)
    assert final.returncode == 0, final.stderr[-2000:]
    tasks = server_tasks(sandbox, "kling")
    assert len(tasks) == 40 and max(Counter(t["prompt"] for t in tasks).values()) == 1
    rows = manifest(tmp_path / "r.csv")
    assert len(rows) == 40 and {r["status"] for r in rows} == {"succeeded"}


def test_a_bad_csv_is_refused_whole_with_every_bad_line(kling, kling_profile, sandbox, tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt,mode,duration,camera_control\n"
                    "good fox,std,5,\n"
                    "bad mode,turbo,5,\n"
                    "bad duration,std,7,\n"
                    ",std,5,\n"
                    'bad json,std,5,"{zoom"\n'
                    "too,many,cells,here,extra\n")
    result = kling("submit", "t2v", "--from-csv", jobs)
    assert result.exit_code == 2
    for line, needle in ((3, "mode must be one of"), (4, "duration 7 s"), (5, "prompt is empty"),
                         (6, "camera_control is not valid JSON"), (7, "1 more cell(s) than the header")):
        assert f"{jobs}:{line}: {needle}" in result.stderr
    assert "5 of 6 rows" in result.stderr and attempts(sandbox) == 0
    skipped = kling("submit", "t2v", "--from-csv", jobs, "--skip-invalid")
    assert skipped.exit_code == 0 and len(server_tasks(sandbox, "kling")) == 1


def test_unknown_columns_are_refused_unless_passed_through(kling, kling_profile, sandbox, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt", "sound"], [["fox", "on"]])
    refused = kling("submit", "t2v", "--from-csv", jobs)
    assert refused.exit_code == 2 and "unknown column(s) for t2v: sound" in refused.stderr
    dry = kling("submit", "t2v", "--from-csv", jobs, "--extra-columns", "--dry-run")
    assert dry.exit_code == 0 and dry.json_lines()[0]["request"]["sound"] == "on"


def test_dry_run_prints_each_resolved_request_and_sends_nothing(kling, kling_profile, sandbox, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt", "duration"], [["fox", "10"], ["whale", ""]])
    result = kling("submit", "t2v", "--from-csv", jobs, "--mode", "pro", "--dry-run")
    assert result.exit_code == 0 and attempts(sandbox) == 0
    first, second = result.json_lines()
    assert first["request"] == {"model_name": "kling-v2-6", "prompt": "fox", "mode": "pro", "duration": "10",
                                "external_task_id": first["external_id"]}
    assert first["model"] == "kling-v2-6"
    assert second["request"]["mode"] == "pro" and "duration" not in second["request"]
    assert first["identity"] != second["identity"] and "2 of 2 rows would be submitted" in result.stderr


def test_motion_csv_with_defaults_from_flags(kling, kling_profile, sandbox, tmp_path):
    image = DATA / "subject-480.png"
    jobs = write_csv(tmp_path / "jobs.csv", ["image", "video", "orientation"],
                     [[str(image), "https://x.test/a.mp4", "image"], [str(image), "https://x.test/b.mp4", ""]])
    result = kling("submit", "motion", "--from-csv", jobs, "--mode", "std", "--orientation", "video", "--wait")
    assert result.exit_code == 0, result
    assert {t["kind"] for t in server_tasks(sandbox, "kling")} == {"motion"}


def test_shards_cover_every_row_exactly_once(kling, kling_profile, sandbox, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [[f"fox {n}"] for n in range(30)])
    counts = []
    for k in (1, 2, 3):
        result = kling("submit", "t2v", "--from-csv", jobs, "--shard", f"{k}/3", "--out", tmp_path / f"s{k}.csv")
        assert result.exit_code == 0
        counts.append(len(result.stdout.splitlines()))
    tasks = server_tasks(sandbox, "kling")
    assert len(tasks) == 30 and sum(counts) == 30 and all(counts)
    assert max(Counter(t["prompt"] for t in tasks).values()) == 1
    assert kling("submit", "t2v", "--from-csv", jobs, "--shard", "4/3").exit_code == 2


def test_max_in_flight_and_rate_are_respected(kling, kling_profile, sandbox, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [[f"fox {n}"] for n in range(12)])
    result = kling("submit", "t2v", "--from-csv", jobs, "--max-in-flight", "3", "--rate", "20/s", "--wait")
    assert result.exit_code == 0, result
    tasks = sorted(server_tasks(sandbox, "kling"), key=lambda t: t["created"])
    starts = [t["created"] for t in tasks]
    assert all(b - a >= 0.045 for a, b in zip(starts, starts[1:]))  # at most 20 submits per second
    for task in tasks:  # at any moment, at most 3 tasks were running on the provider
        running = [t for t in tasks if t["created"] <= task["created"] < t["created"] + t["seconds"]]
        assert len(running) <= 3


def test_concurrency_refusal_puts_the_row_back(kling, kling_profile, sandbox, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [["busy fox sandbox:429x3"]])
    result = kling("submit", "t2v", "--from-csv", jobs, "-v")
    assert result.exit_code == 0, result
    assert "requeued" in result.stderr and attempts(sandbox) == 4 and len(server_tasks(sandbox, "kling")) == 1


def test_manifest_feeds_wait_download_and_is_updated(kling, kling_profile, sandbox, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [["fox 1"], ["fox 2 sandbox:fail"]])
    results = tmp_path / "results.csv"
    assert kling("submit", "t2v", "--from-csv", jobs, "--out", results, "--out", tmp_path / "r.ndjson").exit_code == 0
    assert {r["status"] for r in manifest(results)} == {"queued"}
    waited = kling("wait", "--from", results)
    assert waited.exit_code == 8
    statuses = {r["row"]: r["status"] for r in manifest(results)}
    assert statuses == {"1": "succeeded", "2": "failed"}
    got = kling("download", "--from", results, "-o", tmp_path / "v")
    assert got.exit_code == 8  # the failed row cannot be downloaded; the other one is
    row = next(r for r in manifest(results) if r["row"] == "1")
    assert row["file"].endswith(".mp4") and len(row["sha256"]) == 64
    assert kling("batch-status", "--from", results, "--check").exit_code == 8
    ndjson = tmp_path / "r.ndjson"
    assert kling("batch-status", "--from", ndjson, "--json").exit_code == 0
    last = {}
    for line in ndjson.read_text().splitlines():
        record = json.loads(line)
        last[record["row"]] = record
    assert (last[1]["status"], last[2]["status"]) == ("succeeded", "failed")


def test_journal_records_intent_before_sending_and_refuses_without_it(kling, kling_profile, sandbox, tmp_path):
    data_dir = Path(os.environ["KLING_DATA_DIR"])
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    data_dir.write_text("not a directory")  # the journal cannot be created
    result = kling("submit", "t2v", "fox")
    assert result.exit_code == 3
    assert "nothing was sent" in result.stderr and "--no-journal" in result.stderr
    assert attempts(sandbox) == 0
    off = kling("submit", "t2v", "fox", "--no-journal")
    assert off.exit_code == 0 and "journal off" in off.stderr


def test_history_lists_newest_first_with_filters(kling, kling_profile, tmp_path):
    first = kling("submit", "t2v", "first fox", "-q").stdout.strip()
    kling("submit", "t2v", "poor fox sandbox:billing")
    second = kling("submit", "t2v", "second fox sandbox:fail", "-q").stdout.strip()
    kling("wait", second)
    entries = kling("history", "--json").json_lines()
    assert [e["task_id"] for e in entries] == [second, None, first]
    assert entries[1]["state"] == "refused" and "Account balance not enough" in entries[1]["error"]
    assert entries[0]["status"] == "failed" and entries[0]["request"]["prompt"] == "second fox sandbox:fail"
    assert [e["task_id"] for e in kling("history", "--status", "failed", "--json").json_lines()] == [second]
    assert kling("history", "--limit", "1").stdout.count("\n") == 1
    assert kling("history", "--profile", "other", "--json").stdout == ""


def test_an_ndjson_manifest_feeds_download(kling, kling_profile, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [["fox 1"], ["fox 2"]])
    assert kling("submit", "t2v", "--from-csv", jobs, "--out", tmp_path / "a.ndjson", "--wait").exit_code == 0
    got = kling("download", "--from", tmp_path / "a.ndjson", "-o", tmp_path / "v")
    assert got.exit_code == 0, got
    assert len(list((tmp_path / "v").glob("*.mp4"))) == 2


def test_a_row_fixed_and_rerun_loses_its_old_error(kling, kling_profile, tmp_path):
    results = tmp_path / "r.csv"
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [["a cat sandbox:policy"]])
    assert kling("submit", "t2v", "--from-csv", jobs, "--out", results).exit_code == 8
    (row,) = manifest(results)
    assert row["status"] == "refused" and "content security policy" in row["error"]
    write_csv(jobs, ["prompt"], [["a cat"]])
    assert kling("submit", "t2v", "--from-csv", jobs, "--out", results, "--wait").exit_code == 0
    (row,) = manifest(results)
    assert row["status"] == "succeeded" and row["error"] == ""


def test_resubmit_uncertain_sends_the_lost_rows_again(kling, sandbox, add_profile, tmp_path):
    add_profile("ez", sandbox.base_url("newapi"), dialect="newapi", auth="key")
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [["fox sandbox:lostx1"], ["whale"]])
    assert kling("submit", "t2v", "--from-csv", jobs).exit_code == 6
    assert len(server_tasks(sandbox, "newapi")) == 2  # the lost one was created all the same
    sent = attempts(sandbox, "newapi")
    again = kling("submit", "t2v", "--from-csv", jobs, "--resubmit-uncertain")
    assert attempts(sandbox, "newapi") == sent + 1  # the lost row was sent again...
    # ...with its external id, which Kling keeps unique: refused, so it stays uncertain and is paid once
    assert again.exit_code == 6 and "probably went through" in again.stderr
    assert len(server_tasks(sandbox, "newapi")) == 2
    assert kling("submit", "t2v", "fox", "--resubmit-uncertain").exit_code == 2  # only with --from-csv


@pytest.mark.parametrize("body, line, needle", [
    (b'prompt,duration\n"unterminated fox,5\nnext fox,5\nthird fox,5\n', 2, "a quote opened on this line is never closed"),
    (b'prompt,duration\nfine,5\n"unterminated fox,5\nnext fox,5\n"quoted",5\n', 3, "is malformed"),
    (b"prompt,duration\nfine,5\nnul\x00fox,5\n", 3, "a NUL byte"),
    (b"prompt,duration\nfine,5\nbad \xff fox,5\n", 3, "not valid UTF-8"),
    (b"prompt,duration\nfine,5\ntoo,many,cells\n", 3, "1 more cell(s) than the header"),
])
def test_a_csv_that_cannot_be_read_one_way_only_is_refused(kling, kling_profile, sandbox, tmp_path, body, line, needle):
    jobs = tmp_path / "jobs.csv"
    jobs.write_bytes(body)
    result = kling("submit", "t2v", "--from-csv", jobs)
    assert result.exit_code == 2, result
    assert f"{jobs}:{line}: " in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr and attempts(sandbox) == 0


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_a_csv_path_that_is_no_file_is_refused(kling, kling_profile, sandbox, tmp_path, make):
    jobs = tmp_path / "jobs.csv"
    if make == "directory":
        jobs.mkdir()
    result = kling("submit", "t2v", "--from-csv", jobs)
    assert result.exit_code == 2, result
    assert str(jobs) in result.stderr and ("not found" if make == "missing" else "is a directory") in result.stderr
    assert attempts(sandbox) == 0


def test_bom_crlf_and_quoted_newlines_are_read_as_meant(kling, kling_profile, sandbox, tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_bytes(b'\xef\xbb\xbfPrompt,Duration\r\n"a fox,\r\nin two lines",5\r\nplain fox,10\r\n')
    result = kling("submit", "t2v", "--from-csv", jobs, "--dry-run")
    assert result.exit_code == 0, result
    first, second = result.json_lines()
    assert first["request"]["prompt"] == "a fox,\r\nin two lines" and first["line"] == 2
    assert second["request"]["prompt"] == "plain fox" and second["line"] == 4
