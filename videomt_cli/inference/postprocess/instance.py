"""Video instance segmentation (YouTube-VIS, OVIS semantics): one pass, masks spilled as RLE.

Per frame, only the RLEs of the queries whose mask is non-empty are kept (in the spill file);
after the last frame the top-k (query, class) pairs are picked from the mean class logits and
only their masks are read back. A query with no positive low-resolution logit in a frame has an
empty mask there, exactly, without any upsampling: bilinear interpolation is a convex
combination, so a pixel whose source neighbourhood holds no positive logit stays <= 0 after both
resizes. The others go through the official resize chain (``preprocess.masks_to_frame``), batched
within the memory budget.
"""

from __future__ import annotations

import torch
from torch import Tensor

from videomt_cli.errors import InputError
from videomt_cli.inference.postprocess.common import Accumulator, LogitMean, Online, class_scores
from videomt_cli.inference.postprocess.store import SpillMasks
from videomt_cli.inference.preprocess import masks_to_frame
from videomt_cli.io import masks as mask_ops
from videomt_cli.records import Category, Segment


class InstanceAccumulator(Accumulator):
    """Top ``max_num`` (query, class) pairs of the video; a query may appear with two labels."""

    passes = 1

    def __init__(self, categories: list[Category], geometry, *, max_num: int = 10, **kw) -> None:
        super().__init__(categories, geometry, **kw)
        if max_num <= 0:
            raise InputError(f"max_num must be positive, got {max_num}.")
        self.max_num = int(max_num)
        self.logits = LogitMean()

    @torch.no_grad()
    def add(self, pass_index: int, frame_indices, class_logits: Tensor, mask_logits: Tensor) -> list[Online]:
        """One chunk: class_logits (T, Q, K + 1), mask_logits (T, Q, h, w) on any device and dtype.
        Returns the online selection of each frame when the accumulator is ``online``, else []."""
        frame_indices = self._check(pass_index, frame_indices, class_logits, mask_logits)
        means = self.logits.add(frame_indices, class_logits)
        out = []
        for f, found, mean in zip(frame_indices, self.frame_rles(mask_logits.detach()), means):
            if self.keep_masks:
                keys = sorted(found)
                self.store.write(f, keys, [found[k] for k in keys])
            if self.online:
                picks = self.select(mean)
                rles = [{"size": list(self.geometry.original), "counts": found[q]} if q in found
                        else self.empty_rle() for q, _, _ in picks]
                out.append(Online(f, [q + 1 for q, _, _ in picks], [c.id for _, c, _ in picks],
                                  [s for _, _, s in picks], rles))
        return out

    def select(self, mean_logits: Tensor) -> list[tuple[int, Category, float]]:
        """(query, category, score) of the top ``max_num`` pairs over query x class, then the filters.

        Ties are broken by the lower flat index (the official ``topk(sorted=False)`` leaves them
        unspecified)."""
        scores = class_scores(mean_logits)
        Q, K = scores.shape
        flat = scores.flatten()
        order = torch.argsort(flat, descending=True, stable=True)[: min(self.max_num, Q * K)]
        picks = []
        for idx in order.tolist():
            query, label = divmod(idx, K)
            category, score = self.categories[label], float(flat[idx])
            if self.keep(category.id, score):
                picks.append((query, category, score))
        return picks

    def frame_rles(self, mask_logits: Tensor) -> list[dict[int, str]]:
        """{query: RLE counts} of every non-empty mask of each frame of a (T, Q, h, w) chunk."""
        geometry = self.geometry
        per_frame: list[dict[int, str]] = [{} for _ in range(mask_logits.shape[0])]
        t, q = (mask_logits.amax(dim=(-2, -1)) > 0).nonzero(as_tuple=True)
        H, W = geometry.original
        ph, pw = geometry.padded
        step = max(1, self.memory_budget // (4 * 3 * (H * W + ph * pw)))
        for i in range(0, len(t), step):
            tt, qq = t[i : i + step], q[i : i + step]
            m = masks_to_frame(mask_logits[tt, qq], geometry) > 0  # (n, H, W)
            keep = m.flatten(1).any(1)  # positive logits only in the padding give empty masks
            if not bool(keep.any()):
                continue
            m, tt, qq = m[keep], tt[keep], qq[keep]
            # (n, W, H) C-ordered is the memory of the Fortran-ordered (H, W, n) array pycocotools
            # encodes: one transposing copy on the device, none on the host (DESIGN 8).
            cols = m.transpose(1, 2).contiguous().cpu().numpy()
            counts = [r["counts"] for r in mask_ops.encode(cols.transpose(0, 2, 1))]
            for a, b, c in zip(tt.tolist(), qq.tolist(), counts):
                per_frame[a][b] = c
        return per_frame

    def result(self, num_frames: int) -> tuple[list[Segment], SpillMasks]:
        picks = self.select(self.logits.mean()) if self.logits.count else []
        segments = [Segment(track_id=i + 1, category_id=c.id, score=s, query=q, isthing=c.isthing)
                    for i, (q, c, s) in enumerate(picks)]
        return segments, self._hand_over(num_frames, {i + 1: [q] for i, (q, _, _) in enumerate(picks)})

