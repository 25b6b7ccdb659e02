"""`kling report` on real sandbox batches: the HTML page in a real headless Chromium, JUnit XML against the
common schema, and the GitHub step summary with its workflow commands."""

from __future__ import annotations

import csv
import os
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from chromium import Browser, find
from conftest import FIXTURES
from test_batch import write_csv

from kling_cli.models import Cost
from kling_cli.report import Record
from kling_cli.report import html as report_html
from kling_cli.report import junit as report_junit

ROWS = [["a red fox running through fresh snow", "std", "5"],
        ["a humpback whale breaching at dawn", "pro", "10"],
        ["a paper boat in a rain gutter sandbox:fail", "std", "5"],
        ["a lighthouse at dusk sandbox:policy", "std", "5"],
        ['<script>document.title="owned"</script> & a "quoted" cat', "std", "5"]]


@pytest.fixture
def batch(kling, sandbox, add_profile, tmp_path) -> Path:
    """A finished sandbox batch with successes (downloaded), a failure and a refusal: its manifest."""
    add_profile("prod", sandbox.base_url("kling"), provider="kling")
    jobs = write_csv(tmp_path / "jobs.csv", ["prompt", "mode", "duration"], ROWS)
    result = kling("submit", "t2v", "--from-csv", jobs, "--out", tmp_path / "results.csv", "--wait",
                   "--download", tmp_path / "videos")
    assert result.exit_code == 8, result  # one failed, one refused
    return tmp_path / "results.csv"


def browser_or_fail(tmp_path: Path) -> Browser:
    binary = find()
    if binary is None:
        message = "chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return Browser(binary, tmp_path / "chromium-profile")


VIDEO_DURATION = """(async () => {
  const video = document.querySelector('video[data-local]');
  video.scrollIntoView();
  if (video.readyState < 1) {
    await new Promise((done, fail) => {
      video.addEventListener('loadedmetadata', done, {once: true});
      video.addEventListener('error', () => fail(new Error('video error ' + (video.error && video.error.code))));
      if (video.networkState === HTMLMediaElement.NETWORK_EMPTY || video.preload === 'none') {
        video.preload = 'metadata'; video.load();
      }
    });
  }
  return video.duration;
})()"""

SHOWN = "document.querySelectorAll('.card:not([hidden])').length"


def click(browser: Browser, status: str) -> int:
    return browser.evaluate(f"document.querySelector('button[data-filter=\"{status}\"]').click(), {SHOWN}")


def outside(requests: list[str], folder: Path) -> list[str]:
    """Requests for anything but the files under `folder` (data: URLs are the browser's own control icons)."""
    return [url for url in requests if not url.startswith(folder.as_uri() + "/") and not url.startswith("data:")]


def test_the_html_page_in_a_real_browser(kling, batch, tmp_path):
    page = tmp_path / "report.html"  # beside the videos/ folder: every file it needs is under its own folder
    result = kling("report", "--from", batch, "--html", page)
    assert result.exit_code == 0, result
    html = page.read_text()
    assert "<script>document.title" not in html and "&lt;script&gt;" in html  # data never becomes markup
    assert 'preload="none"' in html and "http" not in html.split("<main>")[1].split("</main>")[0].split(
        'src="videos/')[0]

    browser = browser_or_fail(tmp_path)
    try:
        browser.open(page.as_uri())
        assert browser.evaluate("document.querySelectorAll('.card').length") == 5
        assert browser.evaluate("document.title") == "kling report"
        assert click(browser, "failed") == 1
        assert click(browser, "refused") == 1
        assert click(browser, "succeeded") == 3
        assert browser.evaluate("document.querySelector('.card:not([hidden]) .badge').textContent") == "succeeded"
        assert click(browser, "all") == 5
        duration = browser.evaluate(VIDEO_DURATION)
        assert duration > 0  # the sandbox's clip is 5 s
        time.sleep(0.3)  # let the other cards' first frames come in before the picture is taken
        shot = Path(os.environ.get("KLING_TEST_ARTIFACTS") or tmp_path) / "report.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.screenshot(shot)
        assert shot.stat().st_size > 10_000
        print(f"screenshot of the report: {shot}")
        assert browser.console_errors() == []
        requests = browser.requests()
        assert any(url.endswith(".mp4") for url in requests)  # the video was fetched, from the folder
        assert outside(requests, tmp_path) == []

        # 1,000 cards whose videos are remote: the page opens with no request for any of them
        many = [Record(row=n, task_id=str(10**17 + n), kind="t2v", status="succeeded" if n % 7 else "failed",
                       prompt=f"prompt {n}", video_url=f"http://127.0.0.1:9/video-{n}.mp4", cost=Cost(1, "units"))
                for n in range(1, 1001)]
        big = tmp_path / "big" / "report.html"
        big.parent.mkdir()
        big.write_text(report_html.render(many, big))
        browser.events.clear()
        started = time.monotonic()
        browser.open(big.as_uri())
        print(f"1,000 cards loaded in {time.monotonic() - started:.2f} s")
        assert browser.evaluate("document.querySelectorAll('video[preload=\"none\"]').length") == 1000
        assert 0 < browser.evaluate("document.querySelectorAll('video[controls]').length") < 100  # near the view
        assert click(browser, "failed") == 142
        assert outside(browser.requests(), big.parent) == []
        assert browser.console_errors() == []
    finally:
        browser.close()


def test_junit_is_valid_against_the_common_schema_and_maps_every_outcome(kling, batch, tmp_path):
    import xmlschema

    schema = xmlschema.XMLSchema(str(FIXTURES / "junit.xsd"))
    out = tmp_path / "junit.xml"
    result = kling("report", "--from", batch, "--junit", out)
    assert result.exit_code == 0, result
    schema.validate(str(out))
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "2" and suite.get("errors") == "0"
    cases = {case.get("name").split(" (")[0]: case for case in suite.iter("testcase")}
    assert set(cases) == {"row 1", "row 2", "row 3", "row 4", "row 5"}
    assert cases["row 3"].find("failure").get("type") == "failed"
    assert "risk control" in cases["row 3"].find("failure").get("message")
    assert cases["row 4"].find("failure").get("type") == "refused"
    assert cases["row 1"].find("failure") is None and float(cases["row 1"].get("time")) > 0  # created -> finished

    # every other outcome, as records: uncertain, timed out (still running) and a failed query are errors
    records = [Record(row=1, status="uncertain", error="its answer was lost"), Record(row=2, status="running"),
               Record(task_id="7", status="error", error="no such task"), Record(row=3, status="invalid",
                                                                                 error="duration 7")]
    document = report_junit.render(records)
    schema.validate(document.decode())
    kinds = [(c.find("error") if c.find("error") is not None else c.find("failure")).get("type")
             for c in ET.fromstring(document).iter("testcase")]
    assert kinds == ["uncertain", "timeout", "error", "invalid"]
    with pytest.raises(xmlschema.XMLSchemaValidationError):  # the schema does check: a testcase needs a name
        schema.validate('<testsuites><testsuite name="x" tests="1"><testcase/></testsuite></testsuites>')


def test_github_summary_and_workflow_commands_for_a_batch_with_failures(kling, batch, tmp_path):
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    result = kling("report", "--from", batch, "--github", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 0, result
    text = summary.read_text()
    assert text.startswith("earlier step\n## kling report")  # appended, as GitHub expects
    assert "| succeeded | 3 |" in text and "| failed | 1 |" in text and "| refused | 1 |" in text
    assert "Cost reported 10 units, 1 not reported; estimated from the price table 12.5 units" in text
    assert "risk control" in text and "content security policy" in text
    commands = result.stdout.splitlines()
    assert len(commands) == 2 and all(line.startswith("::error title=kling row ") for line in commands)
    assert "%3A" not in commands[0].split("::")[2]  # only properties escape ':'

    plain = kling("report", "--from", batch, "--github", env={"GITHUB_STEP_SUMMARY": None})
    assert plain.stdout.startswith("## kling report") and plain.stdout.count("::error ") == 2


def test_report_from_the_journal_ids_and_refresh(kling, batch, tmp_path):
    failed = kling("report", "--since", "1d", "--status", "failed", "--junit", tmp_path / "f.xml")
    assert failed.exit_code == 0, failed
    assert "report: 1 task (1 failed)" in failed.stderr
    everything = kling("report", "--since", "2026-01-01", "--github")
    assert "| succeeded | 3 |" in everything.stdout and "| refused | 1 |" in everything.stdout
    task_ids = "\n".join(row["task_id"] for row in csv.DictReader(batch.open()) if row["task_id"])
    refreshed = kling("report", "-", "--refresh", "--junit", tmp_path / "r.xml", input=task_ids)
    assert refreshed.exit_code == 0, refreshed
    assert "report: 4 tasks (3 succeeded, 1 failed)" in refreshed.stderr
    assert kling("report", "--from", batch).exit_code == 2  # nothing to write


def test_a_report_without_the_journal_shows_what_the_manifest_has(kling, batch, tmp_path):
    copy = tmp_path / "elsewhere" / "results.csv"
    copy.parent.mkdir()
    shutil.copy(batch, copy)
    first = Path(next(row["file"] for row in csv.DictReader(batch.open()) if row["file"]))
    first.with_suffix(".jpg").write_bytes(b"\xff\xd8\xff")  # a poster frame someone made beside the video
    result = kling("--no-journal", "report", "--from", copy, "--html", copy.parent / "r.html")
    assert result.exit_code == 0, result
    page = (copy.parent / "r.html").read_text()
    assert page.count('class="card ') == 5 and page.count('src="../videos/') == 3  # relative to the page
    assert "2.5 units · estimate unknown" in page  # the request, and so the estimate, is in the journal only
    assert page.count("poster=") == 1 and f'poster="../videos/{first.stem}.jpg"' in page


def test_bad_report_arguments_are_one_line_and_exit_2(kling, tmp_path):
    assert "nothing to write" in kling("report", "--since", "1d").stderr
    for args, says in ((["--since", "yesterday", "--github"], "expected a span"),
                       (["123", "--since", "1d", "--github"], "--since reads the journal"),
                       (["--since", "1d", "--junit", tmp_path], "is a directory"),
                       (["--from", tmp_path / "missing.csv", "--github"], "file not found")):
        result = kling("report", *args)
        assert result.exit_code == 2 and says in result.stderr and "Traceback" not in result.stderr, result
    empty = kling("report", "--since", "1d", "--junit", tmp_path / "empty.xml")
    assert empty.exit_code == 0 and 'tests="0"' in (tmp_path / "empty.xml").read_text()
