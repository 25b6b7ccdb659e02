"""Profiles: where they live, how they are validated, and how one is resolved.

Resolution order for the profile, provider, base URL, credentials, timeout and retries, in `resolve()`:
command-line flag, then `KLING_*` environment, then the profile in config.toml, then built-in defaults.
Each resolved value remembers where it came from, so `-v` can explain it. (Submit options merge the
profile's `defaults` under the flags in `cli/submit.py`.)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

from kling_cli import envvars, rules
from kling_cli.credentials import Credentials, load_credentials
from kling_cli.errors import ConfigError, UsageError
from kling_cli.fsutil import cannot_write, write_atomic
from kling_cli.presets import DIALECT_OPTIONS, DIALECTS, PRESETS, SANDBOX_PROFILE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 2
DEFAULT_SANDBOX_DIALECT = "kling"

#: keys of [profiles.NAME.defaults]: default submit options, named like the command-line options
DEFAULT_OPTION_KEYS = ("model", "i2v_model", "motion_model", "mode", "duration", "aspect_ratio", "negative_prompt",
                       "cfg_scale", "callback_url", "orientation", "keep_sound")
PROFILE_KEYS = {"provider", "base_url", "dialect", "api_key_env", "timeout", "retries", "defaults", "options",
                "upload_command", "upload_ttl"}
SANDBOX_KEYS = {"dialect", "task_seconds"}

Warn = Callable[[str], None]


def config_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get(envvars.CONFIG_DIR):
        return Path(env[envvars.CONFIG_DIR])
    from platformdirs import user_config_dir

    return Path(user_config_dir("kling"))


def data_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get(envvars.DATA_DIR):
        return Path(env[envvars.DATA_DIR])
    from platformdirs import user_data_dir

    return Path(user_data_dir("kling"))


@dataclass
class Profile:
    name: str
    provider: str
    base_url: str | None = None
    dialect: str | None = None
    api_key_env: str | None = None
    timeout: float | None = None
    retries: int | None = None
    #: the uploader: a command template that puts a local file where the provider can fetch it, printing its URL
    upload_command: str | None = None
    #: how long (seconds) the URLs it prints stay valid (presigned URLs); None: for good
    upload_ttl: float | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    #: dialect-specific settings (e.g. aigw header names), passed to the dialect as they are
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def effective_dialect(self) -> str:
        return self.dialect or PRESETS[self.provider].dialect or ""

    def to_toml(self) -> dict[str, Any]:
        body: dict[str, Any] = {"provider": self.provider}
        for key in ("base_url", "dialect", "api_key_env", "timeout", "retries", "upload_command", "upload_ttl"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        if self.defaults:
            body["defaults"] = dict(self.defaults)
        if self.options:
            body["options"] = dict(self.options)
        return body


@dataclass
class Config:
    path: Path
    default_profile: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        import tomli_w

        body: dict[str, Any] = {}
        if self.default_profile:
            body["default_profile"] = self.default_profile
        if self.sandbox:
            body["sandbox"] = dict(self.sandbox)
        if self.profiles:
            body["profiles"] = {name: p.to_toml() for name, p in sorted(self.profiles.items())}
        try:
            write_atomic(self.path, tomli_w.dumps(body).encode(), mode=0o644)
        except OSError as exc:
            raise cannot_write(self.path.parent, exc) from None


def _bad(path: Path, where: str, problem: str) -> ConfigError:
    return ConfigError(
        f"{path}: {where}: {problem}",
        hint=f"fix or remove that key in {path} (see `kling profile --help`)",
        code="bad_config",
    )


def _checked(path: Path, where: str, rule: Callable[[Any], Any], value: Any) -> Any:
    try:
        return rule(value)
    except ValueError as exc:
        raise _bad(path, where, str(exc)) from None


def _string(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(path, where, f"expected a non-empty string, got {value!r}")
    return value


def _validate_base_url(path: Path, where: str, value: Any) -> str:
    return _checked(path, where, rules.http_url, _string(path, where, value)).rstrip("/")


def _env_base_url(env: Mapping[str, str]) -> str:
    try:
        return rules.http_url(env[envvars.BASE_URL]).rstrip("/")
    except ValueError as exc:
        raise ConfigError(f"{envvars.BASE_URL} {exc}", hint=f"set {envvars.BASE_URL} to the provider's API base URL, "
                          "or unset it", code="bad_base_url") from None


def _parse_profile(path: Path, name: str, table: Any, warn: Warn) -> Profile:
    where = f"profiles -> {name}"
    if not isinstance(table, dict):
        raise _bad(path, where, "expected a table")
    for key in table:
        if key not in PROFILE_KEYS:
            warn(f"{path}: {where} -> {key}: unknown key, ignored")
    provider = table.get("provider")
    if not isinstance(provider, str) or provider not in PRESETS:
        raise _bad(path, f"{where} -> provider", f"unknown provider {provider!r}; valid: {', '.join(PRESETS)}")
    profile = Profile(name=name, provider=provider)
    if "base_url" in table:
        profile.base_url = _validate_base_url(path, f"{where} -> base_url", table["base_url"])
    if "dialect" in table:
        dialect = table["dialect"]
        if dialect not in DIALECTS:
            raise _bad(path, f"{where} -> dialect", f"unknown dialect {dialect!r}; valid: {', '.join(DIALECTS)}")
        profile.dialect = dialect
    if "api_key_env" in table:
        profile.api_key_env = _string(path, f"{where} -> api_key_env", table["api_key_env"])
    if "timeout" in table:
        profile.timeout = _checked(path, f"{where} -> timeout", rules.http_timeout, table["timeout"])
    if "retries" in table:
        profile.retries = _checked(path, f"{where} -> retries", rules.retries, table["retries"])
    if "upload_command" in table:
        profile.upload_command = _checked(path, f"{where} -> upload_command", rules.upload_command,
                                          table["upload_command"])
    if "upload_ttl" in table:
        profile.upload_ttl = _checked(path, f"{where} -> upload_ttl", rules.upload_ttl, table["upload_ttl"])
    if provider == "custom":
        if not profile.dialect:
            raise _bad(path, f"{where} -> dialect", "required for provider 'custom'")
        if not profile.base_url:
            raise _bad(path, f"{where} -> base_url", "required for provider 'custom'")
    defaults = table.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _bad(path, f"{where} -> defaults", "expected a table")
    for key, value in defaults.items():
        if key not in DEFAULT_OPTION_KEYS:
            warn(f"{path}: {where} -> defaults -> {key}: unknown key, ignored")
            continue
        # the rules of the same option given as a flag or a CSV cell
        profile.defaults[key] = _checked(path, f"{where} -> defaults -> {key}", partial(rules.submit_option, key),
                                         value)
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise _bad(path, f"{where} -> options", "expected a table")
    known = DIALECT_OPTIONS.get(profile.effective_dialect, {})
    for key, value in options.items():
        expected = known.get(key)
        if expected is None:
            warn(f"{path}: {where} -> options -> {key}: not an option of the {profile.effective_dialect} dialect, "
                 "ignored")
        elif not isinstance(value, expected) or (expected is dict and key == "rename"
                                                 and not all(isinstance(v, str) for v in value.values())):
            kind = "a table" if expected is dict else "a string"
            raise _bad(path, f"{where} -> options -> {key}", f"expected {kind}, got {value!r}")
        else:
            profile.options[key] = value
    return profile


def load_config(env: Mapping[str, str] = os.environ, *, warn: Warn = lambda _m: None) -> Config:
    path = config_dir(env) / "config.toml"
    config = Config(path=path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return config
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", code="bad_config") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", hint=f"fix the file or move it away: {path}", code="bad_config"
        ) from None
    for key in data:
        if key not in ("default_profile", "profiles", "sandbox"):
            warn(f"{path}: {key}: unknown key, ignored")
    if "default_profile" in data:
        config.default_profile = _string(path, "default_profile", data["default_profile"])
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise _bad(path, "profiles", "expected a table of [profiles.NAME]")
    for name, table in profiles.items():
        if name == SANDBOX_PROFILE:
            raise _bad(path, f"profiles -> {name}", "'sandbox' is built in; configure it in [sandbox]")
        config.profiles[name] = _parse_profile(path, name, table, warn)
    sandbox = data.get("sandbox", {})
    if not isinstance(sandbox, dict):
        raise _bad(path, "sandbox", "expected a table")
    for key, value in sandbox.items():
        if key not in SANDBOX_KEYS:
            warn(f"{path}: sandbox -> {key}: unknown key, ignored")
        elif key == "dialect" and value not in DIALECTS:
            raise _bad(path, "sandbox -> dialect", f"unknown dialect {value!r}; valid: {', '.join(DIALECTS)}")
        elif key == "task_seconds":
            _checked(path, "sandbox -> task_seconds", rules.task_seconds, value)
    config.sandbox = dict(sandbox)
    return config


@dataclass
class Resolved:
    """Everything a command needs to talk to one provider, with the source of each value."""

    profile: str
    provider: str
    dialect: str
    base_url: str | None
    credentials: Credentials
    timeout: float
    retries: int
    defaults: dict[str, Any]
    options: dict[str, Any]
    sandbox: bool
    sandbox_settings: dict[str, Any]
    sources: dict[str, str]
    #: the profile's uploader (`upload_command`) and the lifetime of the URLs it prints (`upload_ttl`, seconds)
    upload_command: str | None = None
    upload_ttl: float | None = None

    def explain(self) -> list[str]:
        base = rules.url_shown(self.base_url) if self.base_url else "(the built-in sandbox, started on demand)"
        return [
            f"profile {self.profile!r} ({self.sources['profile']})",
            f"provider {self.provider}, dialect {self.dialect} ({self.sources['dialect']})",
            f"base URL {base} ({self.sources['base_url']})",
            f"credentials: {self.credentials.describe()} ({self.credentials.source})",
            f"timeout {self.timeout:g}s ({self.sources['timeout']}), retries {self.retries} ({self.sources['retries']})",
        ]


def resolve(
    profile_flag: str | None,
    *,
    env: Mapping[str, str] = os.environ,
    dialect_flag: str | None = None,
    config: Config | None = None,
    warn: Warn = lambda _m: None,
) -> Resolved:
    if config is None:
        config = load_config(env, warn=warn)
    if profile_flag is not None:
        if not profile_flag.strip():
            raise UsageError("--profile needs a profile name, and it was given an empty one",
                             hint="name a profile (`kling profile list`), or leave --profile out for the default")
        name, name_source = profile_flag, "from --profile"
    elif env.get(envvars.PROFILE):
        name, name_source = env[envvars.PROFILE], f"from {envvars.PROFILE}"
    elif config.default_profile:
        name, name_source = config.default_profile, f"default_profile in {config.path}"
    else:
        raise ConfigError(
            "no profile is configured and none was named",
            hint="add one with `kling profile add NAME --provider kling --access-key AK --secret-key-file FILE`, "
            "or try everything without a key: `kling --profile sandbox ...`",
            code="no_profile",
        )
    sources = {"profile": name_source}
    if name == SANDBOX_PROFILE:
        return _resolve_sandbox(config, env, dialect_flag, sources)
    profile = config.profiles.get(name)
    if profile is None:
        known = ", ".join(sorted(config.profiles) + [SANDBOX_PROFILE])
        raise ConfigError(
            f"no profile named {name!r} ({name_source})",
            hint=f"known profiles: {known}; add one with `kling profile add {name} --provider ...`",
            code="no_profile",
        )
    preset = PRESETS[profile.provider]
    dialect = profile.effective_dialect
    sources["dialect"] = f"profile {name}" if profile.dialect else f"provider {profile.provider}"
    if dialect_flag and dialect_flag != dialect:
        raise ConfigError(
            f"--dialect {dialect_flag} applies to the sandbox only; profile {name!r} speaks {dialect}",
            code="bad_option",
        )
    if env.get(envvars.BASE_URL):
        base_url, sources["base_url"] = _env_base_url(env), f"from {envvars.BASE_URL}"
    elif profile.base_url:
        base_url, sources["base_url"] = profile.base_url, f"profile {name}"
    elif preset.base_url:
        base_url, sources["base_url"] = preset.base_url, f"default for provider {profile.provider}"
    else:
        raise ConfigError(
            f"profile {name!r} has no base_url and provider {profile.provider!r} has no default",
            hint=f"set it: `kling profile add {name} --provider {profile.provider} --base-url URL --force`",
            code="no_base_url",
        )
    credentials = profile_credentials(config, profile, env, warn)
    timeout, sources["timeout"] = (
        (profile.timeout, f"profile {name}") if profile.timeout is not None else (DEFAULT_TIMEOUT, "default")
    )
    retries, sources["retries"] = (
        (profile.retries, f"profile {name}") if profile.retries is not None else (DEFAULT_RETRIES, "default")
    )
    return Resolved(
        profile=name,
        provider=profile.provider,
        dialect=dialect,
        base_url=base_url,
        credentials=credentials,
        timeout=timeout,
        retries=retries,
        defaults=dict(profile.defaults),
        options=dict(profile.options),
        sandbox=False,
        sandbox_settings={},
        sources=sources,
        upload_command=profile.upload_command,
        upload_ttl=profile.upload_ttl,
    )


def profile_credentials(config: Config, profile: Profile, env: Mapping[str, str], warn: Warn) -> Credentials:
    from_env = Credentials.from_env(env)
    if from_env is not None:
        return from_env
    if profile.api_key_env:
        value = env.get(profile.api_key_env, "").strip()
        if value:
            return Credentials(api_key=value, source=f"from ${profile.api_key_env} (api_key_env)")
    stored = load_credentials(config.path.parent, warn=warn).get(profile.name)
    if stored is not None and stored.usable:
        return stored
    names = f"${profile.api_key_env}, " if profile.api_key_env else ""
    raise ConfigError(
        f"no credentials for profile {profile.name!r} (looked in {names}${envvars.API_KEY}, "
        f"{config.path.parent / 'credentials.toml'})",
        hint=f"store a key with `kling profile add {profile.name} --provider {profile.provider} --api-key-file FILE "
        "--force`, or set KLING_API_KEY",
        code="no_credentials",
    )


def _resolve_sandbox(
    config: Config, env: Mapping[str, str], dialect_flag: str | None, sources: dict[str, str]
) -> Resolved:
    from kling_cli.presets import SANDBOX_ACCESS_KEY, SANDBOX_API_KEY, SANDBOX_SECRET_KEY

    settings = dict(config.sandbox)
    if dialect_flag:
        dialect, sources["dialect"] = dialect_flag, "from --dialect"
    elif "dialect" in settings:
        dialect, sources["dialect"] = settings["dialect"], f"[sandbox] in {config.path}"
    else:
        dialect, sources["dialect"] = DEFAULT_SANDBOX_DIALECT, "default"
    if dialect not in DIALECTS:  # from --dialect: [sandbox] dialect is checked when the file is read
        raise UsageError(f"--dialect {dialect}: unknown dialect; valid: {', '.join(DIALECTS)}", code="bad_option")
    # An explicit base URL points the sandbox profile at a running `kling sandbox serve`.
    base_url = _env_base_url(env) if env.get(envvars.BASE_URL) else None
    sources["base_url"] = f"from {envvars.BASE_URL}" if base_url else "built-in sandbox"
    credentials = Credentials.from_env(env)
    if credentials is None:
        if dialect == "kling":
            # The official dialect's sandbox signs real HS256 JWTs, so the default path is exercised.
            credentials = Credentials(
                access_key=SANDBOX_ACCESS_KEY, secret_key=SANDBOX_SECRET_KEY, source="built-in sandbox keys"
            )
        else:
            credentials = Credentials(api_key=SANDBOX_API_KEY, source="built-in sandbox key")
    sources["timeout"] = sources["retries"] = "default"
    return Resolved(
        profile=SANDBOX_PROFILE,
        provider="sandbox",
        dialect=dialect,
        base_url=base_url,
        credentials=credentials,
        timeout=DEFAULT_TIMEOUT,
        retries=DEFAULT_RETRIES,
        defaults={},
        options={},
        sandbox=True,
        sandbox_settings=settings,
        sources=sources,
    )
