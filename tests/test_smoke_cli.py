"""End to end on the official dialect against the sandbox: submit, status, wait, download."""

from __future__ import annotations

from pathlib import Path

from conftest import sandbox_stats
from kling_cli.sandbox.core import ASSET


def test_submit_prints_only_the_id_on_stdout(kling, kling_profile, sandbox):
    result = kling("submit", "t2v", "a red fox in the snow")
    assert result.exit_code == 0, result
    task_id = result.stdout.strip()
    assert task_id.isdigit() and len(task_id) >= 18
    assert "submitted t2v task" in result.stderr
    assert sandbox_stats(sandbox)["tasks"] == 1


def test_wait_then_download_leaves_the_real_mp4(kling, kling_profile, tmp_path):
    task_id = kling("submit", "t2v", "a red fox", "-q").stdout.strip()
    waited = kling("wait", task_id)
    assert waited.exit_code == 0, waited
    assert waited.stdout.startswith(f"{task_id}\tsucceeded\thttp://")
    got = kling("download", task_id, "-o", tmp_path / "videos")
    assert got.exit_code == 0, got
    path = Path(got.stdout.strip())
    assert path == tmp_path / "videos" / f"{task_id}.mp4"
    assert path.read_bytes() == ASSET.read_bytes()
    assert not list((tmp_path / "videos").glob("*.part"))
