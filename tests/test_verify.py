"""videomt verify: parity rows against transformers, invariant rows, and rows that can fail."""

from __future__ import annotations

import sys

import pytest
import torch

from videomt_cli import verify
from videomt_cli.modeling import checkpoint
from videomt_cli.modeling import config
from videomt_cli.errors import InputError
from videomt_cli.modeling.model import VideoMT


def random_tiny(use_mask_token: bool = True, seed: int = 0) -> VideoMT:
    """A tiny model whose LayerScales, norms, registers and mask token are not at their init values."""
    torch.manual_seed(seed)
    model = VideoMT(config.preset("tiny", use_mask_token=use_mask_token)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tiny() -> VideoMT:
    return random_tiny()


def rows(report: verify.VerifyReport) -> dict[str, verify.StageRow]:
    return {row.stage: row for row in report.rows}


def perturbed_reference(monkeypatch, weight):
    """Make verify build its reference as usual, then add seeded noise to one of its weights.

    ``weight(ref)`` picks the tensor. Noise, not a constant: a constant shift of a token is
    removed by the next LayerNorm and changes nothing downstream.
    """
    build = verify.build_reference

    def build_and_edit(model):
        ref = build(model)
        tensor = weight(ref)
        noise = torch.randn(tensor.shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            tensor.add_(0.05 * noise)
        return ref

    monkeypatch.setattr(verify, "build_reference", build_and_edit)


def test_random_tiny_model_matches_the_reference(tiny):
    pytest.importorskip("transformers")
    report = verify.verify(tiny, frames=3, batch=2)
    by_stage = rows(report)
    assert report.ok, "\n".join(report.lines())
    assert report.reference_skipped is None
    assert report.size == (64, 64) and report.frames == 3
    expected = (["embeddings"] + [f"layer {i}" for i in range(4)]
                + [f"frame {t} {kind}" for t in range(3) for kind in ("class", "mask")]
                + ["chunked c=1", "chunked c=2", "chunked c=3 (all frames)", "batch vs single",
                   "masked patches (embeddings)", "masked patches (class)", "masked patches (mask)"])
    assert list(by_stage) == expected
    assert all(row.tol > 0 and row.max_abs <= row.tol for row in report.rows)


def test_a_perturbed_encoder_weight_fails_at_its_layer(tiny, monkeypatch):
    pytest.importorskip("transformers")
    perturbed_reference(monkeypatch, lambda ref: ref.layers[1].mlp.fc1.weight)
    report = verify.verify(tiny, frames=2, batch=1)
    by_stage = rows(report)
    assert not report.ok
    assert by_stage["embeddings"].ok and by_stage["layer 0"].ok
    assert report.failures[0].stage == "layer 1"
    assert not by_stage["layer 3"].ok and not by_stage["frame 0 mask"].ok
    assert by_stage["layer 1"].max_abs > 10 * by_stage["layer 1"].tol
    # Our own invariants do not involve the reference.
    assert by_stage["chunked c=1"].ok and by_stage["batch vs single"].ok


def test_a_perturbed_query_updater_fails_from_the_second_frame(tiny, monkeypatch):
    pytest.importorskip("transformers")
    perturbed_reference(monkeypatch, lambda ref: ref.query_updater.weight)
    by_stage = rows(verify.verify(tiny, frames=3, batch=2))
    assert all(by_stage[s].ok for s in ("embeddings", "layer 0", "layer 1", "frame 0 class", "frame 0 mask"))
    # Layers 2-3 run once per frame; their frame-1 and frame-2 calls see the propagated queries.
    assert not by_stage["layer 2"].ok and not by_stage["layer 3"].ok
    assert not by_stage["frame 1 class"].ok and not by_stage["frame 2 mask"].ok


def test_a_wrong_mask_token_fails_the_masked_rows(tiny, monkeypatch):
    pytest.importorskip("transformers")
    perturbed_reference(monkeypatch, lambda ref: ref.embeddings.mask_token)
    report = verify.verify(tiny, frames=2, batch=1)
    by_stage = rows(report)
    assert by_stage["embeddings"].ok and by_stage["frame 1 mask"].ok
    assert [r.stage for r in report.failures] == [
        "masked patches (embeddings)", "masked patches (class)", "masked patches (mask)"]


def test_without_transformers_the_invariants_still_run(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # any import of it now fails
    report = verify.verify(tiny, frames=3, batch=2)
    assert report.reference_skipped == verify.TRANSFORMERS_MISSING
    assert [r.stage for r in report.rows] == [
        "chunked c=1", "chunked c=2", "chunked c=3 (all frames)", "batch vs single",
        "masked patches (embeddings, no reference)"]
    assert report.ok, "\n".join(report.lines())


def test_another_size_skips_the_reference_with_a_reason(tiny):
    report = verify.verify(tiny, frames=2, batch=2, size=(48, 80))
    assert report.size == (48, 80)
    assert "64x64" in report.reference_skipped and "48x80" in report.reference_skipped
    assert report.ok and "batch vs single" in rows(report)


def test_a_model_that_drops_its_state_fails_the_chunk_invariant(tiny, monkeypatch):
    model = random_tiny()
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda frames, state=None, patch_mask=None: forward(frames, None, patch_mask))
    monkeypatch.setitem(sys.modules, "transformers", None)
    by_stage = rows(verify.verify(model, frames=3, batch=1))
    assert not by_stage["chunked c=1"].ok and not by_stage["chunked c=2"].ok
    assert by_stage["chunked c=3 (all frames)"].ok and by_stage["batch vs single"].ok


def test_a_bfloat16_model_without_mask_token_is_verified_in_float32():
    pytest.importorskip("transformers")
    model = random_tiny(use_mask_token=False).to(torch.bfloat16)
    loaded = checkpoint.Loaded(model=model, labels=None, source="test", report=checkpoint.KeyReport("videomt"))
    report = verify.verify(loaded, frames=2, batch=1)
    assert report.ok, "\n".join(report.lines())
    assert not any(r.stage.startswith("masked") for r in report.rows)
    assert model.pos_embed.dtype == torch.bfloat16  # the caller's model is left alone


def test_compare_fails_on_nan_and_shape_mismatch():
    a = torch.zeros(2, 3)
    assert verify.compare("same", a, a.clone()).ok
    assert not verify.compare("nan", torch.full((2, 3), float("nan")), a).ok
    assert not verify.compare("shape", a, torch.zeros(3, 2)).ok
    assert not verify.compare("count", [a, a], [a]).ok
    row = verify.compare("tol", a + 1e-3, torch.ones(2, 3))
    assert row.tol == pytest.approx(verify.ATOL + verify.RTOL * 1.0) and not row.ok


def test_bad_arguments_raise_input_errors(tiny):
    with pytest.raises(InputError):
        verify.verify(tiny, size=(50, 64))
    with pytest.raises(InputError):
        verify.verify(tiny, frames=0)


# --------------------------------------------------------------------------- DINOv3


def random_tiny_dinov3(norm_queries: bool = False, seed: int = 0) -> VideoMT:
    torch.manual_seed(seed)
    model = VideoMT(config.preset("tiny-dinov3", norm_queries=norm_queries)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


DINOV3_BACKBONE = ["embeddings"] + [f"layer {i}" for i in range(4)] + ["final norm"]


@pytest.mark.parametrize("norm_queries", [False, True])
def test_dinov3_tiny_model_matches_the_references(norm_queries):
    """DINOv3ViTModel at 64x64 and 48x80 (every block), EoMT-DINOv3 driven with the propagation."""
    pytest.importorskip("transformers")
    report = verify.verify(random_tiny_dinov3(norm_queries), frames=3, batch=2)
    assert report.ok, "\n".join(report.lines())
    assert report.reference_skipped is None
    expected = ([f"backbone 64x64 {s}" for s in DINOV3_BACKBONE] + [f"backbone 48x80 {s}" for s in DINOV3_BACKBONE]
                + ["embeddings"] + [f"layer {i}" for i in range(4)]
                + [f"frame {t} {kind}" for t in range(3) for kind in ("class", "mask")]
                + ["chunked c=1", "chunked c=2", "chunked c=3 (all frames)", "batch vs single"])
    assert [r.stage for r in report.rows] == expected
    assert verify.non_square_size(config.preset("large-dinov3")) == (448, 800)


def perturbed_dinov3_references(monkeypatch, backbone_weight=None, eomt_weight=None):
    """verify's DINOv3 references as usual, then seeded noise on one weight of either."""
    for name, pick in (("build_dinov3_backbone", backbone_weight), ("build_eomt_dinov3", eomt_weight)):
        if pick is None:
            continue
        build = getattr(verify, name)

        def build_and_edit(model, build=build, pick=pick):
            ref = build(model)
            tensor = pick(ref)
            with torch.no_grad():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=torch.Generator().manual_seed(1)))
            return ref

        monkeypatch.setattr(verify, name, build_and_edit)


def test_dinov3_a_perturbed_block_fails_at_its_layer(monkeypatch):
    pytest.importorskip("transformers")
    perturbed_dinov3_references(monkeypatch, backbone_weight=lambda ref: ref.model.layer[1].mlp.up_proj.weight,
                                eomt_weight=lambda ref: ref.layers[1].mlp.up_proj.weight)
    by_stage = rows(verify.verify(random_tiny_dinov3(), frames=2, batch=1))
    for size in ("64x64", "48x80"):
        assert by_stage[f"backbone {size} layer 0"].ok and not by_stage[f"backbone {size} layer 1"].ok
    assert by_stage["layer 0"].ok and not by_stage["layer 1"].ok and not by_stage["frame 0 mask"].ok
    assert by_stage["chunked c=1"].ok and by_stage["batch vs single"].ok


def test_dinov3_a_wrong_propagation_fails_from_the_second_frame(monkeypatch):
    """Ours propagating the raw tokens although the model says norm_queries: frame 0 and the
    backbone still agree, every later frame fails."""
    pytest.importorskip("transformers")
    model = random_tiny_dinov3(norm_queries=True)

    def raw_state(tokens, state, rotary=None):  # decode_step, but the raw tokens become the state
        x = torch.cat([model.initial_queries(tokens.shape[0]) if state is None
                       else model.query_updater(state) + model.queries.weight, tokens], 1)
        for block in model.blocks[model.config.query_start:]:
            x = block(x, rotary)
        return model.norm(x), x[:, : model.config.num_queries]

    monkeypatch.setattr(model, "decode_step", raw_state)
    by_stage = rows(verify.verify(model, frames=3, batch=2))
    assert all(by_stage[s].ok for s in ("backbone 48x80 layer 3", "embeddings", "layer 1", "frame 0 class",
                                        "frame 0 mask"))
    assert not by_stage["layer 2"].ok and not by_stage["frame 1 class"].ok and not by_stage["frame 2 mask"].ok


def test_dinov3_another_size_runs_the_backbone_there_and_skips_eomt():
    pytest.importorskip("transformers")
    report = verify.verify(random_tiny_dinov3(), frames=2, batch=2, size=(48, 112))
    assert report.ok, "\n".join(report.lines())
    stages = [r.stage for r in report.rows]
    assert stages[: len(DINOV3_BACKBONE)] == [f"backbone 48x112 {s}" for s in DINOV3_BACKBONE]
    assert "frame 0 class" not in stages and "backbone 64x64 embeddings" not in stages
    assert "64x64" in report.reference_skipped and "48x112" in report.reference_skipped


def test_dinov3_without_transformers_the_invariants_still_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    report = verify.verify(random_tiny_dinov3(), frames=3, batch=2)
    assert report.reference_skipped == verify.TRANSFORMERS_MISSING
    assert [r.stage for r in report.rows] == [
        "chunked c=1", "chunked c=2", "chunked c=3 (all frames)", "batch vs single"]
    assert report.ok


def test_dinov3_verify_command_exit_codes(tmp_path, monkeypatch):
    """The CLI's codes: 0 when every stage is within tolerance, 1 when one is not."""
    pytest.importorskip("transformers")
    from typer.testing import CliRunner

    from videomt_cli import cli

    path = checkpoint.save(random_tiny_dinov3(norm_queries=True), tmp_path / "d3.safetensors")
    result = CliRunner().invoke(cli.app, ["verify", "--ckpt", str(path), "--frames", "2"])
    assert result.exit_code == 0, result.output
    assert "backbone 48x80 layer 3" in result.output and "frame 1 mask" in result.output
    perturbed_dinov3_references(monkeypatch, eomt_weight=lambda ref: ref.class_predictor.weight)
    result = CliRunner().invoke(cli.app, ["verify", "--ckpt", str(path), "--frames", "2"])
    assert result.exit_code == 1 and "frame 0 class" in result.output
