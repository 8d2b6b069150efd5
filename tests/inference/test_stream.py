"""Predictor.stream: per-frame online results against the video-level result, every source alike,
and the panoptic and semantic tasks end to end (Predictor and CLI) with their invariants.

The bundled demo model (trained on synthetic shapes) runs on the bundled example video: its
objects are distinct and confidently classified, so the panoptic query filter keeps some and the
selections change over the first frames (the online scores of early frames differ from the final
ones), which is what the online-vs-final tests need.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from videomt_cli.cli import app
from videomt_cli.errors import InputError
from videomt_cli.inference.predictor import Predictor
from videomt_cli.io import masks as mask_ops
from videomt_cli.io.read import read_frames
from videomt_cli.records import FrameResult

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "example.mp4"
N = 12  # frames of the example the tests use


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_model(None, device="cpu", chunk_size=5)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [f.image for f in read_frames(str(EXAMPLE), end=N)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, frames) -> Path:
    out = tmp_path_factory.mktemp("frames")
    for i, image in enumerate(frames):
        Image.fromarray(image).save(out / f"frame{i}.png")  # lossless: the same pixels
    return out


def _selection(fr: FrameResult) -> list[tuple[int, int, float]]:
    return list(zip(fr.track_ids.tolist(), fr.class_ids.tolist(), fr.scores.tolist()))


def _final_selection(result, frame: int) -> list[tuple[int, int, float]]:
    return [(s.query + 1, s.category_id, s.score) for s in result.segments]


def _stream_all(predictor, source, **kw):
    stream = predictor.stream(source, **kw)
    out = list(stream)
    return out, stream.result


def test_last_frame_online_equals_the_video_level_result(predictor):
    online, result = _stream_all(predictor, str(EXAMPLE), end=N)
    with result:
        assert [fr.index for fr in online] == list(range(N)) == list(result.processed)
        last = online[-1]
        assert result.segments, "the demo model finds objects in the example"
        assert _selection(last) == [(s.query + 1, s.category_id, pytest.approx(s.score, abs=1e-6))
                                    for s in result.segments]
        for seg, rle in zip(result.segments, last.rles):
            assert rle == result.mask(seg, last.index)
        # boxes are those of the masks, xyxy with exclusive ends
        for box, mask in zip(last.boxes, last.masks):
            ys, xs = np.nonzero(mask)
            if len(ys):
                assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert last.masks.shape == (len(last), result.video.height, result.video.width)
        assert last.image.shape == (result.video.height, result.video.width, 3)


def test_online_masks_equal_final_masks_where_the_selection_agrees(predictor):
    online, result = _stream_all(predictor, str(EXAMPLE), end=N)
    with result:
        agree = 0
        by_track = {(s.query + 1, s.category_id): s for s in result.segments}
        for fr in online:
            for track, cid, rle in zip(fr.track_ids.tolist(), fr.class_ids.tolist(), fr.rles):
                seg = by_track.get((track, cid))
                if seg is not None:
                    assert rle == result.mask(seg, fr.index)  # a query's mask does not depend on the scores
                    agree += 1
        assert agree >= N
        # the online scores move: an early frame's differ from the final ones
        assert any(_selection(fr) != _selection(online[-1]) for fr in online[:3])


def test_run_equals_the_stream_result(predictor):
    _, streamed = _stream_all(predictor, str(EXAMPLE), end=N)
    with streamed, predictor.run(str(EXAMPLE), end=N) as ran:
        assert [(s.track_id, s.category_id, s.score, s.query) for s in ran.segments] == \
               [(s.track_id, s.category_id, s.score, s.query) for s in streamed.segments]
        for a, b in zip(ran.segments, streamed.segments):
            assert list(ran.masks_of(a)) == list(streamed.masks_of(b))


def test_file_folder_and_arrays_give_the_same_numbers(predictor, frames, folder):
    runs = {
        "file": _stream_all(predictor, str(EXAMPLE), end=N),
        "folder": _stream_all(predictor, str(folder)),
        "list": _stream_all(predictor, frames),
        "generator": _stream_all(predictor, (f for f in frames)),
    }
    ref_online, ref = runs["file"]
    assert ref.num_frames == 64 and runs["list"][1].num_frames == N  # the file goes on past the window
    for name, (online, result) in runs.items():
        assert [fr.index for fr in online] == list(range(N)), name
        for a, b in zip(online, ref_online):
            assert _selection(a) == _selection(b) and a.rles == b.rles, name
        assert [(s.category_id, s.score) for s in result.segments] == \
               [(s.category_id, s.score) for s in ref.segments], name
        for a, b in zip(result.segments, ref.segments):
            assert list(result.masks_of(a))[:N] == list(ref.masks_of(b))[:N], name
    for _, result in runs.values():
        result.close()


def test_array_sources_take_a_frame_rate(predictor, frames):
    online = list(predictor.stream(frames[:4], fps=8))
    assert [fr.time for fr in online] == [0.0, 0.125, 0.25, 0.375]


def test_stream_options_are_checked_before_any_frame(predictor):
    with pytest.raises(InputError, match="stride"):
        predictor.stream(str(EXAMPLE), stride=0)
    with pytest.raises(InputError, match="Unknown class"):
        predictor.stream(str(EXAMPLE), classes=["dog"])
    with pytest.raises(InputError, match="Unknown option 'chunksize'.*chunk_size"):
        Predictor.from_model(None, chunksize=4)
    with pytest.raises(InputError, match="--chunk-size"):
        Predictor.from_model(None, chunk_size=0)


def test_class_filter_is_an_argument_of_the_run(predictor):
    online, result = _stream_all(predictor, str(EXAMPLE), end=N, classes=["circle"])
    with result:
        circle = next(c.id for c in predictor.categories if c.name == "circle")
        assert result.segments and {s.category_id for s in result.segments} == {circle}
        assert all(set(fr.class_ids.tolist()) <= {circle} for fr in online)
    with predictor.run(str(EXAMPLE), end=N) as unfiltered:  # the predictor itself did not change
        assert len({s.category_id for s in unfiltered.segments}) > 1


def test_closing_a_stream_early_deletes_its_spill_file(predictor):
    stream = predictor.stream(str(EXAMPLE))
    next(stream)
    stream.close()
    assert stream.result is None


# ----------------------------------------------------------------------------- panoptic and semantic


def _task(predictor, task) -> Predictor:
    # circles as a stuff class, so the panoptic stuff merge runs too
    cats = tuple(dataclasses.replace(c, isthing=c.name != "circle") for c in predictor.categories)
    return dataclasses.replace(predictor, task=task, categories=cats)


def _digest(result):
    return ([(s.track_id, s.category_id, s.score, s.isthing) for s in result.segments],
            [list(result.masks_of(s)) for s in result.segments])


@pytest.mark.parametrize("task", ["panoptic", "semantic"])
def test_two_pass_tasks_depend_on_the_chunk_size_only_by_rounding(predictor, task):
    """The README's guarantee: the same segments, scores within 1e-6, and masks that can differ only
    in pixels where float rounding decides (here: at most 1e-4 of a frame's pixels)."""
    p = _task(predictor, task)
    digests = []
    for chunk in (1, 4, N):
        with dataclasses.replace(p, chunk_size=chunk).run(str(EXAMPLE), end=N) as result:
            assert result.task == task and result.segments
            digests.append(_digest(result))
    (ref_segments, ref_masks), (h, w) = digests[0], (240, 320)
    for segments, masks in digests[1:]:
        assert [s[:2] + s[3:] for s in segments] == [s[:2] + s[3:] for s in ref_segments]
        assert all(abs(a[2] - b[2]) <= 1e-6 for a, b in zip(segments, ref_segments))
        for track, ref_track in zip(masks, ref_masks):
            for m, r in zip(track, ref_track):
                assert (m is None) == (r is None)
                if m is not None and m != r:
                    assert (mask_ops.decode(m) != mask_ops.decode(r)).sum() <= 1e-4 * h * w


@pytest.mark.parametrize("task", ["panoptic", "semantic"])
def test_two_pass_tasks_with_a_stride_see_only_those_frames(predictor, frames, task):
    p = _task(predictor, task)
    with p.run(str(EXAMPLE), end=N, stride=2) as strided, p.run(frames[::2]) as subsampled:
        assert list(strided.processed) == list(range(0, N, 2))
        assert strided.num_frames == 64  # the whole video: frames outside the window are null
        assert [(s.category_id, s.score) for s in strided.segments] == \
               [(s.category_id, s.score) for s in subsampled.segments]
        for a, b in zip(strided.segments, subsampled.segments):
            masks = list(strided.masks_of(a))
            assert masks[1] is None and masks[N] is None
            assert masks[0:N:2] == list(subsampled.masks_of(b))


def test_panoptic_online_results_and_one_shot_sources(predictor, frames):
    p = _task(predictor, "panoptic")
    with pytest.raises(InputError, match="read once"):
        p.stream(f for f in frames)
    online = list(p.stream((f for f in frames), final=False))
    assert len(online) == N and any(len(fr) for fr in online)
    for fr in online:  # panoptic segments are disjoint within a frame
        if len(fr) > 1:
            assert fr.masks.sum(0).max() <= 1


def test_panoptic_and_semantic_through_the_cli(tmp_path):
    runner = CliRunner()
    pan = tmp_path / "pan"
    res = runner.invoke(app, ["segment", str(EXAMPLE), "--task", "panoptic", "--end", str(N), "-o", str(pan),
                              "--format", "png", "--chunk-size", "3", "-q"])
    assert res.exit_code == 0, res.output
    meta = json.loads((pan / "meta.json").read_text())
    assert meta["task"] == "panoptic" and meta["frames"] == list(range(N))
    segments = json.loads((pan / "segments.json").read_text())
    assert segments
    ids = np.array(Image.open(pan / "00005.png"))
    assert set(np.unique(ids).tolist()) - {0} <= {int(k) for k in segments}
    sem = tmp_path / "sem.json"
    res = runner.invoke(app, ["segment", str(EXAMPLE), "--task", "semantic", "--end", str(N), "--stride", "3",
                              "-o", str(sem), "-q"])
    assert res.exit_code == 0, res.output
    entries = json.loads(sem.read_text())
    assert entries and all(len(e["segmentations"]) == 64 for e in entries)
    for e in entries:
        masks = e["segmentations"]
        assert [i for i, m in enumerate(masks) if m is not None] == list(range(0, N, 3))
    # semantic masks tile every processed frame exactly once
    total = sum(mask_ops.decode(e["segmentations"][3]).astype(int) for e in entries)
    assert total.min() == total.max() == 1
