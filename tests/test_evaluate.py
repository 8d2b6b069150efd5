"""YouTube-VIS evaluation: equal to COCO segm AP on single-frame videos, hand-computed video IoU,
perfect predictions, and the errors a user can run into."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from videomt_cli.io import masks as mask_ops
from videomt_cli.errors import DatasetError, VideoMTError
from videomt_cli.evaluate import METRICS, evaluate, video_iou


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)


def _rle(m):
    return mask_ops.encode(m)[0]


def _uncompressed(m):
    """COCO's uncompressed RLE (column-major run lengths starting with zeros)."""
    flat = np.asarray(m, np.uint8).flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": list(m.shape), "counts": [int(c) for c in counts]}


def _random_scene(seed: int, n_images: int = 12, h: int = 64, w: int = 96, n_cats: int = 3):
    """A small COCO-style scene: GT per image (compressed RLE, polygons, uncompressed RLE, one crowd)
    and noisy predictions with scores, duplicates, false positives and wrong classes."""
    rng = np.random.default_rng(seed)
    images, gts, dts = [], [], []
    for img in range(1, n_images + 1):
        images.append({"id": img, "height": h, "width": w, "file_name": f"{img}.jpg"})
        for _ in range(rng.integers(1, 5)):
            cat = int(rng.integers(1, n_cats + 1))
            kind = rng.integers(0, 4)
            y0, x0 = int(rng.integers(0, h - 10)), int(rng.integers(0, w - 10))
            y1, x1 = int(rng.integers(y0 + 6, min(h, y0 + 45) + 1)), int(rng.integers(x0 + 6, min(w, x0 + 60) + 1))
            crowd = 0
            if kind == 1:  # polygon (a rectangle with a notch)
                seg = [[x0, y0, x1, y0, x1, y1, (x0 + x1) / 2, (y0 + y1) / 2 + 1, x0, y1]]
                rle = coco_mask.merge(coco_mask.frPyObjects(seg, h, w))
                m = coco_mask.decode(rle)
            else:
                m = _ellipse(h, w, (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2) if kind == 2 else \
                    _box(h, w, y0, y1, x0, x1)
                if kind == 3:
                    seg = _uncompressed(m)
                    crowd = int(rng.random() < 0.3)
                else:
                    seg = _rle(m)
            area = int(m.sum())
            if area == 0:
                continue
            gts.append({"id": len(gts) + 1, "image_id": img, "category_id": cat, "segmentation": seg,
                        "area": area, "bbox": mask_ops.bbox(_rle(m)), "iscrowd": crowd, "mask": m})
            # predictions of this object: shifted copies, sometimes a wrong class, sometimes twice
            for _ in range(rng.integers(0, 3)):
                dy, dx = rng.integers(-2, 3, size=2)
                pm = np.roll(np.roll(m, dy, 0), dx, 1)
                pcat = cat if rng.random() < 0.8 else int(rng.integers(1, n_cats + 1))
                dts.append({"image_id": img, "category_id": pcat, "score": float(rng.random()), "mask": pm})
        for _ in range(rng.integers(0, 3)):  # false positives
            y0, x0 = int(rng.integers(0, h - 10)), int(rng.integers(0, w - 10))
            pm = _box(h, w, y0, y0 + 8, x0, x0 + 9)
            dts.append({"image_id": img, "category_id": int(rng.integers(1, n_cats + 1)),
                        "score": float(rng.random()), "mask": pm})
    # one image's prediction with an empty mask
    dts.append({"image_id": 1, "category_id": 1, "score": 0.5, "mask": np.zeros((h, w), np.uint8)})
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, n_cats + 1)]
    return images, gts, dts, cats


def _coco_stats(images, gts, dts, cats):
    gt_doc = {"images": images, "categories": cats,
              "annotations": [{k: v for k, v in g.items() if k != "mask"} for g in copy.deepcopy(gts)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_doc
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([{"image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"],
                                    "segmentation": _rle(d["mask"])} for d in dts])
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def _as_videos(images, gts, dts, cats):
    """The same scene as YouTube-VIS: each image a 1-frame video, each annotation a 1-frame track."""
    gt = {"videos": [{"id": im["id"], "height": im["height"], "width": im["width"], "length": 1,
                      "file_names": [im["file_name"]]} for im in images],
          "categories": cats,
          "annotations": [{"id": g["id"], "video_id": g["image_id"], "category_id": g["category_id"],
                           "segmentations": [g["segmentation"]], "areas": [g["area"]], "bboxes": [g["bbox"]],
                           "iscrowd": g["iscrowd"]} for g in gts]}
    preds = [{"video_id": d["image_id"], "category_id": d["category_id"], "score": d["score"],
              "segmentations": [_rle(d["mask"])]} for d in dts]
    return preds, gt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_frame_videos_equal_coco_segm(seed):
    images, gts, dts, cats = _random_scene(seed)
    stats = _coco_stats(images, gts, dts, cats)
    preds, gt = _as_videos(images, gts, dts, cats)
    res = evaluate(preds, gt)
    assert list(res) == list(METRICS)
    assert 15 < res["AP"] < 85 and not math.isnan(res["APm"])  # a non-trivial scene
    for i, name in enumerate(METRICS):
        want = stats[i] * 100 if stats[i] >= 0 else math.nan
        if math.isnan(want):
            assert math.isnan(res[name]), name
        else:
            assert res[name] == pytest.approx(want, abs=1e-9), name


def test_files_and_dataset_style_predictions(tmp_path):
    images, gts, dts, cats = _random_scene(3, n_images=5)
    preds, gt = _as_videos(images, gts, dts, cats)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    direct = evaluate(preds, gt)
    from_files = evaluate(tmp_path / "preds.json", str(tmp_path / "gt.json"))
    as_dataset = evaluate({"videos": gt["videos"], "categories": cats,
                           "annotations": [dict(p, id=i + 1) for i, p in enumerate(preds)]}, gt)
    for k in ("AP", "AP50", "AP75", "AR1", "AR10"):
        assert from_files[k] == direct[k] == as_dataset[k]


def _three_frame_case():
    h = w = 10
    g = [_box(h, w, 0, 4, 0, 4), _box(h, w, 5, 10, 5, 10), None]
    d = [_box(h, w, 0, 4, 2, 6), _box(h, w, 5, 10, 5, 10), _box(h, w, 0, 2, 0, 5)]
    return h, w, g, d


def test_video_iou_by_hand():
    h, w, g, d = _three_frame_case()
    # frame 0: overlap 8 of 16 + 16 -> I 8, U 24; frame 1: identical 25 -> I 25, U 25;
    # frame 2: only the prediction (10 px) -> U 10.  IoU = 33 / 59.
    iou = video_iou([[_rle(m) if m is not None else None for m in d]], [[_rle(m) if m is not None else None for m in g]])
    assert iou.shape == (1, 1)
    assert iou[0, 0] == pytest.approx(33 / 59, abs=1e-12)
    # not the mean of per-frame IoUs (which would be (8/24 + 1 + 0) / 3)
    assert abs(iou[0, 0] - (8 / 24 + 1) / 3) > 0.1


def test_multi_frame_ap_by_hand():
    h, w, g, d = _three_frame_case()
    gt = {"videos": [{"id": 7, "height": h, "width": w, "length": 3, "file_names": ["a", "b", "c"]}],
          "categories": [{"id": 3, "name": "thing"}],
          "annotations": [{"id": 1, "video_id": 7, "category_id": 3, "iscrowd": 0,
                           "segmentations": [_rle(m) if m is not None else None for m in g]}]}
    # an empty RLE counts like null
    segs = [_rle(m) for m in d]
    preds = [{"video_id": 7, "category_id": 3, "score": 0.9, "segmentations": segs}]
    res = evaluate(preds, gt)
    # IoU 0.559: a match at thresholds 0.50 and 0.55 only -> 2 of 10
    assert res["AP"] == pytest.approx(20.0)
    assert res["AP50"] == pytest.approx(100.0)
    assert res["AP75"] == pytest.approx(0.0)
    assert res["AR1"] == pytest.approx(20.0)
    assert res["AR10"] == pytest.approx(20.0)
    # a frame where both are null or empty changes nothing
    gt2 = copy.deepcopy(gt)
    gt2["videos"][0]["length"] = 4
    gt2["annotations"][0]["segmentations"].append(None)
    preds2 = [dict(preds[0], segmentations=segs + [mask_ops.empty(h, w)])]
    assert evaluate(preds2, gt2)["AP"] == pytest.approx(20.0)


def test_perfect_predictions_give_100():
    rng = np.random.default_rng(5)
    h, w, T = 24, 32, 5
    videos, anns = [], []
    for vid in (1, 2, 3):
        videos.append({"id": vid, "height": h, "width": w, "length": T, "file_names": [f"{t}.jpg" for t in range(T)]})
        for k in range(3):
            segs = []
            for t in range(T):
                if rng.random() < 0.2:
                    segs.append(None)
                    continue
                y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
                m = _box(h, w, y, y + 6, x, x + 5 + k)
                segs.append([[float(x), float(y), float(x + 5 + k), float(y), float(x + 5 + k), float(y + 6),
                              float(x), float(y + 6)]] if t % 2 else _rle(m))
            anns.append({"id": len(anns) + 1, "video_id": vid, "category_id": k + 1, "segmentations": segs,
                         "iscrowd": 0})
    gt = {"videos": videos, "annotations": anns, "categories": [{"id": i, "name": str(i)} for i in (1, 2, 3)]}
    preds = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
              "segmentations": a["segmentations"]} for a in anns]
    res = evaluate(preds, gt)
    for k in ("AP", "AP50", "AP75", "AR1", "AR10"):
        assert res[k] == pytest.approx(100.0), k
    assert evaluate([], gt)["AP"] == 0.0  # no predictions at all: everything missed


# ----------------------------------------------------------------------------- errors


def _tiny():
    m = _box(8, 8, 1, 5, 1, 5)
    gt = {"videos": [{"id": 1, "height": 8, "width": 8, "length": 2, "file_names": ["0", "1"]}],
          "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [_rle(m), None]}]}
    preds = [{"video_id": 1, "category_id": 1, "score": 0.7, "segmentations": [_rle(m), None]}]
    return preds, gt


def test_errors_unparsable_files(tmp_path):
    preds, gt = _tiny()
    bad = tmp_path / "bad.json"
    bad.write_text('{"videos": [')
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with pytest.raises(DatasetError, match="ground-truth file .*bad.json is not valid JSON"):
        evaluate(preds, bad)
    with pytest.raises(DatasetError, match="predictions file .*bad.json is not valid JSON"):
        evaluate(bad, tmp_path / "gt.json")
    with pytest.raises(DatasetError, match="does not exist"):
        evaluate(tmp_path / "missing.json", tmp_path / "gt.json")
    with pytest.raises(DatasetError, match="not a YouTube-VIS dataset"):
        evaluate(preds, {"images": []})
    assert issubclass(DatasetError, VideoMTError)


def test_errors_other_videos_and_categories():
    preds, gt = _tiny()
    with pytest.raises(DatasetError, match=r"the predictions are for different videos: ids 5, 9 not in the ground truth"):
        evaluate([dict(preds[0], video_id=9), dict(preds[0], video_id=5)], gt)
    with pytest.raises(DatasetError, match=r"category ids 4 that the ground truth"):
        evaluate([dict(preds[0], category_id=4)], gt)
    bad_gt = copy.deepcopy(gt)
    bad_gt["annotations"][0]["category_id"] = 2
    with pytest.raises(DatasetError, match="categories it does not list: ids 2"):
        evaluate(preds, bad_gt)


def test_errors_lengths_sizes_and_empty():
    preds, gt = _tiny()
    with pytest.raises(DatasetError, match="has 3 per-frame masks, but the video has 2 frames"):
        evaluate([dict(preds[0], segmentations=preds[0]["segmentations"] + [None])], gt)
    bad_gt = copy.deepcopy(gt)
    bad_gt["annotations"][0]["segmentations"] = [None]
    with pytest.raises(DatasetError, match="ground truth.* has 1 per-frame masks, but the video has 2"):
        evaluate(preds, bad_gt)
    with pytest.raises(DatasetError, match="the mask is 4x4"):
        evaluate([dict(preds[0], segmentations=[_rle(np.ones((4, 4), np.uint8)), None])], gt)
    with pytest.raises(DatasetError, match="score"):
        evaluate([dict(preds[0], score=float("nan"))], gt)
    with pytest.raises(DatasetError, match="no videos"):
        evaluate(preds, dict(gt, videos=[]))
    with pytest.raises(DatasetError, match="no annotations"):
        evaluate(preds, dict(gt, annotations=[]))
