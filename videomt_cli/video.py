"""Video in and out with PyAV: ``probe``, the ``read_frames`` generator, a read-ahead thread, and the
atomic ``VideoWriter`` for overlays. No torch here (DESIGN 5).

Conventions
-----------
- Sizes are *displayed* sizes: rotation metadata is applied to the pixels, so a portrait phone video
  (coded 1920x1080, rotation 90) reads as 1080x1920 frames.
- ``VideoInfo.rotation`` is the clockwise rotation (0/90/180/270) the player applies for display,
  the value of the legacy ``rotate`` tag phones write. FFmpeg keeps it as a display matrix, which
  PyAV 18 exposes on each decoded frame as ``VideoFrame.rotation`` (counter-clockwise degrees);
  ``probe`` decodes the first frame to read it. Flips in the display matrix are not applied.
- Frame times come from each frame's own ``pts * time_base`` (never ``index / fps``), counted from
  the video stream's start, so variable frame rate is kept exactly.
- A folder of images (jpg, jpeg, png, bmp, webp; hidden files ignored) is a video whose frames are
  the files in natural order (``frame2`` before ``frame10``). It has no timing, so its rate is
  ``IMAGE_FOLDER_FPS`` (30) unless ``probe(path, fps=...)`` says otherwise; frame ``i`` gets pts ``i``
  in a time base of ``1/fps``. EXIF orientation is applied to the pixels.
- Cut or corrupt files: ``read_frames`` yields every frame that decodes. A packet that fails to
  decode is skipped (later ones often decode again); a read error ends the video. When fewer frames
  came out than the container announced (or the last frame ends well before the stream's stated
  duration), ``info.truncated`` is set and ``info.warnings`` says where it stopped. A file that
  cannot be opened at all (an mp4 cut before its ``moov`` index) is a ``VideoError``.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from videomt_cli.errors import InputError, VideoError
from videomt_cli.records import VideoInfo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGE_FOLDER_FPS = Fraction(30)
# Output suffix -> default encoder. H.264 plays everywhere; webm only takes VP8/VP9/AV1.
_WRITE_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}
_MAX_BAD_PACKETS = 100  # consecutive packets that fail to decode before we give up on a file


@dataclass
class Frame:
    """One decoded frame.

    index: position in the whole video (0-based), whatever ``start``/``stride`` selected.
    time: seconds since the video stream's start, from the frame's own timestamp.
    pts: the source timestamp in ``VideoInfo.time_base`` units (what ``VideoWriter.write`` takes).
    image: (H, W, 3) uint8 RGB, displayed orientation (rotation applied), C-contiguous.
    """

    index: int
    time: float
    pts: int | None
    image: np.ndarray


# ----------------------------------------------------------------------------- probe


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``frame2`` < ``frame10``."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


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
    info = VideoInfo(
        path=str(p),
        width=width,
        height=height,
        fps=fps,
        num_frames=stream.frames or None,
        duration=duration,
        codec=stream.codec_context.name,
        rotation=rotation,
        has_audio=len(container.streams.audio) > 0,
        time_base=Fraction(stream.time_base) if stream.time_base else None,
    )
    if ccw % 90:
        info.warnings.append(f"rotation of {-ccw} degrees rounded to {rotation}.")
    return info


def _first_frame(container, stream, p: Path):
    bad = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                bad += 1
                if bad > _MAX_BAD_PACKETS:
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
    names = sorted(
        (f.name for f in p.iterdir()
         if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") and f.is_file()),
        key=natural_key,
    )
    if not names:
        raise VideoError(
            f"{p} is a folder with no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}): pass a folder of "
            f"frame images or a video file."
        )
    rate = Fraction(fps).limit_denominator(1_000_000) if fps else IMAGE_FOLDER_FPS
    if rate <= 0:
        raise InputError(f"fps must be positive, got {fps}.")
    first = _load_image(p / names[0])
    return VideoInfo(
        path=str(p),
        width=first.shape[1],
        height=first.shape[0],
        fps=rate,
        num_frames=len(names),
        duration=float(len(names) / rate),
        codec=Path(names[0]).suffix.lower().lstrip(".").replace("jpg", "jpeg"),
        is_image_folder=True,
        time_base=1 / rate,
        file_names=names,
    )


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise VideoError(f"cannot read image {path} ({e}): replace or remove that file.") from None


# ----------------------------------------------------------------------------- reading


def read_frames(
    source: str | os.PathLike | VideoInfo,
    start: int | None = None,
    end: int | None = None,
    stride: int = 1,
    count_rest: bool = True,
) -> Iterator[Frame]:
    """Yield the frames ``start, start + stride, ... < end`` (frame indices over the whole video).

    Pass a ``VideoInfo`` from ``probe`` to see what reading learns: its ``timestamps`` and ``pts``
    are rebuilt for every frame of the video (also the skipped ones), ``num_frames`` becomes the true
    count, ``truncated``/``warnings`` tell about a cut file. Frames before ``start`` and between
    strides are decoded (decoding needs them) but not converted to RGB, which is the real cost.
    After ``end`` the rest is only demuxed (no decoding) to count frames and read their timestamps,
    unless ``count_rest=False``. Argument errors raise at call time; the generator closes its file
    when closed or garbage collected.
    """
    info = source if isinstance(source, VideoInfo) else probe(source)
    start = 0 if start is None else int(start)
    if start < 0:
        raise InputError(f"start must be a frame index >= 0, got {start}.")
    if end is not None and int(end) < start:
        raise InputError(f"end ({end}) must not be before start ({start}).")
    if int(stride) < 1:
        raise InputError(f"stride must be >= 1, got {stride}.")
    end = None if end is None else int(end)
    stride = int(stride)
    info.timestamps = []
    info.pts = []
    info.truncated = False
    if info.is_image_folder:
        return _read_folder(info, start, end, stride)
    return _read_video(info, start, end, stride, count_rest)


def _wanted(i: int, start: int, end: int | None, stride: int) -> bool:
    return i >= start and (end is None or i < end) and (i - start) % stride == 0


def _read_folder(info: VideoInfo, start, end, stride) -> Iterator[Frame]:
    folder = Path(info.path)
    tb = info.time_base or 1 / (info.fps or IMAGE_FOLDER_FPS)
    for i, name in enumerate(info.file_names):
        t = float(i * tb)
        info.pts.append(i)
        info.timestamps.append(t)
        if _wanted(i, start, end, stride):
            image = _load_image(folder / name)
            if image.shape[:2] != (info.height, info.width):
                raise VideoError(
                    f"{folder / name} is {image.shape[1]}x{image.shape[0]} but the first frame is "
                    f"{info.width}x{info.height}: all frames of a folder must have one size."
                )
            yield Frame(i, t, i, image)
    info.num_frames = len(info.file_names)


def _rgb(frame, k: int) -> np.ndarray:
    image = frame.to_ndarray(format="rgb24")
    if k:
        image = np.ascontiguousarray(np.rot90(image, k))
    return image


def _read_video(info: VideoInfo, start, end, stride, count_rest) -> Iterator[Frame]:
    p = Path(info.path)
    if not p.exists():
        raise VideoError(f"{p} does not exist any more: check the path.")
    expected = info.num_frames
    k = (-info.rotation // 90) % 4  # np.rot90 turns counter-clockwise
    index = 0
    bad_packets = 0  # consecutive
    skipped = 0  # all packets that failed to decode
    first_skip: int | None = None  # frame index where the first one was
    decoded_after_skip = False  # a frame decoded after the last failed packet (damage mid-file)
    read_error: str | None = None
    ended_at_end = False
    tail = 0
    with _open_input(p) as container:
        stream = _video_stream(container, p)
        stream.codec_context.thread_type = "AUTO"
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1000)
        info.time_base = info.time_base or tb
        t0 = stream.start_time
        step = max(1, round(1 / (info.fps * tb))) if info.fps else 1
        last_pts: int | None = None

        def emit(frame):
            # Record the frame; return the Frame to yield when it is wanted, else None.
            nonlocal index, t0, last_pts
            pts = frame.pts
            if pts is None:  # some raw streams: continue from the previous frame at the nominal rate
                pts = 0 if last_pts is None else last_pts + step
            if t0 is None:
                t0 = pts
            last_pts = pts
            t = float((pts - t0) * tb)
            info.pts.append(pts)
            info.timestamps.append(t)
            i = index
            index += 1
            if _wanted(i, start, end, stride):
                return Frame(i, t, pts, _rgb(frame, k))
            return None

        packets = container.demux(stream)
        try:
            for packet in packets:
                try:
                    frames = packet.decode()
                    bad_packets = 0
                    if frames and skipped:
                        decoded_after_skip = True
                except av.FFmpegError as e:
                    bad_packets += 1
                    skipped += 1
                    decoded_after_skip = False
                    if first_skip is None:
                        first_skip = index
                    if bad_packets > _MAX_BAD_PACKETS:
                        read_error = f"too many undecodable packets ({_ffmpeg_reason(e)})"
                        break
                    continue
                for frame in frames:
                    out = emit(frame)
                    if out is not None:
                        yield out
                if end is not None and index >= end:
                    ended_at_end = True
                    tail = len(info.pts)  # records from here on are not yielded; sorted below
                    break
        except av.FFmpegError as e:
            read_error = _ffmpeg_reason(e)
        try:  # frames still inside the decoder (B-frames, frame threads); a no-op after a clean end
            for frame in stream.codec_context.decode(None):
                out = emit(frame)
                if out is not None:
                    yield out
        except av.FFmpegError:
            pass
        if ended_at_end and count_rest and not read_error:
            # Count the remaining frames from their packets, without decoding: one packet per frame.
            known, unknown = [], 0
            try:
                for packet in packets:
                    if packet.size == 0 or packet.is_discard:
                        continue
                    ts = packet.pts if packet.pts is not None else packet.dts
                    if ts is None:
                        unknown += 1
                    else:
                        known.append(ts)
            except av.FFmpegError as e:
                read_error = _ffmpeg_reason(e)
            # The frames flushed from the decoder and these packets share one presentation order
            # (a B-frame packet still unread may come before a flushed P-frame): sort them together.
            rest = sorted(info.pts[tail:] + known)
            for _ in range(unknown):
                rest.append((rest[-1] if rest else (last_pts or 0)) + step)
            index += len(rest) - len(info.pts[tail:])
            info.pts[tail:] = rest
            info.timestamps[tail:] = [float((ts - (t0 or 0)) * tb) for ts in rest]
        if ended_at_end and not count_rest:
            return  # num_frames stays the container's count
        duration, own = _stream_duration(container, stream)
        info.num_frames = index
        if skipped:
            _warn(
                info,
                f"{skipped} damaged packet(s) could not be decoded (the first after frame {first_skip}); "
                f"the frames in them are missing."
            )
        short = _ends_short(info, expected, duration if (own or not info.has_audio) else None)
        if read_error or (short and not decoded_after_skip):
            _mark_truncated(info, expected, duration, read_error)


def _ends_short(info: VideoInfo, expected: int | None, duration: float | None) -> bool:
    """Fewer frames than the container's count, or (count unknown) the last frame ends more than
    two frames before the video stream's stated duration."""
    n = info.num_frames or 0
    if expected is not None:
        return n < expected
    if duration and info.timestamps and info.fps:
        frame = float(1 / info.fps)
        return info.timestamps[-1] + frame < duration - 2 * frame - 0.02
    return False


def _warn(info: VideoInfo, message: str) -> None:
    """Add a warning once (reading the same file twice gives the same messages)."""
    if message not in info.warnings:
        info.warnings.append(message)


def _mark_truncated(info: VideoInfo, expected: int | None, duration: float | None, read_error: str | None):
    n = info.num_frames or 0
    info.truncated = True
    said = f" of {expected}" if expected else (f" ({duration:.2f} s announced)" if duration else "")
    why = f" ({read_error})" if read_error else " (the file ends early)"
    _warn(
        info,
        f"decoding stopped after {n} frames{said}{why}: the video is cut or damaged; results cover "
        f"frames 0-{max(n - 1, 0)} only."
    )


# ----------------------------------------------------------------------------- read-ahead


_DONE = object()


def _produce(iterable: Iterable, q: queue.Queue, stop: threading.Event) -> None:
    """Thread body: move items into ``q`` until exhausted, failed or told to stop.

    Holds no reference to the Prefetcher, so dropping the consumer lets it be collected (and
    closed) even while this thread waits on a full queue.
    """

    def put(msg) -> bool:
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    it = iter(iterable)
    try:
        for item in it:
            if not put((True, item)):
                return
        put((True, _DONE))
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, who re-raises it
        put((False, e))
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()  # a generator closes its container here, in the thread that ran it
            except Exception:
                pass


class Prefetcher:
    """Run an iterator in a daemon thread, ``maxsize`` items ahead of the consumer.

    Iterate it like the source. An exception raised by the source is re-raised in the consumer
    (with its original traceback). ``close()`` (also on ``with`` exit, early ``break`` inside
    ``with``, garbage collection) stops the thread after at most the item it is producing.
    """

    def __init__(self, iterable: Iterable, maxsize: int = 8):
        if maxsize < 1:
            raise InputError(f"maxsize must be >= 1, got {maxsize}.")
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(
            target=_produce, args=(iterable, self._queue, self._stop), name="videomt-read-ahead", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        ok, item = self._queue.get()  # interruptible by Ctrl-C in the main thread
        if ok and item is not _DONE:
            return item
        self._finished = True
        self.close()
        if ok:
            raise StopIteration
        raise item

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (up to ``timeout`` seconds; it is a daemon anyway)."""
        self._finished = True
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._stop.set()
        except Exception:
            pass


def read_ahead(iterable: Iterable, maxsize: int = 8) -> Prefetcher:
    """``Prefetcher(iterable, maxsize)``: decode ahead of the model. Use it as a context manager::

        with read_ahead(read_frames(info, stride=2)) as frames:
            for frame in frames: ...
    """
    return Prefetcher(iterable, maxsize)


# ----------------------------------------------------------------------------- writing


class VideoWriter:
    """Write RGB frames to a video, atomically, keeping the source's rate, timestamps and audio.

    ``with VideoWriter(path, info, audio_from=info.path) as w: w.write(rgb, pts)``

    - Encoder: libx264 (``crf``, ``preset``) for .mp4/.mov/.m4v/.mkv, libvpx-vp9 for .webm.
    - Size: the frames' size exactly. H.264 in yuv420p needs even sizes, so an odd width or height
      is encoded as yuv444p (High 4:4:4 profile: the same size and frame count, but some players,
      browsers and QuickTime among them, do not play it; a warning says so). ``pad_odd=True``
      instead pads one replicated row/column to get a yuv420p file one pixel larger.
    - Timing: the stream's frame rate is ``info.fps`` (exact fraction) and its time base
      ``info.time_base``; each frame keeps the source pts given to ``write`` (so variable frame rate
      survives). ``pts=None`` continues at the nominal rate. Matroska/WebM store milliseconds, so
      there times are rounded to 1 ms. (For variable-rate sources the average rate a reader reports
      for the output may differ from the source's: it depends on the last frame's guessed length.)
    - Rotation: frames from ``read_frames`` are already upright, so no rotation metadata is written.
    - Audio: with ``audio_from`` (the source file), its first audio stream is copied packet by
      packet (no re-encoding), interleaved with the video, over the time span of the written frames.
      When the output container cannot hold that codec, the video is written without audio and
      ``warnings`` says so.
    - Atomic: frames go to a hidden temp file in the same folder, renamed onto ``path`` on a clean
      exit; on any exception (KeyboardInterrupt too) the temp file is deleted and nothing is left.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        info: VideoInfo,
        codec: str | None = None,
        crf: int = 20,
        preset: str = "veryfast",
        audio_from: str | os.PathLike | None = None,
        pix_fmt: str | None = None,
        pad_odd: bool = False,
    ):
        self.path = Path(path)
        self.info = info
        suffix = self.path.suffix.lower()
        if suffix not in _WRITE_CODECS:
            raise VideoError(f"cannot write a video named {self.path.name}: use .mp4, .mov, .mkv or .webm.")
        self.codec = codec or _WRITE_CODECS[suffix]
        self.crf = crf
        self.preset = preset
        self.audio_from = Path(audio_from) if audio_from else None
        self.pad_odd = pad_odd
        self.warnings: list[str] = []
        self.frames_written = 0
        self.width, self.height = info.width, info.height
        self.pix_fmt = pix_fmt
        needs_even = self.codec in ("libx264", "libx265", "h264", "hevc")
        odd = self.width % 2 or self.height % 2
        if needs_even and odd and pix_fmt in (None, "yuv420p"):
            if pad_odd:
                self.width += self.width % 2
                self.height += self.height % 2
                self.pix_fmt = "yuv420p"
                self.warnings.append(
                    f"odd size {info.width}x{info.height} padded to {self.width}x{self.height} for yuv420p H.264."
                )
            elif pix_fmt is None:
                self.pix_fmt = "yuv444p"
                self.warnings.append(
                    f"odd size {info.width}x{info.height}: written as yuv444p H.264 to keep the exact size; "
                    f"some players (browsers, QuickTime) cannot play it (pad_odd=True gives yuv420p)."
                )
            else:
                raise VideoError(
                    f"H.264 yuv420p needs even sizes, got {info.width}x{info.height}: use pix_fmt=yuv444p or pad_odd."
                )
        self.pix_fmt = self.pix_fmt or "yuv420p"
        self.fps = Fraction(info.fps) if info.fps else None
        if self.fps is None:
            self.fps = IMAGE_FOLDER_FPS
            self.warnings.append(f"source has no frame rate; writing at {self.fps} fps.")
        self.time_base = Fraction(info.time_base) if info.time_base else 1 / self.fps
        self._step = max(1, round(1 / (self.fps * self.time_base)))
        self._tmp: Path | None = None
        self._out = None
        self._stream = None
        self._audio_in = None
        self._audio_out = None
        self._audio_packets = None
        self._audio_next = None
        self._first_time: float | None = None
        self._last_pts: int | None = None

    # -- lifecycle

    def __enter__(self) -> VideoWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        folder = self.path.parent
        if not folder.is_dir():
            raise VideoError(f"folder {folder} does not exist: create it or choose another output path.")
        want_audio = self.audio_from is not None
        try:
            try:
                self._start(want_audio)
            except av.FFmpegError as e:
                had_audio = self._audio_out is not None
                self._discard()
                if not had_audio:
                    raise VideoError(f"cannot start writing {self.path} ({_ffmpeg_reason(e)}).") from None
                # The muxer refused the copied audio stream only when writing the header (opus in mov).
                self.warnings.append(
                    f"audio cannot go into {self.path.suffix} ({_ffmpeg_reason(e)}); written without audio."
                )
                try:
                    self._start(False)
                except av.FFmpegError as e2:
                    raise VideoError(f"cannot start writing {self.path} ({_ffmpeg_reason(e2)}).") from None
        except BaseException:
            self._discard()
            raise

    def _start(self, with_audio: bool) -> None:
        self._tmp = self.path.with_name(f".{self.path.stem}.{uuid.uuid4().hex[:8]}.partial{self.path.suffix}")
        options = {"movflags": "+faststart"} if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
        try:
            self._out = av.open(str(self._tmp), "w", options=options)
        except (av.FFmpegError, OSError) as e:
            self._tmp = None
            raise VideoError(f"cannot write {self.path} ({_ffmpeg_reason(e)}): check the folder is writable.") from None
        try:
            stream = self._out.add_stream(self.codec, rate=self.fps)
        except (ValueError, av.FFmpegError) as e:
            self._discard()
            raise VideoError(f"cannot encode {self.codec} into {self.path.name} ({e}).") from None
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = self.pix_fmt
        stream.codec_context.time_base = self.time_base
        if self.codec.startswith("libvpx"):
            stream.options = {"crf": str(self.crf + 11), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        elif self.codec in ("libx264", "libx265"):
            stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = stream
        self._audio_out = None
        if with_audio:
            self._add_audio()
        self._out.start_encoding()  # writes the header: an impossible stream fails here, not mid-way

    def _add_audio(self) -> None:
        try:
            self._audio_in = av.open(str(self.audio_from), "r")
        except (av.FFmpegError, OSError) as e:
            self.warnings.append(
                f"cannot read audio from {self.audio_from} ({_ffmpeg_reason(e)}); written without audio."
            )
            return
        if not self._audio_in.streams.audio:
            self._audio_in.close()
            self._audio_in = None
            return
        source = self._audio_in.streams.audio[0]
        try:
            self._audio_out = self._out.add_stream_from_template(source)
        except (ValueError, av.FFmpegError) as e:
            self.warnings.append(
                f"audio ({source.codec_context.name}) cannot go into {self.path.suffix} ({e}); written without audio."
            )
            self._audio_in.close()
            self._audio_in = None
            return
        self._audio_packets = self._audio_in.demux(source)

    def close(self) -> None:
        """Flush the encoder and the remaining audio, then move the file into place."""
        if self._out is None:
            return
        try:
            self._mux_video(self._stream.encode(None))
            end = None
            if self._last_pts is not None:
                end = float((self._last_pts + self._step) * self.time_base)
            self._mux_audio_until(end, final=True)
            self._out.close()
            self._out = None
            self._close_audio()
            if self.frames_written == 0:
                self.warnings.append("no frames were written.")
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop everything written so far; leaves no file behind."""
        self._discard()

    def _discard(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except Exception:
                pass
            self._out = None
        self._close_audio()
        if self._tmp is not None:
            try:
                self._tmp.unlink()
            except FileNotFoundError:
                pass
            self._tmp = None

    def _close_audio(self) -> None:
        if self._audio_in is not None:
            try:
                self._audio_in.close()
            except Exception:
                pass
        self._audio_in = None
        self._audio_packets = None
        self._audio_next = None

    # -- frames

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode one (H, W, 3) uint8 RGB frame at source timestamp ``pts`` (time_base units)."""
        if self._out is None:
            raise VideoError("VideoWriter.write called outside its with-block (or after close).")
        image = np.asarray(image)
        if image.shape != (self.info.height, self.info.width, 3) or image.dtype != np.uint8:
            raise InputError(
                f"frame must be ({self.info.height}, {self.info.width}, 3) uint8 RGB, got {image.shape} {image.dtype}."
            )
        if (self.width, self.height) != (self.info.width, self.info.height):
            pad = ((0, self.height - image.shape[0]), (0, self.width - image.shape[1]), (0, 0))
            image = np.pad(image, pad, mode="edge")
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        pts = int(pts)
        if self._last_pts is not None and pts <= self._last_pts:
            if not any("not increasing" in w for w in self.warnings):
                self.warnings.append(
                    f"timestamps not increasing at frame {self.frames_written}; shifted to keep order."
                )
            pts = self._last_pts + 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = pts
        frame.time_base = self.time_base
        if self._first_time is None:
            self._first_time = float(pts * self.time_base)
        self._last_pts = pts
        self._mux_video(self._stream.encode(frame))
        self.frames_written += 1

    def _mux_video(self, packets) -> None:
        for packet in packets:
            if self._audio_packets is not None and packet.dts is not None and packet.time_base:
                self._mux_audio_until(float(packet.dts * packet.time_base))
            self._out.mux(packet)

    def _mux_audio_until(self, until: float | None, final: bool = False) -> None:
        """Copy source audio packets that start before ``until`` seconds (all of them when None)."""
        if self._audio_packets is None or self._first_time is None:
            return
        lead = 1.0  # audio kept from this long before the first frame (codec priming, sub-ranges)
        while True:
            packet = self._audio_next
            if packet is None:
                try:
                    packet = next(self._audio_packets)
                except (StopIteration, av.FFmpegError):
                    self._audio_packets = None
                    return
                if packet.dts is None or packet.size == 0:
                    continue
            t = float(packet.pts * packet.time_base) if packet.pts is not None else float(packet.dts * packet.time_base)
            if until is not None and t >= until:
                self._audio_next = packet  # later; (at the end: past the video, dropped)
                if final:
                    self._audio_packets = None
                return
            self._audio_next = None
            t_end = t + float((packet.duration or 0) * packet.time_base)
            if t_end < self._first_time - lead:
                continue
            packet.stream = self._audio_out
            self._out.mux(packet)


# ----------------------------------------------------------------------------- info


def _fps_text(fps: Fraction | None) -> str:
    if not fps:
        return "unknown"
    if fps.denominator == 1:
        return f"{fps.numerator}"
    return f"{fps.numerator}/{fps.denominator} ({float(fps):.3f})"


def info_lines(info: VideoInfo) -> list[tuple[str, str]]:
    """(label, value) rows for ``videomt info VIDEO``."""
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
    if info.truncated:
        rows.append(("truncated", "yes"))
    for w in info.warnings:
        rows.append(("warning", w))
    return rows
