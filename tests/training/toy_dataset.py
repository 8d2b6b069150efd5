"""A tiny YouTube-VIS training set and a fast TrainConfig, shared by the training tests
(``from toy_dataset import ...``: pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from videomt_cli.training.loop import TrainConfig

SIZE = 64  # frames are SIZE x SIZE
FRAMES = 4


def rle(mask: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


def box(y0, x0, h, w, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    m = np.zeros(size, bool)
    m[y0:y0 + h, x0:x0 + w] = True
    return m


def make_dataset(root: Path, frames: int = FRAMES) -> Path:
    """Two videos of moving coloured boxes on a grey ground, as YouTube-VIS: one JPEG-free PNG folder
    per video, category ids 3 and 7 (not contiguous), compressed RLE, polygons and a track that
    only appears in frame 2."""
    rng = np.random.default_rng(0)
    videos, annotations = [], []
    colours = {3: (220, 40, 40), 7: (40, 60, 230)}
    layouts = {
        1: [(3, lambda t: box(8, 4 + 6 * t, 20, 16), "rle", 0), (7, lambda t: box(36, 30, 16, 22), "poly", 2)],
        2: [(7, lambda t: box(10 + 5 * t, 20, 24, 24), "rle", 0)],
    }
    for vid, objects in layouts.items():
        names = []
        (root / f"v{vid}").mkdir(parents=True)
        images = [np.full((SIZE, SIZE, 3), 128, np.uint8) + rng.integers(0, 8, (SIZE, SIZE, 3), dtype=np.uint8)
                  for _ in range(frames)]
        for n, (cid, shape, kind, first) in enumerate(objects):
            segs = []
            for t in range(frames):
                if t < first:
                    segs.append(None)
                    continue
                m = shape(t)
                images[t][m] = colours[cid]
                if kind == "rle":
                    segs.append(rle(m))
                else:
                    ys, xs = np.nonzero(m)
                    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                    polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
                    segs.append([[float(v) for v in polygon]])
            annotations.append({"id": len(annotations) + 1, "video_id": vid, "category_id": cid,
                                "segmentations": segs, "iscrowd": 0})
        for t, im in enumerate(images):
            name = f"v{vid}/{t:05d}.png"
            Image.fromarray(im).save(root / name)
            names.append(name)
        videos.append({"id": vid, "file_names": names, "height": SIZE, "width": SIZE, "length": frames})
    data = {"videos": videos, "annotations": annotations,
            "categories": [{"id": 7, "name": "boat"}, {"id": 3, "name": "apple"}]}
    path = root / "train.json"
    path.write_text(json.dumps(data))
    return path


def tiny_train_config(data: Path, out: Path, **changes) -> TrainConfig:
    options = dict(data=str(data), output=str(out), init="tiny", steps=6, batch_size=2, lr=1e-3, llrd=1.0,
                   warmup_steps=(0, 0), clip_frames=3, crop_size=(64, 64), short_side=(56, 72),
                   max_long_side=96, num_points=256, save_every=0, seed=0, device="cpu", grad_clip=1.0)
    options.update(changes)
    return TrainConfig(**options)
