"""postprocess: streaming video-level results against straightforward implementations of the
official rules (written independently here), the transformers post-processing where its semantics
coincide, the instance masks against the plain full resize chain, the online selections, and
constant memory."""

from __future__ import annotations

import gc
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videomt_cli.io import masks as rle
from videomt_cli.errors import InputError
from videomt_cli.inference.postprocess import make_accumulator
from videomt_cli.inference.preprocess import Geometry, compute_geometry, masks_to_frame
from videomt_cli.records import Category, VideoInfo, VideoResult

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


def run(acc, class_logits, mask_logits, chunk=4, frames=None):
    """Every pass over ``frames`` in chunks; returns what pass 0's ``add`` calls returned."""
    T = class_logits.shape[0]
    frames = list(range(T)) if frames is None else frames
    online = []
    for p in range(acc.passes):
        for i in range(0, len(frames), chunk):
            idx = frames[i : i + chunk]
            out = acc.add(p, idx, class_logits[idx], mask_logits[idx])
            if p == 0:
                online += out
            else:
                assert out == []
    return online


def result(acc, num_frames):
    """acc.result(num_frames) -> (segments, {track_id: [mask per frame]}); the store is closed."""
    segments, store = acc.result(num_frames)
    try:
        masks = {s.track_id: [store.mask(s.track_id, f) for f in range(num_frames)] for s in segments}
    finally:
        store.close()
    return segments, masks


def decoded(r) -> torch.Tensor:
    return torch.from_numpy(rle.decode(r)).bool()


# --------------------------------------------------------------------------- instance masks: the full chain


def test_instance_masks_are_exactly_the_full_chain_many_seeds():
    """Every (frame, query) mask equals ``masks_to_frame(logits) > 0`` of that query alone, bit for
    bit, over random geometries and logits: blobs on and beyond the borders, plain noise, queries
    negative everywhere, and queries positive only in the padding (rows / columns beyond the crop),
    whose masks come out empty when the crop removes every positive pixel."""
    checked = empty_padding = 0
    for seed in range(30):
        gen = torch.Generator().manual_seed(seed)
        H, W = (int(v) for v in torch.randint(12, 160, (2,), generator=gen))
        short = int(torch.randint(12, 100, (), generator=gen))
        g = compute_geometry(H, W, short, max_size=int(torch.randint(100, 240, (), generator=gen)))
        h4, w4 = g.mask_size
        T, Q = 2, 6
        if seed % 3 == 2:
            m = torch.randn(T, Q, h4, w4, generator=gen) - 1.0
        else:
            m = blob_logits(T, Q, h4, w4, gen=gen, border=seed % 2 == 0)
        m[:, 1] = -3.0  # negative everywhere
        padded_cells = g.padded != g.resized
        if padded_cells:  # positives only in the padding rows / columns beyond the crop
            m[:, 0] = -3.0
            if g.padded[0] != g.resized[0]:
                m[:, 0, -1, :] = 2.0
            if g.padded[1] != g.resized[1]:
                m[:, 0, :, -1] = 2.0
        cats = categories(1)
        acc = make_accumulator("instance", cats, g, max_num=Q)  # K = 1: every query is a result
        run(acc, torch.zeros(T, Q, 2), m, chunk=1 + seed % 2)
        segments, masks = result(acc, T)
        assert sorted(s.query for s in segments) == list(range(Q))
        for s in segments:
            for t in range(T):
                full = masks_to_frame(m[t, s.query], g) > 0
                got = decoded(masks[s.track_id][t])
                assert got.shape == (H, W)
                assert torch.equal(got, full), f"seed {seed}, frame {t}, query {s.query}"
                checked += 1
            if s.query == 1:
                assert not any(decoded(x).any() for x in masks[s.track_id])
            if s.query == 0 and padded_cells and not any(decoded(x).any() for x in masks[s.track_id]):
                assert (m[:, 0] > 0).any()  # positive low-res logits, all of them lost to the crop
                empty_padding += 1
    assert checked == 30 * 2 * 6 and empty_padding >= 15


# --------------------------------------------------------------------------- instance


def reference_instance(class_logits, mask_logits, g, max_num, frames, num_frames, mean_frames=None):
    """The official inference_video_vis, straightforwardly: every query fully upsampled.

    The class scores average ``mean_frames`` (default ``frames``)."""
    mean = class_logits[frames if mean_frames is None else mean_frames].float().mean(0)
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
    for got, ref in zip(segment_masks, ref_logits, strict=True):
        if ref is None:
            assert got is None
            continue
        m = decoded(got)
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
    acc = make_accumulator("instance", cats, g, max_num=9)
    assert acc.passes == 1
    assert run(acc, class_logits, mask_logits, chunk=3) == []  # not online: add returns nothing
    got, masks = result(acc, T)
    ref = reference_instance(class_logits, mask_logits, g, 9, list(range(T)), T)
    assert [(s.query, s.category_id) for s in got] == [(q, cats[l].id) for q, l, _, _ in ref]
    assert [s.track_id for s in got] == list(range(1, 10))
    assert all(s.isthing for s in got)
    np.testing.assert_allclose([s.score for s in got], [r[2] for r in ref], rtol=1e-5)
    for s, (_, _, _, ref_masks) in zip(got, ref):
        assert_masks_match(masks[s.track_id], ref_masks)


def test_instance_chunking_does_not_change_results():
    gen = torch.Generator().manual_seed(3)
    T, Q, K = 9, 10, 3
    g = compute_geometry(40, 52, 32)
    class_logits = torch.randn(T, Q, K + 1, generator=gen)
    mask_logits = blob_logits(T, Q, *g.mask_size, gen=gen)
    results = []
    for chunk in (1, 2, 4, 9):
        acc = make_accumulator("instance", categories(K), g, max_num=12)
        run(acc, class_logits, mask_logits, chunk=chunk)
        got, masks = result(acc, T)
        results.append([(s.query, s.category_id, s.score, masks[s.track_id]) for s in got])
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
    acc = make_accumulator("instance", categories(K), g, max_num=4)
    run(acc, class_logits, mask_logits, chunk=2, frames=frames)
    got, masks = result(acc, T)
    ref = reference_instance(class_logits, mask_logits, g, 4, frames, T)
    assert [(s.query, s.category_id) for s in got][:2] == [(2, 10), (2, 13)]
    assert masks[got[0].track_id] == masks[got[1].track_id]
    for s, (q, label, score, ref_masks) in zip(got, ref, strict=True):
        assert (s.query, s.category_id) == (q, categories(K)[label].id)
        assert [m is None for m in masks[s.track_id]] == [f not in frames for f in range(T)]
        assert_masks_match(masks[s.track_id], ref_masks)


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
    acc = make_accumulator("instance", cats, g, max_num=10, score_threshold=threshold, class_ids=wanted)
    run(acc, class_logits, mask_logits)
    got, _ = result(acc, T)
    expected = [(q, cats[l].id) for q, l, s, _ in ref if s >= threshold and cats[l].id in wanted]
    assert expected and [(s.query, s.category_id) for s in got] == expected
    assert [s.track_id for s in got] == list(range(1, len(expected) + 1))
    # class_ids filter the final top-k; they do not promote lower-ranked pairs
    other = next(c.id for c in cats if c.id != cats[ref[0][1]].id)
    acc = make_accumulator("instance", cats, g, max_num=1, class_ids={other})
    run(acc, class_logits, mask_logits)
    assert result(acc, T)[0] == []


def test_instance_online_selection_is_the_rule_on_the_running_mean():
    """online=True: each frame's selection is the top-k of the class logits averaged over the
    frames added so far, with that frame's masks; the last frame's is the video-level result."""
    gen = torch.Generator().manual_seed(9)
    T, Q, K = 6, 7, 3
    g = compute_geometry(36, 50, 32)
    cats = categories(K)
    class_logits = torch.randn(T, Q, K + 1, generator=gen) * 2
    mask_logits = blob_logits(T, Q, *g.mask_size, gen=gen, p_empty=0.4)
    frames = [0, 1, 3, 4, 5]
    acc = make_accumulator("instance", cats, g, max_num=5, score_threshold=0.05, online=True)
    online = run(acc, class_logits, mask_logits, chunk=2, frames=frames)
    assert [o.index for o in online] == frames
    for i, (f, o) in enumerate(zip(frames, online)):
        ref = [r for r in reference_instance(class_logits, mask_logits, g, 5, [f], T, mean_frames=frames[: i + 1])
               if r[2] >= 0.05]
        assert o.track_ids == [q + 1 for q, _, _, _ in ref]
        assert o.category_ids == [cats[l].id for _, l, _, _ in ref]
        np.testing.assert_allclose(o.scores, [s for _, _, s, _ in ref], rtol=1e-5)
        assert len(o.rles) == len(ref)
        for r, (_, _, _, ref_masks) in zip(o.rles, ref):
            assert list(r["size"]) == list(g.original)
            assert_masks_match([r], [ref_masks[f]])
    got, masks = result(acc, T)
    last = online[-1]
    assert [(s.query + 1, s.category_id) for s in got] == list(zip(last.track_ids, last.category_ids))
    assert [s.score for s in got] == pytest.approx(last.scores, rel=1e-6)
    assert [masks[s.track_id][frames[-1]] for s in got] == last.rles


def test_instance_checks_inputs():
    g = compute_geometry(32, 32, 32)  # mask logits 8x8
    with pytest.raises(InputError, match="Geometry"):
        make_accumulator("instance", categories(3), (32, 32))
    with pytest.raises(InputError, match="categories"):
        make_accumulator("instance", [], g)
    with pytest.raises(InputError, match="max_num"):
        make_accumulator("instance", categories(3), g, max_num=0)
    with pytest.raises(InputError):
        make_accumulator("depth", categories(3), g)
    acc = make_accumulator("instance", categories(3), g)
    with pytest.raises(InputError, match="3 categories"):  # wrong class count
        acc.add(0, [0], torch.zeros(1, 4, 5), torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match=r"\(8, 8\)"):  # mask logits of another geometry
        acc.add(0, [0], torch.zeros(1, 4, 4), torch.zeros(1, 4, 8, 12))
    with pytest.raises(InputError, match="frame indices"):  # T and the frame count disagree
        acc.add(0, [0, 1], torch.zeros(1, 4, 4), torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match=r"\(T, Q, K\+1\)"):  # a batch axis too many
        acc.add(0, [0], torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 8, 8))
    acc.add(0, [0], torch.zeros(1, 4, 4), torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match="twice"):  # same frame twice
        acc.add(0, [0], torch.zeros(1, 4, 4), torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match="pass"):  # one pass only
        acc.add(1, [1], torch.zeros(1, 4, 4), torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match="smaller"):  # a num_frames that cuts off an added frame
        acc.result(0)
    segments, store = acc.result(1)
    store.close()
    with pytest.raises(InputError, match="already taken"):
        acc.result(1)
    with pytest.raises(InputError, match="closed"):
        acc.add(0, [1], torch.zeros(1, 4, 4), torch.zeros(1, 4, 8, 8))


def test_instance_memory_does_not_grow_with_frames():
    """500 frames where every query is non-empty: RLEs go to the temporary file, Python memory
    grows only by the 16-byte-a-frame index."""
    gen = torch.Generator().manual_seed(6)
    Q, K = 20, 3
    g = compute_geometry(32, 32, 32)
    acc = make_accumulator("instance", categories(K), g, max_num=5)
    spill = acc.store
    tracemalloc.start()
    try:
        snapshots = {}
        for start in range(0, 500, 10):
            cls = torch.randn(10, Q, K + 1, generator=gen)
            msk = torch.randn(10, Q, 8, 8, generator=gen)  # every query non-empty in every frame
            acc.add(0, list(range(start, start + 10)), cls, msk)
            if start + 10 in (100, 500):
                gc.collect()
                snapshots[start + 10] = tracemalloc.get_traced_memory()[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spill.nbytes > 500 * Q * 20  # the evidence is on disk (~50 bytes an RLE here)
    assert spill.index_nbytes == 16 * 500
    assert snapshots[500] - snapshots[100] < 40_000  # 400 frames x 20 RLEs would be ~400 kB
    assert peak < 2_000_000
    segments, store = acc.result(500)
    assert len(segments) == 5
    # The result owns the spill file from then on: closing the accumulator leaves it, the masks
    # are read from it on access, and closing the result deletes it.
    acc.close()
    assert not spill.closed
    info = VideoInfo(path="memory", width=32, height=32, num_frames=500)
    with VideoResult(video=info, task="instance", categories=tuple(categories(K)), segments=tuple(segments),
                     store=store, num_frames=500, processed=tuple(range(500))) as video:
        assert all(m is not None for m in video.masks_of(segments[0]))
        assert video.mask(segments[0], 499) is not None
    assert spill.closed
    with pytest.raises(ValueError, match="closed"):
        store.mask(segments[0].track_id, 0)


def test_an_accumulator_closed_without_results_deletes_its_file():
    g = compute_geometry(32, 32, 32)
    for task in ("instance", "panoptic", "semantic"):
        acc = make_accumulator(task, categories(3), g)
        spill = acc.store
        acc.add(0, [0], torch.zeros(1, 4, 4), torch.zeros(1, 4, 8, 8))
        acc.close()
        assert spill.closed and acc.store is None
        with make_accumulator(task, categories(3), g) as acc:  # or leaves its with-block
            spill = acc.store
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
    acc = make_accumulator("instance", categories(K), g, max_num=Q * K)
    run(acc, class_logits, mask_logits)
    segments, masks = result(acc, T)
    by_query = {s.query: masks[s.track_id] for s in segments}
    assert len(by_query) == Q
    full = chain(mask_logits.flatten(0, 1), g).view(T, Q, S, S)
    for t in range(T):
        ours = torch.full((S, S), -1, dtype=torch.long)
        n = 0
        for q in range(Q):
            m = decoded(by_query[q][t])
            if m.any():
                ours[m] = n
                n += 1
        assert n == len(hf[t]["segments_info"])
        stable = (full[t].abs() >= GUARD).all(0)
        assert torch.equal(ours[stable], hf[t]["segmentation"][stable])
    # one frame: transformers' label is the argmax of our (then video-level) class scores
    acc = make_accumulator("instance", categories(K), g, max_num=Q * K)
    run(acc, class_logits[:1], mask_logits[:1])
    best = {}
    for s in result(acc, 1)[0]:
        best.setdefault(s.query, s.category_id)  # results are in score order
    hf0 = proc.post_process_instance_segmentation(
        SimpleNamespace(class_queries_logits=class_logits[:1], masks_queries_logits=mask_logits[:1]),
        target_sizes=[(S, S)],
        threshold=-1.0,
    )[0]
    nonempty = [q for q in range(Q) if (full[0, q] > 0).any()]
    assert [categories(K)[i["label_id"]].id for i in hf0["segments_info"]] == [best[q] for q in nonempty]


# --------------------------------------------------------------------------- panoptic


def reference_panoptic(class_logits, mask_logits, g, cats, frames, num_frames, obj_thr=0.8, overlap=0.8,
                       mean_frames=None, fuse_stuff=True):
    """The official inference_video_vps over the whole video at once.

    The class scores average ``mean_frames`` (default ``frames``); ``fuse_stuff=False`` keeps
    every query of a stuff class as its own segment."""
    K = len(cats)
    probs = F.softmax(class_logits[frames if mean_frames is None else mean_frames].float().mean(0), dim=-1)
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
        if fuse_stuff and not cats[label].isthing and label in stuff:
            segments[stuff[label]][2] |= seg
            continue
        if not cats[label].isthing:
            stuff[label] = len(segments)
        segments.append([int(kept[k]), cats[label], seg.clone(), float(scores[kept[k]])])
    out = []
    for q, c, seg, score in segments:
        per_frame = [None] * num_frames
        for i, f in enumerate(frames):
            per_frame[f] = seg[i]
        out.append((q, c, per_frame, score))
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


def assert_exact(got_masks, ref_masks):
    for m, r in zip(got_masks, ref_masks, strict=True):
        assert (m is None) == (r is None)
        if r is not None:
            assert np.array_equal(rle.decode(m), r.numpy().astype(np.uint8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_panoptic_matches_reference(seed):
    g, class_logits, mask_logits = panoptic_case(seed)
    T = class_logits.shape[0]
    cats = categories(6, stuff_from=3)
    frames = [0, 1, 3, 4]
    acc = make_accumulator("panoptic", cats, g)
    assert acc.passes == 2
    assert run(acc, class_logits, mask_logits, chunk=3, frames=frames) == []
    got, masks = result(acc, T)
    ref = reference_panoptic(class_logits, mask_logits, g, cats, frames, T)
    assert len(ref) > 1
    assert [(s.query, s.category_id, s.isthing) for s in got] == [(q, c.id, c.isthing) for q, c, _, _ in ref]
    assert [s.track_id for s in got] == list(range(1, len(ref) + 1))
    assert [s.score for s in got] == pytest.approx([r[3] for r in ref], rel=1e-5)
    for s, (_, _, ref_masks, _) in zip(got, ref):
        assert_exact(masks[s.track_id], ref_masks)


def test_panoptic_fuses_the_queries_of_one_stuff_class():
    """Two stuff queries of one class become one segment whose mask is the union; a thing class
    keeps its two queries apart."""
    S = 32
    g = compute_geometry(S, S, S)
    cats = [Category(id=7, name="road", isthing=False), Category(id=9, name="car", isthing=True)]
    Q = 4
    class_logits = torch.full((2, Q, 3), -5.0)
    class_logits[:, 0:2, 0] = 6.0  # queries 0, 1: stuff "road"
    class_logits[:, 2:4, 1] = 6.0  # queries 2, 3: thing "car"
    mask_logits = torch.full((2, Q, 8, 8), -6.0)
    for q, cols in enumerate((slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8))):
        mask_logits[:, q, :, cols] = 6.0
    acc = make_accumulator("panoptic", cats, g)
    run(acc, class_logits, mask_logits)
    got, masks = result(acc, 2)
    assert [(s.query, s.category_id, s.isthing) for s in got] == [(0, 7, False), (2, 9, True), (3, 9, True)]
    ref = reference_panoptic(class_logits, mask_logits, g, cats, [0, 1], 2)
    assert [(q, c.id) for q, c, _, _ in ref] == [(0, 7), (2, 9), (3, 9)]
    for s, (_, _, ref_masks, _) in zip(got, ref):
        assert_exact(masks[s.track_id], ref_masks)
    road = decoded(masks[got[0].track_id][0])
    assert road[:, : S // 2].all() and not road[:, S // 2 :].any()  # the union of queries 0 and 1


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
    acc = make_accumulator("panoptic", cats, g)
    run(acc, class_logits, mask_logits)
    got = {s.query: s for s in result(acc, 2)[0]}
    # query 0: argmax area S*S, original area 2*S*S -> ratio 0.5 < 0.8 -> dropped in every frame,
    # although frame 0 alone would keep it
    assert set(got) == {1}
    ref = reference_panoptic(class_logits, mask_logits, g, cats, [0, 1], 2)
    assert [q for q, _, _, _ in ref] == [1]
    assert [q for q, _, _, _ in reference_panoptic(class_logits, mask_logits, g, cats, [0], 1)] == [0]


def test_panoptic_online_selection_is_the_rule_on_each_frame():
    """online=True: each frame's selection is the panoptic rule on that frame alone, with the
    class logits averaged over the frames added so far (one entry per query: its track id)."""
    g, class_logits, mask_logits = panoptic_case(4, T=4)
    cats = categories(6)  # things only: stuff queries are fused only in the video-level result
    acc = make_accumulator("panoptic", cats, g, online=True)
    online = run(acc, class_logits, mask_logits, chunk=3)
    assert [o.index for o in online] == [0, 1, 2, 3]
    nonempty = 0
    for f, o in enumerate(online):
        ref = reference_panoptic(class_logits, mask_logits, g, cats, [f], 4, mean_frames=list(range(f + 1)))
        assert o.track_ids == [q + 1 for q, _, _, _ in ref]
        assert o.category_ids == [c.id for _, c, _, _ in ref]
        np.testing.assert_allclose(o.scores, [s for _, _, _, s in ref], rtol=1e-5)
        assert_exact(o.rles, [m[f] for _, _, m, _ in ref])
        nonempty += len(ref)
    assert nonempty > 4
    result(acc, 4)


def test_panoptic_matches_transformers_single_frame():
    """For one frame at the stored square size transformers computes what the official code
    does (its per-frame filter is then the whole-video filter)."""
    proc = hf_processor()
    cats = categories(6, stuff_from=3)
    for seed in range(3):
        g, class_logits, mask_logits = panoptic_case(seed, T=1, S=(64, 64), min_size=64)
        assert g.original == g.resized == g.padded
        acc = make_accumulator("panoptic", cats, g)
        run(acc, class_logits, mask_logits)
        got, masks = result(acc, 1)
        hf = proc.post_process_panoptic_segmentation(
            SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits),
            target_sizes=[(64, 64)],
            threshold=0.8,
            label_ids_to_fuse={3, 4, 5},
        )[0]
        assert len(got) == len(hf["segments_info"]) > 0
        ours = torch.full((64, 64), -1, dtype=torch.long)
        for s in got:
            ours[decoded(masks[s.track_id][0])] = s.track_id - 1
        assert torch.equal(ours, hf["segmentation"])
        assert [s.category_id for s in got] == [cats[i["label_id"]].id for i in hf["segments_info"]]


# --------------------------------------------------------------------------- semantic


def reference_semantic(class_logits, mask_logits, g, frames, mean_frames=None):
    probs = F.softmax(class_logits[frames if mean_frames is None else mean_frames].float().mean(0), dim=-1)[:, :-1]
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
    acc = make_accumulator("semantic", cats, g, memory_budget=4 * 3 * 4 * (36 * 60 + 32 * 64))  # 4-query groups
    assert acc.passes == 2
    run(acc, class_logits, mask_logits, chunk=2, frames=frames)
    got, masks = result(acc, T)
    labels, margin = reference_semantic(class_logits, mask_logits, g, frames)
    present = sorted(set(labels.unique().tolist()))
    assert len(present) > 1
    assert [s.category_id for s in got] == [cats[k].id for k in present]
    assert all(s.track_id == s.category_id and not s.isthing and s.score == 1.0 for s in got)
    for s in got:
        k = [c.id for c in cats].index(s.category_id)
        assert masks[s.track_id][1] is None
        for i, f in enumerate(frames):
            m = decoded(masks[s.track_id][f])
            bad = (m != (labels[i] == k)) & (margin[i] > 1e-5)  # query-grouped sums: ties may flip
            assert not bad.any()


def test_semantic_class_filter_and_online_selection():
    gen = torch.Generator().manual_seed(10)
    T, Q, K = 3, 6, 4
    g = compute_geometry(32, 40, 32)
    cats = categories(K, stuff_from=0)
    class_logits = torch.randn(T, Q, K + 1, generator=gen) * 2
    mask_logits = blob_logits(T, Q, *g.mask_size, gen=gen, p_empty=0.2)
    labels_all, _ = reference_semantic(class_logits, mask_logits, g, list(range(T)))
    present = sorted(set(labels_all.unique().tolist()))
    assert len(present) > 1
    wanted = {cats[present[0]].id}
    acc = make_accumulator("semantic", cats, g, class_ids=wanted, online=True)
    online = run(acc, class_logits, mask_logits, chunk=2)
    got, _ = result(acc, T)
    assert [s.category_id for s in got] == [cats[present[0]].id]
    for f, o in enumerate(online):
        labels, margin = reference_semantic(class_logits, mask_logits, g, [f], mean_frames=list(range(f + 1)))
        ks = [k for k in sorted(set(labels.unique().tolist())) if cats[k].id in wanted]
        assert o.index == f and o.track_ids == o.category_ids == [cats[k].id for k in ks]
        for r, k in zip(o.rles, ks, strict=True):
            bad = (decoded(r) != (labels[0] == k)) & (margin[0] > 1e-5)
            assert not bad.any()


def test_two_pass_protocol():
    g = compute_geometry(32, 32, 32)
    acc = make_accumulator("semantic", categories(2), g)
    with pytest.raises(InputError):  # pass 1 before pass 0
        acc.add(1, [0], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8))
    acc.add(0, [0], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputError):  # result before pass 1
        acc.result(1)
    with pytest.raises(InputError):  # a frame pass 0 never saw
        acc.add(1, [1], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8))
    acc.add(1, [0], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputError):  # pass 0 is closed
        acc.add(0, [1], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputError):  # pass index out of range
        acc.add(2, [0], torch.zeros(1, 3, 3), torch.zeros(1, 3, 8, 8))
    segments, masks = result(acc, 1)
    assert len(segments) == 1
