"""A property-based test of the whole command line (Hypothesis), run against the sandbox.

Argument vectors are drawn from kling's own command tree (every command and option, read from Click), with
hostile values (nan, inf, -1, 0, '', '../', '%2e%2e', NUL, very long strings, RTL and emoji text, undecodable
bytes, wrong types) mixed with plausible ones (real task ids, files, URLs), so that examples get past the first
check as well. For every example:

- the exit code is a documented one, never 1 (a bug), and no traceback is printed;
- a failure says something (on stderr, or as a JSON error on stdout with --json);
- no request goes to a path the sandbox does not serve (it records every path asked);
- no file is written outside the working directory.

Left out: `sandbox serve` and `callback listen`, which serve until interrupted. Path options that write
(--download, --output, --out) get relative paths without '..': a user who asks for `-o ../x` gets it.
`-p` is always one of the harness's profiles or a hostile name, never a real provider (no network).
--from-csv names readable CSV files only (see ONLY).

By default 1,000 examples, the same ones every run (derandomized: CI stays reproducible), in about 12 s;
`HYPOTHESIS_PROFILE=fuzz-thorough` draws 10,000 new ones at each run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest
import typer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer._click import types as click_types
from typer.core import TyperArgument, TyperGroup, TyperOption
from typer.models import TyperPath
from typer.testing import CliRunner

from conftest import DATA
from kling_cli.cli import app, main
from kling_cli.errors import ExitCode
from kling_cli.presets import SANDBOX_API_KEY

settings.register_profile("fuzz-ci", max_examples=1000, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("fuzz-thorough", max_examples=10000, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fuzz-ci")

#: serve until interrupted: nothing to fuzz in a test that must end
SKIPPED = {("sandbox", "serve"), ("callback", "listen")}
EXIT_CODES = {int(code) for code in ExitCode} - {int(ExitCode.ERROR)}
DIALECTS = {"k": "kling", "c": "cometapi", "n": "newapi", "a": "acedata", "g": "aigw"}
#: CometAPI does not document motion control: kling asks at the official path and reads the 404 as "not
#: offered" (see the README); that one probe is expected to miss
PROBES = {("POST", "/cometapi/kling/v1/videos/motion-control")}

HOSTILE = ["", " ", "-", "nan", "NaN", "inf", "-inf", "1e300", "-1", "0", "../", "../../etc/passwd", "%2e%2e",
           "..", ".", "a\x00b", "\x00", "x" * 5000, "\u202eevil\u202c", "\U0001f3ac\U0001f98a", "\udcff\udcfe",
           "\x1b[31mred", "line\nbreak", "{id}", "{id.foo}", "[]", "{", "null", "true", "0x10", "1_000",
           "--json", "-", "?a=b#c", "a/b", "a\\b", "javascript:alert(1)", "file:///etc/passwd"]
NUMBERS = ["1", "2", "5", "10", "0.5", "-1", "1e-300", "9" * 40]
PROMPTS = ["a red fox", "a red fox sandbox:fail", "a fox sandbox:policy", "x" * 3000, "\u202ea fox", "\U0001f98a"]
URLS = ["https://x.test/me.png", "https://x.test/dance.mp4", "http://exa mple.com", "ftp://x.test/a",
        "https://x.test/cb", "http://127.0.0.1:1/cb"]
#: values that make sense for one option, besides the hostile ones
PLAUSIBLE = {
    "--kind": ["t2v", "i2v", "motion"], "--dialect": list(DIALECTS.values()), "--mode": ["std", "pro"],
    "--aspect-ratio": ["16:9", "9:16", "1:1"], "--orientation": ["image", "video"],
    "--timeout": ["5s", "1s", "0", "0s", "250ms", "-1s", "1e9h", "9" * 400, "1h"],
    "--interval": ["0.5", "1", "0", "nan", "inf", "1e300", "3600"],
    "--rate": ["10/s", "100/m", "0/s", "nan", "-1/s", "1e300/s", "9" * 40 + "/m"],
    "--shard": ["1/2", "2/2", "0/0", "3/2", "nan/1"], "--name": ["{id}", "{external_id}-{index}", "{id.foo}",
                                                                "{index.real.x}", "{id:>9999}", "../{id}"],
    "--extra": ["sound=on", "a=1", "=x", "x", "k={\"a\":1}"], "--header": ["webhook-id: 1", "x", ": y"],
    "--camera-control": ['{"type":"simple","config":{"zoom":5}}', "{", "[]", "nan"],
    "--callback-url": URLS, "--base-url": URLS, "--image": ["me.png", "missing.png", *URLS[:2]],
    "--image-tail": ["me.png", "missing.png", *URLS[:2]],
    "--video": ["d.mov", *URLS[:2]], "--external-id": ["job-1", "kc-x", "../x", "a b"],
    "--provider": ["kling", "cometapi", "ezmodel", "acedata", "aigw", "custom"], "--access-key": ["AK"],
    "--status": ["succeeded", "failed", "pending", "x"], "--prompt": PROMPTS, "--negative-prompt": PROMPTS,
    "--model": ["kling-v2-6", "kling-v3", "nope"],
}
#: path options: those that are only read may name anything; those that write stay in the working directory
READ_PATHS = ["ids.txt", "ids.ndjson", "manifest.csv", "jobs.csv", "bad.csv", "key.txt", "me.png", "binary.bin",
              "missing.txt", ".", "-", "/etc/hostname", "/nonexistent/x"]
WRITE_PATHS = ["out", "v", "-", "r.csv", "r.ndjson", "ids.txt", "a b/\U0001f3ac", "%2e%2e", "x.json", ""]
WRITERS = {"--download", "--output", "--out", "--state-dir"}
#: options whose hostile values belong to another piece of work: reading the --from-csv file itself (a missing
#: file, a directory, bad bytes or quotes) is issue 8's; the values of its cells are checked here
ONLY = {"--from-csv": ["jobs.csv", "bad.csv"]}
STDIN = ["", "123\n", "../../../admin\n", '{"id": "../x"}\n', "{\n", "\x00\x00\n", "a,b\n1,2\n",
         '{"error": {"code": "x"}}\n']


def _commands(command, path=()):
    if isinstance(command, TyperGroup):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, (*path, name))
    elif path not in SKIPPED:
        yield path, command


ROOT = typer.main.get_command(app)
COMMANDS = list(_commands(ROOT))
ROOT_FLAGS = [p.opts[0] for p in ROOT.params if isinstance(p, TyperOption) and (p.is_flag or p.count)
              and p.opts[0] not in ("--version", "--help")]


def _value(draw, param, name: str, ids: list[str], hostile: bool) -> str:
    if name in ONLY:
        return draw(st.sampled_from(ONLY[name]))
    if name in WRITERS:
        return draw(st.sampled_from(WRITE_PATHS))
    if hostile:
        return draw(st.sampled_from(HOSTILE + PLAUSIBLE.get(name, [])))
    choices = getattr(param.type, "choices", None)
    if choices:
        return draw(st.sampled_from([str(getattr(c, "value", c)) for c in choices]))
    if name in PLAUSIBLE:
        return draw(st.sampled_from(PLAUSIBLE[name]))
    if isinstance(param.type, (click_types.IntParamType, click_types.FloatParamType)):
        return draw(st.sampled_from(NUMBERS))
    if "file" in (param.metavar or "").lower() or isinstance(param.type, TyperPath) or name == "--from":
        return draw(st.sampled_from(READ_PATHS))
    return draw(st.sampled_from(ids + PROMPTS[:2]))


def _argument(draw, param, ids: list[str], hostile: bool) -> str:
    if hostile:
        return draw(st.sampled_from(HOSTILE))
    if param.name == "prompt":
        return draw(st.sampled_from(PROMPTS))
    if param.name == "name":  # a profile's: never one of the harness's, which point at the sandbox
        return draw(st.sampled_from(["p1", "p2", "sandbox"]))
    return draw(st.sampled_from(["-", *ids]))


@st.composite
def argv(draw, ids: list[str]) -> tuple[list[str], str]:
    """A command of the tree with some of its options; at most `budget` values are hostile, so that an
    example often gets past the first check and reaches the provider, the files, the journal."""
    path, command = draw(st.sampled_from(COMMANDS))
    budget = draw(st.integers(0, 3))

    def hostile() -> bool:
        nonlocal budget
        if budget and draw(st.booleans()):
            budget -= 1
            return True
        return False

    args = list(draw(st.lists(st.sampled_from(ROOT_FLAGS), max_size=2, unique=True)))
    args += ["-p", draw(st.sampled_from(["", "nope", "../x", "sandbox"])) if hostile()
             else draw(st.sampled_from(list(DIALECTS))), *path]
    for param in command.params:
        if isinstance(param, TyperArgument):
            if param.nargs == -1:
                count = draw(st.integers(0, 3))
            else:
                count = 1 if draw(st.integers(0, 9)) else 0  # now and then a required argument is missing
            args += [_argument(draw, param, ids, hostile()) for _ in range(count)]
            continue
        name = param.opts[0]
        if name in ("--help", "--profile", "-p") or draw(st.integers(0, 3)):
            continue
        if param.is_flag or param.count:
            args.append(draw(st.sampled_from(param.opts + param.secondary_opts)))
            continue
        for _ in range(draw(st.integers(1, 2)) if param.multiple else 1):
            args += [name, _value(draw, param, name, ids, hostile())]
    stdin = draw(st.sampled_from(STDIN + ["\n".join(ids) + "\n"] * 3))
    return args, stdin


def _snapshot(root: Path, keep: set[Path]) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in keep]
        for name in filenames:
            stat = Path(dirpath, name).stat()
            found[str(Path(dirpath, name))] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture
def work(tmp_path, sandbox, add_profile, monkeypatch):
    """A working directory two levels down (so '../../x' still lands where it is seen), holding the config
    and data dirs, a profile per dialect on the sandbox, a few real tasks and files to name."""
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("KLING_CONFIG_DIR", str(work / "config"))
    monkeypatch.setenv("KLING_DATA_DIR", str(work / "data"))
    monkeypatch.delenv("KLING_DEBUG")  # an unexpected exception must become exit 1, which is what is checked
    for short, dialect in DIALECTS.items():
        add_profile(short, sandbox.base_url(dialect), dialect=dialect, auth="jwt" if dialect == "kling" else "key",
                    default=short == "k")
    headers = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
    ids = [httpx.post(f"{sandbox.base_url('kling')}/v1/videos/text2video", headers=headers,
                      json={"prompt": prompt}).json()["data"]["task_id"] for prompt in ("fox", "fox sandbox:fail")]
    (work / "ids.txt").write_text("\n".join(ids) + "\n# a comment\n")
    (work / "ids.ndjson").write_text("".join(json.dumps({"id": i, "status": "queued", "kind": "t2v"}) + "\n"
                                             for i in ids))
    (work / "manifest.csv").write_text("row,task_id,kind\n" + "".join(f"{n},{i},t2v\n" for n, i in enumerate(ids)))
    (work / "jobs.csv").write_text("prompt,duration\na red fox,5\na blue fox,10\n")
    (work / "bad.csv").write_text("prompt,mode,cfg_scale,callback_url\nx,ultra,nan,ftp://x\n,std,2,\n")
    (work / "key.txt").write_text(SANDBOX_API_KEY + "\n")
    (work / "binary.bin").write_bytes(bytes(range(256)) * 4)
    shutil.copy(DATA / "subject-480.png", work / "me.png")
    shutil.copy(DATA / "dance-12s.mov", work / "d.mov")
    return work, ids


def test_the_whole_command_line_against_hostile_values(work, sandbox, tmp_path):
    workdir, ids = work
    keep = {workdir, tmp_path / "sandbox-state"}
    outside = _snapshot(tmp_path, keep)
    runner = CliRunner()

    @settings(settings.get_profile(PROFILE))
    @given(example=argv(ids))
    def check(example: tuple[list[str], str]) -> None:
        args, stdin = example
        assume(args)
        asked = len(sandbox.asked)
        with runner.isolation(input=stdin.encode("utf-8", "surrogatepass")) as (out, err, _mixed):
            try:
                main(args)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            stdout = out.getvalue().decode("utf-8", "replace")
            stderr = err.getvalue().decode("utf-8", "replace")
        shown = f"kling {' '.join(map(repr, args))}\nexit {code}\nstdout: {stdout[-1500:]}\nstderr: {stderr[-1500:]}"
        assert code in EXIT_CODES, shown
        assert "Traceback" not in stdout + stderr and "this is a bug" not in stdout + stderr, shown
        if code:
            assert stderr.strip() or '"error"' in stdout, shown
        strays = [(m, p) for m, p, served in list(sandbox.asked)[asked:] if not served and (m, p) not in PROBES]
        assert not strays, f"{shown}\nasked paths the sandbox does not serve: {strays}"
        assert _snapshot(tmp_path, keep) == outside, f"{shown}\nwrote outside the working directory"

    check()
