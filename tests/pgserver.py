"""A throwaway PostgreSQL server for the tests and the benchmarks: `initdb` and `pg_ctl` into a temporary
directory, listening on a free loopback port, nothing else (no Unix socket, no fsync).

initdb refuses to run as root, so as root the server runs as the `postgres` user (`runuser`), in a
directory that user owns. The binaries come from PATH, else from Debian's /usr/lib/postgresql/N/bin.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "kling"
PASSWORD = "kling-pg-secret-9f3e"
SERVER_OPTIONS = ("-c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off "
                  "-c full_page_writes=off -c max_connections=100")


class Unavailable(Exception):
    """No PostgreSQL server could be started here (the reason says why)."""


def binaries() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self) -> None:
        self.bin = binaries()
        if self.bin is None:
            raise Unavailable("no PostgreSQL binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin: "
                              "apt-get install postgresql")
        self.root = Path(tempfile.mkdtemp(prefix="kling-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            try:
                shutil.chown(self.root, "postgres", "postgres")
            except (LookupError, OSError) as exc:
                raise Unavailable(f"running as root and cannot hand {self.root} to the postgres user: {exc}") from None
        (self.root / "pw").write_text(PASSWORD + "\n")
        if self.as_postgres:
            shutil.chown(self.root / "pw", "postgres", "postgres")

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              cwd=self.root)
        if done.returncode != 0:
            raise Unavailable(f"{tool} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}")

    def init(self) -> Server:
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={self.root / 'pw'}", "-A", "scram-sha-256",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        return self.start()

    def start(self) -> Server:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60",
                  "-o", f"-c port={self.port} {SERVER_OPTIONS}", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop("immediate")
        except (Unavailable, subprocess.SubprocessError):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Server:
    """A running server, or Unavailable."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg 3 is not installed: pip install -e '.[test]'") from None
    server = Server()
    try:
        return server.init()
    except BaseException:
        server.close()
        raise
