"""videomt_cli.sinks.labelstudio: Label Studio tasks (video box tracks, per-frame brush masks) and
their labeling config, checked with label_studio_sdk where it is installed and against Label
Studio's own rules (replayed from its source) everywhere."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sinkhelp import CATS, H, T, W, box, dense, instance_result  # noqa: E402

from videomt_cli.errors import InputError, OutputError  # noqa: E402
from videomt_cli.io import masks  # noqa: E402
from videomt_cli.records import Segment, VideoInfo, VideoResult  # noqa: E402
from videomt_cli.sinks.labelstudio import LabelStudioSink, brush_rle, config_path, labeling_config  # noqa: E402


def _write(tmp_path, *results, name="tasks.json", **kw) -> tuple[list, str]:
    out = tmp_path / name
    with LabelStudioSink(out, **kw) as sink:
        for r in results:
            sink.add(r)
    return json.loads(out.read_text()), config_path(out).read_text()


def _sdk_interface(config: str):
    pytest.importorskip("label_studio_sdk")
    from label_studio_sdk.label_interface import LabelInterface

    return LabelInterface(config)


# ----------------------------------------------------------------------------- brush RLE


def _decode_brush(data: list[int]) -> np.ndarray:
    """Label Studio's brush RLE decoder, replayed from the ``@thi.ng/rle-pack`` ``decode`` that
    ``label_studio_sdk/converter/brush.py`` quotes (and ``decode_rle`` implements): a 32-bit count,
    a 5-bit word size - 1, four 4-bit run-field sizes - 1; then per run a flag bit, a 2-bit field
    choice, the run length - 1, and one repeated word (flag 1) or that many words (flag 0)."""
    bits = np.unpackbits(np.array(data, np.uint8))
    pos = 0

    def read(n):
        nonlocal pos
        v = 0
        for b in bits[pos:pos + n]:
            v = (v << 1) | int(b)
        pos += n
        return v

    num, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeated = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeated:
            out[i:j] = read(word)
            i = j
        else:
            while i < j:
                out[i] = read(word)
                i += 1
    return out


def _sample_masks():
    rng = np.random.default_rng(3)
    yield np.zeros((4, 5), bool)
    yield np.ones((3, 7), bool)
    yield np.pad(np.ones((100, 300), bool), ((100, 100), (50, 50)))  # runs longer than 65536 values
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        yield rng.random((h, w)) < rng.random()


def test_brush_rle_decodes_to_the_mask():
    for m in _sample_masks():
        rgba = _decode_brush(brush_rle(m)).reshape(*m.shape, 4)
        assert np.array_equal(rgba, np.repeat((m * 255).astype(np.uint8)[..., None], 4, axis=2))
    with pytest.raises(ValueError, match="non-empty"):
        brush_rle(np.zeros((0, 3), bool))


def test_brush_rle_is_the_sdks_encoding():
    """Byte for byte what label_studio_sdk's ``mask2rle`` writes for a 0/255 mask, and its
    ``decode_rle`` gives the mask back in the alpha channel (what Label Studio draws)."""
    pytest.importorskip("label_studio_sdk")
    from label_studio_sdk.converter.brush import decode_rle, mask2rle

    for m in _sample_masks():
        ours = brush_rle(m)
        assert ours == mask2rle((m * 255).astype(np.uint8))
        assert np.array_equal(decode_rle(ours).reshape(*m.shape, 4)[:, :, 3], m * 255)


# ----------------------------------------------------------------------------- video tasks


def _lifespan(sequence: list[dict], frame: int):
    """Label Studio's video box on ``frame`` (1-based), replayed from
    ``web/libs/editor/src/regions/VideoRegion.js`` (``closestKeypoint``, ``isInLifespan``) and
    ``VideoRectangleRegion.js`` (``getShape``, with ``interpolateProp`` of ``utils/props.ts``):
    visible when the last keyframe at or before the frame is enabled or sits on that frame; the
    shape is that keyframe's, or linear between it and the next one. None when not visible."""
    before = [k for k in sequence if k["frame"] <= frame]
    if not before:
        return None
    prev = before[-1]
    if not (prev["enabled"] or prev["frame"] == frame):
        return None
    nxt = next((k for k in sequence if k["frame"] > frame), None)
    props = ("x", "y", "width", "height")
    if prev["frame"] == frame or nxt is None:
        return tuple(prev[p] for p in props)
    r = (frame - prev["frame"]) / (nxt["frame"] - prev["frame"])
    return tuple(prev[p] + (nxt[p] - prev[p]) * r for p in props)


def _box_percent(mask: np.ndarray) -> tuple:
    ys, xs = np.nonzero(mask)
    x, y, w, h = xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    return (100 * x / W, 100 * y / H, 100 * w / W, 100 * h / H)


def test_video_task_layout(tmp_path):
    tasks, config = _write(tmp_path, instance_result(), video_url="https://host/walk.mp4")
    (task,) = tasks
    assert task["data"] == {"video": "https://host/walk.mp4", "fps": 25.0, "video_id": 1}
    (pred,) = task["predictions"]
    assert pred["model_version"] == "videomt" and pred["score"] == pytest.approx(0.75)
    r1, r2 = pred["result"]
    assert (r1["type"], r1["from_name"], r1["to_name"]) == ("videorectangle", "box", "video")
    assert r1["score"] == pytest.approx(0.6) and r2["score"] == pytest.approx(0.9)
    assert r1["value"]["labels"] == ["person"] and r2["value"]["labels"] == ["dog"]
    assert r1["value"]["framesCount"] == T and r1["value"]["duration"] == pytest.approx(T / 25)
    seq = r1["value"]["sequence"]
    # 1-based frames; track 1 is absent from frame 3 (0-based): the keyframe before ends its life
    assert [(k["frame"], k["enabled"]) for k in seq] == [(1, True), (2, True), (3, False), (5, False)]
    assert [k["time"] for k in seq] == pytest.approx([1 / 25, 2 / 25, 3 / 25, 5 / 25])  # frame / fps, as LS writes
    assert all(k["rotation"] == 0 for k in seq)
    assert seq[0]["x"] == pytest.approx(100 * 2 / W) and seq[0]["width"] == pytest.approx(100 * 7 / W)
    assert seq[0]["y"] == pytest.approx(100 * 1 / H) and seq[0]["height"] == pytest.approx(100 * 5 / H)
    assert [k["enabled"] for k in r2["value"]["sequence"]] == [True] * (T - 1) + [False]
    assert 'framerate="$fps"' in config and '<VideoRectangle name="box" toName="video"/>' in config


@pytest.mark.parametrize("stride", [1, 2])
def test_label_studio_shows_each_box_where_the_track_is(tmp_path, stride):
    r = instance_result(stride=stride)
    (task,), _ = _write(tmp_path, r)
    for seg, region in zip(r.segments, task["predictions"][0]["result"]):
        seq = region["value"]["sequence"]
        shown = {f: _lifespan(seq, f + 1) for f in range(T)}
        for f in range(T):
            rle = r.mask(seg, f)
            if rle is not None:  # processed: exactly the mask's box, or nothing where it is absent
                m = masks.decode(rle)
                assert (shown[f] is None) == (m.sum() == 0)
                if m.sum():
                    assert shown[f] == pytest.approx(_box_percent(m))
            elif shown[f] is not None:  # skipped by the stride: interpolated between its neighbours
                k = r.segments.index(seg)
                a, b = _box_percent(dense(r, k, f - 1)), _box_percent(dense(r, k, f + 1))
                assert shown[f] == pytest.approx(tuple((x + y) / 2 for x, y in zip(a, b)))
    if stride == 2:  # track 2 moves: frame 1 is shown halfway between frames 0 and 2
        assert _lifespan(task["predictions"][0]["result"][1]["value"]["sequence"], 2) is not None


def test_tasks_validate_in_label_studio_sdk(tmp_path):
    for kind in ("video", "images"):
        tasks, config = _write(tmp_path, instance_result(), instance_result(2, path="/d/b.mp4", stride=2),
                               name=f"{kind}.json", kind=kind, video_url=None)
        li = _sdk_interface(config)
        li.validate()  # schema, unique names, toName links
        label_names = li.get_control("videoLabels" if kind == "video" else "tag").labels
        assert sorted(label_names) == sorted(c.name for c in CATS)
        for task in tasks:
            assert all(task["data"].get(obj.value_name) is not None for obj in li.objects)
            pred = task["predictions"][0]
            assert li.validate_prediction(pred, return_errors=True) == []
            for region in pred["result"]:
                assert set(region["value"]["labels" if kind == "video" else "brushlabels"]) <= set(label_names)
            # the validator is not blind: a broken box / mask / name is reported
            if pred["result"]:
                bad = copy.deepcopy(pred)
                if kind == "video":
                    bad["result"][0]["value"]["sequence"][0]["x"] = 150.0
                else:
                    bad["result"][0]["value"]["rle"] = [512]
                assert li.validate_prediction(bad, return_errors=True)
                bad = copy.deepcopy(pred)
                bad["result"][0]["to_name"] = "nope"
                assert li.validate_prediction(bad, return_errors=True)
    assert len(tasks) == T + 3  # images: one task per processed frame (5 + 3 with stride 2)


def test_video_urls_and_fps(tmp_path):
    tasks, _ = _write(tmp_path, instance_result(1), instance_result(2, path="/d/b.mp4"),
                      video_url="s3://bucket/{name}.mp4?file={file}")
    assert [t["data"]["video"] for t in tasks] == ["s3://bucket/walk.mp4?file=walk.mp4", "s3://bucket/b.mp4?file=b.mp4"]
    with pytest.raises(OutputError, match="same URL"):
        _write(tmp_path, instance_result(1), instance_result(2, path="/d/b.mp4"), name="same.json",
               video_url="https://host/v.mp4")
    assert not (tmp_path / "same.json").exists() and not (tmp_path / "same.config.xml").exists()
    # no frame rate known (an iterable of arrays): Label Studio's default 24, said in a warning
    info = VideoInfo("<arrays>", W, H, num_frames=T, kind="arrays")
    pairs = [(Segment(1, 1, 0.5), [masks.encode(box(1, 4, 1, 4))[0]] * T)]
    out = tmp_path / "nofps.json"
    with LabelStudioSink(out) as sink:
        sink.add(VideoResult.from_masks(info, "instance", CATS, pairs))
    (task,) = json.loads(out.read_text())
    assert task["data"]["fps"] == 24.0 and "24 fps" in sink.warnings[0]
    assert task["predictions"][0]["result"][0]["value"]["sequence"][1]["time"] == pytest.approx(2 / 24)


# ----------------------------------------------------------------------------- image tasks


def test_image_tasks_hold_brush_masks(tmp_path):
    r = instance_result(stride=2)
    tasks, config = _write(tmp_path, r, kind="images", image_root="/data/local-files/?d=frames/")
    assert [t["data"]["frame"] for t in tasks] == [0, 2, 4]
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d=frames/walk/{i:05d}.jpg" for i in (0, 2, 4)]
    for task in tasks:
        f = task["data"]["frame"]
        pred = task["predictions"][0]
        assert pred["score"] == pytest.approx(0.75)
        for region in pred["result"]:
            seg = next(s for s in r.segments if f"track{s.track_id}" == region["id"])
            assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "tag", "image")
            assert (region["original_width"], region["original_height"]) == (W, H)
            assert region["value"]["format"] == "rle" and region["score"] == pytest.approx(seg.score)
            alpha = _decode_brush(region["value"]["rle"]).reshape(H, W, 4)[:, :, 3]
            assert np.array_equal(alpha, dense(r, r.segments.index(seg), f) * 255)
    assert '<BrushLabels name="tag" toName="image">' in config and 'value="$image"' in config
    # a processed frame without objects is a task whose prediction is empty
    full = instance_result()
    empty_frame = VideoResult.from_masks(full.video, "instance", CATS,
                                         [(full.segments[0], list(full.masks_of(full.segments[0])))])
    tasks, _ = _write(tmp_path, empty_frame, name="e.json", kind="images")
    assert tasks[3]["predictions"][0] == {"model_version": "videomt", "score": None, "result": []}


def test_config_file_and_errors(tmp_path):
    assert config_path(tmp_path / "t.json") == tmp_path / "t.config.xml"
    xml = labeling_config([CATS[0], type(CATS[0])(5, 'a "quoted" <name>', True, (1, 2, 3))], "video")
    assert 'value="a &quot;quoted&quot; &lt;name&gt;" background="#010203"' in xml
    _write(tmp_path, instance_result())
    with pytest.raises(OutputError, match="--overwrite"):
        LabelStudioSink(tmp_path / "tasks.json")
    (tmp_path / "other.config.xml").write_text("mine")
    with pytest.raises(OutputError, match="labeling config"):
        LabelStudioSink(tmp_path / "other.json")
    _write(tmp_path, instance_result(), name="other.json", overwrite=True)
    assert "<View>" in (tmp_path / "other.config.xml").read_text()
    with pytest.raises(InputError, match="video, images"):
        LabelStudioSink(tmp_path / "x.json", kind="frames")
    with pytest.raises(RuntimeError):
        with LabelStudioSink(tmp_path / "gone.json") as sink:
            sink.add(instance_result())
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.config.xml", "other.json", "tasks.config.xml",
                                                           "tasks.json"]
