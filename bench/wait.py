#!/usr/bin/env python3
"""`kling wait` over many tasks: HTTP requests per task until done, and CPU while idle between polls.

Targets (from the issue; measured on the 2-core development machine):

* Requests: waiting for 200 tasks costs no more queries per task than waiting for one. The reference is
  `kling wait ID` of a single task with the same run time, measured in the same round (its poll schedule
  is the policy's: 2 s, x1.5, up to 30 s). Target: requests per task <= 1.0x the single task's.
* Idle CPU: between poll rounds the poll loop sleeps; what the process burns there (the progress display)
  stays under 2% of one core, both with stderr in a file (one line per state change) and with stderr on a
  terminal (the live rich display: a row per task, an overall bar, redrawn a few times a second).

How to run it (with the interpreter of the venv kling is installed in, never a pyenv shim):

    /tmp/kenv/bin/python bench/wait.py                    # 2 rounds: single task, 200 plain, 200 live
    /tmp/kenv/bin/python bench/wait.py --runs 3 --json
    /tmp/kenv/bin/python bench/wait.py --tasks 50 --task-seconds 20 --check

What it does: starts the project's sandbox in threads of this process with `task_seconds` (default 12 s:
the polls at about 0, 2, 5 and 9.5 s find the tasks queued or running, the one at about 16 s finds them
done), and counts every request its dialect routes answer, with a timestamp. For each measured command
it creates the tasks by POSTing to the official-dialect route, then starts `kling wait --from ids.txt`
against them (a `custom` profile in a temporary KLING_CONFIG_DIR). The "live" case runs kling with its
stderr on a pseudo-terminal (python's pty module, 120x40; the bench drains the other end), so kling
draws its live display exactly as in a terminal; stdout is a file in every case.

While kling runs, the bench samples its CPU time (utime+stime of /proc/PID/stat, all threads) every
50 ms. Poll rounds are found from the server's request timestamps (requests less than 0.5 s apart belong
to one round); an idle window runs from 0.3 s after a round's last request to 0.1 s before the next
round's first. Idle CPU = CPU ticks inside the idle windows / their total length (tick resolution
10 ms, so about 0.1% over the ~10 s of windows). Whole-run CPU and peak RSS come from wait4().
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import (  # noqa: E402
    SANDBOX_KEY, Row, child_env, fail, median, report, run, tools, write_config,
)

SCRIPT = "wait.py"
REQUESTS_TARGET = 1.0
IDLE_LIMIT = 2.0  # % of one core
SAMPLE = 0.05
ROUND_GAP = 0.5
AFTER_ROUND = 0.3
BEFORE_ROUND = 0.1
TICK = os.sysconf("SC_CLK_TCK")


class Counter:
    """Timestamps of the dialect requests the sandbox answered (created tasks and queries)."""

    def __init__(self, sandbox) -> None:
        self.lock = threading.Lock()
        self.queries: list[tuple[float, str]] = []
        handle = sandbox.app.handle

        def counting(req):
            if req.method == "GET" and req.path.startswith("/kling/v1/videos/"):
                with self.lock:
                    self.queries.append((time.monotonic(), req.path.rsplit("/", 1)[-1]))
            return handle(req)

        sandbox.app.handle = counting

    def since(self, start: float) -> list[tuple[float, str]]:
        with self.lock:
            return [q for q in self.queries if q[0] >= start]


def create_tasks(client, base: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        reply = client.post(f"{base}/v1/videos/text2video", json={"prompt": f"bench wait {n}"})
        reply.raise_for_status()
        ids.append(reply.json()["data"]["task_id"])
    return ids


def cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))


def rounds_of(times: list[float]) -> list[tuple[float, float]]:
    """(first, last) request time of each poll round."""
    found: list[list[float]] = []
    for t in sorted(times):
        if found and t - found[-1][1] < ROUND_GAP:
            found[-1][1] = t
        else:
            found.append([t, t])
    return [(a, b) for a, b in found]


def measure(argv: list[str], env: dict[str, str], cwd: Path, counter: Counter, ids: list[str], *,
            live: bool) -> dict:
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    box: dict = {}

    def sample(pid: int) -> None:  # CPU of the running process, every SAMPLE seconds
        box["started"] = time.monotonic()

        def sampler() -> None:
            while not stop.is_set():
                ticks = cpu_ticks(pid)
                if ticks is not None:
                    samples.append((time.monotonic(), ticks))
                stop.wait(SAMPLE)

        threading.Thread(target=sampler, daemon=True).start()

    try:
        result = run(argv, env, cwd=cwd, tty=live, on_start=sample, rss=True)
    finally:
        stop.set()
    if result.returncode != 0:
        fail(SCRIPT, f"`{' '.join(argv[:3])} ...` exited {result.returncode}:\n{result.stdout.decode()[-2000:]}"
             f"{result.stderr.decode(errors='replace')[-2000:]}")
    printed = result.stdout.decode().splitlines()
    if len(printed) != len(ids) or not all("succeeded" in line for line in printed):
        fail(SCRIPT, f"kling wait printed {len(printed)} lines for {len(ids)} tasks:\n{printed[:5]}")

    queries = [q for q in counter.since(box["started"]) if q[1] in set(ids)]
    rounds = rounds_of([t for t, _ in queries])
    idle_ticks = 0.0
    idle_seconds = 0.0
    for (_, end), (nxt, _) in zip(rounds, rounds[1:]):
        a, b = end + AFTER_ROUND, nxt - BEFORE_ROUND
        if b - a < 1.0:
            continue
        inside = [(t, c) for t, c in samples if a <= t <= b]
        if len(inside) < 2:
            continue
        idle_ticks += inside[-1][1] - inside[0][1]
        idle_seconds += inside[-1][0] - inside[0][0]
    return {
        "wall": result.wall, "cpu": result.cpu, "peak_rss": result.vmhwm, "requests": len(queries),
        "per_task": len(queries) / len(ids), "rounds": len(rounds),
        "round_offsets": [round(a - box["started"], 2) for a, _ in rounds],
        "idle_seconds": idle_seconds,
        "idle_pct": 100.0 * idle_ticks / TICK / idle_seconds if idle_seconds else float("nan"),
        "tty_bytes": result.tty_bytes,
        "stderr_lines": len(result.stderr.decode(errors="replace").splitlines()) if not live else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="rounds (single task, plain, live) (default 2)")
    parser.add_argument("--tasks", type=int, default=200, help="tasks per wait (default 200)")
    parser.add_argument("--task-seconds", type=float, default=12.0, help="how long each task runs (default 12)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the venv under test")
    parser.add_argument("--kling", help="the `kling` console script (default: next to --python)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    if args.runs < 1 or args.tasks < 1 or args.task_seconds <= 0:
        fail(SCRIPT, "--runs and --tasks must be >= 1, --task-seconds > 0")
    python, kling = tools(SCRIPT, args.python, args.kling)
    try:
        import httpx

        from kling_cli.sandbox import new_sandbox
    except ImportError as exc:
        fail(SCRIPT, f"cannot import the sandbox ({exc}): run this script with the venv's python")

    results: dict[str, list[dict]] = {"single": [], "plain": [], "live": []}
    with tempfile.TemporaryDirectory(prefix="kling-bench-wait-") as tmp:
        tmp_path = Path(tmp)
        config_dir, cwd = tmp_path / "config", tmp_path / "cwd"
        config_dir.mkdir()
        cwd.mkdir()
        env = child_env(config_dir)
        env.pop("NO_COLOR", None)
        sandbox = new_sandbox(tmp_path / "sandbox", task_seconds=args.task_seconds).start()
        counter = Counter(sandbox)
        client = httpx.Client(headers={"Authorization": f"Bearer {SANDBOX_KEY}"}, timeout=30)
        try:
            base = sandbox.base_url("kling")
            write_config(config_dir, base)
            # warm-up: bytecode written, caches filled (a task that is already done)
            sandbox.task_seconds = 0
            warm = create_tasks(client, base, 1)
            run([kling, "wait", warm[0]], env, cwd=cwd)
            sandbox.task_seconds = args.task_seconds
            cases = [("single", 1, False), ("plain", args.tasks, False), ("live", args.tasks, True)]
            for _ in range(args.runs):
                for name, count, live in cases:
                    ids = create_tasks(client, base, count)
                    ids_file = tmp_path / f"ids-{name}.txt"
                    ids_file.write_text("".join(f"{i}\n" for i in ids))
                    argv = [kling, "wait", "--from", str(ids_file), "--timeout", "10m"]
                    results[name].append(measure(argv, env, cwd, counter, ids, live=live))
        finally:
            client.close()
            sandbox.close()

    def med(name: str, key: str) -> float:
        return median([r[key] for r in results[name]])

    single = med("single", "per_task")
    rows = []
    for name, label in (("plain", "stderr to a file"), ("live", "stderr on a terminal (live display)")):
        rows.append(Row(f"wait {args.tasks} tasks, {label}: requests per task", med(name, "per_task"), "",
                        "kling wait of 1 task", single, target=REQUESTS_TARGET,
                        detail=f"poll rounds {med(name, 'rounds'):g} at {results[name][0]['round_offsets']} s after "
                               f"start (single task: {results['single'][0]['round_offsets']}); wall "
                               f"{med(name, 'wall'):.2f} s (single {med('single', 'wall'):.2f} s), whole-run CPU "
                               f"{med(name, 'cpu'):.3f} s (single {med('single', 'cpu'):.3f} s), peak RSS "
                               f"{med(name, 'peak_rss') / 2**20:.1f} MB"))
        shown = (f"{med(name, 'tty_bytes') / med(name, 'wall') / 1024:.1f} KiB/s drawn on the terminal"
                 if name == "live" else f"{med(name, 'stderr_lines'):g} lines on stderr")
        rows.append(Row(f"wait {args.tasks} tasks, {label}: CPU while idle between polls", med(name, "idle_pct"), "%",
                        limit=IDLE_LIMIT, detail=f"over {med(name, 'idle_seconds'):.1f} s of idle windows per run; "
                                                 f"{shown}"))
    rows.append(Row("wait 1 task, stderr to a file: CPU while idle between polls", med("single", "idle_pct"), "%",
                    limit=IDLE_LIMIT))
    extra = {"tasks": args.tasks, "task_seconds": args.task_seconds, "samples": results}
    return report(args, "wait benchmark", rows, extra)


if __name__ == "__main__":
    sys.exit(main())
