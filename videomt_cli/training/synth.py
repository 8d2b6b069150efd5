"""A synthetic video instance segmentation dataset: moving shapes on textured backgrounds.

For training and testing a small VidEoMT without downloading anything::

    from videomt_cli.training import synth
    train = synth.generate("data/train", videos=100, seed=0)   # -> data/train/annotations.json
    val = synth.generate("data/val", videos=20, seed=1)        # another seed: other videos

Each video holds 1-4 objects. An object's class is its shape (``circle``, ``square``, ``triangle``
by default; ``star``, ``hexagon`` and ``cross`` too); its colour is tinted by the class (class i of
K has hues near i / K of the colour wheel, any saturation and brightness), a cue as in many real
categories. Objects move (velocity and a slight acceleration), scale and rotate, enter and leave
the frame, and occlude each other in a fixed depth order: an object's mask holds only its
visible pixels. With probability ``occlusion_prob`` a video is scripted so that one object passes
fully behind a larger one for 2-5 frames and comes out again (same track). Backgrounds are textured
(gradient, low-frequency colour clouds, stripes, soft blobs, static grain) and pan slowly; every
frame gets a little sensor noise.

Output, in ``out_dir`` (YouTube-VIS layout)::

    annotations.json                      YouTube-VIS dataset: videos, annotations, categories
    JPEGImages/<video>/00000.jpg ...      frames, JPEG quality 95
    videos/<video>.mp4                    with write_mp4=True: H.264, yuv420p

``file_names`` in ``annotations.json`` are relative to ``out_dir`` (``JPEGImages/<video>/00000.jpg``).
An annotation is one object's track: per-frame compressed RLE ``segmentations`` (``null`` in frames
where no pixel of it is visible: outside the frame or fully hidden), ``areas``, ``bboxes``
(``[x, y, w, h]``), ``iscrowd`` 0. Objects never visible are left out. Category ids are 1..K in the
order of ``classes``.

Everything is a function of ``(seed, video index)``: the same seed gives byte-identical
annotations (and frames); video ``i`` does not depend on how many videos are generated. No torch.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from videomt_cli.errors import InputError, OutputError
from videomt_cli.io import masks as mask_ops
from videomt_cli.io.atomic import atomic_path, output_error, write_bytes

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")
DEFAULT_CLASSES = ("circle", "square", "triangle")
ANNOTATIONS_NAME = "annotations.json"
FRAMES_DIR = "JPEGImages"
VIDEOS_DIR = "videos"
JPEG_QUALITY = 95
FORMAT_VERSION = 2  # 2: class-tinted colours, larger objects

# Radius of the largest circle inside each shape, as a fraction of its circumradius (what an
# occluder must cover). The star and the cross are too thin to hide anything reliably.
_INRADIUS = {"circle": 1.0, "square": math.cos(math.pi / 4), "triangle": 0.5, "hexagon": math.cos(math.pi / 6),
             "star": 0.35, "cross": 0.3}
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_PAN_MARGIN = 12  # the background is this much larger on every side; the camera pans inside it
_NOISE_MARGIN = 8
_MODES = ("inside", "inside", "enter", "leave")  # trajectory kinds, drawn uniformly


@dataclass
class ObjectPlan:
    """One object's whole life: per-frame centre, circumradius and rotation (frame coordinates)."""

    shape: str
    category_id: int
    colour: tuple[int, int, int]
    depth: int  # drawing order: higher is nearer the camera
    mode: str  # "inside" | "enter" | "leave" | "occluder" | "hidden"
    cx: np.ndarray  # (T,) float
    cy: np.ndarray
    r: np.ndarray
    theta: np.ndarray


@dataclass
class VideoPlan:
    """Everything needed to render one video, deterministically."""

    name: str
    height: int
    width: int
    frames: int
    objects: list[ObjectPlan]
    background: np.ndarray  # (H + 2m, W + 2m, 3) uint8, m = _PAN_MARGIN
    pan: np.ndarray  # (T, 2) int (y, x) offsets of the frame inside the background
    noise_seed: int
    occlusion: dict | None = None  # {"hidden": i, "occluder": j, "frames": [t0, t1)} (object indices)
    categories: list[str] = field(default_factory=list)


@dataclass
class Rendered:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    visible: np.ndarray  # (N, T, H, W) bool: what each object's annotation holds
    full: np.ndarray  # (N, T, H, W) bool: each object's whole shape (clipped to the frame)


# ----------------------------------------------------------------------------- public API


def generate(out_dir: str | os.PathLike, videos: int, seed: int, frames: int = 24,
             size: tuple[int, int] = (192, 256), classes: Sequence[str] = DEFAULT_CLASSES,
             objects: tuple[int, int] = (1, 4), occlusion_prob: float = 0.3, write_frames: bool = True,
             write_mp4: bool = False, fps: int = 12, overwrite: bool = False) -> Path:
    """Write ``videos`` synthetic videos and their YouTube-VIS annotations into ``out_dir``.

    Args:
        out_dir: the dataset folder (created).
        videos: how many videos (ids 1..videos).
        seed: the dataset's seed; another seed gives other videos (train / held-out splits).
        frames: frames per video.
        size: (height, width) of every frame.
        classes: shape names (see ``SHAPES``); category ids 1..K in this order.
        objects: (min, max) objects per video.
        occlusion_prob: the probability that a video (with 2+ objects and 8+ frames) holds a
            scripted occlusion: an object fully hidden behind another for 2-5 frames, then visible
            again with the same track.
        write_frames: write ``JPEGImages/<video>/NNNNN.jpg`` (``file_names`` lists them either way).
        write_mp4: also write ``videos/<video>.mp4`` (H.264, yuv420p: needs an even size).
        fps: frame rate of the mp4 files.
        overwrite: replace an existing ``annotations.json``.

    Returns:
        The path of ``annotations.json`` (written last, atomically: a folder that has it is complete).
    """
    size, classes = _check_args(videos, seed, frames, size, classes, objects, occlusion_prob, fps)
    if write_mp4 and (size[0] % 2 or size[1] % 2):
        raise InputError(f"write_mp4 needs an even frame size for yuv420p H.264, got {size[0]}x{size[1]} (h x w).")
    out = Path(out_dir)
    ann_path = out / ANNOTATIONS_NAME
    if ann_path.exists() and not overwrite:
        raise OutputError(f"{ann_path} already exists; pass overwrite=True to replace the dataset.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(e, out) from None

    video_entries, annotations = [], []
    for index in range(videos):
        plan = plan_video(seed, index, frames=frames, size=size, classes=classes, objects=objects,
                          occlusion_prob=occlusion_prob)
        rendered = render(plan)
        video_id = index + 1
        file_names = [f"{FRAMES_DIR}/{plan.name}/{t:05d}.jpg" for t in range(frames)]
        if write_frames:
            _write_jpegs(out, file_names, rendered.frames)
        entry = {"id": video_id, "name": plan.name, "width": size[1], "height": size[0], "length": frames,
                 "file_names": file_names}
        if write_mp4:
            rel = f"{VIDEOS_DIR}/{plan.name}.mp4"
            write_mp4_file(out / rel, rendered.frames, fps)
            entry["video_file"] = rel
        video_entries.append(entry)
        for ann in annotate(plan, rendered.visible, video_id):
            ann["id"] = len(annotations) + 1
            annotations.append(ann)

    doc = {
        "info": {"description": "videomt synthetic shapes", "version": FORMAT_VERSION, "seed": int(seed),
                 "frames": frames, "size": list(size), "objects": list(objects),
                 "occlusion_prob": float(occlusion_prob)},
        "licenses": [],
        "videos": video_entries,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(classes)],
    }
    _write_json_atomic(ann_path, doc)
    return ann_path


def make_example_video(path: str | os.PathLike, seed: int = 0, frames: int = 64, size: tuple[int, int] = (240, 320),
                       fps: int = 15, classes: Sequence[str] = DEFAULT_CLASSES,
                       annotations: str | os.PathLike | None = None, crf: int = 20) -> Path:
    """One demo mp4 (H.264, yuv420p): 3 objects, one of which passes fully behind another and
    comes out again. ``annotations`` also writes its YouTube-VIS ground truth (``file_names`` are
    left empty: the frames live in the mp4). Small enough to commit (about 100-200 KB at the defaults)."""
    size, classes = _check_args(1, seed, frames, size, classes, (3, 3), 1.0, fps)
    if size[0] % 2 or size[1] % 2:
        raise InputError(f"an mp4 needs an even frame size for yuv420p H.264, got {size[0]}x{size[1]} (h x w).")
    plan = plan_video(seed, 0, frames=frames, size=size, classes=classes, objects=(3, 3), occlusion_prob=1.0,
                      name=Path(path).stem)
    rendered = render(plan)
    path = Path(path)
    write_mp4_file(path, rendered.frames, fps, crf=crf)
    if annotations is not None:
        anns = annotate(plan, rendered.visible, 1)
        for i, a in enumerate(anns):
            a["id"] = i + 1
        doc = {"info": {"description": "videomt synthetic example", "version": FORMAT_VERSION, "seed": int(seed)},
               "licenses": [],
               "videos": [{"id": 1, "name": plan.name, "width": size[1], "height": size[0], "length": frames,
                           "file_names": [], "video_file": path.name}],
               "annotations": anns,
               "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(classes)]}
        _write_json_atomic(Path(annotations), doc)
    return path


def plan_video(seed: int, index: int, frames: int = 24, size: tuple[int, int] = (192, 256),
               classes: Sequence[str] = DEFAULT_CLASSES, objects: tuple[int, int] = (1, 4),
               occlusion_prob: float = 0.3, name: str | None = None) -> VideoPlan:
    """Draw video ``index`` of dataset ``seed``: background, objects and their trajectories.

    A drawn plan is rejected and drawn again when no object is ever visible or, for a scripted
    occlusion, when the hidden object is not fully hidden for 2-5 consecutive frames with visible
    frames right before and after (checked on the actual masks, other objects included).
    """
    h, w = size
    T = frames
    rng = np.random.default_rng([int(seed), int(index)])
    n = int(rng.integers(objects[0], objects[1] + 1))
    occlude = n >= 2 and T >= 8 and rng.random() < occlusion_prob
    background = _background(rng, h + 2 * _PAN_MARGIN, w + 2 * _PAN_MARGIN)
    pan = _pan(rng, T)
    noise_seed = int(rng.integers(2**31))
    bg_mean = background.reshape(-1, 3).mean(axis=0)
    name = name or f"s{seed}_{index:05d}"
    plan = None
    for _attempt in range(200):
        objs = [_random_object(rng, T, h, w, classes) for k in range(n)]
        depth = list(rng.permutation(n))
        occlusion = None
        if occlude:
            occluder_shapes = [c for c in classes if _INRADIUS[c] >= 0.5]
            if occluder_shapes:
                _script_occlusion(rng, objs, T, h, w, classes, occluder_shapes)
                # the occluder (object 0) in front of the hidden one (object 1)
                if depth[0] < depth[1]:
                    depth[0], depth[1] = depth[1], depth[0]
                occlusion = {"hidden": 1, "occluder": 0}
        colours = _colours(rng, [o.category_id - 1 for o in objs], len(classes), bg_mean)
        for k, o in enumerate(objs):
            o.depth = int(depth[k])
            o.colour = colours[k]
        plan = VideoPlan(name=name, height=h, width=w, frames=T, objects=objs, background=background, pan=pan,
                         noise_seed=noise_seed, occlusion=occlusion, categories=list(classes))
        _, visible = object_masks(plan)
        areas = np.count_nonzero(visible, axis=(2, 3))  # (N, T)
        if not areas.any():
            continue
        if occlusion is not None:
            run = _hidden_run(areas[occlusion["hidden"]])
            if run is None:
                continue
            occlusion["frames"] = list(run)
        return plan
    # Practically unreachable (each attempt succeeds with a high probability); keep the last plan
    # without the occlusion guarantee rather than fail.
    plan.occlusion = None
    return plan


def object_masks(plan: VideoPlan) -> tuple[np.ndarray, np.ndarray]:
    """-> (full, visible), both (N, T, H, W) bool: each object's shape in the frame, and the part
    of it no nearer object covers."""
    N, T, h, w = len(plan.objects), plan.frames, plan.height, plan.width
    full = np.zeros((N, T, h, w), dtype=bool)
    for k, o in enumerate(plan.objects):
        for t in range(T):
            full[k, t] = _shape_mask(o.shape, o.cx[t], o.cy[t], o.r[t], o.theta[t], h, w)
    visible = full.copy()
    front_to_back = sorted(range(N), key=lambda k: -plan.objects[k].depth)
    covered = np.zeros((T, h, w), dtype=bool)
    for k in front_to_back:
        visible[k] &= ~covered
        covered |= full[k]
    return full, visible


def render(plan: VideoPlan) -> Rendered:
    """The frames (RGB uint8) and the masks of a planned video."""
    full, visible = object_masks(plan)
    T, h, w = plan.frames, plan.height, plan.width
    noise_rng = np.random.default_rng([plan.noise_seed, 1])
    m = _NOISE_MARGIN
    noise = np.rint(noise_rng.normal(0.0, 3.0, (h + 2 * m, w + 2 * m, 3))).astype(np.int16)
    offsets = noise_rng.integers(0, 2 * m + 1, size=(T, 2))
    back_to_front = sorted(range(len(plan.objects)), key=lambda k: plan.objects[k].depth)
    out = np.empty((T, h, w, 3), dtype=np.uint8)
    for t in range(T):
        py, px = plan.pan[t]
        frame = plan.background[py:py + h, px:px + w].copy()
        for k in back_to_front:
            frame[full[k, t]] = plan.objects[k].colour
        ny, nx = offsets[t]
        noisy = frame.astype(np.int16) + noise[ny:ny + h, nx:nx + w]
        np.clip(noisy, 0, 255, out=noisy)
        out[t] = noisy
    return Rendered(frames=out, visible=visible, full=full)


def annotate(plan: VideoPlan, visible: np.ndarray, video_id: int) -> list[dict]:
    """YouTube-VIS annotations (without ``id``) of the objects that are visible in some frame, in
    object order. ``null`` segmentation, area and bbox where an object has no visible pixel."""
    anns = []
    h, w = plan.height, plan.width
    for k, o in enumerate(plan.objects):
        areas = np.count_nonzero(visible[k], axis=(1, 2))
        if not areas.any():
            continue
        rles = mask_ops.encode(visible[k])
        segs, ann_areas, boxes = [], [], []
        for t, rle in enumerate(rles):
            if areas[t] == 0:
                segs.append(None)
                ann_areas.append(None)
                boxes.append(None)
            else:
                segs.append(rle)
                ann_areas.append(int(areas[t]))
                boxes.append(mask_ops.bbox(rle))
        anns.append({"video_id": int(video_id), "category_id": int(o.category_id), "iscrowd": 0,
                     "height": h, "width": w, "segmentations": segs, "areas": ann_areas, "bboxes": boxes})
    return anns


def write_mp4_file(path: str | os.PathLike, frames: np.ndarray, fps: int = 12, crf: int = 23) -> Path:
    """RGB frames (T, H, W, 3) uint8 -> H.264 yuv420p mp4 (PyAV), written atomically."""
    import av  # imported here: generating JPEG datasets does not need it

    path = Path(path)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width = int(frames.shape[2])
        stream.height = int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ----------------------------------------------------------------------------- drawing


def _unit_vertices(shape: str) -> np.ndarray:
    """(V, 2) vertices of a shape with circumradius 1, at rotation 0."""
    if shape == "square":
        a = np.pi / 4 + np.arange(4) * np.pi / 2
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "triangle":
        a = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "hexagon":
        a = np.arange(6) * np.pi / 3
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "star":
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([rad * np.cos(a), rad * np.sin(a)], 1)
    if shape == "cross":
        s = 0.3 * math.sqrt(2) / math.sqrt(1 + 0.09)  # arm half-width; tips at circumradius 1
        L = math.sqrt(1 - s * s)
        return np.array([[s, -L], [s, -s], [L, -s], [L, s], [s, s], [s, L],
                         [-s, L], [-s, s], [-L, s], [-L, -s], [-s, -s], [-s, -L]])
    raise ValueError(shape)


_VERTICES = {s: _unit_vertices(s) for s in SHAPES if s != "circle"}


def _shape_mask(shape: str, cx: float, cy: float, r: float, theta: float, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    if r <= 0.5 or cx + r < -1 or cy + r < -1 or cx - r > w + 1 or cy - r > h + 1:
        return m.view(bool)
    scale = 1 << _SHIFT
    if shape == "circle":
        cv2.circle(m, (int(round(cx * scale)), int(round(cy * scale))), int(round(r * scale)), 1, -1,
                   cv2.LINE_8, _SHIFT)
    else:
        c, s = math.cos(theta), math.sin(theta)
        v = _VERTICES[shape] @ np.array([[c, s], [-s, c]]) * r + (cx, cy)
        cv2.fillPoly(m, [np.rint(v * scale).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    return m.view(bool)


def _background(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """A textured RGB background: gradient, colour clouds, stripes, soft blobs, lines, grain."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    proj = xx * math.cos(a) + yy * math.sin(a)
    proj = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    c0, c1 = rng.uniform(20, 235, 3).astype(np.float32), rng.uniform(20, 235, 3).astype(np.float32)
    img = c0[None, None] + proj[..., None] * (c1 - c0)[None, None]
    clouds = rng.normal(0, 1, (int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3)).astype(np.float32)
    img += cv2.resize(clouds, (W, H), interpolation=cv2.INTER_CUBIC) * np.float32(rng.uniform(10, 30))
    for _ in range(int(rng.integers(0, 3))):  # stripes, soft or hard
        b = rng.uniform(0, np.pi)
        period = rng.uniform(6, 40)
        phase = np.float32(rng.uniform(0, 2 * np.pi))
        wave = np.sin((xx * np.float32(2 * np.pi * math.cos(b) / period) + yy * np.float32(2 * np.pi * math.sin(b) / period))
                      + phase)
        if rng.random() < 0.5:
            wave = np.sign(wave)
        img += wave[..., None] * (rng.uniform(-1, 1, 3) * rng.uniform(8, 30)).astype(np.float32)[None, None]
    for _ in range(int(rng.integers(2, 7))):  # soft, translucent blobs (blended inside their box only)
        cx, cy = int(rng.integers(0, W)), int(rng.integers(0, H))
        ax, ay = int(rng.integers(6, max(7, W // 4))), int(rng.integers(6, max(7, H // 4)))
        angle, sigma = float(rng.uniform(0, 180)), float(rng.uniform(2, 6))
        opacity, colour = np.float32(rng.uniform(0.3, 0.7)), rng.uniform(0, 255, 3).astype(np.float32)
        pad = max(ax, ay) + int(3 * sigma) + 1
        y0, y1, x0, x1 = max(0, cy - pad), min(H, cy + pad + 1), max(0, cx - pad), min(W, cx + pad + 1)
        layer = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.ellipse(layer, (cx - x0, cy - y0), (ax, ay), angle, 0, 360, 1.0, -1)
        alpha = (cv2.GaussianBlur(layer, (0, 0), sigma) * opacity)[..., None]
        roi = img[y0:y1, x0:x1]
        roi += (colour[None, None] - roi) * alpha
    for _ in range(int(rng.integers(0, 6))):  # thin lines
        p0 = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        p1 = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        cv2.line(img, p0, p1, tuple(float(x) for x in rng.uniform(0, 255, 3)), int(rng.integers(1, 3)), cv2.LINE_AA)
    img += rng.standard_normal((H, W, 1), dtype=np.float32) * np.float32(5)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _pan(rng: np.random.Generator, T: int) -> np.ndarray:
    """(T, 2) integer (y, x) offsets of a slow camera pan inside the background margin."""
    start = rng.uniform(0, 2 * _PAN_MARGIN, 2)
    vel = rng.uniform(-0.6, 0.6, 2)
    t = np.arange(T, dtype=np.float64)[:, None]
    pos = start[None] + vel[None] * t
    # bounce off the margin's ends (a triangle wave) so the frame stays inside the background
    span = 2 * _PAN_MARGIN
    q = np.mod(pos, 2 * span)
    pos = np.where(q <= span, q, 2 * span - q)
    return np.clip(np.rint(pos), 0, 2 * _PAN_MARGIN).astype(np.int64)


def _colours(rng: np.random.Generator, class_indices: Sequence[int], num_classes: int,
             bg_mean: np.ndarray) -> list[tuple[int, int, int]]:
    """One colour per object, tinted by its class, away from the background's mean colour and
    (where possible) from each other.

    Class i of K has hues around i / K of the colour wheel (+- 0.05); saturation and brightness
    vary freely. Colour is a cue to the class, as it is for many real categories, but the
    backgrounds hold every hue, so the model still has to find the object.
    """
    out: list[np.ndarray] = []
    for ci in class_indices:
        for _try in range(100):
            hue = (ci / num_classes + rng.uniform(-0.05, 0.05)) % 1.0
            rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0))
            c = np.rint(np.array(rgb) * 255)
            if np.linalg.norm(c - bg_mean) >= 80 and all(np.linalg.norm(c - o) >= 40 for o in out):
                break
        out.append(c)
    return [tuple(int(x) for x in c) for c in out]


# ----------------------------------------------------------------------------- motion


def _random_object(rng, T, h, w, classes) -> ObjectPlan:
    cls = int(rng.integers(len(classes)))
    short = min(h, w)
    r0 = rng.uniform(0.10, 0.22) * short
    growth = rng.uniform(-0.5, 0.5)  # log scale change over the whole video
    t = np.arange(T, dtype=np.float64)
    r = r0 * np.exp(growth * (t - T / 2) / T)
    theta = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.1, 0.1) * t
    speed = rng.uniform(0.1, 0.7) * short / T
    acc = rng.normal(0, 0.15, 2) * short / T / T * 4
    mode = _MODES[int(rng.integers(len(_MODES)))]
    if mode == "inside":
        p0 = np.array([rng.uniform(r0, w - r0), rng.uniform(r0, h - r0)])
        a = rng.uniform(0, 2 * np.pi)
        v = speed * np.array([math.cos(a), math.sin(a)])
    else:
        # the centre crosses the border at t_cross, moving in (enter) or out (leave)
        t_cross = rng.uniform(0.2, 0.6) * T if mode == "enter" else rng.uniform(0.4, 0.8) * T
        edge = int(rng.integers(4))
        u = rng.uniform(0.2, 0.8)
        point, inward = [(np.array([u * w, 0.0]), np.array([0.0, 1.0])),
                         (np.array([u * w, float(h)]), np.array([0.0, -1.0])),
                         (np.array([0.0, u * h]), np.array([1.0, 0.0])),
                         (np.array([float(w), u * h]), np.array([-1.0, 0.0]))][edge]
        tangent = np.array([-inward[1], inward[0]])
        spd = max(speed, 1.6 * r0 / max(t_cross, 1.0), 1.6 * r0 / max(T - t_cross, 1.0))
        a = rng.uniform(-0.5, 0.5)
        direction = inward * math.cos(a) + tangent * math.sin(a)
        v = spd * (direction if mode == "enter" else -direction)
        p0 = point - v * t_cross
        acc = acc * 0.3
    pos = p0[None] + v[None] * t[:, None] + 0.5 * acc[None] * (t[:, None] ** 2)
    return ObjectPlan(shape=classes[cls], category_id=cls + 1, colour=(0, 0, 0), depth=0, mode=mode,
                      cx=pos[:, 0], cy=pos[:, 1], r=r, theta=theta)


def _script_occlusion(rng, objs: list[ObjectPlan], T: int, h: int, w: int, classes, occluder_shapes) -> None:
    """Make object 0 a large, slow occluder and object 1 a smaller object that passes behind it."""
    short = min(h, w)
    t = np.arange(T, dtype=np.float64)
    A, B = objs[0], objs[1]
    shape = occluder_shapes[int(rng.integers(len(occluder_shapes)))]
    A.shape, A.category_id, A.mode = shape, list(classes).index(shape) + 1, "occluder"
    rA = rng.uniform(0.2, 0.28) * short
    A.r = rA * np.exp(rng.uniform(-0.1, 0.1) * (t - T / 2) / T)
    A.theta = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.03, 0.03) * t
    margin = rA * 1.1
    p0 = np.array([rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)])
    a = rng.uniform(0, 2 * np.pi)
    v = rng.uniform(0.0, 0.25) * short / T * np.array([math.cos(a), math.sin(a)])
    A.cx, A.cy = p0[0] + v[0] * t, p0[1] + v[1] * t

    inner = rA * _INRADIUS[shape]
    rB = inner * rng.uniform(0.55, 0.8)
    B.mode = "hidden"
    B.r = np.full(T, rB)
    B.theta = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.1, 0.1) * t
    slack = inner - rB
    k = rng.uniform(2.0, 5.0)  # the hidden run aimed at (checked on the masks afterwards)
    speed = 2 * slack / k
    tm = rng.uniform(0.3, 0.7) * T
    b = rng.uniform(0, 2 * np.pi)
    d = np.array([math.cos(b), math.sin(b)])
    B.cx = A.cx + (t - tm) * speed * d[0]
    B.cy = A.cy + (t - tm) * speed * d[1]


def _hidden_run(areas: np.ndarray) -> tuple[int, int] | None:
    """The first run of 2-5 frames with zero visible area that has visible frames right before and
    after it, as [t0, t1); None when there is none."""
    T = len(areas)
    t = 0
    while t < T:
        if areas[t] == 0:
            t1 = t
            while t1 < T and areas[t1] == 0:
                t1 += 1
            if t > 0 and t1 < T and 2 <= t1 - t <= 5:
                return t, t1
            t = t1
        else:
            t += 1
    return None


# ----------------------------------------------------------------------------- files


def _check_args(videos, seed, frames, size, classes, objects, occlusion_prob, fps):
    if not isinstance(videos, int) or videos < 1:
        raise InputError(f"videos must be a positive integer, got {videos!r}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    if not isinstance(frames, int) or frames < 1:
        raise InputError(f"frames must be a positive integer, got {frames!r}.")
    try:
        h, w = (int(x) for x in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (height, width), got {size!r}.") from None
    if h < 32 or w < 32:
        raise InputError(f"size must be at least 32x32, got {h}x{w} (h x w).")
    classes = tuple(classes)
    unknown = [c for c in classes if c not in SHAPES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise InputError(f"classes must be distinct names out of {', '.join(SHAPES)}; got {list(classes)}.")
    lo, hi = objects
    if not (1 <= lo <= hi):
        raise InputError(f"objects must be (min, max) with 1 <= min <= max, got {objects!r}.")
    if not 0.0 <= occlusion_prob <= 1.0:
        raise InputError(f"occlusion_prob must be within [0, 1], got {occlusion_prob!r}.")
    if not isinstance(fps, int) or fps < 1:
        raise InputError(f"fps must be a positive integer, got {fps!r}.")
    return (h, w), classes


def _write_jpegs(out: Path, file_names: list[str], frames: np.ndarray) -> None:
    folder = (out / file_names[0]).parent
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in zip(file_names, frames):
            # Encoded in memory, written by Python: a full disk is an OSError that names its cause.
            done, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
            if not done:
                raise OutputError(f"cannot encode {out / name} as JPEG.")
            write_bytes(out / name, jpeg.tobytes())
    except OSError as e:
        raise output_error(e, folder) from None


def _write_json_atomic(path: Path, doc) -> None:
    try:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
    except OSError as e:
        raise output_error(e, path) from None
