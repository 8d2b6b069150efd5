"""Video-level results from per-frame predictions, streamed chunk by chunk (DESIGN 3).

One accumulator per video, made for its frame geometry. The predictor runs the network over the
video ``passes`` times and hands every chunk's outputs to ``add``; ``result`` then returns the
video-level :class:`~videomt_cli.records.Segment` list and the mask store they read from::

    acc = make_accumulator("instance", categories, geometry, max_num=10)
    for p in range(acc.passes):
        state = None
        for frame_indices, frames in chunks:
            out, state = model(frames, state)
            acc.add(p, frame_indices, out.class_logits[0], out.mask_logits[0])
    segments, store = acc.result(num_frames)

Categories are in class-head order: head index i is ``categories[i]``, whose ``id`` (the
dataset's id) is what ``Segment.category_id`` holds. What each task computes, following the
official code (``tue-mps/videomt``, ``videomt/videomt.py``, class ``videomt_online``), is in
:mod:`.instance` and :mod:`.panoptic`; the spill file in :mod:`.store`.

With ``online=True`` every ``add`` also returns each frame's *online* selection
(:class:`~.common.Online`): the same rule as the final result applied to the class logits
averaged over the frames seen so far. For the instance task the online selection of the last
frame is exactly the video-level result. ``score_threshold`` and ``class_ids`` (dataset ids)
filter both.
"""

from __future__ import annotations

from videomt_cli.errors import InputError
from videomt_cli.inference.postprocess.common import DEFAULT_BUDGET, Accumulator, Online
from videomt_cli.inference.postprocess.instance import InstanceAccumulator
from videomt_cli.inference.postprocess.panoptic import PanopticAccumulator, SemanticAccumulator
from videomt_cli.records import TASKS, Category


def make_accumulator(task: str, categories: list[Category], geometry, *, max_num: int = 10,
                     score_threshold: float = 0.0, class_ids: set[int] | None = None,
                     object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8,
                     memory_budget: int = DEFAULT_BUDGET, online: bool = False, keep_masks: bool = True) -> Accumulator:
    """The accumulator for ``task`` ("instance" | "panoptic" | "semantic") and a video's geometry.

    max_num: instance top-k over (query, class) pairs (10 YouTube-VIS, 20 OVIS).
    score_threshold, class_ids: filters on the results (class_ids are dataset ids).
    object_mask_threshold, overlap_threshold: panoptic query filter and area-ratio filter.
    memory_budget: bytes of device memory a batched upsampling step may use.
    online: also return each frame's online selection from ``add``.
    keep_masks: False keeps no masks for a video-level result (online selections only).
    """
    common = dict(score_threshold=score_threshold, class_ids=class_ids, memory_budget=memory_budget, online=online,
                  keep_masks=keep_masks)
    if task == "instance":
        return InstanceAccumulator(categories, geometry, max_num=max_num, **common)
    if task == "panoptic":
        return PanopticAccumulator(categories, geometry, object_mask_threshold=object_mask_threshold,
                                   overlap_threshold=overlap_threshold, **common)
    if task == "semantic":
        return SemanticAccumulator(categories, geometry, **common)
    raise InputError(f"Unknown task {task!r}: use one of {', '.join(TASKS)}.")


__all__ = ["make_accumulator", "Accumulator", "Online", "InstanceAccumulator", "PanopticAccumulator",
           "SemanticAccumulator", "TASKS", "DEFAULT_BUDGET"]
