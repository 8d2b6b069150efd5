"""Video panoptic (VIPSeg) and semantic (VSPW) segmentation: two passes.

Both need the video-level class probabilities before any pixel can be assigned, so the network
runs over the video twice: pass 0 adds class logits only (and, when ``online``, computes each
frame's online result with the running probabilities), pass 1 decides the masks with the final
ones. The resize chain applies the sigmoid between the two resizes, as the official code does.

- **Panoptic** (official ``inference_video_vps``): probs = softmax(mean logits); keep the queries
  whose best class is not "no object" with score > ``object_mask_threshold`` (0.8); per pixel,
  argmax over the kept queries of score * prob; a query's segment is (argmax == it) & (prob >= 0.5).
  The validity filter (non-empty, and area(argmax == it) / area(prob >= 0.5) >= 0.8, dropped only
  when *below*) is taken **over the whole video**: areas are summed over all frames and a dropped
  query is dropped from every frame. Stuff classes merge into one segment per class, things get
  one segment per query; segment ids follow query order. (The transformers processor differs:
  it filters per frame, drops a ratio of exactly 0.8 and uses per-frame class scores.)
- **Semantic** (official ``inference_video_vss``): class probs = softmax(mean logits) without
  "no object" (Q, K); per pixel argmax over K of sum_q prob[q, k] * mask_q. One segment per class
  present anywhere, track id = category id, ``isthing`` False, score 1.0.

Online results (``online=True``, pass 0) apply the same per-frame rules with the probabilities of
the frames seen so far; the panoptic validity filter then looks at that frame alone, and stuff
queries are listed one by one (track id = query + 1) rather than merged per class.
"""

from __future__ import annotations

import torch
from torch import Tensor

from videomt_cli.errors import InputError
from videomt_cli.inference.postprocess.common import Accumulator, FrameSet, LogitMean, Online
from videomt_cli.inference.postprocess.store import SpillMasks
from videomt_cli.inference.preprocess import masks_to_frame
from videomt_cli.records import RLE, Category, Segment


class _TwoPass(Accumulator):
    passes = 2

    def __init__(self, categories, geometry, **kw) -> None:
        super().__init__(categories, geometry, **kw)
        self.logits = LogitMean()
        self.frames1 = FrameSet()  # frames added in pass 1
        self._frozen = False

    @torch.no_grad()
    def add(self, pass_index: int, frame_indices, class_logits: Tensor, mask_logits: Tensor) -> list[Online]:
        frame_indices = self._check(pass_index, frame_indices, class_logits, mask_logits)
        if pass_index == 0:
            if self._frozen:
                raise InputError("Pass 0 is over: pass 1 has started.")
            means = self.logits.add(frame_indices, class_logits)
            if not self.online:
                return []
            return [self._online(f, mean, mask_logits[t].detach())
                    for t, (f, mean) in enumerate(zip(frame_indices, means))]
        if not self._frozen:
            if self.logits.count == 0:
                raise InputError("Pass 1 needs pass 0 first: run the network over the whole video with pass_index 0.")
            self._freeze(self.logits.mean())
            self._frozen = True
        self.frames1.add(frame_indices)
        for t, f in enumerate(frame_indices):
            if f not in self.logits.frames:
                raise InputError(f"Frame {f} was not seen in pass 0; both passes must cover the same frames.")
            keys, counts = self._frame(mask_logits[t].detach())
            self.store.write(f, keys, counts)
        return []

    def _chain_groups(self, logits: Tensor):
        """Yield (start, probabilities (G, H, W)) of the queries in ``logits`` (N, h, w), sigmoid
        between the two resizes, in groups that fit the memory budget."""
        H, W = self.geometry.original
        ph, pw = self.geometry.padded
        step = max(1, self.memory_budget // (4 * 3 * (H * W + ph * pw)))
        for i in range(0, logits.shape[0], step):
            yield i, masks_to_frame(logits[i : i + step], self.geometry, sigmoid=True)

    def _rles(self, labels: Tensor, values: list[int]) -> list[RLE]:
        h, w = self.geometry.original
        present = torch.tensor(values, dtype=labels.dtype, device=labels.device)
        return [{"size": [h, w], "counts": c} for c in self.encode_labels(labels, present)]

    def _check_done(self) -> None:
        if not self._frozen:
            raise InputError("result() needs both passes: pass 1 never ran.")


class PanopticAccumulator(_TwoPass):
    """Video panoptic segmentation (VIPSeg semantics)."""

    def __init__(self, categories: list[Category], geometry, *, object_mask_threshold: float = 0.8,
                 overlap_threshold: float = 0.8, **kw) -> None:
        super().__init__(categories, geometry, **kw)
        self.object_mask_threshold = float(object_mask_threshold)
        self.overlap_threshold = float(overlap_threshold)

    def _kept(self, mean_logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(query indices ascending, their scores, their labels) that pass the object threshold."""
        scores, labels = torch.softmax(mean_logits, dim=-1).max(-1)
        keep = labels.ne(self.num_classes) & (scores > self.object_mask_threshold)
        kept = keep.nonzero(as_tuple=True)[0]
        return kept, scores[kept], labels[kept]

    def _freeze(self, mean_logits: Tensor) -> None:
        self.kept, self.kept_scores, self.kept_labels = self._kept(mean_logits)
        n = len(self.kept)
        self.area_argmax = torch.zeros(n, dtype=torch.long)
        self.area_original = torch.zeros(n, dtype=torch.long)
        self.area_final = torch.zeros(n, dtype=torch.long)

    def _assign(self, logits: Tensor, kept: Tensor, kept_scores: Tensor):
        """Per pixel of one frame: the winning kept query (index into ``kept``) and whether its
        prob >= 0.5; plus each kept query's area(prob >= 0.5). logits (Q, h, w)."""
        dev = logits.device
        scores = kept_scores.to(dev)
        best_val = best_idx = best_prob = None
        original = torch.zeros(len(kept), dtype=torch.long, device=dev)
        for start, probs in self._chain_groups(logits[kept.to(dev)]):
            weighted = scores[start : start + probs.shape[0], None, None] * probs
            idx = weighted.argmax(0)
            val = weighted.gather(0, idx[None])[0]
            prob = probs.gather(0, idx[None])[0]
            original[start : start + probs.shape[0]] = (probs >= 0.5).flatten(1).sum(1)
            idx = idx + start
            if best_val is None:
                best_val, best_idx, best_prob = val, idx, prob
            else:  # strictly greater: ties keep the earlier query, as one argmax would
                better = val > best_val
                best_val = torch.where(better, val, best_val)
                best_idx = torch.where(better, idx, best_idx)
                best_prob = torch.where(better, prob, best_prob)
        return best_idx, best_prob >= 0.5, original

    def _frame(self, logits: Tensor):
        n = len(self.kept)
        if n == 0:
            return [], []
        best_idx, ok, original = self._assign(logits, self.kept, self.kept_scores)
        self.area_argmax += torch.bincount(best_idx.flatten(), minlength=n).cpu()
        self.area_final += torch.bincount(best_idx[ok], minlength=n).cpu()
        self.area_original += original.cpu()
        labels = torch.where(ok, best_idx, torch.full_like(best_idx, -1))
        present = torch.unique(labels[ok])
        return present.cpu().numpy(), self.encode_labels(labels, present)

    def _valid(self, a: int, o: int, f: int) -> bool:
        return a > 0 and o > 0 and f > 0 and a / o >= self.overlap_threshold

    def _online(self, index: int, mean_logits: Tensor, logits: Tensor) -> Online:
        kept, scores, labels = self._kept(mean_logits)
        if len(kept) == 0:
            return Online(index, [], [], [], [])
        best_idx, ok, original = self._assign(logits, kept, scores)
        n = len(kept)
        area_argmax = torch.bincount(best_idx.flatten(), minlength=n).tolist()
        area_final = torch.bincount(best_idx[ok], minlength=n).tolist()
        chosen = [k for k in range(n) if self._valid(area_argmax[k], int(original[k]), area_final[k])]
        chosen = [k for k in chosen if self.keep(self.categories[int(labels[k])].id, float(scores[k]))]
        label_map = torch.where(ok, best_idx, torch.full_like(best_idx, -1))
        return Online(index, [int(kept[k]) + 1 for k in chosen], [self.categories[int(labels[k])].id for k in chosen],
                      [float(scores[k]) for k in chosen], self._rles(label_map, chosen))

    def result(self, num_frames: int) -> tuple[list[Segment], SpillMasks]:
        self._check_done()
        segments: list[tuple[Category, float, int, list[int]]] = []
        stuff: dict[int, int] = {}
        for k in range(len(self.kept)):
            if not self._valid(int(self.area_argmax[k]), int(self.area_original[k]), int(self.area_final[k])):
                continue
            label = int(self.kept_labels[k])
            category = self.categories[label]
            if not category.isthing:
                if label in stuff:
                    segments[stuff[label]][3].append(k)
                    continue
                stuff[label] = len(segments)
            segments.append((category, float(self.kept_scores[k]), int(self.kept[k]), [k]))
        segments = [s for s in segments if self.keep(s[0].id, s[1])]
        out = [Segment(track_id=i + 1, category_id=c.id, score=score, query=query, isthing=c.isthing)
               for i, (c, score, query, _) in enumerate(segments)]
        return out, self._hand_over(num_frames, {i + 1: s[3] for i, s in enumerate(segments)})


class SemanticAccumulator(_TwoPass):
    """Video semantic segmentation (VSPW semantics)."""

    def _freeze(self, mean_logits: Tensor) -> None:
        self.class_probs = torch.softmax(mean_logits, dim=-1)[:, :-1]  # (Q, K)
        self.present = torch.zeros(self.num_classes, dtype=torch.bool)

    def _labels(self, logits: Tensor, class_probs: Tensor) -> Tensor:
        probs = class_probs.to(logits.device)
        semseg = None
        for start, masks in self._chain_groups(logits):
            part = torch.einsum("qc,qhw->chw", probs[start : start + masks.shape[0]], masks)
            semseg = part if semseg is None else semseg.add_(part)
        return semseg.argmax(0)

    def _frame(self, logits: Tensor):
        labels = self._labels(logits, self.class_probs)
        present = torch.unique(labels)
        self.present[present.cpu()] = True
        return present.cpu().numpy(), self.encode_labels(labels, present)

    def _online(self, index: int, mean_logits: Tensor, logits: Tensor) -> Online:
        labels = self._labels(logits, torch.softmax(mean_logits, dim=-1)[:, :-1])
        classes = [k for k in torch.unique(labels).tolist() if self.keep(self.categories[k].id, 1.0)]
        ids = [self.categories[k].id for k in classes]
        return Online(index, ids, ids, [1.0] * len(ids), self._rles(labels, classes))

    def result(self, num_frames: int) -> tuple[list[Segment], SpillMasks]:
        self._check_done()
        classes = [int(k) for k in self.present.nonzero(as_tuple=True)[0]]
        classes = [k for k in classes if self.class_ids is None or self.categories[k].id in self.class_ids]
        out = [Segment(track_id=self.categories[k].id, category_id=self.categories[k].id, score=1.0, isthing=False)
               for k in classes]
        return out, self._hand_over(num_frames, {self.categories[k].id: [k] for k in classes})
