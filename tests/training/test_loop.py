"""The training loop: forward_train, build_model, a few real steps that lower the loss, worker
processes, checkpoints and an exact resume (the dataset: test_data.py; the optimiser: test_optim.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_frames, make_model
from toy_dataset import make_dataset, tiny_train_config
from videomt_cli.errors import InputError, TrainingError
from videomt_cli.modeling import checkpoint
from videomt_cli.training.loop import build_model, find_resume, forward_train, train


@pytest.fixture
def dataset_json(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


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
