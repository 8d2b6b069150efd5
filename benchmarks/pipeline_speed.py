"""End-to-end speed: `Predictor.run` + the YouTube-VIS JSON against transformers' VidEoMT pipeline.

A 1280x720 H.264 clip (moving squares on a gradient, ``tests/media.py``) goes through

- **ours**: ``Predictor.run`` (decode in a read-ahead thread, shortest-edge resize to
  ``--min-size`` (448: 448x800 network input), chunks of 8 frames with the query state carried,
  streaming instance post-processing with RLE and spill file) and the YouTube-VIS results JSON
  written with ``sinks.open_sink``; with ``--dtype fp32`` and, as a third line, ``bf16``;
- **transformers**: the same PyAV decode (``io.read.read_frames``, no read-ahead thread), every frame
  resized to the processor's stored 640x640 (stretched, as ``VideomtVideoProcessor`` does;
  bilinear with antialias, rounded to uint8 values), rescaled and ImageNet-normalised,
  ``VideomtForUniversalSegmentation`` (loaded with ``from_pretrained`` from the folder
  ``checkpoint.save_hf`` wrote, the weights ours loads) on the whole clip in one call, then
  ``VideomtVideoProcessor.post_process_instance_segmentation`` with ``target_sizes`` the 720p
  frame size. (The processor's own preprocessing needs torchvision, which does not import
  beside this torch, hence the hand-built equivalent.) The post-processing is called one frame
  at a time: its result is per frame anyway, and on the whole clip its first step alone holds
  T x 200 x 720 x 1280 float32 (737 MB a frame). Its output stays in memory as tensors: no RLE,
  no file.

Both run in one process with the same torch thread count, alternating (the order reversed every
round) so that load from other processes hits both alike; the speedup (transformers / ours) is
printed per round with its median. Two weight sets:

- **(a) random**: the seeded random network. Every one of the 200 queries has a non-empty,
  noise-like mask in every frame: the worst case for our post-processing (DESIGN 3).
- **(b) trained-like sparsity**: the same network with its mask head adjusted so that exactly
  ``--active`` (10) of the 200 queries (a fixed, seeded choice) have positive mask logits, as
  trained models leave most queries empty. Two steps: (1) in the weights, channel 0 of the pixel
  features becomes the constant 1 (the last Upscale LayerNorm2d: weight 0, bias 1; saved with
  the weights both pipelines load), so channel 0 of a query's mask embedding is an additive
  offset on all of that query's mask logits; (2) a forward hook on the last mask-head Linear
  (ours ``mask_head[-1]``, transformers ``mask_head.fc3``; both run once per frame on the final
  query tokens) shifts that channel by -1000 for the other 190 queries (this network's random mask
  logits have a standard deviation of ~10 and reach ~35, so their masks are empty in every
  frame). The 10 kept queries keep
  their noise-like random masks (not compact objects: each still needs the full-frame resize
  chain, so this is still pessimistic for ours). The script prints the measured number of
  non-empty queries per frame for both pipelines. Network cost is unchanged (one add of a
  (Q, C) tensor per call). A weights-only version (fitting row 0 of that Linear by least
  squares so the offset depends on the query token) was tried and rejected: a random network's
  query tokens change too much from frame to frame (13 to 115 non-empty queries per frame).

Where our time goes is measured by wrapping the library's functions with timers (monkeypatching
in this script only; exclusive times, nested calls subtracted): probe, decode and the
shortest-edge resize (both in the read-ahead thread, overlapping the rest), waiting for decoded
frames, preprocess (normalise, pad), network, and inside the post-processing: class-logit mean,
upsampling (the full chain of the non-empty queries), RLE encode, spill write; then the top-k
read-back and the JSON write.

    python benchmarks/pipeline_speed.py                       # 8 frames, ViT-S, 2 cases x (ours fp32, transformers, ours bf16)
    python benchmarks/pipeline_speed.py --frames 16 --repeats 5
    python benchmarks/pipeline_speed.py --frames 2 --repeats 1 --threads 1 --cases sparse   # a quick check

Caveat on fairness: the two pipelines do not feed the network the same number of tokens (ours
448x800 = 1400 patches as the official evaluation, transformers 640x640 = 1600), and the
transformers pipeline writes no file and encodes no RLE. Both are what each pipeline does.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import tempfile
import threading
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout
sys.path.insert(0, str(ROOT / "tests"))  # media.make_video

from videomt_cli import sinks  # noqa: E402
from videomt_cli.inference import predictor as predictor_module  # noqa: E402
from videomt_cli.inference import preprocess  # noqa: E402
from videomt_cli.inference.postprocess import common, instance  # noqa: E402
from videomt_cli.inference.postprocess.store import SpillStore  # noqa: E402
from videomt_cli.inference.predictor import Predictor  # noqa: E402
from videomt_cli.io import masks as mask_ops  # noqa: E402
from videomt_cli.io import probe as probe_module  # noqa: E402
from videomt_cli.io import read as read_module  # noqa: E402
from videomt_cli.io.read import read_frames  # noqa: E402
from videomt_cli.modeling import checkpoint, config  # noqa: E402
from videomt_cli.modeling.model import VideoMT  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="frames of the timed clip")
    parser.add_argument("--size", default="1280x720", help="clip size WIDTHxHEIGHT")
    parser.add_argument("--preset", default="small", help="model preset (small = ViT-S)")
    parser.add_argument("--min-size", type=int, default=448, help="our short side (the official 448)")
    parser.add_argument("--chunk-size", type=int, default=8, help="our frames per network call")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per case")
    parser.add_argument("--warmup-frames", type=int, default=2, help="frames of the untimed warm-up clip (0: none)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: all cores)")
    parser.add_argument("--cases", default="random,sparse", help="comma-separated: random (a), sparse (b)")
    parser.add_argument("--active", type=int, default=10, help="(b): queries left with positive mask logits")
    parser.add_argument("--no-bf16", action="store_true", help="skip the ours --dtype bf16 line")
    parser.add_argument("--no-reference", action="store_true", help="time ours only (breakdown)")
    parser.add_argument("--keep", default=None, help="keep the clip, models and outputs in this folder")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- timers


class Timers:
    """Exclusive seconds per stage name: time in a timed call minus the timed calls inside it.

    Each thread has its own stack, so the read-ahead thread's decode is kept apart.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()
        self._lock = threading.Lock()

    def _stack(self) -> list:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def enter(self, name: str) -> None:
        self._stack().append([name, time.perf_counter(), 0.0])

    def leave(self) -> None:
        name, start, inner = self._stack().pop()
        elapsed = time.perf_counter() - start
        with self._lock:
            self.seconds[name] += elapsed - inner
            self.calls[name] += 1
        if self._stack():
            self._stack()[-1][2] += elapsed

    @contextlib.contextmanager
    def time(self, name: str):
        self.enter(name)
        try:
            yield
        finally:
            self.leave()

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self.time(name):
                return fn(*args, **kwargs)

        return timed

    def wrap_iter(self, name: str, fn):
        """A generator function (or any function returning an iterator) whose every next() is timed."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self.time(name):
                it = iter(fn(*args, **kwargs))
            while True:
                with self.time(name):
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                yield item

        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


# Our stages: (owner, attribute, stage name, iterator?). Every one is looked up by the library at
# call time (module attribute or class attribute), so replacing it here times it.
OUR_STAGES = [
    (probe_module, "probe", "probe", False),
    (read_module._VideoReader, "_frames", "decode (read-ahead thread)", True),
    (preprocess, "host_resize", "resize (read-ahead thread)", False),
    (predictor_module, "_chunks", "wait for decoded frames", True),
    (preprocess, "preprocess", "preprocess (normalise, pad)", False),
    (instance.InstanceAccumulator, "add", "post: other", False),
    (common.LogitMean, "add", "post: class-logit mean", False),
    (instance, "masks_to_frame", "post: upsample (full chain)", False),
    (mask_ops, "encode", "post: RLE encode", False),
    (SpillStore, "write", "post: spill write", False),
    (instance.InstanceAccumulator, "result", "top-k + read back RLEs", False),
]


@contextlib.contextmanager
def instrumented(pred: Predictor, timers: Timers):
    """Wrap the library's stage functions and the network's forward with timers; restore after."""
    saved = []
    for owner, attr, name, is_iter in OUR_STAGES:
        original = owner.__dict__[attr]
        saved.append((owner, attr, original))
        setattr(owner, attr, (timers.wrap_iter if is_iter else timers.wrap)(name, original))
    model = pred.model
    model.forward = timers.wrap("network", type(model).forward.__get__(model))
    try:
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)
        del model.forward


# ----------------------------------------------------------------------------- models


def make_model(preset: str) -> VideoMT:
    """Seeded random network, norms and LayerScales moved off identity (examples/make_checkpoint.py)."""
    torch.manual_seed(0)
    model = VideoMT(config.preset(preset, use_mask_token=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def mask_head_inputs(model: VideoMT, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, Q, C) inputs of the last mask-head layer and (T, Q, h, w) mask logits for clip (T, 3, H, W)."""
    seen = []
    hook = model.mask_head[-1].register_forward_pre_hook(lambda mod, inp: seen.append(inp[0]))
    try:
        with torch.inference_mode():
            out, _ = model(clip[None])
    finally:
        hook.remove()
    return seen[0].reshape(clip.shape[0], model.config.num_queries, -1), out.mask_logits[0]


def constant_channel(model: VideoMT) -> None:
    """Case (b), the weight part: pixel feature channel 0 becomes the constant 1 (the last Upscale
    LayerNorm2d's weight 0, bias 1), so channel 0 of a query's mask embedding adds to all of that
    query's mask logits."""
    with torch.no_grad():
        norm = model.upscale[-1].norm
        norm.weight[0], norm.bias[0] = 0.0, 1.0


def chosen_queries(num_queries: int, active: int) -> list[int]:
    return torch.randperm(num_queries, generator=torch.Generator().manual_seed(1))[:active].sort().values.tolist()


def add_offsets(last_layer: torch.nn.Module, chosen: list[int], num_queries: int, offset: float = 1000.0):
    """Case (b), the per-query part: a forward hook on the last mask-head Linear (ours
    ``mask_head[-1]``, transformers ``mask_head.fc3``, both (frames, Q, C)) that subtracts
    ``offset`` from output channel 0 of every query not in ``chosen``; with ``constant_channel``
    that lowers all of their mask logits by ``offset``."""
    delta = torch.zeros(num_queries, last_layer.out_features)
    delta[:, 0] = -offset
    delta[chosen, 0] = 0.0

    def hook(module, inputs, output):
        return output + delta.to(device=output.device, dtype=output.dtype)

    return last_layer.register_forward_hook(hook)


def nonempty_per_frame(model: VideoMT, clip: torch.Tensor, crop: tuple[int, int] | None = None) -> list[int]:
    """Queries with any positive mask logit, per frame (inside the unpadded area when ``crop``)."""
    _, logits = mask_head_inputs(model, clip)
    if crop is not None:  # stride-4 cells that reach the resized (unpadded) picture
        logits = logits[..., : (crop[0] + 3) // 4 + 1, : (crop[1] + 3) // 4 + 1]
    return (logits.amax(dim=(-2, -1)) > 0).sum(-1).tolist()


# ----------------------------------------------------------------------------- the two pipelines


def our_pixels(frames: np.ndarray, geometry) -> torch.Tensor:
    return preprocess.preprocess(frames, geometry)


def reference_pixels(frames: np.ndarray, size: tuple[int, int] = (640, 640)) -> torch.Tensor:
    """The VideomtVideoProcessor's preprocessing without torchvision: stretch to 640x640 (bilinear,
    antialias, uint8 rounding), rescale 1/255, ImageNet mean/std. (T, H, W, 3) uint8 -> (T, 3, 640, 640)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).round_().clamp_(0, 255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x / 255.0 - mean) / std).contiguous()


def run_ours(pred: Predictor, clip: Path, out: Path, timers: Timers) -> float:
    start = time.perf_counter()
    with instrumented(pred, timers):
        with pred.run(str(clip)) as result, timers.time("write JSON"):
            with sinks.open_sink(out, overwrite=True) as sink:
                sink.add(result)
    return time.perf_counter() - start


def run_reference(model, processor, clip: Path, timers: Timers) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    with timers.time("decode"):
        frames = [f.image for f in read_frames(str(clip))]
    with timers.time("preprocess"):
        pixels = reference_pixels(np.stack(frames))
    with timers.time("network"), torch.inference_mode():
        outputs = model(pixel_values_videos=pixels[None])
    height, width = frames[0].shape[:2]
    results = []
    with timers.time("post-process"), torch.inference_mode():
        for t in range(len(frames)):
            one = types.SimpleNamespace(class_queries_logits=outputs.class_queries_logits[t : t + 1],
                                        masks_queries_logits=outputs.masks_queries_logits[t : t + 1])
            results += processor.post_process_instance_segmentation(one, target_sizes=[(height, width)])
    return time.perf_counter() - start, results


# ----------------------------------------------------------------------------- report


def breakdown(timers: Timers, frames: int, total: float, name: str, threaded: set[str] = frozenset()) -> None:
    """Per-frame seconds of each stage; the main-thread stages and 'other' add up to the total."""
    rows = sorted(timers.seconds.items(), key=lambda kv: -kv[1])
    main = sum(s for n, s in rows if n not in threaded)
    print(f"  {name}: where the time goes (ms/frame, all timed rounds)")
    for n, s in rows:
        if n in threaded:
            continue
        print(f"    {n:<30} {s / frames * 1e3:9.1f}  {100 * s / total:5.1f}%")
    print(f"    {'other (loop, casts, setup)':<30} {(total - main) / frames * 1e3:9.1f}  {100 * (total - main) / total:5.1f}%")
    print(f"    {'= total':<30} {total / frames * 1e3:9.1f}")
    for n in threaded:
        if n in timers.seconds:
            print(f"    ({n}: {timers.seconds[n] / frames * 1e3:.1f} ms/frame, overlapping the above)")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in ("random", "sparse"):
            raise SystemExit(f"unknown case {c!r}: use random and/or sparse")

    import transformers
    from media import make_video

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from transformers import VideomtForUniversalSegmentation
    from transformers.models.videomt.video_processing_videomt import VideomtVideoProcessor

    holder = None if args.keep else tempfile.TemporaryDirectory(prefix="videomt-pipeline-")
    work = Path(args.keep or holder.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        clip = make_video(work / "clip.mp4", frames=args.frames, size=(width, height))
        warm = make_video(work / "warm.mp4", frames=args.warmup_frames, size=(width, height)) \
            if args.warmup_frames else None
        decoded = np.stack([f.image for f in read_frames(str(clip))])
        geometry = preprocess.compute_geometry(height, width, args.min_size)
        processor = VideomtVideoProcessor()
        cfg = config.preset(args.preset)
        print(f"End-to-end, {args.frames} frames {width}x{height} H.264; VidEoMT '{args.preset}' (C={cfg.hidden_size}, "
              f"L={cfg.num_layers}, Q={cfg.num_queries}, K={cfg.num_classes}), random weights; CPU, torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads, {__import__('os').cpu_count()} CPUs; "
              f"transformers {transformers.__version__}")
        print(f"ours: network input {geometry.padded[0]}x{geometry.padded[1]} (resized {geometry.resized[0]}x"
              f"{geometry.resized[1]}), chunks of {args.chunk_size}; transformers: 640x640, whole clip in one call, "
              f"post-processing frame by frame")
        summary = []
        for case in cases:
            model = make_model(args.preset)
            label = "(a) random weights: all 200 queries non-empty (worst case for ours)" if case == "random" else \
                f"(b) trained-like sparsity: {args.active} of {cfg.num_queries} queries with positive mask logits"
            ours_in, ref_in = our_pixels(decoded, geometry), reference_pixels(decoded)
            chosen = chosen_queries(cfg.num_queries, args.active) if case == "sparse" else None
            if chosen is not None:
                constant_channel(model)
                hook = add_offsets(model.mask_head[-1], chosen, cfg.num_queries)
                label += f" (queries {chosen})"
            n_ours = nonempty_per_frame(model, ours_in, geometry.resized)
            n_ref = nonempty_per_frame(model, ref_in)
            if chosen is not None:
                hook.remove()
            print(f"\n{label}")
            print(f"  non-empty queries per frame: ours {n_ours}, transformers {n_ref}")
            folder = checkpoint.save_hf(model, work / f"model-{case}")
            del model
            reference = VideomtForUniversalSegmentation.from_pretrained(str(folder)).eval()
            if chosen is not None:
                add_offsets(reference.mask_head.fc3, chosen, cfg.num_queries)
            runs: dict[str, tuple] = {}
            ours16 = None
            ours32 = Predictor.from_model(str(folder), device="cpu", dtype="fp32", min_size=args.min_size,
                                          chunk_size=args.chunk_size)
            runs["ours fp32"] = ("ours", ours32)
            if chosen is not None:
                add_offsets(ours32.model.mask_head[-1], chosen, cfg.num_queries)
            if not args.no_reference:
                runs["transformers"] = ("ref", reference)
            if not args.no_bf16:
                ours16 = Predictor.from_model(str(folder), device="cpu", dtype="bf16", min_size=args.min_size,
                                              chunk_size=args.chunk_size)
                runs["ours bf16"] = ("ours", ours16)
                if chosen is not None:
                    add_offsets(ours16.model.mask_head[-1], chosen, cfg.num_queries)
            timers = {name: Timers() for name in runs}
            seconds = {name: [] for name in runs}

            def call(name: str, path: Path) -> float:
                kind, obj = runs[name]
                if kind == "ours":
                    return run_ours(obj, path, work / f"out-{case}-{name.replace(' ', '-')}.json", timers[name])
                return run_reference(obj, processor, path, timers[name])[0]

            if warm is not None:
                for name in runs:
                    call(name, warm)
                for t in timers.values():
                    t.reset()
            names = list(runs)
            for round_ in range(args.repeats):
                order = names if round_ % 2 == 0 else names[::-1]
                for name in order:
                    seconds[name].append(call(name, clip))
                line = ", ".join(f"{n} {seconds[n][-1] / args.frames:.3f}" for n in names)
                ratios = ""
                if "transformers" in seconds:
                    ratios = "; speedup transformers/ours: " + ", ".join(
                        f"{n.split(' ', 1)[1]} {seconds['transformers'][-1] / seconds[n][-1]:.2f}x"
                        for n in names if n.startswith("ours"))
                print(f"  round {round_ + 1}: s/frame {line}{ratios}")
            print("  median s/frame: " + ", ".join(
                f"{n} {statistics.median(seconds[n]) / args.frames:.3f}" for n in names))
            if "transformers" in seconds:
                for n in names:
                    if n.startswith("ours"):
                        per_round = [r / o for r, o in zip(seconds["transformers"], seconds[n])]
                        med = statistics.median(per_round)
                        verdict = "meets" if med >= 2 else "MISSES"
                        print(f"  speedup transformers/{n}: median {med:.2f}x over {len(per_round)} rounds "
                              f"({verdict} the 2x target)")
                        summary.append((case, n, med))
            frames_timed = args.frames * args.repeats
            for n in names:
                breakdown(timers[n], frames_timed, sum(seconds[n]), n,
                          threaded={"decode (read-ahead thread)", "resize (read-ahead thread)"} if n.startswith("ours") else set())
            runs.clear()  # free this case's three pipelines before building the next
            reference = ours32 = ours16 = None
        if summary:
            print("\nsummary (median speedup, transformers / ours):")
            for case, n, med in summary:
                print(f"  {case:<7} {n:<10} {med:.2f}x")
        return 0
    finally:
        if holder is not None:
            holder.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
