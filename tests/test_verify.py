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
