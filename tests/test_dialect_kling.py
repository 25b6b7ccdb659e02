"""The official dialect's pure translation: payloads from the reference and seeds, the business-code
table, JWT claims, request bodies, and junk that must never crash it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kling_cli.credentials import Credentials
from kling_cli.errors import (
    ApiError,
    AuthRejected,
    BadResponse,
    ExitCode,
    NotFound,
    ProviderUnavailable,
    RequestRejected,
)
from kling_cli.models import MediaRef, MotionRequest, T2VRequest, TaskStatus
from kling_cli.providers.base import Reply
from kling_cli.providers.kling import BUSINESS_CODES, KlingDialect, mint_jwt

FIXTURES = Path(__file__).parent / "fixtures" / "kling"
dialect = KlingDialect()


def load(name: str):
    return json.loads((FIXTURES / name).read_text())


def reply(status: int, payload, headers=None) -> Reply:
    return Reply.build(status, headers or {}, json.dumps(payload).encode(), "/v1/videos/text2video")


def test_submit_answer_is_a_queued_task_with_its_external_id():
    task = dialect.parse_submit("t2v", reply(200, load("submit_observed.json")))
    assert task.id == "866889456698785798"
    assert task.status is TaskStatus.QUEUED and task.raw_status == "submitted"
    assert task.external_id == "text_probe_1"
    assert task.created_at == "2026-03-28T15:17:51.284Z"  # milliseconds on the wire


def test_processing_task_from_seed_004_has_empty_result_objects():
    task = dialect.parse_task("t2v", load("processing_seed004.json"))
    assert task.status is TaskStatus.RUNNING
    assert task.videos == [] and task.error is None and task.external_id is None
    assert task.updated_at == "2026-04-28T14:09:23.321Z"


@pytest.mark.parametrize("name,duration", [("succeeded_seed001.json", 5.0), ("succeeded_reference.json", 5.1)])
def test_succeeded_task_has_videos_with_numeric_durations(name, duration):
    task = dialect.parse_task("motion", load(name))
    assert task.status is TaskStatus.SUCCEEDED and task.raw_status == "succeed"
    assert len(task.videos) == 1
    assert task.videos[0].duration == duration
    assert isinstance(task.videos[0].id, str)
    assert task.videos[0].url.startswith("https://")
    assert task.error is None


def test_failed_task_reason_comes_from_task_status_msg_not_the_envelope():
    payload = load("failed_pr2532.json")
    assert payload["message"] == "SUCCEED"
    assert dialect.error_for(reply(200, payload)) is None  # a failed *task* is a successful *query*
    task = dialect.parse_task("t2v", payload)
    assert task.status is TaskStatus.FAILED
    assert task.error.message == "Image pixel is invalid"
    assert "SUCCEED" not in json.dumps(task.to_json())


def test_failed_task_without_a_reason_still_says_so():
    payload = load("failed_pr2532.json")
    del payload["data"]["task_status_msg"]
    assert dialect.parse_task("t2v", payload).error.message == "the provider gave no reason"


def test_callback_payload_with_placeholder_values_parses():
    from kling_cli.providers.kling import parse_kling_task

    payload = load("callback_legacy.json")
    task = parse_kling_task("t2v", payload, payload)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.videos[0].duration is None  # "string" is not a number: kept raw, not a crash
    assert task.created_at == "2024-08-04T11:05:57.708Z"


def test_unknown_status_is_kept_raw():
    payload = load("processing_seed004.json")
    payload["data"]["task_status"] = "paused_for_review"
    task = dialect.parse_task("t2v", payload)
    assert task.status is TaskStatus.UNKNOWN and task.raw_status == "paused_for_review"
    assert task.raw == payload


def test_numeric_task_id_never_passes_through_a_float():
    payload = json.loads('{"code":0,"data":{"task_id":866889456698785798,"task_status":"submitted"}}')
    assert dialect.parse_task("t2v", payload).id == "866889456698785798"


# The official error table (kling-official-cometapi.md §1.10): HTTP status, what kling-cli makes of it, and
# whether it is retried. Written out here, not read from the code under test.
OFFICIAL_CODES = {
    1000: (401, AuthRejected, False), 1001: (401, AuthRejected, False), 1002: (401, AuthRejected, False),
    1003: (401, AuthRejected, False), 1004: (401, AuthRejected, False),
    1100: (429, RequestRejected, False), 1101: (429, RequestRejected, False), 1102: (429, RequestRejected, False),
    1103: (403, AuthRejected, False),
    1200: (400, RequestRejected, False), 1201: (400, RequestRejected, False), 1202: (404, RequestRejected, False),
    1203: (404, NotFound, False),
    1300: (400, RequestRejected, False), 1301: (400, RequestRejected, False),
    1302: (429, ProviderUnavailable, True), 1303: (429, ProviderUnavailable, True), 1304: (429, AuthRejected, False),
    5000: (500, ProviderUnavailable, True), 5001: (503, ProviderUnavailable, True),
    5002: (504, ProviderUnavailable, True),
}


def test_the_code_table_covers_the_official_one():
    assert set(BUSINESS_CODES) == set(OFFICIAL_CODES)


@pytest.mark.parametrize("code", sorted(OFFICIAL_CODES))
def test_every_business_code_is_classified(code):
    http, cls, retryable = OFFICIAL_CODES[code]
    error = dialect.error_for(reply(http, {"code": code, "message": "m", "request_id": "r-1"}))
    assert isinstance(error, cls)
    assert error.retryable is retryable
    assert error.provider_code == code and error.request_id == "r-1"
    assert error.reauth is (code in (1003, 1004))


@pytest.mark.parametrize(
    "code,exit_code,retryable",
    [
        (1102, ExitCode.REJECTED, False),  # "Account balance not enough" arrives as HTTP 429
        (1101, ExitCode.REJECTED, False),
        (1304, ExitCode.AUTH, False),
        (1302, ExitCode.UNAVAILABLE, True),
        (1303, ExitCode.UNAVAILABLE, True),
    ],
)
def test_http_429_is_decided_by_the_business_code(code, exit_code, retryable):
    error = dialect.error_for(reply(429, {"code": code, "message": "x"}))
    assert error.exit_code == exit_code and error.retryable is retryable


def test_rate_limit_error_from_the_docs():
    error = dialect.error_for(reply(429, load("error_1303.json")))
    assert isinstance(error, ProviderUnavailable) and error.code == "concurrency_limit"
    assert "parallel task over resource pack limit" in error.message


def test_http_200_with_a_nonzero_code_is_an_error():
    error = dialect.error_for(reply(200, {"code": 1201, "message": "image can not be null"}))
    assert isinstance(error, RequestRejected) and "image can not be null" in error.message


@pytest.mark.parametrize(
    "status,body,cls",
    [
        (404, "<html><body>Not Found</body></html>", BadResponse),
        (200, "<!doctype html><html>login</html>", BadResponse),
        (301, "", BadResponse),
        (502, "<html>Bad gateway</html>", ProviderUnavailable),
        (401, '{"detail": "nope"}', AuthRejected),
        (404, '{"detail": "nope"}', NotFound),
    ],
)
def test_answers_without_a_business_code(status, body, cls):
    error = dialect.error_for(Reply.build(status, {"location": "https://x/"}, body.encode(), "/v1/videos/x"))
    assert isinstance(error, cls)


def test_jwt_claims_and_lifetime_match_the_official_example():
    now = 1_800_000_000
    token = mint_jwt("AK", "SK" * 16, now=now)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, "SK" * 16, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False})
    assert claims == {"iss": "AK", "exp": now + 1800, "nbf": now - 5}


def test_auth_header_mints_a_fresh_verifiable_token():
    header = dialect.auth_headers(Credentials(access_key="AK", secret_key="S" * 32))["Authorization"]
    scheme, token = header.split(" ")
    assert scheme == "Bearer"
    claims = jwt.decode(token, "S" * 32, algorithms=["HS256"])  # verifies exp and nbf against now
    assert claims["iss"] == "AK" and claims["nbf"] <= time.time() < claims["exp"]
    assert dialect.auth_headers(Credentials(api_key="k-1"))["Authorization"] == "Bearer k-1"


def test_t2v_body_uses_documented_names_and_types():
    req = T2VRequest(prompt="p", model="kling-v2-6", mode="pro", duration=10, aspect_ratio="9:16",
                     negative_prompt="n", cfg_scale=0.4, camera_control={"type": "down_back"},
                     callback_url="https://cb", external_id="e-1", extra={"sound": "on"})
    wire = dialect.build_submit("t2v", req)
    assert (wire.method, wire.path, wire.creates_task) == ("POST", "/v1/videos/text2video", True)
    assert wire.json == {"model_name": "kling-v2-6", "prompt": "p", "negative_prompt": "n", "cfg_scale": 0.4,
                         "mode": "pro", "camera_control": {"type": "down_back"}, "aspect_ratio": "9:16",
                         "duration": "10", "callback_url": "https://cb", "external_task_id": "e-1", "sound": "on"}


def test_t2v_body_leaves_out_what_was_not_asked_but_names_the_default_model():
    # left out, the official API would run kling-v1: the default is always named
    assert dialect.build_submit("t2v", T2VRequest(prompt="p")).json == {"model_name": "kling-v2-6", "prompt": "p"}


@pytest.mark.parametrize("keep,wire_value", [(True, "yes"), (False, "no"), (None, None)])
def test_motion_body(keep, wire_value):
    req = MotionRequest(image=MediaRef.parse("./me.png"), video=MediaRef.parse("https://x/d.mp4"),
                        orientation="video", mode="std", keep_sound=keep, image_base64="iVBORw0KGgo=")
    wire = dialect.build_submit("motion", req)
    assert wire.path == "/v1/videos/motion-control"
    assert wire.json["image_url"] == "iVBORw0KGgo="  # raw base64, no data: prefix
    assert wire.json["video_url"] == "https://x/d.mp4"
    assert wire.json["character_orientation"] == "video" and wire.json["mode"] == "std"
    assert wire.json.get("keep_original_sound") == wire_value


def test_query_paths():
    assert dialect.build_get("t2v", "123").path == "/v1/videos/text2video/123"
    assert dialect.build_get("motion", "123").path == "/v1/videos/motion-control/123"
    assert dialect.build_get_by_external_id("motion", "kc-1").path == "/v1/videos/motion-control/kc-1"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
kling_like = st.fixed_dictionaries(
    {"code": st.sampled_from([0, 1201, "0", None]),
     "data": st.fixed_dictionaries({}, optional={
         "task_id": json_values, "task_status": st.sampled_from(["submitted", "processing", "succeed", "failed", "x"])
         | json_values, "task_status_msg": json_values, "task_result": json_values, "task_info": json_values,
         "created_at": json_values, "updated_at": json_values})},
)


@settings(max_examples=300, deadline=None)
@given(payload=json_values | kling_like, status=st.sampled_from([200, 400, 404, 429, 500]))
def test_junk_never_crashes(payload, status):
    task = dialect.parse_task("t2v", payload, task_id="fallback")
    json.dumps(task.to_json(raw=True), default=str)
    assert isinstance(task.id, str)
    if task.status is TaskStatus.UNKNOWN and not isinstance(payload, dict):
        assert task.id == "fallback"
    error = dialect.error_for(reply(status, payload))
    assert error is None or isinstance(error, ApiError)
