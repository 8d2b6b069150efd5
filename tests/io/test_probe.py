"""videomt_cli.io.probe (and io.images naming): what a file or folder holds before decoding it,
the errors for bad input, and the rows of ``videomt info``."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
import iohelp  # noqa: E402
from iohelp import N, one_line, read_all  # noqa: E402
from media import make_audio_only, make_image_folder, truncate  # noqa: E402

from videomt_cli.errors import InputError, VideoError, VideoMTError  # noqa: E402
from videomt_cli.io.images import image_names, natural_key  # noqa: E402
from videomt_cli.io.probe import IMAGE_FOLDER_FPS, info_lines, probe  # noqa: E402
from videomt_cli.records import VideoInfo  # noqa: E402

media = iohelp.media_fixture  # the shared videos, a session fixture


def test_probe_25fps(media):
    info = probe(media["mp4"])
    assert isinstance(info, VideoInfo) and info.kind == "video"
    assert (info.width, info.height) == (64, 48)
    assert info.fps == Fraction(25) and isinstance(info.fps, Fraction)
    assert info.num_frames == N
    assert info.duration == pytest.approx(N / 25, abs=1e-3)
    assert info.codec == "h264"
    assert info.rotation == 0 and not info.has_audio and not info.is_image_folder
    assert isinstance(info.time_base, Fraction) and info.time_base > 0
    assert info.warnings == () and info.file_names == ()


def test_video_info_is_frozen(media):
    info = probe(media["mp4"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.num_frames = 3
    for gone in ("timestamps", "pts", "truncated"):
        assert not hasattr(info, gone)  # what reading learns is the reader's Timeline now


def test_probe_ntsc_rate_odd_size_audio(media):
    info = probe(media["ntsc_odd"])
    assert info.fps == Fraction(30000, 1001)
    assert (info.width, info.height) == (97, 71)
    assert info.has_audio
    assert info.num_frames == N


def test_probe_decides_by_content_not_suffix(media, tmp_path):
    renamed = tmp_path / "clip.bin"
    shutil.copy(media["mkv"], renamed)
    info = probe(renamed)
    assert info.codec == "h264" and (info.width, info.height) == (64, 48)


def test_probe_rotation_swaps_the_displayed_size(media):
    info = probe(media["rot90"])
    assert info.rotation == 90 and (info.width, info.height) == (48, 64)


def test_audio_detection(media):
    assert probe(media["vfr"]).has_audio
    assert not probe(media["mp4"]).has_audio


# ----------------------------------------------------------------------------- image folders


def test_natural_key():
    names = ["frame_10.png", "frame_2.png", "Frame_1.png", "frame_11.png"]
    assert sorted(names, key=natural_key) == ["Frame_1.png", "frame_2.png", "frame_10.png", "frame_11.png"]


def test_probe_image_folder(tmp_path):
    folder = make_image_folder(tmp_path / "frames", n=12, size=(33, 21))
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"")
    info = probe(folder)
    assert info.is_image_folder and info.kind == "folder"
    assert info.file_names == tuple(f"frame_{i}.png" for i in range(1, 13))
    assert image_names(folder) == list(info.file_names)
    assert (info.width, info.height) == (33, 21)
    assert info.fps == Fraction(30) == IMAGE_FOLDER_FPS and info.num_frames == 12
    assert info.time_base == Fraction(1, 30)
    assert info.codec == "png"
    assert probe(folder, fps=12.5).fps == Fraction(25, 2)
    assert probe(folder, fps=12.5).time_base == Fraction(2, 25)


def test_probe_image_folder_bad_fps(tmp_path):
    folder = make_image_folder(tmp_path / "frames", n=2, size=(8, 8))
    with pytest.raises(InputError) as e:
        probe(folder, fps=-5)
    assert "fps" in one_line(e)


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
    assert issubclass(InputError, VideoMTError) and issubclass(InputError, ValueError)


def test_mp4_cut_before_its_index_is_a_clear_error(media, tmp_path):
    cut = truncate(media["plain30"], tmp_path / "cut.mp4", 0.6)  # moov is at the end: gone
    with pytest.raises(VideoError) as e:
        probe(cut)
    assert "moov" in one_line(e)


# ----------------------------------------------------------------------------- info


def test_info_lines(media, tmp_path):
    rows = dict(info_lines(probe(media["ntsc_odd"])))
    assert rows["size"] == "97x71"
    assert rows["frames"] == str(N)
    assert rows["fps"] == "30000/1001 (29.970)"
    assert rows["codec"] == "h264" and rows["audio"] == "yes" and rows["rotation"] == "none"
    assert rows["duration"].endswith(" s")
    assert "truncated" not in rows and "warning" not in rows
    rot = dict(info_lines(probe(media["rot90"])))
    assert rot["rotation"] == "90 degrees clockwise" and rot["size"].startswith("48x64")
    folder = dict(info_lines(probe(make_image_folder(tmp_path / "f", n=3, size=(8, 8)))))
    assert folder["fps"].startswith("30") and "assumed" in folder["fps"]
    assert folder["frames"] == "3"
    assert "folder of 3" in folder["source"]


def test_info_lines_with_the_timeline_of_a_cut_video(media, tmp_path):
    cut = truncate(media["mkv"], tmp_path / "cut.mkv", 0.6)
    info = probe(cut)
    frames, timeline = read_all(info)
    rows = info_lines(info, timeline)
    table = dict(rows)
    assert table["frames"] == str(len(frames)) == str(timeline.num_frames)  # the decoded count
    assert table["truncated"] == "yes"
    assert [v for k, v in rows if k == "warning"] == list(info.warnings + timeline.warnings)
    assert any("stopped after" in v for k, v in rows if k == "warning")
    # without the timeline: the header's count, nothing about truncation
    plain = dict(info_lines(info))
    assert "truncated" not in plain
    assert plain["frames"] == (str(info.num_frames) if info.num_frames is not None else "unknown until decoded")
