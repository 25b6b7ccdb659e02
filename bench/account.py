#!/usr/bin/env python3
"""A CSV batch on a modelled account: how close to the account's limit does `kling` keep it busy?

The sandbox models a real provider account, scaled down in time (default 1:30): it runs at most `--slots`
tasks at once and refuses a submit past that with Kling's 1303; each task's run time is drawn from a
lognormal around `--median` seconds (scaled), `--failure-rate` of them fail, and every request is answered
`--latency` late (scaled). `kling` itself runs with KLING_TIME_SCALE set to the same scale, so its poll
schedule and delays are those of a real run, shrunk alike.

Each scenario runs `kling submit t2v --from-csv` (a fresh CSV of `--rows` rows, all the same model, mode
and duration) with `--wait` to the end, and reports, from what the sandbox saw:

* wall time against the floor, as the issue defines it: the sum of the tasks' run times divided by the
  slots, plus one submit latency per row; and against a stricter floor, where the submit latencies are
  shared by the slots too ((run times + latencies) / slots: packing the last tasks perfectly, no schedule
  reaches it);
* the start-up (process start to the first task) and the drain (the last task's end to the process's end);
* slot utilization: busy slot-seconds over the slot-seconds the run had (slots x wall);
* the time a slot stayed idle after a task ended (mean and max): the k-th task to end frees the slot the
  (slots + k)-th task to be created takes;
* queries per task, and the submits the account refused (1303).

Scenarios (`--scenarios`, in this order; each reuses the data dir, so its journal, of the one before):

* `fresh`: `--max-in-flight <slots>` with an empty journal (no recorded durations);
* `history`: the same, once the journal holds the durations of the `fresh` run;
* `auto`: `--max-in-flight auto` (the limit not told), with history;
* `callbacks`: `--max-in-flight <slots> --callback-url` pointing at a `kling callback listen` on loopback,
  with history.

Usage (the venv's interpreter, never a pyenv shim):

    .venv/bin/python bench/account.py                         # all four, 300 rows, 5 slots, 1:30
    .venv/bin/python bench/account.py --scenarios fresh,history --rows 200 --json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import child_env, git_state, machine, run, tools, write_config  # noqa: E402

SCRIPT = "account.py"
SCENARIOS = ("fresh", "history", "auto", "callbacks")
#: real seconds between a task's end and its callback leaving the sandbox (at most)
CALLBACK_DELAY = 0.3


class Recorder:
    """What the sandbox's official-dialect routes answered: queries, and submits with their status."""

    def __init__(self, sandbox) -> None:
        self.lock = threading.Lock()
        self.queries = 0
        self.submits: list[int] = []
        handle = sandbox.app.handle

        def recording(req):
            response = handle(req)
            if req.path.startswith("/kling/v1/videos/"):
                with self.lock:
                    if req.method == "GET":
                        self.queries += 1
                    elif req.method == "POST":
                        self.submits.append(response.status)
            return response

        sandbox.app.handle = recording

    def take(self) -> tuple[int, list[int]]:
        with self.lock:
            taken = self.queries, self.submits
            self.queries, self.submits = 0, []
        return taken


def write_jobs(path: Path, rows: int, tag: str) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt"])
        for n in range(rows):
            writer.writerow([f"{tag} shot {n}: a red fox crossing a snowy field at dawn, slow dolly"])


def idle_gaps(tasks: list[dict], slots: int) -> list[float]:
    """After the first `slots` creations, the k-th task to end frees the slot the (slots + k)-th creation takes."""
    ends = sorted(t["created"] + t["seconds"] for t in tasks)
    starts = sorted(t["created"] for t in tasks)
    return [max(0.0, starts[slots + k] - ends[k]) for k in range(len(starts) - slots)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--slots", type=int, default=5, help="the account's limit on running tasks")
    parser.add_argument("--median", type=float, default=90.0, help="median task run time, real seconds")
    parser.add_argument("--spread", type=float, default=0.3, help="sigma of the log of the run times")
    parser.add_argument("--failure-rate", type=float, default=0.03)
    parser.add_argument("--latency", type=float, default=0.3, help="per request, real seconds")
    parser.add_argument("--scale", type=float, default=30.0, help="real seconds per bench second")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--kling")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    python, kling = tools(SCRIPT, args.python, args.kling)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")

    from kling_cli.sandbox import new_sandbox
    from kling_cli.sandbox.core import Account

    latency = args.latency / args.scale
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sandbox = new_sandbox(root / "sandbox", task_seconds=args.median / args.scale, latency=latency,
                          account=Account(max_running=args.slots, spread=args.spread,
                                          failure_rate=args.failure_rate, seed=args.seed))
        sandbox.dispatcher.interval = CALLBACK_DELAY / args.scale  # callbacks go out this soon after an end
        sandbox.start()
        recorder = Recorder(sandbox)
        config = root / "config"
        config.mkdir()
        write_config(config, sandbox.base_url("kling"))
        env = child_env(config)
        env["KLING_TIME_SCALE"] = f"{args.scale:g}"
        try:
            for scenario in scenarios:
                results.append(run_scenario(scenario, args, root, env, kling, sandbox, recorder, latency))
                if not args.json:
                    show(results[-1])
        finally:
            sandbox.close()
    if args.json:
        print(json.dumps({"benchmark": "account", "machine": machine(), "tree": git_state(),
                          "settings": {k: v for k, v in vars(args).items() if k not in ("python", "kling", "json")},
                          "results": results}, indent=2))
    return 0


def run_scenario(scenario: str, args, root: Path, env: dict, kling: str, sandbox, recorder: Recorder,
                 latency: float) -> dict:
    jobs = root / f"{scenario}.csv"
    write_jobs(jobs, args.rows, scenario)
    limit = "auto" if scenario == "auto" else str(args.slots)
    argv = [kling, "submit", "t2v", "--from-csv", str(jobs), "--model", "kling-v2-6", "--mode", "std",
            "--duration", "5", "--max-in-flight", limit, "--wait", "--timeout", "2h"]
    listener = None
    if scenario == "callbacks":
        port = free_port()
        listener = subprocess.Popen([kling, "callback", "listen", "--port", str(port)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        time.sleep(1.0)
        argv += ["--callback-url", f"http://127.0.0.1:{port}/"]
    recorder.take()
    started = time.time()
    try:
        done = run(argv, env, cwd=root)
        ended = time.time()
    finally:
        if listener is not None:
            listener.terminate()
            listener.wait(timeout=10)
    queries, submits = recorder.take()
    if done.returncode not in (0, 8):  # 8: some tasks failed, as the account's failure rate wants
        raise SystemExit(f"{SCRIPT}: {scenario}: kling exited {done.returncode}: {done.stderr.decode()[-1500:]}")
    import httpx

    tasks = [t for t in httpx.get(f"{sandbox.origin}/__sandbox/tasks").json()["tasks"]
             if (t["prompt"] or "").startswith(f"{scenario} shot ")]
    busy = sum(t["seconds"] for t in tasks)
    floor = busy / args.slots + latency * len(tasks)
    strict = (busy + latency * len(tasks)) / args.slots
    gaps = idle_gaps(tasks, args.slots)
    found = re.findall(r"--max-in-flight auto: [^\n]*", done.stderr.decode())
    return {
        "scenario": scenario, "rows": args.rows, "created": len(tasks),
        "failed": sum(1 for t in tasks if t["outcome"] == "failed"),
        "wall": done.wall, "floor": floor, "ratio": done.wall / floor, "strict_floor": strict,
        "strict_ratio": done.wall / strict, "startup": min(t["created"] for t in tasks) - started,
        "drain": ended - max(t["created"] + t["seconds"] for t in tasks),
        "utilization": busy / (args.slots * done.wall),
        "idle_mean": sum(gaps) / len(gaps) if gaps else 0.0, "idle_max": max(gaps, default=0.0),
        "queries": queries, "queries_per_task": queries / max(1, len(tasks)),
        "refused_1303": sum(1 for status in submits if status == 429),
        "auto": found, "cpu": done.cpu, "scale": args.scale,
    }


def show(r: dict) -> None:
    scale = r["scale"]
    print(f"{r['scenario']:>9}: wall {r['wall']:.1f} s vs floor {r['floor']:.1f} s = {r['ratio']:.3f}x "
          f"(strict floor {r['strict_floor']:.1f} s: {r['strict_ratio']:.3f}x; real time x{scale:g}: "
          f"{r['wall'] * scale / 60:.0f} min vs {r['floor'] * scale / 60:.0f} min); start-up {r['startup']:.2f} s, "
          f"drain {r['drain']:.2f} s; "
          f"slots busy {r['utilization'] * 100:.1f} %; idle after an end: mean {r['idle_mean'] * scale:.1f} s, "
          f"max {r['idle_max'] * scale:.1f} s (real); {r['queries_per_task']:.2f} queries per task; "
          f"{r['refused_1303']} refused (1303); {r['created']} tasks, {r['failed']} failed; kling CPU "
          f"{r['cpu']:.1f} s" + (f"; {' / '.join(r['auto'])}" if r["auto"] else ""), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
