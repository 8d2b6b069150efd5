"""Network speed: our VidEoMT against transformers' VideomtForUniversalSegmentation (DINOv2) or
EomtDinov3ForUniversalSegmentation (DINOv3, ``--family dinov3``).

Both networks get identical weights (mapped with the checkpoint key table) and the identical
input clip, and run in the same process, alternating call by call so that load from other
processes hits both alike. Reported: median seconds per frame of each, the ratio ours/theirs,
and a reduced-precision path (bf16 on CPU; fp16 and bf16 on CUDA) with its time per frame and
its error against our fp32 output.

    python benchmarks/model_speed.py                      # ViT-S, 640x640, 4 frames, CPU fp32 + bf16
    python benchmarks/model_speed.py --device cuda --repeats 20
    python benchmarks/model_speed.py --profile            # top operators of each network
    python benchmarks/model_speed.py --family dinov3      # DINOv3: C=256, 24 blocks, Q=200, one 640x640 frame

DINOv3: transformers has no DINOv3 VidEoMT, so the reference is its EoMT on DINOv3 with the same
weights and ``attn_mask_probs`` zeroed (``verify.build_eomt_dinov3``), which on one frame computes
exactly VidEoMT's first frame: the same blocks, RoPE, heads. Only ``--frames 1`` is comparable (the
reference has no propagation), so it is the one allowed. The default is a ViT-L-shaped network
(24 blocks, 4 query blocks, 200 queries) narrowed to C=256 (``--hidden``) so a frame runs in
seconds on a CPU; ``--hidden 1024`` is the released ViT-L.

Weights are random (seeded); speed does not depend on them, the reduced-precision errors do a
little (trained DINOv2 weights have larger outlier activations than random ones).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from videomt_cli.modeling import config  # noqa: E402
from videomt_cli.modeling.model import VideoMT  # noqa: E402
from videomt_cli.verify import build_eomt_dinov3, build_reference  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="dinov2", choices=["dinov2", "dinov3"],
                        help="dinov2: ours vs VideomtForUniversalSegmentation; dinov3: ours vs EomtDinov3 on one frame")
    parser.add_argument("--preset", default=None,
                        help="model preset (small, base, large, tiny; dinov3: large-dinov3, tiny-dinov3); "
                             "default small / large-dinov3")
    parser.add_argument("--hidden", type=int, default=None,
                        help="override the preset's width C (heads = C / 64); default: dinov3 256, dinov2 the preset's")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (one call); default 4, dinov3 1")
    parser.add_argument("--size", type=int, default=640, help="square input size; the model's image_size too")
    parser.add_argument("--batch", type=int, default=1, help="videos per call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per network and precision")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-reduced", action="store_true", help="skip the bf16/fp16 part")
    parser.add_argument("--profile", action="store_true", help="print each network's top operators (fp32)")
    parser.add_argument("--keep-heap", action="store_true",
                        help="glibc: serve big tensors from the heap instead of fresh mmaps (no page faults "
                             "per call); applies to both networks alike")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- helpers


def keep_heap() -> bool:
    """The same allocator tuning the CLI applies at start-up (videomt_cli.modeling.device.keep_heap)."""
    from videomt_cli.modeling.device import keep_heap as tune

    return tune()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def logits(model, clip: torch.Tensor, ours: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(class, mask) logits as (B, T, ...) from either network."""
    if ours:
        out, _ = model(clip)
        return out.class_logits, out.mask_logits
    if model.config.model_type == "eomt_dinov3":  # an image model: the clip's only frame
        out = model(pixel_values=clip[:, 0])
        return out.class_queries_logits[:, None], out.masks_queries_logits[:, None]
    out = model(pixel_values_videos=clip)
    batch = clip.shape[0]
    fix = lambda x: x.unflatten(0, (-1, batch)).transpose(0, 1)  # frame-major -> batch-major
    return fix(out.class_queries_logits), fix(out.masks_queries_logits)


def time_alternating(runs: dict[str, callable], warmup: int, repeats: int,
                     device: torch.device) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Call every run once per round, the order reversed every other round.

    Returns (wall seconds per call, process CPU seconds per call). On shared, busy cores the CPU
    time is the steadier measure with ``--threads 1`` (no worker threads spinning at barriers).
    """
    names = list(runs)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[name]()
            synchronize(device)
            if round_ >= warmup:
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def error_row(fp32: tuple[torch.Tensor, torch.Tensor], low: tuple[torch.Tensor, torch.Tensor]) -> str:
    cls32, mask32 = (x.float() for x in fp32)
    cls, mask = (x.float() for x in low)
    cls_err = (cls - cls32).abs().max().item()
    mask_err = (mask - mask32).abs().max().item()
    sign = ((mask > 0) == (mask32 > 0)).float().mean().item()
    return (f"class max|diff| {cls_err:.3g} (of max {cls32.abs().max().item():.3g}), "
            f"mask max|diff| {mask_err:.3g} (of max {mask32.abs().max().item():.3g}), "
            f"mask sign agreement {100 * sign:.3f}%")


def per_frame(seconds: list[float], frames: int) -> float:
    return statistics.median(seconds) / frames


def profile(name: str, fn: callable) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        fn()
    print(f"\n--- {name}: top operators (self time) ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_heap and not keep_heap():
        print("--keep-heap: mallopt is not available (not glibc?); running with the default allocator.")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here; run with --device cpu.", file=sys.stderr)
        return 2

    dinov3 = args.family == "dinov3"
    args.preset = args.preset or ("large-dinov3" if dinov3 else "small")
    args.frames = args.frames or (1 if dinov3 else 4)
    if dinov3 and args.frames != 1:
        print("--family dinov3 compares one frame (the reference, EoMT-DINOv3, has no propagation): "
              "use --frames 1.", file=sys.stderr)
        return 2
    overrides = dict(image_size=args.size, use_mask_token=not dinov3)
    hidden = args.hidden or (256 if dinov3 else None)
    if hidden:
        overrides |= dict(hidden_size=hidden, num_heads=max(hidden // 64, 1))
    cfg = config.preset(args.preset, **overrides)
    if cfg.family != args.family:
        print(f"--preset {args.preset} is a {cfg.family} model, not {args.family}.", file=sys.stderr)
        return 2
    build = build_eomt_dinov3 if dinov3 else build_reference
    torch.manual_seed(0)
    ours = VideoMT(cfg).eval()
    with torch.no_grad():  # move norms, LayerScales and tokens off their init values
        for p in ours.parameters():
            p.add_(0.02 * torch.randn_like(p))
    theirs = build(ours)
    ours.to(device)
    theirs.to(device)
    clip = torch.randn(args.batch, args.frames, 3, args.size, args.size,
                       generator=torch.Generator().manual_seed(0)).to(device)
    n_frames = args.batch * args.frames

    print(f"VidEoMT {args.preset} ({cfg.family}; reference {type(theirs).__name__}): C={cfg.hidden_size}, "
          f"heads={cfg.num_heads}, L={cfg.num_layers}, k={cfg.num_query_blocks}, "
          f"Q={cfg.num_queries}; input {args.batch}x{args.frames}x3x{args.size}x{args.size}; "
          f"device {device}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"reference attention: {theirs.config._attn_implementation}"
          + ("; glibc heap kept (--keep-heap)" if args.keep_heap else ""))

    with torch.inference_mode():
        ref32 = logits(ours, clip, True)
        check = logits(theirs, clip, False)
        print(f"fp32 parity ours vs transformers: {error_row(ref32, check)}")

        wall, cpu = time_alternating({"ours": lambda: logits(ours, clip, True),
                                      "transformers": lambda: logits(theirs, clip, False)},
                                     args.warmup, args.repeats, device)
        for name in ("ours", "transformers"):
            runs = ", ".join(f"{t:.2f}" for t in wall[name])
            print(f"fp32  {name:<12} {per_frame(wall[name], n_frames) * 1e3:8.1f} ms/frame wall, "
                  f"{per_frame(cpu[name], n_frames) * 1e3:8.1f} ms/frame CPU  (wall per call: {runs} s)")
        ratio = per_frame(wall["ours"], n_frames) / per_frame(wall["transformers"], n_frames)
        cpu_ratio = per_frame(cpu["ours"], n_frames) / per_frame(cpu["transformers"], n_frames)
        best = min(wall["ours"]) / min(wall["transformers"])  # the fastest call of each: least preempted
        print(f"fp32  ratio ours/transformers = {ratio:.3f} wall, {cpu_ratio:.3f} CPU, {best:.3f} fastest calls"
              + ("" if ratio <= 1.0 else "  (ours slower!)"))

        if args.profile:
            profile("ours", lambda: logits(ours, clip, True))
            profile("transformers", lambda: logits(theirs, clip, False))

        if not args.no_reduced:
            reduced(args, cfg, ours, build, clip, ref32, n_frames, device)
    return 0


def reduced(args, cfg, ours, build, clip, ref32, n_frames, device) -> None:
    """bf16 (CPU) or fp16 + bf16 (CUDA): weights cast, and autocast, for ours; cast for the reference."""
    dtypes = [torch.bfloat16] if device.type == "cpu" else [torch.float16, torch.bfloat16]
    for dtype in dtypes:
        label = {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
        ours_low = VideoMT(cfg).eval()
        ours_low.load_state_dict(ours.state_dict())
        ours_low.to(device=device, dtype=dtype)
        theirs_low = build(ours).to(device=device, dtype=dtype)
        clip_low = clip.to(dtype)
        autocast = lambda: torch.autocast(device.type, dtype=dtype)

        def ours_autocast():
            with autocast():
                return logits(ours, clip, True)

        runs = {
            f"ours {label} weights": lambda m=ours_low: logits(m, clip_low, True),
            f"transformers {label} weights": lambda m=theirs_low: logits(m, clip_low, False),
            f"ours {label} autocast": ours_autocast,
        }
        outputs = {name: fn() for name, fn in runs.items()}
        wall, cpu = time_alternating(runs, args.warmup, args.repeats, device)
        for name in runs:
            print(f"{name:<28} {per_frame(wall[name], n_frames) * 1e3:8.1f} ms/frame wall, "
                  f"{per_frame(cpu[name], n_frames) * 1e3:8.1f} CPU; vs ours fp32: {error_row(ref32, outputs[name])}")
        ours_name, ref_name = f"ours {label} weights", f"transformers {label} weights"
        ratio = per_frame(wall[ours_name], n_frames) / per_frame(wall[ref_name], n_frames)
        cpu_ratio = per_frame(cpu[ours_name], n_frames) / per_frame(cpu[ref_name], n_frames)
        print(f"{label}  ratio ours/transformers (weights cast) = {ratio:.3f} wall, {cpu_ratio:.3f} CPU")
        del ours_low, theirs_low


if __name__ == "__main__":
    raise SystemExit(main())
