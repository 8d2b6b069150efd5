"""postprocess: streaming video-level results against straightforward implementations of the
official rules (written independently here), the transformers post-processing where its semantics
coincide, the box trick against the full resize chain, and constant memory."""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videomt_cli import masks as rle
from videomt_cli.errors import InputError
from videomt_cli.postprocess import _box_logits, _positive_boxes, make_accumulator
from videomt_cli.preprocess import Geometry, compute_geometry
from videomt_cli.records import Category

GUARD = 1e-4  # pixels whose reference logit is this close to 0 may differ by float rounding


def categories(k: int, stuff_from: int | None = None) -> list[Category]:
    # dataset ids deliberately not the head index
    return [Category(id=10 + 3 * i, name=f"c{i}", isthing=stuff_from is None or i < stuff_from) for i in range(k)]


def blob_logits(T, Q, h, w, *, gen, p_empty=0.5, border=False) -> torch.Tensor:
    """Trained-like mask logits: mostly negative, a Gaussian blob for some (frame, query) pairs,
    blobs anywhere including on and beyond the borders (and so in the padding)."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    out = torch.full((T, Q, h, w), -4.0)
    u = torch.rand(T, Q, 4, generator=gen)
    for t in range(T):
        for q in range(Q):
            if u[t, q, 0] < p_empty:
                continue
            cy = u[t, q, 1] * (h + 4) - 2
            cx = u[t, q, 2] * (w + 4) - 2
            if border and q % 3 == 0:
                cy = torch.tensor([0.0, h - 1.0, h / 2])[q % 2 + (q % 5 == 0)]
            r = 0.7 + u[t, q, 3] * h / 3
            out[t, q] += 8 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return out + 0.4 * torch.randn(T, Q, h, w, generator=gen)


def chain(logits: torch.Tensor, g: Geometry, sigmoid: bool = False) -> torch.Tensor:
    """The official resize chain, written out: (N, h, w) -> (N, H, W)."""
    x = F.interpolate(logits[None].float(), size=g.padded, mode="bilinear", align_corners=False)
    x = x[:, :, : g.resized[0], : g.resized[1]]
    if sigmoid:
        x = x.sigmoid()
    return F.interpolate(x, size=g.original, mode="bilinear", align_corners=False)[0]


def run(acc, class_logits, mask_logits, g, chunk=4, frames=None):
    T = class_logits.shape[0]
    frames = list(range(T)) if frames is None else frames
    for p in range(acc.passes):
        for i in range(0, len(frames), chunk):
            idx = frames[i : i + chunk]
            acc.add(p, idx, class_logits[idx], mask_logits[idx], g)


# --------------------------------------------------------------------------- the box trick


def test_box_trick_matches_full_chain_many_seeds():
    checked = 0
    for seed in range(60):
        gen = torch.Generator().manual_seed(seed)
        H, W = (int(v) for v in torch.randint(12, 160, (2,), generator=gen))
        short = int(torch.randint(12, 100, (), generator=gen))
        g = compute_geometry(H, W, short, max_size=int(torch.randint(100, 240, (), generator=gen)))
        h4, w4 = g.mask_size
        m = blob_logits(2, 5, h4, w4, gen=gen, border=seed % 2 == 0)
        if seed % 7 == 0:  # positives only in the padding rows / columns beyond the crop
            m[:, 0] = -3.0
            m[:, 0, -1, :] = 2.0
            m[:, 0, :, -1] = 2.0
        full = chain(m.flatten(0, 1), g).view(2, 5, H, W)
        t, q, y0, y1, x0, x1 = _positive_boxes(m)
        vals, Ys, Xs = _box_logits(m, t, q, y0, y1, x0, x1, g)
        OH, OW = vals.shape[1:]
        covered = torch.zeros(2, 5, dtype=torch.bool)
        for n in range(len(t)):
            ref = full[t[n], q[n]]
            got = torch.zeros(H, W, dtype=torch.bool)
            got[Ys[n] : Ys[n] + OH, Xs[n] : Xs[n] + OW] = vals[n] > 0
            bad = (got != (ref > 0)) & (ref.abs() >= GUARD)
            assert not bad.any(), f"seed {seed}: {int(bad.sum())} pixels differ"
            window = ref[Ys[n] : Ys[n] + OH, Xs[n] : Xs[n] + OW]
            near = window > -1e-2  # wherever a pixel can be positive the logits agree closely
            assert torch.allclose(vals[n][near], window[near], atol=1e-5, rtol=1e-5)
            covered[t[n], q[n]] = True
            checked += 1
        # queries without a positive low-res cell are empty after the chain (convexity)
        assert not (full[~covered] > 0).any()
    assert checked > 200


# --------------------------------------------------------------------------- instance


def reference_instance(class_logits, mask_logits, g, max_num, frames, num_frames):
    """The official inference_video_vis, straightforwardly: every query fully upsampled."""
    mean = class_logits[frames].float().mean(0)
    scores = F.softmax(mean, dim=-1)[:, :-1]
    Q, K = scores.shape
    flat = scores.flatten()
    order = sorted(range(Q * K), key=lambda i: (-float(flat[i]), i))[:max_num]
    full = {f: chain(mask_logits[f], g) for f in frames}
    out = []
    for idx in order:
        q, label = idx // K, idx % K
        masks = [None if f not in full else full[f][q] for f in range(num_frames)]
        out.append((q, label, float(flat[idx]), masks))
    return out


def assert_masks_match(segment_masks, ref_logits):
    for got, ref in zip(segment_masks, ref_logits):
        if ref is None:
            assert got is None
            continue
        m = torch.from_numpy(rle.decode(got)).bool()
        assert list(got["size"]) == list(ref.shape)
        bad = (m != (ref > 0)) & (ref.abs() >= GUARD)
        assert not bad.any(), f"{int(bad.sum())} pixels differ"


@pytest.mark.parametrize("seed, random_masks", [(0, False), (1, False), (2, True)])
def test_instance_matches_reference(seed, random_masks):
    gen = torch.Generator().manual_seed(seed)
    T, Q, K = 7, 12, 4
    g = compute_geometry(45, 80, 32)  # resized (32, 57), padded (32, 64)
    cats = categories(K)
    class_logits = torch.randn(T, Q, K + 1, generator=gen) * 2
    h4, w4 = g.mask_size
    mask_logits = torch.randn(T, Q, h4, w4, generator=gen) if random_masks else blob_logits(T, Q, h4, w4, gen=gen)
    acc = make_accumulator("instance", cats, max_num=9)
    run(acc, class_logits, mask_logits, g, chunk=3)
    got = acc.result(T)
    ref = reference_instance(class_logits, mask_logits, g, 9, list(range(T)), T)
    assert [(s.query, s.category_id) for s in got] == [(q, cats[l].id) for q, l, _, _ in ref]
    assert [s.track_id for s in got] == list(range(1, 10))
    np.testing.assert_allclose([s.score for s in got], [r[2] for r in ref], rtol=1e-5)
    for s, (_, _, _, masks) in zip(got, ref):
        assert len(s.masks) == T
        assert_masks_match(s.masks, masks)


def test_instance_chunking_does_not_change_results():
    gen = torch.Generator().manual_seed(3)
    T, Q, K = 9, 10, 3
    g = compute_geometry(40, 52, 32)
    class_logits = torch.randn(T, Q, K + 1, generator=gen)
    mask_logits = blob_logits(T, Q, *g.mask_size, gen=gen)
    results = []
    for chunk in (1, 2, 4, 9):
        acc = make_accumulator("instance", categories(K), max_num=12)
        run(acc, class_logits, mask_logits, g, chunk=chunk)
        results.append([(s.query, s.category_id, s.score, s.masks) for s in acc.result(T)])
    assert all(r == results[0] for r in results[1:])


def test_instance_query_under_two_labels_and_unprocessed_frames():
    gen = torch.Generator().manual_seed(4)
    T, Q, K = 8, 6, 3
    g = compute_geometry(32, 48, 32)
    class_logits = torch.randn(T, Q, K + 1, generator=gen) - 3
    class_logits[:, 2, 0] = 4.0  # query 2 is confident in classes 0 and 1 alike
    class_logits[:, 2, 1] = 3.9
    mask_logits = blob_logits(T, Q, *g.mask_size, gen=gen, p_empty=0.3)
    frames = [0, 1, 2, 5, 6]  # frames 3, 4, 7 never added (a stride, an end)
    acc = make_accumulator("instance", categories(K), max_num=4)
    run(acc, class_logits, mask_logits, g, chunk=2, frames=frames)
    got = acc.result(T)
    ref = reference_instance(class_logits, mask_logits, g, 4, frames, T)
    assert [(s.query, s.category_id) for s in got][:2] == [(2, 10), (2, 13)]
    assert got[0].masks == got[1].masks
    for s, (q, label, score, masks) in zip(got, ref):
        assert (s.query, s.category_id) == (q, categories(K)[label].id)
        assert [m is None for m in s.masks] == [f not in frames for f in range(T)]
        assert_masks_match(s.masks, masks)


def test_instance_filters_apply_after_topk():
    gen = torch.Generator().manual_seed(5)
    T, Q, K = 4, 8, 5
    g = compute_geometry(32, 32, 32)
    cats = categories(K)
    class_logits = torch.randn(T, Q, K + 1, generator=gen) * 3
    mask_logits = blob_logits(T, Q, *g.mask_size, gen=gen)
    ref = reference_instance(class_logits, mask_logits, g, 10, list(range(T)), T)
    threshold = ref[4][2]  # keeps exactly the first five of the top ten
    wanted = {cats[ref[0][1]].id, cats[ref[6][1]].id}
    acc = make_accumulator("instance", cats, max_num=10, score_threshold=threshold, class_ids=wanted)
    run(acc, class_logits, mask_logits, g)
    got = acc.result(T)
    expected = [(q, cats[l].id) for q, l, s, _ in ref if s >= threshold and cats[l].id in wanted]
    assert [(s.query, s.category_id) for s in got] == expected
    assert [s.track_id for s in got] == list(range(1, len(expected) + 1))
    # class_ids filter the final top-k; they do not promote lower-ranked pairs
    other = next(c.id for c in cats if c.id != cats[ref[0][1]].id)
    acc = make_accumulator("instance", cats, max_num=1, class_ids={other})
    run(acc, class_logits, mask_logits, g)
    assert acc.result(T) == []


def test_instance_checks_inputs():
    g = compute_geometry(32, 32, 32)
    acc = make_accumulator("instance", categories(3))
    with pytest.raises(InputError):  # wrong class count
        acc.add(0, [0], torch.zeros(1, 4, 5), torch.zeros(1, 4, 8, 8), g)
    acc.add(0, [0], torch.zeros(1, 4, 4), torch.zeros(1, 4, 8, 8), g)
    with pytest.raises(InputError):  # same frame twice
        acc.add(0, [0], torch.zeros(1, 4, 4), torch.zeros(1, 4, 8, 8), g)
    with pytest.raises(InputError):  # one pass only
        acc.add(1, [1], torch.zeros(1, 4, 4), torch.zeros(1, 4, 8, 8), g)
    with pytest.raises(InputError):
        make_accumulator("depth", categories(3))


def test_instance_memory_does_not_grow_with_frames():
    """500 frames where every query is non-empty: RLEs go to the temporary file, Python memory
    grows only by the 16-byte-a-frame index."""
    gen = torch.Generator().manual_seed(6)
    Q, K = 20, 3
    g = compute_geometry(32, 32, 32)
    acc = make_accumulator("instance", categories(K), max_num=5)
    tracemalloc.start()
    try:
        snapshots = {}
        for start in range(0, 500, 10):
            cls = torch.randn(10, Q, K + 1, generator=gen)
            msk = torch.randn(10, Q, 8, 8, generator=gen)  # every query non-empty in every frame
            acc.add(0, list(range(start, start + 10)), cls, msk, g)
            if start + 10 in (100, 500):
                gc.collect()
                snapshots[start + 10] = tracemalloc.get_traced_memory()[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert acc.store.nbytes > 500 * Q * 20  # the evidence is on disk (~50 bytes an RLE here)
    assert acc.store.index_nbytes == 16 * 500
    assert snapshots[500] - snapshots[100] < 40_000  # 400 frames x 20 RLEs would be ~400 kB
    assert peak < 2_000_000
    segments = acc.result(500)
    assert len(segments) == 5 and all(m is not None for m in segments[0].masks)
    # The results read their masks from the spill file on access and own it from then on: it
    # outlives the accumulator and goes (file deleted) with the last result.
    store = weakref.ref(acc.store)
    acc.close()
    del acc
    gc.collect()
    assert store() is not None and not store()._file.closed
    assert segments[0].masks[499] is not None
    del segments
    gc.collect()
    assert store() is None


def test_an_accumulator_closed_without_results_deletes_its_file():
    acc = make_accumulator("instance", categories(3))
    spill = acc.store._file
    acc.close()
    assert spill.closed


# --------------------------------------------------------------------------- against transformers


def hf_processor():
    mod = pytest.importorskip("transformers.models.videomt.video_processing_videomt")
    return mod.VideomtVideoProcessor()


def test_instance_masks_match_transformers_per_frame():
    """transformers' post_process_instance_segmentation is per frame (per-frame class scores,
    argmax label, score x mask score, one bilinear resize). At the stored square size the resize
    chain is that one resize, so the per-frame masks of every query are comparable: its
    segmentation map (later queries paint over earlier ones) must equal ours."""
    proc = hf_processor()
    gen = torch.Generator().manual_seed(7)
    T, Q, K, S = 3, 8, 4, 64
    g = compute_geometry(S, S, S)
    assert g.resized == g.padded == g.original == (S, S)
    class_logits = torch.randn(T, Q, K + 1, generator=gen)
    mask_logits = blob_logits(T, Q, S // 4, S // 4, gen=gen)
    outputs = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits)
    hf = proc.post_process_instance_segmentation(outputs, target_sizes=[(S, S)] * T, threshold=-1.0)
    acc = make_accumulator("instance", categories(K), max_num=Q * K)
    run(acc, class_logits, mask_logits, g)
    by_query = {s.query: s for s in acc.result(T)}
    assert len(by_query) == Q
    full = chain(mask_logits.flatten(0, 1), g).view(T, Q, S, S)
    for t in range(T):
        ours = torch.full((S, S), -1, dtype=torch.long)
        n = 0
        for q in range(Q):
            m = torch.from_numpy(rle.decode(by_query[q].masks[t])).bool()
            if m.any():
                ours[m] = n
                n += 1
        assert n == len(hf[t]["segments_info"])
        stable = (full[t].abs() >= GUARD).all(0)
        assert torch.equal(ours[stable], hf[t]["segmentation"][stable])
    # one frame: transformers' label is the argmax of our (then video-level) class scores
    acc = make_accumulator("instance", categories(K), max_num=Q * K)
    run(acc, class_logits[:1], mask_logits[:1], g)
    best = {}
    for s in acc.result(1):
        best.setdefault(s.query, s.category_id)  # results are in score order
    hf0 = proc.post_process_instance_segmentation(
        SimpleNamespace(class_queries_logits=class_logits[:1], masks_queries_logits=mask_logits[:1]),
        target_sizes=[(S, S)],
        threshold=-1.0,
    )[0]
    nonempty = [q for q in range(Q) if (full[0, q] > 0).any()]
    assert [categories(K)[i["label_id"]].id for i in hf0["segments_info"]] == [best[q] for q in nonempty]


# --------------------------------------------------------------------------- panoptic


def reference_panoptic(class_logits, mask_logits, g, cats, frames, num_frames, obj_thr=0.8, overlap=0.8):
    """The official inference_video_vps over the whole video at once."""
    K = len(cats)
    probs = F.softmax(class_logits[frames].float().mean(0), dim=-1)
    scores, labels = probs.max(-1)
    keep = labels.ne(K) & (scores > obj_thr)
    kept = keep.nonzero(as_tuple=True)[0]
    if len(kept) == 0:
        return []
    masks = torch.stack([chain(mask_logits[f][kept], g, sigmoid=True) for f in frames], 1)  # (n, T, H, W)
    ids = (scores[kept].view(-1, 1, 1, 1) * masks).argmax(0)
    segments, stuff = [], {}
    for k in range(len(kept)):
        label = int(labels[kept[k]])
        area = int((ids == k).sum())
        original = int((masks[k] >= 0.5).sum())
        seg = (ids == k) & (masks[k] >= 0.5)
        if not (area > 0 and original > 0 and seg.sum() > 0) or area / original < overlap:
            continue
        if not cats[label].isthing and label in stuff:
            segments[stuff[label]][2] |= seg
            continue
        if not cats[label].isthing:
            stuff[label] = len(segments)
        segments.append([int(kept[k]), cats[label], seg.clone()])
    out = []
    for q, c, seg in segments:
        per_frame = [None] * num_frames
        for i, f in enumerate(frames):
            per_frame[f] = seg[i]
        out.append((q, c, per_frame))
    return out


def panoptic_case(seed, T=5, Q=10, K=6, S=(40, 56), min_size=32):
    gen = torch.Generator().manual_seed(seed)
    g = compute_geometry(*S, min_size)
    class_logits = torch.randn(T, Q, K + 1, generator=gen)
    confident = torch.randperm(Q, generator=gen)[: Q // 2 + 1]
    class_logits[:, confident, torch.randint(0, K, (len(confident),), generator=gen)] += 6
    mask_logits = blob_logits(T, Q, *g.mask_size, gen=gen, p_empty=0.1)
    mask_logits[:, :, :, : g.mask_size[1] // 2] += 1.5  # overlapping, large regions
    return g, class_logits, mask_logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_panoptic_matches_reference(seed):
    g, class_logits, mask_logits = panoptic_case(seed)
    T = class_logits.shape[0]
    cats = categories(6, stuff_from=3)
    frames = [0, 1, 3, 4]
    acc = make_accumulator("panoptic", cats)
    assert acc.passes == 2
    run(acc, class_logits, mask_logits, g, chunk=3, frames=frames)
    got = acc.result(T)
    ref = reference_panoptic(class_logits, mask_logits, g, cats, frames, T)
    assert len(ref) > 1
    assert [(s.query, s.category_id, s.isthing) for s in got] == [(q, c.id, c.isthing) for q, c, _ in ref]
    assert [s.track_id for s in got] == list(range(1, len(ref) + 1))
    for s, (_, _, masks) in zip(got, ref):
        for m, r in zip(s.masks, masks):
            assert (m is None) == (r is None)
            if r is not None:
                assert np.array_equal(rle.decode(m), r.numpy().astype(np.uint8))


def test_panoptic_area_filter_is_over_the_whole_video():
    """A query that covers its own mask in one frame but loses most of it in another is judged on
    the sums over the video, as the official code does (not frame by frame)."""
    S = 32
    g = compute_geometry(S, S, S)
    cats = categories(2)
    Q = 2
    class_logits = torch.full((2, Q, 3), -5.0)
    class_logits[:, :, 0] = 5.0
    class_logits[:, 1, 0] = 6.0  # query 1 scores higher
    mask_logits = torch.full((2, Q, 8, 8), -6.0)
    mask_logits[0, 0] = 6.0  # frame 0: query 0 everywhere, query 1 absent -> ratio 1
    mask_logits[1, 0, :, :] = 6.0  # frame 1: both everywhere, query 1 wins -> query 0 loses all
    mask_logits[1, 1] = 6.0
    acc = make_accumulator("panoptic", cats)
    run(acc, class_logits, mask_logits, g)
    got = {s.query: s for s in acc.result(2)}
    # query 0: argmax area S*S, original area 2*S*S -> ratio 0.5 < 0.8 -> dropped in every frame,
    # although frame 0 alone would keep it
    assert set(got) == {1}
    ref = reference_panoptic(class_logits, mask_logits, g, cats, [0, 1], 2)
    assert [q for q, _, _ in ref] == [1]


def test_panoptic_matches_transformers_single_frame():
    """For one frame at the stored square size transformers computes what the official code
    does (its per-frame filter is then the whole-video filter)."""
    proc = hf_processor()
    cats = categories(6, stuff_from=3)
    for seed in range(3):
        g, class_logits, mask_logits = panoptic_case(seed, T=1, S=(64, 64), min_size=64)
        assert g.original == g.resized == g.padded
        acc = make_accumulator("panoptic", cats)
        run(acc, class_logits, mask_logits, g)
        got = acc.result(1)
        hf = proc.post_process_panoptic_segmentation(
            SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits),
            target_sizes=[(64, 64)],
            threshold=0.8,
            label_ids_to_fuse={3, 4, 5},
        )[0]
        assert len(got) == len(hf["segments_info"]) > 0
        ours = torch.full((64, 64), -1, dtype=torch.long)
        for s in got:
            ours[torch.from_numpy(rle.decode(s.masks[0])).bool()] = s.track_id - 1
        assert torch.equal(ours, hf["segmentation"])
        assert [s.category_id for s in got] == [cats[i["label_id"]].id for i in hf["segments_info"]]


# --------------------------------------------------------------------------- semantic


def reference_semantic(class_logits, mask_logits, g, frames):
    probs = F.softmax(class_logits[frames].float().mean(0), dim=-1)[:, :-1]
    masks = torch.stack([chain(mask_logits[f], g, sigmoid=True) for f in frames], 1)  # (Q, T, H, W)
    semseg = torch.einsum("qc,qthw->cthw", probs, masks)
    top2 = semseg.topk(2, dim=0).values
    return semseg.argmax(0), (top2[0] - top2[1])  # labels (T, H, W), margin to the runner-up


def test_semantic_matches_reference():
    gen = torch.Generator().manual_seed(8)
    T, Q, K = 4, 9, 5
    g = compute_geometry(36, 60, 32)
    cats = categories(K, stuff_from=0)
    class_logits = torch.randn(T, Q, K + 1, generator=gen) * 2
    mask_logits = blob_logits(T, Q, *g.mask_size, gen=gen, p_empty=0.2)
    frames = [0, 2, 3]
    acc = make_accumulator("semantic", cats, memory_budget=4 * 3 * 4 * (36 * 60 + 32 * 64))  # 4-query groups
    run(acc, class_logits, mask_logits, g, chunk=2, frames=frames)
    got = acc.result(T)
    labels, margin = reference_semantic(class_logits, mask_logits, g, frames)
    present = sorted(set(labels.unique().tolist()))
    assert [s.category_id for s in got] == [cats[k].id for k in present]
    assert all(s.track_id == s.category_id and not s.isthing for s in got)
    for s in got:
        k = [c.id for c in cats].index(s.category_id)
        assert s.masks[1] is None
        for i, f in enumerate(frames):
            m = torch.from_numpy(rle.decode(s.masks[f])).bool()
            bad = (m != (labels[i] == k)) & (margin[i] > 1e-5)  # query-grouped sums: ties may flip
            assert not bad.any()


def test_two_pass_protocol():
    g = compute_geometry(32, 32, 32)
    acc = make_accumulator("semantic", categories(2))
    with pytest.raises(InputError):  # pass 1 before pass 0
        acc.add(1, [0], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8), g)
    acc.add(0, [0], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8), g)
    with pytest.raises(InputError):  # result before pass 1
        acc.result(1)
    with pytest.raises(InputError):  # a frame pass 0 never saw
        acc.add(1, [1], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8), g)
    acc.add(1, [0], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8), g)
    with pytest.raises(InputError):  # pass 0 is closed
        acc.add(0, [1], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8), g)
    assert len(acc.result(1)) == 1
