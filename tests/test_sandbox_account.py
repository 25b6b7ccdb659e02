"""The sandbox's account model: a limit on running tasks answered with each dialect's "too many" refusal,
run times drawn from a distribution, random failures."""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from kling_cli.presets import SANDBOX_API_KEY
from kling_cli.sandbox import new_sandbox
from kling_cli.sandbox.core import RANDOM_FAILURE, Account, Sandbox

AUTH = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}


@pytest.fixture
def account_sandbox(tmp_path: Path, request):
    server = new_sandbox(tmp_path / "state", task_seconds=request.param.pop("task_seconds", 100),
                     account=Account(**request.param)).start()
    yield server
    server.close()


def submit(sandbox: Sandbox, prompt: str, client: httpx.Client | None = None) -> httpx.Response:
    return (client or httpx).post(f"{sandbox.base_url('kling')}/v1/videos/text2video", json={"prompt": prompt},
                                  headers=AUTH)


@pytest.mark.parametrize("account_sandbox", [{"max_running": 3}], indirect=True)
def test_past_the_limit_a_submit_gets_1303_and_nothing_is_created(account_sandbox):
    answers = [submit(account_sandbox, f"fox {n}") for n in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert answers[3].json()["code"] == 1303
    assert account_sandbox.store.running(account_sandbox.store.all()[0].created + 1) == 3
    assert len(account_sandbox.store.all()) == 3


@pytest.mark.parametrize("account_sandbox", [{"max_running": 2, "task_seconds": 0.3}], indirect=True)
def test_a_slot_frees_when_a_task_ends(account_sandbox):
    assert [submit(account_sandbox, f"fox {n}").status_code for n in range(3)] == [200, 200, 429]
    first = account_sandbox.store.all()[0]
    import time

    time.sleep(max(0.0, first.created + first.seconds - time.time()) + 0.02)
    assert submit(account_sandbox, "fox 3").status_code == 200


@pytest.mark.parametrize("account_sandbox", [{"max_running": 4}], indirect=True)
def test_parallel_submits_never_pass_the_limit(account_sandbox):
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda n: submit(account_sandbox, f"fox {n}").status_code, range(24)))
    assert codes.count(200) == 4 and codes.count(429) == 20
    assert len(account_sandbox.store.all()) == 4


@pytest.mark.parametrize("dialect,path", [("cometapi", "/kling/v1/videos/text2video"),
                                          ("newapi", "/kling/v1/videos/text2video"), ("acedata", "/kling/videos"),
                                          ("aigw", "/open/aigw/gateway/generations")])
def test_every_dialect_answers_its_own_too_many(tmp_path, dialect, path):
    server = new_sandbox(tmp_path / "state", task_seconds=100, account=Account(max_running=0)).start()
    try:
        answer = httpx.post(server.base_url(dialect) + path, json={"prompt": "fox", "model": "kling-v2-6"},
                            headers=AUTH)
        assert answer.status_code == 429, answer.text
        assert not server.store.all()
    finally:
        server.close()


@pytest.mark.parametrize("account_sandbox", [{"spread": 0.3, "failure_rate": 0.1, "seed": 3}], indirect=True)
def test_run_times_are_lognormal_around_task_seconds_and_some_fail(account_sandbox):
    with httpx.Client() as client:
        for n in range(300):
            assert submit(account_sandbox, f"fox {n}", client).status_code == 200
    rows = account_sandbox.store.all()
    logs = [math.log(row.seconds / 100) for row in rows]
    assert abs(statistics.median(logs)) < 0.06 and 0.25 < statistics.pstdev(logs) < 0.35
    failed = [row for row in rows if row.outcome == "failed"]
    assert 15 <= len(failed) <= 50 and {row.reason for row in failed} == {RANDOM_FAILURE}
