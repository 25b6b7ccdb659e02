"""CometAPI's Kling routes, emulated from kling-official-cometapi.md §3 and seed 004 (not from the client).

CometAPI relays the official legacy API under `/kling`: the request bodies, the task object and the
success envelope are Kling's (validation and the task object are reused from `kling_api`), but the
errors CometAPI raises itself use its own envelope (§3.5):

    {"error": {"message": "... (request id: ...)", "type": "comet_api_error", "param": "", "code": "..."}}

Routes, under this dialect's mount prefix:
- `POST /kling/v1/videos/text2video` and `POST /kling/v1/videos/image2video` (its image-to-video reference:
  `image` and `image_tail` as a public URL or base64, prompt at most 500 characters, negative prompt 200,
  duration 5|10, `static_mask`/`dynamic_masks`, no aspect ratio): `{"code":0,"message":"success","data":
  {task_id, task_status, task_info, created_at, updated_at}}`, no `request_id` (§3.3 create example).
- `GET /kling/v1/{action}/{action2}/{task_id}` (seed 004: action images|videos|audio, action2 from the
  seed's list): `{"code":0,"message":"SUCCEED","request_id":...,"data":<task object>}`.
- `POST /kling/v1/videos/motion-control` is not a CometAPI route (§3.2 documents none), so it answers
  like any other wrong path: a 301 to the site root, which serves an HTML page, never JSON (§3.5
  "301 / HTML"). Its query, `GET /kling/v1/videos/motion-control/{id}`, is an unknown `action2`: 404.

Inferred (the docs give statuses and the envelope, not these exact codes or messages):
- auth: HTTP 401, code "" (§3.5 says code may be ""), message "invalid token"; only the plain key is
  accepted, not a Kling JWT (§3.1: "plain key, no JWT");
- a body that is not JSON: HTTP 500 code `invalid_request` (§3.5 row "500 + invalid_request: malformed
  request surfaced as 500"); a field that fails validation: HTTP 400 code `invalid_request`;
- `sandbox:429`: HTTP 429 code `rate_limit_exceeded`; `sandbox:billing`: HTTP 403 code
  `insufficient_user_quota`, "user quota is not enough" (§3.5: new-api lineage);
  `sandbox:policy`: HTTP 400 code `task_failed` carrying Kling's message (new-api's wrapper code for a
  Kling business error, §2.9); `sandbox:500`: HTTP 500 code ""; `sandbox:flaky` queries: HTTP 503 code "";
- an unknown task id: HTTP 404 code `task_not_exist`; a task queried under another action2 is unknown,
  as on the official API that CometAPI relays the query to;
- the wider aspect ratios CometAPI documents (4:3, 3:4, 3:2, 2:3, §3.3) are accepted, and its stricter
  limits (prompt 500 characters, negative prompt 200) enforced as documented: HTTP 400 `invalid_request`;
- callbacks: CometAPI forwards `callback_url` to Kling, so the payload is Kling's bare task object.
"""

from __future__ import annotations

import secrets
import string
import time
from typing import Any

from kling_cli.presets import SANDBOX_API_KEY
from kling_cli.sandbox import kling_api
from kling_cli.sandbox.core import FallbackRouter, Sandbox, bearer_token, markers
from kling_cli.sandbox.server import BadJson, Request, Response, html_response, json_response
from kling_cli.sandbox.store import DuplicateExternalId, TaskRow

DIALECT = "cometapi"
# seed 004: the action2 values each action accepts on the query route
QUERY_ACTIONS = {
    "images": {"generations", "kolors-virtual-try-on"},
    "videos": {"text2video", "image2video", "lip-sync", "effects", "multi-image2video", "multi-elements"},
    "audio": {"text-to-audio", "video-to-audio"},
}
KINDS = {"text2video": "t2v", "image2video": "i2v"}
# §3.3: aspect ratios CometAPI documents beyond the official 16:9, 9:16, 1:1
EXTRA_ASPECT_RATIOS = {"4:3", "3:4", "3:2", "2:3"}
# its text-to-video reference: prompt "Maximum 500 characters", negative prompt "Maximum 200 characters"
LIMITS = {"prompt": 500, "negative_prompt": 200}
HOME_PAGE = "<!doctype html><html><head><title>CometAPI</title></head><body><h1>CometAPI</h1></body></html>"


class CometError(Exception):
    def __init__(self, http: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http, self.code, self.message = http, code, message

    def response(self) -> Response:
        return json_response(self.http, {"error": {
            "message": f"{self.message} (request id: {_request_id()})",
            "type": "comet_api_error", "param": "", "code": self.code,
        }})


def _request_id() -> str:
    # new-api style ids, e.g. "2026…" (§3.5 observed): a timestamp then random characters
    alphabet = string.ascii_letters + string.digits
    return time.strftime("%Y%m%d%H%M%S") + "".join(secrets.choice(alphabet) for _ in range(8))


def _check_auth(req: Request) -> None:
    if bearer_token(req) != SANDBOX_API_KEY:
        raise CometError(401, "", "invalid token")


FAULTS = {
    "429": CometError(429, "rate_limit_exceeded", "parallel task over resource pack limit"),
    "billing": CometError(403, "insufficient_user_quota", "user quota is not enough"),
    "policy": CometError(400, "task_failed", "The content security policy was triggered"),
    "500": CometError(500, "", "internal server error"),
}


def _validate(kind: str, body: dict[str, Any]) -> None:
    for key, limit in LIMITS.items():
        if isinstance(body.get(key), str) and len(body[key]) > limit:
            raise CometError(400, "invalid_request", f"{key} exceeds {limit} characters")
    checked = dict(body)
    if checked.get("aspect_ratio") in EXTRA_ASPECT_RATIOS:
        del checked["aspect_ratio"]
    try:
        kling_api.VALIDATORS[kind](checked)
    except kling_api.Refusal as refusal:
        raise CometError(400, "invalid_request", refusal.message) from None


def _not_offered() -> CometError:
    return CometError(404, "not_found", "motion control is not offered by this provider "
                                        "(CometAPI documents no /kling/v1/videos/motion-control)")


def submit(sandbox: Sandbox, req: Request, kind: str) -> Response:
    try:
        _check_auth(req)
        try:
            body = req.json()
        except BadJson:
            raise CometError(500, "invalid_request", "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise CometError(400, "invalid_request", "request body must be a JSON object")
        marks = markers(body.get("prompt"))
        key = f"{DIALECT}:{body.get('prompt')}"
        sandbox.count(f"{DIALECT}:submit_attempts")
        fault = sandbox.submit_fault(marks, key)
        if fault:
            raise FAULTS[fault]
        _validate(kind, body)
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
            )
        except DuplicateExternalId:
            raise CometError(400, "invalid_request", f"external_task_id {external_id} already exists") from None
        sandbox.count(f"{DIALECT}:created")
    except CometError as error:
        return error.response()
    if sandbox.fires(marks, "lost", key):
        return Response(200, drop=True)
    data = kling_api.task_object(sandbox, req, row)
    # §3.3 create example: message "success" and no request_id (unlike the official "SUCCEED" + request_id)
    return json_response(200, {"code": 0, "message": "success", "data": {
        k: data[k] for k in ("task_id", "task_status", "task_info", "created_at", "updated_at")}})


def query(sandbox: Sandbox, req: Request) -> Response:
    action, action2, task_id = req.params["action"], req.params["action2"], req.params["task_id"]
    try:
        _check_auth(req)
        if action == "videos" and action2 == "motion-control":
            raise _not_offered()
        if action2 not in QUERY_ACTIONS.get(action, ()):
            raise CometError(404, "not_found", f"unknown query route {action}/{action2}")
        kind = KINDS.get(action2) if action == "videos" else None
        row = sandbox.store.get(DIALECT, task_id) or sandbox.store.get_by_external_id(DIALECT, task_id)
        if row is None or row.kind != kind:
            raise CometError(404, "task_not_exist", "task_not_exist")
        if sandbox.fires(markers(row.request.get("prompt")), "flaky", f"query:{row.id}"):
            raise CometError(503, "", "service temporarily unavailable")
    except CometError as error:
        return error.response()
    return json_response(200, kling_api.envelope(kling_api.task_object(sandbox, req, row)))


def callback_payload(sandbox: Sandbox, row: TaskRow) -> dict[str, Any]:
    return kling_api.callback_payload(sandbox, row)


def router(sandbox: Sandbox, prefix: str = "/cometapi") -> FallbackRouter:
    def wrong_path(_req: Request) -> Response:
        # §3.5: a wrong path or base URL answers a redirect to an HTML page, not a JSON 404
        response = html_response(301, f'<html><body>Moved to <a href="{prefix}/">{prefix}/</a></body></html>')
        response.headers["Location"] = f"{prefix}/"
        return response

    routes = FallbackRouter(prefix, wrong_path)

    @routes.route("GET", "")
    @routes.route("GET", "/")
    def home(_req: Request) -> Response:
        return html_response(200, HOME_PAGE)

    @routes.route("POST", "/kling/v1/videos/text2video")
    def create(req: Request) -> Response:
        return submit(sandbox, req, "t2v")

    @routes.route("POST", "/kling/v1/videos/image2video")
    def create_i2v(req: Request) -> Response:
        return submit(sandbox, req, "i2v")

    @routes.route("GET", "/kling/v1/{action}/{action2}/{task_id}")
    def get_task(req: Request) -> Response:
        return query(sandbox, req)

    return routes
