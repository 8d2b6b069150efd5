"""Training VidEoMT on a YouTube-VIS-format dataset: the library behind ``videomt train``.

    from videomt_cli.training.loop import TrainConfig, train
    weights = train(TrainConfig(data="ytvis/train.json", output="runs/a", init="small", steps=2000))

The pieces, in the order a step uses them:

- ``data.ClipDataset``: augmented clips of ``clip_frames`` frames from the dataset (see ``data``).
- ``forward_train``: the model's own ``forward`` (so the final predictions ARE inference's) plus
  the auxiliary predictions from the tokens entering the query blocks.
- ``losses.VideoSetCriterion``: video-consistent matching and the class / mask / dice losses.
- ``optim``: AdamW with layer-wise lr decay and the two-stage warmup + polynomial decay,
  full-model gradient clipping; bf16/fp16 autocast on GPU, fp32 on CPU.
- Checkpoints: ``NAME.safetensors`` (our format: config, labels, dataset category ids and this
  config in the metadata; any command loads it) next to ``NAME.resume.pt`` (optimiser, grad
  scaler, step, RNG states, data position). ``resume=`` continues exactly: the loss of step
  n + 1 after resuming equals the uninterrupted run's.

Official facts followed (tue-mps/videomt: ``train_net_video.py``, ``configs/ytvis19/...``,
``videomt/modeling/backbone/videomt.py``), each a ``TrainConfig`` default (the data and optimiser
ones are listed in ``data`` and ``optim``):

- 8 clips of 5 frames a step, 40,000 steps (ViT-S/B on YouTube-VIS 2019; ViT-L 60,000, OVIS 160,000).
- Mixed precision (the configs enable AMP): bf16 autocast where the GPU supports it, else fp16 with
  a gradient scaler; fp32 on the CPU.
- Auxiliary predictions: the official network predicts (training only) before each of the k query
  blocks, from the raw tokens (no final LayerNorm: ``NORM_QUERIES`` is False for every DINOv2
  config), but its loss weights list only k - 1 auxiliary layers (``range(dec_layers - 1)``), so
  the prediction before the LAST query block is computed and then dropped. ``aux_loss="official"``
  does exactly that (blocks 0..k-2), ``"all"`` supervises all k, ``"none"`` none; ``aux_norm=True``
  applies the final LayerNorm first, as EoMT does.
- DINOv3 (``--init`` a DINOv3 checkpoint; same loop, same parameter groups: our DINOv3 parameters
  carry the DINOv2 names, ``blocks.i.*``, ``patch_embed``, ``cls_token``, ``reg_token``, ``norm``).
  A model with ``norm_queries`` (the VIPSeg and VSPW DINOv3 configs' ``NORM_QUERIES``) takes its
  auxiliary predictions after the final LayerNorm too, as the official ``segmenter`` does under
  that flag, whatever ``aux_norm`` says. Not reproduced: the official DINOv3 backbone trains in
  transformers' train mode, which also jitters the rotary coordinates (``pos_embed_rescale`` of
  its backbone config; the hub config was not readable here); our rotary tables are the same in
  training and inference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from videomt_cli.errors import InputError, OutputError, TrainingError
from videomt_cli.io.atomic import atomic_path
from videomt_cli.modeling import checkpoint
from videomt_cli.modeling.config import PRESETS, preset
from videomt_cli.modeling.device import pick_device
from videomt_cli.modeling.model import VideoMT
from videomt_cli.training.data import ClipDataset, ClipSampler, collate
from videomt_cli.training.losses import LossConfig, Predictions, VideoSetCriterion
from videomt_cli.training.optim import optimizer_step, param_groups, warmup_poly_schedule

OFFICIAL_WARMUP = (500, 1000)
OFFICIAL_STEPS = 40_000
RESUME_SUFFIX = ".resume.pt"
_RESUME_FORMAT = "videomt-train-resume"

# progress(step, total_steps, losses by name, lr)
Progress = Callable[[int, int, dict, float], None]


# ----------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint. Defaults: the official
    VidEoMT YouTube-VIS recipe (see the docstrings of this module, ``data`` and ``optim``), except
    ``init`` and ``save_every``."""

    data: str  # a YouTube-VIS dataset JSON, a CVAT for video 1.1 XML or a COCO JSON with track ids
    output: str  # folder for checkpoints
    init: str = "small"  # a preset name (from scratch) or any checkpoint checkpoint.load_model reads
    image_root: str | None = None  # where file_names are relative to (default: found next to the JSON)
    video: str | None = None  # a CVAT/COCO file's video file or frame folder (default: the one it names)
    # optimisation
    steps: int = OFFICIAL_STEPS
    batch_size: int = 8
    lr: float = 1e-4
    llrd: float = 0.6
    weight_decay: float = 0.05
    warmup_steps: tuple[int, int] | None = None  # None: (500, 1000) scaled by steps / 40000
    poly_power: float = 0.9
    grad_clip: float = 0.01  # max full-model gradient L2 norm; 0 = off
    # data
    clip_frames: int = 5
    frame_stride: int = 1
    sampling: str = "consecutive"  # or "range" (official: reference frame +- frame_range)
    frame_range: int = 2
    crop_size: tuple[int, int] = (640, 640)  # (height, width), multiples of 32
    short_side: tuple[int, int] = (320, 640)  # random short side, inclusive
    max_long_side: int = 768
    hflip: bool = True
    color_jitter: float = 0.0  # 0 = off; j > 0: factors in [1 - j, 1 + j]
    num_workers: int = 0
    # loss
    num_points: int = 12544
    aux_loss: str = "official"  # "official" (before query blocks 0..k-2), "all", "none"
    aux_norm: bool = False
    # running
    device: str = "auto"
    precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16
    seed: int = 0
    save_every: int = 1000  # periodic checkpoints every N steps; 0 = only the final one
    resume: str | None = None  # a .resume.pt, its .safetensors, or an output folder (latest)

    def __post_init__(self) -> None:
        pair = lambda v: (int(v), int(v)) if isinstance(v, (int, float)) else tuple(int(x) for x in v)  # noqa: E731
        self.crop_size = pair(self.crop_size)  # a single number means a square
        self.short_side = pair(self.short_side)
        if self.warmup_steps is not None:
            self.warmup_steps = tuple(int(v) for v in self.warmup_steps)
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.clip_frames >= 1, f"clip_frames must be >= 1, got {self.clip_frames}"),
            (self.frame_stride >= 1, f"frame_stride must be >= 1, got {self.frame_stride}"),
            (self.sampling in ("consecutive", "range"),
             f"sampling must be consecutive or range, got {self.sampling!r}"),
            (len(self.crop_size) == 2 and all(v > 0 and v % 32 == 0 for v in self.crop_size),
             f"crop_size must be two positive multiples of 32 (height, width), got {self.crop_size}"),
            (len(self.short_side) == 2 and 0 < self.short_side[0] <= self.short_side[1],
             f"short_side must be (min, max) with 0 < min <= max, got {self.short_side}"),
            (self.max_long_side >= self.short_side[1], "max_long_side must be >= the largest short side"),
            (0 <= self.color_jitter < 1, f"color_jitter must be in [0, 1), got {self.color_jitter}"),
            (self.lr > 0 and 0 < self.llrd <= 1, "lr must be > 0 and llrd in (0, 1]"),
            (self.warmup_steps is None or (len(self.warmup_steps) == 2 and min(self.warmup_steps) >= 0),
             f"warmup_steps must be two counts >= 0, got {self.warmup_steps}"),
            (self.num_points >= 1, "num_points must be >= 1"),
            (self.aux_loss in ("official", "all", "none"),
             f"aux_loss must be official, all or none, got {self.aux_loss!r}"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"),
             f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}"),
            (self.save_every >= 0 and self.num_workers >= 0, "save_every and num_workers must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"Invalid training option: {message}.")

    def effective_warmup(self) -> tuple[int, int]:
        if self.warmup_steps is not None:
            return self.warmup_steps
        scale = min(1.0, self.steps / OFFICIAL_STEPS)
        return tuple(int(round(w * scale)) for w in OFFICIAL_WARMUP)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# Options that may change when resuming; every other one must match the interrupted run.
_RESUME_FREE = {"output", "resume", "save_every", "num_workers", "device", "steps", "image_root", "precision",
                "video"}


# ----------------------------------------------------------------------------- model


@dataclass
class TrainOutputs:
    """What one training forward gives: the final predictions and the auxiliary ones (in block order)."""

    final: Predictions
    aux: list[Predictions]


def aux_blocks_for(num_query_blocks: int, mode: str) -> list[int]:
    """Which query blocks' inputs get an auxiliary prediction (``aux_loss``; see the module docstring)."""
    return {"official": list(range(num_query_blocks - 1)), "all": list(range(num_query_blocks)), "none": []}[mode]


def _capture(store: list, module: nn.Module, args: tuple) -> None:
    store.append(args[0])


def forward_train(model: VideoMT, frames: Tensor, aux_blocks: Sequence[int] | None = None,
                  aux_norm: bool = False) -> TrainOutputs:
    """frames (B, T, 3, H, W) -> final predictions (exactly ``model(frames)``'s) + auxiliary ones.

    The final predictions come from ``model.forward`` itself, so training supervises the very
    numbers inference produces. The auxiliary predictions are the EoMT/VidEoMT intermediate ones:
    the tokens entering query block j (queries included, for every frame in turn), captured by a
    forward pre-hook, through ``model.predict`` (after ``model.norm`` if ``aux_norm`` or the model's
    ``config.norm_queries``, as the official code does under NORM_QUERIES).
    ``aux_blocks`` defaults to the official choice, blocks 0..k-2. The state is not detached:
    gradients flow through the propagation across the whole clip.
    """
    cfg = model.config
    blocks = aux_blocks_for(cfg.num_query_blocks, "official") if aux_blocks is None else list(aux_blocks)
    captured: dict[int, list[Tensor]] = {j: [] for j in blocks}
    hooks = [model.blocks[cfg.query_start + j].register_forward_pre_hook(partial(_capture, captured[j]))
             for j in blocks]
    try:
        out, _ = model(frames)
    finally:
        for h in hooks:
            h.remove()
    B, T = out.class_logits.shape[:2]
    grid = (frames.shape[-2] // cfg.patch_size, frames.shape[-1] // cfg.patch_size)
    aux = []
    for j in blocks:
        if len(captured[j]) != T:
            raise RuntimeError(f"query block {j} ran {len(captured[j])} times for {T} frames; forward_train "
                               f"expects model.forward to run each query block once per frame.")
        x = torch.stack(captured[j], 1).flatten(0, 1)  # (B*T, Q + P, C), video-major like forward
        if aux_norm or cfg.norm_queries:
            x = model.norm(x)
        class_logits, mask_logits = model.predict(x, grid)
        aux.append(Predictions(class_logits.unflatten(0, (B, T)), mask_logits.unflatten(0, (B, T))))
    return TrainOutputs(Predictions(out.class_logits, out.mask_logits), aux)


def _is_preset(name: str) -> bool:
    return name.lower() in PRESETS or name.lower() in ("s", "b", "l")


def build_model(init: str, labels: list[str], seed: int = 0) -> tuple[VideoMT, str]:
    """A model for ``labels`` (class-head order): from scratch (a preset name) or from a checkpoint.

    From a checkpoint, everything is kept except the class head when the class list changes: it is
    rebuilt with K + 1 rows; the no-object row and the rows of classes whose names the checkpoint
    also has (case-insensitive) are copied, the others start from the usual random init. With the
    same K and no names in the checkpoint, the head is kept as is. Returns (model, a note).
    """
    K = len(labels)
    torch.manual_seed(seed)
    if _is_preset(init):
        return VideoMT(preset(init, num_classes=K)), f"from scratch: {init} preset, {K} classes"
    loaded = checkpoint.load_model(init)
    model, old_names = loaded.model, loaded.labels
    old_k = model.config.num_classes
    same = old_k == K and (old_names is None or [n.lower() for n in old_names] == [n.lower() for n in labels])
    if same:
        return model, f"from {init}: all weights kept ({K} classes)"
    old = model.class_head
    head = nn.Linear(old.in_features, K + 1)
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    kept = 0
    with torch.no_grad():
        head.weight[K] = old.weight[old_k]
        head.bias[K] = old.bias[old_k]
        index = {n.lower(): i for i, n in enumerate(old_names or [])}
        for i, name in enumerate(labels):
            j = index.get(name.lower())
            if j is not None:
                head.weight[i], head.bias[i] = old.weight[j], old.bias[j]
                kept += 1
    model.class_head = head.to(old.weight.dtype)
    model.config = model.config.replace(num_classes=K)
    return model, f"from {init}: class head resized {old_k} -> {K} classes ({kept} kept by name), the rest kept"


# ----------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: Path, name: str, model: VideoMT, dataset: ClipDataset, cfg: TrainConfig, step: int,
                    optimizer, scaler) -> Path:
    """Write ``NAME.safetensors`` (weights, config, labels, category ids, train config, step) and then
    ``NAME.resume.pt``; returns the weights' path. The lr schedule is a function of the step: it is
    not saved (``optim.warmup_poly_schedule``)."""
    weights = out_dir / f"{name}.safetensors"
    checkpoint.save(model, weights, labels=dataset.labels, category_ids=dataset.category_ids,
                    train_config=cfg.to_dict(), step=step)
    state = {
        "format": _RESUME_FORMAT,
        "version": 1,
        "step": step,
        "weights": weights.name,
        "samples_seen": step * cfg.batch_size,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": _rng_state(),
        "train_config": cfg.to_dict(),
    }
    resume = out_dir / f"{name}{RESUME_SUFFIX}"
    try:
        with atomic_path(resume) as tmp:
            torch.save(state, tmp)
    except OSError as e:
        raise OutputError(f"Cannot write {resume}: {e.strerror or e}. Check the disk has room, or choose "
                          f"another --output.") from None
    return weights


def _resume_step(path: Path) -> int | None:
    """The step of a resume file, from its name (``step_N``) or its weights' metadata (cheap)."""
    stem = path.name[: -len(RESUME_SUFFIX)]
    if stem.startswith("step_") and stem[5:].isdigit():
        return int(stem[5:])
    try:
        from safetensors import safe_open

        with safe_open(str(path.with_name(stem + ".safetensors")), framework="pt") as f:
            return int(json.loads((f.metadata() or {})["step"]))
    except Exception:  # no weights beside it, or not ours: not a candidate
        return None


def find_resume(path: str | os.PathLike) -> Path:
    """A ``.resume.pt`` file, the ``.safetensors`` beside one, or a folder (its latest by step)."""
    p = Path(path).expanduser()
    if p.is_dir():
        steps = [(s, f) for f in p.glob(f"*{RESUME_SUFFIX}") if (s := _resume_step(f)) is not None]
        if not steps:
            raise InputError(f"No readable {RESUME_SUFFIX} file in {p}: nothing to resume.")
        return max(steps)[1]
    if p.suffix == ".safetensors":
        p = p.with_name(p.name[: -len(".safetensors")] + RESUME_SUFFIX)
    if not p.is_file():
        raise InputError(f"Resume file {p} does not exist.")
    return p


def _load_resume(path: Path, cfg: TrainConfig) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(f"{path} is not a readable resume file ({str(e).splitlines()[0][:160]}).") from None
    if not isinstance(state, dict) or state.get("format") != _RESUME_FORMAT:
        raise TrainingError(f"{path} is not a videomt training resume file.")
    old, new = state["train_config"], cfg.to_dict()
    changed = [k for k in new if k not in _RESUME_FREE and old.get(k) != new[k]]
    if "data" in changed and Path(old["data"]).expanduser().resolve() == Path(new["data"]).expanduser().resolve():
        changed.remove("data")
    if changed:
        diffs = ", ".join(f"{k} was {old.get(k)!r}, now {new[k]!r}" for k in changed)
        raise TrainingError(f"Cannot resume {path} exactly with different settings ({diffs}); pass the same "
                            f"options as the interrupted run, or start a new run.")
    if state["step"] >= cfg.steps:
        raise TrainingError(f"{path} is at step {state['step']}, already at or past steps={cfg.steps}; "
                            f"raise steps to train further.")
    weights = path.parent / state["weights"]
    if not weights.is_file():
        raise TrainingError(f"The weights of {path} are missing: {weights}.")
    state["weights_path"] = weights
    return state


# ----------------------------------------------------------------------------- the loop


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32."""
    if cfg.precision == "fp32" or (cfg.precision == "auto" and device.type != "cuda"):
        return None
    if cfg.precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


def train(cfg: TrainConfig, progress: Progress | None = None) -> Path:
    """Train (or resume) and return the final weights' path (``OUTPUT/model.safetensors``).

    ``progress(step, total_steps, losses, lr)`` is called after every step with the step just done
    (1-based), the weighted loss terms and their total (``"loss"``) as floats, and the largest lr
    used in that step.
    """
    device = pick_device(cfg.device, allow_mps=False)
    out_dir = Path(cfg.output).expanduser()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    dataset = ClipDataset(cfg)
    resume = _load_resume(find_resume(cfg.resume), cfg) if cfg.resume else None
    if resume is not None:
        loaded = checkpoint.load_model(resume["weights_path"])
        model = loaded.model
        if model.config.num_classes != dataset.num_classes:
            raise TrainingError(f"{resume['weights_path']} has {model.config.num_classes} classes, the dataset "
                                f"{dataset.num_classes}.")
    else:
        model, _ = build_model(cfg.init, dataset.labels, cfg.seed)
    model.to(device=device, dtype=torch.float32).train()

    amp_dtype = _precision(cfg, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    optimizer = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.llrd, cfg.weight_decay), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    start = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        start = int(resume["step"])
    # Built at the resumed step, so more (or fewer) steps than the interrupted run re-plan the decay.
    scheduler = warmup_poly_schedule(optimizer, cfg.effective_warmup(), cfg.steps, cfg.poly_power, done=start)

    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=ClipSampler(start * cfg.batch_size),
                        num_workers=cfg.num_workers, collate_fn=collate, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))
    batches = iter(loader)
    if resume is not None:
        _set_rng_state(resume["rng"])  # after the loader started: nothing else may draw before step n + 1

    criterion = VideoSetCriterion(dataset.num_classes, LossConfig(num_points=cfg.num_points))
    aux_blocks = aux_blocks_for(model.config.num_query_blocks, cfg.aux_loss)
    params = [p for p in model.parameters() if p.requires_grad]
    for step in range(start, cfg.steps):
        frames, targets, _ = next(batches)
        frames = frames.to(device, non_blocking=True)
        targets = [t.to(device) for t in targets]
        autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            outputs = forward_train(model, frames, aux_blocks, cfg.aux_norm)
        losses = criterion(outputs.final, targets, outputs.aux)
        if not torch.isfinite(losses.total):
            raise TrainingError(f"The loss became {float(losses.total)} at step {step + 1}; lower the lr "
                                f"(--lr) or train in fp32 (--precision fp32).")
        optimizer.zero_grad(set_to_none=True)
        lr_now = max(g["lr"] for g in optimizer.param_groups)
        optimizer_step(losses.total, params, optimizer, scheduler, scaler, cfg.grad_clip)
        if progress is not None:
            values = {"loss": float(losses.total.detach()), **{k: float(v.detach()) for k, v in losses.terms.items()}}
            progress(step + 1, cfg.steps, values, lr_now)
        done = step + 1
        if cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
            save_checkpoint(out_dir, f"step_{done:07d}", model, dataset, cfg, done, optimizer, scaler)
    return save_checkpoint(out_dir, "model", model, dataset, cfg, cfg.steps, optimizer, scaler)
