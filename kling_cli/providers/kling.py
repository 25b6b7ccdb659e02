"""The official Kling API, legacy design (`/v1/videos/...`, `model_name` in the body).

Wire facts (../shared/providers/kling-official-cometapi.md §1): envelope `{code, message, request_id, data}`
with `code == 0` for success; `task_status` is submitted/processing/succeed/failed; a failed task is
HTTP 200 + code 0 + message "SUCCEED" and its reason is only in `task_status_msg`; `created_at` and
`updated_at` are Unix milliseconds; `duration` is a string both ways; task ids are 18-19 digit strings.
"""

from __future__ import annotations

import time
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
    inline_or_url,
    segment,
    text_or_none,
    unknown_task,
)

KIND_PATHS = {"t2v": "text2video", "i2v": "image2video", "motion": "motion-control"}

STATUS_MAP = {
    "submitted": TaskStatus.QUEUED,
    "processing": TaskStatus.RUNNING,
    "succeed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}

#: JWT lifetime and clock-skew slack exactly as in the official example
JWT_LIFETIME = 1800
JWT_NOT_BEFORE_SLACK = 5

_BALANCE_HINT = "top up or renew the resource pack in the Kling console; retrying will not help"
_INPUT_HINT = "fix the request; sending it again unchanged will fail the same way"

#: business code -> (error class, stable code, retryable, hint). HTTP 429 carries both rate limits
#: (1302/1303: retry) and billing or access problems (1100-1102, 1304: never retry), so the code decides.
BUSINESS_CODES: dict[int, tuple[type[ApiError], str, bool, str | None]] = {
    1000: (AuthRejected, "auth_rejected", False, "check the access key and secret key"),
    1001: (AuthRejected, "auth_rejected", False, "no Authorization header was sent: check the profile's key"),
    1002: (AuthRejected, "auth_rejected", False, "check the access key and secret key"),
    1003: (AuthRejected, "auth_not_yet_valid", False, "the token is not valid yet: check this machine's clock"),
    1004: (AuthRejected, "auth_expired", False, "the token expired: check this machine's clock"),
    1100: (RequestRejected, "account_error", False, "the account has a problem: see the Kling console"),
    1101: (RequestRejected, "insufficient_balance", False, _BALANCE_HINT),
    1102: (RequestRejected, "insufficient_balance", False, _BALANCE_HINT),
    1103: (AuthRejected, "permission_denied", False, "this key has no access to that API or model"),
    1200: (RequestRejected, "invalid_request", False, _INPUT_HINT),
    1201: (RequestRejected, "invalid_request", False, _INPUT_HINT),
    1202: (RequestRejected, "invalid_request", False, None),
    1203: (NotFound, "not_found", False, None),
    1300: (RequestRejected, "policy", False, "the platform policy refused this request"),
    1301: (RequestRejected, "content_policy", False, "the content security policy refused this prompt or media"),
    1302: (ProviderUnavailable, "rate_limited", True, "too many requests: wait and try again"),
    1303: (ProviderUnavailable, "concurrency_limit", True,
           "too many tasks running at once for this account: wait for some to finish"),
    1304: (AuthRejected, "ip_not_allowed", False, "this machine's IP is not on the account's whitelist"),
    5000: (ProviderUnavailable, "server_error", True, None),
    5001: (ProviderUnavailable, "unavailable", True, "the service is under maintenance: try again later"),
    5002: (ProviderUnavailable, "server_timeout", True, None),
}
REAUTH_CODES = {1003, 1004}


def mint_jwt(access_key: str, secret_key: str, now: float | None = None) -> str:
    import warnings

    import jwt

    issued = int(time.time() if now is None else now)
    payload = {"iss": access_key, "exp": issued + JWT_LIFETIME, "nbf": issued - JWT_NOT_BEFORE_SLACK}
    with warnings.catch_warnings():
        # PyJWT warns about HMAC keys shorter than 32 bytes; the key length is Kling's choice, not ours.
        warnings.simplefilter("ignore")
        return jwt.encode(payload, secret_key, algorithm="HS256", headers={"typ": "JWT"})


def business_error(
    code: int, message: str | None, *, status: int, request_id: str | None, what: str = "the provider"
) -> ApiError:
    cls, stable, retryable, hint = BUSINESS_CODES[code]
    text = message or stable.replace("_", " ")
    verb = "rejected the credentials" if cls is AuthRejected else "refused the request"
    if cls is ProviderUnavailable:
        verb = "is unavailable"
    return cls(
        f"{what} {verb}: {text} (code {code})",
        hint=hint,
        code=stable,
        status=status,
        provider_code=code,
        request_id=request_id,
        retryable=retryable,
        reauth=code in REAUTH_CODES,
    )


class KlingDialect(Dialect):
    name = "kling"
    lookup_by_external_id = True
    video_base64 = False
    #: path prefix in front of /v1/... (CometAPI mounts the same API under /kling)
    prefix = ""

    def auth_headers(self, creds: Credentials) -> dict[str, str]:
        if creds.api_key:
            return {"Authorization": f"Bearer {creds.api_key}"}
        # A fresh token per request: cheaper than tracking expiry, and 1003/1004 then only mean clock skew.
        return {"Authorization": f"Bearer {mint_jwt(creds.access_key or '', creds.secret_key or '')}"}

    def _path(self, kind: str, tail: str = "") -> str:
        return f"{self.prefix}/v1/videos/{KIND_PATHS[kind]}{tail}"

    def build_submit(self, kind: str, req: SubmitRequest) -> WireRequest:
        if isinstance(req, I2VRequest):
            # /v1/videos/image2video: `image` and `image_tail` are a URL or raw base64; no aspect_ratio (the
            # video takes the image's)
            body = drop_none(
                {
                    "model_name": self.model_for(kind, req.model),
                    "image": inline_or_url(req.image, req.image_base64),
                    "image_tail": inline_or_url(req.image_tail, req.image_tail_base64),
                    "prompt": req.prompt,
                    "negative_prompt": req.negative_prompt,
                    "cfg_scale": req.cfg_scale,
                    "mode": req.mode,
                    "camera_control": req.camera_control,
                    "duration": str(req.duration) if req.duration is not None else None,
                    "callback_url": req.callback_url,
                    "external_task_id": req.external_id,
                }
            )
        elif isinstance(req, T2VRequest):
            body = drop_none(
                {
                    "model_name": self.model_for(kind, req.model),
                    "prompt": req.prompt,
                    "negative_prompt": req.negative_prompt,
                    "cfg_scale": req.cfg_scale,
                    "mode": req.mode,
                    "camera_control": req.camera_control,
                    "aspect_ratio": req.aspect_ratio,
                    # a string on the wire: "5", "10"
                    "duration": str(req.duration) if req.duration is not None else None,
                    "callback_url": req.callback_url,
                    "external_task_id": req.external_id,
                }
            )
        else:
            keep = None if req.keep_sound is None else ("yes" if req.keep_sound else "no")
            body = drop_none(
                {
                    "model_name": self.model_for(kind, req.model),
                    "prompt": req.prompt,
                    "image_url": inline_or_url(req.image, req.image_base64),
                    "video_url": req.video.value,
                    "keep_original_sound": keep,
                    "character_orientation": req.orientation,
                    "mode": req.mode,
                    "callback_url": req.callback_url,
                    "external_task_id": req.external_id,
                }
            )
        body.update(req.extra)
        return WireRequest("POST", self._path(kind), json=body, creates_task=True)

    def build_get(self, kind: str, task_id: str) -> WireRequest:
        return WireRequest("GET", self._path(kind, f"/{segment(task_id)}"))

    def build_get_by_external_id(self, kind: str, external_id: str) -> WireRequest:
        # "Choose either task_id or external_task_id for querying; fill the value directly in the path."
        return WireRequest("GET", self._path(kind, f"/{segment(external_id)}"))

    def parse_submit(self, kind: str, reply: Reply) -> Task:
        return self.parse_task(kind, reply.payload)

    def parse_task(self, kind: str, payload: Any, *, task_id: str | None = None) -> Task:
        data = dig(payload, "data")
        if not isinstance(data, dict):
            return unknown_task(kind, task_id, payload)
        return parse_kling_task(kind, data, payload, task_id=task_id)

    def error_for(self, reply: Reply) -> ApiError | None:
        payload = reply.payload
        code = dig(payload, "code")
        message = text_or_none(dig(payload, "message"))
        request_id = text_or_none(dig(payload, "request_id"))
        if isinstance(code, int) and not isinstance(code, bool):
            if code == 0 and 200 <= reply.status < 300:
                return None
            if code in BUSINESS_CODES:
                return business_error(code, message, status=reply.status, request_id=request_id)
            if 200 <= reply.status < 300:  # a code this table does not know: still not a success
                return RequestRejected(f"the provider refused the request: {message or 'no message'} (code {code})",
                                       status=reply.status, provider_code=code, request_id=request_id)
        elif reply.is_json and 200 <= reply.status < 300 and isinstance(payload, dict):
            return None
        error = generic_error(reply, message, provider_code=code)
        if error is not None:
            error.request_id = request_id
        return error


def parse_kling_task(kind: str, data: dict[str, Any], payload: Any, *, task_id: str | None = None) -> Task:
    """A legacy Kling task object (also nested inside new-api's envelope and Kling callbacks)."""
    raw_status = data.get("task_status")
    status = STATUS_MAP.get(raw_status, TaskStatus.UNKNOWN) if isinstance(raw_status, str) else TaskStatus.UNKNOWN
    videos = []
    for item in dig(data, "task_result", "videos") or []:
        if isinstance(item, dict):
            videos.append(
                Video(id=to_str_id(item.get("id")), url=text_or_none(item.get("url")),
                      duration=to_number(item.get("duration")))
            )
    error = None
    if status is TaskStatus.FAILED:
        # The envelope's message says "SUCCEED" even here: the reason is only in task_status_msg.
        reason = text_or_none(data.get("task_status_msg")) or "the provider gave no reason"
        error = TaskError(code=None, message=reason)
    return Task(
        id=to_str_id(data.get("task_id")) or task_id or "",
        kind=kind,
        status=status,
        raw_status=raw_status if isinstance(raw_status, str) else None,
        progress=1.0 if status is TaskStatus.SUCCEEDED else None,
        videos=videos,
        error=error,
        external_id=text_or_none(dig(data, "task_info", "external_task_id")),
        created_at=epoch_to_iso(data.get("created_at"), unit="ms"),
        updated_at=epoch_to_iso(data.get("updated_at"), unit="ms"),
        cost=_units(data.get("final_unit_deduction")),
        raw=payload,
    )


def _units(value: Any) -> Cost | None:
    amount = to_number(value)
    return Cost(amount, "units") if amount is not None else None
