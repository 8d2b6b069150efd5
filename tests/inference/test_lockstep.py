"""The drivers of ``Stream.steps``: ``run_lockstep`` (videos batched through the network give each
video's own results, to the chunk-size rounding guarantee, whatever the batch, lengths, sizes and
refills; a bad video fails alone), and what a per-frame-only stream keeps on disk (nothing)."""

from __future__ import annotations

import numpy as np
import pytest

from media import make_video
from videomt_cli.errors import VideoError
from videomt_cli.inference.lockstep import LockstepJob, run_lockstep
from videomt_cli.inference.predictor import Predictor


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_model(None, chunk_size=2, min_size=64)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("lockstep")
    # lengths that end on partial chunks; one of another size (its own batch group)
    specs = {"a": (5, (96, 64)), "b": (3, (96, 64)), "c": (7, (96, 64)), "d": (4, (64, 48)), "e": (6, (96, 64))}
    return {k: make_video(root / f"{k}.mp4", frames=n, size=size) for k, (n, size) in specs.items()}


def assert_same(a, b):
    """Same objects and labels, scores within 1e-6, masks equal but for pixels whose logit is near 0."""
    assert [(s.category_id, s.query) for s in a.segments] == [(s.category_id, s.query) for s in b.segments]
    assert np.allclose([s.score for s in a.segments], [s.score for s in b.segments], atol=1e-6)
    assert a.processed == b.processed and a.num_frames == b.num_frames
    for sa, sb in zip(a.segments, b.segments):
        for ma, mb in zip(a.masks_of(sa), b.masks_of(sb)):
            if ma is None or mb is None:
                assert ma is None and mb is None
                continue
            from videomt_cli.io import masks

            diff = np.count_nonzero(masks.decode(ma) != masks.decode(mb))
            assert diff <= 2, diff


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_batched_videos_give_each_videos_own_results(predictor, videos, batch):
    alone = {k: predictor.run(path) for k, path in videos.items()}
    jobs = [LockstepJob(k, path, {"video_id": i + 1}) for i, (k, path) in enumerate(videos.items())]
    seen = []
    for job, result, error in run_lockstep(predictor, jobs, batch):
        assert error is None
        with result:
            assert result.video_id == jobs.index(job) + 1
            assert_same(result, alone[job.key])
        seen.append(job.key)
    assert sorted(seen) == sorted(videos)
    for r in alone.values():
        r.close()


def test_a_bad_video_fails_alone_and_its_slot_is_refilled(predictor, videos, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    jobs = [LockstepJob("a", videos["a"]), LockstepJob("bad", bad), LockstepJob("b", videos["b"]),
            LockstepJob("late", videos["c"], {"start": 100})]
    out = {job.key: (result, error) for job, result, error in run_lockstep(predictor, jobs, 2)}
    assert isinstance(out["bad"][1], VideoError) and out["bad"][0] is None
    assert out["late"][0] is None and "start" in str(out["late"][1]).lower() or "frame" in str(out["late"][1])
    for key in ("a", "b"):
        result, error = out[key]
        assert error is None
        with result, predictor.run(videos[key]) as alone:
            assert_same(result, alone)


def test_per_frame_only_streams_keep_no_masks_on_disk(predictor, videos, monkeypatch):
    """stream(final=False) (live runs writing JSON lines or a live overlay) must not grow the spill
    file: an endless stream would fill the disk. A video-level run does write it."""
    from videomt_cli.inference.postprocess.store import SpillStore

    writes = []
    original = SpillStore.write
    monkeypatch.setattr(SpillStore, "write", lambda self, *a, **k: (writes.append(1), original(self, *a, **k))[1])
    frames = list(predictor.stream(videos["a"], final=False))
    assert len(frames) == 5 and any(len(f.track_ids) for f in frames) and writes == []
    with predictor.run(videos["a"]):
        assert len(writes) == 5
