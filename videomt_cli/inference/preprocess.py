"""Frames in, network input out, and the geometry to map predictions back (DESIGN 3).

The official evaluation pipeline (detectron2 ``ResizeShortestEdge`` + the VidEoMT meta-architecture):

1. resize the RGB uint8 frame so its short side is ``min_size`` with the long side capped at
   ``max_size`` (aspect kept), with PIL's BILINEAR filter, which returns uint8;
2. normalise ``(x - mean) / std`` on the 0-255 scale;
3. zero-pad bottom/right to a multiple of 32 (after normalising, so the padding is 0, not -mean/std).

Mask logits come out at stride 4 of the padded frame. :func:`masks_to_frame` maps them back:
bilinear (align_corners False) to the padded size -> crop to the resized size -> bilinear to the
original size. :class:`Geometry` carries the three sizes.

Resize methods (``preprocess(..., resize=...)``):

- ``"pil"`` (default): exactly Pillow's BILINEAR uint8 resize, what detectron2's
  ``ResizeTransform`` runs. On CPU it calls Pillow itself (about 25 ms a 720p frame, one core); on
  any other device it runs :func:`_pil_emulated`, an integer re-implementation on the device: the
  same per-axis coefficients (triangle filter stretched by the scale when shrinking, normalised
  per output pixel, rounded to 22-bit fixed point), horizontal pass first, rounded and clipped to
  uint8 after each pass. Measured bit-identical to Pillow (0 differing pixels) at 1280x720 ->
  796x448, 1920x1080 -> 796x448, 640x360 -> 796x448 (enlarge), 640x480 -> 960x720 (enlarge), the
  portrait 720x1280 -> 448x796 and random sizes. One caveat: Pillow 13 (PR #9549) runs the
  vertical pass first when the height shrinks much more than the width; the official evaluation
  predates it and every Pillow up to 12 runs horizontal first, as the emulation does. For the
  aspect-preserving resizes used here Pillow 13 still runs horizontal first (measured); for
  strongly anisotropic resizes the two orders differ by 1 level on ~20% of pixels.
- ``"pil-emulated"``: the integer emulation on any device (what the GPU path runs; on CPU it is
  slow, ~0.6 s a 720p frame, and only there for tests).
- ``"torch"``: ``F.interpolate(bilinear, antialias=True)`` in float, then round and clamp to
  uint8 values. Its difference to Pillow, measured on a synthetic natural-like RGB frame (smooth
  gradients, hard-edged shapes, 1-px lines, Gaussian noise sigma 6):

  ========================  =====================  ==============
  case                      pixels differing by 1  max abs diff
  ========================  =====================  ==============
  1280x720  -> 796x448      15.3 %                 1
  1920x1080 -> 796x448      11.4 %                 1
  640x360   -> 796x448      17.9 %                 1
  640x480   -> 960x720      26.9 %                 1
  ========================  =====================  ==============

  (never more than 1 level; the gap comes from Pillow rounding to uint8 between its two passes
  and from its fixed-point weights: doing the torch resize in two passes with rounding in
  between already brings it to ~0.1 % on shrinks, but exact ties still go either way.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from videomt_cli.errors import InputError

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit resampling


@dataclass(frozen=True)
class Geometry:
    """The sizes a frame goes through, each ``(height, width)``.

    original: the decoded frame; resized: after the shortest-edge resize; padded: the network
    input (resized, zero-padded bottom/right to a multiple of the divisor). The network's mask
    logits are ``(padded_h / 4, padded_w / 4)``.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    padded: tuple[int, int]

    @property
    def mask_size(self) -> tuple[int, int]:
        """Size of the stride-4 mask logits for this geometry."""
        return self.padded[0] // 4, self.padded[1] // 4


def compute_geometry(height: int, width: int, min_size: int, max_size: int = 1333, divisor: int = 32) -> Geometry:
    """Geometry of a ``height`` x ``width`` frame under detectron2's ``ResizeShortestEdge``.

    scale = min_size / short side; the long side becomes scale * long; when that exceeds
    ``max_size`` both sides are scaled by max_size / long; each side is then rounded with
    ``int(x + 0.5)``. The padded size rounds each side up to a multiple of ``divisor``.

    >>> compute_geometry(720, 1280, 448)
    Geometry(original=(720, 1280), resized=(448, 796), padded=(448, 800))
    """
    if height <= 0 or width <= 0:
        raise InputError(f"Frame size must be positive, got {height}x{width}.")
    if min_size <= 0 or max_size <= 0 or divisor <= 0:
        raise InputError(f"min_size, max_size and divisor must be positive, got {min_size}, {max_size}, {divisor}.")
    size = float(min_size)
    scale = size / min(height, width)
    if height < width:
        new_h, new_w = size, scale * width
    else:
        new_h, new_w = scale * height, size
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    resized = (int(new_h + 0.5), int(new_w + 0.5))
    padded = tuple(int(math.ceil(s / divisor) * divisor) for s in resized)
    return Geometry(original=(int(height), int(width)), resized=resized, padded=padded)


# --------------------------------------------------------------------------- resize


@lru_cache(maxsize=64)
def _pil_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's BILINEAR resampling coefficients for one axis, as (index, weight) arrays.

    Returns ``index`` (out_size, taps) int64 into the input axis and ``weight`` (out_size, taps)
    int32 fixed-point weights (22 fractional bits); unused taps have weight 0 and index 0.
    Follows Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` in double precision.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the triangle filter has support 1
    taps = int(math.ceil(support)) * 2 + 1
    index = np.zeros((out_size, taps), dtype=np.int64)
    weight = np.zeros((out_size, taps), dtype=np.int32)
    inv = 1.0 / filterscale
    one = float(1 << _PRECISION_BITS)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ws = []
        for x in range(xmax):
            t = abs((x + xmin - center + 0.5) * inv)
            ws.append(1.0 - t if t < 1.0 else 0.0)
        total = sum(ws)
        for x, w in enumerate(ws):
            if total != 0.0:
                w = w / total
            index[xx, x] = xmin + x
            weight[xx, x] = int(-0.5 + w * one) if w < 0 else int(0.5 + w * one)
    return index, weight


def _pil_pass(x: Tensor, dim: int, out_size: int) -> Tensor:
    """One Pillow 8-bit resampling pass along ``dim`` of an integer tensor -> uint8 values (int32)."""
    index, weight = _pil_coefficients(x.shape[dim], out_size)
    index_t = torch.from_numpy(index).to(x.device)
    weight_t = torch.from_numpy(weight).to(x.device)
    shape = [1] * x.dim()
    shape[dim] = out_size
    acc = torch.full((), 1 << (_PRECISION_BITS - 1), dtype=torch.int32, device=x.device)
    for j in range(index.shape[1]):
        if not weight[:, j].any():
            continue
        acc = acc + x.index_select(dim, index_t[:, j]) * weight_t[:, j].view(shape)
    return (acc >> _PRECISION_BITS).clamp_(0, 255)  # clip8: >= 255 << 22 -> 255, <= 0 -> 0


def _pil_emulated(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """Pillow's BILINEAR resize in integer torch ops on any device; (T, 3, H, W) uint8 -> int32."""
    h, w = size
    x = frames.to(torch.int32)
    if x.shape[-1] != w:
        x = _pil_pass(x, x.dim() - 1, w)
    if x.shape[-2] != h:
        x = _pil_pass(x, x.dim() - 2, h)
    return x


def _pil_library(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow itself, frame by frame: (T, H, W, 3) uint8 -> (T, h, w, 3) uint8."""
    from PIL import Image

    h, w = size
    out = np.empty((frames.shape[0], h, w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))
    return out


def resize_uint8(frames: Tensor, size: tuple[int, int], method: str = "pil") -> Tensor:
    """Resize uint8 frames (T, 3, H, W) to ``size`` (h, w) on their device.

    Returns float32 holding integer values 0..255.

    ``method="pil"``: Pillow's BILINEAR exactly: Pillow itself for CPU tensors, the integer
    emulation (:func:`_pil_emulated`) on other devices.
    ``method="pil-emulated"``: the integer emulation on any device (what GPUs run).
    ``method="torch"``: ``F.interpolate(bilinear, antialias=True)`` in float, then round and clamp.
    """
    h, w = size
    if method not in ("pil", "pil-emulated", "torch"):
        raise InputError(f"Unknown resize method {method!r}: use 'pil', 'pil-emulated' or 'torch'.")
    if tuple(frames.shape[-2:]) == (h, w):
        return frames.float()
    if method == "torch":
        x = F.interpolate(frames.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return x.round_().clamp_(0, 255)
    if method == "pil" and frames.device.type == "cpu":
        hwc = frames.permute(0, 2, 3, 1).contiguous().numpy()
        return torch.from_numpy(_pil_library(hwc, size)).permute(0, 3, 1, 2).float()
    return _pil_emulated(frames, size).float()


def preprocess(
    frames,
    geometry: Geometry,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    resize: str = "pil",
) -> Tensor:
    """RGB uint8 frames (T, H, W, 3) (tensor or numpy) -> network input (T, 3, Hp, Wp).

    The uint8 frames move to ``device`` first (a quarter of the bytes of float32), then resize
    (see the module docstring), normalisation with ``PIXEL_MEAN``/``PIXEL_STD`` on the 0-255 scale
    and zero padding bottom/right happen there. The result has ``dtype``. Frames already at
    ``geometry.resized`` (from :func:`host_resize`) skip the resize.
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, Tensor):
        raise InputError(f"frames must be a uint8 tensor or numpy array (T, H, W, 3), got {type(frames).__name__}.")
    if frames.dim() == 3:
        frames = frames[None]
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be (T, H, W, 3) RGB, got shape {tuple(frames.shape)}.")
    if frames.dtype != torch.uint8:
        raise InputError(f"frames must be uint8, got {frames.dtype}.")
    size = tuple(frames.shape[1:3])
    if size not in (tuple(geometry.original), tuple(geometry.resized)):
        raise InputError(
            f"frames are {frames.shape[1]}x{frames.shape[2]} but the geometry was computed for "
            f"{geometry.original[0]}x{geometry.original[1]}; compute_geometry for this video's frame size."
        )
    device = torch.device(device) if device is not None else frames.device
    if size == tuple(geometry.resized):
        x = frames.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    elif resize == "pil" and device.type == "cpu":
        # Pillow itself on the (T, H, W, 3) array: no layout change before or after.
        resized = _pil_library(frames.cpu().numpy(), geometry.resized)
        x = torch.from_numpy(resized).permute(0, 3, 1, 2).float()
    else:
        x = frames.to(device, non_blocking=True).permute(0, 3, 1, 2)
        x = resize_uint8(x, geometry.resized, method=resize)
    mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    ph, pw = geometry.padded
    rh, rw = geometry.resized
    if (ph, pw) != (rh, rw):
        x = F.pad(x, (0, pw - rw, 0, ph - rh), value=0.0)
    return x.to(dtype).contiguous()


def host_resize(image: np.ndarray, geometry: Geometry, device: torch.device | str, resize: str = "pil") -> np.ndarray:
    """The part of :func:`preprocess` that belongs beside the decoder: Pillow's resize of one
    (H, W, 3) uint8 frame when the network runs on the CPU (the predictor calls it in the
    read-ahead thread, so it overlaps the network). Elsewhere the resize runs on the device, and
    the frame comes back unchanged."""
    if resize != "pil" or torch.device(device).type != "cpu" or tuple(geometry.resized) == tuple(geometry.original):
        return image
    return _pil_library(np.asarray(image)[None], geometry.resized)[0]


# --------------------------------------------------------------------------- masks back to the frame


def masks_to_frame(mask_logits: Tensor, geometry: Geometry, sigmoid: bool = False) -> Tensor:
    """Mask logits (..., h4, w4) -> (..., H, W) at the original frame size (the official chain).

    bilinear (align_corners False) to the padded size -> crop to the resized size -> bilinear to
    the original size, in float32 on the logits' device. With ``sigmoid=True`` the sigmoid is
    applied after the crop, before the second resize, as the official panoptic and semantic
    inference do; the result is then probabilities, not logits.
    """
    lead = mask_logits.shape[:-2]
    x = mask_logits.reshape(-1, 1, *mask_logits.shape[-2:]).float()
    x = F.interpolate(x, size=geometry.padded, mode="bilinear", align_corners=False)
    x = x[..., : geometry.resized[0], : geometry.resized[1]]
    if sigmoid:
        x = x.sigmoid()
    x = F.interpolate(x, size=geometry.original, mode="bilinear", align_corners=False)
    return x.reshape(*lead, *geometry.original)
