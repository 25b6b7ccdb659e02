"""The sandbox's aigw routes over real HTTP, against seed 000 and aigw-newapi-acedata.md §1."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from kling_cli.presets import SANDBOX_API_KEY
from test_sandbox_kling import AUTH, age, receiver, slow_sandbox, stats  # noqa: F401 - fixtures

GENERATIONS = "/open/aigw/gateway/generations"
MOTION_PARAMS = {"imageUrl": "https://x/subject.png", "videoUrl": "https://x/dance.mp4", "prompt": "dance",
                 "mode": "std", "characterOrientation": "image", "keepOriginalSound": "yes"}


def submit(sandbox, prompt: str = "a red fox", model: str = "kling_2.6_text_to_video", headers=AUTH,
           callback: str | None = None, **params) -> httpx.Response:
    if model.endswith("motion_control"):
        params = {**MOTION_PARAMS, "prompt": prompt, **params}
    else:
        params = {"prompt": prompt, "duration": 5, "aspectRatio": "16:9", "mode": "std", **params}
    body = {"model": model, "params": params}
    if callback:
        body["callbackUrl"] = callback
    return httpx.post(sandbox.base_url("aigw") + GENERATIONS, json=body, headers=headers)


def query(sandbox, task_no: str | None, headers=AUTH) -> httpx.Response:
    params = {} if task_no is None else {"taskNo": task_no}
    return httpx.get(sandbox.base_url("aigw") + "/open/aigw/gateway/generationTask", params=params, headers=headers)


def task(sandbox, task_no: str) -> dict:
    answer = query(sandbox, task_no)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["code"] == 1000 and body["message"] == "success"
    return body["data"]


def assert_aigw_error(answer: httpx.Response, status: int, code: int) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"code", "message", "data"}
    assert body["code"] == code != 1000 and body["data"] is None and body["message"]


def task_no_of(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {"code": 1000, "message": "success", "data": {"taskNo": body["data"]["taskNo"]}}
    assert re.fullmatch(r"[0-9a-f]{32}", body["data"]["taskNo"])
    return body["data"]["taskNo"]


def test_motion_submit_and_the_status_words(slow_sandbox):
    task_no = task_no_of(submit(slow_sandbox, "dance", "kling_2.6_motion_control"))
    pending = task(slow_sandbox, task_no)
    assert set(pending) == {"taskNo", "model", "status", "createTime"}
    assert pending["taskNo"] == task_no and pending["model"] == "kling_2.6_motion_control"
    assert pending["status"] == "pending"
    # zone-less "YYYY-MM-DD HH:MM:SS", UTC+8 (inferred)
    created = datetime.strptime(pending["createTime"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone(timedelta(hours=8)))
    assert abs(created.timestamp() - time.time()) < 5
    age(slow_sandbox, task_no, 50)
    assert task(slow_sandbox, task_no)["status"] == "processing"
    age(slow_sandbox, task_no, 60)
    done = task(slow_sandbox, task_no)
    assert set(done) == {"taskNo", "model", "status", "createTime", "data", "usage"}
    assert done["status"] == "success" and done["usage"] == {"totalPoints": 10}
    assert httpx.get(done["data"]["result"]["video_url"]).status_code == 200


def test_text_to_video_in_real_time(sandbox):
    task_no = task_no_of(submit(sandbox))
    time.sleep(0.35)
    assert task(sandbox, task_no)["status"] == "success"
    assert stats(sandbox)["aigw:created"] == 1


def test_a_failed_task_keeps_code_1000_and_carries_error(sandbox):
    task_no = task_no_of(submit(sandbox, "sandbox:fail"))
    age(sandbox, task_no, 1)
    data = task(sandbox, task_no)
    assert set(data) == {"taskNo", "model", "status", "error"}  # as the documented failure example
    assert data["status"] == "failed" and "risk control" in data["error"]


def test_snake_case_params_are_accepted(sandbox):
    params = {"image_url": "https://x/a.png", "video_url": "https://x/a.mp4", "character_orientation": "video"}
    body = {"model": "kling_2.6_motion_control", "params": params}
    task_no_of(httpx.post(sandbox.base_url("aigw") + GENERATIONS, json=body, headers=AUTH))


@pytest.mark.parametrize(("model", "params"), [
    ("kling_2.6_image_to_video", {}),
    ("veo_text_to_video", {}),
    ("kling_2.6_text_to_video", {"prompt": ""}),
    ("kling_2.6_text_to_video", {"duration": 7}),
    ("kling_2.6_text_to_video", {"aspectRatio": "4:3"}),
    ("kling_2.6_motion_control", {"imageUrl": None}),
    ("kling_2.6_motion_control", {"characterOrientation": "left"}),
    ("kling_2.6_motion_control", {"mode": "fast"}),
])
def test_validation_errors(sandbox, model, params):
    base = MOTION_PARAMS if model.endswith("motion_control") else {"prompt": "a fox"}
    merged = {k: v for k, v in {**base, **params}.items() if v is not None}
    answer = httpx.post(sandbox.base_url("aigw") + GENERATIONS, json={"model": model, "params": merged},
                        headers=AUTH)
    assert_aigw_error(answer, 400, 1002)


def test_a_body_without_params_or_json_is_refused(sandbox):
    url = sandbox.base_url("aigw") + GENERATIONS
    assert_aigw_error(httpx.post(url, json={"model": "kling_2.6_text_to_video"}, headers=AUTH), 400, 1002)
    assert_aigw_error(httpx.post(url, content=b"nope", headers=AUTH), 400, 1002)


def test_query_errors(sandbox):
    assert_aigw_error(query(sandbox, None), 400, 1002)
    assert_aigw_error(query(sandbox, "0" * 32), 404, 1005)


def test_auth_refusals(sandbox):
    assert_aigw_error(submit(sandbox, headers={}), 401, 1001)
    assert_aigw_error(submit(sandbox, headers={"Authorization": "Bearer wrong"}), 401, 1001)
    assert_aigw_error(query(sandbox, "x", headers={}), 401, 1001)


def test_markers(sandbox):
    for _ in range(2):
        assert_aigw_error(submit(sandbox, "sandbox:429x2"), 429, 1004)
    task_no_of(submit(sandbox, "sandbox:429x2"))
    assert_aigw_error(submit(sandbox, "sandbox:billing"), 403, 1003)
    assert_aigw_error(submit(sandbox, "sandbox:policy"), 400, 1006)
    assert_aigw_error(submit(sandbox, "sandbox:500x1"), 500, 1500)
    counters = stats(sandbox)
    assert counters["aigw:created"] == 1 and counters["aigw:submit_attempts"] == 6
    with pytest.raises(httpx.TransportError):
        submit(sandbox, "sandbox:lostx1")
    assert stats(sandbox)["aigw:created"] == 2
    task_no = task_no_of(submit(sandbox, "sandbox:flakyx1"))
    assert_aigw_error(query(sandbox, task_no), 503, 1503)
    assert task(sandbox, task_no)["taskNo"] == task_no


def _assert_signed(body: dict) -> None:
    assert isinstance(body["timestamp"], int) and abs(body["timestamp"] - time.time()) < 5  # Unix seconds
    expected = hashlib.sha256(f"{body['taskNo']}{body['timestamp']}{SANDBOX_API_KEY}".encode()).hexdigest()
    assert body["sign"] == expected  # lowercase hex


def test_success_callback_is_signed_and_shaped_as_documented(sandbox, receiver):
    task_no = task_no_of(submit(sandbox, "dance", "kling_2.6_motion_control", callback=receiver.url()))
    _path, _headers, body = receiver.get()
    assert list(body) == ["taskNo", "status", "model", "timestamp", "data", "usage", "sign"]
    assert body["taskNo"] == task_no and body["status"] == "success" and body["model"] == "kling_2.6_motion_control"
    inner = body["data"]
    assert set(inner) == {"task_id", "status", "request_id", "result", "error_info", "traceback"}
    assert inner["status"] == "SUCCESS" and inner["error_info"] == "" and inner["traceback"] == ""
    assert re.fullmatch(r"[0-9a-f]{32}", inner["request_id"])
    assert body["usage"] == {"totalPoints": 10}
    assert httpx.get(inner["result"]["video_url"]).status_code == 200
    _assert_signed(body)
    receiver.assert_quiet()


def test_failure_callback_is_signed_and_has_no_data(sandbox, receiver):
    task_no = task_no_of(submit(sandbox, "sandbox:fail", callback=receiver.url()))
    _path, _headers, body = receiver.get()
    assert list(body) == ["taskNo", "status", "model", "timestamp", "error", "sign"]
    assert body["taskNo"] == task_no and body["status"] == "failed" and "risk control" in body["error"]
    _assert_signed(body)
