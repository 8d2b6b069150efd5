"""Synthesize small test videos and frame folders with PyAV (no files in the repository).

Every frame has content a test can check after a lossy round trip:
- a horizontal/vertical colour gradient as background,
- a red square fixed in the top-left corner of the *coded* picture (a rotation marker),
- a green and a blue square moving with the frame index.

``frame_image(i, width, height)`` returns the exact RGB picture of frame ``i`` that was encoded,
so a decoded frame can be compared to it with a tolerance. Import as ``from media import ...``
(pytest puts ``tests/`` on ``sys.path``).

Rotation convention (the same as ``VideoInfo.rotation``): degrees to rotate the coded picture
*clockwise* for display, as in the legacy ``rotate`` tag phones write. A portrait phone video is a
landscape coded picture with ``rotation=90``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

MARKER = (255, 0, 0)  # the fixed square in the coded top-left corner
_DEFAULT_CODEC = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}
_AUDIO_CODEC = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".avi": "pcm_s16le", ".webm": "libopus"}


def marker_size(width: int, height: int) -> int:
    return max(4, min(width, height) // 5)


def frame_image(i: int, width: int, height: int) -> np.ndarray:
    """The RGB (height, width, 3) uint8 picture of frame ``i`` (coded orientation)."""
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (40 + 60 * xs + 0 * ys).astype(np.uint8)
    img[..., 1] = (40 + 60 * ys + 0 * xs).astype(np.uint8)
    img[..., 2] = (120 + 0 * xs + 0 * ys).astype(np.uint8)
    m = marker_size(width, height)
    img[:m, :m] = MARKER
    s = max(3, min(width, height) // 6)
    # Green square moves right, blue one moves down; both wrap inside the picture (off the marker).
    gx = m + (3 * i) % max(1, width - m - s)
    img[height - s - 1 : height - 1, gx : gx + s] = (0, 220, 0)
    by = m + (2 * i) % max(1, height - m - s)
    img[by : by + s, width - s - 1 : width - 1] = (0, 0, 230)
    return img


def vfr_pts(frames: int, time_base: Fraction = Fraction(1, 1000)) -> list[int]:
    """Irregular presentation times (in ``time_base`` units): steps of 40, 40, 120, 20, 80 ms..."""
    steps_ms = [40, 40, 120, 20, 80, 33]
    pts, t = [], 0
    for i in range(frames):
        pts.append(int(Fraction(t, 1000) / time_base))
        t += steps_ms[i % len(steps_ms)]
    return pts


def make_video(
    path,
    frames: int = 10,
    size: tuple[int, int] = (64, 48),
    fps: Fraction | int = Fraction(25),
    codec: str | None = None,
    rotation: int = 0,
    audio: bool = False,
    vfr: bool = False,
    pattern: str = "moving squares",
    pix_fmt: str | None = None,
    faststart: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a small video and return its path.

    ``size`` is the coded (width, height); with ``rotation`` 90/270 the displayed size is swapped.
    ``codec`` defaults by suffix (mp4/mov/mkv: libx264, avi: mpeg4, webm: libvpx-vp9).
    ``vfr=True`` gives the frames the irregular times of ``vfr_pts`` (time base 1/1000).
    ``audio=True`` adds a mono 440 Hz tone as long as the video (aac; opus in webm; pcm in avi).
    ``faststart=True`` puts the mp4/mov index (moov) first, as web videos have it, so a cut file
    still opens. ``options`` are extra encoder options (e.g. ``{"preset": "veryfast"}`` for B-frames).
    """
    if pattern != "moving squares":
        raise ValueError(f"unknown pattern {pattern!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    codec = codec or _DEFAULT_CODEC.get(suffix, "libx264")
    fps = Fraction(fps)
    width, height = size
    if pix_fmt is None:
        pix_fmt = "yuv420p" if (width % 2 == 0 and height % 2 == 0) or codec != "libx264" else "yuv444p"
    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height = width, height
        vs.pix_fmt = pix_fmt
        opts = {
            "libx264": {"preset": "ultrafast", "crf": "18"},
            "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"},
            "mpeg4": {"qscale": "3"},
        }.get(codec, {})
        vs.options = {**opts, **(options or {})}
        if vfr:
            tb = Fraction(1, 1000)
            vs.codec_context.time_base = tb
            vs.time_base = tb
            pts = vfr_pts(frames, tb)
        else:
            tb = 1 / fps
            vs.codec_context.time_base = tb
            pts = list(range(frames))
        if rotation % 360:
            # PyAV takes counter-clockwise degrees; ours are clockwise.
            vs.set_display_rotation(-(rotation % 360))
        astream = None
        if audio:
            astream = out.add_stream(_AUDIO_CODEC.get(suffix, "aac"), rate=48000)
            astream.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            frame.pts = pts[i]
            frame.time_base = tb
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
        if astream is not None:
            seconds = float(pts[-1] * tb + (Fraction(40, 1000) if vfr else 1 / fps))
            _write_tone(out, astream, seconds)
    return path


def _write_tone(out, astream, seconds: float, rate: int = 48000) -> None:
    n_total = int(seconds * rate)
    fmt = astream.codec_context.format.name if astream.codec_context.format else "fltp"
    frame_size = astream.codec_context.frame_size or 1024
    t0 = 0
    while t0 < n_total:
        n = min(frame_size, n_total - t0)
        t = (np.arange(t0, t0 + n) / rate).astype(np.float32)
        wave = 0.2 * np.sin(2 * np.pi * 440 * t)
        if fmt.startswith("s16"):
            data = (wave * 32767).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(data, format="s16" if fmt == "s16" else "s16p", layout="mono")
        else:
            frame = av.AudioFrame.from_ndarray(wave[None].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = t0
        frame.time_base = Fraction(1, rate)
        out.mux(astream.encode(frame))
        t0 += n
    out.mux(astream.encode())


def make_audio_only(path, seconds: float = 0.5) -> Path:
    """An .m4a/.mp4 file with one AAC audio stream and no video stream."""
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as out:
        astream = out.add_stream("aac", rate=48000)
        astream.layout = "mono"
        _write_tone(out, astream, seconds)
    return path


def make_image_folder(directory, n: int = 12, size: tuple[int, int] = (64, 48), ext: str = "png",
                      prefix: str = "frame_") -> Path:
    """Write ``prefix1.ext`` ... ``prefixN.ext`` (not zero-padded: natural sort matters)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    width, height = size
    for i in range(n):
        Image.fromarray(frame_image(i, width, height)).save(directory / f"{prefix}{i + 1}.{ext}")
    return directory


def truncate(src, dst, fraction: float) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a cut download)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


# ----------------------------------------------------------------------------- with the ffmpeg program
# (pip package imageio-ffmpeg, a test extra: ``pytest.importorskip("imageio_ffmpeg")`` first)


def ffmpeg(*args) -> str:
    """Run the real ffmpeg program (``-v error -y`` first); return its stderr. Raises on failure."""
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"ffmpeg {' '.join(map(str, args))} failed: {done.stderr.strip()[-500:]}")
    return done.stderr


def ffmpeg_frame_count(path, threads: int = 1) -> int:
    """How many frames the ffmpeg program decodes from ``path`` (single-threaded by default): the
    reference count a reader must match, damaged files included."""
    import re
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-threads", str(threads), "-i", str(path),
           "-map", "0:v:0", "-f", "null", "-"]
    err = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stderr
    counts = re.findall(r"frame=\s*(\d+)", err)
    if not counts:
        raise RuntimeError(f"ffmpeg decoded nothing from {path}: {err.strip()[-300:]}")
    return int(counts[-1])


def stream_copy_cut(src, dst, start: float, duration: float) -> Path:
    """``ffmpeg -ss START -i SRC -t DURATION -c copy DST``: an mp4 cut without re-encoding. Its edit
    list starts inside a GOP: the header counts the frames before the cut point (still needed to
    decode) that a player never shows."""
    ffmpeg("-ss", start, "-i", src, "-t", duration, "-c", "copy", dst)
    return Path(dst)


def remux(src, dst) -> Path:
    """The same packets in another container (``-c copy``), e.g. mkv, webm or MPEG-TS, whose headers
    hold no frame count; mkv and webm store 1 ms timestamps."""
    ffmpeg("-i", src, "-c", "copy", dst)
    return Path(dst)


def strip_ts_timestamps(src, dst, packets: int = 3) -> Path:
    """Copy an MPEG-TS file with the PTS/DTS removed from its first ``packets`` video PES headers
    (the fields replaced by stuffing bytes, a valid stream): frames whose decoder output has no
    timestamp, as at the start of some broadcast recordings. FFmpeg's muxers refuse to write such
    files, so the bytes are edited."""
    data = bytearray(Path(src).read_bytes())
    done = 0
    for off in range(0, len(data) - 187, 188):
        if done >= packets:
            break
        if data[off] != 0x47 or not data[off + 1] & 0x40:  # sync byte; payload unit start
            continue
        afc = (data[off + 3] >> 4) & 3
        pos = off + 4 + (1 + data[off + 4] if afc & 2 else 0)
        if not afc & 1 or data[pos:pos + 3] != b"\0\0\1" or not 0xE0 <= data[pos + 3] <= 0xEF:
            continue  # not the start of a video PES packet
        flags = data[pos + 7]
        if flags & 0x3F:
            raise ValueError("PES header with optional fields other than PTS/DTS")
        n = {0x80: 5, 0xC0: 10}.get(flags & 0xC0, 0)
        data[pos + 7] = flags & 0x3F
        data[pos + 9:pos + 9 + n] = b"\xff" * n
        done += 1
    if done < packets:
        raise ValueError(f"only {done} video PES packets in {src}")
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def damage(src, dst, at: float = 0.5, length: int = 400, seed: int = 0) -> Path:
    """Copy ``src`` with ``length`` bytes at fraction ``at`` of the file replaced by seeded noise:
    a file corrupt in the middle (the container's index intact)."""
    data = bytearray(Path(src).read_bytes())
    start = int(len(data) * at)
    data[start:start + length] = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(data))
    return Path(dst)
