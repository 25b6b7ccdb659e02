"""CSV batch benchmark (run by hand, not in CI).

1. `--dry-run` over generated CSVs of 1,000, 10,000 and 50,000 rows: rows per second and peak RSS. Peak RSS
   must not grow with the row count (the rows are streamed, only their identities are kept).
2. A 500-row run against the sandbox (`--wait`, `--max-in-flight 50`): wall time, and kling's own CPU
   seconds per row, which must be small next to the sandbox's simulated task time.

Usage (time the virtualenv's interpreter, not a pyenv shim):

    .venv/bin/python bench/csv_batch.py                 # both parts
    .venv/bin/python bench/csv_batch.py --rows 10000 --run-rows 500 --json

Every kling run is a subprocess: CPU time from the kernel (`os.wait4`), peak RSS from the process's own
high-water mark (VmHWM), sampled by `_benchlib.run` (wait4's ru_maxrss would include this process's size).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "duration", "aspect_ratio", "mode"])
        for n in range(rows):
            writer.writerow([f"shot {n}: a red fox crossing a snowy field at dawn, slow dolly", "5",
                             ("16:9", "9:16", "1:1")[n % 3], ("std", "pro")[n % 2]])


def run(args: list[str], env: dict[str, str]) -> dict[str, float]:
    from _benchlib import run as run_process

    done = run_process(args, env, rss=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[2:6])}... exited {done.returncode}: {done.stderr.decode()[-800:]}")
    return {"wall": done.wall, "cpu": done.cpu, "rss_mb": (done.vmhwm or 0) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="*", default=[1000, 10000, 50000])
    parser.add_argument("--run-rows", type=int, default=500)
    parser.add_argument("--task-seconds", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    if "/.pyenv/shims/" in sys.executable:
        raise SystemExit("run this with a virtualenv's interpreter, not a pyenv shim")
    kling = [sys.executable, "-m", "kling_cli"]
    results: dict[str, object] = {"python": sys.version.split()[0], "dry_run": [], "run": None}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "KLING_CONFIG_DIR": str(root / "config"), "KLING_DATA_DIR": str(root / "data")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for rows in options.rows:
            path = root / f"jobs-{rows}.csv"
            write_csv(path, rows)
            figures = run([*kling, "--profile", "sandbox", "submit", "t2v", "--from-csv", str(path), "--dry-run"], env)
            figures.update(rows=rows, rows_per_s=rows / figures["wall"])
            results["dry_run"].append(figures)  # type: ignore[union-attr]

        from kling_cli.sandbox import new_sandbox

        sandbox = new_sandbox(root / "sandbox", task_seconds=options.task_seconds).start()
        try:
            config = root / "config"
            config.mkdir(exist_ok=True)
            (config / "config.toml").write_text(
                'default_profile = "bench"\n[profiles.bench]\nprovider = "custom"\ndialect = "kling"\n'
                f'base_url = "{sandbox.base_url("kling")}"\n')
            run_env = {**env, "KLING_API_KEY": "sandbox-api-key", "KLING_POLL_INTERVAL": "0.5"}
            path = root / "run.csv"
            write_csv(path, options.run_rows)
            figures = run([*kling, "submit", "t2v", "--from-csv", str(path), "--wait", "--max-in-flight", "50",
                           "--out", str(root / "results.csv")], run_env)
            created = len(json.loads(__import__("urllib.request").request.urlopen(
                f"{sandbox.origin}/__sandbox/tasks").read())["tasks"])
            floor = options.run_rows / 50 * options.task_seconds
            figures.update(rows=options.run_rows, created=created, cpu_ms_per_row=figures["cpu"] / options.run_rows
                           * 1000, simulated_floor=floor)
            results["run"] = figures
        finally:
            sandbox.close()
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print(f"python {results['python']}; kling via {' '.join(kling)}")
    print("\n--dry-run (rows streamed; peak RSS must not grow with the row count)")
    print(f"{'rows':>8} {'wall s':>8} {'rows/s':>9} {'cpu s':>7} {'peak RSS MB':>12}")
    for f in results["dry_run"]:  # type: ignore[union-attr]
        print(f"{f['rows']:>8} {f['wall']:>8.2f} {f['rows_per_s']:>9.0f} {f['cpu']:>7.2f} {f['rss_mb']:>12.1f}")
    f = results["run"]  # type: ignore[assignment]
    print(f"\n{f['rows']}-row run against the sandbox ({options.task_seconds:g} s tasks, 50 in flight; floor "
          f"{f['simulated_floor']:.0f} s of simulated task time)")
    print(f"wall {f['wall']:.1f} s, kling CPU {f['cpu']:.2f} s = {f['cpu_ms_per_row']:.1f} ms per row, "
          f"peak RSS {f['rss_mb']:.1f} MB, {f['created']} tasks created")


if __name__ == "__main__":
    main()
