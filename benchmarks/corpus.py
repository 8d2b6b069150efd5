"""Many short videos: a shell loop of one-video ``videomt segment`` calls against the corpus mode and
``--backend ray``, as a user runs them (each a fresh process, startup and model load included).

The corpus: ``--videos`` (12) H.264 clips of ``--frames`` (16) frames at ``--size`` (426x240),
moving squares on a gradient (``tests/media.py``), made by this script in a temporary folder. The
model is the bundled demo model on the CPU (``--device cpu``); every mode writes YouTube-VIS JSON.

- **loop**: ``for v in videos: videomt segment v -o out/v.json`` (one process per video: Python,
  torch and the model load every time);
- **corpus**: ``videomt segment videos/ -o out/`` (one process, the model loaded once, videos one
  after another);
- **ray**: ``videomt segment videos/ -o out/ --backend ray --workers N`` (a local Ray started for
  the run, N CPU actors of ``CPUs // N`` CPUs each, one video per task);
- **ray-warm** (``--modes``): the same on a Ray already running (a head on 127.0.0.1 started and
  stopped by this script, not timed): what a long-lived cluster pays per run;
- **batch**: the corpus mode with ``--batch-videos 4`` (four videos through the network per call).

Printed per mode: wall seconds, videos/hour, frames/s, the ratio to the loop, and whether the
outputs equal the loop's byte for byte (torch's thread count can change float rounding: the loop
and the corpus use every core, a Ray actor its share).

    python benchmarks/corpus.py                          # 12 x 16 frames at 426x240, loop/corpus/ray
    python benchmarks/corpus.py --modes corpus,ray,ray-warm --workers 2
    python benchmarks/corpus.py --videos 4 --frames 4    # quick check
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout
sys.path.insert(0, str(ROOT / "tests"))  # media.make_video

MODES = ("loop", "corpus", "batch", "ray", "ray-warm")


def videomt() -> list[str]:
    exe = shutil.which("videomt")
    return [exe] if exe else [sys.executable, "-c", "from videomt_cli.cli import main; main()"]


def run(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return seconds


_HEAD = """
import sys, ray
ray.init(address="local", num_cpus=int(sys.argv[1]), include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the benchmark closes it
ray.shutdown()
"""


def run_warm(base: list[str], videos: Path, out: Path, workers: int, env: dict) -> float:
    """``--backend ray --ray-address`` on a Ray already running: a head started by a helper
    process here (not timed), which shuts it down when its stdin closes."""
    head = subprocess.Popen([sys.executable, "-c", _HEAD, str(os.cpu_count())], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = head.stdout.readline().strip()
        if not re.fullmatch(r"[0-9.]+:\d+", address):
            sys.exit(f"the Ray head did not start (it said {address!r})")
        # Ray 2.60 gives the clusters it starts token authentication; a driver joining one says so
        return run(base + ["segment", str(videos), "-o", str(out), "--device", "cpu", "-q", "--backend", "ray",
                           "--workers", str(workers), "--ray-address", address], {**env, "RAY_AUTH_MODE": "token"})
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.json"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", default="426x240", help="WxH of each clip")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors")
    parser.add_argument("--modes", default="loop,corpus,batch,ray", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--keep", type=Path, help="make the corpus and outputs here (kept)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    width, height = (int(v) for v in args.size.lower().split("x"))

    from media import make_video

    work = Path(args.keep or tempfile.mkdtemp(prefix="videomt-bench-corpus-"))
    videos = work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for i in range(args.videos):
        make_video(videos / f"clip{i:03d}.mp4", frames=args.frames, size=(width, height))
    # every Ray service on 127.0.0.1, and no usage report to Ray's servers
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    base = videomt()
    print(f"corpus: {args.videos} videos x {args.frames} frames at {width}x{height}, bundled model, CPU "
          f"({os.cpu_count()} cores); {', '.join(modes)}", flush=True)

    results: dict[str, float] = {}
    got: dict[str, dict[str, bytes]] = {}
    for mode in modes:
        out = work / f"out-{mode}"
        shutil.rmtree(out, ignore_errors=True)
        if mode == "loop":
            out.mkdir()
            started = time.perf_counter()
            for clip in sorted(videos.glob("*.mp4")):
                run(base + ["segment", str(clip), "-o", str(out / f"{clip.stem}.json"), "--device", "cpu", "-q"], env)
            seconds = time.perf_counter() - started
        elif mode == "corpus":
            seconds = run(base + ["segment", str(videos), "-o", str(out), "--device", "cpu", "-q"], env)
        elif mode == "batch":
            seconds = run(base + ["segment", str(videos), "-o", str(out), "--device", "cpu", "-q",
                                  "--batch-videos", "4"], env)
        elif mode == "ray":
            seconds = run(base + ["segment", str(videos), "-o", str(out), "--device", "cpu", "-q",
                                  "--backend", "ray", "--workers", str(args.workers)], env)
        else:  # ray-warm: a cluster already up (its start is not timed)
            seconds = run_warm(base, videos, out, args.workers, env)
        results[mode] = seconds
        got[mode] = outputs(out)
        print(f"  {mode}: {seconds:.1f} s", flush=True)

    frames = args.videos * args.frames
    reference = results.get("loop")
    print("\n| mode | wall s | videos/hour | frames/s | vs loop | outputs = loop's |")
    print("|---|---|---|---|---|---|")
    labels = {"loop": "shell loop of `videomt segment`", "corpus": "corpus (`segment DIR -o OUT`)",
              "batch": "corpus `--batch-videos 4`",
              "ray": f"`--backend ray --workers {args.workers}` (Ray started for the run)",
              "ray-warm": f"`--backend ray --workers {args.workers} --ray-address` (Ray running)"}
    for mode in modes:
        s = results[mode]
        ratio = f"{reference / s:.2f}x" if reference else "-"
        # --batch-videos: equal to the rounding of a batched matmul (README), so bytes may differ
        same = "-" if "loop" not in got or mode == "loop" else ("yes" if got[mode] == got["loop"] else "no")
        print(f"| {labels[mode]} | {s:.1f} | {args.videos / s * 3600:,.0f} | {frames / s:.1f} | {ratio} | {same} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
