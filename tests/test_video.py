"""videomt_cli.video: probe, read_frames, read-ahead, VideoWriter, info_lines (tiny synthetic videos)."""

from __future__ import annotations

import gc
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from media import (  # noqa: E402
    MARKER,
    frame_image,
    make_audio_only,
    make_image_folder,
    make_video,
    marker_size,
    truncate,
    vfr_pts,
)

from videomt_cli import video as V  # noqa: E402
from videomt_cli.errors import InputError, VideoError, VideoMTError  # noqa: E402
from videomt_cli.video import (  # noqa: E402
    Frame,
    VideoWriter,
    info_lines,
    natural_key,
    probe,
    read_ahead,
    read_frames,
)

N = 12


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The videos most tests share, made once (about 0.3 s)."""
    d = tmp_path_factory.mktemp("media")
    return {
        "mp4": make_video(d / "a.mp4", frames=N),
        "ntsc_odd": make_video(d / "ntsc_odd.mp4", frames=N, size=(97, 71), fps=Fraction(30000, 1001), audio=True),
        "bframes": make_video(d / "bframes.mp4", frames=N, options={"preset": "veryfast", "bf": "2"}),
        "vfr": make_video(d / "vfr.mp4", frames=N, vfr=True, audio=True),
        "rot90": make_video(d / "rot90.mp4", frames=4, size=(64, 48), rotation=90),
        "mkv": make_video(d / "b.mkv", frames=30, audio=True),
        "faststart": make_video(d / "fs.mp4", frames=30, faststart=True),
        "plain30": make_video(d / "plain30.mp4", frames=30),
        "avi": make_video(d / "c.avi", frames=30, audio=True),  # audio: data, not the header, dominates
    }


def close_to(a: np.ndarray, b: np.ndarray, tol: float = 6.0) -> bool:
    """Lossy codecs: the mean absolute difference stays small for the same picture."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) < tol


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


# ----------------------------------------------------------------------------- probe


def test_probe_25fps(media):
    info = probe(media["mp4"])
    assert (info.width, info.height) == (64, 48)
    assert info.fps == Fraction(25) and isinstance(info.fps, Fraction)
    assert info.num_frames == N
    assert info.duration == pytest.approx(N / 25, abs=1e-3)
    assert info.codec == "h264"
    assert info.rotation == 0 and not info.has_audio and not info.is_image_folder
    assert isinstance(info.time_base, Fraction) and info.time_base > 0


def test_probe_ntsc_rate_odd_size_audio(media):
    info = probe(media["ntsc_odd"])
    assert info.fps == Fraction(30000, 1001)
    assert (info.width, info.height) == (97, 71)
    assert info.has_audio
    assert info.num_frames == N


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".webm", ".avi"])
def test_containers_decode_to_the_encoded_pictures(tmp_path, suffix):
    path = make_video(tmp_path / f"v{suffix}", frames=6, size=(64, 48))
    info = probe(path)
    frames = list(read_frames(info))
    assert [f.index for f in frames] == list(range(6))
    assert info.num_frames == 6 and len(info.timestamps) == 6
    for f in frames:
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 and f.image.flags.c_contiguous
        assert close_to(f.image, frame_image(f.index, 64, 48))
    assert frames[3].time == pytest.approx(3 / 25, abs=2e-3)


def test_probe_decides_by_content_not_suffix(media, tmp_path):
    renamed = tmp_path / "clip.bin"
    shutil.copy(media["mkv"], renamed)
    info = probe(renamed)
    assert info.codec == "h264" and (info.width, info.height) == (64, 48)


@pytest.mark.parametrize("rotation, corner", [(90, "top-right"), (180, "bottom-right"), (270, "bottom-left")])
def test_rotation_is_applied_to_size_and_pixels(tmp_path, rotation, corner):
    path = make_video(tmp_path / "r.mp4", frames=3, size=(64, 48), rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    size = (48, 64) if rotation in (90, 270) else (64, 48)
    assert (info.width, info.height) == size
    image = next(iter(read_frames(info))).image
    assert image.shape == (size[1], size[0], 3)
    m = marker_size(64, 48)
    h, w = image.shape[:2]
    corners = {
        "top-left": image[1 : m - 1, 1 : m - 1],
        "top-right": image[1 : m - 1, w - m + 1 : w - 1],
        "bottom-left": image[h - m + 1 : h - 1, 1 : m - 1],
        "bottom-right": image[h - m + 1 : h - 1, w - m + 1 : w - 1],
    }
    red = np.array(MARKER)
    for name, patch in corners.items():
        is_red = np.abs(patch.reshape(-1, 3).mean(0) - red).max() < 25
        assert is_red == (name == corner), name


def test_vfr_timestamps_are_kept(media):
    info = probe(media["vfr"])
    frames = list(read_frames(info))
    want = [float(Fraction(p, 1000)) for p in vfr_pts(N)]
    assert info.timestamps == pytest.approx(want, abs=1e-9)
    assert [f.time for f in frames] == pytest.approx(want, abs=1e-9)
    assert [f.pts for f in frames] == info.pts
    # index / fps would be wrong here: the steps are 40, 40, 120, 20, 80, 33 ms.
    assert frames[3].time == pytest.approx(0.2)


def test_audio_detection(media):
    assert probe(media["vfr"]).has_audio
    assert not probe(media["mp4"]).has_audio


def test_bframes_and_all_frames_in_order(media):
    info = probe(media["bframes"])
    frames = list(read_frames(info))
    assert [f.index for f in frames] == list(range(N))
    assert info.pts == sorted(info.pts) and len(set(info.pts)) == N
    for f in frames:
        assert close_to(f.image, frame_image(f.index, 64, 48))


# ----------------------------------------------------------------------------- image folders


def test_natural_key():
    names = ["frame_10.png", "frame_2.png", "Frame_1.png", "frame_11.png"]
    assert sorted(names, key=natural_key) == ["Frame_1.png", "frame_2.png", "frame_10.png", "frame_11.png"]


def test_image_folder_natural_order_and_pixels(tmp_path):
    folder = make_image_folder(tmp_path / "frames", n=12, size=(33, 21))
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"")
    info = probe(folder)
    assert info.is_image_folder
    assert info.file_names == [f"frame_{i}.png" for i in range(1, 13)]
    assert (info.width, info.height) == (33, 21)
    assert info.fps == Fraction(30) and info.num_frames == 12
    assert info.time_base == Fraction(1, 30)
    frames = list(read_frames(info, stride=5))
    assert [f.index for f in frames] == [0, 5, 10]
    for f in frames:
        np.testing.assert_array_equal(f.image, frame_image(f.index, 33, 21))  # png: lossless
    assert info.timestamps == pytest.approx([i / 30 for i in range(12)])
    assert info.pts == list(range(12))
    assert probe(folder, fps=12.5).fps == Fraction(25, 2)


def test_image_folder_with_mixed_sizes(tmp_path):
    folder = make_image_folder(tmp_path / "f", n=2, size=(16, 16))
    make_image_folder(folder, n=1, size=(20, 16), prefix="z")
    with pytest.raises(VideoError) as e:
        list(read_frames(probe(folder)))
    assert "one size" in one_line(e)


# ----------------------------------------------------------------------------- selection


def test_start_end_stride_indices(media):
    info = probe(media["bframes"])
    full = {f.index: f for f in read_frames(probe(media["bframes"]))}
    frames = list(read_frames(info, start=2, end=9, stride=3))
    assert [f.index for f in frames] == [2, 5, 8]
    for f in frames:
        np.testing.assert_array_equal(f.image, full[f.index].image)
        assert f.time == full[f.index].time and f.pts == full[f.index].pts
    # the rest was counted from packets: every frame has a timestamp, the count is the true one
    assert info.num_frames == N and len(info.timestamps) == N and len(info.pts) == N
    assert info.pts == sorted(info.pts)
    assert not info.truncated


def test_counting_after_end_matches_a_full_read_with_bframes(media):
    full = probe(media["bframes"])
    list(read_frames(full))
    for end in range(1, N + 1):
        info = probe(media["bframes"])
        assert [f.index for f in read_frames(info, end=end)] == list(range(end))
        assert info.pts == full.pts and info.timestamps == full.timestamps, end
        assert info.num_frames == N


def test_end_past_the_video_and_no_count_rest(media):
    assert [f.index for f in read_frames(media["mp4"], start=10, end=100)] == [10, 11]
    info = probe(media["mp4"])
    assert [f.index for f in read_frames(info, end=3, count_rest=False)] == [0, 1, 2]
    assert info.num_frames == N  # the container's count, kept


def test_skipped_frames_are_not_converted(media, monkeypatch):
    calls = []
    real = V._rgb
    monkeypatch.setattr(V, "_rgb", lambda frame, k: calls.append(1) or real(frame, k))
    frames = list(read_frames(media["mp4"], start=1, stride=4))
    assert [f.index for f in frames] == [1, 5, 9]
    assert len(calls) == 3


@pytest.mark.parametrize("kwargs", [{"start": -1}, {"stride": 0}, {"start": 5, "end": 2}])
def test_bad_selection_raises_at_call_time(media, kwargs):
    with pytest.raises(InputError):
        read_frames(media["mp4"], **kwargs)


# ----------------------------------------------------------------------------- read-ahead


def test_read_ahead_yields_everything_in_order(media):
    with read_ahead(read_frames(media["mp4"]), maxsize=2) as frames:
        got = [f.index for f in frames]
    assert got == list(range(N))


def test_read_ahead_reraises_errors_in_the_consumer():
    def source():
        yield 1
        yield 2
        raise ZeroDivisionError("boom in the decoder thread")

    p = read_ahead(source())
    got = []
    with pytest.raises(ZeroDivisionError, match="boom"):
        for x in p:
            got.append(x)
    assert got == [1, 2]
    p._thread.join(2)
    assert not p.alive


def _endless(state):
    try:
        i = 0
        while True:
            yield i
            i += 1
    finally:
        state["closed"] = True


def test_read_ahead_stops_on_early_break():
    state = {}
    with read_ahead(_endless(state), maxsize=3) as p:
        for x in p:
            if x == 5:
                break
    assert not p.alive
    assert state.get("closed")  # the source generator was closed in its own thread


def test_read_ahead_stops_when_dropped():
    state = {}
    p = read_ahead(_endless(state), maxsize=3)
    next(p)
    thread = p._thread
    del p
    gc.collect()
    thread.join(3)
    assert not thread.is_alive() and state.get("closed")


def test_read_ahead_stops_on_keyboard_interrupt():
    state = {}
    with pytest.raises(KeyboardInterrupt):
        with read_ahead(_endless(state)) as p:
            for x in p:
                if x == 2:
                    raise KeyboardInterrupt
    assert not p.alive and state.get("closed")


def test_read_ahead_closes_the_video(media):
    with read_ahead(read_frames(media["mp4"]), maxsize=1) as p:
        first = next(p)
    assert isinstance(first, Frame) and not p.alive


# ----------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path):
    with pytest.raises(VideoError) as e:
        probe(tmp_path / "nope.mp4")
    assert "does not exist" in one_line(e)


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError) as e:
        probe(tmp_path / "empty.mp4")
    assert "empty" in one_line(e)


def test_text_file_named_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError) as e:
        probe(tmp_path / "notes.mp4")
    assert "not a video PyAV/FFmpeg can read" in one_line(e)


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(VideoError) as e:
        probe(tmp_path)
    assert "no images" in one_line(e)


def test_audio_only(tmp_path):
    with pytest.raises(VideoError) as e:
        probe(make_audio_only(tmp_path / "song.m4a"))
    assert "no video stream" in one_line(e)


def test_errors_are_videomt_errors():
    assert issubclass(VideoError, VideoMTError)


# ----------------------------------------------------------------------------- truncated files


def test_mp4_cut_before_its_index_is_a_clear_error(media, tmp_path):
    cut = truncate(media["plain30"], tmp_path / "cut.mp4", 0.6)  # moov is at the end: gone
    with pytest.raises(VideoError) as e:
        probe(cut)
    assert "moov" in one_line(e)


@pytest.mark.parametrize("key", ["faststart", "mkv", "avi"])
def test_cut_video_yields_what_decodes(media, tmp_path, key):
    src = media[key]
    cut = truncate(src, tmp_path / f"cut{src.suffix}", 0.6)
    info = probe(cut)
    frames = list(read_frames(info))
    assert 5 < len(frames) < 30
    assert [f.index for f in frames] == list(range(len(frames)))
    for f in frames:
        assert close_to(f.image, frame_image(f.index, 64, 48), tol=12)
    assert info.truncated and info.num_frames == len(frames)
    assert any("stopped after" in w for w in info.warnings)


def test_complete_video_is_not_truncated(media):
    for key in ("mkv", "faststart", "avi", "vfr"):
        info = probe(media[key])
        list(read_frames(info))
        assert not info.truncated and not info.warnings, key


# ----------------------------------------------------------------------------- writer


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
    a, b = probe(src), probe(out)
    fa, fb = list(read_frames(a)), list(read_frames(b))
    assert b.fps == Fraction(30000, 1001)
    assert (b.width, b.height) == (97, 71)  # exact odd size (yuv444p), with a warning
    assert any("yuv444p" in m for m in w.warnings)
    assert b.num_frames == a.num_frames == N
    assert b.timestamps == pytest.approx(a.timestamps, abs=1e-9)
    assert "audio" in _streams(out)
    for x, y in zip(fa, fb):
        assert close_to(x.image, y.image)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_writer_keeps_vfr_timestamps(media, tmp_path):
    for suffix in (".mp4", ".mkv"):
        out = tmp_path / f"vfr{suffix}"
        _copy(media["vfr"], out)
        a, b = probe(media["vfr"]), probe(out)
        list(read_frames(a)), list(read_frames(b))
        assert b.num_frames == N
        assert b.timestamps == pytest.approx(a.timestamps, abs=1e-9), suffix
        assert "audio" in _streams(out)


def test_writer_pad_odd_gives_yuv420p(media, tmp_path):
    out = tmp_path / "pad.mp4"
    _copy(media["ntsc_odd"], out, pad_odd=True)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert (probe(out).width, probe(out).height) == (98, 72)


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
    assert [round(t * 30, 6) for t in (list(read_frames(b)) and b.timestamps)] == [0, 1, 2, 3, 4]


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
    assert list(tmp_path.iterdir()) == []


def test_writer_without_pts_uses_the_nominal_rate(media, tmp_path):
    info = probe(media["mp4"])
    out = tmp_path / "out.mkv"
    with VideoWriter(out, info) as w:
        for f in read_frames(info, end=5, count_rest=False):
            w.write(f.image)
    b = probe(out)
    list(read_frames(b))
    assert b.timestamps == pytest.approx([i / 25 for i in range(5)], abs=1e-3)


# ----------------------------------------------------------------------------- info


def test_info_lines(media, tmp_path):
    rows = dict(info_lines(probe(media["ntsc_odd"])))
    assert rows["size"] == "97x71"
    assert rows["frames"] == str(N)
    assert rows["fps"] == "30000/1001 (29.970)"
    assert rows["codec"] == "h264" and rows["audio"] == "yes" and rows["rotation"] == "none"
    assert rows["duration"].endswith(" s")
    rot = dict(info_lines(probe(media["rot90"])))
    assert rot["rotation"] == "90 degrees clockwise" and rot["size"].startswith("48x64")
    folder = dict(info_lines(probe(make_image_folder(tmp_path / "f", n=3, size=(8, 8)))))
    assert folder["fps"].startswith("30") and "assumed" in folder["fps"]
    assert folder["frames"] == "3"
