"""What polygons lose: IoU of the CVAT XML's polygons against the masks they were made from.

Every mask of a result (each track on each processed frame where it has pixels) goes through the
CVAT writer (``sinks.cvat.CvatSink``: the object's track holds its largest part, the other parts
are one-frame tracks of its group); the XML is parsed back, the polygons of each object's group on
each frame are rasterised by pycocotools (``io.polygons.polygons_rle``, the rasteriser COCO and
CVAT consumers use) and compared with the mask. Per source it prints: masks, parts per mask
(mean / max), vertices per mask, the share of masks with holes, mean and worst IoU, the worst IoU
against the mask with its holes filled (what outer outlines can carry: 1.0 means the only loss is
holes), the same for ``--tolerance`` simplified polygons, for comparison the IoU of OpenCV's
plain contour through the border pixels' centres (what a naive conversion gives), the time of
``mask_polygons`` per mask (RLE decode included; the first 20 tracks) and the XML's size.

Sources:

- ``example``: the bundled model on ``examples/example.mp4`` (synthetic shapes: compact masks);
- each ``--video PATH``: the bundled model on that video (e.g. a real clip; the model was trained
  on synthetic shapes, so its masks there are whatever it makes of real pixels);
- ``random``: a seeded random ViT-S network (as ``benchmarks/pipeline_speed.py`` makes it) on the
  example video: noise-like masks with many parts and holes, the worst case.

    python benchmarks/polygon_fidelity.py
    python benchmarks/polygon_fidelity.py --video bikes.mp4 --video carphone.mp4 --frames 40
    python benchmarks/polygon_fidelity.py --no-random --tolerance 0.5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as coco_mask

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout

from videomt_cli.io import masks as mask_ops  # noqa: E402
from videomt_cli.io.polygons import mask_polygons, polygons_rle  # noqa: E402
from videomt_cli.records import VideoResult  # noqa: E402
from videomt_cli.sinks.cvat import CvatSink  # noqa: E402


def filled(m: np.ndarray) -> np.ndarray:
    cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(m.shape, np.uint8)
    cv2.drawContours(out, cs, -1, 1, -1)
    return out.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def xml_polygons(path: Path) -> dict[tuple[int, int], list[np.ndarray]]:
    """{(object track id, frame): [(K, 2) polygons]} of the visible shapes: a track with a group
    belongs to the object whose id is the group (sinks/cvat.py), else to itself."""
    out: dict[tuple[int, int], list[np.ndarray]] = {}
    for tr in ET.parse(path).getroot().findall("track"):
        owner = int(tr.get("group_id", 0)) or int(tr.get("id"))
        for s in tr:
            if s.get("outside") == "1":
                continue
            pts = np.array([[float(v) for v in p.split(",")] for p in s.get("points").split(";")])
            out.setdefault((owner, int(s.get("frame"))), []).append(pts)
    return out


def measure(result: VideoResult, tolerance: float, work: Path) -> dict:
    h, w = result.video.height, result.video.width
    exact, simple = work / "exact.xml", work / "simple.xml"
    with CvatSink(exact, overwrite=True) as sink:
        sink.add(result)
    with CvatSink(simple, overwrite=True, tolerance=tolerance) as sink:
        sink.add(result)
    got, got_simple = xml_polygons(exact), xml_polygons(simple)
    rows = []
    for seg in result.segments:
        for t in result.processed:
            rle = result.mask(seg, t)
            if rle is None or mask_ops.is_empty(rle):
                continue
            m = mask_ops.dense(rle).astype(bool)
            polys = got.get((seg.track_id, t), [])
            r = coco_mask.decode(polygons_rle(polys, h, w)).astype(bool)
            rs = coco_mask.decode(polygons_rle(got_simple.get((seg.track_id, t), []), h, w)).astype(bool)
            cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            naive = [c[:, 0, :].astype(float) for c in cs if len(c) >= 3]
            rn = coco_mask.decode(polygons_rle(naive, h, w)).astype(bool)
            f = filled(m)
            rows.append((len(polys), sum(len(p) for p in polys), bool((f & ~m).any()), iou(r, m), iou(r, f),
                         iou(rs, m), sum(len(p) for p in got_simple.get((seg.track_id, t), [])), iou(rn, m)))
    if not rows:
        return {"masks": 0}
    a = np.array(rows, dtype=np.float64)
    t0 = time.perf_counter()
    for seg in result.segments[:20]:
        for t in result.processed:
            rle = result.mask(seg, t)
            if rle is not None:
                mask_polygons(mask_ops.dense(rle))
    conv = time.perf_counter() - t0
    n_conv = sum(1 for seg in result.segments[:20] for t in result.processed if result.mask(seg, t) is not None)
    return {"masks": len(rows), "size": f"{w}x{h}", "parts": a[:, 0].mean(), "parts_max": int(a[:, 0].max()),
            "verts": a[:, 1].mean(), "holes": a[:, 2].mean(), "iou": a[:, 3].mean(), "iou_min": a[:, 3].min(),
            "filled_min": a[:, 4].min(), "tol_iou": a[:, 5].mean(), "tol_min": a[:, 5].min(),
            "tol_verts": a[:, 6].mean(),
            "naive": a[:, 7].mean(), "naive_min": a[:, 7].min(), "ms_mask": 1000 * conv / max(n_conv, 1),
            "kb": exact.stat().st_size / 1024}


def random_predictor(min_size: int, work: Path):
    import torch

    from videomt_cli import Predictor
    from videomt_cli.modeling import checkpoint, config
    from videomt_cli.modeling.model import VideoMT

    torch.manual_seed(0)
    model = VideoMT(config.preset("small", use_mask_token=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = checkpoint.save_hf(model, work / "random-vit-s")
    return Predictor.from_model(str(folder), device="cpu", min_size=min_size, chunk_size=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", action="append", default=[], help="another video for the bundled model")
    parser.add_argument("--frames", type=int, default=60, help="frames per video (from the start)")
    parser.add_argument("--random-frames", type=int, default=4, help="frames for the random ViT-S")
    parser.add_argument("--random-min-size", type=int, default=224, help="short side for the random ViT-S")
    parser.add_argument("--tolerance", type=float, default=1.0, help="Douglas-Peucker pixels for the simplified column")
    parser.add_argument("--no-random", action="store_true")
    args = parser.parse_args()

    from videomt_cli import Predictor

    sources = [("example (bundled model)", str(ROOT / "examples" / "example.mp4"), None)]
    sources += [(f"{Path(v).name} (bundled model)", v, None) for v in args.video]
    if not args.no_random:
        sources.append(("example (random ViT-S)", str(ROOT / "examples" / "example.mp4"), "random"))
    bundled = Predictor.from_model(None, device="cpu")
    header = ("source", "size", "masks", "parts/mask", "verts/mask", "holes", "IoU mean", "IoU worst",
              "worst vs filled", f"tol {args.tolerance:g}: verts", "IoU mean", "IoU worst", "centre contour IoU",
              "ms/mask", "XML KB")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, video, kind in sources:
            if kind == "random":
                predictor, frames = random_predictor(args.random_min_size, work), args.random_frames
            else:
                predictor, frames = bundled, args.frames
            with predictor.run(video, end=frames) as result:
                m = measure(result, args.tolerance, work)
            if not m["masks"]:
                print(f"| {label} | no masks |")
                continue
            print(f"| {label} | {m['size']} | {m['masks']} | {m['parts']:.2f} ({m['parts_max']}) | {m['verts']:.0f} | "
                  f"{100 * m['holes']:.0f}% | {m['iou']:.4f} | {m['iou_min']:.4f} | {m['filled_min']:.4f} | "
                  f"{m['tol_verts']:.0f} | {m['tol_iou']:.4f} | {m['tol_min']:.4f} | "
                  f"{m['naive']:.3f} (worst {m['naive_min']:.3f}) | {m['ms_mask']:.2f} | {m['kb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
