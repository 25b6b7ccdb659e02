"""Secrets, kept apart from settings in credentials.toml (mode 0600), one table per profile.

A secret is read from a file, from stdin, or from the environment: never from a flag value, where it
would land in shell history and `ps` output.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from kling_cli import envvars
from kling_cli.errors import ConfigError, UsageError
from kling_cli.fsutil import cannot_write, write_atomic

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FILENAME = "credentials.toml"
FIELDS = ("api_key", "access_key", "secret_key", "webhook_secret")


def mask(secret: str | None) -> str:
    """Enough of a secret to tell two apart, never enough to use: `****a1b2`."""
    if not secret:
        return "(none)"
    return "****" + secret[-4:] if len(secret) >= 16 else "****"


@dataclass(repr=False)
class Credentials:
    api_key: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    #: the official API's webhook signing secret ("whsec_..."), for `kling callback`
    webhook_secret: str | None = None
    source: str = ""

    @property
    def usable(self) -> bool:
        return bool(self.api_key or (self.access_key and self.secret_key))

    def describe(self) -> str:
        if self.api_key:
            return f"API key {mask(self.api_key)}"
        return f"access key {self.access_key}, secret key {mask(self.secret_key)}"

    def secrets(self) -> list[str]:
        return [s for s in (self.api_key, self.secret_key, self.webhook_secret) if s]

    def __repr__(self) -> str:  # tracebacks and debuggers must not show a key
        return f"Credentials({self.describe()}, source={self.source!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Credentials | None:
        if env.get(envvars.API_KEY, "").strip():
            return cls(api_key=env[envvars.API_KEY].strip(), source=f"from ${envvars.API_KEY}")
        ak, sk = env.get(envvars.ACCESS_KEY, "").strip(), env.get(envvars.SECRET_KEY, "").strip()
        if ak and sk:
            return cls(access_key=ak, secret_key=sk, source=f"from ${envvars.ACCESS_KEY}/${envvars.SECRET_KEY}")
        return None


def credentials_path(config_dir: Path) -> Path:
    return config_dir / FILENAME


def _read_table(config_dir: Path, warn: Callable[[str], None]) -> dict[str, Any]:
    path = credentials_path(config_dir)
    try:
        info = path.stat()
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", code="bad_credentials") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"{path} is readable by other users (mode {stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}`")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        # The parser's message can quote the offending line, which may hold a secret.
        raise ConfigError(
            f"{path} is not valid TOML", hint=f"fix it or remove it and add the profile again", code="bad_credentials"
        ) from None
    return data


def load_credentials(config_dir: Path, *, warn: Callable[[str], None] = lambda _m: None) -> dict[str, Credentials]:
    path = credentials_path(config_dir)
    result: dict[str, Credentials] = {}
    for name, table in _read_table(config_dir, warn).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name}: expected a table", code="bad_credentials")
        values = {}
        for key in FIELDS:
            value = table.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{path}: {name} -> {key}: expected a string", code="bad_credentials")
            values[key] = value.strip() if value else None
        result[name] = Credentials(**values, source=f"{path} [{name}]")
    return result


def store_credentials(config_dir: Path, profile: str, creds: Credentials | None) -> None:
    """Replace (or with None remove) one profile's secrets, atomically, keeping the file 0600."""
    import tomli_w

    data = _read_table(config_dir, lambda _m: None)
    if creds is None:
        if profile not in data:
            return
        data.pop(profile)
    else:
        data[profile] = {key: getattr(creds, key) for key in FIELDS if getattr(creds, key)}
    try:
        write_atomic(credentials_path(config_dir), tomli_w.dumps(data).encode(), mode=0o600)
    except OSError as exc:
        raise cannot_write(config_dir, exc) from None


def read_secret(source: str, *, what: str, stdin_is_tty: bool, no_input: bool) -> str:
    """Read a secret from a file path, or from stdin for "-" (prompting, hidden, only on a terminal)."""
    if source == "-":
        if stdin_is_tty:
            if no_input:
                raise UsageError(f"{what}: stdin is a terminal and --no-input forbids prompting",
                                 hint=f"pipe the {what} in, or give a file")
            import getpass

            value = getpass.getpass(f"{what}: ")
        else:
            value = sys.stdin.readline()
    else:
        # The path is never repeated in a message: a key pasted where its file was expected would land in a
        # CI log.
        unnamed = f"(the value given is not repeated, in case it is the {what} itself)"
        try:
            value = Path(source).expanduser().read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"{what} file not found {unnamed}",
                             hint=f"give the path of a file that holds the {what}, or '-' to read it from stdin") from None
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: "~user" of no such user
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable as UTF-8 text"
            raise UsageError(f"cannot read the {what} file: {reason} {unnamed}") from None
    value = value.strip()
    if not value:
        raise UsageError(f"the {what} is empty", hint=f"give a file or stdin that holds the {what}")
    return value
