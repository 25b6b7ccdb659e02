"""Shared plumbing of the "many tasks" benchmarks (batch_status.py, wait.py, download.py).

Standard library plus kling-cli's own dependencies only. Not a benchmark itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SANDBOX_KEY = "sandbox-api-key"
AUTH_HEADER = f"Authorization: Bearer {SANDBOX_KEY}"


def fail(script: str, message: str) -> None:
    sys.stderr.write(f"{script}: {message}\n")
    raise SystemExit(2)


def tools(script: str, python: str, kling: str | None) -> tuple[str, str]:
    """The venv's interpreter and console script, refusing a pyenv shim (it adds ~85 ms per process)."""
    if "/shims/" in python:
        fail(script, f"{python} is a pyenv shim (adds ~85 ms per process); pass the venv's bin/python")
    kling = kling or str(Path(python).parent / "kling")
    if not os.access(kling, os.X_OK):
        fail(script, f"no `kling` console script at {kling}: run this script with the python of the venv kling "
             "is installed in (e.g. venv/bin/python bench/...), or pass --python/--kling")
    return python, kling


def child_env(config_dir: Path) -> dict[str, str]:
    """The environment of every timed process: no stray KLING_* settings, bytecode written and reused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(KLING_CONFIG_DIR=str(config_dir), KLING_DATA_DIR=str(config_dir), KLING_API_KEY=SANDBOX_KEY,
               KLING_NO_INPUT="1", NO_COLOR="1")
    return env


def write_config(config_dir: Path, base_url: str) -> None:
    """A `custom` profile speaking the official dialect to `base_url` (the key comes from KLING_API_KEY)."""
    (config_dir / "config.toml").write_text(
        'default_profile = "bench"\n\n[profiles.bench]\nprovider = "custom"\ndialect = "kling"\n'
        f'base_url = "{base_url}"\n')


@dataclass
class Run:
    wall: float
    user: float
    sys: float
    #: wait4()'s ru_maxrss, bytes: NOT the child's own peak, it includes this process's size at fork (see `run`)
    maxrss: int
    returncode: int
    stdout: bytes
    #: what it wrote on stderr (with `tty`, everything drawn on the terminal)
    stderr: bytes
    tty_bytes: int | None = None
    #: perf_counter() at spawn and at reaping
    began: float = 0.0
    ended: float = 0.0
    #: peak RSS of the process itself from /proc/PID/status VmHWM, sampled every 10 ms (`rss=True`)
    vmhwm: int | None = None

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def run(argv: list[str], env: dict[str, str], *, cwd: Path | None = None, stdin: bytes | None = None,
        tty: bool = False, on_start=None, rss: bool = False) -> Run:
    """Run one process to the end: wall time (perf_counter around spawn..reap), its own CPU and peak RSS
    (from wait4, so only that process), and what it printed (through files: no pipe can fill up).

    `tty`: stderr is a pseudo-terminal (120x40, TERM=xterm-256color, colour on), as when a human watches, so
    kling draws its live display; this process drains the other end (`Run.tty_bytes` counts what was drawn).
    `on_start(pid)` is called once the process is running.

    `rss`: also sample the process's own high-water mark (VmHWM) every 10 ms. wait4's ru_maxrss cannot be
    trusted for a child of a Python process: Linux carries the parent's resident size, at fork, over the
    exec (about 20-30 MB here), so a small child looks as big as this process."""
    master = slave = None
    drained = bytearray()
    drainer = None
    if tty:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = dict(env, TERM="xterm-256color", COLUMNS="120", LINES="40")
        env.pop("NO_COLOR", None)

        def drain() -> None:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                drained.extend(chunk)

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp:
            if stdin is not None:
                inp.write(stdin)
                inp.seek(0)
            started = time.perf_counter()
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=inp if stdin is not None else subprocess.DEVNULL,
                                    stdout=out, stderr=err if slave is None else slave)
            if on_start is not None:
                on_start(proc.pid)
            peak = [0]
            stop = threading.Event()
            if rss:
                sampler = threading.Thread(target=_sample_hwm, args=(proc.pid, peak, stop), daemon=True)
                sampler.start()
            _pid, status, usage = os.wait4(proc.pid, 0)
            ended = time.perf_counter()
            wall = ended - started
            stop.set()
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            result = Run(wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss * 1024, proc.returncode, out.read(),
                         err.read(), began=started, ended=ended)
            if rss:
                sampler.join()
                result.vmhwm = peak[0]
    finally:
        if slave is not None:
            os.close(slave)
    if drainer is not None:
        drainer.join(timeout=5)
        os.close(master)
        result.stderr = bytes(drained)
        result.tty_bytes = len(drained)
    return result


def _sample_hwm(pid: int, peak: list[int], stop: threading.Event) -> None:
    path = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(path, "rb") as handle:
                for line in handle:
                    if line.startswith(b"VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
                        break
        except (OSError, ValueError):
            pass
        stop.wait(0.01)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def versions() -> dict:
    import importlib.metadata as metadata

    found = {}
    for name in ("kling-cli", "httpx", "httpcore", "rich", "typer"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_state() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "kling_cli"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@dataclass
class Row:
    """One line of a result table: a measured figure against a reference and a target ratio."""

    name: str
    value: float
    unit: str
    reference_name: str | None = None
    reference: float | None = None
    #: the figure must be <= target * reference (ratio targets), or the figure itself <= limit
    target: float | None = None
    limit: float | None = None
    #: "max": lower is better (times, CPU, RSS); "min": higher is better (throughput)
    better: str = "lower"
    detail: str = ""

    @property
    def ratio(self) -> float | None:
        if self.reference in (None, 0):
            return None
        return self.value / self.reference

    @property
    def passed(self) -> bool | None:
        if self.target is not None and self.ratio is not None:
            return self.ratio <= self.target if self.better == "lower" else self.ratio >= self.target
        if self.limit is not None:
            return self.value <= self.limit if self.better == "lower" else self.value >= self.limit
        return None

    def target_text(self) -> str:
        if self.target is not None:
            return f"{'<=' if self.better == 'lower' else '>='} {self.target:g}x"
        if self.limit is not None:
            return f"{'<=' if self.better == 'lower' else '>='} {fmt(self.limit, self.unit)}"
        return ""

    def to_json(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit, "reference_name": self.reference_name,
                "reference": self.reference, "ratio": self.ratio, "target": self.target, "limit": self.limit,
                "better": self.better, "pass": self.passed, "detail": self.detail}


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "MB/s":
        return f"{value:.0f} MB/s"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:.2f} {unit}".rstrip()


def print_table(rows: list[Row]) -> None:
    cells = [("measured", "figure", "reference", "ref. figure", "ratio", "target", "result")]
    for row in rows:
        result = {True: "PASS", False: "FAIL", None: ""}[row.passed]
        cells.append((row.name, fmt(row.value, row.unit), row.reference_name or "", fmt(row.reference, row.unit),
                      f"{row.ratio:.2f}x" if row.ratio is not None else "", row.target_text(), result))
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    right = {1, 3, 4}
    for n, line in enumerate(cells):
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
              .rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for row in rows:
        if row.detail:
            print(f"  {row.name}: {row.detail}")


def report(args, title: str, rows: list[Row], extra: dict) -> int:
    verdict = all(r.passed for r in rows if r.passed is not None)
    if args.json:
        print(json.dumps({"benchmark": title, "machine": machine(), "versions": versions(), "tree": git_state(),
                          "runs": args.runs, **extra, "results": [r.to_json() for r in rows], "pass": verdict},
                         indent=2))
    else:
        info = machine()
        load = info["loadavg"][0] if info["loadavg"] else float("nan")
        vers = versions()
        print(f"{title}: python {info['python']}, kling-cli {vers['kling-cli']} (git {git_state()}), httpx "
              f"{vers['httpx']}, rich {vers['rich']}; {info['cpus']} CPUs, load {load:.2f}; {args.runs} runs")
        print()
        print_table(rows)
    return 1 if getattr(args, "check", False) and not verdict else 0
