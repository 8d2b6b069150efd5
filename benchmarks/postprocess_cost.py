"""Cost per frame of the streaming instance accumulator at 720p, Q = 200, against the naive
full upsampling of every query (DESIGN 3 and 8).

Two synthetic cases of mask logits (112 x 200 at stride 4 of the 448 x 800 network input):

- trained-like: most queries empty in most frames (10 of 200 queries hold an object, sizes
  from a few percent to a third of the frame), the rest strongly negative;
- all non-empty: every query has positive logits in every frame (an untrained model).

For each: milliseconds per frame of ``InstanceAccumulator.add`` (skip the queries without a positive
low-resolution logit, the full official chain for the others, RLE encode, spill to disk), of its
upsampling part alone, and of the naive chain (``masks_to_frame`` on all 200 queries,
thresholded), and the ratio naive / ours. Run:

    python benchmarks/postprocess_cost.py [--frames 16] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from videomt_cli.inference.postprocess import make_accumulator
from videomt_cli.inference.preprocess import compute_geometry, masks_to_frame
from videomt_cli.records import Category


def trained_like(T: int, Q: int, h: int, w: int, objects: int, gen: torch.Generator) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    out = torch.full((T, Q, h, w), -8.0) + torch.randn(T, Q, h, w, generator=gen)
    for q in range(objects):
        u = torch.rand(5, generator=gen)
        for t in range(T):  # objects drift a little from frame to frame
            cy, cx = (u[0] * h + t * u[2]), (u[1] * w + t * u[3])
            r = 2 + u[4] * h / 6
            blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            out[t, q] = -6 + 12 * blob + 0.5 * torch.randn(h, w, generator=gen)
    return out


def all_nonempty(T: int, Q: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    smooth = torch.randn(T * Q, 1, h // 8, w // 8, generator=gen)
    return (torch.nn.functional.interpolate(smooth, size=(h, w), mode="bilinear") * 3).view(T, Q, h, w)


def timed(fn, repeat: int, sync) -> float:
    fn()  # warm-up (probes, caches)
    sync()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8, help="frames per chunk (default 8)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    T, Q, K = args.frames, 200, 40
    g = compute_geometry(720, 1280, 448)
    h, w = g.mask_size
    cats = [Category(id=i + 1, name=str(i)) for i in range(K)]
    gen = torch.Generator().manual_seed(0)
    cls = torch.randn(T, Q, K + 1, generator=gen).to(dev)
    print(f"device {dev}, torch threads {torch.get_num_threads()}, chunk {T} frames, frame 1280x720, "
          f"network input {g.padded[1]}x{g.padded[0]}, mask logits {w}x{h}, Q={Q}")
    print(f"{'case':<14}{'non-empty/frame':>16}{'ours ms/frame':>15}{'  of it upsample':>17}"
          f"{'naive ms/frame':>16}{'ratio':>8}{'disk KB/frame':>15}")
    for name, logits in [
        ("trained-like", trained_like(T, Q, h, w, 10, gen)),
        ("all non-empty", all_nonempty(T, Q, h, w, gen)),
    ]:
        logits = logits.to(dev)
        nonempty = float((logits > 0).flatten(2).any(-1).float().sum(1).mean())

        acc = make_accumulator("instance", cats, g)
        frame0 = [0]

        def ours():
            idx = list(range(frame0[0], frame0[0] + T))
            frame0[0] += T
            acc.add(0, idx, cls, logits)

        t_ours = timed(ours, args.repeat, sync) / T
        disk = acc.store.nbytes / max(1, frame0[0]) / 1024

        def upsample_only():  # what add() upsamples: the non-empty (frame, query) pairs, thresholded
            t, q = (logits.amax(dim=(-2, -1)) > 0).nonzero(as_tuple=True)
            for i in range(0, len(t), 16):
                (masks_to_frame(logits[t[i:i + 16], q[i:i + 16]], g) > 0).any()

        t_up = timed(upsample_only, args.repeat, sync) / T

        def naive():
            for t in range(T):
                (masks_to_frame(logits[t], g) > 0).any()

        t_naive = timed(naive, max(1, args.repeat - 1), sync) / T
        print(f"{name:<14}{nonempty:>16.1f}{t_ours * 1e3:>15.1f}{t_up * 1e3:>17.1f}"
              f"{t_naive * 1e3:>16.1f}{t_naive / t_ours:>8.1f}{disk:>15.1f}")
        acc.close()


if __name__ == "__main__":
    main()
