"""AceDataCloud: its own bodies and a task record instead of Kling's envelope.

Wire facts (aigw-newapi-acedata.md §3, seed 003):
- `POST /kling/videos` (`action`, `model`, a numeric `duration`, `start_image_url`...) and `POST /kling/motion`
  (`model_name`, `image_url`, `video_url`...); without `"async": true` (or a callback URL) the request stays
  open until the video is done, so kling-cli always sends it; a 5xx whose body carries a `task_id`
  (notably 504 `timeout`) means the task exists and is polled;
- `POST /kling/tasks` with `{"id", "action": "retrieve"}`, or `{"ids": [...], "action": "retrieve_batch"}`
  for many at once (`{"items": [...], "count": n}`); an unknown id answers `{}`;
- the record: no `response` yet = pending; `response.success` true with `video_url` = done (`state`
  "succeed"); `success` false, an `error`, or a failed `state` = failed (`response.error.message`); a
  top-level `state` of failed, error or cancelled ends the task whatever the response holds (AceData's
  MCP server reads it so), its reason taken from wherever the record carries one;
  `created_at`/`finished_at` are float seconds; the record's top-level `duration` is the job's elapsed
  time, `response.duration` the video's length;
- errors: `{"success": false, "error": {"code", "message"}, "trace_id"}`; `used_up` is an exhausted
  balance (never retried), `too_many_requests` a rate limit (retried).
"""

from __future__ import annotations

from typing import Any

from kling_cli.errors import ApiError, AuthRejected, BadResponse, NotFound, ProviderUnavailable, RequestRejected
from kling_cli.models import (
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

RUNNING_STATES = {"processing", "running"}
QUEUED_STATES = {"submitted", "pending", "queued"}
FAILED_STATES = {"failed", "error", "cancelled", "canceled"}
DONE_STATES = {"succeed", "succeeded", "success", "completed", "complete"}
TYPE_KINDS = {"videos": "t2v", "motion": "motion"}
#: a `videos` record is text or image to video: its request's action says which
ACTION_KINDS = {"text2video": "t2v", "image2video": "i2v"}

_ERRORS: dict[str, tuple[type[ApiError], str, bool, str | None]] = {
    "used_up": (RequestRejected, "insufficient_balance", False, "top up the AceData account; retrying will not help"),
    "too_many_requests": (ProviderUnavailable, "rate_limited", True, None),
    "invalid_token": (AuthRejected, "auth_rejected", False, "check the profile's API token"),
    "token_expired": (AuthRejected, "auth_rejected", False, "the token expired: create a new one"),
    "token_mismatched": (AuthRejected, "auth_rejected", False, "this token is for another AceData service"),
    "no_token": (AuthRejected, "auth_rejected", False, "no token was sent: check the profile"),
    "disabled": (AuthRejected, "permission_denied", False, "the application is disabled: see the AceData console"),
    "bad_request": (RequestRejected, "invalid_request", False, None),
    "api_not_implemented": (BadResponse, "bad_response", False, "check the base URL"),
    "no_api": (BadResponse, "bad_response", False, "check the base URL"),
    "api_error": (ProviderUnavailable, "server_error", True, None),
    "bad_gateway": (ProviderUnavailable, "server_error", True, None),
    "service_unavailable": (ProviderUnavailable, "unavailable", True, None),
    "timeout": (ProviderUnavailable, "server_timeout", True, None),
}


class AceDataDialect(Dialect):
    name = "acedata"
    # The docs only show URLs for the motion inputs and the image-to-video frames (start_image_url, end_image_url).
    image_base64 = False
    video_base64 = False
    # /kling/videos takes aspect_ratio whatever the action (§3.3)
    i2v_aspect_ratio = True
    # §3.3: prompt "required unless multi_shot ... customize" on /kling/videos, image2video included
    prompt_required = frozenset({"i2v"})
    # No limit is documented; small batches keep one slow answer from holding up many tasks.
    batch_size = 50

    def build_submit(self, kind: str, req: SubmitRequest) -> WireRequest:
        if isinstance(req, (T2VRequest, I2VRequest)):
            frames = {}
            if isinstance(req, I2VRequest):  # the frames as URLs; an end frame only with a start frame (§3.3)
                frames = {"start_image_url": req.image.value,
                          "end_image_url": req.image_tail.value if req.image_tail else None}
            body = drop_none({
                "action": "image2video" if isinstance(req, I2VRequest) else "text2video",
                "model": self.model_for(kind, req.model),
                **frames,
                "prompt": req.prompt,
                "negative_prompt": req.negative_prompt,
                "cfg_scale": req.cfg_scale,
                "mode": req.mode,
                "duration": req.duration,  # a number here, unlike Kling's string
                "aspect_ratio": req.aspect_ratio,
                "camera_control": req.camera_control,
                "callback_url": req.callback_url,
            })
            path = "/kling/videos"
        else:
            keep = None if req.keep_sound is None else ("yes" if req.keep_sound else "no")
            body = drop_none({
                "model_name": self.model_for(kind, req.model),
                "prompt": req.prompt,
                "image_url": req.image.value,
                "video_url": req.video.value,
                "character_orientation": req.orientation,
                "mode": req.mode,
                "keep_original_sound": keep,
                "callback_url": req.callback_url,
            })
            path = "/kling/motion"
        body["async"] = True
        body.update(req.extra)
        return WireRequest("POST", path, json=body, creates_task=True)

    def build_get(self, kind: str, task_id: str) -> WireRequest:
        return WireRequest("POST", "/kling/tasks", json={"id": task_id, "action": "retrieve"})

    def build_get_many(self, task_ids: list[str]) -> WireRequest:
        return WireRequest("POST", "/kling/tasks", json={"ids": list(task_ids), "action": "retrieve_batch"})

    def parse_many(self, payload: Any) -> list[Any]:
        items = dig(payload, "items")
        return items if isinstance(items, list) else []

    def parse_submit(self, kind: str, reply: Reply) -> Task:
        payload = reply.payload if isinstance(reply.payload, dict) else {}
        task_id = to_str_id(payload.get("task_id"))
        if task_id and reply.status >= 500:
            # e.g. 504 "timeout": the answer was slow, the task exists; follow it like any other
            return Task(id=task_id, kind=kind, status=TaskStatus.QUEUED, raw=reply.payload)
        if "video_url" in payload or "state" in payload:
            # a synchronous answer (the final result itself), shaped like a record's response
            return self.parse_task(kind, {"id": task_id, "response": payload}, task_id=task_id)
        if task_id:
            return Task(id=task_id, kind=kind, status=TaskStatus.QUEUED, raw=reply.payload)
        return unknown_task(kind, None, reply.payload)

    def parse_task(self, kind: str, payload: Any, *, task_id: str | None = None) -> Task:
        if not isinstance(payload, dict):
            return unknown_task(kind, task_id, payload)
        record_type = payload.get("type")
        if isinstance(record_type, str) and record_type in TYPE_KINDS:
            kind = TYPE_KINDS[record_type]
        action = dig(payload, "request", "action")
        if kind == "t2v" and isinstance(action, str) and action in ACTION_KINDS:
            kind = ACTION_KINDS[action]
        response = payload.get("response")
        created = epoch_to_iso(payload.get("created_at"), unit="s")  # float seconds
        updated = epoch_to_iso(payload.get("finished_at"), unit="s") or epoch_to_iso(payload.get("started_at"),
                                                                                       unit="s") or created
        request = payload.get("request")
        request = request if isinstance(request, dict) else None
        model = (request.get("model_name") or request.get("model")) if request else None
        task = Task(id=to_str_id(payload.get("id")) or task_id or "", kind=kind, status=TaskStatus.QUEUED,
                    created_at=created, updated_at=updated, raw=payload, request=request,
                    model=model if isinstance(model, str) else None)
        # AceData's MCP server reads a top-level `state` of failed/error/cancelled as the end, whatever the
        # response says (kling/tools/task_tools.py): a record may end that way with an empty response.
        outer_state = payload.get("state")
        if isinstance(outer_state, str) and outer_state.lower() in FAILED_STATES:
            task.status, task.raw_status = TaskStatus.FAILED, outer_state
            task.error = _failure(payload, response, outer_state)
            return task
        if response is None:
            return task  # accepted, not started: the record has no response yet
        if not isinstance(response, dict):
            task.status = TaskStatus.UNKNOWN
            return task
        state = response.get("state")
        task.raw_status = state if isinstance(state, str) else None
        success = response.get("success")
        url = text_or_none(response.get("video_url"))
        if success is False or response.get("error") or state in FAILED_STATES:
            task.status = TaskStatus.FAILED
            task.error = _failure(payload, response, state)
        elif success is True and (url or state in DONE_STATES or payload.get("finished_at") is not None):
            # without a URL: the provider says it is done and names no video (the service reports that)
            task.status = TaskStatus.SUCCEEDED
            task.progress = 1.0
            task.videos = [Video(id=to_str_id(response.get("video_id")), url=url,
                                 duration=to_number(response.get("duration")))] if url else []
        elif state in QUEUED_STATES:
            task.status = TaskStatus.QUEUED
        elif state is None or state in RUNNING_STATES or success is True:
            # `{"success": true, "task_id"}` alone is the acknowledgement of a task still running (AceData's SDK
            # and web client treat it so): done needs the video, a done state, or `finished_at`
            task.status = TaskStatus.RUNNING
        else:
            task.status = TaskStatus.UNKNOWN
        return task

    def error_for(self, reply: Reply) -> ApiError | None:
        payload = reply.payload
        error = dig(payload, "error")
        # A 5xx that names a task_id: the task was created and can be polled.
        if reply.status >= 500 and to_str_id(dig(payload, "task_id")) and reply.request_path != "/kling/tasks":
            return None
        if reply.request_path == "/kling/tasks" and payload == {} and reply.status == 200:
            return NotFound("no such task (AceData answered an empty record)")
        if isinstance(error, dict):
            code = text_or_none(error.get("code")) or ""
            message = text_or_none(error.get("message")) or code or "no message"
            kwargs = {"status": reply.status, "provider_code": code or None,
                      "request_id": text_or_none(dig(payload, "trace_id"))}
            known = _ERRORS.get(code)
            if known:
                cls, stable, retryable, hint = known
                return cls(f"AceData refused the request: {message}", hint=hint, code=stable, retryable=retryable,
                           **kwargs)
            return generic_error(reply, message, provider_code=code or None) or RequestRejected(
                f"AceData refused the request: {message}", **kwargs)
        if dig(payload, "success") is False and reply.request_path != "/kling/tasks":
            return RequestRejected("AceData refused the request (no reason given)", status=reply.status)
        return generic_error(reply)


def _failure(record: dict[str, Any], response: Any, state: Any) -> TaskError:
    """The reason from wherever the record carries one: the response's error (an object or a string), the
    record's own error, or a message beside it."""
    for error in (dig(response, "error"), record.get("error")):
        message = text_or_none(dig(error, "message")) or text_or_none(error)
        if message:
            return TaskError(code=text_or_none(dig(error, "code")), message=message)
    message = text_or_none(dig(response, "message")) or text_or_none(record.get("message"))
    word = state.lower() if isinstance(state, str) and state.lower() in FAILED_STATES else None
    return TaskError(code=word, message=message or (f"AceData marked the task {word}" if word else
                                                    "the provider gave no reason"))
