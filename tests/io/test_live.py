"""Live sources (``io.live``) on real streams: FFmpeg (the ffmpeg program of imageio-ffmpeg) sends
MPEG-TS to UDP and TCP ports of 127.0.0.1, ``http.server`` serves files and an HLS playlist from
a thread, a pipe stands in for stdin. Every test stops what it starts (timeouts everywhere).

What is checked: a live read gives the frames, times and results of the same video read as a file
(stdin, TCP, HTTP, HLS: byte streams that lose nothing); frames arrive while the sender sends;
``realtime`` keeps the newest frame and counts the dropped ones (every arrived frame is either
processed or dropped, once); a full buffer drops the oldest frames of a sender that cannot wait
and makes a sender that can wait (HTTP) wait instead; ``stop()`` ends the stream with what has
arrived; the window ends a stream; UDP ends by the read timeout, with a warning; bad input is one
clear error (nothing listens, refused, not video, no device, stdin a terminal, a protocol this
FFmpeg lacks). Reconnecting to a restarted sender is tested through the CLI (``tests/cli/test_cli_live.py``).
"""

from __future__ import annotations

import functools
import http.server
import os
import pty
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

from media import ffmpeg, make_audio_only  # noqa: E402
from videomt_cli.errors import InputError, VideoError  # noqa: E402
from videomt_cli.io import live as live_io  # noqa: E402
from videomt_cli.io.live import LiveSource, is_live, stream_name, waits_for_reader  # noqa: E402
from videomt_cli.io.read import read_frames  # noqa: E402
from videomt_cli.io.window import Window  # noqa: E402
from videomt_cli.training import synth  # noqa: E402

FRAMES, FPS = 45, 30


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """The bundled model's kind of video (shapes), 45 frames of 96x128 at 30 fps, as mp4 and as
    the same H.264 stream in MPEG-TS; and an HLS copy of it."""
    root = tmp_path_factory.mktemp("live")
    mp4 = synth.make_example_video(root / "shapes.mp4", seed=1, frames=FRAMES, size=(96, 128), fps=FPS)
    ts = root / "shapes.ts"
    ffmpeg("-i", mp4, "-c", "copy", "-f", "mpegts", ts)
    (root / "hls").mkdir()
    ffmpeg("-i", mp4, "-c", "copy", "-f", "hls", "-hls_time", "0.5", "-hls_list_size", "0", root / "hls" / "index.m3u8")
    return {"mp4": mp4, "ts": ts, "root": root}


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(path, url: str, realtime: bool = True, loops: int = 0) -> subprocess.Popen:
    """ffmpeg sending ``path`` (stream copy) as MPEG-TS to ``url``, at its frame rate with ``-re``."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error"]
    cmd += ["-re"] if realtime else []
    cmd += ["-stream_loop", str(loops)] if loops else []
    cmd += ["-i", str(path), "-c", "copy", "-f", "mpegts", url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def processes():
    """Processes a test starts: all killed at its end."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


@pytest.fixture
def http_root(media):
    """An HTTP server on a loopback port serving the media folder (a thread, shut down after)."""
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


def read_all(source: LiveSource, size: int = 4, consume=None) -> list:
    """Every frame of one pass (in chunks of up to ``size``); ``consume(chunk)`` runs per chunk."""
    frames = []
    reader = source.frames()
    for chunk in reader.chunks(size):
        frames.extend(chunk)
        if consume is not None:
            consume(chunk)
        reader.done(chunk)
    return frames


def file_frames(path) -> list:
    return list(read_frames(path))


def same_pictures(live_frames, reference) -> None:
    assert [f.index for f in live_frames] == [f.index for f in reference]
    np.testing.assert_allclose([f.time for f in live_frames], [f.time for f in reference], atol=1e-6)
    for a, b in zip(live_frames, reference):
        assert np.array_equal(a.image, b.image)  # the same H.264 bytes decode to the same pixels


# ----------------------------------------------------------------------------- names and rules


def test_what_is_live_and_what_waits():
    assert is_live("-") and is_live("udp://127.0.0.1:5000") and is_live("rtsp://cam/1") and is_live("/dev/video0")
    assert not is_live("video.mp4") and not is_live(Path("x.ts")) and not is_live(["frames"])
    assert waits_for_reader("-") and waits_for_reader("http://h/x.m3u8") and waits_for_reader("tcp://h:1")
    assert waits_for_reader("clip.mp4")
    for url in ("udp://h:1", "rtsp://h/x", "rtmp://h/x", "srt://h:1", "/dev/video0"):
        assert not waits_for_reader(url)
    assert stream_name("-") == "stdin" and stream_name("/dev/video0") == "video0"
    assert stream_name("udp://127.0.0.1:5000?pkt_size=1316") == "127.0.0.1_5000"
    assert stream_name("https://cdn.example.com/live/cam1/index.m3u8") == "index"
    assert stream_name("rtsp://user:pw@cam.local:554/stream1") == "stream1"


class _F:
    def __init__(self, pts, tb=Fraction(1, 90000)):
        self.pts, self.time_base = pts, tb


def test_the_clock_stays_continuous_through_restarts_wraps_and_reconnects():
    clock = live_io._Clock(Fraction(1, 30), jump=5.0, time_base=Fraction(1, 90000))
    times = [clock.stamp(_F(p))[0] for p in (126000, 129000, 132000)]  # an MPEG-TS start at 1.4 s
    assert times == pytest.approx([0, 1 / 30, 2 / 30])
    assert clock.stamp(_F(9000))[0] == pytest.approx(3 / 30)  # went back: a sender restarted
    assert clock.stamp(_F(12000))[0] == pytest.approx(4 / 30)  # and its own clock goes on from there
    assert clock.stamp(_F(12000 + 90000 * 60))[0] == pytest.approx(5 / 30)  # a jump of a minute
    assert clock.stamp(_F(None))[0] == pytest.approx(6 / 30)  # no timestamp: the nominal rate
    clock.rejoin()
    t, pts = clock.stamp(_F(777, Fraction(1, 1000)))  # a reconnect, another time base
    assert t == pytest.approx(7 / 30) and pts == 21000


# ----------------------------------------------------------------------------- lossless paths


def test_stdin_gives_the_frames_of_the_file(media, monkeypatch):
    read_end, write_end = os.pipe()
    data = media["ts"].read_bytes()
    writer = threading.Thread(target=lambda: (os.write(write_end, data), os.close(write_end)), daemon=True)
    writer.start()
    with os.fdopen(read_end, "rb") as pipe:
        monkeypatch.setattr(sys, "stdin", pipe)
        with LiveSource("-", timeout=5) as source:
            assert source.info.kind == "live" and source.info.num_frames is None
            assert (source.info.width, source.info.height, source.info.fps) == (128, 96, 30)
            frames = read_all(source)
            assert source.ended == "end of stream" and source.stats().dropped == 0
    writer.join(5)
    same_pictures(frames, file_frames(media["mp4"]))
    assert source.stats().processed == FRAMES and source.stats().latency is not None


def test_http_and_hls_give_the_frames_of_the_file(media, http_root):
    reference = file_frames(media["mp4"])
    for url in (f"{http_root}/shapes.ts", f"{http_root}/hls/index.m3u8"):
        with LiveSource(url, timeout=5) as source:
            same_pictures(read_all(source), reference)
            assert source.ended == "end of stream"


def test_tcp_from_a_sender_that_waits_loses_nothing_with_a_tiny_buffer(media, processes):
    port = free_port(socket.SOCK_STREAM)
    processes.append(send(media["mp4"], f"tcp://127.0.0.1:{port}?listen=1", realtime=False))
    deadline = time.monotonic() + 10
    while True:  # the listener needs a moment to open its port
        try:
            source = LiveSource(f"tcp://127.0.0.1:{port}", timeout=5, buffer=2)
            break
        except VideoError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with source:
        frames = read_all(source, size=1, consume=lambda chunk: time.sleep(0.01))  # slower than the sender
    assert source.stats().dropped == 0 and not source.warnings
    same_pictures(frames, file_frames(media["mp4"]))


# ----------------------------------------------------------------------------- live UDP


def open_udp(path, processes, loops: int = 0, **options) -> LiveSource:
    port = free_port()
    processes.append(send(path, f"udp://127.0.0.1:{port}?pkt_size=1316", loops=loops))
    return LiveSource(f"udp://127.0.0.1:{port}", **{"timeout": 5, **options})


def test_udp_frames_arrive_while_the_sender_sends(media, processes):
    with open_udp(media["mp4"], processes, loops=1, timeout=1.0) as source:
        sender = processes[-1]
        arrived_during = 0

        def consume(chunk):
            nonlocal arrived_during
            if sender.poll() is None:
                arrived_during += len(chunk)

        frames = read_all(source, size=1, consume=consume)
    assert arrived_during >= 10  # not all at the end
    assert source.ended == "connection lost"  # UDP has no end: the sender went quiet for 1 s
    assert any("connection lost (no data for 1 s)" in w for w in source.warnings)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert np.all(np.diff([f.time for f in frames]) > 0)
    arrivals = [f.arrival for f in frames]
    assert arrivals == sorted(arrivals) and arrivals[-1] - arrivals[0] > 1.0  # spread as sent, at 30 fps


def test_realtime_keeps_the_newest_frame_and_counts_the_rest(media, processes):
    sizes = []

    def slow(chunk):  # a model at ~6 frames/s on a 30 frames/s stream
        sizes.append(len(chunk))
        time.sleep(0.15)

    with open_udp(media["mp4"], processes, timeout=1.0, realtime=True) as source:
        taken = read_all(source, size=8, consume=slow)
        stats = source.stats()
        drops = source.take_drops()
    assert source.buffer_size == 1 and set(sizes) == {1}  # only the newest frame ever waits
    assert stats.dropped > stats.processed / 2 and stats.dropped == len(drops)
    kept, lost = [f.index for f in taken], [d.index for d in drops]
    assert sorted(kept + lost) == list(range(stats.frames))  # every frame once: processed or dropped
    assert lost == sorted(lost) and not set(kept) & set(lost)
    gaps = np.diff(kept)
    assert gaps.max() > 1  # the frames between are skipped, not queued


def test_a_full_buffer_drops_the_oldest_frames_of_a_sender_that_cannot_wait(media, processes):
    with open_udp(media["mp4"], processes, timeout=1.0, buffer=4) as source:
        taken = read_all(source, size=2, consume=lambda chunk: time.sleep(0.12))
        drops = source.take_drops()
    assert drops and any("buffer of 4 frames" in w and "oldest" in w for w in source.warnings)
    kept = [f.index for f in taken]
    assert sorted(kept + [d.index for d in drops]) == list(range(source.stats().frames))


def test_a_sender_that_can_wait_is_made_to_wait(media, http_root):
    with LiveSource(f"{http_root}/shapes.ts", timeout=5, buffer=3) as source:
        frames = read_all(source, size=1, consume=lambda chunk: time.sleep(0.005))
    assert len(frames) == FRAMES and source.stats().dropped == 0 and not source.warnings


def test_stop_ends_the_stream_with_what_has_arrived(media, processes):
    with open_udp(media["mp4"], processes, loops=3) as source:
        reader = source.frames()
        got, stopped_at = [], None
        for chunk in reader.chunks(1):
            got.extend(chunk)
            if len(got) == 10:
                stopped_at = time.monotonic()
                source.stop()
        assert time.monotonic() - stopped_at < 1.5 and source.ended == "stopped"
    assert 10 <= len(got) < 4 * FRAMES and [f.index for f in got] == list(range(len(got)))
    assert reader.timeline is not None and reader.timeline.num_frames >= len(got)


def test_the_window_ends_a_stream_and_strides_it(media, http_root):
    with LiveSource(f"{http_root}/shapes.ts", timeout=5) as source:
        reader = source.frames(Window.of(start=3, end="0.5s", stride=2))
        frames = [f for chunk in reader.chunks(4) for f in chunk]
    assert [f.index for f in frames] == [3, 5, 7, 9, 11, 13]
    assert source.ended == "window end" and source.stats().dropped == 0


# ----------------------------------------------------------------------------- bad input


def test_a_url_nothing_answers_at_fails_after_the_timeout():
    started = time.monotonic()
    with pytest.raises(VideoError, match=r"no answer after 0.5 s.*--timeout"):
        LiveSource(f"udp://127.0.0.1:{free_port()}", timeout=0.5)
    assert time.monotonic() - started < 5


def test_a_refused_connection_a_missing_device_and_an_unknown_protocol_are_one_line():
    with pytest.raises(VideoError, match="connection refused"):
        LiveSource(f"tcp://127.0.0.1:{free_port(socket.SOCK_STREAM)}", timeout=2)
    with pytest.raises(VideoError, match=r"no capture device /dev/video97.*ls /dev/video"):
        LiveSource("/dev/video97")
    try:
        LiveSource("srt://127.0.0.1:1?connect_timeout=200", timeout=1)
    except VideoError as e:
        # PyAV's wheels have no SRT; a build with it fails here for nothing listening
        assert "pipe it in" in str(e) or "no answer" in str(e) or "refused" in str(e) or "cannot open" in str(e)


def test_a_stream_that_is_not_video_is_refused(tmp_path, http_root, media, monkeypatch):
    (media["root"] / "noise.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes())
    with pytest.raises(VideoError, match="does not hold a video stream"):
        LiveSource(f"{http_root}/noise.bin", timeout=5)
    make_audio_only(media["root"] / "tone.m4a")
    with pytest.raises(VideoError, match=r"has no video stream \(it holds: audio\)"):
        LiveSource(f"{http_root}/tone.m4a", timeout=5)
    with pytest.raises(VideoError, match="404"):
        LiveSource(f"{http_root}/missing.ts", timeout=5)
    read_end, write_end = os.pipe()
    os.write(write_end, b"just text, no container\n" * 100)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        monkeypatch.setattr(sys, "stdin", pipe)
        with pytest.raises(VideoError, match="stdin does not hold a video stream"):
            LiveSource("-", timeout=2)


def test_stdin_must_be_a_pipe_that_says_something(monkeypatch):
    main, other = pty.openpty()
    try:
        with os.fdopen(other, "rb", closefd=False) as tty:
            monkeypatch.setattr(sys, "stdin", tty)
            with pytest.raises(InputError, match="stdin is a terminal"):
                LiveSource("-")
    finally:
        os.close(main)
        os.close(other)
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(read_end, "rb") as pipe:
            monkeypatch.setattr(sys, "stdin", pipe)
            started = time.monotonic()
            with pytest.raises(VideoError, match="stdin: no answer after 0.5 s"):
                LiveSource("-", timeout=0.5)
            assert time.monotonic() - started < 3
    finally:
        os.close(write_end)
    with pytest.raises(InputError, match="stdin"):
        LiveSource("-", reconnect=2)


def test_a_live_source_is_read_once_and_options_are_checked(media, http_root):
    with LiveSource(f"{http_root}/shapes.ts", timeout=5) as source:
        read_all(source)
        with pytest.raises(InputError, match="read once"):
            source.frames()
    for bad in (dict(timeout=0), dict(reconnect=-1), dict(buffer=0), dict(timeout="10")):
        with pytest.raises(InputError):
            LiveSource(f"{http_root}/shapes.ts", **bad)
