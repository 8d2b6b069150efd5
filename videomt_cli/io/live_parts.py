"""The parts a live source (``io.live``) is built from, each small and independent of it. No torch.

- What a source string means: ``is_live`` (a stream, a device, ``-``), ``waits_for_reader`` (whose
  sender waits for a slow reader), ``stream_name`` (a file-name stem).
- The records a live run hands out: :class:`Drop` (a frame never processed) and :class:`LiveStats`.
- Opening: one connection (``_Connection``: PyAV's ``av.open`` with timeouts, the video stream
  picked, the first frames decoded), its errors as one line each, and what it says before reading
  (``probe_live``, ``live_info_lines`` for ``videomt info``).
- The stream clock (``_Clock``): continuous seconds from each frame's own timestamp.
- The buffer (``_Buffer``) between the reader thread and the consumer: bounded, keeps the newest
  frame under ``realtime``, makes a waiting sender wait, else drops the oldest.

They are apart so that ``io.live`` reads as the rules and the source that applies them; the rules
themselves (timeouts, reconnects, dropping) are in ``io.live``'s docstring.
"""

from __future__ import annotations

import os
import re
import select
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

import av

from videomt_cli.errors import InputError, VideoError, VideoMTError
from videomt_cli.io.probe import MAX_BAD_PACKETS, _ffmpeg_reason
from videomt_cli.records import VideoInfo

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "http", "https", "rtp")
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

WAITING_SCHEMES = ("http", "https", "tcp", "file")  # senders that wait for a slow reader (TCP flow control)
STOP_GRACE = 1.0  # seconds the consumer waits, after stop(), for a reader still inside a read


def is_live(source) -> bool:
    """Whether ``source`` (as given on the command line) is a stream, a capture device or stdin."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    text = os.fspath(source)
    if text == "-":
        return True
    match = _URL.match(text)
    if match:
        return match.group(1).lower() in LIVE_SCHEMES
    return text.startswith("/dev/video")


def _scheme(text: str) -> str | None:
    match = _URL.match(text)
    return match.group(1).lower() if match else None


def waits_for_reader(source: str) -> bool:
    """Whether the sender of ``source`` waits while the reader is slow (stdin, files, http(s),
    tcp), so the reader may wait instead of dropping frames."""
    if source == "-":
        return True
    scheme = _scheme(source)
    if scheme is None:
        return not source.startswith("/dev/")
    return scheme in WAITING_SCHEMES


def _ends_at_eof(source: str) -> bool:
    """Whether the end of data is the stream's end even under ``reconnect``: stdin, files and
    http(s) (the server says when a resource is complete); a live sender over udp, tcp, rtsp, ...
    that restarts looks like one that finished."""
    scheme = _scheme(source)
    return scheme is None or scheme in ("http", "https", "file")


def stream_name(source: str) -> str:
    """A short file-name stem for a live source: ``stdin``, ``video0``, the URL's last path part or
    its host and port (``udp://127.0.0.1:5000`` -> ``127.0.0.1_5000``)."""
    if source == "-":
        return "stdin"
    text = source.split("?", 1)[0].rstrip("/")
    if _scheme(text):
        rest = text.split("://", 1)[1]
        host, _, path = rest.partition("/")
        tail = path.rsplit("/", 1)[-1] if path else ""
        tail = tail.rsplit(".", 1)[0] if "." in tail else tail
        text = tail or host.rsplit("@", 1)[-1].replace(":", "_")
    else:
        text = os.path.basename(text) or "stream"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "stream"


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Drop:
    """A frame that arrived but was never processed (``realtime``, or a full buffer)."""

    index: int
    time: float


@dataclass(frozen=True)
class LiveStats:
    """Where a live run stands. ``frames``: decoded so far (all of them, window or not);
    ``seconds``: wall time from the first frame taken in to the last result; ``latency``: (median,
    95th percentile) seconds from a frame's arrival to its result, None before the first result;
    ``ended``: why the stream ended ("" while it runs)."""

    frames: int
    processed: int
    dropped: int
    reconnects: int
    seconds: float
    latency: tuple[float, float] | None
    ended: str = ""

    @property
    def fps(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line for the end of a run, e.g. ``412 frames processed, 38 dropped (8.4%), 27.3
        frames/s, latency 61 ms median, 140 ms p95 (arrival to result)``."""
        total = self.processed + self.dropped
        parts = [f"{self.processed} frames processed", f"{self.dropped} dropped"
                 + (f" ({100 * self.dropped / total:.1f}%)" if total else ""), f"{self.fps:.1f} frames/s"]
        if self.latency is not None:
            parts.append(f"latency {1000 * self.latency[0]:.0f} ms median, {1000 * self.latency[1]:.0f} ms p95 "
                         f"(arrival to result)")
        if self.reconnects:
            parts.append(f"{self.reconnects} reconnect{'s' if self.reconnects != 1 else ''}")
        return ", ".join(parts)


# ----------------------------------------------------------------------------- opening


class _Pipe:
    """Stdin as the file-like object PyAV reads. A read waits in ``select`` so that ``stop()`` ends
    it (as end of data) and, while opening, so that a silent pipe fails after the timeout."""

    def __init__(self, fd: int, stop: threading.Event) -> None:
        self.fd = fd
        self.stop = stop
        self.deadline: float | None = None  # while opening: fail when nothing came by then

    def read(self, n: int) -> bytes:
        while not self.stop.is_set():
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise TimeoutError("no data")
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                return os.read(self.fd, n)
        return b""


def _open_error(target: str, e: Exception, timeout: float) -> VideoMTError:
    """The one line for a stream that cannot be opened; ``.short`` says why in a few words (for
    the warnings of a reconnect)."""
    scheme = _scheme(target)
    what = "stdin" if target == "-" else target
    if isinstance(e, av.error.ProtocolNotFoundError):
        short = f"no {scheme}:// in this FFmpeg"
        error = VideoError(f"this FFmpeg build (PyAV's) cannot open {scheme}:// streams: receive it with the ffmpeg "
                           f"program and pipe it in: ffmpeg -i '{target}' -c copy -f mpegts - | videomt segment - ...")
    elif isinstance(e, (av.error.ExitError, TimeoutError, av.error.TimeoutError)):
        short = f"no answer after {timeout:g} s"
        error = VideoError(f"{what}: {short}: check the address and that the stream is being sent (--timeout S "
                           f"waits longer).")
    elif isinstance(e, ConnectionRefusedError):
        short = "connection refused"
        error = VideoError(f"{what}: connection refused (nothing listens there): check the address and port, and "
                           f"that the sender runs.")
    elif isinstance(e, av.error.HTTPError):
        short = f"the server answered {_ffmpeg_reason(e)}"
        error = VideoError(f"{what}: {short}: check the address.")
    elif isinstance(e, av.error.InvalidDataError):
        short = "not a video stream"
        hint = (" (an mp4 needs its index first to be read from a pipe: send MPEG-TS, -f mpegts)"
                if target == "-" else "")
        error = VideoError(f"{what} does not hold a video stream FFmpeg can read (invalid data){hint}.")
    else:
        short = _ffmpeg_reason(e)
        error = VideoError(f"cannot open {what} ({short}).")
    error.short = short
    return error


def _pick_stream(container, target: str):
    """The video stream with the most pixels (HLS variants); every other stream is discarded."""
    videos = [s for s in container.streams.video
              if not (s.disposition & av.stream.Disposition.attached_pic) and s.codec_context is not None]
    if not videos:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise VideoError(f"{'stdin' if target == '-' else target} has no video stream (it holds: "
                         f"{', '.join(kinds)}).")
    best = max(videos, key=lambda s: (s.codec_context.width or 0) * (s.codec_context.height or 0))
    for s in container.streams:
        if s is not best:
            s.discard = av.stream.Discard.all
    best.codec_context.thread_type = "SLICE"  # frame threads hold frames back: latency
    return best


class _Connection:
    """One open container and its video stream, the first decoded frames in hand."""

    def __init__(self, target: str, timeout: float, stop: threading.Event) -> None:
        self.target = target
        self.container = None
        self.pending: list = []
        pipe = None
        try:
            if target == "-":
                if os.isatty(sys.stdin.fileno()):
                    raise InputError("stdin is a terminal: pipe a stream into it, e.g. ffmpeg -i INPUT -f mpegts - | "
                                     "videomt segment - ...")
                pipe = _Pipe(sys.stdin.fileno(), stop)
                pipe.deadline = time.monotonic() + timeout
                self.container = av.open(pipe, "r")
            elif target.startswith("/dev/"):
                if not os.path.exists(target):
                    raise VideoError(f"no capture device {target}: see which exist with ls /dev/video* (v4l2, Linux); "
                                     f"elsewhere, capture with ffmpeg and pipe it in (docs: Live streams).")
                self.container = av.open(target, "r", format="v4l2", timeout=(timeout, timeout))
            elif _scheme(target) is None and not os.path.exists(target):
                raise VideoError(f"{target} does not exist: check the path.")
            else:
                options = {"overrun_nonfatal": "1"} if _scheme(target) == "udp" else {}
                self.container = av.open(target, "r", timeout=(timeout, timeout), options=options)
            self.stream = _pick_stream(self.container, target)
            self.packets = self.container.demux(self.stream)
            self._first_frames(target)
            if pipe is not None:
                pipe.deadline = None  # a running pipe may pause as long as it stays open
        except VideoMTError:
            self.close()
            raise
        except (av.FFmpegError, OSError) as e:
            self.close()
            raise _open_error(target, e, timeout) from None

    def _first_frames(self, target: str) -> None:
        bad = 0
        for packet in self.packets:
            try:
                self.pending = list(packet.decode())
            except av.FFmpegError:
                bad += 1
                if bad > MAX_BAD_PACKETS:
                    break
                continue
            if self.pending:
                return
        raise VideoError(f"no frame of {'stdin' if target == '-' else target} could be decoded: the stream ended or "
                         f"is damaged.")

    def close(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail again
                pass


def probe_live(source: str, timeout: float = 10.0) -> tuple[VideoInfo, str]:
    """What a live source says before any frame is read beyond its first: (info, container format
    name). Raises like :class:`LiveSource` for a source that cannot be opened."""
    connection = _Connection(os.fspath(source), timeout, threading.Event())
    try:
        return _info(os.fspath(source), connection), connection.container.format.name
    finally:
        connection.close()


def _info(target: str, connection: _Connection) -> VideoInfo:
    stream, first = connection.stream, connection.pending[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    ccw = first.rotation or 0
    rotation = (-round(ccw / 90) * 90) % 360
    width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
    container = connection.container
    duration = container.duration / av.time_base if container.duration and container.duration > 0 else None
    return VideoInfo(path=target, width=width, height=height, fps=Fraction(rate) if rate else None, num_frames=None,
                     duration=duration, codec=stream.codec_context.name, rotation=rotation,
                     has_audio=len(container.streams.audio) > 0, kind="live",
                     time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000))


def live_info_lines(source: str, timeout: float = 10.0) -> list[tuple[str, str]]:
    """The rows of ``videomt info`` for a live source: what it can say without reading to the end."""
    from videomt_cli.io.probe import info_lines

    info, fmt = probe_live(source, timeout)
    kind = "stdin" if source == "-" else ("capture device" if source.startswith("/dev/") else "network stream")
    rows = info_lines(info)
    rows.insert(1, ("source", f"{kind}, live ({fmt})"))
    rows = [(k, "unknown (live: counted as they arrive)" if k == "frames" else v) for k, v in rows]
    if info.duration is None:
        rows = [(k, "unknown (live)" if k == "duration" else v) for k, v in rows]
    return rows


# ----------------------------------------------------------------------------- timing


class _Clock:
    """Continuous stream time (seconds from the first frame) from each frame's own timestamp:
    a timestamp that goes back, or forward by more than ``jump`` seconds, and the first frame
    after a reconnect continue one frame (``step``) after the previous frame."""

    def __init__(self, step: Fraction, jump: float, time_base: Fraction) -> None:
        self.step = step
        self.jump = Fraction(jump)
        self.time_base = time_base
        self.offset: Fraction | None = None
        self.last: Fraction | None = None

    def rejoin(self) -> None:
        self.offset = None

    def stamp(self, frame) -> tuple[float, int]:
        own = frame.pts * Fraction(frame.time_base) if frame.pts is not None and frame.time_base else None
        follow = self.last + self.step if self.last is not None else Fraction(0)
        if own is None:
            t = follow
        elif self.offset is None:
            t, self.offset = follow, follow - own
        else:
            t = own + self.offset
            if self.last is not None and (t <= self.last or t - self.last > self.jump):
                t, self.offset = follow, follow - own
        self.last = t
        return float(t), round(t / self.time_base)


# ----------------------------------------------------------------------------- the buffer


class _Arrival:
    __slots__ = ("index", "time", "pts", "arrival", "frame")

    def __init__(self, index: int, time: float, pts: int, arrival: float, frame) -> None:
        self.index, self.time, self.pts, self.arrival, self.frame = index, time, pts, arrival, frame


class _Buffer:
    """Decoded frames waiting for the consumer; thread-safe. ``put`` returns the frames it dropped."""

    def __init__(self, capacity: int, realtime: bool, waits: bool, stop: threading.Event) -> None:
        self.capacity = 1 if realtime else capacity
        self.realtime = realtime
        self.waits = waits and not realtime
        self.stop = stop
        self.items: deque[_Arrival] = deque()
        self.cond = threading.Condition()
        self.finished = False
        self.overflowed = False

    def put(self, item: _Arrival) -> list[_Arrival]:
        dropped = []
        with self.cond:
            while len(self.items) >= self.capacity:
                if self.waits:
                    if self.stop.is_set():
                        break  # stopping: the decoder's last frames go in beyond the bound
                    self.cond.wait(0.1)  # the sender waits too (TCP flow control, a pipe)
                    continue
                dropped.append(self.items.popleft())
                if not self.realtime:
                    self.overflowed = True
            self.items.append(item)
            self.cond.notify_all()
        return dropped

    def take(self, n: int) -> list[_Arrival]:
        """Up to ``n`` waiting frames, oldest first: waits for the first, not for the others; []
        once the stream has ended and nothing waits, or ``STOP_GRACE`` seconds after a stop with
        nothing waiting (a reader blocked on a silent stream ends by itself later)."""
        with self.cond:
            stopped = None
            while not self.items and not self.finished:
                if self.stop.is_set():
                    stopped = stopped or time.monotonic()
                    if time.monotonic() - stopped > STOP_GRACE:
                        break
                self.cond.wait(0.1)  # short waits: a signal handler runs in this (the main) thread
            out = [self.items.popleft() for _ in range(min(n, len(self.items)))]
            self.cond.notify_all()
            return out

    def finish(self) -> None:
        with self.cond:
            self.finished = True
            self.cond.notify_all()
