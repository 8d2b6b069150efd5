"""Reading frames from any source: a video file, a folder of frame images, or an iterable of RGB
arrays, through one interface. No torch (DESIGN 5).

    source = open_source("input.mp4")             # or a folder, or a list / generator of arrays
    reader = source.frames(Window.of(start=10, stride=2))
    for frame in reader:                          # Frame(index, time, pts, image)
        ...
    reader.timeline                               # every frame's pts and time, the true count

- Frame times come from each frame's own ``pts * time_base`` (never ``index / fps``), counted from
  the video stream's start, so variable frame rate is kept exactly. Images are (H, W, 3) uint8
  RGB in displayed orientation (rotation metadata applied; EXIF orientation for image files).
- The window (``io.window``) is applied while decoding: frames outside it are decoded but not
  converted to RGB (the real cost). After the window's end the rest is only demuxed, not decoded,
  to count the frames and read their timestamps (``count_rest=False`` stops at once instead).
- Cut or corrupt files: every frame that decodes is yielded. A packet that fails to decode is
  skipped (later ones often decode again); a read error ends the video. When fewer frames came
  out than the container announced (or the last frame ends well before the stream's stated
  duration), ``timeline.truncated`` is set and ``timeline.warnings`` says where it stopped. A file
  that cannot be opened at all (an mp4 cut before its ``moov`` index) is a ``VideoError``.
- Arrays: each item is an (H, W, 3) uint8 RGB array of one size; frame ``i`` has pts ``i`` in a
  time base of ``1/fps`` (``fps`` given, else 30). A list, tuple or (T, H, W, 3) array can be read
  any number of times; a generator or other one-shot iterator once.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from videomt_cli.errors import InputError, VideoError
from videomt_cli.io.images import load_image
from videomt_cli.io.probe import (IMAGE_FOLDER_FPS, MAX_BAD_PACKETS, _ffmpeg_reason, _open_input, _stream_duration,
                                  _video_stream, probe)
from videomt_cli.io.window import Window
from videomt_cli.records import Timeline, VideoInfo


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame.

    index: position in the whole video (0-based), whatever the window selected.
    time: seconds since the video stream's start, from the frame's own timestamp.
    pts: the source timestamp in ``VideoInfo.time_base`` units (what ``VideoWriter.write`` takes).
    image: (H, W, 3) uint8 RGB, displayed orientation, C-contiguous.
    """

    index: int
    time: float
    pts: int | None
    image: np.ndarray


class Reader:
    """One pass over a source's frames in a window. Iterate it once; afterwards ``timeline`` holds
    what the pass learned (None when the pass stopped early without counting the rest)."""

    def __init__(self, info: VideoInfo, window: Window) -> None:
        self.info = info
        self.window = window
        self.timeline: Timeline | None = None
        self._pts: list[int] = []
        self._times: list[float] = []
        self._warnings: list[str] = []
        self._started = False

    def __iter__(self) -> Iterator[Frame]:
        if self._started:
            raise InputError("a Reader reads its frames once; ask the source for another pass.")
        self._started = True
        return self._frames()

    def _frames(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _record(self, pts: int, time: float) -> None:
        self._pts.append(pts)
        self._times.append(time)

    def _finish(self, truncated: bool = False) -> None:
        self.timeline = Timeline(tuple(self._pts), tuple(self._times), truncated, tuple(self._warnings))

    def _warn(self, message: str) -> None:
        if message not in self._warnings:
            self._warnings.append(message)


# ----------------------------------------------------------------------------- image folders


class _FolderReader(Reader):
    def _frames(self) -> Iterator[Frame]:
        info = self.info
        folder = Path(info.path)
        tb = info.time_base or 1 / (info.fps or IMAGE_FOLDER_FPS)
        select = self.window.selector()
        for i, name in enumerate(info.file_names):
            t = float(i * tb)
            self._record(i, t)
            if select.ended(i, t) or not select.wants(i, t):
                continue
            image = load_image(folder / name)
            if image.shape[:2] != (info.height, info.width):
                raise VideoError(
                    f"{folder / name} is {image.shape[1]}x{image.shape[0]} but the first frame is "
                    f"{info.width}x{info.height}: all frames of a folder must have one size."
                )
            yield Frame(i, t, i, image)
        self._finish()


# ----------------------------------------------------------------------------- video files


def _rgb(frame, k: int) -> np.ndarray:
    image = frame.to_ndarray(format="rgb24")
    if k:
        image = np.ascontiguousarray(np.rot90(image, k))
    return image


class _VideoReader(Reader):
    def __init__(self, info: VideoInfo, window: Window, count_rest: bool) -> None:
        super().__init__(info, window)
        self.count_rest = count_rest

    def _frames(self) -> Iterator[Frame]:
        info = self.info
        p = Path(info.path)
        if not p.exists():
            raise VideoError(f"{p} does not exist any more: check the path.")
        k = (-info.rotation // 90) % 4  # np.rot90 turns counter-clockwise
        select = self.window.selector()
        bad_packets = 0  # consecutive
        skipped = 0  # all packets that failed to decode
        first_skip: int | None = None  # frame index where the first one was
        decoded_after_skip = False  # a frame decoded after the last failed packet (damage mid-file)
        read_error: str | None = None
        ended = False
        tail = 0
        with _open_input(p) as container:
            stream = _video_stream(container, p)
            stream.codec_context.thread_type = "AUTO"
            tb = Fraction(stream.time_base) if stream.time_base else (info.time_base or Fraction(1, 1000))
            t0 = stream.start_time
            step = max(1, round(1 / (info.fps * tb))) if info.fps else 1
            last_pts: int | None = None

            def emit(frame) -> Frame | None:
                # Record the frame; return the Frame to yield when it is wanted, else None.
                nonlocal t0, last_pts, ended
                pts = frame.pts
                if pts is None:  # some raw streams: continue from the previous frame at the nominal rate
                    pts = 0 if last_pts is None else last_pts + step
                if t0 is None:
                    t0 = pts
                last_pts = pts
                t = float((pts - t0) * tb)
                i = len(self._pts)
                self._record(pts, t)
                if ended or select.ended(i, t):
                    ended = True
                    return None
                if select.wants(i, t):
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
                            first_skip = len(self._pts)
                        if bad_packets > MAX_BAD_PACKETS:
                            read_error = f"too many undecodable packets ({_ffmpeg_reason(e)})"
                            break
                        continue
                    for frame in frames:
                        out = emit(frame)
                        if out is not None:
                            yield out
                    if ended or select.ended_by_index(len(self._pts)):
                        ended = True
                        tail = len(self._pts)  # records from here on are not yielded; sorted below
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
            if ended and not self.count_rest:
                return  # timeline stays None: the rest of the video was never looked at
            if ended and not read_error:
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
                rest = sorted(self._pts[tail:] + known)
                for _ in range(unknown):
                    rest.append((rest[-1] if rest else (last_pts or 0)) + step)
                self._pts[tail:] = rest
                self._times[tail:] = [float((ts - (t0 or 0)) * tb) for ts in rest]
            duration, own = _stream_duration(container, stream)
            n = len(self._pts)
            if skipped:
                self._warn(f"{skipped} damaged packet(s) could not be decoded (the first after frame {first_skip}); "
                           f"the frames in them are missing.")
            short = self._ends_short(info.num_frames, duration if (own or not info.has_audio) else None)
            truncated = bool(read_error or (short and not decoded_after_skip))
            if truncated:
                expected = info.num_frames
                said = f" of {expected}" if expected else (f" ({duration:.2f} s announced)" if duration else "")
                why = f" ({read_error})" if read_error else " (the file ends early)"
                self._warn(f"decoding stopped after {n} frames{said}{why}: the video is cut or damaged; results "
                           f"cover frames 0-{max(n - 1, 0)} only.")
            self._finish(truncated)

    def _ends_short(self, expected: int | None, duration: float | None) -> bool:
        """Fewer frames than the container's count, or (count unknown) the last frame ends more than
        two frames before the video stream's stated duration."""
        n = len(self._pts)
        if expected is not None:
            return n < expected
        if duration and self._times and self.info.fps:
            frame = float(1 / self.info.fps)
            return self._times[-1] + frame < duration - 2 * frame - 0.02
        return False


# ----------------------------------------------------------------------------- arrays


def _check_array(image, index: int, size: tuple[int, int] | None) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InputError(f"frame {index} of the arrays is {a.shape} {a.dtype}; each frame must be an "
                         f"(H, W, 3) uint8 RGB array.")
    if size is not None and a.shape[:2] != size:
        raise InputError(f"frame {index} is {a.shape[1]}x{a.shape[0]} but the first frame is "
                         f"{size[1]}x{size[0]}: all frames of a video must have one size.")
    return np.ascontiguousarray(a)


class _ArrayReader(Reader):
    def __init__(self, info: VideoInfo, window: Window, items: Iterable) -> None:
        super().__init__(info, window)
        self._items = items

    def _frames(self) -> Iterator[Frame]:
        tb = self.info.time_base
        select = self.window.selector()
        size = (self.info.height, self.info.width)
        sized = isinstance(self._items, (Sequence, np.ndarray))
        for i, item in enumerate(self._items):
            t = float(i * tb)
            if select.ended(i, t):
                if not sized:
                    break  # an endless source (a camera) must not be drained past the window
                self._pts.extend(range(i, len(self._items)))  # a list's length is known: count the rest
                self._times.extend(float(j * tb) for j in range(i, len(self._items)))
                break
            self._record(i, t)
            if select.wants(i, t):
                yield Frame(i, t, i, _check_array(item, i, size))
        self._finish()


# ----------------------------------------------------------------------------- sources


class Source:
    """A video to read, any number of passes where the source allows: ``info`` (what is known
    before reading) and ``frames(window)`` (a new :class:`Reader`)."""

    def __init__(self, info: VideoInfo, rereadable: bool = True) -> None:
        self.info = info
        self.rereadable = rereadable

    def frames(self, window: Window = Window(), count_rest: bool = True) -> Reader:
        info = self.info
        if info.kind == "folder":
            return _FolderReader(info, window)
        return _VideoReader(info, window, count_rest)


class _ArraySource(Source):
    def __init__(self, items, fps) -> None:
        rereadable = isinstance(items, (Sequence, np.ndarray))
        iterator = iter(items)
        try:
            first = next(iterator)
        except StopIteration:
            raise InputError("the iterable of frames is empty: give at least one (H, W, 3) uint8 RGB array.") from None
        a = _check_array(first, 0, None)
        rate = Fraction(fps).limit_denominator(1_000_000) if fps else IMAGE_FOLDER_FPS
        if rate <= 0:
            raise InputError(f"fps must be positive, got {fps}.")
        n = len(items) if rereadable else None
        info = VideoInfo(path="<arrays>", width=a.shape[1], height=a.shape[0], fps=rate, num_frames=n,
                         duration=float(n / rate) if n is not None else None, codec="rgb24", kind="arrays",
                         time_base=1 / rate)
        super().__init__(info, rereadable)
        self._items = items
        self._once: Iterator | None = itertools.chain([first], iterator)

    def frames(self, window: Window = Window(), count_rest: bool = True) -> Reader:
        if self.rereadable:
            return _ArrayReader(self.info, window, self._items)
        if self._once is None:
            raise InputError("this iterable of frames was read already and cannot be read again: pass a list, "
                             "a (T, H, W, 3) array, a file or a folder where a second pass is needed.")
        once, self._once = self._once, None
        return _ArrayReader(self.info, window, once)


def open_source(source, fps: Fraction | float | None = None) -> Source:
    """A :class:`Source` for a video file, a folder of frame images (``fps`` sets its rate, default
    30), a ``Source``, or an iterable of (H, W, 3) uint8 RGB arrays (``fps`` likewise)."""
    if isinstance(source, Source):
        return source
    if isinstance(source, VideoInfo):
        return Source(source)
    if isinstance(source, (str, os.PathLike)):
        return Source(probe(source, fps=fps))
    if isinstance(source, np.ndarray) and source.ndim != 4:
        raise InputError(f"an array of frames must be (T, H, W, 3) uint8 RGB, got shape {source.shape} (one frame "
                         f"is (H, W, 3): pass [frame]).")
    if isinstance(source, (Iterable, np.ndarray)) and not isinstance(source, (bytes, dict)):
        return _ArraySource(source, fps)
    raise InputError(f"cannot read frames from a {type(source).__name__}: pass a video file, a folder of frame "
                     f"images, or an iterable of (H, W, 3) uint8 RGB arrays.")


def read_frames(source, start=None, end=None, stride: int = 1, count_rest: bool = True,
                window: Window | None = None) -> Reader:
    """The frames of ``source`` in [start, end) every ``stride``-th (frame numbers, seconds as float
    or strings such as '4.5s'), or in ``window``. Argument errors raise at call time."""
    if window is None:
        window = Window.of(start, end, stride)
    return open_source(source).frames(window, count_rest=count_rest)
