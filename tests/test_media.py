"""Preflight checks on local media (kling_cli/media.py): the files are judged by their bytes, before any paid
request. Valid PNG, JPEG and MP4/MOV structures are synthesized here; the real samples in tests/data and the
sandbox asset are used as well.
"""

from __future__ import annotations

import base64
import os
import signal
import struct
import zlib
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kling_cli import media
from kling_cli.errors import ExitCode, PreflightError
from kling_cli.media import (
    IMAGE_MAX_BYTES,
    VIDEO_MAX_BYTES,
    check_image,
    check_prompt,
    check_video,
    probe_image,
    probe_video,
)

DATA = Path(__file__).parent / "data"
JPG_400x600 = DATA / "subject-400x600.jpg"
PNG_480 = DATA / "subject-480.png"
PNG_200 = DATA / "small-200x200.png"
PNG_1200x400 = DATA / "wide-1200x400.png"
MP4_2S = DATA / "short-2s.mp4"
MOV_12S = DATA / "dance-12s.mov"
SAMPLE_MP4 = Path(media.__file__).parent / "sandbox" / "assets" / "sample.mp4"  # 5.0 s

MiB = 1024 * 1024
ALL_SOF = [0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF]


# --------------------------------------------------------------------------------------------------------------
# Synthesizers
# --------------------------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def make_png(width: int, height: int, *, pixels: bool = True) -> bytes:
    """A valid 1-bit grayscale PNG (IHDR, zlib IDAT, IEND); `pixels=False` leaves the IDAT out (header only,
    for sizes whose pixel data would be too large to build)."""
    out = PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    if pixels:
        row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
        out += png_chunk(b"IDAT", zlib.compress(row * height, 1))
    return out + png_chunk(b"IEND", b"")


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def sof_payload(width: int, height: int) -> bytes:
    # precision, height, width, 3 components (id, sampling, quant table)
    return struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"


def make_jpeg(width: int, height: int, *, sof: int = 0xC0, exif: bool = True, before_sof: bytes = b"") -> bytes:
    """SOI, APP0 (JFIF), APP1 (Exif, carrying a thumbnail with its own SOI/SOF 16x16), DQT, `before_sof`, the
    frame header, DHT, SOS, a little entropy-coded data and EOI."""
    out = b"\xff\xd8"
    out += jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    if exif:
        thumbnail = b"\xff\xd8" + jpeg_segment(0xC0, sof_payload(16, 16)) + b"\xff\xd9"
        out += jpeg_segment(0xE1, b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + thumbnail)
    out += jpeg_segment(0xDB, b"\x00" + bytes(range(1, 65)))
    out += before_sof
    out += jpeg_segment(sof, sof_payload(width, height))
    out += jpeg_segment(0xC4, b"\x00" + bytes([0, 1] + [0] * 14) + b"\x00")
    out += jpeg_segment(0xDA, b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00")
    return out + b"\x12\x34\xff\x00\x56" + b"\xff\xd9"


def box(kind: bytes, payload: bytes = b"", *, large: bool = False, to_eof: bool = False) -> bytes:
    if to_eof:
        return struct.pack(">I4s", 0, kind) + payload
    if large:
        return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def ftyp(brand: bytes = b"isom") -> bytes:
    return box(b"ftyp", brand + struct.pack(">I", 0x200) + brand + b"iso2mp41")


def mvhd(timescale: int, duration: int, version: int = 0) -> bytes:
    if version == 1:
        times = bytes([1, 0, 0, 0]) + struct.pack(">QQIQ", 3_000_000_000, 3_000_000_001, timescale, duration)
    else:
        times = bytes([0, 0, 0, 0]) + struct.pack(">IIII", 0, 0, timescale, duration)
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    return box(b"mvhd", times + struct.pack(">IH", 0x10000, 0x100) + bytes(10) + matrix + bytes(24)
               + struct.pack(">I", 2))


def moov(seconds: float = 5.0, *, timescale: int = 1000, duration: int | None = None, version: int = 0,
         before_mvhd: bytes = b"", large: bool = False, to_eof: bool = False) -> bytes:
    if duration is None:
        duration = round(seconds * timescale)
    trak = box(b"trak", box(b"tkhd", bytes(84)))
    return box(b"moov", before_mvhd + mvhd(timescale, duration, version) + trak, large=large, to_eof=to_eof)


def mdat(payload: bytes = b"\x00" * 64, **kw) -> bytes:
    return box(b"mdat", payload, **kw)


def make_mp4(seconds: float = 5.0, *, brand: bytes = b"isom", faststart: bool = True, **moov_kw) -> bytes:
    if faststart:
        return ftyp(brand) + moov(seconds, **moov_kw) + mdat()
    return ftyp(brand) + box(b"free") + mdat() + moov(seconds, **moov_kw)


def mdat_header(total_size: int, *, large: bool = False) -> bytes:
    if large:
        return struct.pack(">I4sQ", 1, b"mdat", total_size)
    return struct.pack(">I4s", total_size, b"mdat")


def write_sparse(path: Path, head: bytes, total: int, tail: bytes = b"") -> Path:
    """`head` at the start, `tail` ending exactly at `total`, a hole in between (no memory, little disk)."""
    with path.open("wb") as handle:
        handle.write(head)
        handle.truncate(total - len(tail))
        handle.seek(total - len(tail))
        handle.write(tail)
    assert path.stat().st_size == total
    return path


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


class _CountingHandle:
    def __init__(self, raw, log: list[int]) -> None:
        self._raw, self._log = raw, log

    def read(self, count: int = -1) -> bytes:
        data = self._raw.read(count)
        self._log.append(len(data))
        return data

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._raw.close()


class CountingPath:
    """Stands in for a Path in probe_*: records how many bytes are read through it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads: list[int] = []

    def stat(self):
        return self.path.stat()

    def open(self, mode: str = "r"):
        return _CountingHandle(self.path.open(mode), self.reads)


def preflight_error(call, *args) -> PreflightError:
    with pytest.raises(PreflightError) as info:
        call(*args)
    err = info.value
    assert err.exit_code == ExitCode.USAGE == 2
    assert err.code == "preflight"
    return err


# --------------------------------------------------------------------------------------------------------------
# Images: real samples
# --------------------------------------------------------------------------------------------------------------


def test_real_jpeg_and_png_are_probed_from_their_headers():
    assert probe_image(JPG_400x600) == media.ImageInfo("jpeg", 400, 600, JPG_400x600.stat().st_size)
    assert probe_image(PNG_480) == media.ImageInfo("png", 480, 480, PNG_480.stat().st_size)
    assert (probe_image(PNG_200).width, probe_image(PNG_200).height) == (200, 200)
    assert (probe_image(PNG_1200x400).width, probe_image(PNG_1200x400).height) == (1200, 400)


@pytest.mark.parametrize("path", [JPG_400x600, PNG_480], ids=lambda p: p.name)
def test_real_images_within_limits_pass_and_come_back_as_raw_base64(path):
    info, encoded = check_image(str(path))
    assert info.size == path.stat().st_size
    assert isinstance(encoded, str)
    assert not encoded.startswith("data:") and "," not in encoded and "\n" not in encoded
    assert base64.b64decode(encoded, validate=True) == path.read_bytes()


def test_real_small_image_fails_on_the_minimum_side():
    err = preflight_error(check_image, str(PNG_200))
    assert str(PNG_200) in err.message
    assert "200x200" in err.message and "300 px" in err.message


def test_real_wide_image_fails_on_the_aspect_ratio():
    err = preflight_error(check_image, str(PNG_1200x400))
    assert str(PNG_1200x400) in err.message
    assert "1200x400" in err.message and "3.00" in err.message
    assert "1:2.5" in err.message and "2.5:1" in err.message


# --------------------------------------------------------------------------------------------------------------
# Images: synthesized headers
# --------------------------------------------------------------------------------------------------------------


def test_synthesized_png_is_a_valid_png():
    data = make_png(301, 5)
    assert data.startswith(PNG_SIGNATURE)
    (length,) = struct.unpack(">I", data[33:37])
    assert data[37:41] == b"IDAT"
    assert zlib.decompress(data[41:41 + length]) == b"\x00" * (1 + 38) * 5
    assert data.endswith(png_chunk(b"IEND", b""))


@pytest.mark.parametrize("sof", [0xC0, 0xC2], ids=["SOF0-baseline", "SOF2-progressive"])
def test_jpeg_dimensions_come_from_the_frame_after_app0_and_app1(tmp_path, sof):
    path = write(tmp_path, "x.jpg", make_jpeg(640, 480, sof=sof))
    assert probe_image(path) == media.ImageInfo("jpeg", 640, 480, path.stat().st_size)
    info, encoded = check_image(str(path))
    assert (info.width, info.height) == (640, 480)
    assert base64.b64decode(encoded) == path.read_bytes()


@pytest.mark.parametrize("sof", ALL_SOF, ids=lambda m: f"{m:02X}")
def test_every_start_of_frame_marker_carries_the_dimensions(tmp_path, sof):
    path = write(tmp_path, "x.jpg", make_jpeg(1000, 700, sof=sof, exif=False))
    assert (probe_image(path).width, probe_image(path).height) == (1000, 700)


@pytest.mark.parametrize("marker", [0xC4, 0xC8, 0xCC], ids=["DHT", "JPG", "DAC"])
def test_c4_c8_cc_segments_are_not_frames(tmp_path, marker):
    # a segment that would read as 16x16 if it were taken for a frame header
    decoy = jpeg_segment(marker, sof_payload(16, 16))
    path = write(tmp_path, "x.jpg", make_jpeg(800, 600, before_sof=decoy))
    assert (probe_image(path).width, probe_image(path).height) == (800, 600)


def test_app1_thumbnail_with_its_own_frame_is_skipped_by_length(tmp_path):
    data = make_jpeg(900, 600)
    assert data.count(b"\xff\xc0") == 2  # the thumbnail's 16x16 frame comes first in the file
    path = write(tmp_path, "x.jpg", data)
    assert (probe_image(path).width, probe_image(path).height) == (900, 600)


def test_jpeg_fill_bytes_and_standalone_markers_before_the_frame(tmp_path):
    standalone = b"\xff\x01" + b"\xff\xd0" + b"\xff\xd7" + b"\xff\xff\xff"  # TEM, RST0, RST7, then fill bytes
    data = make_jpeg(700, 500, before_sof=standalone)
    path = write(tmp_path, "x.jpg", data)
    assert (probe_image(path).width, probe_image(path).height) == (700, 500)


def test_jpeg_without_a_frame_header(tmp_path):
    path = write(tmp_path, "x.jpg", b"\xff\xd8" + jpeg_segment(0xE0, b"JFIF\x00" + bytes(9)) + b"\xff\xd9")
    err = preflight_error(check_image, str(path))
    assert str(path) in err.message and "no frame header" in err.message


@pytest.mark.parametrize("data", [
    b"\xff\xd8\x00\xc0" + bytes(20),                           # no 0xFF where a marker must start
    b"\xff\xd8\xff\xe0\x00\x01" + bytes(20),                   # segment length below 2
    b"\xff\xd8\xff\xe0\x00\x00" + bytes(20),
], ids=["no-marker", "length-1", "length-0"])
def test_broken_jpeg_structure(tmp_path, data):
    path = write(tmp_path, "x.jpg", data)
    err = preflight_error(check_image, str(path))
    assert str(path) in err.message and "broken" in err.message


# --------------------------------------------------------------------------------------------------------------
# Images: limits and their boundaries
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width,height", [(300, 300), (300, 400), (400, 300), (300, 750), (750, 300),
                                          (1000, 2500), (2500, 1000), (4000, 4000)])
def test_image_sizes_at_and_inside_the_limits_pass(tmp_path, width, height):
    for name, data in (("a.png", make_png(width, height)), ("a.jpg", make_jpeg(width, height))):
        info, _ = check_image(str(write(tmp_path, name, data)))
        assert (info.width, info.height) == (width, height)


@pytest.mark.parametrize("width,height", [(299, 300), (300, 299), (299, 299), (299, 700), (700, 299), (1, 1),
                                          (0, 500), (500, 0), (0, 0)])
def test_a_side_under_300_px_fails(tmp_path, width, height):
    for name, data in (("a.png", make_png(width, height, pixels=False)), ("a.jpg", make_jpeg(width, height))):
        path = write(tmp_path, name, data)
        err = preflight_error(check_image, str(path))
        assert str(path) in err.message
        assert f"{width}x{height}" in err.message and "at least 300 px" in err.message


@pytest.mark.parametrize("width,height", [(300, 751), (751, 300), (1000, 2501), (2501, 1000), (400, 1200),
                                          (65535, 300)])
def test_an_aspect_ratio_beyond_1_to_2_5_fails(tmp_path, width, height):
    for name, data in (("a.png", make_png(width, height, pixels=False)), ("a.jpg", make_jpeg(width, height))):
        path = write(tmp_path, name, data)
        err = preflight_error(check_image, str(path))
        assert str(path) in err.message and f"{width}x{height}" in err.message
        assert "between 1:2.5 and 2.5:1" in err.message


def test_sides_up_to_65536_px_pass_and_beyond_fail(tmp_path):
    path = write(tmp_path, "a.png", make_png(65536, 65536, pixels=False))
    assert check_image(str(path))[0].width == 65536
    path = write(tmp_path, "b.png", make_png(65537, 65537, pixels=False))
    err = preflight_error(check_image, str(path))
    assert str(path) in err.message and "65537x65537" in err.message and "65536 px" in err.message


def test_an_image_of_exactly_10_mib_passes(tmp_path):
    path = write_sparse(tmp_path / "big.png", make_png(1000, 1000), IMAGE_MAX_BYTES)
    info, encoded = check_image(str(path))
    assert info.size == IMAGE_MAX_BYTES
    assert len(encoded) == 4 * ((IMAGE_MAX_BYTES + 2) // 3)
    assert base64.b64decode(encoded[:64]) == path.read_bytes()[:48]


@pytest.mark.parametrize("make", [lambda: make_png(1000, 1000), lambda: make_jpeg(1000, 1000)], ids=["png", "jpeg"])
def test_an_image_one_byte_over_10_mib_fails(tmp_path, make):
    path = write_sparse(tmp_path / "big.img", make(), IMAGE_MAX_BYTES + 1)
    assert probe_image(path).size == IMAGE_MAX_BYTES + 1
    err = preflight_error(check_image, str(path))
    assert str(path) in err.message and "the limit is 10 MB" in err.message


# --------------------------------------------------------------------------------------------------------------
# Images: content, not name; missing, directories, truncation
# --------------------------------------------------------------------------------------------------------------


def test_the_format_is_judged_by_content_not_name(tmp_path):
    png_named_jpg = write(tmp_path, "photo.jpg", make_png(500, 500))
    assert check_image(str(png_named_jpg))[0].format == "png"
    jpeg_named_png = write(tmp_path, "photo.png", make_jpeg(500, 500))
    assert check_image(str(jpeg_named_png))[0].format == "jpeg"
    no_suffix = write(tmp_path, "photo", PNG_480.read_bytes())
    assert check_image(str(no_suffix))[0].format == "png"


@pytest.mark.parametrize("name,data", [
    ("notes.png", b"hello, this is text, not an image\n" * 4),
    ("anim.png", b"GIF89a" + struct.pack("<HH", 500, 500) + bytes(40)),
    ("photo.jpg", b"RIFF\x00\x01\x00\x00WEBPVP8 " + bytes(40)),
    ("empty.jpg", b""),
    ("video.png", MP4_2S.read_bytes()),
    ("png-without-ihdr.png", PNG_SIGNATURE + png_chunk(b"tEXt", b"a\x00b") + bytes(20)),
], ids=lambda v: v if isinstance(v, str) else None)
def test_non_images_fail_whatever_their_name(tmp_path, name, data):
    path = write(tmp_path, name, data)
    err = preflight_error(check_image, str(path))
    assert str(path) in err.message and "not a JPEG or PNG" in err.message
    assert "jpg" in err.hint and "png" in err.hint


def test_missing_image(tmp_path):
    path = tmp_path / "nope.png"
    err = preflight_error(check_image, str(path))
    assert err.message == f"image file not found: {path}"
    assert "URL" in err.hint


def test_directory_instead_of_an_image(tmp_path):
    folder = tmp_path / "pics.png"
    folder.mkdir()
    err = preflight_error(check_image, str(folder))
    assert err.message == f"image is not a regular file: {folder}"


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path, "me.png", make_png(400, 400))
    assert check_image("~/me.png")[0].width == 400
    err = preflight_error(check_image, "~/missing.png")
    assert str(tmp_path / "missing.png") in err.message


def test_tilde_of_an_unknown_user_is_a_missing_file():
    err = preflight_error(check_image, "~no_such_user_kling_test/me.png")
    assert "not found" in err.message


@pytest.mark.parametrize("data", [
    PNG_SIGNATURE,
    PNG_SIGNATURE + b"\x00\x00\x00\x0d",
    b"\xff\xd8",
    b"\xff\xd8\xff",
    b"\xff\xd8\xff\xe0\x00",
    make_jpeg(500, 500)[:30],                         # inside APP0/APP1: the skip runs past the end
    make_jpeg(500, 500).split(b"\xff\xdb")[0] + b"\xff\xdb\x00\x43",  # DQT declared, file ends
], ids=["png-signature-only", "png-chunk-length-only", "jpeg-soi-only", "jpeg-half-marker",
        "jpeg-half-length", "jpeg-in-app", "jpeg-dqt-cut"])
def test_truncated_images_fail(tmp_path, data):
    path = write(tmp_path, "cut.img", data)
    err = preflight_error(check_image, str(path))
    assert str(path) in err.message


def test_jpeg_cut_inside_the_frame_header(tmp_path):
    data = make_jpeg(500, 500, exif=False)
    sof = data.index(b"\xff\xc0")
    for cut in range(sof + 2, sof + 4 + 15):  # in the length field, then in the 15-byte frame header
        path = write(tmp_path, "cut.jpg", data[:cut])
        err = preflight_error(check_image, str(path))
        assert str(path) in err.message and "ends too early" in err.message, cut


@pytest.mark.parametrize("cut", range(16, 24))
def test_png_cut_inside_the_ihdr_dimensions(tmp_path, cut):
    path = write(tmp_path, "cut.png", make_png(500, 500)[:cut])
    err = preflight_error(check_image, str(path))
    assert str(path) in err.message


@pytest.mark.parametrize("length", [2, 3, 4, 5, 6])
def test_jpeg_frame_header_too_short(tmp_path, length):
    data = b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", length) + b"\x08\x01\xf4\x01\xf4"[: length - 2] + b"\xff\xd9"
    path = write(tmp_path, "short.jpg", data)
    err = preflight_error(check_image, str(path))
    assert str(path) in err.message


def test_jpeg_frame_header_of_the_smallest_usable_length(tmp_path):
    # length 7: precision, height, width; enough for the dimensions
    data = b"\xff\xd8\xff\xc0\x00\x07\x08" + struct.pack(">HH", 600, 500) + b"\xff\xd9"
    info = probe_image(write(tmp_path, "x.jpg", data))
    assert (info.width, info.height) == (500, 600)


# --------------------------------------------------------------------------------------------------------------
# Videos: real samples
# --------------------------------------------------------------------------------------------------------------


def test_real_videos_are_probed():
    assert probe_video(MP4_2S) == media.VideoInfo("mp4", 2.0, MP4_2S.stat().st_size)
    assert probe_video(MOV_12S) == media.VideoInfo("mov", 12.0, MOV_12S.stat().st_size)
    assert probe_video(SAMPLE_MP4) == media.VideoInfo("mp4", 5.0, SAMPLE_MP4.stat().st_size)


def test_real_sample_passes_both_orientations():
    assert check_video(str(SAMPLE_MP4), "video").duration == 5.0
    assert check_video(str(SAMPLE_MP4), "image").duration == 5.0


def test_real_2s_video_is_too_short():
    for orientation in ("video", "image"):
        err = preflight_error(check_video, str(MP4_2S), orientation)
        assert str(MP4_2S) in err.message and "lasts 2 s" in err.message and "at least 3 s" in err.message


def test_real_12s_video_passes_with_video_orientation_only():
    assert check_video(str(MOV_12S), "video").duration == 12.0
    err = preflight_error(check_video, str(MOV_12S), "image")
    assert str(MOV_12S) in err.message and "lasts 12 s" in err.message
    assert "--orientation image the limit is 10 s" in err.message
    assert "--orientation video" in err.hint


# --------------------------------------------------------------------------------------------------------------
# Videos: box structures
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
def test_mvhd_version_0_and_1(tmp_path, version):
    path = write(tmp_path, "v.mp4", make_mp4(timescale=90000, duration=90000 * 7 + 45000, version=version))
    assert probe_video(path) == media.VideoInfo("mp4", 7.5, path.stat().st_size)


def test_mvhd_version_1_with_a_64_bit_duration(tmp_path):
    # 5 * 2**31 ticks does not fit in 32 bits; at a timescale of 2**31 it is 5.0 s
    path = write(tmp_path, "v.mp4", make_mp4(timescale=2**31, duration=5 * 2**31, version=1))
    assert probe_video(path).duration == 5.0


def test_quicktime_brand_is_mov_and_other_brands_are_mp4(tmp_path):
    assert probe_video(write(tmp_path, "a.mp4", make_mp4(brand=b"qt  "))).format == "mov"
    assert probe_video(write(tmp_path, "b.mov", make_mp4(brand=b"mp42"))).format == "mp4"
    assert probe_video(write(tmp_path, "c.mp4", make_mp4(brand=b"M4V "))).format == "mp4"


def test_old_quicktime_without_ftyp(tmp_path):
    for lead in (b"", box(b"wide"), box(b"free", bytes(4)), box(b"skip"), mdat()):
        path = write(tmp_path, "old.mov", lead + moov(4.0))
        assert probe_video(path) == media.VideoInfo("mov", 4.0, path.stat().st_size)


def test_mvhd_found_among_other_moov_children(tmp_path):
    before = box(b"iods", bytes(16)) + box(b"udta", box(b"meta", bytes(30)))
    path = write(tmp_path, "v.mp4", ftyp() + box(b"free") + box(b"wide") + moov(6.0, before_mvhd=before))
    assert probe_video(path).duration == 6.0


def test_moov_without_mvhd(tmp_path):
    path = write(tmp_path, "v.mp4", ftyp() + box(b"moov", box(b"trak", bytes(20))) + mdat())
    err = preflight_error(check_video, str(path), "video")
    assert str(path) in err.message and "no movie header (mvhd)" in err.message


def test_zero_timescale(tmp_path):
    path = write(tmp_path, "v.mp4", make_mp4(timescale=0, duration=5000))
    err = preflight_error(check_video, str(path), "video")
    assert str(path) in err.message and "zero timescale" in err.message


@pytest.mark.parametrize("where", ["mdat", "moov", "ftyp", "all"])
def test_largesize_boxes(tmp_path, where):
    data = (box(b"ftyp", b"isom" + bytes(4) + b"isom", large=where in ("ftyp", "all"))
            + mdat(bytes(100), large=where in ("mdat", "all"))
            + moov(8.0, large=where in ("moov", "all")))
    path = write(tmp_path, "v.mp4", data)
    assert probe_video(path) == media.VideoInfo("mp4", 8.0, len(data))


def test_size_0_box_runs_to_the_end_of_the_file(tmp_path):
    trailing_mdat = write(tmp_path, "a.mp4", ftyp() + moov(4.0) + mdat(bytes(500), to_eof=True))
    assert probe_video(trailing_mdat).duration == 4.0
    trailing_moov = write(tmp_path, "b.mp4", ftyp() + mdat() + moov(4.0, to_eof=True))
    assert probe_video(trailing_moov).duration == 4.0


def test_a_size_0_mdat_hides_everything_after_it(tmp_path):
    # size 0 means "this box runs to the end of the file": a moov after it is part of the mdat
    path = write(tmp_path, "v.mp4", ftyp() + mdat(bytes(50), to_eof=True) + moov(4.0))
    err = preflight_error(check_video, str(path), "video")
    assert str(path) in err.message and "no movie header (moov box)" in err.message


@pytest.mark.parametrize("data", [
    ftyp() + struct.pack(">I4s", 7, b"free") + moov(),              # box smaller than its header
    ftyp() + struct.pack(">I4sQ", 1, b"mdat", 15) + moov(),        # largesize smaller than its header
    struct.pack(">I4s", 4, b"ftyp") + bytes(20),
], ids=["size-7", "largesize-15", "ftyp-size-4"])
def test_broken_box_structure(tmp_path, data):
    path = write(tmp_path, "v.mp4", data)
    err = preflight_error(check_video, str(path), "video")
    assert str(path) in err.message and "box structure is broken" in err.message


# --------------------------------------------------------------------------------------------------------------
# Videos: duration limits
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timescale,duration,orientation", [
    (1000, 3000, "video"), (1000, 3000, "image"), (600, 1800, "image"),
    (1000, 10000, "image"), (1000, 10000, "video"), (1000, 10001, "video"),
    (1000, 30000, "video"), (90000, 2_700_000, "video"), (44100, 132300, "image"),
])
def test_durations_at_and_inside_the_limits_pass(tmp_path, timescale, duration, orientation):
    path = write(tmp_path, "v.mp4", make_mp4(timescale=timescale, duration=duration))
    assert check_video(str(path), orientation).duration == duration / timescale


@pytest.mark.parametrize("timescale,duration", [(1000, 2999), (90000, 269_999), (1, 2), (1000, 0)])
@pytest.mark.parametrize("orientation", ["video", "image"])
def test_under_3_seconds_fails(tmp_path, timescale, duration, orientation):
    path = write(tmp_path, "v.mp4", make_mp4(timescale=timescale, duration=duration))
    err = preflight_error(check_video, str(path), orientation)
    assert str(path) in err.message and "at least 3 s" in err.message


@pytest.mark.parametrize("timescale,duration", [(1000, 30001), (90000, 2_700_001), (1, 31), (1, 3600)])
def test_over_30_seconds_fails_with_video_orientation(tmp_path, timescale, duration):
    path = write(tmp_path, "v.mp4", make_mp4(timescale=timescale, duration=duration))
    err = preflight_error(check_video, str(path), "video")
    assert str(path) in err.message and "--orientation video the limit is 30 s" in err.message
    assert err.hint == "trim the clip"


@pytest.mark.parametrize("timescale,duration", [(1000, 10001), (90000, 900_001), (1, 11), (1000, 30000)])
def test_over_10_seconds_fails_with_image_orientation(tmp_path, timescale, duration):
    path = write(tmp_path, "v.mp4", make_mp4(timescale=timescale, duration=duration))
    err = preflight_error(check_video, str(path), "image")
    assert str(path) in err.message and "--orientation image the limit is 10 s" in err.message
    assert "--orientation video" in err.hint and "30 s" in err.hint


# --------------------------------------------------------------------------------------------------------------
# Videos: size limit, mdat skipped, faststart off
# --------------------------------------------------------------------------------------------------------------


def _faststart_of_total_size(path: Path, total: int, seconds: float = 5.0) -> Path:
    head = ftyp() + moov(seconds)
    return write_sparse(path, head + mdat_header(total - len(head)), total)


def test_a_video_of_exactly_100_mib_passes(tmp_path):
    path = _faststart_of_total_size(tmp_path / "big.mp4", VIDEO_MAX_BYTES)
    info = check_video(str(path), "video")
    assert (info.size, info.duration) == (VIDEO_MAX_BYTES, 5.0)


def test_a_video_one_byte_over_100_mib_fails(tmp_path):
    path = _faststart_of_total_size(tmp_path / "big.mp4", VIDEO_MAX_BYTES + 1)
    assert probe_video(path).size == VIDEO_MAX_BYTES + 1
    err = preflight_error(check_video, str(path), "video")
    assert str(path) in err.message and "the limit is 100 MB" in err.message


@pytest.mark.parametrize("large", [False, True], ids=["32-bit-mdat", "largesize-mdat"])
def test_moov_after_a_large_mdat_is_found_without_reading_the_mdat(tmp_path, large):
    mdat_size = 60 * MiB
    head = ftyp() + mdat_header(mdat_size, large=large)
    tail = moov(7.0)
    path = write_sparse(tmp_path / "late.mp4", head, len(ftyp()) + mdat_size + len(tail), tail)
    counting = CountingPath(path)
    assert probe_video(counting) == media.VideoInfo("mp4", 7.0, path.stat().st_size)
    assert sum(counting.reads) < 1024, counting.reads
    assert check_video(str(path), "image").duration == 7.0


def test_largesize_mdat_beyond_4_gib(tmp_path):
    probe = write_sparse(tmp_path / "probe", b"x", 64 * MiB)
    if probe.stat().st_blocks * 512 > MiB:
        pytest.skip("this file system has no sparse files")
    probe.unlink()
    mdat_size = 5 * 1024 * MiB
    tail = moov(9.0)
    path = write_sparse(tmp_path / "huge.mov", ftyp(b"qt  ") + mdat_header(mdat_size, large=True),
                        len(ftyp()) + mdat_size + len(tail), tail)
    counting = CountingPath(path)
    assert probe_video(counting) == media.VideoInfo("mov", 9.0, path.stat().st_size)
    assert sum(counting.reads) < 1024
    err = preflight_error(check_video, str(path), "video")
    assert "the limit is 100 MB" in err.message


def test_faststart_file_reads_only_its_head(tmp_path):
    path = _faststart_of_total_size(tmp_path / "fast.mp4", 50 * MiB)
    counting = CountingPath(path)
    assert probe_video(counting).duration == 5.0
    assert sum(counting.reads) < 1024


# --------------------------------------------------------------------------------------------------------------
# Videos: incomplete, truncated, content not name, missing, directories
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    ftyp() + mdat(bytes(1000)),
    ftyp() + box(b"free") + mdat_header(10 * MiB) + bytes(100),       # mdat declared larger than the file
    ftyp() + mdat_header(2**40, large=True) + bytes(100),
    ftyp(b"qt  ") + box(b"wide") + mdat(bytes(10)),
    ftyp(),
], ids=["ftyp-mdat", "mdat-cut", "largesize-mdat-cut", "qt-no-moov", "ftyp-only"])
def test_incomplete_video_without_moov(tmp_path, data):
    path = write(tmp_path, "rec.mp4", data)
    err = preflight_error(check_video, str(path), "video")
    assert str(path) in err.message and "no movie header (moov box)" in err.message
    assert "mp4" in err.hint and "mov" in err.hint


def _mvhd_offset(data: bytes) -> int:
    return data.index(b"mvhd") - 4


@pytest.mark.parametrize("path", [MP4_2S, MOV_12S, SAMPLE_MP4], ids=lambda p: p.name)
def test_real_videos_cut_before_the_end_of_mvhd_fail(tmp_path, path):
    data = path.read_bytes()
    mvhd_at = _mvhd_offset(data)
    cuts = {1, 4, 7, 8, 11, 12, 16, 20, mvhd_at - 8, mvhd_at - 1, mvhd_at, mvhd_at + 4, mvhd_at + 8,
            mvhd_at + 12, mvhd_at + 27}
    if data.index(b"moov") > data.index(b"mdat"):  # faststart off: a cut inside mdat leaves no moov
        cuts |= {data.index(b"mdat") + 100, mvhd_at - 200}
    for cut in sorted(cuts):
        target = write(tmp_path, path.name, data[:cut])
        err = preflight_error(check_video, str(target), "video")
        assert str(target) in err.message, cut


def test_the_format_is_judged_by_content_not_name(tmp_path):
    for name in ("clip.mov", "clip.txt", "clip"):
        assert check_video(str(write(tmp_path, name, SAMPLE_MP4.read_bytes())), "video").format == "mp4"
    assert check_video(str(write(tmp_path, "clip.mp4", MOV_12S.read_bytes())), "video").format == "mov"


@pytest.mark.parametrize("name,data", [
    ("notes.mp4", b"hello, this is text, not a video\n" * 4),
    ("short.mov", b"hi"),
    ("empty.mp4", b""),
    ("image.mp4", PNG_480.read_bytes()),
    ("photo.mov", JPG_400x600.read_bytes()),
    ("riff.mp4", b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(40)),
    ("box-but-not-mp4.mp4", box(b"abcd", bytes(20)) + moov()),
], ids=lambda v: v if isinstance(v, str) else None)
def test_non_videos_fail_whatever_their_name(tmp_path, name, data):
    path = write(tmp_path, name, data)
    err = preflight_error(check_video, str(path), "video")
    assert str(path) in err.message and "not an MP4 or MOV" in err.message


def test_missing_video(tmp_path):
    path = tmp_path / "nope.mp4"
    err = preflight_error(check_video, str(path), "video")
    assert err.message == f"video file not found: {path}"
    assert "URL" in err.hint


def test_directory_instead_of_a_video(tmp_path):
    folder = tmp_path / "clips.mp4"
    folder.mkdir()
    err = preflight_error(check_video, str(folder), "image")
    assert err.message == f"video is not a regular file: {folder}"


def test_symlink_to_a_video_is_followed(tmp_path):
    link = tmp_path / "link.mp4"
    link.symlink_to(SAMPLE_MP4)
    assert check_video(str(link), "video").duration == 5.0
    dangling = tmp_path / "dangling.mp4"
    dangling.symlink_to(tmp_path / "gone.mp4")
    assert "not found" in preflight_error(check_video, str(dangling), "video").message


# --------------------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------------------


def test_prompt_limits():
    check_prompt(None, 10)
    check_prompt("", 0)
    check_prompt("x" * 2500, 2500)
    err = preflight_error(check_prompt, "x" * 2501, 2500)
    assert err.message == "the prompt has 2501 characters; the limit is 2500"
    assert err.hint == "shorten the prompt"


def test_negative_prompt_is_named():
    err = preflight_error(check_prompt, "abcdef", 5, "negative prompt")
    assert err.message == "the negative prompt has 6 characters; the limit is 5"
    assert err.hint == "shorten the negative prompt"


def test_prompt_length_counts_characters_not_bytes():
    check_prompt("é" * 10, 10)
    check_prompt("🦊" * 10, 10)
    assert "11 characters" in preflight_error(check_prompt, "狐" * 11, 10).message


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.none(), st.text(max_size=60)), limit=st.integers(0, 60))
def test_prompt_fails_exactly_when_longer_than_the_limit(text, limit):
    if text is not None and len(text) > limit:
        assert f"has {len(text)} characters; the limit is {limit}" in preflight_error(check_prompt, text, limit).message
    else:
        check_prompt(text, limit)


# --------------------------------------------------------------------------------------------------------------
# Properties: the limits against exact arithmetic
# --------------------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
sides = st.one_of(st.integers(1, 2500), st.sampled_from([299, 300, 301, 749, 750, 751, 1000, 2500]))


@FUZZ
@given(width=sides, height=sides, kind=st.sampled_from(["png", "jpeg-sof0", "jpeg-sof2"]))
def test_image_accepted_exactly_within_the_limits(tmp_path, width, height, kind):
    data = make_png(width, height) if kind == "png" else make_jpeg(width, height, sof=0xC0 if kind == "jpeg-sof0" else 0xC2)
    path = write(tmp_path, "img", data)
    ok = min(width, height) >= 300 and Fraction(2, 5) <= Fraction(width, height) <= Fraction(5, 2)
    if ok:
        info, encoded = check_image(str(path))
        assert (info.width, info.height) == (width, height)
        assert base64.b64decode(encoded) == data
    else:
        assert str(path) in preflight_error(check_image, str(path)).message


@st.composite
def durations(draw):
    timescale = draw(st.one_of(st.sampled_from([1, 24, 25, 600, 1000, 44100, 90000]), st.integers(1, 2**32 - 1)))
    seconds = draw(st.one_of(st.sampled_from([0, 2, 3, 9, 10, 11, 29, 30, 31]), st.integers(0, 40)))
    delta = draw(st.integers(-3, 3))
    duration = min(max(0, seconds * timescale + delta), 2**32 - 1)
    return timescale, duration


@FUZZ
@given(td=durations(), version=st.sampled_from([0, 1]), orientation=st.sampled_from(["video", "image"]),
       faststart=st.booleans())
def test_video_accepted_exactly_within_the_limits(tmp_path, td, version, orientation, faststart):
    timescale, duration = td
    path = write(tmp_path, "v.mp4", make_mp4(timescale=timescale, duration=duration, version=version,
                                             faststart=faststart))
    exact = Fraction(duration, timescale)
    limit = {"video": 30, "image": 10}[orientation]
    if 3 <= exact <= limit:
        assert check_video(str(path), orientation).duration == duration / timescale
    else:
        assert str(path) in preflight_error(check_video, str(path), orientation).message


# --------------------------------------------------------------------------------------------------------------
# Properties: arbitrary and mangled bytes never crash or hang the probes
# --------------------------------------------------------------------------------------------------------------

_BOX_TYPES = {b"ftyp", b"moov", b"mvhd", b"mdat", b"free", b"wide", b"skip", b"trak", b"udta", b"iods", b"tkhd"}


def _hot_positions(data: bytes) -> list[int]:
    """Offsets of size fields: MP4 box sizes, JPEG segment lengths, PNG chunk lengths and IHDR dimensions."""
    hot = [i for i in range(len(data) - 7) if data[i + 4:i + 8] in _BOX_TYPES]
    hot += [i + 2 for i in range(min(len(data), 4096) - 1) if data[i] == 0xFF and data[i + 1] not in (0, 0xFF)]
    hot += [8, 16, 20] if data.startswith(PNG_SIGNATURE) else []
    return sorted(set(hot)) or [0]


_SEEDS = [
    JPG_400x600.read_bytes(), PNG_480.read_bytes(), PNG_200.read_bytes(),
    make_png(400, 400), make_jpeg(500, 400), make_jpeg(400, 500, sof=0xC2, before_sof=b"\xff\xff\xff\x01"),
    MP4_2S.read_bytes(), MOV_12S.read_bytes(), SAMPLE_MP4.read_bytes()[:6000],
    make_mp4(5.0), make_mp4(12.0, faststart=False, version=1, brand=b"qt  "),
    ftyp() + mdat(bytes(40), large=True) + moov(4.0, large=True),
    ftyp() + moov(4.0, before_mvhd=box(b"udta", bytes(8))) + mdat(bytes(20), to_eof=True),
]
_SEEDS = [(seed, _hot_positions(seed)) for seed in _SEEDS]
_INTERESTING = [0, 1, 2, 6, 7, 8, 15, 16, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]


@st.composite
def mangled(draw):
    seed, hot = draw(st.sampled_from(_SEEDS))
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            at = draw(st.sampled_from(hot))
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.one_of(st.sampled_from(_INTERESTING), st.integers(0, 2**64 - 1))) % (256**width)
            data[at:at + width] = value.to_bytes(width, "big")
        elif data:
            at = draw(st.one_of(st.integers(0, min(len(data), 64) - 1), st.integers(0, len(data) - 1)))
            data[at] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))
    return bytes(data[:cut])


any_bytes = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from([PNG_SIGNATURE, b"\xff\xd8", b"\xff\xd8\xff", ftyp(), b"\x00\x00\x00\x01mdat",
                               b"\x00\x00\x00\x00moov", b"\x00\x00\x00\x10moov"]),
              st.binary(max_size=120)).map(b"".join),
    mangled(),
)


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _only_expected(call, data: bytes, allowed: tuple[type[BaseException], ...]):
    try:
        with time_limit(5):
            return call()
    except allowed:
        return None


@FUZZ
@example(data=b"")
@example(data=PNG_SIGNATURE + b"\x00\x00\x00\x0dIHDR\x00\x00")
@example(data=b"\xff\xd8\xff\xc0\x00\x02")
@given(data=any_bytes)
def test_probe_image_never_crashes_on_arbitrary_bytes(tmp_path, data):
    # probe_* signal "not media" with the private _NotMedia, which check_* turn into PreflightError
    path = write(tmp_path, "fuzz.img", data)
    info = _only_expected(lambda: probe_image(path), data, (media._NotMedia,))
    if info is not None:
        assert info.format in ("png", "jpeg") and info.size == len(data)


@FUZZ
@example(data=b"")
@example(data=b"\x00\x00\x00\x01moov\x00\x00\x00\x00\x00\x00\x00\x10")
@example(data=b"\x00\x00\x00\x00moov\x00\x00\x00\x01mvhd")
@given(data=any_bytes)
def test_probe_video_never_crashes_on_arbitrary_bytes(tmp_path, data):
    path = write(tmp_path, "fuzz.vid", data)
    info = _only_expected(lambda: probe_video(path), data, (media._NotMedia,))
    if info is not None:
        assert info.format in ("mp4", "mov") and info.size == len(data) and info.duration >= 0


@FUZZ
@given(data=any_bytes, orientation=st.sampled_from(["video", "image"]))
def test_checks_return_or_raise_preflight_error_on_arbitrary_bytes(tmp_path, data, orientation):
    path = write(tmp_path, "fuzz.bin", data)
    result = _only_expected(lambda: check_image(str(path)), data, (PreflightError,))
    if result is not None:
        info, encoded = result
        assert base64.b64decode(encoded, validate=True) == data
        assert min(info.width, info.height) >= 300
    result = _only_expected(lambda: check_video(str(path), orientation), data, (PreflightError,))
    if result is not None:
        assert 3 <= result.duration <= {"video": 30, "image": 10}[orientation]
