"""videomt_cli.sinks.ytvis: YouTube-VIS results lists, dataset-style files, and reading results back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

sys.path.insert(0, str(Path(__file__).parent))
from sinkhelp import CATS, H, T, W, dense, instance_result, write  # noqa: E402

from videomt_cli import sinks  # noqa: E402
from videomt_cli.errors import DatasetError, OutputError  # noqa: E402
from videomt_cli.io import masks  # noqa: E402
from videomt_cli.records import VideoInfo, VideoResult  # noqa: E402

# ----------------------------------------------------------------------------- ytvis results


def test_ytvis_results_one_entry_per_frame_and_nulls(tmp_path):
    r = instance_result(stride=2)
    out = write(tmp_path, "ytvis", r)
    data = json.loads(out.read_text())
    assert isinstance(data, list) and len(data) == 2
    assert set(data[0]) == {"video_id", "category_id", "score", "segmentations"}
    for entry, seg in zip(data, r.segments):
        assert entry["video_id"] == 1 and entry["category_id"] == seg.category_id
        assert entry["score"] == pytest.approx(seg.score)
        assert len(entry["segmentations"]) == T
        for t, rle in enumerate(entry["segmentations"]):
            if t % 2:
                assert rle is None
            else:
                assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
                m = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                assert m.shape == (H, W) and np.array_equal(m, masks.decode(r.mask(seg, t)))
    # What ytvos loadRes derives from each result: an area (and box) per frame, None where null.
    for entry in data:
        areas = [coco_mask.area(s) if s else None for s in entry["segmentations"]]
        assert areas[0] > 0 and areas[1] is None
        assert coco_mask.toBbox(entry["segmentations"][0]).shape == (4,)
    # Frame 3 (track 1 left the picture) is odd, so null here; at stride 1 it is an empty RLE, not null.
    data1 = json.loads(write(tmp_path, "ytvis", instance_result(), name="r1.json").read_text())
    assert data1[0]["segmentations"][3] is not None
    assert coco_mask.area({"size": [H, W], "counts": data1[0]["segmentations"][3]["counts"].encode()}) == 0


def test_ytvis_results_many_videos_in_one_file(tmp_path):
    out = write(tmp_path, "ytvis", instance_result(1), instance_result(2),
                VideoResult.from_masks(VideoInfo("/x.mp4", W, H, num_frames=3), "instance", CATS, [], video_id=3))
    data = json.loads(out.read_text())
    assert [d["video_id"] for d in data] == [1, 1, 2, 2]
    assert json.loads(write(tmp_path, "ytvis", name="empty.json").read_text()) == []


def test_ytvis_results_match_a_whole_json_dump(tmp_path):
    """Written mask by mask, the file is the same JSON as dumping the whole list."""
    r = instance_result(stride=2)
    data = json.loads(write(tmp_path, "ytvis", r).read_text())
    want = [{"video_id": 1, "category_id": s.category_id, "score": s.score,
             "segmentations": [None if m is None else {"size": [H, W], "counts": m["counts"]} for m in r.masks_of(s)]}
            for s in r.segments]
    assert data == want


def _ytvos_check(dataset: dict):
    """What YouTube-VIS tooling (the ytvos API and its evaluation) derives from a GT file."""
    vids = {v["id"]: v for v in dataset["videos"]}
    cat_ids = {c["id"] for c in dataset["categories"]}
    for ann in dataset["annotations"]:
        v = vids[ann["video_id"]]
        assert ann["category_id"] in cat_ids and ann["iscrowd"] == 0
        assert len(ann["segmentations"]) == len(ann["areas"]) == len(ann["bboxes"]) == v["length"]
        assert len(v["file_names"]) == v["length"]
        for segm, area, bb in zip(ann["segmentations"], ann["areas"], ann["bboxes"]):
            if segm is None:
                assert area is None and bb is None
                continue
            # ytvos annToRLE: polygons and uncompressed RLE are converted, compressed RLE is used as is.
            assert isinstance(segm["counts"], str) and segm["size"] == [v["height"], v["width"]]
            rle = segm
            assert coco_mask.area(rle) == area
            assert list(coco_mask.toBbox(rle)) == pytest.approx(bb)


# ----------------------------------------------------------------------------- ytvis dataset


def test_ytvis_dataset_opens_as_ground_truth(tmp_path):
    r = instance_result(stride=2)
    data = json.loads(write(tmp_path, "ytvis-dataset", r).read_text())
    assert set(data) >= {"videos", "annotations", "categories"}
    (video,) = data["videos"]
    assert video == {"id": 1, "width": W, "height": H, "length": T,
                     "file_names": [f"walk/{i:05d}.jpg" for i in range(T)]}
    assert [c["id"] for c in data["categories"]] == [1, 2, 7] and data["categories"][2]["supercategory"] == "stuff"
    a1, a2 = data["annotations"]
    assert a1["id"] != a2["id"] and a1["length"] == 1 and a1["height"] == H and a1["width"] == W
    assert a1["areas"] == [35, None, 35, None, 35]
    assert a1["bboxes"][0] == [2.0, 1.0, 7.0, 5.0]
    assert a2["score"] == pytest.approx(0.9)
    assert a1["track_id"] == 1 and a2["track_id"] == 2
    _ytvos_check(data)
    # Absent frames (empty masks) are null as in YouTube-VIS ground truth.
    full = json.loads(write(tmp_path, "ytvis-dataset", instance_result(), name="full.json").read_text())
    assert full["annotations"][0]["segmentations"][3] is None and full["annotations"][0]["areas"][3] is None
    _ytvos_check(full)


def test_ytvis_dataset_image_folder_names_and_duplicate_ids(tmp_path):
    info = VideoInfo(path="/data/JPEGImages/0a2f1c/", width=W, height=H, num_frames=T, kind="folder",
                     file_names=tuple(f"f{i}.png" for i in range(T)))
    r = instance_result(info=info)
    assert r.video.is_image_folder
    data = json.loads(write(tmp_path, "ytvis-dataset", r).read_text())
    assert data["videos"][0]["file_names"] == [f"0a2f1c/f{i}.png" for i in range(T)]
    with pytest.raises(OutputError, match="video_id"):
        write(tmp_path, "ytvis-dataset", instance_result(4), instance_result(4), name="dup.json")
    assert not (tmp_path / "dup.json").exists()


def test_ytvis_dataset_leaves_out_tracks_without_pixels(tmp_path):
    r = instance_result()
    empty = [masks.empty(H, W)] * T
    pairs = [(s, list(r.masks_of(s))) for s in r.segments]
    from videomt_cli.records import Segment

    pairs.append((Segment(3, 1, 0.3), empty))
    with_empty = VideoResult.from_masks(r.video, "instance", CATS, pairs)
    data = json.loads(write(tmp_path, "ytvis-dataset", with_empty).read_text())
    assert [a["track_id"] for a in data["annotations"]] == [1, 2]


# ----------------------------------------------------------------------------- reading results back


def test_read_results_round_trip(tmp_path):
    r = instance_result(stride=2)
    out = write(tmp_path, "ytvis", r)
    back = sinks.read_results(out, r.video, CATS)
    assert back.num_frames == T and back.processed == (0, 2, 4) and back.video_id == 1
    assert back.task == "instance" and back.categories == tuple(CATS)
    # highest score first, track ids renumbered from 1
    assert [(s.track_id, s.category_id, s.score) for s in back.segments] == [(1, 2, pytest.approx(0.9)),
                                                                              (2, 1, pytest.approx(0.6))]
    for t in (0, 2, 4):
        assert np.array_equal(dense(back, 0, t), dense(r, 1, t))
        assert np.array_equal(dense(back, 1, t), dense(r, 0, t))
    assert back.mask(back.segments[0], 1) is None
    # filters
    assert [s.category_id for s in sinks.read_results(out, r.video, CATS, score_threshold=0.7).segments] == [2]
    assert [s.category_id for s in sinks.read_results(out, r.video, CATS, class_ids={1}).segments] == [1]


def test_read_results_of_one_video_among_many(tmp_path):
    out = write(tmp_path, "ytvis", instance_result(1), instance_result(2, stride=2))
    info = instance_result().video
    with pytest.raises(DatasetError, match="video-id"):
        sinks.read_results(out, info, CATS)
    assert sinks.read_results(out, info, CATS, video_id=2).processed == (0, 2, 4)
    with pytest.raises(DatasetError, match="no results for video id 9"):
        sinks.read_results(out, info, CATS, video_id=9)


def test_read_results_errors(tmp_path):
    info = instance_result().video
    with pytest.raises(DatasetError, match="does not exist"):
        sinks.read_results(tmp_path / "nope.json", info, CATS)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not a readable JSON"):
        sinks.read_results(bad, info, CATS)
    bad.write_text('{"videos": []}')
    with pytest.raises(DatasetError, match="results list"):
        sinks.read_results(bad, info, CATS)
    out = write(tmp_path, "ytvis", instance_result())
    with pytest.raises(DatasetError, match="category id 2"):
        sinks.read_results(out, info, CATS[:1])
    # a header count that differs is no reason to refuse: what decodes counts, and the overlay
    # checks that while it decodes (tests/sinks/test_overlay.py)
    other = VideoInfo("/other.mp4", W, H, num_frames=T + 3)
    with sinks.read_results(out, other, CATS) as result:
        assert result.num_frames == T
