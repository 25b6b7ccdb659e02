"""Callback signatures (aigw and official Kling webhooks) and the local receiver."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from kling_cli.callbacks import InvalidCallback, aigw_signature, kling_signature, read_callback, verify_kling
from kling_cli.presets import SANDBOX_API_KEY

# The official docs' test vector (kling-official-cometapi.md §1.9).
VECTOR_SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="
VECTOR_ID, VECTOR_TS = "9876543210", "1781080794"
VECTOR_BODY = (b'{"id":"1234567890","status":"succeeded","message":"","create_time":1781080778802,'
               b'"update_time":1781080794151}')
VECTOR_SIGNATURE = "v1,UsKlJP00XoQyOn410NM9xv34sP+Gl0jnOO9Lcpr7NJ4="


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {"webhook-id": VECTOR_ID, "webhook-timestamp": VECTOR_TS, "webhook-signature": signature}


def test_kling_test_vector():
    assert "v1," + kling_signature(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    verify_kling(vector_headers(), VECTOR_BODY, VECTOR_SECRET, now=int(VECTOR_TS) + 10)


def test_kling_rotation_any_signature_matches():
    verify_kling(vector_headers("v1,bm9wZQ== " + VECTOR_SIGNATURE), VECTOR_BODY, VECTOR_SECRET, now=int(VECTOR_TS))


@pytest.mark.parametrize(
    "headers,body,now,needle",
    [
        (vector_headers(), VECTOR_BODY.replace(b"succeeded", b"failed"), int(VECTOR_TS), "does not match"),
        (vector_headers(), VECTOR_BODY, int(VECTOR_TS) + 301, "away from now"),
        (vector_headers(), VECTOR_BODY, int(VECTOR_TS) - 301, "away from now"),
        ({"webhook-id": VECTOR_ID}, VECTOR_BODY, int(VECTOR_TS), "missing"),
        (vector_headers("v2,abc"), VECTOR_BODY, int(VECTOR_TS), "does not match"),
    ],
)
def test_kling_refusals(headers, body, now, needle):
    with pytest.raises(InvalidCallback, match=needle):
        verify_kling(headers, body, VECTOR_SECRET, now=now)


def test_new_design_callback_is_read():
    callback = read_callback(VECTOR_BODY, vector_headers(), webhook_secret=VECTOR_SECRET, now=int(VECTOR_TS))
    assert callback.signed and callback.task.id == "1234567890" and callback.task.status.value == "succeeded"


def aigw_body(**changes) -> dict:
    body = {"taskNo": "a1b2c3", "status": "success", "model": "kling_2.6_motion_control", "timestamp": 1234567890,
            "data": {"result": {"video_url": "https://cdn.example.com/v.mp4"}}, "usage": {"totalPoints": 10}}
    # seed 000: sign = SHA256(taskNo + timestamp + apiKey), computed here apart from the code under test
    body["sign"] = hashlib.sha256(b"a1b2c3" + b"1234567890" + b"key-1").hexdigest()
    assert body["sign"] == aigw_signature(body["taskNo"], body["timestamp"], "key-1")
    body.update(changes)
    return body


def test_aigw_signature_and_task():
    callback = read_callback(json.dumps(aigw_body()).encode(), {}, api_key="key-1")
    assert callback.source == "aigw" and callback.task.videos[0].url == "https://cdn.example.com/v.mp4"
    assert callback.task.cost.amount == 10
    upper = aigw_body()
    upper["sign"] = upper["sign"].upper()
    read_callback(json.dumps(upper).encode(), {}, api_key="key-1")  # hex case does not matter
    for tampered in (aigw_body(taskNo="other"), aigw_body(timestamp=1234567891)):  # the sign no longer matches
        with pytest.raises(InvalidCallback, match="does not match"):
            read_callback(json.dumps(tampered).encode(), {}, api_key="key-1")
    with pytest.raises(InvalidCallback, match="does not match"):
        read_callback(json.dumps(aigw_body()).encode(), {}, api_key="key-2")


def test_verify_command_exit_codes(kling, tmp_path):
    key = tmp_path / "key"
    key.write_text("key-1")
    assert kling("profile", "add", "gw", "--provider", "aigw", "--base-url", "https://gw.test", "--api-key-file",
                 key).exit_code == 0
    ok = kling("callback", "verify", "--json", input=json.dumps(aigw_body()))
    assert ok.exit_code == 0, ok
    assert ok.json_lines()[0]["videos"][0]["url"] == "https://cdn.example.com/v.mp4"
    bad = kling("callback", "verify", input=json.dumps(aigw_body(timestamp=1)))
    assert bad.exit_code == 5 and "invalid callback" in bad.stderr and "key-1" not in bad.stderr


def test_verify_command_with_kling_headers(kling, tmp_path):
    body = json.dumps({"task_id": "866889456698785798", "task_status": "succeed", "task_result": {"videos": [
        {"id": "1", "url": "https://v.example/x.mp4", "duration": "5.1"}]}}).encode()
    now = str(int(time.time()))
    secret_file = tmp_path / "whsec"
    secret_file.write_text(VECTOR_SECRET)
    signature = "v1," + kling_signature(VECTOR_SECRET, "msg-1", now, body)
    args = ["callback", "verify", "--webhook-secret-file", secret_file, "-H", "webhook-id: msg-1",
            "-H", f"webhook-timestamp: {now}"]
    ok = kling(*args, "-H", f"webhook-signature: {signature}", "--json", input=body)
    assert ok.exit_code == 0, ok
    assert ok.json_lines()[0]["videos"][0]["duration"] == 5.1
    assert kling(*args, "-H", "webhook-signature: v1,AAAA", input=body).exit_code == 5
    unsigned = kling("callback", "verify", input=body)
    assert unsigned.exit_code == 5 and "not signed" in unsigned.stderr


def test_listen_prints_verified_callbacks_and_rejects_forged_ones(sandbox, tmp_path):
    env = {**os.environ, "KLING_PROFILE": "sandbox"}
    listener = subprocess.Popen(
        [sys.executable, "-m", "kling_cli", "--dialect", "aigw", "callback", "listen", "--port", "0", "--count", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
    try:
        line = ""
        while "listening for callbacks on" not in line:
            line = listener.stderr.readline()
            assert line, "listener exited early"
        url = line.split(" on ")[1].split()[0]
        forged = httpx.post(url, json=aigw_body())  # signed with another key
        assert forged.status_code == 401
        submitted = subprocess.run(
            [sys.executable, "-m", "kling_cli", "--dialect", "aigw", "submit", "motion", "--image", "https://x/a.png",
             "--video",
             "https://x/d.mp4", "--orientation", "image", "--mode", "std", "--prompt", "p", "--callback-url", url,
             "-q"], capture_output=True, text=True, env={**env, "KLING_BASE_URL": sandbox.base_url("aigw")},
            stdin=subprocess.DEVNULL, timeout=30)
        assert submitted.returncode == 0, submitted.stderr
        task_no = submitted.stdout.strip()
        out, err = listener.communicate(timeout=20)
    finally:
        listener.kill()
    (task,) = [json.loads(l) for l in out.splitlines()]
    assert task["id"] == task_no and task["status"] == "succeeded"
    assert "rejected a callback (401)" in err
