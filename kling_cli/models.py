"""The normalized task every dialect parses into, and the normalized requests they translate from.

`Task.to_json()` is the stable interface printed by `--json`; human output may change.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Union

KINDS = ("t2v", "i2v", "motion")
#: The model each kind runs unless a profile (`model`, `i2v_model`, `motion_model`) or --model says otherwise: one
#: default, sent explicitly by every dialect whose body has a model field, so the same command makes the same video
#: on every provider. kling-v2-6 is in every provider's model list for each kind, and is the official
#: motion-control default; left out, the official text- and image-to-video default would be kling-v1.
DEFAULT_MODELS = {"t2v": "kling-v2-6", "i2v": "kling-v2-6", "motion": "kling-v2-6"}
#: every text-to-video aspect ratio some provider takes (CometAPI's list); each dialect says which it takes
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3")
#: longer than any provider's ids (Kling 18-19 digits, aigw 32 hex, AceData a 36-char uuid) and any sane external id
ID_MAX_LENGTH = 128
_ID_FORBIDDEN = set("/\\?#%")


class TaskStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


@dataclass
class Video:
    id: str | None
    url: str | None
    #: seconds, as a number (providers send strings like "5.1")
    duration: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "duration": self.duration}


@dataclass
class TaskError:
    code: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass
class Cost:
    """What the provider says the task cost, in its own unit (Kling "units", aigw "points")."""

    amount: float
    unit: str

    def to_json(self) -> dict[str, Any]:
        return {"amount": self.amount, "unit": self.unit}


@dataclass
class Task:
    id: str
    kind: str
    status: TaskStatus
    raw_status: str | None = None
    #: the model asked for (the provider's name for it), where known
    model: str | None = None
    progress: float | None = None
    videos: list[Video] = field(default_factory=list)
    error: TaskError | None = None
    external_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    provider: str | None = None
    dialect: str | None = None
    profile: str | None = None
    cost: Cost | None = None
    #: the provider's own payload, printed only with --raw
    raw: Any = None
    #: what was asked for (prompt, model...), where known; kept in download sidecars, not in --json
    request: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def without_video(self) -> bool:
        """Succeeded by the provider's word, yet no video URL: never to be taken for a plain success."""
        return self.status is TaskStatus.SUCCEEDED and not any(video.url for video in self.videos)

    def to_json(self, *, raw: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "provider": self.provider,
            "dialect": self.dialect,
            "profile": self.profile,
            "kind": self.kind,
            "model": self.model,
            "status": self.status.value,
            "raw_status": self.raw_status,
            "progress": self.progress,
            "videos": [v.to_json() for v in self.videos],
            "error": self.error.to_json() if self.error else None,
            "external_id": self.external_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "cost": self.cost.to_json() if self.cost else None,
        }
        if raw:
            body["raw"] = self.raw
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Task:
        """A task as `--json` printed it (the inverse of `to_json`); unknown values become `unknown`."""
        try:
            status = TaskStatus(body.get("status"))
        except ValueError:
            status = TaskStatus.UNKNOWN
        listed = body.get("videos")
        videos = [Video(id=to_str_id(v.get("id")), url=v.get("url") if isinstance(v.get("url"), str) else None,
                        duration=to_number(v.get("duration")))
                  for v in (listed if isinstance(listed, list) else []) if isinstance(v, dict)]
        error = body.get("error")
        cost = body.get("cost")
        kind = body.get("kind")
        return cls(
            id=to_str_id(body.get("id")) or "",
            kind=kind if kind in KINDS else "t2v",
            status=status,
            raw_status=body.get("raw_status") if isinstance(body.get("raw_status"), str) else None,
            model=body.get("model") if isinstance(body.get("model"), str) else None,
            progress=to_number(body.get("progress")),
            videos=videos,
            error=TaskError(error.get("code"), str(error.get("message", ""))) if isinstance(error, dict) else None,
            external_id=body.get("external_id") if isinstance(body.get("external_id"), str) else None,
            created_at=body.get("created_at") if isinstance(body.get("created_at"), str) else None,
            updated_at=body.get("updated_at") if isinstance(body.get("updated_at"), str) else None,
            provider=body.get("provider") if isinstance(body.get("provider"), str) else None,
            dialect=body.get("dialect") if isinstance(body.get("dialect"), str) else None,
            profile=body.get("profile") if isinstance(body.get("profile"), str) else None,
            cost=Cost(to_number(cost.get("amount")) or 0.0, str(cost.get("unit", ""))) if isinstance(cost, dict)
            else None,
            raw=body.get("raw"),
        )


@dataclass
class MediaRef:
    """An image or video given as a URL or as a local file."""

    value: str
    is_url: bool

    @classmethod
    def parse(cls, value: str) -> MediaRef:
        lowered = value.lower()
        return cls(value, lowered.startswith("http://") or lowered.startswith("https://"))


@dataclass
class T2VRequest:
    prompt: str
    model: str | None = None
    mode: str | None = None
    duration: int | None = None
    aspect_ratio: str | None = None
    negative_prompt: str | None = None
    cfg_scale: float | None = None
    camera_control: dict[str, Any] | None = None
    callback_url: str | None = None
    external_id: str | None = None
    #: provider fields kling-cli does not model, sent as given
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class I2VRequest:
    """Image to video: `image` is the first frame, `image_tail` the last (Kling's end-frame control)."""

    image: MediaRef
    image_tail: MediaRef | None = None
    prompt: str | None = None
    model: str | None = None
    mode: str | None = None
    duration: int | None = None
    #: taken by some providers only (AceData); on Kling the video takes the image's aspect ratio
    aspect_ratio: str | None = None
    negative_prompt: str | None = None
    cfg_scale: float | None = None
    camera_control: dict[str, Any] | None = None
    callback_url: str | None = None
    external_id: str | None = None
    #: the local images as raw base64 (no data: prefix), filled in by preflight where the dialect takes it
    image_base64: str | None = None
    image_tail_base64: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> I2VRequest:
        """From checked values named like the flags and CSV columns (`image`, `image_tail`, `prompt`...)."""
        tail = values.get("image_tail")
        plain = ("prompt", "model", "mode", "duration", "aspect_ratio", "negative_prompt", "cfg_scale",
                 "camera_control", "callback_url", "external_id")
        return cls(image=MediaRef.parse(values["image"]), image_tail=MediaRef.parse(tail) if tail else None,
                   extra=values.get("extra") or {}, **{name: values.get(name) for name in plain})


@dataclass
class MotionRequest:
    image: MediaRef
    video: MediaRef
    orientation: str
    mode: str
    prompt: str | None = None
    keep_sound: bool | None = None
    model: str | None = None
    callback_url: str | None = None
    external_id: str | None = None
    #: the local image as raw base64 (no data: prefix), filled in by preflight
    image_base64: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


SubmitRequest = Union[T2VRequest, I2VRequest, MotionRequest]


# --- conversions shared by every dialect -------------------------------------------------------


def json_or_text(text: str) -> Any:
    """A provider field given on the command line or in a CSV cell: JSON when it parses, else the text."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def json_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object given as text (e.g. camera_control); ValueError says what is wrong."""
    import json

    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def id_problem(value: str) -> str | None:
    """What makes `value` unusable as a task id (or an external id), or None when it is fine.

    Ids become URL path segments: nothing that could change which path is asked for (separators, `?`, `#`,
    `%`, dot segments), nothing invisible (whitespace, control and format characters, lone surrogates from
    undecodable bytes), nothing empty or endless. The one check for every source: arguments, stdin, files,
    manifests, CSV cells and provider answers.
    """
    if not value:
        return "it is empty"
    if len(value) > ID_MAX_LENGTH:
        return f"it is {len(value)} characters long; ids have at most {ID_MAX_LENGTH}"
    if value in (".", ".."):
        return "it is a dot segment"
    for char in value:
        if char in _ID_FORBIDDEN:
            return f"it contains {char!r}"
        if char.isspace():
            return f"it contains whitespace (U+{ord(char):04X})"
        if unicodedata.category(char) == "Cs":
            return "it contains bytes that are not valid UTF-8"
        if unicodedata.category(char).startswith("C"):
            return f"it contains the control character U+{ord(char):04X}"
    return None


def quoted(value: str, limit: int = 40) -> str:
    """A value from outside, fit for a message: quoted, escaped, and cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def to_str_id(value: Any) -> str | None:
    """Ids are strings; a JSON number (18-19 digit Kling ids) must never pass through a float."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_number(value: Any) -> float | None:
    """A non-negative number given as "5.1", 5 or 5.1 (durations, costs), as a float; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def epoch_to_iso(value: Any, *, unit: str) -> str | None:
    """UTC ISO 8601 from a Unix time in "s" or "ms"; None for anything unusable."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    seconds = number / 1000.0 if unit == "ms" else number
    try:
        moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
