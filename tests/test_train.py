"""Training: the dataset (formats, augmentation, errors), forward_train, the optimiser and schedule,
a few real steps that lower the loss, and an exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from videomt_cli import checkpoint
from videomt_cli.config import preset
from videomt_cli.errors import InputError, VideoMTError
from videomt_cli.model import VideoMT
from videomt_cli.train import (ClipDataset, DatasetError, TrainConfig, TrainingError, TwoStageWarmupPoly,
                               build_model, find_resume, forward_train, param_groups, train,
                               warmup_poly_factor)

from conftest import make_frames, make_model

SIZE = 64  # frames are SIZE x SIZE
FRAMES = 4


def _rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _box(y0, x0, h, w) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), bool)
    m[y0:y0 + h, x0:x0 + w] = True
    return m


def make_dataset(root: Path, frames: int = FRAMES) -> Path:
    """Two videos of moving coloured boxes on a grey ground, as YouTube-VIS: one JPEG-free PNG folder
    per video, category ids 3 and 7 (not contiguous), compressed RLE, polygons and a track that
    only appears in frame 2."""
    rng = np.random.default_rng(0)
    videos, annotations = [], []
    colours = {3: (220, 40, 40), 7: (40, 60, 230)}
    layouts = {
        1: [(3, lambda t: _box(8, 4 + 6 * t, 20, 16), "rle", 0), (7, lambda t: _box(36, 30, 16, 22), "poly", 2)],
        2: [(7, lambda t: _box(10 + 5 * t, 20, 24, 24), "rle", 0)],
    }
    for vid, objects in layouts.items():
        names = []
        (root / f"v{vid}").mkdir(parents=True)
        images = [np.full((SIZE, SIZE, 3), 128, np.uint8) + rng.integers(0, 8, (SIZE, SIZE, 3), dtype=np.uint8)
                  for _ in range(frames)]
        for n, (cid, shape, kind, first) in enumerate(objects):
            segs = []
            for t in range(frames):
                if t < first:
                    segs.append(None)
                    continue
                m = shape(t)
                images[t][m] = colours[cid]
                if kind == "rle":
                    segs.append(_rle(m))
                else:
                    ys, xs = np.nonzero(m)
                    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                    polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
                    segs.append([[float(v) for v in polygon]])
            annotations.append({"id": len(annotations) + 1, "video_id": vid, "category_id": cid,
                                "segmentations": segs, "iscrowd": 0})
        for t, im in enumerate(images):
            name = f"v{vid}/{t:05d}.png"
            Image.fromarray(im).save(root / name)
            names.append(name)
        videos.append({"id": vid, "file_names": names, "height": SIZE, "width": SIZE, "length": frames})
    data = {"videos": videos, "annotations": annotations,
            "categories": [{"id": 7, "name": "boat"}, {"id": 3, "name": "apple"}]}
    path = root / "train.json"
    path.write_text(json.dumps(data))
    return path


def tiny_train_config(data: Path, out: Path, **changes) -> TrainConfig:
    options = dict(data=str(data), output=str(out), init="tiny", steps=6, batch_size=2, lr=1e-3, llrd=1.0,
                   warmup_steps=(0, 0), clip_frames=3, crop_size=(64, 64), short_side=(56, 72),
                   max_long_side=96, num_points=256, save_every=0, seed=0, device="cpu", grad_clip=1.0)
    options.update(changes)
    return TrainConfig(**options)


@pytest.fixture
def dataset_json(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


# ----------------------------------------------------------------------------- dataset


def test_dataset_reads_formats_and_augments_consistently(dataset_json, tmp_path):
    cfg = tiny_train_config(dataset_json, tmp_path / "out", clip_frames=4, short_side=(64, 64), hflip=False)
    ds = ClipDataset(cfg)
    assert ds.labels == ["apple", "boat"] and ds.category_ids == [3, 7]  # head order: ids ascending
    # Video 1 at 64x64 with no resize, crop or flip: the masks are the annotations, pixels normalised.
    k = next(k for k in range(10) if ds.video_for(k).id == 1)
    frames, target, vid = ds[k]
    assert vid == 1 and frames.shape == (4, 3, 64, 64) and frames.dtype == torch.float32
    assert target.labels.tolist() == [0, 1]  # apple (id 3) -> 0, boat (id 7) -> 1
    assert target.masks.shape == (2, 4, 64, 64) and target.masks.dtype == torch.bool
    assert torch.equal(target.masks[0, 1], torch.from_numpy(_box(8, 10, 20, 16)))
    assert not target.masks[1, :2].any() and torch.equal(target.masks[1, 3], torch.from_numpy(_box(36, 30, 16, 22)))
    grey = (128 + 3.5 - 123.675) / 58.395  # red channel of the background, mean noise 3.5
    assert abs(float(frames[0, 0, 60:, 60:].mean()) - grey) < 0.05
    # The same sample number gives the same sample; geometry is shared by frames and masks.
    cfg2 = tiny_train_config(dataset_json, tmp_path / "out", clip_frames=2, short_side=(40, 90), color_jitter=0.1)
    ds2 = ClipDataset(cfg2)
    for k in range(6):
        a, ta, _ = ds2[k]
        b, tb, _ = ds2[k]
        assert torch.equal(a, b) and torch.equal(ta.masks, tb.masks)
        assert a.shape == (2, 3, 64, 64) and ta.masks.shape[-2:] == (64, 64)
        # Object pixels are where the masks say (red or blue boxes far from the grey background).
        for n in range(len(ta.labels)):
            inside = a[:, 0][ta.masks[n]]
            channel = 0 if ta.labels[n] == 0 else 2
            if inside.numel() > 20:
                assert a[:, channel][ta.masks[n]].mean() > 0.9


def test_dataset_reads_a_video_file(tmp_path):
    from media import make_video

    make_video(tmp_path / "clip.mp4", frames=6, size=(64, 48))
    m = np.zeros((48, 64), bool)
    m[10:30, 20:40] = True
    data = {"videos": [{"id": 5, "file_name": "clip.mp4", "height": 48, "width": 64, "length": 6}],
            "annotations": [{"id": 1, "video_id": 5, "category_id": 1, "segmentations": [_rle(m)] * 6}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "train.json").write_text(json.dumps(data))
    ds = ClipDataset(tiny_train_config(tmp_path / "train.json", tmp_path / "out", short_side=(48, 48), hflip=False))
    frames, target, vid = ds[0]
    assert vid == 5 and frames.shape == (3, 3, 64, 64) and target.masks.shape == (1, 3, 64, 64)
    assert target.masks[0, 0, 10:30, 20:40].all() and target.masks[0, 0].sum() == 400
    assert (frames[:, :, 48:] == 0).all()  # bottom padding is 0 after normalisation


def test_frame_sampling(dataset_json, tmp_path):
    ds = ClipDataset(tiny_train_config(dataset_json, tmp_path, clip_frames=3, frame_stride=2))
    rng = np.random.default_rng(0)
    assert ds.frame_indices(10, rng) in ([0, 2, 4], [1, 3, 5], [2, 4, 6], [3, 5, 7], [4, 6, 8], [5, 7, 9])
    assert ds.frame_indices(3, rng) == [0, 2, 2]  # too short: the last frame repeats
    ds = ClipDataset(tiny_train_config(dataset_json, tmp_path, clip_frames=5, sampling="range"))
    for _ in range(20):
        idx = ds.frame_indices(30, rng)
        assert idx == sorted(idx) and len(idx) == 5 and max(idx) - min(idx) <= 4


def test_dataset_errors(tmp_path):
    root = tmp_path / "d"
    path = make_dataset(root)
    data = json.loads(path.read_text())

    def write(d) -> TrainConfig:
        path.write_text(json.dumps(d))
        return tiny_train_config(path, tmp_path / "out")

    (root / "v2" / "00002.png").unlink()
    with pytest.raises(DatasetError, match=r"frame 2 of video 2 is missing: .*v2/00002\.png"):
        ClipDataset(write(data))
    data["videos"] = data["videos"][:1]
    data["annotations"] = [a for a in data["annotations"] if a["video_id"] == 1]
    bad = json.loads(json.dumps(data))
    bad["annotations"][0]["category_id"] = 99
    with pytest.raises(DatasetError, match="category_id 99, which is not one of the dataset's categories"):
        ClipDataset(write(bad))
    with pytest.raises(DatasetError, match="empty dataset"):
        ClipDataset(write({**data, "annotations": []}))
    with pytest.raises(DatasetError, match="empty dataset"):
        ClipDataset(write({**data, "videos": [], "annotations": []}))
    bad = json.loads(json.dumps(data))
    bad["annotations"][0]["segmentations"] = bad["annotations"][0]["segmentations"][:2]
    with pytest.raises(DatasetError, match="2 segmentations for a video of 4 frames"):
        ClipDataset(write(bad))
    with pytest.raises(DatasetError, match="does not exist"):
        ClipDataset(tiny_train_config(tmp_path / "nope.json", tmp_path / "out"))
    assert issubclass(DatasetError, VideoMTError)
    with pytest.raises(InputError, match="crop_size"):
        tiny_train_config(path, tmp_path, crop_size=(60, 64))


# ----------------------------------------------------------------------------- model pieces


def test_forward_train_matches_forward_and_gives_aux():
    model = make_model(seed=3)  # k = 2 query blocks
    frames = make_frames(2, 3, 32, 48, seed=1)
    out = forward_train(model, frames, aux_blocks=[0, 1])
    ref, _ = model(frames)
    assert torch.equal(out.final.class_logits, ref.class_logits)
    assert torch.equal(out.final.mask_logits, ref.mask_logits)
    assert len(out.aux) == 2 and out.aux[0].mask_logits.shape == ref.mask_logits.shape
    # Aux 0 of frame 0 is the prediction from the learned queries and the encoded tokens (EoMT).
    cfg = model.config
    with torch.no_grad():
        tokens = model.encode(model.embed(frames[:, 0]))
        x = torch.cat([model.queries.weight.expand(2, -1, -1), tokens], 1)
        cls0, msk0 = model.predict(x, (2, 3))
        torch.testing.assert_close(out.aux[0].class_logits[:, 0], cls0)
        torch.testing.assert_close(out.aux[0].mask_logits[:, 0], msk0)
        x1 = model.blocks[cfg.query_start](x)
        torch.testing.assert_close(out.aux[1].class_logits[:, 0], model.predict(x1, (2, 3))[0])
    assert len(forward_train(model, frames).aux) == 1  # official: blocks 0..k-2
    # Gradients reach the propagation (query_updater only acts from frame 1 on).
    out.final.mask_logits.sum().backward()
    assert model.query_updater.weight.grad is not None and model.query_updater.weight.grad.abs().sum() > 0


def test_param_groups_and_schedule():
    model = VideoMT(preset("tiny"))  # 4 layers
    groups = param_groups(model, lr=1.0, llrd=0.5, weight_decay=0.05)
    by_param = {id(p): g for g in groups for p in g["params"]}
    lr_of = lambda name: by_param[id(dict(model.named_parameters())[name])]["lr"]  # noqa: E731
    stage_of = lambda name: by_param[id(dict(model.named_parameters())[name])]["stage"]  # noqa: E731
    assert lr_of("blocks.3.attn.qkv.weight") == 1.0 and lr_of("blocks.0.mlp.fc1.bias") == 0.125
    assert lr_of("patch_embed.proj.weight") == 0.125 and lr_of("cls_token") == 0.125 and lr_of("norm.weight") == 1.0
    assert lr_of("class_head.weight") == 1.0 and stage_of("class_head.weight") == "head"
    assert stage_of("norm.weight") == "backbone" and stage_of("queries.weight") == "head"
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # Two-stage warmup then poly decay.
    f = lambda s, stage: warmup_poly_factor(s, stage, (10, 20), 100, 0.9)  # noqa: E731
    assert f(0, "head") == 0 and f(5, "head") == 0.5 and f(10, "head") == 1.0
    assert f(9, "backbone") == 0 and f(20, "backbone") == 0.5 and f(30, "backbone") == 1.0
    assert f(55, "head") == pytest.approx(0.5 ** 0.9) and f(65, "backbone") == pytest.approx(0.5 ** 0.9)
    assert f(100, "head") == 0 and f(100, "backbone") == 0
    opt = torch.optim.AdamW(groups)
    sched = TwoStageWarmupPoly(opt, (10, 20), 100, 0.9)
    for _ in range(20):
        opt.step()
        sched.step()
    head = next(g for g in opt.param_groups if g["stage"] == "head")
    block0 = next(g for g in opt.param_groups if g["initial_lr"] == 0.125)
    assert head["lr"] == pytest.approx(f(20, "head")) and block0["lr"] == pytest.approx(0.125 * f(20, "backbone"))


def test_build_model_resizes_the_class_head(tmp_path):
    src = make_model(seed=5)  # 5 classes
    path = checkpoint.save(src, tmp_path / "src.safetensors", labels=["a", "b", "c", "d", "e"])
    model, note = build_model(str(path), ["c", "x", "a"])
    assert model.config.num_classes == 3 and model.class_head.weight.shape == (4, src.config.hidden_size)
    assert torch.equal(model.class_head.weight[0], src.class_head.weight[2])  # "c" kept by name
    assert torch.equal(model.class_head.weight[2], src.class_head.weight[0])  # "a"
    assert torch.equal(model.class_head.weight[3], src.class_head.weight[5])  # no object
    assert torch.equal(model.blocks[1].mlp.fc1.weight, src.blocks[1].mlp.fc1.weight)
    assert "2 kept by name" in note
    same, note = build_model(str(path), ["a", "b", "c", "d", "e"])
    assert torch.equal(same.class_head.weight, src.class_head.weight) and "all weights kept" in note
    scratch, note = build_model("tiny", ["a", "b"])
    assert scratch.config.num_classes == 2 and "scratch" in note


# ----------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_saves(dataset_json, tmp_path):
    seen = []
    cfg = tiny_train_config(dataset_json, tmp_path / "run", steps=16, save_every=10)
    final = train(cfg, lambda step, total, losses, lr: seen.append((step, total, losses, lr)))
    assert [s for s, *_ in seen] == list(range(1, 17)) and seen[0][1] == 16
    assert {"loss", "loss_ce", "loss_mask", "loss_dice", "loss_ce_0"} <= set(seen[0][2])
    first = np.mean([s[2]["loss"] for s in seen[:3]])
    last = np.mean([s[2]["loss"] for s in seen[-3:]])
    assert last < 0.7 * first, (first, last)
    assert final == tmp_path / "run" / "model.safetensors"
    assert (tmp_path / "run" / "step_0000010.safetensors").is_file()
    assert (tmp_path / "run" / "step_0000010.resume.pt").is_file()
    loaded = checkpoint.load_model(final)
    assert loaded.labels == ["apple", "boat"] and loaded.meta["category_ids"] == [3, 7]
    assert loaded.meta["train_config"]["steps"] == 16 and loaded.meta["step"] == 16
    assert find_resume(tmp_path / "run") == tmp_path / "run" / "model.resume.pt"


def test_worker_processes_give_the_same_run(dataset_json, tmp_path):
    runs = []
    for workers in (0, 1):
        losses = []
        train(tiny_train_config(dataset_json, tmp_path / f"w{workers}", steps=2, num_workers=workers),
              lambda step, total, values, lr: losses.append(values["loss"]))
        runs.append(losses)
    assert runs[0] == runs[1]


def test_resume_continues_exactly(dataset_json, tmp_path):
    full, resumed = [], []
    cfg = tiny_train_config(dataset_json, tmp_path / "a", steps=5, save_every=3)
    train(cfg, lambda step, total, losses, lr: full.append((step, losses["loss"], lr)))
    cfg_b = tiny_train_config(dataset_json, tmp_path / "b", steps=5,
                              resume=str(tmp_path / "a" / "step_0000003.resume.pt"))
    final_b = train(cfg_b, lambda step, total, losses, lr: resumed.append((step, losses["loss"], lr)))
    assert [s for s, *_ in resumed] == [4, 5]
    assert resumed == full[3:]  # the same losses and lrs, bit for bit
    a = checkpoint.load_model(tmp_path / "a" / "model.safetensors").model.state_dict()
    b = checkpoint.load_model(final_b).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A folder resumes its latest checkpoint; more steps extend the run.
    assert find_resume(tmp_path / "a") == tmp_path / "a" / "model.resume.pt"
    more = []
    train(tiny_train_config(dataset_json, tmp_path / "a", steps=6, resume=str(tmp_path / "a")),
          lambda step, total, losses, lr: more.append((step, total)))
    assert more == [(6, 6)]
    # Different settings cannot resume exactly: a clear error.
    with pytest.raises(TrainingError, match="batch_size was 2, now 1"):
        train(tiny_train_config(dataset_json, tmp_path / "c", steps=5, batch_size=1,
                                resume=str(tmp_path / "a" / "step_0000003.safetensors")))
    with pytest.raises(InputError, match="does not exist"):
        train(tiny_train_config(dataset_json, tmp_path / "c", steps=5, resume=str(tmp_path / "zz.resume.pt")))
