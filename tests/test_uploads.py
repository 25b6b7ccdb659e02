"""Local files where a dialect takes URLs only, through a profile's uploader (a real command, run without a
shell) or the sandbox's upload route: uploaded once per file across a batch and across runs, again once the
URL is past its lifetime, checked before the upload, and a broken uploader that stops everything first."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import DATA, sandbox_stats
from kling_cli.sandbox.core import ASSET

HELPER = Path(__file__).parent / "upload_helper.py"
IMAGE = DATA / "subject-480.png"


def uploader(sandbox, log: Path, behaviour: str = "ok", name: str = "{sha256}.{ext}") -> str:
    """The template of an uploader that PUTs the file to the sandbox, logging each run."""
    head = " ".join(shlex.quote(str(part)) for part in (sys.executable, HELPER, log, sandbox.origin, behaviour))
    return f"{head} {{path}} {name}"


def runs(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def ace(sandbox, add_profile, tmp_path):
    """An AceData profile (frames as URLs only) whose uploader logs to the returned file."""
    log = tmp_path / "uploads.log"

    def add(behaviour: str = "ok", *extra: str) -> Path:
        add_profile("ace", sandbox.base_url("acedata"), dialect="acedata", auth="key",
                    extra=("--upload-command", uploader(sandbox, log, behaviour), *extra, "--force"))
        return log

    return add


def tasks(sandbox) -> list[dict]:
    return httpx.get(f"{sandbox.origin}/__sandbox/tasks").json()["tasks"]


def counters(sandbox) -> dict[str, int]:
    return sandbox_stats(sandbox)["counters"]


def test_a_batch_uploads_each_file_once_and_a_rerun_none(kling, sandbox, ace, tmp_path):
    log = ace()
    other = tmp_path / "other.jpg"
    shutil.copy(DATA / "subject-400x600.jpg", other)
    jobs = tmp_path / "jobs.csv"
    rows = [f"{IMAGE},a wave {n}" for n in range(200)] + [f"{other},a nod"]
    jobs.write_text("image,prompt\n" + "\n".join(rows) + "\n")
    # without a journal too: this run remembers what it uploaded
    result = kling("submit", "i2v", "--from-csv", jobs, "--max-in-flight", "500", "--no-journal", "-q")
    assert result.exit_code == 0, result
    assert sorted(run[0] for run in runs(log)) == sorted([str(IMAGE), str(other)])  # once per file
    assert counters(sandbox)["uploads"] == 2
    urls = {task["request"]["start_image_url"] for task in tasks(sandbox)}
    assert len(tasks(sandbox)) == 201 and len(urls) == 2
    for url in urls:  # the provider can fetch each: the very bytes of the local file
        local = IMAGE if url.endswith(".png") else other
        assert httpx.get(url).content == local.read_bytes()
    # with the journal, the next runs (any CSV, any command) upload each file once, then never again
    for number, expected in ((1, 4), (2, 4)):
        jobs.write_text(f"image,prompt\n{IMAGE},a jump {number}\n{other},a spin {number}\n")
        again = kling("submit", "i2v", "--from-csv", jobs, "-q")
        assert again.exit_code == 0 and len(runs(log)) == expected, again
        assert {task["request"]["start_image_url"] for task in tasks(sandbox)[-2:]} == urls


def test_a_url_past_its_lifetime_is_uploaded_again(kling, sandbox, ace):
    log = ace("ok", "--upload-ttl", "1h")
    assert kling("submit", "i2v", "a wave", "--image", IMAGE, "-q").exit_code == 0
    assert kling("submit", "i2v", "a nod", "--image", IMAGE, "-q").exit_code == 0
    assert len(runs(log)) == 1  # fresh: the journal's URL is used
    with sqlite3.connect(Path(os.environ["KLING_DATA_DIR"]) / "journal.db") as db:  # two hours go by
        db.execute("UPDATE uploads SET uploaded_at = uploaded_at - 7200")
    result = kling("submit", "i2v", "a jump", "--image", IMAGE, "-q")
    assert result.exit_code == 0 and len(runs(log)) == 2, result
    (url, at), = sqlite3.connect(Path(os.environ["KLING_DATA_DIR"]) / "journal.db").execute(
        "SELECT url, uploaded_at FROM uploads").fetchall()
    assert time.time() - at < 60 and tasks(sandbox)[-1]["request"]["start_image_url"] == url


@pytest.mark.parametrize("behaviour,needle", [
    ("fail", "failed (exit 1) uploading"),
    ("silent", "printed no URL"),
    ("not-a-url", "printed 'uploaded'"),
])
def test_a_broken_uploader_exits_3_and_sends_nothing(kling, sandbox, ace, behaviour, needle):
    log = ace(behaviour)
    result = kling("submit", "i2v", "a wave", "--image", IMAGE, "--image-tail", DATA / "subject-400x600.jpg",
                   "--json")
    assert result.exit_code == 3, result
    (error,) = result.json_lines()
    message = error["error"]["message"]
    assert message.startswith("the uploader of profile 'ace' (python") and needle in message
    if behaviour == "fail":  # the last line of its stderr
        assert message.endswith("The specified bucket does not exist")
    assert error["error"]["code"] == "upload_failed" and "nothing was submitted" in error["error"]["hint"]
    assert len(runs(log)) == 1 and counters(sandbox).get("acedata:submit_attempts", 0) == 0
    assert kling("history", "--json").json_lines() == []  # no intent either: nothing was on its way


def test_a_broken_uploader_stops_a_batch_before_its_first_submit(kling, sandbox, ace, tmp_path):
    log = ace("fail")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"image,prompt\n{FIRST},a wave\n{IMAGE},a nod\n")
    result = kling("submit", "i2v", "--from-csv", jobs)
    assert result.exit_code == 3 and result.stdout == "", result
    assert "failed (exit 1) uploading" in result.stderr and "The specified bucket does not exist" in result.stderr
    assert len(runs(log)) == 1  # stopped at the first failed upload, not tried once per file
    assert counters(sandbox).get("acedata:submit_attempts", 0) == 0


def test_an_uploader_that_cannot_run(kling, sandbox, add_profile):
    add_profile("ace", sandbox.base_url("acedata"), dialect="acedata", auth="key",
                extra=("--upload-command", "kling-no-such-uploader {path}"))
    result = kling("submit", "i2v", "a wave", "--image", IMAGE)
    assert result.exit_code == 3 and "kling-no-such-uploader: command not found" in result.stderr, result
    assert counters(sandbox).get("acedata:submit_attempts", 0) == 0


def test_paths_with_spaces_and_quotes_reach_the_uploader_whole(kling, sandbox, add_profile, tmp_path):
    folder = tmp_path / "my photos"
    folder.mkdir()
    image = folder / """she said "hi" it's $HOME.png"""
    shutil.copy(IMAGE, image)
    log = tmp_path / "uploads.log"
    template = uploader(sandbox, log, name="{sha256}.{ext} '{name} as given' {path}")
    add_profile("gw", sandbox.base_url("aigw"), dialect="aigw", auth="key", extra=("--upload-command", template))
    result = kling("submit", "i2v", "a wave", "--image", image, "--json")
    assert result.exit_code == 0, result
    ((path, name, quoted, again),) = runs(log)
    assert path == again == str(image) and quoted == f"{image.name} as given"  # one argument each, no shell
    assert name.endswith(".png") and len(name) == 64 + 4
    assert tasks(sandbox)[0]["request"]["params"]["image"].endswith(f"/uploads/{name}")


def test_a_folder_named_like_a_home_that_does_not_exist_is_uploaded_from(kling, sandbox, ace, tmp_path,
                                                                          monkeypatch):
    # "~nobody-here/..." is no home: preflight reads the folder of that name, and the upload must read the same
    folder = tmp_path / "~kling-no-such-user"
    folder.mkdir()
    shutil.copy(IMAGE, folder / "frame.png")
    monkeypatch.chdir(tmp_path)
    log = ace()
    result = kling("submit", "i2v", "a wave", "--image", "~kling-no-such-user/frame.png", "--json")
    assert result.exit_code == 0, result
    ((path, _name),) = runs(log)
    assert Path(path) == folder / "frame.png"


def test_a_file_name_never_reaches_the_uploader_as_an_option(kling, sandbox, add_profile, tmp_path):
    image = tmp_path / "--config=evil.png"
    shutil.copy(IMAGE, image)
    log = tmp_path / "uploads.log"
    add_profile("gw", sandbox.base_url("aigw"), dialect="aigw", auth="key",
                extra=("--upload-command", uploader(sandbox, log, name="{sha256}.{ext} {name}")))
    result = kling("submit", "i2v", "a wave", "--image", image)
    assert result.exit_code == 3 and "would be read as an option" in result.stderr, result
    assert runs(log) == [] and counters(sandbox).get("aigw:submit_attempts", 0) == 0


def test_preflight_runs_on_the_local_file_before_any_upload(kling, sandbox, ace):
    log = ace()
    result = kling("submit", "i2v", "a wave", "--image", DATA / "small-200x200.png")
    assert result.exit_code == 2 and "at least 300 px" in result.stderr
    assert runs(log) == [] and counters(sandbox).get("uploads", 0) == 0


def test_dry_run_says_what_would_be_uploaded_and_what_is_known(kling, sandbox, ace, tmp_path):
    log = ace()
    before = kling("submit", "i2v", "a wave", "--image", IMAGE, "--dry-run")
    assert before.exit_code == 0 and f"would upload: {IMAGE}" in before.stderr, before
    (body,) = before.json_lines()
    assert body["request"]["start_image_url"] == f"<upload of {IMAGE}>" and body["uploads"][0]["url"] is None
    assert runs(log) == []
    assert kling("submit", "i2v", "a wave", "--image", IMAGE, "-q").exit_code == 0
    url = tasks(sandbox)[0]["request"]["start_image_url"]
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"image,image_tail,prompt,mode\n{IMAGE},{DATA / 'subject-400x600.jpg'},a,pro\n{IMAGE},,b,std\n")
    after = kling("submit", "i2v", "--from-csv", jobs, "--dry-run")
    assert after.exit_code == 0, after
    assert f"already uploaded: {IMAGE} -> {url}" in after.stderr
    assert f"would upload: {DATA / 'subject-400x600.jpg'}" in after.stderr
    assert after.stderr.count("already uploaded") == 1 and [r["request"]["start_image_url"]
                                                            for r in after.json_lines()] == [url, url]
    assert len(runs(log)) == 1 and len(tasks(sandbox)) == 1


def test_the_sandbox_profile_uploads_a_local_motion_video(kling, tmp_path):
    # the README's motion-control example: a local image and a local video, no account
    result = kling("--profile", "sandbox", "submit", "motion", "--image", IMAGE, "--video", DATA / "dance-12s.mov",
                   "--orientation", "video", "--mode", "std", "--download", tmp_path / "videos", "--json")
    assert result.exit_code == 0, result
    (task,) = result.json_lines()
    assert Path(task["files"][0]).read_bytes() == ASSET.read_bytes()
    (entry,) = kling("history", "--json").json_lines()
    video_url = entry["request"]["video_url"]
    assert "/uploads/" in video_url and video_url.endswith(".mov")
    assert entry["request"]["image_url"] != str(IMAGE)  # inline on the official dialect, not uploaded


def test_the_sandbox_upload_route(sandbox):
    name = "a" * 64 + ".png"
    put = httpx.put(f"{sandbox.origin}/uploads/{name}", content=IMAGE.read_bytes())
    assert put.status_code == 200 and put.text == f"{sandbox.origin}/uploads/{name}\n"
    got = httpx.get(put.text.strip())
    assert got.content == IMAGE.read_bytes() and got.headers["content-type"] == "image/png"
    assert httpx.put(f"{sandbox.origin}/uploads/..", content=b"x").status_code in (400, 404)
    assert httpx.put(f"{sandbox.origin}/uploads/.hidden", content=b"x").status_code == 400
    assert httpx.put(f"{sandbox.origin}/uploads/x.png", content=b"").status_code == 400
    assert httpx.get(f"{sandbox.origin}/uploads/missing.png").status_code == 404


FIRST = "https://x.test/first.png"


def readme_templates() -> dict[str, str]:
    """The README's uploader templates, by program, as TOML would read them."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    text = (Path(__file__).parent.parent / "README.md").read_text()
    block = text.split("Templates for common tools")[1].split("```toml")[1].split("```")[0]
    found = [tomllib.loads(line)["upload_command"] for line in block.splitlines() if line.startswith("upload_command")]
    return {next(w for w in ("aws", "rclone", "sign-url", "gcloud", "curl") if w in t): t for t in found}


#: stand-ins for the cloud tools (no account, no network here): each copies the file into BUCKET and prints
#: what the real one prints on stdout, so that the README's templates run as written, their `sh -c` included
STUBS = {
    "aws": 'if [ "$2" = cp ]; then cp "$4" "$BUCKET/$(basename "$5")"; else echo "https://b.s3.amazonaws.com/k/'
           '$(basename "$3")?X-Amz-Signature=x"; fi',
    "rclone": 'cp "$2" "$BUCKET/$(basename "$3")"',
    "gcloud": 'if [ "$2" = cp ]; then cp "$3" "$BUCKET/$(basename "$4")"; else echo "https://storage.googleapis.com/'
              'b/$(basename "$3")?X-Goog-Signature=x"; fi',
}


def test_the_readme_uploader_templates_run_as_written(tmp_path, monkeypatch):
    from kling_cli import rules
    from kling_cli.uploads import CommandUploader, Uploads

    templates = readme_templates()
    assert set(templates) == {"aws", "rclone", "gcloud", "sign-url", "curl"}
    bin_dir, bucket = tmp_path / "bin", tmp_path / "bucket"
    bin_dir.mkdir()
    bucket.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("BUCKET", str(bucket))
    image = tmp_path / "my photos" / """she said "hi" it's $HOME.png"""
    image.parent.mkdir()
    shutil.copy(IMAGE, image)
    for name, template in templates.items():
        if name == "curl":
            continue  # below, against a real sandbox
        uploads = Uploads(CommandUploader("p", rules.upload_command(template)), None, say=print, warn=print)
        file = uploads.local(str(image))
        url = uploads.url_for(file)
        assert url.startswith("https://") and f"{file.sha256}.png" in url, (name, url)
        assert (bucket / f"{file.sha256}.png").read_bytes() == IMAGE.read_bytes(), name


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_template_uploads_to_a_sandbox(kling, sandbox, add_profile):
    template = readme_templates()["curl"].replace("http://127.0.0.1:8765", sandbox.origin)
    add_profile("gw", sandbox.base_url("aigw"), dialect="aigw", auth="key", extra=("--upload-command", template))
    result = kling("submit", "i2v", "a wave", "--image", IMAGE, "--image-tail", DATA / "subject-400x600.jpg",
                   "--wait", "--json")
    assert result.exit_code == 0, result
    params = tasks(sandbox)[0]["request"]["params"]
    assert httpx.get(params["image"]).content == IMAGE.read_bytes()
    assert httpx.get(params["imageTail"]).content == (DATA / "subject-400x600.jpg").read_bytes()


@pytest.mark.parametrize("template,needle", [
    ("sh -c 'aws s3 cp {path} s3://bucket/kling/'", "inside a shell script"),  # a file name would become code
    ("bash -ec \"rclone copyto {path} r:b && echo https://x/{name}\"", "inside a shell script"),
    # the script found wherever it is: behind a wrapper, after other options or `--`, in another interpreter
    ("env sh -c 'aws s3 cp {path} s3://bucket/kling/'", "inside a shell script"),
    ("/usr/bin/busybox sh -c 'cp {path} /srv/'", "inside a shell script"),
    ("bash -c -- 'cp {path} /srv/'", "inside a shell script"),
    ("sh -c -e 'cp {path} /srv/'", "inside a shell script"),
    ("bash -c -o pipefail 'cp {path} /srv/'", "inside a shell script"),
    ("python3 -c \"import shutil; shutil.copy('{path}', '/srv/')\"", "inside a shell script"),
    ("perl -e 'system(\"cp {path} /srv/\")'", "inside a shell script"),
    ("{path} --upload", "chooses the program"),  # the file (a CSV cell) would say what runs
    ("/opt/up/{ext}-uploader {path}", "chooses the program"),
    ("aws s3 cp - s3://bucket/kling/{sha256}", "names no {path}"),
    ("sh -c 'unclosed", "cannot be split"),
    ("", "is empty"),
])
def test_an_uploader_template_that_would_misbehave_is_refused(kling, template, needle):
    result = kling("profile", "add", "ace", "--provider", "acedata", "--api-key-env", "X", "--upload-command", template)
    assert result.exit_code == 2 and needle in result.stderr, result
    config = Path(os.environ["KLING_CONFIG_DIR"]) / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[profiles.ace]\nprovider = "acedata"\nupload_command = {json.dumps(template)}\n')
    read = kling("-p", "ace", "submit", "i2v", "a wave", "--image", IMAGE, env={"KLING_API_KEY": "k"})
    assert read.exit_code == 3 and "upload_command" in read.stderr and needle in read.stderr, read
