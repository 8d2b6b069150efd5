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
- The frame count of a video is what decodes: the header's count (``VideoInfo.num_frames``) can
  be more (an mp4 cut with stream copy keeps the frames before its edit list's start, which are
  decoded as references but never shown) or wrong. ``count_frames`` decodes a whole file without
  RGB conversion to give the same :class:`Timeline` a full read gives. Decoding uses frame
  threads; where they give back fewer frames than packets went in (a damaged packet can strand
  the frames still in flight), the packets are decoded again in one thread and the missing frames
  taken from there (``_decode_again``), so the count never depends on the machine's cores.
- Cut or corrupt files: every frame that decodes is yielded. A packet that fails to decode is
  skipped (later ones often decode again); a read error ends the video. The video is cut short
  (``timeline.truncated``, and ``timeline.warnings`` says where it stopped) when a read error ended
  it, or when fewer frames came out than the container announced (less the packets its edit list
  discards; in an mp4/mov also only when the last frame ends well before the stream's duration,
  the edit list's), or, with no count, when the last frame ends well before the stated duration.
  A file that cannot be opened at all (an mp4 cut before its ``moov`` index) is a ``VideoError``.
- Frames without a timestamp (raw streams; the first frames of some recordings) get one from the
  nominal rate: after the previous frame's, or, before the first timestamped frame, counted back
  from it (up to ``MAX_UNTIMED`` frames wait for it; a stream with none starts at 0).
- Counting the rest after the window's end reads packets, one a frame; where the file ends inside
  a packet (a cut download), its last GOP is decoded again to see whether that frame comes out.
  (A packet damaged in the middle of the file still counts there, while a full decode drops it:
  only a full read, or ``count_frames``, is exact for such files.)
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
    pts: the source timestamp in ``VideoInfo.time_base`` units (what ``VideoWriter.write`` takes;
        from the nominal rate for a frame that has none).
    image: (H, W, 3) uint8 RGB, displayed orientation, C-contiguous.
    arrival: ``time.monotonic()`` when a live source received it (``io.live``), else None.
    """

    index: int
    time: float
    pts: int | None
    image: np.ndarray
    arrival: float | None = None


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

    def done(self, frames: list[Frame]) -> None:
        """The results of ``frames`` are out (a live reader times them from their arrival)."""

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
    def __init__(self, info: VideoInfo, window: Window, images: bool = True) -> None:
        super().__init__(info, window)
        self.images = images

    def _frames(self) -> Iterator[Frame]:
        info = self.info
        folder = Path(info.path)
        tb = info.time_base or 1 / (info.fps or IMAGE_FOLDER_FPS)
        select = self.window.selector()
        for i, name in enumerate(info.file_names):
            t = float(i * tb)
            self._record(i, t)
            if not self.images or select.ended(i, t) or not select.wants(i, t):
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


MAX_UNTIMED = 16  # decoded frames held (not converted) while waiting for the first timestamp


class _Stamper:
    """Each decoded frame's pts, in display order: its own; else the nominal rate's (``ticks`` pts
    per frame) after the last known one; frames before the first timestamp are held until it comes
    and get times counted back from it (after ``MAX_UNTIMED`` frames, or at the end, from the
    stream's start, or 0)."""

    def __init__(self, ticks: Fraction, start: int | None) -> None:
        self.ticks = ticks
        self.start = start
        self.held: list = []
        self.anchor: Fraction | int | None = None  # the last own (or first derived) pts
        self.since = 0  # frames after the anchor

    def add(self, frame) -> list[tuple[object, int]]:
        pts = frame.pts
        if pts is not None:
            out = self._release(pts - len(self.held) * self.ticks) if self.held else []
            self.anchor, self.since = pts, 0
            out.append((frame, pts))
            return out
        if self.anchor is None:
            self.held.append(frame)
            return self.flush() if len(self.held) >= MAX_UNTIMED else []
        self.since += 1
        return [(frame, round(self.anchor + self.since * self.ticks))]

    def flush(self) -> list[tuple[object, int]]:
        """The held frames (a stream with no timestamp so far), timed from the stream's start."""
        return self._release(self.start or 0) if self.held else []

    def _release(self, first) -> list[tuple[object, int]]:
        held, self.held = self.held, []
        self.anchor, self.since = first, len(held) - 1
        return [(frame, round(first + j * self.ticks)) for j, frame in enumerate(held)]


def _decode_again(p: Path, seek: int | None = None, packets: int | None = None, keep=lambda frame: frame) -> list:
    """Decode a file again in one thread, without RGB conversion: from the keyframe at or before
    pts ``seek`` (else the start), through ``packets`` packets of shown frames (else to the end);
    ``keep(frame)`` says what to keep of each frame (None: nothing). Nothing is raised: a file that
    went away or fails keeps what came.

    The one flaw of frame threads: when a packet fails while the decoder drains (the damaged last
    packet of a cut file), PyAV stops receiving and the frames still in the other threads are lost.
    Fewer frames than packets is the sign; the reader then decodes the same packets again here and
    keeps the frames after the last one it got. Frame threads stay for the speed (1.5-2x on two
    cores, more on more), and only damaged files pay for a second decode."""
    out: list = []
    try:
        with _open_input(p) as container:
            stream = _video_stream(container, p)
            stream.codec_context.thread_type = "SLICE"
            if seek is not None:
                container.seek(seek, stream=stream, backward=True)
            fed = 0

            def take(frames) -> None:
                for frame in frames:
                    kept = keep(frame)
                    if kept is not None:
                        out.append(kept)

            try:
                for packet in container.demux(stream):
                    if not packet.size:
                        continue
                    if not packet.is_discard:
                        if fed == packets:
                            break
                        fed += 1
                    try:
                        take(packet.decode())
                    except av.FFmpegError:
                        continue
            except av.FFmpegError:
                pass
            try:
                take(stream.codec_context.decode(None))
            except av.FFmpegError:
                pass
    except (VideoError, av.FFmpegError):
        pass
    return out


class _VideoReader(Reader):
    def __init__(self, info: VideoInfo, window: Window, count_rest: bool, images: bool = True) -> None:
        super().__init__(info, window)
        self.count_rest = count_rest
        self.images = images

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
        discarded = 0  # packets outside the edit list: decoded as references, never shown
        read_error: str | None = None
        ended = False
        tail = 0
        with _open_input(p) as container:
            stream = _video_stream(container, p)
            stream.codec_context.thread_type = "AUTO"  # frame threads: see _decode_again for their one flaw
            tb = Fraction(stream.time_base) if stream.time_base else (info.time_base or Fraction(1, 1000))
            t0 = stream.start_time
            ticks = 1 / (info.fps * tb) if info.fps else Fraction(1)  # one frame, in pts
            stamper = _Stamper(ticks, stream.start_time)
            sent = got = 0  # packets of shown frames given to the decoder, and frames it gave back
            last_raw: int | None = None  # the latest own pts among those frames
            key: int | None = None  # pts of the last keyframe packet

            def emit(timed) -> Iterator[Frame]:
                # Record each (frame, pts); yield the Frames that are wanted.
                nonlocal t0, ended
                for frame, pts in timed:
                    if not self._pts and (t0 is None or pts < t0):
                        t0 = pts  # times count from the first frame when it precedes the stated start
                    t = float((pts - t0) * tb)
                    i = len(self._pts)
                    self._record(pts, t)
                    if ended or select.ended(i, t):
                        ended = True
                    elif self.images and select.wants(i, t):
                        yield Frame(i, t, pts, _rgb(frame, k))

            def decoded(frames) -> list:
                nonlocal got, last_raw
                got += len(frames)
                for frame in frames:
                    if frame.pts is not None and (last_raw is None or frame.pts > last_raw):
                        last_raw = frame.pts
                return frames

            packets = container.demux(stream)
            try:
                for packet in packets:
                    if packet.is_discard and packet.size:
                        discarded += 1
                    elif packet.size:
                        sent += 1
                        if packet.is_keyframe and packet.pts is not None:
                            key = packet.pts
                    try:
                        frames = decoded(packet.decode())
                        bad_packets = 0
                        if frames and skipped and packet.size:  # not the final flush's delayed frames
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
                        yield from emit(stamper.add(frame))
                    if ended or select.ended_by_index(len(self._pts)):
                        ended = True
                        tail = len(self._pts)  # records from here on are not yielded; sorted below
                        break
            except av.FFmpegError as e:
                read_error = _ffmpeg_reason(e)
            try:  # frames still inside the decoder (B-frames, frame threads); a no-op after a clean end
                for frame in decoded(stream.codec_context.decode(None)):
                    yield from emit(stamper.add(frame))
            except av.FFmpegError:
                pass
            if ended and not self.count_rest:
                return  # timeline stays None: the rest of the video was never looked at
            if got < sent:  # a packet failed: frames may be stuck in the decoder's other threads
                seen = 0

                def after(frame):
                    nonlocal seen
                    seen += 1
                    later = frame.pts > last_raw if (last_raw is not None and frame.pts is not None) else seen > got
                    return frame if later else None

                for frame in _decode_again(p, packets=sent, keep=after):
                    yield from emit(stamper.add(frame))
            yield from emit(stamper.flush())
            if ended and not read_error:
                read_error, more = self._count_rest(p, packets, tail, key, t0 or 0, tb, max(1, round(ticks)))
                discarded += more
            duration, own = _stream_duration(container, stream)
            n = len(self._pts)
            if skipped:
                self._warn(f"{skipped} damaged packet(s) could not be decoded (the first after frame {first_skip}); "
                           f"the frames in them are missing.")
            expected = info.num_frames - discarded if info.num_frames is not None else None
            edits = "mov" in container.format.name.split(",")  # mp4/mov: the duration is the edit list's
            short = self._ends_short(expected, duration if (own or not info.has_audio) else None, edits)
            truncated = bool(read_error or (short and not decoded_after_skip))
            if truncated:
                said = f" of {expected}" if expected else (f" ({duration:.2f} s announced)" if duration else "")
                why = f" ({read_error})" if read_error else " (the file ends early)"
                self._warn(f"decoding stopped after {n} frames{said}{why}: the video is cut or damaged; results "
                           f"cover frames 0-{max(n - 1, 0)} only.")
            self._finish(truncated)

    def _count_rest(self, p: Path, packets, tail: int, key: int | None, t0: int, tb: Fraction,
                    step: int) -> tuple[str | None, int]:
        """After the window's end, the remaining frames from their packets, without decoding (one
        packet a frame): (read error, packets the edit list discards). Where the file ends inside a
        packet (a cut download), only decoding tells whether its frame comes out: the last GOP is
        decoded again from its keyframe (pts ``key``), in one thread, without RGB conversion."""
        known, unknown, discarded, error, cut = [], 0, 0, None, False
        try:
            for packet in packets:
                if packet.size == 0:
                    continue  # the flush packet
                if packet.is_discard:
                    discarded += 1
                    continue
                if packet.is_keyframe and packet.pts is not None:
                    key = packet.pts
                if packet.is_corrupt:
                    cut = True
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    unknown += 1
                else:
                    known.append(ts)
        except av.FFmpegError as e:
            error = _ffmpeg_reason(e)
        # The frames flushed from the decoder and these packets share one presentation order (a
        # B-frame packet still unread may come before a flushed P-frame): sort them together.
        rest = self._pts[tail:] + known
        if cut and key is not None:
            again = _decode_again(p, seek=key, keep=lambda f: f.pts if f.pts is not None and f.pts >= key else None)
            if again and min(again) == key:  # the seek found the keyframe
                before = set(self._pts[:tail])
                rest = [ts for ts in rest if ts < key] + [ts for ts in again if ts not in before]
        rest.sort()
        for _ in range(unknown):
            rest.append((rest[-1] if rest else (self._pts[tail - 1] if tail else 0)) + step)
        self._pts[tail:] = rest
        self._times[tail:] = [float((ts - t0) * tb) for ts in rest]
        return error, discarded

    def _ends_short(self, expected: int | None, duration: float | None, edits: bool) -> bool:
        """Whether the frames stop before the video does: fewer than the container's count (less
        the packets its edit list discards) and, in an mp4/mov (``edits``), the last frame ending
        more than two frames before the stream's duration, which there is the edit list's (an edit
        can also leave out whole samples the header still counts); with no count, the duration
        alone decides. (An AVI cut short states the duration of what is left: only its count tells.)"""
        n = len(self._pts)
        early = None
        if duration and self._times and self.info.fps:
            frame = float(1 / self.info.fps)
            early = self._times[-1] + frame < duration - 2 * frame - 0.02
        if expected is not None:
            return n < expected and (early is not False or not edits)
        return bool(early)


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

    def frames(self, window: Window = Window(), count_rest: bool = True, images: bool = True) -> Reader:
        """A new pass over the frames in ``window``. ``images=False``: read every frame's timing
        only, yielding nothing (video frames are decoded but not converted, images not loaded)."""
        info = self.info
        if info.kind == "folder":
            return _FolderReader(info, window, images)
        return _VideoReader(info, window, count_rest, images)


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

    def frames(self, window: Window = Window(), count_rest: bool = True, images: bool = True) -> Reader:
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


def count_frames(source) -> Timeline:
    """The :class:`Timeline` of a whole read of ``source`` (a path, ``VideoInfo`` or ``Source``): the
    count and times of the frames that decode, and what reading found (cut or damaged files), as a
    full read gives them, without converting a frame to RGB. A video is decoded to the end (about
    as long as demuxing plus decoding takes: what ``videomt info`` costs); an image folder's count
    is its files', an array source's its items'. A one-shot iterable is refused (counting would use
    it up)."""
    src = open_source(source)
    if not src.rereadable:
        raise InputError("count_frames would use up this one-shot iterable of frames: pass a list, a (T, H, W, 3) "
                         "array, a file or a folder.")
    reader = src.frames(images=False)
    for _ in reader:
        pass
    return reader.timeline


def read_frames(source, start=None, end=None, stride: int = 1, count_rest: bool = True,
                window: Window | None = None) -> Reader:
    """The frames of ``source`` in [start, end) every ``stride``-th (frame numbers, seconds as float
    or strings such as '4.5s'), or in ``window``. Argument errors raise at call time."""
    if window is None:
        window = Window.of(start, end, stride)
    return open_source(source).frames(window, count_rest=count_rest)
