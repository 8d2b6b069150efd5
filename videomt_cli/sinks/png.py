"""PNG id pictures: a folder with one 16-bit (or 8-bit semantic) PNG per processed frame,
``meta.json`` and, for the instance and panoptic tasks, ``segments.json`` (``docs/formats.md``).
No torch."""

from __future__ import annotations

import json

import cv2
import numpy as np

from videomt_cli.errors import OutputError
from videomt_cli.io.atomic import write_bytes
from videomt_cli.records import VideoResult
from videomt_cli.sinks.base import META_NAME, Sink, category_json, category_name, video_name, writes

SEGMENTS_NAME = "segments.json"


class PngSink(Sink):
    """``00000.png`` = frame 0, one per processed frame. With ``subfolders=True`` each video goes to
    ``<folder>/<video stem>/`` (for ``--dataset``); otherwise the folder holds one video."""

    format = "png"
    is_dir = True

    def __init__(self, path, overwrite: bool = False, subfolders: bool = False) -> None:
        super().__init__(path, overwrite)
        self.subfolders = subfolders
        self.videos: list[dict] = []

    @writes
    def add(self, result: VideoResult) -> None:
        self.open()
        if self.subfolders:
            name = video_name(result)
            if any(v["folder"] == name for v in self.videos):
                name = f"{name}_{result.video_id}"
            folder = self.tmp / name
            folder.mkdir()
        else:
            if self.count:
                raise OutputError(f"{self.path} holds one video's PNGs; write each video to its own folder.")
            name, folder = ".", self.tmp
        frames = [i for i in result.processed if 0 <= i < result.num_frames]
        for i in frames:
            # Encoded in memory, written by Python: a full disk is an OSError that names its cause
            # (cv2.imwrite would let libpng print its own line and return only False).
            done, png = cv2.imencode(".png", result.render_ids(i))
            if not done:
                raise OutputError(f"Cannot encode frame {i} as PNG for {self.path}.")
            write_bytes(folder / f"{i:05d}.png", png.tobytes())
        (folder / META_NAME).write_text(json.dumps(self._meta(result, frames), indent=1), encoding="utf-8")
        if result.task != "semantic":
            segs = {str(s.track_id): {"category_id": int(s.category_id), "isthing": bool(s.isthing),
                                      "score": float(s.score), "name": category_name(result, s.category_id)}
                    for s in result.segments}
            (folder / SEGMENTS_NAME).write_text(json.dumps(segs, indent=1), encoding="utf-8")
        self.videos.append({"video_id": result.video_id, "folder": name, "path": result.video.path})
        self.count += 1

    def _meta(self, result: VideoResult, frames: list[int]) -> dict:
        info = result.video
        meta = {"format": "videomt-png", "version": 1, "task": result.task, "video": info.path,
                "video_id": result.video_id, "width": info.width, "height": info.height,
                "num_frames": result.num_frames, "file_pattern": "{index:05d}.png", "frames": frames}
        if result.task == "semantic":
            dtype, fill = result.semantic_dtype()
            meta.update(dtype=np.dtype(dtype).name, pixel="dataset category id", no_class=fill)
        else:
            meta.update(dtype="uint16", background=0,
                        pixel=("track id" if result.task == "instance" else "segment id")
                        + f"; see {SEGMENTS_NAME}; overlaps go to the higher score")
        meta["categories"] = [category_json(c) for c in result.categories]
        return meta

    def _finish(self) -> None:  # an OSError here: Sink.close makes it the one OutputError
        if self.subfolders:
            (self.tmp / META_NAME).write_text(
                json.dumps({"format": "videomt-png", "version": 1, "videos": self.videos}, indent=1), encoding="utf-8")
