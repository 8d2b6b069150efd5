"""Hand-built results the sink tests write (``from sinkhelp import ...``)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from videomt_cli import sinks
from videomt_cli.io import masks
from videomt_cli.records import Category, Segment, VideoInfo, VideoResult

H, W, T = 11, 17, 5  # odd sizes on purpose
CATS = [Category(1, "person", True, (220, 20, 60)), Category(2, "dog", True, (0, 226, 252)),
        Category(7, "sky", False, (70, 130, 180))]


def box(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def instance_result(video_id=1, path="/data/clips/walk.mp4", stride=1, scores=(0.6, 0.9), track_ids=(1, 2),
                    info: VideoInfo | None = None) -> VideoResult:
    """Two tracks over 5 frames; track 2 overlaps track 1 and has the higher score; track 1 leaves
    the picture in frame 3; with stride 2 the odd frames are not processed (None)."""
    info = info or VideoInfo(path=path, width=W, height=H, fps=Fraction(25), num_frames=T)
    processed = list(range(0, T, stride))
    m1 = [box(1, 6, 2, 9) if t != 3 else np.zeros((H, W), bool) for t in range(T)]
    m2 = [box(4, 10, 5 + t // 2, 13 + t // 2) for t in range(T)]
    s1 = [masks.encode(m)[0] if t in processed else None for t, m in enumerate(m1)]
    s2 = [masks.encode(m)[0] if t in processed else None for t, m in enumerate(m2)]
    pairs = [(Segment(track_ids[0], 1, scores[0], query=5), s1), (Segment(track_ids[1], 2, scores[1], query=9), s2)]
    return VideoResult.from_masks(info, "instance", CATS, pairs, processed=processed, video_id=video_id)


def dense(result: VideoResult, seg_index: int, t: int) -> np.ndarray:
    """Segment ``seg_index``'s mask in frame ``t`` as (H, W) bool."""
    return masks.decode(result.mask(result.segments[seg_index], t)).astype(bool)


def write(tmp_path: Path, fmt: str, *results, name=None, **kw) -> Path:
    out = tmp_path / (name or {"png": "pngs", "ytvis": "r.json", "ytvis-dataset": "d.json", "coco": "c.json"}[fmt])
    with sinks.open_sink(out, fmt=fmt, **kw) as sink:
        for r in results:
            sink.add(r)
    return out
