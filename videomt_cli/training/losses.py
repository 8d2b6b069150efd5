"""The VidEoMT training loss: video-consistent Hungarian matching, then class + mask + dice losses.

This is the recipe of the official ``videomt_online`` training (tue-mps/videomt,
``videomt/videomt.py``, ``videomt/criterion_videomt.py``, ``videomt/modeling/matcher.py``), written
anew. What it does, and where each choice comes from:

Matching (``match_clip``), once per clip and per prediction layer:
- A ground-truth *track* is one annotated object of the clip: a class and one mask per frame.
  Tracks whose mask is empty in every frame of the clip are dropped (official ``prepare_targets``
  keeps only ids that are valid in some frame).
- Each track is matched ONCE, on the first frame of the clip where its mask is non-empty, and keeps
  that query for every frame of the clip (official ``VideoHungarianMatcher_Consistent``). Frames are
  visited in order; tracks first seen in frame f are matched with the Hungarian algorithm against
  the queries no earlier frame took, on frame f's predictions only.
- Cost = 2 * (-softmax probability of the track's class) + 5 * sigmoid BCE + 5 * dice, the mask
  terms on ``num_points`` (12544) points drawn uniformly at random, shared by all queries and
  tracks of that frame, bilinearly sampled (``grid_sample``, align_corners False) from the mask
  logits and from the target masks, whatever their resolutions.
- With more tracks first seen in a frame than free queries, the extra tracks stay unmatched (the
  official code would reuse taken queries at cost 1e6; with 200 queries it never happens).

Losses, per frame of the clip (official: the clip is flattened to B*T frames, each with the same
video-level targets):
- class: cross-entropy over K+1 classes on every query of every frame, no-object weight 0.1, a
  weighted mean (sum of w*ce over sum of w, ``F.cross_entropy``'s ``weight`` semantics). A matched
  query's target is its track's class in EVERY frame of the clip, also in frames where the object
  is absent (the official per-frame targets hold the video-level labels); unmatched queries are
  "no object".
- mask BCE and dice: for every matched (query, track) pair and every frame of the clip, also the
  frames where the track is absent (its target there is an empty mask, which teaches the query to
  predict nothing), on ``num_points`` points per mask chosen PointRend-style: 3x oversampled
  uniform points, the 75 % most uncertain of them (uncertainty = -|logit|) plus 25 % fresh uniform
  points.
- normalisation: mask and dice sums are divided by ``num_masks`` = sum over the clips of the batch
  of T * (number of valid tracks of the clip), at least 1: every track counts once per frame of the
  clip, present or not (official: ``sum(len(t["labels"]) for t in targets)`` over the B*T per-frame
  targets, each holding the clip's valid tracks). The class loss is a mean and needs none.
- weights: total = 2 * ce + 5 * bce + 5 * dice, for the final prediction and the same again for
  each auxiliary prediction, each matched independently (``loop.forward_train`` says which
  auxiliary predictions the official recipe supervises).

Targets: one ``ClipTarget`` per video, ``labels`` (N,) class-head indices 0..K-1 and ``masks``
(N, T, H, W) bool at the padded input resolution (what ``train`` builds; any resolution works,
since points are sampled in normalised coordinates, as the official code does with targets at the
padded image size and predictions at 1/4 of it).

Randomness: point coordinates come from torch's global generator of the logits' device, so a
seeded run (or a restored RNG state) repeats exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from videomt_cli.errors import InputError


@dataclass(frozen=True)
class LossConfig:
    """Weights and point sampling of the official recipe (Mask2Former / EoMT / VidEoMT configs)."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544  # 112 * 112
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75


@dataclass
class ClipTarget:
    """Ground truth of one clip: N tracks, class-head labels (N,) and masks (N, T, H, W) bool."""

    labels: Tensor
    masks: Tensor

    def to(self, device: torch.device | str) -> "ClipTarget":
        return ClipTarget(self.labels.to(device), self.masks.to(device))


@dataclass
class Predictions:
    """One layer's predictions for a batch of clips: class (B, T, Q, K+1), masks (B, T, Q, h, w)."""

    class_logits: Tensor
    mask_logits: Tensor


@dataclass
class Match:
    """A clip's assignment: query ``queries[i]`` predicts track ``tracks[i]`` in every frame.

    Sorted by track. ``first_frames[i]`` is the frame where track ``tracks[i]`` was matched (its first non-empty
    frame). ``num_valid`` counts the clip's tracks that are non-empty in at least one frame
    (matched or not); the loss normalisation uses it.
    """

    queries: Tensor  # (M,) long
    tracks: Tensor  # (M,) long
    first_frames: Tensor  # (M,) long
    num_valid: int = 0


@dataclass
class LossOutput:
    """The weighted loss terms by name (``loss_ce``, ``loss_mask``, ``loss_dice``, then the same with
    ``_0``, ``_1``, ... for the auxiliary predictions), their sum ``total``, and the matches of the
    final prediction (one per clip)."""

    total: Tensor
    terms: dict[str, Tensor]
    matches: list[Match] = field(default_factory=list)


# ----------------------------------------------------------------------------- point sampling


def point_sample(maps: Tensor, coords: Tensor) -> Tensor:
    """Bilinear values of maps (R, C, H, W) at points coords (R, P, 2) in [0, 1]^2 (x, y) -> (R, C, P).

    ``grid_sample`` with align_corners False: coordinate 0 and 1 are the outer edges of the map, so
    the same normalised point hits the same place in a mask of any resolution.
    """
    grid = coords.unsqueeze(2) * 2.0 - 1.0  # (R, P, 1, 2) in [-1, 1]
    return F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", align_corners=False).squeeze(3)


@torch.no_grad()
def uncertain_points(logits: Tensor, num_points: int, oversample_ratio: float,
                     importance_sample_ratio: float) -> Tensor:
    """PointRend's training points for mask logits (R, 1, h, w) -> coordinates (R, num_points, 2).

    Draw ``num_points * oversample_ratio`` uniform points, keep the ``importance_sample_ratio``
    share with the highest uncertainty -|logit| (closest to the decision boundary), and fill up with
    fresh uniform points.
    """
    R = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    candidates = torch.rand(R, num_sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits.float(), candidates)[:, 0].abs()  # (R, num_sampled)
    best = uncertainty.topk(num_uncertain, dim=1).indices  # (R, num_uncertain)
    chosen = torch.gather(candidates, 1, best.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand(R, num_random, 2, device=logits.device)], dim=1)
    return chosen


# ----------------------------------------------------------------------------- mask losses


def sigmoid_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of each row: logits, targets (R, P) -> (R,)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)


def dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Soft dice loss of each row, +1 smoothing: 1 - (2 |p t| + 1) / (|p| + |t| + 1). (R, P) -> (R,)."""
    probs = logits.sigmoid()
    inter = (probs * targets).sum(-1)
    return 1.0 - (2.0 * inter + 1.0) / (probs.sum(-1) + targets.sum(-1) + 1.0)


def pairwise_sigmoid_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """``sigmoid_ce`` of every prediction row against every target row: (Q, P), (N, P) -> (Q, N)."""
    # BCE(x, 1) = softplus(-x) and BCE(x, 0) = softplus(x): one matmul each for all pairs.
    pos = F.softplus(-logits)
    neg = F.softplus(logits)
    return (pos @ targets.T + neg @ (1.0 - targets).T) / logits.shape[1]


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """``dice`` of every prediction row against every target row: (Q, P), (N, P) -> (Q, N)."""
    probs = logits.sigmoid()
    inter = probs @ targets.T
    return 1.0 - (2.0 * inter + 1.0) / (probs.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1.0)


# ----------------------------------------------------------------------------- matching


def _check_target(target: ClipTarget, T: int, num_classes: int) -> None:
    labels, masks = target.labels, target.masks
    if labels.ndim != 1 or masks.ndim != 4 or masks.shape[0] != labels.shape[0] or masks.shape[1] != T:
        raise InputError(
            f"A clip target needs labels (N,) and masks (N, T={T}, H, W); got labels "
            f"{tuple(labels.shape)} and masks {tuple(masks.shape)}."
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise InputError(
            f"Target labels must be class-head indices 0..{num_classes - 1}; got "
            f"{sorted(set(labels.tolist()))}."
        )


@torch.no_grad()
def matching_cost(class_logits: Tensor, mask_logits: Tensor, labels: Tensor, masks: Tensor,
                  cfg: LossConfig = LossConfig()) -> Tensor:
    """The Hungarian cost of every query against every target in one frame: (Q, n).

    class_logits (Q, K+1), mask_logits (Q, h, w), labels (n,), masks (n, H, W). Mask terms on
    ``cfg.num_points`` uniform random points shared by all queries and targets.
    """
    Q, n = class_logits.shape[0], labels.shape[0]
    cost_class = -class_logits.float().softmax(-1)[:, labels]  # (Q, n)
    coords = torch.rand(1, cfg.num_points, 2, device=mask_logits.device)
    pred = point_sample(mask_logits.float().unsqueeze(1), coords.expand(Q, -1, -1))[:, 0]  # (Q, P)
    tgt = point_sample(masks.float().unsqueeze(1), coords.expand(n, -1, -1))[:, 0]  # (n, P)
    return (cfg.mask_weight * pairwise_sigmoid_ce(pred, tgt) + cfg.class_weight * cost_class
            + cfg.dice_weight * pairwise_dice(pred, tgt))


@torch.no_grad()
def match_clip(class_logits: Tensor, mask_logits: Tensor, target: ClipTarget,
               cfg: LossConfig = LossConfig()) -> Match:
    """Video-consistent Hungarian matching of one clip (see the module docstring).

    class_logits (T, Q, K+1), mask_logits (T, Q, h, w), target with masks (N, T, H, W).
    """
    T, Q = class_logits.shape[:2]
    _check_target(target, T, class_logits.shape[-1] - 1)
    device = class_logits.device
    target = target.to(device)
    present = target.masks.flatten(2).any(-1)  # (N, T)
    valid = present.any(1)
    num_valid = int(valid.sum())
    first = torch.where(valid, present.float().argmax(1), torch.full_like(valid, -1, dtype=torch.long))
    first_cpu = first.cpu()

    taken = np.zeros(Q, dtype=bool)
    queries, tracks, frames = [], [], []
    for f in sorted(set(first_cpu[first_cpu >= 0].tolist())):
        new = torch.nonzero(first_cpu == f).flatten()  # tracks first seen in frame f
        free = np.flatnonzero(~taken)
        if len(free) == 0:
            break
        free_t = torch.as_tensor(free, device=device)
        new_t = new.to(device)
        cost = matching_cost(class_logits[f][free_t], mask_logits[f][free_t], target.labels[new_t],
                             target.masks[new_t, f], cfg)
        cost = torch.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=1e6).cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        chosen = free[rows]
        taken[chosen] = True
        queries.extend(chosen.tolist())
        tracks.extend(new[cols].tolist())
        frames.extend([f] * len(rows))

    order = np.argsort(tracks, kind="stable")  # by track: the loss sees masks in target order
    as_long = lambda xs: torch.as_tensor(np.asarray(xs, dtype=np.int64)[order], device=device)  # noqa: E731
    return Match(as_long(queries), as_long(tracks), as_long(frames), num_valid)


# ----------------------------------------------------------------------------- the criterion


class VideoSetCriterion:
    """The official VidEoMT loss for a batch of clips; call it with the final and the auxiliary
    predictions: ``criterion(final, targets, aux=[...]) -> LossOutput``."""

    def __init__(self, num_classes: int, cfg: LossConfig = LossConfig()):
        self.num_classes = num_classes
        self.cfg = cfg

    def class_weights(self, device) -> Tensor:
        weight = torch.ones(self.num_classes + 1, device=device)
        weight[-1] = self.cfg.no_object_weight
        return weight

    def __call__(self, final: Predictions, targets: list[ClipTarget],
                 aux: list[Predictions] | None = None) -> LossOutput:
        B, T, _, K1 = final.class_logits.shape
        if K1 != self.num_classes + 1:
            raise InputError(f"The class logits have {K1} outputs; this loss is for {self.num_classes} + 1 classes.")
        if len(targets) != B:
            raise InputError(f"Got {len(targets)} clip targets for a batch of {B} clips.")
        weights = {"loss_ce": self.cfg.class_weight, "loss_mask": self.cfg.mask_weight,
                   "loss_dice": self.cfg.dice_weight}
        raw, matches = self.layer_losses(final, targets)
        terms = {name: value * weights[name] for name, value in raw.items()}
        for i, layer in enumerate(aux or []):
            raw, _ = self.layer_losses(layer, targets)
            terms.update({f"{name}_{i}": value * weights[name] for name, value in raw.items()})
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total=total, terms=terms, matches=matches)

    def layer_losses(self, pred: Predictions, targets: list[ClipTarget]) -> tuple[dict[str, Tensor], list[Match]]:
        """Unweighted ``loss_ce``, ``loss_mask``, ``loss_dice`` of one prediction layer, matched anew."""
        class_logits, mask_logits = pred.class_logits, pred.mask_logits
        B, T, Q, _ = class_logits.shape
        device = class_logits.device
        matches = [match_clip(class_logits[b], mask_logits[b], targets[b], self.cfg) for b in range(B)]
        num_masks = max(float(sum(T * m.num_valid for m in matches)), 1.0)

        # Class loss over every query of every frame.
        target_classes = torch.full((B, T, Q), self.num_classes, dtype=torch.long, device=device)
        for b, m in enumerate(matches):
            if len(m.queries):
                target_classes[b, :, m.queries] = targets[b].labels.to(device)[m.tracks]
        loss_ce = F.cross_entropy(class_logits.float().flatten(0, 2), target_classes.flatten(),
                                  weight=self.class_weights(device))

        # Mask losses over every (matched query, frame) pair.
        src, tgt = [], []
        for b, m in enumerate(matches):
            if len(m.queries):
                src.append(mask_logits[b][:, m.queries].transpose(0, 1).flatten(0, 1))  # (M*T, h, w)
                tgt.append(targets[b].masks.to(device)[m.tracks].flatten(0, 1))  # (M*T, H, W)
        if not src:
            zero = mask_logits.sum() * 0.0  # keeps the graph (and DDP-style hooks) intact
            return {"loss_ce": loss_ce, "loss_mask": zero, "loss_dice": zero}, matches
        src_masks = torch.cat(src).unsqueeze(1).float()
        tgt_masks = torch.cat(tgt).unsqueeze(1).float()
        coords = uncertain_points(src_masks.detach(), self.cfg.num_points, self.cfg.oversample_ratio,
                                  self.cfg.importance_sample_ratio)
        with torch.no_grad():
            point_labels = point_sample(tgt_masks, coords)[:, 0]
        point_logits = point_sample(src_masks, coords)[:, 0]
        loss_mask = sigmoid_ce(point_logits, point_labels).sum() / num_masks
        loss_dice = dice(point_logits, point_labels).sum() / num_masks
        return {"loss_ce": loss_ce, "loss_mask": loss_mask, "loss_dice": loss_dice}, matches
