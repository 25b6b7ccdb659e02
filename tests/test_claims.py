"""Many processes on one batch, one journal: every row paid for once. Real `kling` processes against the
sandbox on a dialect that cannot look a task up by external id (AceData), so a row sent twice shows up as
two tasks counted server-side; the official dialect where its lookup and 1201 matter."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import httpx
import pytest

from test_batch import KLING, attempts, manifest, server_tasks, write_csv

ROWS = 60


def wait_for(condition, timeout: float = 20.0, what: str = "a condition"):
    """Poll `condition` until it returns something true (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """A `kling` process whose output goes to files: a pipe not read yet would fill up and stop it (holding
    its claims, so that the others following it would wait too)."""
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([*KLING, *map(str, args)], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                            env=env or os.environ, text=True)
    proc.outputs = (out, err)  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    proc.wait(timeout=60)
    texts = []
    for handle in proc.outputs:  # type: ignore[attr-defined]
        handle.seek(0)
        texts.append(handle.read())
        handle.close()
    return proc.returncode, texts[0], texts[1]


@pytest.fixture
def ace(sandbox, add_profile) -> str:
    add_profile("ace", sandbox.base_url("acedata"), dialect="acedata", auth="key")
    return "acedata"


def jobs(tmp_path: Path, count: int = ROWS) -> Path:
    return write_csv(tmp_path / "jobs.csv", ["prompt"], [[f"fox {n}"] for n in range(count)])


def journal_db() -> Path:
    return Path(os.environ["KLING_DATA_DIR"]) / "journal.db"


def count(sql: str, *args) -> int:
    """A count from the journal file, 0 while it or its tables are not there yet."""
    if not journal_db().exists():
        return 0
    try:
        with sqlite3.connect(journal_db(), timeout=10) as db:
            return db.execute(sql, args).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def claims_of(pid: int) -> int:
    return count("SELECT count(*) FROM claims WHERE pid = ?", pid)


def submitted_rows() -> int:
    return count("SELECT count(*) FROM submissions WHERE task_id IS NOT NULL")


def kill_between_submits(victim: subprocess.Popen, claims: Callable[[int], int]) -> None:
    """SIGKILL a batch process between two of its submits (stopped, it holds no claim), so that no answer is
    lost on a dialect that cannot look one up; a claim left by a process killed while sending has a test of
    its own (`test_a_claim_left_by_a_killed_process_goes_through_reconcile`)."""
    while True:
        victim.send_signal(signal.SIGSTOP)
        if claims(victim.pid) == 0:
            break
        victim.send_signal(signal.SIGCONT)
        time.sleep(0.005)  # let it finish the submit it is in
    victim.kill()
    victim.wait()


def assert_each_row_once(sandbox, dialect: str, manifests: list[Path], count: int = ROWS) -> None:
    tasks = server_tasks(sandbox, dialect)
    assert len(tasks) == count and max(Counter(t["prompt"] for t in tasks).values()) == 1
    for path in manifests:
        rows = manifest(path)
        assert len(rows) == count and {r["task_id"] for r in rows} == {t["id"] for t in tasks}, path


def test_three_processes_on_one_csv_pay_each_row_once_and_list_every_row(ace, sandbox, tmp_path):
    sandbox.latency = 0.02  # submits take a while, so the three overlap for real
    csv_path = jobs(tmp_path)
    procs = [start(["submit", "t2v", "--from-csv", csv_path, "--out", tmp_path / f"m{n}.csv", "--max-in-flight", "30"])
             for n in range(3)]
    results = [finish(proc) for proc in procs]
    assert [code for code, _out, _err in results] == [0, 0, 0], [err[-1500:] for _c, _o, err in results]
    assert_each_row_once(sandbox, ace, [tmp_path / f"m{n}.csv" for n in range(3)])
    assert attempts(sandbox, ace) == ROWS  # not one refused or wasted submit either
    # the work was shared, and every process printed every row
    assert sum("submitted by other processes" in err for _c, _o, err in results) >= 2
    assert all(len(out.splitlines()) == ROWS for _c, out, _e in results)


def test_one_of_three_killed_halfway_and_rerun_still_pays_each_row_once(ace, sandbox, tmp_path):
    sandbox.latency = 0.02
    csv_path = jobs(tmp_path)
    command = ["submit", "t2v", "--from-csv", csv_path, "--max-in-flight", "30"]
    procs = [start([*command, "--out", tmp_path / f"m{n}.csv"]) for n in range(3)]
    victim = procs[0]
    wait_for(lambda: submitted_rows() >= ROWS // 3, what="a third of the rows submitted")
    kill_between_submits(victim, claims_of)
    assert [finish(p)[0] for p in procs[1:]] == [0, 0]
    rerun = start([*command, "--out", tmp_path / "m0.csv"])
    code, _out, err = finish(rerun)
    assert code == 0, err[-2000:]
    assert_each_row_once(sandbox, ace, [tmp_path / f"m{n}.csv" for n in range(3)])


@pytest.mark.parametrize("dialect", ["kling", "acedata"])
def test_a_claim_left_by_a_killed_process_goes_through_reconcile(sandbox, add_profile, tmp_path, dialect):
    add_profile("p", sandbox.base_url(dialect), dialect=dialect, auth="jwt" if dialect == "kling" else "key")
    csv_path = jobs(tmp_path, 1)
    received = threading.Event()
    handle = sandbox.app.handle

    def spy(req):
        if req.method == "POST":
            received.set()
        return handle(req)

    sandbox.app.handle = spy
    sandbox.latency = 1.0  # the submit has reached the server when its process dies...
    victim = start(["submit", "t2v", "--from-csv", csv_path])
    assert received.wait(20) and claims_of(victim.pid) == 1
    victim.kill()
    victim.wait()
    wait_for(lambda: server_tasks(sandbox, dialect), what="the task created")  # ...and the server creates it
    sandbox.latency = 0.0
    rerun = start(["submit", "t2v", "--from-csv", csv_path, "--out", tmp_path / "r.csv"])
    code, out, err = finish(rerun)
    assert len(server_tasks(sandbox, dialect)) == 1  # never sent blind
    (row,) = manifest(tmp_path / "r.csv")
    if dialect == "kling":  # looked up by its external id, and adopted
        assert code == 0 and row["task_id"] == server_tasks(sandbox, dialect)[0]["id"], err
    else:
        assert code == 6 and row["status"] == "uncertain" and "the process sending it is gone" in err, (out, err)


def test_followers_wait_for_the_claimants_task(ace, sandbox, tmp_path):
    """A single submit with --external-id that another process is sending: followed, not sent again."""
    sandbox.latency = 0.5
    first = start(["submit", "t2v", "fox", "--external-id", "job-7"])
    wait_for(lambda: claims_of(first.pid), what="the id claimed")
    second = start(["submit", "t2v", "fox", "--external-id", "job-7"])
    (code1, out1, _), (code2, out2, err2) = finish(first), finish(second)
    assert code1 == code2 == 0 and out1 == out2 and out1.strip()
    assert "is being submitted by pid" in err2
    assert len(server_tasks(sandbox, ace)) == 1 and attempts(sandbox, ace) == 1


def test_processes_opening_a_new_journal_at_once_all_get_it(tmp_path):
    script = ("import sys, time\nfrom kling_cli.journal import open_journal\n"
              "while time.time() < float(sys.argv[2]): pass\nopen_journal(sys.argv[1]).close()\n")
    for round_ in range(3):
        path = tmp_path / f"j{round_}.db"
        at = str(time.time() + 0.4)
        procs = [subprocess.Popen([sys.executable, "-c", script, str(path), at], stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
        errors = [proc.communicate(timeout=30)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 6, errors


def test_a_journal_of_the_first_release_is_migrated_not_broken(kling, kling_profile, tmp_path):
    from kling_cli.journal.schema import MIGRATIONS, SQLITE_TYPES

    path = journal_db()
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        for statement in MIGRATIONS[0][1](SQLITE_TYPES):
            db.execute(statement)
        db.execute("INSERT INTO _migrations VALUES ('001_submissions', '2026-01-01T00:00:00Z')")
        db.execute("INSERT INTO submissions (external_id, request_hash, profile, provider, dialect, kind, request,"
                   " state, task_id, created_at, updated_at) VALUES ('kc-old', 'h', 'test', 'custom', 'kling', 't2v',"
                   " '{\"prompt\": \"old fox\"}', 'submitted', '123', 'then', 'then')")
    (entry,) = kling("history", "--json").json_lines()
    assert entry["task_id"] == "123" and entry["request"]["prompt"] == "old fox"
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")] == \
            ["001_submissions", "002_claims", "003_task_times", "004_uploads", "005_timing"]
    assert kling("submit", "t2v", "new fox").exit_code == 0


def test_pending_entries_end_in_the_state_they_reached(kling, kling_profile, sandbox, tmp_path):
    """A pending submit that a lookup shows was never created ends refused, and one found ends submitted."""
    from kling_cli.journal import open_journal

    csv_path = write_csv(tmp_path / "jobs.csv", ["prompt"], [["lost fox"], ["found fox"]])
    rows = kling("submit", "t2v", "--from-csv", csv_path, "--dry-run").json_lines()
    journal = open_journal(str(journal_db()))
    for row in rows:
        journal.record_intent(external_id=row["external_id"], request_hash=row["identity"], profile=kling_profile,
                              provider="custom", dialect="kling", kind="t2v", request=row["request"])
    journal.close()
    # the second one reached the provider before its process died
    created = httpx.post(f"{sandbox.base_url('kling')}/v1/videos/text2video", json=rows[1]["request"],
                         headers={"Authorization": "Bearer sandbox-api-key"}).json()["data"]["task_id"]
    result = kling("submit", "t2v", "--from-csv", csv_path, "--json")
    assert result.exit_code == 0, result
    assert len(server_tasks(sandbox, "kling")) == 2
    entries = kling("history", "--json").json_lines()
    assert "pending" not in {e["state"] for e in entries}
    by_prompt = {}
    for entry in entries:
        by_prompt.setdefault(entry["request"]["prompt"], []).append(entry)
    assert sorted(e["state"] for e in by_prompt["lost fox"]) == ["refused", "submitted"]
    assert [(e["state"], e["task_id"]) for e in by_prompt["found fox"]] == [("submitted", created)]


def test_rerun_after_losing_the_journal_adopts_every_row_on_the_official_api(kling, kling_profile, sandbox, tmp_path):
    csv_path = jobs(tmp_path, 10)
    results = tmp_path / "r.csv"
    assert kling("submit", "t2v", "--from-csv", csv_path, "--out", results, "--wait").exit_code == 0
    before = {r["row"]: r["task_id"] for r in manifest(results)}
    for path in journal_db().parent.glob("journal.db*"):
        path.unlink()  # a CI runner is a fresh machine every time
    again = kling("submit", "t2v", "--from-csv", csv_path, "--out", results, "--wait")
    assert again.exit_code == 0, again
    assert len(server_tasks(sandbox, "kling")) == 10 and attempts(sandbox) == 20  # each refused once, 1201
    rows = manifest(results)
    assert {r["row"]: r["task_id"] for r in rows} == before and {r["status"] for r in rows} == {"succeeded"}
    assert "0 refused" in again.stderr and "refused:" not in again.stderr


def test_a_manifest_row_naming_a_task_is_never_rewritten_to_refused(kling, sandbox, add_profile, tmp_path):
    add_profile("ez", sandbox.base_url("newapi"), dialect="newapi", auth="key")  # refuses a reused id, no lookup
    csv_path = jobs(tmp_path, 3)
    results = tmp_path / "r.csv"
    assert kling("submit", "t2v", "--from-csv", csv_path, "--out", results).exit_code == 0
    before = manifest(results)
    for path in journal_db().parent.glob("journal.db*"):
        path.unlink()
    again = kling("submit", "t2v", "--from-csv", csv_path, "--out", results)
    assert again.exit_code == 8 and "already exists" in again.stderr
    assert [(r["task_id"], r["status"]) for r in manifest(results)] == [(r["task_id"], r["status"]) for r in before]
    assert len(server_tasks(sandbox, "newapi")) == 3


def test_journal_option_and_variable_choose_a_sqlite_file(kling, kling_profile, tmp_path):
    shared = tmp_path / "shared" / "kling.db"
    task_id = kling("--journal", f"sqlite://{shared}", "submit", "t2v", "fox", "-q").stdout.strip()
    assert task_id and shared.exists() and not journal_db().exists()
    (entry,) = kling("history", "--json", env={"KLING_JOURNAL": str(shared)}).json_lines()
    assert entry["task_id"] == task_id
    assert kling("history", "--json").stdout == ""  # the default journal is another one
    clash = kling("submit", "t2v", "fox", "--journal", str(shared), "--no-journal")
    assert clash.exit_code == 2 and "contradict" in clash.stderr
    assert kling("--journal", "mysql://db/kling", "submit", "t2v", "fox").exit_code == 3


def _pending_then_unwritable(profile: str, external_id: str, request: dict) -> None:
    """A submit left pending by a dead process, in a journal that now refuses every update of its submits (a
    full disk, a read-only replica): a real SQLite error, raised by a trigger."""
    from kling_cli.journal import open_journal

    journal = open_journal(str(journal_db()))
    journal.record_intent(external_id=external_id, request_hash="h", profile=profile, provider="custom",
                          dialect="kling", kind="t2v", request=request)
    journal.close()
    with sqlite3.connect(journal_db()) as db:
        db.execute("CREATE TRIGGER no_updates BEFORE UPDATE ON submissions BEGIN SELECT RAISE(ABORT, "
                   "'database or disk is full'); END")


def test_a_batch_row_whose_reconcile_cannot_be_recorded_stops_cleanly(kling, kling_profile, sandbox, tmp_path):
    """The lookup after a lost answer says "never created"; the journal refuses to record that: the batch
    stops with the journal's error (exit 3), sends nothing, and no "unexpected" bug (exit 1)."""
    csv_path = write_csv(tmp_path / "jobs.csv", ["prompt"], [["lost fox"]])
    (row,) = kling("submit", "t2v", "--from-csv", csv_path, "--dry-run").json_lines()
    _pending_then_unwritable(kling_profile, row["external_id"], row["request"])
    result = kling("submit", "t2v", "--from-csv", csv_path)
    assert result.exit_code == 3 and "unexpected" not in result.stderr, result
    assert "disk is full" in result.stderr and "1 rows not sent" in result.stderr, result
    assert server_tasks(sandbox, "kling") == []


def test_a_single_submit_whose_reconcile_cannot_be_recorded_stops_cleanly(kling, kling_profile, sandbox):
    _pending_then_unwritable(kling_profile, "job-9", {"prompt": "fox"})
    result = kling("submit", "t2v", "fox", "--external-id", "job-9")
    assert result.exit_code == 3 and "unexpected" not in result.stderr, result
    assert "disk is full" in result.stderr, result
    assert server_tasks(sandbox, "kling") == []


def test_a_journal_that_cannot_be_read_is_a_clean_error(kling, kling_profile, tmp_path):
    """A journal file whose submissions cannot be read (damaged, or from an incompatible copy): the dry run
    and `history` say so in one line, exit 3, not "unexpected OperationalError" (exit 1)."""
    assert kling("submit", "t2v", "fox").exit_code == 0
    with sqlite3.connect(journal_db()) as db:
        db.execute("DROP TABLE submissions")
    csv_path = jobs(tmp_path, 2)
    for args in (["submit", "t2v", "--from-csv", csv_path, "--dry-run"], ["history"]):
        result = kling(*args)
        assert result.exit_code == 3 and "unexpected" not in result.stderr, (args, result)
        assert "no such table: submissions" in result.stderr, (args, result)
