"""Training clips from a YouTube-VIS-format dataset: ``ClipDataset``, ``ClipSampler``, ``collate``.

The dataset file is read by ``io.ytvis`` (the reader evaluation and ``segment --dataset`` use),
frames by ``io.images.load_image`` (EXIF orientation applied, as inference does) or, for a video
file, ``io.read.read_frames``. Class-head order: the dataset's category ids ascending (official).

Official facts followed (tue-mps/videomt ``videomt/data_video/augmentation.py``), each a
``TrainConfig`` default:

- Augmentation: clip-consistent flip, resize of the short side (official: one of 320..640, long
  side at most 768) and crop; colour jitter off by default (the configs list none; when on we
  apply brightness/contrast/saturation factors in [1 - j, 1 + j], one draw per clip).
  Official batches keep each clip's own size (padded to 32); we crop or pad every clip to
  ``crop_size`` so clips stack.
- Frame sampling: the official sampler takes a random reference frame and ``clip_frames - 1``
  frames within +-2 of it (with replacement, sorted) (``sampling="range"``); the default here is
  ``"consecutive"``: ``clip_frames`` frames ``frame_stride`` apart from a random start (short
  videos repeat their last frame).
- Normalisation: inference's ``PIXEL_MEAN`` / ``PIXEL_STD`` on 0-255 RGB, padding (bottom/right)
  with 0 after normalisation; masks are 0 in the padding.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from videomt_cli.errors import DatasetError, VideoError
from videomt_cli.inference.preprocess import PIXEL_MEAN, PIXEL_STD
from videomt_cli.io import ytvis
from videomt_cli.io.images import load_image
from videomt_cli.training.losses import ClipTarget

if TYPE_CHECKING:
    from videomt_cli.training.loop import TrainConfig


@dataclass(frozen=True)
class Track:
    label: int  # class-head index
    segmentations: tuple  # one entry per frame of the video: RLE, polygons or None


@dataclass(frozen=True)
class TrainVideo:
    id: int
    length: int
    height: int | None
    width: int | None
    media: ytvis.Media  # frame files or one video file
    tracks: tuple[Track, ...]


class ClipDataset(Dataset):
    """Augmented training clips from a YouTube-VIS-format dataset.

    ``dataset[k]`` is sample number k of the run (not a video index): video ``perm_e[k % n]`` of the
    seeded permutation of epoch ``e = k // n``, with its frames and augmentation drawn from a
    generator seeded by (seed, k), which makes resuming exact and the worker count irrelevant.
    Returns ``(frames (T, 3, H, W) float32 normalised and padded, ClipTarget with masks
    (N, T, H, W) bool, video id)``; tracks absent from the whole clip after augmentation are left out.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        data = ytvis.read(cfg.data, video=cfg.video)
        cats = sorted(data.categories, key=lambda c: c.id)
        self.category_ids = [c.id for c in cats]
        self.labels = [c.name for c in cats]
        head_index = {cid: i for i, cid in enumerate(self.category_ids)}
        tracks: dict[int, list[Track]] = {v.id: [] for v in data.videos}
        for ann in data.annotations:
            if not ann.iscrowd:  # crowd regions are not instances
                tracks[ann.video_id].append(Track(head_index[ann.category_id], ann.segmentations))
        root = data.image_root(cfg.image_root)
        self.videos = [TrainVideo(v.id, v.length, v.height, v.width, data.media(v, root), tuple(tracks[v.id]))
                       for v in data.videos if v.length > 0]
        if not self.videos:
            raise DatasetError(f"{data.name} is an empty dataset: it lists no videos with frames.")
        if not any(v.tracks for v in self.videos):
            raise DatasetError(f"{data.name} is an empty dataset: none of its {len(self.videos)} videos has "
                               "annotations.")
        self._perm_cache: tuple[int, np.ndarray] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:  # the number of videos; samples are numbered without end
        return len(self.videos)

    # ------------------------------------------------------------------- sampling

    def video_for(self, k: int) -> TrainVideo:
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

    # ------------------------------------------------------------------- one sample

    def __getitem__(self, k: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, int(k)])
        video = self.video_for(int(k))
        indices = self.frame_indices(video.length, rng)
        images = read_clip(video, indices)
        h, w = images[0].shape[:2]
        for i, im in zip(indices, images):
            if im.shape[:2] != (h, w) or (video.height and video.width and (video.height, video.width) != (h, w)):
                raise DatasetError(
                    f"frame {i} of video {video.id} is {im.shape[1]}x{im.shape[0]}, but the video is annotated "
                    f"as {video.width or w}x{video.height or h}."
                )
        labels, masks = [], []
        for n, track in enumerate(video.tracks):
            per_frame = [decode_mask(track.segmentations[i], h, w, f"frame {i} of track {n} in video {video.id}")
                         for i in indices]
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


# ----------------------------------------------------------------------------- reading


def read_clip(video: TrainVideo, indices: list[int]) -> list[np.ndarray]:
    """The frames ``indices`` of a video as (H, W, 3) uint8 RGB, displayed orientation."""
    if video.media.frames:
        out = {}
        for i in sorted(set(indices)):
            try:
                out[i] = load_image(video.media.frames[i])
            except VideoError as e:
                raise DatasetError(f"frame {i} of video {video.id}: {e}") from None
        return [out[i] for i in indices]
    from videomt_cli.io.read import read_frames  # lazily: PyAV

    wanted = set(indices)
    picked = video.media.frame_indices  # the file's frames that are the video's (empty: all, in order)
    in_file = {(picked[i] if picked else i): i for i in wanted}
    out = {}
    for frame in read_frames(video.media.file, start=min(in_file), end=max(in_file) + 1, count_rest=False):
        if frame.index in in_file:
            out[in_file[frame.index]] = frame.image
    missing = sorted(wanted - set(out))
    if missing:
        raise DatasetError(f"frame {missing[0]} of video {video.id} could not be decoded from {video.media.file}.")
    return [out[i] for i in indices]


def decode_mask(seg, h: int, w: int, where: str) -> np.ndarray:
    """One per-frame segmentation -> (h, w) bool (all False where the track is absent)."""
    rle = ytvis.segmentation_rle(seg, h, w, where)
    if rle is None:
        return np.zeros((h, w), bool)
    try:
        with warnings.catch_warnings():  # pycocotools' numpy 2 DeprecationWarning, harmless
            warnings.simplefilter("ignore", DeprecationWarning)
            return coco_mask.decode(rle).astype(bool)
    except Exception as e:  # pycocotools raises bare TypeErrors / ValueErrors on malformed input
        raise DatasetError(f"{where}: unreadable segmentation ({e}).") from None


# ----------------------------------------------------------------------------- batching


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
