"""videomt_cli.sinks (open_sink, format_for) and sinks.base: atomic outputs, overwrite rules,
unwritable destinations, and the names of a video's frames; plus the VideoResult queries sinks
rely on (masks_at, render_ids)."""

from __future__ import annotations

import dataclasses
import os
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sinkhelp import CATS, H, T, W, instance_result, write  # noqa: E402

from videomt_cli import sinks  # noqa: E402
from videomt_cli.errors import InputError, OutputError, VideoMTError  # noqa: E402
from videomt_cli.io import masks  # noqa: E402
from videomt_cli.records import Segment, VideoInfo, VideoResult  # noqa: E402
from videomt_cli.sinks.base import META_NAME, Sink, frame_file_names, plain_rle, video_name  # noqa: E402

FILE_FORMATS = ["ytvis", "ytvis-dataset", "coco", "cvat"]


# ----------------------------------------------------------------------------- atomicity and errors


@pytest.mark.parametrize("fmt", FILE_FORMATS + ["png"])
def test_exception_leaves_nothing(tmp_path, fmt):
    with pytest.raises(RuntimeError):
        with sinks.open_sink(tmp_path / "out", fmt=fmt) as sink:
            sink.add(instance_result())
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", FILE_FORMATS + ["png"])
def test_exception_keeps_existing_output(tmp_path, fmt):
    first = write(tmp_path, fmt, instance_result(), name="out")
    before = sorted((p.name, p.read_bytes()) for p in first.iterdir()) if first.is_dir() else first.read_bytes()
    with pytest.raises(RuntimeError):
        with sinks.open_sink(first, fmt=fmt, overwrite=True) as sink:
            sink.add(instance_result(stride=2))
            raise RuntimeError("interrupted")
    after = sorted((p.name, p.read_bytes()) for p in first.iterdir()) if first.is_dir() else first.read_bytes()
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("fmt", FILE_FORMATS + ["png"])
def test_refuse_overwrite_then_overwrite(tmp_path, fmt):
    out = write(tmp_path, fmt, instance_result(), name="out")
    before = None if fmt == "png" else out.read_bytes()
    with pytest.raises(OutputError, match="--overwrite"):
        sinks.open_sink(out, fmt=fmt)
    write(tmp_path, fmt, instance_result(stride=2), name="out", overwrite=True)
    if fmt == "png":
        assert not (out / "00001.png").exists() and (out / "00002.png").exists()
    else:
        assert out.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_file_appears_only_on_clean_exit(tmp_path):
    out = tmp_path / "r.json"
    with sinks.open_sink(out) as sink:
        assert isinstance(sink, Sink)
        sink.add(instance_result())
        assert not out.exists()
    assert out.exists()
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_png_overwrite_refuses_foreign_folder(tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(OutputError, match="did not write"):
        sinks.open_sink(mine, fmt="png", overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["holiday.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write(tmp_path, "png", instance_result(), name="empty", overwrite=True)
    assert (empty / META_NAME).is_file()


def test_png_overwrite_replaces_a_file(tmp_path):
    (tmp_path / "out").write_text("old")
    out = write(tmp_path, "png", instance_result(), name="out", overwrite=True)
    assert (out / "meta.json").is_file() and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_json_over_a_folder_is_refused(tmp_path):
    (tmp_path / "x.json").mkdir()
    with pytest.raises(OutputError, match="folder"):
        sinks.open_sink(tmp_path / "x.json", overwrite=True)


def test_unwritable_destinations(tmp_path):
    with pytest.raises(OutputError, match="Cannot write"):
        with sinks.open_sink("/proc/videomt-test.json") as sink:
            sink.add(instance_result())
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        sinks.open_sink(blocker / "out.json")
    with pytest.raises(OutputError, match="Cannot write"):
        with sinks.open_sink(blocker / "sub" / "out.json") as sink:
            sink.add(instance_result())


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Cannot write"):
            with sinks.open_sink(ro / "r.json") as sink:
                sink.add(instance_result())
    finally:
        ro.chmod(0o755)


def test_missing_parent_folders_are_created(tmp_path):
    out = write(tmp_path, "ytvis", instance_result(), name="a/b/r.json")
    assert out.is_file()


def test_format_choice():
    assert sinks.format_for("r.json") == "ytvis"
    assert sinks.format_for("r.json", "coco") == "coco"
    assert sinks.format_for("r.json", " COCO ") == "coco"
    assert sinks.format_for("out/") == "png" and sinks.format_for("out") == "png"
    for s in (".mp4", ".MOV", ".mkv", ".webm"):
        assert sinks.format_for("o" + s) == "overlay"
    with pytest.raises(InputError, match="ytvis-dataset"):
        sinks.format_for("r.json", "yolo")
    assert sinks.format_for("r.txt") == "mot"
    with pytest.raises(InputError, match="--format"):
        sinks.format_for("r.csv")
    with pytest.raises(InputError):
        sinks.open_sink("o.json", fmt="overlay")
    assert issubclass(OutputError, VideoMTError)
    assert set(sinks.FORMATS) == {"ytvis", "ytvis-dataset", "coco", "png", "overlay", "mot", "mots", "cvat",
                                  "labelstudio", "jsonl"}
    assert sinks.FORMATS["png"] is sinks.PngSink and sinks.FORMATS["overlay"] is sinks.OverlaySink


def test_open_sink_picks_the_class_by_suffix(tmp_path):
    assert type(sinks.open_sink(tmp_path / "r.json")) is sinks.YtvisResultsSink
    assert type(sinks.open_sink(tmp_path / "d.json", fmt="ytvis-dataset")) is sinks.YtvisDatasetSink
    assert type(sinks.open_sink(tmp_path / "pngs")) is sinks.PngSink
    assert type(sinks.open_sink(tmp_path / "ov.webm")) is sinks.OverlaySink
    assert list(tmp_path.iterdir()) == []  # nothing is made before the sink is opened


# ----------------------------------------------------------------------------- shared helpers


def test_video_name_and_frame_file_names():
    r = instance_result()
    assert video_name(r) == "walk"
    assert frame_file_names(r) == [f"walk/{i:05d}.jpg" for i in range(T)]
    folder = VideoInfo("/data/JPEGImages/0a2f1c/", W, H, num_frames=T, kind="folder",
                       file_names=tuple(f"f{i}.png" for i in range(T)))
    r = instance_result(info=folder)
    assert video_name(r) == "0a2f1c"
    assert frame_file_names(r) == [f"0a2f1c/f{i}.png" for i in range(T)]
    arrays = VideoInfo("<arrays>", W, H, fps=Fraction(30), num_frames=T, kind="arrays")
    r = instance_result(video_id=4, info=arrays)
    assert video_name(r) == "video4"
    assert frame_file_names(r)[0] == "video4/00000.jpg"


def test_plain_rle():
    rle = masks.encode(np.ones((3, 4), bool))[0]
    plain = plain_rle({"size": rle["size"], "counts": rle["counts"].encode()})
    assert plain == {"size": [3, 4], "counts": rle["counts"]} and isinstance(plain["counts"], str)
    assert plain_rle(None) is None


# ----------------------------------------------------------------------------- the result queries sinks use


def test_masks_at_skips_nulls_and_empties():
    r = instance_result(stride=2)
    assert r.masks_at(1) == []
    pairs = r.masks_at(0)
    assert [s.track_id for s, _ in pairs] == [1, 2] and pairs[0][1].dtype == bool
    assert pairs[0][1].shape == (H, W)
    full = instance_result()
    assert [s.track_id for s, _ in full.masks_at(3)] == [2]  # track 1 is empty there
    with pytest.raises(IndexError):
        full.masks_at(T)


def test_result_from_masks():
    r = instance_result(stride=2)
    assert r.num_frames == T and r.processed == (0, 2, 4)
    assert isinstance(r.segments, tuple) and isinstance(r.categories, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.segments[0].score = 1.0
    assert [m is None for m in r.masks_of(r.segments[0])] == [False, True, False, True, False]
    # processed defaults to the frames with a mask
    auto = VideoResult.from_masks(r.video, "instance", CATS, [(s, list(r.masks_of(s))) for s in r.segments])
    assert auto.processed == (0, 2, 4)
    empty = VideoResult.from_masks(VideoInfo("/x.mp4", W, H, num_frames=3), "instance", CATS, [])
    assert empty.num_frames == 3 and empty.processed == (0, 1, 2) and empty.segments == ()
    with pytest.raises(ValueError):
        VideoResult.from_masks(r.video, "instance", CATS, [(Segment(1, 1, 0.5), [None] * 2),
                                                           (Segment(2, 1, 0.5), [None] * 3)])
    with r:
        pass  # a result is a context manager (closes its store)


# ----------------------------------------------------------------------------- a full disk


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_a_full_disk_is_one_output_error_naming_the_cause_and_leaves_nothing(tmp_path, fmt, monkeypatch):
    """Writes into /dev/full fail with ENOSPC, as on a full disk; the JSON sink used to raise again
    from its cleanup (closing the file flushes it) and leave its temporary behind."""
    import builtins

    real_open = builtins.open
    out = tmp_path / "out.json"

    def full_open(file, mode="r", *args, **kwargs):
        if "w" in str(mode) and Path(file).parent == tmp_path:
            return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)

    sink = sinks.open_sink(out, fmt=fmt)
    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(OutputError) as e:
        with sink:
            sink.add(instance_result())
    monkeypatch.undo()
    assert str(e.value).startswith(f"Cannot write {out}: no space left on the device of {out}")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
    sink.abort()  # again: never raises


def test_abort_never_raises(tmp_path):
    class Broken(Sink):
        format = "broken"

        def add(self, result):
            self.open()

        def _release(self):
            raise OSError(28, "No space left on device")

    sink = Broken(tmp_path / "x.bin")
    sink.open()
    sink.abort()
    assert list(tmp_path.iterdir()) == []
