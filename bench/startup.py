#!/usr/bin/env python3
"""Start-up benchmark for `kling`: whole-process medians against references timed in the same run.

Targets (from the issue):

* `kling --help`        within 1.3x of `python -c "import typer"`
* `kling status ID`     within 1.2x of `python -c "import typer, httpx; httpx.Client()"`,
  against a local server (the project's own sandbox, started in a thread of this script).

Run it with the interpreter of the virtualenv kling is installed in, never through a pyenv shim (the
shim adds ~85 ms to every process it starts):

    /path/to/venv/bin/python bench/startup.py                 # 20 timed runs of each command
    /path/to/venv/bin/python bench/startup.py --runs 50 --json
    /path/to/venv/bin/python bench/startup.py --importtime    # also: where the import time goes

Every command is a subprocess timed with time.perf_counter() around subprocess.run(); the commands are
interleaved (one of each per round) so that drift in machine load hits them alike; a few warm-up rounds
are not counted. No dependencies beyond kling-cli's own.

Bytecode (--bytecode):
  warm   (default) PYTHONDONTWRITEBYTECODE is removed from the children's environment and the warm-up
         rounds write kling_cli's .pyc files (into its __pycache__ directories, as any normal run would),
         so the timed runs load bytecode, as after a regular `pip install`.
  cold   kling_cli is compiled from source on every run, as with an editable install under
         PYTHONDONTWRITEBYTECODE=1; every other module (stdlib, typer, httpx) still loads bytecode.
         Done with a private PYTHONPYCACHEPREFIX from which kling_cli's entries are removed; nothing is
         written next to the sources.
  as-is  the environment is passed through unchanged; the report says whether kling_cli's .pyc exist.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HELP_TARGET = 1.3
STATUS_TARGET = 1.2
REF_TYPER = "import typer"
REF_HTTPX = "import typer, httpx; httpx.Client()"
SANDBOX_KEY = "sandbox-api-key"
#: children run in an empty directory: `python -c` puts the cwd first on sys.path, and from a checkout
#: that would import ./kling_cli instead of the installed package (and slow every other import a little)
WORKDIR: Path | None = None


@dataclass
class Bench:
    name: str
    argv: list[str]
    ref: str | None = None  # name of the reference this one is compared with
    target: float | None = None
    times: list[float] = field(default_factory=list)

    def stats(self) -> dict[str, float]:
        ms = [t * 1000 for t in self.times]
        return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
                "stdev_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0}


def fail(message: str) -> None:
    sys.stderr.write(f"startup.py: {message}\n")
    raise SystemExit(2)


# -- interpreter, console script, environment ----------------------------------------------------

def probe(python: str, env: dict[str, str], cwd: Path) -> dict:
    code = ("import json, sys, importlib.metadata as m, kling_cli\n"
            "v = lambda d: m.version(d)\n"
            "print(json.dumps({'version': sys.version.split()[0], 'cache_tag': sys.implementation.cache_tag,"
            " 'prefix': sys.prefix, 'base_prefix': sys.base_prefix, 'package': kling_cli.__file__,"
            " 'kling_cli': kling_cli.__version__, 'typer': v('typer'), 'httpx': v('httpx')}))")
    proc = subprocess.run([python, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{python} cannot import kling_cli (run this script with the venv's own python):\n{proc.stderr}")
    return json.loads(proc.stdout)


def pyc_files(package_dir: Path) -> set[Path]:
    """The .pyc files under the package that are up to date with their source (a stale one is recompiled)."""
    fresh = set()
    for pyc in package_dir.rglob("__pycache__/*.pyc"):
        source = pyc.parent.parent / (pyc.name.split(".")[0] + ".py")
        try:
            header, st = pyc.read_bytes()[:16], source.stat()
        except OSError:
            continue
        flags, mtime, size = (int.from_bytes(header[i:i + 4], "little") for i in (4, 8, 12))
        if flags == 0 and mtime == int(st.st_mtime) & 0xFFFFFFFF and size == st.st_size & 0xFFFFFFFF:
            fresh.add(pyc)
    return fresh


def module_sources(package_dir: Path, modules: list[str]) -> list[Path]:
    root = package_dir.parent
    out = []
    for name in modules:
        base = root.joinpath(*name.split("."))
        out.append(base / "__init__.py" if (base / "__init__.py").exists() else base.with_suffix(".py"))
    return out


def pyc_count(sources: list[Path], cache_tag: str, existing: set[Path]) -> int:
    return sum((p.parent / "__pycache__" / f"{p.stem}.{cache_tag}.pyc") in existing for p in sources)


def tree_state(package_dir: Path) -> str | None:
    """`abc1234` or `abc1234+dirty` for a source checkout (the figures belong to that code), else None."""
    root = package_dir.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", package_dir.name],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def child_env(base: dict[str, str], config_dir: Path, api_key: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("KLING_")}  # no stray profile/base URL/key
    env.update(KLING_CONFIG_DIR=str(config_dir), KLING_DATA_DIR=str(config_dir), KLING_API_KEY=api_key,
               KLING_NO_INPUT="1")
    return env


# -- the local server ----------------------------------------------------------------------------

def start_sandbox(state_dir: Path):
    try:
        import httpx

        from kling_cli.sandbox import new_sandbox
    except ImportError as exc:
        fail(f"the sandbox runs in this process, which cannot import it ({exc}): run this script with the "
             "python of the venv kling is installed in")

    sandbox = new_sandbox(state_dir, task_seconds=0).start()
    base = sandbox.base_url("kling")
    reply = httpx.post(f"{base}/v1/videos/text2video", headers={"Authorization": f"Bearer {SANDBOX_KEY}"},
                       json={"prompt": "bench"}, timeout=10)
    reply.raise_for_status()
    return sandbox, base, reply.json()["data"]["task_id"]


def write_config(config_dir: Path, base_url: str) -> None:
    (config_dir / "config.toml").write_text(
        'default_profile = "bench"\n\n[profiles.bench]\nprovider = "custom"\ndialect = "kling"\n'
        f'base_url = "{base_url}"\n')


# -- timing --------------------------------------------------------------------------------------

def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=WORKDIR, stdin=subprocess.DEVNULL, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        fail(f"`{' '.join(argv)}` exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    return elapsed, proc


def measure(benches: list[Bench], env: dict[str, str], runs: int, warmup: int) -> None:
    for _ in range(warmup):
        for bench in benches:
            run_once(bench.argv, env)
    for _ in range(runs):
        for bench in benches:
            bench.times.append(run_once(bench.argv, env)[0])


def prepare_cold(benches: list[Bench], env: dict[str, str], package_dir: Path, prefix: Path) -> Path:
    """Fill a private pycache prefix with everything but kling_cli, then forbid writing to it."""
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    for bench in benches:
        run_once(bench.argv, env)
    mirror = prefix / package_dir.resolve().relative_to(package_dir.resolve().anchor)
    shutil.rmtree(mirror, ignore_errors=True)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return mirror


# -- import-time profile -------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def importtime(argv: list[str], env: dict[str, str], repeat: int) -> list[tuple[str, int, float, float]]:
    """(module, depth, self ms, cumulative ms), medians over `repeat` runs, in first-run order."""
    samples: dict[tuple[str, int], list[tuple[int, int]]] = {}
    env = dict(env, PYTHONPROFILEIMPORTTIME="1")
    for _ in range(repeat):
        _, proc = run_once(argv, env)
        for line in proc.stderr.decode(errors="replace").splitlines():
            match = _IMPORT_LINE.match(line)
            if match:
                key = (match.group(4), (len(match.group(3)) - 1) // 2)
                samples.setdefault(key, []).append((int(match.group(1)), int(match.group(2))))
    return [(name, depth, statistics.median(s for s, _ in v) / 1000, statistics.median(c for _, c in v) / 1000)
            for (name, depth), v in samples.items()]


def print_importtime(title: str, rows: list[tuple[str, int, float, float]], top: int) -> None:
    roots = sum(cum for _, depth, _, cum in rows if depth == 0)
    print(f"\n{title}\n  top-level imports total {roots:.1f} ms (median per module; -X importtime inflates a little)")
    print(f"  {'cumul ms':>8}  {'self ms':>7}  module (indent = nesting)")
    for name, depth, self_ms, cum in sorted(rows, key=lambda r: -r[3])[:top]:
        print(f"  {cum:8.1f}  {self_ms:7.1f}  {'  ' * depth}{name}")
    own = sorted((r for r in rows if r[0].split(".")[0] == "kling_cli"), key=lambda r: -r[2])
    print(f"  kling_cli's own module bodies: {sum(r[2] for r in own):.1f} ms self in total; heaviest: "
          + ", ".join(f"{name} {self_ms:.1f}" for name, _, self_ms, _ in own[:6]))


# -- main ----------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each command (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter of the venv under test (default: the one running this script)")
    parser.add_argument("--kling", help="the `kling` console script (default: next to --python)")
    parser.add_argument("--bytecode", choices=("warm", "cold", "as-is"), default="warm",
                        help="how kling_cli's bytecode is handled (see the module docstring; default warm)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--importtime", action="store_true",
                        help="also print the heaviest imports of `from kling_cli.cli import main` and `kling status`")
    parser.add_argument("--top", type=int, default=25, help="rows per --importtime listing (default 25)")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0:
        fail("--runs must be >= 1 and --warmup >= 0")

    python = args.python  # not resolved: a venv's bin/python is a symlink that must stay one
    if "/shims/" in python:
        fail(f"{python} is a pyenv shim (adds ~85 ms per process); pass the venv's bin/python")
    kling = args.kling or str(Path(python).parent / "kling")
    if not os.access(kling, os.X_OK):
        fail(f"no `kling` console script at {kling}: run this script with the python of the venv kling is "
             "installed in (e.g. venv/bin/python bench/startup.py), or pass --python/--kling")

    with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
        tmp_path = Path(tmp)
        config_dir = tmp_path / "config"
        config_dir.mkdir()
        global WORKDIR
        WORKDIR = tmp_path / "cwd"
        WORKDIR.mkdir()
        env = child_env(dict(os.environ), config_dir, SANDBOX_KEY)
        if args.bytecode == "warm":
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        info = probe(python, env, WORKDIR)
        package_dir = Path(info["package"]).parent
        editable = "site-packages" not in package_dir.parts
        pyc_before = pyc_files(package_dir)

        sandbox, base_url, task_id = start_sandbox(tmp_path / "sandbox")
        try:
            write_config(config_dir, base_url)
            check = subprocess.run([kling, "status", task_id, "--kind", "t2v", "--json"],
                                   env=dict(env, PYTHONPROFILEIMPORTTIME="1"), cwd=WORKDIR,
                                   capture_output=True, text=True)
            used = sorted({m.group(4) for m in map(_IMPORT_LINE.match, check.stderr.splitlines())
                           if m and m.group(4).split(".")[0] == "kling_cli"})
            sources = module_sources(package_dir, used)
            shown = json.loads(check.stdout or "{}") if check.returncode == 0 else {}
            if shown.get("id") != task_id or shown.get("status") != "succeeded":
                fail(f"`kling status` did not show the sandbox task:\n{check.stdout}{check.stderr}")

            benches = [
                Bench("python -c pass (floor)", [python, "-c", "pass"]),
                Bench("ref: import typer", [python, "-c", REF_TYPER]),
                Bench("kling --help", [kling, "--help"], "ref: import typer", HELP_TARGET),
                Bench("ref: typer+httpx.Client()", [python, "-c", REF_HTTPX]),
                Bench("kling status ID --kind t2v", [kling, "status", task_id, "--kind", "t2v"],
                      "ref: typer+httpx.Client()", STATUS_TARGET),
                Bench("kling status ID", [kling, "status", task_id], "ref: typer+httpx.Client()", STATUS_TARGET),
            ]
            if args.bytecode == "cold":
                mirror = prepare_cold(benches, env, package_dir, tmp_path / "pycache")
            started = time.time()
            measure(benches, env, args.runs, args.warmup)
            wall = time.time() - started
            # cold: proof that kling_cli really was compiled from source on every timed run
            prefix_pyc = len(list(mirror.rglob("*.pyc"))) if args.bytecode == "cold" else None

            profiles = {}
            if args.importtime:
                profiles["from kling_cli.cli import main"] = importtime(
                    [python, "-c", "from kling_cli.cli import main"], env, 5)
                profiles[f"kling status {task_id} --kind t2v"] = importtime(
                    [kling, "status", task_id, "--kind", "t2v"], env, 5)
        finally:
            sandbox.close()

    pyc_after = pyc_files(package_dir)
    tag = info["cache_tag"]
    n_before, n_after = pyc_count(sources, tag, pyc_before), pyc_count(sources, tag, pyc_after)
    by_name = {b.name: b for b in benches}
    results = []
    for bench in benches:
        row = {"name": bench.name, "argv": [Path(bench.argv[0]).name, *bench.argv[1:]], **bench.stats(),
               "ref": bench.ref, "target": bench.target, "ratio": None, "pass": None}
        if bench.ref:
            row["ratio"] = row["median_ms"] / by_name[bench.ref].stats()["median_ms"]
            row["pass"] = row["ratio"] <= bench.target
        results.append(row)
    measured = {
        "warm": "kling_cli loaded from .pyc (written during warm-up)",
        "cold": "kling_cli compiled from source on every run (no .pyc); all other modules from .pyc",
        "as-is": ("kling_cli loaded from .pyc" if n_before == len(sources) else
                  "kling_cli (partly) compiled from source on every run" if env.get("PYTHONDONTWRITEBYTECODE")
                  else "kling_cli .pyc written by the first (warm-up) run, then loaded"),
    }[args.bytecode]
    bytecode = {
        "mode": args.bytecode,
        "measured": measured,
        "source_tree": editable,
        "package_dir": str(package_dir),
        "PYTHONDONTWRITEBYTECODE_in_children": env.get("PYTHONDONTWRITEBYTECODE") or None,
        "kling_cli_modules_imported_by_status": len(sources),
        "of_those_with_pyc_before": n_before,
        "of_those_with_pyc_after": n_after,
        "kling_cli_pyc_in_private_prefix_after_cold_runs": prefix_pyc,
    }
    verdict = all(r["pass"] for r in results if r["pass"] is not None)
    report = {
        "python": python, "kling": kling, "python_version": info["version"], "tree": tree_state(package_dir),
        "versions": {k: info[k] for k in ("kling_cli", "typer", "httpx")},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "runs": args.runs, "warmup": args.warmup, "wall_s": round(wall, 1), "bytecode": bytecode,
        "results": results, "pass": verdict,
    }
    if args.importtime:
        report["importtime"] = {title: [{"module": n, "depth": d, "self_ms": round(s, 2), "cumulative_ms": round(c, 2)}
                                        for n, d, s, c in rows] for title, rows in profiles.items()}

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"python {info['version']} ({python}); kling-cli {info['kling_cli']}, typer {info['typer']}, "
              f"httpx {info['httpx']}; {os.cpu_count()} CPUs, load {report['machine']['loadavg'][0]:.2f}")
        where = "a source tree (editable/path install)" if editable else "site-packages"
        print(f"{args.runs} timed runs per command after {args.warmup} warm-up rounds, interleaved; "
              f"kling_cli from {where}: {package_dir}" + (f" (git {report['tree']})" if report["tree"] else ""))
        detail = (f"{prefix_pyc} kling_cli .pyc in the private cache prefix after the runs" if prefix_pyc is not None
                  else f"{n_before} -> {n_after} of the {len(sources)} kling_cli modules `kling status` imports "
                  "had a .pyc before -> after")
        dont = env.get("PYTHONDONTWRITEBYTECODE")
        print(f"bytecode: {args.bytecode}: {measured} ({detail}; PYTHONDONTWRITEBYTECODE"
              f"{'=' + dont if dont else ' unset'} in the children)\n")
        print(f"{'command':<28} {'median':>8} {'min':>8} {'max':>8} {'ratio':>7} {'target':>7}  result")
        for r in results:
            ratio = f"{r['ratio']:.3f}x" if r["ratio"] is not None else ""
            target = f"{r['target']:.1f}x" if r["target"] is not None else ""
            result = ("PASS" if r["pass"] else "FAIL") if r["pass"] is not None else ""
            print(f"{r['name']:<28} {r['median_ms']:8.1f} {r['min_ms']:8.1f} {r['max_ms']:8.1f} "
                  f"{ratio:>7} {target:>7}  {result}")
        print("\n(ms, whole process; ratio = median / the reference's median: `kling --help` vs `ref: import typer`, "
              "`kling status` vs `ref: typer+httpx.Client()`)")
        for title, rows in profiles.items():
            print_importtime(f"-X importtime: {title}", rows, args.top)
    return 1 if args.check and not verdict else 0


if __name__ == "__main__":
    sys.exit(main())
