"""Training speed: steps per second of the full recipe (forward with auxiliary predictions, video
matching, point-sampled losses, backward, clipping, AdamW with layer-wise lr decay).

    python benchmarks/train_speed.py                            # tiny, CPU, 2 clips x 3 frames, 128x128
    python benchmarks/train_speed.py --points 2048 --threads 1
    python benchmarks/train_speed.py --preset small --size 640 --frames 5 --batch 8 --device cuda

The batch is synthetic and in memory (random pixels, 3 moving boxes per clip as tracks, one of them
appearing mid-clip), so the numbers are the model + loss + optimiser cost without data loading. Each
step is split into forward, loss (matching + point sampling) and backward + optimiser; medians over
the timed steps. The reference, timed in the same loop (interleaved, so machine load hits both
alike), is an inference forward of the same batch (``model(frames)`` under ``no_grad``): the ratio
"step / inference" is what to compare across machines.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from videomt_cli.modeling.config import preset  # noqa: E402
from videomt_cli.training.losses import ClipTarget, LossConfig, VideoSetCriterion  # noqa: E402
from videomt_cli.modeling.model import VideoMT  # noqa: E402
from videomt_cli.training.loop import aux_blocks_for, forward_train  # noqa: E402
from videomt_cli.training.optim import optimizer_step, param_groups, warmup_poly_schedule  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--frames", type=int, default=3, help="frames per clip")
    p.add_argument("--size", type=int, default=128, help="square crop size (multiple of 32)")
    p.add_argument("--batch", type=int, default=2, help="clips per step")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--points", type=int, default=12544, help="points per mask (official 12544)")
    p.add_argument("--aux", default="official", choices=["official", "all", "none"])
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p.parse_args(argv)


def synthetic_batch(B: int, T: int, size: int, classes: int, gen: torch.Generator):
    frames = torch.randn(B, T, 3, size, size, generator=gen)
    targets = []
    for _ in range(B):
        masks = torch.zeros(3, T, size, size, dtype=torch.bool)
        for n in range(3):
            y, x = (int(v) for v in torch.randint(0, size // 2, (2,), generator=gen))
            for t in range(T):
                if n == 2 and t < T // 2:
                    continue  # a track that appears mid-clip
                masks[n, t, y + t: y + t + size // 4, x: x + size // 3] = True
        targets.append(ClipTarget(torch.randint(0, classes, (3,), generator=gen), masks))
    return frames, targets


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = VideoMT(preset(args.preset, num_classes=args.classes)).to(device).train()
    optimizer = torch.optim.AdamW(param_groups(model, 1e-4, 0.6, 0.05))
    scheduler = warmup_poly_schedule(optimizer, (0, 0), 10_000, 0.9)
    criterion = VideoSetCriterion(args.classes, LossConfig(num_points=args.points))
    aux = aux_blocks_for(model.config.num_query_blocks, args.aux)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    gen = torch.Generator().manual_seed(0)
    frames, targets = synthetic_batch(args.batch, args.frames, args.size, args.classes, gen)
    frames, targets = frames.to(device), [t.to(device) for t in targets]

    timings = {"forward": [], "loss": [], "backward+step": [], "step": [], "inference": []}
    for i in range(args.warmup + args.steps):
        sync(device)
        r0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            model(frames)
        model.train()
        sync(device)
        if i >= args.warmup:
            timings["inference"].append(time.perf_counter() - r0)
        t0 = time.perf_counter()
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            out = forward_train(model, frames, aux)
        sync(device)
        t1 = time.perf_counter()
        losses = criterion(out.final, targets, out.aux)
        sync(device)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        optimizer_step(losses.total, list(model.parameters()), optimizer, scheduler, scaler, 0.01)
        sync(device)
        t3 = time.perf_counter()
        if i >= args.warmup:
            for name, value in (("forward", t1 - t0), ("loss", t2 - t1), ("backward+step", t3 - t2), ("step", t3 - t0)):
                timings[name].append(value)

    med = {k: statistics.median(v) for k, v in timings.items()}
    cfg = model.config
    print(f"preset {args.preset} (C={cfg.hidden_size}, L={cfg.num_layers}, k={cfg.num_query_blocks}, "
          f"Q={cfg.num_queries}), {args.batch} clips x {args.frames} frames at {args.size}x{args.size}, "
          f"{args.points} points/mask, aux {args.aux} ({len(aux)} layers), {args.device} {args.precision}, "
          f"threads {torch.get_num_threads()}")
    for name in ("forward", "loss", "backward+step"):
        print(f"  {name:14s} {med[name] * 1000:8.1f} ms")
    print(f"  {'step':14s} {med['step'] * 1000:8.1f} ms  ->  {1 / med['step']:.2f} steps/s, "
          f"{args.batch * args.frames / med['step']:.1f} frames/s  (loss {float(losses.total.detach()):.3f})")
    print(f"  {'inference':14s} {med['inference'] * 1000:8.1f} ms  (reference: no_grad forward of the same batch)")
    print(f"  ratio step / inference: {med['step'] / med['inference']:.2f}x")


if __name__ == "__main__":
    main()
