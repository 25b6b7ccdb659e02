"""Small filesystem helpers: crash-safe writes, and one way of saying a write failed."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

from kling_cli.errors import ConfigError

_FIXES = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (the disk quota is full)",
          errno.EFBIG: "raise the file-size limit (ulimit -f)", errno.EACCES: "make it writable",
          errno.EROFS: "pick a directory on a writable file system"}


def cannot_write(directory: Path | str, exc: OSError, then: str = "run the same command again") -> ConfigError:
    """A local write that failed (full disk, file-size limit, permissions): one line naming the directory
    and the cause, exit 3 (the machine's set-up, not the provider)."""
    reason = exc.strerror or type(exc).__name__
    fix = _FIXES.get(exc.errno or 0, "check the directory")
    return ConfigError(f"cannot write to {directory}: {reason}", hint=f"{fix}, then {then}", code="write_failed")


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half of one.

    The temporary file gets `mode` before any byte is written, so a secret is never briefly readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
