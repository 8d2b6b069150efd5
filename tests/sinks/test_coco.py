"""videomt_cli.sinks.coco: COCO per frame, loaded and evaluated by pycocotools, read by datumaro, and
turned into tracks by CVAT's import rules (replayed from its source)."""

from __future__ import annotations

import json
import os.path as osp
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).parent))
from sinkhelp import CATS, H, T, W, box, dense, instance_result, write  # noqa: E402

from videomt_cli.errors import InputError  # noqa: E402
from videomt_cli.io import masks  # noqa: E402
from videomt_cli.records import Segment, VideoInfo, VideoResult  # noqa: E402
from videomt_cli.sinks.coco import CocoSink, cvat_frame_name  # noqa: E402


def test_coco_loads_in_pycocotools(tmp_path, capsys):
    r1, r2 = instance_result(1, stride=2), instance_result(2, path="/data/b.mp4")
    out = write(tmp_path, "coco", r1, r2)
    gt = COCO(str(out))
    assert len(gt.getImgIds()) == 2 * T
    img = gt.loadImgs(1)[0]
    assert img == {"id": 1, "file_name": "walk/frame_000000.jpg", "frame_index": 0, "video_id": 1, "width": W,
                   "height": H}
    assert gt.loadImgs(T + 1)[0]["video_id"] == 2 and gt.loadImgs(T + 1)[0]["frame_index"] == 0
    assert gt.loadImgs(T + 1)[0]["file_name"] == "b/frame_000000.jpg"
    anns = gt.loadAnns(gt.getAnnIds())
    assert len({a["id"] for a in anns}) == len(anns)
    # video 1 (stride 2): frames 0, 2, 4 x 2 tracks = 6; video 2: 5 frames x 2 tracks - track 1's empty frame 3 = 9.
    assert len(anns) == 6 + 9
    assert not [a for a in anns if a["image_id"] in (2, 4)]  # unprocessed frames have no annotation
    for a in anns:
        m = gt.annToMask(a)
        assert m.shape == (H, W) and m.sum() == a["area"] > 0
        assert list(coco_mask.toBbox(gt.annToRLE(a))) == pytest.approx(a["bbox"])
        assert a["iscrowd"] == 0 and a["attributes"] == {"track_id": a["attributes"]["track_id"], "keyframe": True}
        assert a["attributes"]["track_id"] in (1, 2) and "score" in a
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


def test_frame_names(tmp_path):
    # one video: CVAT's names of a task made from a video
    one = json.loads(write(tmp_path, "coco", instance_result(), name="one.json").read_text())
    assert [im["file_name"] for im in one["images"]] == [f"frame_{i:06d}.jpg" for i in range(T)]
    assert cvat_frame_name(123456) == "frame_123456.jpg" and cvat_frame_name(7, "clip") == "clip/frame_000007.jpg"
    # several videos: under each video's name; a repeated name gets the video id, so all stay unique
    three = write(tmp_path, "coco", instance_result(1), instance_result(2), instance_result(3, path="/x/b.mp4"),
                  name="three.json")
    three = json.loads(three.read_text())
    names = [im["file_name"] for im in three["images"]]
    assert len(set(names)) == 3 * T
    assert names[:2] == ["walk-1/frame_000000.jpg", "walk-1/frame_000001.jpg"]
    assert names[T] == "walk-2/frame_000000.jpg" and names[2 * T] == "b/frame_000000.jpg"
    # the YouTube-VIS names on request: <video>/00000.jpg, or an image folder's own names
    yt = json.loads(write(tmp_path, "coco", instance_result(), name="yt.json", frame_names="ytvis").read_text())
    assert [im["file_name"] for im in yt["images"]] == [f"walk/{i:05d}.jpg" for i in range(T)]
    folder = VideoInfo(path="/data/JPEGImages/0a2f1c/", width=W, height=H, num_frames=T, kind="folder",
                       file_names=tuple(f"f{i}.png" for i in range(T)))
    fo = write(tmp_path, "coco", instance_result(info=folder), name="fo.json", frame_names="YTVIS")
    fo = json.loads(fo.read_text())
    assert [im["file_name"] for im in fo["images"]] == [f"0a2f1c/f{i}.png" for i in range(T)]
    with pytest.raises(InputError, match="cvat, ytvis"):
        CocoSink(tmp_path / "bad.json", frame_names="cvat-video")
    with pytest.raises(InputError, match="rle, polygon"):
        CocoSink(tmp_path / "bad.json", shape="polygons")
    assert not (tmp_path / "bad.json").exists()


def _two_part_result() -> VideoResult:
    """One track over 3 frames: frame 0 a 5x7 box; frame 1 that box and a 2x2 speck apart from it
    (touching only diagonally counts as one part, so they are clearly apart); frame 2 an L shape."""
    l_shape = box(1, 9, 2, 5) | box(6, 9, 2, 12)
    speck = box(8, 10, 13, 15)
    frames = [box(1, 6, 2, 9), box(1, 6, 2, 9) | speck, l_shape]
    pairs = [(Segment(4, 2, 0.8), [masks.encode(m)[0] for m in frames])]
    return VideoResult.from_masks(VideoInfo("/v/parts.mp4", W, H, num_frames=3), "instance", CATS, pairs)


def test_polygons(tmp_path, capsys):
    r = _two_part_result()
    out = write(tmp_path, "coco", r, shape="polygon")
    data = json.loads(out.read_text())
    anns = data["annotations"]
    assert [len(a["segmentation"]) for a in anns] == [1, 2, 1]  # one polygon per part
    big, small = (np.reshape(p, (-1, 2)) for p in anns[1]["segmentation"])
    assert big.min(axis=0).tolist() == [2, 1] and small.min(axis=0).tolist() == [13, 8]  # largest part first
    assert all(len(p) >= 6 and len(p) % 2 == 0 for a in anns for p in a["segmentation"])  # flat x, y lists
    gt = COCO(str(out))
    for t, a in enumerate(gt.loadAnns(gt.getAnnIds())):
        mask = masks.decode(r.mask(r.segments[0], t))
        assert np.array_equal(gt.annToMask(a), mask)  # pycocotools rasterises the polygons back to the mask
        assert a["area"] == int(mask.sum()) and a["bbox"] == masks.bbox(r.mask(r.segments[0], t))
        assert a["attributes"] == {"track_id": 4, "keyframe": True}
    # the RLE file of the same result has the same areas and boxes
    rle = json.loads(write(tmp_path, "coco", r, name="rle.json").read_text())["annotations"]
    assert [(a["area"], a["bbox"]) for a in rle] == [(a["area"], a["bbox"]) for a in anns]
    # polygons from a strided two-track result load too
    gt2 = COCO(str(write(tmp_path, "coco", instance_result(stride=2), name="s.json", shape="polygon")))
    assert len(gt2.getAnnIds()) == 6
    capsys.readouterr()


# ----------------------------------------------------------------------------- CVAT's import, replayed

# CVAT imports COCO with its datumaro fork's ``coco_instances`` reader, then builds shapes and tracks
# in ``cvat/apps/dataset_manager/bindings.py``. Replayed here (no CVAT server can run in a test):
Shape = namedtuple("Shape", "frame kind points label attributes outside keyframe")


def _datumaro_fork_items(doc: dict) -> dict[str, list[tuple]]:
    """cvat-ai/datumaro ``datumaro/plugins/coco_format/extractor.py`` (``_CocoExtractor``): an item
    per image, id = ``file_name`` without its extension; per annotation, attributes =
    ``ann["attributes"]`` + ``score`` + ``is_crowd``; one polygon per entry of a list segmentation,
    one mask for an RLE, a box only when there is no segmentation."""
    cats = sorted(c["id"] for c in doc["categories"])
    names = {c["id"]: c["name"] for c in doc["categories"]}
    items = {im["id"]: (osp.splitext(im["file_name"])[0], []) for im in doc["images"]}
    for ann in doc["annotations"]:
        attributes = dict(ann.get("attributes", {}), score=ann["score"], is_crowd=bool(ann["iscrowd"]))
        label = names[cats[cats.index(ann["category_id"])]]
        segm = ann["segmentation"]
        if isinstance(segm, list):
            parts = [("polygon", p) for p in segm]
        elif segm:
            parts = [("mask", segm)]
        else:
            parts = [("bbox", ann["bbox"])]
        items[ann["image_id"]][1].extend((kind, points, label, dict(attributes)) for kind, points in parts)
    return dict(items.values())


def _cvat_video_task_import(doc: dict, size: int):
    """``import_dm_annotations`` into a task made from a video of ``size`` frames (frame step 1,
    start 0; mode "interpolation"): ``match_dm_item`` matches the item id against the task's
    frame names ``frame_%06d``, falls back on the number after ``frame_`` in the id's last path
    part, and stops the import for an item it cannot match; an annotation is a track shape only
    when its attributes have ``track_id`` and ``keyframe`` (else a plain shape); ``occluded``,
    ``outside``, ``keyframe`` are cast to bool; then ``_validate_track_shapes`` keeps the keyframes
    and adds an ``outside`` keyframe one frame after a gap and after the last shape (while inside
    the task). Returns (plain shapes, {track_id: shapes})."""
    mapping = {f"frame_{i:06d}": i for i in range(size)}

    def match(item_id: str) -> int:
        frame = mapping.get(item_id)
        if frame is None:
            try:
                frame = int(osp.basename(item_id)[len("frame_"):])
            except ValueError:
                frame = None
        if frame not in range(size):
            raise ValueError(f"Could not match item id: '{item_id}' with any task frame")
        return frame

    shapes, tracks = [], {}
    for item_id, anns in _datumaro_fork_items(doc).items():
        frame = match(item_id)
        for kind, points, label, attributes in anns:
            outside = attributes.pop("outside", False) is True
            keyframe = attributes.get("keyframe", None) is True
            track_id = attributes.pop("track_id", None)
            if track_id is None or "keyframe" not in attributes:
                shapes.append(Shape(frame, kind, points, label, attributes, False, False))
                continue
            tracks.setdefault(track_id, []).append(Shape(frame, kind, points, label, attributes, outside, keyframe))

    def validate(track_shapes):
        new, prev = [], None
        for shape in sorted(track_shapes, key=lambda s: s.frame):
            prev_visible = prev is not None and not prev.outside
            visible = not shape.outside
            gap = prev_visible and prev.frame + 1 < shape.frame
            if gap:
                new.append(prev._replace(outside=True, keyframe=True, frame=prev.frame + 1))
            if prev_visible != visible or visible and (gap or shape.keyframe):
                shape = shape._replace(keyframe=True)
                new.append(shape)
            prev = shape
        if prev is not None and not prev.outside and prev.frame + 1 <= size - 1:
            new.append(prev._replace(outside=True, keyframe=True, frame=prev.frame + 1))
        return new

    return shapes, {tid: validate(s) for tid, s in tracks.items()}


def _visible_frames(track: list[Shape], size: int) -> list[int]:
    """CVAT shows a track on a frame when its last keyframe at or before it is not outside."""
    return [f for f in range(size) if (before := [s for s in track if s.frame <= f]) and not before[-1].outside]


def test_cvat_builds_tracks_from_our_file(tmp_path):
    r = instance_result()  # track 1 leaves the picture in frame 3 and comes back in frame 4
    doc = json.loads(write(tmp_path, "coco", r, shape="polygon").read_text())
    shapes, tracks = _cvat_video_task_import(doc, T)
    assert shapes == [] and sorted(tracks) == [1, 2]
    assert [(s.frame, s.outside) for s in tracks[1]] == [(0, False), (1, False), (2, False), (3, True), (4, False)]
    assert [(s.frame, s.outside) for s in tracks[2]] == [(t, False) for t in range(T)]
    assert all(s.keyframe and s.kind == "polygon" for s in tracks[1] + tracks[2])
    assert {s.label for s in tracks[1]} == {"person"} and {s.label for s in tracks[2]} == {"dog"}
    for seg in r.segments:
        present = [t for t in range(T) if masks.area(r.mask(seg, t))]
        assert _visible_frames(tracks[seg.track_id], T) == present
    # a shorter track ends with CVAT's own outside keyframe, one frame after its last shape
    short = VideoResult.from_masks(r.video, "instance", CATS,
                                   [(Segment(9, 1, 0.5), [masks.encode(box(1, 4, 1, 4))[0]] * 2 + [None] * 3)],
                                   processed=range(T))
    _, t9 = _cvat_video_task_import(json.loads(write(tmp_path, "coco", short, name="short.json").read_text()), T)
    assert [(s.frame, s.outside, s.kind) for s in t9[9]] == [(0, False, "mask"), (1, False, "mask"), (2, True, "mask")]


def test_cvat_needs_keyframe_and_frame_names(tmp_path):
    """Without the ``keyframe`` attribute (what this sink wrote before) CVAT makes no tracks, and
    the YouTube-VIS names do not match a video task: the two things the CVAT layout fixes."""
    r = instance_result()
    doc = json.loads(write(tmp_path, "coco", r).read_text())
    old = json.loads(json.dumps(doc))
    for ann in old["annotations"]:
        ann["attributes"].pop("keyframe")
    shapes, tracks = _cvat_video_task_import(old, T)
    assert tracks == {} and len(shapes) == len(doc["annotations"])
    yt = json.loads(write(tmp_path, "coco", r, name="yt.json", frame_names="ytvis").read_text())
    with pytest.raises(ValueError, match="Could not match item id: 'walk/00000'"):
        _cvat_video_task_import(yt, T)
    # a video longer than the task: the frames past its end cannot be matched either
    with pytest.raises(ValueError, match="frame_000004"):
        _cvat_video_task_import(doc, T - 1)


def test_datumaro_reads_it_as_coco_instances(tmp_path):
    """datumaro itself (as far as it is installed): laid out as ``annotations/instances_default.json``
    (plus the ``images/`` folder its reader looks for), the items are named ``frame_000000``, ...,
    and every annotation keeps ``track_id`` and ``keyframe``."""
    dm = pytest.importorskip("datumaro")
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    r = instance_result()
    for shape in ("rle", "polygon"):
        write(root / "annotations", "coco", r, name="instances_default.json", shape=shape, overwrite=True)
        dataset = dm.Dataset.import_from(str(root), "coco_instances")
        items = sorted(dataset, key=lambda item: item.id)
        assert [item.id for item in items] == [f"frame_{i:06d}" for i in range(T)]
        kinds = {"rle": dm.AnnotationType.mask, "polygon": dm.AnnotationType.polygon}
        for t, item in enumerate(items):
            segs = [a for a in item.annotations if a.type == kinds[shape]]
            want = [s.track_id for s in r.segments if masks.area(r.mask(s, t))]
            assert sorted(a.attributes["track_id"] for a in segs) == sorted(want)
            assert all(a.attributes["keyframe"] is True for a in item.annotations)
            for a in segs:
                seg = next(s for s in r.segments if s.track_id == a.attributes["track_id"])
                if shape == "rle":
                    assert np.array_equal(a.image.astype(bool), dense(r, r.segments.index(seg), t))
                assert a.attributes["score"] == pytest.approx(seg.score)
