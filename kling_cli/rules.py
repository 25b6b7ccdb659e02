"""One set of rules for the values a user gives, whatever their source: a flag, the environment, a profile
or a CSV cell.

Each check takes a value of its type (`cell()` converts a CSV cell's text first) and raises ValueError
saying what is wrong ("must be ..."); the caller puts the value's name or place in front of it and picks
the error (exit 2 for a flag or a CSV row, exit 3 for a profile). Numbers are finite and in range, text is valid UTF-8, URLs are
http(s) with a host, ids can be URL path segments.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Callable
from urllib.parse import urlsplit

from kling_cli.models import ASPECT_RATIOS, id_problem, json_object, quoted

ENUMS = {"mode": ("std", "pro"), "aspect_ratio": ASPECT_RATIOS, "orientation": ("image", "video")}
TRUE, FALSE = ("yes", "true", "1", "y", "on"), ("no", "false", "0", "n", "off")
DURATION = (3, 15)
#: what an upload_command template substitutes
PLACEHOLDER = re.compile(r"\{(path|name|sha256|ext)\}")


def _shown(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def number(value: Any, *, low: float | None = None, high: float | None = None, above: float | None = None,
           integer: bool = False) -> Any:
    """A finite number (a whole one with `integer`) with `low <= value <= high` and `value > above`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ValueError(f"must be {'a whole number' if integer else 'a number'}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    if above is not None and value <= above:
        raise ValueError(f"must be more than {above:g}, got {_shown(value)}")
    if low is not None and value < low:
        raise ValueError(f"must be at least {low:g}, got {_shown(value)}")
    if high is not None and value > high:
        raise ValueError(f"must be at most {high:g}, got {_shown(value)}")
    return value


def parse_number(value: str) -> float:
    """A number written as text (an environment variable, a CSV cell), for `number()` to check."""
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"must be a number, got {quoted(value)}") from None


def text(value: Any) -> str:
    """Text that can be sent: arguments with bytes that are not UTF-8 arrive as lone surrogates."""
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {value!r}")
    if any("\ud800" <= char <= "\udfff" for char in value):
        raise ValueError("must be valid UTF-8 text, and it holds bytes that are not")
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


#: the password of a URL's user part (`scheme://user:PASSWORD@host`), found even where the URL does not parse
_URL_PASSWORD = re.compile(r"(//[^/?#@\s:]*:)[^/?#\s]*@")


def url_shown(value: str) -> str:
    """A URL fit to print: a password in its user part becomes ****."""
    return _URL_PASSWORD.sub(r"\1****@", value)


def http_url(value: Any) -> str:
    value = text(value)
    shown = quoted(url_shown(value))
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError:
        raise ValueError(f"must be a valid URL, got {shown}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, got {shown}")
    if any(char.isspace() or unicodedata.category(char).startswith("C") for char in value):
        raise ValueError(f"must be a URL without whitespace or control characters, got {shown}")
    return value


def identifier(value: Any) -> str:
    """An id that becomes a URL path segment (task ids, external ids)."""
    value = text(value)
    problem = id_problem(value)
    if problem:
        raise ValueError(f"must be usable as an id, and {quoted(value)} is not: {problem}")
    return value


def media(value: Any) -> str:
    """An image or video: an http(s) URL (sent as is), or a local file (read and checked by preflight)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError("must be a file or an http(s) URL")
    return http_url(value) if value.lower().startswith(("http://", "https://")) else value


def _enum(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in ENUMS[name]:
            raise ValueError(f"must be one of {', '.join(ENUMS[name])}, got {quoted(str(value))}")
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


#: the submit options, named as in profile defaults and CSV columns (`--cfg-scale` is `cfg_scale`)
SUBMIT_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "prompt": text,
    "negative_prompt": text,
    "model": text,
    "motion_model": text,
    "i2v_model": text,
    "mode": _enum("mode"),
    "aspect_ratio": _enum("aspect_ratio"),
    "orientation": _enum("orientation"),
    "duration": lambda value: number(value, low=DURATION[0], high=DURATION[1], integer=True),
    "cfg_scale": lambda value: float(number(value, low=0, high=1)),
    "callback_url": http_url,
    "keep_sound": _boolean,
    "external_id": identifier,
    "camera_control": _object,
    "image": media,
    "image_tail": media,
    "video": media,
}


def submit_option(name: str, value: Any) -> Any:
    """A submit option's value, checked (and normalized: a whole cfg_scale becomes a float)."""
    return SUBMIT_OPTIONS[name](value)


def cell(name: str, value: str) -> Any:
    """A CSV cell's text as the value of its column, checked like the same option given as a flag."""
    if name == "duration":
        try:
            typed: Any = int(value)
        except ValueError:
            raise ValueError(f"must be a whole number of seconds, got {quoted(value)}") from None
    elif name == "cfg_scale":
        typed = parse_number(value)
    elif name == "keep_sound":
        if value.lower() not in TRUE + FALSE:
            raise ValueError(f"must be yes or no, got {quoted(value)}")
        typed = value.lower() in TRUE
    elif name == "camera_control":
        try:
            typed = json_object(value, "")
        except ValueError as exc:  # "is not valid JSON", "must be a JSON object"
            raise ValueError(str(exc).strip()) from None
    else:
        typed = value
    return submit_option(name, typed)


# --- settings ------------------------------------------------------------------------------------

def http_timeout(value: Any) -> float:
    """Seconds per HTTP request (profile `timeout`, `profile add --timeout`)."""
    return float(number(value, low=0.1, high=3600))


def retries(value: Any) -> int:
    return number(value, low=0, high=10, integer=True)


def poll_interval(value: Any) -> float:
    """`--interval`: seconds between two queries of a task."""
    return float(number(value, low=0.5, high=3600))


def task_seconds(value: Any) -> float:
    """How long a sandbox task takes."""
    return float(number(value, low=0, high=86400))


_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def upload_ttl(value: Any) -> float:
    """How long an uploaded file's URL lives (profile `upload_ttl`): seconds, or text like `90m`, `12h`, `6d`."""
    if isinstance(value, str):
        match = _TTL.match(value)
        if not match:
            raise ValueError(f"must be a duration like 3600, 90m, 12h or 6d, got {quoted(value)}")
        value = float(match.group(1)) * _TTL_UNITS[match.group(2)]
    return float(number(value, above=0, high=10 * 365 * 86400))


def upload_command(value: Any) -> str:
    """A command template (profile `upload_command`): split once like a shell would, run without one."""
    import shlex

    value = text(value)
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot be split into arguments ({exc}): {quoted(value, 80)}") from None
    if not words:
        raise ValueError("is empty: name the program to run and {path}, e.g. "
                         "\"rclone copyto {path} remote:bucket/{sha256}.{ext}\"")
    if PLACEHOLDER.search(words[0]):
        raise ValueError("chooses the program with a placeholder: the file being uploaded would say what runs")
    if _placeholder_in_code(words):
        # substituted as text into shell code, a file name with quotes or $(...) would run as code
        raise ValueError("puts a placeholder inside a shell script: pass the values as arguments after the "
                         "script and use \"$1\", \"$2\" in it (see the README's templates)")
    if "{path}" not in value:
        raise ValueError("names no {path}: the uploader would not know which file to upload")
    return value


#: programs that run code given as an argument, and the flag letters that introduce it
_INTERPRETERS = {**dict.fromkeys(("sh", "bash", "dash", "zsh", "ksh", "ash", "fish"), "c"), "python": "c",
                 "perl": "eE", "ruby": "e", "node": "ep"}


def _placeholder_in_code(words: list[str]) -> bool:
    """Whether a placeholder lands in code an interpreter runs: wherever the interpreter stands (after env,
    busybox, timeout...), the code being the first word after its flag that is not an option (`-e`, `--`)."""
    letters, in_code, previous = None, False, ""
    for word in words:
        program = re.sub(r"[\d.]+$", "", word.rsplit("/", 1)[-1])  # python3.12 is python
        if program in _INTERPRETERS:
            letters, in_code = _INTERPRETERS[program], False
            continue
        if not in_code and letters and re.fullmatch(rf"-[a-zA-Z]*[{letters}][a-zA-Z]*", word):
            in_code = True
            continue
        if in_code:
            if PLACEHOLDER.search(word):
                return True
            if not word.startswith(("-", "+")) and previous not in ("-o", "+o", "-O", "+O"):
                in_code = False  # that was the code; what follows are its arguments
        previous = word
    return False


def wait_timeout(value: Any) -> float:
    """`--timeout` of a command that submits and waits: waiting no time at all would pay for nothing."""
    return float(number(value, above=0))
