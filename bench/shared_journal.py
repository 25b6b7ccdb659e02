"""Shared-journal benchmark (run by hand, not in CI): many processes draining one CSV through one
PostgreSQL journal.

1. Three `kling` processes, each with its own data dir and `--max-in-flight M`, draining one 1,000-row CSV
   through a shared PostgreSQL journal, against the sandbox with per-request latency: wall time, against
   one process with `--max-in-flight 3M` on the same journal. Both must create exactly one task per row.
2. The claim cost per row: claiming an external id and releasing it, in-process, on PostgreSQL (loopback)
   and on the local SQLite journal, in ms.

Usage (time the virtualenv's interpreter, not a pyenv shim; needs PostgreSQL's binaries, as the tests do):

    .venv/bin/python bench/shared_journal.py
    .venv/bin/python bench/shared_journal.py --rows 1000 --max-in-flight 20 --latency 0.05 --json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # pgserver.py: the same throwaway server the tests start


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt"])
        writer.writerows([f"shot {n}: a red fox crossing a snowy field at dawn"] for n in range(rows))


def created(sandbox) -> int:
    with urllib.request.urlopen(f"{sandbox.origin}/__sandbox/tasks") as answer:
        return len(json.loads(answer.read())["tasks"])


def reset(sandbox) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{sandbox.origin}/__sandbox/reset", method="POST")).read()


def drain(kling: list[str], env: dict[str, str], root: Path, csv_path: Path, processes: int, in_flight: int,
          journal: str) -> float:
    """Wall time of `processes` kling processes (own data dirs, one journal) draining the CSV with --wait."""
    import subprocess

    procs = []
    started = time.perf_counter()
    for n in range(processes):
        data = root / f"data-{processes}-{n}"
        data.mkdir()
        # stderr to a file, not a pipe: a pipe nobody reads yet fills up and stops the process writing to it
        procs.append((subprocess.Popen(
            [*kling, "submit", "t2v", "--from-csv", str(csv_path), "--wait", "--max-in-flight", str(in_flight),
             "--out", str(data / "results.csv")], env={**env, "KLING_DATA_DIR": str(data), "KLING_JOURNAL": journal},
            stdout=subprocess.DEVNULL, stderr=(data / "stderr").open("w"), stdin=subprocess.DEVNULL), data))
    for proc, data in procs:
        if proc.wait() != 0:
            raise SystemExit(f"a kling process exited {proc.returncode}: {(data / 'stderr').read_text()[-800:]}")
    return time.perf_counter() - started


def claim_cost(spec: str, rows: int) -> float:
    """ms per row to claim an external id and give it up, as a batch does around each submit."""
    from kling_cli.journal import open_journal
    from kling_cli.journal.owner import Owner

    journal = open_journal(spec)
    owner = Owner.this_process()
    started = time.perf_counter()
    for n in range(rows):
        journal.claim("bench", f"kc-bench-{n}", owner)
        journal.release("bench", f"kc-bench-{n}", owner)
    elapsed = time.perf_counter() - started
    journal.close()
    return elapsed / rows * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--max-in-flight", type=int, default=20, help="per process of the three (default 20)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the sandbox takes per request")
    parser.add_argument("--task-seconds", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    if "/shims/" in sys.executable:
        raise SystemExit("run this with a virtualenv's interpreter, not a pyenv shim")
    import pgserver
    from kling_cli.sandbox import new_sandbox

    kling = [sys.executable, "-m", "kling_cli"]
    results: dict[str, object] = {"python": sys.version.split()[0], "rows": options.rows,
                                  "latency": options.latency, "task_seconds": options.task_seconds}
    server = pgserver.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            sandbox = new_sandbox(root / "sandbox", task_seconds=options.task_seconds, latency=options.latency).start()
            try:
                config = root / "config"
                config.mkdir()
                (config / "config.toml").write_text(
                    'default_profile = "bench"\n[profiles.bench]\nprovider = "custom"\ndialect = "kling"\n'
                    f'base_url = "{sandbox.base_url("kling")}"\n')
                env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
                env.update(KLING_CONFIG_DIR=str(config), KLING_API_KEY="sandbox-api-key", KLING_POLL_INTERVAL="0.5",
                           KLING_NO_INPUT="1")
                csv_path = root / "jobs.csv"
                write_csv(csv_path, options.rows)
                runs = {}
                for name, processes, in_flight in (("three processes", 3, options.max_in_flight),
                                                   ("one process", 1, 3 * options.max_in_flight)):
                    reset(sandbox)
                    journal = server.create_database(f"bench_{processes}")
                    wall = drain(kling, env, root, csv_path, processes, in_flight, journal)
                    runs[name] = {"processes": processes, "max_in_flight": in_flight, "wall": wall,
                                  "tasks": created(sandbox)}
                results["runs"] = runs
            finally:
                sandbox.close()
            results["claim_ms_per_row"] = {
                "postgresql": claim_cost(server.create_database("bench_claims"), options.rows),
                "sqlite": claim_cost(str(root / "claims.db"), options.rows),
            }
    finally:
        server.close()
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print(f"python {results['python']}; {options.rows} rows; sandbox latency {options.latency * 1000:g} ms per "
          f"request, tasks of {options.task_seconds:g} s; kling via {' '.join(kling)}\n")
    print(f"{'':<16} {'processes':>9} {'in flight':>9} {'wall s':>8} {'tasks':>6}")
    for name, run in results["runs"].items():  # type: ignore[union-attr]
        print(f"{name:<16} {run['processes']:>9} {run['max_in_flight']:>9} {run['wall']:>8.1f} {run['tasks']:>6}")
    costs = results["claim_ms_per_row"]
    print(f"\nclaim + release per row: PostgreSQL {costs['postgresql']:.2f} ms, SQLite {costs['sqlite']:.2f} ms")


if __name__ == "__main__":
    main()
