"""writers.py: every format's content, atomic writes, overwrite and error handling, overlay drawing."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from videomt_cli import masks, writers
from videomt_cli.errors import InputError, OutputError, VideoMTError
from videomt_cli.records import Category, Segment, VideoInfo, VideoResult

H, W, T = 11, 17, 5  # odd sizes on purpose
CATS = [Category(1, "person", True, (220, 20, 60)), Category(2, "dog", True, (0, 226, 252)),
        Category(7, "sky", False, (70, 130, 180))]


def box(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def instance_result(video_id=1, path="/data/clips/walk.mp4", stride=1) -> VideoResult:
    """Two tracks over 5 frames; track 2 overlaps track 1 and has the higher score; track 1 leaves
    the picture in frame 3; with stride 2 the odd frames are not processed (None)."""
    info = VideoInfo(path=path, width=W, height=H, fps=Fraction(25), num_frames=T)
    processed = list(range(0, T, stride))
    m1 = [box(1, 6, 2, 9) if t != 3 else np.zeros((H, W), bool) for t in range(T)]
    m2 = [box(4, 10, 5 + t // 2, 13 + t // 2) for t in range(T)]
    s1 = [masks.encode(m)[0] if t in processed else None for t, m in enumerate(m1)]
    s2 = [masks.encode(m)[0] if t in processed else None for t, m in enumerate(m2)]
    return VideoResult(video=info, task="instance", categories=CATS, video_id=video_id, processed=processed,
                       segments=[Segment(1, 1, 0.6, s1, query=5), Segment(2, 2, 0.9, s2, query=9)])


def dense(result, seg_index, t):
    return masks.decode(result.segments[seg_index].masks[t]).astype(bool)


def write(tmp_path, fmt, *results, name=None, **kw) -> Path:
    out = tmp_path / (name or {"png": "pngs", "ytvis": "r.json", "ytvis-dataset": "d.json", "coco": "c.json"}[fmt])
    with writers.open_sink(out, fmt=fmt, **kw) as sink:
        for r in results:
            sink.add(r)
    return out


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
                assert m.shape == (H, W) and np.array_equal(m, masks.decode(seg.masks[t]))
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
                VideoResult(VideoInfo("/x.mp4", W, H, num_frames=3), "instance", CATS, [], video_id=3))
    data = json.loads(out.read_text())
    assert [d["video_id"] for d in data] == [1, 1, 2, 2]
    assert json.loads(write(tmp_path, "ytvis", name="empty.json").read_text()) == []


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
    _ytvos_check(data)
    # Absent frames (empty masks) are null as in YouTube-VIS ground truth.
    full = json.loads(write(tmp_path, "ytvis-dataset", instance_result(), name="full.json").read_text())
    assert full["annotations"][0]["segmentations"][3] is None and full["annotations"][0]["areas"][3] is None
    _ytvos_check(full)


def test_ytvis_dataset_image_folder_names_and_duplicate_ids(tmp_path):
    r = instance_result()
    r.video.path, r.video.is_image_folder = "/data/JPEGImages/0a2f1c/", True
    r.video.file_names = [f"f{i}.png" for i in range(T)]
    data = json.loads(write(tmp_path, "ytvis-dataset", r).read_text())
    assert data["videos"][0]["file_names"] == [f"0a2f1c/f{i}.png" for i in range(T)]
    with pytest.raises(OutputError, match="video_id"):
        write(tmp_path, "ytvis-dataset", instance_result(4), instance_result(4), name="dup.json")
    assert not (tmp_path / "dup.json").exists()


# ----------------------------------------------------------------------------- COCO


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


# ----------------------------------------------------------------------------- PNG


def test_png_instance_ids_and_overlap_rule(tmp_path):
    r = instance_result(stride=2)
    out = write(tmp_path, "png", r)
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00002.png", "00004.png", "meta.json",
                                                      "segments.json"]
    for t in (0, 2, 4):
        ids = cv2.imread(str(out / f"{t:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert ids.dtype == np.uint16 and ids.shape == (H, W)
        m1, m2 = dense(r, 0, t), dense(r, 1, t)
        assert (m1 & m2).any()
        assert (ids[m2] == 2).all()  # track 2 has the higher score: it wins the overlap
        assert (ids[m1 & ~m2] == 1).all()
        assert (ids[~(m1 | m2)] == 0).all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["task"] == "instance" and meta["dtype"] == "uint16" and meta["frames"] == [0, 2, 4]
    segs = json.loads((out / "segments.json").read_text())
    assert segs["2"] == {"category_id": 2, "isthing": True, "score": 0.9, "name": "dog"}


def test_png_overlap_follows_score_not_order(tmp_path):
    r = instance_result()
    r.segments[0].score, r.segments[1].score = 0.95, 0.1
    ids = writers.render_ids(r, 0)
    assert (ids[dense(r, 0, 0)] == 1).all()


def test_png_large_track_ids_are_16_bit(tmp_path):
    r = instance_result()
    r.segments[0].track_id, r.segments[1].track_id = 300, 40000
    out = write(tmp_path, "png", r)
    ids = cv2.imread(str(out / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == {0, 300, 40000}
    r.segments[1].track_id = 70000
    with pytest.raises(OutputError, match="16-bit"):
        write(tmp_path, "png", r, name="big")
    assert not (tmp_path / "big").exists()


def test_png_semantic_uint8_and_uint16(tmp_path):
    info = VideoInfo("/v/sem.mp4", W, H, num_frames=2)
    sky = box(0, 5, 0, W)
    wall = box(5, H, 0, W)
    wall[9:, :3] = False  # a few pixels with no class
    cats = [Category(0, "wall", False, (1, 2, 3)), Category(7, "sky", False, (4, 5, 6))]
    segs = [Segment(1, 0, 1.0, [masks.encode(wall)[0]] * 2, isthing=False),
            Segment(2, 7, 1.0, [masks.encode(sky)[0]] * 2, isthing=False)]
    r = VideoResult(info, "semantic", cats, segs)
    out = write(tmp_path, "png", r)
    img = cv2.imread(str(out / "00001.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8
    assert (img[sky] == 7).all() and (img[wall] == 0).all() and (img[9:, :3] == 255).all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["no_class"] == 255 and meta["dtype"] == "uint8"
    assert {c["id"]: c["color"] for c in meta["categories"]} == {0: [1, 2, 3], 7: [4, 5, 6]}
    assert not (out / "segments.json").exists()
    cats.append(Category(300, "big", False))
    segs[1].category_id = 300
    img = cv2.imread(str(write(tmp_path, "png", r, name="p16") / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and (img[sky] == 300).all() and (img[9:, :3] == 65535).all()


def test_png_panoptic_segments_json(tmp_path):
    info = VideoInfo("/v/pan.mp4", W, H, num_frames=1)
    segs = [Segment(1, 7, 0.9, [masks.encode(box(0, 4, 0, W))[0]], isthing=False),
            Segment(2, 1, 0.85, [masks.encode(box(5, 9, 2, 6))[0]], isthing=True)]
    out = write(tmp_path, "png", VideoResult(info, "panoptic", CATS, segs))
    ids = cv2.imread(str(out / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == {0, 1, 2}
    segments = json.loads((out / "segments.json").read_text())
    assert segments["1"]["category_id"] == 7 and segments["1"]["isthing"] is False
    assert segments["2"]["isthing"] is True


def test_png_one_video_per_folder_or_subfolders(tmp_path):
    with pytest.raises(OutputError, match="one video"):
        write(tmp_path, "png", instance_result(1), instance_result(2), name="two")
    assert not (tmp_path / "two").exists()
    out = write(tmp_path, "png", instance_result(1), instance_result(2, path="/d/run.mp4"), name="many",
                subfolders=True)
    assert (out / "walk" / "00004.png").is_file() and (out / "run" / "meta.json").is_file()
    assert [v["folder"] for v in json.loads((out / "meta.json").read_text())["videos"]] == ["walk", "run"]


# ----------------------------------------------------------------------------- atomicity and errors

FILE_FORMATS = ["ytvis", "ytvis-dataset", "coco"]


@pytest.mark.parametrize("fmt", FILE_FORMATS + ["png"])
def test_exception_leaves_nothing(tmp_path, fmt):
    with pytest.raises(RuntimeError):
        with writers.open_sink(tmp_path / "out", fmt=fmt) as sink:
            sink.add(instance_result())
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", FILE_FORMATS + ["png"])
def test_exception_keeps_existing_output(tmp_path, fmt):
    first = write(tmp_path, fmt, instance_result(), name="out")
    before = sorted((p.name, p.read_bytes()) for p in first.iterdir()) if first.is_dir() else first.read_bytes()
    with pytest.raises(RuntimeError):
        with writers.open_sink(first, fmt=fmt, overwrite=True) as sink:
            sink.add(instance_result(stride=2))
            raise RuntimeError("interrupted")
    after = sorted((p.name, p.read_bytes()) for p in first.iterdir()) if first.is_dir() else first.read_bytes()
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("fmt", FILE_FORMATS + ["png"])
def test_refuse_overwrite_then_overwrite(tmp_path, fmt):
    out = write(tmp_path, fmt, instance_result(), name="out")
    before = None if fmt == "png" else out.read_bytes()
    with pytest.raises(OutputError, match="--overwrite"):
        writers.open_sink(out, fmt=fmt)
    write(tmp_path, fmt, instance_result(stride=2), name="out", overwrite=True)
    if fmt == "png":
        assert not (out / "00001.png").exists() and (out / "00002.png").exists()
    else:
        assert out.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_file_appears_only_on_clean_exit(tmp_path):
    out = tmp_path / "r.json"
    with writers.open_sink(out) as sink:
        sink.add(instance_result())
        assert not out.exists()
    assert out.exists()
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_png_overwrite_refuses_foreign_folder(tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(OutputError, match="did not write"):
        writers.open_sink(mine, fmt="png", overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    write(tmp_path, "png", instance_result(), name="empty", overwrite=True)
    assert (empty / "meta.json").is_file()


def test_png_overwrite_replaces_a_file(tmp_path):
    (tmp_path / "out").write_text("old")
    out = write(tmp_path, "png", instance_result(), name="out", overwrite=True)
    assert (out / "meta.json").is_file() and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_json_over_a_folder_is_refused(tmp_path):
    (tmp_path / "x.json").mkdir()
    with pytest.raises(OutputError, match="folder"):
        writers.open_sink(tmp_path / "x.json", overwrite=True)


def test_unwritable_destinations(tmp_path):
    with pytest.raises(OutputError, match="Cannot write"):
        with writers.open_sink("/proc/videomt-test.json") as sink:
            sink.add(instance_result())
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        writers.open_sink(blocker / "out.json")
    with pytest.raises(OutputError, match="Cannot write"):
        with writers.open_sink(blocker / "sub" / "out.json") as sink:
            sink.add(instance_result())


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Cannot write"):
            with writers.open_sink(ro / "r.json") as sink:
                sink.add(instance_result())
    finally:
        ro.chmod(0o755)


def test_missing_parent_folders_are_created(tmp_path):
    out = write(tmp_path, "ytvis", instance_result(), name="a/b/r.json")
    assert out.is_file()


def test_format_choice():
    assert writers.format_for("r.json") == "ytvis"
    assert writers.format_for("r.json", "coco") == "coco"
    assert writers.format_for("out/") == "png" and writers.format_for("out") == "png"
    for s in (".mp4", ".MOV", ".mkv", ".webm"):
        assert writers.format_for("o" + s) == "overlay"
    with pytest.raises(InputError, match="ytvis-dataset"):
        writers.format_for("r.json", "yolo")
    with pytest.raises(InputError, match="--format"):
        writers.format_for("r.txt")
    with pytest.raises(InputError):
        writers.open_sink("o.json", fmt="overlay")
    assert issubclass(OutputError, VideoMTError)


# ----------------------------------------------------------------------------- overlay drawing


def _frame(h=H, w=W):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_draw_overlay_blends_masked_pixels_only():
    h, w = 121, 163  # odd size, big enough for the label to sit outside the test region
    frame = _frame(h, w)
    m = np.zeros((h, w), bool)
    m[60:100, 40:120] = True
    seg = Segment(3, 1, 0.87, [])
    out = writers.draw_overlay(frame, [(seg, m)], CATS, alpha=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8 and out is not frame
    color = np.array(writers.track_color(3), float)
    inner = np.zeros_like(m)
    inner[64:96, 44:116] = True  # away from the outline
    expect = frame[inner].astype(float) * 0.5 + color * 0.5
    assert np.abs(out[inner].astype(float) - expect).max() <= 1
    far = np.ones_like(m)
    far[40:104, 30:130] = False  # away from the mask, its outline and its label
    assert np.array_equal(out[far], frame[far])
    assert not np.array_equal(out[55:60, 40:120], frame[55:60, 40:120])  # the label above the box
    assert np.array_equal(writers.draw_overlay(frame, [], CATS), frame)
    zero = writers.draw_overlay(frame, [(seg, m)], CATS, alpha=0.0)
    assert np.array_equal(zero[inner], frame[inner])
    one = writers.draw_overlay(frame, [(seg, m)], CATS, alpha=1.0)
    assert (one[inner] == color.astype(np.uint8)).all()


def test_draw_overlay_colours_and_order():
    frame = np.zeros((41, 57, 3), np.uint8)
    a = np.zeros((41, 57), bool)
    a[10:30, 5:40] = True
    b = np.zeros((41, 57), bool)
    b[15:35, 20:50] = True
    lo, hi = Segment(1, 1, 0.2, []), Segment(2, 2, 0.8, [])
    out = writers.draw_overlay(frame, [(hi, b), (lo, a)], CATS, alpha=1.0)
    assert tuple(out[25, 30]) == writers.track_color(2)  # overlap: the higher score on top
    stuff = Segment(4, 7, 0.5, [], isthing=False)
    out = writers.draw_overlay(frame, [(stuff, a)], CATS, alpha=1.0)
    assert tuple(out[27, 10]) == (70, 130, 180)  # stuff: category colour (away from label and outline)
    out = writers.draw_overlay(frame, [(lo, a)], CATS, alpha=1.0, color_by="category")
    assert tuple(out[27, 10]) == (220, 20, 60)
    assert writers.track_color(5) == writers.track_color(5) != writers.track_color(6)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 5), (33, 2)])
def test_draw_overlay_tiny_and_odd_frames(shape):
    frame = _frame(*shape)
    m = np.ones(shape, bool)
    out = writers.draw_overlay(frame, [(Segment(1, 1, 0.5, []), m)], CATS)
    assert out.shape == frame.shape


def test_draw_overlay_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        writers.draw_overlay(_frame(), [(Segment(1, 1, 0.5, []), np.ones((3, 3), bool))], CATS)
    with pytest.raises(ValueError):
        writers.draw_overlay(np.zeros((4, 4), np.uint8), [], CATS)


def test_masks_at_skips_nulls_and_empties():
    r = instance_result(stride=2)
    assert writers.masks_at(r, 1) == []
    pairs = writers.masks_at(r, 0)
    assert [s.track_id for s, _ in pairs] == [1, 2] and pairs[0][1].dtype == bool
    full = instance_result()
    assert [s.track_id for s, _ in writers.masks_at(full, 3)] == [2]  # track 1 is empty there


# ----------------------------------------------------------------------------- overlay video


def _video_module():
    try:
        from videomt_cli import video
    except ImportError:
        video = None
    if video is None or not hasattr(video, "VideoWriter") or not hasattr(video, "read_frames"):
        pytest.skip("videomt_cli.video.VideoWriter is not there yet")
    return video


def test_overlay_video_round_trip(tmp_path):
    video = _video_module()
    from media import make_video

    src = make_video(tmp_path / "src.mp4", frames=6, size=(64, 48), audio=True, vfr=True)
    info = video.probe(src)
    frames = list(video.read_frames(str(src)))
    n = len(frames)
    info.num_frames = n
    info.pts = [f.pts for f in frames]
    m = np.zeros((info.height, info.width), bool)
    m[10:30, 10:40] = True
    rles = [masks.encode(m)[0] if t % 2 == 0 else None for t in range(n)]
    r = VideoResult(info, "instance", CATS, [Segment(1, 1, 0.9, rles)], processed=list(range(0, n, 2)))
    calls = []
    out = writers.write_overlay(r, src, tmp_path / "ov.mp4", alpha=0.5, progress=lambda i, t: calls.append((i, t)))
    assert out.is_file() and calls[-1] == (n, n)
    back = list(video.read_frames(str(out)))
    assert len(back) == n and back[0].image.shape == frames[0].image.shape
    assert [f.time for f in back] == pytest.approx([f.time for f in frames], abs=1e-3)  # VFR kept
    assert video.probe(out).has_audio
    inside = (slice(14, 26), slice(14, 36))
    diff = [np.abs(b.image[inside].astype(int) - f.image[inside].astype(int)).mean() for b, f in zip(back, frames)]
    assert diff[0] > 10 and diff[2] > 10  # drawn
    assert diff[1] < 6 and diff[3] < 6  # null frames: unchanged up to the lossy re-encode
    with pytest.raises(OutputError, match="--overwrite"):
        writers.write_overlay(r, src, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ov.mp4", "src.mp4"]


def test_overlay_interrupted_leaves_nothing(tmp_path):
    _video_module()
    from media import make_video

    src = make_video(tmp_path / "src.mp4", frames=4, size=(32, 24))
    from videomt_cli import video

    info = video.probe(src)
    r = VideoResult(info, "instance", CATS, [Segment(1, 1, 0.9, [None] * 4)])

    def stop(i, total):
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        writers.write_overlay(r, src, tmp_path / "ov.mp4", progress=stop)
    assert [p.name for p in tmp_path.iterdir()] == ["src.mp4"]
