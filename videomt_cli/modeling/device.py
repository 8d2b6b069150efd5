"""The one device picker and dtype table (inference and training alike), and the allocator tuning
the CLI applies at start-up."""

from __future__ import annotations

import torch

from videomt_cli.errors import InputError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def pick_device(name: str = "auto", *, allow_mps: bool = True) -> torch.device:
    """'auto' picks CUDA, then Apple MPS (when ``allow_mps``), then the CPU; an unavailable or
    unknown device is an ``InputError`` that says what to use instead."""
    name = str(name).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if allow_mps and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu.")
    if name == "mps" and not allow_mps:
        raise InputError("training on Apple MPS is not supported; use --device cpu or cuda.")
    if name == "mps" and not _mps_available():
        raise InputError("--device mps was asked for but Apple MPS is not available; use --device cpu.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"Unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps.") from None


def pick_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise InputError(f"Unknown --dtype {name!r}; use one of {', '.join(DTYPES)}.")
    return DTYPES[name]


def keep_heap() -> bool:
    """Stop glibc from unmapping large freed blocks, process-wide. Each tensor over 32 MB was
    otherwise mapped afresh on every forward: ~17% of a ViT-S forward's CPU time went to page
    faults (benchmarks/README.md). Returns False where there is no glibc ``mallopt``."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
