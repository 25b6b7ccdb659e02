#!/usr/bin/env python3
"""`kling batch-status` of many tasks: wall time against curl's parallel fetch, and client CPU.

Targets (from the issue; measured on the 2-core development machine):

* 1,000 tasks on a local server that answers each query 100 ms late, `--concurrency 64`: the median wall
  time of `kling batch-status --from ids.txt --concurrency 64 --json` within 1.25x of the median of
  `curl -Z --parallel-max 64` fetching the same 1,000 query URLs. (The floor is 1,000 / 64 x 0.1 s = 1.56 s.)
* The same 1,000 statuses against the server with no added latency: kling's CPU time (user + system, the
  whole process, start-up included) at most 2.5x that of a sequential `httpx.Client` loop over the same
  URLs in a fresh interpreter (start-up and `import httpx` included too; about 0.4 ms per status).

How to run it (with the interpreter of the venv kling is installed in, never a pyenv shim, which adds
~85 ms to every process):

    /tmp/kenv/bin/python bench/batch_status.py                  # 5 timed runs of each command
    /tmp/kenv/bin/python bench/batch_status.py --runs 10 --json # machine-readable
    /tmp/kenv/bin/python bench/batch_status.py --check          # exit 1 when a target is missed
    /tmp/kenv/bin/python bench/batch_status.py --tasks 200 --latency 50ms --concurrency 16

What it does: starts the project's sandbox (kling_cli.sandbox.new_sandbox) in threads of this process,
creates the tasks by POSTing to its official-dialect route (`/kling/v1/videos/text2video`, `Authorization:
Bearer sandbox-api-key`) with `task_seconds=0` so that every task has succeeded, writes their ids to
ids.txt and points kling at the sandbox through a temporary KLING_CONFIG_DIR holding a `custom` profile
that speaks the `kling` dialect. Then it sets the sandbox's `latency` (every dialect request is answered
that late) and times, interleaved round by round after a warm-up round, curl and kling over the same
query URLs (`/kling/v1/videos/text2video/ID`); each run's output is checked (1,000 answers, 1,000
succeeded tasks). Then latency 0 and the CPU comparison, interleaved the same way. Wall time is
perf_counter() around spawn..reap; CPU and peak RSS come from wait4() for that process alone.
The server runs in this process for both contestants alike (it shares the 2 cores with them).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import (  # noqa: E402
    AUTH_HEADER, SANDBOX_KEY, Row, child_env, fail, median, report, run, tools, write_config,
)

SCRIPT = "batch_status.py"
WALL_TARGET = 1.25
CPU_TARGET = 2.5
CURL = "/usr/bin/curl"

#: the CPU reference: the plainest client that gets the same statuses, in a fresh interpreter
SEQUENTIAL = """\
import sys, httpx
urls = open(sys.argv[1]).read().split()
with httpx.Client(headers={"Authorization": "Bearer %s"}) as client:
    for url in urls:
        reply = client.get(url)
        reply.raise_for_status()
        assert reply.json()["data"]["task_status"] == "succeed"
print(len(urls))
""" % SANDBOX_KEY


def parse_seconds(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 100ms, 0.1s)")
    return float(match.group(1)) * (0.001 if match.group(2) == "ms" else 1.0)


def start_sandbox(state_dir: Path):
    try:
        from kling_cli.sandbox import new_sandbox
    except ImportError as exc:
        fail(SCRIPT, f"cannot import the sandbox ({exc}): run this script with the python of the venv kling is "
             "installed in")
    return new_sandbox(state_dir, task_seconds=0).start()


def create_tasks(base: str, count: int) -> list[str]:
    import httpx

    with httpx.Client(headers={"Authorization": f"Bearer {SANDBOX_KEY}"}, timeout=30,
                      limits=httpx.Limits(max_connections=8)) as client:
        def one(n: int) -> str:
            reply = client.post(f"{base}/v1/videos/text2video", json={"prompt": f"bench task {n}"})
            reply.raise_for_status()
            return reply.json()["data"]["task_id"]

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(count)))


def check_kling(result, count: int) -> None:
    if result.returncode != 0:
        fail(SCRIPT, f"kling batch-status exited {result.returncode}:\n{result.stderr.decode(errors='replace')}")
    lines = result.stdout.decode().splitlines()
    done = sum(1 for line in lines if json.loads(line).get("status") == "succeeded")
    if len(lines) != count or done != count:
        fail(SCRIPT, f"kling batch-status printed {len(lines)} lines, {done} succeeded tasks; expected {count}")


def check_curl(result, count: int) -> None:
    codes = result.stdout.decode().split()
    if result.returncode != 0 or len(codes) != count or any(code != "200" for code in codes):
        ok = sum(code == "200" for code in codes)
        fail(SCRIPT, f"curl exited {result.returncode} with {len(codes)} answers ({ok} HTTP 200); expected "
             f"{count}:\n{result.stderr.decode(errors='replace')}")


def check_sequential(result, count: int) -> None:
    if result.returncode != 0 or result.stdout.strip() != str(count).encode():
        fail(SCRIPT, f"the sequential reference exited {result.returncode}:\n{result.stderr.decode(errors='replace')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--tasks", type=int, default=1000, help="how many tasks (default 1000)")
    parser.add_argument("--concurrency", type=int, default=64, help="parallel requests (default 64)")
    parser.add_argument("--latency", type=parse_seconds, default=0.1, help="server delay per query (default 100ms)")
    parser.add_argument("--skip-cpu", action="store_true", help="only the wall-time comparison")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the venv under test")
    parser.add_argument("--kling", help="the `kling` console script (default: next to --python)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.tasks < 1 or args.concurrency < 1:
        fail(SCRIPT, "--runs, --tasks and --concurrency must be >= 1, --warmup >= 0")
    python, kling = tools(SCRIPT, args.python, args.kling)

    with tempfile.TemporaryDirectory(prefix="kling-bench-batch-") as tmp:
        tmp_path = Path(tmp)
        config_dir, cwd = tmp_path / "config", tmp_path / "cwd"
        config_dir.mkdir()
        cwd.mkdir()
        env = child_env(config_dir)
        sandbox = start_sandbox(tmp_path / "sandbox")
        try:
            base = sandbox.base_url("kling")
            ids = create_tasks(base, args.tasks)
            write_config(config_dir, base)
            ids_file = tmp_path / "ids.txt"
            ids_file.write_text("".join(f"{i}\n" for i in ids))
            urls = [f"{base}/v1/videos/text2video/{i}" for i in ids]
            urls_file = tmp_path / "urls.txt"
            urls_file.write_text("".join(f"{u}\n" for u in urls))
            curl_config = tmp_path / "curl.cfg"
            curl_config.write_text("".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls))

            kling_argv = [kling, "batch-status", "--from", str(ids_file), "--concurrency", str(args.concurrency),
                          "--json"]
            curl_argv = [CURL, "-s", "--no-progress-meter", "-Z", "--parallel-max", str(args.concurrency),
                         "-H", AUTH_HEADER, "-w", "%{http_code}\\n", "-K", str(curl_config)]
            seq_argv = [python, "-c", SEQUENTIAL, str(urls_file)]

            def timed(argv, check):
                result = run(argv, env, cwd=cwd, rss=True)
                check(result, args.tasks)
                return result

            # Wall time, with latency. Interleaved, the order swapped every round.
            sandbox.latency = args.latency
            walls: dict[str, list] = {"curl": [], "kling": []}
            contestants = [("curl", curl_argv, check_curl), ("kling", kling_argv, check_kling)]
            for n in range(args.warmup + args.runs):
                for name, argv, check in (contestants if n % 2 == 0 else contestants[::-1]):
                    result = timed(argv, check)
                    if n >= args.warmup:
                        walls[name].append(result)

            # CPU, no latency.
            sandbox.latency = 0.0
            cpus: dict[str, list] = {"sequential": [], "kling": []}
            if not args.skip_cpu:
                contestants = [("sequential", seq_argv, check_sequential), ("kling", kling_argv, check_kling)]
                for n in range(args.warmup + args.runs):
                    for name, argv, check in (contestants if n % 2 == 0 else contestants[::-1]):
                        result = timed(argv, check)
                        if n >= args.warmup:
                            cpus[name].append(result)
        finally:
            sandbox.close()

    def med(runs: list, key: str) -> float:
        return median([getattr(r, key) for r in runs])

    floor = args.tasks / args.concurrency * args.latency
    k_wall, c_wall = med(walls["kling"], "wall"), med(walls["curl"], "wall")
    spread = {name: f"min {min(r.wall for r in runs):.3f} s, max {max(r.wall for r in runs):.3f} s"
              for name, runs in walls.items()}
    rows = [
        Row(f"kling batch-status, {args.tasks} tasks, {args.latency * 1000:g} ms late, --concurrency "
            f"{args.concurrency}: wall", k_wall, "s", f"curl -Z --parallel-max {args.concurrency}", c_wall,
            target=WALL_TARGET,
            detail=f"floor {args.tasks}/{args.concurrency} x {args.latency:g} s = {floor:.3f} s: kling "
                   f"{k_wall / floor:.2f}x, curl {c_wall / floor:.2f}x; kling {spread['kling']}, CPU "
                   f"{med(walls['kling'], 'cpu'):.3f} s, peak RSS {med(walls['kling'], 'vmhwm') / 2**20:.1f} MB; "
                   f"curl {spread['curl']}"),
    ]
    if not args.skip_cpu:
        kling_runs, seq_runs = cpus["kling"], cpus["sequential"]
        rows.append(Row(f"kling batch-status, {args.tasks} tasks, no latency: CPU (user+sys)", med(kling_runs, "cpu"),
                        "s", "sequential httpx.Client loop", med(seq_runs, "cpu"), target=CPU_TARGET,
                        detail=f"kling wall {med(kling_runs, 'wall'):.3f} s, user {med(kling_runs, 'user'):.3f} s, "
                               f"sys {med(kling_runs, 'sys'):.3f} s; sequential wall {med(seq_runs, 'wall'):.3f} s, "
                               f"user {med(seq_runs, 'user'):.3f} s, sys {med(seq_runs, 'sys'):.3f} s"))
    extra = {"tasks": args.tasks, "concurrency": args.concurrency, "latency_s": args.latency, "floor_s": floor,
             "samples": {"wall": {k: [r.wall for r in v] for k, v in walls.items()},
                         "cpu": {k: [r.cpu for r in v] for k, v in cpus.items()}}}
    return report(args, "batch-status benchmark", rows, extra)


if __name__ == "__main__":
    sys.exit(main())
