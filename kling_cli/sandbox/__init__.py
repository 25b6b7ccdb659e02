"""The built-in emulator of the provider dialects, on loopback. See `core.Sandbox`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from kling_cli import envvars


def task_seconds_setting(settings: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> float:
    from kling_cli.sandbox.core import DEFAULT_TASK_SECONDS

    if env.get(envvars.SANDBOX_TASK_SECONDS):
        from kling_cli import rules
        from kling_cli.errors import ConfigError

        try:
            return rules.task_seconds(rules.parse_number(env[envvars.SANDBOX_TASK_SECONDS]))
        except ValueError as exc:
            raise ConfigError(f"{envvars.SANDBOX_TASK_SECONDS} {exc}", code="bad_option") from None
    return float(settings.get("task_seconds", DEFAULT_TASK_SECONDS))


def new_sandbox(state_dir: Path, **options: Any):
    """A `core.Sandbox` serving every emulation of the registry (`emulations.EMULATIONS`); `options` are
    `Sandbox`'s keyword arguments. Not started."""
    from kling_cli.sandbox.core import Sandbox
    from kling_cli.sandbox.emulations import EMULATIONS

    return Sandbox(state_dir, EMULATIONS, **options)


def start_background(state_dir: Path, settings: Mapping[str, Any] | None = None):
    """Start a sandbox on 127.0.0.1, on a free port, in a daemon thread of this process."""
    return new_sandbox(state_dir, task_seconds=task_seconds_setting(settings or {})).start()
