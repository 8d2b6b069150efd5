"""The plain values that flow from a source through post-processing to every sink. No torch.

- :class:`VideoInfo`: what ``probe`` knows of a source before decoding it (frozen).
- :class:`Timeline`: what reading it learned: every frame's pts and time, the true frame count.
- :class:`FrameResult`: one frame's objects as they happen (``Predictor.stream``).
- :class:`Segment` and :class:`VideoResult`: the video-level results (``Predictor.run``). A
  result's masks live in a :class:`MaskStore` the result owns (a temporary file for a whole video
  of masks, or plain lists); close the result, or use it as a context manager, to free it.

Masks travel as compressed COCO RLE dicts (``{"size": [h, w], "counts": str}``, column-major as
pycocotools writes them) so a whole video's results stay small.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import numpy as np

# A compressed COCO RLE: {"size": [h, w], "counts": str}.
RLE = dict

TASKS = ("instance", "panoptic", "semantic")


@dataclass(frozen=True)
class VideoInfo:
    """What a source holds, known before decoding it.

    ``width``/``height`` are the displayed size (rotation metadata applied). ``fps`` is the exact
    rational average rate. ``num_frames`` is the container's count when the header has one (the
    true count is the :class:`Timeline`'s, once read). ``kind`` is ``"video"`` (a file FFmpeg
    reads), ``"folder"`` (frame images, ``file_names`` in natural order) or ``"arrays"`` (an
    iterable of RGB arrays).
    """

    path: str
    width: int
    height: int
    fps: Fraction | None = None
    num_frames: int | None = None
    duration: float | None = None
    codec: str | None = None
    rotation: int = 0
    has_audio: bool = False
    kind: str = "video"
    time_base: Fraction | None = None
    file_names: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def is_image_folder(self) -> bool:
        return self.kind == "folder"


@dataclass(frozen=True)
class Timeline:
    """Every frame of a read video: its pts (``VideoInfo.time_base`` units) and time in seconds.

    ``truncated``: decoding ended before the container said it would (a cut or damaged file);
    ``warnings``: one line each, for the CLI to show.
    """

    pts: tuple[int, ...]
    times: tuple[float, ...]
    truncated: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.pts)


@dataclass(frozen=True)
class Category:
    """A dataset category, in the model's class-head order."""

    id: int
    name: str
    isthing: bool = True
    color: tuple[int, int, int] = (255, 0, 0)


@dataclass(frozen=True, eq=False)
class FrameResult:
    """The objects of one processed frame, as the network saw it up to this frame (online).

    index: the frame's index in the video; time: seconds from the stream's start.
    track_ids (N,) int64: the network's query index + 1, the same object in every frame of the
        video (a query selected with two labels appears twice with the same track id);
    class_ids (N,) int64: dataset category ids; scores (N,) float32: online scores;
    boxes (N, 4) float32: x0, y0, x1, y1 in pixels of the displayed frame (x1, y1 exclusive);
    rles: the N masks as RLE; ``masks`` decodes them to (N, H, W) bool on access.
    image: the (H, W, 3) uint8 RGB frame the results belong to, when the source gave one.
    """

    index: int
    time: float
    size: tuple[int, int]
    track_ids: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    rles: tuple[RLE, ...]
    image: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.rles)

    @property
    def masks(self) -> np.ndarray:
        from videomt_cli.io import masks as mask_ops

        if not self.rles:
            return np.zeros((0, *self.size), dtype=bool)
        return mask_ops.decode_many(list(self.rles)).astype(bool, copy=False)


@dataclass(frozen=True)
class Segment:
    """One video-level result: a track (instance task), a panoptic segment, or a semantic class.

    Its masks are in the result's store: ``result.masks_of(segment)`` (one entry per frame of the
    video: an RLE, or None for a frame that was not processed; an object absent from a processed
    frame has an empty RLE there).
    """

    track_id: int  # unique within the result, >= 1
    category_id: int  # the dataset's id (not the head index)
    score: float
    query: int | None = None  # the network's query index (the track identity), when there is one
    isthing: bool = True


class MaskStore(Protocol):
    """Where a result's masks are: ``mask(track_id, frame)`` -> RLE or None; ``close()``."""

    def mask(self, track_id: int, frame: int) -> RLE | None: ...

    def close(self) -> None: ...


class MemoryMasks:
    """A mask store of plain per-track lists (results read from a file, results built by hand)."""

    def __init__(self, masks: dict[int, list[RLE | None]]) -> None:
        self._masks = masks

    def mask(self, track_id: int, frame: int) -> RLE | None:
        return self._masks[track_id][frame]

    def close(self) -> None:
        pass


@dataclass(frozen=True, eq=False)
class VideoResult:
    """One video's video-level results and everything a sink needs about the video.

    ``num_frames``: frames of the video (every per-frame list has this length); ``processed``:
    indices of the frames the model saw, ascending. Owns ``store``: ``close()`` it (or use
    ``with``) when done; the spill file of a long video is deleted then.
    """

    video: VideoInfo
    task: str
    categories: tuple[Category, ...]
    segments: tuple[Segment, ...]
    store: MaskStore = field(repr=False)
    num_frames: int
    processed: tuple[int, ...]
    video_id: int = 1
    timeline: Timeline | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_masks(cls, video: VideoInfo, task: str, categories, pairs: list[tuple[Segment, list[RLE | None]]],
                   processed=None, **kw) -> "VideoResult":
        """A result from (segment, per-frame masks) pairs held in memory."""
        lengths = {len(m) for _, m in pairs}
        if len(lengths) > 1:
            raise ValueError(f"segments have masks for different numbers of frames: {sorted(lengths)}")
        n = kw.pop("num_frames", None)
        n = lengths.pop() if lengths else (n if n is not None else (video.num_frames or 0))
        if processed is None:
            processed = [i for i in range(n) if any(m[i] is not None for _, m in pairs)] if pairs else list(range(n))
        store = MemoryMasks({s.track_id: list(m) for s, m in pairs})
        return cls(video=video, task=task, categories=tuple(categories), segments=tuple(s for s, _ in pairs),
                   store=store, num_frames=n, processed=tuple(processed), **kw)

    # -- the store
    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "VideoResult":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- queries
    def category(self, category_id: int) -> Category:
        for c in self.categories:
            if c.id == category_id:
                return c
        raise KeyError(category_id)

    def mask(self, segment: Segment, frame: int) -> RLE | None:
        if not 0 <= frame < self.num_frames:
            raise IndexError(f"frame {frame} is outside the video's {self.num_frames} frames")
        return self.store.mask(segment.track_id, frame)

    def masks_of(self, segment: Segment) -> Iterator[RLE | None]:
        """The segment's masks frame by frame (read from the store as they are asked for)."""
        for i in range(self.num_frames):
            yield self.store.mask(segment.track_id, i)

    def masks_at(self, frame: int) -> list[tuple[Segment, np.ndarray]]:
        """The non-empty masks of one frame as (segment, (H, W) bool) pairs."""
        from videomt_cli.io import masks as mask_ops

        pairs = []
        for seg in self.segments:
            rle = self.mask(seg, frame)
            if rle is not None and not mask_ops.is_empty(rle):
                pairs.append((seg, mask_ops.dense(rle).view(np.bool_)))  # 0/1 bytes: bool is a free view
        return pairs

    def render_ids(self, frame: int) -> np.ndarray:
        """The id picture of one frame as the PNG sink writes it (``docs/formats.md``).

        instance/panoptic: uint16 track (segment) ids, 0 = background; where masks overlap the
        higher-score segment wins. semantic: dataset category ids, uint8 when every id is below
        255 (255 = no class) else uint16 (65535 = no class).
        """
        from videomt_cli.errors import OutputError
        from videomt_cli.io import masks as mask_ops

        pairs = sorted(self.masks_at(frame), key=lambda p: (p[0].score, -p[0].track_id))  # later wins
        if self.task == "semantic":
            dtype, background = self.semantic_dtype()
            values = [seg.category_id for seg, _ in pairs]
        else:
            dtype, background = np.uint16, 0
            for seg, _ in pairs:
                if not 0 < seg.track_id < 65536:
                    raise OutputError(f"track id {seg.track_id} does not fit a 16-bit PNG (1..65535).")
            values = [seg.track_id for seg, _ in pairs]
        painted, _ = mask_ops.paint([m for _, m in pairs], self.video.height, self.video.width)
        return np.take(np.array([background] + values, dtype), painted)

    def semantic_dtype(self):
        """(dtype, no-class value) of semantic id pictures."""
        from videomt_cli.errors import OutputError

        ids = [c.id for c in self.categories] + [s.category_id for s in self.segments]
        if max(ids, default=0) < 255 and min(ids, default=0) >= 0:
            return np.uint8, 255
        if max(ids) >= 65535 or min(ids) < 0:
            raise OutputError("category ids must be in 0..65534 for a 16-bit PNG.")
        return np.uint16, 65535
