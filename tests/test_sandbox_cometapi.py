"""The sandbox's CometAPI routes over real HTTP, against kling-official-cometapi.md §3 and seed 004."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from test_sandbox_kling import AUTH, age, receiver, stats  # noqa: F401 - fixtures

T2V = "/kling/v1/videos/text2video"


def submit(sandbox, prompt: str = "a red fox", **fields) -> httpx.Response:
    body = {"model_name": "kling-v2-6", "prompt": prompt, "duration": "5", **fields}
    return httpx.post(sandbox.base_url("cometapi") + T2V, json=body, headers=AUTH)


def query(sandbox, task_id: str, route: str = "videos/text2video") -> httpx.Response:
    return httpx.get(f"{sandbox.base_url('cometapi')}/kling/v1/{route}/{task_id}", headers=AUTH)


def assert_comet_error(answer: httpx.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "comet_api_error"
    assert error["param"] == ""
    assert error["code"] == code
    assert re.search(r" \(request id: \w+\)$", error["message"]), error["message"]
    return error


def test_submit_answers_the_kling_envelope_without_request_id(sandbox):
    answer = submit(sandbox)
    assert answer.status_code == 200
    body = answer.json()
    assert body.keys() == {"code", "message", "data"}  # §3.3: no request_id on create
    assert body["code"] == 0 and body["message"] == "success"
    data = body["data"]
    assert set(data) == {"task_id", "task_status", "task_info", "created_at", "updated_at"}
    assert isinstance(data["task_id"], str) and data["task_id"].isdigit() and 18 <= len(data["task_id"]) <= 19
    assert data["task_status"] == "submitted"
    assert data["task_info"] == {}
    assert isinstance(data["created_at"], int) and abs(data["created_at"] / 1000 - time.time()) < 5  # ms
    assert stats(sandbox)["cometapi:created"] == 1


def test_query_walks_the_kling_statuses_to_a_downloadable_video(sandbox):
    task_id = submit(sandbox, "a red fox sandbox:slow").json()["data"]["task_id"]  # 1.5 s: room for a slow machine
    first = query(sandbox, task_id).json()
    assert first["code"] == 0 and first["message"] == "SUCCEED" and isinstance(first["request_id"], str)
    assert first["data"]["task_status"] in ("submitted", "processing")
    assert first["data"]["task_result"] == {}  # {} not absent while processing (seed 004)
    age(sandbox, task_id, 0.75)  # half way: past the queued quarter, 0.75 s before the end
    assert query(sandbox, task_id).json()["data"]["task_status"] == "processing"
    age(sandbox, task_id, 1.5)
    done = query(sandbox, task_id).json()["data"]
    assert done["task_status"] == "succeed"
    video = done["task_result"]["videos"][0]
    assert isinstance(video["duration"], str)
    assert done["updated_at"] > done["created_at"]
    assert httpx.get(video["url"]).content[4:8] == b"ftyp"


def test_a_failed_task_keeps_message_succeed_and_says_why_in_task_status_msg(sandbox):
    task_id = submit(sandbox, "sandbox:fail").json()["data"]["task_id"]
    age(sandbox, task_id, 1)
    body = query(sandbox, task_id).json()
    assert body["message"] == "SUCCEED"
    assert body["data"]["task_status"] == "failed"
    assert "risk control" in body["data"]["task_status_msg"]


def test_wider_aspect_ratios_are_accepted(sandbox):
    assert submit(sandbox, aspect_ratio="4:3").status_code == 200
    assert_comet_error(submit(sandbox, aspect_ratio="5:4"), 400, "invalid_request")


def test_auth_refusals(sandbox):
    url = sandbox.base_url("cometapi") + T2V
    error = assert_comet_error(httpx.post(url, json={"prompt": "x"}), 401, "")
    assert error["message"].startswith("invalid token")
    assert_comet_error(httpx.post(url, json={"prompt": "x"}, headers={"Authorization": "Bearer nope"}), 401, "")
    assert_comet_error(httpx.get(f"{sandbox.base_url('cometapi')}/kling/v1/videos/text2video/1"), 401, "")


def test_validation_errors(sandbox):
    assert_comet_error(submit(sandbox, ""), 400, "invalid_request")
    assert_comet_error(submit(sandbox, model_name="kling-v9"), 400, "invalid_request")
    assert_comet_error(submit(sandbox, duration=5), 400, "invalid_request")
    # §3.5: a malformed request surfaces as HTTP 500 with code invalid_request (not retryable)
    broken = httpx.post(sandbox.base_url("cometapi") + T2V, content=b"{not json", headers=AUTH)
    assert_comet_error(broken, 500, "invalid_request")
    assert stats(sandbox).get("cometapi:created", 0) == 0


def test_external_task_id_is_unique_and_queryable(sandbox):
    task_id = submit(sandbox, external_task_id="mine-1").json()["data"]["task_id"]
    assert submit(sandbox, external_task_id="mine-1").status_code == 400
    assert query(sandbox, "mine-1").json()["data"]["task_id"] == task_id


def test_rate_limit_marker_answers_429_n_times(sandbox):
    for _ in range(2):
        assert_comet_error(submit(sandbox, "sandbox:429x2"), 429, "rate_limit_exceeded")
    assert submit(sandbox, "sandbox:429x2").status_code == 200
    counters = stats(sandbox)
    assert counters["cometapi:submit_attempts"] == 3 and counters["cometapi:created"] == 1


def test_billing_and_policy_markers(sandbox):
    for _ in range(2):
        error = assert_comet_error(submit(sandbox, "sandbox:billing"), 403, "insufficient_user_quota")
        assert "quota" in error["message"]
    error = assert_comet_error(submit(sandbox, "sandbox:policy"), 400, "task_failed")
    assert "content security policy" in error["message"]
    assert stats(sandbox).get("cometapi:created", 0) == 0


def test_500_marker_creates_no_task(sandbox):
    assert_comet_error(submit(sandbox, "sandbox:500x1"), 500, "")
    assert stats(sandbox).get("cometapi:created", 0) == 0
    assert submit(sandbox, "sandbox:500x1").status_code == 200
    assert stats(sandbox)["cometapi:created"] == 1


def test_lost_marker_creates_the_task_then_drops_the_connection(sandbox):
    with pytest.raises(httpx.TransportError):
        submit(sandbox, "sandbox:lostx1")
    assert stats(sandbox)["cometapi:created"] == 1
    assert submit(sandbox, "sandbox:lostx1").status_code == 200


def test_flaky_marker_fails_the_first_queries_with_503(sandbox):
    task_id = submit(sandbox, "sandbox:flakyx2").json()["data"]["task_id"]
    assert_comet_error(query(sandbox, task_id), 503, "")
    assert_comet_error(query(sandbox, task_id), 503, "")
    assert query(sandbox, task_id).status_code == 200


def test_motion_control_is_not_offered(sandbox):
    base = sandbox.base_url("cometapi")
    body = {"model_name": "kling-v2-6", "image_url": "https://x/a.png", "video_url": "https://x/a.mp4",
            "character_orientation": "image", "mode": "std"}
    answer = httpx.post(base + "/kling/v1/videos/motion-control", json=body, headers=AUTH)
    assert answer.status_code == 301 and answer.headers["location"] == "/cometapi/"  # §3.5: a wrong path
    assert "<html>" in answer.text
    assert_comet_error(query(sandbox, "123", "videos/motion-control"), 404, "not_found")


def test_unknown_task_and_off_list_routes(sandbox):
    assert_comet_error(query(sandbox, "812345678901234567"), 404, "task_not_exist")
    task_id = submit(sandbox).json()["data"]["task_id"]
    # seed 004 route family: a valid action2 of another kind does not find a text2video task
    assert_comet_error(query(sandbox, task_id, "videos/image2video"), 404, "task_not_exist")
    assert_comet_error(query(sandbox, task_id, "videos/generations"), 404, "not_found")
    assert query(sandbox, task_id, "videos/text2video").status_code == 200


def test_a_wrong_path_redirects_to_an_html_page(sandbox):
    base = sandbox.base_url("cometapi")
    moved = httpx.post(base + "/v1/videos/text2video", json={"prompt": "x"}, headers=AUTH)  # missing /kling
    assert moved.status_code == 301
    assert moved.headers["Location"] == "/cometapi/"
    assert moved.headers["Content-Type"].startswith("text/html")
    followed = httpx.get(base + "/kling/v2/nothing", headers=AUTH, follow_redirects=True)
    assert followed.status_code == 200
    assert followed.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        followed.json()


def test_callback_is_the_kling_task_object(sandbox, receiver):
    task_id = submit(sandbox, callback_url=receiver.url()).json()["data"]["task_id"]
    _path, _headers, body = receiver.get()
    assert body["task_id"] == task_id and body["task_status"] == "succeed"
