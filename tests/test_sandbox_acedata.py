"""The sandbox's AceDataCloud routes over real HTTP, against aigw-newapi-acedata.md §3 and seed 003."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from test_sandbox_kling import AUTH, age, receiver, slow_sandbox, stats  # noqa: F401 - fixtures

MOTION = {"model_name": "kling-v2-6", "image_url": "https://x/subject.png", "video_url": "https://x/dance.mp4",
          "character_orientation": "image", "mode": "std", "keep_original_sound": "yes"}
RECORD_KEYS = {"_id", "id", "api_id", "application_id", "credential_id", "user_id", "created_at", "request",
               "trace_id", "type", "job_id"}


def videos(sandbox, prompt: str = "a red fox", headers=AUTH, **fields) -> httpx.Response:
    body = {"action": "text2video", "model": "kling-v2-6", "prompt": prompt, "duration": 5, "aspect_ratio": "16:9",
            "mode": "std", **fields}
    return httpx.post(f"{sandbox.base_url('acedata')}/kling/videos", json=body, headers=headers, timeout=10)


def motion(sandbox, **fields) -> httpx.Response:
    body = {k: v for k, v in {**MOTION, **fields}.items() if v is not None}
    return httpx.post(f"{sandbox.base_url('acedata')}/kling/motion", json=body, headers=AUTH, timeout=10)


def tasks(sandbox, body, headers=AUTH) -> httpx.Response:
    return httpx.post(f"{sandbox.base_url('acedata')}/kling/tasks", json=body, headers=headers)


def retrieve(sandbox, task_id: str) -> dict:
    answer = tasks(sandbox, {"id": task_id, "action": "retrieve"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def assert_ace_error(answer: httpx.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message"} and body["error"]["code"] == code
    uuid.UUID(body["trace_id"])
    return body


def test_async_submit_answers_only_a_uuid_task_id(sandbox):
    answer = videos(sandbox, **{"async": True})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"task_id"}
    assert str(uuid.UUID(body["task_id"])) == body["task_id"]
    assert stats(sandbox)["acedata:created"] == 1


def test_a_callback_url_also_makes_it_async_and_the_callback_is_the_sync_result(sandbox, receiver):
    started = time.time()
    answer = videos(sandbox, callback_url=receiver.url())
    assert time.time() - started < 0.25 and set(answer.json()) == {"task_id"}
    _path, _headers, body = receiver.get()
    assert body == {"success": True, "video_id": body["video_id"], "video_url": body["video_url"],
                    "duration": body["duration"], "state": "succeed", "task_id": answer.json()["task_id"]}
    assert body["video_id"].isdigit() and isinstance(body["duration"], str)
    assert httpx.get(body["video_url"]).status_code == 200


def test_a_failed_task_calls_back_with_success_false(sandbox, receiver):
    task_id = videos(sandbox, "sandbox:fail", callback_url=receiver.url()).json()["task_id"]
    _path, _headers, body = receiver.get()
    assert body["success"] is False and body["task_id"] == task_id
    assert body["error"]["code"] == "bad_request" and "risk control" in body["error"]["message"]


def test_the_record_goes_pending_processing_succeeded(slow_sandbox):
    task_id = videos(slow_sandbox, **{"async": True}).json()["task_id"]
    pending = retrieve(slow_sandbox, task_id)
    assert set(pending) == RECORD_KEYS  # no response while pending
    assert pending["id"] == task_id and pending["type"] == "videos"
    assert isinstance(pending["created_at"], float) and abs(pending["created_at"] - time.time()) < 5  # float s
    assert pending["request"]["prompt"] == "a red fox" and pending["request"]["async"] is True

    age(slow_sandbox, task_id, 50)
    processing = retrieve(slow_sandbox, task_id)
    assert "success" not in processing["response"]
    assert processing["response"]["state"] == "processing"
    assert processing["started_at"] == pytest.approx(processing["created_at"] + 25, abs=0.01)
    assert "finished_at" not in processing

    age(slow_sandbox, task_id, 60)
    done = retrieve(slow_sandbox, task_id)
    response = done["response"]
    assert response["success"] is True and response["state"] == "succeed" and response["task_id"] == task_id
    assert isinstance(response["duration"], str)  # the video's length
    assert done["duration"] == pytest.approx(100.0, abs=0.01)  # the job's elapsed float seconds
    assert done["finished_at"] == pytest.approx(done["created_at"] + 100, abs=0.01)
    assert httpx.get(response["video_url"]).status_code == 200


def test_a_failed_record_has_success_false_and_an_error(sandbox):
    task_id = videos(sandbox, "sandbox:fail", **{"async": True}).json()["task_id"]
    age(sandbox, task_id, 1)
    response = retrieve(sandbox, task_id)["response"]
    assert response["success"] is False and response["task_id"] == task_id
    assert response["error"]["code"] == "bad_request" and "risk control" in response["error"]["message"]
    assert "video_url" not in response


def test_batch_retrieve_and_unknown_ids(sandbox):
    first = videos(sandbox, **{"async": True}).json()["task_id"]
    second = motion(sandbox, **{"async": True}).json()["task_id"]
    answer = tasks(sandbox, {"ids": [second, str(uuid.uuid4()), first], "action": "retrieve_batch"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["count"] == 2 and [item["id"] for item in body["items"]] == [second, first]
    assert [item["type"] for item in body["items"]] == ["motion", "videos"]
    assert retrieve(sandbox, str(uuid.uuid4())) == {}
    assert_ace_error(tasks(sandbox, {"action": "retrieve"}), 400, "bad_request")
    assert_ace_error(tasks(sandbox, {"ids": "x", "action": "retrieve_batch"}), 400, "bad_request")
    assert_ace_error(tasks(sandbox, {"id": first, "action": "delete"}), 400, "bad_request")


def test_the_default_is_synchronous(sandbox):
    started = time.time()
    answer = videos(sandbox)
    assert time.time() - started >= 0.25  # held until the 0.3 s task was done
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True and body["state"] == "succeed" and body["video_url"].startswith("http://")
    assert retrieve(sandbox, body["task_id"])["response"] == body


def test_a_synchronous_failure_answers_the_failed_response(sandbox):
    body = assert_ace_error(videos(sandbox, "sandbox:fail"), 400, "bad_request")
    assert "risk control" in body["error"]["message"]
    assert retrieve(sandbox, body["task_id"])["response"]["success"] is False


def test_the_504_marker_answers_timeout_with_a_pollable_task_id(sandbox):
    started = time.time()
    body = assert_ace_error(videos(sandbox, "sandbox:504"), 504, "timeout")
    assert time.time() - started < 0.25
    assert body["error"]["message"] == "任务处理超时。"
    assert isinstance(body["started_at"], float)
    age(sandbox, body["task_id"], 1)
    assert retrieve(sandbox, body["task_id"])["response"]["success"] is True


def test_a_short_timeout_field_answers_504_too(sandbox):
    body = assert_ace_error(videos(sandbox, "sandbox:slow", timeout=0.1), 504, "timeout")
    assert retrieve(sandbox, body["task_id"])["id"] == body["task_id"]


def test_motion_submit_and_validation(sandbox):
    task_id = motion(sandbox, **{"async": True}).json()["task_id"]
    record = retrieve(sandbox, task_id)
    assert record["type"] == "motion" and record["request"]["model_name"] == "kling-v2-6"
    for field in ("image_url", "video_url", "character_orientation", "mode"):
        assert_ace_error(motion(sandbox, **{field: None, "async": True}), 400, "bad_request")
    assert_ace_error(motion(sandbox, model_name="kling-v1", **{"async": True}), 400, "bad_request")
    assert_ace_error(motion(sandbox, keep_original_sound=True, **{"async": True}), 400, "bad_request")


@pytest.mark.parametrize("fields", [
    {"duration": "5"},  # a number on this API (§3.3)
    {"duration": 7},
    {"model": "kling-v9"},
    {"model": "kling-o1", "duration": 10},
    {"mode": "4k"},  # 4k only for v3 / v3-omni
    {"aspect_ratio": "4:3"},
    {"action": "image2video"},
    {"action": None},
    {"prompt": ""},
])
def test_videos_validation_errors(sandbox, fields):
    assert_ace_error(videos(sandbox, **{"async": True, **fields}), 400, "bad_request")


def test_v3_accepts_long_durations_and_4k(sandbox):
    assert videos(sandbox, model="kling-v3", duration=15, mode="4k", **{"async": True}).status_code == 200


def test_auth_refusals(sandbox):
    assert_ace_error(videos(sandbox, headers={}), 400, "no_token")
    assert_ace_error(videos(sandbox, headers={"Authorization": "Bearer wrong"}), 401, "invalid_token")
    assert_ace_error(tasks(sandbox, {"id": "x"}, headers={"Authorization": "Bearer wrong"}), 401, "invalid_token")


def test_markers(sandbox):
    for _ in range(2):
        assert_ace_error(videos(sandbox, "sandbox:429x2", **{"async": True}), 429, "too_many_requests")
    assert videos(sandbox, "sandbox:429x2", **{"async": True}).status_code == 200
    assert_ace_error(videos(sandbox, "sandbox:billing", **{"async": True}), 403, "used_up")
    assert_ace_error(videos(sandbox, "sandbox:policy", **{"async": True}), 400, "bad_request")
    assert_ace_error(videos(sandbox, "sandbox:500x1", **{"async": True}), 500, "api_error")
    counters = stats(sandbox)
    assert counters["acedata:created"] == 1 and counters["acedata:submit_attempts"] == 6


def test_lost_and_flaky_markers(sandbox):
    with pytest.raises(httpx.TransportError):
        videos(sandbox, "sandbox:lostx1", **{"async": True})
    assert stats(sandbox)["acedata:created"] == 1
    task_id = videos(sandbox, "sandbox:flakyx1", **{"async": True}).json()["task_id"]
    assert_ace_error(tasks(sandbox, {"id": task_id, "action": "retrieve"}), 503, "service_unavailable")
    assert retrieve(sandbox, task_id)["id"] == task_id


def test_an_unknown_path_is_no_api(sandbox):
    assert_ace_error(httpx.post(f"{sandbox.base_url('acedata')}/kling/video", json={}, headers=AUTH), 404, "no_api")
    assert_ace_error(httpx.get(f"{sandbox.base_url('acedata')}/kling/tasks", headers=AUTH), 404, "no_api")
