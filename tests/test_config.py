"""Profiles, credentials and the resolution order: flag, then KLING_* env, then profile, then defaults."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kling_cli.config import DEFAULT_TIMEOUT, load_config, resolve
from kling_cli.errors import ConfigError, UsageError
from kling_cli.presets import SANDBOX_ACCESS_KEY

SECRET = "sk-live-0123456789abcdef-SECRET"


def write_config(text: str) -> Path:
    path = Path(os.environ["KLING_CONFIG_DIR"]) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def add_keyed_profile(kling, tmp_path, name="prod", *extra, provider="kling"):
    key_file = tmp_path / "key.txt"
    key_file.write_text(SECRET + "\n")
    result = kling("profile", "add", name, "--provider", provider, "--api-key-file", key_file, *extra)
    assert result.exit_code == 0, result
    return result


def test_no_profile_at_all_exits_3_and_says_how(kling):
    result = kling("status", "123")
    assert result.exit_code == 3
    assert "no profile is configured" in result.stderr
    assert "kling profile add" in result.stderr and "--profile sandbox" in result.stderr
    assert result.stdout == ""


def test_no_profile_in_json_mode_is_a_json_error_on_stdout_only(kling):
    result = kling("status", "123", "--json")
    assert result.exit_code == 3 and result.stderr == ""
    (body,) = result.json_lines()
    assert body["error"]["code"] == "no_profile" and "--profile sandbox" in body["error"]["hint"]


def test_unknown_profile_names_the_known_ones(kling, tmp_path):
    add_keyed_profile(kling, tmp_path)
    result = kling("--profile", "nope", "status", "1")
    assert result.exit_code == 3 and "no profile named 'nope'" in result.stderr and "prod" in result.stderr


def test_credentials_file_is_0600_and_config_holds_no_secret(kling, tmp_path):
    add_keyed_profile(kling, tmp_path)
    config_dir = Path(os.environ["KLING_CONFIG_DIR"])
    creds = config_dir / "credentials.toml"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert SECRET in creds.read_text()
    assert SECRET not in (config_dir / "config.toml").read_text()
    assert not [p for p in config_dir.iterdir() if p.name.endswith(".tmp")]


def test_world_readable_credentials_warn(kling, tmp_path):
    add_keyed_profile(kling, tmp_path)
    creds = Path(os.environ["KLING_CONFIG_DIR"]) / "credentials.toml"
    creds.chmod(0o644)
    result = kling("profile", "show", "prod")
    assert result.exit_code == 0
    assert "readable by other users" in result.stderr and "chmod 600" in result.stderr


def test_secrets_are_masked_everywhere(kling, tmp_path, sandbox):
    add_keyed_profile(kling, tmp_path, "prod", "--base-url", sandbox.base_url("kling"))
    for args in (["profile", "show", "prod"], ["profile", "show", "prod", "--json"], ["profile", "list"],
                 ["profile", "list", "--json"], ["-vv", "status", "1", "--kind", "t2v"]):
        result = kling(*args)
        assert SECRET not in result.stdout + result.stderr, args
    sent = kling("-vv", "status", "1", "--kind", "t2v")  # the key went over the wire, and was refused
    assert sent.exit_code == 4 and "GET /v1/videos/text2video/1 -> 401" in sent.stderr
    shown = kling("profile", "show", "prod").stdout
    assert "****" + SECRET[-4:] in shown


def test_secret_from_stdin(kling):
    result = kling("profile", "add", "p", "--provider", "kling", "--access-key", "AK1", "--secret-key-file", "-",
                   input=SECRET + "\n")
    assert result.exit_code == 0, result
    creds = (Path(os.environ["KLING_CONFIG_DIR"]) / "credentials.toml").read_text()
    assert "AK1" in creds and SECRET in creds


def test_secrets_are_never_flag_values(kling):
    result = kling("profile", "add", "p", "--provider", "kling", "--api-key", SECRET)
    assert result.exit_code == 2
    assert SECRET not in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--provider", "custom"], "needs --dialect and --base-url"),
        (["--provider", "kling", "--access-key", "AK"], "go together"),
        (["--provider", "kling", "--base-url", "ftp://x"], "http:// or https://"),
        (["--provider", "kling", "--api-key-file", "/nonexistent/key"], "file not found"),
    ],
)
def test_profile_add_refuses_bad_input(kling, args, message):
    result = kling("profile", "add", "p", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_profile_add_does_not_overwrite_without_force(kling, tmp_path):
    add_keyed_profile(kling, tmp_path)
    result = kling("profile", "add", "prod", "--provider", "kling")
    assert result.exit_code == 2 and "--force" in result.stderr
    assert kling("profile", "add", "prod", "--provider", "kling", "--base-url", "https://x.test", "--force").exit_code == 0
    # replacing the settings keeps the stored key
    assert resolve(None).credentials.api_key == SECRET


def test_profile_use_list_remove(kling, tmp_path):
    add_keyed_profile(kling, tmp_path, "a")
    add_keyed_profile(kling, tmp_path, "b")
    assert load_config().default_profile == "a"  # the first profile becomes the default
    assert kling("profile", "use", "b").exit_code == 0
    rows = {row["name"]: row for row in kling("profile", "list", "--json").json_lines()}
    assert rows["b"]["default"] and not rows["a"]["default"] and rows["sandbox"]["builtin"]
    removed = kling("profile", "remove", "b")
    assert removed.exit_code == 0 and "was the default" in removed.stderr
    assert "[b]" not in (Path(os.environ["KLING_CONFIG_DIR"]) / "credentials.toml").read_text()
    assert kling("profile", "remove", "b").exit_code == 3


def test_resolution_order_flag_env_profile_default(tmp_path, monkeypatch):
    write_config('default_profile = "a"\n'
                 '[profiles.a]\nprovider = "kling"\ntimeout = 12\n'
                 '[profiles.b]\nprovider = "custom"\ndialect = "kling"\nbase_url = "https://b.test/"\n')
    monkeypatch.setenv("KLING_API_KEY", "env-key-000000000000")
    got = resolve(None)
    assert (got.profile, got.base_url, got.timeout) == ("a", "https://api-singapore.klingai.com", 12)
    assert got.sources["base_url"] == "default for provider kling" and got.sources["timeout"] == "profile a"
    assert got.retries == 2 and got.sources["retries"] == "default"
    monkeypatch.setenv("KLING_PROFILE", "b")
    got = resolve(None)
    assert (got.profile, got.base_url) == ("b", "https://b.test")
    assert got.sources["profile"] == "from KLING_PROFILE" and got.timeout == DEFAULT_TIMEOUT
    monkeypatch.setenv("KLING_BASE_URL", "http://env.test")
    assert resolve(None).base_url == "http://env.test"
    got = resolve("a")
    assert got.profile == "a" and got.sources["profile"] == "from --profile"
    assert got.base_url == "http://env.test" and got.sources["base_url"] == "from KLING_BASE_URL"
    assert got.credentials.api_key == "env-key-000000000000"


def test_credentials_order_env_then_api_key_env_then_file(kling, tmp_path, monkeypatch):
    add_keyed_profile(kling, tmp_path, "prod", "--api-key-env", "MY_KEY")
    assert resolve(None).credentials.api_key == SECRET
    monkeypatch.setenv("MY_KEY", "from-my-key")
    assert resolve(None).credentials.api_key == "from-my-key"
    monkeypatch.setenv("KLING_ACCESS_KEY", "ak")
    monkeypatch.setenv("KLING_SECRET_KEY", "sk")
    creds = resolve(None).credentials
    assert (creds.access_key, creds.secret_key) == ("ak", "sk")
    monkeypatch.setenv("KLING_API_KEY", "from-kling-api-key")
    assert resolve(None).credentials.api_key == "from-kling-api-key"


def test_missing_key_is_a_config_error_naming_where_it_looked(kling):
    assert kling("profile", "add", "prod", "--provider", "kling").exit_code == 0
    result = kling("status", "1")
    assert result.exit_code == 3
    assert "no credentials for profile 'prod'" in result.stderr and "credentials.toml" in result.stderr


@pytest.mark.parametrize(
    "text,where",
    [
        ('[profiles.a]\nprovider = "nope"\n', "profiles -> a -> provider"),
        ('[profiles.a]\nprovider = "kling"\ntimeout = "abc"\n', "profiles -> a -> timeout"),
        ('[profiles.a]\nprovider = "custom"\nbase_url = "https://x"\n', "profiles -> a -> dialect"),
        ('[profiles.a]\nprovider = "kling"\n[profiles.a.defaults]\nduration = "5"\n', "defaults -> duration"),
        ("default_profile = [\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_file_and_key(kling, text, where):
    path = write_config(text)
    result = kling("--profile", "a", "status", "1")
    assert result.exit_code == 3, result
    assert str(path) in result.stderr and where in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_keys_warn_but_work(kling):
    write_config('[profiles.a]\nprovider = "kling"\ncolour = "blue"\n')
    warnings: list[str] = []
    config = load_config(warn=warnings.append)
    assert "a" in config.profiles and any("colour" in w for w in warnings)


def test_sandbox_profile_is_built_in(kling):
    got = resolve("sandbox")
    assert got.sandbox and got.dialect == "kling" and got.credentials.access_key == SANDBOX_ACCESS_KEY
    with pytest.raises(UsageError):  # a bad --dialect is a usage error: exit 2
        resolve("sandbox", dialect_flag="nonsense")
    assert kling("profile", "add", "sandbox", "--provider", "kling").exit_code == 2


def test_verbose_explains_the_resolution(kling, tmp_path):
    add_keyed_profile(kling, tmp_path)
    result = kling("-v", "status", "1", env={"KLING_BASE_URL": "http://127.0.0.1:9"})
    assert "profile 'prod' (default_profile in" in result.stderr
    assert "base URL http://127.0.0.1:9 (from KLING_BASE_URL)" in result.stderr
    assert "timeout 30s (default)" in result.stderr


@pytest.mark.parametrize(
    "text,where",
    [
        ('[profiles.a]\nprovider = ["aigw"]\n', "profiles -> a -> provider"),
        ('[profiles.a]\nprovider = "aigw"\nbase_url = "https://x"\n[profiles.a.options]\nrename = "x"\n',
         "options -> rename"),
        ('[profiles.a]\nprovider = "aigw"\nbase_url = "https://x"\n[profiles.a.options]\nbody = 3\n',
         "options -> body"),
    ],
)
def test_bad_values_of_any_type_are_config_errors(kling, text, where):
    path = write_config(text)
    result = kling("--profile", "a", "status", "1")
    assert result.exit_code == 3 and where in result.stderr and str(path) in result.stderr


def test_unknown_dialect_options_warn(kling):
    write_config('[profiles.a]\nprovider = "kling"\n[profiles.a.options]\nauth_header = "X"\n')
    warnings: list[str] = []
    config = load_config(warn=warnings.append)
    assert config.profiles["a"].options == {} and any("not an option of the kling dialect" in w for w in warnings)
