"""`kling profile add|list|show|use|remove`: settings in config.toml, secrets in credentials.toml (0600)."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Optional

import typer

from kling_cli.cli._app import profile_app
from kling_cli.cli._common import AppContext, command, rule
from kling_cli.errors import ConfigError, UsageError
from kling_cli.presets import DIALECTS, PRESETS, SANDBOX_PROFILE

ProviderChoice = Enum("ProviderChoice", {name: name for name in PRESETS}, type=str)  # type: ignore[misc]
DialectChoice = Enum("DialectChoice", {name: name for name in DIALECTS}, type=str)  # type: ignore[misc]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Profile name.", show_default=False)]
#: an existing profile (completed with the profile names)
ProfileArg = Annotated[str, typer.Argument(metavar="PROFILE", help="Profile name.", show_default=False)]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _load(ctx: AppContext):
    from kling_cli.config import load_config

    return load_config(warn=ctx.out.warn)


def _stored(ctx: AppContext, config) -> dict[str, Any]:
    from kling_cli.credentials import load_credentials

    return load_credentials(config.path.parent, warn=ctx.out.warn)


def _describe(name: str, config, stored: dict[str, Any]) -> dict[str, Any]:
    from kling_cli.credentials import mask

    if name == SANDBOX_PROFILE:
        dialect = config.sandbox.get("dialect", "kling")
        return {"name": name, "provider": "sandbox", "dialect": dialect, "base_url": None,
                "credentials": "built-in sandbox keys", "default": config.default_profile == name, "builtin": True}
    profile = config.profiles[name]
    creds = stored.get(name)
    preset = PRESETS[profile.provider]
    body: dict[str, Any] = {
        "name": name,
        "provider": profile.provider,
        "dialect": profile.effective_dialect,
        "base_url": profile.base_url or preset.base_url,
        "credentials": _credentials(config, profile, creds),
        "webhook_secret": mask(creds.webhook_secret) if creds is not None and creds.webhook_secret else None,
        "default": config.default_profile == name,
        "builtin": False,
    }
    if profile.api_key_env:
        body["api_key_env"] = profile.api_key_env
    for key in ("timeout", "retries", "upload_command", "upload_ttl"):
        if getattr(profile, key) is not None:
            body[key] = getattr(profile, key)
    if profile.defaults:
        body["defaults"] = dict(profile.defaults)
    if profile.options:
        body["options"] = dict(profile.options)
    return body


def _credentials(config, profile, stored) -> str | None:
    """The key a run of this profile would use, and where it comes from (an environment variable says which)."""
    import os

    from kling_cli.config import profile_credentials

    try:
        used = profile_credentials(config, profile, os.environ, lambda _m: None)
    except ConfigError:
        return f"none (${profile.api_key_env} is not set)" if profile.api_key_env else None
    from_file = stored is not None and used.source == stored.source
    return used.describe() if from_file else f"{used.describe()} {used.source}"


@command(profile_app, "add")
def profile_add(
    ctx: AppContext,
    name: NameArg,
    provider: Annotated[ProviderChoice, typer.Option("--provider", help="Which provider preset.",
                                                     show_default=False)],
    base_url: Annotated[Optional[str], typer.Option("--base-url", callback=rule("http_url"), help="API base URL "
                                                    "(default: the provider's).", show_default=False)] = None,
    dialect: Annotated[Optional[DialectChoice], typer.Option("--dialect", help="Wire format (required for "
                                                             "--provider custom).", show_default=False)] = None,
    api_key_file: Annotated[Optional[str], typer.Option("--api-key-file", metavar="PATH|-", help="Read the API key "
                                                        "from a file, or '-' for stdin.", show_default=False)] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", metavar="VAR", help="Read the API key "
                                                       "from this environment variable at run time.",
                                                       show_default=False)] = None,
    access_key: Annotated[Optional[str], typer.Option("--access-key", metavar="AK", help="Official API access key "
                                                      "(not a secret; pair it with --secret-key-file).",
                                                      show_default=False)] = None,
    secret_key_file: Annotated[Optional[str], typer.Option("--secret-key-file", metavar="PATH|-",
                                                           help="Read the official API secret key from a file, "
                                                           "or '-' for stdin.", show_default=False)] = None,
    webhook_secret_file: Annotated[Optional[str], typer.Option("--webhook-secret-file", metavar="PATH|-",
                                                               help="Read the official API's webhook secret "
                                                               "(whsec_...), used by `kling callback`.",
                                                               show_default=False)] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", callback=rule("http_timeout"), help="Seconds per "
                                                     "HTTP request, 0.1-3600.", show_default=False)] = None,
    retries: Annotated[Optional[int], typer.Option("--retries", callback=rule("retries"), help="Retries of a "
                                                   "failed request, 0-10.", show_default=False)] = None,
    upload_command: Annotated[Optional[str], typer.Option(
        "--upload-command", metavar="TEMPLATE", callback=rule("upload_command"), help="Uploader for local files the "
        "provider takes as URLs only: a command that prints the file's public URL; {path}, {name}, {sha256} and "
        "{ext} are filled in (see the README, 'Local files').", show_default=False)] = None,
    upload_ttl: Annotated[Optional[str], typer.Option(
        "--upload-ttl", metavar="DURATION", callback=rule("upload_ttl"), help="How long the uploader's URLs stay "
        "valid (presigned URLs), e.g. 6d or 12h; an older one is uploaded again.", show_default=False)] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default profile.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing profile of that name.")] = False,
) -> int:
    """Add a profile. Secrets come from a file or stdin, never from a flag value.

    Example: kling profile add prod --provider kling --access-key AK123 --secret-key-file ~/.kling-sk --default
    """
    from kling_cli.config import Profile
    from kling_cli.credentials import Credentials, read_secret, store_credentials

    if not _NAME.match(name):
        raise UsageError(f"invalid profile name {name!r}", hint="use letters, digits, '.', '_' and '-'")
    if name == SANDBOX_PROFILE:
        raise UsageError("'sandbox' is a built-in profile", hint="pick another name")
    preset = PRESETS[provider.value]
    if provider.value == "custom" and (dialect is None or base_url is None):
        raise UsageError("--provider custom needs --dialect and --base-url")
    if api_key_file and (access_key or secret_key_file):
        raise UsageError("give either --api-key-file or --access-key with --secret-key-file, not both")
    if bool(access_key) != bool(secret_key_file):
        raise UsageError("--access-key and --secret-key-file go together")
    if access_key and preset.auth != "jwt_or_key":
        raise UsageError(f"provider {provider.value} takes an API key (--api-key-file), not an access key")
    if [api_key_file, secret_key_file, webhook_secret_file].count("-") > 1:
        raise UsageError("only one secret can come from stdin ('-')")
    config = _load(ctx)
    if name in config.profiles and not force:
        raise UsageError(f"profile {name!r} already exists", hint="use --force to replace it")

    def secret(source: str, what: str) -> str:
        return read_secret(source, what=what, stdin_is_tty=ctx.stdin_is_tty, no_input=ctx.no_input)

    stored = _stored(ctx, config).get(name) if name in config.profiles else None
    creds = None
    if api_key_file:
        creds = Credentials(api_key=secret(api_key_file, "API key"))
    elif access_key:
        creds = Credentials(access_key=access_key, secret_key=secret(secret_key_file or "-", "secret key"))
    if webhook_secret_file:
        creds = creds or Credentials(api_key=stored.api_key if stored else None,
                                     access_key=stored.access_key if stored else None,
                                     secret_key=stored.secret_key if stored else None)
        creds.webhook_secret = secret(webhook_secret_file, "webhook secret")
    elif creds is not None and stored is not None:
        creds.webhook_secret = stored.webhook_secret
    previous = config.profiles.get(name)
    old = previous if previous is not None and previous.provider == provider.value else None
    # --force changes what is given and keeps the rest (a new provider starts from scratch)
    config.profiles[name] = Profile(
        name=name,
        provider=provider.value,
        base_url=base_url.rstrip("/") if base_url else (old.base_url if old else None),
        dialect=dialect.value if dialect else (old.dialect if old else None),
        api_key_env=api_key_env or (old.api_key_env if old else None),
        timeout=timeout if timeout is not None else (old.timeout if old else None),
        retries=retries if retries is not None else (old.retries if old else None),
        upload_command=upload_command or (old.upload_command if old else None),
        upload_ttl=upload_ttl if upload_ttl is not None else (old.upload_ttl if old else None),
        defaults=dict(old.defaults) if old else {},
        options=dict(old.options) if old else {},
    )
    if default or not config.default_profile:
        config.default_profile = name
    config.save()
    if creds is not None:
        store_credentials(config.path.parent, name, creds)
    ctx.out.info(f"added profile {name!r} ({provider.value}, {config.profiles[name].effective_dialect} dialect)"
                 + (" as the default" if config.default_profile == name else ""))
    if (creds is None or not creds.usable) and stored is None and not api_key_env:
        ctx.out.info("no key given: set KLING_API_KEY, or run this again with --api-key-file and --force")
    if ctx.out.json_mode:
        ctx.out.json(_describe(name, config, _stored(ctx, config)))
    return 0


@command(profile_app, "list")
def profile_list(ctx: AppContext) -> int:
    """List profiles; the default one is marked with '*'.

    Example: kling profile list --json
    """
    config = _load(ctx)
    stored = _stored(ctx, config)
    rows = [_describe(name, config, stored) for name in sorted(config.profiles)]
    rows.append(_describe(SANDBOX_PROFILE, config, stored))
    if ctx.out.json_mode:
        for row in rows:
            ctx.out.json(row)
        return 0
    table = [("", "NAME", "PROVIDER", "DIALECT", "BASE URL", "CREDENTIALS")]
    for row in rows:
        table.append(("*" if row["default"] else "", row["name"], row["provider"], row["dialect"],
                      row["base_url"] or "(built in)", row["credentials"] or "(none)"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        ctx.out.data("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


@command(profile_app, "show")
def profile_show(ctx: AppContext, name: ProfileArg) -> int:
    """Show one profile, secrets masked.

    Example: kling profile show prod
    """
    config = _load(ctx)
    if name not in config.profiles and name != SANDBOX_PROFILE:
        raise ConfigError(f"no profile named {name!r}", hint="see `kling profile list`", code="no_profile")
    body = _describe(name, config, _stored(ctx, config))
    if ctx.out.json_mode:
        ctx.out.json(body)
        return 0
    width = max(len(key) for key in body)
    for key, value in body.items():
        if value is not None:
            ctx.out.data(f"{key + ':':<{width + 1}} {value}")
    return 0


@command(profile_app, "use")
def profile_use(ctx: AppContext, name: ProfileArg) -> int:
    """Make a profile the default.

    Example: kling profile use prod
    """
    config = _load(ctx)
    if name not in config.profiles and name != SANDBOX_PROFILE:
        raise ConfigError(f"no profile named {name!r}", hint="see `kling profile list`", code="no_profile")
    config.default_profile = name
    config.save()
    ctx.out.info(f"default profile is now {name!r}")
    return 0


@command(profile_app, "remove")
def profile_remove(ctx: AppContext, name: ProfileArg) -> int:
    """Remove a profile and its stored secrets.

    Example: kling profile remove old
    """
    from kling_cli.credentials import store_credentials

    config = _load(ctx)
    if name not in config.profiles:
        raise ConfigError(f"no profile named {name!r}", hint="see `kling profile list`", code="no_profile")
    del config.profiles[name]
    if config.default_profile == name:
        config.default_profile = None
        ctx.out.warn(f"{name!r} was the default profile; choose another with `kling profile use NAME`")
    config.save()
    store_credentials(config.path.parent, name, None)
    ctx.out.info(f"removed profile {name!r}")
    return 0
