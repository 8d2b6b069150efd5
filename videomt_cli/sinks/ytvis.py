"""YouTube-VIS JSON: the results list (what ``segment`` writes and ``eval`` scores), the
dataset-style file (results opened as annotations), and reading a results file back. No torch.

Two options make the files fit evaluators that read the format more narrowly than the YouTube-VIS
tools do (the defaults are what the YouTube-VIS server, ``ytvos`` and ``videomt eval`` take):

- ``rle="uncompressed"`` writes each mask as pycocotools' uncompressed RLE, ``{"size": [h, w],
  "counts": [n0, n1, ...]}``: the run lengths as integers, column-major, starting with a run of
  zeros (0 when the first pixel is set). TrackEval's YouTube-VIS reader
  (``trackeval/datasets/youtube_vis.py``, ``_prepare_gt_annotations``) passes every ground-truth
  mask to ``pycocotools.mask.frPyObjects``, which reads only integer counts: a compressed string
  there raises ``ValueError``. For results it calls ``mask.area`` instead, which reads only the
  compressed string, so results for TrackEval stay compressed.
- ``empty="null"`` (results only) writes ``null`` for a processed frame where the object is absent,
  instead of the empty RLE. TrackEval counts every non-null entry as a detection in that frame
  (``if track['segmentations'][t]``), so an empty RLE is a false positive there; the YouTube-VIS
  tools read both as an empty mask.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from videomt_cli.errors import DatasetError, OutputError
from videomt_cli.io import masks as mask_ops
from videomt_cli.records import Category, Segment, VideoResult
from videomt_cli.sinks.base import JsonSink, StreamSink, choice, dump, frame_file_names, plain_rle, writes

RLE_KINDS = ("compressed", "uncompressed")
EMPTY_KINDS = ("rle", "null")


def _mask_json(rle: dict | None, kind: str) -> dict | None:
    if rle is None:
        return None
    return mask_ops.uncompressed(rle) if kind == "uncompressed" else plain_rle(rle)


class YtvisResultsSink(StreamSink):
    """YouTube-VIS results: a JSON list of ``{video_id, category_id, score, segmentations}``.

    ``segmentations`` has one entry per frame of the video, ``null`` for frames not processed.
    Streams to the temporary file mask by mask, so many videos (``--dataset``) and long videos
    cost no extra memory.

    ``rle``: ``"compressed"`` (default, str counts) or ``"uncompressed"`` (int counts). ``empty``:
    what a processed frame where the object is absent holds, ``"rle"`` (default: the empty RLE) or
    ``"null"`` (what TrackEval needs; see the module docstring).
    """

    format = "ytvis"

    def __init__(self, path, overwrite: bool = False, rle: str = "compressed", empty: str = "rle") -> None:
        self.rle = choice(rle, RLE_KINDS, "RLE kind (--rle)")
        self.empty = choice(empty, EMPTY_KINDS, "empty-mask kind (--empty)")
        super().__init__(path, overwrite)

    def _begin(self) -> None:
        super()._begin()
        self._f.write(b"[")
        self._first = True

    @writes
    def add(self, result: VideoResult) -> None:
        self.open()
        for seg in result.segments:
            head = {"video_id": result.video_id, "category_id": int(seg.category_id), "score": float(seg.score)}
            self._f.write(b"\n" if self._first else b",\n")
            # The same bytes as dumping the whole entry, written mask by mask.
            self._f.write(json.dumps(head, separators=(",", ":"), allow_nan=False)[:-1].encode("utf-8"))
            self._f.write(b',"segmentations":[')
            for i, mask in enumerate(result.masks_of(seg)):
                if i:
                    self._f.write(b",")
                if mask is not None and self.empty == "null" and mask_ops.is_empty(mask):
                    mask = None
                dump(_mask_json(mask, self.rle), self._f)
            self._f.write(b"]}")
            self._first = False
        self.count += 1

    def _finish(self) -> None:
        self._f.write(b"\n]\n")
        super()._finish()


class YtvisDatasetSink(JsonSink):
    """A YouTube-VIS annotation (ground-truth style) file: ``videos``, ``annotations``, ``categories``.

    Like YouTube-VIS ground truth, a frame where a track is absent (empty mask) or that was not
    processed is ``null`` in ``segmentations``, ``areas`` and ``bboxes``. Tracks with no pixel in
    any frame are left out. ``score`` is kept on each annotation.

    ``rle``: ``"compressed"`` (default, str counts) or ``"uncompressed"`` (int counts, what
    TrackEval's YouTube-VIS ground-truth reader needs; see the module docstring).
    """

    format = "ytvis-dataset"

    def __init__(self, path, overwrite: bool = False, rle: str = "compressed") -> None:
        self.rle = choice(rle, RLE_KINDS, "RLE kind (--rle)")
        super().__init__(path, overwrite)
        self.videos: list[dict] = []
        self.annotations: list[dict] = []

    def add(self, result: VideoResult) -> None:
        self.open()
        if any(v["id"] == result.video_id for v in self.videos):
            raise OutputError(f"video_id {result.video_id} was already written to {self.path}; "
                              "each video needs its own id.")
        info = result.video
        self._add_categories(result)
        self.videos.append({"id": result.video_id, "width": info.width, "height": info.height,
                            "length": result.num_frames, "file_names": frame_file_names(result)})
        for seg in result.segments:
            masks = list(result.masks_of(seg))
            present = [i for i, m in enumerate(masks) if m is not None]
            # areas and boxes of the whole track in one pycocotools call each
            areas = mask_ops.areas([masks[i] for i in present])
            boxes = mask_ops.bboxes([masks[i] for i in present])
            segms, area_list, box_list = [None] * len(masks), [None] * len(masks), [None] * len(masks)
            for i, a, b in zip(present, areas.tolist(), boxes.tolist()):
                if a:
                    segms[i], area_list[i], box_list[i] = _mask_json(masks[i], self.rle), a, [float(v) for v in b]
            if all(a is None for a in area_list):
                continue
            self.annotations.append({
                "id": len(self.annotations) + 1, "video_id": result.video_id, "category_id": int(seg.category_id),
                "segmentations": segms, "areas": area_list, "bboxes": box_list, "iscrowd": 0,
                "height": info.height, "width": info.width, "length": 1, "score": float(seg.score),
                "track_id": seg.track_id,
            })
        self.count += 1

    def _document(self) -> dict:
        return {"info": {"description": "VidEoMT results (YouTube-VIS dataset style)"}, "licenses": [],
                "videos": self.videos, "annotations": self.annotations, "categories": self._categories_json()}


def read_results(results_path: str | os.PathLike, source, categories: list[Category], *,
                 video_id: int | None = None, score_threshold: float = 0.0,
                 class_ids: set[int] | None = None) -> VideoResult:
    """A YouTube-VIS results file (what ``segment`` writes) -> the ``VideoResult`` of one video, to
    draw it again without running the model. ``categories`` name the ids (the model's labels);
    ``source`` is the video (a path or ``Source``). The file may hold several videos: ``video_id``
    picks one (needed only when it holds more).

    The result has as many frames as the file's per-frame lists (the frames that decoded when it was
    written, which for a cut or edit-listed file is not the header's count); the overlay checks,
    while it decodes, that the video has exactly that many. With no entry for the video at all,
    the video is counted (decoded without RGB conversion)."""
    from videomt_cli.io.read import count_frames, open_source  # PyAV: only when a video is opened

    try:
        entries = json.loads(Path(results_path).read_text())
    except FileNotFoundError:
        raise DatasetError(f"Results file {results_path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{results_path} is not a readable JSON results file ({e}).") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "segmentations" in e for e in entries):
        raise DatasetError(f"{results_path} is not a YouTube-VIS results list "
                           f"([{{video_id, category_id, score, segmentations}}, ...]).")
    ids = sorted({e.get("video_id") for e in entries})
    if video_id is None:
        if len(ids) > 1:
            raise DatasetError(f"{results_path} holds {len(ids)} videos ({ids[:5]}...); pick one with --video-id.")
        video_id = ids[0] if ids else 1
    elif entries and video_id not in ids:
        raise DatasetError(f"{results_path} has no results for video id {video_id}; it has {ids[:10]}.")
    known = {c.id for c in categories}
    src = open_source(source)
    info = src.info
    mine = [e for e in entries if e.get("video_id") == video_id]
    lengths = sorted({len(e["segmentations"]) if isinstance(e["segmentations"], list) else -1 for e in mine})
    if -1 in lengths:
        raise DatasetError(f"{results_path}: a result's segmentations is not a list (one mask or null per frame).")
    if len(lengths) > 1:
        raise DatasetError(f"{results_path} has results of {lengths[0]} and {lengths[-1]} frames for video "
                           f"{video_id}: each result needs one entry per frame of the video.")
    pairs = []
    for entry in sorted(mine, key=lambda e: -e["score"]):
        if entry["score"] < score_threshold or (class_ids is not None and entry["category_id"] not in class_ids):
            continue
        if entry["category_id"] not in known:
            raise DatasetError(f"{results_path} uses category id {entry['category_id']}, which the labels "
                               f"do not have; pass the model that wrote it (--model).")
        masks = entry["segmentations"]
        sizes = {tuple(m["size"]) for m in masks if isinstance(m, dict) and "size" in m}
        if sizes - {(info.height, info.width)}:
            h, w = next(iter(sizes - {(info.height, info.width)}))
            raise DatasetError(f"{results_path} has {len(masks)} frames of {w}x{h} masks per result but {info.path} "
                               f"is {info.width}x{info.height}: is it the results of another video?")
        seg = Segment(track_id=len(pairs) + 1, category_id=entry["category_id"], score=float(entry["score"]))
        pairs.append((seg, masks))
    num_frames = lengths[0] if lengths else count_frames(src).num_frames
    processed = sorted({i for _, masks in pairs for i, m in enumerate(masks) if m is not None})
    return VideoResult.from_masks(info, "instance", categories, pairs, processed=processed, num_frames=num_frames,
                                  video_id=video_id)
