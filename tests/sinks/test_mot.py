"""MOT and MOTS text, read back by the real tools' readers: motmetrics for MOT, pycocotools for
the MOTS RLEs (the MOTS tools decode them with pycocotools too)."""

from __future__ import annotations

import motmetrics as mm
import numpy as np
import pytest
from sinkhelp import CATS, H, T, W, dense, instance_result, write

from videomt_cli import sinks
from videomt_cli.errors import OutputError
from videomt_cli.io import masks
from videomt_cli.records import Segment, VideoInfo, VideoResult


def test_txt_is_mot_and_mots_is_by_name():
    assert sinks.format_for("tracks.txt") == "mot"
    assert sinks.format_for("tracks.txt", "mots") == "mots"


def test_mot_boxes_are_one_based_as_motmetrics_reads_them(tmp_path):
    result = instance_result(stride=2)
    out = write(tmp_path, "mot", result, name="t.txt")
    df = mm.io.loadtxt(str(out), fmt="mot15-2D")
    rows = {(int(f), int(i)): r for (f, i), r in df.iterrows()}
    expected = {}
    for k, seg in enumerate(result.segments):
        for t in result.processed:
            m = dense(result, k, t)
            if m.any():
                ys, xs = np.nonzero(m)
                expected[(t + 1, seg.track_id)] = (xs.min(), ys.min(), xs.max() + 1 - xs.min(),
                                                   ys.max() + 1 - ys.min(), seg.score)
    assert set(rows) == set(expected)  # frame 1-based; odd frames (not processed) and empty masks absent
    for key, (x, y, w, h, score) in expected.items():
        r = rows[key]
        assert (r.X, r.Y, r.Width, r.Height) == (x, y, w, h)  # motmetrics took the 1 off again
        assert r.Confidence == pytest.approx(score, abs=1e-6)


def _iou_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - IoU of (N, 4) and (M, 4) x, y, w, h boxes, NaN past 0.5 (motmetrics' own ``iou_matrix``
    uses ``np.asfarray``, gone in NumPy 2)."""
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    inter = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None) * \
        np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    d = 1 - inter / union
    return np.where(d > 0.5, np.nan, d)


def test_mot_scored_against_itself_by_motmetrics_is_perfect(tmp_path):
    out = write(tmp_path, "mot", instance_result(), name="t.txt")
    gt = mm.io.loadtxt(str(out), fmt="mot15-2D")
    acc = mm.MOTAccumulator(auto_id=False)
    for frame, rows in gt.groupby(level="FrameId"):
        ids = rows.index.get_level_values("Id").tolist()
        boxes = rows[["X", "Y", "Width", "Height"]].to_numpy(float)
        acc.update(ids, ids, _iou_distances(boxes, boxes), frameid=frame)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], name="self")
    assert summary["mota"]["self"] == 1.0 and summary["idf1"]["self"] == 1.0
    assert summary["num_switches"]["self"] == 0


def test_mots_masks_are_disjoint_and_follow_the_png_ids(tmp_path):
    result = instance_result()
    out = write(tmp_path, "mots", result, name="t.txt")
    lines = [line.split(" ") for line in out.read_text().splitlines()]
    by_frame: dict[int, list] = {}
    for frame, obj, cls, h, w, counts in lines:
        assert (int(h), int(w)) == (H, W)
        obj, cls = int(obj), int(cls)
        assert obj // 1000 == cls and cls in {c.id for c in CATS}
        m = masks.decode({"size": [H, W], "counts": counts}).astype(bool)
        by_frame.setdefault(int(frame) - 1, []).append((obj % 1000, m))
    assert sorted(by_frame) == list(range(T))
    for t, objs in by_frame.items():
        ids = result.render_ids(t)
        total = sum(m.astype(int) for _, m in objs)
        assert total.max() == 1  # disjoint
        for track, m in objs:
            assert np.array_equal(m, ids == track)  # the higher score won the overlap, as in the PNGs
    # track 2 (score 0.9) overlaps track 1 and keeps the shared pixels
    t1 = dict(by_frame[0])[1]
    assert not (t1 & dense(result, 1, 0)).any() and dense(result, 0, 0)[dense(result, 1, 0)].any()


def test_one_video_per_file_and_no_semantic(tmp_path):
    with pytest.raises(OutputError, match="one video"):
        write(tmp_path, "mot", instance_result(), instance_result(video_id=2), name="a.txt")
    info = VideoInfo(path="/x.mp4", width=W, height=H, num_frames=1)
    semantic = VideoResult.from_masks(info, "semantic", CATS, [(Segment(7, 7, 1.0, isthing=False),
                                                                 [masks.encode(np.ones((H, W), bool))[0]])])
    with pytest.raises(OutputError, match="semantic"):
        write(tmp_path, "mots", semantic, name="b.txt")
    assert not list(tmp_path.iterdir())  # nothing left behind
