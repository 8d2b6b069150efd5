"""Checkpoint keys: the key tables of both backbone families and three formats, key renaming,
the report of what a load consumed, and the config read off a state dict's shapes. The files
themselves (reading, hub downloads, writing) are ``checkpoint``'s.

See ``checkpoint``'s docstring for the formats and families.
"""


from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import Tensor

from videomt_cli.modeling.config import FAMILIES, VideoMTConfig
from videomt_cli.errors import CheckpointError
from videomt_cli.modeling.model import VideoMT


# Keys that exist in released files but are training-only; skipped on purpose.
IGNORED_KEYS = {"official": {"criterion.empty_weight"}, "hf": {"criterion.empty_weight"}, "videomt": set()}

HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
OUR_FORMAT = "videomt"

# ----------------------------------------------------------------------------- key tables
# One row per tensor family: (ours, official, Hugging Face). Placeholders: {i} block or upscale
# index, {n} 1 or 2, {p} weight or bias, {fc} fc1 or fc2. Our names are the official DINOv2 ones
# without the ``backbone.encoder.backbone.`` / ``backbone.`` prefixes, except ``queries`` (official
# ``q``), for both families. A fused qkv of ours is split into q, k, v rows (in that order) in
# the other formats: {qkv} marks that.
_OFFICIAL_BACKBONE = "backbone.encoder.backbone."
_B = _OFFICIAL_BACKBONE
# The query stage and heads: the same names in both families (EoMT-DINOv3 in transformers too).
_HEAD_ROWS: list[tuple[str, str | None, str]] = [
    ("queries.weight", "backbone.q.weight", "query.weight"),
    ("query_updater.{p}", "backbone.query_updater.{p}", "query_updater.{p}"),
    ("class_head.{p}", "backbone.class_head.{p}", "class_predictor.{p}"),
    ("mask_head.0.{p}", "backbone.mask_head.0.{p}", "mask_head.fc1.{p}"),
    ("mask_head.2.{p}", "backbone.mask_head.2.{p}", "mask_head.fc2.{p}"),
    ("mask_head.4.{p}", "backbone.mask_head.4.{p}", "mask_head.fc3.{p}"),
    ("upscale.{i}.conv1.{p}", "backbone.upscale.{i}.conv1.{p}", "upscale_block.block.{i}.conv1.{p}"),
    ("upscale.{i}.conv2.weight", "backbone.upscale.{i}.conv2.weight", "upscale_block.block.{i}.conv2.weight"),
    ("upscale.{i}.norm.{p}", "backbone.upscale.{i}.norm.{p}", "upscale_block.block.{i}.layernorm2d.{p}"),
    # Not a parameter of ours: a buffer of length k that only tells k; checked, then dropped.
    ("attn_mask_probs", "backbone.attn_mask_probs", "attn_mask_probs"),
]
# DINOv2: official = timm's ViT; Hugging Face = transformers' VideomtForUniversalSegmentation.
_DINOV2_TABLE: list[tuple[str, str | None, str]] = [
    ("cls_token", _B + "cls_token", "embeddings.cls_token"),
    ("reg_token", _B + "reg_token", "embeddings.register_tokens"),
    ("pos_embed", _B + "pos_embed", "embeddings.position_embeddings.weight"),
    ("mask_token", None, "embeddings.mask_token"),
    ("patch_embed.proj.{p}", _B + "patch_embed.proj.{p}", "embeddings.patch_embeddings.projection.{p}"),
    ("blocks.{i}.norm{n}.{p}", _B + "blocks.{i}.norm{n}.{p}", "layers.{i}.norm{n}.{p}"),
    ("blocks.{i}.attn.qkv.{p}", _B + "blocks.{i}.attn.qkv.{p}", "layers.{i}.attention.{qkv}_proj.{p}"),
    ("blocks.{i}.attn.proj.{p}", _B + "blocks.{i}.attn.proj.{p}", "layers.{i}.attention.out_proj.{p}"),
    ("blocks.{i}.ls{n}.gamma", _B + "blocks.{i}.ls{n}.gamma", "layers.{i}.layer_scale{n}.lambda1"),
    ("blocks.{i}.mlp.{fc}.{p}", _B + "blocks.{i}.mlp.{fc}.{p}", "layers.{i}.mlp.{fc}.{p}"),
    ("norm.{p}", _B + "norm.{p}", "layernorm.{p}"),
] + _HEAD_ROWS
# DINOv3: official = transformers' DINOv3ViTModel renamed by the official code (module docstring);
# Hugging Face = transformers' EomtDinov3ForUniversalSegmentation (what ``verify`` compares with;
# there is no DINOv3 VidEoMT class). No position embedding; no key bias, so our fused q, k, v
# weight has separate q and v biases.
_DINOV3_TABLE: list[tuple[str, str | None, str]] = [
    ("cls_token", _B + "patch_embed.cls_token", "embeddings.cls_token"),
    ("reg_token", _B + "patch_embed.register_tokens", "embeddings.register_tokens"),
    ("mask_token", None, "embeddings.mask_token"),
    ("patch_embed.proj.{p}", _B + "patch_embed.patch_embeddings.{p}", "embeddings.patch_embeddings.{p}"),
    ("blocks.{i}.norm{n}.{p}", _B + "blocks.{i}.norm{n}.{p}", "layers.{i}.norm{n}.{p}"),
    ("blocks.{i}.attn.qkv.weight", _B + "blocks.{i}.attention.{qkv}_proj.weight",
     "layers.{i}.attention.{qkv}_proj.weight"),
    ("blocks.{i}.attn.q_bias", _B + "blocks.{i}.attention.q_proj.bias", "layers.{i}.attention.q_proj.bias"),
    ("blocks.{i}.attn.v_bias", _B + "blocks.{i}.attention.v_proj.bias", "layers.{i}.attention.v_proj.bias"),
    ("blocks.{i}.attn.proj.{p}", _B + "blocks.{i}.attention.o_proj.{p}", "layers.{i}.attention.o_proj.{p}"),
    ("blocks.{i}.ls{n}.gamma", _B + "blocks.{i}.layer_scale{n}.lambda1", "layers.{i}.layer_scale{n}.lambda1"),
    ("blocks.{i}.mlp.fc1.{p}", _B + "blocks.{i}.mlp.up_proj.{p}", "layers.{i}.mlp.up_proj.{p}"),
    ("blocks.{i}.mlp.fc2.{p}", _B + "blocks.{i}.mlp.down_proj.{p}", "layers.{i}.mlp.down_proj.{p}"),
    ("norm.{p}", _B + "norm.{p}", "layernorm.{p}"),
] + _HEAD_ROWS
_TABLES = {"dinov2": _DINOV2_TABLE, "dinov3": _DINOV3_TABLE}
# Keys a DINOv3 file may hold outside the table (accepted, checked, folded in or dropped):
# the fused projection, a key bias, the rotary buffer. Per format: the block prefix, the buffer name.
_DINOV3_EXTRAS = {
    "official": (_B + "blocks.", _B + "rope_embeddings.inv_freq"),
    "hf": ("layers.", "rope_embeddings.inv_freq"),
}
_COLUMNS = {OUR_FORMAT: 0, "official": 1, "hf": 2}
_PLACEHOLDERS = {"i": r"\d+", "n": "[12]", "p": "weight|bias", "fc": "fc[12]", "qkv": "[qkv]"}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ...
    regex = "".join(re.escape(s) if j % 2 == 0 else f"(?P<{s}>{_PLACEHOLDERS[s]})" for j, s in enumerate(parts))
    return re.compile(regex + "$")


_PATTERNS = {family: [tuple(None if t is None else _compile(t) for t in row) for row in table]
             for family, table in _TABLES.items()}


def rename_key(key: str, source: str, target: str, family: str = "dinov2") -> tuple[str, str | None] | None:
    """Map one key between formats: (new key, qkv part or None), or None if no row matches.

    Going to Hugging Face, a qkv key maps to a ``{qkv}`` template; ``split_qkv`` expands it.
    """
    src, dst = _COLUMNS[source], _COLUMNS[target]
    for row, patterns in zip(_TABLES[family], _PATTERNS[family]):
        if patterns[src] is None or row[dst] is None:
            continue
        m = patterns[src].match(key)
        if m:
            fields = m.groupdict()
            part = fields.pop("qkv", None)
            return row[dst].format(**fields, qkv="{qkv}"), part
    return None


def file_key(name: str, fmt: str, family: str = "dinov2") -> str:
    """Our key -> what a ``fmt`` file calls it, for messages; a split qkv shows as ``{q,k,v}``."""
    renamed = rename_key(name, OUR_FORMAT, fmt, family)
    if renamed is None:
        return name
    return renamed[0].replace("{qkv}", "{q,k,v}")


# ----------------------------------------------------------------------------- reports


@dataclass
class KeyReport:
    """What a load did with every key of the source file."""

    source_format: str
    consumed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # our keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file keys we have no place for
    wrong_shape: list[str] = field(default_factory=list)  # "key: file (a, b) vs model (c, d)"
    invalid: list[str] = field(default_factory=list)  # right shape, impossible values: "key: why"
    notes: list[str] = field(default_factory=list)  # what was assumed or checked, for the user
    family: str = "dinov2"
    # our name -> the file key(s) it came from, so messages name what the user's file calls it.
    origin: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape or self.invalid)

    def lines(self, limit: int = 8) -> list[str]:
        def names(items: list[str]) -> str:
            shown = ", ".join(items[:limit])
            return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

        out = [f"format: {self.source_format} ({self.family})", f"consumed: {len(self.consumed)} keys"]
        if self.ignored:
            out.append(f"ignored on purpose: {names(self.ignored)}")
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("wrong shape", self.wrong_shape)):
            out.append(f"{label}: {len(items)}" + (f" ({names(items)})" if items else ""))
        if self.invalid:
            out.append(f"invalid values: {len(self.invalid)} ({names(self.invalid)})")
        out.extend(f"note: {note}" for note in self.notes)
        return out

    def problem(self) -> str:
        """One line that names what is wrong, for an error message."""
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("wrong shape", self.wrong_shape), ("invalid", self.invalid)):
            if items:
                shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
                parts.append(f"{len(items)} {label} key(s): {shown}")
        return "; ".join(parts)


# ----------------------------------------------------------------------------- config from shapes


def detect_format(state: dict[str, Tensor]) -> str:
    if any(k.startswith(_OFFICIAL_BACKBONE) for k in state):
        return "official"
    if any(k.startswith("embeddings.") or k.startswith("layers.") for k in state):
        return "hf"
    if "cls_token" in state and any(k.startswith("blocks.") for k in state):
        return OUR_FORMAT
    sample = ", ".join(list(state)[:4]) or "none"
    raise CheckpointError(
        f"This does not look like a VidEoMT checkpoint: none of its {len(state)} keys are VidEoMT keys "
        f"(first keys: {sample}). Pass an official VidEoMT .pth, a Hugging Face VidEoMT directory or a "
        f"file saved by videomt."
    )


def _matches_family(key: str, fmt: str, family: str) -> bool:
    col = _COLUMNS[fmt]
    if any(pats[col] is not None and pats[col].match(key) for pats in _PATTERNS[family]):
        return True
    return family == "dinov3" and _dinov3_extra(key, fmt) is not None


def detect_family(state: dict[str, Tensor], source_format: str | None = None) -> str:
    """``"dinov2"`` or ``"dinov3"``, from the keys only one family's table has (position embedding,
    ``attn.qkv`` vs ``attention.q_proj``, ``ls1.gamma`` vs ``layer_scale1.lambda1``, ...).

    A file with keys of both is refused, naming some of each (a bad merge or a wrong rename);
    one with no backbone key at all counts as DINOv2, and its load then names what is missing.
    """
    fmt = source_format or detect_format(state)
    only: dict[str, list[str]] = {family: [] for family in FAMILIES}
    for key in state:
        hits = [family for family in FAMILIES if _matches_family(key, fmt, family)]
        if len(hits) == 1:
            only[hits[0]].append(key)
    if only["dinov2"] and only["dinov3"]:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

        raise CheckpointError(
            f"This {fmt} checkpoint mixes two backbones: DINOv2 keys ({some(only['dinov2'])}) and DINOv3 keys "
            f"({some(only['dinov3'])}). A VidEoMT file holds one; was it merged or renamed from two models?"
        )
    return "dinov3" if only["dinov3"] else "dinov2"


def _dinov3_extra(key: str, fmt: str) -> tuple[str, str] | None:
    """A DINOv3 key outside the table: ("fused", block prefix) for ``attention.qkv_proj.*``,
    ("k_bias", ...) for ``attention.k_proj.bias``, ("inv_freq", "") for the rotary buffer."""
    if fmt not in _DINOV3_EXTRAS:
        return None
    blocks, inv_freq = _DINOV3_EXTRAS[fmt]
    if key == inv_freq:
        return "inv_freq", ""
    m = re.fullmatch(re.escape(blocks) + r"(\d+)\.attention\.(qkv_proj\.(?:weight|bias)|k_proj\.bias)", key)
    if m is None:
        return None
    return ("fused" if m.group(2).startswith("qkv") else "k_bias"), f"{blocks}{m.group(1)}.attention."


def _unfuse_dinov3(state: dict[str, Tensor], fmt: str,
                   report: "KeyReport | None" = None) -> tuple[dict[str, Tensor], list[tuple[str, str, Tensor]]]:
    """DINOv3 extras -> the table's separate q, k, v form.

    Returns (state, set aside). The fused ``qkv_proj`` becomes ``{q,k,v}_proj.weight`` and
    ``{q,v}_proj.bias``. Set aside, as (kind, file key, tensor), for ``to_our_keys`` to check:
    the key third of a fused bias and a separate ``k_proj.bias`` ("k_bias": must be zero) and the
    rotary ``inv_freq`` ("inv_freq": must equal the derived one). With a report, a fused
    projection given beside a separate one, or one that is not 3 x C rows, is reported.
    """
    out: dict[str, Tensor] = {}
    aside: list[tuple[str, str, Tensor]] = []
    fused: list[tuple[str, str, Tensor]] = []
    for key, value in state.items():
        extra = _dinov3_extra(key, fmt)
        if extra is None:
            out[key] = value
        elif extra[0] == "fused":
            fused.append((key, extra[1], value))
        else:
            aside.append((extra[0], key, value))
    for key, prefix, value in fused:
        kind = key.rsplit(".", 1)[1]
        if value.ndim == 0 or value.shape[0] % 3:
            if report is not None:
                report.wrong_shape.append(f"{key}: file {tuple(value.shape)}, not 3 x C rows (q, k, v)")
            continue
        q, k, v = value.chunk(3, dim=0)
        parts = {"q": q, "k": k, "v": v} if kind == "weight" else {"q": q, "v": v}
        clash = [f"{prefix}{part}_proj.{kind}" for part in parts if f"{prefix}{part}_proj.{kind}" in out]
        if clash:
            if report is not None:
                report.unexpected.append(f"{key} (given beside {', '.join(clash)}: fused and separate both)")
            continue
        for part, chunk in parts.items():
            out[f"{prefix}{part}_proj.{kind}"] = chunk.contiguous()
        if kind == "bias":
            aside.append(("k_bias", f"{key} (its key third)", k))
    return out, aside


def _rotary_inv_freq(config: VideoMTConfig) -> Tensor:
    head_dim = config.hidden_size // config.num_heads
    return 1 / config.rope_theta ** torch.arange(0, 1, 4 / head_dim, dtype=torch.float32)


def config_from_state(state: dict[str, Tensor], source_format: str | None = None) -> VideoMTConfig:
    """Infer the architecture from tensor shapes (heads = C / 64, as in every released DINOv2 and
    DINOv3 model, unless a DINOv3 rotary ``inv_freq`` tells the head width: d / 4 entries).

    A DINOv3 file stores no training size and no ``norm_queries``: ``image_size`` is 640 and
    ``norm_queries`` False unless the caller (the registry) says otherwise."""
    fmt = source_format or detect_format(state)
    family = detect_family(state, fmt)
    aside = []
    if family == "dinov3":
        state, aside = _unfuse_dinov3(state, fmt)
    ours = {}
    for key, value in state.items():
        renamed = rename_key(key, fmt, OUR_FORMAT, family)
        if renamed is not None:
            ours[renamed[0]] = value
    try:
        dim = ours["cls_token"].shape[-1]
        blocks = [int(m.group(1)) for k in ours if (m := re.match(r"blocks\.(\d+)\.", k))]
        patch = ours["patch_embed.proj.weight"].shape[-1]
        if family == "dinov2":
            grid = int(round((ours["pos_embed"].shape[-2]) ** 0.5))
            image_size = grid * patch
            heads = max(dim // 64, 1)
        else:
            image_size = 640
            inv_freq = [t for kind, _, t in aside if kind == "inv_freq"]
            heads = dim // (4 * inv_freq[0].numel()) if inv_freq and inv_freq[0].numel() else max(dim // 64, 1)
        k_blocks = ours["attn_mask_probs"].shape[0] if "attn_mask_probs" in ours else None
        upscales = [int(m.group(1)) for k in ours if (m := re.match(r"upscale\.(\d+)\.", k))]
        if not blocks:
            raise KeyError("blocks.0.norm1.weight")
        return VideoMTConfig(
            hidden_size=dim,
            num_layers=max(blocks) + 1,
            num_heads=heads,
            num_query_blocks=k_blocks if k_blocks is not None else 4 if max(blocks) + 1 >= 24 else 3,
            num_queries=ours["queries.weight"].shape[0],
            num_classes=ours["class_head.weight"].shape[0] - 1,
            image_size=image_size,
            patch_size=patch,
            num_register_tokens=ours["reg_token"].shape[1],
            mlp_ratio=ours["blocks.0.mlp.fc1.weight"].shape[0] // dim,
            num_upscale_blocks=max(upscales) + 1 if upscales else 0,
            use_mask_token="mask_token" in ours,
            family=family,
        )
    except KeyError as e:
        raise CheckpointError(
            f"Cannot infer the model shape from this {fmt} ({family}) checkpoint: key "
            f"{file_key(e.args[0], fmt, family)!r} is missing."
        ) from None
    except (ValueError, IndexError, ZeroDivisionError) as e:  # InputError from the config is a ValueError too
        raise CheckpointError(
            f"Cannot infer the model shape from this {fmt} checkpoint: its tensor shapes are inconsistent "
            f"({_short(e)})."
        ) from None


# Fields an official file cannot tell, so an override sets them; any other override is checked
# against what the file's shapes say (a truncated or wrong file then fails by name).
_NOT_IN_FILES = {"norm_queries", "layer_norm_eps", "upscale_norm_eps", "rope_theta", "num_heads"}


def apply_overrides(config: VideoMTConfig, overrides: dict, what: str) -> VideoMTConfig:
    """Set the fields a file cannot tell (``norm_queries``, eps, DINOv3's ``image_size``, heads) and
    check the others: a mismatch is a CheckpointError naming the field, the file's value and
    ``what`` expected it (e.g. "the registry entry videomt-l-vipseg-dinov3")."""
    settable = _NOT_IN_FILES | ({"image_size"} if config.family == "dinov3" else set())
    known = set(config.to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise CheckpointError(f"Unknown config fields {unknown} from {what}; expected some of {sorted(known)}.")
    wrong = [f"{name}: the file has {getattr(config, name)!r}, {what} says {value!r}"
             for name, value in overrides.items() if name not in settable and getattr(config, name) != value]
    if wrong:
        raise CheckpointError(f"The checkpoint does not match {what} ({'; '.join(wrong)}): a truncated or "
                              f"different file?")
    try:
        return config.replace(**{name: value for name, value in overrides.items() if name in settable})
    except ValueError as e:  # InputError from the config's own checks
        raise CheckpointError(f"{what} gives an invalid config ({_short(e)}).") from None


def config_from_hf(data: dict) -> VideoMTConfig:
    """A transformers ``VideomtConfig`` dict -> ours."""
    if data.get("model_type") == "eomt_dinov3":
        raise CheckpointError(
            "config.json describes an EoMT-DINOv3 model (transformers' EomtDinov3ForUniversalSegmentation), an "
            "image model without query propagation, not VidEoMT. DINOv3 VidEoMT checkpoints come as the official "
            ".pth files or videomt's own .safetensors (there is no Hugging Face DINOv3 VidEoMT class)."
        )
    if data.get("model_type") not in (None, "videomt"):
        raise CheckpointError(
            f"config.json describes a {data.get('model_type')!r} model, not VidEoMT (model_type 'videomt')."
        )
    if data.get("use_swiglu_ffn"):
        raise CheckpointError("SwiGLU VidEoMT variants are not supported; use a DINOv2 (GELU MLP) checkpoint.")
    if data.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"Unsupported hidden_act {data['hidden_act']!r}; VidEoMT uses exact GELU.")
    num_labels = len(data["id2label"]) if "id2label" in data else data.get("num_labels", 2)
    image_size = data.get("image_size", 640)
    patch_size = data.get("patch_size", 16)
    if isinstance(image_size, (list, tuple)) or isinstance(patch_size, (list, tuple)):
        raise CheckpointError("Non-square image_size / patch_size in config.json are not supported.")
    return VideoMTConfig(
        hidden_size=data.get("hidden_size", 1024),
        num_layers=data.get("num_hidden_layers", 24),
        num_heads=data.get("num_attention_heads", 16),
        num_query_blocks=data.get("num_blocks", 4),
        num_queries=data.get("num_queries", 200),
        num_classes=num_labels,
        image_size=image_size,
        patch_size=patch_size,
        num_register_tokens=data.get("num_register_tokens", 4),
        mlp_ratio=data.get("mlp_ratio", 4),
        num_upscale_blocks=data.get("num_upscale_blocks", 2),
        layer_norm_eps=data.get("layer_norm_eps", 1e-6),
        use_mask_token=True,
    )


NO_HF_DINOV3 = (
    "transformers has no DINOv3 VidEoMT class (VideomtForUniversalSegmentation is DINOv2 only), so a DINOv3 "
    "model cannot be written as a Hugging Face folder. Write videomt's single-file format instead: "
    "videomt convert CHECKPOINT -o NAME.safetensors (any videomt command loads it)."
)


def config_to_hf(config: VideoMTConfig, labels: list[str] | None = None) -> dict:
    if config.family != "dinov2":
        raise CheckpointError(NO_HF_DINOV3)
    labels = labels or [f"class_{i + 1}" for i in range(config.num_classes)]  # ids count from 1
    return {
        "model_type": "videomt",
        "architectures": ["VideomtForUniversalSegmentation"],
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_blocks": config.num_query_blocks,
        "num_queries": config.num_queries,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "num_register_tokens": config.num_register_tokens,
        "mlp_ratio": config.mlp_ratio,
        "num_upscale_blocks": config.num_upscale_blocks,
        "layer_norm_eps": config.layer_norm_eps,
        "hidden_act": "gelu",
        "use_swiglu_ffn": False,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }


# ----------------------------------------------------------------------------- state dict mapping


def to_our_keys(state: dict[str, Tensor], config: VideoMTConfig, source_format: str) -> tuple[dict, KeyReport]:
    """Rename a source state dict to our parameter names, joining split qkv. Reports everything.

    ``config.family`` picks the key table. DINOv3 files also pass through ``_unfuse_dinov3``;
    what it sets aside is checked here: a zero key bias and a matching rotary ``inv_freq`` are
    dropped (listed as ignored, with a note saying why), anything else is an invalid value."""
    family = config.family
    report = KeyReport(source_format, family=family)
    aside: list[tuple[str, str, Tensor]] = []
    if family == "dinov3" and source_format != OUR_FORMAT:
        state, aside = _unfuse_dinov3(state, source_format, report)
    ours: dict[str, Tensor] = {}
    qkv_parts: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key in IGNORED_KEYS.get(source_format, ()):
            report.ignored.append(key)
            continue
        renamed = rename_key(key, source_format, OUR_FORMAT, family)
        if renamed is None:
            report.unexpected.append(key)
            continue
        name, part = renamed
        report.consumed.append(key)
        report.origin[name] = file_key(name, source_format, family) if part is not None else key
        if part is not None:
            qkv_parts.setdefault(name, {})[part] = value
        elif name == "attn_mask_probs":
            if value.shape != (config.num_query_blocks,):
                report.wrong_shape.append(
                    f"{key}: file {tuple(value.shape)} vs model ({config.num_query_blocks},)"
                )
        else:
            ours[name] = value
    for name, parts in qkv_parts.items():
        if set(parts) != {"q", "k", "v"}:
            report.missing.extend(
                report.origin[name].replace("{q,k,v}", p) for p in "qkv" if p not in parts
            )
            continue
        shapes = [tuple(parts[p].shape) for p in "qkv"]
        if len(set(shapes)) > 1:  # torch.cat would fail (or glue mismatched rows); report instead
            report.wrong_shape.append(f"{report.origin[name]}: q, k, v parts differ: {shapes}")
            continue
        ours[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if "pos_embed" in ours and ours["pos_embed"].ndim == 2:  # HF stores (G*G, C)
        ours["pos_embed"] = ours["pos_embed"].unsqueeze(0)
    if "mask_token" in ours and ours["mask_token"].ndim == 2:  # (1, C) in some exports
        ours["mask_token"] = ours["mask_token"].unsqueeze(0)
    _check_set_aside(aside, config, report)
    return ours, report


def _check_set_aside(aside: list[tuple[str, str, Tensor]], config: VideoMTConfig, report: KeyReport) -> None:
    zero_key_bias = False
    for kind, key, value in aside:
        if kind == "k_bias":
            largest = float(value.detach().abs().max()) if value.numel() else 0.0
            if largest == 0.0:
                report.ignored.append(key)
                zero_key_bias = True
            else:
                report.invalid.append(f"{key}: a non-zero key bias (max |b| {largest:.3g}); DINOv3 attention has "
                                      f"none (the official fused form fills in zeros)")
        else:  # inv_freq
            expected = _rotary_inv_freq(config)
            head_dim = config.hidden_size // config.num_heads
            if value.shape == expected.shape and torch.allclose(value.detach().float().cpu(), expected,
                                                                rtol=1e-6, atol=0.0):
                report.ignored.append(key)
                report.notes.append(f"{key} is derived (theta {config.rope_theta:g}, head width {head_dim}) and "
                                    f"matches: not loaded, recomputed")
            else:
                report.invalid.append(f"{key}: not the rotary frequencies of theta {config.rope_theta:g} with head "
                                      f"width {head_dim} ({tuple(value.shape)} vs {tuple(expected.shape)} or other "
                                      f"values)")
    if zero_key_bias:
        report.notes.append("zero key bias dropped: DINOv3 attention has none")


def _has_no_name_in(key: str, target_format: str, family: str = "dinov2") -> bool:
    """True for keys whose table row leaves ``target_format`` empty (the mask token in official)."""
    col = _COLUMNS[target_format]
    return any(row[col] is None and pats[0].match(key) for row, pats in zip(_TABLES[family], _PATTERNS[family]))


def from_our_keys(state: dict[str, Tensor], target_format: str, family: str = "dinov2",
                  fused_qkv: bool = False) -> dict[str, Tensor]:
    """Our state dict -> official or Hugging Face key names (qkv split for HF, and for DINOv3).

    Keys the target format has no place for are dropped: official checkpoints carry no mask token.
    ``fused_qkv`` (DINOv3 only): write each block's ``attention.qkv_proj`` (a zero key third in its
    bias) as the official ``FUSED_QKV`` option holds it, instead of separate q, k, v projections.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if _has_no_name_in(key, target_format, family):
            continue
        renamed = rename_key(key, OUR_FORMAT, target_format, family)
        if renamed is None:
            raise KeyError(f"{key} has no {target_format} name")
        name = renamed[0]
        if "{qkv}" in name:
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[name.format(qkv=part)] = chunk.contiguous()
        elif key == "pos_embed" and target_format == "hf":
            out[name] = value.squeeze(0).contiguous()
        else:
            out[name] = value.contiguous()
    if fused_qkv:
        if family != "dinov3" or target_format == OUR_FORMAT:
            raise ValueError("fused_qkv applies to DINOv3 official or Hugging Face names only")
        for q_key in [k for k in out if k.endswith(".attention.q_proj.weight")]:
            prefix = q_key[: -len("q_proj.weight")]
            weights = [out.pop(f"{prefix}{part}_proj.weight") for part in "qkv"]
            q_bias, v_bias = out.pop(f"{prefix}q_proj.bias"), out.pop(f"{prefix}v_proj.bias")
            out[f"{prefix}qkv_proj.weight"] = torch.cat(weights, dim=0)
            out[f"{prefix}qkv_proj.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
    return out


def load_state(model: VideoMT, state: dict[str, Tensor], source_format: str) -> KeyReport:
    """Strictly load a source state dict into ``model``; raise CheckpointError unless clean."""
    ours, report = to_our_keys(state, model.config, source_format)
    family = model.config.family
    expected = model.state_dict()
    for name, value in ours.items():
        where = report.origin.get(name, name)
        if name not in expected:
            report.unexpected.append(where)
        elif tuple(value.shape) != tuple(expected[name].shape):
            joined = " (q, k, v joined)" if "{q,k,v}" in where else ""
            report.wrong_shape.append(
                f"{where}: file {tuple(value.shape)}{joined} vs model {tuple(expected[name].shape)}"
            )
    report.missing.extend(file_key(name, source_format, family) for name in expected if name not in ours)
    if not report.ok:
        raise CheckpointError(f"Checkpoint does not fit the {family} VidEoMT model: {report.problem()}.")
    with torch.no_grad():
        for name, param in model.state_dict(keep_vars=True).items():
            param.copy_(ours[name].to(param.dtype))
    return report

def _short(e: Exception, limit: int = 160) -> str:
    """The first line of an exception's message, cut at a word so a message never ends mid-word."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."
