"""What the three accumulators share: the running class-logit mean, the frame bookkeeping, the
checks on what is added, the result filters and the RLE encoding of label maps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from videomt_cli.errors import InputError
from videomt_cli.inference.postprocess.store import SpillMasks, SpillStore
from videomt_cli.inference.preprocess import Geometry
from videomt_cli.io import masks as mask_ops
from videomt_cli.records import RLE, Category, Segment

DEFAULT_BUDGET = 256 * 2**20  # bytes of device working memory per batched step


@dataclass(frozen=True)
class Online:
    """One frame's online selection: parallel lists, masks as RLE at the frame's size."""

    index: int
    track_ids: list[int]
    category_ids: list[int]
    scores: list[float]
    rles: list[RLE]


class FrameSet:
    """Which frame indices were added in one pass (one byte a frame)."""

    def __init__(self) -> None:
        self._seen = bytearray()

    def add(self, frames: list[int]) -> None:
        for f in frames:
            if f >= len(self._seen):
                self._seen.extend(bytes(f + 1 - len(self._seen)))
            if self._seen[f]:
                raise InputError(f"Frame {f} was added twice in the same pass.")
            self._seen[f] = 1

    def __contains__(self, frame: int) -> bool:
        return frame < len(self._seen) and bool(self._seen[frame])


class LogitMean:
    """Running per-query mean of class logits over frames, in float64, frame by frame.

    Adding frame by frame (not a chunk sum) makes the mean independent of how the video was cut
    into chunks, and the mean after the last frame is exactly the video-level mean.
    """

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0
        self.frames = FrameSet()

    def add(self, frame_indices: list[int], class_logits: Tensor) -> list[Tensor]:
        """Add (T, Q, K + 1) logits; returns the running mean after each of the T frames."""
        self.frames.add(frame_indices)
        x = class_logits.detach().to("cpu", torch.float64)
        if self.total is None:
            self.total = torch.zeros(x.shape[1:], dtype=torch.float64)
        means = []
        for frame in x:
            self.total += frame
            self.count += 1
            means.append(self.mean())
        return means

    def mean(self) -> Tensor:
        """(Q, K + 1) float32 on the CPU, as the official float32 mean."""
        if self.total is None or self.count == 0:
            raise InputError("No frames were added.")
        return (self.total / self.count).to(torch.float32)


def class_scores(mean_logits: Tensor) -> Tensor:
    """(Q, K) class probabilities: softmax over K + 1, "no object" dropped."""
    return F.softmax(mean_logits, dim=-1)[:, :-1]


class Accumulator:
    """Base of the three accumulators (the module ``postprocess`` says what each computes).

    ``passes``: how many times the network must run over the video (1 or 2). ``add`` takes one
    chunk of one video; ``result(num_frames)`` returns the video-level segments and the mask store
    they read from (the result owns it from then on). ``close()`` deletes the temporary file of
    an accumulator whose result was never taken.
    """

    passes = 1

    def __init__(self, categories: list[Category], geometry: Geometry, *, score_threshold: float = 0.0,
                 class_ids: set[int] | None = None, memory_budget: int = DEFAULT_BUDGET, online: bool = False,
                 keep_masks: bool = True) -> None:
        if not categories:
            raise InputError("categories must list the model's classes in class-head order.")
        if not isinstance(geometry, Geometry):
            raise InputError(f"geometry must be a preprocess.Geometry, got {type(geometry).__name__}.")
        self.categories = list(categories)
        self.num_classes = len(self.categories)
        self.geometry = geometry
        self.score_threshold = float(score_threshold)
        self.class_ids = None if class_ids is None else {int(c) for c in class_ids}
        self.memory_budget = int(memory_budget)
        self.online = bool(online)
        # False: online selections only, no video-level result: an endless stream must not fill the disk
        self.keep_masks = bool(keep_masks)
        self.store: SpillStore | None = SpillStore()
        self._empty: RLE | None = None

    # -- life cycle
    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers
    def _check(self, pass_index: int, frame_indices, class_logits: Tensor, mask_logits: Tensor) -> list[int]:
        if self.store is None:
            raise InputError("this accumulator is closed (its result was taken or it was closed).")
        if not 0 <= pass_index < self.passes:
            raise InputError(f"pass_index {pass_index} out of range: this accumulator takes {self.passes} pass(es).")
        frame_indices = [int(f) for f in frame_indices]
        if any(f < 0 for f in frame_indices):
            raise InputError("frame indices must be >= 0.")
        if class_logits.dim() != 3 or mask_logits.dim() != 4:
            raise InputError(
                "add() takes class_logits (T, Q, K+1) and mask_logits (T, Q, h, w) of one video, got "
                f"{tuple(class_logits.shape)} and {tuple(mask_logits.shape)}."
            )
        T, Q, K1 = class_logits.shape
        if len(frame_indices) != T or mask_logits.shape[:2] != (T, Q):
            raise InputError(
                f"{len(frame_indices)} frame indices for class_logits {tuple(class_logits.shape)} and mask_logits "
                f"{tuple(mask_logits.shape)}: the first two dimensions must be (frames, queries)."
            )
        if K1 != self.num_classes + 1:
            raise InputError(
                f"The class head has {K1 - 1} classes but {self.num_classes} categories were given; "
                "use the label table of the model's dataset."
            )
        if tuple(mask_logits.shape[-2:]) != tuple(self.geometry.mask_size):
            raise InputError(f"mask logits are {tuple(mask_logits.shape[-2:])} but the geometry expects "
                             f"{self.geometry.mask_size}: all frames of a video must have one size.")
        return frame_indices

    def empty_rle(self) -> RLE:
        if self._empty is None:
            self._empty = mask_ops.empty(*self.geometry.original)
        return self._empty

    def keep(self, category_id: int, score: float) -> bool:
        if self.class_ids is not None and category_id not in self.class_ids:
            return False
        return score >= self.score_threshold

    def _hand_over(self, num_frames: int, keys: dict[int, list[int]]) -> SpillMasks:
        """Give the spill file to the result: ``keys`` maps each track id to its store keys."""
        if self.store is None:
            raise InputError("result() was already taken from this accumulator.")
        if self.store.last_frame >= num_frames:
            raise InputError(f"num_frames {num_frames} is smaller than an added frame index.")
        masks = SpillMasks(self.store, keys, self.geometry.original)
        self.store = None
        return masks

    def encode_labels(self, labels: Tensor, present: Tensor) -> list[str]:
        """Label map (H, W) (device) and label values -> RLE counts of (labels == v) for each v."""
        H, W = labels.shape
        step = max(1, self.memory_budget // (4 * H * W))
        counts: list[str] = []
        for i in range(0, len(present), step):
            vals = present[i : i + step]
            # (n, W, H) contiguous on the device: the memory of the Fortran-ordered (H, W, n) array
            # pycocotools encodes, so masks.encode needs no transposing copy (DESIGN 8)
            m = (labels.t()[None] == vals[:, None, None]).contiguous().cpu().numpy()
            counts += [r["counts"] for r in mask_ops.encode(m.transpose(0, 2, 1))]
        return counts

    def result(self, num_frames: int) -> tuple[list[Segment], SpillMasks]:  # pragma: no cover - abstract
        raise NotImplementedError
