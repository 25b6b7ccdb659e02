"""new-api style gateways (the ezmodel preset): Kling-native bodies under `/kling/v1/videos/...`, answers
in new-api's own shapes.

Wire facts (aigw-newapi-acedata.md §2, kling-official-cometapi.md §2, seeds 001/002):
- the model name routes the request: it must be present, `duration` must be a string
  (a number is an HTTP 500), and the prompt must be non-empty even for motion control, although the docs
  call it optional; `aspect_ratio` defaults to 1:1 on the gateway, not Kling's 16:9, so it is always sent;
- a submit answers in one of four shapes depending on the build (bare `task_id`; Kling envelope plus a
  top-level `task_id`; an OpenAI-style video object with the Kling id; the same with a `task_...` id);
- a query answers the TaskDto envelope `{"code": "success", "data": {...}}`: `status` SUBMITTED,
  IN_PROGRESS..., `progress` a string like "30%", times in seconds, the inner Kling body in `data.data`,
  the video URL in `result_url`, the inner task, or (older builds) `fail_reason`, and on failure
  `fail_reason` may just say "SUCCEED": the reason is the inner `task_status_msg`;
- errors are `{"code": "<snake>", "message", "data": null}` or `{"error": {"message", "type", "code"}}`;
  an unknown task is HTTP 400 `task_not_exist`;
- motion control is a fork's route (ezmodel's): upstream new-api answers it as a path it does not route
  (404 "Invalid URL", its web page, or a 301), which means the gateway does not offer motion control.
"""

from __future__ import annotations

import json
from typing import Any

from kling_cli.errors import (
    ApiError,
    AuthRejected,
    NotFound,
    ProviderUnavailable,
    RequestRejected,
    Unsupported,
)
from kling_cli.models import (
    SubmitRequest,
    Task,
    TaskError,
    TaskStatus,
    Video,
    epoch_to_iso,
    to_str_id,
)
from kling_cli.providers.base import Dialect, Reply, WireRequest, dig, generic_error, text_or_none, unknown_task
from kling_cli.providers.kling import BUSINESS_CODES, KlingDialect, business_error, parse_kling_task

STATUS_MAP = {
    "NOT_START": TaskStatus.QUEUED,
    "SUBMITTED": TaskStatus.QUEUED,
    "QUEUED": TaskStatus.QUEUED,
    "IN_PROGRESS": TaskStatus.RUNNING,
    "SUCCESS": TaskStatus.SUCCEEDED,
    "FAILURE": TaskStatus.FAILED,
}
#: the OpenAI-style video object's vocabulary (submit answers; "" right after creation)
OPENAI_STATUS = {
    "": TaskStatus.QUEUED,
    "queued": TaskStatus.QUEUED,
    "in_progress": TaskStatus.RUNNING,
    "completed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}
#: the TaskDto's action word for each kind (`generate` is image to video, aigw-newapi-acedata.md §2.6)
ACTION_KINDS = {"textGenerate": "t2v", "generate": "i2v", "motionControl": "motion"}
#: texts new-api leaves in fail_reason that are not reasons
_NOT_REASONS = {"succeed", "success", "successful"}

_ERROR_CODES: dict[str, tuple[type[ApiError], str, bool, str | None]] = {
    "task_not_exist": (NotFound, "not_found", False, None),
    "quota_not_enough": (RequestRejected, "insufficient_balance", False, "top up the gateway account"),
    "insufficient_user_quota": (RequestRejected, "insufficient_balance", False, "top up the gateway account"),
    "invalid_request": (RequestRejected, "invalid_request", False, None),
    "task_failed": (RequestRejected, "invalid_request", False, None),
    "build_request_failed": (RequestRejected, "invalid_request", False, "the gateway could not build the request"),
    "model_price_error": (RequestRejected, "model_unavailable", False, "the gateway has no price for that model"),
    "model_mapping_failed": (RequestRejected, "model_unavailable", False, None),
    "model_not_found": (RequestRejected, "model_unavailable", False, "the gateway has no channel for that model"),
    "get_channel_failed": (ProviderUnavailable, "unavailable", True, None),
    "do_request_failed": (ProviderUnavailable, "unavailable", True, None),
    "read_response_body_failed": (ProviderUnavailable, "unavailable", True, None),
    "unmarshal_response_failed": (ProviderUnavailable, "bad_upstream_answer", True, None),
}


class NewApiDialect(KlingDialect):
    name = "newapi"
    prefix = "/kling"
    lookup_by_external_id = False

    #: the gateway refuses an empty prompt for image to video and motion control too, where Kling's docs call it
    #: optional (aigw-newapi-acedata.md §2.4: "including image2video and motion-control")
    prompt_required = frozenset({"i2v", "motion"})
    #: ezmodel's motion-control payload has no model field (cuijinyu/new-api relay/channel/task/kling/adaptor.go,
    #: motionControlRequestPayload): the model routes and bills, and Kling runs its own default
    drops_model = frozenset({"motion"})

    def auth_headers(self, creds):  # a gateway key, never a Kling JWT
        return Dialect.auth_headers(self, creds)

    def build_submit(self, kind: str, req: SubmitRequest) -> WireRequest:
        wire = super().build_submit(kind, req)
        if kind == "t2v":
            wire.json.setdefault("aspect_ratio", "16:9")
        return wire

    def parse_submit(self, kind: str, reply: Reply) -> Task:
        payload = reply.payload
        task_id = to_str_id(dig(payload, "task_id")) or to_str_id(dig(payload, "id")) or to_str_id(
            dig(payload, "data", "task_id"))
        if isinstance(dig(payload, "data"), dict) and "task_status" in payload["data"]:
            task = parse_kling_task(kind, payload["data"], payload, task_id=task_id)
            task.id = task_id or task.id
            return task
        if dig(payload, "object") == "video":
            raw_status = dig(payload, "status")
            status = OPENAI_STATUS.get(raw_status, TaskStatus.UNKNOWN) if isinstance(raw_status, str) else (
                TaskStatus.UNKNOWN)
            return Task(id=task_id or "", kind=kind, status=status, raw_status=raw_status or None,
                        model=text_or_none(dig(payload, "model")),
                        created_at=epoch_to_iso(dig(payload, "created_at"), unit="s"), raw=payload)
        if task_id:
            return Task(id=task_id, kind=kind, status=TaskStatus.QUEUED, raw=payload)
        return unknown_task(kind, None, payload)

    def parse_task(self, kind: str, payload: Any, *, task_id: str | None = None) -> Task:
        return parse_task_dto(kind, payload, task_id=task_id)

    def error_for(self, reply: Reply) -> ApiError | None:
        if "/motion-control" in reply.request_path and _not_routed(reply):
            return _no_motion_control(reply)
        return newapi_error(reply)


def _not_routed(reply: Reply) -> bool:
    """new-api's answer to a path it does not route (router/web-router.go, controller/relay.go): JSON 404
    "Invalid URL (...)" where the prefix is an API one (forks list /kling), else the dashboard's HTML page,
    or a 301 to it when the dashboard is served elsewhere (router/main.go)."""
    if reply.status == 404 and "invalid url" in (text_or_none(dig(reply.payload, "error", "message")) or "").lower():
        return True
    return 300 <= reply.status < 400 or (not reply.is_json and reply.status < 500)


def _no_motion_control(reply: Reply) -> ApiError:
    # Upstream new-api routes only text2video and image2video for Kling; motion control is a fork's addition.
    answer = "404 Invalid URL" if reply.is_json else f"HTTP {reply.status} with a web page"
    hint = "use a gateway that offers it (ezmodel does) or the official API"
    if not reply.is_json:
        hint += "; if text to video fails the same way, the base URL is wrong instead"
    if reply.request_path.endswith("/motion-control"):
        error = Unsupported(f"this gateway does not offer motion control (it answered {answer})", hint=hint,
                            status=reply.status)
        error.refusal = True  # even as an HTTP 200 web page: nothing was created
        return error
    # a query of a motion task: no such task here, so that a search over the kinds goes on
    return NotFound(f"no motion task here: this gateway does not offer motion control (it answered {answer})")


def parse_task_dto(kind: str, payload: Any, *, task_id: str | None = None) -> Task:
    data = dig(payload, "data")
    if not isinstance(data, dict):
        return unknown_task(kind, task_id, payload)
    raw_status = data.get("status")
    status = STATUS_MAP.get(raw_status, TaskStatus.UNKNOWN) if isinstance(raw_status, str) else TaskStatus.UNKNOWN
    # The inner body is Kling's own answer: {code, message, data: {task_id, task_status, task_result...}}.
    inner_body = data.get("data")
    inner = dig(inner_body, "data")
    inner_task = parse_kling_task(kind, inner, inner_body) if isinstance(inner, dict) else None
    action = data.get("action")
    if isinstance(action, str) and action in ACTION_KINDS:
        kind = ACTION_KINDS[action]
    videos = list(inner_task.videos) if inner_task else []
    fail_reason = text_or_none(data.get("fail_reason"))
    url = text_or_none(data.get("result_url")) or (fail_reason if _is_url(fail_reason) else None)
    if url and not any(v.url for v in videos):
        videos = [Video(id=None, url=url)]
    error = None
    if status is TaskStatus.FAILED:
        candidates = [
            text_or_none(dig(inner, "task_status_msg")),
            None if _is_url(fail_reason) or (fail_reason or "").lower() in _NOT_REASONS else fail_reason,
            text_or_none(dig(inner_body, "message")),
        ]
        reason = next((c for c in candidates if c and c.lower() not in _NOT_REASONS), None)
        error = TaskError(code=None, message=reason or "the provider gave no reason")
    # times: submit/start/finish in seconds (0 when unset); the inner Kling ones are milliseconds
    created = epoch_to_iso(data.get("submit_time"), unit="s") or (inner_task.created_at if inner_task else None)
    updated = next((epoch_to_iso(data.get(k), unit="s") for k in ("finish_time", "start_time", "submit_time")
                    if epoch_to_iso(data.get(k), unit="s")), None) or (inner_task.updated_at if inner_task else None)
    return Task(
        id=to_str_id(data.get("task_id")) or task_id or "",
        kind=kind,
        status=status,
        raw_status=raw_status if isinstance(raw_status, str) else None,
        progress=_percent(data.get("progress")),
        videos=videos,
        error=error,
        external_id=inner_task.external_id if inner_task else None,
        created_at=created,
        updated_at=updated,
        cost=inner_task.cost if inner_task else None,
        raw=payload,
    )


def _is_url(text: str | None) -> bool:
    return bool(text) and text.startswith(("http://", "https://"))  # type: ignore[union-attr]


def _percent(value: Any) -> float | None:
    """"30%" -> 0.3; an int 30 (OpenAI-style objects) -> 0.3."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1])
        except ValueError:
            return None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        return None
    return max(0.0, min(1.0, number / 100.0)) if number == number else None


def newapi_error(reply: Reply, *, what: str = "the gateway") -> ApiError | None:
    payload = reply.payload
    nested = dig(payload, "error")
    if isinstance(nested, dict):
        code = text_or_none(nested.get("code")) or ""
        message = text_or_none(nested.get("message")) or ""
        known = _ERROR_CODES.get(code)
        if known:
            return _make(known, f"{what} refused the request: {message}", reply, code)
        if reply.status == 401:
            return AuthRejected(f"{what} rejected the key: {message}", status=401, provider_code=code or None,
                                hint="check the profile's API key")
        if reply.status == 403:
            return AuthRejected(f"{what} refused access: {message}", status=403, provider_code=code or None,
                                code="permission_denied")
        return generic_error(reply, message, provider_code=code or None)
    code = dig(payload, "code")
    message = text_or_none(dig(payload, "message"))
    if isinstance(code, str):
        if code == "success" and 200 <= reply.status < 300:
            return None
        if code == "fail_to_fetch_task" and message:
            upstream = _upstream_kling_error(message, reply.status)
            if upstream is not None:
                return upstream
        known = _ERROR_CODES.get(code)
        if known:
            return _make(known, f"{what} refused the request: {message or code}", reply, code)
        if reply.status == 429:
            return ProviderUnavailable(f"{what} is busy: {message or code}", status=429, provider_code=code,
                                       retryable=True, code="rate_limited")
        return generic_error(reply, message or code, provider_code=code) or RequestRejected(
            f"{what} refused the request: {message or code}", status=reply.status, provider_code=code)
    if isinstance(code, int) and not isinstance(code, bool) and code in BUSINESS_CODES:
        return business_error(code, message, status=reply.status, request_id=text_or_none(dig(payload, "request_id")))
    if reply.is_json and 200 <= reply.status < 300:
        return None
    return generic_error(reply, message)


def _upstream_kling_error(message: str, status: int) -> ApiError | None:
    """`fail_to_fetch_task` carries Kling's raw answer as a string: classify by its business code."""
    try:
        upstream = json.loads(message)
    except ValueError:
        return None
    code = dig(upstream, "code")
    if isinstance(code, int) and code in BUSINESS_CODES:
        return business_error(code, text_or_none(dig(upstream, "message")), status=status, request_id=None,
                              what="Kling (through the gateway)")
    return None


def _make(known: tuple[type[ApiError], str, bool, str | None], message: str, reply: Reply, code: str) -> ApiError:
    cls, stable, retryable, hint = known
    return cls(message, hint=hint, code=stable, status=reply.status, provider_code=code, retryable=retryable)
