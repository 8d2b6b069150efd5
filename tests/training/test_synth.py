"""The synthetic shapes dataset: deterministic, consistent masks, occlusions that keep the track,
objects entering and leaving, valid YouTube-VIS ground truth, mp4 output."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from videomt_cli.io import masks as mask_ops
from videomt_cli.training import synth
from videomt_cli.errors import InputError, OutputError
from videomt_cli.evaluate import evaluate

# Small and quick, with every feature: a third of the videos hold a scripted occlusion.
PARAMS = dict(frames=16, size=(96, 128), occlusion_prob=0.5)
N_VIDEOS = 12
SEED = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    path = synth.generate(out, videos=N_VIDEOS, seed=SEED, **PARAMS)
    doc = json.loads(path.read_text())
    plans = [synth.plan_video(SEED, i, **PARAMS) for i in range(N_VIDEOS)]
    return out, path, doc, plans


def _tracks(doc, video_id):
    return [a for a in doc["annotations"] if a["video_id"] == video_id]


def _visible_objects(plan, visible):
    """Indices of the plan's objects that get an annotation (visible in some frame), in order."""
    return [k for k in range(len(plan.objects)) if visible[k].any()]


def test_layout_and_format(dataset):
    out, path, doc, plans = dataset
    assert path == out / "annotations.json"
    assert [c["name"] for c in doc["categories"]] == list(synth.DEFAULT_CLASSES)
    assert [c["id"] for c in doc["categories"]] == [1, 2, 3]
    assert [v["id"] for v in doc["videos"]] == list(range(1, N_VIDEOS + 1))
    assert [a["id"] for a in doc["annotations"]] == list(range(1, len(doc["annotations"]) + 1))
    for v in doc["videos"]:
        assert (v["height"], v["width"], v["length"]) == (96, 128, 16)
        assert len(v["file_names"]) == 16
        assert v["file_names"][0] == f"JPEGImages/{v['name']}/00000.jpg"
        img = cv2.imread(str(out / v["file_names"][-1]))
        assert img.shape == (96, 128, 3)
        n = len(_tracks(doc, v["id"]))
        assert 1 <= n <= 4
    for a in doc["annotations"]:
        assert a["iscrowd"] == 0
        assert len(a["segmentations"]) == len(a["areas"]) == len(a["bboxes"]) == 16
        assert any(s is not None for s in a["segmentations"])


def test_masks_areas_boxes_and_pixels_agree(dataset):
    out, path, doc, plans = dataset
    kernel = np.ones((5, 5), np.uint8)
    checked = 0
    for v, plan in zip(doc["videos"], plans):
        rendered = synth.render(plan)
        objs = _visible_objects(plan, rendered.visible)
        tracks = _tracks(doc, v["id"])
        assert len(tracks) == len(objs)
        frames = [cv2.cvtColor(cv2.imread(str(out / f)), cv2.COLOR_BGR2RGB) for f in v["file_names"]]
        jpeg_error = float(np.abs(np.stack(frames).astype(int) - rendered.frames).mean())
        assert jpeg_error < 8  # the files are the render, through JPEG q95 (the grain costs most)
        for k, ann in zip(objs, tracks):
            obj = plan.objects[k]
            assert ann["category_id"] == obj.category_id
            for t, seg in enumerate(ann["segmentations"]):
                vis = rendered.visible[k, t]
                if seg is None:
                    assert not vis.any() and ann["areas"][t] is None and ann["bboxes"][t] is None
                    continue
                m = mask_ops.decode(seg)
                assert seg["size"] == [96, 128] and m.shape == (96, 128)
                assert np.array_equal(m.astype(bool), vis)
                assert ann["areas"][t] == int(m.sum()) > 0
                ys, xs = np.nonzero(m)
                assert ann["bboxes"][t] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                # the visible pixels are painted in the object's colour (JPEG and sensor noise aside)
                inner = cv2.erode(m, kernel).astype(bool)
                if inner.sum() >= 20:
                    diff = np.abs(frames[t][inner].astype(int) - np.array(obj.colour)).mean()
                    assert diff < 8, (v["id"], k, t, diff)
                    checked += 1
    assert checked > 100


def test_occlusion_keeps_the_track(dataset):
    out, path, doc, plans = dataset
    occluded = [(v, p) for v, p in zip(doc["videos"], plans) if p.occlusion is not None]
    assert len(occluded) >= 2
    for v, plan in occluded:
        rendered = synth.render(plan)
        hid, occ = plan.occlusion["hidden"], plan.occlusion["occluder"]
        t0, t1 = plan.occlusion["frames"]
        assert 2 <= t1 - t0 <= 5
        objs = _visible_objects(plan, rendered.visible)
        ann = _tracks(doc, v["id"])[objs.index(hid)]
        segs = ann["segmentations"]
        assert all(segs[t] is None for t in range(t0, t1))
        assert segs[t0 - 1] is not None and segs[t1] is not None  # one track before and after
        # hidden behind the occluder (in the frame, covered), not gone
        assert plan.objects[occ].depth > plan.objects[hid].depth
        for t in range(t0, t1):
            assert rendered.full[hid, t].any()
            assert not (rendered.full[hid, t] & ~rendered.full[occ, t]).any()


def test_objects_enter_and_leave(dataset):
    out, path, doc, plans = dataset
    entering = leaving = 0
    for v, plan in zip(doc["videos"], plans):
        rendered = synth.render(plan)
        objs = _visible_objects(plan, rendered.visible)
        for k, ann in zip(objs, _tracks(doc, v["id"])):
            segs = ann["segmentations"]
            present = [s is not None for s in segs]
            first, last = present.index(True), len(present) - 1 - present[::-1].index(True)
            if plan.objects[k].mode == "enter" and first > 0:
                assert not rendered.full[k, :first].any()  # outside the frame until it enters
                entering += 1
            if plan.objects[k].mode == "leave" and last < len(segs) - 1:
                assert not rendered.full[k, last + 1:].any()  # outside the frame once it left
                leaving += 1
    assert entering >= 1 and leaving >= 1


def test_ground_truth_evaluates_to_100(dataset):
    out, path, doc, plans = dataset
    preds = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
              "segmentations": a["segmentations"]} for a in doc["annotations"]]
    res = evaluate(preds, path)
    for k in ("AP", "AP50", "AP75", "AR10"):  # (AR1 < 100 where a video holds two objects of a class)
        assert res[k] == pytest.approx(100.0), k


def test_deterministic_and_seeds_differ(dataset, tmp_path):
    out, path, doc, plans = dataset
    again = synth.generate(tmp_path / "again", videos=5, seed=SEED, **PARAMS)
    first5 = json.loads(again.read_text())
    assert first5["videos"] == doc["videos"][:5]  # video i does not depend on how many are made
    assert first5["annotations"] == [a for a in doc["annotations"] if a["video_id"] <= 5]
    name = doc["videos"][4]["file_names"][7]
    assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    same = synth.generate(tmp_path / "same", videos=5, seed=SEED, **PARAMS)
    assert same.read_bytes() == again.read_bytes()

    other = json.loads(synth.generate(tmp_path / "other", videos=5, seed=SEED + 1, **PARAMS).read_text())
    assert not set(v["name"] for v in other["videos"]) & set(v["name"] for v in first5["videos"])
    segs = {json.dumps(a["segmentations"]) for a in first5["annotations"]}
    assert not any(json.dumps(a["segmentations"]) in segs for a in other["annotations"])
    a = cv2.imread(str(tmp_path / "other" / other["videos"][0]["file_names"][0])).astype(int)
    b = cv2.imread(str(tmp_path / "again" / first5["videos"][0]["file_names"][0])).astype(int)
    assert np.abs(a - b).mean() > 20


def test_mp4_and_classes(tmp_path):
    path = synth.generate(tmp_path, videos=2, seed=0, frames=8, size=(64, 96), write_frames=False, write_mp4=True,
                          classes=("star", "hexagon", "cross", "circle"), objects=(3, 4))
    doc = json.loads(path.read_text())
    assert not (tmp_path / "JPEGImages").exists()
    assert [c["name"] for c in doc["categories"]] == ["star", "hexagon", "cross", "circle"]
    assert {a["category_id"] for a in doc["annotations"]} <= {1, 2, 3, 4}
    for v in doc["videos"]:
        with av.open(str(tmp_path / v["video_file"])) as c:
            s = c.streams.video[0]
            assert s.codec_context.name == "h264" and s.format.name == "yuv420p"
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 8 and frames[0].shape == (64, 96, 3)


def test_example_video(tmp_path):
    video = synth.make_example_video(tmp_path / "example.mp4", seed=0, annotations=tmp_path / "example.json")
    assert video.stat().st_size < 500_000
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height, s.codec_context.name, s.format.name) == (320, 240, "h264", "yuv420p")
        assert sum(1 for _ in c.decode(video=0)) == 64
    doc = json.loads((tmp_path / "example.json").read_text())
    assert len(doc["annotations"]) == 3 and doc["videos"][0]["length"] == 64
    plan = synth.plan_video(0, 0, frames=64, size=(240, 320), objects=(3, 3), occlusion_prob=1.0)
    assert plan.occlusion is not None
    t0, t1 = plan.occlusion["frames"]
    hidden = doc["annotations"][plan.occlusion["hidden"]]["segmentations"]
    assert all(s is None for s in hidden[t0:t1]) and hidden[t0 - 1] and hidden[t1]


def test_argument_errors(tmp_path):
    with pytest.raises(InputError, match="classes"):
        synth.generate(tmp_path, videos=1, seed=0, classes=("circle", "blob"))
    with pytest.raises(InputError, match="even"):
        synth.generate(tmp_path, videos=1, seed=0, size=(95, 128), write_mp4=True)
    with pytest.raises(InputError, match="videos"):
        synth.generate(tmp_path, videos=0, seed=0)
    synth.generate(tmp_path, videos=1, seed=0, frames=2, size=(32, 32))
    with pytest.raises(OutputError, match="already exists"):
        synth.generate(tmp_path, videos=1, seed=0, frames=2, size=(32, 32))
    synth.generate(tmp_path, videos=1, seed=0, frames=2, size=(32, 32), overwrite=True)
