"""Provider presets: a name, a dialect (wire format), a default base URL and an auth scheme.

Kept free of heavy imports: the config loader validates against it on every start.
"""

from __future__ import annotations

from typing import NamedTuple

DIALECTS = ("kling", "cometapi", "newapi", "acedata", "aigw")


class Preset(NamedTuple):
    name: str
    dialect: str | None
    base_url: str | None
    #: "jwt_or_key": access key + secret key (HS256 JWT) or a plain API key; "key": a plain API key
    auth: str
    summary: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("kling", "kling", "https://api-singapore.klingai.com", "jwt_or_key", "the official Kling API"),
        Preset("cometapi", "cometapi", "https://api.cometapi.com", "key", "CometAPI"),
        Preset("ezmodel", "newapi", "https://api.ezmodel.cloud", "key", "ezmodel (a new-api gateway)"),
        Preset("acedata", "acedata", "https://api.acedata.cloud", "key", "AceDataCloud"),
        Preset("aigw", "aigw", None, "key", "the aigw gateway (set base_url)"),
        Preset("custom", None, None, "jwt_or_key", "any gateway: set dialect and base_url"),
    )
}

#: the `[profiles.NAME.options]` each dialect understands, and their types (see the README's aigw section)
DIALECT_OPTIONS: dict[str, dict[str, type]] = {
    "aigw": {"auth_header": str, "auth_prefix": str, "t2v_model": str, "i2v_model": str, "motion_model": str,
             "params_key": str, "rename": dict, "body": dict},
}

SANDBOX_PROFILE = "sandbox"

#: fixed credentials the sandbox accepts; they are not secrets and buy nothing
SANDBOX_API_KEY = "sandbox-api-key"
SANDBOX_ACCESS_KEY = "sandbox-access-key"
SANDBOX_SECRET_KEY = "sandbox-secret-key-0123456789abcdef"
