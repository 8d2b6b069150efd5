"""JSON lines (``sinks.jsonl``): what each line holds, in place and never torn.

Lines are parsed with the standard ``json`` module and masks decoded with pycocotools (the
reference RLE implementation), against the masks and boxes the results were built from.
"""

from __future__ import annotations

import errno
import json
import os
from fractions import Fraction

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from sinkhelp import CATS, H, W, box, instance_result
from videomt_cli import sinks
from videomt_cli.errors import OutputError
from videomt_cli.io import masks
from videomt_cli.records import FrameResult, VideoInfo
from videomt_cli.sinks import jsonl as jsonl_module
from videomt_cli.sinks.jsonl import JsonlSink

INFO = VideoInfo(path="udp://127.0.0.1:5000", width=W, height=H, fps=Fraction(30), kind="live",
                 time_base=Fraction(1, 90000))


def frame_result(index: int, boxes: list[tuple[int, int, int, int]], scores=(0.9, 0.4)) -> FrameResult:
    """A frame's online results: one object per (y0, y1, x0, x1) box, track ids 3, 7, ..."""
    ms = [box(*b) for b in boxes]
    rles = tuple(masks.encode(m)[0] for m in ms)
    xyxy = np.array([[b[2], b[0], b[3], b[1]] for b in boxes], np.float32).reshape(-1, 4)
    return FrameResult(index=index, time=index / 30, size=(H, W), track_ids=np.array([3, 7][:len(ms)], np.int64),
                       class_ids=np.array([1, 2][:len(ms)], np.int64),
                       scores=np.array(scores[:len(ms)], np.float32), boxes=xyxy, rles=rles)


def lines(path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")  # complete lines only
    return [json.loads(line) for line in text.splitlines()]


def test_the_lines_of_a_live_run(tmp_path):
    out = tmp_path / "live.jsonl"
    f0, f2 = frame_result(0, [(1, 6, 2, 9), (4, 10, 5, 13)]), frame_result(2, [(2, 7, 3, 10)])
    with sinks.open_sink(out) as sink:
        assert isinstance(sink, JsonlSink) and out.exists()  # in place: there from the start
        sink.start(INFO, "instance", CATS, live=True, started=1700000000.0)
        sink.frame(f0, latency=0.0421, wall=1700000000.5)
        assert [d["type"] for d in lines(out)] == ["video", "frame"]  # readable while the run goes
        sink.dropped(1, 1 / 30)
        sink.frame(f2, latency=0.05)
        sink.end("stopped", processed=2, dropped=1, reconnects=0, fps=29.5, latency=(0.0421, 0.05))
    video, first, dropped, second, end = lines(out)
    assert video == {"type": "video", "version": 1, "source": "udp://127.0.0.1:5000", "width": W, "height": H,
                     "fps": 30.0, "live": True, "task": "instance",
                     "categories": [{"id": c.id, "name": c.name, "isthing": c.isthing} for c in CATS],
                     "started": 1700000000.0}
    assert first["frame"] == 0 and first["time"] == 0 and first["wall"] == 1700000000.5 and first["latency"] == 0.0421
    assert dropped == {"type": "dropped", "frame": 1, "time": round(1 / 30, 6)}
    assert second["frame"] == 2 and second["time"] == round(2 / 30, 6) and second["wall"] > 1.7e9
    assert [o["track_id"] for o in first["objects"]] == [3, 7]
    assert [o["category_id"] for o in first["objects"]] == [1, 2]
    assert [o["score"] for o in first["objects"]] == [0.9, 0.4]
    assert first["objects"][0]["box"] == [2, 1, 9, 6]  # x0, y0, x1, y1 (exclusive)
    for obj, b in zip(first["objects"], [(1, 6, 2, 9), (4, 10, 5, 13)]):
        rle = {"size": obj["mask"]["size"], "counts": obj["mask"]["counts"].encode("ascii")}
        assert np.array_equal(coco_mask.decode(rle).astype(bool), box(*b))
    assert end == {"type": "end", "reason": "stopped", "processed": 2, "dropped": 1, "reconnects": 0, "fps": 29.5,
                   "latency": {"median": 0.0421, "p95": 0.05}}


def test_a_whole_video_result_becomes_its_frame_lines(tmp_path):
    result = instance_result(stride=2)
    out = tmp_path / "video.jsonl"
    with sinks.open_sink(out, "jsonl") as sink:
        sink.add(result)
    video, *frames, end = lines(out)
    assert video["type"] == "video" and video["live"] is False and end["reason"] == "complete"
    assert [f["frame"] for f in frames] == list(result.processed) == [0, 2, 4]  # not-processed frames: no line
    for f in frames:
        i = f["frame"]
        expected = {s.track_id: result.mask(s, i) for s in result.segments if masks.areas([result.mask(s, i)])[0]}
        assert {o["track_id"] for o in f["objects"]} == set(expected)
        for o in f["objects"]:
            rle = {"size": o["mask"]["size"], "counts": o["mask"]["counts"].encode("ascii")}
            assert np.array_equal(coco_mask.decode(rle), masks.decode(expected[o["track_id"]]))
            x, y, w, h = coco_mask.toBbox(rle).tolist()
            assert o["box"] == [x, y, x + w, y + h]
        assert f["time"] == pytest.approx(i / 25) and f["latency"] is None


def test_a_write_that_fails_part_way_leaves_no_torn_line(tmp_path, monkeypatch):
    out = tmp_path / "full.jsonl"
    sink = JsonlSink(out)
    sink.open()
    sink.start(INFO, "instance", CATS)
    sink.frame(frame_result(0, [(1, 6, 2, 9)]))
    real_write = os.write

    def full_disk(fd, data):  # half of the line goes out, then the disk is full
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jsonl_module.os, "write", full_disk)
    with pytest.raises(OutputError, match="no space left"):
        sink.frame(frame_result(1, [(1, 6, 2, 9)]))
    monkeypatch.setattr(jsonl_module.os, "write", real_write)
    assert [d["type"] for d in lines(out)] == ["video", "frame"]  # cut back to the last complete line


def test_existing_outputs_folders_and_one_video_per_file(tmp_path):
    out = tmp_path / "x.jsonl"
    out.write_text("old\n")
    with pytest.raises(OutputError, match="already exists"):
        JsonlSink(out)
    with JsonlSink(out, overwrite=True) as sink:
        sink.start(INFO, "instance", CATS)
        with pytest.raises(OutputError, match="one video"):
            sink.start(INFO, "instance", CATS)
    assert "old" not in out.read_text()
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        JsonlSink(tmp_path / "d.jsonl", overwrite=True)


def test_stdout_and_a_reader_that_goes_away(capfd, monkeypatch):
    with sinks.open_sink("-") as sink:
        assert isinstance(sink, JsonlSink)
        sink.start(INFO, "instance", CATS)
        sink.frame(frame_result(0, [(1, 6, 2, 9)]))
    out = capfd.readouterr().out.splitlines()
    assert [json.loads(line)["type"] for line in out] == ["video", "frame"]

    def closed_pipe(fd, data):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    with JsonlSink("-") as sink:
        monkeypatch.setattr(jsonl_module.os, "write", closed_pipe)
        sink.start(INFO, "instance", CATS)  # `| head` went away: no error, nothing more is written
        sink.frame(frame_result(0, [(1, 6, 2, 9)]))
        assert sink.broken


def test_suffixes_and_stdout_choose_the_format():
    assert sinks.format_for("-") == "jsonl" and sinks.format_for("out.jsonl") == "jsonl"
    assert "jsonl" in sinks.FORMATS
