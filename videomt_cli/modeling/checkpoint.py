"""Checkpoints: the three formats VidEoMT weights come in, one key table, strict loading.

Formats (``detect_format`` tells them apart):

- ``official``: the ``tue-mps/VidEoMT`` detectron2 ``.pth`` (``{"model": sd}`` or a bare state dict),
  keys ``backbone.encoder.backbone.*``, ``backbone.q.weight`` and so on (DESIGN 2.4).
- ``hf``: a Hugging Face directory (``config.json`` + ``model.safetensors``) or hub id, keys as in
  transformers' ``VideomtForUniversalSegmentation``; this is also what ``videomt convert`` writes.
- ``videomt``: our own single ``.safetensors`` file: our parameter names, with the config and the
  label names in the file's metadata. Small and self-describing, for bundled weights.

Every load goes through ``load_state`` which maps keys to ours and reports consumed, ignored,
missing, unexpected and wrong-shape keys by name; anything but a clean report is an error.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from videomt_cli.modeling.config import VideoMTConfig
from videomt_cli.errors import CheckpointError, VideoMTError
from videomt_cli.io.atomic import atomic_path
from videomt_cli.modeling.model import VideoMT

# Keys that exist in released files but are training-only; skipped on purpose.
IGNORED_KEYS = {"official": {"criterion.empty_weight"}, "hf": {"criterion.empty_weight"}, "videomt": set()}

HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
OUR_FORMAT = "videomt"

# ----------------------------------------------------------------------------- key tables
# One row per tensor family: (ours, official, Hugging Face). Placeholders: {i} block or upscale
# index, {n} 1 or 2, {p} weight or bias, {fc} fc1 or fc2. Our names are the official ones without
# the ``backbone.encoder.backbone.`` / ``backbone.`` prefixes, except ``queries`` (official ``q``).
# The fused qkv is split into q, k, v rows (in that order) for Hugging Face: {qkv} marks that.
_OFFICIAL_BACKBONE = "backbone.encoder.backbone."
_KEY_TABLE: list[tuple[str, str | None, str]] = [
    ("cls_token", _OFFICIAL_BACKBONE + "cls_token", "embeddings.cls_token"),
    ("reg_token", _OFFICIAL_BACKBONE + "reg_token", "embeddings.register_tokens"),
    ("pos_embed", _OFFICIAL_BACKBONE + "pos_embed", "embeddings.position_embeddings.weight"),
    ("mask_token", None, "embeddings.mask_token"),
    ("patch_embed.proj.{p}", _OFFICIAL_BACKBONE + "patch_embed.proj.{p}", "embeddings.patch_embeddings.projection.{p}"),
    ("blocks.{i}.norm{n}.{p}", _OFFICIAL_BACKBONE + "blocks.{i}.norm{n}.{p}", "layers.{i}.norm{n}.{p}"),
    ("blocks.{i}.attn.qkv.{p}", _OFFICIAL_BACKBONE + "blocks.{i}.attn.qkv.{p}", "layers.{i}.attention.{qkv}_proj.{p}"),
    ("blocks.{i}.attn.proj.{p}", _OFFICIAL_BACKBONE + "blocks.{i}.attn.proj.{p}", "layers.{i}.attention.out_proj.{p}"),
    ("blocks.{i}.ls{n}.gamma", _OFFICIAL_BACKBONE + "blocks.{i}.ls{n}.gamma", "layers.{i}.layer_scale{n}.lambda1"),
    ("blocks.{i}.mlp.{fc}.{p}", _OFFICIAL_BACKBONE + "blocks.{i}.mlp.{fc}.{p}", "layers.{i}.mlp.{fc}.{p}"),
    ("norm.{p}", _OFFICIAL_BACKBONE + "norm.{p}", "layernorm.{p}"),
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
_COLUMNS = {OUR_FORMAT: 0, "official": 1, "hf": 2}
_PLACEHOLDERS = {"i": r"\d+", "n": "[12]", "p": "weight|bias", "fc": "fc[12]", "qkv": "[qkv]"}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ...
    regex = "".join(re.escape(s) if j % 2 == 0 else f"(?P<{s}>{_PLACEHOLDERS[s]})" for j, s in enumerate(parts))
    return re.compile(regex + "$")


_PATTERNS = [tuple(None if t is None else _compile(t) for t in row) for row in _KEY_TABLE]


def rename_key(key: str, source: str, target: str) -> tuple[str, str | None] | None:
    """Map one key between formats: (new key, qkv part or None), or None if no row matches.

    Going to Hugging Face, a qkv key maps to a ``{qkv}`` template; ``split_qkv`` expands it.
    """
    src, dst = _COLUMNS[source], _COLUMNS[target]
    for row, patterns in zip(_KEY_TABLE, _PATTERNS):
        if patterns[src] is None or row[dst] is None:
            continue
        m = patterns[src].match(key)
        if m:
            fields = m.groupdict()
            part = fields.pop("qkv", None)
            return row[dst].format(**fields, qkv="{qkv}"), part
    return None


def file_key(name: str, fmt: str) -> str:
    """Our key -> what a ``fmt`` file calls it, for messages; a split qkv shows as ``{q,k,v}``."""
    renamed = rename_key(name, OUR_FORMAT, fmt)
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
    # our name -> the file key(s) it came from, so messages name what the user's file calls it.
    origin: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def lines(self, limit: int = 8) -> list[str]:
        def names(items: list[str]) -> str:
            shown = ", ".join(items[:limit])
            return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

        out = [f"format: {self.source_format}", f"consumed: {len(self.consumed)} keys"]
        if self.ignored:
            out.append(f"ignored on purpose (training-only): {names(self.ignored)}")
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("wrong shape", self.wrong_shape)):
            out.append(f"{label}: {len(items)}" + (f" ({names(items)})" if items else ""))
        return out

    def problem(self) -> str:
        """One line that names what is wrong, for an error message."""
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("wrong shape", self.wrong_shape)):
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


def config_from_state(state: dict[str, Tensor], source_format: str | None = None) -> VideoMTConfig:
    """Infer the architecture from tensor shapes (heads = C / 64, as in every DINOv2 model)."""
    fmt = source_format or detect_format(state)
    ours = {}
    for key, value in state.items():
        renamed = rename_key(key, fmt, OUR_FORMAT)
        if renamed is not None:
            ours[renamed[0]] = value
    try:
        dim = ours["cls_token"].shape[-1]
        blocks = [int(m.group(1)) for k in ours if (m := re.match(r"blocks\.(\d+)\.", k))]
        pos = ours["pos_embed"]
        grid = int(round((pos.shape[-2]) ** 0.5))
        patch = ours["patch_embed.proj.weight"].shape[-1]
        k_blocks = ours["attn_mask_probs"].shape[0] if "attn_mask_probs" in ours else None
        upscales = [int(m.group(1)) for k in ours if (m := re.match(r"upscale\.(\d+)\.", k))]
        return VideoMTConfig(
            hidden_size=dim,
            num_layers=max(blocks) + 1,
            num_heads=max(dim // 64, 1),
            num_query_blocks=k_blocks if k_blocks is not None else 4 if max(blocks) + 1 >= 24 else 3,
            num_queries=ours["queries.weight"].shape[0],
            num_classes=ours["class_head.weight"].shape[0] - 1,
            image_size=grid * patch,
            patch_size=patch,
            num_register_tokens=ours["reg_token"].shape[1],
            mlp_ratio=ours["blocks.0.mlp.fc1.weight"].shape[0] // dim,
            num_upscale_blocks=max(upscales) + 1 if upscales else 0,
            use_mask_token="mask_token" in ours,
        )
    except KeyError as e:
        raise CheckpointError(
            f"Cannot infer the model shape from this {fmt} checkpoint: key {file_key(e.args[0], fmt)!r} is "
            f"missing."
        ) from None
    except (ValueError, IndexError) as e:  # InputError from the config is a ValueError too
        raise CheckpointError(
            f"Cannot infer the model shape from this {fmt} checkpoint: its tensor shapes are inconsistent "
            f"({_short(e)})."
        ) from None


def config_from_hf(data: dict) -> VideoMTConfig:
    """A transformers ``VideomtConfig`` dict -> ours."""
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


def config_to_hf(config: VideoMTConfig, labels: list[str] | None = None) -> dict:
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
    """Rename a source state dict to our parameter names, joining split qkv. Reports everything."""
    report = KeyReport(source_format)
    ours: dict[str, Tensor] = {}
    qkv_parts: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key in IGNORED_KEYS.get(source_format, ()):
            report.ignored.append(key)
            continue
        renamed = rename_key(key, source_format, OUR_FORMAT)
        if renamed is None:
            report.unexpected.append(key)
            continue
        name, part = renamed
        report.consumed.append(key)
        report.origin[name] = file_key(name, source_format) if part is not None else key
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
    return ours, report


def _has_no_name_in(key: str, target_format: str) -> bool:
    """True for keys whose table row leaves ``target_format`` empty (the mask token in official)."""
    col = _COLUMNS[target_format]
    return any(row[col] is None and pats[0].match(key) for row, pats in zip(_KEY_TABLE, _PATTERNS))


def from_our_keys(state: dict[str, Tensor], target_format: str) -> dict[str, Tensor]:
    """Our state dict -> official or Hugging Face key names (qkv split for HF).

    Keys the target format has no place for are dropped: official checkpoints carry no mask token.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if _has_no_name_in(key, target_format):
            continue
        renamed = rename_key(key, OUR_FORMAT, target_format)
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
    return out


def load_state(model: VideoMT, state: dict[str, Tensor], source_format: str) -> KeyReport:
    """Strictly load a source state dict into ``model``; raise CheckpointError unless clean."""
    ours, report = to_our_keys(state, model.config, source_format)
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
    report.missing.extend(file_key(name, source_format) for name in expected if name not in ours)
    if not report.ok:
        raise CheckpointError(f"Checkpoint does not fit the VidEoMT model: {report.problem()}.")
    with torch.no_grad():
        for name, param in model.state_dict(keep_vars=True).items():
            param.copy_(ours[name].to(param.dtype))
    return report


# ----------------------------------------------------------------------------- reading files


@dataclass
class Loaded:
    """A ready model and where it came from."""

    model: VideoMT
    labels: list[str] | None
    source: str
    report: KeyReport
    meta: dict = field(default_factory=dict)

    @property
    def config(self) -> VideoMTConfig:
        return self.model.config


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as e:  # safetensors raises its own error types for every corruption
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({_short(e)}); it may be truncated: download it again."
        ) from None


def _read_torch(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # zip errors, unpickling errors, EOF on truncated files, text files
        import zipfile

        # A text file also fails "weights only" unpickling; only a real torch archive holds objects.
        if "Weights only load failed" in str(e) and zipfile.is_zipfile(path):
            # torch's own message suggests weights_only=False; we never run pickled code.
            raise CheckpointError(
                f"{path} holds pickled Python objects besides tensors (a whole model object or training "
                f"state?); videomt reads only tensors. Save model.state_dict() (or {{'model': state_dict}}) "
                f"and pass that file."
            ) from None
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint: torch.save writes a zip archive and this file is not "
                f"a complete one (truncated download, or another kind of file?)."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {_short(e)}); it may be "
            f"truncated or not a checkpoint at all."
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (expected {{'model': state_dict}} or a state dict).")
    return obj


def _short(e: Exception, limit: int = 160) -> str:
    """The first line of an exception's message, cut at a word so a message never ends mid-word."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now: huggingface_hub reads it once at import, and transformers (or
    anything else) may have imported it before the user or a test set the variable."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or now.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _resolve_hub(repo_id: str) -> Path:
    """Download (or find in the cache) a hub repo's config and weights; clear error offline."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a declared dependency
        raise CheckpointError("huggingface_hub is not installed; pass --model PATH to a local checkpoint.") from None
    import logging

    offline = _hub_offline()
    folder = None
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    for filename in (HF_CONFIG, HF_WEIGHTS):
        try:
            # The hub logs each failed request as a warning; our one-line error says it all.
            hub_logger.setLevel(logging.ERROR)
            folder = Path(hf_hub_download(repo_id, filename, local_files_only=offline)).parent
        except Exception as e:  # offline, no network, unknown repo, gated repo: all end the same way
            why = "offline mode (HF_HUB_OFFLINE) and not in the local cache" if offline else _short(e)
            raise CheckpointError(
                f"Could not fetch {filename} of {repo_id} from the Hugging Face hub ({why}). "
                f"Download it on a connected machine (hf download {repo_id} --local-dir DIR), copy DIR "
                f"here and pass --model PATH to that folder."
            ) from None
        finally:
            hub_logger.setLevel(level)
    return folder


# A missing "weights/model.pth" is a mistyped path, not a hub repo: say "does not exist".
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pkl", ".bin", ".ckpt", ".safetensors")


def looks_like_hub_id(text: str) -> bool:
    return (bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text)) and not os.path.exists(text)
            and not text.lower().endswith(_CHECKPOINT_SUFFIXES))


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> Loaded:
    """Load a VidEoMT from an official ``.pth``, a Hugging Face dir or hub id, our ``.safetensors``,
    or a registry name (``videomt-mini-synth``, ``videomt-s-ytvis19``)."""
    from videomt_cli.modeling import registry

    text = str(source)
    path = Path(text).expanduser()
    entry = None if path.exists() else registry.get(text)
    if entry is not None:
        text = entry.source()
        path = Path(text)
    if not path.exists():
        if looks_like_hub_id(text):
            path = _resolve_hub(text)
        else:
            raise CheckpointError(f"Checkpoint {text} does not exist; check the path or pass a hub id (org/name).")

    labels = None
    meta: dict = {}
    if path.is_dir():
        weights = path / HF_WEIGHTS
        config_file = path / HF_CONFIG
        if not weights.exists():
            found = sorted(p.name for p in path.glob("*.pth")) + sorted(p.name for p in path.glob("*.safetensors"))
            which = "that file" if len(found) == 1 else "one of them"
            hint = f" (it has {', '.join(found)}: pass {which})" if found else ""
            raise CheckpointError(f"Directory {path} has no {HF_WEIGHTS}{hint}.")
        state, _ = _read_safetensors(weights)
        fmt = detect_format(state)
        if config_file.exists():
            try:
                data = json.loads(config_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{config_file} is not valid JSON ({_short(e)}).") from None
            if not isinstance(data, dict):
                raise CheckpointError(f"{config_file} holds a JSON {type(data).__name__}, not a config object.")
            try:
                config = config_from_hf(data)
                if "id2label" in data:
                    labels = [data["id2label"][str(i)] for i in range(len(data["id2label"]))]
            except (KeyError, TypeError, AttributeError, ValueError) as e:  # InputError is a ValueError
                raise CheckpointError(f"{config_file} is not a usable VidEoMT config ({_short(e)}).") from None
            if "embeddings.mask_token" not in state:
                config = config.replace(use_mask_token=False)
            meta = {"hf_config": data}
        else:
            config = config_from_state(state, fmt)
    elif path.suffix == ".safetensors":
        state, file_meta = _read_safetensors(path)
        fmt = detect_format(state)
        if fmt == OUR_FORMAT and "config" in file_meta:
            try:
                config = VideoMTConfig.from_dict(json.loads(file_meta["config"]))
                meta = {k: json.loads(v) for k, v in file_meta.items() if k not in ("format", "config")}
            except (ValueError, TypeError) as e:  # bad JSON, unknown config keys (InputError)
                raise CheckpointError(f"{path} has unreadable videomt metadata ({_short(e)}).") from None
            labels = meta.get("labels")
        else:
            config = config_from_state(state, fmt)
    else:
        state = _read_torch(path)
        fmt = detect_format(state)
        config = config_from_state(state, fmt)

    model = VideoMT(config)
    try:
        report = load_state(model, state, fmt)
    except CheckpointError as e:  # say which file: a user may be trying several
        raise CheckpointError(f"{path}: {e}") from None
    model.eval().to(device=device, dtype=dtype)
    return Loaded(model=model, labels=labels, source=str(source), report=report, meta=meta)


# ----------------------------------------------------------------------------- writing files


def _atomic_dir_write(directory: Path, files: dict[str, callable]) -> None:
    """Write each file of ``directory`` atomically: ``write(tmp)`` fills a temporary beside it."""
    for name, write in files.items():
        with atomic_path(directory / name) as tmp:
            write(str(tmp))


def save_hf(model: VideoMT, directory: str | os.PathLike, labels: list[str] | None = None) -> Path:
    """Write a directory that both we and ``VideomtForUniversalSegmentation.from_pretrained`` load."""
    from safetensors.torch import save_file

    directory = Path(directory)
    state = from_our_keys({k: v.detach().cpu() for k, v in model.state_dict().items()}, "hf")
    state["attn_mask_probs"] = torch.ones(model.config.num_query_blocks)
    # transformers builds its training loss at load time and expects this buffer (no-object weight 0.1).
    empty_weight = torch.ones(model.config.num_classes + 1)
    empty_weight[-1] = 0.1
    state["criterion.empty_weight"] = empty_weight
    config = config_to_hf(model.config, labels)
    _atomic_dir_write(directory, {
        HF_WEIGHTS: lambda tmp: save_file(state, tmp, metadata={"format": "pt"}),
        HF_CONFIG: lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"),
    })
    return directory


def save_official(model: VideoMT, path: str | os.PathLike) -> Path:
    """Write an official-format ``.pth`` (``{"model": sd}``), e.g. for round-trip tests."""
    path = Path(path)
    state = from_our_keys({k: v.detach().cpu() for k, v in model.state_dict().items()}, "official")
    state["backbone.attn_mask_probs"] = torch.ones(model.config.num_query_blocks)
    _atomic_dir_write(path.parent, {path.name: lambda tmp: torch.save({"model": state}, tmp)})
    return path


def save(model: VideoMT, path: str | os.PathLike, labels: list[str] | None = None, **meta) -> Path:
    """Write our own single-file format: ``.safetensors`` with config and labels in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise VideoMTError(f"Save our format to a .safetensors file, not {path.name}.")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": OUR_FORMAT, "config": json.dumps(model.config.to_dict())}
    if labels is not None:
        metadata["labels"] = json.dumps(list(labels))
    metadata.update({k: json.dumps(v) for k, v in meta.items()})
    _atomic_dir_write(path.parent, {path.name: lambda tmp: save_file(state, tmp, metadata=metadata)})
    return path
