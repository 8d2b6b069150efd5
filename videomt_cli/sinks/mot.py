"""MOT and MOTS text, what multi-object tracking tools read (``docs/formats.md``). No torch.

- **MOT** (``--format mot``, the MOTChallenge layout): one line per track and frame where the track
  has pixels, ``frame,id,x,y,w,h,conf,-1,-1,-1``. Frames and box corners are 1-based, as the
  MOTChallenge devkit and ``motmetrics`` read them (``motmetrics`` subtracts 1 on load); the box is
  the mask's bounding box, ``conf`` the track's score, ``id`` its track id.
- **MOTS** (``--format mots``, the MOTS / MOTSChallenge text layout): ``frame id class_id img_h
  img_w rle`` with ``id = class_id * 1000 + track id`` (the MOTS tools take the class from
  ``id // 1000``), ``rle`` the compressed COCO RLE string of the mask. Masks are disjoint per frame:
  where two overlap, the higher score wins, as in the PNG writer. Frames are 1-based like MOT.

One video per file (the frame numbers are the video's); frames not processed or where a track is
empty have no line.
"""

from __future__ import annotations

import numpy as np

from videomt_cli.errors import OutputError
from videomt_cli.io import masks as mask_ops
from videomt_cli.records import VideoResult
from videomt_cli.sinks.base import StreamSink, writes


class _TextSink(StreamSink):
    mode = "w"

    @writes
    def add(self, result: VideoResult) -> None:
        self.open()
        if self.count:
            raise OutputError(f"{self.path} holds one video's tracks (frame numbers are per video); write each "
                              f"video to its own file.")
        if result.task == "semantic":
            raise OutputError(f"--format {self.format} writes tracked objects; semantic results have none "
                              f"(use png or ytvis).")
        for frame in result.processed:
            self._f.writelines(self._lines(result, frame))
        self.count += 1


class MotSink(_TextSink):
    format = "mot"

    def _lines(self, result: VideoResult, frame: int) -> list[str]:
        found = [(seg, result.mask(seg, frame)) for seg in result.segments]
        found = [(seg, rle) for seg, rle in found if rle is not None]
        areas = mask_ops.areas([rle for _, rle in found])
        boxes = mask_ops.bboxes([rle for _, rle in found])
        lines = []
        for (seg, _), area, (x, y, w, h) in zip(found, areas.tolist(), boxes.tolist()):
            if area:
                lines.append(f"{frame + 1},{seg.track_id},{x + 1:g},{y + 1:g},{w:g},{h:g},{seg.score:.6f},-1,-1,-1\n")
        return lines


class MotsSink(_TextSink):
    format = "mots"

    def _lines(self, result: VideoResult, frame: int) -> list[str]:
        ids = result.render_ids(frame)  # disjoint: the higher score wins where masks overlap
        h, w = ids.shape
        by_track = {seg.track_id: seg for seg in result.segments}
        lines = []
        for track in np.unique(ids).tolist():
            if track == 0:
                continue
            seg = by_track[track]
            if seg.category_id < 0 or track >= 1000:
                raise OutputError(f"track {track} of category {seg.category_id} cannot be written as a MOTS id "
                                  f"(class_id * 1000 + track id needs a track id below 1000 and a class id >= 0).")
            counts = mask_ops.encode(ids == track)[0]["counts"]
            lines.append(f"{frame + 1} {seg.category_id * 1000 + track} {seg.category_id} {h} {w} {counts}\n")
        return lines
