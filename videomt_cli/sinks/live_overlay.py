"""The online overlay: each frame's own results drawn on it and encoded as they come (``--format
overlay`` on a live source, or to ``-``). No torch.

Where the file overlay (``sinks.overlay``) decodes the video again after the run and draws the
video-level tracks, this one draws each :class:`~videomt_cli.records.FrameResult` (its online
selection: masks, contours, "id label score") on the frame it belongs to, as the frame is
processed, into a :class:`~videomt_cli.io.writer.LiveVideoWriter`: a file written in place that
plays at any moment and after a kill (fragmented MP4 for ``.mp4``/``.m4v``/``.mov``, MPEG-TS for
``.ts``), a ``udp://``/``tcp://``/``srt://`` target (MPEG-TS), or ``-`` (MPEG-TS on stdout).

Only processed frames are in it, at their own timestamps: a dropped frame shows as the previous
picture held. Track colours are the file overlay's (by track id; semantic results by category).
"""

from __future__ import annotations

import os

from videomt_cli.errors import OutputError
from videomt_cli.records import Category, FrameResult, Segment, VideoInfo
from videomt_cli.sinks.overlay import draw_overlay


class LiveOverlaySink:
    """``start(info, categories, task)``, then ``frame(result)`` per processed frame, then
    ``close()`` (or ``abort()``, which keeps what was written playable). The destination is checked
    at construction: an existing file without ``overwrite`` is refused, so is a folder."""

    format = "overlay"

    def __init__(self, target: str | os.PathLike, overwrite: bool = False, alpha: float = 0.5,
                 color_by: str | None = None) -> None:
        from videomt_cli.io.writer import live_target_format

        self.target = os.fspath(target)
        self.container = live_target_format(self.target)  # a bad suffix or scheme fails here
        if not 0.0 <= alpha <= 1.0:
            raise OutputError(f"alpha must be in 0..1, got {alpha}")
        self.overwrite, self.alpha, self.color_by = overwrite, alpha, color_by
        self.is_file = not (self.target == "-" or "://" in self.target)
        if self.is_file:
            if os.path.isdir(self.target):
                raise OutputError(f"{self.target} is a folder; give a file name for the overlay video.")
            if os.path.lexists(self.target) and not overwrite:
                raise OutputError(f"{self.target} already exists; use --overwrite to replace it.")
        self.frames = 0
        self.warnings: list[str] = []
        self._writer = None
        self._categories: dict[int, Category] = {}
        self._color = "auto"

    @property
    def broken(self) -> bool:
        """Stdout's reader went away (nothing more is written)."""
        return self._writer is not None and self._writer.broken

    def start(self, info: VideoInfo, categories, task: str = "instance") -> None:
        from videomt_cli.io.writer import LiveVideoWriter

        if self._writer is not None:
            raise OutputError(f"{self.target} holds one stream's overlay.")
        self._categories = {c.id: c for c in categories}
        self._color = self.color_by or ("category" if task == "semantic" else "auto")
        self._info = info
        self._writer = LiveVideoWriter(self.target, info, overwrite=self.overwrite)
        self._writer.open()
        if info.width % 2 or info.height % 2:
            self.warnings.append(f"odd size {info.width}x{info.height} padded to {self._writer.width}x"
                                 f"{self._writer.height} for yuv420p H.264.")

    def frame(self, result: FrameResult, pts: int | None = None) -> None:
        """Draw ``result`` on its own frame (``result.image``) and encode it at ``pts`` (default:
        its time in the stream's time base)."""
        if self._writer is None:
            raise OutputError("LiveOverlaySink.frame called before start().")
        if result.image is None:
            raise OutputError("an online overlay needs each result's frame (FrameResult.image).")
        image = result.image
        if len(result):
            cats = self._categories
            pairs = [(Segment(int(t), int(c), float(s), isthing=cats[int(c)].isthing if int(c) in cats else True), m)
                     for t, c, s, m in zip(result.track_ids, result.class_ids, result.scores, result.masks)]
            image = draw_overlay(image, pairs, list(cats.values()), self.alpha, self._color)
        if pts is None:
            tb = self._info.time_base
            pts = round(result.time / tb) if tb else None
        self._writer.write(image, pts)
        self.frames += 1

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()

    def __enter__(self) -> "LiveOverlaySink":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
