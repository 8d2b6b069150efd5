"""COCO per frame: one image per frame, one annotation per track and processed frame where the
track has pixels, the track in ``attributes.track_id`` (what CVAT reads to rebuild tracks). No torch."""

from __future__ import annotations

from videomt_cli.io import masks as mask_ops
from videomt_cli.records import VideoResult
from videomt_cli.sinks.base import JsonSink, frame_file_names, plain_rle


class CocoSink(JsonSink):
    format = "coco"

    def __init__(self, path, overwrite: bool = False) -> None:
        super().__init__(path, overwrite)
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.videos: list[dict] = []

    def add(self, result: VideoResult) -> None:
        self.open()
        n = result.num_frames
        info = result.video
        self._add_categories(result)
        self.videos.append({"id": result.video_id, "name": info.path, "width": info.width,
                            "height": info.height, "length": n})
        first = len(self.images) + 1
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
                    "segmentation": plain_rle(rle), "area": area, "bbox": [float(v) for v in box],
                    "score": float(seg.score), "iscrowd": 0, "attributes": {"track_id": seg.track_id},
                })
        self.count += 1

    def _document(self) -> dict:
        return {"info": {"description": "VidEoMT results (COCO per frame)"}, "licenses": [],
                "videos": self.videos, "images": self.images, "annotations": self.annotations,
                "categories": self._categories_json()}
