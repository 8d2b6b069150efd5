"""``videomt segment`` on live sources and to JSON lines, as a user runs it (issue #13).

Streams are made by the ffmpeg program of imageio-ffmpeg on 127.0.0.1 (MPEG-TS over UDP with
``-re``, a pipe into stdin) or served by ``http.server`` from a thread; each test stops what it
starts. The model is the bundled one at a 64-pixel short side. Runs that need real signals or a
real stdin are subprocesses of ``python -m videomt_cli.cli`` (several at once where they can);
the others go through Typer's ``CliRunner``.

What is checked: JSON lines reach a reader of stdout while the sender still sends, and equal the
lines of the same video read as a file; ``--realtime`` with a slow model drops frames, writes
them as ``dropped`` lines and reports them; Ctrl-C / SIGTERM mid-stream finish what arrived and
leave valid outputs (complete lines with the ``end`` line, an overlay PyAV decodes, a YouTube-VIS
file of the frames seen) with exit 130 / 143, and a second Ctrl-C aborts; SIGKILL leaves a
playable overlay; a restarted sender is rejoined with ``--reconnect``; the overlay goes to a
``udp://`` target; ``info`` works on a stream; bad input is one line.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

from media import ffmpeg  # noqa: E402
from videomt_cli import cli  # noqa: E402
from videomt_cli.cli.base import Signals  # noqa: E402
from videomt_cli.errors import InputError, VideoError  # noqa: E402
from videomt_cli.inference.predictor import Predictor  # noqa: E402
from videomt_cli.training import synth  # noqa: E402

FAST = ("--min-size", "64", "--device", "cpu")
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Shapes the bundled model finds: 45 frames of 96x128 at 30 fps (mp4 and MPEG-TS), and the
    same clip twice over (90 frames, 3 s)."""
    root = tmp_path_factory.mktemp("live_cli")
    mp4 = synth.make_example_video(root / "shapes.mp4", seed=1, frames=45, size=(96, 128), fps=30)
    ffmpeg("-i", mp4, "-c", "copy", "-f", "mpegts", root / "shapes.ts")
    ffmpeg("-stream_loop", "1", "-i", mp4, "-c", "copy", root / "long.mp4")
    return {"mp4": mp4, "ts": root / "shapes.ts", "long": root / "long.mp4", "root": root}


@pytest.fixture(autouse=True)
def _signals_state():
    """In-process runs share the CLI's signal state with other tests: start clean, give pytest
    its handlers back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    Signals.received, Signals.finished, Signals.soft_stop, Signals.deferring = None, False, None, False
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        try:
            p.communicate(timeout=10)
        except (ValueError, subprocess.TimeoutExpired):
            pass


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bound(port: int) -> bool:
    """Whether a UDP socket of this machine listens on ``port`` (Linux: /proc/net/udp)."""
    try:
        rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        pytest.skip("needs /proc/net/udp (Linux) to know when the receiver listens")
    return any(row.split()[1].endswith(f":{port:04X}") for row in rows)


def send_when_bound(path, port: int, processes, loops: int = 0, then=None) -> threading.Thread:
    """A thread that starts the sender once an in-process run listens on ``port`` (packets sent
    earlier would be lost while the model loads), then runs ``then()``."""

    def run():
        deadline = time.monotonic() + 30
        while not bound(port) and time.monotonic() < deadline:
            time.sleep(0.02)
        processes.append(send_udp(path, port, loops))
        if then is not None:
            then()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def send_udp(path, port: int, loops: int = 0) -> subprocess.Popen:
    """ffmpeg sending ``path`` at its frame rate as MPEG-TS to udp://127.0.0.1:PORT."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-re"] + (["-stream_loop", str(loops)] if loops else [])
    cmd += ["-i", str(path), "-c", "copy", "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def videomt(*args, stdin=None, slow: float = 0.0) -> subprocess.Popen:
    """``python -m videomt_cli.cli ARGS``; ``slow``: seconds the network sleeps per chunk."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if slow:
        code = ("import time; from videomt_cli.inference.predictor import Predictor; f = Predictor.forward; "
                f"Predictor.forward = lambda self, *a, **k: (time.sleep({slow}), f(self, *a, **k))[1]; "
                "from videomt_cli.cli import main; main()")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "videomt_cli.cli"]
    return subprocess.Popen(cmd + [str(a) for a in args], stdin=stdin if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


class Lines:
    """A thread reading a pipe line by line, noting when each line came."""

    def __init__(self, pipe) -> None:
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for raw in iter(pipe.readline, b""):
            self.lines.append((time.monotonic(), raw.decode("utf-8", "replace")))

    def text(self) -> str:
        return "".join(line for _, line in self.lines)

    def wait_for(self, needle: str, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if needle in line:
                    return t
            time.sleep(0.02)
        pytest.fail(f"no {needle!r} within {timeout} s; got: {self.text()[-2000:]}")

    def join(self, timeout: float = 30) -> None:
        self._thread.join(timeout)


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def read_jsonl(path) -> list[dict]:
    text = Path(path).read_text()
    assert text.endswith("\n")  # no torn line
    return [json.loads(line) for line in text.splitlines()]


def frame_lines(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] == "frame"]


def same_results(live: list[dict], reference: list[dict]) -> None:
    assert [r["frame"] for r in live] == [r["frame"] for r in reference]
    for a, b in zip(live, reference):
        assert a["time"] == pytest.approx(b["time"], abs=1e-5)
        assert a["objects"] == b["objects"]  # ids, categories, scores, boxes and RLE masks


@pytest.fixture
def http_root(media):
    handler = functools.partial(_QuietHandler, directory=str(media["root"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


# ----------------------------------------------------------------------------- stdin, stdout, as it happens


def test_lines_reach_stdout_while_the_sender_sends_and_equal_the_file_run(media, tmp_path, processes):
    reference = tmp_path / "file.jsonl"
    done = invoke("segment", media["long"], "-o", reference, "--chunk-size", "1", *FAST)
    assert done.exit_code == 0, done.output
    run = videomt("segment", "-", "-o", "-", "--chunk-size", "1", *FAST, stdin=subprocess.PIPE)
    processes.append(run)
    out, err = Lines(run.stdout), Lines(run.stderr)
    err.wait_for("Note:")  # the model is loaded: now the sender starts, at 30 frames/s
    sender = subprocess.Popen([FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-re", "-i", str(media["long"]),
                               "-c", "copy", "-f", "mpegts", "-"], stdout=run.stdin)
    processes.append(sender)
    run.stdin.close()  # the sender holds the pipe now
    out.wait_for('"type":"frame"', timeout=30)
    assert sender.poll() is None  # the first results came while the sender was still sending
    assert sender.wait(timeout=30) == 0
    sent_until = time.monotonic()
    assert run.wait(timeout=60) == 0
    out.join()
    err.join()
    records = [json.loads(line) for _, line in out.lines]  # stdout holds JSON lines and nothing else
    frames = frame_lines(records)
    assert records[0]["type"] == "video" and records[-1]["type"] == "end" and records[-1]["reason"] == "end of stream"
    assert len(frames) == 90 and records[-1]["processed"] == 90 and records[-1]["dropped"] == 0
    early = [t for t, line in out.lines if '"type":"frame"' in line and t < sent_until - 0.5]
    assert len(early) >= 20  # spread over the sending, not all at the end
    same_results(frames, frame_lines(read_jsonl(reference)))
    assert all(f["latency"] is not None and f["latency"] >= 0 for f in frames)
    text = err.text()
    assert "Live: 90 frames processed, 0 dropped" in text and "latency" in text and "Wrote stdout" in text


# ----------------------------------------------------------------------------- signals


def _wait_frames(path: Path, n: int, proc, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count('"type":"frame"') >= n:
            return
        time.sleep(0.05)
    pytest.fail(f"{path} did not get {n} frame lines")


def _wait_playable(path: Path, proc, timeout: float = 40) -> None:
    """Until the overlay being written has a frame that decodes (its first fragment is out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with av.open(str(path)) as container:
                if any(True for _ in container.decode(video=0)):
                    return
        except (av.FFmpegError, OSError):
            pass
        time.sleep(0.1)
    pytest.fail(f"{path} had no playable frame within {timeout} s")


def test_a_signal_mid_stream_finishes_what_arrived_and_leaves_valid_outputs(media, tmp_path, processes):
    runs = {}
    for name, sig, extra in [("a.jsonl", signal.SIGINT, ()), ("b.ts", signal.SIGTERM, ("--format", "overlay")),
                             ("c.json", signal.SIGINT, ()), ("d.mp4", signal.SIGKILL, ("--format", "overlay"))]:
        port = free_port()
        run = videomt("segment", f"udp://127.0.0.1:{port}", "-o", tmp_path / name, "--timeout", "5", *extra, *FAST)
        processes.append(run)
        runs[name] = (run, sig, Lines(run.stderr), port)
    for name, (run, sig, err, port) in runs.items():
        err.wait_for("Note:")
        processes.append(send_udp(media["mp4"], port, loops=20))
    time.sleep(1.0)  # some of the stream has gone through each
    _wait_frames(tmp_path / "a.jsonl", 5, runs["a.jsonl"][0])
    # four runs share the cores: each overlay must have written a fragment before its signal
    _wait_playable(tmp_path / "b.ts", runs["b.ts"][0])
    _wait_playable(tmp_path / "d.mp4", runs["d.mp4"][0])
    for name, (run, sig, err, port) in runs.items():
        run.send_signal(sig)
    codes = {name: run.wait(timeout=30) for name, (run, *_) in runs.items()}
    for _, _, err, _ in runs.values():
        err.join()
    assert codes == {"a.jsonl": 130, "b.ts": 143, "c.json": 130, "d.mp4": -signal.SIGKILL}

    jsonl_err = runs["a.jsonl"][2].text()
    assert "Stopping:" in jsonl_err and "Live:" in jsonl_err and jsonl_err.rstrip().endswith("Interrupted.")
    records = read_jsonl(tmp_path / "a.jsonl")
    assert records[-1]["type"] == "end" and records[-1]["reason"] == "interrupted"
    assert len(frame_lines(records)) == records[-1]["processed"] >= 5

    overlay_err = runs["b.ts"][2].text()
    assert overlay_err.rstrip().endswith("Terminated.")
    wrote = [line for line in overlay_err.splitlines() if line.startswith("Wrote")]
    assert not wrote  # the Wrote line is on stdout
    with av.open(str(tmp_path / "b.ts")) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    processed = int(runs["b.ts"][0].stdout.read().decode().split("(")[1].split()[0])
    assert decoded == processed > 0  # every processed frame is in the video, which plays

    results = json.loads((tmp_path / "c.json").read_text())  # the video-level file of the frames seen
    assert results and all(len(r["segmentations"]) == len(results[0]["segmentations"]) > 0 for r in results)
    assert runs["c.json"][2].text().rstrip().endswith("Interrupted.")

    with av.open(str(tmp_path / "d.mp4")) as container:  # killed outright: the fragments written still play
        assert sum(1 for _ in container.decode(video=0)) > 0
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary left behind


def test_a_second_signal_aborts(media, tmp_path, processes):
    runs = {}
    for name in ("slow.json", "slow.jsonl"):
        port = free_port()
        run = videomt("segment", f"udp://127.0.0.1:{port}", "-o", tmp_path / name, *FAST, slow=0.3)
        processes.append(run)
        runs[name] = (run, Lines(run.stderr), port)
    for run, err, port in runs.values():
        err.wait_for("Note:")
        processes.append(send_udp(media["mp4"], port, loops=20))
    time.sleep(1.5)  # frames pile up in the buffer of the slow model
    for run, err, _ in runs.values():
        run.send_signal(signal.SIGINT)
    for run, err, _ in runs.values():
        err.wait_for("Stopping:")
        run.send_signal(signal.SIGINT)
    for run, err, _ in runs.values():
        assert run.wait(timeout=20) == 130
        err.join()
        assert err.text().rstrip().endswith("Interrupted.")
    assert not (tmp_path / "slow.json").exists()  # a video-level output is not written
    records = read_jsonl(tmp_path / "slow.jsonl")  # complete lines, and no end line: the run was cut
    assert records[0]["type"] == "video" and records[-1]["type"] != "end"
    assert sorted(os.listdir(tmp_path)) == ["slow.jsonl"]


# ----------------------------------------------------------------------------- video-level formats


def test_video_level_formats_of_a_finite_stream_equal_the_file_run(media, tmp_path, http_root):
    for name in ("file.json", "file.txt"):
        assert invoke("segment", media["mp4"], "-o", tmp_path / name, "--chunk-size", "1", *FAST).exit_code == 0
    for name in ("live.json", "live.txt"):  # written when the stream ends
        result = invoke("segment", f"{http_root}/shapes.ts", "-o", tmp_path / name, "--chunk-size", "1", *FAST)
        assert result.exit_code == 0, result.output
        assert "(10 results, 45 frames)" in result.output
    assert json.loads((tmp_path / "live.json").read_text()) == json.loads((tmp_path / "file.json").read_text())
    assert (tmp_path / "live.txt").read_text() == (tmp_path / "file.txt").read_text()  # MOT boxes


def test_frames_dropped_by_realtime_are_null_in_video_level_results(tmp_path, http_root, slow_model):
    # an HTTP file under --realtime is paced at its own rate, as if live; the slow model drops frames
    result = invoke("segment", f"{http_root}/shapes.ts", "-o", tmp_path / "rt.json", "--realtime", *FAST)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "rt.json").read_text())
    masks = results[0]["segmentations"]
    assert len(masks) == 45 and all(len(r["segmentations"]) == 45 for r in results)
    processed = [i for i, m in enumerate(masks) if m is not None]
    assert 5 <= len(processed) < 40 and processed[0] == 0
    assert all((m is None) == (i not in processed) for r in results for i, m in enumerate(r["segmentations"]))
    assert f"{45 - len(processed)} dropped" in result.output


# ----------------------------------------------------------------------------- realtime, reconnect, targets


@pytest.fixture
def slow_model(monkeypatch):
    forward = Predictor.forward

    def slow(self, *args, **kwargs):
        time.sleep(0.12)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "forward", slow)


def test_realtime_with_a_slow_model_drops_frames_and_reports_them(media, tmp_path, processes, slow_model):
    port = free_port()
    send_when_bound(media["mp4"], port, processes)
    out = tmp_path / "rt.jsonl"
    result = invoke("segment", f"udp://127.0.0.1:{port}", "-o", out, "--realtime", "--timeout", "1", *FAST)
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    frames = [r["frame"] for r in records if r["type"] == "frame"]
    dropped = [r["frame"] for r in records if r["type"] == "dropped"]
    end = records[-1]
    assert end["type"] == "end" and end["reason"] == "connection lost"  # UDP: the sender went quiet
    assert end["dropped"] == len(dropped) > len(frames) / 2 and end["processed"] == len(frames)
    order = [r["frame"] for r in records if r["type"] in ("frame", "dropped")]
    assert order == list(range(len(order)))  # a dropped line comes in its place, before the next frame
    assert f"{len(frames)} frames processed, {len(dropped)} dropped" in result.output
    assert f"({len(frames)} frames, {len(dropped)} dropped)" in result.output


def test_without_realtime_every_frame_that_arrives_is_processed(media, tmp_path, processes, slow_model):
    port = free_port()
    send_when_bound(media["mp4"], port, processes)
    out = tmp_path / "all.jsonl"
    result = invoke("segment", f"udp://127.0.0.1:{port}", "-o", out, "--timeout", "1", *FAST)
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    assert records[-1]["dropped"] == 0 and not [r for r in records if r["type"] == "dropped"]
    assert [r["frame"] for r in frame_lines(records)] == list(range(records[-1]["processed"]))


def test_a_restarted_sender_is_rejoined_with_reconnect(media, tmp_path, processes):
    port = free_port()

    def restart():  # the sender stops; after more than the timeout a new one sends to the same port
        processes[0].wait(timeout=30)
        time.sleep(1.5)
        processes.append(send_udp(media["mp4"], port))

    restarter = send_when_bound(media["mp4"], port, processes, then=restart)
    out = tmp_path / "rejoined.jsonl"
    result = invoke("segment", f"udp://127.0.0.1:{port}", "-o", out, "--reconnect", "2", "--timeout", "0.8", *FAST)
    restarter.join(30)
    assert result.exit_code == 0, result.output
    assert "reconnecting in 0.5 s (1/2)" in result.output and "reconnected" in result.output
    records = read_jsonl(out)
    frames = frame_lines(records)
    assert records[-1]["reconnects"] >= 1 and len(frames) > 45  # both senders' frames, one stream
    assert [f["frame"] for f in frames] == list(range(len(frames)))  # indices continue
    steps = np.diff([f["time"] for f in frames])
    assert steps.min() > 0 and steps.max() == pytest.approx(1 / 30, abs=1e-5)  # and times, one frame on


def test_the_overlay_goes_to_a_udp_target(media, tmp_path, http_root):
    port = free_port()
    received: list = []

    def receive():
        with av.open(f"udp://127.0.0.1:{port}", timeout=(20, 2)) as container:
            try:
                for frame in container.decode(video=0):
                    received.append(frame.to_ndarray(format="rgb24"))
            except av.FFmpegError:
                pass  # the read timeout after the last frame

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    time.sleep(0.3)
    result = invoke("segment", f"{http_root}/shapes.ts", "--format", "overlay", "-o", f"udp://127.0.0.1:{port}", *FAST)
    assert result.exit_code == 0, result.output
    assert f"Wrote udp://127.0.0.1:{port}" in result.output
    receiver.join(30)
    assert len(received) >= 20  # over UDP some packets may be lost; most frames come through
    assert received[0].shape == (96, 128, 3)
    with av.open(str(media["mp4"])) as container:
        plain = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # the overlay is the video with masks, outlines and labels drawn on it: its closest plain frame
    # in the background, far from it where the objects are
    last = received[-1].astype(int)
    diff = min((np.abs(last - p.astype(int)).max(axis=2) for p in plain), key=lambda d: d.mean())
    assert np.percentile(diff, 25) < 10 and (diff > 60).mean() > 0.05


def test_info_on_a_stream(http_root):
    result = invoke("info", f"{http_root}/shapes.ts")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "unknown (live" in rows["frames"] and "128x96" in rows["size"] and "mpegts" in rows["source"]


# ----------------------------------------------------------------------------- bad input


def test_bad_live_input_is_one_line_and_writes_nothing(tmp_path, processes):
    out = tmp_path / "x.jsonl"
    started = time.monotonic()
    result = invoke("segment", f"udp://127.0.0.1:{free_port()}", "-o", out, "--timeout", "0.5", *FAST)
    assert result.exit_code == 1 and isinstance(result.exception, VideoError)
    assert "no answer after 0.5 s" in str(result.exception) and time.monotonic() - started < 20
    result = invoke("segment", "/dev/video97", "-o", out, *FAST)
    assert isinstance(result.exception, VideoError) and "no capture device" in str(result.exception)
    # panoptic video-level results need two passes: refused before the stream is opened
    result = invoke("segment", f"udp://127.0.0.1:{free_port()}", "-o", tmp_path / "p.json", "--task", "panoptic",
                    "--timeout", "30", *FAST)
    assert isinstance(result.exception, InputError) and "--format jsonl" in str(result.exception)
    result = invoke("segment", f"udp://127.0.0.1:{free_port()}", "-o", "-", "--format", "coco", *FAST)
    assert isinstance(result.exception, InputError) and "stdout" in str(result.exception)
    assert not out.exists() and not (tmp_path / "p.json").exists()
    run = videomt("segment", "-", "-o", out, *FAST, stdin=subprocess.PIPE)
    processes.append(run)
    _, err = run.communicate(b"no video here\n" * 200, timeout=60)
    lines = [line for line in err.decode().splitlines() if line.strip() and not line.startswith("Note:")]
    assert run.returncode == 1 and lines == ["Error: stdin does not hold a video stream FFmpeg can read (invalid "
                                             "data) (an mp4 needs its index first to be read from a pipe: send "
                                             "MPEG-TS, -f mpegts)."]
    assert not out.exists()


def _listening(port: int, timeout: float = 10) -> None:
    """Until a TCP socket listens on ``port`` (Linux: /proc/net/tcp, state 0A). Not by connecting:
    a one-client server would take the probe for its client."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        except OSError:
            pytest.skip("needs /proc/net/tcp (Linux) to know when the server listens")
        if any(row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A" for row in rows):
            return
        time.sleep(0.05)
    pytest.fail(f"nothing listens on 127.0.0.1:{port}")


def test_an_rtmp_stream_from_an_ffmpeg_server_gives_the_file_runs_frames(media, tmp_path, processes):
    """FFmpeg as a one-client RTMP server (``-listen 1``), the clip stream-copied into FLV: every
    frame arrives, with the file run's results (FLV clocks are milliseconds)."""
    reference = tmp_path / "file.jsonl"
    assert invoke("segment", media["mp4"], "-o", reference, "--chunk-size", "1", *FAST).exit_code == 0
    port = free_port(socket.SOCK_STREAM)
    url = f"rtmp://127.0.0.1:{port}/live/shapes"
    server = subprocess.Popen([FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-re", "-i", str(media["mp4"]),
                               "-c", "copy", "-f", "flv", "-listen", "1", url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes.append(server)
    _listening(port)
    out = tmp_path / "rtmp.jsonl"
    run = videomt("segment", url, "-o", out, "--chunk-size", "1", "--timeout", "5", *FAST)
    processes.append(run)
    assert run.wait(timeout=60) == 0, run.stderr.read().decode()
    live, file = frame_lines(read_jsonl(out)), frame_lines(read_jsonl(reference))
    assert [r["frame"] for r in live] == [r["frame"] for r in file] == list(range(45))
    for a, b in zip(live, file):
        assert a["time"] == pytest.approx(b["time"], abs=1e-3)
        assert a["objects"] == b["objects"]
