"""Peak memory of `videomt segment` against video length: constant memory, measured.

Writes synthetic H.264 videos of the same size and content (moving squares on a gradient,
``tests/media.py``) of each length in ``--frames``, runs the real CLI on each in its own child
process (``python -m videomt_cli.cli segment VIDEO --model MODEL -o out.json``) and reads that
child's peak resident set size from the kernel (``os.wait4`` returns the rusage of exactly that
child, ``ru_maxrss``). While it runs, the child's RSS (``/proc/PID/status``) is sampled and its
open files are watched: the instance accumulator's spill file (an unnamed temporary file, so the
child gets its own ``TMPDIR`` and the file shows up as ``/proc/PID/fd/N -> TMPDIR/#inode
(deleted)``) is sized from there. Passes when the peak of the longest video is less than
``--limit`` MB (default 100) above the peak of the shortest.

    python benchmarks/memory.py                              # 300 and 3000 frames, 480x270, random "tiny" model
    python benchmarks/memory.py --frames 300,3000 --size 320x240 --min-size 128
    python benchmarks/memory.py --model runs/a/model.safetensors --masks as-is
    python benchmarks/memory.py --frames 50,200              # a quick check
    python benchmarks/memory.py --threads 0                  # the child uses every core (torch's default)

The default model is a seeded random network of the ``tiny`` preset (or ``--preset``) saved to
a temporary folder. A random network's masks are salt-and-pepper noise at the stride-4 scale,
whose RLEs are ~50x longer than a real object's, and every query is non-empty in every frame, so
the results themselves (10 tracks x every frame x one RLE, which the results file must hold)
grow with the video far more than a trained model's would. ``--masks`` picks what the random
model predicts:

- ``blobs`` (default): the random network with its pixel features made to follow the picture
  and its mask offsets calibrated (``blobify``): every query's mask is a few connected regions
  covering ~15% of the frame, as a trained model's object masks are, with RLEs of ~400
  characters at 480x270 (random: ~14,000). The cost of a forward pass does not change.
- ``random``: the plain random weights (worst case for the results' size).
- ``as-is``: whatever ``--model`` predicts (with ``--model``, the default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout
sys.path.insert(0, str(ROOT / "tests"))  # media.make_video


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="300,3000", help="comma-separated video lengths (frames)")
    parser.add_argument("--size", default="480x270", help="video size WIDTHxHEIGHT (even numbers)")
    parser.add_argument("--model", default=None, help="checkpoint to run (default: a random --preset network)")
    parser.add_argument("--preset", default="tiny", help="preset of the random network (tiny, mini, small...)")
    parser.add_argument("--masks", choices=("blobs", "random", "as-is"), default=None,
                        help="what the random network predicts (see the module docstring)")
    parser.add_argument("--min-size", type=int, default=None,
                        help="--min-size passed to segment (default: the video's short side, no resize)")
    parser.add_argument("--chunk-size", type=int, default=None, help="--chunk-size passed to segment")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of the child (default 1: on shared cores a tiny network with "
                             "several threads runs ~7x slower; 0: unset, torch uses every core)")
    parser.add_argument("--limit", type=float, default=100.0, help="allowed peak growth in MB")
    parser.add_argument("--keep", default=None, help="keep videos, model and outputs in this folder")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- inputs


def make_model(path: Path, preset: str, masks: str, size: tuple[int, int], min_size: int,
               fraction: float = 0.15) -> Path:
    """A seeded random ``preset`` network saved as ``path`` (videomt's .safetensors)."""
    import torch

    from videomt_cli.modeling import checkpoint
    from videomt_cli.modeling import config
    from videomt_cli.modeling.model import VideoMT

    torch.manual_seed(0)
    model = VideoMT(config.preset(preset)).eval()
    with torch.no_grad():  # as examples/make_checkpoint.py: move norms and LayerScales off identity
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if masks == "blobs":
            blobify(model, size, min_size, fraction)
    return checkpoint.save(model, path)


def blobify(model, size: tuple[int, int], min_size: int, fraction: float) -> None:
    """Give the random network object-like masks; the cost of a forward pass does not change.

    A random network's mask logits are white noise at the stride-4 scale. Here its pixel
    features follow the picture instead: no position embedding (patch tokens depend on content
    only), each Upscale block's transposed conv copies its (0, 0) tap to all four (nearest x2) and
    its depthwise conv is a 3x3 box filter. Then, calibrated on frame 0 of the benchmark video:
    the last LayerNorm2d's bias removes each channel's mean over the frame (so a query's logits
    are positive on some regions only), its channel 0 becomes the constant 1 (weight 0, bias 1)
    and the last mask-head layer's row 0 is set to the constant -t, t the (1 - fraction)
    quantile of the logits: every mask covers about ``fraction`` of the frame in a few regions.
    Call it under ``torch.no_grad()`` (it edits parameters in place).
    """
    import numpy as np

    from media import frame_image
    from videomt_cli.inference import preprocess

    width, height = size
    geometry = preprocess.compute_geometry(height, width, min_size)
    pixels = preprocess.preprocess(frame_image(0, width, height)[None], geometry)[None]

    def run():
        seen = {}
        hook = model.upscale.register_forward_hook(lambda mod, inp, out: seen.setdefault("features", out))
        try:
            out, _ = model(pixels)
        finally:
            hook.remove()
        return out.mask_logits, seen["features"]

    model.pos_embed.zero_()
    for block in model.upscale:
        block.conv1.weight[:] = block.conv1.weight[:, :, :1, :1].clone()
        block.conv2.weight.fill_(1 / 9)
    norm = model.upscale[-1].norm
    norm.weight[0], norm.bias[0] = 0.0, 1.0
    _, features = run()
    norm.bias[1:] -= features[0, 1:].mean((-2, -1))
    last = model.mask_head[-1]
    last.weight[0], last.bias[0] = 0.0, 0.0
    logits, _ = run()
    sample = logits.flatten()[:: max(1, logits.numel() // 1_000_000)].float()
    last.bias[0] = -float(np.quantile(sample.numpy(), 1 - fraction))


def make_video(path: Path, frames: int, size: tuple[int, int]) -> Path:
    from media import make_video as write

    return write(path, frames=frames, size=size)


# ----------------------------------------------------------------------------- one measured run


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _spill_bytes(pid: int, spill_dir: str) -> int:
    """Total size of the files the child holds open under its TMPDIR (deleted ones included)."""
    total = 0
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return 0
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
            if target.startswith(spill_dir):
                total += os.stat(f"{fd_dir}/{fd}").st_size
        except OSError:
            continue
    return total


def measure(cmd: list[str], env: dict, spill_dir: str) -> dict:
    """Run ``cmd`` as a child; return its peak RSS (kernel), RSS samples, the largest spill seen."""
    start = time.perf_counter()
    log = tempfile.TemporaryFile()  # not a pipe: a chatty child must never block on a full pipe
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    samples: list[tuple[float, int]] = []
    spill = 0
    # Reap with wait4 ourselves (never Popen.poll/wait, which would reap it without the rusage).
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        rss = _rss_kb(proc.pid)
        if rss is not None:
            samples.append((time.perf_counter() - start, rss))
        spill = max(spill, _spill_bytes(proc.pid, spill_dir))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    output = log.read().decode(errors="replace")
    log.close()
    if proc.returncode != 0:
        raise SystemExit(f"segment failed (exit {proc.returncode}):\n{output}")
    return {"peak_kb": usage.ru_maxrss, "wall": wall, "samples": samples, "spill": spill,
            "user": usage.ru_utime, "sys": usage.ru_stime}


def rss_at(samples: list[tuple[float, int]], fraction: float) -> int | None:
    """The sampled RSS (KB) at ``fraction`` of the run's sampled time."""
    if not samples:
        return None
    t_end = samples[-1][0]
    best = min(samples, key=lambda s: abs(s[0] - fraction * t_end))
    return best[1]


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    lengths = [int(x) for x in args.frames.split(",") if x.strip()]
    width, height = (int(v) for v in args.size.lower().split("x"))
    masks = args.masks or ("as-is" if args.model else "blobs")
    if masks != "as-is" and args.model:
        raise SystemExit("--masks blobs/random build a random network; with --model use --masks as-is.")
    min_size = args.min_size or min(width, height)

    holder = None if args.keep else tempfile.TemporaryDirectory(prefix="videomt-memory-")
    work = Path(args.keep or holder.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.model:
            model, model_desc = args.model, args.model
        else:
            model = str(make_model(work / f"{args.preset}-{masks}.safetensors", args.preset, masks,
                                   (width, height), min_size))
            model_desc = f"random '{args.preset}' network, masks: {masks}"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        print(f"videomt segment, peak RSS of the child process; {width}x{height} H.264, --min-size {min_size}; "
              f"model: {model_desc}; torch threads: {args.threads or 'all cores'}; {os.cpu_count()} CPUs")
        rows = []
        for n in lengths:
            video = make_video(work / f"video-{n}.mp4", n, (width, height))
            out = work / f"out-{n}.json"
            spill_dir = tempfile.mkdtemp(prefix=f"spill-{n}-", dir=work)
            cmd = [sys.executable, "-m", "videomt_cli.cli", "segment", str(video), "--model", model,
                   "-o", str(out), "--overwrite", "-q", "--min-size", str(min_size)]
            if args.chunk_size:
                cmd += ["--chunk-size", str(args.chunk_size)]
            env_run = dict(env, TMPDIR=spill_dir)
            r = measure(cmd, env_run, spill_dir)
            results = json.loads(out.read_text())
            rle_chars = sum(len(s["counts"]) for res in results for s in res["segmentations"] if s)
            r.update(frames=n, out_bytes=out.stat().st_size, results=len(results), rle_chars=rle_chars)
            rows.append(r)
            mid, late = rss_at(r["samples"], 0.5), rss_at(r["samples"], 0.9)
            print(f"{n:6d} frames: peak RSS {r['peak_kb'] / 1024:7.1f} MB  (sampled RSS at 50% / 90% of the run: "
                  f"{(mid or 0) / 1024:.1f} / {(late or 0) / 1024:.1f} MB)  wall {r['wall']:6.1f} s "
                  f"({r['wall'] / n * 1e3:.1f} ms/frame)")
            print(f"{'':14s}spill file (largest seen) {r['spill'] / 2**20:7.2f} MB "
                  f"({r['spill'] / n / 1024:.2f} KB/frame); results file {r['out_bytes'] / 2**20:.2f} MB, "
                  f"{len(results)} results, RLE text {rle_chars / 2**20:.2f} MB")
        first, last = rows[0], rows[-1]
        growth = (last["peak_kb"] - first["peak_kb"]) / 1024
        ok = growth < args.limit
        print(f"growth {first['frames']} -> {last['frames']} frames: {growth:+.1f} MB peak RSS "
              f"(limit {args.limit:.0f} MB; of it the results' RLE text grew "
              f"{(last['rle_chars'] - first['rle_chars']) / 2**20:.1f} MB)  {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        if holder is not None:
            holder.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
