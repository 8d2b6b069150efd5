"""Live streams: frames/s, drops and arrival-to-result latency on a loopback stream, against the
same video read as a file, in one run.

A 480p (480x640) H.264 clip of moving shapes (``training.synth``, what the bundled model knows)
at 30 frames/s is sent by the ffmpeg program (imageio-ffmpeg) with ``-re``, as MPEG-TS over UDP
to 127.0.0.1, for ``--seconds`` seconds. Each model runs it three ways, with ``Predictor.stream``
(online results, as ``--format jsonl`` does; no sink):

- **file**: the mp4 read as a file (as fast as the model goes; nothing is dropped): its first
  ``--bundled-file-frames`` (120) or, for ViT-S, ``--file-frames`` (4) frames; once before and once
  after the live runs, since other work on the machine changes the speed.
- **live**: ``io.live.LiveSource`` on the UDP stream, every frame kept (a buffer of 10 s of
  frames; a model slower than the stream falls behind and, once the buffer is full, loses the
  oldest frames).
- **live --realtime**: the newest frame only; the ones in between are dropped.

Live runs end when the sender has finished: what is still waiting then is not processed (a slow
model would take minutes), so "processed" is what came out while the stream ran, and "waiting"
what was left. Latency is from a frame's arrival (decoded by the reader thread) to its online
result; frames/s is processed frames over the time from the first arrival to the last result.

Models: the bundled ``videomt-mini-synth`` at its 160-pixel short side, and a seeded random
ViT-S (``small`` preset, 200 queries) at a 480-pixel short side (480x640 network input). A random
network gives every query a noise mask in every frame: the worst case for post-processing.

    python benchmarks/live.py                          # both models, 8 s streams
    python benchmarks/live.py --models bundled --seconds 4
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout

FPS = 30


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_video(path: Path, seconds: float) -> Path:
    from videomt_cli.training import synth

    return synth.make_example_video(path, seed=1, frames=int(seconds * FPS), size=(480, 640), fps=FPS)


def make_vit_s(path: Path) -> Path:
    import torch

    from videomt_cli.modeling import checkpoint, config
    from videomt_cli.modeling.model import VideoMT

    torch.manual_seed(0)
    model = VideoMT(config.preset("small")).eval()
    with torch.no_grad():  # norms and LayerScales off identity, as examples/make_checkpoint.py
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return checkpoint.save(model, path)


def run_file(predictor, video: Path, frames: int | None) -> dict:
    began, n = time.perf_counter(), 0
    for _ in predictor.stream(str(video), end=frames, final=False):
        n += 1
    seconds = time.perf_counter() - began
    return {"processed": n, "dropped": 0, "fps": n / seconds, "latency": None, "waiting": 0}


def run_live(predictor, video: Path, realtime: bool, ffmpeg: str) -> dict:
    from videomt_cli.io.live import LiveSource

    port = free_udp_port()
    url = f"udp://127.0.0.1:{port}"
    sender = None

    def start_sender():  # once the receiver listens (it binds while opening)
        nonlocal sender
        time.sleep(0.2)
        sender = subprocess.Popen([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-re", "-i", str(video), "-c",
                                   "copy", "-f", "mpegts", url + "?pkt_size=1316"])

    starter = threading.Thread(target=start_sender, daemon=True)
    starter.start()
    source = LiveSource(url, timeout=2, realtime=realtime)
    starter.join()
    stream = predictor.stream(source, final=False)
    stopper = threading.Thread(target=lambda: (sender.wait(), time.sleep(0.2), source.stop()), daemon=True)
    stopper.start()
    try:
        for _ in stream:
            if source.stopping:  # the stream has ended: do not work through what still waits
                break
        stats = source.stats()
        waiting = len(source._buffer.items)
    finally:
        stream.close()
        source.close()
        if sender.poll() is None:
            sender.kill()
        sender.wait()
    return {"processed": stats.processed, "dropped": stats.dropped, "fps": stats.fps, "latency": stats.latency,
            "waiting": waiting, "frames": stats.frames, "warnings": source.warnings}


def row(name: str, r: dict) -> str:
    total = r["processed"] + r["dropped"] + r["waiting"]
    drop = f"{100 * r['dropped'] / total:5.1f}%" if total else "   - "
    lat = (f"{1000 * r['latency'][0]:8.0f} {1000 * r['latency'][1]:8.0f}" if r["latency"] is not None
           else f"{'-':>8} {'-':>8}")
    return f"  {name:<18} {r['processed']:>9} {r['dropped']:>7} {r['waiting']:>7} {drop:>6} {r['fps']:>8.1f} {lat}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the stream")
    parser.add_argument("--models", default="bundled,vit-s", help="bundled, vit-s (comma-separated)")
    parser.add_argument("--file-frames", type=int, default=4, help="frames of each file run of ViT-S")
    parser.add_argument("--bundled-file-frames", type=int, default=120, help="frames of each file run of the "
                        "bundled model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import imageio_ffmpeg
    import torch

    from videomt_cli.inference.predictor import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video = make_video(work / "shapes480.mp4", args.seconds)
        print(f"Live benchmark: {int(args.seconds * FPS)} frames 640x480 H.264 at {FPS} frames/s, UDP loopback "
              f"(MPEG-TS, ffmpeg -re); torch {torch.__version__}, {torch.get_num_threads()} threads, CPU.")
        print(f"  {'run':<18} {'processed':>9} {'dropped':>7} {'waiting':>7} {'drop':>6} {'frames/s':>8} "
              f"{'lat p50':>8} {'lat p95':>8}   (latency in ms, arrival to result)")
        for name in args.models.split(","):
            if name == "bundled":
                predictor, frames = Predictor.from_model(None, device="cpu"), args.bundled_file_frames
                title = "bundled videomt-mini-synth, short side 160 (160x213 input)"
            elif name == "vit-s":
                predictor = Predictor.from_model(str(make_vit_s(work / "vit_s.safetensors")), device="cpu",
                                                 min_size=480)
                frames = args.file_frames
                title = "random ViT-S (small, 200 queries), short side 480 (480x640 input)"
            else:
                parser.error(f"unknown model {name!r}")
            print(f"{title}:")
            run_file(predictor, video, 2)  # warm-up: the first calls allocate
            print(row("file", run_file(predictor, video, frames)), flush=True)
            for realtime in (False, True):
                result = run_live(predictor, video, realtime, ffmpeg)
                print(row("live --realtime" if realtime else "live", result), flush=True)
                for warning in result["warnings"]:
                    print(f"    warning: {warning[:140]}")
            # again: other work on the machine changes the speed; two file runs bracket the live ones
            print(row("file (again)", run_file(predictor, video, frames)), flush=True)


if __name__ == "__main__":
    main()
