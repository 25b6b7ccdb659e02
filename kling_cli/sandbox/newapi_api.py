"""A new-api gateway's Kling routes as ezmodel runs them (the `newapi` dialect), emulated from
aigw-newapi-acedata.md §2 and kling-official-cometapi.md §2, seeds 001/002 (not from the client).

The gateway takes Kling-native bodies, relays them to Kling, and answers in its own shapes:
- `POST /kling/v1/videos/text2video`, `POST /kling/v1/videos/image2video` (Kling's body, `image` and
  `image_tail` a URL or raw base64, §2.4), `POST /kling/v1/videos/motion-control` -> the OpenAI-style video
  object with the Kling numeric id, `created_at` in seconds, `progress` an int (§2.5 "ezmodel today");
- `GET /kling/v1/videos/{action}/{task_id}`, and `GET /v1/video/generations/{task_id}` (new-api's own
  route, which its clients poll; ezmodel has both, router/video-router.go) -> the TaskDto envelope
  `{"code":"success","message":"","data":{9 fields}}` (§2.6, seed 002); the `{action}` segment is
  ignored, the id alone finds the task (§2.3 notes). Times are seconds, progress a string, `data` the raw
  inner Kling body.

Quirks emulated, each documented [CODE] in §2:
- the token may carry an `sk-` prefix and the scheme may be `bearer` (§2.2); a bad token is 401 in the
  OpenAI-style `new_api_error` shape (§2.9 B); an empty model is 400 in that shape, a model without a
  channel is 503 `model_not_found` (§2.9 B);
- `prompt` is required even for image to video and motion control: 400 `invalid_request` "prompt is
  required" (§2.4: "including image2video and motion-control");
- a metadata field of the wrong JSON type (notably a numeric `duration`) is HTTP 500
  `build_request_failed` "unmarshal metadata failed ..." (§2.4);
- motion-control field checks are HTTP 500 `build_request_failed` with the documented messages, with
  defaults `mode` std and `keep_original_sound` yes; `model_name` is not forwarded (§2.4);
- what Kling itself refuses (its validation, content policy, rate limit) comes back as
  `fail_to_fetch_task` with Kling's HTTP status and Kling's raw body as the message; a final 429's
  message is replaced by "当前分组上游负载已饱和，请稍后再试" (§2.9 A);
- insufficient balance: 403 `quota_not_enough` (§2.9 A); unknown task id: 400 `task_not_exist` (§2.6);
- on success the video URL sits in `fail_reason`; on failure `fail_reason` is Kling's envelope message
  "SUCCEED" and the real reason is the inner `task_status_msg` (§2.6, §2.12).

Inferred (not stated by the docs):
- status timeline: the first half of the store's queued phase is `NOT_START` "0%" with the inner Kling
  *submit* body (what new-api holds before its first poll, §2.6), the second half `SUBMITTED` "10%";
  then `IN_PROGRESS` "30%", then `SUCCESS`/`FAILURE` "100%" (§2.7 mapping). `QUEUED` is never produced:
  no Kling status maps to it. (ezmodel refreshes on every GET, so `NOT_START` is rare live but legal.);
- the submit answer's `status` is "" as ezmodel's code sends it (DoResponse never sets it; §2.5's example
  shows "queued", which upstream builds may send: clients take both);
- `sandbox:500` is HTTP 500 `do_request_failed`; `sandbox:flaky` queries are HTTP 503
  `fail_to_fetch_task` carrying Kling's 5001 body (ezmodel refreshes from Kling on GET, §2.10);
- `cfg_scale` is checked as the official emulation checks it, which takes it on every model (see
  `kling_api.validate_t2v`: new-api sends 0.5 in every Kling body, kling-v2 models included);
- any `{action}` segment is accepted on the GET; other POST actions answer 404 (not emulated);
- callbacks: `callback_url` is forwarded to Kling, which POSTs its bare task object with the Kling id.
"""

from __future__ import annotations

import json
import secrets
import string
import time
import uuid
from typing import Any

from kling_cli.presets import SANDBOX_API_KEY
from kling_cli.sandbox import kling_api
from kling_cli.sandbox.core import FallbackRouter, Sandbox, bearer_token, markers
from kling_cli.sandbox.server import BadJson, Request, Response, Router, html_response, json_response
from kling_cli.sandbox.store import QUEUED_SHARE, DuplicateExternalId, TaskRow

DIALECT = "newapi"
# path action -> (store kind, TaskDto action word, §2.6: `generate` is image to video)
ACTIONS = {"text2video": ("t2v", "textGenerate"), "image2video": ("i2v", "generate"),
           "motion-control": ("motion", "motionControl")}
ACTION_WORDS = {kind: word for kind, word in ACTIONS.values()}
CHANNEL_MODELS = kling_api.T2V_MODELS | kling_api.I2V_MODELS | kling_api.MOTION_MODELS
SATURATED = "当前分组上游负载已饱和，请稍后再试"  # §2.9 A: "the group's upstream is saturated, retry later"
# Fields of the Kling t2v metadata struct and their Go types (§2.4 table), for the unmarshal check.
STRING_FIELDS = ("model_name", "model", "prompt", "negative_prompt", "mode", "aspect_ratio", "duration", "sound",
                 "callback_url", "external_task_id", "image", "image_tail")
FLOAT_FIELDS = ("cfg_scale",)


class TaskError(Exception):
    """new-api's task error, `{"code": "<snake>", "message": ..., "data": null}` (§2.9 A)."""

    def __init__(self, http: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http, self.code, self.message = http, code, message

    def response(self) -> Response:
        return json_response(self.http, {"code": self.code, "message": self.message, "data": None})


class GatewayError(TaskError):
    """new-api's middleware error, OpenAI style (§2.9 B)."""

    def response(self) -> Response:
        return json_response(self.http, {"error": {
            "message": f"{self.message} (request id: {_request_id()})", "type": "new_api_error", "code": self.code,
        }})


def _request_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return time.strftime("%Y%m%d%H%M%S") + "".join(secrets.choice(alphabet) for _ in range(8))


def _upstream(refusal: kling_api.Refusal) -> TaskError:
    """A Kling non-2xx answer as new-api relays it: its status, its raw body as the message (§2.9 A)."""
    if refusal.http == 429:
        return TaskError(429, "fail_to_fetch_task", SATURATED)
    raw = {"code": refusal.code, "message": refusal.message, "request_id": str(uuid.uuid4())}
    return TaskError(refusal.http, "fail_to_fetch_task", json.dumps(raw, separators=(",", ":")))


def _check_auth(req: Request) -> None:
    token = bearer_token(req, any_case=True) or ""
    if token.removeprefix("sk-") != SANDBOX_API_KEY:
        raise GatewayError(401, "", "无效的令牌")  # "invalid token" (§2.2)


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _unmarshal_check(body: dict[str, Any]) -> None:
    """Go's json.Unmarshal of the metadata over the t2v struct (§2.4 "duration" quirk)."""
    for key in STRING_FIELDS + FLOAT_FIELDS:
        value = body.get(key)
        if value is None:
            continue
        want = "string" if key in STRING_FIELDS else "float64"
        if (want == "string") != isinstance(value, str) or (want == "float64" and _go_type(value) != "number"):
            raise TaskError(500, "build_request_failed",
                            f"unmarshal metadata failed: json: cannot unmarshal {_go_type(value)} into Go struct "
                            f"field requestPayload.{key} of type {want}")


def _motion_payload(body: dict[str, Any]) -> dict[str, Any]:
    """The fork's motion-control checks and the payload it forwards (§2.4; model_name is dropped)."""
    for key in ("image_url", "video_url"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise TaskError(500, "build_request_failed", f"{key} is required for motion-control")
    orientation = body.get("character_orientation")
    if not orientation:
        raise TaskError(500, "build_request_failed", "character_orientation is required for motion-control")
    if orientation not in ("image", "video"):
        raise TaskError(500, "build_request_failed", "character_orientation must be 'image' or 'video'")
    mode = body.get("mode") or "std"
    if mode not in ("std", "pro"):
        raise TaskError(500, "build_request_failed", "mode must be 'std' or 'pro'")
    payload = {key: body.get(key) for key in ("prompt", "image_url", "video_url", "character_orientation",
                                               "callback_url", "external_task_id")}
    payload.update(mode=mode, keep_original_sound=body.get("keep_original_sound") or "yes")
    return {k: v for k, v in payload.items() if v not in (None, "")}


def submit(sandbox: Sandbox, req: Request, kind: str) -> Response:
    try:
        _check_auth(req)
        try:
            body = req.json()
        except BadJson:
            raise TaskError(400, "invalid_request", "invalid request body") from None
        if not isinstance(body, dict):
            raise TaskError(400, "invalid_request", "invalid request body")
        model = body.get("model_name") or body.get("model")
        if not isinstance(model, str) or not model:
            # "model name not specified; it cannot be empty" (§2.4, §2.9 B)
            raise GatewayError(400, "", "未指定模型名称，模型名称不能为空")
        if model not in CHANNEL_MODELS:
            # "no channel available for model X in group default" (§2.9 B)
            raise GatewayError(503, "model_not_found", f"分组 default 下模型 {model} 无可用渠道")
        marks = markers(body.get("prompt"))
        key = f"{DIALECT}:{body.get('prompt')}"
        sandbox.count(f"{DIALECT}:submit_attempts")
        fault = sandbox.submit_fault(marks, key)
        if fault == "429":
            raise TaskError(429, "fail_to_fetch_task", SATURATED)
        if fault == "billing":
            raise TaskError(403, "quota_not_enough", "user quota is not enough")
        if fault == "policy":
            raise _upstream(kling_api.Refusal(400, 1301, "The content security policy was triggered"))
        if fault == "500":
            raise TaskError(500, "do_request_failed", "upstream request failed")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise TaskError(400, "invalid_request", "prompt is required")
        try:
            if kind in ("t2v", "i2v"):
                _unmarshal_check(body)
                kling_api.VALIDATORS[kind](body)
            else:
                kling_api.validate_motion(_motion_payload(body))
        except kling_api.Refusal as refusal:
            raise _upstream(refusal) from None
        external_id = body.get("external_task_id") or None
        try:
            row = sandbox.store.create(
                task_id=kling_api.new_id(),
                dialect=DIALECT,
                kind=kind,
                request=kling_api.redact_media(body),
                external_id=external_id,
                seconds=sandbox.seconds_for(marks),
                outcome="failed" if "fail" in marks else "succeeded",
                reason=kling_api.RISK_MESSAGE if "fail" in marks else None,
                video_id=kling_api.new_id(),
                callback_url=body.get("callback_url") or None,
                meta={"model": model},
            )
        except DuplicateExternalId:
            raise _upstream(kling_api.Refusal(400, 1201, f"external_task_id {external_id} already exists")) from None
        sandbox.count(f"{DIALECT}:created")
    except TaskError as error:
        return error.response()
    if sandbox.fires(marks, "lost", key):
        return Response(200, drop=True)
    # §2.5: the OpenAI-style video object; id and task_id are the Kling id, created_at in seconds; `status` is
    # never set on it (cuijinyu/new-api relay/channel/task/kling/adaptor.go DoResponse), so it is ""
    return json_response(200, {"id": row.id, "task_id": row.id, "object": "video", "model": model,
                               "status": "", "progress": 0, "created_at": int(row.created)})


def _status(row: TaskRow, now: float) -> tuple[str, str]:
    """(TaskDto status, progress) for the task at `now` (§2.7 mapping; timeline inferred)."""
    phase = row.phase(now)
    if phase == "queued":
        first_poll = row.created + row.seconds * QUEUED_SHARE / 2
        return ("NOT_START", "0%") if now < first_poll else ("SUBMITTED", "10%")
    return {"running": ("IN_PROGRESS", "30%"), "succeeded": ("SUCCESS", "100%"),
            "failed": ("FAILURE", "100%")}[phase]


def task_dto(sandbox: Sandbox, req: Request, row: TaskRow, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    status, progress = _status(row, now)
    inner = kling_api.task_object(sandbox, req, row, now)
    if status == "NOT_START":
        # before its first poll new-api holds Kling's submit answer (§2.6 `data` row)
        inner = {k: inner[k] for k in ("task_id", "task_status", "task_info", "created_at", "updated_at")}
    # Kling's envelope as new-api stored it; a stable request id per stored answer
    raw = {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{row.id}:{status}")),
           "data": inner}
    fail_reason = ""
    if status == "SUCCESS":
        fail_reason = next((video["url"] for video in inner["task_result"]["videos"]), "")
    elif status == "FAILURE":
        fail_reason = raw["message"]  # ezmodel copies Kling's top-level message: "SUCCEED" (§2.6, §2.12)
    started = row.created + row.seconds * QUEUED_SHARE
    return {
        "task_id": row.id,
        "action": ACTION_WORDS[row.kind],
        "status": status,
        "fail_reason": fail_reason,
        "submit_time": int(row.created),
        "start_time": int(started) if status in ("IN_PROGRESS", "SUCCESS", "FAILURE") else 0,
        "finish_time": int(row.created + row.seconds) if status in ("SUCCESS", "FAILURE") else 0,
        "progress": progress,
        "data": raw,
    }


def query(sandbox: Sandbox, req: Request) -> Response:
    try:
        _check_auth(req)
        row = sandbox.store.get(DIALECT, req.params["task_id"])
        if row is None:
            raise TaskError(400, "task_not_exist", "task_not_exist")
        if sandbox.fires(markers(row.request.get("prompt")), "flaky", f"query:{row.id}"):
            raise _upstream(kling_api.Refusal(503, 5001, "Service temporarily unavailable"))
    except TaskError as error:
        return error.response()
    return json_response(200, {"code": "success", "message": "", "data": task_dto(sandbox, req, row)})


def callback_payload(sandbox: Sandbox, row: TaskRow) -> dict[str, Any]:
    return kling_api.callback_payload(sandbox, row)


INDEX_PAGE = "<!doctype html><html><head><title>New API</title></head><body><div id=\"root\"></div></body></html>"
# QuantumNous/new-api router/web-router.go (@3856b9d2c): paths no route matches answer JSON 404 under these
# prefixes, and the dashboard's HTML page (HTTP 200) everywhere else, /kling included
API_PREFIXES = ("/v1", "/api", "/assets")


def upstream_router(sandbox: Sandbox, prefix: str = "/newapi-upstream") -> FallbackRouter:
    """new-api itself (QuantumNous/new-api), which routes Kling's text2video and image2video only
    (router/video-router.go): no motion control. A path it does not route gets its NoRoute answer, the
    dashboard's HTML page, or for API prefixes `404 {"error": {"message": "Invalid URL (METHOD PATH)",
    "type": "invalid_request_error", "param": "", "code": ""}}` (controller/relay.go RelayNotFound; forks
    that list /kling among the API prefixes, like ezmodel's, answer Kling paths that way).

    Its text- and image-to-video routes answer as the ezmodel emulation's do (upstream's `task_...` public ids and
    longer TaskDto are not emulated), and its tasks are the `newapi` dialect's."""

    def no_route(req: Request) -> Response:
        path = req.path[len(prefix):] or "/"
        if path.startswith(API_PREFIXES):
            return json_response(404, {"error": {"message": f"Invalid URL ({req.method} {path})",
                                                 "type": "invalid_request_error", "param": "", "code": ""}})
        return html_response(200, INDEX_PAGE)

    routes = FallbackRouter(prefix, no_route)

    @routes.route("POST", "/kling/v1/videos/text2video")
    def create(req: Request) -> Response:
        return submit(sandbox, req, "t2v")

    @routes.route("POST", "/kling/v1/videos/image2video")
    def create_i2v(req: Request) -> Response:
        return submit(sandbox, req, "i2v")

    @routes.route("GET", "/kling/v1/videos/text2video/{task_id}")
    @routes.route("GET", "/kling/v1/videos/image2video/{task_id}")
    @routes.route("GET", "/v1/video/generations/{task_id}")
    def get_task(req: Request) -> Response:
        return query(sandbox, req)

    return routes


def router(sandbox: Sandbox, prefix: str = "/newapi") -> Router:
    routes = Router(prefix)

    @routes.route("POST", "/kling/v1/videos/{action}")
    def create(req: Request) -> Response:
        found = ACTIONS.get(req.params["action"])
        if found is None:
            return GatewayError(404, "", f"{req.params['action']} is not emulated by the sandbox").response()
        return submit(sandbox, req, found[0])

    @routes.route("GET", "/kling/v1/videos/{action}/{task_id}")
    @routes.route("GET", "/v1/video/generations/{task_id}")  # new-api's own route, which its clients poll
    def get_task(req: Request) -> Response:
        return query(sandbox, req)

    return routes
