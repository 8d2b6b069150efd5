"""Video-level results from per-frame predictions, streamed chunk by chunk (DESIGN 3).

One accumulator per video. The predictor runs the network over the video ``passes`` times and
hands every chunk's outputs to :meth:`add`; :meth:`result` then returns the video-level
:class:`~videomt_cli.records.Segment` list, masks as compressed RLE, one entry per frame of the
video (``None`` for frames never added)::

    acc = make_accumulator("instance", categories, max_num=10)
    for p in range(acc.passes):
        for frame_indices, frames in chunks:
            out, state = model(frames, state)            # state reset at the start of each pass
            acc.add(p, frame_indices, out.class_logits[0], out.mask_logits[0], geometry)
    segments = acc.result(num_frames)

Categories are in class-head order: head index i is ``categories[i]``, whose ``id`` (the dataset's
id) is what ``Segment.category_id`` holds.

What the official code does (``tue-mps/videomt``, ``videomt/videomt.py``, class ``videomt_online``,
the meta-architecture every released config names), and what this module does:

- **Instance (YouTube-VIS, OVIS)**, ``inference_video_vis``: class logits averaged over all
  frames per query (``post_processing``: a plain mean, no matching: the query index is the
  track), softmax over K + 1, "no object" dropped, ``topk(max_num)`` over the flattened (Q, K)
  scores, label = idx % K, query = idx // K; that query's masks in every frame through the resize
  chain, thresholded at logit > 0; score = the class probability. Streaming needs no second pass:
  per frame, only the RLEs of the queries whose mask is non-empty are kept, spilled to an unnamed
  temporary file (:class:`_SpillStore`), with an in-memory index of one file offset per frame;
  :meth:`InstanceAccumulator.result` reads back only the top-k queries' masks. Results come in
  score order with track ids 1..n; ``score_threshold`` (kept when ``score >= threshold``) and
  ``class_ids`` (dataset ids) filter the top-k list afterwards, and track ids are numbered after
  filtering.
- **Panoptic (VIPSeg)**, ``inference_video_vps``: probs = softmax(mean logits); keep the queries
  whose best class is not "no object" and whose score is > ``object_mask_threshold`` (0.8 in the
  VIPSeg config, ``TEST.OBJECT_MASK_THRESHOLD``); the chain resizes, crops, applies the sigmoid,
  and resizes again (sigmoid *between* the two resizes); per pixel, argmax over the kept queries
  of score * prob; a query's segment is (argmax == it) & (prob >= 0.5). The validity filter
  (non-empty, and area(argmax == it) / area(prob >= 0.5) >= ``overlap_threshold``, 0.8 from
  ``TEST.OVERLAP_THRESHOLD``; dropped only when the ratio is *below* it) is computed by the
  official code **over the whole video**, not per frame: the argmax is taken on the (T, H, W)
  stack and the areas are sums over all frames, and a dropped query is dropped from every frame.
  This module follows that: pass 1 accumulates the three areas per query over the video and stores
  the per-frame segment RLEs; :meth:`PanopticAccumulator.result` applies the filter at the end.
  Stuff classes (``Category.isthing`` False) merge into one segment per class, things get one
  segment per query; segment ids are assigned in query order, as the official loop does.
  (The transformers ``VideomtVideoProcessor`` differs: it applies the filter per frame, drops a
  ratio of exactly 0.8, and uses per-frame class scores.)
- **Semantic (VSPW)**, ``inference_video_vss``: class probs = softmax(mean logits) without
  "no object" (Q, K); masks through the chain with the sigmoid between the resizes; per pixel
  argmax over K of sum_q prob[q, k] * mask_q. One Segment per class present anywhere, track id =
  category id, ``isthing`` False, score 1.0.

Panoptic and semantic need the video-level class probabilities before any mask can be decided,
so they take two passes (pass 0: mean logits only; pass 1: masks). Instance takes one.

**Exactness and cost of the instance masks.** Upsampling 200 maps to 720p per frame is the
expensive part (DESIGN 8). Two facts make it cheap without changing the result:

1. Bilinear interpolation is a convex combination, so a pixel whose source neighbourhood holds no
   positive logit is <= 0 after both resizes: a query with no positive low-res logit in a frame
   has an empty mask there and is skipped without any upsampling (exact).
2. For the other queries only a box needs computing: the low-res box of the positive logits,
   dilated by 2 cells, is upsampled x4 with ``F.interpolate`` (the first resize is exactly x4, so
   its source coordinates are exact and shift-invariant), cropped, and the second resize is
   evaluated only on the output box that can be positive, with the interpolation indices and
   weights *taken from torch's own kernel* for the full-size resize (probed once per geometry
   and device). Everything outside the box is <= 0 by (1).

The result agrees with the full chain on every pixel except where the full chain's logit is within
a few float32 ulps of 0. Bit-identity of the logits themselves is not attainable by evaluating a
sub-region: torch's CPU bilinear kernel computes ``a * w0 + b * w1`` with a fused multiply-add
whose operand order depends on the tensor's spatial shape (measured: fma(a, w0, b*w1) for a
20x20 -> 80x80 input, fma(b, w1, a*w0) for 7x20 -> 28x80; the same rows differ by 1 ulp between
the two), and for the non-integer second resize a sub-problem even computes different source
coordinates. So the last bits of the official chain's own output depend on the shapes and the
device it ran on. Measured on random logits (tests, 60 geometries incl. boxes at the borders and
at the crop boundary): no mask difference outside a |logit| < 1e-4 guard band, logits within
1e-5 (worst seen 1e-6) wherever a pixel can be positive. Queries whose box covers more than
``box_fraction`` (0.5) of the frame go through the plain full chain. All upsampling runs on the
logits' device; masks go to the CPU as uint8 only for RLE encoding.

Measured cost (``benchmarks/postprocess_cost.py``, 1280x720 frames, Q = 200, CPU, one thread, a
loaded 2-core machine): a trained-like video (10 non-empty queries a frame) costs 23-38 ms a
frame for upsampling + RLE + spill (upsampling 11-13 ms of it) against 1.5-2.1 s for the naive
upsampling of all 200 queries (40-75x); an untrained model with all 200 queries non-empty costs
about what the naive upsampling does (1.3-1.6 s, of it upsampling 1.0-1.3 s, the rest encoding
200 RLEs) and spills ~3 MB a frame to disk (~10 KB a frame trained-like). Ties in the top-k are
broken by the lower flat index (the official ``topk(sorted=False)`` leaves them unspecified).
"""

from __future__ import annotations

from collections.abc import Sequence

import tempfile
from array import array
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from videomt_cli import masks as rle
from videomt_cli.errors import InputError
from videomt_cli.preprocess import Geometry, masks_to_frame
from videomt_cli.records import RLE, Category, Segment

TASKS = ("instance", "panoptic", "semantic")
DEFAULT_BUDGET = 256 * 2**20  # bytes of device working memory per batched step


class Accumulator(Protocol):
    """What the predictor loop drives (see the module docstring).

    ``passes``: how many times the network must run over the video (1 or 2).
    ``add(pass_index, frame_indices, class_logits, mask_logits, geometry)``: one chunk of one
    video; class_logits (T, Q, K + 1) and mask_logits (T, Q, h, w) on any device and dtype,
    frame_indices the T video frame indices (each at most once per pass; pass 1 must cover the
    frames of pass 0). ``result(num_frames)``: the Segments, masks one per frame of the video.
    Accumulators also have ``close()`` (deletes the temporary file) and are context managers.
    """

    passes: int

    def add(
        self, pass_index: int, frame_indices: list[int], class_logits: Tensor, mask_logits: Tensor, geometry: Geometry
    ) -> None: ...

    def result(self, num_frames: int) -> list[Segment]: ...


def make_accumulator(
    task: str,
    categories: list[Category],
    *,
    max_num: int = 10,
    score_threshold: float = 0.0,
    class_ids: set[int] | None = None,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    box_fraction: float = 0.5,
    memory_budget: int = DEFAULT_BUDGET,
) -> "InstanceAccumulator | PanopticAccumulator | SemanticAccumulator":
    """The accumulator for ``task`` ("instance" | "panoptic" | "semantic").

    max_num: instance top-k over (query, class) pairs (10 YouTube-VIS, 20 OVIS).
    score_threshold, class_ids: filters on the final results (class_ids are dataset ids).
    object_mask_threshold, overlap_threshold: panoptic query filter and area-ratio filter.
    box_fraction: instance masks whose output box covers more than this fraction of the frame
    use the plain full resize chain. memory_budget: bytes of device memory a batched step may use.
    """
    if not categories:
        raise InputError("categories must list the model's classes in class-head order.")
    common = dict(score_threshold=score_threshold, class_ids=class_ids, memory_budget=memory_budget)
    if task == "instance":
        return InstanceAccumulator(categories, max_num=max_num, box_fraction=box_fraction, **common)
    if task == "panoptic":
        return PanopticAccumulator(
            categories, object_mask_threshold=object_mask_threshold, overlap_threshold=overlap_threshold, **common
        )
    if task == "semantic":
        return SemanticAccumulator(categories, **common)
    raise InputError(f"Unknown task {task!r}: use one of {', '.join(TASKS)}.")


# --------------------------------------------------------------------------- shared pieces


class _FrameSet:
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


class _LogitMean:
    """Running per-query mean of class logits over frames, in float64, frame by frame.

    Adding frame by frame (not a chunk sum) makes the mean independent of how the video was cut
    into chunks.
    """

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0
        self.frames = _FrameSet()

    def add(self, frame_indices: list[int], class_logits: Tensor) -> None:
        self.frames.add(frame_indices)
        x = class_logits.detach().to("cpu", torch.float64)
        if self.total is None:
            self.total = torch.zeros(x.shape[1:], dtype=torch.float64)
        for frame in x:
            self.total += frame
        self.count += len(frame_indices)

    def mean(self) -> Tensor:
        """(Q, K + 1) float32 on the CPU, as the official float32 mean."""
        if self.total is None or self.count == 0:
            raise InputError("No frames were added.")
        return (self.total / self.count).to(torch.float32)


class _SpillStore:
    """Per-frame lists of (key, RLE counts) in an unnamed temporary file.

    A record is ``int32 n | int32 keys[n] | int32 lengths[n] | ascii counts...``. In memory only
    the frame index and file offset of each record are kept (16 bytes a frame). The file is
    deleted when closed or garbage-collected (``tempfile.TemporaryFile``).
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="videomt-")
        self._frames = array("q")
        self._offsets = array("q")
        self._end = 0
        self._lookup: dict[int, int] | None = None

    def write(self, frame: int, keys, counts: list[str]) -> None:
        keys = np.asarray(keys, dtype=np.int32).reshape(-1)
        blobs = [c.encode("ascii") for c in counts]
        lengths = np.array([len(b) for b in blobs], dtype=np.int32)
        record = np.array([len(blobs)], dtype=np.int32).tobytes() + keys.tobytes() + lengths.tobytes() + b"".join(blobs)
        self._file.seek(self._end)
        self._file.write(record)
        self._frames.append(frame)
        self._offsets.append(self._end)
        self._end += len(record)
        self._lookup = None

    def __contains__(self, frame: int) -> bool:
        return frame in self._index()

    def _index(self) -> dict[int, int]:
        if self._lookup is None:
            self._lookup = dict(zip(self._frames, self._offsets))
        return self._lookup

    def read(self, frame: int, wanted=None) -> dict[int, str]:
        """{key: counts} of ``frame`` for the keys in ``wanted`` (all keys when None)."""
        offset = self._index()[frame]
        f = self._file
        f.seek(offset)
        n = int(np.frombuffer(f.read(4), dtype=np.int32)[0])
        if n == 0:
            return {}
        head = np.frombuffer(f.read(8 * n), dtype=np.int32)
        keys, lengths = head[:n], head[n:].astype(np.int64)
        starts = offset + 4 + 8 * n + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        out = {}
        for key, start, length in zip(keys.tolist(), starts.tolist(), lengths.tolist()):
            if wanted is not None and key not in wanted:
                continue
            f.seek(start)
            out[key] = f.read(length).decode("ascii")
        return out

    @property
    def nbytes(self) -> int:
        """Bytes in the temporary file."""
        return self._end

    @property
    def index_nbytes(self) -> int:
        """Bytes of the in-memory index."""
        return self._frames.itemsize * len(self._frames) + self._offsets.itemsize * len(self._offsets)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class _StoreReader:
    """Reads the masks of a result's store keys frame by frame, one frame's records cached (the
    writers walk frames in order, segment after segment or frame after frame)."""

    def __init__(self, store: _SpillStore, num_frames: int, wanted: set[int], size: tuple[int, int], empty):
        self.store, self.num_frames, self.wanted, self.size, self.empty = store, num_frames, wanted, size, empty
        self._frame, self._found = None, {}

    def mask(self, frame: int, keys: list[int]) -> RLE | None:
        if frame not in self.store:
            return None
        if frame != self._frame:
            self._frame, self._found = frame, self.store.read(frame, self.wanted)
        present = [self._found[k] for k in keys if k in self._found]
        h, w = self.size
        if not present:
            return self.empty()
        if len(present) == 1:
            return {"size": [h, w], "counts": present[0]}
        # stuff segments made of several queries: their masks are disjoint
        union = rle.decode_many([{"size": [h, w], "counts": c} for c in present]).any(0)
        return rle.encode(union)[0]


class StoredMasks(Sequence):
    """A segment's per-frame masks (RLE, or None for frames never added), read from the spill
    file on access: ``len``, indexing and iteration work like the list they stand for."""

    def __init__(self, reader: _StoreReader, keys: list[int]):
        self._reader, self._keys = reader, list(keys)

    def __len__(self) -> int:
        return self._reader.num_frames

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._reader.mask(index, self._keys)

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None


class _Base:
    passes = 1

    def __init__(
        self, categories: list[Category], *, score_threshold: float, class_ids: set[int] | None, memory_budget: int
    ) -> None:
        self.categories = list(categories)
        self.num_classes = len(self.categories)
        self.score_threshold = float(score_threshold)
        self.class_ids = None if class_ids is None else {int(c) for c in class_ids}
        self.memory_budget = int(memory_budget)
        self.geometry: Geometry | None = None
        self.store = _SpillStore()
        self._empty: dict[tuple[int, int], RLE] = {}

    # -- context manager / cleanup
    def close(self) -> None:
        # Results handed out read their masks from the store: they own it from then on.
        if not getattr(self, "_handed_out", False):
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- helpers
    def _check(self, pass_index: int, frame_indices, class_logits: Tensor, mask_logits: Tensor, geometry: Geometry):
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
        if self.geometry is None:
            self.geometry = geometry
        elif tuple(geometry.original) != tuple(self.geometry.original):
            raise InputError("All frames of a video must have the same size (geometry.original changed).")
        return frame_indices

    def _empty_rle(self) -> RLE:
        h, w = self.geometry.original
        if (h, w) not in self._empty:
            self._empty[(h, w)] = rle.empty(h, w)
        return self._empty[(h, w)]

    def _frame_masks(self, num_frames: int, keys: list[list[int]]) -> list["StoredMasks"]:
        """Per output entry e (a list of store keys), its per-frame RLE: union of those keys' masks.

        The masks stay in the spill file and are read when a writer asks for a frame, so a
        result costs memory per frame only while it is written. The result keeps the file open
        (``close`` leaves it to them); it is deleted when the last result goes away.
        """
        if self.geometry is not None and any(f >= num_frames for f in self.store._frames):
            raise InputError(f"num_frames {num_frames} is smaller than an added frame index.")
        h, w = self.geometry.original if self.geometry is not None else (0, 0)
        reader = _StoreReader(self.store, num_frames, {k for ks in keys for k in ks}, (h, w), self._empty_rle)
        self._handed_out = True
        return [StoredMasks(reader, ks) for ks in keys]

    def _keep(self, category_id: int, score: float) -> bool:
        if self.class_ids is not None and category_id not in self.class_ids:
            return False
        return score >= self.score_threshold

    def _encode_labels(self, labels: Tensor, present: Tensor) -> list[str]:
        """Label map (H, W) (device) and label values -> RLE counts of (labels == v) for each v."""
        H, W = labels.shape
        step = max(1, self.memory_budget // (4 * H * W))
        counts: list[str] = []
        for i in range(0, len(present), step):
            vals = present[i : i + step]
            # (n, W, H) contiguous on the device: the layout pycocotools reads (see _collect)
            m = (labels.t()[None] == vals[:, None, None]).contiguous().cpu().numpy()
            counts += [r["counts"] for r in rle.encode(m.transpose(0, 2, 1))]
        return counts


# --------------------------------------------------------------------------- instance masks


_AXIS_CACHE: dict[tuple[int, int, str], tuple[Tensor, Tensor, Tensor, Tensor]] = {}


def _axis_map(n_in: int, n_out: int, device: torch.device, axis: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Indices and weights torch's bilinear kernel (align_corners False) uses along one axis.

    Probed from the kernel itself on ``device``: interpolating the identity gives, for every output
    position y, the weight of every input position exactly (1 * w + 0 * w' = w). Returns i0, i1
    (long) and w0, w1 (float32), each (n_out,): out[y] = w0[y] * in[i0[y]] + w1[y] * in[i1[y]].
    """
    key = (n_in, n_out, f"{device}/{axis}")
    if key not in _AXIS_CACHE:
        eye = torch.eye(n_in, device=device, dtype=torch.float32)
        if axis == 0:  # along H
            m = F.interpolate(eye[:, None, :, None], size=(n_out, 1), mode="bilinear", align_corners=False)[:, 0, :, 0]
        else:  # along W
            m = F.interpolate(eye[:, None, None, :], size=(1, n_out), mode="bilinear", align_corners=False)[:, 0, 0, :]
        nz = m != 0
        i0 = nz.to(torch.int32).argmax(0)  # first input with a non-zero weight
        i1 = (i0 + 1).clamp(max=n_in - 1)
        cols = torch.arange(n_out, device=device)
        w0 = m[i0, cols]
        w1 = torch.where(i1 != i0, m[i1, cols], torch.zeros_like(w0))
        _AXIS_CACHE[key] = (i0, i1, w0.contiguous(), w1.contiguous())
    return _AXIS_CACHE[key]


def _positive_boxes(mask_logits: Tensor):
    """Non-empty (frame, query) pairs of (T, Q, h, w) logits and the box [y0, y1) x [x0, x1) of
    their positive cells. Returns t, q, y0, y1, x0, x1 (each (N,) long, on the logits' device)."""
    t, q = (mask_logits.amax(dim=(-2, -1)) > 0).nonzero(as_tuple=True)
    pos = mask_logits[t, q] > 0  # (N, h, w): only the non-empty maps
    r = pos.any(-1).to(torch.int32)
    c = pos.any(-2).to(torch.int32)
    h, w = r.shape[-1], c.shape[-1]
    y0 = r.argmax(-1)
    y1 = h - r.flip(-1).argmax(-1)
    x0 = c.argmax(-1)
    x1 = w - c.flip(-1).argmax(-1)
    return t, q, y0, y1, x0, x1


def _box_logits(mask_logits: Tensor, t, q, y0, y1, x0, x1, geometry: Geometry):
    """Full-chain logits of the output box of each selected (frame, query), batched.

    mask_logits (T, Q, h4, w4); t, q: the pairs; [y0, y1) x [x0, x1): low-res box of the
    positive cells. Returns (values (N, OH, OW) float32, Y (N,), X (N,)): values[n] are the chain's
    logits of output rows Y[n] .. Y[n] + OH and columns X[n] .. X[n] + OW. Pixels outside the
    box, and in-box pixels whose sources are all non-positive, have logits <= 0 in the full
    chain; in-box pixels that can be positive are exact up to float rounding (module docstring).
    """
    dev = mask_logits.device
    h4, w4 = mask_logits.shape[-2:]
    hr, wr = geometry.resized
    H, W = geometry.original
    iy0, iy1, wy0, wy1 = _axis_map(hr, H, dev, 0)
    ix0, ix1, wx0, wx1 = _axis_map(wr, W, dev, 1)

    # Cropped-map rows/cols that can be positive: sources h0 or h0+1 inside the low-res box.
    cr0, cr1 = (4 * y0 - 2).clamp(0, hr), (4 * y1 + 2).clamp(0, hr)
    cc0, cc1 = (4 * x0 - 2).clamp(0, wr), (4 * x1 + 2).clamp(0, wr)
    # Output rows/cols whose two sources meet that range.
    Y0 = torch.searchsorted(iy1, cr0, right=False)
    Y1 = torch.searchsorted(iy0, cr1 - 1, right=True)
    X0 = torch.searchsorted(ix1, cc0, right=False)
    X1 = torch.searchsorted(ix0, cc1 - 1, right=True)
    Y1 = torch.maximum(Y1, Y0 + 1).clamp(max=H)
    X1 = torch.maximum(X1, X0 + 1).clamp(max=W)
    Y0 = torch.minimum(Y0, Y1 - 1)
    X0 = torch.minimum(X0, X1 - 1)

    # Low-res windows: the box dilated by 2 cells, one common size for the batch.
    wy_lo, wy_hi = (y0 - 2).clamp(min=0), (y1 + 2).clamp(max=h4)
    wx_lo, wx_hi = (x0 - 2).clamp(min=0), (x1 + 2).clamp(max=w4)
    sizes = torch.stack([wy_hi - wy_lo, wx_hi - wx_lo, Y1 - Y0, X1 - X0]).amax(1).tolist()
    NH, NW, OH, OW = (int(s) for s in sizes)
    sy = wy_lo.clamp(max=h4 - NH)
    sx = wx_lo.clamp(max=w4 - NW)
    Ys = Y0.clamp(max=H - OH)
    Xs = X0.clamp(max=W - OW)

    rows = sy[:, None] + torch.arange(NH, device=dev)
    cols = sx[:, None] + torch.arange(NW, device=dev)
    win = mask_logits[t[:, None, None], q[:, None, None], rows[:, :, None], cols[:, None, :]].float()
    # First resize, exactly x4: identical source coordinates to the full-map resize.
    V = F.interpolate(win[:, None], size=(4 * NH, 4 * NW), mode="bilinear", align_corners=False)[:, 0]

    # Second resize on the output box with the kernel's own indices and weights; W first, then H
    # (the order of torch's kernel). Indices outside the window are clamped into it: they only
    # serve output pixels whose sources are all non-positive.
    oy = Ys[:, None] + torch.arange(OH, device=dev)
    ox = Xs[:, None] + torch.arange(OW, device=dev)
    top, left = 4 * sy[:, None], 4 * sx[:, None]
    ry0 = (iy0[oy] - top).clamp(0, 4 * NH - 1)
    ry1 = (iy1[oy] - top).clamp(0, 4 * NH - 1)
    rx0 = (ix0[ox] - left).clamp(0, 4 * NW - 1)
    rx1 = (ix1[ox] - left).clamp(0, 4 * NW - 1)
    N = V.shape[0]
    a = V.gather(2, rx0[:, None, :].expand(N, 4 * NH, OW))
    b = V.gather(2, rx1[:, None, :].expand(N, 4 * NH, OW))
    Tw = a * wx0[ox][:, None, :] + b * wx1[ox][:, None, :]
    a = Tw.gather(1, ry0[:, :, None].expand(N, OH, OW))
    b = Tw.gather(1, ry1[:, :, None].expand(N, OH, OW))
    out = a * wy0[oy][:, :, None] + b * wy1[oy][:, :, None]
    return out, Ys, Xs


class _InstanceMasker:
    """Per-frame RLEs of the non-empty query masks of a chunk (the box trick)."""

    def __init__(self, box_fraction: float, memory_budget: int) -> None:
        self.box_fraction = box_fraction
        self.memory_budget = memory_budget

    def __call__(self, mask_logits: Tensor, geometry: Geometry) -> list[tuple[np.ndarray, list[str]]]:
        T, Q, h4, w4 = mask_logits.shape
        H, W = geometry.original
        per_frame: list[dict[int, str]] = [{} for _ in range(T)]
        t, q, y0, y1, x0, x1 = _positive_boxes(mask_logits)
        # Positive cells that only reach the padding (beyond the crop) give empty masks.
        hr, wr = geometry.resized
        inside = ((4 * y0 - 2) < hr) & ((4 * x0 - 2) < wr)
        t, q, y0, y1, x0, x1 = (v[inside] for v in (t, q, y0, y1, x0, x1))
        if len(t) == 0:
            return [(np.zeros(0, np.int64), []) for _ in range(T)]
        exact_x4 = tuple(geometry.padded) == (4 * h4, 4 * w4)
        # Output box area relative to the frame, to route large masks to the full chain.
        ry, rx = geometry.original[0] / geometry.resized[0], geometry.original[1] / geometry.resized[1]
        frac = ((4 * (y1 - y0) + 4) * ry).clamp(max=H) * ((4 * (x1 - x0) + 4) * rx).clamp(max=W) / (H * W)
        big = frac > self.box_fraction if exact_x4 else torch.ones_like(t, dtype=torch.bool)

        small = (~big).nonzero(as_tuple=True)[0]
        if len(small):
            # Similar sizes batch together: sort by box area, cut into groups within the budget.
            area = ((y1 - y0) * (x1 - x0))[small]
            small = small[area.argsort()]
            for g in self._groups(small, y0, y1, x0, x1, geometry):
                vals, Ys, Xs = _box_logits(mask_logits, t[g], q[g], y0[g], y1[g], x0[g], x1[g], geometry)
                self._collect(vals > 0, Ys, Xs, t[g], q[g], geometry, per_frame)
        large = big.nonzero(as_tuple=True)[0]
        if len(large):
            step = max(1, self.memory_budget // (4 * 3 * (H * W + geometry.padded[0] * geometry.padded[1])))
            for i in range(0, len(large), step):
                g = large[i : i + step]
                m = masks_to_frame(mask_logits[t[g], q[g]], geometry) > 0
                zeros = torch.zeros(len(g), dtype=torch.long, device=m.device)
                self._collect(m, zeros, zeros, t[g], q[g], geometry, per_frame)
        out = []
        for d in per_frame:
            keys = np.array(sorted(d), dtype=np.int64)
            out.append((keys, [d[k] for k in keys.tolist()]))
        return out

    def _groups(self, order: Tensor, y0, y1, x0, x1, geometry: Geometry):
        """Split ``order`` (sorted by box area) into batches of similar size within the budget.

        A batch shares one window and output size (its largest box), so a new batch starts when
        that common box would exceed twice the area of the batch's smallest box, or when the
        batch's working set would pass the memory budget.
        """
        H, W = geometry.original
        ry, rx = H / geometry.resized[0], W / geometry.resized[1]
        hh = (y1 - y0 + 4)[order].tolist()
        ww = (x1 - x0 + 4)[order].tolist()
        start, max_h, max_w = 0, hh[0], ww[0]
        for i in range(1, len(hh)):
            mh, mw = max(max_h, hh[i]), max(max_w, ww[i])
            oh, ow = min(H, 4 * mh * ry + 8), min(W, 4 * mw * rx + 8)
            floats = 16 * mh * mw + 3 * 4 * mh * ow + 3 * oh * ow  # window, W-pass, output box
            if mh * mw > 2 * hh[start] * ww[start] or 4 * floats * (i + 1 - start) > self.memory_budget:
                yield order[start:i]
                start, mh, mw = i, hh[i], ww[i]
            max_h, max_w = mh, mw
        yield order[start:]

    def _collect(self, boxes: Tensor, Ys: Tensor, Xs: Tensor, t: Tensor, q: Tensor, geometry, per_frame) -> None:
        """Paste box masks into full frames on the CPU, RLE-encode, file under their frame."""
        H, W = geometry.original
        keep = boxes.flatten(1).any(1)
        if not bool(keep.any()):
            return
        boxes, Ys, Xs, t, q = boxes[keep], Ys[keep], Xs[keep], t[keep], q[keep]
        OH, OW = boxes.shape[1:]
        # (N, OW, OH): column-major boxes, so each paste below copies contiguous columns.
        cols = boxes.transpose(1, 2).to(torch.uint8).contiguous().cpu().numpy()
        Ys, Xs, t, q = Ys.tolist(), Xs.tolist(), t.tolist(), q.tolist()
        step = max(1, self.memory_budget // (H * W))
        for i in range(0, len(t), step):
            n = min(step, len(t) - i)
            # A C-ordered (n, W, H) buffer is the memory of the Fortran-ordered (H, W, n) array
            # pycocotools encodes (DESIGN 8); as a bool (n, H, W) view masks.encode needs one cast
            # copy and no transposing one. One slice copy per mask: numpy's batched fancy
            # indexing is ~15x slower here (measured).
            buf = np.zeros((n, W, H), dtype=np.uint8)
            for k in range(n):
                y, x = Ys[i + k], Xs[i + k]
                buf[k, x : x + OW, y : y + OH] = cols[i + k]
            counts = [r["counts"] for r in rle.encode(buf.view(np.bool_).transpose(0, 2, 1))]
            for tt, qq, c in zip(t[i : i + n], q[i : i + n], counts):
                per_frame[tt][qq] = c


# --------------------------------------------------------------------------- instance


class InstanceAccumulator(_Base):
    """Video instance segmentation (YouTube-VIS / OVIS semantics); one pass."""

    passes = 1

    def __init__(
        self,
        categories: list[Category],
        *,
        max_num: int = 10,
        score_threshold: float = 0.0,
        class_ids: set[int] | None = None,
        box_fraction: float = 0.5,
        memory_budget: int = DEFAULT_BUDGET,
    ) -> None:
        super().__init__(categories, score_threshold=score_threshold, class_ids=class_ids, memory_budget=memory_budget)
        if max_num <= 0:
            raise InputError(f"max_num must be positive, got {max_num}.")
        self.max_num = int(max_num)
        self.logits = _LogitMean()
        self.masker = _InstanceMasker(box_fraction, memory_budget)

    @torch.no_grad()
    def add(self, pass_index, frame_indices, class_logits, mask_logits, geometry) -> None:
        frame_indices = self._check(pass_index, frame_indices, class_logits, mask_logits, geometry)
        self.logits.add(frame_indices, class_logits)
        for f, (keys, counts) in zip(frame_indices, self.masker(mask_logits.detach(), geometry)):
            self.store.write(f, keys, counts)

    def scores(self) -> Tensor:
        """(Q, K) video-level class probabilities (softmax of the mean logits, "no object" dropped)."""
        return F.softmax(self.logits.mean(), dim=-1)[:, :-1]

    def result(self, num_frames: int) -> list[Segment]:
        if self.logits.count == 0:
            return []
        scores = self.scores()
        Q, K = scores.shape
        flat = scores.flatten()
        order = torch.argsort(flat, descending=True, stable=True)[: min(self.max_num, Q * K)]
        picks = []
        for idx in order.tolist():
            query, label = divmod(idx, K)
            category = self.categories[label]
            score = float(flat[idx])
            if self._keep(category.id, score):
                picks.append((query, category, score))
        masks = self._frame_masks(num_frames, [[query] for query, _, _ in picks])
        return [
            Segment(track_id=i + 1, category_id=c.id, score=s, masks=m, query=query, isthing=c.isthing)
            for i, ((query, c, s), m) in enumerate(zip(picks, masks))
        ]


# --------------------------------------------------------------------------- panoptic / semantic


class _TwoPass(_Base):
    passes = 2

    def __init__(self, categories, **kw) -> None:
        super().__init__(categories, **kw)
        self.logits = _LogitMean()
        self.frames1 = _FrameSet()  # frames added in pass 1
        self._frozen = False

    def _freeze(self) -> None:
        """Called at the first pass-1 chunk: the video-level class probabilities are final."""

    @torch.no_grad()
    def add(self, pass_index, frame_indices, class_logits, mask_logits, geometry) -> None:
        frame_indices = self._check(pass_index, frame_indices, class_logits, mask_logits, geometry)
        if pass_index == 0:
            if self._frozen:
                raise InputError("Pass 0 is over: pass 1 has started.")
            self.logits.add(frame_indices, class_logits)
            return
        if not self._frozen:
            if self.logits.count == 0:
                raise InputError("Pass 1 needs pass 0 first: run the network over the whole video with pass_index 0.")
            self._freeze()
            self._frozen = True
        self.frames1.add(frame_indices)
        for t, f in enumerate(frame_indices):
            if f not in self.logits.frames:
                raise InputError(f"Frame {f} was not seen in pass 0; both passes must cover the same frames.")
            keys, counts = self._frame(mask_logits[t].detach(), geometry)
            self.store.write(f, keys, counts)

    def _chain_groups(self, logits: Tensor, geometry: Geometry):
        """Yield (start, probabilities (G, H, W)) of the queries in ``logits`` (N, h, w), sigmoid
        between the two resizes, in groups that fit the memory budget."""
        H, W = geometry.original
        ph, pw = geometry.padded
        step = max(1, self.memory_budget // (4 * 3 * (H * W + ph * pw)))
        for i in range(0, logits.shape[0], step):
            yield i, masks_to_frame(logits[i : i + step], geometry, sigmoid=True)

    def _check_done(self) -> None:
        if not self._frozen:
            raise InputError("result() needs both passes: pass 1 never ran.")


class PanopticAccumulator(_TwoPass):
    """Video panoptic segmentation (VIPSeg semantics); two passes."""

    def __init__(
        self,
        categories: list[Category],
        *,
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        score_threshold: float = 0.0,
        class_ids: set[int] | None = None,
        memory_budget: int = DEFAULT_BUDGET,
    ) -> None:
        super().__init__(categories, score_threshold=score_threshold, class_ids=class_ids, memory_budget=memory_budget)
        self.object_mask_threshold = float(object_mask_threshold)
        self.overlap_threshold = float(overlap_threshold)

    def _freeze(self) -> None:
        probs = F.softmax(self.logits.mean(), dim=-1)
        scores, labels = probs.max(-1)
        keep = labels.ne(self.num_classes) & (scores > self.object_mask_threshold)
        self.kept = keep.nonzero(as_tuple=True)[0]  # query indices, ascending
        self.kept_scores = scores[self.kept]
        self.kept_labels = labels[self.kept]
        n = len(self.kept)
        self.area_argmax = torch.zeros(n, dtype=torch.long)
        self.area_original = torch.zeros(n, dtype=torch.long)
        self.area_final = torch.zeros(n, dtype=torch.long)

    def _frame(self, logits: Tensor, geometry: Geometry) -> tuple[np.ndarray, list[str]]:
        n = len(self.kept)
        if n == 0:
            return np.zeros(0, np.int64), []
        dev = logits.device
        scores = self.kept_scores.to(dev)
        best_val = best_idx = best_prob = None
        original = torch.zeros(n, dtype=torch.long, device=dev)
        for start, probs in self._chain_groups(logits[self.kept.to(dev)], geometry):
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
        ok = best_prob >= 0.5
        self.area_argmax += torch.bincount(best_idx.flatten(), minlength=n).cpu()
        self.area_final += torch.bincount(best_idx[ok], minlength=n).cpu()
        self.area_original += original.cpu()
        labels = torch.where(ok, best_idx, torch.full_like(best_idx, -1))
        present = torch.unique(labels[ok])
        return present.cpu().numpy(), self._encode_labels(labels, present)

    def result(self, num_frames: int) -> list[Segment]:
        self._check_done()
        segments: list[tuple[Category, float, int, list[int]]] = []
        stuff: dict[int, int] = {}
        for k in range(len(self.kept)):
            a, o, f = int(self.area_argmax[k]), int(self.area_original[k]), int(self.area_final[k])
            if not (a > 0 and o > 0 and f > 0) or a / o < self.overlap_threshold:
                continue
            label = int(self.kept_labels[k])
            category = self.categories[label]
            if not category.isthing:
                if label in stuff:
                    segments[stuff[label]][3].append(k)
                    continue
                stuff[label] = len(segments)
            segments.append((category, float(self.kept_scores[k]), int(self.kept[k]), [k]))
        segments = [s for s in segments if self._keep(s[0].id, s[1])]
        masks = self._frame_masks(num_frames, [s[3] for s in segments])
        return [
            Segment(track_id=i + 1, category_id=c.id, score=score, masks=m, query=query, isthing=c.isthing)
            for i, ((c, score, query, _), m) in enumerate(zip(segments, masks))
        ]


class SemanticAccumulator(_TwoPass):
    """Video semantic segmentation (VSPW semantics); two passes."""

    def _freeze(self) -> None:
        self.class_probs = F.softmax(self.logits.mean(), dim=-1)[:, :-1]  # (Q, K)
        self.present = torch.zeros(self.num_classes, dtype=torch.bool)

    def _frame(self, logits: Tensor, geometry: Geometry) -> tuple[np.ndarray, list[str]]:
        probs = self.class_probs.to(logits.device)
        semseg = None
        for start, masks in self._chain_groups(logits, geometry):
            part = torch.einsum("qc,qhw->chw", probs[start : start + masks.shape[0]], masks)
            semseg = part if semseg is None else semseg.add_(part)
        labels = semseg.argmax(0)
        present = torch.unique(labels)
        self.present[present.cpu()] = True
        return present.cpu().numpy(), self._encode_labels(labels, present)

    def result(self, num_frames: int) -> list[Segment]:
        self._check_done()
        classes = [int(k) for k in self.present.nonzero(as_tuple=True)[0]]
        classes = [k for k in classes if self.class_ids is None or self.categories[k].id in self.class_ids]
        masks = self._frame_masks(num_frames, [[k] for k in classes])
        out = []
        for k, m in zip(classes, masks):
            cid = self.categories[k].id
            out.append(Segment(track_id=cid, category_id=cid, score=1.0, masks=m, isthing=False))
        return out
