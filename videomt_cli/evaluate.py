"""YouTube-VIS evaluation: AP, AP50, AP75, AR1, AR10 (percent) of video instance segmentation results.

This is the YouTube-VIS API's evaluation (``YTVOSeval``): pycocotools' ``COCOeval`` where every
"image" is a video, every annotation a whole track, and the IoU of a prediction and a ground-truth
track is the *video IoU*::

    IoU = sum over frames of |pred_t & gt_t|  /  sum over frames of |pred_t | gt_t|

A frame where a track is ``null`` (or empty) counts as an empty mask there; frames where both are
empty add nothing. The area of a track, for the small/medium/large ranges, is the mean of its
non-empty per-frame areas (the ground truth's ``areas`` field when it has one, as YouTube-VIS does).
Matching, precision/recall accumulation and the summary are COCOeval's own code, with its default
parameters (IoU 0.50:0.05:0.95, 101 recall points, at most 1/10/100 tracks per video and class).
On single-frame videos the numbers are exactly COCO's ``segm`` numbers.

    >>> from videomt_cli.evaluate import evaluate
    >>> evaluate("results.json", "valid.json")
    {'AP': 52.8, 'AP50': 74.1, ...}

No torch here.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections import defaultdict

import numpy as np
from pycocotools import mask as _coco
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from videomt_cli.errors import DatasetError
from videomt_cli.io import ytvis

# COCOeval's ``stats`` vector, in order, under the names YouTube-VIS papers use.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def evaluate(predictions: list[dict] | dict | str | os.PathLike,
             ground_truth: dict | str | os.PathLike, *, video: str | os.PathLike | None = None,
             categories=None) -> dict[str, float]:
    """Score video instance segmentation results against YouTube-VIS ground truth.

    Args:
        predictions: a YouTube-VIS results list ``[{video_id, category_id, score, segmentations}]``
            (``segmentations``: one compressed or uncompressed RLE, or ``null``, per frame of the
            video), a YouTube-VIS-style dataset dict whose annotations carry a ``score`` (what
            ``videomt segment -f ytvis-dataset`` writes), or the path of a JSON file of either.
        ground_truth: a YouTube-VIS dataset (``videos``, ``annotations`` with per-frame
            ``segmentations`` as RLE, polygons or ``null``, ``categories``) or its JSON path; or
            the path of a CVAT for video 1.1 XML or a COCO JSON with track ids (``io.ytvis.read``).
        video, categories: for a CVAT or COCO ground truth, its video (default: the one it names)
            and the ``(id, name)`` table its label names take their ids from (the model's, so that
            the predictions' ids match), as ``io.ytvis.read`` takes them.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}``
        in percent. A metric with no ground truth to measure (e.g. no small tracks) is NaN, as in
        detectron2. Videos of the ground truth without any prediction count as missed.

    Raises:
        DatasetError: a file that does not exist or parse, predictions for videos or categories the
            ground truth does not have, a per-frame list whose length differs from its video's,
            masks of another size than the video, an empty ground truth.
    """
    gt_where = ytvis.where(ground_truth)
    dataset = ytvis.read(ground_truth, "ground-truth", video=video, categories=categories,
                         name=f"the ground truth{gt_where}")
    videos, categories, gt_tracks = _ground_truth(dataset)
    pred_doc = ytvis.load_json(predictions, "predictions")
    dt_tracks = _predictions(pred_doc, videos, categories, ytvis.where(predictions), gt_where)

    images = [{"id": v.id, "height": v.height, "width": v.width} for v in videos.values()]
    cats = [{"id": c, "name": name} for c, name in categories.items()]
    coco_gt = _coco_api(images, gt_tracks, cats)
    coco_dt = _coco_api(images, dt_tracks, cats)
    ev = VideoEval(coco_gt, coco_dt)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: (float(v) * 100.0 if v >= 0 else math.nan) for name, v in zip(METRICS, ev.stats)}


class VideoEval(COCOeval):
    """COCOeval over videos: images are videos, annotations are tracks, IoU is the video IoU.

    Every annotation of both COCO objects holds ``masks`` (per frame: a pycocotools RLE with bytes
    counts, or None where the track has no pixel), ``frame_areas`` (per frame, ints) and ``area``
    (mean non-empty area). Only ``_prepare`` (no polygon conversion: the masks are ready) and
    ``computeIoU`` differ from COCOeval.
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO) -> None:
        super().__init__(coco_gt, coco_dt, iouType="segm")

    def _prepare(self) -> None:
        p = self.params
        if p.useCats:
            gts = self.cocoGt.loadAnns(self.cocoGt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
            dts = self.cocoDt.loadAnns(self.cocoDt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
        else:
            gts = self.cocoGt.loadAnns(self.cocoGt.getAnnIds(imgIds=p.imgIds))
            dts = self.cocoDt.loadAnns(self.cocoDt.getAnnIds(imgIds=p.imgIds))
        for gt in gts:
            gt["ignore"] = int(bool(gt.get("iscrowd", 0)))
        self._gts = defaultdict(list)
        self._dts = defaultdict(list)
        for gt in gts:
            self._gts[gt["image_id"], gt["category_id"]].append(gt)
        for dt in dts:
            self._dts[dt["image_id"], dt["category_id"]].append(dt)
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, imgId, catId):  # noqa: N802, N803 (COCOeval's names)
        p = self.params
        if p.useCats:
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")  # as COCOeval: stable
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        if len(gt) == 0 or len(dt) == 0:
            return []
        return video_iou([d["masks"] for d in dt], [g["masks"] for g in gt],
                         [int(g.get("iscrowd", 0)) for g in gt],
                         np.array([d["frame_areas"] for d in dt], dtype=np.float64),
                         np.array([g["frame_areas"] for g in gt], dtype=np.float64))


def video_iou(dt_masks: list[list], gt_masks: list[list], iscrowd: list[int] | None = None,
              dt_areas: np.ndarray | None = None, gt_areas: np.ndarray | None = None) -> np.ndarray:
    """Video IoU of D predicted and G ground-truth tracks of one video -> (D, G) float64.

    ``dt_masks[i][t]`` is track i's mask in frame t: a pycocotools RLE (bytes or str counts) or
    None. IoU = sum_t |d_t & g_t| / sum_t |d_t | g_t|, 0 when the union is empty. For a crowd
    ground truth (``iscrowd``) the denominator is the prediction's own area, as in COCO.
    ``dt_areas``/``gt_areas`` (D, T)/(G, T) are the per-frame areas when the caller has them.
    """
    dt_masks = [[_bytes_rle(m) for m in track] for track in dt_masks]
    gt_masks = [[_bytes_rle(m) for m in track] for track in gt_masks]
    if dt_areas is None:
        dt_areas = np.array([[_coco.area(m) if m is not None else 0 for m in tr] for tr in dt_masks], np.float64)
    if gt_areas is None:
        gt_areas = np.array([[_coco.area(m) if m is not None else 0 for m in tr] for tr in gt_masks], np.float64)
    D, G = len(dt_masks), len(gt_masks)
    T = len(dt_masks[0]) if D else 0
    inter = np.zeros((D, G), dtype=np.float64)
    for t in range(T):
        di = [i for i in range(D) if dt_masks[i][t] is not None]
        gi = [j for j in range(G) if gt_masks[j][t] is not None]
        if not di or not gi:
            continue
        iou = np.asarray(_coco.iou([dt_masks[i][t] for i in di], [gt_masks[j][t] for j in gi], [0] * len(gi)),
                         dtype=np.float64).reshape(len(di), len(gi))
        a = dt_areas[di, t][:, None]
        b = gt_areas[gi, t][None, :]
        # pycocotools gives i / (a + b - i) in double precision; the integer i comes back exactly.
        inter[np.ix_(di, gi)] += np.rint(iou * (a + b) / (1.0 + iou))
    # Summed over frames, |d | g| = |d| + |g| - |d & g|: a frame where only one is present adds its area.
    d_sum = dt_areas.sum(axis=1)[:, None] if D else np.zeros((0, 1))
    g_sum = gt_areas.sum(axis=1)[None, :] if G else np.zeros((1, 0))
    union = d_sum + g_sum - inter
    if iscrowd is not None:
        crowd = np.asarray(iscrowd, dtype=bool)
        if crowd.any():
            union[:, crowd] = np.broadcast_to(d_sum, (D, G))[:, crowd]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


# ----------------------------------------------------------------------------- loading


def _ground_truth(dataset: ytvis.Dataset) -> tuple[dict[int, ytvis.Video], dict[int, str], list[dict]]:
    """-> videos by id, category names by id, track annotations (COCO-style dicts with masks)."""
    name = dataset.name
    if not dataset.annotations:
        raise DatasetError(f"{name} has no annotations: nothing to evaluate against.")
    videos: dict[int, ytvis.Video] = {}
    for v in dataset.videos:
        if v.height is None or v.width is None:
            raise DatasetError(f"{name}: video {v.id} needs integer 'height', 'width' and 'length' (or "
                               "'file_names').")
        if v.length < 1:
            raise DatasetError(f"{name}: video {v.id} has no frames or no pixels (length {v.length}, "
                               f"{v.height}x{v.width}).")
        videos[v.id] = v
    tracks = []
    for a in dataset.annotations:
        masks, areas = _track_masks(a.segmentations, videos[a.video_id], f"{name}: {a.label}")
        given = a.areas
        if given is not None and len(given) == len(areas) and all(x is None or ytvis.is_number(x) for x in given):
            mean_areas = [float(x) for x in given if x]  # YouTube-VIS: the field, null and 0 left out
        else:
            mean_areas = [float(x) for x in areas if x]
        tracks.append({"id": len(tracks) + 1, "image_id": a.video_id, "category_id": a.category_id,
                       "iscrowd": int(a.iscrowd), "masks": masks, "frame_areas": areas,
                       "area": float(np.mean(mean_areas)) if mean_areas else 0.0})
    return videos, {c.id: c.name for c in dataset.categories}, tracks


def _predictions(doc, videos: dict[int, ytvis.Video], categories: dict[int, str], where: str,
                 gt_where: str) -> list[dict]:
    if isinstance(doc, dict):
        if not isinstance(doc.get("annotations"), list):
            raise DatasetError(f"the predictions{where} are neither a YouTube-VIS results list nor a dataset "
                               "with 'annotations'.")
        doc = doc["annotations"]
    if not isinstance(doc, list):
        raise DatasetError(f"the predictions{where} must be a YouTube-VIS results list "
                           "[{video_id, category_id, score, segmentations}].")
    bad_videos, bad_cats = [], []
    for n, r in enumerate(doc):
        if not isinstance(r, dict) or any(k not in r for k in ("video_id", "category_id", "score", "segmentations")):
            raise DatasetError(f"the predictions{where}: entry #{n} needs 'video_id', 'category_id', 'score' and "
                               "'segmentations'.")
        if not ytvis.is_int(r["video_id"]) or int(r["video_id"]) not in videos:
            bad_videos.append(r["video_id"])
        if not ytvis.is_int(r["category_id"]) or int(r["category_id"]) not in categories:
            bad_cats.append(r["category_id"])
    if bad_videos:
        raise DatasetError(f"the predictions{where} are for different videos: ids {ytvis.format_ids(bad_videos)} "
                           f"not in the ground truth{gt_where}. Evaluate against the annotations of the videos you "
                           "segmented, with the same video ids.")
    if bad_cats:
        raise DatasetError(f"the predictions{where} use category ids {ytvis.format_ids(bad_cats)} that the ground "
                           f"truth{gt_where} does not have (it has {ytvis.format_ids(categories)}). Use a model "
                           "trained on this dataset's classes.")
    tracks = []
    for n, r in enumerate(doc):
        score = r["score"]
        if not ytvis.is_number(score) or not math.isfinite(score):
            raise DatasetError(f"the predictions{where}: entry #{n} has score {score!r}; scores must be finite "
                               "numbers.")
        video = videos[int(r["video_id"])]
        if not isinstance(r["segmentations"], list):
            raise DatasetError(f"the predictions{where}: entry #{n} (video {video.id}) has no per-frame "
                               "'segmentations' list.")
        masks, areas = _track_masks(r["segmentations"], video, f"the predictions{where}: entry #{n} of video "
                                                               f"{video.id}")
        nonzero = [a for a in areas if a]
        tracks.append({"id": len(tracks) + 1, "image_id": video.id, "category_id": int(r["category_id"]),
                       "score": float(score), "iscrowd": 0, "masks": masks, "frame_areas": areas,
                       "area": float(np.mean(nonzero)) if nonzero else 0.0})
    return tracks


def _track_masks(segmentations, video: ytvis.Video, label: str) -> tuple[list, list[int]]:
    """Per-frame masks of one track -> (pycocotools RLEs with bytes counts or None, areas)."""
    ytvis.check_frames(segmentations, video.length, label)
    masks, areas = [], []
    for t, seg in enumerate(segmentations):
        rle = ytvis.segmentation_rle(seg, video.height, video.width, f"{label}, frame {t}")
        area = int(_coco.area(rle)) if rle is not None else 0
        masks.append(rle if area > 0 else None)  # an empty mask and null are the same to the video IoU
        areas.append(area)
    return masks, areas


def _bytes_rle(m):
    if m is None or isinstance(m["counts"], bytes):
        return m
    if isinstance(m["counts"], str):
        return {"size": list(m["size"]), "counts": m["counts"].encode("ascii")}
    h, w = m["size"]
    return _coco.frPyObjects({"size": [h, w], "counts": m["counts"]}, h, w)


def _coco_api(images: list[dict], anns: list[dict], cats: list[dict]) -> COCO:
    api = COCO()
    api.dataset = {"images": images, "annotations": anns, "categories": cats}
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return api
