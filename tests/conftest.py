"""Shared fixtures: tiny seeded VidEoMT networks and the transformers reference built from them.

Random init leaves LayerScale at 1, LayerNorm at identity and the register / mask tokens at zero,
which would let a swapped ``ls1``/``ls2`` or a dropped register token pass unnoticed. Every tiny
model here is therefore perturbed with seeded noise on every parameter.
"""

from __future__ import annotations

import pytest
import torch

from videomt_cli.modeling import checkpoint
from videomt_cli.modeling.config import VideoMTConfig
from videomt_cli.modeling.model import VideoMT

# Small enough that a whole forward takes milliseconds on 2 CPU cores.
TINY = dict(hidden_size=64, num_layers=4, num_heads=2, num_query_blocks=2, num_queries=8,
            num_classes=5, image_size=64)


def tiny_config(**changes) -> VideoMTConfig:
    return VideoMTConfig(**{**TINY, **changes})


@torch.no_grad()
def perturb_(model: VideoMT, seed: int, scale: float = 0.2) -> VideoMT:
    """Add seeded noise to every parameter, so no weight is a no-op (LayerScale, LayerNorm, tokens).

    The noise is relative for weights around 1 (norms, LayerScale) and absolute for the rest.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float32).to(param.dtype)
        param.add_(noise * scale)
    return model


def make_model(seed: int = 0, **changes) -> VideoMT:
    """A tiny VidEoMT in eval mode, seeded init then seeded noise on every parameter."""
    torch.manual_seed(seed)
    model = VideoMT(tiny_config(**changes))
    return perturb_(model, seed + 1000).eval()


def make_frames(B: int, T: int, H: int, W: int, seed: int = 0) -> torch.Tensor:
    """Normalised-looking pixels (B, T, 3, H, W), seeded."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 3, H, W, generator=gen)


def hf_reference(model: VideoMT, directory):
    """The transformers ``VideomtForUniversalSegmentation`` holding ``model``'s weights.

    Goes through ``checkpoint.save_hf`` and transformers' own ``from_pretrained``, so our key table
    and config writer are exercised by the reference's loader, not by us.
    """
    from transformers import VideomtForUniversalSegmentation

    checkpoint.save_hf(model, directory)
    return VideomtForUniversalSegmentation.from_pretrained(str(directory)).eval()


def frame_major_to_ours(x: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """transformers stacks frames frame-major (T*B, ...); ours are (B, T, ...)."""
    return x.unflatten(0, (T, B)).transpose(0, 1)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Every network in the suite is tiny: a second OpenMP thread only adds spin-wait time, which
    on a loaded 2-core machine made tests 10x slower. torch's setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _quiet_transformers():
    """No weight-loading progress bars or load reports in the test log."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a test dependency
        yield
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    yield


@pytest.fixture
def tiny_model() -> VideoMT:
    return make_model(seed=0, use_mask_token=True)


@pytest.fixture
def tiny_reference(tiny_model, tmp_path):
    return hf_reference(tiny_model, tmp_path / "hf")
