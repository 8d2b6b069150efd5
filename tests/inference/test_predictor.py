"""The streaming predictor: official video-level semantics, windows, chunking, the Python API.

The central test runs ``videomt segment`` on a square video at the stored size (so the resize is
the identity and transformers' ``VideomtForUniversalSegmentation`` accepts the frames), and checks
the written JSON against the official instance rules implemented here directly on the reference
model's outputs for the whole clip in one call.
"""

from __future__ import annotations

import dataclasses
import json
import runpy
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from conftest import frame_major_to_ours, hf_reference, make_model
from media import make_image_folder, make_video
from videomt_cli.cli import app
from videomt_cli.errors import CheckpointError, InputError
from videomt_cli.inference import predictor as predictor_module
from videomt_cli.inference.predictor import Predictor, model_categories
from videomt_cli.inference.preprocess import PIXEL_MEAN, PIXEL_STD, masks_to_frame
from videomt_cli.io.read import read_frames
from videomt_cli.io.window import TimeSpec
from videomt_cli.modeling import checkpoint
from videomt_cli.modeling.device import pick_device
from videomt_cli.records import VideoResult

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    """A tiny random VidEoMT in our single-file format (K = 5 generic classes, ids 1..5)."""
    return checkpoint.save(make_model(seed=3), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=9, size=(97, 71))


def _predictor(tiny_file, **options) -> Predictor:
    return Predictor.from_model(str(tiny_file), device="cpu", min_size=64, **options)


def _decode(rle) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})


def _summary(result: VideoResult) -> list:
    """(category, score, every frame's mask) of each segment; closes the result."""
    with result:
        return [(s.category_id, s.score, list(result.masks_of(s))) for s in result.segments]


# ----------------------------------------------------------------------------- parity with the reference


def _official_instance_results(class_logits, mask_logits, frame_size, padded, max_num):
    """The official ``inference_video_vis`` rules (DESIGN 3), written out directly.

    class_logits (T, Q, K + 1), mask_logits (T, Q, h, w) of the whole video ->
    [(score, label, query, mask logits (T, H, W) at the frame size)] in score order.
    """
    T, Q, K1 = class_logits.shape
    K = K1 - 1
    scores = class_logits.mean(0).softmax(-1)[:, :-1]  # (Q, K), "no object" dropped
    top_scores, top_idx = scores.flatten().topk(max_num, sorted=True)
    out = []
    for score, idx in zip(top_scores.tolist(), top_idx.tolist()):
        label, query = idx % K, idx // K
        x = mask_logits[:, query : query + 1]  # (T, 1, h, w)
        x = F.interpolate(x, size=padded, mode="bilinear", align_corners=False)
        x = x[..., : frame_size[0], : frame_size[1]]  # crop to the resized size (= the frame here)
        x = F.interpolate(x, size=frame_size, mode="bilinear", align_corners=False)
        out.append((score, label, query, x[:, 0]))
    return out


def test_instance_results_equal_the_official_rules_on_the_transformers_model(tmp_path):
    model = make_model(seed=11)
    size = model.config.image_size  # 64: square frames at the stored size, a multiple of 32
    reference = hf_reference(model, tmp_path / "hf")
    path = make_video(tmp_path / "square.mp4", frames=7, size=(size, size))

    result_file = tmp_path / "out.json"
    run = CliRunner().invoke(app, ["segment", str(path), "-o", str(result_file), "--model", str(tmp_path / "hf"),
                                   "--min-size", str(size), "--chunk-size", "3", "--device", "cpu"])
    assert run.exit_code == 0, run.output
    written = json.loads(result_file.read_text())

    # The same decoded pixels as the predictor saw (the codec is lossy), normalised by hand.
    frames = torch.from_numpy(np.stack([f.image for f in read_frames(path)]))  # (T, H, W, 3) uint8
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    pixels = (frames.permute(0, 3, 1, 2).float() - mean) / std
    T = pixels.shape[0]
    with torch.no_grad():
        ref_out = reference(pixels[None])  # the whole clip in one call: (1, T, 3, H, W)
    class_logits = frame_major_to_ours(ref_out.class_queries_logits, 1, T)[0]
    mask_logits = frame_major_to_ours(ref_out.masks_queries_logits, 1, T)[0]
    expected = _official_instance_results(class_logits, mask_logits, (size, size), (size, size), max_num=10)

    assert len(written) == len(expected) == 10
    assert all(len(entry["segmentations"]) == T for entry in written)
    unmatched = list(written)
    for score, label, query, logits in expected:
        mask = (logits > 0).numpy()
        sure = (logits.abs() >= 1e-4).numpy()  # pixels whose sign no float rounding can flip
        found = None
        for entry in unmatched:
            if entry["category_id"] != label + 1 or abs(entry["score"] - score) > 1e-4:
                continue
            ours = np.stack([_decode(rle) for rle in entry["segmentations"]]).astype(bool)
            if ours.shape == mask.shape and np.array_equal(ours[sure], mask[sure]):
                found = entry
                break
        assert found is not None, f"no written result for query {query}, class {label + 1}, score {score:.5f}"
        unmatched.remove(found)
    assert not unmatched


# ----------------------------------------------------------------------------- chunks, windows, strides


# What the chunk size may change (README, "Streaming"): the frame-parallel blocks and the heads run
# batched over a chunk's frames, and a batched matmul's float rounding depends on how many rows it
# has. So logits agree to rounding (GUARD), video-level scores to 1e-6, and a mask pixel may differ
# only where the official chain's logit is within GUARD of zero.
GUARD = 1e-4


def _chunk_run(predictor, source, monkeypatch):
    """The result of a run and the full-resolution mask logits of every (frame, query) it saw."""
    logits = {}
    forward = Predictor.forward

    def recording(self, images, geometry, state):
        cls, masks, state = forward(self, images, geometry, state)
        start = len(logits)
        for t in range(masks.shape[0]):
            logits[start + t] = masks_to_frame(masks[t], geometry)  # (Q, H, W)
        return cls, masks, state

    monkeypatch.setattr(Predictor, "forward", recording)
    result = predictor.run(source)
    monkeypatch.setattr(Predictor, "forward", forward)
    return result, logits


@pytest.mark.parametrize("model", ["tiny", "bundled"])
def test_the_chunk_size_changes_results_only_by_rounding(tiny_file, clip, monkeypatch, model):
    if model == "tiny":
        base, source = _predictor(tiny_file), str(clip)
    else:  # a trained model's crisp masks on the example, at its own size
        base, source = Predictor.from_model(None, device="cpu"), str(REPO / "examples" / "example.mp4")
    ref, ref_logits = _chunk_run(dataclasses.replace(base, chunk_size=1), source, monkeypatch)
    with ref:
        for chunk in (4, 100):
            with _chunk_run(dataclasses.replace(base, chunk_size=chunk), source, monkeypatch)[0] as other:
                assert [(s.category_id, s.query) for s in other.segments] == \
                       [(s.category_id, s.query) for s in ref.segments]
                for a, b in zip(ref.segments, other.segments):
                    assert abs(a.score - b.score) <= 1e-6
                    for f, (ma, mb) in enumerate(zip(ref.masks_of(a), other.masks_of(b))):
                        if ma == mb:
                            continue
                        differ = torch.from_numpy(_decode(ma) != _decode(mb))
                        near_zero = ref_logits[f][a.query].abs() < GUARD
                        assert bool(near_zero[differ].all()), f"chunk {chunk}, frame {f}: a pixel far from 0 flipped"


@pytest.mark.parametrize("start, end, stride, kept", [
    (None, None, 2, [0, 2, 4, 6, 8]),
    ("3", "7", 1, [3, 4, 5, 6]),
    (3, 7, 1, [3, 4, 5, 6]),
    ("2", None, 3, [2, 5, 8]),
    ("0.1s", "0.25s", 1, [3, 4, 5, 6]),  # 25 fps: frames at 0.12, 0.16, 0.20, 0.24 s
    (0.1, 0.25, 1, [3, 4, 5, 6]),  # floats are seconds
    (TimeSpec(frame=3), TimeSpec(seconds=0.25), 1, [3, 4, 5, 6]),
])
def test_window_and_stride_select_frames_and_leave_the_rest_null(tiny_file, clip, start, end, stride, kept):
    with _predictor(tiny_file).run(str(clip), start=start, end=end, stride=stride) as result:
        assert result.processed == tuple(kept)
        assert result.num_frames == 9 and result.timeline.num_frames == 9
        assert result.segments
        for seg in result.segments:
            masks = list(result.masks_of(seg))
            assert len(masks) == 9
            assert [i for i, m in enumerate(masks) if m is not None] == kept


def test_time_spec_parses_frames_and_times():
    assert TimeSpec.parse("120", "--start") == TimeSpec(frame=120)
    assert TimeSpec.parse("4.5s", "--start") == TimeSpec(seconds=4.5)
    assert TimeSpec.parse("1:02.5", "--start") == TimeSpec(seconds=62.5)
    assert TimeSpec.parse("1:00:02", "--end") == TimeSpec(seconds=3602.0)
    assert TimeSpec.parse(None, "--end") is None
    for bad in ("-3", "abc", "4.5m", ""):
        with pytest.raises(InputError, match="--start"):
            TimeSpec.parse(bad, "--start")


def test_windows_outside_the_video_are_refused(tiny_file, clip):
    p = _predictor(tiny_file)
    with pytest.raises(InputError, match="after the end"):
        p.run(str(clip), start=9)
    with pytest.raises(InputError, match="after the end"):
        p.run(str(clip), start="10s")
    with pytest.raises(InputError, match="--end must be after --start"):
        p.run(str(clip), start=5, end=5)
    with pytest.raises(InputError, match="No frame"):
        p.run(str(clip), end=0)
    with pytest.raises(InputError, match="stride"):
        p.run(str(clip), stride=0)
    with pytest.raises(InputError, match="--start"):
        p.run(str(clip), start="soon")


def test_an_interrupted_run_stops_the_reader_and_closes_the_spill_file(tiny_file, clip, monkeypatch):
    p = _predictor(tiny_file, chunk_size=2)
    spills = []
    make = predictor_module.postprocess.make_accumulator

    def recording(*args, **kwargs):
        acc = make(*args, **kwargs)
        spills.append(acc.store)
        return acc

    calls = []
    original = Predictor.forward

    def forward(self, images, geometry, state):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, images, geometry, state)

    monkeypatch.setattr(predictor_module.postprocess, "make_accumulator", recording)
    monkeypatch.setattr(Predictor, "forward", forward)
    with pytest.raises(KeyboardInterrupt):
        p.run(str(clip))
    assert calls == [2, 2]
    assert len(spills) == 1 and spills[0].closed
    reader = [t for t in threading.enumerate() if t.name == "videomt-read-ahead"]
    for t in reader:
        t.join(5)
    assert not any(t.is_alive() for t in reader)


def test_image_folder_input(tiny_file, tmp_path):
    folder = make_image_folder(tmp_path / "frames", n=5, size=(64, 48))
    with _predictor(tiny_file).run(str(folder)) as result:
        assert result.video.num_frames == 5 and result.processed == (0, 1, 2, 3, 4)
        assert result.video.is_image_folder
        assert all(m["size"] == [48, 64] for s in result.segments for m in result.masks_of(s))


def test_arrays_are_a_source_and_read_once_sources_need_one_pass(tiny_file, clip):
    """A (T, H, W, 3) array, a list of frames and a generator give the decoded video's results;
    panoptic results need the frames twice, so a generator is refused before anything runs."""
    frames = [f.image for f in read_frames(str(clip))]
    p = _predictor(tiny_file)
    from_file = _summary(p.run(str(clip)))
    assert _summary(p.run(np.stack(frames))) == from_file
    assert _summary(p.run(frames)) == from_file
    assert _summary(p.run(f for f in frames)) == from_file
    panoptic = _predictor(tiny_file, task="panoptic")
    with pytest.raises(InputError, match="read once"):
        panoptic.run(f for f in frames)
    with panoptic.run(frames) as result:
        assert result.task == "panoptic" and result.processed == tuple(range(9))


# ----------------------------------------------------------------------------- loading


def test_from_model_rejects_bad_options(tiny_file):
    with pytest.raises(InputError, match="dtype"):
        Predictor.from_model(str(tiny_file), device="cpu", dtype="fp64")
    with pytest.raises(InputError, match="task"):
        Predictor.from_model(str(tiny_file), device="cpu", task="depth")
    with pytest.raises(InputError, match="Did you mean 'chunk_size'"):  # a misspelled option
        Predictor.from_model(str(tiny_file), device="cpu", chunksize=4)
    with pytest.raises(InputError, match="Unknown option 'colour'"):
        Predictor.from_model(str(tiny_file), colour="red")
    with pytest.raises(InputError, match="--chunk-size"):
        Predictor.from_model(str(tiny_file), device="cpu", chunk_size=0)
    with pytest.raises(InputError, match="--score-threshold"):
        Predictor.from_model(str(tiny_file), device="cpu", score_threshold=1.5)
    with pytest.raises(InputError, match="device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            pick_device("cuda")
    with pytest.raises(CheckpointError, match="does not exist"):
        Predictor.from_model(str(tiny_file) + ".missing", device="cpu")


def test_predictor_is_frozen_and_classes_are_run_arguments(tmp_path, clip):
    model = make_model(seed=5)
    trained = checkpoint.save(model, tmp_path / "trained.safetensors", labels=list("abcde"),
                              category_ids=[3, 7, 11, 12, 40])
    p = Predictor.from_model(str(trained), device="cpu", min_size=64, max_num=40)
    assert isinstance(p.categories, tuple)
    assert [(c.id, c.name) for c in p.categories] == [(3, "a"), (7, "b"), (11, "c"), (12, "d"), (40, "e")]
    assert [(c.id, c.name) for c in model_categories(str(trained))] == [(c.id, c.name) for c in p.categories]
    assert not hasattr(p, "select_classes")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_num = 3
    everything = _summary(p.run(str(clip)))
    assert {c for c, _, _ in everything} == {3, 7, 11, 12, 40}
    # names or dataset ids; the same segments as the unfiltered run, in the same order
    chosen = _summary(p.run(str(clip), classes=["b", "40"]))
    assert chosen and chosen == [e for e in everything if e[0] in (7, 40)]
    assert _summary(p.run(str(clip), classes="b")) == [e for e in everything if e[0] == 7]
    with pytest.raises(InputError, match="unicorn"):
        p.run(str(clip), classes=["unicorn"])
    assert _summary(p.run(str(clip))) == everything  # a run's classes do not stick to the predictor
    # A registry model's labels come from its table, without loading (or downloading) weights.
    names = [c.name for c in model_categories("videomt-s-ytvis19")]
    assert len(names) == 40 and names[0] == "person"


def test_fp16_on_the_cpu_warns(tiny_file):
    p = Predictor.from_model(str(tiny_file), device="cpu", dtype="bf16", min_size=64)
    assert not p.warnings and p.model.class_head.weight.dtype == torch.bfloat16
    assert "fp16" in " ".join(Predictor.from_model(str(tiny_file), device="cpu", dtype="fp16").warnings)


def test_the_default_model_says_it_is_a_demo(tiny_file):
    default = Predictor.from_model(device="cpu")
    assert default.entry is not None and default.task == "instance"
    assert [c.name for c in default.categories] == ["circle", "square", "triangle"]
    assert "demo model" in " ".join(default.notes) and "videomt models" in " ".join(default.notes)
    assert Predictor.from_model(str(tiny_file), device="cpu").notes == ()


# ----------------------------------------------------------------------------- the Python API example


def test_api_example_writes_youtube_vis_json(tiny_file, clip, tmp_path, monkeypatch, capsys):
    out = tmp_path / "api.json"
    monkeypatch.setattr(sys, "argv", ["api_example.py", str(clip), "-o", str(out), "--model", str(tiny_file),
                                      "--min-size", "64", "--device", "cpu"])
    runpy.run_path(str(REPO / "examples" / "api_example.py"), run_name="__main__")
    results = json.loads(out.read_text())
    assert len(results) == 10 and all(len(r["segmentations"]) == 9 for r in results)
    assert {r["video_id"] for r in results} == {1}
    assert "wrote" in capsys.readouterr().out
