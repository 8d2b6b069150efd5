"""The network against references: transformers' VidEoMT (whole forward, masked patches) and
transformers' DINOv2-with-registers (backbone at any size, DESIGN 6); then the streaming invariants
(chunks, batches, ``step`` vs ``forward``) and the input checks.

Tolerance: 1e-5, absolute for values up to 1 and relative to the largest reference value above
that (mask logits of these random nets reach ~100, where float32 itself resolves ~1e-5): the same
float32 math in a different order, nothing looser.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import frame_major_to_ours, hf_reference, make_frames, make_model
from videomt_cli.modeling import checkpoint
from videomt_cli.modeling import model as model_module
from videomt_cli.errors import InputError
from videomt_cli.modeling.model import VideoMT, resample_pos_embed

ATOL = 1e-5


def close(a: torch.Tensor, b: torch.Tensor, tol: float = ATOL) -> None:
    """``a`` equals the reference ``b`` up to ``tol`` times max(1, max |b|)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    bound = tol * max(1.0, b.abs().max().item())
    assert diff <= bound, f"max abs difference {diff:.3g} > {bound:.3g}"


def run_reference(ref, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' forward on (B, T, 3, H, W) -> (class logits, mask logits), both (B, T, ...)."""
    B, T = pixels.shape[:2]
    out = ref(pixels)
    return (frame_major_to_ours(out.class_queries_logits, B, T),
            frame_major_to_ours(out.masks_queries_logits, B, T))


def reference_forward_masked(ref, pixels: torch.Tensor, bool_masked_pos: torch.Tensor | None):
    """transformers' VidEoMT with a patch mask: its forward takes none, so this runs its own
    embeddings (which do take one), layers, propagation and heads in its forward's order.

    pixels (B, T, 3, H, W) or (B, 3, H, W) (B one-frame videos) -> class, mask logits (B, T, ...).
    ``test_reference_forward_masked_is_the_reference`` pins this helper to ``ref(pixels)``.
    """
    cfg = ref.config
    B, T = (pixels.shape[0], pixels.shape[1]) if pixels.ndim == 5 else (pixels.shape[0], 1)
    start = cfg.num_hidden_layers - cfg.num_blocks
    hidden = ref.embeddings(pixels, bool_masked_pos=bool_masked_pos)  # (B*T, P, C), video-major
    for layer in ref.layers[:start]:
        hidden = layer(hidden)
    hidden = hidden.view(B, T, *hidden.shape[1:])
    propagated, class_logits, mask_logits = None, [], []
    for t in range(T):
        if propagated is None:
            queries = ref.query.weight[None].expand(B, -1, -1)
        else:
            queries = ref.query_updater(propagated) + ref.query.weight[None]
        x = torch.cat([queries, hidden[:, t]], dim=1)
        for layer in ref.layers[start:]:
            x = layer(x)
        masks, classes = ref.predict(ref.layernorm(x))
        propagated = x[:, : cfg.num_queries]
        class_logits.append(classes)
        mask_logits.append(masks)
    return torch.stack(class_logits, 1), torch.stack(mask_logits, 1)


# --------------------------------------------------------------------------- whole forward


CONFIGS = {
    "k2-Q8-K5-h2": dict(hidden_size=64, num_layers=4, num_heads=2, num_query_blocks=2, num_queries=8,
                        num_classes=5, use_mask_token=True),
    "k1-Q5-K1-h3-C96": dict(hidden_size=96, num_layers=3, num_heads=3, num_query_blocks=1, num_queries=5,
                            num_classes=1),
    "k3=L-Q12-K9-h4-C32": dict(hidden_size=32, num_layers=3, num_heads=4, num_query_blocks=3,
                               num_queries=12, num_classes=9, image_size=48),
    "k2-Q3-K7-h1-L5": dict(hidden_size=48, num_layers=5, num_heads=1, num_query_blocks=2, num_queries=3,
                           num_classes=7, image_size=80, use_mask_token=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_forward_matches_transformers(name, tmp_path):
    """Same weights through (a) a Hugging Face dir both load and (c) our own .safetensors."""
    original = make_model(seed=len(name), **CONFIGS[name])
    cfg = original.config
    ref = hf_reference(original, tmp_path / "hf")
    from_hf = checkpoint.load_model(tmp_path / "hf").model
    from_ours = checkpoint.load_model(checkpoint.save(original, tmp_path / "m.safetensors")).model

    frames = make_frames(2, 3, cfg.image_size, cfg.image_size, seed=1)
    ref_cls, ref_masks = run_reference(ref, frames)
    assert ref_cls.shape == (2, 3, cfg.num_queries, cfg.num_classes + 1)
    assert ref_masks.shape == (2, 3, cfg.num_queries, cfg.image_size // 4, cfg.image_size // 4)
    for ours in (original, from_hf, from_ours):
        out, state = ours(frames)
        close(out.class_logits, ref_cls)
        close(out.mask_logits, ref_masks)
        assert state.shape == (2, cfg.num_queries, cfg.hidden_size)


# --------------------------------------------------------------------------- backbone at any size


def dinov2_reference(model: VideoMT):
    """transformers' Dinov2WithRegistersModel holding our backbone weights, CLS position zero."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    cfg = model.config
    ref_cfg = Dinov2WithRegistersConfig(
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio, patch_size=cfg.patch_size, image_size=cfg.image_size,
        num_register_tokens=cfg.num_register_tokens, layerscale_value=1.0, layer_norm_eps=cfg.layer_norm_eps,
        hidden_act="gelu", qkv_bias=True,
    )
    ref = Dinov2WithRegistersModel(ref_cfg).eval()
    sd = model.state_dict()
    C = cfg.hidden_size
    mapped = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.register_tokens": sd["reg_token"],
        # Row 0 is CLS: zero, because our CLS (like the official backbone's) gets no position.
        "embeddings.position_embeddings": torch.cat([torch.zeros(1, 1, C), sd["pos_embed"]], dim=1),
        "embeddings.mask_token": torch.zeros(1, C),
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    for i in range(cfg.num_layers):
        ours, theirs = f"blocks.{i}.", f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            for part, chunk in zip(("q", "k", "v"), sd[ours + f"attn.qkv.{p}"].chunk(3, dim=0)):
                mapped[theirs + f"attention.{part}_proj.{p}"] = chunk
            mapped[theirs + f"attention.o_proj.{p}"] = sd[ours + f"attn.proj.{p}"]
            for n in (1, 2):
                mapped[theirs + f"norm{n}.{p}"] = sd[ours + f"norm{n}.{p}"]
            for fc in ("fc1", "fc2"):
                mapped[theirs + f"mlp.{fc}.{p}"] = sd[ours + f"mlp.{fc}.{p}"]
        for n in (1, 2):
            mapped[theirs + f"layer_scale{n}.lambda1"] = sd[ours + f"ls{n}.gamma"]
    ref.load_state_dict(mapped, strict=True)
    return ref


@pytest.fixture(scope="module")
def backbone_pair():
    # Stored grid 40x40 as in the released 640 models: 448x800 shrinks one axis (antialias matters)
    # and grows the other.
    model = make_model(seed=7, hidden_size=64, num_layers=3, num_heads=2, num_query_blocks=1, image_size=640)
    return model, dinov2_reference(model)


@pytest.mark.parametrize("size", [(448, 800), (480, 640), (640, 640)])
@torch.no_grad()
def test_backbone_matches_dinov2_with_registers(backbone_pair, size):
    model, ref = backbone_pair
    pixels = make_frames(1, 2, *size, seed=3)[0]  # (2, 3, H, W)
    expected = ref(pixels, output_hidden_states=True).hidden_states  # embeddings, then each layer
    tokens = model.embed(pixels)
    assert tokens.shape == (2, 5 + (size[0] // 16) * (size[1] // 16), 64)
    close(tokens, expected[0])
    for i, block in enumerate(model.blocks):
        tokens = block(tokens)
        close(tokens, expected[i + 1])


# --------------------------------------------------------------------------- whole network at any size


def reference_video(backbone, sd: dict, cfg, pixels: torch.Tensor, propagate=None):
    """VidEoMT written from DESIGN 2.1-2.3 on transformers' DINOv2-with-registers backbone.

    backbone: ``dinov2_reference`` (embeddings, position embeddings resampled by transformers,
    blocks, final LayerNorm); sd: our state dict, read only for the query stage and the heads,
    which are plain functional ops here. pixels (T, 3, H, W) of one video -> class logits
    (T, Q, K + 1) and mask logits (T, Q, H/4, W/4). ``propagate(raw O_{t-1}, normed O_{t-1})``
    gives frame t's queries; default: query_updater(raw O_{t-1}) + E (DESIGN 2.3).
    """
    Q, start = cfg.num_queries, cfg.num_layers - cfg.num_query_blocks
    E = sd["queries.weight"]
    if propagate is None:
        def propagate(raw, normed):
            return F.linear(raw, sd["query_updater.weight"], sd["query_updater.bias"]) + E
    layers = backbone.encoder.layer
    hidden = backbone.embeddings(pixels)  # (T, 1 + R + N, C)
    for layer in layers[:start]:  # the first L - k blocks: frames independent
        hidden = layer(hidden)
    grid = (pixels.shape[-2] // cfg.patch_size, pixels.shape[-1] // cfg.patch_size)
    classes, masks, raw, normed = [], [], None, None
    for t in range(pixels.shape[0]):
        queries = E if raw is None else propagate(raw, normed)  # frame 0: exactly E
        x = torch.cat([queries[None], hidden[t : t + 1]], dim=1)  # [queries | CLS | registers | patches]
        for layer in layers[start:]:
            x = layer(x)
        raw = x[0, :Q]
        y = backbone.layernorm(x)[0]
        normed = y[:Q]
        classes.append(F.linear(normed, sd["class_head.weight"], sd["class_head.bias"]))
        e = normed
        for i in (0, 2, 4):  # Linear -> GELU -> Linear -> GELU -> Linear
            e = F.linear(e, sd[f"mask_head.{i}.weight"], sd[f"mask_head.{i}.bias"])
            e = F.gelu(e) if i < 4 else e
        f = y[Q + cfg.num_prefix_tokens :].t().reshape(1, -1, *grid)  # (1, C, H/16, W/16)
        for b in range(cfg.num_upscale_blocks):
            k = f"upscale.{b}."
            f = F.gelu(F.conv_transpose2d(f, sd[k + "conv1.weight"], sd[k + "conv1.bias"], stride=2))
            f = F.conv2d(f, sd[k + "conv2.weight"], padding=1, groups=f.shape[1])
            f = F.layer_norm(f.permute(0, 2, 3, 1), f.shape[1:2], sd[k + "norm.weight"], sd[k + "norm.bias"],
                             eps=cfg.layer_norm_eps).permute(0, 3, 1, 2)
        masks.append(torch.einsum("qc,chw->qhw", e, f[0]))
    return torch.stack(classes), torch.stack(masks)


@pytest.fixture(scope="module")
def network_pair():
    # Stored grid 40x40 like the released 640 models; k = 2 query blocks of 4.
    model = make_model(seed=21, hidden_size=64, num_layers=4, num_heads=2, num_query_blocks=2, image_size=640)
    return model, dinov2_reference(model)


@torch.no_grad()
def test_whole_network_matches_the_design_reference_at_448x800(network_pair):
    """The official 448x800 input (720p at min size 448): ours against the DESIGN reference built
    on transformers' DINOv2 backbone, every frame's class and mask logits, query propagation over
    3 frames. Then two wrong propagations, to show the comparison can fail."""
    model, backbone = network_pair
    cfg = model.config
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    pixels = make_frames(1, 3, 448, 800, seed=22)
    out, state = model(pixels)
    assert out.class_logits.shape == (1, 3, 8, 6) and out.mask_logits.shape == (1, 3, 8, 112, 200)
    ref_cls, ref_masks = reference_video(backbone, sd, cfg, pixels[0])
    close(out.class_logits[0], ref_cls)
    close(out.mask_logits[0], ref_masks)
    # Chunked through step, the state carried: the same numbers.
    step_state = None
    for t in range(3):
        step_out, step_state = model.step(pixels[:, t], step_state)
        close(step_out.mask_logits[0], ref_masks[t])
    close(step_state, state)

    def far(ours, ref):
        return (ours - ref).abs().max().item() > 100 * ATOL * max(1.0, ref.abs().max().item())

    E = sd["queries.weight"]
    wrong = {
        "no propagation": lambda raw, normed: E,
        "normed tokens propagated": lambda raw, normed: F.linear(normed, sd["query_updater.weight"],
                                                                 sd["query_updater.bias"]) + E,
        "updater without E": lambda raw, normed: F.linear(raw, sd["query_updater.weight"], sd["query_updater.bias"]),
    }
    for name, propagate in wrong.items():
        bad_cls, bad_masks = reference_video(backbone, sd, cfg, pixels[0], propagate)
        close(out.class_logits[0, 0], bad_cls[0])  # frame 0 does not propagate anything
        assert far(out.class_logits[0, 1:], bad_cls[1:]) and far(out.mask_logits[0, 1:], bad_masks[1:]), name


def test_embed_resamples_only_when_the_grid_differs(monkeypatch):
    model = make_model(seed=2)  # stored grid 4x4
    calls = []
    real = F.interpolate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(model_module.F, "interpolate", spy)
    with torch.no_grad():
        model.embed(torch.randn(1, 3, 64, 64))
        assert calls == []
        assert resample_pos_embed(model.pos_embed, (4, 4)) is model.pos_embed
        model.embed(torch.randn(1, 3, 48, 96))
    assert len(calls) == 1
    assert calls[0]["size"] == (3, 6) and calls[0]["mode"] == "bicubic" and calls[0]["antialias"] is True


def test_resample_runs_in_float32():
    pos = torch.randn(1, 16, 8)
    exact = resample_pos_embed(pos, (3, 7))
    half = resample_pos_embed(pos.bfloat16(), (3, 7))
    assert half.dtype == torch.bfloat16
    # float32 math then one rounding: identical to rounding the float32 result.
    assert torch.equal(half, resample_pos_embed(pos.bfloat16().float(), (3, 7)).bfloat16())
    assert exact.shape == (1, 21, 8)


# --------------------------------------------------------------------------- streaming invariants


@pytest.mark.parametrize("chunk", [1, 2, 3])
@torch.no_grad()
def test_chunks_with_carried_state_equal_one_pass(chunk):
    model = make_model(seed=3)
    frames = make_frames(2, 7, 64, 48, seed=4)
    whole, whole_state = model(frames)
    state, cls, masks = None, [], []
    for start in range(0, 7, chunk):
        out, state = model(frames[:, start : start + chunk], state)
        cls.append(out.class_logits)
        masks.append(out.mask_logits)
    close(torch.cat(cls, 1), whole.class_logits)
    close(torch.cat(masks, 1), whole.mask_logits)
    close(state, whole_state)


@torch.no_grad()
def test_each_video_alone_equals_its_slice_of_a_batch():
    model = make_model(seed=4)
    frames = make_frames(3, 3, 64, 64, seed=5)
    batch, batch_state = model(frames)
    for b in range(3):
        alone, state = model(frames[b : b + 1])
        close(alone.class_logits, batch.class_logits[b : b + 1])
        close(alone.mask_logits, batch.mask_logits[b : b + 1])
        close(state, batch_state[b : b + 1])


def test_4d_input_to_the_model_is_an_input_error_naming_step():
    """(B, 3, H, W) would otherwise run as B independent first frames (or T frames of no video)."""
    model = make_model(seed=5)
    with pytest.raises(InputError, match=r"\(B, T, 3, H, W\).*4-D \(2, 3, 64, 64\).*model\.step"):
        model(make_frames(1, 2, 64, 64, seed=6)[0])
    with pytest.raises(InputError, match="model.step"):
        model(make_frames(1, 2, 64, 64, seed=6)[0], torch.zeros(2, 8, 64))


@torch.no_grad()
def test_step_is_forward_with_one_frame_and_carries_the_state():
    model = make_model(seed=5)
    frames = make_frames(2, 3, 64, 48, seed=6)
    video, video_state = model(frames)
    state = None
    for t in range(3):
        out, new_state = model.step(frames[:, t], state)  # (B, 3, H, W): frame t of each video
        assert out.class_logits.shape == (2, 8, 6) and out.mask_logits.shape == (2, 8, 16, 12)
        assert new_state.shape == (2, 8, 64)
        # exactly forward with T = 1 from the same state
        once, once_state = model(frames[:, t : t + 1], state)
        assert torch.equal(out.class_logits, once.class_logits[:, 0])
        assert torch.equal(out.mask_logits, once.mask_logits[:, 0])
        assert torch.equal(new_state, once_state)
        # and, with the state carried, frame t of the whole clip
        close(out.class_logits, video.class_logits[:, t])
        close(out.mask_logits, video.mask_logits[:, t])
        state = new_state
    close(state, video_state)
    # the state matters: frame 1 from a fresh state is not frame 1 of the video
    fresh, _ = model.step(frames[:, 1])
    assert (fresh.class_logits - video.class_logits[:, 1]).abs().max() > 1e-3


def test_step_takes_one_frame_per_video():
    model = make_model(seed=5)
    with pytest.raises(InputError, match=r"step takes one frame per video, \(B, 3, H, W\); got \(1, 2, 3, 64, 64\)"):
        model.step(torch.randn(1, 2, 3, 64, 64))
    with pytest.raises(InputError, match="step takes one frame"):
        model.step([[0.0]])
    with pytest.raises(InputError, match=r"state has shape \(1, 8, 64\), expected \(2, 8, 64\)"):
        model.step(torch.randn(2, 3, 64, 64), torch.zeros(1, 8, 64))
    with pytest.raises(InputError, match=r"72x64.*patch size 16"):
        model.step(torch.randn(1, 3, 72, 64))


@torch.no_grad()
def test_first_frame_queries_are_exactly_the_learned_queries():
    """Frame 0 uses E, not query_updater(0) + E: the updater's bias must not leak into frame 0."""
    model = make_model(seed=6)
    frames = make_frames(1, 1, 64, 64, seed=7)
    out, _ = model(frames)
    with torch.no_grad():
        model.query_updater.bias.add_(1.0)
    again, _ = model(frames)
    assert torch.equal(out.class_logits, again.class_logits)


# --------------------------------------------------------------------------- input checks


def test_input_errors_say_what_is_wrong():
    model = make_model(seed=8)
    with pytest.raises(InputError, match=r"3 RGB channels.*\(1, 2, 4, 64, 64\)"):
        model(torch.randn(1, 2, 4, 64, 64))
    with pytest.raises(InputError, match=r"\(64, 64\)"):
        model(torch.randn(64, 64))
    with pytest.raises(InputError, match=r"72x64.*patch size 16.*pad"):
        model(torch.randn(1, 1, 3, 72, 64))
    with pytest.raises(InputError, match="floating-point.*uint8"):
        model(torch.zeros(1, 1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(InputError, match="empty"):
        model(torch.randn(1, 0, 3, 64, 64))
    with pytest.raises(InputError, match=r"state has shape \(1, 8, 64\), expected \(2, 8, 64\)"):
        model(torch.randn(2, 1, 3, 64, 64), torch.zeros(1, 8, 64))
    with pytest.raises(InputError, match=r"state has shape \(2, 7, 64\)"):
        model(torch.randn(2, 1, 3, 64, 64), torch.zeros(2, 7, 64))
    with pytest.raises(InputError, match="state must be a torch.Tensor"):
        model(torch.randn(2, 1, 3, 64, 64), [0.0])
    with pytest.raises(InputError, match="must be a torch.Tensor"):
        model([[0.0]])


# --------------------------------------------------------------------------- masked patches (issue 5)


@pytest.fixture(scope="module")
def masked_pair(tmp_path_factory):
    model = make_model(seed=9, use_mask_token=True)
    ref = hf_reference(model, tmp_path_factory.mktemp("hf-masked"))
    return model, ref


def random_mask(shape, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.4


@torch.no_grad()
def test_reference_forward_masked_is_the_reference(masked_pair):
    model, ref = masked_pair
    frames = make_frames(2, 3, 64, 64, seed=10)
    cls, masks = run_reference(ref, frames)
    own_cls, own_masks = reference_forward_masked(ref, frames, None)
    close(own_cls, cls)
    close(own_masks, masks)


B, T, h, w = 2, 3, 4, 4  # 64x64 frames: a 4x4 patch grid, N = 16
N = h * w
LAYOUTS_5D = {
    "(B,T,N)": lambda m: m,
    "(B*T,N)": lambda m: m.reshape(B * T, N),
    "(B,T,h,w)": lambda m: m.reshape(B, T, h, w),
}
LAYOUTS_STEP = {"(B,N)": lambda m: m, "(B,h,w)": lambda m: m.reshape(B, h, w)}


@pytest.mark.parametrize("layout", list(LAYOUTS_5D))
@torch.no_grad()
def test_masked_5d_matches_reference(masked_pair, layout):
    model, ref = masked_pair
    frames = make_frames(B, T, 64, 64, seed=11)
    mask = random_mask((B, T, N), seed=12)
    assert mask.any() and not mask.all()
    given = LAYOUTS_5D[layout](mask)
    # Embeddings: the reference reads the layout itself; ours takes the video-major (B*T, N).
    close(model.embed(frames.flatten(0, 1), mask.reshape(B * T, N)), ref.embeddings(frames, bool_masked_pos=given))
    # Whole forward.
    ref_cls, ref_masks = reference_forward_masked(ref, frames, given)
    out, _ = model(frames, patch_mask=given)
    close(out.class_logits, ref_cls)
    close(out.mask_logits, ref_masks)
    # The mask changes the answer (it is not silently dropped).
    unmasked, _ = model(frames)
    assert (unmasked.class_logits - out.class_logits).abs().max() > 1e-3


@pytest.mark.parametrize("layout", list(LAYOUTS_STEP))
@torch.no_grad()
def test_masked_step_matches_reference(masked_pair, layout):
    """One frame of each of B videos through ``step`` with a (B, N) or (B, h, w) mask."""
    model, ref = masked_pair
    frames = make_frames(B, 1, 64, 64, seed=13)  # (B, 1, 3, H, W): B one-frame videos
    mask = random_mask((B, N), seed=14)
    assert mask.any() and not mask.all()
    given = LAYOUTS_STEP[layout](mask)
    close(model.embed(frames[:, 0], mask), ref.embeddings(frames, bool_masked_pos=mask))
    ref_cls, ref_masks = reference_forward_masked(ref, frames, mask)
    out, state = model.step(frames[:, 0], patch_mask=given)
    assert out.class_logits.shape == (B, 8, 6) and state.shape == (B, 8, 64)
    close(out.class_logits, ref_cls[:, 0])
    close(out.mask_logits, ref_masks[:, 0])
    unmasked, _ = model.step(frames[:, 0])
    assert (unmasked.class_logits - out.class_logits).abs().max() > 1e-3


@torch.no_grad()
def test_masked_video_equals_masked_steps_frame_by_frame(masked_pair):
    model, ref = masked_pair
    frames = make_frames(B, T, 64, 64, seed=15)
    mask = random_mask((B, T, N), seed=16)
    video, video_state = model(frames, patch_mask=mask)
    ref_cls, ref_masks = reference_forward_masked(ref, frames, mask)
    close(video.class_logits, ref_cls)
    close(video.mask_logits, ref_masks)
    state = None
    for t in range(T):
        for given in (mask[:, t], mask[:, t].reshape(B, h, w)):
            out, new_state = model.step(frames[:, t], state, patch_mask=given)
            close(out.class_logits, video.class_logits[:, t])
            close(out.mask_logits, video.mask_logits[:, t])
        state = new_state
    close(state, video_state)


def test_mask_guardrails(masked_pair):
    model, _ = masked_pair
    frames = torch.randn(B, T, 3, 64, 64)
    good = random_mask((B, T, N), seed=17)
    with pytest.raises(InputError, match="bool tensor, got torch.float32"):
        model(frames, patch_mask=good.float())
    with pytest.raises(InputError, match=r"shape \(2, 3, 17\).*\(B, T, N\) = \(2, 3, 16\)"):
        model(frames, patch_mask=torch.zeros(B, T, N + 1, dtype=torch.bool))
    with pytest.raises(InputError, match=r"shape \(3, 3, 16\).*B=2, T=3"):
        model(frames, patch_mask=torch.zeros(B + 1, T, N, dtype=torch.bool))
    with pytest.raises(InputError, match=r"shape \(2, 4, 16\).*\(2, 3, 16\)"):
        model(frames, patch_mask=torch.zeros(B, T + 1, N, dtype=torch.bool))
    with pytest.raises(InputError, match=r"shape \(2, 3, 5, 4\).*\(2, 3, 4, 4\)"):
        model(frames, patch_mask=torch.zeros(B, T, 5, 4, dtype=torch.bool))
    with pytest.raises(InputError, match="bool tensor"):
        model.step(frames[:, 0], patch_mask=good[:, 0].float())


def test_step_mask_errors_name_the_shape_given(masked_pair):
    model, _ = masked_pair
    frame = torch.randn(B, 3, 64, 64)
    with pytest.raises(InputError, match=r"shape \(2, 15\).*\(B, N\) = \(2, 16\)"):
        model.step(frame, patch_mask=torch.zeros(B, N - 1, dtype=torch.bool))
    try:  # a (B, 1, N) mask may be taken as one frame; refused, the message must name it
        model.step(frame, patch_mask=torch.zeros(B, 1, N, dtype=torch.bool))
    except InputError as e:
        assert "shape (2, 1, 16)" in str(e), str(e)


def test_model_without_mask_token_refuses_a_mask(tmp_path):
    official = checkpoint.save_official(make_model(seed=10, hidden_size=64, num_heads=1), tmp_path / "o.pth")
    model = checkpoint.load_model(official).model
    assert model.mask_token is None
    with pytest.raises(InputError, match="no mask token"):
        model(torch.randn(1, 1, 3, 64, 64), patch_mask=torch.zeros(1, 1, N, dtype=torch.bool))


@pytest.mark.parametrize("stored_shape", [(1, 1, 64), (1, 64)])
@torch.no_grad()
def test_mask_token_loads_from_hf_checkpoints(tmp_path, stored_shape):
    from safetensors.torch import load_file, save_file

    original = make_model(seed=11, use_mask_token=True)
    directory = checkpoint.save_hf(original, tmp_path / "hf")
    state = load_file(directory / "model.safetensors")
    assert state["embeddings.mask_token"].shape == (1, 1, 64)  # what transformers itself stores
    state["embeddings.mask_token"] = state["embeddings.mask_token"].reshape(stored_shape).contiguous()
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    loaded = checkpoint.load_model(directory)
    assert loaded.model.mask_token.shape == (1, 1, 64)
    assert torch.equal(loaded.model.mask_token, original.mask_token)
    assert "embeddings.mask_token" in loaded.report.consumed
    frames = make_frames(1, 2, 64, 64, seed=18)
    mask = random_mask((1, 2, N), seed=19)
    close(loaded.model(frames, patch_mask=mask)[0].mask_logits, original(frames, patch_mask=mask)[0].mask_logits)
