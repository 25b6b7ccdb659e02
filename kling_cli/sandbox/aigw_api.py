"""The "aigw" gateway (xxd.fans, product "Kevin"), emulated from seed 000 and aigw-newapi-acedata.md §1
(not from the client). Only one public page documents it: much here is a best guess, marked inferred.

Routes, under this dialect's mount prefix:
- `POST /open/aigw/gateway/generations`, body `{"model": "...", "callbackUrl": "...", "params": {...}}`
  (§1.4: `model` and `callbackUrl` are documented, the `params` object is inferred) ->
  `{"code":1000,"message":"success","data":{"taskNo":"<32 hex>"}}` (§1.5, inferred from the query envelope).
- `GET /open/aigw/gateway/generationTask?taskNo=` -> `{"code":1000,"message":"success","data":{taskNo,
  model, status, ...}}` (§1.6, seed 000), status `pending|processing|success|failed`; on success
  `data.data.result.video_url` (motion control) or `data.data.result` as a list of URLs (the other
  models: the img2video and subject-reference pages) and `usage.totalPoints`; on failure `error` (a
  string), still `code` 1000.
- Callback (seed 000): when a task with `callbackUrl` ends, the documented success or failure body is
  POSTed, signed `sign = sha256_hex(taskNo + str(timestamp) + apiKey)`.

Inferred (the docs state none of this):
- auth: `Authorization: Bearer <apiKey>` (§1.3: header unknown; the callback signs with the API key), or
  `X-API-Key: <apiKey>`, the other common gateway convention;
- body: the Kling fields in a `params` object (§1.4 sketch), or at the top level beside `model`;
- models: `kling_2.6_motion_control` is documented for motion control; text-to-video names are not
  public, so any `kling_...` name containing `text_to_video` (e.g. `kling_2.6_text_to_video`) is taken
  as text to video (§1.4 "by analogy"); the img2video page names `kling_3.0-Omni_img2video` (versions 2.1,
  2.5, O1, 2.6, 3.0, 3.0-Omni), so any `kling_..._img2video` is image to video;
- `params` keys are accepted in camelCase (the §1.4 sketch) or Kling's snake_case: motion needs
  `imageUrl`/`image_url` and `videoUrl`/`video_url`, with defaults `characterOrientation` image,
  `mode` std, `keepOriginalSound` yes; text to video needs `prompt`, with `duration` 5|10 (number or
  numeric string, default 5), `aspectRatio` 16:9|9:16|1:1 (default 16:9), `mode` std|pro; image to video
  ("the input image as the first frame, with a first-and-last-frame mode", its page) needs `image`
  (`imageUrl`, `image_url`) and takes `imageTail` (`image_tail`), both http(s) URLs, an optional prompt,
  and `duration` and `mode` as above;
- errors: `{"code": <not 1000>, "message": "...", "data": null}` with these codes and HTTP statuses:
    401 / 1001  missing or invalid API key
    400 / 1002  invalid parameters (body, model, params, missing taskNo)
    403 / 1003  insufficient points (`sandbox:billing`)
    429 / 1004  too many requests (`sandbox:429`)
    404 / 1005  unknown taskNo
    400 / 1006  content policy (`sandbox:policy`)
    500 / 1500  internal error (`sandbox:500`)
    503 / 1503  temporarily unavailable (`sandbox:flaky` queries)
- `createTime` is "YYYY-MM-DD HH:MM:SS" in UTC+8 (zone-less in the docs, §1.6); it is left out of a
  failed task's answer, as in the documented failure example, so clients must not require it;
- a pending or processing answer has only taskNo, model, status, createTime (§1.6 "in progress");
- every task costs 10 points (the documented example value);
- the callback's inner `data.task_id` (a uuid) and `request_id` (32 hex) are derived from the taskNo;
  `timestamp` is Unix seconds at sending time; the hex digest is lowercase (§1.7).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from kling_cli.presets import SANDBOX_API_KEY
from kling_cli.sandbox import kling_api
from kling_cli.sandbox.core import Sandbox, bearer_token, markers
from kling_cli.sandbox.server import BadJson, Request, Response, Router, json_response
from kling_cli.sandbox.store import TaskRow

DIALECT = "aigw"
SUCCESS = 1000
MOTION_MODEL = "kling_2.6_motion_control"
POINTS = 10
UTC8 = 8 * 3600
STATUS_WORDS = {"queued": "pending", "running": "processing", "succeeded": "success", "failed": "failed"}


class AigwError(Exception):
    def __init__(self, http: int, code: int, message: str) -> None:
        super().__init__(message)
        self.http, self.code, self.message = http, code, message

    def response(self) -> Response:
        return json_response(self.http, {"code": self.code, "message": self.message, "data": None})


FAULTS = {
    "429": AigwError(429, 1004, "too many requests"),
    "billing": AigwError(403, 1003, "insufficient points"),
    "policy": AigwError(400, 1006, "content policy violation"),
    "500": AigwError(500, 1500, "internal error"),
}


def _check_auth(req: Request) -> None:
    if SANDBOX_API_KEY not in (bearer_token(req), req.headers.get("X-API-Key")):
        raise AigwError(401, 1001, "invalid api key")


def _invalid(message: str) -> AigwError:
    return AigwError(400, 1002, message)


def kind_of(model: Any) -> str:
    if model == MOTION_MODEL:
        return "motion"
    if isinstance(model, str) and model.startswith("kling_") and "text_to_video" in model:
        return "t2v"
    if isinstance(model, str) and model.startswith("kling_") and model.endswith("_img2video"):
        return "i2v"
    raise _invalid(f"unsupported model: {model}")


def _param(params: dict[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    value = params.get(camel, params.get(snake))
    return default if value is None else value


def _choice(params: dict[str, Any], camel: str, snake: str, allowed: tuple[str, ...], default: str) -> str:
    value = _param(params, camel, snake, default)
    if value not in allowed:
        raise _invalid(f"params.{camel} must be one of: {', '.join(allowed)}")
    return value


def validate(kind: str, params: dict[str, Any]) -> None:
    prompt = params.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise _invalid("params.prompt must be a string")
    _choice(params, "mode", "mode", ("std", "pro"), "std")
    if kind == "motion":
        for camel, snake in (("imageUrl", "image_url"), ("videoUrl", "video_url")):
            value = _param(params, camel, snake)
            if not isinstance(value, str) or not value:
                raise _invalid(f"params.{camel} is required")
        _choice(params, "characterOrientation", "character_orientation", ("image", "video"), "image")
        sound = _param(params, "keepOriginalSound", "keep_original_sound", "yes")
        if sound not in ("yes", "no", True, False):
            raise _invalid("params.keepOriginalSound must be one of: yes, no")
        return
    if kind == "i2v":
        for names, required in ((("image", "imageUrl", "image_url"), True), (("imageTail", "image_tail"), False)):
            value = next((params[name] for name in names if params.get(name) is not None), None)
            if value is None and required:
                raise _invalid(f"params.{names[0]} is required")
            if value is not None and (not isinstance(value, str) or not value.startswith(("http://", "https://"))):
                raise _invalid(f"params.{names[0]} must be an http(s) URL")
    elif not (prompt or "").strip():
        raise _invalid("params.prompt is required")
    duration = params.get("duration", 5)
    if isinstance(duration, bool) or str(duration) not in ("5", "10"):
        raise _invalid("params.duration must be 5 or 10")
    if kind == "t2v":
        _choice(params, "aspectRatio", "aspect_ratio", ("16:9", "9:16", "1:1"), "16:9")


def submit(sandbox: Sandbox, req: Request) -> Response:
    try:
        _check_auth(req)
        try:
            body = req.json()
        except BadJson:
            raise _invalid("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _invalid("request body must be a JSON object")
        params = body.get("params", {k: v for k, v in body.items() if k not in ("model", "callbackUrl")})
        if not isinstance(params, dict):
            raise _invalid("params must be an object")
        marks = markers(params.get("prompt"))
        key = f"{DIALECT}:{params.get('prompt')}"
        sandbox.count(f"{DIALECT}:submit_attempts")
        fault = sandbox.submit_fault(marks, key)
        if fault:
            raise FAULTS[fault]
        kind = kind_of(body.get("model"))
        callback = body.get("callbackUrl")
        if callback is not None and not isinstance(callback, str):
            raise _invalid("callbackUrl must be a string")
        validate(kind, params)
        row = sandbox.store.create(
            task_id=uuid.uuid4().hex,
            dialect=DIALECT,
            kind=kind,
            request=body,
            external_id=None,
            seconds=sandbox.seconds_for(marks),
            outcome="failed" if "fail" in marks else "succeeded",
            reason=kling_api.RISK_MESSAGE if "fail" in marks else None,
            video_id=kling_api.new_id(),
            callback_url=callback or None,
            meta={"model": body["model"]},
        )
        sandbox.count(f"{DIALECT}:created")
    except AigwError as error:
        return error.response()
    if sandbox.fires(marks, "lost", key):
        return Response(200, drop=True)
    return json_response(200, {"code": SUCCESS, "message": "success", "data": {"taskNo": row.id}})


def create_time(epoch: float) -> str:
    """The zone-less "YYYY-MM-DD HH:MM:SS" of the docs, in UTC+8 (inferred)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch + UTC8))


def task_data(sandbox: Sandbox, where: Request | str, row: TaskRow, now: float | None = None) -> dict[str, Any]:
    status = STATUS_WORDS[row.phase(now)]
    data: dict[str, Any] = {"taskNo": row.id, "model": row.meta["model"], "status": status}
    if status == "failed":
        data["error"] = row.reason  # the documented failure example has no createTime
        return data
    data["createTime"] = create_time(row.created)
    if status == "success":
        data["data"] = {"result": result(sandbox, where, row)}
        data["usage"] = {"totalPoints": POINTS}
    return data


def result(sandbox: Sandbox, where: Request | str, row: TaskRow) -> dict[str, Any] | list[str]:
    """`{"video_url": ...}` for motion control (seed 000); a list of URLs for the other models, as the
    img2video and subject-reference pages show (inferred for text to video, whose page is not public).
    `sandbox:novideo` leaves the video out: a success that names no video."""
    url = [] if "novideo" in markers(_prompt(row)) else [sandbox.video_url(where, row.video_id)]
    if row.kind == "motion":
        return {"video_url": url[0]} if url else {}
    return url


def _prompt(row: TaskRow) -> Any:
    return (row.request.get("params") or row.request).get("prompt")


def query(sandbox: Sandbox, req: Request) -> Response:
    try:
        _check_auth(req)
        task_no = req.arg("taskNo")
        if not task_no:
            raise _invalid("taskNo is required")
        row = sandbox.store.get(DIALECT, task_no)
        if row is None:
            raise AigwError(404, 1005, "task not found")
        if sandbox.fires(markers(_prompt(row)), "flaky", f"query:{row.id}"):
            raise AigwError(503, 1503, "service temporarily unavailable")
    except AigwError as error:
        return error.response()
    return json_response(200, {"code": SUCCESS, "message": "success", "data": task_data(sandbox, req, row)})


def sign(task_no: str, timestamp: int, api_key: str = SANDBOX_API_KEY) -> str:
    """Seed 000: SHA256(taskNo + timestamp + apiKey), as lowercase hex (§1.7: plain SHA-256, no HMAC)."""
    return hashlib.sha256(f"{task_no}{timestamp}{api_key}".encode()).hexdigest()


def callback_payload(sandbox: Sandbox, row: TaskRow) -> dict[str, Any]:
    """The seed 000 success or failure body."""
    timestamp = int(time.time())
    body: dict[str, Any] = {"taskNo": row.id, "status": "success" if row.outcome == "succeeded" else "failed",
                            "model": row.meta["model"], "timestamp": timestamp}
    if row.outcome == "succeeded":
        body["data"] = {
            "task_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"aigw-worker:{row.id}")),
            "status": "SUCCESS",  # the upstream worker's word; the top-level status is the one to read
            "request_id": uuid.uuid5(uuid.NAMESPACE_OID, f"aigw-request:{row.id}").hex,
            "result": result(sandbox, sandbox.origin, row),
            "error_info": "",
            "traceback": "",
        }
        body["usage"] = {"totalPoints": POINTS}
    else:
        body["error"] = row.reason
    body["sign"] = sign(row.id, timestamp)
    return body


def router(sandbox: Sandbox, prefix: str = "/aigw") -> Router:
    routes = Router(prefix)

    @routes.route("POST", "/open/aigw/gateway/generations")
    def create(req: Request) -> Response:
        return submit(sandbox, req)

    @routes.route("GET", "/open/aigw/gateway/generationTask")
    def get_task(req: Request) -> Response:
        return query(sandbox, req)

    return routes
