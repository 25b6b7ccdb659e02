"""The sandbox's new-api (ezmodel) routes over real HTTP, against aigw-newapi-acedata.md §2,
kling-official-cometapi.md §2 and seeds 001/002."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from kling_cli.presets import SANDBOX_API_KEY
from test_sandbox_kling import AUTH, age, receiver, slow_sandbox, stats  # noqa: F401 - fixtures

MOTION = {"model_name": "kling-v2-6", "prompt": "dance", "image_url": "https://x/subject.png",
          "video_url": "https://x/dance.mp4", "character_orientation": "image", "mode": "std"}


def submit(sandbox, prompt: str | None = "a red fox", action: str = "text2video", headers=AUTH, **fields):
    if action == "text2video":
        body = {"model_name": "kling-v2-6", "prompt": prompt, "duration": "5", "aspect_ratio": "16:9", **fields}
    else:
        body = {**MOTION, "prompt": prompt, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    return httpx.post(f"{sandbox.base_url('newapi')}/kling/v1/videos/{action}", json=body, headers=headers)


def query(sandbox, task_id: str, action: str = "text2video") -> httpx.Response:
    return httpx.get(f"{sandbox.base_url('newapi')}/kling/v1/videos/{action}/{task_id}", headers=AUTH)


def dto(sandbox, task_id: str) -> dict:
    answer = query(sandbox, task_id)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["code"] == "success" and body["message"] == ""
    return body["data"]


def assert_task_error(answer: httpx.Response, status: int, code: str, message: str | None = None) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"code", "message", "data"}
    assert body["code"] == code and body["data"] is None
    if message is not None:
        assert body["message"] == message
    return body["message"]


def assert_gateway_error(answer: httpx.Response, status: int, code: str = "") -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["type"] == "new_api_error" and error["code"] == code
    assert re.search(r" \(request id: \w+\)$", error["message"])
    return error["message"]


def test_submit_answers_the_openai_video_object_with_the_kling_id(sandbox):
    answer = submit(sandbox)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"id", "task_id", "object", "model", "status", "progress", "created_at"}
    assert body["id"] == body["task_id"] and body["task_id"].isdigit() and len(body["task_id"]) >= 18
    assert body["object"] == "video" and body["model"] == "kling-v2-6" and body["status"] == ""  # as ezmodel sends
    assert body["progress"] == 0  # an int here, a string in the poll envelope
    assert isinstance(body["created_at"], int) and abs(body["created_at"] - time.time()) < 5  # seconds
    assert stats(sandbox)["newapi:created"] == 1


def test_taskdto_walks_not_start_submitted_in_progress_success(slow_sandbox):
    task_id = submit(slow_sandbox).json()["task_id"]
    first = dto(slow_sandbox, task_id)
    assert set(first) == {"task_id", "action", "status", "fail_reason", "submit_time", "start_time", "finish_time",
                          "progress", "data"}
    assert first["task_id"] == task_id and first["action"] == "textGenerate"
    assert (first["status"], first["progress"], first["fail_reason"]) == ("NOT_START", "0%", "")
    assert first["start_time"] == first["finish_time"] == 0
    assert abs(first["submit_time"] - time.time()) < 5  # seconds
    inner = first["data"]
    assert inner["code"] == 0 and inner["message"] == "SUCCEED"
    assert inner["data"]["task_status"] == "submitted" and "task_result" not in inner["data"]  # the submit body

    age(slow_sandbox, task_id, 20)  # 100 s task: 12.5-25 s is the second half of "queued"
    submitted = dto(slow_sandbox, task_id)
    assert (submitted["status"], submitted["progress"]) == ("SUBMITTED", "10%")
    assert submitted["data"]["data"]["task_status"] == "submitted"

    age(slow_sandbox, task_id, 20)
    running = dto(slow_sandbox, task_id)
    assert (running["status"], running["progress"], running["fail_reason"]) == ("IN_PROGRESS", "30%", "")
    assert running["start_time"] == running["submit_time"] + 25 and running["finish_time"] == 0
    assert running["data"]["data"]["task_status"] == "processing"
    assert running["data"]["data"]["task_result"] == {}

    age(slow_sandbox, task_id, 100)
    done = dto(slow_sandbox, task_id)
    assert (done["status"], done["progress"]) == ("SUCCESS", "100%")
    kling = done["data"]["data"]
    assert kling["task_status"] == "succeed"
    url = kling["task_result"]["videos"][0]["url"]
    assert done["fail_reason"] == url  # the URL lives in fail_reason (§2.6)
    assert done["finish_time"] == done["submit_time"] + 100
    assert isinstance(kling["created_at"], int) and kling["created_at"] // 1000 == done["submit_time"]  # ms vs s
    assert httpx.get(url).status_code == 200


def test_a_failed_task_says_succeed_in_fail_reason_and_why_inside(sandbox):
    task_id = submit(sandbox, "sandbox:fail").json()["task_id"]
    age(sandbox, task_id, 1)
    data = dto(sandbox, task_id)
    assert (data["status"], data["progress"], data["fail_reason"]) == ("FAILURE", "100%", "SUCCEED")
    assert "risk control" in data["data"]["data"]["task_status_msg"]
    assert data["data"]["data"]["task_status"] == "failed"


def test_real_time_run_to_success(sandbox):
    task_id = submit(sandbox).json()["task_id"]
    time.sleep(0.35)
    assert dto(sandbox, task_id)["status"] == "SUCCESS"


def test_the_get_path_segment_is_ignored_and_unknown_ids_are_400(sandbox):
    task_id = submit(sandbox).json()["task_id"]
    assert query(sandbox, task_id, "motion-control").json()["data"]["task_id"] == task_id
    assert query(sandbox, task_id, "image2video").status_code == 200
    assert_task_error(query(sandbox, "812345678901234567"), 400, "task_not_exist", "task_not_exist")


def test_motion_control_submit_and_query(sandbox):
    answer = submit(sandbox, "dance", "motion-control", mode=None)  # mode defaults to std (§2.4)
    assert answer.status_code == 200, answer.text
    task_id = answer.json()["task_id"]
    data = dto(sandbox, task_id)
    assert data["action"] == "motionControl"
    assert sandbox.store.get("newapi", task_id).kind == "motion"


@pytest.mark.parametrize("action", ["text2video", "motion-control"])
@pytest.mark.parametrize("prompt", [None, "", "   "])
def test_prompt_is_required_even_for_motion_control(sandbox, action, prompt):
    assert_task_error(submit(sandbox, prompt, action), 400, "invalid_request", "prompt is required")


def test_a_numeric_duration_is_a_500_build_request_failed(sandbox):
    message = assert_task_error(submit(sandbox, duration=5), 500, "build_request_failed")
    assert "cannot unmarshal number" in message and "duration of type string" in message
    assert stats(sandbox).get("newapi:created", 0) == 0


@pytest.mark.parametrize(("fields", "message"), [
    ({"image_url": None}, "image_url is required for motion-control"),
    ({"video_url": ""}, "video_url is required for motion-control"),
    ({"character_orientation": None}, "character_orientation is required for motion-control"),
    ({"character_orientation": "left"}, "character_orientation must be 'image' or 'video'"),
    ({"mode": "fast"}, "mode must be 'std' or 'pro'"),
])
def test_motion_validation_errors_are_500_build_request_failed(sandbox, fields, message):
    body = {**MOTION, **fields}
    answer = httpx.post(f"{sandbox.base_url('newapi')}/kling/v1/videos/motion-control",
                        json={k: v for k, v in body.items() if v is not None}, headers=AUTH)
    assert_task_error(answer, 500, "build_request_failed", message)


def test_kling_refusals_come_back_as_fail_to_fetch_task_with_the_raw_body(sandbox):
    message = assert_task_error(submit(sandbox, duration="7"), 400, "fail_to_fetch_task")
    raw = json.loads(message)
    assert raw["code"] == 1201 and "duration" in raw["message"]


def test_model_routing_errors(sandbox):
    answer = httpx.post(f"{sandbox.base_url('newapi')}/kling/v1/videos/text2video", json={"prompt": "x"},
                        headers=AUTH)
    assert "模型名称不能为空" in assert_gateway_error(answer, 400)
    assert "kling-v9" in assert_gateway_error(submit(sandbox, model_name="kling-v9"), 503, "model_not_found")


def test_auth_refusals_and_the_sk_prefix(sandbox):
    assert_gateway_error(submit(sandbox, headers={}), 401)
    assert_gateway_error(submit(sandbox, headers={"Authorization": "Bearer sk-wrong"}), 401)
    assert_gateway_error(httpx.get(f"{sandbox.base_url('newapi')}/kling/v1/videos/text2video/1"), 401)
    # §2.2: the sk- prefix is stripped and "bearer" is accepted
    assert submit(sandbox, headers={"Authorization": f"bearer sk-{SANDBOX_API_KEY}"}).status_code == 200


def test_rate_limit_marker(sandbox):
    for _ in range(2):
        assert_task_error(submit(sandbox, "sandbox:429x2"), 429, "fail_to_fetch_task", "当前分组上游负载已饱和，请稍后再试")
    assert submit(sandbox, "sandbox:429x2").status_code == 200
    assert stats(sandbox)["newapi:submit_attempts"] == 3


def test_billing_policy_and_500_markers(sandbox):
    assert_task_error(submit(sandbox, "sandbox:billing"), 403, "quota_not_enough", "user quota is not enough")
    raw = json.loads(assert_task_error(submit(sandbox, "sandbox:policy"), 400, "fail_to_fetch_task"))
    assert raw["code"] == 1301
    assert_task_error(submit(sandbox, "sandbox:500x1"), 500, "do_request_failed")
    assert stats(sandbox).get("newapi:created", 0) == 0
    assert submit(sandbox, "sandbox:500x1").status_code == 200


def test_lost_and_flaky_markers(sandbox):
    with pytest.raises(httpx.TransportError):
        submit(sandbox, "sandbox:lostx1")
    assert stats(sandbox)["newapi:created"] == 1
    task_id = submit(sandbox, "sandbox:flakyx1").json()["task_id"]
    raw = json.loads(assert_task_error(query(sandbox, task_id), 503, "fail_to_fetch_task"))
    assert raw["code"] == 5001
    assert query(sandbox, task_id).status_code == 200


def test_callback_is_kling_native_with_the_kling_id(sandbox, receiver):
    task_id = submit(sandbox, callback_url=receiver.url()).json()["task_id"]
    _path, _headers, body = receiver.get()
    assert body["task_id"] == task_id and body["task_status"] == "succeed"
