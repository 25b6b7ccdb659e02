"""Who holds a claim, and whether it still runs.

A claim names its process: a run id (new for every process), the host, the pid and the pid's start time.
On the same host the process is asked directly (a pid that no longer runs, or now runs another program,
is gone); on another host only the lease can tell, so a claim from elsewhere is held until it expires.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any, Mapping


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _host() -> str:
    """This host as its processes see it: the name, the boot (a reboot ends every process) and the pid
    namespace (two containers with one host name do not share pids)."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return "/".join(p for p in (socket.gethostname(), _read("/proc/sys/kernel/random/boot_id")[:8], namespace) if p)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None where there is no /proc."""
    text = _read(f"/proc/{pid}/stat")
    return text[text.rfind(")") + 2:].split() if text else None


def start_time(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def running(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    fields = _stat(pid)
    if fields is None:
        return not os.path.isdir("/proc")  # gone between the two looks, unless there is no /proc at all
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return not started or len(fields) <= 19 or fields[19] == started


@dataclass(frozen=True)
class Owner:
    run: str
    host: str
    pid: int
    pid_start: str

    @classmethod
    def this_process(cls) -> Owner:
        pid = os.getpid()
        return cls(uuid.uuid4().hex, _host(), pid, start_time(pid))

    def values(self) -> tuple[str, str, int, str]:
        return self.run, self.host, self.pid, self.pid_start

    def holds(self, claim: Mapping[str, Any]) -> bool:
        return claim["run"] == self.run

    def alive(self, claim: Mapping[str, Any]) -> bool:
        """Whether the process holding `claim` (a claims row with its `expired` flag) may still be sending."""
        if claim["host"] == self.host:
            return running(int(claim["pid"]), claim["pid_start"])
        return not claim["expired"]

    @staticmethod
    def describe(claim: Mapping[str, Any]) -> str:
        return f"pid {claim['pid']} on {str(claim['host']).split('/')[0]}"
