"""The dialect registry: one module per wire format, looked up by name."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Mapping

from kling_cli.errors import ConfigError
from kling_cli.providers.base import Dialect

_MODULES = {
    "kling": ("kling_cli.providers.kling", "KlingDialect"),
    "cometapi": ("kling_cli.providers.cometapi", "CometApiDialect"),
    "newapi": ("kling_cli.providers.newapi", "NewApiDialect"),
    "acedata": ("kling_cli.providers.acedata", "AceDataDialect"),
    "aigw": ("kling_cli.providers.aigw", "AigwDialect"),
}


def get_dialect(name: str, options: Mapping[str, Any] | None = None) -> Dialect:
    try:
        module, cls = _MODULES[name]
    except KeyError:
        raise ConfigError(
            f"unknown dialect {name!r}; valid: {', '.join(_MODULES)}", code="bad_config"
        ) from None
    return getattr(import_module(module), cls)(options)
