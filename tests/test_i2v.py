"""`kling submit i2v` against every dialect of the sandbox, over loopback HTTP: the body each provider's docs
describe, field by field; status, wait, download and a CSV batch; and every preflight refusal, with nothing
sent."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from conftest import DATA, sandbox_stats
from kling_cli.sandbox.core import ASSET

DIALECTS = ["kling", "cometapi", "newapi", "acedata", "aigw"]
FIRST, LAST = "https://x.test/first.png", "https://x.test/last.png"
#: each dialect's path and body for the same command, from its provider's docs (see the sandbox's modules):
#: the official image2video body under each Kling-format prefix; AceData's /kling/videos; aigw's guessed params
PATHS = {"kling": "/kling/v1/videos/image2video", "cometapi": "/cometapi/kling/v1/videos/image2video",
         "newapi": "/newapi/kling/v1/videos/image2video", "acedata": "/acedata/kling/videos",
         "aigw": "/aigw/open/aigw/gateway/generations"}
KLING_BODY = {"model_name": "kling-v2-6", "image": FIRST, "image_tail": LAST, "prompt": "she turns and smiles",
              "negative_prompt": "blur", "mode": "pro", "duration": "5"}
BODIES = {
    "kling": KLING_BODY, "cometapi": KLING_BODY, "newapi": KLING_BODY,
    "acedata": {"action": "image2video", "model": "kling-v2-6", "start_image_url": FIRST, "end_image_url": LAST,
                "prompt": "she turns and smiles", "negative_prompt": "blur", "mode": "pro", "duration": 5,
                "async": True},
    "aigw": {"model": "kling_2.6_img2video", "params": {"image": FIRST, "imageTail": LAST,
                                                        "prompt": "she turns and smiles", "negativePrompt": "blur",
                                                        "mode": "pro", "duration": "5"}},
}


@pytest.fixture(params=DIALECTS)
def dialect(request, sandbox, add_profile) -> str:
    name = request.param
    add_profile(name, sandbox.base_url(name), dialect=name, auth="jwt" if name == "kling" else "key")
    return name


def created(sandbox) -> list[dict]:
    return httpx.get(f"{sandbox.origin}/__sandbox/tasks").json()["tasks"]


def attempts(sandbox, dialect: str) -> int:
    return sandbox_stats(sandbox)["counters"].get(f"{dialect}:submit_attempts", 0)


def test_i2v_body_status_wait_download(kling, dialect, sandbox, tmp_path):
    submitted = kling("submit", "i2v", "she turns and smiles", "--image", FIRST, "--image-tail", LAST, "--mode", "pro",
                      "--duration", "5", "--negative-prompt", "blur", "--json")
    assert submitted.exit_code == 0, submitted
    (task,) = submitted.json_lines()
    assert task["kind"] == "i2v" and task["dialect"] == dialect
    assert task["model"] == ("kling_2.6_img2video" if dialect == "aigw" else "kling-v2-6")
    (row,) = created(sandbox)
    body = dict(row["request"])
    if dialect in ("kling", "cometapi", "newapi"):  # the external id kling sends where the body has one
        assert body.pop("external_task_id") == kling("history", "--json").json_lines()[0]["external_id"]
    assert body == BODIES[dialect]  # field by field: no aspect_ratio, no data: prefix, duration's type
    asked = httpx.get(f"{sandbox.origin}/__sandbox/requests").json()["requests"]
    assert {"method": "POST", "path": PATHS[dialect], "served": True} in asked
    # without a journal the kinds are tried in turn: the task is found as an image-to-video one
    status = kling("status", task["id"], "--no-journal", "--json")
    assert status.exit_code == 0 and status.json_lines()[0]["kind"] == "i2v", status
    waited = kling("wait", task["id"], "--json")
    assert waited.exit_code == 0 and waited.json_lines()[0]["status"] == "succeeded", waited
    got = kling("download", task["id"], "-o", tmp_path, "--name", "{kind}-{id}", "--json")
    assert got.exit_code == 0, got
    (path,) = got.json_lines()[0]["files"]
    assert Path(path).name == f"i2v-{task['id']}.mp4" and Path(path).read_bytes() == ASSET.read_bytes()


@pytest.mark.parametrize("name", ["kling", "cometapi", "newapi"])
def test_a_local_image_goes_inline_as_raw_base64(kling, sandbox, add_profile, name):
    add_profile(name, sandbox.base_url(name), dialect=name, auth="jwt" if name == "kling" else "key")
    result = kling("submit", "i2v", "a wave", "--image", DATA / "subject-480.png", "--image-tail",
                   DATA / "subject-400x600.jpg", "--json")
    assert result.exit_code == 0, result  # the sandbox refuses a data: prefix, or bytes that are no image
    (entry,) = kling("history", "--json").json_lines()
    for key, file in (("image", "subject-480.png"), ("image_tail", "subject-400x600.jpg")):
        encoded = base64.b64encode((DATA / file).read_bytes()).decode()
        digest = hashlib.sha256(encoded.encode()).hexdigest()  # the journal keeps long inline data by its digest
        assert entry["request"][key] in (encoded, f"<inline data, {len(encoded)} chars, sha256 {digest}>")
    asked = httpx.get(f"{sandbox.origin}/__sandbox/requests").json()["requests"]
    assert entry["kind"] == "i2v" and not [r for r in asked if r["path"].startswith("/uploads/")]  # nothing uploaded


def test_acedata_takes_an_aspect_ratio(kling, sandbox, add_profile):
    add_profile("ace", sandbox.base_url("acedata"), dialect="acedata", auth="key")
    result = kling("submit", "i2v", "a wave", "--image", FIRST, "--aspect-ratio", "9:16", "-q")
    assert result.exit_code == 0, result
    assert created(sandbox)[0]["request"]["aspect_ratio"] == "9:16"


def test_acedata_end_frame_rules_come_back_as_refusals(kling, sandbox, add_profile):
    add_profile("ace", sandbox.base_url("acedata"), dialect="acedata", auth="key")
    # AceData's reference: an end frame needs mode pro on kling-v2-6
    result = kling("submit", "i2v", "a wave", "--image", FIRST, "--image-tail", LAST, "--json")
    assert result.exit_code == 5, result
    assert "requires mode pro" in result.json_lines()[0]["error"]["message"]


def test_csv_batch_of_image_to_video(kling, kling_profile, sandbox, tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("image,image_tail,prompt,duration\n"
                    f"{FIRST},{LAST},a wave,5\n"
                    f"{DATA / 'subject-480.png'},,a nod,10\n")
    result = kling("submit", "i2v", "--from-csv", jobs, "--mode", "pro", "--wait", "--out", tmp_path / "m.csv",
                   "--json")
    assert result.exit_code == 0, result
    rows = result.json_lines()
    assert [r["kind"] for r in rows] == ["i2v", "i2v"] and {r["status"] for r in rows} == {"succeeded"}
    bodies = sorted((t["request"] for t in created(sandbox)), key=lambda b: int(b["duration"]))
    assert bodies[0]["image_tail"] == LAST and bodies[0]["mode"] == "pro"
    assert bodies[1]["image"] == "<base64, 2388 chars>" and "image_tail" not in bodies[1]
    assert "kind" in (tmp_path / "m.csv").read_text().splitlines()[0] and ",i2v," in (tmp_path / "m.csv").read_text()
    again = kling("submit", "i2v", "--from-csv", jobs, "--mode", "pro", "-q")
    assert again.exit_code == 0 and len(created(sandbox)) == 2  # a rerun pays for nothing twice


def test_csv_rows_are_checked_like_flags(kling, kling_profile, sandbox, tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("image,image_tail,camera_control,prompt\n"
                    f",,,no image\n"
                    f"{FIRST},{LAST},\"{{\"\"type\"\":\"\"down_back\"\"}}\",both controls\n"
                    f"{DATA / 'small-200x200.png'},,,too small\n"
                    f"{FIRST},,,fine\n")
    result = kling("submit", "i2v", "--from-csv", jobs, "--dry-run")
    assert result.exit_code == 2
    for line, needle in ((2, "image is empty"), (3, "cannot be used together"), (4, "at least 300 px")):
        assert f"jobs.csv:{line}: " in result.stderr and needle in result.stderr
    assert len(result.json_lines()) == 1 and attempts(sandbox, "kling") == 0


def _oversized(tmp_path: Path) -> Path:
    path = tmp_path / "huge.png"
    path.write_bytes((DATA / "subject-480.png").read_bytes())
    with path.open("r+b") as handle:
        handle.truncate(10 * 1024 * 1024 + 1)
    return path


@pytest.mark.parametrize("args,needle", [
    (["--image", "missing.png"], "image file not found"),
    (["--image", DATA / "small-200x200.png"], "at least 300 px"),
    (["--image", DATA / "wide-1200x400.png"], "between 1:2.5 and 2.5:1"),
    (["--image", DATA / "short-2s.mp4"], "not a JPEG or PNG"),
    (["--image", "OVERSIZED"], "the limit is 10 MB"),
    (["--image", FIRST, "--image-tail", DATA / "small-200x200.png"], "at least 300 px"),
    (["--image", FIRST, "--image-tail", LAST, "--camera-control", '{"type":"down_back"}'],
     "--image-tail and --camera-control cannot be used together"),
    (["--image", FIRST, "--image-tail", LAST, "--extra", "static_mask=https://x.test/m.png"],
     "--image-tail and motion-brush masks"),
    (["--image", FIRST, "--camera-control", '{"type":"down_back"}', "--extra", 'dynamic_masks=[{"mask":"m"}]'],
     "--camera-control and motion-brush masks"),
    (["--image", FIRST, "--aspect-ratio", "16:9"], "takes no aspect ratio for image to video"),
    (["--image", FIRST, "--duration", "7"], "duration 7 s is not offered"),
    (["--image", FIRST, "--cfg-scale", "nan"], "--cfg-scale must be a finite number"),
    (["--image", "ftp://x.test/a.png"], "image file not found"),
    ([], "--image is required"),
])
def test_preflight_refusals_send_nothing(kling, kling_profile, sandbox, tmp_path, args, needle):
    args = [_oversized(tmp_path) if a == "OVERSIZED" else a for a in args]
    result = kling("submit", "i2v", "a wave", *args)
    assert result.exit_code == 2, result
    assert needle in result.stderr
    assert attempts(sandbox, "kling") == 0


@pytest.mark.parametrize("name", ["newapi", "acedata"])
def test_a_prompt_where_the_provider_requires_one(kling, sandbox, add_profile, name):
    add_profile(name, sandbox.base_url(name), dialect=name, auth="key")
    result = kling("submit", "i2v", "--image", FIRST)
    assert result.exit_code == 2 and "refuses image to video without a prompt" in result.stderr, result
    assert attempts(sandbox, name) == 0
    assert kling("submit", "i2v", "a wave", "--image", FIRST, "-q").exit_code == 0


@pytest.mark.parametrize("name", ["acedata", "aigw"])
def test_a_local_frame_on_a_url_only_dialect_needs_an_uploader(kling, sandbox, add_profile, name):
    add_profile(name, sandbox.base_url(name), dialect=name, auth="key")
    result = kling("submit", "i2v", "a wave", "--image", DATA / "subject-480.png")
    assert result.exit_code == 2 and "as a URL only" in result.stderr and "upload_command" in result.stderr
    assert attempts(sandbox, name) == 0


def test_profile_defaults_for_image_to_video(kling, kling_profile, sandbox):
    import os

    config = Path(os.environ["KLING_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + '\n[profiles.test.defaults]\ni2v_model = "kling-v2-1"\nmode = "pro"\n'
                      'aspect_ratio = "16:9"\nmodel = "kling-v3"\n')
    result = kling("submit", "i2v", "a wave", "--image", FIRST, "--json")
    assert result.exit_code == 0, result  # the text-to-video aspect ratio is not applied here
    assert result.json_lines()[0]["model"] == "kling-v2-1"
    body = created(sandbox)[0]["request"]
    assert (body["model_name"], body["mode"], "aspect_ratio" in body) == ("kling-v2-1", "pro", False)


def test_dry_run_shows_the_body_and_the_estimate(kling, sandbox):
    # the sandbox bills like the provider it emulates (a custom profile has no price list)
    result = kling("-p", "sandbox", "submit", "i2v", "a wave", "--image", DATA / "subject-480.png", "--duration", "10",
                   "--dry-run")
    assert result.exit_code == 0, result
    (body,) = result.json_lines()
    assert body["path"] == "/v1/videos/image2video" and body["kind"] == "i2v"
    assert body["request"]["image"] == f"<base64 of {DATA / 'subject-480.png'}>"
    assert body["estimate"]["cost"] == {"amount": 5.0, "unit": "units"}  # kling-v2-6, 10 s: 2.5 x 2
    assert json.loads(kling("-p", "sandbox", "submit", "i2v", "x", "--image", FIRST, "--dry-run", "--model",
                            "kling-v2-master", "--mode", "pro").stdout)["estimate"]["cost"]["amount"] == 35.0


@pytest.mark.parametrize("dialect,path,body,needle", [
    ("kling", "/v1/videos/image2video", {"image": FIRST, "image_tail": LAST, "camera_control": {"type": "down_back"}},
     "cannot be used at the same time"),
    ("kling", "/v1/videos/image2video", {"image": FIRST, "static_mask": FIRST, "camera_control": {"type": "down_back"}},
     "cannot be used at the same time"),
    ("kling", "/v1/videos/image2video", {"image": "data:image/png;base64,iVBORw0KGgo="}, "not in a valid base64"),
    ("kling", "/v1/videos/image2video", {"prompt": "no frame"}, "image can not be null"),
    ("cometapi", "/kling/v1/videos/image2video", {"image": FIRST, "prompt": "x" * 501}, "exceeds 500"),
    ("newapi", "/kling/v1/videos/image2video", {"model_name": "kling-v2-6", "image": FIRST}, "prompt is required"),
    ("acedata", "/kling/videos", {"action": "image2video", "prompt": "x", "end_image_url": LAST},
     "end_image_url is valid only when start_image_url is not empty"),
    ("acedata", "/kling/videos", {"action": "image2video", "prompt": "x", "start_image_url": FIRST,
                                  "end_image_url": LAST, "model": "kling-v2-master"}, "not supported with"),
    ("acedata", "/kling/videos", {"action": "image2video", "prompt": "x", "start_image_url": FIRST,
                                  "end_image_url": LAST, "model": "kling-v3", "duration": 10}, "only support 5 seconds"),
    ("acedata", "/kling/videos", {"action": "image2video", "prompt": "x", "start_image_url": "/tmp/a.png"},
     "start_image_url is invalid"),
    ("aigw", "/open/aigw/gateway/generations", {"model": "kling_2.6_img2video", "params": {"prompt": "x"}},
     "params.image is required"),
])
def test_the_sandbox_refuses_what_the_docs_refuse(sandbox, dialect, path, body, needle):
    from kling_cli.presets import SANDBOX_API_KEY

    answer = httpx.post(sandbox.base_url(dialect) + path, json={**body, "async": True} if dialect == "acedata" else body,
                        headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"})
    assert answer.status_code == 400 and needle in answer.text, answer.text
    assert created(sandbox) == []
