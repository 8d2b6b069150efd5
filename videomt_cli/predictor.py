"""The streaming loop: decode ahead -> chunks of frames -> network with carried state -> results.

    predictor = Predictor.from_model("videomt-s-ytvis19", device="auto")
    result = predictor.run("input.mp4")          # a records.VideoResult
    with writers.open_sink("out.json") as sink:
        sink.add(result)

Memory stays constant in the video's length: frames are decoded in a bounded read-ahead queue,
the network sees ``chunk_size`` frames at a time with the query state carried across chunks (so
results do not depend on the chunk size), and post-processing keeps only compact per-query
evidence (see ``postprocess``). Panoptic and semantic models need the video-level class scores
before any mask can be decided, so their videos are decoded and run twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from videomt_cli import checkpoint, labels, postprocess, preprocess, registry, video
from videomt_cli.errors import InputError
from videomt_cli.records import Category, VideoInfo, VideoResult

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# progress(frames_done, frames_total or None, pass_index, passes)
Progress = Callable[[int, "int | None", int, int], None]


def keep_heap() -> bool:
    """Stop glibc from unmapping large freed blocks, process-wide. Each tensor over 32 MB was
    otherwise mapped afresh on every forward: ~17% of a ViT-S forward's CPU time went to page
    faults (benchmarks/README.md). Returns False where there is no glibc ``mallopt``."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; an unavailable device is a clear error."""
    name = name.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps was asked for but Apple MPS is not available; use --device cpu.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"Unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps.") from None


@dataclass
class TimeSpec:
    """A --start/--end value: a frame number ('120') or a time ('4.5s', '1:02.5', '0:01:02')."""

    frame: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str | None, option: str) -> "TimeSpec | None":
        if text is None:
            return None
        text = text.strip()
        if re.fullmatch(r"\d+", text):
            return cls(frame=int(text))
        m = re.fullmatch(r"(\d+(?:\.\d*)?)s", text)
        if m:
            return cls(seconds=float(m.group(1)))
        m = re.fullmatch(r"(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)", text)
        if m:
            hours, minutes, seconds = int(m.group(1) or 0), int(m.group(2)), float(m.group(3))
            return cls(seconds=hours * 3600 + minutes * 60 + seconds)
        raise InputError(
            f"{option} {text!r} is neither a frame number (120) nor a time (4.5s, 1:02.5); "
            f"frame numbers count from 0."
        )

    def reached(self, index: int, time: float) -> bool:
        return index >= self.frame if self.frame is not None else time >= self.seconds - 1e-9


def _frames_in(info: VideoInfo, start: TimeSpec | None, end: TimeSpec | None, stride: int) -> Iterator[video.Frame]:
    """The frames a run processes. Frame-number bounds go to the reader, which then skips the RGB
    conversion (the real cost of decoding) of every frame it does not yield; time bounds are only
    known per frame (variable frame rate), so those frames are filtered as they come."""
    if all(spec is None or spec.frame is not None for spec in (start, end)):
        return video.read_frames(info, start.frame if start else None, end.frame if end else None, stride)
    return _window(video.read_frames(info), start, end, stride)


def _window(frames: Iterable[video.Frame], start: TimeSpec | None, end: TimeSpec | None,
            stride: int) -> Iterator[video.Frame]:
    """Frames in [start, end) of the whole video, every ``stride``-th counted from the first kept."""
    first = None
    for frame in frames:
        if end is not None and end.reached(frame.index, frame.time):
            return
        if start is not None and not start.reached(frame.index, frame.time):
            continue
        if first is None:
            first = frame.index
        if (frame.index - first) % stride == 0:
            yield frame


@dataclass
class Predictor:
    """A loaded model plus everything needed to turn a video into a ``VideoResult``."""

    loaded: checkpoint.Loaded
    task: str
    categories: list[Category]
    device: torch.device
    dtype: torch.dtype = torch.float32
    min_size: int = 448
    max_size: int = 1333
    chunk_size: int = 8
    max_num: int = 10
    score_threshold: float = 0.0
    class_ids: set[int] | None = None
    entry: registry.ModelEntry | None = None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_model(cls, model: str | None = None, *, device: str = "auto", dtype: str = "fp32",
                   task: str | None = None, min_size: int | None = None, **options) -> "Predictor":
        """Load a model by registry name, hub id, directory or file (None: the registry default)."""
        entry = registry.default() if model is None else registry.match(model)
        source = entry.source() if model is None else model  # load_model resolves registry names
        if dtype not in DTYPES:
            raise InputError(f"Unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
        torch_device = pick_device(device)
        torch_dtype = DTYPES[dtype]
        warnings = []
        if torch_device.type == "cpu" and torch_dtype == torch.float16:
            warnings.append("fp16 on the CPU is slow and less accurate; bf16 is the CPU's fast path.")
        loaded = checkpoint.load_model(source, device=torch_device, dtype=torch_dtype)
        cats = _categories_for(loaded, entry)
        task = task or (entry.task if entry else "instance")
        if task not in registry.TASKS:
            raise InputError(f"Unknown --task {task!r}; use one of {', '.join(registry.TASKS)}.")
        defaults = {"max_num": entry.max_num} if entry else {}
        defaults.update({k: v for k, v in options.items() if v is not None})
        return cls(loaded=loaded, task=task, categories=cats, device=torch_device, dtype=torch_dtype,
                   min_size=min_size or (entry.min_size if entry else 448), entry=entry, warnings=warnings,
                   **defaults)

    @property
    def model(self):
        return self.loaded.model

    def select_classes(self, spec: list[str] | None) -> None:
        """Keep only these classes (names or dataset ids) in the final results."""
        self.class_ids = labels.resolve_classes(spec, self.categories) if spec else None

    # ------------------------------------------------------------------ the loop

    def run(self, source: str, *, start: TimeSpec | None = None, end: TimeSpec | None = None,
            stride: int = 1, video_id: int = 1, progress: Progress | None = None) -> VideoResult:
        """Segment one video (file or folder of frames) and return its video-level results."""
        if stride < 1:
            raise InputError(f"--stride must be 1 or more, got {stride}.")
        if self.chunk_size < 1:
            raise InputError(f"--chunk-size must be 1 or more, got {self.chunk_size}.")
        info = video.probe(source)
        _check_window(info, start, end)
        accumulator = postprocess.make_accumulator(
            self.task, self.categories, max_num=self.max_num, score_threshold=self.score_threshold,
            class_ids=self.class_ids,
        )
        geometry = preprocess.compute_geometry(info.height, info.width, self.min_size, self.max_size)
        total = _expected_frames(info, start, end, stride)
        processed: list[int] = []
        # The accumulator spills masks to a temporary file: close it on every exit (errors, Ctrl-C too).
        with accumulator:
            for pass_index in range(accumulator.passes):
                pass_info = info if pass_index == 0 else video.probe(source)
                frames = _frames_in(pass_info, start, end, stride)
                done = 0
                state = None
                with video.read_ahead(frames) as queue:
                    for chunk in _chunks(queue, self.chunk_size):
                        class_logits, mask_logits, state = self._forward(chunk, geometry, state)
                        indices = [f.index for f in chunk]
                        accumulator.add(pass_index, indices, class_logits, mask_logits, geometry)
                        if pass_index == 0:
                            processed.extend(indices)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total, pass_index, accumulator.passes)
                if pass_index == 0:
                    info = pass_info
            if not processed:
                raise InputError(f"No frame of {source} falls in the requested --start/--end range "
                                 f"(the video has {info.num_frames} frames).")
            segments = accumulator.result(num_frames=info.num_frames)
        return VideoResult(video=info, task=self.task, categories=self.categories, segments=segments,
                           video_id=video_id, processed=processed)

    @torch.inference_mode()
    def _forward(self, chunk: list[video.Frame], geometry, state):
        """uint8 frames -> (class logits (T, Q, K+1), mask logits (T, Q, h4, w4)) in float32, state."""
        images = torch.from_numpy(np.stack([f.image for f in chunk]))
        pixels = preprocess.preprocess(images, geometry, device=self.device, dtype=self.dtype)
        outputs, state = self.model(pixels.unsqueeze(0), state)
        return outputs.class_logits[0].float(), outputs.mask_logits[0].float(), state


def _chunks(frames: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _expected_frames(info: VideoInfo, start: TimeSpec | None, end: TimeSpec | None, stride: int) -> int | None:
    if info.num_frames is None:
        return None
    first = start.frame if start is not None and start.frame is not None else 0
    last = end.frame if end is not None and end.frame is not None else info.num_frames
    if (start is not None and start.seconds is not None) or (end is not None and end.seconds is not None):
        if not info.fps:
            return None
        rate = float(info.fps)
        if start is not None and start.seconds is not None:
            first = int(round(start.seconds * rate))
        if end is not None and end.seconds is not None:
            last = int(round(end.seconds * rate))
    last = min(last, info.num_frames)
    return max(0, (last - first + stride - 1) // stride)


def _check_window(info: VideoInfo, start: TimeSpec | None, end: TimeSpec | None) -> None:
    """Refuse a --start after the video's end or an --end before --start, before decoding."""
    if start is not None:
        if start.frame is not None and info.num_frames is not None and start.frame >= info.num_frames:
            raise InputError(f"--start {start.frame} is after the end of the video ({info.num_frames} frames).")
        if start.seconds is not None and info.duration is not None and start.seconds >= info.duration:
            raise InputError(f"--start {start.seconds:g}s is after the end of the video ({info.duration:.2f} s).")
    if start is not None and end is not None:
        same_unit = (start.frame is not None) == (end.frame is not None)
        if same_unit and (end.frame if end.frame is not None else end.seconds) <= (
                start.frame if start.frame is not None else start.seconds):
            raise InputError("--end must be after --start.")


def model_categories(model: str | None = None) -> list[Category]:
    """The categories (dataset ids and names, head order) a model's results use, e.g. to draw a
    results file again: a registry model's label table without loading it, else the checkpoint's."""
    entry = registry.default() if model is None else registry.match(model)
    if _has_table(entry):
        return labels.categories(entry.labels)
    return _categories_for(checkpoint.load_model(entry.source() if model is None else model), entry)


def _has_table(entry: registry.ModelEntry | None) -> bool:
    return entry is not None and labels.has_table(entry.labels)


def _categories_for(loaded: checkpoint.Loaded, entry: registry.ModelEntry | None) -> list[Category]:
    """The dataset's categories for a known model; else the checkpoint's names; else generic ones."""
    k = loaded.config.num_classes
    if _has_table(entry):
        cats = labels.categories(entry.labels)
        if len(cats) == k:
            return cats
    generic = labels.generic_categories(k, names=loaded.labels)
    ids = loaded.meta.get("category_ids")  # written by `videomt train`: the dataset's ids in head order
    if isinstance(ids, list) and len(ids) == k:
        for category, cid in zip(generic, ids):
            category.id = int(cid)
    return generic
