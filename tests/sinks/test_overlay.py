"""videomt_cli.sinks.overlay: drawing masks on frames, and overlay videos (timing, audio,
atomic output). Imports of our own modules are plain: a missing module fails these tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from media import frame_image, make_video  # noqa: E402
from sinkhelp import CATS, H, W  # noqa: E402

from videomt_cli import sinks  # noqa: E402
from videomt_cli.errors import InputError, OutputError  # noqa: E402
from videomt_cli.io import masks  # noqa: E402
from videomt_cli.io.probe import probe  # noqa: E402
from videomt_cli.io.read import open_source, read_frames  # noqa: E402
from videomt_cli.records import Segment, VideoResult  # noqa: E402
from videomt_cli.sinks.overlay import VIDEO_SUFFIXES, OverlaySink, draw_overlay, track_color, write_overlay  # noqa: E402

# ----------------------------------------------------------------------------- overlay drawing


def _frame(h=H, w=W):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_draw_overlay_blends_masked_pixels_only():
    h, w = 121, 163  # odd size, big enough for the label to sit outside the test region
    frame = _frame(h, w)
    m = np.zeros((h, w), bool)
    m[60:100, 40:120] = True
    seg = Segment(3, 1, 0.87)
    out = draw_overlay(frame, [(seg, m)], CATS, alpha=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8 and out is not frame
    color = np.array(track_color(3), float)
    inner = np.zeros_like(m)
    inner[64:96, 44:116] = True  # away from the outline
    expect = frame[inner].astype(float) * 0.5 + color * 0.5
    assert np.abs(out[inner].astype(float) - expect).max() <= 1
    far = np.ones_like(m)
    far[40:104, 30:130] = False  # away from the mask, its outline and its label
    assert np.array_equal(out[far], frame[far])
    assert not np.array_equal(out[55:60, 40:120], frame[55:60, 40:120])  # the label above the box
    assert np.array_equal(draw_overlay(frame, [], CATS), frame)
    zero = draw_overlay(frame, [(seg, m)], CATS, alpha=0.0)
    assert np.array_equal(zero[inner], frame[inner])
    one = draw_overlay(frame, [(seg, m)], CATS, alpha=1.0)
    assert (one[inner] == color.astype(np.uint8)).all()


def test_draw_overlay_colours_and_order():
    frame = np.zeros((41, 57, 3), np.uint8)
    a = np.zeros((41, 57), bool)
    a[10:30, 5:40] = True
    b = np.zeros((41, 57), bool)
    b[15:35, 20:50] = True
    lo, hi = Segment(1, 1, 0.2), Segment(2, 2, 0.8)
    out = draw_overlay(frame, [(hi, b), (lo, a)], CATS, alpha=1.0)
    assert tuple(out[25, 30]) == track_color(2)  # overlap: the higher score on top
    stuff = Segment(4, 7, 0.5, isthing=False)
    out = draw_overlay(frame, [(stuff, a)], CATS, alpha=1.0)
    assert tuple(out[27, 10]) == (70, 130, 180)  # stuff: category colour (away from label and outline)
    out = draw_overlay(frame, [(lo, a)], CATS, alpha=1.0, color_by="category")
    assert tuple(out[27, 10]) == (220, 20, 60)
    out = draw_overlay(frame, [(stuff, a)], CATS, alpha=1.0, color_by="track")
    assert tuple(out[27, 10]) == track_color(4)
    assert track_color(5) == track_color(5) != track_color(6)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 5), (33, 2)])
def test_draw_overlay_tiny_and_odd_frames(shape):
    frame = _frame(*shape)
    m = np.ones(shape, bool)
    out = draw_overlay(frame, [(Segment(1, 1, 0.5), m)], CATS)
    assert out.shape == frame.shape


def test_draw_overlay_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        draw_overlay(_frame(), [(Segment(1, 1, 0.5), np.ones((3, 3), bool))], CATS)
    with pytest.raises(ValueError):
        draw_overlay(np.zeros((4, 4), np.uint8), [], CATS)
    with pytest.raises(ValueError):
        draw_overlay(_frame(), [], CATS, color_by="rainbow")


# ----------------------------------------------------------------------------- overlay video


def test_overlay_video_round_trip(tmp_path):
    src = make_video(tmp_path / "src.mp4", frames=6, size=(64, 48), audio=True, vfr=True)
    info = probe(src)
    frames = list(read_frames(str(src)))
    n = len(frames)
    m = np.zeros((info.height, info.width), bool)
    m[10:30, 10:40] = True
    rles = [masks.encode(m)[0] if t % 2 == 0 else None for t in range(n)]
    r = VideoResult.from_masks(info, "instance", CATS, [(Segment(1, 1, 0.9), rles)], processed=list(range(0, n, 2)))
    assert r.num_frames == n
    calls = []
    out = write_overlay(r, src, tmp_path / "ov.mp4", alpha=0.5, progress=lambda i, t: calls.append((i, t)))
    assert out.is_file() and calls[-1] == (n, n)
    back = list(read_frames(str(out)))
    assert len(back) == n and back[0].image.shape == frames[0].image.shape
    assert [f.time for f in back] == pytest.approx([f.time for f in frames], abs=1e-3)  # VFR kept
    assert probe(out).has_audio
    inside = (slice(14, 26), slice(14, 36))
    diff = [np.abs(b.image[inside].astype(int) - f.image[inside].astype(int)).mean() for b, f in zip(back, frames)]
    assert diff[0] > 10 and diff[2] > 10  # drawn
    assert diff[1] < 6 and diff[3] < 6  # null frames: unchanged up to the lossy re-encode
    with pytest.raises(OutputError, match="--overwrite"):
        write_overlay(r, src, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ov.mp4", "src.mp4"]


def test_overlay_interrupted_leaves_nothing(tmp_path):
    src = make_video(tmp_path / "src.mp4", frames=4, size=(32, 24))
    info = probe(src)
    r = VideoResult.from_masks(info, "instance", CATS, [(Segment(1, 1, 0.9), [None] * 4)])

    def stop(i, total):
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_overlay(r, src, tmp_path / "ov.mp4", progress=stop)
    assert [p.name for p in tmp_path.iterdir()] == ["src.mp4"]


def _arrays_result():
    pictures = [frame_image(i, 32, 24) for i in range(4)]
    info = open_source(pictures, fps=10).info
    m = np.zeros((24, 32), bool)
    m[4:20, 4:28] = True
    r = VideoResult.from_masks(info, "instance", CATS, [(Segment(1, 1, 0.9), [masks.encode(m)[0]] * 4)])
    return pictures, r


def _check_arrays_overlay(out, pictures):
    back = list(read_frames(out))
    assert len(back) == 4
    inside = (slice(8, 16), slice(8, 24))
    assert all(np.abs(b.image[inside].astype(int) - p[inside].astype(int)).mean() > 10
               for b, p in zip(back, pictures))
    assert [f.time for f in back] == pytest.approx([0, 0.1, 0.2, 0.3], abs=1e-3)  # the result's 10 fps


def test_overlay_of_arrays_needs_the_frames_again(tmp_path):
    pictures, r = _arrays_result()
    with pytest.raises(InputError, match="source="):
        with sinks.open_sink(tmp_path / "a.mp4") as sink:
            sink.add(r)
    assert list(tmp_path.iterdir()) == []
    out = write_overlay(r, open_source(pictures, fps=10), tmp_path / "b.mp4")
    _check_arrays_overlay(out, pictures)


def test_overlay_of_arrays_keeps_the_results_rate(tmp_path):
    pictures, r = _arrays_result()
    out = write_overlay(r, pictures, tmp_path / "b.mp4")
    _check_arrays_overlay(out, pictures)


def test_overlay_sink_holds_one_video_and_checks_options(tmp_path):
    src = make_video(tmp_path / "src.mp4", frames=3, size=(32, 24))
    r = VideoResult.from_masks(probe(src), "instance", CATS, [(Segment(1, 1, 0.9), [None] * 3)])
    with pytest.raises(OutputError, match="one video"):
        with OverlaySink(tmp_path / "ov.mkv") as sink:
            sink.add(r)
            sink.add(r)
    assert [p.name for p in tmp_path.iterdir()] == ["src.mp4"]
    with pytest.raises(InputError, match="suffix"):
        OverlaySink(tmp_path / "ov.gif")
    with pytest.raises(InputError, match="alpha"):
        OverlaySink(tmp_path / "ov.mp4", alpha=1.5)
    assert set(VIDEO_SUFFIXES) == {".mp4", ".mov", ".mkv", ".webm", ".ts"}
    with OverlaySink(tmp_path / "ov.mkv") as sink:
        sink.add(r)
    assert sink.count == 1 and len(list(read_frames(tmp_path / "ov.mkv"))) == 3


@pytest.mark.parametrize("extra", [-2, 2])
def test_overlay_refuses_results_of_another_frame_count(tmp_path, extra):
    from videomt_cli.errors import DatasetError

    src = make_video(tmp_path / "src.mp4", frames=6, size=(32, 24))
    n = 6 + extra
    m = np.zeros((24, 32), bool)
    m[4:20, 4:28] = True
    r = VideoResult.from_masks(probe(src), "instance", CATS, [(Segment(1, 1, 0.9), [masks.encode(m)[0]] * n)])
    with pytest.raises(DatasetError) as e:
        write_overlay(r, src, tmp_path / "ov.mp4")
    message = str(e.value)
    assert "\n" not in message and f"the results have {n}" in message
    assert ("decodes to 6 frames" if extra > 0 else "more than 4") in message
    assert [p.name for p in tmp_path.iterdir()] == ["src.mp4"]  # nothing half-written
