"""Writing video: the atomic :class:`VideoWriter` overlays are encoded with, and the
:class:`LiveVideoWriter` of live overlays (in place or to a network target, playable at any
moment). No torch."""

from __future__ import annotations

import errno
import math
import os
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from videomt_cli.errors import InputError, OutputError, VideoError
from videomt_cli.io.atomic import AtomicPath, output_error
from videomt_cli.io.probe import IMAGE_FOLDER_FPS, _ffmpeg_reason
from videomt_cli.records import VideoInfo

# Output suffix -> default encoder. H.264 plays everywhere; webm only takes VP8/VP9/AV1.
_WRITE_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9",
                 ".ts": "libx264"}
_MAX_TIME_BASE_DEN = 10_000_000  # a finer common clock than this: keep the source's time base


def _common_time_base(a: Fraction, b: Fraction) -> Fraction:
    """The coarsest clock in which both ``a`` and ``b`` are whole numbers of ticks."""
    return Fraction(math.gcd(a.numerator * b.denominator, b.numerator * a.denominator), a.denominator * b.denominator)


def _video_frame(image: np.ndarray, info: VideoInfo, width: int, height: int) -> av.VideoFrame:
    """A checked (H, W, 3) uint8 RGB frame of ``info``'s size as an ``av.VideoFrame`` of the output's
    (width, height): odd sizes padded by repeating the last row / column (yuv420p needs even ones)."""
    image = np.asarray(image)
    if image.shape != (info.height, info.width, 3) or image.dtype != np.uint8:
        raise InputError(f"frame must be ({info.height}, {info.width}, 3) uint8 RGB, got {image.shape} {image.dtype}.")
    if (width, height) != (info.width, info.height):
        image = np.pad(image, ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0)), mode="edge")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")


class VideoWriter:
    """Write RGB frames to a video, atomically, keeping the source's rate, timestamps and audio.

    ``with VideoWriter(path, info, audio_from=info.path) as w: w.write(rgb, pts)``

    - Encoder: libx264 (``crf``, ``preset``) for .mp4/.mov/.m4v/.mkv/.ts, libvpx-vp9 for .webm.
    - Size: the frames' size exactly. H.264 in yuv420p needs even sizes, so an odd width or height
      is encoded as yuv444p (High 4:4:4 profile: the same size and frame count, but some players,
      browsers and QuickTime among them, do not play it; a warning says so). ``pad_odd=True``
      instead pads one replicated row/column to get a yuv420p file one pixel larger.
    - Timing: the stream's frame rate is ``info.fps`` (exact fraction); each frame keeps the source
      pts given to ``write`` (``info.time_base`` units, so variable frame rate survives). ``pts=None``
      continues at the nominal rate. The time base is the source's where one frame is a whole number
      of its ticks; where it is not (a constant-rate video stored with 1 ms timestamps, as Matroska
      and WebM store them: 30 fps is 33 or 34 ms), it is the coarsest clock counting both in whole
      ticks, and a frame within one source tick of the nominal grid gets the grid's exact time, so
      a 30 fps source gives exactly 30 fps (other frames keep their own times). Matroska/WebM
      outputs store milliseconds, so there times are rounded to 1 ms. (For variable-rate sources
      the average rate a reader reports for the output may differ from the source's: it depends
      on the last frame's length.)
    - Rotation: frames from ``read_frames`` are already upright, so no rotation metadata is written.
    - Audio: with ``audio_from`` (the source file), its first audio stream is copied packet by
      packet (no re-encoding), interleaved with the video, over the time span of the written frames.
      When the output container cannot hold that codec, the video is written without audio and
      ``warnings`` says so.
    - Atomic: frames go to a hidden temp file in the same folder, renamed onto ``path`` on a clean
      exit; on any exception (KeyboardInterrupt too) the temp file is deleted and nothing is left.
    - Failures: any error while encoding, muxing or closing (a full disk, a quota, an FFmpeg error)
      is one :class:`OutputError` naming the cause and ``name`` (default ``path``; a sink writing
      through a temporary of its own passes its destination), e.g. "no space left on the device of
      out.mp4"; the temp file is gone by then and the cleanup never raises a second error.
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
        name: str | os.PathLike | None = None,
    ):
        self.path = Path(path)
        self.name = Path(name) if name is not None else self.path
        self.info = info
        suffix = self.path.suffix.lower()
        if suffix not in _WRITE_CODECS:
            raise VideoError(f"cannot write a video named {self.path.name}: use .mp4, .mov, .mkv, .webm or .ts.")
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
        self.source_time_base = Fraction(info.time_base) if info.time_base else 1 / self.fps
        self.time_base = self.source_time_base
        self._snap = False  # source times within a tick of the nominal grid get the grid's exact time
        if (1 / (self.fps * self.source_time_base)).denominator != 1:
            common = _common_time_base(self.source_time_base, 1 / self.fps)
            if common.denominator <= _MAX_TIME_BASE_DEN:
                self.time_base, self._snap = common, True
        self._step = max(1, round(1 / (self.fps * self.time_base)))
        self._origin: Fraction | None = None  # the grid's zero, in seconds
        self._tmp: AtomicPath | None = None
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
            except OSError as e:  # av.error.OSError too: the place, not the streams (a full disk)
                self._discard()
                raise output_error(e, self.name) from None
            except av.FFmpegError as e:
                had_audio = self._audio_out is not None
                self._discard()
                if not had_audio:
                    raise VideoError(f"cannot start writing {self.name} ({_ffmpeg_reason(e)}).") from None
                # The muxer refused the copied audio stream only when writing the header (opus in mov).
                self.warnings.append(
                    f"audio cannot go into {self.path.suffix} ({_ffmpeg_reason(e)}); written without audio."
                )
                try:
                    self._start(False)
                except OSError as e2:
                    self._discard()
                    raise output_error(e2, self.name) from None
                except av.FFmpegError as e2:
                    raise VideoError(f"cannot start writing {self.name} ({_ffmpeg_reason(e2)}).") from None
        except BaseException:
            self._discard()
            raise

    def _start(self, with_audio: bool) -> None:
        self._tmp = AtomicPath(self.path, create=False)  # the muxer creates the file itself
        options = {"movflags": "+faststart"} if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
        try:
            self._out = av.open(str(self._tmp.tmp), "w", options=options)
        except OSError as e:
            self._tmp.discard()
            self._tmp = None
            raise output_error(e, self.name) from None
        except av.FFmpegError as e:
            self._tmp.discard()
            self._tmp = None
            raise VideoError(f"cannot write {self.name} ({_ffmpeg_reason(e)}): check the folder is writable.") from None
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
            self._tmp.commit()
            self._tmp = None
        except (av.FFmpegError, OSError) as e:
            raise self._failed(e) from None
        except BaseException:
            self.abort()
            raise

    def _failed(self, err: Exception) -> OutputError:
        """Drop the temporary file; the one error for a failed encode, mux, close or rename."""
        self.abort()
        if isinstance(err, OSError) and err.errno:  # av.error.OSError is an OSError: ENOSPC, EDQUOT, EIO...
            return output_error(err, self.name)
        return OutputError(f"Cannot write {self.name}: FFmpeg failed to encode or write the video "
                           f"({_ffmpeg_reason(err)}); choose another output or format.")

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
            self._tmp.discard()
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
        frame = _video_frame(image, self.info, self.width, self.height)
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        else:
            pts = self._output_pts(int(pts))
        if self._last_pts is not None and pts <= self._last_pts:
            if not any("not increasing" in w for w in self.warnings):
                self.warnings.append(
                    f"timestamps not increasing at frame {self.frames_written}; shifted to keep order."
                )
            pts = self._last_pts + 1
        frame.pts = pts
        frame.time_base = self.time_base
        if self._first_time is None:
            self._first_time = float(pts * self.time_base)
        self._last_pts = pts
        try:
            self._mux_video(self._stream.encode(frame))
        except (av.FFmpegError, OSError) as e:
            raise self._failed(e) from None
        self.frames_written += 1

    def _output_pts(self, pts: int) -> int:
        """A source pts in the output's time base (exact: the source's ticks are whole output ticks),
        on the nominal grid where the source time is within one source tick of it."""
        t = pts * self.source_time_base
        if self._snap:
            tick, fps = self.source_time_base, self.fps
            if self._origin is None:  # the grid of the stream's clock zero when the first frame is on it
                on = round(t * fps) / fps
                self._origin = on if abs(t - on) < tick else t
            grid = self._origin + round((t - self._origin) * fps) / fps
            if abs(t - grid) < tick and (self._last_pts is None or grid / self.time_base > self._last_pts):
                t = grid
        return int(t / self.time_base)

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



class BackgroundWriter:
    """Encode in a thread of its own: ``write(image, pts)`` queues the frame (at most ``maxsize``
    waiting) and returns; the thread feeds ``writer.write``. An error in the thread is raised by
    the next ``write`` or on exit. Use it inside the writer's own ``with`` block::

        with VideoWriter(path, info) as w, BackgroundWriter(w) as out:
            out.write(image, pts)
    """

    def __init__(self, writer: VideoWriter, maxsize: int = 4) -> None:
        import queue
        import threading

        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._dropping = False  # the producer failed: what is still queued is not encoded
        self._thread = threading.Thread(target=self._run, name="videomt-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None and not self._dropping:
                try:
                    self.writer.write(*item)
                except BaseException as e:  # noqa: BLE001 - handed to the producer, who re-raises it
                    self._error = e

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((image, pts))

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from videomt_cli.io.prefetch import join

        self._dropping = exc_type is not None
        self._queue.put(None)
        # The encoder must be done before the writer closes its container, also when a signal
        # interrupts this wait: then what is still queued is dropped and the interrupt raised after.
        join(self._thread, on_interrupt=lambda: setattr(self, "_dropping", True))
        if exc_type is None and self._error is not None:
            raise self._error


# ----------------------------------------------------------------------------- live


LIVE_FILE_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".ts": "mpegts"}
LIVE_URL_SCHEMES = ("udp", "tcp", "srt")  # MPEG-TS over the network
_FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"


def live_target_format(target: str) -> str:
    """The container a live video goes into: MPEG-TS for ``-`` (stdout), ``.ts`` and network URLs,
    fragmented MP4 / MOV for ``.mp4`` ``.m4v`` ``.mov``; anything else is an ``InputError``."""
    if target == "-":
        return "mpegts"
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", target)
    if m:
        if m.group(1).lower() not in LIVE_URL_SCHEMES:
            schemes = ", ".join(s + "://" for s in LIVE_URL_SCHEMES)
            raise InputError(f"a live overlay goes to a file (.mp4, .mov, .ts), - (stdout) or a {schemes} target "
                             f"(MPEG-TS), not {m.group(1)}://.")
        return "mpegts"
    suffix = Path(target).suffix.lower()
    if suffix not in LIVE_FILE_FORMATS:
        raise InputError(f"a live overlay is written as fragmented MP4 (.mp4, .m4v, .mov) or MPEG-TS (.ts), which "
                         f"play at any moment; got {target}.")
    return LIVE_FILE_FORMATS[suffix]


class LiveVideoWriter:
    """Encode RGB frames as they come into a video that plays at any moment, also after a kill.

    ``with LiveVideoWriter(target, info) as w: w.write(rgb, pts)``

    - Targets (``live_target_format``): a file written in place (no temporary: it must be playable
      while it grows): fragmented MP4 (``movflags=frag_keyframe+empty_moov+default_base_moof``) or
      MPEG-TS; ``udp://``, ``tcp://`` or ``srt://`` (MPEG-TS; PyAV's FFmpeg has no SRT, and the
      error says so); ``-`` MPEG-TS to stdout. Packets are flushed as they are muxed.
    - H.264 yuv420p (what every player of a live stream takes; an odd size is padded by one
      replicated row/column), x264 ``veryfast`` with ``tune=zerolatency`` (no frame waits in the
      encoder), a keyframe every ``keyint`` seconds: a fragment each, so a kill loses at most that.
    - Timing: each frame's ``pts`` in ``info.time_base`` (made increasing when it is not), so gaps
      (dropped frames) show as the previous picture held.
    - ``abort()`` closes the container as ``close()`` does, without flushing the encoder: what was
      written stays playable. Write errors are one :class:`OutputError` (the cause, the target).
    """

    def __init__(self, target: str, info: VideoInfo, crf: int = 23, preset: str = "veryfast",
                 keyint: float = 1.0, overwrite: bool = True) -> None:
        self.target = str(target)
        self.format = live_target_format(self.target)
        self.info = info
        self.crf, self.preset, self.overwrite = crf, preset, overwrite
        self.fps = Fraction(info.fps) if info.fps else IMAGE_FOLDER_FPS
        self.time_base = Fraction(info.time_base) if info.time_base else 1 / self.fps
        self.gop = max(1, round(float(self.fps) * keyint))
        self.width, self.height = info.width + info.width % 2, info.height + info.height % 2
        self.frames_written = 0
        self.broken = False  # stdout's reader went away: nothing more is written
        self._is_file = False
        self._out = None
        self._stream = None
        self._last_pts: int | None = None

    def __enter__(self) -> "LiveVideoWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _where(self) -> str:
        return "stdout" if self.target == "-" else self.target

    def open(self) -> None:
        url = "pipe:1" if self.target == "-" else self.target
        options = {"flush_packets": "1"}
        if self.format in ("mp4", "mov"):
            options["movflags"] = _FRAGMENTED
        if url.lower().startswith("udp://") and "pkt_size" not in url:
            url += ("&" if "?" in url else "?") + "pkt_size=1316"  # 7 TS packets: a datagram under the usual MTU
        is_file = self._is_file = not (self.target == "-" or "://" in self.target)
        if is_file:
            folder = Path(self.target).parent
            if not folder.is_dir():
                raise VideoError(f"folder {folder} does not exist: create it or choose another output path.")
            if Path(self.target).exists() and not self.overwrite:
                raise OutputError(f"{self.target} already exists; use --overwrite to replace it.")
        try:
            self._out = av.open(url, "w", format=self.format, options=options)
        except av.error.ProtocolNotFoundError:
            scheme = url.split("://", 1)[0]
            raise OutputError(f"this FFmpeg build (PyAV's) cannot send {scheme}:// streams: write MPEG-TS to stdout "
                              f"and send it with the ffmpeg program: -o - --format overlay | ffmpeg -i - -c copy -f "
                              f"mpegts '{url}'.") from None
        except OSError as e:  # av.error.OSError too: refused, unreachable, a full disk, read-only
            if is_file:
                raise output_error(e, self.target) from None
            raise OutputError(f"Cannot send the overlay to {self._where()} ({_ffmpeg_reason(e)}): check the address "
                              f"and that the receiver listens.") from None
        except av.FFmpegError as e:
            raise OutputError(f"Cannot write {self._where()} ({_ffmpeg_reason(e)}).") from None
        try:
            stream = self._out.add_stream("libx264", rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            stream.codec_context.time_base = self.time_base
            stream.options = {"crf": str(self.crf), "preset": self.preset, "tune": "zerolatency", "g": str(self.gop),
                              "bf": "0"}
            self._stream = stream
            self._out.start_encoding()
        except (av.FFmpegError, OSError, ValueError) as e:
            self.abort()
            raise OutputError(f"Cannot start writing {self._where()} ({_ffmpeg_reason(e)}).") from None

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode one (H, W, 3) uint8 RGB frame at ``pts`` (``info.time_base`` units)."""
        if self.broken:
            return
        if self._out is None:
            raise VideoError("LiveVideoWriter.write called outside its with-block (or after close).")
        frame = _video_frame(image, self.info, self.width, self.height)
        step = max(1, round(1 / (self.fps * self.time_base)))
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + step
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        frame.pts, frame.time_base = int(pts), self.time_base
        self._last_pts = int(pts)
        try:
            for packet in self._stream.encode(frame):
                self._out.mux(packet)
        except (av.FFmpegError, OSError) as e:
            if self.target == "-" and isinstance(e, OSError) and e.errno == errno.EPIPE:
                self.broken = True  # `| ffplay -` closed: the reader has what it wanted
                self.abort()
                return
            raise self._failed(e) from None
        self.frames_written += 1

    def _failed(self, err: Exception) -> OutputError:
        self.abort()
        if isinstance(err, OSError) and err.errno and self._is_file:
            return output_error(err, self.target)
        return OutputError(f"Cannot write {self._where()}: FFmpeg failed to encode or send the video "
                           f"({_ffmpeg_reason(err)}).")

    def close(self) -> None:
        """Flush the encoder and finish the container."""
        if self._out is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._out.mux(packet)
            out, self._out = self._out, None
            out.close()
        except (av.FFmpegError, OSError) as e:
            raise self._failed(e) from None

    def abort(self) -> None:
        """Finish the container without flushing the encoder; never raises (what was written stays)."""
        out, self._out = self._out, None
        if out is not None:
            try:
                out.close()
            except Exception:  # noqa: BLE001 - a full disk or a closed pipe: the file keeps what it had
                pass
