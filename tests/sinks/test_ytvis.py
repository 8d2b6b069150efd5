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


# ----------------------------------------------------------------------------- TrackEval options


def test_default_results_bytes_are_unchanged(tmp_path):
    """The default file is byte for byte what it was before the options: one entry per line,
    compact separators, empty RLEs kept."""
    r = instance_result(stride=2)
    out = write(tmp_path, "ytvis", r)
    entries = [{"video_id": 1, "category_id": s.category_id, "score": s.score,
                "segmentations": [None if m is None else {"size": [H, W], "counts": m["counts"]}
                                  for m in r.masks_of(s)]}
               for s in r.segments]
    want = "[\n" + ",\n".join(json.dumps(e, separators=(",", ":")) for e in entries) + "\n]\n"
    assert out.read_bytes() == want.encode()
    explicit = write(tmp_path, "ytvis", r, name="explicit.json", rle="compressed", empty="rle")
    assert explicit.read_bytes() == out.read_bytes()
    d1 = write(tmp_path, "ytvis-dataset", r, name="d1.json")
    assert write(tmp_path, "ytvis-dataset", r, name="d2.json", rle="compressed").read_bytes() == d1.read_bytes()


def test_rle_counts_invert_pycocotools_string_coding():
    """Our reading of the compressed string gives pycocotools' own run lengths back: recompressing
    them with ``frPyObjects`` gives the same string, and they are the column-major runs."""
    from videomt_cli.io.masks import rle_counts, uncompressed as uncompressed_rle

    rng = np.random.default_rng(0)
    for t in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = rng.random((h, w)) < (0.002 if t % 5 == 0 else rng.random())
        if t == 1:
            m[:] = True  # first run of zeros has length 0
        rle = masks.encode(m)[0]
        counts = rle_counts(rle)
        assert coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)["counts"].decode() == rle["counts"]
        column = m.ravel(order="F").astype(np.int8)
        edges = np.flatnonzero(np.diff(column)) + 1
        runs = np.diff(np.concatenate([[0], edges, [column.size]])).tolist()
        assert counts == ([0] + runs if column[0] else runs)
    big = masks.encode(np.pad(np.ones((700, 1500), bool), ((200, 180), (210, 210))))[0]  # 1080 x 1920, counts > 2**15
    assert uncompressed_rle(big) == {"size": [1080, 1920], "counts": rle_counts(big)}
    assert rle_counts(big)[:3] == [210 * 1080 + 200, 700, 380]


def test_uncompressed_rle_and_null_empties(tmp_path):
    r = instance_result()
    gt = json.loads(write(tmp_path, "ytvis-dataset", r, rle="uncompressed").read_text())
    for ann in gt["annotations"]:
        for t, segm in enumerate(ann["segmentations"]):
            if segm is None:
                continue
            assert all(isinstance(c, int) for c in segm["counts"]) and sum(segm["counts"]) == H * W
            # pycocotools reads integer counts as uncompressed RLE: the same mask, area and box
            rle = coco_mask.frPyObjects(segm, H, W)
            seg = next(s for s in r.segments if s.track_id == ann["track_id"])
            assert np.array_equal(coco_mask.decode(rle), masks.decode(r.mask(seg, t)))
            assert coco_mask.area(rle) == ann["areas"][t]
    res = json.loads(write(tmp_path, "ytvis", r, rle="uncompressed", empty="null").read_text())
    assert res[0]["segmentations"][3] is None  # track 1 is absent from processed frame 3
    assert all(isinstance(s["counts"], list) for e in res for s in e["segmentations"] if s is not None)
    nulls = json.loads(write(tmp_path, "ytvis", r, name="n.json", empty="null").read_text())
    assert nulls[0]["segmentations"][3] is None and isinstance(nulls[0]["segmentations"][2]["counts"], str)
    assert nulls[1]["segmentations"] == [{"size": [H, W], "counts": m["counts"]} for m in r.masks_of(r.segments[1])]
    # not processed stays null, whatever the options
    strided = json.loads(write(tmp_path, "ytvis", instance_result(stride=2), name="s.json", empty="null").read_text())
    assert [s is None for s in strided[0]["segmentations"]] == [False, True, False, True, False]
    from videomt_cli.errors import InputError

    with pytest.raises(InputError, match="compressed, uncompressed"):
        write(tmp_path, "ytvis", r, name="bad.json", rle="zip")
    with pytest.raises(InputError, match="rle, null"):
        write(tmp_path, "ytvis", r, name="bad.json", empty="none")
    assert not (tmp_path / "bad.json").exists()


def test_trackeval_reader_rules_replayed(tmp_path):
    """TrackEval's YouTube-VIS reader (``trackeval/datasets/youtube_vis.py``), replayed without
    TrackEval: ``_prepare_gt_annotations`` passes each ground-truth mask to
    ``pycocotools.mask.frPyObjects(seg, h, w)``, and ``_load_raw_file`` counts a detection in frame
    t for every track whose ``segmentations[t]`` is truthy."""
    r = instance_result()
    for rle_kind, works in (("uncompressed", True), ("compressed", False)):
        gt = json.loads(write(tmp_path, "ytvis-dataset", r, name=f"gt-{rle_kind}.json", rle=rle_kind).read_text())
        segm = gt["annotations"][0]["segmentations"][0]
        if works:
            assert coco_mask.area(coco_mask.frPyObjects(segm, H, W)) == gt["annotations"][0]["areas"][0]
        else:
            with pytest.raises((ValueError, TypeError)):
                coco_mask.frPyObjects(segm, H, W)

    def detections(results):
        return [sum(1 for e in results if e["segmentations"][t]) for t in range(T)]

    default = json.loads(write(tmp_path, "ytvis", r, name="d.json").read_text())
    null = json.loads(write(tmp_path, "ytvis", r, name="n.json", empty="null").read_text())
    truth = [sum(1 for s in r.segments if masks.area(r.mask(s, t))) for t in range(T)]
    assert detections(null) == truth == [2, 2, 2, 1, 2]
    assert detections(default) == [2, 2, 2, 2, 2]  # the empty RLE of frame 3 is a detection there


def _trackeval_run(root, gt_kw, res_kw):
    """Write GT and results as TrackEval's YouTube-VIS layout wants them and run HOTA + CLEAR."""
    trackeval = pytest.importorskip("trackeval")
    r = instance_result()
    gt_dir, trackers = root / "gt", root / "trackers"
    write(gt_dir / "youtube_vis_valid", "ytvis-dataset", r, name="valid.json", **gt_kw)
    write(trackers / "youtube_vis_valid" / "videomt" / "data", "ytvis", r, name="results.json", **res_kw)
    dataset = trackeval.datasets.YouTubeVIS({
        "GT_FOLDER": f"{gt_dir}/", "TRACKERS_FOLDER": f"{trackers}/", "OUTPUT_FOLDER": str(root / "out"),
        "SPLIT_TO_EVAL": "valid", "CLASSES_TO_EVAL": ["person", "dog"], "PRINT_CONFIG": False})
    evaluator = trackeval.Evaluator({"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
                                     "TIME_PROGRESS": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
                                     "PLOT_CURVES": False, "LOG_ON_ERROR": None})
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False})]
    res, msg = evaluator.evaluate([dataset], metrics)
    assert msg == {"YouTubeVIS": {"videomt": "Success"}}
    return res["YouTubeVIS"]["videomt"]["COMBINED_SEQ"]


def test_trackeval_scores_results_equal_to_the_ground_truth_perfectly(tmp_path, capsys):
    """TrackEval 1.3 itself: GT written with rle="uncompressed", results with empty="null", both
    from the same result, score HOTA 1 and MOTA 1 with no false positive; the defaults are misread
    (compressed GT stops its reader, empty RLEs become false positives)."""
    good = _trackeval_run(tmp_path / "good", {"rle": "uncompressed"}, {"empty": "null"})
    for cls in ("person", "dog"):
        assert good[cls]["HOTA"]["HOTA"].tolist() == pytest.approx([1.0] * 19)  # at every alpha 0.05 .. 0.95
        assert good[cls]["CLEAR"]["MOTA"] == pytest.approx(1.0) and good[cls]["CLEAR"]["CLR_FP"] == 0
    assert good["person"]["CLEAR"]["CLR_TP"] == 4 and good["dog"]["CLEAR"]["CLR_TP"] == 5

    empties = _trackeval_run(tmp_path / "empties", {"rle": "uncompressed"}, {})
    assert empties["person"]["CLEAR"]["CLR_FP"] == 1  # the empty RLE where person left the picture
    # DetA 4/5 and AssA 4/5: the empty entry is an unmatched detection of the person track itself
    assert empties["person"]["HOTA"]["HOTA"].mean() == pytest.approx(0.8)
    assert empties["dog"]["HOTA"]["HOTA"].mean() == pytest.approx(1.0)

    with pytest.raises((ValueError, TypeError)):  # compressed GT: frPyObjects cannot read str counts
        _trackeval_run(tmp_path / "compressed", {}, {"empty": "null"})
    capsys.readouterr()
