"""Fine-tuning a DINOv3 VidEoMT: ``--init`` an official DINOv3 file, a few CPU steps, a saved model
that loads as DINOv3; the parameter groups and the auxiliary predictions of ``norm_queries``."""

from __future__ import annotations

import torch

from conftest import make_frames, perturb_
from toy_dataset import make_dataset, tiny_train_config
from videomt_cli.modeling import checkpoint
from videomt_cli.modeling.config import preset
from videomt_cli.modeling.model import VideoMT
from videomt_cli.training.loop import build_model, forward_train, train
from videomt_cli.training.optim import param_groups


def tiny_dinov3(seed: int = 0, **changes) -> VideoMT:
    torch.manual_seed(seed)
    return perturb_(VideoMT(preset("tiny-dinov3", **changes)), seed + 1000, scale=0.05).eval()


def test_init_from_an_official_dinov3_file_trains_and_saves(tmp_path):
    data = make_dataset(tmp_path / "data")
    source = tiny_dinov3(seed=1)  # 5 classes; the toy dataset has 2: the class head is rebuilt
    init = checkpoint.save_official(source, tmp_path / "dinov3.pth")
    losses = []
    final = train(tiny_train_config(data, tmp_path / "run", init=str(init), steps=4, save_every=2),
                  lambda step, total, values, lr: losses.append(values["loss"]))
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert (tmp_path / "run" / "step_0000002.safetensors").is_file()
    trained = checkpoint.load_model(final)
    assert trained.config.family == "dinov3" and trained.config.num_classes == 2 and trained.report.ok
    before, after = source.state_dict(), trained.model.state_dict()
    assert set(after) == set(before)  # no position embedding appeared, q/v biases kept
    assert not torch.equal(after["blocks.3.attn.q_bias"], before["blocks.3.attn.q_bias"])  # the ViT trained
    assert not torch.equal(after["query_updater.weight"], before["query_updater.weight"])


def test_build_model_and_param_groups_cover_dinov3(tmp_path):
    path = checkpoint.save(tiny_dinov3(seed=2), tmp_path / "m.safetensors", labels=list("abcde"))
    model, note = build_model(str(path), ["c", "zebra"])
    assert model.config.family == "dinov3" and "1 kept by name" in note
    groups = param_groups(model, lr=1e-4, llrd=0.5, weight_decay=0.05)
    grouped = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert set(grouped) == {id(p) for p in named.values()}  # every parameter, once
    L = model.config.num_layers
    assert grouped[id(named["blocks.0.attn.q_bias"])]["lr"] == 1e-4 * 0.5 ** (L - 1)
    assert grouped[id(named["patch_embed.proj.weight"])]["stage"] == "backbone"
    assert grouped[id(named["reg_token"])]["lr"] == 1e-4 * 0.5 ** (L - 1)
    assert grouped[id(named["query_updater.weight"])]["stage"] == "head"
    scratch, note = build_model("tiny-dinov3", ["a", "b"])
    assert scratch.config.family == "dinov3" and "scratch" in note


def test_norm_queries_auxiliary_predictions_are_normed():
    """Under NORM_QUERIES the official segmenter predicts from the LayerNorm'd tokens before each
    query block too; forward_train follows the model's flag."""
    model = tiny_dinov3(seed=3, norm_queries=True)
    clip = make_frames(2, 2, 32, 48, seed=4)
    out = forward_train(model, clip, aux_blocks=[0])
    with torch.no_grad():
        rotary = model.rotary((2, 3))
        tokens = model.encode(model.embed(clip[:, 0]), rotary)
        x = torch.cat([model.queries.weight.expand(2, -1, -1), tokens], 1)
        normed_cls, _ = model.predict(model.norm(x), (2, 3))
        raw_cls, _ = model.predict(x, (2, 3))
    torch.testing.assert_close(out.aux[0].class_logits[:, 0], normed_cls)
    assert (out.aux[0].class_logits[:, 0] - raw_cls).abs().max() > 1e-3
    final, _ = model(clip)
    assert torch.equal(out.final.class_logits, final.class_logits)
