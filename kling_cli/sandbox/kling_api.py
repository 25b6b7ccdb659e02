"""The official Kling API (legacy design), emulated from its documentation, not from kling_cli's client.

Sources: seed 001 (motion control), ../shared/providers/kling-official-cometapi.md §1 (endpoints, bodies,
envelope, task object, error codes, JWT), and the official image-to-video reference (§1.4's "Image→video
adds": `image` and `image_tail` as a URL or raw base64 without a `data:` prefix, jpg/png, at most 10 MB, at
least one of the two; `image_tail`, `static_mask`/`dynamic_masks` and `camera_control` mutually exclusive; no
`aspect_ratio`). Where the docs are silent the behaviour is marked "inferred":
- an unknown task id answers HTTP 404, code 1203 (the code table's "resource not found");
- a reused external_task_id ("must be unique per user") answers HTTP 400, code 1201;
- `cfg_scale` on a kling-v2.x model ("not supported") is taken and ignored, not refused (from new-api's code,
  see `validate_t2v`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any

from kling_cli.presets import SANDBOX_ACCESS_KEY, SANDBOX_API_KEY, SANDBOX_SECRET_KEY
from kling_cli.sandbox.core import Sandbox, markers
from kling_cli.sandbox.server import BadJson, Request, Response, Router, json_response
from kling_cli.sandbox.store import DuplicateExternalId, TaskRow

DIALECT = "kling"
PATHS = {"text2video": "t2v", "image2video": "i2v", "motion-control": "motion"}
T2V_MODELS = {"kling-v1", "kling-v1-6", "kling-v2-master", "kling-v2-1-master", "kling-v2-5-turbo", "kling-v2-6",
              "kling-v3"}
# §1.3 image-to-video model_name enum (default kling-v1)
I2V_MODELS = {"kling-v1", "kling-v1-5", "kling-v1-6", "kling-v2-master", "kling-v2-1", "kling-v2-1-master",
              "kling-v2-5-turbo", "kling-v2-6", "kling-v3"}
MOTION_MODELS = {"kling-v2-6", "kling-v3"}
CAMERA_TYPES = {"simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"}
CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
PROMPT_LIMIT = 2500
RISK_MESSAGE = "Failure to pass the risk control system (sandbox:fail)"
# The phases of the sandbox store, in this dialect's words (note "succeed", not "succeeded").
STATUS_WORDS = {"queued": "submitted", "running": "processing", "succeeded": "succeed", "failed": "failed"}


class Refusal(Exception):
    def __init__(self, http: int, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.http, self.code, self.message, self.headers = http, code, message, headers or {}


def envelope(data: Any) -> dict[str, Any]:
    return {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data}


def refusal_response(refusal: Refusal) -> Response:
    body = {"code": refusal.code, "message": refusal.message, "request_id": str(uuid.uuid4())}
    return json_response(refusal.http, body, refusal.headers)


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check_auth(req: Request) -> None:
    header = req.headers.get("Authorization")
    if not header:
        raise Refusal(401, 1001, "Authorization is empty")
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token:
        raise Refusal(401, 1002, "Authorization is invalid")
    if token == SANDBOX_API_KEY:
        return
    parts = token.split(".")
    if len(parts) != 3:
        raise Refusal(401, 1002, "Authorization is invalid")
    try:
        header_obj = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise Refusal(401, 1002, "Authorization is invalid") from None
    expected = hmac.new(SANDBOX_SECRET_KEY.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if header_obj.get("alg") != "HS256" or not hmac.compare_digest(signature, expected):
        raise Refusal(401, 1000, "Authentication failed")
    if claims.get("iss") != SANDBOX_ACCESS_KEY:
        raise Refusal(401, 1000, "Authentication failed")
    now = time.time()
    if not isinstance(claims.get("exp"), (int, float)) or not isinstance(claims.get("nbf"), (int, float)):
        raise Refusal(401, 1002, "Authorization is invalid")
    if claims["nbf"] > now:
        raise Refusal(401, 1003, "Authorization is not yet valid")
    if claims["exp"] <= now:
        raise Refusal(401, 1004, "Authorization has expired")


def _invalid(message: str) -> Refusal:
    return Refusal(400, 1201, message)


def _optional_str(body: dict[str, Any], key: str, *, limit: int | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{key} must be a string")
    if limit is not None and len(value) > limit:
        raise _invalid(f"{key} exceeds {limit} characters")
    return value


def _enum(body: dict[str, Any], key: str, allowed: set[str] | tuple[str, ...], *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _invalid(f"{key} is required")
        return None
    if value not in allowed:
        raise _invalid(f"{key} is invalid, must be one of: {', '.join(sorted(allowed))}")
    return value


def validate_t2v(body: dict[str, Any]) -> None:
    # §1.4: the legacy alias `model` is accepted and behaves as an empty model_name, i.e. kling-v1
    model = body.get("model_name") or "kling-v1"
    if model not in T2V_MODELS:
        raise _invalid(f"model_name {model} is invalid")
    prompt = _optional_str(body, "prompt", limit=PROMPT_LIMIT)
    if not prompt or not prompt.strip():
        raise _invalid("prompt can not be empty")
    _enum(body, "aspect_ratio", {"16:9", "9:16", "1:1"})
    _validate_common(body, model)


def validate_i2v(body: dict[str, Any]) -> None:
    """The image-to-video body: the frames, their exclusions, then what it shares with text to video."""
    model = body.get("model_name") or "kling-v1"
    if model not in I2V_MODELS:
        raise _invalid(f"model_name {model} is invalid")
    if not body.get("image") and not body.get("image_tail"):
        raise _invalid("image can not be null")  # "at least one of image or image_tail"
    for key in ("image", "image_tail"):
        if body.get(key) is not None:
            _check_image_field(body[key], key)
    _optional_str(body, "prompt", limit=PROMPT_LIMIT)
    controls = [key for key in ("image_tail", "static_mask", "dynamic_masks", "camera_control")
                if body.get(key) is not None]
    if "image_tail" in controls and len(controls) > 1 or "camera_control" in controls and len(controls) > 1:
        raise _invalid(f"{', '.join(controls)} cannot be used at the same time")
    # no aspect_ratio here: the video takes the image's (inferred: an aspect_ratio sent anyway is ignored)
    _validate_common(body, model)


def _validate_common(body: dict[str, Any], model: str) -> None:
    _optional_str(body, "negative_prompt", limit=PROMPT_LIMIT)
    _enum(body, "mode", {"std", "pro"})
    duration = body.get("duration")
    if duration is not None:
        if not isinstance(duration, str):
            raise _invalid("duration must be a string")
        allowed = {str(n) for n in range(3, 16)} if model == "kling-v3" else {"5", "10"}
        if duration not in allowed:
            raise _invalid(f"duration {duration} is not supported by {model}")
    cfg = body.get("cfg_scale")
    # Taken on every model, kling-v2.x included, where the docs say it is "not supported": without effect, not
    # refused. new-api sends cfg_scale 0.5 in every Kling body (relay/channel/task/kling/adaptor.go,
    # convertToRequestPayload) for kling-v2-master (its own model list) and kling-v2-6 (ezmodel's); a refusal
    # would fail all of them.
    if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not 0 <= cfg <= 1):
        raise _invalid("cfg_scale must be a number between 0 and 1")
    camera = body.get("camera_control")
    if camera is not None:
        _validate_camera(camera)
    _optional_str(body, "callback_url")
    _optional_str(body, "external_task_id")


def _validate_camera(camera: Any) -> None:
    if not isinstance(camera, dict) or camera.get("type") not in CAMERA_TYPES:
        raise _invalid(f"camera_control.type must be one of: {', '.join(sorted(CAMERA_TYPES))}")
    config = camera.get("config")
    if camera["type"] != "simple":
        if config is not None:
            raise _invalid("camera_control.config must be empty unless type is simple")
        return
    if not isinstance(config, dict):
        raise _invalid("camera_control.config is required when type is simple")
    values = [config.get(axis, 0) for axis in CAMERA_AXES]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not -10 <= v <= 10 for v in values):
        raise _invalid("camera_control.config values must be numbers in [-10, 10]")
    if sum(1 for v in values if v != 0) != 1:
        raise _invalid("camera_control.config must have exactly one non-zero value")


def _check_image_field(value: Any, key: str = "image_url") -> None:
    if not isinstance(value, str) or not value:
        raise _invalid(f"{key} can not be null")
    if value.startswith(("http://", "https://")):
        return
    if value.startswith("data:"):
        raise _invalid("File is not in a valid base64 format")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("File is not in a valid base64 format") from None
    if not (raw.startswith(b"\xff\xd8") or raw.startswith(b"\x89PNG")):
        raise _invalid("image format is not supported, must be jpg, jpeg or png")
    if len(raw) > 10 * 1024 * 1024:
        raise _invalid("image size exceeds 10MB")


def validate_motion(body: dict[str, Any]) -> None:
    model = body.get("model_name") or "kling-v2-6"
    if model not in MOTION_MODELS:
        raise _invalid(f"model_name {model} is invalid")
    _optional_str(body, "prompt", limit=PROMPT_LIMIT)
    _check_image_field(body.get("image_url"))
    video = body.get("video_url")
    if not isinstance(video, str) or not video:
        raise _invalid("video_url can not be null")
    if not video.startswith(("http://", "https://")):
        raise _invalid("video_url must be a URL")
    _enum(body, "keep_original_sound", {"yes", "no"})
    _enum(body, "character_orientation", {"image", "video"}, required=True)
    _enum(body, "mode", {"std", "pro"}, required=True)
    _optional_str(body, "callback_url")
    _optional_str(body, "external_task_id")


def new_id() -> str:
    # 18-19 digit numeric strings, like the real ones
    return str(800_000_000_000_000_000 + secrets.randbelow(100_000_000_000_000_000))


def task_object(sandbox: Sandbox, req: Request | str, row: TaskRow, now: float | None = None) -> dict[str, Any]:
    """The legacy task object; `req` is the request being answered, or an origin for a callback."""
    now = time.time() if now is None else now
    phase = row.phase(now)
    data: dict[str, Any] = {
        "task_id": row.id,
        "task_status": STATUS_WORDS[phase],
        "task_status_msg": row.reason if phase == "failed" else "",
        "task_info": {"external_task_id": row.external_id} if row.external_id else {},
        "task_result": {},
        "watermark_info": {"enabled": False},
        "created_at": int(row.created * 1000),
        "updated_at": int(row.changed_at(now) * 1000),
    }
    if phase == "succeeded":
        data["task_result"] = {
            "videos": [{"id": row.video_id, "url": sandbox.video_url(req, row.video_id), "watermark_url": "",
                        "duration": "5.0"}]
        }
        if "novideo" in markers(row.request.get("prompt")):  # a success that names no video
            data["task_result"] = {"videos": []}
        data["final_unit_deduction"] = f"{units(row.kind, row.request):g}"
    return data


#: Units charged, by the rule a relay of the official API publishes (README, "Cost"): kling-v1 std 5 s is 1,
#: 10 s doubles, pro mode is 3.5x, kling-v1-5/v1-6 2x, kling-v2-master 10x; kling-v2-6 2.5x whatever the mode.
#: Written here on its own, not read from kling's price table, so that the tests compare the two.
_MODEL_UNITS = {"kling-v1": 1.0, "kling-v1-5": 2.0, "kling-v1-6": 2.0, "kling-v2-master": 10.0, "kling-v2-6": 2.5}


def units(kind: str, body: dict[str, Any]) -> float:
    model = body.get("model_name") or ("kling-v2-6" if kind == "motion" else "kling-v1")
    cost = _MODEL_UNITS.get(model, 1.0)
    if body.get("mode") == "pro" and model != "kling-v2-6":
        cost *= 3.5
    if str(body.get("duration") or "5") == "10":
        cost *= 2
    return cost


def submit(sandbox: Sandbox, req: Request, kind: str, *, dialect: str = DIALECT) -> tuple[TaskRow | None, Response]:
    """Validate and create a task; shared with dialects that relay the official API unchanged."""
    try:
        check_auth(req)
        try:
            body = req.json()
        except BadJson:
            raise Refusal(400, 1200, "Invalid request parameters: body is not JSON") from None
        if not isinstance(body, dict):
            raise Refusal(400, 1200, "Invalid request parameters")
        marks = markers(body.get("prompt"))
        key = f"{dialect}:{body.get('prompt')}"
        sandbox.count(f"{dialect}:submit_attempts")
        if sandbox.fires(marks, "429", key):
            raise Refusal(429, 1303, "parallel task over resource pack limit")
        if "billing" in marks:
            raise Refusal(429, 1102, "Account balance not enough")
        if "policy" in marks:
            raise Refusal(400, 1301, "The content security policy was triggered")
        if sandbox.fires(marks, "500", key):
            raise Refusal(500, 5000, "Internal server error")
        VALIDATORS[kind](body)
        external_id = body.get("external_task_id") or None
        try:
            row = sandbox.store.create(
                task_id=new_id(),
                dialect=dialect,
                kind=kind,
                request=redact_media(body),
                external_id=external_id,
                seconds=sandbox.seconds_for(marks),
                outcome="failed" if "fail" in marks else "succeeded",
                reason=RISK_MESSAGE if "fail" in marks else None,
                video_id=new_id(),
                callback_url=body.get("callback_url") or None,
            )
        except DuplicateExternalId:
            raise _invalid(f"external_task_id {external_id} already exists") from None
        sandbox.count(f"{dialect}:created")
    except Refusal as refusal:
        return None, refusal_response(refusal)
    if sandbox.fires(marks, "lost", key):
        return row, Response(200, drop=True)
    data = task_object(sandbox, req, row)
    return row, json_response(200, envelope({k: data[k] for k in
                                             ("task_id", "task_status", "task_info", "created_at", "updated_at")}))


VALIDATORS = {"t2v": validate_t2v, "i2v": validate_i2v, "motion": validate_motion}


def callback_payload(sandbox: Sandbox, row: TaskRow) -> dict[str, Any]:
    """The callback body: the bare task object, no envelope (kling-official-cometapi.md §1.9). Sent once,
    at the terminal state; the docs allow one per status change, receivers must de-duplicate anyway."""
    return task_object(sandbox, sandbox.origin, row)


def redact_media(body: dict[str, Any]) -> dict[str, Any]:
    """The body as kept: inline images (motion's image_url, image to video's image and image_tail) replaced by
    their size."""
    for key in ("image_url", "image", "image_tail"):
        image = body.get(key)
        if isinstance(image, str) and not image.startswith(("http://", "https://")):
            body = {**body, key: f"<base64, {len(image)} chars>"}
    return body


def find(sandbox: Sandbox, kind: str, task_id: str, *, dialect: str = DIALECT) -> TaskRow | None:
    row = sandbox.store.get(dialect, task_id) or sandbox.store.get_by_external_id(dialect, task_id)
    return row if row is not None and row.kind == kind else None


def router(sandbox: Sandbox, prefix: str = "/kling") -> Router:
    routes = Router(prefix)

    @routes.route("POST", "/v1/videos/{action}")
    def create(req: Request) -> Response:
        kind = PATHS.get(req.params["action"])
        if kind is None:
            return refusal_response(Refusal(404, 1202, "Invalid request method"))
        return submit(sandbox, req, kind)[1]

    @routes.route("GET", "/v1/videos/{action}/{task_id}")
    def query(req: Request) -> Response:
        kind = PATHS.get(req.params["action"])
        try:
            check_auth(req)
            if kind is None:
                raise Refusal(404, 1202, "Invalid request method")
            retry_after = sandbox.in_storm()
            if retry_after is not None:
                raise Refusal(429, 1302, "request rate limit exceeded", {"Retry-After": f"{retry_after:g}"})
            row = find(sandbox, kind, req.params["task_id"])
            if row is None:
                raise Refusal(404, 1203, "task not found")
            if sandbox.fires(markers(row.request.get("prompt")), "flaky", f"query:{row.id}"):
                raise Refusal(503, 5001, "Service temporarily unavailable")
        except Refusal as refusal:
            return refusal_response(refusal)
        return json_response(200, envelope(task_object(sandbox, req, row)))

    return routes
