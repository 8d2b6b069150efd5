"""CVAT's track rule: the frames a track is on, its shape on each, and each shape filled as a mask. No torch.

    for frame, shape in replay(keys, length):            # keys: a track's keyframes, sorted
        rle = rasterise(shape, h, w, "the file, line 12")  # compressed RLE (bytes counts), or None

What ``io.cvat.read_cvat`` applies to every track it reads (its module docstring states the rules:
**Tracks**, **Interpolation**, **Shapes**). Replayed from CVAT's own code, implemented here
independently: ``cvat/apps/dataset_manager/annotation.py`` ``TrackManager.get_interpolated_shapes``
(keyframes, ``outside``, the last keyframe repeated to the task's end; boxes and ellipses
interpolated linearly, ``rotation`` the short way round as ``find_angle_diff`` turns it; polygons by
its point matching; masks, which CVAT does not interpolate, held to the next keyframe) and
``formats/transformations.py`` (``RotatedBoxesToPolygons``, ``EllipsesToMasks``, masks).
Polygons and boxes are filled by pycocotools, as a COCO polygon: a pixel is in when its centre is.
Nothing here reads XML or knows tasks and videos: shapes in, frames and RLEs out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from pycocotools import mask as _coco

from videomt_cli.errors import DatasetError
from videomt_cli.io import masks as mask_ops

# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Shape:
    """One shape of a track (or an ``<image>`` shape), geometry as CVAT keeps it internally.

    ``points``: box ``(xtl, ytl, xbr, ybr)``; polygon ``(x0, y0, x1, y1, ...)``; ellipse ``(cx, cy,
    cx + rx, cy - ry)`` (CVAT's own form, rounded to 2 decimals as its importer does); mask
    ``(left, top, width, height)`` with the run lengths in ``rle``. ``frame`` is the task frame
    (0 = the task's first frame) once read, the XML's frame number before.
    """

    kind: str
    frame: int
    points: tuple[float, ...]
    rotation: float = 0.0
    outside: bool = False
    keyframe: bool = True
    rle: tuple[int, ...] = ()
    line: int = 0


# ----------------------------------------------------------------------------- CVAT's track rule


def replay(keys: list[Shape], end: int, standalone: bool = False) -> list[tuple[int, Shape]]:
    """Every task frame a track is visible on, with its shape there (CVAT's
    ``TrackManager.get_interpolated_shapes``, frames with the object outside left out).

    ``keys``: the track's keyframes, sorted by task frame, all < ``end`` (the task's frame count).
    A held or repeated shape is the keyframe object itself (callers fill it once).
    ``standalone``: a shape outside any track (``<image>`` shapes): its own frame only.
    """
    if standalone:
        return [(k.frame, k) for k in keys if not k.outside]
    out: list[tuple[int, Shape]] = []
    for a, b in pairwise(keys):
        if a.outside:  # absent until the next keyframe
            continue
        out.append((a.frame, a))
        out.extend((f, between(a, b, f)) for f in range(a.frame + 1, b.frame))
    last = keys[-1]
    if not last.outside:  # repeated to the end of the task
        out.extend((f, last) for f in range(last.frame, end))
    return out


def between(a: Shape, b: Shape, frame: int) -> Shape:
    """The shape on ``frame``, strictly between keyframes ``a`` and ``b`` of one track."""
    t = (frame - a.frame) / (b.frame - a.frame)
    if a.kind == "mask":  # CVAT cannot interpolate masks: the keyframe holds
        return a
    if a.kind == "polygon":
        points = tuple(interpolate_polygon(np.array(a.points).reshape(-1, 2), np.array(b.points).reshape(-1, 2),
                                           t).reshape(-1).tolist())
        return Shape(a.kind, frame, points, a.rotation, False, False, (), a.line)
    p0, p1 = np.array(a.points), np.array(b.points)
    points = tuple((p0 + (p1 - p0) * t).tolist())
    rotation = (a.rotation + angle_step(b.rotation, a.rotation) * t + 360) % 360
    return Shape(a.kind, frame, points, rotation, False, False, (), a.line)


def angle_step(to: float, frm: float) -> float:
    """The signed turn from ``frm`` to ``to`` degrees, the short way (CVAT's ``find_angle_diff``,
    whose arithmetic makes an exact half turn +1 degree: kept, so files read as CVAT shows them)."""
    d = ((to - frm + 180) % 360) - 180
    return 1.0 if d == -180 else d


def interpolate_polygon(a: np.ndarray, b: np.ndarray, t: float, closed: bool = True) -> np.ndarray:
    """CVAT's interpolation of a polygon (or polyline, ``closed=False``) from vertices ``a`` (N, 2)
    to ``b`` (M, 2) at fraction ``t`` in (0, 1) -> (K, 2) vertices.

    The outlines (closed by repeating the first vertex) are parametrised by arc length (0..1).
    Every vertex of ``a`` is paired with the vertex of ``b`` nearest in that parameter, and every
    vertex of ``b`` left unpaired with the nearest of ``a`` (first on ties). The pairs, in order of
    ``a``'s vertices, are blended linearly. Then the blends are thinned: a run of ``a``'s vertices
    paired with one and the same vertex of ``b`` keeps a blended point only where it is at least
    ``L / 2n`` from the last kept one (``L`` the run's length along ``a``, ``n`` its vertices), and
    likewise the blends of one vertex of ``a`` paired with several of ``b`` (along ``b``); a run
    thinned to its two ends closer than that becomes their midpoint. The closing vertex is dropped.
    """
    if closed:
        a, b = np.vstack([a, a[:1]]), np.vstack([b, b[:1]])
    fa, fb = _arc_fractions(a), _arc_fractions(b)
    gap = np.abs(fa[:, None] - fb[None, :])  # (N, M); argmin takes the first of equal distances
    pairs = [[int(j)] for j in gap.argmin(axis=1)]
    unpaired = np.setdiff1d(np.arange(len(b)), gap.argmin(axis=1))
    for j, i in zip(unpaired.tolist(), gap[:, unpaired].argmin(axis=0).tolist()):
        pairs[i].append(j)
    pairs = [sorted(p) for p in pairs]
    ia = np.repeat(np.arange(len(a)), [len(p) for p in pairs])
    jb = np.array([j for p in pairs for j in p])
    blends = a[ia] + (b[jb] - a[ia]) * t  # blends of a's vertex i start at blends[first[i]]
    first = np.concatenate([[0], np.cumsum([len(p) for p in pairs])[:-1]]).tolist()

    kept: list[np.ndarray] = []

    def thin(length: float, n: int, p: int, q: int) -> None:
        limit = length / (2 * n)
        run, last = [blends[p]], p
        for k in range(p + 1, q):
            if _dist(blends[last], blends[k]) >= limit:
                run.append(blends[k])
                last = k
        run.append(blends[q])
        if len(run) == 2 and _dist(blends[p], blends[q]) < limit:
            run = [(blends[p] + blends[q]) / 2]
        kept.extend(run)

    def a_run(i0: int, i1: int) -> None:  # a's vertices i0..i1, each paired with one (the same) vertex of b
        p, q = first[i0], first[i1]
        if p == q:
            kept.append(blends[p])
        else:
            thin(_length(a[i0:i1 + 1]), i1 - i0 + 1, p, q)

    def b_run(i: int) -> None:  # a's vertex i, paired with b's vertices pairs[i][0]..pairs[i][-1]
        j0, j1 = pairs[i][0], pairs[i][-1]
        thin(_length(b[j0:j1 + 1]), j1 - j0 + 1, first[i], first[i] + len(pairs[i]) - 1)

    open_at = None
    for i, js in enumerate(pairs):
        if len(js) == 1:
            if open_at is None:
                open_at = i
            elif js[0] != pairs[open_at][0]:
                a_run(open_at, i - 1)
                open_at = i
        else:
            if open_at is not None:
                a_run(open_at, i - 1)
                open_at = None
            b_run(i)
    if open_at is not None:
        a_run(open_at, len(pairs) - 1)
    out = np.array(kept).reshape(-1, 2)
    return out[:-1] if closed else out


def _arc_fractions(points: np.ndarray) -> np.ndarray:
    steps = np.sqrt(((points[1:] - points[:-1]) ** 2).sum(axis=1))
    total = steps.sum()
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])
    # A zero-length outline (one point repeated): CVAT divides 0 by 0 and every comparison with
    # the NaNs fails, which pairs everything with vertex 0; all-zero fractions do the same.
    return cumulative / total if total > 0 else np.zeros(len(points))


def _length(points: np.ndarray) -> float:
    return float(np.sqrt(((points[1:] - points[:-1]) ** 2).sum(axis=1)).sum())


def _dist(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sqrt(((p - q) ** 2).sum()))


# ----------------------------------------------------------------------------- filling shapes


def rasterise(shape: Shape, h: int, w: int, where: str) -> dict | None:
    """A shape of an (h, w) frame -> a compressed pycocotools RLE (bytes counts), or None for no area."""
    if shape.kind == "polygon":
        return _fill(list(shape.points), h, w)
    if shape.kind == "box":
        return _fill(box_polygon(shape.points, shape.rotation), h, w)
    if shape.kind == "ellipse":
        return _ellipse(shape, h, w)
    return _mask(shape, h, w, where)


def _fill(polygon: list[float], h: int, w: int) -> dict | None:
    """pycocotools' polygon fill (a pixel is in when its centre is); None below 3 vertices."""
    if len(polygon) < 6:
        return None
    return _coco.frPyObjects([polygon], h, w)[0]


def box_polygon(points, rotation: float = 0.0) -> list[float]:
    """A box ``(xtl, ytl, xbr, ybr)`` turned ``rotation`` degrees (clockwise on screen) about its
    centre -> its corners ``[x0, y0, ...]`` (CVAT's ``RotatedBoxesToPolygons``)."""
    x0, y0, x1, y1 = points
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if rotation:
        a = math.radians(rotation)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        corners = [(cx + math.cos(a) * (x - cx) - math.sin(a) * (y - cy),
                    cy + math.sin(a) * (x - cx) + math.cos(a) * (y - cy)) for x, y in corners]
    return [v for xy in corners for v in xy]


def _ellipse(shape: Shape, h: int, w: int) -> dict | None:
    """Filled as CVAT's ``EllipsesToMasks``: OpenCV's ellipse at the rounded centre and semi-axes."""
    import cv2

    cx, cy, right, top = shape.points
    canvas = np.zeros((h, w), np.uint8)
    axes = (max(0, round(right - cx)), max(0, round(cy - top)))
    cv2.ellipse(canvas, (round(cx), round(cy)), axes, shape.rotation, 0, 360, 1, thickness=-1)
    return _coco.encode(np.asfortranarray(canvas))


def _mask(shape: Shape, h: int, w: int, where: str) -> dict | None:
    """CVAT's mask: run lengths over the box ``left, top, width, height``, row by row, from a run of 0."""
    left, top, bw, bh = (int(v) for v in shape.points)
    if bw < 1 or bh < 1 or left < 0 or top < 0 or left + bw > w or top + bh > h:
        raise DatasetError(f"{where}: the mask's box (left {left}, top {top}, {bw}x{bh}) is not inside the "
                           f"{w}x{h} frame.")
    runs = np.array(shape.rle, np.int64)
    if (runs < 0).any() or runs.sum() != bw * bh:
        raise DatasetError(f"{where}: the mask's rle covers {int(runs.sum())} pixels but its box is {bw}x{bh} = "
                           f"{bw * bh}.")
    values = np.arange(len(runs)) % 2  # 0, 1, 0, ...
    tight = np.repeat(values.astype(np.uint8), runs).reshape(bh, bw)
    canvas = np.zeros((h, w), np.uint8)
    canvas[top:top + bh, left:left + bw] = tight
    return _coco.encode(np.asfortranarray(canvas))


def rle_areas(rles: list[dict]) -> list[int]:
    """Pixel counts of compressed RLEs."""
    return mask_ops.areas(rles).tolist()


__all__ = ["Shape", "angle_step", "between", "box_polygon", "interpolate_polygon", "rasterise", "replay",
           "rle_areas"]
