"""Checkpoints: the key table against the reference names (DESIGN 2.4 and transformers' own
parameter names), config from shapes, round trips through every format, and bad files, each of
which must end as one CheckpointError that names the problem.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import frame_major_to_ours, make_frames, make_model, tiny_config
from videomt_cli.modeling import checkpoint
from videomt_cli.modeling.keys import config_from_state, from_our_keys, to_our_keys
from videomt_cli.errors import CheckpointError

# heads = C / 64 is what config_from_state infers, so these configs follow that rule.
SHAPES = {
    "C64-L4-k2": dict(hidden_size=64, num_heads=1, num_layers=4, num_query_blocks=2),
    "C128-L3-k1-Q6-K3-img96": dict(hidden_size=128, num_heads=2, num_layers=3, num_query_blocks=1,
                                   num_queries=6, num_classes=3, image_size=96),
}


def official_state(model) -> dict[str, torch.Tensor]:
    """What an official .pth holds: official names, attn_mask_probs, the training-only loss weight."""
    state = from_our_keys(model.state_dict(), "official")
    state["backbone.attn_mask_probs"] = torch.ones(model.config.num_query_blocks)
    state["criterion.empty_weight"] = torch.ones(model.config.num_classes + 1)
    return state


def hf_state(model) -> dict[str, torch.Tensor]:
    state = from_our_keys(model.state_dict(), "hf")
    state["attn_mask_probs"] = torch.ones(model.config.num_query_blocks)
    return state


def same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# --------------------------------------------------------------------------- key table


def test_official_names_follow_the_design_table():
    model = make_model(seed=0, num_layers=2, num_query_blocks=1, num_heads=1)
    names = set(from_our_keys(model.state_dict(), "official"))
    b = "backbone.encoder.backbone."
    expected = {
        b + "cls_token", b + "reg_token", b + "pos_embed",
        b + "patch_embed.proj.weight", b + "patch_embed.proj.bias",
        b + "norm.weight", b + "norm.bias", "backbone.q.weight", "backbone.query_updater.weight",
        "backbone.query_updater.bias", "backbone.class_head.weight", "backbone.class_head.bias",
    }
    for i in range(2):
        for p in ("weight", "bias"):
            modules = ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
            expected |= {b + f"blocks.{i}.{m}.{p}" for m in modules}
        expected |= {b + f"blocks.{i}.ls1.gamma", b + f"blocks.{i}.ls2.gamma"}
    for j in (0, 2, 4):
        expected |= {f"backbone.mask_head.{j}.weight", f"backbone.mask_head.{j}.bias"}
    for j in range(2):
        expected |= {f"backbone.upscale.{j}.conv1.weight", f"backbone.upscale.{j}.conv1.bias",
                     f"backbone.upscale.{j}.conv2.weight", f"backbone.upscale.{j}.norm.weight",
                     f"backbone.upscale.{j}.norm.bias"}
    assert names == expected


def test_hf_names_and_shapes_are_transformers_own():
    """Our HF export has exactly the parameters of a freshly built transformers model, same shapes."""
    from transformers import VideomtConfig, VideomtForUniversalSegmentation

    model = make_model(seed=1, use_mask_token=True)
    cfg = model.config
    ref = VideomtForUniversalSegmentation(VideomtConfig(**{
        k: v for k, v in checkpoint.config_to_hf(cfg).items() if k not in ("architectures", "model_type")
    }))
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in hf_state(model).items()}
    ours["criterion.empty_weight"] = (cfg.num_classes + 1,)
    # transformers keeps position embeddings as an nn.Embedding: (G*G, C), not (1, G*G, C).
    assert ours == theirs


@pytest.mark.parametrize("target", ["official", "hf"])
def test_key_tables_round_trip(target):
    model = make_model(seed=2, use_mask_token=(target == "hf"))
    ours = model.state_dict()
    there = official_state(model) if target == "official" else hf_state(model)
    back, report = to_our_keys(there, model.config, target)
    assert report.ok, report.lines()
    assert back.keys() == ours.keys()
    for key in ours:
        assert torch.equal(back[key], ours[key]), key
    assert report.ignored == (["criterion.empty_weight"] if target == "official" else [])


def test_official_export_drops_the_mask_token():
    """Official checkpoints have no mask token: exporting an HF-born model there leaves it out."""
    model = make_model(seed=3, use_mask_token=True)
    state = from_our_keys(model.state_dict(), "official")
    assert not any("mask_token" in k for k in state)


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("fmt", ["official", "hf"])
def test_config_from_shapes(name, fmt):
    cfg = tiny_config(**SHAPES[name], use_mask_token=(fmt == "hf"))
    model = make_model(seed=4, **SHAPES[name], use_mask_token=(fmt == "hf"))
    state = official_state(model) if fmt == "official" else hf_state(model)
    assert checkpoint.detect_format(state) == fmt
    assert config_from_state(state) == cfg
    assert checkpoint.config_from_hf(checkpoint.config_to_hf(cfg)) == cfg.replace(use_mask_token=True)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("wrapped", [True, False], ids=["model-dict", "bare"])
@torch.no_grad()
def test_official_pth_to_hf_dir_round_trip(tmp_path, wrapped):
    from transformers import VideomtForUniversalSegmentation

    original = make_model(seed=5, hidden_size=64, num_heads=1)
    state = official_state(original)
    torch.save({"model": state} if wrapped else state, tmp_path / "official.pth")

    loaded = checkpoint.load_model(tmp_path / "official.pth")
    assert loaded.report.source_format == "official"
    assert loaded.report.ignored == ["criterion.empty_weight"]
    assert any("criterion.empty_weight" in line for line in loaded.report.lines())
    assert loaded.config == original.config
    same_weights(loaded.model, original)

    checkpoint.save_hf(loaded.model, tmp_path / "hf")
    ref = VideomtForUniversalSegmentation.from_pretrained(str(tmp_path / "hf")).eval()
    ours = checkpoint.load_model(tmp_path / "hf").model
    frames = make_frames(2, 2, 64, 64, seed=6)
    out, _ = ours(frames)
    ref_out = ref(frames)
    expected, _ = original(frames)
    for got in (out.class_logits, frame_major_to_ours(ref_out.class_queries_logits, 2, 2)):
        torch.testing.assert_close(got, expected.class_logits, rtol=1e-5, atol=1e-5)
    for got in (out.mask_logits, frame_major_to_ours(ref_out.masks_queries_logits, 2, 2)):
        torch.testing.assert_close(got, expected.mask_logits, rtol=1e-5, atol=1e-5)


def test_our_format_round_trip(tmp_path):
    original = make_model(seed=7, use_mask_token=True, num_classes=3)
    path = checkpoint.save(original, tmp_path / "m.safetensors", labels=["cat", "dog", "person"],
                           dataset="toy")
    loaded = checkpoint.load_model(path)
    assert loaded.report.source_format == "videomt" and loaded.report.ok
    assert loaded.config == original.config
    assert loaded.labels == ["cat", "dog", "person"]
    assert loaded.meta["dataset"] == "toy"
    same_weights(loaded.model, original)
    assert not loaded.model.training


def test_hf_dir_keeps_labels(tmp_path):
    original = make_model(seed=8, num_classes=2)
    checkpoint.save_hf(original, tmp_path / "hf", labels=["a", "b"])
    loaded = checkpoint.load_model(tmp_path / "hf")
    assert loaded.labels == ["a", "b"]
    assert loaded.config == original.config
    same_weights(loaded.model, original)


@torch.no_grad()
def test_bfloat16_load_runs(tmp_path):
    original = make_model(seed=9)
    path = checkpoint.save(original, tmp_path / "m.safetensors")
    model = checkpoint.load_model(path, dtype=torch.bfloat16).model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    frames = make_frames(1, 2, 64, 64, seed=10)
    out, state = model(frames)
    assert out.class_logits.dtype == torch.bfloat16 and state.dtype == torch.bfloat16
    assert torch.isfinite(out.mask_logits.float()).all()
    expected, _ = original(frames)
    # bf16 keeps ~3 significant digits; the answer must still be the same network's.
    assert (out.class_logits.float() - expected.class_logits).abs().max() < 0.1 * expected.class_logits.abs().max()
    # A float32 state from elsewhere is accepted by the bf16 model.
    model(frames, state.float())


# --------------------------------------------------------------------------- bad checkpoints


def write_official(tmp_path, state, name="bad.pth"):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


def test_missing_key_is_named(tmp_path):
    state = official_state(make_model(seed=11, hidden_size=64, num_heads=1))
    del state["backbone.encoder.backbone.blocks.1.norm2.bias"]
    with pytest.raises(CheckpointError, match=r"missing.*backbone\.encoder\.backbone\.blocks\.1\.norm2\.bias"):
        checkpoint.load_model(write_official(tmp_path, state))


def test_missing_key_needed_for_the_shape_is_named(tmp_path):
    state = official_state(make_model(seed=11, hidden_size=64, num_heads=1))
    del state["backbone.q.weight"]
    with pytest.raises(CheckpointError, match=r"backbone\.q\.weight.*missing"):
        checkpoint.load_model(write_official(tmp_path, state))


def test_wrong_shape_names_key_and_both_shapes(tmp_path):
    state = official_state(make_model(seed=12, hidden_size=64, num_heads=1))
    state["backbone.query_updater.weight"] = torch.zeros(64, 65)
    expected = r"bad\.pth: .*backbone\.query_updater\.weight: file \(64, 65\) vs model \(64, 64\)"
    with pytest.raises(CheckpointError, match=expected):
        checkpoint.load_model(write_official(tmp_path, state))


def test_unexpected_key_is_named(tmp_path):
    state = official_state(make_model(seed=13, hidden_size=64, num_heads=1))
    state["backbone.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected.*backbone\.extra_head\.weight"):
        checkpoint.load_model(write_official(tmp_path, state))


def _rewrite_hf(directory, change):
    from safetensors.torch import load_file, save_file

    state = load_file(directory / "model.safetensors")
    change(state)
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})


def test_hf_split_qkv_problems_are_reported(tmp_path):
    directory = checkpoint.save_hf(make_model(seed=14), tmp_path / "hf")
    _rewrite_hf(directory, lambda s: s.pop("layers.1.attention.k_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing.*layers\.1\.attention\.k_proj\.weight"):
        checkpoint.load_model(directory)

    directory = checkpoint.save_hf(make_model(seed=14), tmp_path / "hf2")
    _rewrite_hf(directory, lambda s: s.__setitem__("layers.0.attention.v_proj.bias", torch.zeros(65)))
    with pytest.raises(CheckpointError, match=r"layers\.0\.attention\.\{q,k,v\}_proj\.bias.*\(64,\).*\(65,\)"):
        checkpoint.load_model(directory)


def test_hf_config_that_disagrees_with_weights(tmp_path):
    directory = checkpoint.save_hf(make_model(seed=15), tmp_path / "hf")
    config = json.loads((directory / "config.json").read_text())
    config["num_queries"] = 9
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"query\.weight: file \(8, 64\) vs model \(9, 64\)"):
        checkpoint.load_model(directory)


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '{"model_type": "bert"}'])
def test_bad_hf_config_json(tmp_path, content):
    directory = checkpoint.save_hf(make_model(seed=16), tmp_path / "hf")
    (directory / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match="config"):
        checkpoint.load_model(directory)


def test_unrelated_state_dict(tmp_path):
    other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    torch.save(other.state_dict(), tmp_path / "mlp.pth")
    with pytest.raises(CheckpointError, match=r"not look like a VidEoMT checkpoint.*0\.weight"):
        checkpoint.load_model(tmp_path / "mlp.pth")
    # A whole pickled module is refused too (weights_only loading: nothing is executed).
    torch.save(other, tmp_path / "module.pth")
    with pytest.raises(CheckpointError, match=r"module\.pth holds pickled Python objects.*state_dict"):
        checkpoint.load_model(tmp_path / "module.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        checkpoint.load_model(tmp_path / "list.pth")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_files(tmp_path):
    model = make_model(seed=17, hidden_size=64, num_heads=1)
    pth = _truncate(checkpoint.save_official(model, tmp_path / "o.pth"))
    with pytest.raises(CheckpointError, match=r"o\.pth.*truncated"):
        checkpoint.load_model(pth)
    ours = _truncate(checkpoint.save(model, tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointError, match=r"m\.safetensors.*truncated"):
        checkpoint.load_model(ours)
    directory = checkpoint.save_hf(model, tmp_path / "hf")
    _truncate(directory / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated"):
        checkpoint.load_model(directory)


def test_text_file_named_pth(tmp_path):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=r"notes\.pth is not a PyTorch checkpoint"):
        checkpoint.load_model(tmp_path / "notes.pth")


def test_directory_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        checkpoint.load_model(tmp_path / "empty")
    checkpoint.save_official(make_model(seed=18, hidden_size=64, num_heads=1), tmp_path / "empty" / "x.pth")
    with pytest.raises(CheckpointError, match=r"x\.pth: pass that file"):
        checkpoint.load_model(tmp_path / "empty")


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load_model(tmp_path / "nowhere" / "model.pth")
    # A relative path with a checkpoint suffix is a path, not a hub id, even though it has one slash.
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load_model("weights/model.pth")


def test_hub_id_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # so "nobody/not-a-model" is not a local folder either
    with pytest.raises(CheckpointError, match=r"config\.json of nobody/not-a-model.*--model PATH") as info:
        checkpoint.load_model("nobody/not-a-model")
    assert "offline" in str(info.value)
