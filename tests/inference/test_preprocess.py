"""preprocess: detectron2 geometry, Pillow-exact resize, normalisation/padding, the mask chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from videomt_cli.errors import InputError
from videomt_cli.inference.preprocess import (
    PIXEL_MEAN,
    PIXEL_STD,
    Geometry,
    compute_geometry,
    host_resize,
    masks_to_frame,
    preprocess,
    resize_uint8,
)


def natural(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A natural-ish RGB frame: smooth gradients, hard-edged shapes, 1-px lines, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([120 + 100 * np.sin(x / 97 + y / 131), 128 + 90 * np.cos(x / 53 - y / 71), 60 + 0.15 * x], -1)
    img[h // 5 : h // 2, w // 6 : w // 3] = [250, 20, 30]
    img[(x - w * 0.6) ** 2 + (y - h * 0.55) ** 2 < (h * 0.2) ** 2] = [10, 200, 90]
    img[:, ::37] = 255
    img[::29, :] = 0
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def pil_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "size, min_size, max_size, resized, padded",
    [
        ((720, 1280), 448, 1333, (448, 796), (448, 800)),  # landscape 720p, YouTube-VIS
        ((1280, 720), 448, 1333, (796, 448), (800, 448)),  # portrait
        ((1080, 1920), 448, 1333, (448, 796), (448, 800)),
        ((720, 1280), 720, 1333, (720, 1280), (736, 1280)),  # VIPSeg/VSPW min size: no resize
        ((360, 640), 544, 1333, (544, 967), (544, 992)),  # OVIS, enlarge; 966.99.. rounds up
        ((480, 640), 448, 1333, (448, 597), (448, 608)),  # 597.33 rounds down
        ((500, 500), 448, 1333, (448, 448), (448, 448)),  # square
        ((400, 2000), 448, 1333, (267, 1333), (288, 1344)),  # long side capped at max_size
        ((2000, 400), 448, 1333, (1333, 267), (1344, 288)),
        ((100, 100), 448, 400, (400, 400), (416, 416)),
    ],
)
def test_geometry_known_cases(size, min_size, max_size, resized, padded):
    g = compute_geometry(*size, min_size, max_size)
    assert g == Geometry(original=size, resized=resized, padded=padded)
    assert g.mask_size == (padded[0] // 4, padded[1] // 4)


def test_geometry_rounding_is_detectron2s():
    # detectron2 ResizeShortestEdge.get_output_shape, written out independently
    def reference(h, w, short, long):
        scale = short / min(h, w)
        nh, nw = (short, scale * w) if h < w else (scale * h, short)
        if max(nh, nw) > long:
            s = long / max(nh, nw)
            nh, nw = nh * s, nw * s
        return int(nh + 0.5), int(nw + 0.5)

    rng = np.random.default_rng(0)
    for h, w, short in rng.integers([16, 16, 100], [4000, 4000, 900], size=(300, 3)):
        g = compute_geometry(int(h), int(w), int(short))
        assert g.resized == reference(int(h), int(w), int(short), 1333)
        assert all(p % 32 == 0 and 0 <= p - r < 32 for p, r in zip(g.padded, g.resized))


def test_geometry_rejects_bad_sizes():
    with pytest.raises(InputError):
        compute_geometry(0, 10, 448)


# --------------------------------------------------------------------------- resize


@pytest.mark.parametrize(
    "src, dst",
    [
        ((720, 1280), (448, 796)),  # the common shrink
        ((1280, 720), (796, 448)),  # portrait
        ((360, 640), (448, 796)),  # enlarge
        ((480, 640), (720, 960)),  # enlarge 1.5x (exact ties)
        ((77, 130), (40, 71)),
    ],
)
def test_pil_emulation_is_bit_exact(src, dst):
    img = natural(*src, seed=src[0])
    ref = pil_resize(img, *dst)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    emulated = resize_uint8(x, dst, method="pil-emulated")[0].permute(1, 2, 0).numpy()
    assert np.array_equal(emulated.astype(np.uint8), ref)
    library = resize_uint8(x, dst, method="pil")[0].permute(1, 2, 0).numpy()
    assert np.array_equal(library.astype(np.uint8), ref)


def test_torch_resize_within_one_level_of_pil():
    img = natural(720, 1280)
    ref = pil_resize(img, 448, 796).astype(int)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    out = resize_uint8(x, (448, 796), method="torch")[0].permute(1, 2, 0).numpy().astype(int)
    diff = np.abs(out - ref)
    assert diff.max() <= 1
    assert 0.05 < (diff > 0).mean() < 0.3  # the documented ~15 %


def test_resize_rejects_unknown_method():
    with pytest.raises(InputError):
        resize_uint8(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), (2, 2), method="cubic")


# --------------------------------------------------------------------------- preprocess


def test_preprocess_normalises_and_zero_pads():
    frames = np.stack([natural(100, 150, seed=i) for i in range(2)])
    g = compute_geometry(100, 150, 64, divisor=32)  # resized (64, 96), padded (64, 96) -> force padding:
    g = Geometry(original=g.original, resized=(64, 96), padded=(96, 128))
    out = preprocess(frames, g, device="cpu")
    assert out.shape == (2, 3, 96, 128) and out.dtype == torch.float32
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    resized = np.stack([pil_resize(f, 64, 96) for f in frames])
    expected = (torch.from_numpy(resized).permute(0, 3, 1, 2).float() - mean) / std
    assert torch.equal(out[:, :, :64, :96], expected)
    assert torch.count_nonzero(out[:, :, 64:, :]) == 0  # padding is 0 after normalisation
    assert torch.count_nonzero(out[:, :, :, 96:]) == 0


def test_preprocess_accepts_tensors_and_dtype():
    frames = torch.from_numpy(natural(64, 64))[None]
    g = compute_geometry(64, 64, 64)
    out = preprocess(frames, g, device="cpu", dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 64, 64)
    # no resize needed: the raw values are normalised exactly
    ref = (frames.permute(0, 3, 1, 2).float() - torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        PIXEL_STD
    ).view(1, 3, 1, 1)
    assert torch.equal(out, ref.to(torch.bfloat16))
    emulated = preprocess(frames, g, device="cpu", resize="pil-emulated")
    assert torch.equal(emulated, ref)


def test_host_resize_then_preprocess_equals_preprocess():
    """The predictor's split: Pillow's resize beside the decoder (CPU networks), the rest in
    ``preprocess``, which takes frames already at ``geometry.resized``: the same tensor."""
    frames = [natural(90, 170, seed=i) for i in range(2)]
    g = compute_geometry(90, 170, 48)  # resized (48, 91), padded (64, 96)
    whole = preprocess(np.stack(frames), g, device="cpu")
    resized = [host_resize(f, g, "cpu") for f in frames]
    assert all(r.shape == (48, 91, 3) and r.dtype == np.uint8 for r in resized)
    assert np.array_equal(resized[0], pil_resize(frames[0], 48, 91))
    assert torch.equal(preprocess(np.stack(resized), g, device="cpu"), whole)
    # Elsewhere the resize runs on the device: the frame comes back as it was.
    assert host_resize(frames[0], g, "cuda") is frames[0]
    assert host_resize(frames[0], g, torch.device("meta")) is frames[0]
    assert host_resize(frames[0], g, "cpu", resize="torch") is frames[0]
    same = compute_geometry(64, 64, 64)
    image = natural(64, 64)
    assert host_resize(image, same, "cpu") is image


def test_preprocess_checks_input():
    g = compute_geometry(64, 64, 32)
    with pytest.raises(InputError):
        preprocess(np.zeros((1, 64, 64, 3), dtype=np.float32), g)
    with pytest.raises(InputError):
        preprocess(np.zeros((1, 32, 64, 3), dtype=np.uint8), g)
    with pytest.raises(InputError):
        preprocess(np.zeros((1, 64, 64), dtype=np.uint8), g)


# --------------------------------------------------------------------------- masks back to the frame


def test_masks_to_frame_is_the_official_chain():
    torch.manual_seed(0)
    g = compute_geometry(90, 170, 48)  # resized (48, 91), padded (64, 96)
    assert g.resized == (48, 91) and g.padded == (64, 96)
    logits = torch.randn(5, 16, 24) * 4
    a = F.interpolate(logits[None], size=(64, 96), mode="bilinear", align_corners=False)
    a = a[:, :, :48, :91]
    ref = F.interpolate(a, size=(90, 170), mode="bilinear", align_corners=False)[0]
    assert torch.equal(masks_to_frame(logits, g), ref)
    ref_sig = F.interpolate(a.sigmoid(), size=(90, 170), mode="bilinear", align_corners=False)[0]
    assert torch.equal(masks_to_frame(logits, g, sigmoid=True), ref_sig)
    # leading dims are kept
    assert masks_to_frame(logits.view(1, 5, 16, 24), g).shape == (1, 5, 90, 170)
