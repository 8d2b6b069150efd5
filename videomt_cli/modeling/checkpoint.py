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

Two backbone families (``detect_family``), each with its own key table: DINOv2 (DESIGN 2.4) and
DINOv3 (DESIGN 2.5). The official DINOv3 layout was derived, not read from a released file (none
can be downloaded here); docs/dinov3.md says from where. In short: the official code loads
transformers' ``DINOv3ViTModel`` (4.56 layout) and renames it timm-style, ``embeddings`` ->
``patch_embed`` (keeping ``cls_token``, ``register_tokens``, ``patch_embeddings``; the mask token
deleted) and ``layer`` -> ``blocks`` (keeping ``attention.{q,k,v,o}_proj``, ``layer_scale{1,2}``,
``mlp.up_proj/down_proj``), so its keys read
``backbone.encoder.backbone.blocks.N.attention.q_proj.weight``. Accepted besides: the fused
``attention.qkv_proj.*`` of its ``FUSED_QKV`` option (the key third of the bias must be zero:
DINOv3 has no key bias), a zero ``k_proj.bias``, and ``rope_embeddings.inv_freq`` (a
non-persistent buffer in transformers, so normally absent; when present it is checked against the
values derived from theta and the head width, then dropped). Official files store neither
``norm_queries`` nor, for DINOv3, the training size: the registry supplies both for the released
files (matched by file name), ``load_model(config_overrides=...)`` for any other.
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

from videomt_cli.modeling.keys import (  # noqa: F401 - also the public names of checkpoint
    HF_CONFIG,
    HF_WEIGHTS,
    KeyReport,
    NO_HF_DINOV3,
    OUR_FORMAT,
    apply_overrides,
    config_from_hf,
    config_from_state,
    config_to_hf,
    detect_family,
    detect_format,
    from_our_keys,
    load_state,
    _short,
)


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



def _hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now: huggingface_hub reads it once at import, and transformers (or
    anything else) may have imported it before the user or a test set the variable."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or now.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_download(repo_id: str, filename: str, advice: str) -> Path:
    """One file of a hub repo, from the cache or downloaded; offline or failing, a CheckpointError
    naming the file and ending with ``advice`` (how to fetch it elsewhere and pass --model PATH)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a declared dependency
        raise CheckpointError("huggingface_hub is not installed; pass --model PATH to a local checkpoint.") from None
    import logging

    offline = _hub_offline()
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    try:
        # The hub logs each failed request as a warning; our one-line error says it all.
        hub_logger.setLevel(logging.ERROR)
        return Path(hf_hub_download(repo_id, filename, local_files_only=offline))
    except Exception as e:  # offline, no network, unknown repo, gated repo: all end the same way
        why = "offline mode (HF_HUB_OFFLINE) and not in the local cache" if offline else _short(e)
        raise CheckpointError(
            f"Could not fetch {filename} of {repo_id} from the Hugging Face hub ({why}). {advice}"
        ) from None
    finally:
        hub_logger.setLevel(level)


def _resolve_hub(repo_id: str) -> Path:
    """Download (or find in the cache) a hub repo's config and weights; clear error offline."""
    advice = (f"Download it on a connected machine (hf download {repo_id} --local-dir DIR), copy DIR "
              f"here and pass --model PATH to that folder.")
    folder = None
    for filename in (HF_CONFIG, HF_WEIGHTS):
        folder = _hub_download(repo_id, filename, advice).parent
    return folder


def _resolve_hub_file(repo_id: str, filename: str) -> Path:
    """One checkpoint file inside a hub repo (the official DINOv3 .pth files of tue-mps/VidEoMT)."""
    name = filename.rsplit("/", 1)[-1]
    advice = (f"Download it on a connected machine (hf download {repo_id} {filename} --local-dir DIR, or "
              f"https://huggingface.co/{repo_id}/resolve/main/{filename}), copy the file here and pass "
              f"--model PATH to it (keep its name {name}: videomt recognises the released files by name).")
    return _hub_download(repo_id, filename, advice)


# A missing "weights/model.pth" is a mistyped path, not a hub repo: say "does not exist".
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pkl", ".bin", ".ckpt", ".safetensors")


def looks_like_hub_id(text: str) -> bool:
    return (bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text)) and not os.path.exists(text)
            and not text.lower().endswith(_CHECKPOINT_SUFFIXES))


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, config_overrides: dict | None = None) -> Loaded:
    """Load a VidEoMT from an official ``.pth``, a Hugging Face dir or hub id, our ``.safetensors``,
    or a registry name (``videomt-mini-synth``, ``videomt-s-ytvis19``, ``videomt-l-ytvis19-dinov3``).

    ``config_overrides`` sets what a file cannot tell (``norm_queries``, LayerNorm eps, DINOv3's
    ``image_size``, ``num_heads``) and checks any other field against the file. A released
    official file (found by its file name in the registry, downloaded or a local copy) gets its
    entry's ``config`` that way: ``norm_queries=True`` for the VIPSeg and VSPW DINOv3 models.
    """
    from videomt_cli.modeling import registry

    text = str(source)
    path = Path(text).expanduser()
    entry = None if path.exists() else registry.get(text)
    if entry is not None and entry.hub_file is not None:
        path = _resolve_hub_file(entry.hub, entry.hub_file)
        text = str(path)
    elif entry is not None:
        text = entry.source()
        path = Path(text)
    if not path.exists():
        if looks_like_hub_id(text):
            path = _resolve_hub(text)
        else:
            raise CheckpointError(f"Checkpoint {text} does not exist; check the path or pass a hub id (org/name).")

    labels = None
    meta: dict = {}
    config_in_file = False  # our format: the config comes from the metadata, not from the shapes
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
            config_in_file = True
        else:
            config = config_from_state(state, fmt)
    else:
        state = _read_torch(path)
        fmt = detect_format(state)
        config = config_from_state(state, fmt)

    notes: list[str] = []
    try:
        if config_in_file:
            found = detect_family(state, fmt)
            if found != config.family and any(k.startswith("blocks.") for k in state):
                raise CheckpointError(f"its metadata describes a {config.family} model but its keys are "
                                      f"{found} ones (for example {next(iter(state))}).")
        released = registry.by_official_name(path.name) if path.is_file() else None
        if released is not None and released.config:
            config = apply_overrides(config, released.config, f"the registry entry {released.name}")
            notes.append(f"{path.name} is the released {released.name}: "
                         + ", ".join(f"{k}={v}" for k, v in released.config.items()) + " (weights/registry.json)")
        elif fmt == "official" and config.family == "dinov3" and not config_overrides:
            notes.append("official DINOv3 files store neither norm_queries nor the training size: assumed "
                         "norm_queries=False, image_size=640 (the YouTube-VIS releases; the VIPSeg and VSPW ones "
                         "need norm_queries=True, image_size=1280: load those by registry name or file name, or "
                         "pass config_overrides)")
        if config_overrides:
            config = apply_overrides(config, dict(config_overrides), "config_overrides")
        model = VideoMT(config)
        report = load_state(model, state, fmt)
    except CheckpointError as e:  # say which file: a user may be trying several
        raise CheckpointError(f"{path}: {e}") from None
    report.notes.extend(notes)
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

    if model.config.family != "dinov2":
        raise CheckpointError(NO_HF_DINOV3)
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


def save_official(model: VideoMT, path: str | os.PathLike, fused_qkv: bool = False) -> Path:
    """Write an official-format ``.pth`` (``{"model": sd}``), e.g. for round-trip tests; for DINOv3
    with separate q, k, v projections (as released) or, ``fused_qkv``, one ``qkv_proj``."""
    path = Path(path)
    state = from_our_keys({k: v.detach().cpu() for k, v in model.state_dict().items()}, "official",
                          family=model.config.family, fused_qkv=fused_qkv)
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

