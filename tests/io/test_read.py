"""videomt_cli.io.read: decoding files and image folders to RGB frames, windows applied while
decoding, the Timeline of a pass, cut files, and array sources (tiny synthetic videos)."""

from __future__ import annotations

import dataclasses
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
import iohelp  # noqa: E402
from iohelp import N, close_to, one_line, read_all  # noqa: E402
from media import MARKER, frame_image, make_image_folder, make_video, marker_size, truncate, vfr_pts  # noqa: E402

from videomt_cli.errors import InputError, VideoError  # noqa: E402
from videomt_cli.io import read as R  # noqa: E402
from videomt_cli.io.probe import probe  # noqa: E402
from videomt_cli.io.read import Frame, Reader, Source, open_source, read_frames  # noqa: E402
from videomt_cli.io.window import Window  # noqa: E402
from videomt_cli.records import Timeline  # noqa: E402

media = iohelp.media_fixture  # the shared videos, a session fixture

# ----------------------------------------------------------------------------- video files


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".webm", ".avi"])
def test_containers_decode_to_the_encoded_pictures(tmp_path, suffix):
    path = make_video(tmp_path / f"v{suffix}", frames=6, size=(64, 48))
    info = probe(path)
    frames, timeline = read_all(info)
    assert [f.index for f in frames] == list(range(6))
    assert isinstance(timeline, Timeline)
    assert timeline.num_frames == 6 and len(timeline.times) == 6 and len(timeline.pts) == 6
    for f in frames:
        assert isinstance(f, Frame)
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 and f.image.flags.c_contiguous
        assert close_to(f.image, frame_image(f.index, 64, 48))
    assert frames[3].time == pytest.approx(3 / 25, abs=2e-3)


@pytest.mark.parametrize("rotation, corner", [(90, "top-right"), (180, "bottom-right"), (270, "bottom-left")])
def test_rotation_is_applied_to_size_and_pixels(tmp_path, rotation, corner):
    path = make_video(tmp_path / "r.mp4", frames=3, size=(64, 48), rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    size = (48, 64) if rotation in (90, 270) else (64, 48)
    assert (info.width, info.height) == size
    image = next(iter(read_frames(info))).image
    assert image.shape == (size[1], size[0], 3)
    assert image.flags.c_contiguous
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
    frames, timeline = read_all(info)
    want = [float(Fraction(p, 1000)) for p in vfr_pts(N)]
    assert list(timeline.times) == pytest.approx(want, abs=1e-9)
    assert [f.time for f in frames] == pytest.approx(want, abs=1e-9)
    assert [f.pts for f in frames] == list(timeline.pts)
    # index / fps would be wrong here: the steps are 40, 40, 120, 20, 80, 33 ms.
    assert frames[3].time == pytest.approx(0.2)


def test_bframes_and_all_frames_in_order(media):
    info = probe(media["bframes"])
    frames, timeline = read_all(info)
    assert [f.index for f in frames] == list(range(N))
    assert list(timeline.pts) == sorted(timeline.pts) and len(set(timeline.pts)) == N
    for f in frames:
        assert close_to(f.image, frame_image(f.index, 64, 48))


def test_reading_leaves_the_info_alone(media):
    info = probe(media["bframes"])
    before = dataclasses.asdict(info)
    read_all(info, end=4)
    assert dataclasses.asdict(info) == before


def test_a_reader_reads_once_and_the_source_again(media):
    source = open_source(media["mp4"])
    assert isinstance(source, Source) and source.rereadable
    assert open_source(source) is source
    reader = source.frames()
    assert isinstance(reader, Reader) and reader.timeline is None  # nothing read yet
    assert len(list(reader)) == N
    with pytest.raises(InputError) as e:
        iter(reader)
    one_line(e)
    again = source.frames(Window.of(start=10))
    assert [f.index for f in again] == [10, 11]
    assert again.timeline.num_frames == N


def test_open_source_rejects_what_is_not_a_video():
    for bad in (3, 2.5, b"bytes", {"a": 1}, None):
        with pytest.raises(InputError) as e:
            open_source(bad)
        one_line(e)


# ----------------------------------------------------------------------------- image folders


def test_image_folder_natural_order_and_pixels(tmp_path):
    folder = make_image_folder(tmp_path / "frames", n=12, size=(33, 21))
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"")
    info = probe(folder)
    assert info.is_image_folder
    assert info.file_names == tuple(f"frame_{i}.png" for i in range(1, 13))
    assert (info.width, info.height) == (33, 21)
    assert info.fps == Fraction(30) and info.num_frames == 12
    assert info.time_base == Fraction(1, 30)
    frames, timeline = read_all(info, stride=5)
    assert [f.index for f in frames] == [0, 5, 10]
    for f in frames:
        np.testing.assert_array_equal(f.image, frame_image(f.index, 33, 21))  # png: lossless
        assert f.pts == f.index and f.time == pytest.approx(f.index / 30)
    assert list(timeline.times) == pytest.approx([i / 30 for i in range(12)])
    assert list(timeline.pts) == list(range(12))
    assert timeline.num_frames == 12 and not timeline.truncated
    assert probe(folder, fps=12.5).fps == Fraction(25, 2)


def test_image_folder_with_mixed_sizes(tmp_path):
    folder = make_image_folder(tmp_path / "f", n=2, size=(16, 16))
    make_image_folder(folder, n=1, size=(20, 16), prefix="z")
    with pytest.raises(VideoError) as e:
        list(read_frames(probe(folder)))
    assert "one size" in one_line(e)


def test_image_folder_rate_from_open_source(tmp_path):
    folder = make_image_folder(tmp_path / "f", n=4, size=(8, 8))
    frames = list(open_source(folder, fps=10).frames())
    assert [f.time for f in frames] == pytest.approx([0, 0.1, 0.2, 0.3])


# ----------------------------------------------------------------------------- selection


def test_start_end_stride_indices(media):
    info = probe(media["bframes"])
    full = {f.index: f for f in read_frames(probe(media["bframes"]))}
    frames, timeline = read_all(info, start=2, end=9, stride=3)
    assert [f.index for f in frames] == [2, 5, 8]
    for f in frames:
        np.testing.assert_array_equal(f.image, full[f.index].image)
        assert f.time == full[f.index].time and f.pts == full[f.index].pts
    # the rest was counted from packets: every frame has a timestamp, the count is the true one
    assert timeline.num_frames == N and len(timeline.times) == N and len(timeline.pts) == N
    assert info.num_frames == N
    assert list(timeline.pts) == sorted(timeline.pts)
    assert not timeline.truncated


def test_counting_after_end_matches_a_full_read_with_bframes(media):
    _, full = read_all(probe(media["bframes"]))
    for end in range(1, N + 1):
        frames, timeline = read_all(probe(media["bframes"]), end=end)
        assert [f.index for f in frames] == list(range(end))
        assert timeline.pts == full.pts and timeline.times == full.times, end
        assert timeline.num_frames == N


def test_end_past_the_video_and_no_count_rest(media):
    assert [f.index for f in read_frames(media["mp4"], start=10, end=100)] == [10, 11]
    info = probe(media["mp4"])
    reader = read_frames(info, end=3, count_rest=False)
    assert [f.index for f in reader] == [0, 1, 2]
    assert reader.timeline is None  # stopped early without counting the rest
    assert info.num_frames == N  # the container's count, kept


def test_skipped_frames_are_not_converted(media, monkeypatch):
    calls = []
    real = R._rgb
    monkeypatch.setattr(R, "_rgb", lambda frame, k: calls.append(1) or real(frame, k))
    frames = list(read_frames(media["mp4"], start=1, stride=4))
    assert [f.index for f in frames] == [1, 5, 9]
    assert len(calls) == 3


@pytest.mark.parametrize("kwargs", [{"start": -1}, {"stride": 0}, {"start": 5, "end": 2}])
def test_bad_selection_raises_at_call_time(media, kwargs):
    with pytest.raises(InputError):
        read_frames(media["mp4"], **kwargs)


def test_read_frames_takes_a_window(media):
    frames = list(read_frames(media["mp4"], window=Window.of(start=3, end=8, stride=2)))
    assert [f.index for f in frames] == [3, 5, 7]


# ----------------------------------------------------------------------------- truncated files


@pytest.mark.parametrize("key", ["faststart", "mkv", "avi"])
def test_cut_video_yields_what_decodes(media, tmp_path, key):
    src = media[key]
    cut = truncate(src, tmp_path / f"cut{src.suffix}", 0.6)
    info = probe(cut)
    frames, timeline = read_all(info)
    assert 5 < len(frames) < 30
    assert [f.index for f in frames] == list(range(len(frames)))
    for f in frames:
        assert close_to(f.image, frame_image(f.index, 64, 48), tol=12)
    assert timeline.truncated and timeline.num_frames == len(frames)
    assert any("stopped after" in w for w in timeline.warnings)


def test_complete_video_is_not_truncated(media):
    for key in ("mkv", "faststart", "avi", "vfr"):
        info = probe(media[key])
        _, timeline = read_all(info)
        assert not timeline.truncated and not timeline.warnings and not info.warnings, key


def test_a_file_removed_after_probing(media, tmp_path):
    path = tmp_path / "gone.mp4"
    path.write_bytes(Path(media["mp4"]).read_bytes())
    source = open_source(path)
    path.unlink()
    with pytest.raises(VideoError) as e:
        list(source.frames())
    assert "does not exist" in one_line(e)


# ----------------------------------------------------------------------------- arrays

H, W = 21, 33


def _arrays(n=7, h=H, w=W):
    return [frame_image(i, w, h) for i in range(n)]


def _gen(frames):
    yield from frames


def _read(source, **kwargs):
    reader = open_source(source, fps=kwargs.pop("fps", None)).frames(Window.of(**kwargs))
    frames = list(reader)
    return frames, reader.timeline


def test_list_array_and_generator_give_the_same_frames():
    frames = _arrays()
    runs = {
        "list": _read(frames),
        "tuple": _read(tuple(frames)),
        "ndarray": _read(np.stack(frames)),
        "generator": _read(_gen(frames)),
    }
    for name, (got, timeline) in runs.items():
        assert [f.index for f in got] == list(range(7)), name
        assert [f.time for f in got] == pytest.approx([i / 30 for i in range(7)]), name
        assert [f.pts for f in got] == list(range(7)), name
        for f in got:
            np.testing.assert_array_equal(f.image, frames[f.index])
            assert f.image.dtype == np.uint8 and f.image.flags.c_contiguous
        assert timeline.num_frames == 7 and list(timeline.pts) == list(range(7)), name
        assert not timeline.truncated and not timeline.warnings, name
    # the same window everywhere, too
    for make in (list, np.stack, _gen):
        got, _ = _read(make(frames), start=1, end=6, stride=2)
        assert [f.index for f in got] == [1, 3, 5]
        assert [f.time for f in got] == pytest.approx([1 / 30, 3 / 30, 5 / 30])


def test_array_source_info():
    frames = _arrays(5)
    for source in (frames, np.stack(frames)):
        info = open_source(source).info
        assert info.kind == "arrays" and not info.is_image_folder
        assert (info.width, info.height) == (W, H) and info.num_frames == 5
        assert info.fps == Fraction(30) and info.time_base == Fraction(1, 30)
        assert open_source(source).rereadable
    info = open_source(_gen(frames)).info
    assert info.num_frames is None and info.duration is None  # a generator's length is unknown
    assert not open_source(_gen(frames)).rereadable


def test_fps_sets_the_times_of_arrays():
    frames = _arrays(4)
    source = open_source(frames, fps=10)
    assert source.info.fps == Fraction(10) and source.info.time_base == Fraction(1, 10)
    assert source.info.duration == pytest.approx(0.4)
    got = list(source.frames())
    assert [f.time for f in got] == pytest.approx([0, 0.1, 0.2, 0.3])
    assert [f.pts for f in got] == [0, 1, 2, 3]
    got = list(open_source(_gen(frames), fps=Fraction(30000, 1001)).frames())
    assert [f.time for f in got] == pytest.approx([i * 1001 / 30000 for i in range(4)])
    # a time window on arrays uses these times
    got, _ = _read(frames, fps=10, start="0.1s", end="0.3s")
    assert [f.index for f in got] == [1, 2]
    with pytest.raises(InputError) as e:
        open_source(frames, fps=-1)
    assert "fps" in one_line(e)


def test_a_list_reads_again_a_generator_once():
    frames = _arrays(3)
    listed = open_source(frames)
    assert [f.index for f in listed.frames()] == [0, 1, 2]
    assert [f.index for f in listed.frames()] == [0, 1, 2]
    once = open_source(_gen(frames))
    assert [f.index for f in once.frames()] == [0, 1, 2]
    with pytest.raises(InputError) as e:
        once.frames()
    assert "read already" in one_line(e)
    # asking twice without reading is refused as well: the frames are gone with the first reader
    once = open_source(_gen(frames))
    once.frames()
    with pytest.raises(InputError):
        once.frames()


def test_an_endless_generator_is_not_drained_past_the_window():
    pulled = []

    def camera():
        i = 0
        while True:
            pulled.append(i)
            yield frame_image(i, W, H)
            i += 1

    got = list(open_source(camera()).frames(Window.of(end=5)))
    assert [f.index for f in got] == [0, 1, 2, 3, 4]
    assert len(pulled) <= 6


def test_a_sized_array_source_counts_the_rest_like_a_file():
    frames = _arrays(7)
    for source in (frames, np.stack(frames)):
        got, timeline = _read(source, end=5)
        assert [f.index for f in got] == [0, 1, 2, 3, 4]
        assert timeline.num_frames == 7 == open_source(source).info.num_frames


@pytest.mark.parametrize("bad, where", [
    (np.zeros((H, W, 3), np.float32), "dtype"),
    (np.zeros((H, W), np.uint8), "shape"),
    (np.zeros((H, W, 4), np.uint8), "shape"),
    (np.zeros((H, W, 3), np.uint16), "dtype"),
])
def test_bad_arrays_are_one_clear_input_error(bad, where):
    good = frame_image(0, W, H)
    # as the first frame: refused when the source is opened
    for make in (list, _gen):
        with pytest.raises(InputError) as e:
            open_source(make([bad, good]))
        msg = one_line(e)
        assert "frame 0" in msg and "(H, W, 3) uint8" in msg
    # later: refused when that frame is read, after the good ones came out
    for make in (list, _gen):
        reader = open_source(make([good, good, bad])).frames()
        got = []
        with pytest.raises(InputError) as e:
            for f in reader:
                got.append(f.index)
        msg = one_line(e)
        assert got == [0, 1] and "frame 2" in msg and "(H, W, 3) uint8" in msg


def test_a_size_change_is_one_clear_input_error():
    frames = _arrays(2) + [frame_image(2, W + 2, H)]
    for make in (list, _gen):
        got = []
        with pytest.raises(InputError) as e:
            for f in open_source(make(frames)).frames():
                got.append(f.index)
        msg = one_line(e)
        assert got == [0, 1] and "frame 2" in msg and "one size" in msg
    with pytest.raises(InputError) as e:  # a (T, H, W, 3) array cannot change size; other shapes are refused
        open_source(np.zeros((2, H, W), np.uint8))
    one_line(e)


def test_empty_and_single_frame_arrays_are_refused():
    for bad in ([], (), _gen([]), np.zeros((0, H, W, 3), np.uint8)):
        with pytest.raises(InputError) as e:
            open_source(bad)
        assert "empty" in one_line(e)
    with pytest.raises(InputError) as e:
        open_source(frame_image(0, W, H))  # one (H, W, 3) frame, not a video
    assert "one frame" in one_line(e)
