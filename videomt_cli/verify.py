"""Per-stage parity report: our network against the transformers reference, plus our own invariants.

``videomt verify --ckpt PATH|ID`` loads a checkpoint, builds a seeded random clip of ``batch``
videos of ``frames`` frames and compares, stage by stage:

Reference rows (``transformers.VideomtForUniversalSegmentation`` with identical weights, only at
the checkpoint's stored square ``image_size``, the only size the reference accepts):

- ``embeddings``: the tokens ``[CLS, registers, patches]`` entering the first block;
- ``layer i`` for every block: the first L - k blocks run once on every frame of the clip
  (B*T, P, C); the last k blocks run once per frame on (B, Q + P, C) with the propagated queries:
  every call is compared, the row reports the worst;
- ``frame t class`` / ``frame t mask``: the class and mask logits of every frame (frames after the
  first check query propagation);
- ``masked patches (...)`` when the model has a mask token: the same clip with a seeded random
  patch mask (ours ``model(frames, patch_mask=...)``, the reference's embeddings given
  ``bool_masked_pos`` through a pre-hook), compared at the embeddings and at the logits.

DINOv3 models (``config.family == "dinov3"``; transformers has no DINOv3 VidEoMT, so the
references are its DINOv3 backbone and its EoMT on DINOv3, driven to do VidEoMT's propagation):

- ``backbone HxW embeddings`` / ``layer i`` / ``final norm``: our tokens, every block run on the
  tokens without queries, and the final LayerNorm, against ``transformers.DINOv3ViTModel`` with
  our backbone weights, at the stored square size and at a non-square one (0.7 x 1.25 of it,
  448x800 for 640; or only at ``size`` when one is given): RoPE from any grid, no resampling;
- ``embeddings``, ``layer i``, ``frame t class`` / ``frame t mask`` (stored square size only):
  ``transformers.EomtDinov3ForUniversalSegmentation`` with our weights and its ``attn_mask_probs``
  zeroed (no masked attention: VidEoMT's inference), run once per frame. Frame 0 of every video in
  one call with its learned queries (that IS VidEoMT's first frame); every later frame of each
  video alone, with its ``query.weight`` set to query_updater(O_{t-1}) + E, O_{t-1} the query
  tokens its last layer gave for the previous frame (taken by a forward hook; after its final
  LayerNorm when ``norm_queries``). ``query_updater`` is the one module transformers lacks: a
  plain Linear with our weights. Its upscale LayerNorm2d has a fixed eps of 1e-6, ours'
  ``upscale_norm_eps``: another value skips these rows with the reason.

Invariant rows (ours only, at any size):

- ``chunked c=1``, ``chunked c=2``, ``chunked c=T (all frames)``: the clip fed in chunks of c frames,
  the state carried from call to call, equals one pass;
- ``batch vs single``: every video of the batch run alone equals its slice of the batched run;
- without a reference, ``masked patches (embeddings, no reference)``: masked patches are the mask
  token plus the position embedding, the others unchanged.

Tolerances. Everything runs in float32 on CPU under ``torch.no_grad()``. A row passes when

    max |ours - ref| <= tol,   tol = atol + rtol * max |ref|

over every element the row covers (``ref`` is the reference's tensor, or the one-pass run for the
invariants). We use ``atol = 1e-5`` and ``rtol = 1e-4`` for every row. The two implementations do
the same float32 operations in nearly the same order (ours fuses q, k, v into one matmul and runs
the heads once per chunk instead of once per frame). Measured on this project's CPUs with
random ViT-S (640x640) and ViT-L (24 blocks, 224x224) weights, the reference rows were bitwise
equal, and the largest difference anywhere (``batch vs single``, where matmul shapes change) was
1e-6 of max |ref|: rtol leaves a 100x margin for other CPUs and BLAS builds. Scaling by max |ref| keeps the
test meaningful for DINOv2's large-norm outlier tokens (hidden states in the hundreds) without
letting an error in ordinary tokens pass: a wrong weight, a missing LayerScale or a wrong
propagation shows up as relative errors of 1e-2 and more. The invariants compare our own code
with itself; chunking and batching only change matmul shapes, and they use the same tolerance.
"""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from videomt_cli.modeling import checkpoint
from videomt_cli.errors import InputError
import torch.nn.functional as F

from videomt_cli.modeling.model import VideoMT, VideoMTOutput, resample_pos_embed

ATOL = 1e-5
RTOL = 1e-4

TRANSFORMERS_MISSING = "transformers is not installed (pip install transformers==5.23.0)"


@dataclass
class StageRow:
    """One compared stage: the worst absolute difference, the mean one, and the bound it must meet."""

    stage: str
    max_abs: float
    mean_abs: float
    tol: float
    ok: bool


@dataclass
class VerifyReport:
    rows: list[StageRow]
    reference_skipped: str | None  # why the reference rows are absent, or None when they ran
    size: tuple[int, int]
    frames: int

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(row.ok for row in self.rows)

    @property
    def failures(self) -> list[StageRow]:
        return [row for row in self.rows if not row.ok]

    def lines(self) -> list[str]:
        """A plain-text table, one line per row, for logs and the CLI."""
        width = max([len(r.stage) for r in self.rows] + [5])
        out = [f"{'stage':<{width}}  {'max |diff|':>10}  {'mean |diff|':>11}  {'tol':>9}  result"]
        for r in self.rows:
            out.append(f"{r.stage:<{width}}  {r.max_abs:>10.3g}  {r.mean_abs:>11.3g}  {r.tol:>9.3g}  "
                       f"{'ok' if r.ok else 'FAIL'}")
        if self.reference_skipped:
            out.append(f"reference skipped: {self.reference_skipped}")
        return out


# ----------------------------------------------------------------------------- comparing tensors


class _Diff:
    """Accumulates |ours - ref| over any number of tensor pairs (one row)."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.ref_max = 0.0
        self.broken = False  # a shape or call-count mismatch: the row fails with inf

    def add(self, ours: Tensor, ref: Tensor) -> None:
        if tuple(ours.shape) != tuple(ref.shape):
            self.broken = True
            return
        ours, ref = ours.detach().float(), ref.detach().float()
        diff = (ours - ref).abs()
        if diff.numel() == 0:
            return
        self.max_abs = max(self.max_abs, _item(diff.max()))
        self.sum_abs += float(diff.sum(dtype=torch.float64))
        self.count += diff.numel()
        self.ref_max = max(self.ref_max, _item(ref.abs().max()))

    def row(self, stage: str, atol: float = ATOL, rtol: float = RTOL) -> StageRow:
        tol = atol + rtol * self.ref_max
        if self.broken or self.count == 0:
            return StageRow(stage, math.inf, math.inf, tol, False)
        max_abs = self.max_abs
        mean_abs = self.sum_abs / self.count
        ok = math.isfinite(max_abs) and max_abs <= tol  # NaN anywhere fails
        return StageRow(stage, max_abs, mean_abs, tol, ok)


def _item(x: Tensor) -> float:
    value = float(x)
    return value if not math.isnan(value) else math.inf


def compare(stage: str, ours: Tensor | list[Tensor], ref: Tensor | list[Tensor],
            atol: float = ATOL, rtol: float = RTOL) -> StageRow:
    """One row from a tensor pair or from two equally long lists of them."""
    ours_list = ours if isinstance(ours, (list, tuple)) else [ours]
    ref_list = ref if isinstance(ref, (list, tuple)) else [ref]
    diff = _Diff()
    if len(ours_list) != len(ref_list):
        diff.broken = True
    for a, b in zip(ours_list, ref_list):
        diff.add(a, b)
    return diff.row(stage, atol, rtol)


# ----------------------------------------------------------------------------- the reference


def build_reference(model: VideoMT):
    """``transformers.VideomtForUniversalSegmentation`` with ``model``'s weights, float32, eval.

    Raises ImportError when transformers (or its VidEoMT) is unavailable. Weights are mapped with
    the checkpoint key table; the only reference keys we may leave untouched are its training
    buffers (and the mask token when ours has none), anything else is a bug and raises.
    """
    import transformers

    try:
        from transformers import VideomtConfig, VideomtForUniversalSegmentation
    except ImportError:
        raise ImportError(
            f"transformers {transformers.__version__} has no VidEoMT (pip install transformers==5.23.0)"
        ) from None

    hf_config = VideomtConfig(**checkpoint.config_to_hf(model.config))
    ref = VideomtForUniversalSegmentation(hf_config)
    state = checkpoint.from_our_keys({k: v.detach() for k, v in model.state_dict().items()}, "hf")
    result = ref.load_state_dict(state, strict=False)
    allowed = {"attn_mask_probs", "criterion.empty_weight"}
    if not model.config.use_mask_token:
        allowed.add("embeddings.mask_token")
    missing = sorted(set(result.missing_keys) - allowed)
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"The key table does not cover the transformers model: missing {missing}, "
            f"unexpected {sorted(result.unexpected_keys)}."
        )
    return ref.to(device="cpu", dtype=torch.float32).eval()


# ----------------------------------------------------------------------------- capturing stages


@contextmanager
def _record_ours(model: VideoMT, record: dict[str, list[Tensor]]):
    """Collect ours' ``embed`` output and every block call's output, in call order."""
    original_embed = model.embed
    handles = []

    def embed(*args, **kwargs):
        out = original_embed(*args, **kwargs)
        record["embeddings"].append(out)
        return out

    def hook(i):
        return lambda module, inputs, output: record[f"layer {i}"].append(output)

    model.embed = embed  # an instance attribute shadows the method; removed below
    try:
        for i, block in enumerate(model.blocks):
            handles.append(block.register_forward_hook(hook(i)))
        yield record
    finally:
        del model.embed
        for h in handles:
            h.remove()


@contextmanager
def _compare_reference(ref, ours: dict[str, list[Tensor]], diffs: dict[str, _Diff],
                       layers: bool = True, patch_mask: Tensor | None = None):
    """Hooks on the reference that compare each stage with ours' recorded one as it is produced.

    Comparing on the fly keeps only one model's activations in memory. ``patch_mask`` (B*T, N)
    is handed to the reference's embeddings as ``bool_masked_pos``.
    """
    calls: dict[str, int] = defaultdict(int)
    handles = []

    def hook(name):
        def fn(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            j = calls[name]
            calls[name] += 1
            recorded = ours.get(name, [])
            if j < len(recorded):
                diffs[name].add(recorded[j], out)
            else:
                diffs[name].broken = True
        return fn

    def inject_mask(module, args, kwargs):
        kwargs = dict(kwargs)
        kwargs["bool_masked_pos"] = patch_mask
        return args, kwargs

    try:
        if patch_mask is not None:
            handles.append(ref.embeddings.register_forward_pre_hook(inject_mask, with_kwargs=True))
        handles.append(ref.embeddings.register_forward_hook(hook("embeddings")))
        if layers:
            for i, layer in enumerate(ref.layers):
                handles.append(layer.register_forward_hook(hook(f"layer {i}")))
        yield
    finally:
        for h in handles:
            h.remove()
    for name, recorded in ours.items():  # ours ran a stage more often than the reference
        if (name == "embeddings" or layers) and calls[name] != len(recorded):
            diffs[name].broken = True


def _reference_logits(output, batch: int) -> tuple[Tensor, Tensor]:
    """The reference's frame-major (T*B, ...) class and mask logits -> batch-major (B, T, ...) like ours."""
    return tuple(x.unflatten(0, (-1, batch)).transpose(0, 1)
                 for x in (output.class_queries_logits, output.masks_queries_logits))


# ----------------------------------------------------------------------------- invariants


def _chunked(model: VideoMT, clip: Tensor, chunk: int) -> VideoMTOutput:
    state = None
    classes, masks = [], []
    for start in range(0, clip.shape[1], chunk):
        out, state = model(clip[:, start:start + chunk], state)
        classes.append(out.class_logits)
        masks.append(out.mask_logits)
    return VideoMTOutput(torch.cat(classes, 1), torch.cat(masks, 1))


def _compare_outputs(stage: str, ours: VideoMTOutput, ref: VideoMTOutput) -> StageRow:
    diff = _Diff()
    diff.add(ours.class_logits, ref.class_logits)
    diff.add(ours.mask_logits, ref.mask_logits)
    return diff.row(stage)


def _invariant_rows(model: VideoMT, clip: Tensor, one_pass: VideoMTOutput) -> list[StageRow]:
    T = clip.shape[1]
    rows = []
    for chunk in dict.fromkeys(c for c in (1, 2, T) if c <= T):
        name = f"chunked c={chunk}" + (" (all frames)" if chunk == T else "")
        rows.append(_compare_outputs(name, _chunked(model, clip, chunk), one_pass))
    singles = [model(clip[b:b + 1])[0] for b in range(clip.shape[0])]
    joined = VideoMTOutput(torch.cat([s.class_logits for s in singles]), torch.cat([s.mask_logits for s in singles]))
    rows.append(_compare_outputs("batch vs single", joined, one_pass))
    return rows


def _masked_self_row(model: VideoMT, clip: Tensor, mask: Tensor) -> StageRow:
    """Without a reference: masked patches become mask token + position embedding, others unchanged."""
    flat = clip.flatten(0, 1)
    p = model.config.patch_size
    grid = (flat.shape[-2] // p, flat.shape[-1] // p)
    plain = model.embed(flat)
    masked = model.embed(flat, mask)
    prefix = model.config.num_prefix_tokens
    filled = model.mask_token if model.pos_embed is None else model.mask_token + resample_pos_embed(model.pos_embed, grid)
    expected = plain.clone()
    expected[:, prefix:] = torch.where(mask.unsqueeze(-1), filled, plain[:, prefix:])
    return compare("masked patches (embeddings, no reference)", masked, expected)


# ----------------------------------------------------------------------------- verify


def _float_cpu(model: VideoMT) -> VideoMT:
    """``model`` itself when it is float32 on CPU, else a float32 CPU copy (the original is untouched)."""
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return model
    copy = VideoMT(model.config)
    copy.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()})
    return copy.eval()


def verify(loaded: checkpoint.Loaded | VideoMT, frames: int = 3, size: tuple[int, int] | None = None,
           seed: int = 0, batch: int = 2) -> VerifyReport:
    """Compare ``loaded``'s network with the transformers reference and check its own invariants.

    ``size`` = (H, W) defaults to the stored square ``image_size``; the reference runs only at
    that size, other sizes get the invariant rows alone and ``reference_skipped`` says why.
    """
    model = loaded.model if isinstance(loaded, checkpoint.Loaded) else loaded
    cfg = model.config
    H, W = size if size is not None else (cfg.image_size, cfg.image_size)
    p = cfg.patch_size
    if frames < 1 or batch < 1:
        raise InputError(f"verify needs at least one frame and one video; got frames={frames}, batch={batch}.")
    if H <= 0 or W <= 0 or H % p or W % p:
        raise InputError(f"verify size {H}x{W} must be positive multiples of the patch size {p}.")

    model = _float_cpu(model)
    generator = torch.Generator().manual_seed(seed)
    clip = torch.randn(batch, frames, 3, H, W, generator=generator)
    n_patches = (H // p) * (W // p)
    patch_mask = torch.rand(batch, frames, n_patches, generator=generator) < 0.3

    if cfg.family == "dinov3":
        return _verify_dinov3(model, clip, patch_mask, size is None, seed)

    rows: list[StageRow] = []
    reference_skipped = None
    ref = None
    if (H, W) != (cfg.image_size, cfg.image_size):
        reference_skipped = (f"the transformers reference only runs at the checkpoint's stored size "
                             f"{cfg.image_size}x{cfg.image_size}; this run uses {H}x{W}")
    else:
        try:
            ref = build_reference(model)
        except ImportError as e:
            if "pip install" in str(e):  # transformers without VidEoMT
                reference_skipped = str(e)
            elif (e.name or "").split(".")[0] == "transformers":
                reference_skipped = TRANSFORMERS_MISSING
            else:  # transformers is there but one of its imports is broken
                reference_skipped = f"transformers does not import ({e})"

    with torch.no_grad():
        # One pass of ours with every stage recorded.
        recorded: dict[str, list[Tensor]] = defaultdict(list)
        with _record_ours(model, recorded):
            one_pass, _ = model(clip)

        if ref is not None:
            diffs: dict[str, _Diff] = defaultdict(_Diff)
            with _compare_reference(ref, recorded, diffs):
                ref_out = ref(pixel_values_videos=clip)
            del recorded
            rows.append(diffs["embeddings"].row("embeddings"))
            rows.extend(diffs[f"layer {i}"].row(f"layer {i}") for i in range(cfg.num_layers))
            ref_class, ref_mask = _reference_logits(ref_out, batch)
            for t in range(frames):
                rows.append(compare(f"frame {t} class", one_pass.class_logits[:, t], ref_class[:, t]))
                rows.append(compare(f"frame {t} mask", one_pass.mask_logits[:, t], ref_mask[:, t]))
            del ref_out, ref_class, ref_mask
        else:
            del recorded

        rows.extend(_invariant_rows(model, clip, one_pass))

        if cfg.use_mask_token:
            if ref is not None:
                masked_record: dict[str, list[Tensor]] = defaultdict(list)
                with _record_ours(model, masked_record):
                    masked_out, _ = model(clip, patch_mask=patch_mask)
                diffs = defaultdict(_Diff)
                with _compare_reference(ref, {"embeddings": masked_record["embeddings"]}, diffs,
                                        layers=False, patch_mask=patch_mask.flatten(0, 1)):
                    ref_out = ref(pixel_values_videos=clip)
                rows.append(diffs["embeddings"].row("masked patches (embeddings)"))
                ref_class, ref_mask = _reference_logits(ref_out, batch)
                rows.append(compare("masked patches (class)", masked_out.class_logits, ref_class))
                rows.append(compare("masked patches (mask)", masked_out.mask_logits, ref_mask))
            else:
                rows.append(_masked_self_row(model, clip, patch_mask.flatten(0, 1)))

    return VerifyReport(rows=rows, reference_skipped=reference_skipped, size=(H, W), frames=frames)


# ----------------------------------------------------------------------------- DINOv3


class ReferenceUnavailable(Exception):
    """The reference cannot represent this model (the reason is the message)."""


def _reference_import_reason(e: ImportError) -> str:
    if (e.name or "").split(".")[0] == "transformers":
        return TRANSFORMERS_MISSING
    return f"transformers does not import ({e})"


def _dinov3_hf_state(model: VideoMT) -> dict[str, Tensor]:
    """Our weights under transformers' DINOv3 names (``checkpoint``'s "hf" column: EoMT-DINOv3)."""
    return checkpoint.from_our_keys({k: v.detach() for k, v in model.state_dict().items()}, "hf", family="dinov3")


def build_dinov3_backbone(model: VideoMT):
    """``transformers.DINOv3ViTModel`` holding our backbone weights, float32, eval.

    Raises ImportError without transformers. Its own layout: blocks under ``model.layer`` (from
    transformers 5.4), the final norm ``norm``; loaded strictly.
    """
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    cfg = model.config
    ref = DINOv3ViTModel(DINOv3ViTConfig(
        hidden_size=cfg.hidden_size, intermediate_size=cfg.hidden_size * cfg.mlp_ratio,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, patch_size=cfg.patch_size,
        image_size=cfg.image_size, num_register_tokens=cfg.num_register_tokens, rope_theta=cfg.rope_theta,
        layer_norm_eps=cfg.layer_norm_eps, hidden_act="gelu", layerscale_value=1.0, use_gated_mlp=False,
        query_bias=True, key_bias=False, value_bias=True, proj_bias=True, mlp_bias=True,
    ))
    state = {}
    for key, value in _dinov3_hf_state(model).items():
        if key.startswith("embeddings."):
            state[key] = value
        elif key.startswith("layers."):
            state["model.layer." + key[len("layers."):]] = value
        elif key.startswith("layernorm."):
            state["norm." + key[len("layernorm."):]] = value
    state.setdefault("embeddings.mask_token", torch.zeros(1, 1, cfg.hidden_size))
    ref.load_state_dict(state, strict=True)
    return ref.to(device="cpu", dtype=torch.float32).eval()


def build_eomt_dinov3(model: VideoMT):
    """``transformers.EomtDinov3ForUniversalSegmentation`` with our weights and ``attn_mask_probs``
    zeroed (so no masked attention, as VidEoMT at inference), float32, eval.

    Raises ImportError without transformers, ReferenceUnavailable when it cannot hold this model
    (an upscale LayerNorm2d eps other than its fixed 1e-6). Our ``query_updater`` and mask token
    have no place in it; every other key must load, else RuntimeError (a key table bug).
    """
    from transformers import EomtDinov3Config, EomtDinov3ForUniversalSegmentation

    cfg = model.config
    if cfg.upscale_norm_eps != 1e-6:
        raise ReferenceUnavailable(f"transformers' EoMT-DINOv3 fixes the upscale LayerNorm2d eps at 1e-6; this "
                                   f"model has upscale_norm_eps {cfg.upscale_norm_eps:g}")
    ref = EomtDinov3ForUniversalSegmentation(EomtDinov3Config(
        hidden_size=cfg.hidden_size, intermediate_size=cfg.hidden_size * cfg.mlp_ratio,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, patch_size=cfg.patch_size,
        image_size=cfg.image_size, num_register_tokens=cfg.num_register_tokens, num_blocks=cfg.num_query_blocks,
        num_queries=cfg.num_queries, num_labels=cfg.num_classes, num_upscale_blocks=cfg.num_upscale_blocks,
        layer_norm_eps=cfg.layer_norm_eps, hidden_act="gelu", layerscale_value=1.0, use_gated_mlp=False,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        query_bias=True, key_bias=False, value_bias=True, proj_bias=True, mlp_bias=True,
    ))
    state = {k: v for k, v in _dinov3_hf_state(model).items()
             if not k.startswith("query_updater.") and k != "embeddings.mask_token"}
    result = ref.load_state_dict(state, strict=False)
    missing = sorted(set(result.missing_keys) - {"attn_mask_probs", "criterion.empty_weight"})
    if missing or result.unexpected_keys:
        raise RuntimeError(f"The DINOv3 key table does not cover transformers' EoMT-DINOv3: missing {missing}, "
                           f"unexpected {sorted(result.unexpected_keys)}.")
    with torch.no_grad():
        ref.attn_mask_probs.zero_()
    return ref.to(device="cpu", dtype=torch.float32).eval()


def _dinov3_backbone_rows(model: VideoMT, ref, pixels: Tensor) -> list[StageRow]:
    """Our embed -> every block (no queries) -> final norm against DINOv3ViTModel on ``pixels`` (N, 3, H, W)."""
    cfg = model.config
    H, W = pixels.shape[-2:]
    grid = (H // cfg.patch_size, W // cfg.patch_size)
    theirs: dict[str, Tensor] = {}
    handles = [ref.embeddings.register_forward_hook(lambda m, i, o: theirs.__setitem__("embeddings", o)),
               ref.norm.register_forward_hook(lambda m, i, o: theirs.__setitem__("final norm", o))]
    for i, layer in enumerate(ref.model.layer):
        handles.append(layer.register_forward_hook(
            lambda m, i_, o, name=f"layer {i}": theirs.__setitem__(name, o[0] if isinstance(o, tuple) else o)))
    try:
        ref(pixel_values=pixels)
    finally:
        for h in handles:
            h.remove()
    rotary = model.rotary(grid)
    x = model.embed(pixels)
    ours = {"embeddings": x}
    for i, block in enumerate(model.blocks):
        x = block(x, rotary)
        ours[f"layer {i}"] = x
    ours["final norm"] = model.norm(x)
    return [compare(f"backbone {H}x{W} {name}", ours[name], theirs.get(name, torch.empty(0)))
            for name in ours]


def _eomt_dinov3_rows(model: VideoMT, ref, clip: Tensor, recorded: dict[str, list[Tensor]],
                      one_pass: VideoMTOutput) -> list[StageRow]:
    """The EoMT-DINOv3 reference driven frame by frame with VidEoMT's propagation (module docstring)."""
    cfg = model.config
    B, T = clip.shape[:2]
    Q, start = cfg.num_queries, cfg.query_start
    diffs: dict[str, _Diff] = defaultdict(_Diff)
    where = {"t": 0, "videos": list(range(B))}  # the frame and videos of the reference call running now

    def ours_for(name: str, layer: int | None) -> Tensor:
        if layer is not None and layer >= start:  # query blocks: one recorded call per frame, (B, Q + P, C)
            return recorded[name][where["t"]][where["videos"]]
        flat = recorded[name][0]  # embeddings and the first L - k blocks: one call on (B*T, P, C), video-major
        return flat[[b * T + where["t"] for b in where["videos"]]]

    def hook(name: str, layer: int | None):
        def fn(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            diffs[name].add(ours_for(name, layer), out)
        return fn

    last: dict[str, Tensor] = {}
    handles = [ref.embeddings.register_forward_hook(hook("embeddings", None)),
               ref.layers[-1].register_forward_hook(lambda m, i, o: last.__setitem__("x", o))]
    for i, layer in enumerate(ref.layers):
        handles.append(layer.register_forward_hook(hook(f"layer {i}", i)))

    def propagated() -> Tensor:
        x = last["x"]
        return (ref.layernorm(x) if cfg.norm_queries else x)[:, :Q]

    learned = ref.query.weight.detach().clone()  # E
    updater = model.query_updater
    classes = torch.empty_like(one_pass.class_logits)
    masks = torch.empty_like(one_pass.mask_logits)
    try:
        out = ref(pixel_values=clip[:, 0])  # frame 0 of every video: the learned queries, exactly EoMT
        classes[:, 0], masks[:, 0] = out.class_queries_logits, out.masks_queries_logits
        state = propagated()
        for t in range(1, T):
            where["t"] = t
            new_state = []
            for b in range(B):
                where["videos"] = [b]
                ref.query.weight.copy_(F.linear(state[b], updater.weight, updater.bias) + learned)
                out = ref(pixel_values=clip[b:b + 1, t])
                classes[b, t], masks[b, t] = out.class_queries_logits[0], out.masks_queries_logits[0]
                new_state.append(propagated()[0])
            state = torch.stack(new_state)
    finally:
        ref.query.weight.copy_(learned)
        for h in handles:
            h.remove()
    rows = [diffs["embeddings"].row("embeddings")]
    rows += [diffs[f"layer {i}"].row(f"layer {i}") for i in range(cfg.num_layers)]
    for t in range(T):
        rows.append(compare(f"frame {t} class", one_pass.class_logits[:, t], classes[:, t]))
        rows.append(compare(f"frame {t} mask", one_pass.mask_logits[:, t], masks[:, t]))
    return rows


def non_square_size(config) -> tuple[int, int]:
    """The non-square backbone check size: 0.7 x 1.25 of the stored square (448x800 for 640), in patches."""
    p, side = config.patch_size, config.image_size
    return max(1, round(0.7 * side / p)) * p, max(1, round(1.25 * side / p)) * p


def _verify_dinov3(model: VideoMT, clip: Tensor, patch_mask: Tensor, default_size: bool, seed: int) -> VerifyReport:
    cfg = model.config
    B, T, _, H, W = clip.shape
    square = (cfg.image_size, cfg.image_size)
    rows: list[StageRow] = []
    skipped: list[str] = []
    with torch.no_grad():
        recorded: dict[str, list[Tensor]] = defaultdict(list)
        with _record_ours(model, recorded):
            one_pass, _ = model(clip)

        try:
            backbone = build_dinov3_backbone(model)
        except ImportError as e:
            backbone = None
            skipped.append(_reference_import_reason(e))
        have_reference = backbone is not None
        if have_reference:
            rows += _dinov3_backbone_rows(model, backbone, clip[:, 0])
            if default_size:  # and a non-square grid: RoPE for any size
                h, w = non_square_size(cfg)
                extra = torch.randn(B, 3, h, w, generator=torch.Generator().manual_seed(seed + 1))
                rows += _dinov3_backbone_rows(model, backbone, extra)
            del backbone

        if have_reference and (H, W) != square:
            skipped.append(f"transformers' EoMT-DINOv3 only runs at the checkpoint's stored size "
                           f"{square[0]}x{square[1]}; this run uses {H}x{W} (the backbone rows ran at {H}x{W})")
        elif have_reference:
            try:
                ref = build_eomt_dinov3(model)
            except ImportError as e:
                skipped.append(_reference_import_reason(e))
            except ReferenceUnavailable as e:
                skipped.append(str(e))
            else:
                rows += _eomt_dinov3_rows(model, ref, clip, recorded, one_pass)
                del ref
        del recorded

        rows.extend(_invariant_rows(model, clip, one_pass))
        if cfg.use_mask_token:  # no reference holds a DINOv3 VidEoMT mask token: the self-check
            rows.append(_masked_self_row(model, clip, patch_mask.flatten(0, 1)))
    reason = "; ".join(dict.fromkeys(skipped)) or None
    return VerifyReport(rows=rows, reference_skipped=reason, size=(H, W), frames=T)
