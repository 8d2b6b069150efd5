"""masks.py: RLE round trips and measures against plain pycocotools."""

import numpy as np
import pytest
from pycocotools import mask as coco

from videomt_cli.io import masks


def _random_masks(k=5, h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.random((k, h, w)) > 0.6
    m[0] = False  # one empty mask
    m[1, 3:9, 10:20] = True
    return m


def test_encode_decode_round_trip():
    m = _random_masks()
    rles = masks.encode(m)
    assert len(rles) == len(m)
    for rle in rles:
        assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    assert np.array_equal(masks.decode_many(rles), m.astype(np.uint8))
    for k in range(len(m)):
        assert np.array_equal(masks.decode(rles[k]), m[k])


def test_encode_single_2d_and_non_bool():
    m = np.zeros((6, 4), np.uint8)
    m[2:5, 1:3] = 255
    (rle,) = masks.encode(m)
    assert np.array_equal(masks.decode(rle), (m > 0).astype(np.uint8))
    assert masks.encode(np.zeros((0, 4, 4), bool)) == []
    with pytest.raises(ValueError):
        masks.encode(np.zeros((1, 2, 3, 4), bool))


def test_fortran_trick_equals_naive_pycocotools():
    m = _random_masks(k=4, h=31, w=47, seed=3)
    naive = [coco.encode(np.asfortranarray(x.astype(np.uint8))) for x in m]
    fast = masks.encode(m)
    for a, b in zip(naive, fast):
        assert a["counts"].decode("ascii") == b["counts"]
        assert list(a["size"]) == b["size"]
    # Also from a non-contiguous view.
    view = np.ascontiguousarray(m.transpose(0, 2, 1)).transpose(0, 2, 1)
    assert masks.encode(view) == fast


def test_empty_area_bbox():
    e = masks.empty(5, 8)
    assert e["size"] == [5, 8] and isinstance(e["counts"], str)
    assert masks.area(e) == 0 and masks.is_empty(e)
    assert masks.bbox(e) == [0.0, 0.0, 0.0, 0.0]
    assert not masks.decode(e).any() and masks.decode(e).shape == (5, 8)
    assert e == masks.encode(np.zeros((5, 8), bool))[0]

    m = np.zeros((10, 12), bool)
    m[2:6, 3:10] = True
    (rle,) = masks.encode(m)
    assert masks.area(rle) == 28 and not masks.is_empty(rle)
    assert masks.bbox(rle) == [3.0, 2.0, 7.0, 4.0]


def test_decode_many_needs_input():
    with pytest.raises(ValueError):
        masks.decode_many([])


def test_areas_and_boxes_of_more_than_255_masks():
    """pycocotools' area() overflows a uint8 count under NumPy 2 from 256 RLEs on (a track of a
    300-frame video): areas() must still give every one."""
    m = np.zeros((300, 6, 5), bool)
    for k in range(300):
        m[k, : 1 + k % 6, : 1 + k % 5] = True
    rles = masks.encode(m)
    assert masks.areas(rles).tolist() == [(1 + k % 6) * (1 + k % 5) for k in range(300)]
    assert masks.bboxes(rles)[299].tolist() == [0, 0, 1 + 299 % 5, 1 + 299 % 6]
