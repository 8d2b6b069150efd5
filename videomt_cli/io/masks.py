"""Binary masks as compressed COCO RLE (pycocotools), the measures writers need, and painting
masks into one id picture. No torch."""

from __future__ import annotations

import cv2
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


_AREA_CHUNK = 255  # pycocotools' area() sizes its output in a uint8 under NumPy 2: 256 RLEs overflow


def areas(rles: list[RLE]) -> np.ndarray:
    """(K,) int64 areas of many RLEs, in as few pycocotools calls as it allows."""
    if not rles:
        return np.zeros(0, np.int64)
    coco = [_as_coco(r) for r in rles]
    return np.concatenate([np.asarray(_coco.area(coco[i:i + _AREA_CHUNK]), dtype=np.int64).reshape(-1)
                           for i in range(0, len(coco), _AREA_CHUNK)])


def bboxes(rles: list[RLE]) -> np.ndarray:
    """(K, 4) float64 [x, y, w, h] of many RLEs in one pycocotools call (zeros where empty)."""
    if not rles:
        return np.zeros((0, 4))
    return np.asarray(_coco.toBbox([_as_coco(r) for r in rles]), dtype=np.float64).reshape(-1, 4)


def dense(rle: RLE) -> np.ndarray:
    """One RLE -> (H, W) C-contiguous uint8 0/1 mask.

    pycocotools hands back a column-major array; ``cv2.transpose`` of its (W, H) C-ordered view
    makes the row-major copy about 3x faster than numpy (DESIGN 8: masks are the overlay's cost).
    """
    return cv2.transpose(np.ascontiguousarray(decode(rle).T))


def paint(masks: list[np.ndarray], h: int, w: int):
    """Stack masks (each (H, W) 0/1 uint8 or bool) into one index picture, later masks on top.

    Returns ``(index, boxes)``: ``index`` (H, W) is 0 where no mask is and ``k + 1`` where mask
    ``k`` is the last one covering the pixel (uint8 up to 255 masks, else uint16); ``boxes[k]`` is
    mask ``k``'s ``(x, y, w, h)`` or None when it is empty. Painting in order with a running
    maximum of ``mask * (k + 1)`` is exact because ``k + 1`` grows, and OpenCV/numpy ufuncs keep it
    fast (no boolean indexing).
    """
    dtype = np.uint8 if len(masks) < 256 else np.uint16
    index = np.zeros((h, w), dtype)
    boxes: list[tuple[int, int, int, int] | None] = []
    for k, mask in enumerate(masks):
        m = np.asarray(mask)
        if m.shape != (h, w):
            raise ValueError(f"mask {k} is {m.shape}, the picture is {(h, w)}")
        m = np.ascontiguousarray(m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8))
        x, y, bw, bh = cv2.boundingRect(m)
        if bw == 0 or bh == 0:
            boxes.append(None)
            continue
        boxes.append((x, y, bw, bh))
        roi = index[y:y + bh, x:x + bw]
        np.maximum(roi, m[y:y + bh, x:x + bw].astype(dtype, copy=False) * dtype(k + 1), out=roi)
    return index, boxes


def rle_counts(rle: dict) -> list[int]:
    """The run lengths of a compressed COCO RLE (str or bytes counts) as ints: column-major,
    starting with a run of zeros. The inverse of pycocotools' string coding (``rleToString``):
    each count is 5-bit groups, low first, a set 0x20 bit meaning "more", the last group's 0x10
    bit the sign, each group stored as ``chr(48 + group)``; from the third count on, the value is
    stored as the difference to the count two places before."""
    text = rle["counts"]
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    counts: list[int] = []
    p, n = 0, len(data)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def uncompressed(rle: dict) -> dict:
    """A compressed RLE -> pycocotools' uncompressed form ``{"size": [h, w], "counts": [ints]}``."""
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle_counts(rle)}
