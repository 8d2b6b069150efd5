"""The training loss on hand-made clips: point sampling, the video-consistent matcher, the loss
terms, their normalisation and the auxiliary layers."""

from __future__ import annotations

import math

import pytest
import torch

from videomt_cli.errors import InputError
from videomt_cli.training.losses import (ClipTarget, LossConfig, Predictions, VideoSetCriterion, match_clip,
                                matching_cost, point_sample, uncertain_points)

K = 3  # classes; index 3 is "no object"
Q = 6
LOW = 16  # mask logits are LOW x LOW; targets 4x that, as in training
CFG = LossConfig(num_points=2048)


def box(size: int, y0: int, x0: int, h: int, w: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0:y0 + h, x0:x0 + w] = True
    return m


def target_masks(boxes_per_track: list[list[tuple | None]]) -> torch.Tensor:
    """Boxes given at mask-logit resolution (LOW) -> bool masks (N, T, 4*LOW, 4*LOW)."""
    out = torch.zeros(len(boxes_per_track), len(boxes_per_track[0]), 4 * LOW, 4 * LOW, dtype=torch.bool)
    for n, per_frame in enumerate(boxes_per_track):
        for t, b in enumerate(per_frame):
            if b is not None:
                y0, x0, h, w = b
                out[n, t] = box(4 * LOW, 4 * y0, 4 * x0, 4 * h, 4 * w)
    return out


def predictions(T: int, assign: dict[int, tuple[int, list]], strength: float = 12.0) -> Predictions:
    """Logits where query q predicts (class, boxes per frame) for q in ``assign``; the other queries
    predict "no object" and empty masks. Shapes (1, T, Q, K+1) and (1, T, Q, LOW, LOW)."""
    cls = torch.full((1, T, Q, K + 1), -strength)
    cls[..., K] = strength
    masks = torch.full((1, T, Q, LOW, LOW), -strength)
    for q, (label, boxes) in assign.items():
        cls[0, :, q, K] = -strength
        cls[0, :, q, label] = strength
        for t, b in enumerate(boxes):
            if b is not None:
                y0, x0, h, w = b
                masks[0, t, q, y0:y0 + h, x0:x0 + w] = strength
    return Predictions(cls, masks)


A = [(1, 1, 6, 5), (1, 2, 6, 5), (1, 3, 6, 5), (1, 4, 6, 5)]  # a track visible in all 4 frames
B = [None, None, (9, 8, 5, 6), (9, 9, 5, 6)]  # a track that appears in frame 2


# ----------------------------------------------------------------------------- sampling


def test_point_sample_uses_normalised_coordinates():
    maps = torch.arange(12.0).reshape(1, 1, 3, 4)  # h=3, w=4
    centres = torch.tensor([[[(j + 0.5) / 4, (i + 0.5) / 3] for i in range(3) for j in range(4)]])
    torch.testing.assert_close(point_sample(maps, centres)[0, 0], torch.arange(12.0))  # (x, y) order
    # The same normalised point hits the same place at any resolution.
    big = maps.repeat_interleave(4, -1).repeat_interleave(4, -2)
    torch.testing.assert_close(point_sample(big, centres), point_sample(maps, centres))


def test_uncertain_points_concentrate_on_the_boundary():
    torch.manual_seed(0)
    logits = torch.linspace(-20, 20, 64).expand(2, 1, 64, 64).contiguous()  # boundary: x = 0.5
    pts = uncertain_points(logits, num_points=400, oversample_ratio=3.0, importance_sample_ratio=0.75)
    assert pts.shape == (2, 400, 2) and pts.min() >= 0 and pts.max() <= 1
    # The importance share is the 300 of 1200 candidates closest to the boundary (|x - 0.5| < ~1/8);
    # the other 100 are uniform.
    assert (pts[:, :300, 0] - 0.5).abs().max() < 0.2
    assert (pts[:, 300:, 0] - 0.5).abs().max() > 0.4


# ----------------------------------------------------------------------------- matching


def test_right_assignment_costs_less_than_swapped():
    torch.manual_seed(0)
    labels = torch.tensor([0, 2])
    masks = target_masks([[A[0]], [(9, 8, 5, 6)]])[:, 0]
    pred = predictions(1, {1: (0, [A[0]]), 4: (2, [(9, 8, 5, 6)])})
    cost = matching_cost(pred.class_logits[0, 0], pred.mask_logits[0, 0], labels, masks, CFG)
    assert cost.shape == (Q, 2)
    assert cost[1, 0] + cost[4, 1] < cost[1, 1] + cost[4, 0] - 5
    target = ClipTarget(labels, masks[:, None])
    m = match_clip(pred.class_logits[0], pred.mask_logits[0], target, CFG)
    assert dict(zip(m.tracks.tolist(), m.queries.tolist())) == {0: 1, 1: 4}
    # Swap what the queries predict: the matcher follows, and the loss stays as low.
    swapped = predictions(1, {4: (0, [A[0]]), 1: (2, [(9, 8, 5, 6)])})
    m = match_clip(swapped.class_logits[0], swapped.mask_logits[0], target, CFG)
    assert dict(zip(m.tracks.tolist(), m.queries.tolist())) == {0: 4, 1: 1}
    crit = VideoSetCriterion(K, CFG)

    def loss(p):
        torch.manual_seed(1)  # the same random points for each
        return crit(p, [target])

    right = loss(pred)
    assert float(loss(swapped).total) == pytest.approx(float(right.total), rel=1e-5)
    wrong_classes = loss(predictions(1, {1: (2, [A[0]]), 4: (0, [(9, 8, 5, 6)])}))
    assert float(wrong_classes.terms["loss_ce"]) > 10 * float(right.terms["loss_ce"]) + 1


def test_track_matched_on_first_visible_frame_keeps_its_query():
    # Frames 0-1: A only. Frame 2: B appears; query 0 (A's) would fit B best there, but it is taken.
    # Query 5 predicts B in frames 2-3 (and its class in every frame); query 3 predicts B's mask in
    # frame 3 only, which a per-frame matcher would prefer there; the video matcher must not care.
    torch.manual_seed(0)
    labels = torch.tensor([0, 1])
    target = ClipTarget(labels, target_masks([A, B]))
    pred = predictions(4, {0: (0, A), 5: (1, B)})
    pred.mask_logits[0, 2, 0, 9:14, 8:14] = 12.0  # A's query also covers B in frame 2
    pred.mask_logits[0, 3, 5] = -12.0  # ... and in frame 3, query 5 loses B, query 3 has it
    pred.mask_logits[0, 3, 3, 9:14, 9:15] = 12.0
    m = match_clip(pred.class_logits[0], pred.mask_logits[0], target, CFG)
    got = {t: (q, f) for t, q, f in zip(m.tracks.tolist(), m.queries.tolist(), m.first_frames.tolist())}
    assert got == {0: (0, 0), 1: (5, 2)}
    assert m.num_valid == 2
    # B's class is the target of query 5 in every frame, also frames 0-1 where B is absent: the
    # prediction above (class 1 in all frames) has a near-zero class loss ...
    crit = VideoSetCriterion(K, CFG)
    assert float(crit(pred, [target]).terms["loss_ce"]) < 1e-3
    # ... while "no object" for query 5 in frames 0-1 costs.
    late = predictions(4, {0: (0, A), 5: (1, B)})
    late.class_logits[0, :2, 5] = late.class_logits[0, :2, 1]  # no-object scores in frames 0-1
    assert float(crit(late, [target]).terms["loss_ce"]) > 0.1


def test_more_tracks_than_queries_and_empty_tracks():
    torch.manual_seed(0)
    T = 2
    boxes = [[(i, i, 2, 2)] * T for i in range(Q + 2)] + [[None] * T]  # Q + 2 visible tracks, 1 empty
    target = ClipTarget(torch.zeros(Q + 3, dtype=torch.long), target_masks(boxes))
    zeros = Predictions(torch.zeros(1, T, Q, K + 1), torch.zeros(1, T, Q, LOW, LOW))
    m = match_clip(zeros.class_logits[0], zeros.mask_logits[0], target, CFG)
    assert len(m.queries) == Q and len(set(m.queries.tolist())) == Q and m.num_valid == Q + 2
    # Logits 0 give BCE ln 2 at every point, so the normalisation shows: matched (frame, track)
    # pairs over T * valid tracks.
    out = VideoSetCriterion(K, CFG)(zeros, [target])
    assert float(out.terms["loss_mask"]) / 5 == pytest.approx(math.log(2) * Q / (Q + 2), rel=1e-5)


# ----------------------------------------------------------------------------- the loss


def test_perfect_prediction_has_near_zero_loss_and_normalisation_counts_frames():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1])
    target = ClipTarget(labels, target_masks([A, B]))
    crit = VideoSetCriterion(K, CFG)
    # Logits +-20 at 1/4 of the targets' resolution, as in training. What is left is the boundary
    # band where bilinear sampling blends, exactly where importance sampling puts 75 % of the points.
    perfect = crit(predictions(4, {2: (0, A), 4: (1, B)}, strength=20.0), [target])
    assert set(perfect.terms) == {"loss_ce", "loss_mask", "loss_dice"}
    assert float(perfect.terms["loss_ce"]) < 1e-6
    assert float(perfect.terms["loss_dice"]) / 5 < 0.08
    assert float(perfect.terms["loss_mask"]) / 5 < 0.08
    noisy = crit(Predictions(torch.randn(1, 4, Q, K + 1), torch.randn(1, 4, Q, LOW, LOW)), [target])
    assert float(noisy.terms["loss_mask"]) > 10 * float(perfect.terms["loss_mask"])
    assert float(noisy.terms["loss_dice"]) > 10 * float(perfect.terms["loss_dice"])
    # Two clips in a batch: each (frame, track) counts once. Logits 0: BCE = ln 2 per matched mask.
    other = ClipTarget(torch.tensor([2]), target_masks([A]))
    zeros = Predictions(torch.zeros(2, 4, Q, K + 1), torch.zeros(2, 4, Q, LOW, LOW))
    out = crit(zeros, [target, other])
    assert float(out.terms["loss_mask"]) == pytest.approx(5 * math.log(2), rel=1e-5)
    # Class loss: a weighted mean over every query of every frame (no-object weight 0.1).
    ce = torch.nn.functional.cross_entropy(torch.zeros(1, K + 1), torch.tensor([0]))
    assert float(out.terms["loss_ce"]) == pytest.approx(2 * float(ce), rel=1e-5)


def test_aux_layers_are_matched_and_weighted_independently():
    torch.manual_seed(0)
    target = ClipTarget(torch.tensor([0, 1]), target_masks([A, B]))
    final = predictions(4, {2: (0, A), 4: (1, B)})
    aux = predictions(4, {3: (0, A), 1: (1, B)})  # other queries: matched anew
    crit = VideoSetCriterion(K, CFG)
    out = crit(final, [target], aux=[aux, final])
    assert set(out.terms) == {f"{n}{s}" for n in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1")}
    assert float(out.total) == pytest.approx(sum(float(v) for v in out.terms.values()))
    assert float(out.terms["loss_ce_0"]) < 1e-3  # aux matched to its own queries
    assert {int(q) for q in out.matches[0].queries} == {2, 4}


def test_gradients_and_input_checks():
    torch.manual_seed(0)
    target = ClipTarget(torch.tensor([0, 1]), target_masks([A, B]))
    cls = torch.randn(1, 4, Q, K + 1, requires_grad=True)
    masks = torch.randn(1, 4, Q, LOW, LOW, requires_grad=True)
    out = VideoSetCriterion(K, CFG)(Predictions(cls, masks), [target])
    out.total.backward()
    assert cls.grad.abs().sum() > 0 and masks.grad.abs().sum() > 0
    # No tracks at all: every query learns "no object", mask terms are zero but connected.
    empty = ClipTarget(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, 64, 64, dtype=torch.bool))
    out = VideoSetCriterion(K, CFG)(Predictions(cls, masks), [empty])
    assert float(out.terms["loss_mask"].detach()) == 0 and float(out.terms["loss_ce"].detach()) > 0
    with pytest.raises(InputError, match="class-head indices"):
        VideoSetCriterion(K, CFG)(Predictions(cls, masks), [ClipTarget(torch.tensor([0, 3]), target.masks)])
    with pytest.raises(InputError, match=r"masks \(N, T=4, H, W\)"):
        VideoSetCriterion(K, CFG)(Predictions(cls, masks), [ClipTarget(target.labels, target.masks[:, :2])])
