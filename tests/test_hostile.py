"""Hostile and broken input, through the real CLI against the sandbox: ids that would move authenticated
requests, numbers that are not numbers, provider answers that lie, local disks that fill up. Each gets one
line and a documented exit code; nothing is sent that should not be, nothing is written where it should not.

The sandbox is told what to answer through its admin routes (`/__sandbox/task-id`, `/video-url`, `/answer`)
and records every path asked (`Sandbox.asked`), which each test checks.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import sandbox_stats
from kling_cli.providers.kling import KlingDialect

KLING = [sys.executable, "-m", "kling_cli"]
DIALECTS = ["kling", "cometapi", "newapi", "acedata", "aigw"]
#: where each dialect asks about a task: (method, path under the sandbox, a prefix of it?)
QUERIES = {
    "kling": ("GET", "/kling/v1/videos/text2video/", True),
    "cometapi": ("GET", "/cometapi/kling/v1/videos/text2video/", True),
    "newapi": ("GET", "/newapi/kling/v1/videos/text2video/", True),
    "acedata": ("POST", "/acedata/kling/tasks", False),
    "aigw": ("GET", "/aigw/open/aigw/gateway/generationTask", False),
}
HOSTILE_IDS = ["../../../admin/delete-everything", "x/../../../v1/videos/motion-control/123", "", ".", "..",
               "%2e%2e", "a?b=c", "a#b", "a b", "a\\b", "\x1b[31mred", "\u202eevil", "9" * 200]


@pytest.fixture(params=DIALECTS)
def dialect(request, sandbox, add_profile) -> str:
    name = request.param
    add_profile(name, sandbox.base_url(name), dialect=name, auth="jwt" if name == "kling" else "key")
    return name


def admin(sandbox, route: str, **body) -> None:
    httpx.post(f"{sandbox.origin}/__sandbox/{route}", json=body).raise_for_status()


def api_requests(sandbox) -> list[tuple[str, str, bool]]:
    return [asked for asked in sandbox.asked if not asked[1].startswith("/__sandbox")]


def assert_all_served(sandbox) -> None:
    strays = [asked for asked in sandbox.asked if not asked[2]]
    assert not strays, f"requests to paths the sandbox does not serve: {strays}"


def profile_toml(extra: str) -> None:
    config = Path(os.environ["KLING_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + "\n" + extra + "\n")


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


# --- task ids move authenticated requests ---------------------------------------------------------------

@pytest.mark.parametrize("task_id", HOSTILE_IDS)
def test_a_hostile_task_id_is_refused_before_anything_is_sent(kling, kling_profile, sandbox, task_id):
    result = kling("status", task_id, "--kind", "t2v")
    assert result.exit_code == 2, result
    assert "is not a task id" in result.stderr and repr(task_id[:40])[1:-1][:20] in result.stderr
    assert api_requests(sandbox) == []


@pytest.mark.parametrize("source", ["argument", "stdin", "ids file", "ndjson", "manifest csv", "manifest ndjson"])
def test_hostile_ids_from_every_source_are_refused(kling, sandbox, add_profile, tmp_path, source):
    add_profile("gw", sandbox.base_url("newapi"), dialect="newapi", auth="key")  # new-api: the Bearer key case
    bad = "../../../admin"
    texts = {"stdin": f"{bad}\n", "ids file": f"123\n{bad}\n", "ndjson": json.dumps({"id": bad, "status": "queued"}),
             "manifest csv": f"row,task_id,kind\n1,{bad},t2v\n",
             "manifest ndjson": json.dumps({"row": 1, "id": bad, "kind": "t2v"})}
    for command in ("wait", "batch-status", "download"):
        if source == "argument":
            result = kling(command, "123", bad)
        elif source == "stdin":
            result = kling(command, "-", input=texts[source])
        else:
            ids = tmp_path / ("ids.ndjson" if "ndjson" in source else "ids.csv" if "csv" in source else "ids.txt")
            ids.write_text(texts[source])
            result = kling(command, "--from", ids)
        assert result.exit_code == 2, (command, result)
        assert "'../../../admin' is not a task id: it contains '/'" in result.stderr
    assert api_requests(sandbox) == []


def test_a_submit_answered_with_a_hostile_id_is_uncertain_and_never_followed(kling, dialect, sandbox):
    admin(sandbox, "task-id", id="../../../some/path")
    result = kling("submit", "t2v", "a fox", "--wait", "--json")
    assert result.exit_code == 6, result
    error = result.json_lines()[-1]["error"]
    assert error["code"] == "submit_uncertain" and "unusable task id '../../../some/path'" in error["message"]
    assert error["external_id"].startswith("kc-")
    assert_all_served(sandbox)
    assert not any("some" in path for _method, path, _served in sandbox.asked)
    (entry,) = kling("history", "--json").json_lines()
    assert entry["state"] == "uncertain" and entry["task_id"] is None


def test_a_batch_row_answered_with_a_hostile_id_is_uncertain(kling, kling_profile, sandbox, tmp_path):
    admin(sandbox, "task-id", id="..")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt\na fox\n")
    result = kling("submit", "t2v", "--from-csv", jobs, "--wait", "--out", tmp_path / "r.csv")
    assert result.exit_code == 6, result
    assert "row 1 (line 2): uncertain" in result.stderr
    assert "uncertain" in (tmp_path / "r.csv").read_text()
    assert_all_served(sandbox)


def test_a_query_answer_naming_a_hostile_id_is_a_failed_query(kling, kling_profile, sandbox):
    task_id = kling("submit", "t2v", "a fox", "-q").stdout.strip()
    forged = {"code": 0, "message": "SUCCEED", "data": {"task_id": "../../x", "task_status": "succeed",
                                                         "task_result": {"videos": [{"id": "1", "url": "http://x"}]}}}
    admin(sandbox, "answer", method="GET", path=f"/kling/v1/videos/text2video/{task_id}", json=forged, count=100)
    result = kling("wait", task_id)
    assert result.exit_code == 6, result
    assert "unusable task id '../../x'" in result.stderr
    assert_all_served(sandbox)


@pytest.mark.parametrize("task_id", ["..", ".", "a/b", "a?b#c", "100%", "t\u00e2che \U0001f3ac"])
def test_every_id_in_a_path_is_one_encoded_segment(task_id):
    for build in (KlingDialect().build_get, KlingDialect().build_get_by_external_id):
        tail = build("t2v", task_id).path.removeprefix("/v1/videos/text2video/")
        assert "/" not in tail and "?" not in tail and "#" not in tail and tail not in (".", "..")
        assert httpx.URL("http://h/kling/v1/videos/text2video/" + tail).path.startswith("/kling/v1/videos/text2video/")


def test_an_unusual_but_valid_id_reaches_its_endpoint_encoded(kling, kling_profile, sandbox):
    result = kling("status", "t\u00e2che-\U0001f3ac", "--kind", "t2v")
    assert result.exit_code == 5 and "not found" in result.stderr  # asked, and not found
    assert [path for _m, path, _s in api_requests(sandbox)] == ["/kling/v1/videos/text2video/t%C3%A2che-%F0%9F%8E%AC"]
    assert_all_served(sandbox)


# --- crashes on ordinary mistakes ------------------------------------------------------------------------

#: (option, bad value as text, as TOML, or None where the option has no profile default)
BAD_VALUES = [
    ("cfg_scale", "nan", "nan"), ("cfg_scale", "inf", "inf"), ("cfg_scale", "1e300", "1e300"),
    ("cfg_scale", "-1", "-1.0"), ("duration", "99", "99"), ("duration", "0", "0"),
    ("mode", "ultra", '"ultra"'), ("aspect_ratio", "5:4", '"5:4"'),
    ("callback_url", "ftp://x.test/cb", '"ftp://x.test/cb"'),
    ("callback_url", "file:///etc/passwd", '"file:///etc/passwd"'),
    ("callback_url", "http://exa mple.com/cb", '"http://exa mple.com/cb"'),
    ("callback_url", "javascript:alert(1)", '"javascript:alert(1)"'),
    ("external_id", "../x", None),
]


@pytest.mark.parametrize("name,text,toml", BAD_VALUES, ids=[f"{n}={t}" for n, t, _ in BAD_VALUES])
def test_one_set_of_rules_for_flags_csv_cells_and_profile_defaults(kling, kling_profile, sandbox, tmp_path, name,
                                                                     text, toml):
    flag = kling("submit", "t2v", "a fox", f"--{name.replace('_', '-')}", text)
    assert flag.exit_code == 2, flag
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"prompt,{name}\na fox,\"{text}\"\n")
    cell = kling("submit", "t2v", "--from-csv", jobs)
    assert cell.exit_code == 2, cell
    assert f"jobs.csv:2: {name} " in cell.stderr
    if toml is not None:
        profile_toml(f"[profiles.test.defaults]\n{name} = {toml}")
        default = kling("submit", "t2v", "a fox")
        assert default.exit_code == 3, default
        assert f"profiles -> test -> defaults -> {name}:" in default.stderr
    assert api_requests(sandbox) == []
    assert kling("history", "--json").stdout == ""  # not even a pending journal entry


@pytest.mark.parametrize("setting", ["timeout = nan", "timeout = inf", "timeout = 1e300", "timeout = 0",
                                     "retries = -1", "retries = 99", "retries = 1.5"])
def test_profile_numbers_are_finite_and_in_range(kling, kling_profile, sandbox, setting):
    config = Path(os.environ["KLING_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text().replace('[profiles.test]\n', f'[profiles.test]\n{setting}\n'))
    result = kling("submit", "t2v", "a fox")
    assert result.exit_code == 3, result
    assert f"profiles -> test -> {setting.split()[0]}:" in result.stderr
    assert api_requests(sandbox) == [] and kling("history", "--json").stdout == ""


@pytest.mark.parametrize("interval", ["nan", "inf", "1e300", "0.1", "-1"])
def test_interval_must_be_a_finite_number_in_range(kling, kling_profile, sandbox, interval):
    started = time.monotonic()
    assert kling("submit", "t2v", "a fox", "--wait", "--interval", interval).exit_code == 2
    assert kling("wait", "123", "--interval", interval).exit_code == 2
    assert time.monotonic() - started < 10 and api_requests(sandbox) == []


def test_timeout_0_and_an_empty_profile_name_are_usage_errors(kling, kling_profile, sandbox):
    result = kling("submit", "t2v", "a fox", "--wait", "--timeout", "0")
    assert result.exit_code == 2 and "--timeout must be more than 0" in result.stderr
    result = kling("-p", "", "status", "123")
    assert result.exit_code == 2 and "--profile needs a profile name" in result.stderr
    assert kling("submit", "t2v", "a fox", "--timeout", "9" * 400 + "h").exit_code == 2
    assert api_requests(sandbox) == []


@pytest.mark.parametrize("variable,value", [("KLING_SANDBOX_TASK_SECONDS", "nan"),
                                            ("KLING_SANDBOX_TASK_SECONDS", "inf"),
                                            ("KLING_POLL_INTERVAL", "nan"), ("KLING_POLL_INTERVAL", "1" * 400)])
def test_numbers_from_the_environment_are_checked(kling, variable, value):
    result = kling("--profile", "sandbox", "submit", "t2v", "a fox", "--wait", env={variable: value})
    assert result.exit_code == 3 and variable in result.stderr, result


def test_a_sandbox_setting_that_is_not_finite_is_a_config_error(kling):
    config = Path(os.environ["KLING_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.toml").write_text("[sandbox]\ntask_seconds = inf\n")
    result = kling("--profile", "sandbox", "status", "123")
    assert result.exit_code == 3 and "sandbox -> task_seconds: must be a finite number" in result.stderr


@pytest.mark.parametrize("template", ["{id.foo}", "{index.real.x}", "{id[0]}", "{id:>99999}", "{id!r}", "{0}"])
def test_name_templates_take_plain_fields_only(kling, kling_profile, sandbox, tmp_path, template):
    for args in (["wait", "123", "--download", tmp_path / "v"], ["download", "123", "-o", tmp_path / "v"]):
        result = kling(*args, "--name", template)
        assert result.exit_code == 2 and "is not a field" in result.stderr, result
    assert api_requests(sandbox) == [] and not (tmp_path / "v").exists()


def test_an_undecodable_prompt_byte_is_a_usage_error(sandbox):
    env = {**os.environ, "KLING_PROFILE": "sandbox", "KLING_BASE_URL": sandbox.base_url("kling")}
    env.pop("KLING_DEBUG")
    result = subprocess.run([*KLING, "submit", "t2v", b"a fox \xff\xfe"], capture_output=True, env=env,
                            stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 2, result
    assert b"must be valid UTF-8" in result.stderr and b"Traceback" not in result.stderr
    assert api_requests(sandbox) == []


@pytest.mark.parametrize("answer", [
    {"status": 302, "headers": {"Location": "/files/odd.mp4"}, "count": 1000},  # a redirect loop
    {"status": 200, "headers": {"Content-Encoding": "gzip", "Content-Type": "video/mp4"}, "text": "not gzip"},
], ids=["redirect loop", "fake gzip"])
def test_broken_video_answers_are_refused_and_nothing_is_written(kling, kling_profile, sandbox, tmp_path, answer):
    admin(sandbox, "video-url", url=f"{sandbox.origin}/files/odd.mp4")
    admin(sandbox, "answer", method="GET", path="/files/odd.mp4", **answer)
    result = kling("submit", "t2v", "a fox", "--download", tmp_path / "v")
    assert result.exit_code == 5, result
    assert files_under(tmp_path / "v") == []


def test_profile_add_into_a_config_dir_that_cannot_be_written(kling, tmp_path):
    if not Path("/proc/self/fdinfo").is_dir():
        pytest.skip("needs Linux /proc (a directory that even root cannot write to)")
    key = tmp_path / "key"
    key.write_text("sk-test-0123456789abcdef")
    result = kling("profile", "add", "p", "--provider", "ezmodel", "--api-key-file", key,
                   env={"KLING_CONFIG_DIR": "/proc/self/fdinfo/kling"})
    assert result.exit_code == 3, result
    assert "cannot write to /proc/self/fdinfo/kling" in result.stderr


def test_a_full_disk_under_stdout_is_one_line(kling, kling_profile, sandbox):
    task_id = kling("submit", "t2v", "a fox", "--wait", "-q").stdout.split()[0]
    env = {**os.environ, "KLING_DEBUG": ""}
    with open("/dev/full", "wb") as full:
        result = subprocess.run([*KLING, "download", task_id, "-o", "-"], stdout=full, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "cannot write to stdout: No space left on device" in result.stderr and "Traceback" not in result.stderr


def test_a_file_size_limit_while_downloading_keeps_the_part_and_goes_on_with_the_batch(kling, kling_profile,
                                                                                       sandbox, tmp_path):
    limit = 1_000_000  # more than the journal needs, less than the video (resource limits are per process)
    admin(sandbox, "video-url", url=f"{sandbox.origin}/files/big.mp4")
    admin(sandbox, "answer", method="GET", path="/files/big.mp4", count=10,
          text="\x00\x00\x00\x18ftypmp42" + "v" * (2 * limit), headers={"Content-Type": "video/mp4"})
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt\nfox 1\nfox 2\nfox 3\n")

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "KLING_DEBUG": ""}
    result = subprocess.run([*KLING, "submit", "t2v", "--from-csv", str(jobs), "--wait", "--download",
                             str(tmp_path / "v"), "--out", str(tmp_path / "r.csv")], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, env=env, timeout=120, preexec_fn=limited)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("kling: error: cannot write to")]
    assert len(lines) == 3 and all("File too large" in line and str(tmp_path / "v") in line for line in lines)
    assert "Traceback" not in result.stderr
    parts = sorted((tmp_path / "v").glob("*.mp4.part"))
    assert len(parts) == 3 and all(part.stat().st_size > 0 for part in parts)  # kept for a rerun to resume
    rows = (tmp_path / "r.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all(",succeeded," in row for row in rows)
    assert {entry["status"] for entry in kling("history", "--json").json_lines()} == {"succeeded"}


# --- wrong exit codes ---------------------------------------------------------------------------------------

ODD_ANSWERS = {"kling": "", "cometapi": "<html><body>Bad gateway</body></html>", "newapi": "",
               "acedata": "<html>oops</html>", "aigw": "not json"}


def test_one_odd_answer_during_a_wait_is_one_failed_poll(kling, dialect, sandbox):
    method, path, prefix = QUERIES[dialect]
    admin(sandbox, "answer", method=method, path=path, prefix=prefix, text=ODD_ANSWERS[dialect],
          headers={"Content-Type": "text/html"})
    result = kling("submit", "t2v", "a fox", "--wait")
    assert result.exit_code == 0, result
    assert sandbox.scripted == []  # the odd answer was given
    assert_all_served(sandbox)


def test_aigw_refusal_in_an_http_200_is_a_refusal(kling, sandbox, add_profile, tmp_path):
    add_profile("gw", sandbox.base_url("aigw"), dialect="aigw", auth="key")
    refusal = {"code": 1003, "message": "insufficient points", "data": None}
    admin(sandbox, "answer", method="POST", path="/aigw/open/aigw/gateway/generations", json=refusal, count=2)
    result = kling("submit", "t2v", "a fox", "--json")
    assert result.exit_code == 5, result
    assert result.json_lines()[0]["error"]["code"] == "insufficient_balance"
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt\na fox\n")
    batch = kling("submit", "t2v", "--from-csv", jobs, "--out", tmp_path / "r.csv")
    assert batch.exit_code == 8 and "row 1 (line 2): refused" in batch.stderr
    assert {entry["state"] for entry in kling("history", "--json").json_lines()} == {"refused"}


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://x.test/v.mp4", "data:video/mp4;base64,AAAAGGZ0eXA=",
                                 "javascript:alert(1)", "redirect"])
def test_a_result_url_that_is_not_http_is_not_fetched(kling, kling_profile, sandbox, tmp_path, url):
    if url == "redirect":
        admin(sandbox, "answer", method="GET", path="/files/odd.mp4", status=302,
              headers={"Location": "ftp://x.test/v.mp4"})
        url = f"{sandbox.origin}/files/odd.mp4"
    admin(sandbox, "video-url", url=url)
    result = kling("submit", "t2v", "a fox", "--download", tmp_path / "v")
    assert result.exit_code == 5, result
    assert "no usable video URL" in result.stderr and "run the same command again" not in result.stderr
    assert files_under(tmp_path / "v") == []


@pytest.mark.parametrize("profile", ["test", "sandbox"])
def test_a_base_url_that_is_not_http_is_a_config_error_at_once(kling, kling_profile, sandbox, profile):
    started = time.monotonic()
    result = kling("--profile", profile, "submit", "t2v", "a fox", "-vv", env={"KLING_BASE_URL": "ftp://x.test/k"})
    assert result.exit_code == 3, result
    assert "KLING_BASE_URL must be an http:// or https:// URL" in result.stderr and "retrying" not in result.stderr
    assert time.monotonic() - started < 5 and api_requests(sandbox) == []



@pytest.mark.parametrize("url", ["ftp://fox:s3cret-pw@x.test/k", "http://fox:s3cret-pw@x.test:99999/k",
                                 "http://fox:s3cret-pw@x.test/k b"])
def test_a_bad_base_url_is_quoted_without_its_password(kling, kling_profile, url):
    result = kling("submit", "t2v", "a fox", env={"KLING_BASE_URL": url})
    assert result.exit_code == 3, result
    assert "KLING_BASE_URL must be" in result.stderr and "fox:****@x.test" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_verbose_shows_the_base_url_without_its_password(kling, kling_profile, sandbox):
    origin = sandbox.base_url("kling").replace("http://", "http://fox:s3cret-pw@")
    result = kling("status", "1", "-v", env={"KLING_BASE_URL": origin})
    assert "base URL http://fox:****@127.0.0.1" in result.stderr, result
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_an_unreachable_base_url_is_named_without_its_password(kling, kling_profile):
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = kling("status", "1", "-vv", env={"KLING_BASE_URL": f"http://fox:s3cret-pw@127.0.0.1:{port}"})
    assert result.exit_code == 6, result  # provider unavailable
    assert f"cannot reach 127.0.0.1:{port}" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout

# --- what is said ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--api-key-file", "--secret-key-file", "--webhook-secret-file"])
def test_a_secret_file_option_never_repeats_its_value(kling, option):
    pasted = "sk-live-0123456789abcdefSECRET"
    args = ["profile", "add", "p", "--provider", "kling", option, pasted]
    if option == "--secret-key-file":
        args += ["--access-key", "AK"]
    result = kling(*args, "--json")
    assert result.exit_code == 2, result
    assert "file not found" in result.stdout
    assert pasted not in result.stdout + result.stderr


def test_a_failing_official_submit_backs_off_and_says_what_is_known(kling, kling_profile, sandbox):
    started = time.monotonic()
    result = kling("submit", "t2v", "a fox sandbox:500x3", "--json", "-vv")
    elapsed = time.monotonic() - started
    assert result.exit_code == 6, result
    error = result.json_lines()[0]["error"]
    assert "nothing was created" in error["message"] and "nothing was paid" in error["message"]
    assert "may have reached" not in error["message"] and error["external_id"] in error["message"]
    assert sandbox_stats(sandbox)["counters"]["kling:submit_attempts"] == 3
    assert elapsed >= 1.4  # the 0.5 s and 1 s backoffs before the two resends (without: 0.2 s in all)
    assert result.stderr.count("sending the submit again in") == 2
    (entry,) = kling("history", "--json").json_lines()
    assert entry["state"] == "refused"  # nothing was created


def test_a_lost_answer_names_the_external_id_on_every_dialect(kling, dialect, sandbox):
    lookups = {"kling": "/kling/v1/videos/text2video/kc-", "cometapi": "/cometapi/kling/v1/videos/text2video/kc-"}
    if dialect in lookups:  # the lookup by external id fails too, so the answer stays lost
        admin(sandbox, "answer", method="GET", path=lookups[dialect], prefix=True, status=503,
              json={"code": 5001, "message": "unavailable"}, count=100)
    result = kling("submit", "t2v", "a fox sandbox:lost", "--json")
    assert result.exit_code == 6, result
    error = result.json_lines()[0]["error"]
    assert error["code"] == "submit_uncertain" and error["external_id"].startswith("kc-")
    assert error["external_id"] in error["hint"]


# --- the suite itself ------------------------------------------------------------------------------------------

def test_the_interrupting_tests_pass_when_the_suite_runs_as_a_background_job(tmp_path):
    """Started with `&` from a script or under nohup, pytest ignores SIGINT: the tests that interrupt a child
    must still be able to (see conftest.default_sigint)."""
    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    tests = Path(__file__).parent
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tests),
                             f"{tests / 'test_process.py'}::test_ctrl_c_exits_130_and_names_the_running_task",
                             f"{tests / 'test_process.py'}::test_sandbox_serve_for_ci"],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, cwd=tmp_path,
                            preexec_fn=ignore_sigint)
    assert result.returncode == 0, result.stdout[-3000:]
