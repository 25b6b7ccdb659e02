"""What a person sees (issue 14): stdout that stays whole on any terminal, progress on every terminal,
rows a person can tell apart, hints that work when pasted, one line format per command, and the rest.

Terminal tests run `kling` as a process on real pseudo-terminals (stdlib `pty`): stdout and stderr each on
a terminal of their own (so that each stream can be read apart), or both on one.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import tty
from pathlib import Path

import httpx
import pytest

from conftest import result_file
from kling_cli.sandbox.core import ASSET

KLING = [sys.executable, "-m", "kling_cli"]


def _terminal(columns: int) -> tuple[int, int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    tty.setraw(slave)  # the bytes as the program wrote them: no \n -> \r\n on the way
    return master, slave


def in_terminal(*args: str, columns: int = 80, term: str = "xterm-256color", stdout: str = "tty",
                stderr: str = "tty") -> tuple[int, bytes, bytes]:
    """Run kling with stdout and stderr each on a terminal of `columns` columns ("tty"), on a pipe ("pipe"),
    or stderr on stdout's terminal ("shared"); return the exit code and the bytes of each stream."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = term
    readers: dict[int, str] = {}
    ends: dict[str, int] = {}
    for name, how in (("stdout", stdout), ("stderr", stderr)):
        if how == "tty":
            master, ends[name] = _terminal(columns)
        elif how == "pipe":
            master, ends[name] = os.pipe()
        else:
            ends[name] = ends["stdout"]
            continue
        readers[master] = name
    proc = subprocess.Popen([*KLING, *args], stdin=subprocess.DEVNULL, stdout=ends["stdout"], stderr=ends["stderr"],
                            env=env)
    for end in set(ends.values()):
        os.close(end)
    got = {"stdout": b"", "stderr": b""}
    while readers:
        ready, _, _ = select.select(list(readers), [], [], 60)
        assert ready, "kling printed nothing for 60 s"
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a terminal whose other end is closed
                chunk = b""
            if chunk:
                got[readers[fd]] += chunk
            else:
                os.close(fd)
                del readers[fd]
    return proc.wait(timeout=30), got["stdout"], got["stderr"]


def plain(*args: str) -> subprocess.CompletedProcess[bytes]:
    """The same command with stdout and stderr on pipes: the reference a terminal run must match."""
    return subprocess.run([*KLING, *args], capture_output=True, stdin=subprocess.DEVNULL, env=os.environ, timeout=60)


def submit(kling, prompt: str) -> str:
    result = kling("submit", "t2v", prompt, "-q")
    assert result.exit_code == 0, result
    return result.stdout.strip()


def write_csv(path: Path, prompts: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt"])
        writer.writerows([p] for p in prompts)
    return path


# --- 2 and 3: stdout whole on any terminal, progress on every terminal -----------------------------------

LONG = "a red fox running through fresh snow under a pale winter sun, wide shot"


@pytest.mark.parametrize("columns,term", [(60, "xterm-256color"), (200, "xterm-256color"), (120, "dumb")])
def test_stdout_is_byte_identical_on_a_terminal_and_progress_shows_on_stderr(kling, kling_profile, tmp_path,
                                                                              columns, term):
    ids = [submit(kling, f"{LONG} {n}") for n in range(3)]
    code, out, err = in_terminal("wait", *ids, columns=columns, term=term)
    assert code == 0, err[-2000:]
    reference = plain("wait", *ids)
    assert sorted(out.splitlines()) == sorted(reference.stdout.splitlines())
    assert len(out.splitlines()) == 3 and all(line.count(b"\t") == 3 for line in out.splitlines())
    if term == "dumb":  # a terminal that cannot redraw: the plain per-change lines, no escape sequence
        assert b"\x1b" not in err
        for task_id in ids:
            assert re.search(rf"task {task_id} \(a red fox running[^)]*\): succeeded".encode(), err)
    else:  # the live display: rows with their labels, the overall line
        assert b"\x1b[" in err and b"done" in err and b"a red fo" in err  # the label, cut to fit 60 columns
    jobs = write_csv(tmp_path / "jobs.csv", [f"{LONG} row {n}" for n in range(3)])
    code, out, err = in_terminal("submit", "t2v", "--from-csv", str(jobs), "--wait", columns=columns, term=term)
    assert code == 0, err[-2000:]
    rerun = plain("submit", "t2v", "--from-csv", str(jobs), "--wait")  # from the journal: the same tasks
    assert rerun.returncode == 0 and sorted(out.splitlines()) == sorted(rerun.stdout.splitlines())
    assert all(line.count(b"\t") == 4 for line in out.splitlines())
    assert b"3 rows: 3 submitted now" in err
    code, out, _err = in_terminal("batch-status", *ids, columns=columns, term=term)  # no padded table
    assert code == 0 and without_age(out) == without_age(plain("batch-status", *ids).stdout)


def without_age(stdout: bytes) -> list[list[bytes]]:
    """batch-status lines but their AGE column, which moves with the clock."""
    return [cells[:4] + cells[5:] for cells in (line.split(b"\t") for line in stdout.splitlines())]


def test_stdout_lines_stay_whole_on_the_terminal_the_live_display_shares(kling, kling_profile):
    ids = [submit(kling, f"{LONG} {n}") for n in range(3)]
    code, both, _ = in_terminal("wait", *ids, columns=60, stderr="shared")
    assert code == 0
    for line in plain("wait", *ids).stdout.splitlines():
        assert line + b"\n" in both  # tabs kept, no newline inserted, nothing of the display inside


def test_a_one_task_wait_redirected_leaves_its_outcome_on_screen(kling, kling_profile):
    task_id = submit(kling, "a fox")
    code, out, err = in_terminal("wait", task_id, columns=80, stdout="pipe")
    assert code == 0 and out.startswith(task_id.encode() + b"\tsucceeded\t")
    # the live display is gone; what stays on screen is its last line
    assert err.rstrip().endswith(b"succeeded") or re.search(rf"task {task_id} \(a fox\): succeeded".encode(), err)
    assert re.search(rf"task {task_id} \(a fox\): succeeded \([\d.]+s\)\r?\n$".encode(), err)


# --- 1: hints that work when pasted; profile and dialect from the journal -------------------------------

def test_a_submit_on_the_sandbox_suggests_a_command_that_works_when_pasted(kling):
    result = kling("--profile", "sandbox", "--dialect", "acedata", "submit", "t2v", "a fox")
    assert result.exit_code == 0
    task_id = result.stdout.strip()
    suggested = f"kling --profile sandbox --dialect acedata wait {task_id}"
    assert f"follow it with: `{suggested}`" in result.stderr
    assert kling(*suggested.split()[1:]).exit_code == 0
    # tasks this machine submitted: the journal knows their profile and dialect
    bare = kling("wait", task_id, "-v")
    assert bare.exit_code == 0 and bare.stdout.startswith(f"{task_id}\tsucceeded\t")
    assert "provider sandbox, dialect acedata (from the journal" in bare.stderr
    assert kling("--profile", "sandbox", "status", task_id).exit_code == 0  # the dialect from the journal
    assert kling("download", task_id).exit_code == 0
    # without the journal, the suggestion still names what this shell would not pick by itself
    off = kling("--profile", "sandbox", "--dialect", "newapi", "submit", "t2v", "a fox", "--no-journal")
    assert f"`kling --profile sandbox --dialect newapi wait {off.stdout.strip()}`" in off.stderr


def test_deadline_and_early_download_hints_name_the_profile(kling):
    slow = kling("--profile", "sandbox", "--dialect", "newapi", "submit", "t2v", "fox sandbox:slow", "-q")
    task_id = slow.stdout.strip()
    late = kling("--profile", "sandbox", "--dialect", "newapi", "wait", task_id, "--timeout", "0")
    assert late.exit_code == 7
    assert f"it keeps running remotely; wait again with `kling --profile sandbox --dialect newapi wait {task_id}`" \
        in late.stderr  # one task: "it", not "they"
    early = kling("--profile", "sandbox", "--dialect", "newapi", "download", task_id, "-o", "my videos")
    assert early.exit_code == 2
    assert f"`kling --profile sandbox --dialect newapi wait {task_id} --download 'my videos'`" in early.stderr


def test_tasks_of_different_profiles_are_not_mixed(kling, kling_profile):
    mine = submit(kling, "a fox")
    sandboxed = kling("--profile", "sandbox", "submit", "t2v", "a fox", "-q").stdout.strip()
    mixed = kling("wait", mine, sandboxed)
    assert mixed.exit_code == 2 and "submitted with different profiles" in mixed.stderr
    assert kling("wait", sandboxed).exit_code == 0  # the journal picks the sandbox over the default profile


# --- 4 and 10: labels, and one line format per command and mode ----------------------------------------

def test_rows_are_labelled_and_every_outcome_has_the_same_line(kling, kling_profile, tmp_path):
    jobs = write_csv(tmp_path / "jobs.csv", ["a red fox\tin the snow", "a whale sandbox:fail"])
    results = tmp_path / "results.csv"
    run = kling("submit", "t2v", "--from-csv", jobs, "--out", results, "--download", tmp_path / "v")
    assert run.exit_code == 8
    good, bad = sorted(line.split("\t") for line in run.stdout.splitlines())
    assert good[0] == "1" and good[2] == "succeeded" and Path(good[3]).read_bytes() == ASSET.read_bytes()
    assert good[4] == "a red fox in the snow"  # the tab of the cell is not a column
    assert bad[0] == "2" and bad[2] == "failed" and bad[3].startswith("Failure to pass") and bad[4] == "a whale " \
        "sandbox:fail"
    ids = [good[1], bad[1]]
    waited = kling("wait", "--from", results, "--download", tmp_path / "w")
    lines = {line.split("\t")[0]: line.split("\t") for line in waited.stdout.splitlines()}
    assert lines[ids[0]][1:] == ["succeeded", str(tmp_path / "w" / f"{ids[0]}.mp4"), "row 1: a red fox in the snow"]
    assert lines[ids[1]][1:3] == ["failed", bad[3]] and lines[ids[1]][3] == "row 2: a whale sandbox:fail"
    assert f"task {ids[0]} (row 1: a red fox in the snow): succeeded" in waited.stderr
    (as_json,) = kling("wait", ids[0], "--json").json_lines()
    assert "files" not in as_json  # only a mode that downloads lists files
    # another machine, no journal: the manifest's prompt_start labels the rows
    unjournaled = kling("wait", "--from", results, "--no-journal")
    assert {line.split("\t")[3] for line in unjournaled.stdout.splitlines()} == {
        "row 1: a red fox in the snow", "row 2: a whale sandbox:fail"}
    assert {r["prompt_start"] for r in csv.DictReader(results.open())} == {"a red fox in the snow",
                                                                            "a whale sandbox:fail"}


def test_the_live_view_shows_labels_and_failed_rows_in_red():
    from rich.console import Console

    from kling_cli.models import Task, TaskError, TaskStatus
    from kling_cli.progress import View
    from kling_cli.render import Output

    view = View(Output(), ["1", "2"], labels={"1": "row 1: a red fox", "2": "row 2: a whale"})
    view.update(Task("1", "t2v", TaskStatus.SUCCEEDED, progress=1.0))
    view.update(Task("2", "t2v", TaskStatus.FAILED, progress=1.0, error=TaskError(None, "policy")))  # new-api: 100%
    console = Console(width=100, force_terminal=True, color_system="standard")
    lines = console.render_lines(view._renderable(3.0), pad=False)
    rows = {"".join(s.text for s in line).split()[0]: line for line in lines[:2]}
    assert "row 1: a red fox" in "".join(s.text for s in rows["1"])

    def bar_colours(line) -> set[str]:
        return {s.style.color.name for s in line if "━" in s.text and s.style and s.style.color}

    assert bar_colours(rows["2"]) == {"red"}  # a failed task's bar is never full and green
    assert "red" not in bar_colours(rows["1"])


# --- 5: a dry run says what a run would send -----------------------------------------------------------

def test_dry_run_reads_the_journal(kling, sandbox, add_profile, tmp_path):
    add_profile("ez", sandbox.base_url("newapi"), dialect="newapi", auth="key")
    jobs = write_csv(tmp_path / "jobs.csv", ["fox 1", "fox 2", "fox 3 sandbox:lostx1"])
    first = kling("submit", "t2v", "--from-csv", jobs, "--wait")
    assert first.exit_code == 6  # the lost row is uncertain
    write_csv(jobs, ["fox 1", "fox 2", "fox 3 sandbox:lostx1", "fox 4"])
    slow = kling("submit", "t2v", "fox 5 sandbox:slow", "-q").stdout.strip()
    write_csv(jobs, ["fox 1", "fox 2", "fox 3 sandbox:lostx1", "fox 4", "fox 5 sandbox:slow"])
    dry = kling("submit", "t2v", "--from-csv", jobs, "--dry-run")
    assert dry.exit_code == 0
    assert ("dry run: 2 of 5 rows would be submitted; 2 already submitted and finished, 0 in flight (followed, "
            "not sent again), 1 uncertain (not sent again without --resubmit-uncertain)") in dry.stderr
    assert [row["rerun"] for row in dry.json_lines()] == ["done", "done", "uncertain", "new", "new"]
    # a row submitted by a run still in flight (the same identity as a batch row) is followed, not sent
    batch = write_csv(tmp_path / "slow.csv", ["fox 6 sandbox:slow"])
    assert kling("submit", "t2v", "--from-csv", batch).exit_code == 0  # submitted, not waited on
    again = kling("submit", "t2v", "--from-csv", batch, "-n")
    assert again.json_lines()[0]["rerun"] == "in_flight" and "0 of 1 rows would be submitted" in again.stderr
    assert kling("wait", slow).exit_code == 0


# --- 6: required options -------------------------------------------------------------------------------

def test_motion_marks_its_required_options_and_names_every_missing_one(kling, kling_profile):
    help_text = " ".join(kling("submit", "motion", "--help").stdout.split())
    for option in ("--image", "--video"):
        assert re.search(rf"{option} PATH\|URL [^[]*\[required\]", help_text)
    assert help_text.count("[required unless the profile has a default]") == 2
    result = kling("submit", "motion", "--prompt", "dance")
    assert result.exit_code == 2
    assert "--image, --video, --orientation and --mode are required" in result.stderr


# --- 8: time values ------------------------------------------------------------------------------------

def test_timeout_0_checks_once_and_compound_durations(kling, kling_profile):
    task_id = submit(kling, "a fox")
    assert kling("wait", task_id).exit_code == 0
    done = kling("wait", task_id, "--timeout", "0")
    assert done.exit_code == 0 and done.stdout.startswith(f"{task_id}\tsucceeded\t")
    assert kling("wait", task_id, "--timeout", "1h30m").exit_code == 0


# --- 11: the sidecar says what was asked for -----------------------------------------------------------

def test_the_sidecar_request_comes_from_the_journal(kling, kling_profile, tmp_path):
    task_id = submit(kling, "a fox on a frozen lake")
    got = kling("wait", task_id, "--download", tmp_path)
    assert got.exit_code == 0, got
    sidecar = json.loads((tmp_path / f"{task_id}.json").read_text())
    assert sidecar["request"]["prompt"] == "a fox on a frozen lake"
    assert result_file(got.stdout) == tmp_path / f"{task_id}.mp4"


# --- 12: the smaller things ----------------------------------------------------------------------------

def test_callback_verify_with_an_empty_body_says_so(kling):
    result = kling("--profile", "sandbox", "callback", "verify", input="")
    assert result.exit_code == 2 and "the callback body on stdin is empty" in result.stderr
    assert "key" not in result.stderr.split("\n")[0]


def test_unknown_dialect_is_a_usage_error(kling):
    result = kling("--profile", "sandbox", "--dialect", "foo", "status", "1")
    assert result.exit_code == 2 and "unknown dialect" in result.stderr


def test_n_means_dry_run_only(kling):
    assert kling("history", "-n", "5").exit_code == 2
    assert "-n, --dry-run" in kling("submit", "t2v", "--help").stdout


def test_profile_list_names_the_variable_a_key_comes_from(kling):
    assert kling("profile", "add", "ace", "--provider", "acedata", "--api-key-env", "ACE_TOKEN").exit_code == 0
    unset = kling("profile", "list")
    assert "none ($ACE_TOKEN is not set)" in unset.stdout and "(none stored)" not in unset.stdout
    listed = kling("profile", "list", env={"ACE_TOKEN": "token-0123456789abcdef"})
    assert "API key ****cdef from $ACE_TOKEN" in listed.stdout and "0123456789" not in listed.stdout


def test_an_unquoted_prompt_gets_a_tip_to_quote_it(kling):
    result = kling("--profile", "sandbox", "submit", "t2v", "a", "red", "fox", "--wait")
    assert result.exit_code == 2
    assert "a prompt of several words goes in quotes: `kling --profile sandbox submit t2v 'a red fox' --wait`" \
        in result.stderr  # run as printed at the end of the test, like every suggestion


def test_sandbox_urls_say_they_die_with_the_process(kling):
    result = kling("--profile", "sandbox", "submit", "t2v", "a fox", "--wait")
    url = result.stdout.split("\t")[2]
    assert url.startswith("http://127.0.0.1:")
    assert "the video URLs above are served by this kling process and stop working when it exits" in result.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
    assert "stop working" not in kling("--profile", "sandbox", "submit", "t2v", "a fox", "-q").stderr
