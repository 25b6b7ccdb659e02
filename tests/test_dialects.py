"""The four gateway dialects' pure translation, against the example payloads of the reference files and
seeds (tests/fixtures/<dialect>/), every envelope variant, and generated junk."""

from __future__ import annotations

import json
from pathlib import Path

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
    Unsupported,
)
from kling_cli.models import MediaRef, MotionRequest, T2VRequest, TaskStatus
from kling_cli.providers import get_dialect
from kling_cli.providers.base import Reply

FIXTURES = Path(__file__).parent / "fixtures"


def load(path: str):
    return json.loads((FIXTURES / path).read_text())


def reply(status: int, payload, path: str = "/x") -> Reply:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Reply.build(status, {}, body, path)


def motion_request(**kwargs) -> MotionRequest:
    base = dict(image=MediaRef.parse("https://x.test/a.png"), video=MediaRef.parse("https://x.test/d.mp4"),
                orientation="image", mode="std", prompt="dance")
    base.update(kwargs)
    return MotionRequest(**base)


# --- newapi (ezmodel) -----------------------------------------------------------------------------

newapi = get_dialect("newapi")


@pytest.mark.parametrize(
    "name,task_id,status",
    [
        ("submit_bare.json", "842250903629086785", TaskStatus.QUEUED),
        ("submit_envelope.json", "842250903629086785", TaskStatus.QUEUED),
        ("submit_openai.json", "842250903629086785", TaskStatus.QUEUED),
        ("submit_openai_public.json", "task_4f7Gh2kLmN8pQ1rS3tU5vW7xY9zA0bC2", TaskStatus.QUEUED),
    ],
)
def test_newapi_every_submit_answer_variant(name, task_id, status):
    payload = load(f"newapi/{name}")
    assert newapi.error_for(reply(200, payload)) is None
    task = newapi.parse_submit("t2v", reply(200, payload))
    assert (task.id, task.status) == (task_id, status)


def test_newapi_openai_object_times_are_seconds():
    task = newapi.parse_submit("t2v", reply(200, load("newapi/submit_openai.json")))
    assert task.created_at == "2026-03-28T15:17:51.000Z"


def test_newapi_in_progress_reads_percent_and_second_times():
    task = newapi.parse_task("t2v", load("newapi/query_in_progress.json"))
    assert task.status is TaskStatus.RUNNING and task.raw_status == "IN_PROGRESS"
    assert task.progress == pytest.approx(0.3)
    assert task.created_at == "2025-10-09T08:53:20.000Z" and task.updated_at == "2025-10-09T08:53:51.000Z"


def test_newapi_seed_002_success():
    task = newapi.parse_task("t2v", load("newapi/query_success_seed002.json"))
    assert task.status is TaskStatus.SUCCEEDED and task.progress == 1.0
    assert task.videos[0].id == "842250903708762200" and task.videos[0].duration == 5.1
    assert task.videos[0].url == "https://v16-kling-fdl.klingai.com/..."


def test_newapi_url_in_fail_reason_and_kind_from_action():
    task = newapi.parse_task("t2v", load("newapi/query_success_fail_reason.json"))
    assert task.kind == "motion"  # the GET path is ignored by the gateway; its `action` says what it is
    assert task.videos[0].url == "https://v16-kling-fdl.klingai.com/result.mp4"
    assert task.error is None and task.cost.amount == 5


def test_newapi_url_in_result_url_with_public_ids():
    task = newapi.parse_task("t2v", load("newapi/query_success_result_url.json"))
    assert task.id == "task_4f7Gh2kLmN8pQ1rS3tU5vW7xY9zA0bC2"
    assert [v.url for v in task.videos] == ["https://cdn.example/new.mp4"]


def test_newapi_failure_reason_is_the_inner_message_not_succeed():
    task = newapi.parse_task("t2v", load("newapi/query_failure.json"))
    assert task.status is TaskStatus.FAILED and task.error.message == "Image pixel is invalid"


def test_newapi_local_timeout_reason_comes_from_fail_reason():
    task = newapi.parse_task("t2v", load("newapi/query_local_timeout.json"))
    assert task.status is TaskStatus.FAILED and task.error.message == "任务超时（1440分钟）"


def test_newapi_not_start_is_queued():
    task = newapi.parse_task("t2v", load("newapi/query_not_start.json"))
    assert task.status is TaskStatus.QUEUED and task.progress == 0.0


@pytest.mark.parametrize(
    "name,http,cls,code,retryable",
    [
        ("error_task_not_exist.json", 400, NotFound, "not_found", False),
        ("error_quota.json", 403, RequestRejected, "insufficient_balance", False),
        ("error_auth.json", 401, AuthRejected, "auth_rejected", False),
        ("error_fail_to_fetch_1303.json", 429, ProviderUnavailable, "concurrency_limit", True),
        ("error_prompt_required.json", 400, RequestRejected, "invalid_request", False),
        ("error_model_not_found.json", 503, RequestRejected, "model_unavailable", False),
    ],
)
def test_newapi_error_shapes(name, http, cls, code, retryable):
    error = newapi.error_for(reply(http, load(f"newapi/{name}")))
    assert isinstance(error, cls) and error.code == code and error.retryable is retryable


def test_newapi_saturated_429_is_retried():
    error = newapi.error_for(reply(429, {"code": "get_channel_failed", "message": "当前分组上游负载已饱和，请稍后再试"}))
    assert error.retryable and error.exit_code == ExitCode.UNAVAILABLE


def test_newapi_body_duration_string_model_and_aspect_always_sent():
    wire = newapi.build_submit("t2v", T2VRequest(prompt="p", duration=10))
    assert wire.path == "/kling/v1/videos/text2video"
    assert wire.json == {"prompt": "p", "duration": "10", "model_name": "kling-v2-6", "aspect_ratio": "16:9"}
    motion = newapi.build_submit("motion", motion_request(keep_sound=True))
    assert motion.path == "/kling/v1/videos/motion-control" and motion.json["keep_original_sound"] == "yes"
    assert newapi.prompt_required and not newapi.lookup_by_external_id


def test_newapi_takes_a_bearer_key_only():
    assert newapi.auth_headers(Credentials(api_key="sk-1"))["Authorization"] == "Bearer sk-1"
    with pytest.raises(Unsupported):
        newapi.auth_headers(Credentials(access_key="a", secret_key="b"))


# --- cometapi ---------------------------------------------------------------------------------

comet = get_dialect("cometapi")


def test_cometapi_native_envelope():
    task = comet.parse_submit("t2v", reply(200, load("cometapi/submit_documented.json")))
    assert task.id == "2032273942220931072" and task.status is TaskStatus.QUEUED
    running = comet.parse_task("t2v", load("kling/processing_seed004.json"))
    assert running.status is TaskStatus.RUNNING


def test_cometapi_also_reads_the_taskdto_shape_some_locales_document():
    task = comet.parse_task("t2v", load("newapi/query_success_seed002.json"))
    assert task.status is TaskStatus.SUCCEEDED and task.videos[0].duration == 5.1


def test_cometapi_paths():
    assert comet.build_submit("t2v", T2VRequest(prompt="p")).path == "/kling/v1/videos/text2video"
    assert comet.build_get("t2v", "1").path == "/kling/v1/videos/text2video/1"
    assert comet.build_submit("motion", motion_request()).path == "/kling/v1/videos/motion-control"


@pytest.mark.parametrize(
    "name,http,cls,retryable",
    [
        ("cometapi/error_envelope.json", 401, AuthRejected, False),
        ("cometapi/error_500_invalid_request.json", 500, RequestRejected, False),
        ("cometapi/error_model_not_found.json", 503, ProviderUnavailable, True),
        ("kling/error_1303.json", 429, ProviderUnavailable, True),
    ],
)
def test_cometapi_errors(name, http, cls, retryable):
    error = comet.error_for(reply(http, load(name)))
    assert isinstance(error, cls) and error.retryable is retryable


def test_cometapi_motion_404_means_not_offered():
    error = comet.error_for(reply(404, b"404 page not found", "/kling/v1/videos/motion-control"))
    assert isinstance(error, Unsupported) and error.exit_code == ExitCode.REJECTED
    assert "motion control is not available on this provider" in error.message


def test_cometapi_wrong_path_html_is_a_configuration_error():
    error = comet.error_for(reply(301, b"<html>Moved</html>", "/kling/v1/videos/text2video"))
    assert isinstance(error, BadResponse) and error.exit_code == ExitCode.CONFIG


# --- acedata ----------------------------------------------------------------------------------

ace = get_dialect("acedata")


def test_acedata_seed_003_record():
    task = ace.parse_task("t2v", load("acedata/record_seed003.json"))
    assert task.status is TaskStatus.SUCCEEDED and task.raw_status == "succeed"
    assert task.id == "20068983-0cc9-4c6a-aeb6-9c6a3c668be0"
    assert task.videos[0].duration == 5.1 and task.videos[0].url.endswith("raw_video_1.mp4")
    assert task.created_at == "2025-03-03T02:38:55.333Z"  # float seconds
    assert task.updated_at == "2025-03-03T02:44:12.463Z"


def test_acedata_batch_items():
    items = ace.parse_many(load("acedata/batch_seed003.json"))
    assert [ace.parse_task("t2v", item).id for item in items] == [
        "20068983-0cc9-4c6a-aeb6-9c6a3c668be0", "e3a575aa-a4bd-49c8-9b12-cde38d5462e0"]


@pytest.mark.parametrize(
    "name,status,kind",
    [
        ("record_pending.json", TaskStatus.QUEUED, "motion"),
        ("record_processing.json", TaskStatus.RUNNING, "t2v"),
        ("record_failed.json", TaskStatus.FAILED, "t2v"),
        ("record_success_without_url.json", TaskStatus.RUNNING, "t2v"),
    ],
)
def test_acedata_record_states(name, status, kind):
    task = ace.parse_task("t2v", load(f"acedata/{name}"))
    assert task.status is status and task.kind == kind
    if status is TaskStatus.FAILED:
        assert (task.error.code, task.error.message) == ("bad_request", "invalid input")


def test_acedata_submit_async_and_sync_answers():
    queued = ace.parse_submit("t2v", reply(200, load("acedata/submit_async.json")))
    assert queued.status is TaskStatus.QUEUED and queued.id == "20068983-0cc9-4c6a-aeb6-9c6a3c668be0"
    done = ace.parse_submit("t2v", reply(200, load("acedata/sync_result.json")))
    assert done.status is TaskStatus.SUCCEEDED and done.videos[0].id == "900798310464749610"


def test_acedata_504_with_a_task_id_is_a_task_to_poll():
    timeout = reply(504, load("acedata/error_timeout_504.json"), "/kling/videos")
    assert ace.error_for(timeout) is None
    task = ace.parse_submit("t2v", timeout)
    assert task.id == "6c68c267-065b-4423-b66b-a0e4c59ee0d5" and task.status is TaskStatus.QUEUED


@pytest.mark.parametrize(
    "name,http,cls,code,retryable",
    [
        ("error_used_up.json", 403, RequestRejected, "insufficient_balance", False),
        ("error_too_many.json", 429, ProviderUnavailable, "rate_limited", True),
        ("error_seed003.json", 500, ProviderUnavailable, "server_error", True),
    ],
)
def test_acedata_errors(name, http, cls, code, retryable):
    error = ace.error_for(reply(http, load(f"acedata/{name}"), "/kling/videos"))
    assert isinstance(error, cls) and error.code == code and error.retryable is retryable


def test_acedata_empty_record_is_not_found():
    assert isinstance(ace.error_for(reply(200, {}, "/kling/tasks")), NotFound)


def test_acedata_bodies():
    wire = ace.build_submit("t2v", T2VRequest(prompt="p", model="kling-v2-6", duration=5, extra={"generate_audio": True}))
    assert (wire.path, wire.json) == ("/kling/videos", {"action": "text2video", "model": "kling-v2-6", "prompt": "p",
                                                        "duration": 5, "async": True, "generate_audio": True})
    motion = ace.build_submit("motion", motion_request(model="kling-v3", keep_sound=False))
    assert motion.path == "/kling/motion" and motion.json["model_name"] == "kling-v3" and motion.json["async"] is True
    assert motion.json["keep_original_sound"] == "no"
    get = ace.build_get("t2v", "abc")
    assert (get.method, get.path, get.json) == ("POST", "/kling/tasks", {"id": "abc", "action": "retrieve"})
    assert ace.build_get_many(["a", "b"]).json == {"ids": ["a", "b"], "action": "retrieve_batch"}


# --- aigw -------------------------------------------------------------------------------------

aigw = get_dialect("aigw")


def test_aigw_seed_000_success_keeps_the_cost():
    task = aigw.parse_task("t2v", load("aigw/query_success_seed000.json"))
    assert task.status is TaskStatus.SUCCEEDED and task.kind == "motion"
    assert task.videos[0].url == "https://cdn.example.com/result_video.mp4"
    assert task.cost.to_json() == {"amount": 10.0, "unit": "points"}
    assert task.created_at == "2025-01-01T04:00:00.000Z"  # "12:00:00" taken as UTC+8


def test_aigw_seed_000_failure():
    task = aigw.parse_task("motion", load("aigw/query_failure_seed000.json"))
    assert task.status is TaskStatus.FAILED and task.error.message == "Failure reason"
    assert aigw.error_for(reply(200, load("aigw/query_failure_seed000.json"))) is None


def test_aigw_processing_and_submit():
    assert aigw.parse_task("motion", load("aigw/query_processing.json")).status is TaskStatus.RUNNING
    task = aigw.parse_submit("motion", reply(200, load("aigw/submit_inferred.json")))
    assert task.id == "a1b2c3d4e5" and task.status is TaskStatus.QUEUED
    assert aigw.parse_submit("motion", reply(200, {"code": 1000, "data": "XYZ"})).id == "XYZ"


def test_aigw_default_body_and_overrides():
    wire = aigw.build_submit("motion", motion_request(callback_url="https://cb"))
    assert wire.path == "/open/aigw/gateway/generations"
    assert wire.json == {"model": "kling_2.6_motion_control", "callbackUrl": "https://cb",
                         "params": {"imageUrl": "https://x.test/a.png", "videoUrl": "https://x.test/d.mp4",
                                    "prompt": "dance", "mode": "std", "characterOrientation": "image"}}
    custom = get_dialect("aigw", {"t2v_model": "kling_v3_t2v", "params_key": "", "rename": {"prompt": "text"},
                                  "body": {"channel": "b"}, "auth_header": "X-API-Key", "auth_prefix": ""})
    wire = custom.build_submit("t2v", T2VRequest(prompt="p", duration=5))
    assert wire.json == {"model": "kling_v3_t2v", "text": "p", "duration": "5", "channel": "b"}
    assert custom.auth_headers(Credentials(api_key="k")) == {"X-API-Key": "k"}
    assert aigw.auth_headers(Credentials(api_key="k")) == {"Authorization": "Bearer k"}
    get = aigw.build_get("t2v", "T1")
    assert (get.path, get.params) == ("/open/aigw/gateway/generationTask", {"taskNo": "T1"})


@pytest.mark.parametrize(
    "http,body,cls,retryable",
    [
        (200, {"code": 1001, "message": "insufficient points"}, RequestRejected, False),
        (401, {"code": 401, "message": "invalid api key"}, AuthRejected, False),
        (429, {"code": 429, "message": "too many requests"}, ProviderUnavailable, True),
        (500, {"code": 500, "message": "internal"}, ProviderUnavailable, True),
        (200, {"code": 1004, "message": "task not found"}, NotFound, False),
    ],
)
def test_aigw_errors(http, body, cls, retryable):
    error = aigw.error_for(reply(http, body))
    assert isinstance(error, cls) and error.retryable is retryable


# --- junk, for every dialect ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
shaped = st.fixed_dictionaries({}, optional={
    "code": st.sampled_from([0, 1000, "success", "task_not_exist", None]) | json_values,
    "data": json_values | st.fixed_dictionaries({}, optional={
        "status": st.sampled_from(["SUCCESS", "FAILURE", "success", "failed", "pending"]) | json_values,
        "task_status": json_values, "fail_reason": json_values, "progress": json_values, "data": json_values,
        "result_url": json_values, "usage": json_values, "createTime": json_values}),
    "response": json_values, "error": json_values, "task_id": json_values, "id": json_values,
    "items": json_values, "object": st.just("video"), "status": json_values,
})


@pytest.mark.parametrize("name", ["cometapi", "newapi", "acedata", "aigw"])
@settings(max_examples=200, deadline=None)
@given(payload=json_values | shaped, status=st.sampled_from([200, 400, 404, 429, 500, 504]))
def test_junk_is_unknown_or_a_clean_error_never_a_crash(name, payload, status):
    dialect = get_dialect(name)
    answer = reply(status, payload, "/kling/tasks")
    error = dialect.error_for(answer)
    assert error is None or isinstance(error, ApiError)
    for task in (dialect.parse_task("t2v", payload, task_id="fallback"), dialect.parse_submit("t2v", answer)):
        assert isinstance(task.id, str) and isinstance(task.status, TaskStatus)
        json.dumps(task.to_json(raw=True), default=str)
        if task.progress is not None:
            assert 0.0 <= task.progress <= 1.0
