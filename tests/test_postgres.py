"""One journal on PostgreSQL shared by many machines (here: processes with separate data dirs), against a
real server started by the suite itself (tests/pgserver.py). Where none can start, these tests skip with
the reason, except in CI (CI=true), where they fail: CI must run them."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

import pgserver
from test_batch import attempts, manifest, server_tasks
from test_claims import ROWS, assert_each_row_once, finish, jobs, kill_between_submits, start, wait_for

_databases = itertools.count()


@pytest.fixture(scope="session")
def pg():
    try:
        server = pgserver.start()
    except pgserver.Unavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the PostgreSQL tests, and no server could start: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield server
    server.close()


@pytest.fixture
def pg_url(pg) -> str:
    """A database of its own for each test."""
    return pg.create_database(f"kling_test_{os.getpid()}_{next(_databases)}")


@pytest.fixture
def ace(sandbox, add_profile) -> str:
    add_profile("ace", sandbox.base_url("acedata"), dialect="acedata", auth="key")
    return "acedata"


def machine(tmp_path: Path, name: str, url: str) -> dict[str, str]:
    """The environment of one "machine": a data dir of its own, the shared journal."""
    return {**os.environ, "KLING_DATA_DIR": str(tmp_path / name), "KLING_JOURNAL": url}


def query(url: str, sql: str, *args):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def test_three_machines_share_one_journal_and_a_fourth_reruns_for_free(ace, sandbox, pg_url, tmp_path):
    sandbox.latency = 0.02
    csv_path = jobs(tmp_path)
    command = ["submit", "t2v", "--from-csv", csv_path, "--max-in-flight", "30"]
    procs = [start([*command, "--out", tmp_path / f"m{n}.csv"], machine(tmp_path, f"d{n}", pg_url)) for n in range(3)]
    results = [finish(proc) for proc in procs]
    assert [code for code, _o, _e in results] == [0, 0, 0], [err[-1500:] for _c, _o, err in results]
    assert_each_row_once(sandbox, ace, [tmp_path / f"m{n}.csv" for n in range(3)])
    assert sum("submitted by other processes" in err for _c, _o, err in results) >= 2
    sent = attempts(sandbox, ace)
    fourth = finish(start([*command, "--out", tmp_path / "m3.csv"], machine(tmp_path, "d3", pg_url)))
    assert fourth[0] == 0 and attempts(sandbox, ace) == sent, fourth[2][-1500:]
    assert_each_row_once(sandbox, ace, [tmp_path / "m3.csv"])
    for name in ("d0", "d3"):  # history and batch-status work from any machine
        env = machine(tmp_path, name, pg_url)
        history = finish(start(["history", "--limit", "1000"], env))
        assert history[0] == 0 and len(history[1].splitlines()) == ROWS
        status = finish(start(["batch-status", "--from", tmp_path / "m0.csv"], env))
        assert status[0] == 0 and len(status[1].splitlines()) == ROWS


def test_a_machine_killed_halfway_and_rerun_on_a_shared_journal(ace, sandbox, pg_url, tmp_path):
    sandbox.latency = 0.02
    csv_path = jobs(tmp_path)
    command = ["submit", "t2v", "--from-csv", csv_path, "--max-in-flight", "30"]
    procs = [start([*command, "--out", tmp_path / f"m{n}.csv"], machine(tmp_path, f"d{n}", pg_url)) for n in range(3)]
    victim = procs[0]

    def submitted() -> int:
        try:
            return query(pg_url, "SELECT count(*) FROM submissions WHERE task_id IS NOT NULL")[0][0]
        except Exception:  # the tables are not there yet
            return 0

    wait_for(lambda: submitted() >= ROWS // 3, what="a third of the rows submitted")
    kill_between_submits(victim, lambda pid: query(pg_url, "SELECT count(*) FROM claims WHERE pid = %s", pid)[0][0])
    assert [finish(p)[0] for p in procs[1:]] == [0, 0]
    rerun = finish(start([*command, "--out", tmp_path / "m0.csv"], machine(tmp_path, "d0", pg_url)))
    assert rerun[0] == 0, rerun[2][-2000:]
    assert_each_row_once(sandbox, ace, [tmp_path / f"m{n}.csv" for n in range(3)])


def test_the_server_lost_mid_batch_stops_submitting_and_a_rerun_finishes(ace, sandbox, pg, pg_url, tmp_path):
    sandbox.latency = 0.02
    csv_path = jobs(tmp_path, 40)
    command = ["submit", "t2v", "--from-csv", csv_path, "--out", tmp_path / "m.csv", "--max-in-flight", "40"]
    env = machine(tmp_path, "d", pg_url)
    proc = start(command, env)
    wait_for(lambda: len(server_tasks(sandbox, ace)) >= 10, what="ten tasks created")
    pg.stop("immediate")
    try:
        code, _out, err = finish(proc)
    finally:
        pg.start()
    assert code == 3 and "stopped submitting" in err and pgserver.PASSWORD not in err, err[-2000:]
    created = {t["id"] for t in server_tasks(sandbox, ace)}
    assert created and created <= {r["task_id"] for r in manifest(tmp_path / "m.csv")}  # every task id kept
    rerun = finish(start(command, env))
    assert rerun[0] == 0, rerun[2][-2000:]
    assert_each_row_once(sandbox, ace, [tmp_path / "m.csv"], count=40)


def test_an_unreachable_server_or_a_bad_login_sends_nothing(kling, ace, sandbox, pg, pg_url, tmp_path):
    csv_path = jobs(tmp_path, 2)
    down = f"postgresql://kling:{pgserver.PASSWORD}@127.0.0.1:{pgserver.free_port()}/nowhere"
    wrong = pg_url.replace(pgserver.PASSWORD, "not-the-password")
    for url, needle in ((down, "cannot reach the journal server"), (wrong, "refused the login")):
        for args in (["submit", "t2v", "--from-csv", csv_path], ["submit", "t2v", "fox"]):
            result = kling("--journal", url, *args)
            assert result.exit_code == 3 and needle in result.stderr, result
            assert len(result.stderr.splitlines()) <= 2 and "nothing was sent" in result.stderr  # line + hint
            assert pgserver.PASSWORD not in result.stderr and "not-the-password" not in result.stderr
    assert attempts(sandbox, ace) == 0


def test_without_psycopg_a_postgres_journal_is_one_clear_line(kling, ace, sandbox, pg_url, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra looks like
    result = kling("submit", "t2v", "fox", env={"KLING_JOURNAL": pg_url})
    assert result.exit_code == 3 and "psycopg" in result.stderr and "kling-cli[postgres]" in result.stderr
    assert attempts(sandbox, ace) == 0


def test_libpq_finds_the_password_as_psql_does_and_it_is_masked_everywhere(kling, ace, pg, pg_url, tmp_path):
    bare = pg_url.replace(f":{pgserver.PASSWORD}@", "@")
    assert kling("--journal", bare, "history").exit_code == 3  # no password anywhere: the login fails
    assert kling("--journal", bare, "history", env={"PGPASSWORD": pgserver.PASSWORD}).exit_code == 0
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{pg.port}:*:{pgserver.USER}:{pgserver.PASSWORD}\n")
    pgpass.chmod(0o600)
    assert kling("--journal", bare, "history", env={"PGPASSFILE": str(pgpass)}).exit_code == 0
    submitted = kling("submit", "t2v", "fox", "-vv", "--journal", pg_url)
    assert submitted.exit_code == 0 and "kling:****@127.0.0.1" in submitted.stderr
    history = kling("history", "--json", "-v", env={"KLING_JOURNAL": pg_url})
    assert history.exit_code == 0 and len(history.json_lines()) == 1
    for output in (submitted.stdout, submitted.stderr, history.stdout, history.stderr):
        assert pgserver.PASSWORD not in output
    names = [row[0] for row in query(pg_url, "SELECT name FROM _migrations ORDER BY name")]
    assert names == ["001_submissions", "002_claims", "003_task_times", "004_uploads", "005_timing"]  # the same named migrations as SQLite


def test_a_file_uploaded_from_one_machine_is_not_uploaded_again_from_another(kling, sandbox, add_profile, pg_url,
                                                                              tmp_path):
    from test_uploads import IMAGE, runs, uploader

    log = tmp_path / "uploads.log"
    add_profile("ace", sandbox.base_url("acedata"), dialect="acedata", auth="key",
                extra=("--upload-command", uploader(sandbox, log)))
    for n in range(2):
        env = {"KLING_DATA_DIR": str(tmp_path / f"d{n}"), "KLING_JOURNAL": pg_url}
        result = kling("submit", "i2v", f"a wave {n}", "--image", IMAGE, "-q", env=env)
        assert result.exit_code == 0, result
    assert len(runs(log)) == 1
    ((url,),) = query(pg_url, "SELECT url FROM uploads")
    assert {task["request"]["start_image_url"] for task in server_tasks(sandbox, "acedata")} == {url}
