"""--events: the NDJSON stream of what happens on `wait` and CSV runs, read while it is written, and by
`kling report`."""

from __future__ import annotations

import json
import subprocess
import time

from test_batch import KLING, write_csv


def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_csv_run_logs_every_kind_of_event_with_time_row_and_task(kling, sandbox, add_profile, tmp_path):
    add_profile("ez", sandbox.base_url("newapi"), dialect="newapi", auth="key")
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [["a fox"], ["a cat sandbox:fail"], ["a dog sandbox:policy"],
                                                         ["a boat sandbox:lostx1"]])
    log = tmp_path / "events.ndjson"
    result = kling("submit", "t2v", "--from-csv", jobs, "--wait", "--download", tmp_path / "videos",
                   "--events", log, "--out", tmp_path / "r.csv")
    assert result.exit_code == 8, result
    seen = events(log)
    assert {e["event"] for e in seen} == {"submitted", "status", "downloaded", "failed", "refused", "uncertain"}
    assert all(e["time"].endswith("Z") and e["row"] in (1, 2, 3, 4) for e in seen)
    by_row = {}
    for event in seen:
        by_row.setdefault(event["row"], []).append(event)
    assert [e["event"] for e in by_row[1]][0] == "submitted" and by_row[1][-1]["event"] == "downloaded"
    assert [e["status"] for e in by_row[1] if e["event"] == "status"][-1] == "succeeded"
    assert by_row[1][-1]["file"].endswith(".mp4") and len(by_row[1][-1]["sha256"]) == 64
    assert by_row[2][-1]["event"] == "failed" and "risk control" in by_row[2][-1]["error"]
    assert [e["event"] for e in by_row[3]] == ["refused"] and "task_id" not in by_row[3][0]
    assert [e["event"] for e in by_row[4]] == ["uncertain"]
    statuses = [(e["task_id"], e["status"]) for e in seen if e["event"] == "status"]
    assert len(statuses) == len(set(statuses))  # a status seen again by a later poll is not logged again

    # the same stream, read back by the report
    report = kling("report", "--from", log, "--junit", tmp_path / "j.xml")
    assert report.exit_code == 0, report
    assert "report: 4 tasks (1 failed, 1 refused, 1 succeeded, 1 uncertain)" in report.stderr


def test_wait_logs_the_tasks_it_follows(kling, kling_profile, tmp_path):
    ids = [kling("submit", "t2v", prompt).stdout.strip() for prompt in ("a fox", "a cat sandbox:fail")]
    log = tmp_path / "wait.ndjson"
    assert kling("wait", *ids, "--events", log).exit_code == 8
    seen = events(log)
    assert seen[-1]["event"] in ("status", "failed")
    assert {(e["task_id"], e["event"]) for e in seen if e.get("status") in ("succeeded", "failed")} == \
        {(ids[0], "status"), (ids[1], "failed")}
    assert all("row" not in e for e in seen)


def test_the_log_can_be_tailed_while_the_batch_runs(sandbox, add_profile, tmp_path):
    """Each line is flushed as it happens: another process sees the submits before the batch ends."""
    add_profile("prod", sandbox.base_url("kling"))
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [["a slow fox sandbox:slow"], ["a slow cat sandbox:slow"]])
    log = tmp_path / "events.ndjson"
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        process = subprocess.Popen([*KLING, "submit", "t2v", "--from-csv", str(jobs), "--wait", "--events", str(log)],
                                   stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (log.exists() and log.read_text().count('"submitted"') == 2):
                time.sleep(0.02)
            assert log.read_text().count('"submitted"') == 2
            assert process.poll() is None  # read while the batch still runs
        finally:
            assert process.wait(timeout=30) == 0
    assert [e["status"] for e in events(log) if e["event"] == "status"][-2:] == ["succeeded", "succeeded"]


def test_an_event_log_on_a_full_disk_stops_the_batch_cleanly_and_a_rerun_pays_nothing_twice(kling, kling_profile,
                                                                                            sandbox, tmp_path):
    from test_batch import server_tasks

    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [[f"fox {n}"] for n in range(3)])
    full = kling("submit", "t2v", "--from-csv", jobs, "--events", "/dev/full")  # every write: ENOSPC
    assert full.exit_code == 3 and "unexpected" not in full.stderr, full
    assert "cannot write to /dev" in full.stderr, full
    sent = len(server_tasks(sandbox, "kling"))
    again = kling("submit", "t2v", "--from-csv", jobs)
    assert again.exit_code == 0, again
    assert len(server_tasks(sandbox, "kling")) == 3 and f"{3 - sent} submitted now" in again.stderr, again


def test_wait_with_an_event_log_on_a_full_disk_is_a_clean_error(kling, kling_profile):
    task_id = kling("submit", "t2v", "a fox").stdout.strip()
    result = kling("wait", task_id, "--events", "/dev/full")
    assert result.exit_code == 3 and "cannot write to /dev" in result.stderr, result
