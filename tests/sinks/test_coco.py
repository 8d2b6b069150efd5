"""videomt_cli.sinks.coco: COCO per frame, loaded and evaluated by pycocotools."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).parent))
from sinkhelp import H, T, W, dense, instance_result, write  # noqa: E402


def test_coco_loads_in_pycocotools(tmp_path, capsys):
    r1, r2 = instance_result(1, stride=2), instance_result(2, path="/data/b.mp4")
    out = write(tmp_path, "coco", r1, r2)
    gt = COCO(str(out))
    assert len(gt.getImgIds()) == 2 * T
    img = gt.loadImgs(1)[0]
    assert img == {"id": 1, "file_name": "walk/00000.jpg", "frame_index": 0, "video_id": 1, "width": W, "height": H}
    assert gt.loadImgs(T + 1)[0]["video_id"] == 2 and gt.loadImgs(T + 1)[0]["frame_index"] == 0
    anns = gt.loadAnns(gt.getAnnIds())
    assert len({a["id"] for a in anns}) == len(anns)
    # video 1 (stride 2): frames 0, 2, 4 x 2 tracks = 6; video 2: 5 frames x 2 tracks - track 1's empty frame 3 = 9.
    assert len(anns) == 6 + 9
    assert not [a for a in anns if a["image_id"] in (2, 4)]  # unprocessed frames have no annotation
    for a in anns:
        m = gt.annToMask(a)
        assert m.shape == (H, W) and m.sum() == a["area"] > 0
        assert list(coco_mask.toBbox(gt.annToRLE(a))) == pytest.approx(a["bbox"])
        assert a["iscrowd"] == 0 and a["attributes"]["track_id"] in (1, 2) and "score" in a
    first = [a for a in anns if a["image_id"] == 1]
    seg = {a["attributes"]["track_id"]: a for a in first}
    assert np.array_equal(gt.annToMask(seg[2]), dense(r1, 1, 0))
    assert seg[2]["category_id"] == 2 and seg[1]["category_id"] == 1

    # The same annotations as detections: loadRes accepts them, and they score AP 1 against themselves.
    dets = [{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")} for a in anns]
    res = gt.loadRes(dets)
    assert len(res.getAnnIds()) == len(anns)
    ev = COCOeval(gt, res, "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    capsys.readouterr()
    assert ev.stats[0] == pytest.approx(1.0)


def test_coco_document_layout(tmp_path):
    data = json.loads(write(tmp_path, "coco", instance_result(3)).read_text())
    assert set(data) == {"info", "licenses", "videos", "images", "annotations", "categories"}
    assert data["videos"] == [{"id": 3, "name": "/data/clips/walk.mp4", "width": W, "height": H, "length": T}]
    assert [c["id"] for c in data["categories"]] == [1, 2, 7]
    assert all(isinstance(a["segmentation"]["counts"], str) for a in data["annotations"])
