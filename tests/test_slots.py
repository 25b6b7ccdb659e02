"""CSV runs against an account that runs a limited number of tasks (the sandbox refuses past it with 1303),
counted server-side: the limit is never passed for long, no slot stays idle once a task is seen to end,
`--max-in-flight auto` finds the limit; and the slot arithmetic on its own."""

from __future__ import annotations

import httpx
import pytest

from conftest import TASK_SECONDS
from kling_cli.sandbox import new_sandbox
from kling_cli.sandbox.core import Account
from kling_cli.slots import AUTO_START, Slots

POLL = 0.05  # KLING_POLL_INTERVAL in every test (conftest)
#: what a loop turn costs between seeing an end and the next task existing (journal claim, submit)
SLACK = 0.15


@pytest.fixture
def limited(tmp_path, add_profile):
    """A sandbox that runs at most 3 tasks at once, whose tasks take 0.3 s give or take, on the default profile."""
    server = new_sandbox(tmp_path / "limited-state", task_seconds=TASK_SECONDS,
                     account=Account(max_running=3, spread=0.3, seed=5)).start()
    add_profile("limited", server.base_url("kling"))
    yield server
    server.close()


def run_rows(kling, tmp_path, rows: int, *flags: str):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt\n" + "".join(f"fox {n}\n" for n in range(rows)))
    result = kling("submit", "t2v", "--from-csv", jobs, "--wait", *flags)
    assert result.exit_code == 0, result
    return result


def tasks_and_refusals(sandbox) -> tuple[list[dict], int]:
    tasks = httpx.get(f"{sandbox.origin}/__sandbox/tasks").json()["tasks"]
    attempts = httpx.get(f"{sandbox.origin}/__sandbox/stats").json()["counters"]["kling:submit_attempts"]
    return tasks, attempts - len(tasks)


def most_running(tasks: list[dict]) -> int:
    return max(sum(1 for t in tasks if t["created"] <= u["created"] < t["created"] + t["seconds"]) for u in tasks)


def idle_after_ends(tasks: list[dict], slots: int) -> list[float]:
    """The k-th task to end frees the slot the (slots + k)-th task created takes: how long it stayed free."""
    ends = sorted(t["created"] + t["seconds"] for t in tasks)
    starts = sorted(t["created"] for t in tasks)
    return [starts[slots + k] - ends[k] for k in range(len(starts) - slots)]


def test_past_the_accounts_limit_slots_stay_busy_and_1303_lowers_the_limit(kling, limited, tmp_path):
    run_rows(kling, tmp_path, 24, "--max-in-flight", "6")  # more than the account takes
    tasks, refused = tasks_and_refusals(limited)
    assert len(tasks) == 24 and most_running(tasks) == 3
    # the first refusal holds the limit at 3; each try of one more after that waits twice as long
    assert 1 <= refused <= 4
    gaps = idle_after_ends(tasks, 3)
    assert max(gaps) < POLL + SLACK, sorted(gaps)[-3:]


def test_at_the_accounts_limit_nothing_is_refused_and_no_slot_waits(kling, limited, tmp_path):
    run_rows(kling, tmp_path, 18, "--max-in-flight", "3")
    tasks, refused = tasks_and_refusals(limited)
    assert refused == 0 and most_running(tasks) == 3
    assert max(idle_after_ends(tasks, 3)) < POLL + SLACK


def test_auto_finds_the_limit_it_was_not_told_and_settles_there(kling, limited, tmp_path):
    result = run_rows(kling, tmp_path, 18, "--max-in-flight", "auto")
    tasks, refused = tasks_and_refusals(limited)
    assert refused == 1 and most_running(tasks) == 3
    assert "--max-in-flight auto: the provider refused a task with 3 running: the account's limit is 3" in result.stderr
    assert max(idle_after_ends(tasks, 3)) < POLL + SLACK


def test_auto_says_how_far_it_got_when_the_rows_run_out_first(kling, limited, tmp_path):
    result = run_rows(kling, tmp_path, 2, "--max-in-flight", "auto")
    assert "no refusal with up to 2 tasks at once" in result.stderr
    assert tasks_and_refusals(limited)[1] == 0


@pytest.mark.parametrize("text", ["0", "-1", "many", "2.5"])
def test_max_in_flight_takes_a_number_or_auto(kling, kling_profile, tmp_path, text):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt\nfox\n")
    result = kling("submit", "t2v", "--from-csv", jobs, "--max-in-flight", text)
    assert result.exit_code == 2 and "--max-in-flight" in result.stderr


def test_the_slot_arithmetic():
    said: list[str] = []
    auto = Slots(None, say=said.append)
    assert auto.room(0, 0.0) == AUTO_START
    for own in range(1, 8):
        auto.sent(own)  # every send that fills the slots grows the limit by one
    assert auto.room(7, 0.0) == 1
    auto.refused(7, 1.0)
    assert auto.room(7, 1.0) == 0 and auto.ceiling == 7 and said
    fixed = Slots(5)
    fixed.refused(3, 0.0)  # someone else runs two
    assert fixed.room(3, 0.0) == 0 and fixed.room(2, 0.0) == 1
    for _ in range(3):
        fixed.ended()
    assert fixed.room(3, 0.0) == 1  # held for one turnover of our tasks, then one more is tried
    fixed.refused(3, 0.0)  # refused again: the next try waits twice as long
    assert fixed.hold_ends == 6
    fixed.refused(0, 0.0)  # none of ours runs: the slots are all someone else's; the limit stays
    assert fixed.limit == 3


def test_a_csv_run_learns_ends_from_the_callbacks_listen_received(kling, kling_profile, sandbox, tmp_path,
                                                                  monkeypatch):
    """With --callback-url at a `kling callback listen`, the first tasks are polled until their callbacks show
    that callbacks arrive; the later ones are queried once, when theirs lands, and polled only as a fallback."""
    import os
    import subprocess
    import sys
    import threading

    queries: dict[str, int] = {}
    handle = sandbox.app.handle

    def counting(req):
        if req.method == "GET" and req.path.startswith("/kling/v1/videos/"):
            task_id = req.path.rsplit("/", 1)[-1]
            queries[task_id] = queries.get(task_id, 0) + 1
        return handle(req)

    sandbox.app.handle = counting
    # the growing interval, at a tenth of the real times (0.2 s, 0.5 s, 0.95 s...; at most 3 s apart)
    monkeypatch.delenv("KLING_POLL_INTERVAL")
    monkeypatch.setenv("KLING_TIME_SCALE", "10")
    listener = subprocess.Popen([sys.executable, "-m", "kling_cli", "callback", "listen", "--port", "0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                                stdin=subprocess.DEVNULL)
    try:
        line = ""
        while "listening for callbacks on" not in line:
            line = listener.stderr.readline()
            assert line, "listener exited early"
        threading.Thread(target=listener.stderr.read, daemon=True).start()  # keep its stderr drained
        url = line.split(" on ")[1].split()[0]
        jobs = tmp_path / "jobs.csv"
        jobs.write_text("prompt\n" + "".join(f"fox {n} sandbox:slow\n" for n in range(6)))  # 1.5 s tasks
        result = kling("submit", "t2v", "--from-csv", jobs, "--max-in-flight", "3", "--callback-url", url, "--wait")
    finally:
        listener.terminate()
        listener.wait(timeout=10)
    assert result.exit_code == 0, result
    created = sorted(httpx.get(f"{sandbox.origin}/__sandbox/tasks").json()["tasks"], key=lambda t: t["created"])
    first, later = created[:3], created[3:]
    assert all(queries[t["id"]] >= 3 for t in first)  # polled at 0.2, 0.5, 0.95... until a callback came
    assert [queries[t["id"]] for t in later] == [1, 1, 1]  # each queried once, when its callback landed
