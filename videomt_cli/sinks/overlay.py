"""Overlay videos: masks, contours and "id label score" drawn on the source's frames, encoded
with the source's exact rate, timestamps and audio. No torch.

The overlay is three stages in three threads: the source is decoded ahead (``io.prefetch``),
frames are drawn in the calling thread, and the encoder runs in a thread of its own
(``io.writer.BackgroundWriter``), so decoding and encoding overlap the drawing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from videomt_cli.errors import DatasetError, InputError, OutputError
from videomt_cli.io import masks as mask_ops
from videomt_cli.modeling.labels import palette_color
from videomt_cli.records import Category, Segment, VideoResult
from videomt_cli.sinks.base import Sink

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".ts")


def track_color(track_id: int) -> tuple[int, int, int]:
    """The overlay colour of a track: stable across frames, runs and videos."""
    return palette_color(track_id)


def _segment_color(seg: Segment, cats: dict[int, Category], color_by: str) -> tuple[int, int, int]:
    by_category = color_by == "category" or (color_by == "auto" and not seg.isthing)
    if by_category and seg.category_id in cats:
        return tuple(int(v) for v in cats[seg.category_id].color)
    return track_color(seg.track_id)


def draw_overlay(
    frame_rgb: np.ndarray,
    masks_for_frame: list[tuple[Segment, np.ndarray]],
    categories: list[Category],
    alpha: float = 0.5,
    color_by: str = "auto",
) -> np.ndarray:
    """Draw masks on one RGB frame and return a new (H, W, 3) uint8 picture.

    ``masks_for_frame`` pairs each segment with its (H, W) bool mask in this frame. Each mask is
    filled with its colour blended at ``alpha``, outlined, and labelled ``"<track id> <name>
    <score>"`` (stuff and semantic segments: the name only) at the top of its bounding box.
    Colours: ``color_by="track"`` a stable colour per track id, ``"category"`` the category's
    colour (use it for semantic results), ``"auto"`` track colours for things, category colours
    for stuff. Higher-score segments are drawn over lower ones. Pixels outside every mask keep
    their values except under outlines and labels.
    """
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    if color_by not in ("auto", "track", "category"):
        raise ValueError(f"color_by must be auto, track or category, not {color_by!r}")
    out = np.array(frame, copy=True, order="C")
    if not masks_for_frame:
        return out
    h, w = frame.shape[:2]
    cats = {c.id: c for c in categories}
    items = sorted(masks_for_frame, key=lambda sm: (sm[0].score, -sm[0].track_id))
    for seg, mask in items:
        if np.shape(mask) != (h, w):
            raise ValueError(f"mask of segment {seg.track_id} is {np.shape(mask)}, the frame is {(h, w)}")
    painted, boxes = mask_ops.paint([mask for _, mask in items], h, w)
    colors = [_segment_color(seg, cats, color_by) for seg, _ in items]
    drawn = [(seg, mask, color, box) for (seg, mask), color, box in zip(items, colors, boxes) if box is not None]
    if not drawn:
        return out
    if alpha > 0:
        # Blend only inside the union of the boxes: colour lookup, one weighted sum, one masked copy.
        x0 = min(b[0] for *_, b in drawn)
        y0 = min(b[1] for *_, b in drawn)
        x1 = max(b[0] + b[2] for *_, b in drawn)
        y1 = max(b[1] + b[3] for *_, b in drawn)
        region = out[y0:y1, x0:x1]
        idx = painted[y0:y1, x0:x1]
        lut = np.array([(0, 0, 0)] + colors, np.uint8)
        fill = np.take(lut, idx, axis=0)
        blended = cv2.addWeighted(region, 1.0 - alpha, fill, alpha, 0.0)
        covered = (idx > 0).view(np.uint8)
        copied = cv2.copyTo(blended, covered, region)
        if copied is not region:  # OpenCV wrote a new array instead of into the view
            region[...] = copied
    short = min(h, w)
    line = max(1, round(short / 360))
    for _, mask, color, (x0, y0, bw, bh) in drawn:
        m = np.asarray(mask)[y0:y0 + bh, x0:x0 + bw]
        sub = np.ascontiguousarray(m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8))
        contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
        cv2.drawContours(out, contours, -1, color, line, lineType=cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.3, short / 900)
    text_thick = 1 if scale < 0.8 else 2
    for seg, _, _, (x0, y0, _, _) in drawn:
        name = cats[seg.category_id].name if seg.category_id in cats else str(seg.category_id)
        thing = seg.isthing and color_by != "category"
        text = f"{seg.track_id} {name} {seg.score:.2f}" if thing else name
        _label(out, text, int(x0), int(y0), font, scale, text_thick)
    return out


def _label(img: np.ndarray, text: str, x: int, y: int, font, scale: float, thick: int) -> None:
    """Text on a dark box whose bottom-left sits at (x, y), moved inside the picture if needed."""
    h, w = img.shape[:2]
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(1, thick)
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    left = min(max(0, x), max(0, w - bw))
    top = y - bh if y - bh >= 0 else y  # above the box when there is room, else just inside it
    top = min(top, max(0, h - bh))
    cv2.rectangle(img, (left, top), (left + bw - 1, top + bh - 1), (20, 20, 20), thickness=cv2.FILLED)
    cv2.putText(img, text, (left + pad, top + pad + th), font, scale, (255, 255, 255), thick, cv2.LINE_AA)


class OverlaySink(Sink):
    """An overlay video: the source decoded again, masks drawn on the frames that have results,
    every other frame unchanged; same frame count, size, rate and timestamps; audio copied where
    the container allows. The source is ``result.video.path`` unless ``add`` is given another
    (a path or ``io.read.Source``); an iterable of arrays cannot be decoded again."""

    format = "overlay"
    create_tmp = False  # the muxer creates the file itself

    def __init__(self, path, overwrite: bool = False, alpha: float = 0.5,
                 progress: Callable[[int, int | None], None] | None = None, color_by: str | None = None) -> None:
        if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"An overlay video needs one of the suffixes {', '.join(VIDEO_SUFFIXES)}; got {path}.")
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"alpha must be in 0..1, got {alpha}")
        super().__init__(path, overwrite)
        self.alpha = alpha
        self.progress = progress
        self.color_by = color_by

    def add(self, result: VideoResult, source=None) -> None:
        from videomt_cli.io.prefetch import read_ahead  # PyAV: only needed for overlays
        from videomt_cli.io.read import open_source
        from videomt_cli.io.writer import BackgroundWriter, VideoWriter

        self.open()
        if self.count:
            raise OutputError(f"{self.path} holds one video's overlay; write each video to its own file.")
        if source is None and result.video.kind == "arrays":
            raise InputError("an overlay of results from an iterable of arrays needs the frames again: pass "
                             "source= (a list of the frames), or draw FrameResults as they stream.")
        # folders and arrays have no timing of their own: keep the rate the results were made at
        fps = result.video.fps if result.video.kind in ("folder", "arrays") else None
        src = open_source(source if source is not None else result.video.path, fps=fps)
        color_by = self.color_by or ("category" if result.task == "semantic" else "auto")
        total = result.num_frames
        info = src.info
        audio = info.path if info.has_audio and info.kind == "video" else None
        writer = VideoWriter(self.tmp, info, audio_from=audio, name=self.path)
        done = 0
        with writer, BackgroundWriter(writer) as encoder, read_ahead(src.frames()) as frames:
            for done, frame in enumerate(frames, start=1):
                if frame.index >= total:
                    raise _other_video_error(info.path, total, None)
                image = frame.image
                pairs = result.masks_at(frame.index)
                if pairs:
                    image = draw_overlay(image, pairs, result.categories, self.alpha, color_by)
                encoder.write(image, frame.pts)
                if self.progress is not None:
                    self.progress(done, total)
            if done != total:  # inside the with-blocks: the writer drops its file
                raise _other_video_error(info.path, total, done)
        self.warnings.extend(writer.warnings)
        self.count += 1


def _other_video_error(path: str, total: int, decoded: int | None) -> DatasetError:
    """The video does not decode to the results' frame count (checked while the overlay decodes)."""
    got = f"more than {total} frames" if decoded is None else f"{decoded} frames"
    return DatasetError(f"{path} decodes to {got} but the results have {total}: they are the results of another "
                        f"video (or of another cut of it); draw them on the video they were made from.")


def write_overlay(result: VideoResult, source, out_path: str | os.PathLike, alpha: float = 0.5,
                  overwrite: bool = False, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Decode ``source`` again, draw ``result`` on it and write ``out_path`` atomically.

    ``progress(frames_done, total_or_None)`` is called after each frame.
    """
    with OverlaySink(out_path, overwrite=overwrite, alpha=alpha, progress=progress) as sink:
        sink.add(result, source=source)
    return Path(out_path)
