"""AceDataCloud's Kling API, emulated from aigw-newapi-acedata.md §3 and seed 003 (not from the client).

Routes, under this dialect's mount prefix:
- `POST /kling/videos` (§3.3: `action` text2video or image2video, `model`, numeric `duration`, ...; image to
  video takes its frames as `start_image_url` and `end_image_url`, an end frame only with a start frame,
  and its API reference restricts end frames: 5 s only, mode pro on kling-v1-6, kling-v2-5-turbo and
  kling-v2-6, none on kling-v2-master and kling-v2-1-master) and
  `POST /kling/motion` (§3.4: `model_name`, `image_url`, `video_url`, `character_orientation`, `mode`).
  Synchronous by default: the answer waits until the video is done and is the final result
  `{"success":true,"video_id","video_url","duration":"<video seconds>","state":"succeed","task_id"}`.
  With `"async": true` or a `callback_url` the answer is `{"task_id":"<uuid>"}` at once (§3.5).
- `POST /kling/tasks`: `{"id","action":"retrieve"}` -> the task record (§3.6, seed 003);
  `{"ids":[...],"action":"retrieve_batch"}` -> `{"items":[...],"count":n}`.
  A record has no `response` while pending (as AceData's web client types and tests it: Nexior
  src/models/kling.ts, `response` optional; Preview.test.ts, "pending ... before a response exists"; its
  SDK, acedatacloud, reads such a motion record as succeeded only because it takes the request's input
  URLs for results when there is no response), a `response` without `success` while processing, and
  `response.success` true + `video_url` + `state:"succeed"` when done, or `success:false` + `error`.
  `created_at`/`started_at`/`finished_at` are float seconds; top-level `duration` is the job's elapsed
  float seconds while `response.duration` is the video length as a string (§3.6 "Beware").
- Errors: `{"success":false,"error":{"code","message"},"trace_id"}` with the §3.7 statuses: 400 no_token
  (no token), 401 invalid_token, 400 bad_request (validation and upstream refusals, e.g. the content
  policy), 403 used_up (balance), 429 too_many_requests, 500 api_error, 503 service_unavailable,
  504 timeout (with `task_id` and `started_at`), 404 no_api for a path that is not an API.
- Callbacks: the same JSON as the synchronous result, POSTed to `callback_url` (§3.5).

Inferred (not stated by the docs):
- an unknown id retrieves `{}` (§3.6: the OpenAPI lists `{}` as a valid result); a batch omits unknown ids;
- the processing `response` is `{"task_id", "state":"processing"}`; `started_at` appears once running;
- a synchronous task that fails answers HTTP 400 with the failed `response` body (error code
  `bad_request`, the way upstream Kling refusals surface, §3.7); the failure callback is that same body;
- `sandbox:504` (xN) makes a synchronous submit answer 504 `timeout` at once, and a synchronous submit
  whose `timeout` (seconds, §3.3) runs out first answers the same; the task exists and can be polled;
- `sandbox:flaky` (xN) makes the first N retrievals of that task answer 503 `service_unavailable`;
- `sandbox:cancelled` ends the task as a record with a top-level `state` "cancelled" and an empty
  `response` (AceData's MCP server reads a top-level failed/error/cancelled state as terminal);
- `sandbox:novideo` ends it as `{"success": true, "state": "succeed", "task_id"}` without a video;
- a non-numeric `duration`, or an `action` other than text2video and image2video (extend is not
  emulated), is 400 `bad_request`; so is an image2video without `start_image_url`, or with a frame that
  is not an http(s) URL (the docs show URLs only).
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

from kling_cli.presets import SANDBOX_API_KEY
from kling_cli.sandbox import kling_api
from kling_cli.sandbox.core import FallbackRouter, Sandbox, bearer_token, markers
from kling_cli.sandbox.server import BadJson, Request, Response, json_response
from kling_cli.sandbox.store import QUEUED_SHARE, TaskRow

DIALECT = "acedata"
# §3.3 model list (kling-video-o1 is the older docs' name of kling-o1)
T2V_MODELS = {"kling-v1", "kling-v1-6", "kling-v2-master", "kling-v2-1-master", "kling-v2-5-turbo", "kling-v2-6",
              "kling-v3", "kling-v3-omni", "kling-o1", "kling-video-o1", "kling-v3-turbo"}
LONG_MODELS = {"kling-v3", "kling-v3-omni", "kling-v3-turbo"}  # 3-15 s
FIVE_ONLY_MODELS = {"kling-o1", "kling-video-o1"}
FOUR_K_MODELS = {"kling-v3", "kling-v3-omni"}
MOTION_MODELS = {"kling-v2-6", "kling-v3"}
RECORD_TYPES = {"t2v": "videos", "i2v": "videos", "motion": "motion"}
# the end-frame restrictions of the image2video reference (`end_image_url`)
END_FRAME_PRO_MODELS = {"kling-v1-6", "kling-v2-5-turbo", "kling-v2-6"}
NO_END_FRAME_MODELS = {"kling-v2-master", "kling-v2-1-master"}
VIDEO_SECONDS = "5.041"  # §3.5 example; the length of a video as this API words it (a string)
TIMEOUT_MESSAGE = "任务处理超时。"  # "task processing timed out" (§3.7)
# fixed account ids for the record (seed 003 shows uuids); stable so records look alike across calls
ACCOUNT = {name: str(uuid.uuid5(uuid.NAMESPACE_URL, f"kling-sandbox:{name}"))
           for name in ("api_id", "application_id", "credential_id", "user_id")}


class AceError(Exception):
    def __init__(self, http: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.http, self.code, self.message, self.extra = http, code, message, extra

    def response(self) -> Response:
        body = {"success": False, "error": {"code": self.code, "message": self.message},
                "trace_id": str(uuid.uuid4()), **self.extra}
        return json_response(self.http, body)


FAULTS = {
    "429": AceError(429, "too_many_requests", "You have exceeded the rate limit."),
    "billing": AceError(403, "used_up", "Your balance is not sufficient, please recharge."),
    "policy": AceError(400, "bad_request", "The content security policy was triggered."),
    "500": AceError(500, "api_error", "Internal server error."),
}


def _check_auth(req: Request) -> None:
    if not req.headers.get("Authorization"):
        raise AceError(400, "no_token", "No token specified for the request.")
    if bearer_token(req, any_case=True) != SANDBOX_API_KEY:
        raise AceError(401, "invalid_token", "The token is invalid.")


def _bad(message: str) -> AceError:
    return AceError(400, "bad_request", message)


def _enum(body: dict[str, Any], key: str, allowed: set[str], default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is None:
        raise _bad(f"{key} is required.")
    if value not in allowed:
        raise _bad(f"{key} is invalid.")
    return value


def _optional_str(body: dict[str, Any], key: str) -> None:
    if body.get(key) is not None and not isinstance(body[key], str):
        raise _bad(f"{key} is invalid.")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_videos(body: dict[str, Any]) -> None:
    """§3.3 (text2video and image2video)."""
    action = body.get("action")
    if action not in ("text2video", "image2video"):
        raise _bad("action is invalid." if action != "extend" else f"action {action} is not emulated by the sandbox.")
    model = _enum(body, "model", T2V_MODELS, "kling-v1")
    mode = _enum(body, "mode", {"std", "pro", "4k"}, "std")
    if mode == "4k" and model not in FOUR_K_MODELS:
        raise _bad(f"mode 4k is not supported with {model}.")
    if mode == "4k" and body.get("camera_control") is not None:
        raise _bad("mode 4k is not supported with camera_control.")
    customized = body.get("multi_shot") is True and body.get("shot_type") == "customize" \
        and isinstance(body.get("multi_prompt"), list) and body["multi_prompt"]
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise _bad("prompt is invalid.")
    if not customized and not (prompt or "").strip():
        raise _bad("prompt is required.")
    duration = body.get("duration", 5)
    if not _number(duration):
        raise _bad("duration is invalid.")
    allowed = range(3, 16) if model in LONG_MODELS else (5,) if model in FIVE_ONLY_MODELS else (5, 10)
    if duration not in allowed:
        raise _bad(f"duration {duration} is not supported with {model}.")
    _enum(body, "aspect_ratio", {"16:9", "9:16", "1:1"}, "16:9")
    _optional_str(body, "negative_prompt")
    if action == "image2video":
        _frames(body, model)
    elif body.get("start_image_url") is not None or body.get("end_image_url") is not None:
        raise _bad("start_image_url and end_image_url are effective only when action is image2video.")
    _common(body)


def _frames(body: dict[str, Any], model: str) -> None:
    for key in ("start_image_url", "end_image_url"):
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or not value.startswith(("http://", "https://"))):
            raise _bad(f"{key} is invalid.")
    if body.get("start_image_url") is None:
        raise _bad("start_image_url is required." if body.get("end_image_url") is None
                   else "end_image_url is valid only when start_image_url is not empty.")
    if body.get("end_image_url") is None:
        return
    if model in NO_END_FRAME_MODELS:
        raise _bad(f"end_image_url is not supported with {model}.")
    if model in END_FRAME_PRO_MODELS and body.get("mode", "std") != "pro":
        raise _bad(f"end_image_url requires mode pro with {model}.")
    if body.get("duration", 5) != 5:
        raise _bad("requests that include end frames only support 5 seconds.")


def validate_motion(body: dict[str, Any]) -> None:
    """§3.4."""
    _enum(body, "model_name", MOTION_MODELS, "kling-v2-6")
    for key in ("image_url", "video_url"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise _bad(f"{key} is required.")
    _enum(body, "character_orientation", {"image", "video"})
    _enum(body, "mode", {"std", "pro"})
    _enum(body, "keep_original_sound", {"yes", "no"}, "yes")
    _optional_str(body, "prompt")
    _common(body)


def _common(body: dict[str, Any]) -> None:
    _optional_str(body, "callback_url")
    if body.get("async") is not None and not isinstance(body["async"], bool):
        raise _bad("async is invalid.")
    timeout = body.get("timeout")
    if timeout is not None and (not _number(timeout) or timeout <= 0):
        raise _bad("timeout is invalid.")


def result_body(sandbox: Sandbox, where: Request | str, row: TaskRow) -> dict[str, Any]:
    """The final answer of a finished task: the synchronous body, the callback, the record's `response`."""
    if row.outcome == "succeeded" and "novideo" in markers(row.request.get("prompt")):
        return {"success": True, "state": "succeed", "task_id": row.id}  # a success that names no video
    if row.outcome == "succeeded":
        return {"success": True, "video_id": row.video_id, "video_url": sandbox.video_url(where, row.video_id),
                "duration": VIDEO_SECONDS, "state": "succeed", "task_id": row.id}
    return {"success": False, "task_id": row.id, "error": {"code": "bad_request", "message": row.reason or "failed"},
            "trace_id": row.meta["trace_id"]}


def record(sandbox: Sandbox, req: Request, row: TaskRow, now: float | None = None) -> dict[str, Any]:
    """The task record of seed 003, at `now`."""
    now = time.time() if now is None else now
    phase = row.phase(now)
    out: dict[str, Any] = {
        "_id": row.meta["_id"], "id": row.id, **ACCOUNT, "created_at": round(row.created, 3),
        "request": row.request, "trace_id": row.meta["trace_id"], "type": RECORD_TYPES[row.kind],
        "job_id": row.meta["job_id"],
    }
    if phase == "queued":
        return out
    out["started_at"] = round(row.created + row.seconds * QUEUED_SHARE, 3)
    if phase == "running":
        out["response"] = {"task_id": row.id, "state": "processing"}
        return out
    finished = row.created + row.seconds
    if "cancelled" in markers(row.request.get("prompt")):
        # ended by the service itself: the state on the record, the response empty (what AceData's MCP server
        # reads as terminal; inferred, as no example of such a record is public)
        out.update(state="cancelled", response={}, finished_at=round(finished, 3))
        return out
    out.update(response=result_body(sandbox, req, row), duration=finished - row.created,
               finished_at=round(finished, 3))
    return out


def _timeout(row: TaskRow) -> AceError:
    return AceError(504, "timeout", TIMEOUT_MESSAGE, task_id=row.id, started_at=round(row.created, 3))


def submit(sandbox: Sandbox, req: Request, kind: str) -> Response:
    try:
        _check_auth(req)
        try:
            body = req.json()
        except BadJson:
            raise _bad("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object.")
        marks = markers(body.get("prompt"))
        key = f"{DIALECT}:{body.get('prompt')}"
        sandbox.count(f"{DIALECT}:submit_attempts")
        fault = sandbox.submit_fault(marks, key)
        if fault:
            raise FAULTS[fault]
        (validate_motion if kind == "motion" else validate_videos)(body)
        row = sandbox.store.create(
            task_id=str(uuid.uuid4()),
            dialect=DIALECT,
            kind=kind,
            request=kling_api.redact_media(body),
            external_id=None,
            seconds=sandbox.seconds_for(marks),
            outcome="failed" if "fail" in marks or "cancelled" in marks else "succeeded",
            reason=kling_api.RISK_MESSAGE if "fail" in marks else None,
            video_id=kling_api.new_id(),  # §3.5: video_id is Kling's numeric id
            callback_url=body.get("callback_url") or None,
            meta={"_id": secrets.token_hex(12), "trace_id": str(uuid.uuid4()), "job_id": secrets.token_urlsafe(16)},
        )
        sandbox.count(f"{DIALECT}:created")
    except AceError as error:
        return error.response()
    if sandbox.fires(marks, "lost", key):
        return Response(200, drop=True)
    if body.get("async") is True or row.callback_url:
        return json_response(200, {"task_id": row.id})
    return _wait(sandbox, req, row, marks, key, body.get("timeout"))


def _wait(sandbox: Sandbox, req: Request, row: TaskRow, marks: dict[str, int], key: str, timeout: Any) -> Response:
    """The synchronous default (§3.5): hold the request until the task is done."""
    if sandbox.fires(marks, "504", key):
        return _timeout(row).response()
    done = row.created + row.seconds
    limit = time.time() + timeout if timeout is not None else done
    while time.time() < min(done, limit):
        time.sleep(min(0.05, max(0.0, min(done, limit) - time.time())))
    if time.time() < done:
        return _timeout(row).response()
    body = result_body(sandbox, req, row)
    return json_response(200 if body["success"] else 400, body)


def tasks(sandbox: Sandbox, req: Request) -> Response:
    try:
        _check_auth(req)
        try:
            body = req.json()
        except BadJson:
            raise _bad("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object.")
        action = body.get("action", "retrieve")
        if action == "retrieve":
            if not isinstance(body.get("id"), str) or not body["id"]:
                raise _bad("id is required.")
            rows = [sandbox.store.get(DIALECT, body["id"])]
        elif action == "retrieve_batch":
            ids = body.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise _bad("ids is invalid.")
            rows = [sandbox.store.get(DIALECT, task_id) for task_id in ids]
        else:
            raise _bad("action is invalid.")
        found = [row for row in rows if row is not None]
        for row in found:
            if sandbox.fires(markers(row.request.get("prompt")), "flaky", f"query:{row.id}"):
                raise AceError(503, "service_unavailable", "The service is temporarily unavailable.")
    except AceError as error:
        return error.response()
    now = time.time()
    records = [record(sandbox, req, row, now) for row in found]
    if action == "retrieve":
        return json_response(200, records[0] if records else {})
    return json_response(200, {"items": records, "count": len(records)})


def callback_payload(sandbox: Sandbox, row: TaskRow) -> dict[str, Any]:
    return result_body(sandbox, sandbox.origin, row)


def router(sandbox: Sandbox, prefix: str = "/acedata") -> FallbackRouter:
    def no_api(_req: Request) -> Response:
        return AceError(404, "no_api", "API does not exist, please make sure url is correct.").response()

    routes = FallbackRouter(prefix, no_api)

    @routes.route("POST", "/kling/videos")
    def videos(req: Request) -> Response:
        try:
            action = req.json().get("action")
        except (BadJson, AttributeError):
            action = None
        return submit(sandbox, req, "i2v" if action == "image2video" else "t2v")

    @routes.route("POST", "/kling/motion")
    def motion(req: Request) -> Response:
        return submit(sandbox, req, "motion")

    @routes.route("POST", "/kling/tasks")
    def retrieve(req: Request) -> Response:
        return tasks(sandbox, req)

    return routes
