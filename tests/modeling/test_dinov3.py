"""The DINOv3 family (DESIGN 2.5) against transformers' own DINOv3 modules, then its checkpoints.

References, all built here from our weights with a mapping written in this file (not the
checkpoint key table, which is what some of these tests check):

- ``DINOv3ViTModel``: the backbone at square and non-square sizes (RoPE from any grid); its
  modules also drive a VidEoMT written from DESIGN 2.3/2.5 (``reference_video``) at any size;
- ``EomtDinov3ForUniversalSegmentation`` with ``attn_mask_probs`` zeroed: frame 0 of VidEoMT, and
  with its ``query.weight`` set to query_updater(O_{t-1}) + E per frame, O_{t-1} from a hook on its
  last layer (normed or not), every later frame (``eomt_video``);
- transformers' ``apply_rotary_pos_emb`` and ``DINOv3ViTRopePositionEmbedding`` for the tables.

Official-format files are synthesised from a random ``DINOv3ViTModel`` renamed the way the
official code renames it (``official_from_transformers``), in both q/k/v forms.

Tolerance as in test_model.py: 1e-5 absolute up to 1, relative to max |ref| above.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import perturb_
from videomt_cli.errors import CheckpointError, InputError
from videomt_cli.modeling import checkpoint, registry
from videomt_cli.modeling.config import VideoMTConfig, preset
from videomt_cli.modeling.model import Rotary, VideoMT

pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    DINOv3ViTConfig,
    DINOv3ViTModel,
    EomtDinov3Config,
    EomtDinov3ForUniversalSegmentation,
)

ATOL = 1e-5
TINY3 = dict(hidden_size=64, num_layers=4, num_heads=2, num_query_blocks=2, num_queries=8, num_classes=5,
             image_size=64, family="dinov3")
OFFICIAL = "backbone.encoder.backbone."


def close(a: torch.Tensor, b: torch.Tensor, tol: float = ATOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    bound = tol * max(1.0, b.abs().max().item())
    assert diff <= bound, f"max abs difference {diff:.3g} > {bound:.3g}"


def far(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max().item() > 100 * ATOL * max(1.0, b.abs().max().item())


def dinov3(seed: int = 0, **changes) -> VideoMT:
    """A tiny DINOv3 VidEoMT, seeded init then seeded noise on every parameter (no no-op weight)."""
    torch.manual_seed(seed)
    return perturb_(VideoMT(VideoMTConfig(**{**TINY3, **changes})), seed + 1000).eval()


def frames(B: int, T: int, H: int, W: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, T, 3, H, W, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- references


def _backbone_names(sd: dict, cfg: VideoMTConfig, layers: str) -> dict:
    """Our backbone weights under transformers' DINOv3 names; blocks under ``layers``."""
    C = cfg.hidden_size
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.register_tokens": sd["reg_token"],
        "embeddings.patch_embeddings.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.bias": sd["patch_embed.proj.bias"],
    }
    if "mask_token" in sd:
        out["embeddings.mask_token"] = sd["mask_token"]
    for i in range(cfg.num_layers):
        ours, theirs = f"blocks.{i}.", f"{layers}.{i}."
        q, k, v = sd[ours + "attn.qkv.weight"].split(C)
        out |= {theirs + "attention.q_proj.weight": q, theirs + "attention.k_proj.weight": k,
                theirs + "attention.v_proj.weight": v, theirs + "attention.q_proj.bias": sd[ours + "attn.q_bias"],
                theirs + "attention.v_proj.bias": sd[ours + "attn.v_bias"]}
        for p in ("weight", "bias"):
            out[theirs + f"attention.o_proj.{p}"] = sd[ours + f"attn.proj.{p}"]
            out[theirs + f"mlp.up_proj.{p}"] = sd[ours + f"mlp.fc1.{p}"]
            out[theirs + f"mlp.down_proj.{p}"] = sd[ours + f"mlp.fc2.{p}"]
            for n in (1, 2):
                out[theirs + f"norm{n}.{p}"] = sd[ours + f"norm{n}.{p}"]
        for n in (1, 2):
            out[theirs + f"layer_scale{n}.lambda1"] = sd[ours + f"ls{n}.gamma"]
    return out


def vit_config(cfg: VideoMTConfig) -> dict:
    return dict(hidden_size=cfg.hidden_size, intermediate_size=cfg.hidden_size * cfg.mlp_ratio,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, patch_size=cfg.patch_size,
                image_size=cfg.image_size, num_register_tokens=cfg.num_register_tokens,
                layer_norm_eps=cfg.layer_norm_eps, hidden_act="gelu")


def dinov3_vit(model: VideoMT) -> DINOv3ViTModel:
    """transformers' DINOv3ViTModel holding our backbone (it has no queries or heads)."""
    cfg = model.config
    ref = DINOv3ViTModel(DINOv3ViTConfig(**vit_config(cfg), rope_theta=cfg.rope_theta)).eval()
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    mapped = _backbone_names(sd, cfg, "model.layer")
    mapped.setdefault("embeddings.mask_token", torch.zeros(1, 1, cfg.hidden_size))
    mapped |= {"norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"]}
    ref.load_state_dict(mapped, strict=True)
    return ref


def eomt_dinov3(model: VideoMT) -> EomtDinov3ForUniversalSegmentation:
    """transformers' EoMT-DINOv3 with our weights (no query_updater: it has none), masks off."""
    cfg = model.config
    ref = EomtDinov3ForUniversalSegmentation(EomtDinov3Config(
        **vit_config(cfg), num_blocks=cfg.num_query_blocks, num_queries=cfg.num_queries, num_labels=cfg.num_classes,
        num_upscale_blocks=cfg.num_upscale_blocks, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
    )).eval()
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    mapped = _backbone_names(sd, cfg, "layers")
    mapped.pop("embeddings.mask_token", None)
    mapped |= {"layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"],
               "query.weight": sd["queries.weight"], "class_predictor.weight": sd["class_head.weight"],
               "class_predictor.bias": sd["class_head.bias"]}
    for j, name in ((0, "fc1"), (2, "fc2"), (4, "fc3")):
        for p in ("weight", "bias"):
            mapped[f"mask_head.{name}.{p}"] = sd[f"mask_head.{j}.{p}"]
    for j in range(cfg.num_upscale_blocks):
        mapped |= {f"upscale_block.block.{j}.conv1.weight": sd[f"upscale.{j}.conv1.weight"],
                   f"upscale_block.block.{j}.conv1.bias": sd[f"upscale.{j}.conv1.bias"],
                   f"upscale_block.block.{j}.conv2.weight": sd[f"upscale.{j}.conv2.weight"],
                   f"upscale_block.block.{j}.layernorm2d.weight": sd[f"upscale.{j}.norm.weight"],
                   f"upscale_block.block.{j}.layernorm2d.bias": sd[f"upscale.{j}.norm.bias"]}
    result = ref.load_state_dict(mapped, strict=False)
    assert set(result.missing_keys) <= {"attn_mask_probs", "criterion.empty_weight"}, result.missing_keys
    assert not result.unexpected_keys
    with torch.no_grad():
        ref.attn_mask_probs.zero_()  # EoMT masks attention at inference while these are > 0; VidEoMT never
    return ref


@torch.no_grad()
def eomt_video(eomt, model: VideoMT, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VidEoMT through transformers' EoMT-DINOv3, video by video, frame by frame.

    pixels (B, T, 3, S, S) at its stored size -> class, mask logits (B, T, ...). Frame t >= 1 runs
    with ``query.weight`` = query_updater(O_{t-1}) + E; O_{t-1}: the first Q tokens its last
    layer gave for frame t - 1 (after its final LayerNorm when ``norm_queries``).
    """
    cfg = model.config
    B, T = pixels.shape[:2]
    E = eomt.query.weight.detach().clone()
    W, b = model.query_updater.weight, model.query_updater.bias
    grabbed = []
    hook = eomt.layers[-1].register_forward_hook(lambda module, args, out: grabbed.append(out))
    classes, masks = [], []
    try:
        for v in range(B):
            O = None
            for t in range(T):
                eomt.query.weight.copy_(E if O is None else F.linear(O, W, b) + E)
                out = eomt(pixel_values=pixels[v, t][None])
                x = grabbed[-1]
                O = (eomt.layernorm(x) if cfg.norm_queries else x)[0, : cfg.num_queries]
                classes.append(out.class_queries_logits[0])
                masks.append(out.masks_queries_logits[0])
    finally:
        hook.remove()
        eomt.query.weight.copy_(E)
    return torch.stack(classes).unflatten(0, (B, T)), torch.stack(masks).unflatten(0, (B, T))


@torch.no_grad()
def reference_video(vit: DINOv3ViTModel, model: VideoMT, pixels: torch.Tensor, norm_queries: bool | None = None):
    """VidEoMT from DESIGN 2.3 / 2.5 on transformers' DINOv3 modules, at any size: its embeddings,
    rotary tables, layers and final norm; the query stage and heads as plain functional ops on our
    weights. pixels (T, 3, H, W) of one video -> class (T, Q, K + 1), mask logits (T, Q, H/4, W/4)."""
    cfg = model.config
    norm_queries = cfg.norm_queries if norm_queries is None else norm_queries
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    Q, start, E = cfg.num_queries, cfg.query_start, sd["queries.weight"]
    layers = vit.model.layer
    rope = vit.rope_embeddings(pixels)
    hidden = vit.embeddings(pixels)
    for layer in layers[:start]:
        hidden = layer(hidden, position_embeddings=rope)
    grid = (pixels.shape[-2] // cfg.patch_size, pixels.shape[-1] // cfg.patch_size)
    classes, masks, O = [], [], None
    for t in range(pixels.shape[0]):
        queries = E if O is None else F.linear(O, sd["query_updater.weight"], sd["query_updater.bias"]) + E
        x = torch.cat([queries[None], hidden[t : t + 1]], dim=1)  # [queries | CLS | registers | patches]
        for layer in layers[start:]:
            x = layer(x, position_embeddings=rope)  # it rotates only the last h*w tokens
        y = vit.norm(x)[0]
        O = y[:Q] if norm_queries else x[0, :Q]
        classes.append(F.linear(y[:Q], sd["class_head.weight"], sd["class_head.bias"]))
        e = y[:Q]
        for i in (0, 2, 4):
            e = F.linear(e, sd[f"mask_head.{i}.weight"], sd[f"mask_head.{i}.bias"])
            e = F.gelu(e) if i < 4 else e
        f = y[Q + 1 + cfg.num_register_tokens :].t().reshape(1, -1, *grid)
        for j in range(cfg.num_upscale_blocks):
            k = f"upscale.{j}."
            f = F.gelu(F.conv_transpose2d(f, sd[k + "conv1.weight"], sd[k + "conv1.bias"], stride=2))
            f = F.conv2d(f, sd[k + "conv2.weight"], padding=1, groups=f.shape[1])
            f = F.layer_norm(f.permute(0, 2, 3, 1), f.shape[1:2], sd[k + "norm.weight"], sd[k + "norm.bias"],
                             eps=cfg.upscale_norm_eps).permute(0, 3, 1, 2)
        masks.append(torch.einsum("qc,chw->qhw", e, f[0]))
    return torch.stack(classes), torch.stack(masks)


# --------------------------------------------------------------------------- the network


CONFIGS = {
    "k2-Q8-h2-R4": dict(),
    "k1-Q5-h4-R0-norm": dict(num_layers=3, num_heads=4, num_query_blocks=1, num_queries=5, num_classes=3,
                             num_register_tokens=0, norm_queries=True),
    "k3=L-Q12-h1-R2-C32-norm": dict(hidden_size=32, num_layers=3, num_heads=1, num_query_blocks=3, num_queries=12,
                                    num_classes=9, num_register_tokens=2, image_size=48, norm_queries=True),
    "k2-Q3-h3-R1-L5-mlp2-theta50": dict(hidden_size=96, num_layers=5, num_heads=3, num_query_blocks=2,
                                        num_queries=3, num_classes=7, num_register_tokens=1, image_size=80,
                                        mlp_ratio=2, rope_theta=50.0),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_video_matches_eomt_dinov3_with_propagation(name):
    """Batch 2, 3 frames at the stored size: frame 0 is EoMT-DINOv3 itself (all videos in one call),
    later frames EoMT-DINOv3 with the propagated queries; our state is O_{T-1} as the reference takes it."""
    model = dinov3(seed=len(name), **CONFIGS[name])
    cfg = model.config
    eomt = eomt_dinov3(model)
    clip = frames(2, 3, cfg.image_size, cfg.image_size, seed=1)
    out, state = model(clip)
    first = eomt(pixel_values=clip[:, 0])
    close(out.class_logits[:, 0], first.class_queries_logits)
    close(out.mask_logits[:, 0], first.masks_queries_logits)
    ref_cls, ref_masks = eomt_video(eomt, model, clip)
    close(out.class_logits, ref_cls)
    close(out.mask_logits, ref_masks)
    assert state.shape == (2, cfg.num_queries, cfg.hidden_size)
    # The other propagation is measurably different, so the comparison can fail.
    flipped = model.config.replace(norm_queries=not cfg.norm_queries)
    other = VideoMT(flipped).eval()
    other.load_state_dict(model.state_dict())
    wrong, _ = other(clip)
    assert torch.equal(wrong.class_logits[:, 0], out.class_logits[:, 0])
    assert far(wrong.class_logits[:, 1:], ref_cls[:, 1:])


@pytest.fixture(scope="module")
def backbone_pair():
    model = dinov3(seed=7, hidden_size=32, num_layers=2, num_heads=1, num_query_blocks=1, image_size=640,
                   use_mask_token=True)
    return model, dinov3_vit(model)


@pytest.mark.parametrize("size", [(640, 640), (448, 800), (80, 48), (48, 112)])
@torch.no_grad()
def test_backbone_matches_dinov3_vit_at_any_size(backbone_pair, size):
    """Every block and the final norm, RoPE from the input's grid with nothing resampled."""
    model, ref = backbone_pair
    pixels = frames(1, 2, *size, seed=3)[0]
    grid = (size[0] // 16, size[1] // 16)
    theirs = {}
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: theirs.__setitem__(i, o))
             for i, layer in enumerate(ref.model.layer)]
    try:
        final = ref(pixel_values=pixels).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
    tokens = model.embed(pixels)
    close(tokens, ref.embeddings(pixels))
    rotary = model.rotary(grid)
    for i, block in enumerate(model.blocks):
        tokens = block(tokens, rotary)
        close(tokens, theirs[i])
    close(model.norm(tokens), final)
    # A patch mask puts the mask token in place (DINOv3 adds no position to it).
    mask = torch.rand(2, grid[0] * grid[1], generator=torch.Generator().manual_seed(4)) < 0.3
    close(model.embed(pixels, mask), ref.embeddings(pixels, bool_masked_pos=mask))


@torch.no_grad()
def test_rotary_tables_are_transformers_and_leave_prefix_tokens_alone():
    from transformers.models.dinov3_vit.modeling_dinov3_vit import (
        DINOv3ViTRopePositionEmbedding,
        apply_rotary_pos_emb,
    )

    grid, head_dim = (3, 7), 32
    rope = DINOv3ViTRopePositionEmbedding(DINOv3ViTConfig(hidden_size=64, num_attention_heads=2, patch_size=16)).eval()
    cos, sin = rope(torch.zeros(1, 3, 48, 112))
    ours = Rotary.for_grid(grid, head_dim, 100.0)
    assert torch.equal(ours.cos, cos) and torch.equal(ours.sin, sin) and ours.cos.shape == (21, head_dim)
    q = torch.randn(2, 2, 10 + 21, head_dim)  # (B, heads, tokens, d); 10 prefix tokens: queries, CLS, registers
    k = torch.randn(2, 2, 10 + 21, head_dim)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos, sin)
    ours_q, ours_k = ours.rotate(q), ours.rotate(k)
    close(ours_q, ref_q)
    close(ours_k, ref_k)
    assert torch.equal(ours_q[:, :, :10], q[:, :, :10])
    assert not torch.equal(ours_q[:, :, 10:], q[:, :, 10:])


@pytest.mark.parametrize("norm_queries", [False, True])
@torch.no_grad()
def test_whole_network_at_448x800_matches_the_design_reference(norm_queries):
    """Non-square, off the stored size: ours against VidEoMT written on DINOv3ViTModel's modules,
    3 frames; then the other propagation, to show the comparison can fail."""
    model = dinov3(seed=11, hidden_size=32, num_layers=3, num_heads=1, num_query_blocks=2, image_size=640,
                   norm_queries=norm_queries)
    vit = dinov3_vit(model)
    pixels = frames(1, 3, 448, 800, seed=12)
    out, _ = model(pixels)
    assert out.mask_logits.shape == (1, 3, 8, 112, 200)
    ref_cls, ref_masks = reference_video(vit, model, pixels[0])
    close(out.class_logits[0], ref_cls)
    close(out.mask_logits[0], ref_masks)
    bad_cls, _ = reference_video(vit, model, pixels[0], norm_queries=not norm_queries)
    close(out.class_logits[0, 0], bad_cls[0])
    assert far(out.class_logits[0, 1:], bad_cls[1:])


@pytest.mark.parametrize("norm_queries", [False, True])
@pytest.mark.parametrize("chunk", [1, 2, 3])
@torch.no_grad()
def test_chunks_with_carried_state_equal_one_pass(chunk, norm_queries):
    model = dinov3(seed=3, norm_queries=norm_queries)
    clip = frames(2, 7, 64, 48, seed=4)
    whole, whole_state = model(clip)
    state, cls, masks = None, [], []
    for start in range(0, 7, chunk):
        out, state = model(clip[:, start : start + chunk], state)
        cls.append(out.class_logits)
        masks.append(out.mask_logits)
    close(torch.cat(cls, 1), whole.class_logits)
    close(torch.cat(masks, 1), whole.mask_logits)
    close(state, whole_state)
    step_state = None
    for t in range(7):
        step, step_state = model.step(clip[:, t], step_state)
        close(step.mask_logits, whole.mask_logits[:, t])
    close(step_state, whole_state)


@torch.no_grad()
def test_norm_queries_propagates_the_normed_tokens():
    model = dinov3(seed=5, norm_queries=True)
    clip = frames(2, 1, 64, 64, seed=6)
    rotary = model.rotary((4, 4))
    tokens = model.encode(model.embed(clip[:, 0]), rotary)
    normed, state = model.decode_step(tokens, None, rotary)
    assert torch.equal(state, normed[:, : model.config.num_queries])
    _, forward_state = model(clip)
    assert torch.equal(state, forward_state)
    raw = VideoMT(model.config.replace(norm_queries=False)).eval()
    raw.load_state_dict(model.state_dict())
    _, raw_state = raw(clip)
    assert far(raw_state, state)


def test_dinov3_stages_need_the_rotary_tables_and_the_family_is_checked():
    model = dinov3(seed=6)
    tokens = model.embed(torch.randn(1, 3, 64, 64))
    with pytest.raises(InputError, match=r"rotary tables.*model\.rotary"):
        model.encode(tokens)
    with pytest.raises(InputError, match="family 'dinov4'"):
        VideoMTConfig(family="dinov4")
    with pytest.raises(InputError, match="multiple of 4"):
        VideoMTConfig(hidden_size=36, num_heads=2, family="dinov3")
    assert VideoMTConfig(family="dinov3").layer_norm_eps == 1e-5
    assert VideoMTConfig().layer_norm_eps == 1e-6 and VideoMTConfig().upscale_norm_eps == 1e-6
    assert model.pos_embed is None and "pos_embed" not in model.state_dict()
    assert {"blocks.0.attn.q_bias", "blocks.0.attn.v_bias"} <= set(model.state_dict())
    assert model.blocks[0].attn.qkv.bias is None  # no key bias anywhere
    large = preset("large-dinov3")
    assert (large.family, large.hidden_size, large.num_layers, large.num_heads, large.num_query_blocks) == (
        "dinov3", 1024, 24, 16, 4)


# --------------------------------------------------------------------------- checkpoints


def official_from_transformers(seed: int, fused: bool = False, **changes):
    """An official-format DINOv3 state dict from random weights, and the model it must load as.

    The backbone is a random transformers DINOv3ViTModel renamed as the official code does
    (``embeddings`` -> ``patch_embed`` without its mask token, ``model.layer`` -> ``blocks``, under
    ``backbone.encoder.backbone.``); ``fused`` then joins each block's q, k, v as its FUSED_QKV
    option does (the missing key bias filled with zeros). The query stage and heads are random
    tensors under the official head names. Returns (state dict, the config it describes).
    """
    # heads = C / 64 as in every release: official files store no head count (unless inv_freq).
    cfg = VideoMTConfig(**{**TINY3, "num_heads": 1, "image_size": 640, **changes})
    torch.manual_seed(seed)
    vit = perturb_(DINOv3ViTModel(DINOv3ViTConfig(**vit_config(cfg))), seed).eval()  # eval: no RoPE jitter
    state = {}
    for key, value in vit.state_dict().items():
        if key == "embeddings.mask_token":
            continue
        for theirs, official in (("embeddings.", "patch_embed."), ("model.layer.", "blocks.")):
            if key.startswith(theirs):
                key = official + key[len(theirs):]
        state[OFFICIAL + key] = value.clone()
    if fused:
        for i in range(cfg.num_layers):
            a = f"{OFFICIAL}blocks.{i}.attention."
            weights = [state.pop(f"{a}{p}_proj.weight") for p in "qkv"]
            q_bias, v_bias = state.pop(f"{a}q_proj.bias"), state.pop(f"{a}v_proj.bias")
            state[a + "qkv_proj.weight"] = torch.cat(weights)
            state[a + "qkv_proj.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
    gen = torch.Generator().manual_seed(seed + 1)
    C, Q, K = cfg.hidden_size, cfg.num_queries, cfg.num_classes
    shapes = {"q.weight": (Q, C), "query_updater.weight": (C, C), "query_updater.bias": (C,),
              "class_head.weight": (K + 1, C), "class_head.bias": (K + 1,)}
    for j in (0, 2, 4):
        shapes |= {f"mask_head.{j}.weight": (C, C), f"mask_head.{j}.bias": (C,)}
    for j in range(2):
        shapes |= {f"upscale.{j}.conv1.weight": (C, C, 2, 2), f"upscale.{j}.conv1.bias": (C,),
                   f"upscale.{j}.conv2.weight": (C, 1, 3, 3), f"upscale.{j}.norm.weight": (C,),
                   f"upscale.{j}.norm.bias": (C,)}
    for key, shape in shapes.items():
        state["backbone." + key] = 0.3 * torch.randn(shape, generator=gen)
    state["backbone.attn_mask_probs"] = torch.ones(cfg.num_query_blocks)
    state["criterion.empty_weight"] = torch.ones(K + 1)
    return state, cfg, vit


@pytest.mark.parametrize("fused", [False, True], ids=["q-k-v", "fused-qkv"])
@torch.no_grad()
def test_official_file_loads_converts_and_round_trips(tmp_path, fused):
    from typer.testing import CliRunner

    from videomt_cli import cli

    state, cfg, vit = official_from_transformers(seed=1, fused=fused)
    torch.save({"model": state}, tmp_path / "official.pth")
    loaded = checkpoint.load_model(tmp_path / "official.pth")
    assert loaded.config == cfg and loaded.report.family == "dinov3"
    assert "criterion.empty_weight" in loaded.report.ignored
    assert any("norm_queries" in note for note in loaded.report.notes)  # what was assumed, said
    model = loaded.model
    # The backbone is the transformers model the keys came from.
    pixels = frames(1, 2, 48, 80, seed=2)[0]
    tokens, rotary = model.embed(pixels), model.rotary((3, 5))
    for block in model.blocks:
        tokens = block(tokens, rotary)
    close(model.norm(tokens), vit(pixel_values=pixels).last_hidden_state)
    # The heads: backbone.q.weight -> our queries, and so on.
    assert torch.equal(model.queries.weight, state["backbone.q.weight"])
    assert torch.equal(model.mask_head[4].bias, state["backbone.mask_head.4.bias"])

    # videomt convert -> our single file, which loads as the same network.
    out = tmp_path / "model.safetensors"
    result = CliRunner().invoke(cli.app, ["convert", str(tmp_path / "official.pth"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    again = checkpoint.load_model(out)
    assert again.config == cfg and again.report.source_format == "videomt" and again.report.ok
    clip = frames(2, 3, 64, 96, seed=3)
    a, sa = model(clip)
    b, sb = again.model(clip)
    assert torch.equal(a.class_logits, b.class_logits) and torch.equal(a.mask_logits, b.mask_logits)
    assert torch.equal(sa, sb)
    # And back to the official layout, in the same q/k/v form, key for key.
    back = checkpoint.save_official(again.model, tmp_path / "back.pth", fused_qkv=fused)
    written = torch.load(back, weights_only=True)["model"]
    assert set(written) == set(state) - {"criterion.empty_weight"}
    for key, value in written.items():
        assert torch.equal(value, state[key]), key

    # A folder output: there is no Hugging Face DINOv3 VidEoMT class, and the user is told so.
    result = CliRunner().invoke(cli.app, ["convert", str(tmp_path / "official.pth"), "-o", str(tmp_path / "hf")])
    assert result.exit_code == 1 and isinstance(result.exception, CheckpointError)  # main() prints it red
    assert "no DINOv3 VidEoMT class" in str(result.exception) and "-o NAME.safetensors" in str(result.exception)
    with pytest.raises(CheckpointError, match="no DINOv3 VidEoMT class"):
        checkpoint.save_hf(model, tmp_path / "hf2")


@torch.no_grad()
def test_our_format_keeps_family_norm_queries_and_eps(tmp_path):
    original = dinov3(seed=8, norm_queries=True, rope_theta=80.0, use_mask_token=True, image_size=96)
    path = checkpoint.save(original, tmp_path / "m.safetensors", labels=list("abcde"))
    loaded = checkpoint.load_model(path)
    assert loaded.config == original.config and loaded.labels == list("abcde")
    assert loaded.report.family == "dinov3" and loaded.report.ok
    clip = frames(1, 3, 64, 64, seed=9)
    assert torch.equal(loaded.model(clip)[0].mask_logits, original(clip)[0].mask_logits)
    # A config written before DINOv3 (no family, one eps) still reads as the DINOv2 it was.
    old = {k: v for k, v in preset("tiny").to_dict().items()
           if k not in ("family", "norm_queries", "rope_theta", "upscale_norm_eps")}
    old["layer_norm_eps"] = 1e-6
    assert VideoMTConfig.from_dict(old) == preset("tiny")


def test_families_are_detected_from_the_keys(tmp_path):
    from conftest import make_model

    v2 = make_model(seed=1, use_mask_token=True)
    v3 = dinov3(seed=2, use_mask_token=True)
    official3, _, _ = official_from_transformers(seed=3)
    fused3, _, _ = official_from_transformers(seed=3, fused=True)
    cases = {
        "dinov2 official": (checkpoint.from_our_keys(v2.state_dict(), "official"), "dinov2"),
        "dinov2 hf": (checkpoint.from_our_keys(v2.state_dict(), "hf"), "dinov2"),
        "dinov2 ours": (v2.state_dict(), "dinov2"),
        "dinov3 official": (official3, "dinov3"),
        "dinov3 official fused": (fused3, "dinov3"),
        "dinov3 ours": (v3.state_dict(), "dinov3"),
        "dinov3 eomt names": (checkpoint.from_our_keys(v3.state_dict(), "hf", family="dinov3"), "dinov3"),
    }
    for name, (state, family) in cases.items():
        assert checkpoint.detect_family(state) == family, name
        assert checkpoint.config_from_state(state).family == family, name
    # The DINOv2 path is unchanged: an official DINOv2 file still loads as DINOv2, exactly.
    path = checkpoint.save_official(v2, tmp_path / "v2.pth")
    loaded = checkpoint.load_model(path)
    assert loaded.config.family == "dinov2" and loaded.config.layer_norm_eps == 1e-6
    assert not loaded.report.notes


def test_a_mixed_file_is_an_error_naming_keys_of_both(tmp_path):
    from conftest import make_model

    v2 = checkpoint.from_our_keys(make_model(seed=1).state_dict(), "official")
    v3, _, _ = official_from_transformers(seed=2)
    mixed = dict(v3)
    mixed[OFFICIAL + "pos_embed"] = v2[OFFICIAL + "pos_embed"]
    mixed[OFFICIAL + "blocks.0.attn.qkv.weight"] = v2[OFFICIAL + "blocks.0.attn.qkv.weight"]
    torch.save({"model": mixed}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_model(tmp_path / "mixed.pth")
    text = str(info.value)
    assert "mixes two backbones" in text and "DINOv2 keys (backbone.encoder.backbone.pos_embed" in text, text
    assert "blocks.0.attn.qkv.weight" in text and "DINOv3 keys (backbone.encoder.backbone.patch_embed." in text


@pytest.mark.parametrize("drop, expected", [
    (OFFICIAL + "blocks.1.attention.k_proj.weight", r"missing.*blocks\.1\.attention\.k_proj\.weight"),
    (OFFICIAL + "blocks.2.layer_scale2.lambda1", r"missing.*blocks\.2\.layer_scale2\.lambda1"),
    (OFFICIAL + "patch_embed.cls_token", r"dinov3.*patch_embed\.cls_token.*missing"),
    ("backbone.query_updater.weight", r"missing.*backbone\.query_updater\.weight"),
])
def test_a_truncated_file_is_an_error_naming_the_keys(tmp_path, drop, expected):
    state, _, _ = official_from_transformers(seed=4)
    del state[drop]
    torch.save({"model": state}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=expected):
        checkpoint.load_model(tmp_path / "cut.pth")


def test_key_bias_and_rotary_buffer_are_checked(tmp_path):
    state, cfg, _ = official_from_transformers(seed=5, fused=True)
    # inv_freq: derived, so accepted when it matches (and it tells the head width) ...
    head_dim = cfg.hidden_size // cfg.num_heads
    inv_freq = 1 / 100.0 ** torch.arange(0, 1, 4 / head_dim)
    good = dict(state, **{OFFICIAL + "rope_embeddings.inv_freq": inv_freq})
    torch.save({"model": good}, tmp_path / "good.pth")
    loaded = checkpoint.load_model(tmp_path / "good.pth")
    assert OFFICIAL + "rope_embeddings.inv_freq" in loaded.report.ignored
    assert any("inv_freq" in note and "matches" in note for note in loaded.report.notes)
    # ... and for a head width other than 64 the rule heads = C / 64 would get wrong.
    four, cfg4, _ = official_from_transformers(seed=5, num_heads=4)
    four[OFFICIAL + "rope_embeddings.inv_freq"] = 1 / 100.0 ** torch.arange(0, 1, 4 / 16)
    assert checkpoint.config_from_state(four).num_heads == 4 == cfg4.num_heads
    # A rotary buffer of another theta, or a non-zero key bias, cannot be represented: named.
    bad = dict(state, **{OFFICIAL + "rope_embeddings.inv_freq": 1 / 50.0 ** torch.arange(0, 1, 4 / head_dim)})
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"invalid.*rope_embeddings\.inv_freq.*theta 100"):
        checkpoint.load_model(tmp_path / "bad.pth")
    key = OFFICIAL + "blocks.1.attention.qkv_proj.bias"
    biased = dict(state)
    biased[key] = biased[key].clone()
    biased[key][cfg.hidden_size + 3] = 0.5
    torch.save({"model": biased}, tmp_path / "biased.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attention\.qkv_proj\.bias.*non-zero key bias"):
        checkpoint.load_model(tmp_path / "biased.pth")
    # A separate zero k_proj.bias (a loader that gave the key projection a bias) is accepted.
    separate, _, _ = official_from_transformers(seed=5)
    separate[OFFICIAL + "blocks.0.attention.k_proj.bias"] = torch.zeros(cfg.hidden_size)
    torch.save({"model": separate}, tmp_path / "kbias.pth")
    assert OFFICIAL + "blocks.0.attention.k_proj.bias" in checkpoint.load_model(tmp_path / "kbias.pth").report.ignored


# --------------------------------------------------------------------------- registry


RELEASED = {
    "videomt-l-ytvis19-dinov3": ("yt_2019_dinov3_68.9.pth", "instance", "ytvis2019", 480, 40, 640, False),
    "videomt-l-ytvis21-dinov3": ("yt_2021_dinov3_63.2.pth", "instance", "ytvis2021", 480, 40, 640, False),
    "videomt-l-ytvis22-dinov3": ("yt_2022_dinov3_42.8.pth", "instance", "ytvis2021", 480, 40, 640, False),
    "videomt-l-vipseg-dinov3": ("vipsseg_dinov3_55.1_47.1.pth", "panoptic", "vipseg", 720, 124, 1280, True),
    "videomt-l-vspw-dinov3": ("vspw_dinov3_94.4_64.0.pth", "semantic", "vspw", 720, 124, 1280, True),
}


def test_the_five_released_dinov3_checkpoints_are_registered():
    for name, (file, task, labels, min_size, K, image_size, norm) in RELEASED.items():
        e = registry.get(name)
        assert e is not None, name
        assert (e.hub, e.hub_file, e.official) == ("tue-mps/VidEoMT", f"dinov3_online/{file}", file)
        assert (e.task, e.labels, e.min_size) == (task, labels, min_size)
        assert e.config["family"] == "dinov3" and e.config["num_classes"] == K
        assert e.config["image_size"] == image_size and e.config["norm_queries"] is norm
        assert registry.get(e.hub_ref) == e and registry.by_official_name(file) == e and registry.match(file) == e
        VideoMTConfig(**{**preset("large-dinov3").to_dict(), **e.config})  # a valid config
    # The shared repo id names no single model.
    assert registry.get("tue-mps/VidEoMT") is None and registry.match("VidEoMT") is None


def test_a_released_dinov3_model_offline_names_the_file_and_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_model("videomt-l-vipseg-dinov3")
    text = str(info.value)
    assert "dinov3_online/vipsseg_dinov3_55.1_47.1.pth of tue-mps/VidEoMT" in text, text
    assert "offline" in text and "--model PATH" in text and "hf download tue-mps/VidEoMT" in text


def test_a_local_copy_of_a_release_gets_its_registry_config(tmp_path):
    """Found by file name: its entry's config is applied (norm_queries, image_size) and checked
    (a tiny file named like the ViT-L release is refused, naming what differs)."""
    state, _, _ = official_from_transformers(seed=6, num_classes=123)
    torch.save({"model": state}, tmp_path / "vipsseg_dinov3_55.1_47.1.pth")
    with pytest.raises(CheckpointError, match=r"hidden_size: the file has 64, the registry entry "
                                              r"videomt-l-vipseg-dinov3 says 1024"):
        checkpoint.load_model(tmp_path / "vipsseg_dinov3_55.1_47.1.pth")
    # What the entry sets, config_overrides sets for any file; what the file tells, it checks.
    torch.save({"model": state}, tmp_path / "mine.pth")
    loaded = checkpoint.load_model(tmp_path / "mine.pth", config_overrides={"norm_queries": True, "image_size": 1280})
    assert loaded.config.norm_queries and loaded.config.image_size == 1280
    with pytest.raises(CheckpointError, match="num_classes: the file has 123"):
        checkpoint.load_model(tmp_path / "mine.pth", config_overrides={"num_classes": 124})
