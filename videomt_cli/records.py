"""The records that flow from post-processing to every writer. No torch, no numpy arrays of masks:
masks travel as compressed COCO RLE dicts so a whole video's results stay small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

# A compressed COCO RLE: {"size": [h, w], "counts": str}, column-major as pycocotools writes it.
RLE = dict


@dataclass
class VideoInfo:
    """What a reader knows about a video before and while decoding it.

    ``width``/``height`` are the displayed size (after rotation metadata is applied).
    ``fps`` is the exact rational average rate; ``timestamps`` the presentation time in seconds of
    each decoded frame (filled while decoding; variable frame rate is kept as is).
    ``num_frames`` is the container's count when known before decoding (else None) and is set to
    the true count once the whole video was read.
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
    is_image_folder: bool = False
    time_base: Fraction | None = None
    timestamps: list[float] = field(default_factory=list)
    pts: list[int] = field(default_factory=list)  # per decoded frame, in time_base units (videos only)
    file_names: list[str] = field(default_factory=list)  # per frame, for image folders
    truncated: bool = False  # decoding ended before the container said it would (cut or corrupt file)
    warnings: list[str] = field(default_factory=list)  # one line each, for the CLI to show


@dataclass
class Category:
    """A dataset category, in the model's class-head order."""

    id: int
    name: str
    isthing: bool = True
    color: tuple[int, int, int] = (255, 0, 0)


@dataclass
class Segment:
    """One video-level result: a track (instance task), a panoptic segment, or a semantic class.

    ``masks`` has exactly one entry per frame of the video: an RLE, or None for a frame that was
    not processed (``--stride``, ``--start``/``--end``). An object absent from a processed frame
    has an empty RLE there, not None.
    """

    track_id: int  # unique within the result, >= 1
    category_id: int  # the dataset's id (not the head index)
    score: float
    masks: list[RLE | None]
    query: int | None = None  # the network's query index (the track identity), when there is one
    isthing: bool = True


@dataclass
class VideoResult:
    """Everything a writer needs about one video's results."""

    video: VideoInfo
    task: str  # "instance" | "panoptic" | "semantic"
    categories: list[Category]
    segments: list[Segment]
    video_id: int = 1
    processed: list[int] = field(default_factory=list)  # indices of frames the model saw

    def category(self, category_id: int) -> Category:
        for c in self.categories:
            if c.id == category_id:
                return c
        raise KeyError(category_id)
