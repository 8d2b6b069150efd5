"""Binary masks as compressed COCO RLE (pycocotools), and the measures writers need. No torch."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as _coco

from videomt_cli.records import RLE


def encode(masks: np.ndarray) -> list[RLE]:
    """Masks (K, H, W) or (H, W), bool or 0/1 integers -> list of K compressed RLEs with str counts.

    pycocotools wants a Fortran-ordered uint8 (H, W, K) array. A C-ordered (K, W, H) array is that
    array's memory exactly, so one transposing copy (which also casts to uint8) and a free
    ``.transpose(2, 1, 0)`` view give it (DESIGN 8); ``np.asfortranarray`` of a transposed
    (K, H, W) array would copy twice. Any non-zero value counts as inside the mask.
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"masks must be (K, H, W) or (H, W), got shape {masks.shape}")
    if masks.dtype != np.bool_:
        masks = masks != 0  # pycocotools' encoder needs 0/1 bytes, not arbitrary values
    fortran = np.ascontiguousarray(masks.transpose(0, 2, 1), dtype=np.uint8).transpose(2, 1, 0)
    rles = _coco.encode(fortran)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def empty(height: int, width: int) -> RLE:
    """The RLE of an all-zero (height, width) mask, without building the array."""
    # An uncompressed RLE of one run of zeros, compressed by pycocotools.
    n = height * width
    rle = _coco.frPyObjects({"size": [height, width], "counts": [n]}, height, width)
    counts = rle["counts"]
    return {"size": [height, width], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def _as_coco(rle: RLE) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode(rle: RLE) -> np.ndarray:
    """RLE -> (H, W) uint8 array of 0/1."""
    return _coco.decode(_as_coco(rle))


def decode_many(rles: list[RLE]) -> np.ndarray:
    """RLEs of one size -> (K, H, W) uint8."""
    if not rles:
        raise ValueError("decode_many needs at least one RLE")
    return np.ascontiguousarray(_coco.decode([_as_coco(r) for r in rles]).transpose(2, 0, 1))


def area(rle: RLE) -> int:
    return int(_coco.area(_as_coco(rle)))


def bbox(rle: RLE) -> list[float]:
    """[x, y, w, h] of the mask's pixels ([0, 0, 0, 0] when empty)."""
    return [float(v) for v in _coco.toBbox(_as_coco(rle))]


def is_empty(rle: RLE) -> bool:
    return area(rle) == 0
