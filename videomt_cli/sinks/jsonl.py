"""JSON lines: one line per processed frame, written as it happens (``--format jsonl``, ``.jsonl``,
``-o -`` for stdout; ``docs/formats.md``). No torch.

Every line is one JSON object (UTF-8, ``\\n``-terminated) whose ``type`` says what it is:

- ``video`` (first): ``version`` (1), ``source``, ``width``, ``height``, ``fps`` (a number, or
  null when the stream does not say), ``live``, ``task``, ``categories`` (``id``, ``name``,
  ``isthing``), ``started`` (Unix time).
- ``frame``: ``frame`` (index in the stream), ``time`` (seconds from the first frame, by the
  frames' own timestamps), ``wall`` (Unix time the result was ready), ``latency`` (seconds from
  the frame's arrival to its result; null for files), ``objects``: ``track_id`` (query + 1, the
  same object in every frame), ``category_id``, ``score`` (online: the running score), ``box``
  [x0, y0, x1, y1] (pixels, x1/y1 exclusive), ``mask`` (compressed COCO RLE ``{"size": [h, w],
  "counts": str}``).
- ``dropped``: ``frame``, ``time``: a frame that arrived but was not processed (``--realtime``,
  or a full buffer); it comes before the next processed frame's line.
- ``end`` (last, only when the run ended, normally or by Ctrl-C / SIGTERM): ``reason`` ("end of
  stream", "stopped", "connection lost", "window end", "complete"), ``processed``, ``dropped``,
  ``reconnects``, ``fps``, ``latency`` (``median``, ``p95`` seconds, or null).

Written in place, not atomically: the lines are there to be read while the run goes (``tail -f``,
a pipe), so the file appears at once and grows line by line. Each line goes out in one write of
the whole line and is never torn: if a write fails part-way (a full disk, a second Ctrl-C) the
file is cut back to its last complete line. A file without the ``end`` line is the record of a
run that was killed or failed. An existing file is refused without ``overwrite`` (and emptied
with it); ``-`` is stdout (nothing else may go there then). A reader that goes away (``| head``)
ends nothing by itself: ``broken`` says so, and the CLI ends the stream.

Fed :class:`~videomt_cli.records.FrameResult` records (``frame``, ``dropped``), or one whole
:class:`~videomt_cli.records.VideoResult` (``add``: the video-level tracks, frame by frame).
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterable

from videomt_cli.errors import OutputError
from videomt_cli.io import masks as mask_ops
from videomt_cli.records import Category, FrameResult, VideoInfo, VideoResult
from videomt_cli.sinks.base import Sink, plain_rle, writes

VERSION = 1


def _number(value: float, digits: int) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() else round(value, digits)


def _box(box) -> list:
    return [_number(v, 2) for v in box]


class JsonlSink(Sink):
    """JSON lines into ``path`` in place, or to stdout for ``-`` (see the module docstring)."""

    format = "jsonl"
    create_tmp = False

    def __init__(self, path, overwrite: bool = False) -> None:
        self.stdout = os.fspath(path) == "-"
        super().__init__(path, overwrite)
        self._fd: int | None = None
        self._good = 0  # bytes of complete lines in the file
        self.broken = False  # stdout's reader went away
        self.frames = 0  # frame lines written
        self.started = False
        self.ended = False

    def _check_destination(self) -> None:
        if not self.stdout:
            super()._check_destination()

    # -- life cycle: in place, no temporary

    def open(self) -> "JsonlSink":
        if self._fd is None and not self._closed:
            if self.stdout:
                self._fd = 1
            else:
                flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if self.overwrite else os.O_EXCL)
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(self.path, flags, 0o666)
                except FileExistsError:
                    raise OutputError(f"{self.path} already exists; use --overwrite to replace it.") from None
                except OSError as err:
                    from videomt_cli.io.atomic import output_error

                    raise output_error(err, self.path) from None
        return self

    def close(self) -> None:
        """Flush the lines to disk and close (nothing to rename: the file is in place)."""
        if self._closed:
            return
        self.open()
        with self._aborting():
            if not self.stdout and self._fd is not None:
                os.fsync(self._fd)
        self._release()
        self._closed = True

    def abort(self) -> None:
        """Keep the complete lines (a torn one is cut off), close; never raises."""
        self._closed = True
        self._release()

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None or self.stdout:
            return
        try:
            if os.fstat(fd).st_size != self._good:
                os.ftruncate(fd, self._good)  # a write that failed part-way
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass

    def _write(self, obj: dict) -> None:
        if self.broken:
            return
        data = (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
        self.open()
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except BrokenPipeError:
            if not self.stdout:
                raise
            self.broken = True  # `| head`: the reader has what it wanted
            return
        except OSError as err:
            if self.stdout and err.errno == errno.EPIPE:
                self.broken = True
                return
            raise
        self._good += len(data)

    # -- lines

    @writes
    def start(self, info: VideoInfo, task: str, categories: Iterable[Category], live: bool = False,
              started: float | None = None) -> None:
        """The ``video`` line: what the stream is and what its ids mean."""
        if self.started:
            raise OutputError(f"{self.path} holds one video's lines (frame numbers are per video); write each video "
                              f"to its own file.")
        self.started = True
        self._write({"type": "video", "version": VERSION, "source": info.path, "width": info.width,
                     "height": info.height, "fps": float(info.fps) if info.fps else None, "live": bool(live),
                     "task": task, "categories": [{"id": c.id, "name": c.name, "isthing": bool(c.isthing)}
                                                  for c in categories],
                     "started": round(time.time() if started is None else started, 3)})

    @writes
    def frame(self, result: FrameResult, latency: float | None = None, wall: float | None = None) -> None:
        """One processed frame's ``frame`` line, from its online results."""
        objects = [{"track_id": int(t), "category_id": int(c), "score": round(float(s), 6), "box": _box(b),
                    "mask": plain_rle(rle)}
                   for t, c, s, b, rle in zip(result.track_ids, result.class_ids, result.scores, result.boxes,
                                               result.rles)]
        self._frame_line(result.index, result.time, objects, latency, time.time() if wall is None else wall)

    def _frame_line(self, index: int, t: float, objects: list, latency: float | None, wall: float | None) -> None:
        self._write({"type": "frame", "frame": int(index), "time": round(float(t), 6),
                     "wall": round(wall, 3) if wall is not None else None,
                     "latency": round(latency, 4) if latency is not None else None, "objects": objects})
        self.frames += 1

    @writes
    def dropped(self, index: int, t: float) -> None:
        """A frame that arrived but was not processed."""
        self._write({"type": "dropped", "frame": int(index), "time": round(float(t), 6)})

    @writes
    def end(self, reason: str, processed: int, dropped: int = 0, reconnects: int = 0, fps: float | None = None,
            latency: tuple[float, float] | None = None) -> None:
        """The last line: why and how the run ended."""
        self.ended = True
        self._write({"type": "end", "reason": reason, "processed": int(processed), "dropped": int(dropped),
                     "reconnects": int(reconnects), "fps": round(fps, 3) if fps is not None else None,
                     "latency": {"median": round(latency[0], 4), "p95": round(latency[1], 4)} if latency else None})

    @writes
    def add(self, result: VideoResult) -> None:
        """A whole video's video-level results: the ``video`` line, a ``frame`` line for each
        processed frame (the tracks with pixels there, video-level scores), the ``end`` line."""
        self.start(result.video, result.task, result.categories, live=result.video.kind == "live")
        times = result.timeline.times if result.timeline is not None else None
        fps = float(result.video.fps) if result.video.fps else 30.0
        for i in result.processed:
            found = [(seg, result.mask(seg, i)) for seg in result.segments]
            found = [(seg, rle) for seg, rle in found if rle is not None and not mask_ops.is_empty(rle)]
            boxes = mask_ops.bboxes([rle for _, rle in found]).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
            objects = [{"track_id": seg.track_id, "category_id": seg.category_id, "score": round(seg.score, 6),
                        "box": _box(box), "mask": plain_rle(rle)} for (seg, rle), box in zip(found, boxes.tolist())]
            t = times[i] if times is not None and i < len(times) else i / fps
            self._frame_line(i, t, objects, None, None)
        self.end("complete", processed=len(result.processed))
        self.count += 1
