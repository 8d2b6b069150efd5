"""videomt_cli.io.writer: VideoWriter round trips (rate, size, timestamps, audio, rotation),
atomic output, and the BackgroundWriter encoder thread."""

from __future__ import annotations

import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
import iohelp  # noqa: E402
from iohelp import N, close_to, read_all  # noqa: E402
from media import frame_image, make_image_folder  # noqa: E402

from videomt_cli.errors import InputError, VideoError  # noqa: E402
from videomt_cli.io.probe import probe  # noqa: E402
from videomt_cli.io.read import read_frames  # noqa: E402
from videomt_cli.io.writer import BackgroundWriter, VideoWriter  # noqa: E402
from videomt_cli.records import VideoInfo  # noqa: E402

media = iohelp.media_fixture  # the shared videos, a session fixture


def _copy(src, dst, **kwargs) -> VideoWriter:
    info = probe(src)
    with VideoWriter(dst, info, audio_from=src if info.has_audio else None, **kwargs) as w:
        for f in read_frames(info):
            w.write(f.image, f.pts)
    return w


def _streams(path) -> list[str]:
    with av.open(str(path)) as c:
        return [s.type for s in c.streams]


def test_writer_round_trip_exact_rate_size_odd_audio(media, tmp_path):
    src = media["ntsc_odd"]
    out = tmp_path / "out.mp4"
    w = _copy(src, out)
    assert w.frames_written == N
    a, b = probe(src), probe(out)
    fa, ta = read_all(a)
    fb, tb = read_all(b)
    assert b.fps == Fraction(30000, 1001)
    assert (b.width, b.height) == (97, 71)  # exact odd size (yuv444p), with a warning
    assert any("yuv444p" in m for m in w.warnings)
    assert b.num_frames == a.num_frames == N
    assert tb.num_frames == ta.num_frames == N
    assert list(tb.times) == pytest.approx(ta.times, abs=1e-9)
    assert "audio" in _streams(out)
    for x, y in zip(fa, fb):
        assert close_to(x.image, y.image)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_writer_keeps_vfr_timestamps(media, tmp_path):
    for suffix in (".mp4", ".mkv"):
        out = tmp_path / f"vfr{suffix}"
        _copy(media["vfr"], out)
        _, ta = read_all(probe(media["vfr"]))
        _, tb = read_all(probe(out))
        assert tb.num_frames == N
        assert list(tb.times) == pytest.approx(ta.times, abs=1e-9), suffix
        assert "audio" in _streams(out)


def test_writer_pad_odd_gives_yuv420p(media, tmp_path):
    out = tmp_path / "pad.mp4"
    w = _copy(media["ntsc_odd"], out, pad_odd=True)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert (probe(out).width, probe(out).height) == (98, 72)
    assert any("padded" in m for m in w.warnings)


def test_writer_rotated_source_is_written_upright(media, tmp_path):
    out = tmp_path / "rot.mp4"
    _copy(media["rot90"], out)
    a, b = probe(media["rot90"]), probe(out)
    assert b.rotation == 0 and (b.width, b.height) == (a.width, a.height) == (48, 64)
    assert close_to(next(iter(read_frames(b))).image, next(iter(read_frames(a))).image)


def test_writer_from_image_folder(tmp_path):
    folder = make_image_folder(tmp_path / "frames", n=5, size=(32, 24))
    out = tmp_path / "folder.mp4"
    _copy(folder, out)
    b = probe(out)
    assert b.fps == Fraction(30) and b.num_frames == 5
    frames, timeline = read_all(b)
    assert len(frames) == 5
    assert [round(t * 30, 6) for t in timeline.times] == [0, 1, 2, 3, 4]


def test_writer_skips_audio_the_container_cannot_hold(media, tmp_path):
    out = tmp_path / "out.webm"  # aac cannot go into webm
    w = _copy(media["vfr"], out)
    assert _streams(out) == ["video"]
    assert any("without audio" in m for m in w.warnings)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_writer_leaves_nothing_after_an_exception(media, tmp_path, exc):
    info = probe(media["vfr"])
    out = tmp_path / "out.mp4"
    with pytest.raises(exc):
        with VideoWriter(out, info, audio_from=media["vfr"]) as w:
            for f in read_frames(info):
                w.write(f.image, f.pts)
                assert not out.exists()  # only the hidden temp file while writing
                assert len(list(tmp_path.iterdir())) == 1
                if f.index == 5:
                    raise exc()
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_wrong_frames_and_suffix(media, tmp_path):
    info = probe(media["mp4"])
    with pytest.raises(VideoError):
        VideoWriter(tmp_path / "out.gif", info)
    with pytest.raises(VideoError):
        with VideoWriter(tmp_path / "missing" / "out.mp4", info):
            pass
    with pytest.raises(InputError):
        with VideoWriter(tmp_path / "out.mp4", info) as w:
            w.write(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(VideoError):  # outside its with-block
        VideoWriter(tmp_path / "out.mp4", info).write(np.zeros((48, 64, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_writer_without_pts_uses_the_nominal_rate(media, tmp_path):
    info = probe(media["mp4"])
    out = tmp_path / "out.mkv"
    with VideoWriter(out, info) as w:
        for f in read_frames(info, end=5, count_rest=False):
            w.write(f.image)
    _, timeline = read_all(probe(out))
    assert list(timeline.times) == pytest.approx([i / 25 for i in range(5)], abs=1e-3)


def test_writer_from_arrays_info(tmp_path):
    from videomt_cli.io.read import open_source

    frames = [frame_image(i, 32, 24) for i in range(4)]
    source = open_source(frames, fps=10)
    out = tmp_path / "arrays.mp4"
    with VideoWriter(out, source.info) as w:
        for f in source.frames():
            w.write(f.image, f.pts)
    got, timeline = read_all(out)
    assert len(got) == 4 and list(timeline.times) == pytest.approx([0, 0.1, 0.2, 0.3], abs=1e-3)
    for f in got:
        assert close_to(f.image, frames[f.index])


# ----------------------------------------------------------------------------- BackgroundWriter

INFO = VideoInfo(path="<test>", width=64, height=48, fps=Fraction(25), time_base=Fraction(1, 25), kind="arrays")


def _picture(i):
    return frame_image(i, INFO.width, INFO.height)


def test_background_writer_writes_every_frame_in_order(tmp_path):
    out = tmp_path / "bg.mp4"
    n = 15
    with VideoWriter(out, INFO) as w, BackgroundWriter(w, maxsize=2) as bg:
        for i in range(n):
            bg.write(_picture(i), i)
    assert w.frames_written == n
    got, timeline = read_all(out)
    assert [f.index for f in got] == list(range(n))
    assert list(timeline.times) == pytest.approx([i / 25 for i in range(n)], abs=1e-3)
    for f in got:
        assert close_to(f.image, _picture(f.index))
        diffs = [np.abs(f.image.astype(int) - _picture(j)).mean() for j in range(n)]
        assert int(np.argmin(diffs)) == f.index  # the frame written at that place, not a neighbour
    assert [p.name for p in tmp_path.iterdir()] == ["bg.mp4"]


def test_background_writer_error_raised_on_exit(tmp_path):
    out = tmp_path / "bg.mp4"
    with pytest.raises(InputError, match="frame must be"):
        with VideoWriter(out, INFO) as w, BackgroundWriter(w) as bg:
            bg.write(_picture(0), 0)
            bg.write(np.zeros((5, 5, 3), np.uint8), 1)  # fails in the encoder thread
    assert list(tmp_path.iterdir()) == []


def test_background_writer_error_raised_by_the_next_write(tmp_path):
    out = tmp_path / "bg.mp4"
    raised_by_write = False
    with pytest.raises(InputError, match="frame must be"):
        with VideoWriter(out, INFO) as w, BackgroundWriter(w) as bg:
            bg.write(np.zeros((5, 5, 3), np.float32), 0)
            deadline = time.monotonic() + 10
            try:
                while time.monotonic() < deadline:
                    bg.write(_picture(1), None)
                    time.sleep(0.01)
            except InputError:
                raised_by_write = True
                raise
    assert raised_by_write
    assert w.frames_written == 0  # nothing queued after the failure was encoded
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_background_writer_caller_exception_leaves_nothing(tmp_path, exc):
    out = tmp_path / "bg.mp4"
    with pytest.raises(exc):
        with VideoWriter(out, INFO) as w, BackgroundWriter(w) as bg:
            for i in range(6):
                bg.write(_picture(i), i)
            raise exc()
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
