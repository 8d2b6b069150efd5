"""videomt_cli.io.window: --start/--end/--stride values, Window checks and counts, and the window
applied by the reader on real videos (frame numbers and times, stride from the first kept frame)."""

from __future__ import annotations

import dataclasses
import sys
from fractions import Fraction
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
import iohelp  # noqa: E402
from iohelp import N, one_line, read_all  # noqa: E402
from media import make_image_folder, vfr_pts  # noqa: E402

from videomt_cli.errors import InputError  # noqa: E402
from videomt_cli.io.probe import probe  # noqa: E402
from videomt_cli.io.read import open_source  # noqa: E402
from videomt_cli.io.window import TimeSpec, Window  # noqa: E402

media = iohelp.media_fixture  # the shared videos, a session fixture

# ----------------------------------------------------------------------------- TimeSpec.parse


@pytest.mark.parametrize("text, frame, seconds", [
    ("120", 120, None),
    (" 7 ", 7, None),
    ("0", 0, None),
    (120, 120, None),
    (0, 0, None),
    ("4.5s", None, 4.5),
    ("4s", None, 4.0),
    ("4.s", None, 4.0),
    ("0s", None, 0.0),
    ("1:02.5", None, 62.5),
    ("1:02", None, 62.0),
    ("0:01:02", None, 62.0),
    ("1:00:00", None, 3600.0),
    ("2:03:04.25", None, 2 * 3600 + 3 * 60 + 4.25),
    (4.5, None, 4.5),
    (0.0, None, 0.0),
])
def test_timespec_parse_forms(text, frame, seconds):
    spec = TimeSpec.parse(text)
    assert spec == TimeSpec(frame=frame, seconds=seconds)
    if seconds is not None:
        assert spec.seconds == pytest.approx(seconds) and isinstance(spec.seconds, float)
    else:
        assert isinstance(spec.frame, int)


def test_timespec_parse_none_and_passthrough():
    assert TimeSpec.parse(None) is None
    spec = TimeSpec(frame=3)
    assert TimeSpec.parse(spec) is spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.frame = 4


def test_timespec_str():
    assert str(TimeSpec.parse("120")) == "120"
    assert str(TimeSpec.parse("4.5s")) == "4.5s"
    assert str(TimeSpec.parse("1:02.5")) == "62.5s"


@pytest.mark.parametrize("text", ["-1", -1, -0.5, "abc", "4.5m", "1:2:3:4", "", "s", "1.5", "1e3", "4,5s",
                                  "1:", ":30", "--2", True, False])
def test_timespec_parse_errors_name_the_option(text):
    with pytest.raises(InputError) as e:
        TimeSpec.parse(text, "--end")
    msg = one_line(e)
    assert "--end" in msg


def test_timespec_parse_error_says_what_is_accepted():
    with pytest.raises(InputError) as e:
        TimeSpec.parse("ten", "--start")
    msg = one_line(e)
    assert "'ten'" in msg and "120" in msg and "4.5s" in msg


# ----------------------------------------------------------------------------- Window


def test_window_defaults_and_of():
    w = Window()
    assert w.start is None and w.end is None and w.stride == 1
    w = Window.of("4.5s", 120, 2)
    assert w == Window(TimeSpec(seconds=4.5), TimeSpec(frame=120), 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.stride = 3


@pytest.mark.parametrize("stride", [0, -1, 1.5, "2", True, None])
def test_window_stride_must_be_a_whole_number(stride):
    with pytest.raises(InputError) as e:
        Window(stride=stride)
    assert "--stride" in one_line(e)


@pytest.mark.parametrize("start, end", [(5, 2), (5, 5), ("2s", "1s"), ("1:00", "0:30"), ("0.5s", "0.5s")])
def test_window_end_must_be_after_start(start, end):
    with pytest.raises(InputError) as e:
        Window.of(start, end)
    assert "--end must be after --start" in one_line(e)


def test_window_of_names_the_bad_option():
    with pytest.raises(InputError) as e:
        Window.of(start="x")
    assert "--start" in one_line(e)
    with pytest.raises(InputError) as e:
        Window.of(end="x")
    assert "--end" in one_line(e)


def test_window_mixed_kinds_are_not_compared():
    # a frame-number start and a time end cannot be compared before the video is known
    Window.of(start=100, end="1s")
    Window.of(start="10s", end=3)


@pytest.mark.parametrize("window, n, fps, want", [
    (Window(), 12, 25, 12),
    (Window(), None, 25, None),
    (Window.of(start=2, end=9, stride=3), 12, 25, 3),
    (Window.of(start=1, stride=4), 12, 25, 3),
    (Window.of(stride=5), 12, None, 3),
    (Window.of(end=100), 12, 25, 12),  # clipped to the video
    (Window.of(start=20), 12, 25, 0),  # after the end
    (Window.of(start=10, end=100), 12, 25, 2),
    (Window.of(start="0.2s", end="0.4s"), 12, 25, 5),  # frames 5..9 at 25 fps
    (Window.of(start="0.2s"), 12, Fraction(25), 7),
    (Window.of(end="1:00"), 12, 25, 12),
    (Window.of(start="0.2s"), 12, None, None),  # a time without a rate: cannot say
    (Window.of(end="0.2s"), 12, 0, None),
])
def test_window_expected(window, n, fps, want):
    assert window.expected(n, fps) == want


def test_window_check_against():
    Window.of(start=11).check_against(12, 0.48)
    Window.of(start="0.4s").check_against(12, 0.48)
    Window.of(start=100).check_against(None, None)  # unknown length: nothing to say yet
    Window.of(start="100s").check_against(12, None)
    Window().check_against(0, 0.0)
    with pytest.raises(InputError) as e:
        Window.of(start=12).check_against(12, 0.48)
    assert "12 frames" in one_line(e)
    with pytest.raises(InputError) as e:
        Window.of(start="0.5s").check_against(12, 0.48)
    assert "0.5s" in one_line(e)


# ----------------------------------------------------------------------------- applied by the reader


def _indices(source, **kwargs):
    frames, timeline = read_all(source, **kwargs)
    return [f.index for f in frames], frames, timeline


def test_time_start_and_end_on_a_constant_rate_video(media):
    info = probe(media["mp4"])  # 25 fps: frame i at i * 0.04 s
    got, frames, timeline = _indices(info, start="0.2s", end="0.4s")
    assert got == [5, 6, 7, 8, 9]  # [start, end): the frame at 0.4 s is not in
    assert [f.time for f in frames] == pytest.approx([i / 25 for i in got])
    assert timeline.num_frames == N
    assert Window.of("0.2s", "0.4s").expected(info.num_frames, info.fps) == len(got)
    # a time between two frames starts at the next frame
    assert _indices(info, start="0.21s")[0] == [6, 7, 8, 9, 10, 11]
    assert _indices(info, end="0.21s")[0] == [0, 1, 2, 3, 4, 5]
    # "m:ss" and float seconds are the same times
    assert _indices(info, start="0:00.2", end=0.4)[0] == got
    # mixed kinds: a frame-number start and a time end
    assert _indices(info, start=3, end="0.2s")[0] == [3, 4]


def test_time_window_on_a_variable_rate_video_uses_each_frames_time(media):
    info = probe(media["vfr"])
    times = [float(Fraction(p, 1000)) for p in vfr_pts(N)]  # 0, .04, .08, .2, .22, .3, .333, ...
    got, frames, timeline = _indices(info, start="0.1s", end="0.3s")
    assert got == [i for i, t in enumerate(times) if 0.1 <= t < 0.3] == [3, 4]
    assert [f.time for f in frames] == pytest.approx([times[i] for i in got])
    assert list(timeline.times) == pytest.approx(times)  # the rest still counted


def test_stride_counts_from_the_first_kept_frame(media):
    vfr = probe(media["vfr"])
    # the first frame at or after 0.1 s is frame 3: the stride counts from there, not from 0
    assert _indices(vfr, start="0.1s", stride=2)[0] == [3, 5, 7, 9, 11]
    mp4 = probe(media["mp4"])
    assert _indices(mp4, start="0.12s", stride=4)[0] == [3, 7, 11]
    assert _indices(mp4, start=1, stride=4)[0] == [1, 5, 9]
    assert _indices(mp4, start="0.13s", stride=5)[0] == [4, 9]


def test_windows_on_an_image_folder(tmp_path):
    folder = make_image_folder(tmp_path / "f", n=10, size=(8, 8))
    info = probe(folder, fps=10)
    got, _, timeline = _indices(info, start="0.25s", end="0.8s", stride=2)
    assert got == [3, 5, 7]
    assert timeline.num_frames == 10
    assert _indices(info, start=2, end=5)[0] == [2, 3, 4]


def test_window_expected_matches_the_reader(media):
    info = probe(media["mp4"])
    for window in (Window(), Window.of(2, 9, 3), Window.of(start=1, stride=4), Window.of(end=100),
                   Window.of(start="0.2s", end="0.4s"), Window.of(start="0.2s", stride=3), Window.of(end="0.12s")):
        got = list(open_source(info).frames(window))
        assert window.expected(info.num_frames, info.fps) == len(got), window


def test_window_expected_matches_the_reader_between_frames(media):
    info = probe(media["mp4"])  # 25 fps: 0.21 s lies between frame 5 (0.20 s) and frame 6 (0.24 s)
    for window in (Window.of(start="0.21s"), Window.of(end="0.21s")):  # 6 frames are read each time
        got = list(open_source(info).frames(window))
        assert window.expected(info.num_frames, info.fps) == len(got), window
