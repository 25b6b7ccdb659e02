"""Preflight checks on local media, read from the files themselves, before any credit is spent.

Limits are the official motion-control ones (kling-official-cometapi.md §1.6): image jpg/jpeg/png, at most
10 MB, 300 px per side at least, aspect ratio between 1:2.5 and 2.5:1; video mp4/mov, at most 100 MB,
3 s at least, at most 30 s (10 s when the character keeps the image's orientation).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kling_cli.errors import PreflightError

IMAGE_MAX_BYTES = 10 * 1024 * 1024
IMAGE_MIN_SIDE = 300
IMAGE_MAX_SIDE = 65536
IMAGE_MAX_RATIO = 2.5
VIDEO_MAX_BYTES = 100 * 1024 * 1024
VIDEO_MIN_SECONDS = 3.0
VIDEO_MAX_SECONDS = {"video": 30.0, "image": 10.0}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass
class ImageInfo:
    format: str
    width: int
    height: int
    size: int


@dataclass
class VideoInfo:
    format: str
    duration: float
    size: int


class _NotMedia(Exception):
    pass


def _read_exact(handle: BinaryIO, count: int) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise _NotMedia("the file ends too early")
    return data


def probe_image(path: Path) -> ImageInfo:
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(32)
        if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
            if len(head) < 24:
                raise _NotMedia("the file ends too early")
            width, height = struct.unpack(">II", head[16:24])
            return ImageInfo("png", width, height, size)
        if head.startswith(b"\xff\xd8"):
            handle.seek(2)
            return ImageInfo("jpeg", *_jpeg_dimensions(handle), size)
    raise _NotMedia("it is not a JPEG or PNG image (judged by its content, not its name)")


def _jpeg_dimensions(handle: BinaryIO) -> tuple[int, int]:
    while True:
        byte = _read_exact(handle, 1)
        if byte != b"\xff":
            raise _NotMedia("the JPEG structure is broken")
        marker = _read_exact(handle, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _read_exact(handle, 1)[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        if marker == 0xD9:
            raise _NotMedia("the JPEG has no frame header")
        (length,) = struct.unpack(">H", _read_exact(handle, 2))
        if length < 2:
            raise _NotMedia("the JPEG structure is broken")
        if marker in _JPEG_SOF:
            if length < 7:  # precision byte + height + width
                raise _NotMedia("the JPEG frame header is broken")
            segment = _read_exact(handle, length - 2)
            height, width = struct.unpack(">HH", segment[1:5])
            return width, height
        handle.seek(length - 2, 1)


def probe_video(path: Path) -> VideoInfo:
    """Duration from the movie header (moov/mvhd) of an MP4 or QuickTime file; `mdat` is skipped, not read."""
    size = path.stat().st_size
    fmt = None
    with path.open("rb") as handle:
        offset = 0
        while offset < size:
            handle.seek(offset)
            header = handle.read(8)
            if len(header) < 8:
                break
            box_size, box_type = struct.unpack(">I4s", header)
            header_len = 8
            if box_size == 1:
                box_size = struct.unpack(">Q", _read_exact(handle, 8))[0]
                header_len = 16
            elif box_size == 0:
                box_size = size - offset
            if box_size < header_len:
                raise _NotMedia("the MP4 box structure is broken")
            if offset == 0 and box_type not in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
                break
            if box_type == b"ftyp":
                brand = _read_exact(handle, 4)
                fmt = "mov" if brand == b"qt  " else "mp4"
            elif box_type == b"moov":
                if offset + box_size > size:
                    raise _NotMedia("its movie header (moov box) is cut short: the file is incomplete")
                duration = _mvhd_duration(handle, offset + header_len, offset + box_size)
                return VideoInfo(fmt or "mov", duration, size)
            offset += box_size
    if fmt:
        raise _NotMedia("it has no movie header (moov box): the file is incomplete or not a finished video")
    raise _NotMedia("it is not an MP4 or MOV video (judged by its content, not its name)")


def _mvhd_duration(handle: BinaryIO, start: int, end: int) -> float:
    offset = start
    while offset + 8 <= end:
        handle.seek(offset)
        box_size, box_type = struct.unpack(">I4s", _read_exact(handle, 8))
        if box_size < 8:
            break
        if box_type == b"mvhd":
            version = _read_exact(handle, 4)[0]
            if version == 1:
                _created, _modified, timescale, duration = struct.unpack(">QQIQ", _read_exact(handle, 28))
            else:
                _created, _modified, timescale, duration = struct.unpack(">IIII", _read_exact(handle, 16))
            if timescale == 0:
                raise _NotMedia("its movie header has a zero timescale")
            return duration / timescale
        offset += box_size
    raise _NotMedia("its moov box has no movie header (mvhd)")


_EXTS = {"jpeg": "jpg", "png": "png", "mp4": "mp4", "mov": "mov"}


def content_ext(path: Path) -> str:
    """The extension a file's content calls for (jpg, png, mp4, mov), else its own suffix: what an uploader
    names it by, whatever the local name says."""
    for probe in (probe_image, probe_video):
        try:
            return _EXTS[probe(path).format]
        except (_NotMedia, OSError):
            continue
    return path.suffix.lstrip(".").lower() or "bin"


def local_path(path_text: str) -> Path:
    """The file a media value names, the same for preflight and the upload that follows it."""
    try:
        return Path(path_text).expanduser()
    except RuntimeError:  # "~someone" for a user that does not exist: a folder of that name
        return Path(path_text)


def _open_checked(path_text: str, what: str) -> Path:
    path = local_path(path_text)
    if not path.exists():
        raise PreflightError(f"{what} file not found: {path}", hint="give an existing file or an http(s) URL")
    if not path.is_file():
        raise PreflightError(f"{what} is not a regular file: {path}")
    return path


def check_image(path_text: str, *, with_base64: bool = True) -> tuple[ImageInfo, str | None]:
    """Validate a local image and return it with its raw base64 (no `data:` prefix, as Kling requires)."""
    path = _open_checked(path_text, "image")
    try:
        info = probe_image(path)
    except _NotMedia as exc:
        raise PreflightError(f"image {path}: {exc}", hint="use a .jpg, .jpeg or .png image") from None
    except OSError as exc:
        raise PreflightError(f"cannot read image {path}: {exc.strerror}") from None
    if info.size > IMAGE_MAX_BYTES:
        raise PreflightError(f"image {path} is {_megabytes(info.size)}; the limit is 10 MB ({IMAGE_MAX_BYTES} bytes)")
    if min(info.width, info.height) < IMAGE_MIN_SIDE:
        raise PreflightError(
            f"image {path} is {info.width}x{info.height} px; each side must be at least {IMAGE_MIN_SIDE} px"
        )
    if max(info.width, info.height) > IMAGE_MAX_SIDE:
        raise PreflightError(f"image {path} is {info.width}x{info.height} px; sides are limited to 65536 px")
    ratio = info.width / info.height
    if not 1 / IMAGE_MAX_RATIO <= ratio <= IMAGE_MAX_RATIO:
        raise PreflightError(
            f"image {path} is {info.width}x{info.height} px (aspect {ratio:.2f}); "
            "the aspect ratio must be between 1:2.5 and 2.5:1"
        )
    return info, base64.b64encode(path.read_bytes()).decode("ascii") if with_base64 else None


def check_video(path_text: str, orientation: str) -> VideoInfo:
    path = _open_checked(path_text, "video")
    try:
        info = probe_video(path)
    except _NotMedia as exc:
        raise PreflightError(f"video {path}: {exc}", hint="use an .mp4 or .mov video") from None
    except OSError as exc:
        raise PreflightError(f"cannot read video {path}: {exc.strerror}") from None
    if info.size > VIDEO_MAX_BYTES:
        raise PreflightError(f"video {path} is {_megabytes(info.size)}; the limit is 100 MB ({VIDEO_MAX_BYTES} bytes)")
    if info.duration < VIDEO_MIN_SECONDS:
        raise PreflightError(f"video {path} lasts {_seconds(info.duration)}; the reference video must last at least 3 s")
    limit = VIDEO_MAX_SECONDS[orientation]
    if info.duration > limit:
        hint = "use --orientation video (up to 30 s) or trim the clip" if orientation == "image" else "trim the clip"
        raise PreflightError(
            f"video {path} lasts {_seconds(info.duration)}; with --orientation {orientation} the limit is {limit:g} s",
            hint=hint,
        )
    return info


def _megabytes(size: int) -> str:
    # Kling's "10MB" is taken as MiB, so the figures are shown in the same unit as the limit.
    return f"{size / 2**20:.2f} MB ({size} bytes)"


def _seconds(duration: float) -> str:
    text = f"{duration:.3f}".rstrip("0").rstrip(".")
    return f"{text} s"


def check_prompt(text: str | None, limit: int, what: str = "prompt", where: str = "") -> None:
    if text is not None and len(text) > limit:
        raise PreflightError(f"the {what} has {len(text)} characters; the limit{where} is {limit}",
                             hint=f"shorten the {what}")
