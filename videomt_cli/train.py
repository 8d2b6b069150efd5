"""Training VidEoMT on a YouTube-VIS-format dataset: the library behind ``videomt train``.

    from videomt_cli.train import TrainConfig, train
    weights = train(TrainConfig(data="ytvis/train.json", output="runs/a", init="small", steps=2000))

The pieces, in the order a step uses them:

- ``ClipDataset``: a YouTube-VIS JSON (``videos`` with ``file_names`` of frames, or one video file,
  ``annotations`` with one segmentation per frame, ``categories``) -> clips of ``clip_frames``
  frames, augmented identically over the clip (horizontal flip, short side resized at random,
  random crop, optional colour jitter), normalised like the official preprocessing and padded to
  ``crop_size``; masks follow the same geometry. Sample number k is a pure function of
  (seed, k), which makes resuming exact and the worker count irrelevant.
- ``forward_train``: the model's own ``forward`` (so the final predictions ARE inference's) plus
  the auxiliary predictions from the tokens entering the query blocks.
- ``losses.VideoSetCriterion``: video-consistent matching and the class / mask / dice losses.
- AdamW with layer-wise lr decay and the two-stage warmup + polynomial decay (``param_groups``,
  ``TwoStageWarmupPoly``), full-model gradient clipping, bf16/fp16 autocast on GPU, fp32 on CPU.
- Checkpoints: ``NAME.safetensors`` (our format: config, labels, dataset category ids and this
  config in the metadata; any command loads it) next to ``NAME.resume.pt`` (optimiser, schedule,
  grad scaler, step, RNG states, data position). ``resume=`` continues exactly: the loss of step
  n + 1 after resuming equals the uninterrupted run's.

Official facts followed (tue-mps/videomt: ``train_net_video.py``, ``configs/ytvis19/...``,
``videomt/modeling/two_stage_warmup_poly_schedule.py``, ``videomt/modeling/backbone/videomt.py``,
``videomt/data_video/augmentation.py``), each a ``TrainConfig`` default:

- AdamW, lr 1e-4, weight decay 0.05 on every parameter (no exclusions), 8 clips of 5 frames a
  step, 40,000 steps (ViT-S/B on YouTube-VIS 2019; ViT-L 60,000, OVIS 160,000).
- Layer-wise lr decay 0.6 in every released DINOv2 VidEoMT config (the code default and EoMT's is
  0.8): block i of L gets lr * llrd^(L-1-i), the query blocks included; the patch embedding,
  position embedding and CLS/register tokens get block 0's rate; the final norm and everything
  VidEoMT adds (queries, query updater, heads, upscaler) the full lr.
- Two-stage warmup [500, 1000]: the added parameters warm up linearly over the first 500 steps
  while the ViT (final norm included) stays at 0, then the ViT warms up over the next 1000; each
  group then decays as (1 - progress)^0.9 over its remaining steps.
- Gradient clipping: the configs ask for full-model L2-norm clipping at 0.01 (EoMT's value too).
  Note: ``train_net_video.py`` overrides ``build_optimizer`` without detectron2's clipping wrapper,
  so the released models were probably trained without it; set ``grad_clip=0`` for that.
- Mixed precision (the configs enable AMP): bf16 autocast where the GPU supports it, else fp16 with
  a gradient scaler; fp32 on the CPU.
- Auxiliary predictions: the official network predicts (training only) before each of the k query
  blocks, from the raw tokens (no final LayerNorm: ``NORM_QUERIES`` is False for every DINOv2
  config), but its loss weights list only k - 1 auxiliary layers (``range(dec_layers - 1)``), so
  the prediction before the LAST query block is computed and then dropped. ``aux_loss="official"``
  does exactly that (blocks 0..k-2), ``"all"`` supervises all k, ``"none"`` none; ``aux_norm=True``
  applies the final LayerNorm first, as EoMT does.
- Augmentation: clip-consistent flip, resize of the short side (official: one of 320..640, long
  side at most 768) and crop; colour jitter off by default (the configs list none; when on we
  apply brightness/contrast/saturation factors in [1 - j, 1 + j], one draw per clip).
  Official batches keep each clip's own size (padded to 32); we crop or pad every clip to
  ``crop_size`` so clips stack.
- Frame sampling: the official sampler takes a random reference frame and ``clip_frames - 1``
  frames within +-2 of it (with replacement, sorted) (``sampling="range"``); the default here is
  ``"consecutive"``: ``clip_frames`` frames ``frame_stride`` apart from a random start (short
  videos repeat their last frame).
- Normalisation: (x - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375] on 0-255 RGB, padding
  (bottom/right) with 0 after normalisation; masks are 0 in the padding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset, Sampler

from videomt_cli import checkpoint
from videomt_cli.ytvis import image_root as _image_root
from videomt_cli.ytvis import load as _load_json
from videomt_cli.config import PRESETS, preset
from videomt_cli.errors import DatasetError, InputError, TrainingError
from videomt_cli.losses import ClipTarget, LossConfig, Predictions, VideoSetCriterion
from videomt_cli.model import VideoMT

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
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
    VidEoMT YouTube-VIS recipe (see the module docstring), except ``init`` and ``save_every``."""

    data: str  # a YouTube-VIS-format annotation JSON
    output: str  # folder for checkpoints
    init: str = "small"  # a preset name (from scratch) or any checkpoint checkpoint.load_model reads
    image_root: str | None = None  # where file_names are relative to (default: found next to the JSON)
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
_RESUME_FREE = {"output", "resume", "save_every", "num_workers", "device", "steps", "image_root", "precision"}


# ----------------------------------------------------------------------------- dataset


@dataclass
class _Track:
    label: int  # class-head index
    segmentations: list  # one entry per frame of the video: RLE, polygons or None


@dataclass
class _Video:
    id: object
    length: int
    height: int | None
    width: int | None
    frames: list[Path] | None = None  # image files, or
    video_file: Path | None = None  # one video file
    tracks: list[_Track] = field(default_factory=list)


class ClipDataset(Dataset):
    """Augmented training clips from a YouTube-VIS-format dataset.

    ``dataset[k]`` is sample number k of the run (not a video index): video ``perm_e[k % n]`` of the
    seeded permutation of epoch ``e = k // n``, with its frames and augmentation drawn from a
    generator seeded by (seed, k). Returns ``(frames (T, 3, H, W) float32 normalised and padded,
    ClipTarget with masks (N, T, H, W) bool, video id)``; tracks absent from the whole clip after
    augmentation are left out.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        json_path = Path(cfg.data).expanduser()
        data = _load_json(json_path)
        cats = data.get("categories")
        if not isinstance(cats, list) or not cats:
            raise DatasetError(f"{json_path} has no 'categories': list the classes as {{'id', 'name'}} entries.")
        cats = sorted(cats, key=lambda c: c["id"])  # class-head order: dataset ids ascending (official)
        self.category_ids = [int(c["id"]) for c in cats]
        self.labels = [str(c.get("name", c["id"])) for c in cats]
        head_index = {cid: i for i, cid in enumerate(self.category_ids)}
        root = _image_root(json_path, cfg.image_root, data["videos"])

        videos: dict = {}
        for v in data["videos"]:
            vid = v.get("id")
            if v.get("file_names"):
                frames = [root / name for name in v["file_names"]]
                for i, p in enumerate(frames):
                    if not p.exists():
                        raise DatasetError(f"frame {i} of video {vid} is missing: {p}")
                videos[vid] = _Video(vid, len(frames), v.get("height"), v.get("width"), frames=frames)
            elif v.get("file_name") or v.get("video"):
                p = root / (v.get("file_name") or v.get("video"))
                if not p.exists():
                    raise DatasetError(f"the video file of video {vid} is missing: {p}")
                length = v.get("length")
                videos[vid] = _Video(vid, int(length) if length else 0, v.get("height"), v.get("width"), video_file=p)
            else:
                raise DatasetError(f"video {vid} has neither 'file_names' (frames) nor 'file_name' (a video file).")

        annotations = data.get("annotations") or []
        for ann in annotations:
            vid = ann.get("video_id")
            if vid not in videos:
                raise DatasetError(f"annotation {ann.get('id')} refers to video {vid}, which is not in 'videos'.")
            cid = ann.get("category_id")
            if cid not in head_index:
                raise DatasetError(
                    f"annotation {ann.get('id')} of video {vid} has category_id {cid}, which is not one of the "
                    f"dataset's categories {self.category_ids}."
                )
            if ann.get("iscrowd", 0):
                continue  # crowd regions are not instances
            segs = ann.get("segmentations")
            video = videos[vid]
            if not isinstance(segs, list):
                raise DatasetError(f"annotation {ann.get('id')} of video {vid} has no 'segmentations' list.")
            if video.length == 0:
                video.length = len(segs)
            if len(segs) != video.length:
                raise DatasetError(
                    f"annotation {ann.get('id')} of video {vid} has {len(segs)} segmentations for a video of "
                    f"{video.length} frames: YouTube-VIS needs one per frame (null where absent)."
                )
            video.tracks.append(_Track(head_index[cid], segs))

        self.videos = [v for v in videos.values() if v.length > 0]
        if not self.videos:
            raise DatasetError(f"{json_path} is an empty dataset: it lists no videos with frames.")
        if not any(v.tracks for v in self.videos):
            raise DatasetError(
                f"{json_path} is an empty dataset: none of its {len(self.videos)} videos has annotations.")
        self._perm_cache: tuple[int, np.ndarray] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:  # the number of videos; samples are numbered without end
        return len(self.videos)

    # ------------------------------------------------------------------- sampling

    def video_for(self, k: int) -> _Video:
        n = len(self.videos)
        epoch, pos = divmod(k, n)
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, np.random.default_rng([self.cfg.seed, epoch, 7]).permutation(n))
        return self.videos[int(self._perm_cache[1][pos])]

    def frame_indices(self, length: int, rng: np.random.Generator) -> list[int]:
        T, cfg = self.cfg.clip_frames, self.cfg
        if cfg.sampling == "range":
            ref = int(rng.integers(length))
            near = [i for i in range(max(0, ref - cfg.frame_range), min(length, ref + cfg.frame_range + 1)) if i != ref]
            picked = rng.choice(near, T - 1).tolist() if near and T > 1 else [ref] * (T - 1)
            return sorted(picked + [ref])
        span = (T - 1) * cfg.frame_stride + 1
        start = int(rng.integers(length - span + 1)) if length >= span else 0
        return [min(start + i * cfg.frame_stride, length - 1) for i in range(T)]

    # ------------------------------------------------------------------- reading

    def _read_frames(self, video: _Video, indices: list[int]) -> list[np.ndarray]:
        if video.frames is not None:
            from PIL import Image

            out = {}
            for i in sorted(set(indices)):
                path = video.frames[i]
                try:
                    with Image.open(path) as im:
                        out[i] = np.asarray(im.convert("RGB"))
                except (OSError, ValueError) as e:
                    raise DatasetError(f"frame {i} of video {video.id} cannot be read: {path} ({e})") from None
            return [out[i] for i in indices]
        from videomt_cli import video as video_io

        wanted = set(indices)
        out = {}
        for frame in video_io.read_frames(video.video_file, start=min(indices), end=max(indices) + 1, count_rest=False):
            if frame.index in wanted:
                out[frame.index] = frame.image
        missing = sorted(wanted - set(out))
        if missing:
            raise DatasetError(f"frame {missing[0]} of video {video.id} could not be decoded from {video.video_file}.")
        return [out[i] for i in indices]

    @staticmethod
    def _decode(seg, h: int, w: int, where: str) -> np.ndarray | None:
        if seg is None or (isinstance(seg, list) and not seg):
            return None
        try:
            if isinstance(seg, dict):
                if list(seg.get("size", [h, w])) != [h, w]:
                    raise DatasetError(f"{where}: its RLE size {seg.get('size')} is not the frame size {[h, w]}.")
                rle = seg if not isinstance(seg["counts"], list) else coco_mask.frPyObjects(seg, h, w)
                if isinstance(rle.get("counts"), str):
                    rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            else:  # polygons
                rle = coco_mask.merge(coco_mask.frPyObjects(seg, h, w))
            with warnings.catch_warnings():  # pycocotools' numpy 2 DeprecationWarning, harmless
                warnings.simplefilter("ignore", DeprecationWarning)
                return coco_mask.decode(rle).astype(bool)
        except DatasetError:
            raise
        except Exception as e:  # pycocotools raises bare TypeErrors / ValueErrors on malformed input
            raise DatasetError(f"{where}: unreadable segmentation ({e}).") from None

    # ------------------------------------------------------------------- one sample

    def __getitem__(self, k: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, int(k)])
        video = self.video_for(int(k))
        indices = self.frame_indices(video.length, rng)
        images = self._read_frames(video, indices)
        h, w = images[0].shape[:2]
        for i, im in zip(indices, images):
            if im.shape[:2] != (h, w) or (video.height and video.width and (video.height, video.width) != (h, w)):
                raise DatasetError(
                    f"frame {i} of video {video.id} is {im.shape[1]}x{im.shape[0]}, but the video is annotated "
                    f"as {video.width or w}x{video.height or h}."
                )
        labels, masks = [], []
        for n, track in enumerate(video.tracks):
            per_frame = []
            for i in indices:
                m = self._decode(track.segmentations[i], h, w, f"frame {i} of track {n} in video {video.id}")
                per_frame.append(np.zeros((h, w), bool) if m is None else m)
            labels.append(track.label)
            masks.append(np.stack(per_frame))
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # (T, 3, h, w) 0..255
        mask_t = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, len(indices), h, w, dtype=torch.bool)
        pixels, mask_t = self.augment(pixels, mask_t, rng)
        keep = mask_t.flatten(1).any(1)
        target = ClipTarget(torch.tensor(labels, dtype=torch.long)[keep], mask_t[keep])
        return pixels, target, video.id

    def augment(self, pixels: Tensor, masks: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """One draw of flip / resize / crop / jitter for the whole clip; normalise and pad.

        pixels (T, 3, h, w) float 0..255, masks (N, T, h, w) bool -> (T, 3, H, W), (N, T, H, W) at
        ``crop_size``.
        """
        cfg = self.cfg
        T, _, h, w = pixels.shape
        if cfg.hflip and rng.random() < 0.5:
            pixels, masks = pixels.flip(-1), masks.flip(-1)
        short = int(rng.integers(cfg.short_side[0], cfg.short_side[1] + 1))
        scale = short / min(h, w)
        if max(h, w) * scale > cfg.max_long_side:
            scale = cfg.max_long_side / max(h, w)
        nh, nw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
        if (nh, nw) != (h, w):
            pixels = F.interpolate(pixels, size=(nh, nw), mode="bilinear", align_corners=False,
                                   antialias=nh < h).clamp_(0, 255)
            if masks.numel():
                masks = F.interpolate(masks.flatten(0, 1)[:, None].to(torch.uint8), size=(nh, nw),
                                      mode="nearest-exact")[:, 0].unflatten(0, masks.shape[:2]).bool()
            else:
                masks = masks.new_zeros(masks.shape[0], T, nh, nw)
        ch, cw = cfg.crop_size
        y0 = int(rng.integers(nh - min(nh, ch) + 1))
        x0 = int(rng.integers(nw - min(nw, cw) + 1))
        pixels = pixels[..., y0:y0 + ch, x0:x0 + cw]
        masks = masks[..., y0:y0 + ch, x0:x0 + cw]
        if cfg.color_jitter > 0:
            lo, hi = 1 - cfg.color_jitter, 1 + cfg.color_jitter
            b, c, s = (float(rng.uniform(lo, hi)) for _ in range(3))
            pixels = pixels * b
            mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
            pixels = (pixels - mean) * c + mean
            gray = (pixels * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            pixels = ((pixels - gray) * s + gray).clamp_(0, 255)
        mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
        pixels = (pixels - mean) / std
        ph, pw = ch - pixels.shape[-2], cw - pixels.shape[-1]
        if ph or pw:
            pixels = F.pad(pixels, (0, pw, 0, ph))
            masks = F.pad(masks, (0, pw, 0, ph))
        return pixels.contiguous(), masks.contiguous()


class ClipSampler(Sampler[int]):
    """Sample numbers ``start, start + 1, ...`` without end; the data position of a run."""

    def __init__(self, start: int = 0):
        self.start = int(start)

    def __iter__(self):
        k = self.start
        while True:
            yield k
            k += 1


def collate(batch) -> tuple[Tensor, list[ClipTarget], list]:
    frames = torch.stack([b[0] for b in batch])
    return frames, [b[1] for b in batch], [b[2] for b in batch]


# ----------------------------------------------------------------------------- model


@dataclass
class TrainOutputs:
    """What one training forward gives: the final predictions and the auxiliary ones (in block order)."""

    final: Predictions
    aux: list[Predictions]


def aux_blocks_for(num_query_blocks: int, mode: str) -> list[int]:
    """Which query blocks' inputs get an auxiliary prediction (see the module docstring)."""
    return {"official": list(range(num_query_blocks - 1)), "all": list(range(num_query_blocks)), "none": []}[mode]


def _capture(store: list, module: nn.Module, args: tuple) -> None:
    store.append(args[0])


def forward_train(model: VideoMT, frames: Tensor, aux_blocks: Sequence[int] | None = None,
                  aux_norm: bool = False) -> TrainOutputs:
    """frames (B, T, 3, H, W) -> final predictions (exactly ``model(frames)``'s) + auxiliary ones.

    The final predictions come from ``model.forward`` itself, so training supervises the very
    numbers inference produces. The auxiliary predictions are the EoMT/VidEoMT intermediate ones:
    the tokens entering query block j (queries included, for every frame in turn), captured by a
    forward pre-hook, through ``model.predict`` (after ``model.norm`` if ``aux_norm``).
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
        if aux_norm:
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


# ----------------------------------------------------------------------------- optimiser and schedule

_EMBEDDING_PARAMS = {"patch_embed", "cls_token", "reg_token", "pos_embed", "mask_token"}


def param_groups(model: VideoMT, lr: float, llrd: float, weight_decay: float) -> list[dict]:
    """AdamW groups with layer-wise lr decay; ``stage`` says which warmup a group follows.

    ViT ("backbone" stage): block i gets lr * llrd^(L-1-i), the embeddings block 0's rate, the final
    norm the full lr. Everything VidEoMT adds ("head" stage): the full lr.
    """
    L = model.config.num_layers
    groups: dict[tuple[str, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        top = name.split(".")[0]
        if top == "blocks":
            stage, rate = "backbone", lr * llrd ** (L - 1 - int(name.split(".")[1]))
        elif top in _EMBEDDING_PARAMS:
            stage, rate = "backbone", lr * llrd ** (L - 1)
        elif top == "norm":
            stage, rate = "backbone", lr
        else:
            stage, rate = "head", lr
        groups.setdefault((stage, rate), []).append(param)
    return [{"params": ps, "lr": rate, "stage": stage, "weight_decay": weight_decay}
            for (stage, rate), ps in groups.items()]


def warmup_poly_factor(step: int, stage: str, warmup: tuple[int, int], total: int, power: float) -> float:
    """The two-stage warmup + polynomial decay multiplier of the base lr at ``step`` (0-based)."""
    first, second = warmup
    if stage == "head":
        if first > 0 and step < first:
            return step / first
        done, span = step - first, total - first
    else:
        if step < first:
            return 0.0
        if step < first + second:
            return (step - first) / second
        done, span = step - first - second, total - first - second
    return max(0.0, 1.0 - max(0, done) / max(1, span)) ** power


class TwoStageWarmupPoly(LRScheduler):
    """EoMT's schedule: the "head" groups warm up first, then the "backbone" groups; both decay."""

    def __init__(self, optimizer, warmup: tuple[int, int], total_steps: int, power: float, last_epoch: int = -1):
        self.warmup = tuple(warmup)
        self.total_steps = total_steps
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * warmup_poly_factor(self.last_epoch, group["stage"], self.warmup, self.total_steps, self.power)
                for group, base in zip(self.optimizer.param_groups, self.base_lrs)]


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


def _atomic_torch_save(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(out_dir: Path, name: str, model: VideoMT, dataset: ClipDataset, cfg: TrainConfig, step: int,
                    optimizer, scheduler, scaler) -> Path:
    """Write ``NAME.safetensors`` (weights, config, labels, category ids, train config, step) and then
    ``NAME.resume.pt``; returns the weights' path."""
    out_dir.mkdir(parents=True, exist_ok=True)
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
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": _rng_state(),
        "train_config": cfg.to_dict(),
    }
    _atomic_torch_save(state, out_dir / f"{name}{RESUME_SUFFIX}")
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


def _pick_device(name: str) -> torch.device:
    """'auto': CUDA when available, else the CPU (training on Apple MPS is not supported)."""
    name = name.lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"Unknown --device {name!r}; use auto, cpu, cuda or cuda:N.") from None


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32."""
    if cfg.precision == "fp32" or (cfg.precision == "auto" and device.type != "cuda"):
        return None
    if cfg.precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


def optimizer_step(loss: Tensor, params, optimizer, scheduler, scaler, grad_clip: float) -> None:
    """Backward, optional full-model gradient clipping, optimiser and schedule step (the grad scaler
    unscales first, so clipping sees true gradients under fp16)."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()


def train(cfg: TrainConfig, progress: Progress | None = None) -> Path:
    """Train (or resume) and return the final weights' path (``OUTPUT/model.safetensors``).

    ``progress(step, total_steps, losses, lr)`` is called after every step with the step just done
    (1-based), the weighted loss terms and their total (``"loss"``) as floats, and the largest lr
    used in that step.
    """
    device = _pick_device(cfg.device)
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
    scheduler = TwoStageWarmupPoly(optimizer, cfg.effective_warmup(), cfg.steps, cfg.poly_power)
    start = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scheduler.total_steps != cfg.steps:  # training extended (or shortened): re-plan the decay
            scheduler.total_steps = cfg.steps
            for group, lr in zip(optimizer.param_groups, scheduler.get_lr()):
                group["lr"] = lr
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        start = int(resume["step"])

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
            save_checkpoint(out_dir, f"step_{done:07d}", model, dataset, cfg, done, optimizer, scheduler, scaler)
    return save_checkpoint(out_dir, "model", model, dataset, cfg, cfg.steps, optimizer, scheduler, scaler)
