"""COCO per frame, ready for CVAT: one image per frame, one annotation per track and processed
frame where the track has pixels, the track in ``attributes``. No torch.

What CVAT needs, from its importer (``cvat/apps/dataset_manager/bindings.py``,
``import_dm_annotations`` and ``match_dm_item``; COCO goes through its datumaro fork's
``coco_instances`` reader, ``datumaro/plugins/coco_format/extractor.py``):

- **Tracks.** An annotation joins a track only when its attributes hold ``track_id`` *and* a
  ``keyframe`` key (``if track_id is None or 'keyframe' not in ann.attributes: add_shape``); a
  shape is kept as a track keyframe when ``keyframe`` is true. We write ``{"track_id": id,
  "keyframe": true}`` on every annotation. CVAT reads ``occluded``, ``outside``, ``rotation`` and
  ``source`` from the attributes too (all optional, default false / 0 / manual); ``score`` and
  ``is_crowd`` (which datumaro adds) are plain attributes CVAT keeps only when the label declares
  them.
- **Gaps need no ``outside`` entry.** CVAT rebuilds the track's visibility itself
  (``_validate_track_shapes``): after a shape whose next shape is more than one frame step later,
  and after the last shape, it inserts a copy marked ``outside`` one frame step on. So a frame
  where the object is absent ends the track there and the next annotation starts it again, which
  is what our data says; an ``outside`` annotation would need a segmentation for an absent object.
  The same rule hides a track on frames that were *not processed* (``--stride``): CVAT sees a gap.
- **Frame names.** A CVAT task made from a video names its frames ``frame_%06d`` (the absolute frame
  number) and matches an item by its id, which datumaro takes from ``file_name`` without the
  extension (a folder prefix stays in the id). ``frame_names="cvat"`` (default) writes
  ``frame_000000.jpg``, ...; with several videos in one file the names cannot be unique, so each
  video's frames go under its name, ``<video>/frame_000000.jpg`` (for a video task CVAT still
  matches those by the number after ``frame_``, but import one video per task: all of a file's
  annotations go into the one task). ``frame_names="ytvis"`` keeps the YouTube-VIS names,
  ``<video>/00000.jpg`` or an image folder's own file names (what a CVAT *image* task made from
  those files matches).
- **Polygons for tracks.** CVAT interpolates polygon and box tracks but has no mask tracks.
  ``shape="polygon"`` writes each mask as polygons (``videomt_cli.io.polygons``: one outer
  outline per 8-connected part, largest first, vertices on pixel corners); ``area`` and ``bbox``
  stay the mask's. ``shape="rle"`` (default) writes compressed RLE, which CVAT imports as masks.
  datumaro turns each polygon of a ``segmentation`` list into its own shape with the same
  attributes, so a mask of several parts becomes several shapes of one track on one frame.
"""

from __future__ import annotations

from collections import Counter

from videomt_cli.io import masks as mask_ops
from videomt_cli.records import VideoResult
from videomt_cli.sinks.base import JsonSink, choice, frame_file_names, plain_rle, video_name

FRAME_NAMES = ("cvat", "ytvis")
SHAPES = ("rle", "polygon")


def cvat_frame_name(index: int, folder: str | None = None) -> str:
    """The file name of frame ``index`` (0-based) that a CVAT video task matches: ``frame_000042.jpg``,
    under ``folder/`` when given."""
    name = f"frame_{index:06d}.jpg"
    return f"{folder}/{name}" if folder else name


class CocoSink(JsonSink):
    """COCO per frame (``docs/formats.md``). ``frame_names``: ``"cvat"`` (``frame_%06d.jpg``) or
    ``"ytvis"`` (``<video>/00000.jpg``); ``shape``: ``"rle"`` or ``"polygon"`` segmentations."""

    format = "coco"

    def __init__(self, path, overwrite: bool = False, frame_names: str = "cvat", shape: str = "rle") -> None:
        self.frame_names = choice(frame_names, FRAME_NAMES, "frame naming (--frame-names)")
        self.shape = choice(shape, SHAPES, "COCO shape (--coco-shape)")
        super().__init__(path, overwrite)
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.videos: list[dict] = []
        self._folders: list[str] = []  # each video's name, for CVAT names of a many-video file
        self._spans: list[range] = []  # each video's indices into self.images

    def add(self, result: VideoResult) -> None:
        self.open()
        n = result.num_frames
        info = result.video
        self._add_categories(result)
        self.videos.append({"id": result.video_id, "name": info.path, "width": info.width,
                            "height": info.height, "length": n})
        self._folders.append(video_name(result))
        first = len(self.images) + 1
        self._spans.append(range(first - 1, first - 1 + n))
        # file names are final in _document (CVAT names depend on how many videos the file holds)
        for i, name in enumerate(frame_file_names(result)):
            self.images.append({"id": first + i, "file_name": name, "frame_index": i, "video_id": result.video_id,
                                "width": info.width, "height": info.height})
        for i in range(n):
            found = [(seg, result.mask(seg, i)) for seg in result.segments]
            found = [(seg, rle) for seg, rle in found if rle is not None]
            # areas and boxes of the whole frame in one pycocotools call each
            areas = mask_ops.areas([rle for _, rle in found]).tolist()
            boxes = mask_ops.bboxes([rle for _, rle in found]).tolist()
            for (seg, rle), area, box in zip(found, areas, boxes):
                if area == 0:
                    continue
                self.annotations.append({
                    "id": len(self.annotations) + 1, "image_id": first + i, "category_id": int(seg.category_id),
                    "segmentation": self._segmentation(rle), "area": area, "bbox": [float(v) for v in box],
                    "score": float(seg.score), "iscrowd": 0,
                    "attributes": {"track_id": seg.track_id, "keyframe": True},
                })
        self.count += 1

    def _segmentation(self, rle: dict):
        if self.shape == "rle":
            return plain_rle(rle)
        from videomt_cli.io.polygons import flat, mask_polygons  # OpenCV: only when polygons are asked for

        return [flat(p) for p in mask_polygons(mask_ops.dense(rle))]

    def _cvat_names(self) -> None:
        """Rename the images ``frame_%06d.jpg``; under ``<video>/`` when the file holds several videos
        (a repeated video name gets ``-<video id>`` so every name stays unique)."""
        if len(self.videos) <= 1:
            folders = [None] * len(self.videos)
        else:
            repeated = {k for k, c in Counter(self._folders).items() if c > 1}
            folders = [f"{f}-{v['id']}" if f in repeated else f for f, v in zip(self._folders, self.videos)]
        for span, folder in zip(self._spans, folders):
            for k in span:
                self.images[k]["file_name"] = cvat_frame_name(self.images[k]["frame_index"], folder)

    def _document(self) -> dict:
        if self.frame_names == "cvat":
            self._cvat_names()
        return {"info": {"description": "VidEoMT results (COCO per frame)"}, "licenses": [],
                "videos": self.videos, "images": self.images, "annotations": self.annotations,
                "categories": self._categories_json()}
