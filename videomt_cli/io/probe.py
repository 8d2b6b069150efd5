"""What a video file or a folder of frame images holds, read without decoding it all: ``probe``
and the rows of ``videomt info``. No torch (DESIGN 5).

- Sizes are *displayed* sizes: rotation metadata is applied, so a portrait phone video (coded
  1920x1080, rotation 90) probes as 1080x1920.
- ``VideoInfo.rotation`` is the clockwise rotation (0/90/180/270) the player applies for display,
  the value of the legacy ``rotate`` tag phones write. FFmpeg keeps it as a display matrix, which
  PyAV 18 exposes on each decoded frame as ``VideoFrame.rotation`` (counter-clockwise degrees);
  ``probe`` decodes the first frame to read it. Flips in the display matrix are not applied.
- A folder of images (jpg, jpeg, png, bmp, webp; hidden files ignored) is a video whose frames are
  the files in natural order (``frame2`` before ``frame10``). It has no timing, so its rate is
  ``IMAGE_FOLDER_FPS`` (30) unless ``probe(path, fps=...)`` says otherwise; frame ``i`` gets pts
  ``i`` in a time base of ``1/fps``.
- ``num_frames`` is the container's count when its header has one; what decodes is the reader's
  :class:`~videomt_cli.records.Timeline` (``io.read.count_frames``), and that count is the
  video's: the header's can be more (an mp4 cut with stream copy counts the frames before its
  edit list's start) or wrong. ``info_lines`` with a timeline prints the decoded count.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path

import av

from videomt_cli.errors import InputError, VideoError
from videomt_cli.io.images import IMAGE_EXTENSIONS, image_names, load_image
from videomt_cli.records import Timeline, VideoInfo

IMAGE_FOLDER_FPS = Fraction(30)
MAX_BAD_PACKETS = 100  # consecutive packets that fail to decode before we give up on a file


def probe(path: str | os.PathLike, fps: Fraction | float | None = None) -> VideoInfo:
    """What a video file or a folder of frame images holds, read without decoding it all.

    ``fps`` sets the rate of an image folder (default ``IMAGE_FOLDER_FPS``); videos keep their own.
    Raises ``VideoError`` with what to do for a missing path, an empty or unreadable file, a file
    with no video stream, or a folder without images.
    """
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p} does not exist: check the path (a video file or a folder of frame images).")
    if p.is_dir():
        return _probe_folder(p, fps)
    if p.stat().st_size == 0:
        raise VideoError(f"{p} is empty (0 bytes): the copy or download did not finish; get the file again.")
    with _open_input(p) as container:
        stream = _video_stream(container, p)
        return _probe_stream(p, container, stream)


def _open_input(p: Path):
    try:
        return av.open(str(p), "r")
    except av.FFmpegError as e:
        hint = ""
        if p.suffix.lower() in (".mp4", ".mov", ".m4v", ".3gp"):
            hint = " An mp4/mov cut before its index (moov atom) cannot be opened either: get the whole file again."
        raise VideoError(
            f"{p} is not a video PyAV/FFmpeg can read ({_ffmpeg_reason(e)}): pass a video file (mp4, mov, "
            f"mkv, webm, avi) or a folder of frame images.{hint}"
        ) from None


def _ffmpeg_reason(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return str(text).strip().rstrip(".") or type(e).__name__


def _video_stream(container, p: Path):
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue  # cover art of an audio file, not a video
        if stream.codec_context is None:
            raise VideoError(f"{p}: this FFmpeg build cannot decode its video codec; convert it to H.264 first.")
        return stream
    kinds = sorted({s.type for s in container.streams}) or ["no streams"]
    raise VideoError(
        f"{p} has no video stream (it holds: {', '.join(kinds)}): pass a video file, not an audio file."
    )


def _parse_duration_tag(text: str | None) -> float | None:
    """The Matroska per-track ``DURATION`` tag ("HH:MM:SS.nnnnnnnnn") in seconds."""
    if not text:
        return None
    m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", text.strip())
    if not m:
        return None
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def _stream_duration(container, stream) -> tuple[float | None, bool]:
    """(seconds, whether it is the video stream's own duration rather than the container's)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base), True
    tag = _parse_duration_tag(stream.metadata.get("DURATION") or stream.metadata.get("duration"))
    if tag is not None:
        return tag, True
    if container.duration:
        return container.duration / av.time_base, False
    return None, False


def _probe_stream(p: Path, container, stream) -> VideoInfo:
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = Fraction(fps) if fps else None
    duration, _ = _stream_duration(container, stream)
    first = _first_frame(container, stream, p)
    ccw = first.rotation or 0
    if not ccw and stream.metadata.get("rotate"):  # legacy tag, if a demuxer still reports it
        try:
            ccw = -int(float(stream.metadata["rotate"]))
        except ValueError:
            ccw = 0
    rotation = (-round(ccw / 90) * 90) % 360
    width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width
    warnings = []
    if ccw % 90:
        warnings.append(f"rotation of {-ccw} degrees rounded to {rotation}.")
    return VideoInfo(
        path=str(p),
        width=width,
        height=height,
        fps=fps,
        num_frames=stream.frames or None,
        duration=duration,
        codec=stream.codec_context.name,
        rotation=rotation,
        has_audio=len(container.streams.audio) > 0,
        time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, 1000),
        warnings=tuple(warnings),
    )


def _first_frame(container, stream, p: Path):
    bad = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                bad += 1
                if bad > MAX_BAD_PACKETS:
                    break
                continue
            if frames:
                return frames[0]
    except av.FFmpegError:
        pass
    raise VideoError(
        f"no frame of {p} could be decoded: the file is damaged or cut short; get it again or re-encode it."
    )


def _probe_folder(p: Path, fps) -> VideoInfo:
    names = image_names(p)
    if not names:
        raise VideoError(
            f"{p} is a folder with no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}): pass a folder of "
            f"frame images or a video file."
        )
    rate = Fraction(fps).limit_denominator(1_000_000) if fps else IMAGE_FOLDER_FPS
    if rate <= 0:
        raise InputError(f"fps must be positive, got {fps}.")
    first = load_image(p / names[0])
    return VideoInfo(
        path=str(p),
        width=first.shape[1],
        height=first.shape[0],
        fps=rate,
        num_frames=len(names),
        duration=float(len(names) / rate),
        codec=Path(names[0]).suffix.lower().lstrip(".").replace("jpg", "jpeg"),
        kind="folder",
        time_base=1 / rate,
        file_names=tuple(names),
    )


# ----------------------------------------------------------------------------- info


def _fps_text(fps: Fraction | None) -> str:
    if not fps:
        return "unknown"
    if fps.denominator == 1:
        return f"{fps.numerator}"
    return f"{fps.numerator}/{fps.denominator} ({float(fps):.3f})"


def info_lines(info: VideoInfo, timeline: Timeline | None = None) -> list[tuple[str, str]]:
    """(label, value) rows for ``videomt info VIDEO``; with the ``timeline`` of a whole read
    (``io.read.count_frames``), the decoded frame count (and the header's where it differs) and
    what reading found."""
    rows = [("path", info.path)]
    if info.is_image_folder:
        rows.append(("source", f"folder of {len(info.file_names)} {info.codec} images"))
    turned = " (displayed, after rotation)" if info.rotation in (90, 270) else ""
    rows.append(("size", f"{info.width}x{info.height}{turned}"))
    rows.append(("frames", str(info.num_frames) if info.num_frames is not None else "unknown until decoded"))
    fps = _fps_text(info.fps)
    if info.is_image_folder:
        fps += " (image folder: no timing, assumed)" if info.fps == IMAGE_FOLDER_FPS else " (image folder)"
    rows.append(("fps", fps))
    rows.append(("duration", f"{info.duration:.3f} s" if info.duration is not None else "unknown"))
    if not info.is_image_folder:
        rows.append(("codec", info.codec or "unknown"))
        rows.append(("rotation", f"{info.rotation} degrees clockwise" if info.rotation else "none"))
        rows.append(("audio", "yes" if info.has_audio else "no"))
        if info.time_base:
            rows.append(("time base", str(info.time_base)))
    if timeline is not None:
        frames = str(timeline.num_frames)
        if info.num_frames is not None and info.num_frames != timeline.num_frames and not info.is_image_folder:
            frames += f" decoded (the header says {info.num_frames})"
        rows = [(k, frames if k == "frames" else v) for k, v in rows]
        if timeline.truncated:
            rows.append(("truncated", "yes"))
    for w in info.warnings + (timeline.warnings if timeline is not None else ()):
        rows.append(("warning", w))
    return rows
