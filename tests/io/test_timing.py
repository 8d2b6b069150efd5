"""Timing and frame counts, nothing lost: ``--end`` as a time on files whose header has no frame
count, an mp4 cut with stream copy (an edit list over B-frames), cut and damaged files (the count
is what decodes, and every command agrees on it), sources on a 1 ms clock, frames without
timestamps, and a full disk while a video is written.

Reference counts come from the real ffmpeg program (imageio-ffmpeg, single-threaded), not from
our reader. Media are made here, a few dozen tiny frames each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from iohelp import close_to, one_line, read_all  # noqa: E402
from media import (damage, ffmpeg_frame_count, frame_image, make_video, remux, stream_copy_cut,  # noqa: E402
                   strip_ts_timestamps, truncate)

from videomt_cli.errors import DatasetError, OutputError  # noqa: E402
from videomt_cli.io.probe import info_lines, probe  # noqa: E402
from videomt_cli.io.read import MAX_UNTIMED, count_frames, open_source, read_frames  # noqa: E402
from videomt_cli.io.writer import BackgroundWriter, VideoWriter  # noqa: E402
from videomt_cli.records import Category, VideoInfo  # noqa: E402

BFRAMES = {"preset": "veryfast", "bf": "2"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("imageio_ffmpeg")
    d = tmp_path_factory.mktemp("timing")
    src30 = make_video(d / "src30.mp4", frames=36, fps=30, options=BFRAMES)
    whole = make_video(d / "whole.mp4", frames=24, size=(160, 120), faststart=True, options={"preset": "veryfast"})
    hurt = make_video(d / "hurt.mp4", frames=30, size=(96, 64), faststart=True, options={"preset": "veryfast"})
    return {
        "src30": src30,
        "editlist": stream_copy_cut(src30, d / "editlist.mp4", 0.5, 0.6),
        "truncated": truncate(whole, d / "truncated.mp4", 0.7),  # the last packet is cut short
        "damaged": damage(hurt, d / "damaged.mp4", at=0.7, length=400),  # packets in the middle fail
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from conftest import make_model
    from videomt_cli.modeling import checkpoint

    return checkpoint.save(make_model(seed=1), tmp_path_factory.mktemp("model") / "tiny.safetensors")


def cli(*args):
    from typer.testing import CliRunner

    from videomt_cli import cli as command_line

    result = CliRunner().invoke(command_line.app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def segment(tiny, source, output, *extra):
    return cli("segment", source, "-o", output, "--model", tiny, "--min-size", "64", "--device", "cpu", *extra)


def lengths_and_processed(results: Path) -> tuple[set[int], set[tuple[int, ...]]]:
    entries = json.loads(results.read_text())
    assert entries, "the tiny model gives results on every video"
    return ({len(e["segmentations"]) for e in entries},
            {tuple(i for i, m in enumerate(e["segmentations"]) if m is not None) for e in entries})


# ----------------------------------------------------------------------------- case 1: --end as a time, no header count


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".ts"])
def test_end_as_a_time_on_a_file_without_a_frame_count(tiny, tmp_path, suffix):
    path = make_video(tmp_path / f"nocount{suffix}", frames=12, fps=25)
    assert probe(path).num_frames is None  # the header does not say
    out = tmp_path / "r.json"
    result = segment(tiny, path, out, "--end", "0.2s")
    assert "Traceback" not in result.output
    lengths, processed = lengths_and_processed(out)
    assert lengths == {12}  # one entry per frame of the video
    assert processed == {(0, 1, 2, 3, 4)}  # 0, 0.04, ... 0.16 s: before 0.2 s; the rest null


# ----------------------------------------------------------------------------- case 2: the count is what decodes


def test_an_edit_listed_cut_is_whole_and_counted_as_it_decodes(clips):
    cut = clips["editlist"]
    info = probe(cut)
    decoded = ffmpeg_frame_count(cut)
    assert info.num_frames > decoded  # the header counts the frames before the edit list's start
    frames, timeline = read_all(info)
    assert len(frames) == timeline.num_frames == decoded
    assert not timeline.truncated and not timeline.warnings  # not "cut or damaged"
    assert list(timeline.times) == sorted(timeline.times) and timeline.times[0] == 0
    assert count_frames(cut) == timeline
    rows = dict(info_lines(info, count_frames(info)))
    assert rows["frames"] == f"{decoded} decoded (the header says {info.num_frames})"
    assert "truncated" not in rows and "warning" not in rows
    _, early = read_all(info, end="0.2s")  # the rest counted from packets: the same count
    assert early.num_frames == decoded and early.pts == timeline.pts


@pytest.mark.parametrize("key", ["editlist", "truncated", "damaged"])
def test_every_read_agrees_with_ffmpeg_on_the_count(clips, key):
    path = clips[key]
    decoded = ffmpeg_frame_count(path)
    frames, timeline = read_all(path)
    assert len(frames) == timeline.num_frames == decoded
    counted = count_frames(path)
    assert counted.pts == timeline.pts and counted.times == timeline.times
    assert counted.truncated == timeline.truncated and counted.warnings == timeline.warnings
    if key != "damaged":  # after --end the rest is counted from packets: a damaged one still counts there
        _, early = read_all(path, end=3)
        assert early.num_frames == decoded


@pytest.mark.parametrize("key", ["editlist", "truncated", "damaged"])
def test_overlay_from_the_results_of_segment(tiny, clips, tmp_path, key):
    path = clips[key]
    decoded = ffmpeg_frame_count(path)
    results = tmp_path / "r.json"
    result = segment(tiny, path, results)
    if key == "editlist":
        assert "cut or damaged" not in result.output
    assert lengths_and_processed(results)[0] == {decoded}
    overlay = tmp_path / "o.mp4"
    cli("overlay", path, "--from", results, "--model", tiny, "-o", overlay, "--score-threshold", "0")
    assert count_frames(overlay).num_frames == decoded
    if key == "editlist":  # --end on it: the length is still the decoded count
        segment(tiny, path, tmp_path / "e.json", "--end", "0.2s")
        lengths, processed = lengths_and_processed(tmp_path / "e.json")
        assert lengths == {decoded} and processed == {tuple(range(6))}


def _results_file(path: Path, lengths: list[int]) -> Path:
    entries = [{"video_id": 1, "category_id": 1, "score": 0.9 - 0.1 * i, "segmentations": [None] * n}
               for i, n in enumerate(lengths)]
    path.write_text(json.dumps(entries))
    return path


def test_read_results_takes_the_length_of_the_file(clips, tmp_path):
    from videomt_cli.sinks import read_results

    cut = clips["editlist"]
    decoded = ffmpeg_frame_count(cut)
    cats = [Category(1, "thing")]
    r = read_results(_results_file(tmp_path / "a.json", [decoded, decoded]), cut, cats)
    assert r.num_frames == decoded and len(r.segments) == 2
    with pytest.raises(DatasetError) as e:
        read_results(_results_file(tmp_path / "b.json", [decoded, decoded + 1]), cut, cats)
    assert "frames" in one_line(e)
    empty = read_results(_results_file(tmp_path / "c.json", []), cut, cats)
    assert empty.num_frames == decoded and not empty.segments  # counted by decoding


# ----------------------------------------------------------------------------- case 3: a cut mp4 loses no frame


def test_a_truncated_mp4_yields_every_decodable_frame(clips):
    cut = clips["truncated"]
    decoded = ffmpeg_frame_count(cut)  # single-threaded ffmpeg; a frame-threaded PyAV loses two here
    assert decoded == ffmpeg_frame_count(cut, threads=0)
    frames, timeline = read_all(probe(cut))
    assert [f.index for f in frames] == list(range(decoded))
    for f in frames:
        assert close_to(f.image, frame_image(f.index, 160, 120), tol=12)
    assert timeline.truncated and any("stopped after" in w for w in timeline.warnings)


# ----------------------------------------------------------------------------- case 9: a 1 ms clock keeps the rate


def _copy(src: Path, dst: Path) -> VideoWriter:
    info = probe(src)
    with VideoWriter(dst, info) as w:
        for f in read_frames(info):
            w.write(f.image, f.pts)
    return w


@pytest.mark.parametrize("fps", [Fraction(30), Fraction(30000, 1001)])
@pytest.mark.parametrize("src_suffix, out_suffix", [(".mkv", ".mp4"), (".webm", ".mp4"), (".mkv", ".mkv")])
def test_a_millisecond_clock_source_keeps_its_rate(tmp_path, fps, src_suffix, out_suffix):
    src = make_video(tmp_path / f"src{src_suffix}", frames=30, fps=fps)
    info = probe(src)
    assert info.time_base == Fraction(1, 1000) and info.fps == fps
    out = tmp_path / f"out{out_suffix}"
    w = _copy(src, out)
    assert not w.warnings
    back = probe(out)
    assert back.fps == fps  # not 48000/1601
    _, source_times = read_all(info)
    _, times = read_all(back)
    assert times.num_frames == 30
    assert list(times.times) == pytest.approx(source_times.times, abs=1.01e-3)  # the source's per-frame times
    if out_suffix == ".mp4":  # a clock fine enough for the nominal grid: exactly i / fps
        assert list(times.times) == pytest.approx([float(i / fps) for i in range(30)], abs=1e-6)


def test_a_variable_rate_millisecond_source_keeps_its_times(tmp_path):
    src = make_video(tmp_path / "vfr.mkv", frames=12, vfr=True)
    out = tmp_path / "out.mp4"
    _copy(src, out)
    _, a = read_all(src)
    _, b = read_all(out)
    assert list(b.times) == pytest.approx(a.times, abs=1.01e-3)


# ----------------------------------------------------------------------------- case 10: frames without timestamps


def test_frames_without_timestamps_get_them_from_the_rate(tmp_path):
    ts = make_video(tmp_path / "a.ts", frames=15, fps=25, options=BFRAMES)
    _, original = read_all(ts)
    bare = strip_ts_timestamps(ts, tmp_path / "bare.ts", packets=3)
    frames, timeline = read_all(bare)
    assert len(frames) == 15
    assert timeline.pts == original.pts  # derived from the rate: what the stripped fields said
    assert list(timeline.times) == pytest.approx([i / 25 for i in range(15)], abs=1e-9)
    out = tmp_path / "out.mp4"
    w = _copy(bare, out)
    assert not w.warnings  # no "timestamps not increasing"
    back = probe(out)
    assert back.fps == 25
    assert list(read_all(back)[1].times) == pytest.approx([i / 25 for i in range(15)], abs=1e-6)


def test_a_stream_with_no_timestamps_at_all(tmp_path):
    raw = make_video(tmp_path / "raw.h264", frames=MAX_UNTIMED + 6)
    info = probe(raw)
    frames, timeline = read_all(info)
    assert len(frames) == MAX_UNTIMED + 6
    assert list(timeline.times) == pytest.approx([float(i / info.fps) for i in range(len(frames))], abs=1e-6)
    _, early = read_all(info, end=4)
    assert early.num_frames == len(frames) and early.times == timeline.times


# ----------------------------------------------------------------------------- the writer on a full disk

NOISE = VideoInfo(path="<noise>", width=128, height=96, fps=Fraction(25), time_base=Fraction(1, 25), kind="arrays")


@pytest.fixture
def small_disk(tmp_path):
    """A real 200 KiB tmpfs (root only), unmounted afterwards whatever happens."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _noise(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (NOISE.height, NOISE.width, 3), dtype=np.uint8)


def _full_disk_error(e: pytest.ExceptionInfo, named: Path) -> None:
    assert type(e.value) is OutputError
    assert f"no space left on the device of {named}" in one_line(e)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_full_disk_while_writing_frames_is_one_output_error(small_disk, suffix):
    out = small_disk / f"out{suffix}"
    with pytest.raises(OutputError) as e:
        with VideoWriter(out, NOISE) as w:
            for i in range(200):
                w.write(_noise(i))
    _full_disk_error(e, out)
    assert os.listdir(small_disk) == []


def test_a_full_disk_in_the_encoder_thread_is_one_output_error(small_disk):
    out = small_disk / "out.mp4"
    with pytest.raises(OutputError) as e:
        with VideoWriter(out, NOISE) as w, BackgroundWriter(w) as bg:
            for i in range(200):
                bg.write(_noise(i))
    _full_disk_error(e, out)
    assert os.listdir(small_disk) == []


def test_a_full_disk_when_closing_names_the_destination(small_disk):
    stat = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 4096))
    tmp, dest = small_disk / ".dest.tmp.mkv", small_disk / "dest.mkv"  # as a sink writes through its temporary
    with pytest.raises(OutputError) as e:
        with VideoWriter(tmp, NOISE, name=dest) as w:
            for i in range(4):
                w.write(_noise(i))  # all inside the encoder's lookahead: packets come when closing
            [partial] = [f for f in small_disk.iterdir() if f.name != "filler"]
            assert partial.stat().st_size < 4096
    _full_disk_error(e, dest)
    assert os.listdir(small_disk) == ["filler"]


def test_a_failed_mux_is_one_output_error(tmp_path):
    import av

    def broken(packets):
        raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")

    out = tmp_path / "out.mp4"
    with pytest.raises(OutputError) as e:
        with VideoWriter(out, NOISE) as w:
            w._mux_video = broken  # what a muxer refusing a packet raises
            w.write(_noise(0))
    assert str(out) in one_line(e) and "Invalid data" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_open_source_of_a_remuxed_transport_stream_counts_like_the_mp4(clips, tmp_path):
    ts = remux(clips["src30"], tmp_path / "a.ts")
    assert probe(ts).num_frames is None
    assert count_frames(ts).num_frames == count_frames(clips["src30"]).num_frames == 36
    assert open_source(ts).info.fps == 30
