"""The dialects against what the providers' own code and pages show (tests/fixtures/*, each naming its source):
aigw's list results, AceData's record states, one default model on every dialect, the model ezmodel drops,
CometAPI's limits and lookup by external id, new-api gateways without motion control."""

from __future__ import annotations

import json

import pytest

from conftest import sourced
from kling_cli.callbacks import read_callback
from kling_cli.models import DEFAULT_MODELS, MediaRef, MotionRequest, T2VRequest, TaskStatus
from kling_cli.providers import get_dialect
from kling_cli.providers.base import Reply

DIALECTS = ("kling", "cometapi", "newapi", "acedata", "aigw")


def reply(status: int, payload, path: str = "/x", headers=None) -> Reply:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Reply.build(status, headers or {}, body, path)


def motion_request(**kwargs) -> MotionRequest:
    base = dict(image=MediaRef.parse("https://x.test/a.png"), video=MediaRef.parse("https://x.test/d.mp4"),
                orientation="image", mode="std", prompt="dance")
    return MotionRequest(**{**base, **kwargs})


# --- 1. aigw answers a list of URLs for its other models ---------------------------------------------

def test_aigw_query_with_a_result_list():
    task = get_dialect("aigw").parse_task("t2v", sourced("aigw/query_success_result_list.json"))
    assert task.status is TaskStatus.SUCCEEDED and task.model == "kling_3.0-Omni_img2video"
    assert [v.url for v in task.videos] == ["https://cdn.example.com/result_1.mp4"]
    assert not task.without_video


def test_aigw_callback_with_a_result_list():
    from kling_cli.callbacks import aigw_signature

    body = sourced("aigw/callback_success_result_list.json")
    body["sign"] = aigw_signature(body["taskNo"], body["timestamp"], "k")
    found = read_callback(json.dumps(body).encode(), {}, api_key="k", webhook_secret=None)
    assert [v.url for v in found.task.videos] == ["https://cdn.example.com/result_1.mp4"]
    assert found.task.videos[0].id == "6928de47-2e53-4ee6-901b-be05a8bf7669"


def test_a_success_that_names_no_video_is_marked():
    task = get_dialect("aigw").parse_task("t2v", sourced("aigw/query_success_empty_result.json"))
    assert task.status is TaskStatus.SUCCEEDED and task.videos == [] and task.without_video


# --- 2. AceData's top-level state ------------------------------------------------------------------

acedata = get_dialect("acedata")


def test_acedata_top_level_failed_state_ends_the_task():
    task = acedata.parse_task("t2v", sourced("acedata/record_top_level_state_failed.json"))
    assert task.status is TaskStatus.FAILED and task.raw_status == "failed"
    assert task.error.message == "AceData marked the task failed"


def test_acedata_reason_from_the_response_or_the_record():
    task = acedata.parse_task("t2v", sourced("acedata/record_state_empty_response_failure.json"))
    assert task.status is TaskStatus.FAILED and (task.error.code, task.error.message) == ("bad_request",
                                                                                          "invalid input")
    task = acedata.parse_task("t2v", sourced("acedata/record_cancelled_with_record_error.json"))
    assert task.status is TaskStatus.FAILED and task.raw_status == "cancelled"
    assert (task.error.code, task.error.message) == ("api_error", "fetch failed")


def test_acedata_acknowledgement_runs_and_a_finished_one_without_video_is_marked():
    running = acedata.parse_task("t2v", sourced("acedata/record_acknowledged_sdk.json"))
    assert running.status is TaskStatus.RUNNING
    done = acedata.parse_task("t2v", sourced("acedata/record_finished_without_video.json"))
    assert done.status is TaskStatus.SUCCEEDED and done.without_video


# --- 4. one default model, named in every body that has a model field --------------------------------

def model_field(dialect: str, kind: str, req) -> str:
    body = get_dialect(dialect).build_submit(kind, req).json
    return body.get("model_name") or body.get("model")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_body_names_the_default_model(dialect):
    documented = sourced("kling/text2video_model_default.json")
    # the official API would run kling-v1 for a text-to-video body without a model: never leave it out
    assert documented["text2video"]["model_name"]["default"] != DEFAULT_MODELS["t2v"]
    assert DEFAULT_MODELS["t2v"] in documented["text2video"]["model_name"]["enum"]
    assert DEFAULT_MODELS["motion"] in documented["motion-control"]["model_name"]["enum"]
    expected = {"t2v": DEFAULT_MODELS["t2v"], "motion": DEFAULT_MODELS["motion"]}
    if dialect == "aigw":  # the gateway's own names for the same 2.6 model
        expected = {"t2v": "kling_2.6_text_to_video", "motion": "kling_2.6_motion_control"}
    assert model_field(dialect, "t2v", T2VRequest(prompt="p")) == expected["t2v"]
    assert model_field(dialect, "motion", motion_request()) == expected["motion"]
    assert model_field(dialect, "t2v", T2VRequest(prompt="p", model="kling-v3")) == "kling-v3"


# --- 5. the model ezmodel drops ---------------------------------------------------------------------

def test_newapi_is_known_to_drop_the_motion_model():
    forwarded = sourced("newapi/motion_payload_cuijinyu.json")
    assert "model_name" not in forwarded and "model" not in forwarded
    assert get_dialect("newapi").drops_model == {"motion"}
    assert all(not get_dialect(name).drops_model for name in DIALECTS if name != "newapi")


# --- 3. CometAPI's limits ---------------------------------------------------------------------------

def test_cometapi_limits_are_the_documented_ones():
    import re

    reference = sourced("cometapi/text2video_reference.json")
    comet, official = get_dialect("cometapi"), get_dialect("kling")
    assert comet.prompt_limit == int(re.search(r"Maximum (\d+)", reference["prompt"]).group(1)) == 500
    assert comet.negative_prompt_limit == int(re.search(r"Maximum (\d+)", reference["negative_prompt"]).group(1))
    assert comet.aspect_ratios == tuple(reference["aspect_ratio"].split("Options: ")[1].rstrip(".").split(", "))
    assert (official.prompt_limit, official.negative_prompt_limit) == (2500, 2500)
    assert official.aspect_ratios == ("16:9", "9:16", "1:1")


# --- 7. CometAPI looks a task up by its external id -------------------------------------------------------

def test_cometapi_queries_by_external_id_in_the_query_path():
    assert "can be used to query tasks" in sourced("cometapi/text2video_reference.json")["external_task_id"]
    comet = get_dialect("cometapi")
    assert comet.lookup_by_external_id and not comet.lookup_miss_is_absence
    wire = comet.build_get_by_external_id("t2v", "mine-1")
    assert (wire.method, wire.path) == ("GET", "/kling/v1/videos/text2video/mine-1")
    official = get_dialect("kling")
    assert official.lookup_by_external_id and official.lookup_miss_is_absence


# --- 6. new-api gateways without motion control -------------------------------------------------------------

@pytest.mark.parametrize("answer", sourced("newapi/motion_control_not_routed.json"), ids=["404", "html", "301"])
def test_newapi_gateway_without_motion_control(answer):
    from kling_cli.errors import ExitCode, NotFound, Unsupported

    newapi = get_dialect("newapi")
    body = answer["body"].encode()
    error = newapi.error_for(Reply.build(answer["status"], answer["headers"], body, "/kling/v1/videos/motion-control"))
    assert isinstance(error, Unsupported) and error.exit_code == ExitCode.REJECTED and error.refusal
    assert error.message.startswith("this gateway does not offer motion control") and "ezmodel" in error.hint
    query = newapi.error_for(Reply.build(answer["status"], answer["headers"], body,
                                         "/kling/v1/videos/motion-control/842250903629086785"))
    assert isinstance(query, NotFound) and not isinstance(query, Unsupported)
    # the same answer to text to video keeps its old meaning
    other = newapi.error_for(Reply.build(answer["status"], answer["headers"], body, "/kling/v1/videos/text2video"))
    assert not isinstance(other, Unsupported)
