"""Cost before paying: estimates from the price table, --dry-run, --max-cost, and history --cost, checked
against sandbox batches (the sandbox reports what each task cost, as the official API does)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import sandbox_stats
from test_batch import server_tasks, write_csv

from kling_cli import pricing


def created(sandbox, dialect: str = "kling") -> int:
    return sandbox_stats(sandbox)["counters"].get(f"{dialect}:created", 0)


def test_every_price_entry_cites_a_source_that_says_when_it_was_read():
    table = pricing.table()
    for name, provider in table["providers"].items():
        assert provider["unit"], name
        for price in provider["prices"]:
            source = table["sources"][price["source"]]
            assert source["url"] and source["read"] and price["amount"] > 0


def test_dry_run_estimates_each_row_and_the_total_and_the_run_is_billed_the_same(kling, sandbox, add_profile,
                                                                                 tmp_path):
    add_profile("prod", sandbox.base_url("kling"), provider="kling")
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt", "model", "mode", "duration"],
                     [["a fox", "", "", ""], ["a whale", "kling-v1-6", "pro", "10"], ["a boat", "kling-v2-6", "pro", "5"],
                      ["a cat", "kling-v2-5-turbo", "std", "5"]])
    dry = kling("submit", "t2v", "--from-csv", jobs, "--dry-run")
    assert dry.exit_code == 0, dry
    rows = dry.json_lines()
    assert [r["estimate"]["cost"] and r["estimate"]["cost"]["amount"] for r in rows] == [2.5, 14.0, 2.5, None]  # row 1: the default model, kling-v2-6
    assert rows[3]["estimate"] == {"cost": None, "unit": "units", "source": None, "for": "t2v kling-v2-5-turbo std 5 s"}
    assert "estimated cost: 19 units, 1 unknown" in dry.stderr
    assert created(sandbox) == 0

    run = kling("submit", "t2v", "--from-csv", jobs, "--wait", "--out", tmp_path / "r.csv")
    assert run.exit_code == 0, run
    reported = {int(r["row"]): r["cost"] for r in csv.DictReader((tmp_path / "r.csv").open())}
    assert reported == {1: "2.5 units", 2: "14 units", 3: "2.5 units", 4: "1 units"}


def test_a_single_submit_dry_run_shows_the_request_and_its_cost_and_sends_nothing(kling, sandbox, add_profile):
    add_profile("prod", sandbox.base_url("kling"), provider="kling")
    result = kling("submit", "t2v", "a fox", "--mode", "pro", "--duration", "10", "--dry-run")
    assert result.exit_code == 0, result
    body = json.loads(result.stdout)
    assert body["request"]["mode"] == "pro" and body["estimate"]["cost"] == {"amount": 5.0, "unit": "units"}
    assert "estimated cost: 5 units" in result.stderr
    assert sandbox_stats(sandbox)["counters"].get("kling:submit_attempts", 0) == 0


def test_max_cost_over_the_estimate_refuses_to_start(kling, sandbox, add_profile, tmp_path):
    add_profile("prod", sandbox.base_url("kling"), provider="kling")
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt", "mode"], [[f"fox {n}", "pro"] for n in range(4)])
    result = kling("submit", "t2v", "--from-csv", jobs, "--max-cost", "9units")
    assert result.exit_code == 2, result
    assert "estimated at 10 units; nothing was sent" in result.stderr
    assert sandbox_stats(sandbox)["counters"].get("kling:submit_attempts", 0) == 0
    wrong = kling("submit", "t2v", "--from-csv", jobs, "--max-cost", "50 points")
    assert wrong.exit_code == 2 and "bills in units, not points" in wrong.stderr
    assert kling("submit", "t2v", "--from-csv", jobs, "--max-cost", "10", "--wait").exit_code == 0
    assert created(sandbox) == 4


def test_max_cost_stops_sending_once_the_reported_cost_reaches_it(kling, sandbox, add_profile, tmp_path):
    """kling-v2-5-turbo has no public price: it counts as 0 until the sandbox reports 1 unit per task."""
    add_profile("prod", sandbox.base_url("kling"), provider="kling")
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt", "model"], [[f"fox {n}", "kling-v2-5-turbo"] for n in range(5)])
    args = ("submit", "t2v", "--from-csv", jobs, "--wait", "--max-in-flight", "1", "--out", tmp_path / "r.csv")
    first = kling(*args, "--max-cost", "2")
    assert first.exit_code == 9, first
    assert created(sandbox) == 2
    assert "--max-cost 2 units reached: stopped submitting, 3 rows not sent" in first.stderr
    assert "cost: 2 units of --max-cost 2 units" in first.stderr
    again = kling(*args, "--max-cost", "10")
    assert again.exit_code == 0, again
    assert created(sandbox) == 5  # the rerun sent the rest, never the first two again


def test_max_cost_in_aigw_points_follows_what_the_gateway_reports(kling, sandbox, add_profile, tmp_path):
    add_profile("gw", sandbox.base_url("aigw"), provider="aigw", auth="key")
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt"], [[f"fox {n}"] for n in range(5)])
    result = kling("submit", "t2v", "--from-csv", jobs, "--wait", "--max-in-flight", "1", "--max-cost", "25points")
    assert result.exit_code == 9, result
    assert len(server_tasks(sandbox, "aigw")) == 3  # 10 points each: 0, 10, 20 sent; 30 reached the budget
    assert "cost: 30 points of --max-cost 25 points" in result.stderr


def test_history_cost_sums_by_day_profile_and_model(kling, sandbox, add_profile, tmp_path):
    add_profile("prod", sandbox.base_url("kling"), provider="kling")
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt", "model", "mode"],
                     [["a", "kling-v1", "std"], ["b", "kling-v1", "pro"], ["c", "kling-v1-6", "std"]])
    assert kling("submit", "t2v", "--from-csv", jobs, "--wait").exit_code == 0
    result = kling("history", "--cost", "--json")
    assert result.exit_code == 0, result
    groups = {(g["profile"], g["model"]): g for g in result.json_lines()}
    assert groups[("prod", "kling-v1")]["reported"] == {"units": 4.5}
    assert groups[("prod", "kling-v1")]["estimated"] == {"units": 4.5}
    assert groups[("prod", "kling-v1")]["tasks"] == 2
    assert groups[("prod", "kling-v1-6")]["reported"] == {"units": 2.0}
    text = kling("history", "--cost")
    assert text.exit_code == 0
    assert any(line.split("\t")[1:5] == ["prod", "kling-v1", "2", "4.5 units"] for line in text.stdout.splitlines())


def test_estimates_read_every_dialects_wire_body():
    assert pricing.dims({"model": "m", "params": {"mode": "pro", "duration": "10"}}) == ("m", "pro", 10)
    assert pricing.dims({"model_name": "kling-v1", "duration": 5}) == ("kling-v1", None, 5)
    assert pricing.estimate("custom", "kling", "t2v", {}).cost is None
    assert pricing.estimate("sandbox", "newapi", "t2v", {}).unit == "USD"


def test_budget_parsing(tmp_path: Path):
    import pytest

    from kling_cli.errors import UsageError

    assert pricing.parse_budget("12.5 unit", "units").amount == 12.5
    for bad in ("", "-1", "0", "ten units"):
        with pytest.raises(UsageError):
            pricing.parse_budget(bad, "units")
    with pytest.raises(UsageError):
        pricing.parse_budget("5", None)
