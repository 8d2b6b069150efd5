"""Live sources: network streams, capture devices and stdin, read once, as the frames come. No torch.

    source = LiveSource("udp://127.0.0.1:5000", timeout=10, realtime=True)
    for result in predictor.stream(source): ...      # Predictor.stream takes it like any Source
    source.stats().line()                             # processed, dropped, frames/s, latency

A live source has no known length and can be read only once: ``rtsp://``, ``rtmp://``, ``srt://``,
``udp://``, ``tcp://``, ``http(s)://`` (HLS included), a capture device (``/dev/video0``, through
v4l2), or ``-`` for a container stream on stdin (MPEG-TS, Matroska, NUT, ... anything FFmpeg
detects without seeking). A plain file path can be read this way too (``--realtime`` on a file:
played at its own rate, as if it were live).

Opening
- PyAV's ``av.open`` with ``timeout=(S, S)``: nothing answering within S seconds (``--timeout``)
  is one :class:`VideoError`, as are a refused connection, a protocol this FFmpeg build lacks (PyAV's
  wheels have no SRT: the message says how to pipe it in), data that is not a video, or a device
  that does not exist. The first frame is decoded before the source exists, so its size and rate
  are known (``info``: ``kind="live"``, ``num_frames`` and ``duration`` None) and a stream that
  is not video fails at once. Stdin must be a pipe (not a terminal) and say something within S
  seconds; afterwards it may pause as long as the writer keeps it open.
- Of several video streams (HLS variants) the one with the most pixels is read, the others are
  discarded (their segments are not downloaded).

Reading (a thread of its own, started by ``frames()``)
- Demux and decode (slice threads, so no frame-thread delay), stamp each frame with its arrival
  (``time.monotonic()``), apply the window (``--start/--end/--stride``; ``--end`` ends the
  stream), and put it in a bounded buffer; RGB conversion happens when the consumer takes it, so a
  dropped frame costs its decode only.
- Indices count every decoded frame from the start, reconnects included. Times are seconds from the
  first frame, by the frames' own timestamps, kept continuous: a timestamp that goes back or jumps
  forward by more than S seconds (a sender restarted behind the same address, an MPEG-TS clock
  wrap, a reconnect) continues one frame after the previous one. ``pts`` is that time in
  ``info.time_base`` (the first stream's). A frame of another size than the first (a reconnect, an
  HLS variant switch) is scaled to the first's size, with one warning.

When the model is slower than the stream
- ``realtime``: one frame waits; a newer one replaces it and the replaced one is dropped (a
  :class:`Drop`: counted, ``null`` in video-level results, a ``dropped`` line in JSON lines).
  Sources whose sender waits for the reader (stdin, files, ``http(s)``, ``tcp``) are paced by
  their timestamps (released no earlier than their time after the first frame), as a live sender
  would deliver them: else a file would be read, and dropped, at disk speed.
- otherwise every frame is kept while the buffer has room (``buffer`` frames; default
  ``BUFFER_SECONDS`` of frames, at most ``BUFFER_BYTES`` of pictures, at least 8). When it is
  full, a sender that waits (stdin, files, ``http(s)``, ``tcp``: TCP's flow control holds it) is
  made to wait: nothing is lost, the stream goes at the model's pace. A sender that cannot wait
  (``udp``, ``rtp``, ``rtsp``, ``rtmp``, ``srt``, devices: blocking would lose packets inside FFmpeg
  and corrupt pictures) loses the oldest waiting frame instead, counted as dropped, with one warning.

Ending
- End of data ends the stream. :meth:`LiveSource.stop` (the CLI's first Ctrl-C or SIGTERM) stops
  reading new data, flushes the decoder and ends the stream: what has arrived is still taken. (A
  reader blocked inside a read of a silent stream is not waited for more than ``STOP_GRACE``
  seconds; it closes its connection when the read times out.)
- A lost connection (a read error, or no packet for S seconds): with ``reconnect=N`` up to N new
  connections are tried, waiting ``BACKOFF`` seconds before each (0.5, 1, 2, 4, then 8), and the
  same stream goes on (same reader and model state; indices and times continue); N counts per
  loss (frames flowing again reset it). Without it, or when the retries fail, the stream ends as
  at its end, with a warning. With ``reconnect``, an end of data from a network sender (udp, tcp,
  rtsp, rtmp, srt) counts as a loss too: a live sender that restarts and one that finished look
  the same. Stdin cannot reconnect; for ``http(s)`` only a failure counts (the server says when a
  resource is complete), and a file reconnected over HTTP starts again at its beginning.
- ``stats()`` at any time: frames arrived, processed, dropped, reconnects, frames/s, and the
  latency from a frame's arrival to its result (median and 95th percentile), as
  :class:`LiveStats`.

Layout: :class:`LiveSource` (with its reader thread) and :class:`LiveReader` are here; the parts
they are built from are in ``io.live_parts`` (what a source string means, opening a connection,
the stream clock, the buffer, the records :class:`Drop` and :class:`LiveStats`), all importable
from here.
"""

from __future__ import annotations

import os
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np

from videomt_cli.errors import InputError, VideoMTError
from videomt_cli.io.live_parts import (
    LIVE_SCHEMES,
    STOP_GRACE,
    WAITING_SCHEMES,
    Drop,
    LiveStats,
    _Arrival,
    _Buffer,
    _Clock,
    _Connection,
    _ends_at_eof,
    _info,
    is_live,
    live_info_lines,
    probe_live,
    stream_name,
    waits_for_reader,
)
from videomt_cli.io.probe import MAX_BAD_PACKETS, _ffmpeg_reason
from videomt_cli.io.read import Frame, Reader, Source
from videomt_cli.io.window import Window
from videomt_cli.records import Timeline

__all__ = ["BACKOFF", "BUFFER_BYTES", "BUFFER_SECONDS", "LIVE_SCHEMES", "MAX_UNCLAIMED", "STOP_GRACE",
           "WAITING_SCHEMES", "Drop", "LiveReader", "LiveSource", "LiveStats", "is_live", "live_info_lines",
           "probe_live", "stream_name", "waits_for_reader"]

BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds before reconnect attempt 1, 2, ...; then the last
BUFFER_SECONDS = 10
BUFFER_BYTES = 512 * 2**20
MAX_UNCLAIMED = 100_000  # Drop records and latencies kept for a consumer that does not claim them


# ----------------------------------------------------------------------------- the source


class LiveSource(Source):
    """A live stream as a :class:`Source` (``kind="live"``, read once). Opening connects and
    decodes the first frame (errors are raised here); ``frames(window)`` starts the reader thread.

    timeout: seconds to wait for an answer, and for the next packet before the connection counts
        as lost; reconnect: new connections tried after each loss; realtime: keep only the newest
        frame; buffer: frames that may wait otherwise (default: 10 s of them, at most 512 MiB);
    on_warning: called (from the reader thread too) with each warning as it happens; they are
        also kept in ``warnings``. Close it (or use ``with``) to stop the thread.
    """

    def __init__(self, source, *, timeout: float = 10.0, reconnect: int = 0, realtime: bool = False,
                 buffer: int | None = None, on_warning: Callable[[str], None] | None = None) -> None:
        target = os.fspath(source)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InputError(f"--timeout must be a positive number of seconds, got {timeout!r}.")
        if isinstance(reconnect, bool) or not isinstance(reconnect, int) or reconnect < 0:
            raise InputError(f"--reconnect must be a whole number >= 0, got {reconnect!r}.")
        if reconnect and target == "-":
            raise InputError("--reconnect cannot apply to stdin: a pipe cannot be opened again.")
        if buffer is not None and (isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1):
            raise InputError(f"buffer must be a whole number of frames >= 1, got {buffer!r}.")
        self.target = target
        self.timeout = float(timeout)
        self.reconnect = reconnect
        self.realtime = bool(realtime)
        self.waits = waits_for_reader(target)
        self.warnings: list[str] = []
        self._on_warning = on_warning
        self._stop = threading.Event()
        self._connection: _Connection | None = _Connection(target, self.timeout, self._stop)
        info = _info(target, self._connection)
        super().__init__(info, rereadable=False)
        step = 1 / info.fps if info.fps else Fraction(1, 30)
        self._clock = _Clock(step, max(self.timeout, 1.0), info.time_base)
        if buffer is None:
            picture = max(1, info.width * info.height * 3 // 2)  # decoded YUV 4:2:0 waits, not RGB
            buffer = max(8, min(round(BUFFER_SECONDS / float(step)), BUFFER_BYTES // picture))
        self._buffer = _Buffer(buffer, self.realtime, self.waits, self._stop)
        self.drops: deque[Drop] = deque(maxlen=MAX_UNCLAIMED)
        self._latency_of: dict[int, float] = {}
        self._latencies = array("d")
        self._pts, self._times = array("q"), array("d")
        self._count = self._dropped = self._processed = self.reconnects = 0
        self._first: float | None = None  # monotonic arrival of the first frame taken in
        self._t0 = 0.0  # its stream time
        self._last_result: float | None = None
        self._resized = False
        self._error: BaseException | None = None
        self.ended = ""
        self._thread: threading.Thread | None = None
        self._reader: LiveReader | None = None

    # -- what the consumer sees

    @property
    def buffer_size(self) -> int:
        return self._buffer.capacity

    def frames(self, window: Window = Window(), count_rest: bool = True, images: bool = True) -> "LiveReader":
        if self._reader is not None or self._connection is None:
            raise InputError("a live stream can be read once: its frames are gone once taken.")
        self._reader = LiveReader(self, window)
        return self._reader

    def stop(self, *_signum) -> None:
        """End the stream as at its end: no new data is read, what has arrived is still taken.
        Safe from a signal handler (sets a flag only)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the reader thread and wait for it (a read blocked in FFmpeg ends by itself within
        ``timeout`` of the source; the thread, a daemon, closes its connection then)."""
        self._stop.set()
        self._buffer.finish()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            from videomt_cli.io.prefetch import join

            join(thread, timeout)
        elif thread is None and self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def take_drops(self, before: int | None = None) -> list[Drop]:
        """Drops not yet claimed with an index below ``before`` (all of them when None), in order.
        When frame ``i``'s result is out, every drop before ``i`` is known."""
        out = []
        while self.drops and (before is None or self.drops[0].index < before):
            out.append(self.drops.popleft())
        return out

    def latency(self, index: int) -> float | None:
        """Seconds from frame ``index``'s arrival to its result (claimed once; None if unknown)."""
        return self._latency_of.pop(index, None)

    def stats(self) -> LiveStats:
        latency = None
        if len(self._latencies):
            values = np.frombuffer(self._latencies, dtype=np.float64)
            latency = (float(np.median(values)), float(np.percentile(values, 95)))
        seconds = 0.0
        if self._last_result is not None and self._first is not None:
            seconds = self._last_result - self._first
        return LiveStats(frames=self._count, processed=self._processed, dropped=self._dropped,
                         reconnects=self.reconnects, seconds=seconds, latency=latency, ended=self.ended)

    # -- called by LiveReader, in the consumer's thread

    def _start(self, window: Window) -> None:
        self._thread = threading.Thread(target=self._run, args=(window,), name="videomt-live", daemon=True)
        self._thread.start()

    def _take(self, n: int) -> list[Frame]:
        items = self._buffer.take(n)
        if not items and self._error is not None:
            error, self._error = self._error, None
            raise error
        return [self._frame(item) for item in items]

    def _frame(self, item: _Arrival) -> Frame:
        info, frame = self.info, item.frame
        k = (-info.rotation // 90) % 4  # np.rot90 turns counter-clockwise
        coded = (info.height, info.width) if k % 2 else (info.width, info.height)
        if (frame.width, frame.height) != coded:
            if not self._resized:
                self._resized = True
                self._warn(f"the stream's frames changed size at frame {item.index} ({frame.width}x{frame.height}); "
                           f"they are scaled to the first frames' {coded[0]}x{coded[1]}.")
            image = frame.to_ndarray(width=coded[0], height=coded[1], format="rgb24")
        else:
            image = frame.to_ndarray(format="rgb24")
        if k:
            image = np.rot90(image, k)
        return Frame(item.index, item.time, item.pts, np.ascontiguousarray(image), arrival=item.arrival)

    def _done(self, frames) -> None:
        now = time.monotonic()
        for f in frames:
            if f.arrival is None:
                continue
            latency = now - f.arrival
            if len(self._latencies) < 50 * MAX_UNCLAIMED:
                self._latencies.append(latency)
            if len(self._latency_of) >= MAX_UNCLAIMED:
                self._latency_of.pop(next(iter(self._latency_of)))
            self._latency_of[f.index] = latency
        self._processed += len(frames)
        self._last_result = now

    def _timeline(self) -> Timeline:
        return Timeline(tuple(self._pts), tuple(self._times), truncated=self.ended == "connection lost",
                        warnings=tuple(self.warnings))

    def _warn(self, message: str) -> None:
        if message in self.warnings:
            return
        self.warnings.append(message)
        if self._on_warning is not None:
            try:
                self._on_warning(message)
            except Exception:  # noqa: BLE001 - a broken printer must not end the stream
                pass

    # -- the reader thread

    def _run(self, window: Window) -> None:
        select_ = window.selector()
        connection, self._connection = self._connection, None
        try:
            while connection is not None:
                status, detail = self._read(connection, select_)
                connection.close()
                connection = None
                if status == "end" and (not self.reconnect or _ends_at_eof(self.target)):
                    self.ended = "end of stream"
                elif status in ("stopped", "window end"):
                    self.ended = status
                else:  # lost; or ended, where a restarted sender looks the same (reconnect, udp, rtsp, ...)
                    connection = self._rejoin(detail or "the sender stopped")
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, who re-raises it
            self._error = e
            self.ended = self.ended or "error"
        finally:
            if connection is not None:
                connection.close()
            self._buffer.finish()

    def _rejoin(self, lost: str) -> _Connection | None:
        """A new connection after a loss, or None (the stream ends, with a warning)."""
        where = "stdin" if self.target == "-" else self.target
        for attempt in range(self.reconnect):
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            self._warn(f"{where}: connection lost ({lost}) at frame {self._count}; reconnecting in {delay:g} s "
                       f"({attempt + 1}/{self.reconnect}).")
            if self._stop.wait(delay):
                break
            try:
                connection = _Connection(self.target, self.timeout, self._stop)
            except VideoMTError as e:
                lost = getattr(e, "short", None) or str(e).rstrip(".")
                continue
            self.reconnects += 1
            self._clock.rejoin()
            self._warn(f"{where}: reconnected (attempt {attempt + 1}); frame {self._count} follows.")
            return connection
        if self._stop.is_set():
            self.ended = "stopped"
            return None
        if self.reconnect:
            tried = f" and not back after {self.reconnect} attempt{'s' if self.reconnect != 1 else ''}"
            self._warn(f"{where}: connection lost ({lost}){tried}; the stream ends at frame {self._count}.")
        else:
            self._warn(f"{where}: connection lost ({lost}); the stream ends at frame {self._count} (--reconnect N "
                       f"tries again).")
        self.ended = "connection lost"
        return None

    def _read(self, connection: _Connection, select_) -> tuple[str, str]:
        """Read one connection: ("end" | "stopped" | "window end" | "lost", why)."""
        pending, connection.pending = connection.pending, []
        for frame in pending:
            if self._arrive(frame, select_):
                return "window end", ""
        stream, bad = connection.stream, 0
        try:
            for packet in connection.packets:
                if self._stop.is_set():
                    return self._flush(stream, select_) or "stopped", ""
                try:
                    frames = packet.decode()
                    bad = 0
                except av.FFmpegError as e:
                    bad += 1
                    if bad > MAX_BAD_PACKETS:
                        return self._flush(stream, select_) or "lost", f"undecodable data: {_ffmpeg_reason(e)}"
                    continue
                for frame in frames:
                    if self._arrive(frame, select_):
                        return "window end", ""
        except (av.FFmpegError, OSError) as e:
            why = (f"no data for {self.timeout:g} s" if isinstance(e, (av.error.ExitError, av.error.TimeoutError))
                   else _ffmpeg_reason(e))
            return self._flush(stream, select_) or ("stopped" if self._stop.is_set() else "lost"), why
        return ("stopped" if self._stop.is_set() else "end"), ""  # the demuxer's flush packet emptied the decoder

    def _flush(self, stream, select_) -> str | None:
        """The frames still inside the decoder; "window end" if the window ended among them."""
        try:
            for frame in stream.codec_context.decode(None):
                if self._arrive(frame, select_):
                    return "window end"
        except av.FFmpegError:
            pass
        return None

    def _arrive(self, frame, select_) -> bool:
        """Take in one decoded frame; True when the window has ended."""
        t, pts = self._clock.stamp(frame)
        i = self._count
        if select_.ended(i, t):
            return True  # the stream ends before this frame: it is not part of the video
        self._count += 1
        self._pts.append(pts)
        self._times.append(t)
        if not select_.wants(i, t):
            return False
        now = time.monotonic()
        if self._first is None:
            self._first, self._t0 = now, t
        elif self.realtime and self.waits:  # pace a sender that would wait: as if it were live
            due = self._first + (t - self._t0)
            if due > now and self._stop.wait(due - now):
                pass
            now = time.monotonic()
        for old in self._buffer.put(_Arrival(i, t, pts, now, frame)):
            self._dropped += 1
            self.drops.append(Drop(old.index, old.time))
        if self._buffer.overflowed and not any(w.startswith("the model is slower") for w in self.warnings):
            seconds = self._buffer.capacity * float(self._clock.step)
            self._warn(f"the model is slower than the stream and the buffer of {self._buffer.capacity} frames "
                       f"({seconds:.1f} s) is full: the oldest waiting frames are dropped (counted; null in the "
                       f"results). --realtime keeps the newest frame instead, with less latency.")
        return False


class LiveReader(Reader):
    """The one pass over a :class:`LiveSource`. Iterate it frame by frame, or take ``chunks(n)``:
    what waits, up to ``n`` frames, without waiting for more than the first (what
    ``Predictor.stream`` does, so a chunk never waits for frames that have not arrived)."""

    def __init__(self, source: LiveSource, window: Window) -> None:
        super().__init__(source.info, window)
        self.source = source
        self._taking = False

    def _frames(self) -> Iterator[Frame]:
        for chunk in self.chunks(1):
            yield from chunk

    def chunks(self, size: int) -> Iterator[list[Frame]]:
        if self._taking:
            raise InputError("a Reader reads its frames once; a live stream cannot be read again.")
        self._taking = True
        src = self.source
        src._start(self.window)
        try:
            while True:
                frames = src._take(size)
                if not frames:
                    break
                yield frames
        finally:
            src.stop()  # also when the consumer leaves early: the thread ends with its connection
        src.ended = src.ended or "stopped"  # the reader may still be inside a read of a silent stream
        self.timeline = src._timeline()

    def done(self, frames) -> None:
        self.source._done(frames)
