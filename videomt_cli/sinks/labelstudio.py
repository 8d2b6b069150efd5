"""Label Studio tasks with our results as predictions, plus the labeling config they fit. No torch.

The output is a Label Studio tasks file (a JSON list, what "Import" takes) and, beside it,
``<name>.config.xml``: the labeling config to paste into the project ("Labeling Interface" ->
"Code"), whose tag names the results refer to. Every task carries one prediction,
``{"model_version": "videomt", "score": <mean score of its results>, "result": [...]}``, and every
result its own ``score``.

``kind="video"`` (the "Video Object Tracking" template: Label Studio has box tracks for video and
no video masks): one task per video, ``data.video`` the video's URL (``video_url``, which may hold
``{name}`` for the video's name and ``{file}`` for its file name when a file holds several videos;
else the video's path) and ``data.fps`` its frame rate (the config reads ``framerate="$fps"``).
One ``videorectangle`` result per track (``from_name="box"``, ``to_name="video"``, ``labels`` the
category's name) whose ``value.sequence`` has a keyframe for every processed frame where the track
has pixels: ``frame`` 1-based, ``time = frame / fps`` (what Label Studio's own serializer writes,
``web/libs/editor/src/regions/VideoRegion.js``), the mask's bounding box as ``x``, ``y``,
``width``, ``height`` in percent of the frame, ``rotation`` 0, and ``enabled``. Label Studio
(``VideoRegion.isInLifespan``, ``VideoRectangleRegion.getShape``) shows a box on a frame when the
last keyframe at or before it is enabled (or is on that very frame), and between two keyframes it
interpolates linearly. So a keyframe is enabled exactly when the track is also present on the next
processed frame: frames skipped by ``--stride`` between two present frames are interpolated, and
the box ends after the last frame before a processed frame without the object, and at the end.

``kind="images"`` (the "Semantic Segmentation with Masks" template: masks need one image per
task): one task per processed frame, ``data.image`` the frame's file name as the YouTube-VIS
files name it (``<video>/00000.jpg``, or an image folder's own names), under ``image_root`` when
given (a URL or storage prefix where the extracted frames are served), plus ``data.video`` and
``data.frame`` (0-based). One ``brushlabels`` result per track with pixels in that frame
(``from_name="tag"``, ``to_name="image"``), ``value.format = "rle"`` and ``value.rle`` in Label
Studio's own brush RLE: the frame's RGBA bytes (every channel 255 inside the mask, 0 outside,
row-major) packed as ``label_studio_sdk.converter.brush.encode_rle`` packs them (byte-identical
to its ``mask2rle(mask * 255)``; computed here with numpy, since the SDK cannot be installed beside
this project's numpy and OpenCV pins, and its encoder is a Python loop over runs).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from videomt_cli.errors import InputError, OutputError
from videomt_cli.io import masks as mask_ops
from videomt_cli.io.atomic import AtomicPath, fsync_file
from videomt_cli.records import Category, VideoResult
from videomt_cli.sinks.base import StreamSink, category_name, frame_file_names, video_name, writes

KINDS = ("video", "images")
MODEL_VERSION = "videomt"
DEFAULT_FPS = 24.0  # Label Studio's own default frame rate of the Video tag

# Tag names of the two templates (Label Studio's "Video Object Tracking" and "Semantic
# Segmentation with Masks"); results refer to them in from_name / to_name.
VIDEO_OBJECT, VIDEO_BOX, VIDEO_LABELS = "video", "box", "videoLabels"
IMAGE_OBJECT, IMAGE_BRUSH = "image", "tag"


def config_path(path: str | os.PathLike) -> Path:
    """Where the labeling config of a tasks file goes: ``tasks.json`` -> ``tasks.config.xml``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.config.xml")


def _attr(value: str) -> str:
    """An XML attribute value in double quotes (``&``, ``<``, ``>`` and ``"`` escaped)."""
    return '"' + escape(str(value), {'"': "&quot;"}) + '"'


def _hex(color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in color))


def labeling_config(categories: list[Category], kind: str = "video") -> str:
    """The labeling config XML for tasks of ``kind``, one ``Label`` per category (its colour)."""
    if kind not in KINDS:
        raise InputError(f"Unknown Label Studio task kind {kind!r}; choose one of {', '.join(KINDS)}.")
    labels = "\n".join(f"    <Label value={_attr(c.name)} background={_attr(_hex(c.color))}/>"
                       for c in categories)
    if kind == "video":
        return (f'<View>\n'
                f'  <Labels name="{VIDEO_LABELS}" toName="{VIDEO_OBJECT}" allowEmpty="true">\n{labels}\n  </Labels>\n'
                f'  <Video name="{VIDEO_OBJECT}" value="${VIDEO_OBJECT}" framerate="$fps"/>\n'
                f'  <VideoRectangle name="{VIDEO_BOX}" toName="{VIDEO_OBJECT}"/>\n'
                f'</View>\n')
    return (f'<View>\n'
            f'  <Image name="{IMAGE_OBJECT}" value="${IMAGE_OBJECT}" zoom="true"/>\n'
            f'  <BrushLabels name="{IMAGE_BRUSH}" toName="{IMAGE_OBJECT}">\n{labels}\n  </BrushLabels>\n'
            f'</View>\n')


# ----------------------------------------------------------------------------- brush RLE

# encode_rle's parameters: 8-bit words, run-length fields of 3, 4, 8 or 16 bits.
_WORD = 8
_RLE_SIZES = (3, 4, 8, 16)
_HEADER_BITS = 32 + 5 + 4 * len(_RLE_SIZES)


def brush_rle(mask: np.ndarray) -> list[int]:
    """A (H, W) mask -> Label Studio's brush RLE (a list of byte values).

    The stream (``@thi.ng/rle-pack``, as ``label_studio_sdk.converter.brush`` writes it): a
    header of the value count (32 bits, here H * W * 4: RGBA), the word size - 1 (5 bits) and the
    four run-field sizes - 1 (4 bits each); then per run of equal values a flag bit (1 = a
    repeated run), 2 bits choosing the run-field size, the run length - 1 in that many bits and
    the value in 8 bits (runs longer than 65536 split into 65536-long pieces first), zero bits to
    a whole byte after (a whole zero byte when already whole, as the SDK pads)."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a non-empty (H, W) array, got shape {m.shape}")
    pixels = (m != 0).reshape(-1)  # row-major, as the SDK's mask.ravel()
    starts = np.concatenate([[0], np.flatnonzero(pixels[1:] != pixels[:-1]) + 1])
    lengths = np.diff(np.append(starts, pixels.size)).astype(np.int64) * 4  # each pixel is 4 bytes
    values = np.where(pixels[starts], 255, 0).astype(np.int64)
    # Runs over 65536 values go out as full 65536-long pieces, then the rest.
    full = (lengths - 1) // 65536
    pieces = full + 1
    lengths_out = np.full(int(pieces.sum()), 65536, np.int64)
    last = np.cumsum(pieces) - 1
    lengths_out[last] = lengths - full * 65536
    values_out = np.repeat(values, pieces)
    # The field size is the smallest of 3/4/8/16 bits that holds length - 1 (a run of 1 value is
    # the "single value" form: flag 0, field 0, three zero bits, the value, the same layout).
    idx = np.searchsorted(np.array([8, 16, 256]), lengths_out, side="left")
    field = np.array(_RLE_SIZES, np.int64)[idx]
    flag = (lengths_out > 1).astype(np.int64)
    widths = 1 + 2 + field + _WORD
    codes = (flag << (widths - 1)) | (idx << (field + _WORD)) | ((lengths_out - 1) << _WORD) | values_out
    header = (pixels.size * 4) << (_HEADER_BITS - 32)
    header |= (_WORD - 1) << (4 * len(_RLE_SIZES))
    for k, size in enumerate(_RLE_SIZES):
        header |= (size - 1) << (4 * (len(_RLE_SIZES) - 1 - k))
    codes = np.concatenate([[header], codes])
    widths = np.concatenate([[_HEADER_BITS], widths])
    # Every token's bits, most significant first, one after the other.
    total = int(widths.sum())
    token = np.repeat(np.arange(len(widths)), widths)
    offset = np.arange(total) - np.repeat(np.cumsum(widths) - widths, widths)
    bits = ((codes[token] >> (widths[token] - 1 - offset)) & 1).astype(np.uint8)
    pad = 8 - total % 8  # 1..8, exactly as the SDK pads
    bits = np.concatenate([bits, np.zeros(pad, np.uint8)])
    return np.packbits(bits).tolist()


# ----------------------------------------------------------------------------- the sink


class LabelStudioSink(StreamSink):
    """Label Studio tasks (``kind="video"``: box tracks per video; ``"images"``: brush masks per
    frame) with the labeling config beside them (:func:`config_path`). See the module docstring."""

    format = "labelstudio"

    def __init__(self, path, overwrite: bool = False, video_url: str | None = None, kind: str = "video",
                 image_root: str | None = None) -> None:
        key = str(kind).strip().lower()
        if key not in KINDS:
            raise InputError(f"Unknown Label Studio task kind {kind!r} (--ls-kind); choose one of {', '.join(KINDS)}.")
        self.kind = key
        self.video_url = video_url
        self.image_root = image_root
        self.config_path = config_path(path)
        super().__init__(path, overwrite)
        if (self.config_path.exists() or self.config_path.is_symlink()) and not overwrite:
            raise OutputError(f"{self.config_path} (the labeling config written beside {self.path}) already exists; "
                              f"use --overwrite to replace it.")
        self.categories: dict[int, Category] = {}
        self._config_out: AtomicPath | None = None
        self._first = True
        self._urls: set[str] = set()

    def _begin(self) -> None:
        super()._begin()
        self._f.write(b"[")

    def _task(self, task: dict) -> None:
        self._f.write(b"\n" if self._first else b",\n")
        self._f.write(json.dumps(task, separators=(",", ":"), allow_nan=False).encode("utf-8"))
        self._first = False

    @writes
    def add(self, result: VideoResult) -> None:
        self.open()
        for c in result.categories:
            self.categories.setdefault(c.id, c)
        if self.kind == "video":
            self._task(self._video_task(result))
        else:
            names = frame_file_names(result)
            for frame in result.processed:
                self._task(self._image_task(result, frame, names[frame]))
        self.count += 1

    # -- video tasks

    def _url(self, result: VideoResult) -> str:
        if self.video_url is None:
            return result.video.path
        url = self.video_url.replace("{name}", video_name(result)).replace(
            "{file}", Path(result.video.path.rstrip("/\\")).name)
        if url in self._urls:
            raise OutputError(f"--video-url {self.video_url!r} gives every video the same URL {url!r}; put {{name}} "
                              f"or {{file}} in it (the video's name or file name) or write one video per file.")
        self._urls.add(url)
        return url

    def _video_task(self, result: VideoResult) -> dict:
        info = result.video
        fps = float(info.fps) if info.fps else DEFAULT_FPS
        if not info.fps:
            self.warnings.append(f"{info.path} has no frame rate; the Label Studio task uses {DEFAULT_FPS:g} fps "
                                 f"(Label Studio's default).")
        n = result.num_frames
        duration = float(info.duration) if info.duration else n / fps
        processed = list(result.processed)
        regions = []
        for seg in result.segments:
            masks = [result.mask(seg, f) for f in processed]
            areas = mask_ops.areas([m for m in masks if m is not None]).tolist()
            boxes = mask_ops.bboxes([m for m in masks if m is not None]).tolist()
            present: dict[int, list[float]] = {}
            k = 0
            for f, m in zip(processed, masks):
                if m is None:
                    continue
                if areas[k]:
                    present[f] = boxes[k]
                k += 1
            if not present:
                continue
            sequence = []
            for pos, f in enumerate(processed):
                if f not in present:
                    continue
                x, y, w, h = present[f]
                following = processed[pos + 1] if pos + 1 < len(processed) else None
                sequence.append({
                    "frame": f + 1, "time": (f + 1) / fps, "enabled": following in present,
                    "x": 100.0 * x / info.width, "y": 100.0 * y / info.height,
                    "width": 100.0 * w / info.width, "height": 100.0 * h / info.height, "rotation": 0,
                })
            regions.append({
                "id": f"track{seg.track_id}", "type": "videorectangle", "from_name": VIDEO_BOX,
                "to_name": VIDEO_OBJECT, "origin": "prediction", "score": float(seg.score),
                "value": {"framesCount": n, "duration": duration, "sequence": sequence,
                          "labels": [category_name(result, seg.category_id)]},
            })
        data = {VIDEO_OBJECT: self._url(result), "fps": fps, "video_id": result.video_id}
        return {"data": data, "predictions": [self._prediction(regions)]}

    # -- image tasks

    def _image_task(self, result: VideoResult, frame: int, name: str) -> dict:
        info = result.video
        regions = []
        for seg, mask in result.masks_at(frame):
            regions.append({
                "id": f"track{seg.track_id}", "type": "brushlabels", "from_name": IMAGE_BRUSH,
                "to_name": IMAGE_OBJECT, "origin": "prediction", "score": float(seg.score),
                "original_width": info.width, "original_height": info.height, "image_rotation": 0,
                "value": {"format": "rle", "rle": brush_rle(mask),
                          "brushlabels": [category_name(result, seg.category_id)]},
            })
        image = f"{self.image_root.rstrip('/')}/{name}" if self.image_root else name
        data = {IMAGE_OBJECT: image, "video": info.path,
                "frame": frame, "video_id": result.video_id}
        return {"data": data, "predictions": [self._prediction(regions)]}

    @staticmethod
    def _prediction(regions: list[dict]) -> dict:
        scores = [r["score"] for r in regions]
        mean = math.fsum(scores) / len(scores) if scores else None
        return {"model_version": MODEL_VERSION, "score": mean, "result": regions}

    # -- finishing: the tasks file and the config beside it

    def labeling_config(self) -> str:
        return labeling_config(sorted(self.categories.values(), key=lambda c: c.id), self.kind)

    def _finish(self) -> None:
        self._f.write(b"\n]\n")
        super()._finish()
        self._config_out = AtomicPath(self.config_path, overwrite=self.overwrite)
        with open(self._config_out.tmp, "w", encoding="utf-8") as f:
            f.write(self.labeling_config())
            fsync_file(f)

    def close(self) -> None:
        if self._closed:
            return
        super().close()  # the tasks file is in place
        with self._aborting():
            self._config_out.commit()

    def _release(self) -> None:
        super()._release()
        out, self._config_out = self._config_out, None
        if out is not None:
            out.discard()
