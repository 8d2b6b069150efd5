"""videomt_cli.sinks.png: 16-bit (or 8-bit semantic) id pictures, meta.json, segments.json,
and the overlap rule of VideoResult.render_ids."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sinkhelp import CATS, H, W, box, dense, instance_result, write  # noqa: E402

from videomt_cli.errors import OutputError  # noqa: E402
from videomt_cli.io import masks  # noqa: E402
from videomt_cli.records import Category, Segment, VideoInfo, VideoResult  # noqa: E402
from videomt_cli.sinks.base import META_NAME  # noqa: E402
from videomt_cli.sinks.png import SEGMENTS_NAME  # noqa: E402


def test_png_instance_ids_and_overlap_rule(tmp_path):
    r = instance_result(stride=2)
    out = write(tmp_path, "png", r)
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00002.png", "00004.png", META_NAME,
                                                      SEGMENTS_NAME]
    for t in (0, 2, 4):
        ids = cv2.imread(str(out / f"{t:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert ids.dtype == np.uint16 and ids.shape == (H, W)
        m1, m2 = dense(r, 0, t), dense(r, 1, t)
        assert (m1 & m2).any()
        assert (ids[m2] == 2).all()  # track 2 has the higher score: it wins the overlap
        assert (ids[m1 & ~m2] == 1).all()
        assert (ids[~(m1 | m2)] == 0).all()
        assert np.array_equal(ids, r.render_ids(t))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["task"] == "instance" and meta["dtype"] == "uint16" and meta["frames"] == [0, 2, 4]
    assert meta["num_frames"] == 5 and meta["width"] == W and meta["height"] == H and meta["background"] == 0
    segs = json.loads((out / "segments.json").read_text())
    assert segs["2"] == {"category_id": 2, "isthing": True, "score": 0.9, "name": "dog"}


def test_png_overlap_follows_score_not_order(tmp_path):
    r = instance_result(scores=(0.95, 0.1))
    ids = r.render_ids(0)
    assert (ids[dense(r, 0, 0)] == 1).all()
    assert ids.dtype == np.uint16


def test_png_large_track_ids_are_16_bit(tmp_path):
    r = instance_result(track_ids=(300, 40000))
    out = write(tmp_path, "png", r)
    ids = cv2.imread(str(out / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == {0, 300, 40000}
    r = instance_result(track_ids=(300, 70000))
    with pytest.raises(OutputError, match="16-bit"):
        write(tmp_path, "png", r, name="big")
    assert not (tmp_path / "big").exists()


def test_png_semantic_uint8_and_uint16(tmp_path):
    info = VideoInfo("/v/sem.mp4", W, H, num_frames=2)
    sky = box(0, 5, 0, W)
    wall = box(5, H, 0, W)
    wall[9:, :3] = False  # a few pixels with no class
    cats = [Category(0, "wall", False, (1, 2, 3)), Category(7, "sky", False, (4, 5, 6))]
    pairs = [(Segment(1, 0, 1.0, isthing=False), [masks.encode(wall)[0]] * 2),
             (Segment(2, 7, 1.0, isthing=False), [masks.encode(sky)[0]] * 2)]
    r = VideoResult.from_masks(info, "semantic", cats, pairs)
    out = write(tmp_path, "png", r)
    img = cv2.imread(str(out / "00001.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8
    assert (img[sky] == 7).all() and (img[wall] == 0).all() and (img[9:, :3] == 255).all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["no_class"] == 255 and meta["dtype"] == "uint8"
    assert {c["id"]: c["color"] for c in meta["categories"]} == {0: [1, 2, 3], 7: [4, 5, 6]}
    assert not (out / "segments.json").exists()
    cats16 = cats + [Category(300, "big", False)]
    pairs16 = [pairs[0], (Segment(2, 300, 1.0, isthing=False), pairs[1][1])]
    r16 = VideoResult.from_masks(info, "semantic", cats16, pairs16)
    img = cv2.imread(str(write(tmp_path, "png", r16, name="p16") / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and (img[sky] == 300).all() and (img[9:, :3] == 65535).all()
    meta = json.loads((tmp_path / "p16" / "meta.json").read_text())
    assert meta["no_class"] == 65535 and meta["dtype"] == "uint16"


def test_png_panoptic_segments_json(tmp_path):
    info = VideoInfo("/v/pan.mp4", W, H, num_frames=1)
    pairs = [(Segment(1, 7, 0.9, isthing=False), [masks.encode(box(0, 4, 0, W))[0]]),
             (Segment(2, 1, 0.85, isthing=True), [masks.encode(box(5, 9, 2, 6))[0]])]
    out = write(tmp_path, "png", VideoResult.from_masks(info, "panoptic", CATS, pairs))
    ids = cv2.imread(str(out / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == {0, 1, 2}
    segments = json.loads((out / "segments.json").read_text())
    assert segments["1"]["category_id"] == 7 and segments["1"]["isthing"] is False
    assert segments["2"]["isthing"] is True


def test_png_one_video_per_folder_or_subfolders(tmp_path):
    with pytest.raises(OutputError, match="one video"):
        write(tmp_path, "png", instance_result(1), instance_result(2), name="two")
    assert not (tmp_path / "two").exists()
    out = write(tmp_path, "png", instance_result(1), instance_result(2, path="/d/run.mp4"), name="many",
                subfolders=True)
    assert (out / "walk" / "00004.png").is_file() and (out / "run" / "meta.json").is_file()
    assert [v["folder"] for v in json.loads((out / "meta.json").read_text())["videos"]] == ["walk", "run"]
    # two videos with one name get the video id appended
    out = write(tmp_path, "png", instance_result(1), instance_result(2), name="same", subfolders=True)
    assert [v["folder"] for v in json.loads((out / "meta.json").read_text())["videos"]] == ["walk", "walk_2"]


def test_png_full_disk_is_one_output_error_and_libpng_prints_nothing(tmp_path, capfd):
    """PNGs are encoded in memory and written by Python: on a full disk the error names its cause
    (cv2.imwrite let libpng print its own line and returned only False)."""
    import builtins

    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        if "w" in str(mode) and str(file).endswith(".png"):
            return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)

    out = tmp_path / "masks"
    builtins.open = full_open
    try:
        with pytest.raises(OutputError, match=f"no space left on the device of {out}"):
            write(tmp_path, "png", instance_result(), name="masks")
    finally:
        builtins.open = real_open
    assert list(tmp_path.iterdir()) == []
    assert capfd.readouterr().err == ""
