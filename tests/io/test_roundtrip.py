"""The way there and back: a synthetic video's ground truth written by the CVAT and COCO sinks, read
back by io.cvat / io.coco_video into the same tracks, then trained on with frames decoded from the mp4."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from toy_dataset import tiny_train_config  # noqa: E402

from videomt_cli.io import masks as mask_ops  # noqa: E402
from videomt_cli.io import ytvis  # noqa: E402
from videomt_cli.io.coco_video import read_coco_tracks  # noqa: E402
from videomt_cli.io.cvat import read_cvat  # noqa: E402
from videomt_cli.io.probe import probe  # noqa: E402
from videomt_cli.records import Category, Segment, VideoResult  # noqa: E402
from videomt_cli.sinks.coco import CocoSink  # noqa: E402
from videomt_cli.sinks.cvat import CvatSink  # noqa: E402
from videomt_cli.training import synth  # noqa: E402

IOU = 0.9  # per-frame bound; the polygon sink traces pixel corners, so only holes (filled) can lose pixels


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    """One synthetic video (3 objects, a scripted occlusion that splits an object into parts) as
    its mp4, its YouTube-VIS ground truth and that ground truth as a VideoResult."""
    root = tmp_path_factory.mktemp("roundtrip")
    path = synth.generate(root, videos=1, seed=3, frames=10, size=(64, 96), objects=(3, 3), occlusion_prob=1.0,
                          write_frames=False, write_mp4=True)
    doc = json.loads(path.read_text())
    (video,) = doc["videos"]
    mp4 = root / video["video_file"]
    n, h, w = video["length"], video["height"], video["width"]
    pairs = []
    for a in doc["annotations"]:
        rles = [mask_ops.empty(h, w) if s is None else {"size": s["size"], "counts": s["counts"].encode()}
                for s in a["segmentations"]]
        pairs.append((Segment(a["id"], a["category_id"], 0.5 + 0.1 * a["id"]), rles))
    cats = [Category(c["id"], c["name"]) for c in doc["categories"]]
    result = VideoResult.from_masks(probe(mp4), "instance", cats, pairs, processed=range(n), num_frames=n)
    return mp4, doc, result


def dense(seg) -> np.ndarray | None:
    if seg is None:
        return None
    counts = seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]
    return coco_mask.decode({"size": seg["size"], "counts": counts}).astype(bool)


def frame_ious(truth: dict, back: dict) -> list[float | None]:
    """Per frame: IoU of the two tracks' masks (None where both are absent; 0 where one is)."""
    out = []
    for s, t in zip(truth["segmentations"], back["segmentations"]):
        a, b = dense(s), dense(t)
        if a is None or b is None:
            out.append(None if a is None and b is None else 0.0)
        else:
            out.append(float((a & b).sum() / (a | b).sum()))
    return out


def test_cvat_polygons_there_and_back(ground_truth, tmp_path):
    """GT -> CvatSink polygons (objects in several parts become grouped part tracks) -> read_cvat:
    the same tracks on the same frames, labels and ids, every frame's mask within IOU."""
    mp4, doc, result = ground_truth
    xml = mp4.parent / "gt.polygons.xml"  # beside the mp4, which <source> names
    with CvatSink(xml, overwrite=True) as sink:
        sink.add(result)
    back = read_cvat(xml)
    assert back["categories"] == [{"id": c["id"], "name": c["name"]} for c in doc["categories"]]
    assert back["videos"][0]["video_file"] == str(mp4) and back["videos"][0]["length"] == len(result.processed)
    assert len(back["annotations"]) == len(doc["annotations"])
    grouped = 0
    worst = 1.0
    for truth, got in zip(doc["annotations"], back["annotations"]):
        assert got["category_id"] == truth["category_id"] and got["cvat_tracks"][0] == str(truth["id"])
        grouped += len(got["cvat_tracks"]) > 1
        ious = frame_ious(truth, got)
        present = [i for i in ious if i is not None]
        assert present and min(present) >= IOU, ious
        worst = min(worst, min(present))
    assert grouped >= 1  # the occlusion split an object: its parts came back as one mask
    print(f"polygon round trip: worst per-frame IoU {worst:.4f}")


def test_cvat_boxes_there_and_back(ground_truth, tmp_path):
    """shape="box": the read-back mask is exactly the ground-truth mask's bounding box."""
    mp4, doc, result = ground_truth
    xml = mp4.parent / "gt.boxes.xml"
    with CvatSink(xml, overwrite=True, shape="box") as sink:
        sink.add(result)
    back = read_cvat(xml)
    assert any("boxes" in n for n in back["notes"])
    for truth, got in zip(doc["annotations"], back["annotations"]):
        for s, t in zip(truth["segmentations"], got["segmentations"]):
            assert (s is None) == (t is None)
            if s is not None:
                x, y, bw, bh = (int(v) for v in mask_ops.bbox({"size": s["size"], "counts": s["counts"].encode()}))
                expect = np.zeros(s["size"], bool)
                expect[y:y + bh, x:x + bw] = True
                assert np.array_equal(dense(t), expect)


def test_coco_there_and_back(ground_truth, tmp_path):
    mp4, doc, result = ground_truth
    path = tmp_path / "gt.coco.json"
    with CocoSink(path) as sink:
        sink.add(result)
    back = read_coco_tracks(path)
    assert back["videos"][0]["video_file"] == str(mp4)
    for truth, got in zip(doc["annotations"], back["annotations"]):
        assert got["track_id"] == truth["id"] and got["category_id"] == truth["category_id"]
        assert all(i is None or i == 1.0 for i in frame_ious(truth, got))


def test_train_two_steps_on_the_cvat_xml(ground_truth, tmp_path):
    """Two steps of the tiny preset on the XML: the clips' frames decoded from the mp4 on the fly."""
    from videomt_cli.training.data import ClipDataset
    from videomt_cli.training.loop import train

    mp4, doc, result = ground_truth
    xml = mp4.parent / "train.xml"
    with CvatSink(xml, overwrite=True) as sink:
        sink.add(result)
    data = ytvis.read(xml)
    assert data.media(data.videos[0], data.image_root()).file == mp4
    cfg = tiny_train_config(xml, tmp_path / "run", steps=2, crop_size=(64, 96), short_side=(64, 64))
    assert ClipDataset(cfg).labels == [c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"])]
    losses = []
    final = train(cfg, lambda step, total, values, lr: losses.append(values["loss"]))
    assert len(losses) == 2 and all(np.isfinite(losses)) and final.is_file()


def _datumaro_dataset(doc, result):
    """The ground truth as a datumaro Dataset: one item per frame (``frame_000012``, as CVAT names a
    video's frames), one polygon per visible object (its largest part) with its track_id."""
    from datumaro.components.annotation import AnnotationType, LabelCategories, Polygon
    from datumaro.components.dataset import Dataset
    from datumaro.components.dataset_base import DatasetItem
    from datumaro.components.media import Image

    from videomt_cli.io.polygons import mask_polygons

    h, w, n = result.video.height, result.video.width, result.num_frames
    names = [c["name"] for c in doc["categories"]]
    label = {c["id"]: names.index(c["name"]) for c in doc["categories"]}
    items = []
    for f in range(n):
        anns = []
        for a in doc["annotations"]:
            m = dense(a["segmentations"][f])
            if m is not None:
                anns.append(Polygon(mask_polygons(m)[0].reshape(-1).tolist(), label=label[a["category_id"]],
                                    attributes={"track_id": a["id"], "keyframe": True, "outside": False}))
        items.append(DatasetItem(id=f"frame_{f:06d}", media=Image.from_numpy(np.full((h, w, 3), 90, np.uint8)),
                                 attributes={"frame": f}, annotations=anns))
    return Dataset.from_iterable(items, categories={AnnotationType.label: LabelCategories.from_iterable(names)})


def _one_part_frames(doc, back, by):
    """Compare each track's one-part frames (where the one polygon written is the whole mask)."""
    from videomt_cli.io.polygons import mask_polygons

    compared = 0
    for a in doc["annotations"]:
        got = by[a["id"]]
        assert got["category_id"] == a["category_id"]
        for f, s in enumerate(a["segmentations"]):
            m = dense(s)
            if m is not None and len(mask_polygons(m)) == 1:
                g = dense(got["segmentations"][f])
                assert (m & g).sum() / (m | g).sum() >= IOU
                compared += 1
    return compared


def test_datumaro_coco_export_reads_back(ground_truth, tmp_path):
    """datumaro's coco_instances export (annotations/instances_default.json + images/default/):
    with no video named, the exported images are the frames; with the mp4, the frame_NNNNNN names
    pick its frames. Track ids come back from attributes.track_id."""
    pytest.importorskip("datumaro")
    mp4, doc, result = ground_truth
    _datumaro_dataset(doc, result).export(str(tmp_path / "coco"), "coco_instances", save_media=True)
    path = tmp_path / "coco" / "annotations" / "instances_default.json"
    for back in (read_coco_tracks(path), read_coco_tracks(path, video=mp4)):
        assert back["videos"][0]["length"] == result.num_frames
        by = {got["track_id"]: got for got in back["annotations"]}
        assert sorted(by) == sorted(a["id"] for a in doc["annotations"])
        assert _one_part_frames(doc, back, by) >= result.num_frames
    assert back["videos"][0]["video_file"] == str(mp4)
    assert read_coco_tracks(path)["videos"][0]["file_names"][0] == str(tmp_path / "coco" / "images" / "default" /
                                                                        "frame_000000.jpg")


def test_datumaro_writes_cvat_xml_we_read(ground_truth, tmp_path):
    """A real client (a test extra, not a dependency): datumaro's CVAT exporter (``use_track=True``,
    datumaro 1.13) writes the ground truth as tracks, one keyframe polygon per visible frame and no
    outside keyframes, which read back as the same tracks. After its last shape a track goes on to
    the task's end, as CVAT shows such a file (TrackManager repeats the last keyframe)."""
    pytest.importorskip("datumaro")
    mp4, doc, result = ground_truth
    _datumaro_dataset(doc, result).export(str(tmp_path / "dm"), "cvat", use_track=True)
    back = read_cvat(tmp_path / "dm" / "default.xml", video=mp4)  # datumaro names no <source>
    by = {int(got["cvat_tracks"][0]): got for got in back["annotations"]}
    assert sorted(by) == sorted(a["id"] for a in doc["annotations"])
    assert _one_part_frames(doc, back, by) >= result.num_frames
    for a in doc["annotations"]:
        visible = [f for f, s in enumerate(a["segmentations"]) if s is not None]
        got = by[a["id"]]["segmentations"]
        assert all(s is None for s in got[:visible[0]])
        assert all(s is not None for s in got[visible[-1]:])  # no outside keyframe: held to the end
