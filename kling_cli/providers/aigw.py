"""The "aigw" gateway (`/open/aigw/gateway/...`), known from its public pages (seed 000, motion control; the
img2video and subject-reference pages of the same site).

Documented: `POST /open/aigw/gateway/generations` returns a `taskNo`; `GET /open/aigw/gateway/generationTask
?taskNo=` answers `{"code": 1000, "message": "success", "data": {...}}` with `status` pending, processing,
success or failed, `createTime` as "YYYY-MM-DD HH:MM:SS", the video at `data.data.result.video_url`
(motion control) or `data.data.result` as a list of URLs (the gateway's img2video and subject-reference pages),
`usage.totalPoints` (the cost) and `error` (the reason); the motion model is `kling_2.6_motion_control`;
callbacks are signed `sign = SHA256(taskNo + timestamp + apiKey)`.

Not public, so best guesses that a profile can override in `[profiles.NAME.options]` (see the README):
the auth header (`Authorization: Bearer <key>`), the submit body (`{"model", "callbackUrl", "params": {...}}`
with camelCase Kling fields), the text-to-video and image-to-video model names (`kling_2.6_text_to_video`,
`kling_2.6_img2video`), the time zone of `createTime` (UTC+8), and every error code other than 1000.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from kling_cli.credentials import Credentials
from kling_cli.errors import ApiError, AuthRejected, NotFound, ProviderUnavailable, RequestRejected
from kling_cli.models import (
    Cost,
    I2VRequest,
    SubmitRequest,
    T2VRequest,
    Task,
    TaskError,
    TaskStatus,
    Video,
    epoch_to_iso,
    to_number,
    to_str_id,
)
from kling_cli.providers.base import (
    Dialect,
    Reply,
    WireRequest,
    dig,
    drop_none,
    generic_error,
    text_or_none,
    unknown_task,
)

OK_CODE = 1000
#: the gateway's names for the default model (kling-v2-6) of each kind. Only the motion one is documented; the
#: img2video page names `kling_3.0-Omni_img2video` (and versions 2.1 to 3.0), whence the guess for 2.6
GATEWAY_MODELS = {"t2v": "kling_2.6_text_to_video", "i2v": "kling_2.6_img2video",
                  "motion": "kling_2.6_motion_control"}
STATUS_MAP = {
    "pending": TaskStatus.QUEUED,
    "processing": TaskStatus.RUNNING,
    "success": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}
GATEWAY_ZONE = timezone(timedelta(hours=8))
# Error codes other than 1000 are not documented: the message's words decide (inferred).
_BALANCE_WORDS = ("balance", "insufficient", "points", "quota", "余额", "积分")
_AUTH_WORDS = ("api key", "apikey", "token", "unauthorized", "authentication", "signature")


class AigwDialect(Dialect):
    name = "aigw"
    image_base64 = False
    video_base64 = False

    # -- options a profile may set -------------------------------------------------------------
    def _option(self, key: str, default: Any) -> Any:
        value = self.options.get(key, default)
        return default if value is None else value

    def auth_headers(self, creds: Credentials) -> dict[str, str]:
        if not creds.api_key:
            return Dialect.auth_headers(self, creds)  # raises: this gateway takes one API key
        header = self._option("auth_header", "Authorization")
        prefix = self._option("auth_prefix", "Bearer ")
        return {header: f"{prefix}{creds.api_key}"}

    def model_for(self, kind: str, requested: str | None) -> str:
        return requested or self._option(f"{kind}_model", GATEWAY_MODELS[kind])

    def build_submit(self, kind: str, req: SubmitRequest) -> WireRequest:
        if isinstance(req, I2VRequest):
            params = {
                # Kling's `image` and `image_tail`, camelCase like the other guessed fields, as URLs
                "image": req.image.value,
                "imageTail": req.image_tail.value if req.image_tail else None,
                "prompt": req.prompt,
                "negativePrompt": req.negative_prompt,
                "mode": req.mode,
                "duration": str(req.duration) if req.duration is not None else None,
                "cfgScale": req.cfg_scale,
                "cameraControl": req.camera_control,
            }
        elif isinstance(req, T2VRequest):
            params = {
                "prompt": req.prompt,
                "negativePrompt": req.negative_prompt,
                "mode": req.mode,
                "duration": str(req.duration) if req.duration is not None else None,
                "aspectRatio": req.aspect_ratio,
                "cfgScale": req.cfg_scale,
                "cameraControl": req.camera_control,
            }
        else:
            params = {
                "imageUrl": req.image.value,
                "videoUrl": req.video.value,
                "prompt": req.prompt,
                "mode": req.mode,
                "characterOrientation": req.orientation,
                "keepOriginalSound": None if req.keep_sound is None else ("yes" if req.keep_sound else "no"),
            }
        params = drop_none(params)
        params.update(req.extra)
        renames = self._option("rename", {})
        params = {renames.get(key, key): value for key, value in params.items()}
        body: dict[str, Any] = {"model": self.model_for(kind, req.model)}
        if req.callback_url:
            body["callbackUrl"] = req.callback_url
        params_key = self._option("params_key", "params")
        if params_key:
            body[params_key] = params
        else:
            body.update(params)
        body.update(self._option("body", {}))
        return WireRequest("POST", "/open/aigw/gateway/generations", json=body, creates_task=True)

    def build_get(self, kind: str, task_id: str) -> WireRequest:
        return WireRequest("GET", "/open/aigw/gateway/generationTask", params={"taskNo": task_id})

    # -- replies --------------------------------------------------------------------------------
    def parse_submit(self, kind: str, reply: Reply) -> Task:
        payload = reply.payload
        data = dig(payload, "data")
        task_no = _task_no(payload)
        if not task_no:
            return unknown_task(kind, None, payload)
        return Task(id=task_no, kind=kind, status=TaskStatus.QUEUED, raw_status=text_or_none(dig(data, "status")),
                    raw=payload)

    def parse_task(self, kind: str, payload: Any, *, task_id: str | None = None) -> Task:
        data = dig(payload, "data")
        if not isinstance(data, dict):
            return unknown_task(kind, task_id, payload)
        return parse_aigw_task(kind, data, payload, task_id=task_id)

    def error_for(self, reply: Reply) -> ApiError | None:
        error = self._error(reply)
        if error is not None and isinstance(reply.payload, dict) and 200 <= reply.status < 300 \
                and not _task_no(reply.payload):
            # an HTTP 200 whose code is not 1000 and that names no taskNo is the gateway saying no (e.g.
            # insufficient points): nothing was created
            error.refusal = True
        return error

    def _error(self, reply: Reply) -> ApiError | None:
        payload = reply.payload
        code = dig(payload, "code")
        if code == OK_CODE and 200 <= reply.status < 300:
            return None
        if not isinstance(payload, dict) or "code" not in payload:
            return generic_error(reply)
        message = text_or_none(payload.get("message")) or text_or_none(payload.get("msg")) or f"code {code}"
        kwargs = {"status": reply.status, "provider_code": code}
        text = f"the aigw gateway refused the request: {message} (code {code})"
        lowered = message.lower()
        if any(word in lowered for word in _BALANCE_WORDS):
            return RequestRejected(text, code="insufficient_balance", hint="top up the gateway account", **kwargs)
        if reply.status in (401, 403) or any(word in lowered for word in _AUTH_WORDS):
            return AuthRejected(text, hint="check the API key, and the auth header options of the profile", **kwargs)
        if reply.status == 429 or "too many" in lowered or "rate limit" in lowered:
            return ProviderUnavailable(text, code="rate_limited", retryable=True, **kwargs)
        if reply.status >= 500:
            return ProviderUnavailable(text, code="server_error", retryable=True, **kwargs)
        if reply.status == 404 or "not found" in lowered or "not exist" in lowered:
            return NotFound(text, **kwargs)
        return RequestRejected(text, **kwargs)


def _task_no(payload: Any) -> str | None:
    data = dig(payload, "data")
    return to_str_id(dig(data, "taskNo")) or (to_str_id(data) if isinstance(data, (str, int)) else None) \
        or to_str_id(dig(payload, "taskNo"))


def parse_aigw_task(kind: str, data: dict[str, Any], payload: Any, *, task_id: str | None = None) -> Task:
    """A task from a query's `data`, or a callback body (same fields at the top level)."""
    raw_status = data.get("status")
    status = STATUS_MAP.get(raw_status, TaskStatus.UNKNOWN) if isinstance(raw_status, str) else TaskStatus.UNKNOWN
    model = data.get("model")
    if isinstance(model, str):
        kind = "motion" if "motion" in model else "i2v" if "img2video" in model else "t2v"
    error = None
    if status is TaskStatus.FAILED:
        reason = text_or_none(data.get("error")) or text_or_none(dig(data, "data", "error_info"))
        error = TaskError(code=None, message=reason or "the provider gave no reason")
    points = to_number(dig(data, "usage", "totalPoints"))
    created = _gateway_time(data.get("createTime"))
    return Task(
        id=to_str_id(data.get("taskNo")) or task_id or "",
        kind=kind,
        status=status,
        raw_status=raw_status if isinstance(raw_status, str) else None,
        model=model if isinstance(model, str) else None,
        progress=1.0 if status is TaskStatus.SUCCEEDED else None,
        videos=_videos(dig(data, "data", "result"), to_str_id(dig(data, "data", "task_id"))),
        error=error,
        created_at=created,
        updated_at=epoch_to_iso(data.get("timestamp"), unit="s") or created,
        cost=Cost(points, "points") if points is not None else None,
        raw=payload,
    )


def _videos(result: Any, worker_id: str | None) -> list[Video]:
    """`result` is `{"video_url": ...}` for motion control, but a list of URLs for the gateway's img2video and
    subject-reference models (their pages' query and callback examples): both are read."""
    if isinstance(result, dict):
        urls = [result.get("video_url")]
    elif isinstance(result, list):
        urls = [item.get("video_url") or item.get("url") if isinstance(item, dict) else item for item in result]
    else:
        urls = []
    found = [text_or_none(url) for url in urls if isinstance(url, str)]
    return [Video(id=worker_id if len(found) == 1 else None, url=url) for url in found if url]


def _gateway_time(value: Any) -> str | None:
    """ "2025-01-01 12:00:00", zone-less; taken as the gateway's local time, UTC+8 (inferred)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=GATEWAY_ZONE)
    except ValueError:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
