"""The engine: any source -> frames -> chunks -> network with carried state -> results.

    predictor = Predictor.from_model("videomt-s-ytvis19", device="auto")
    for frame in predictor.stream("input.mp4"):       # one FrameResult per frame, as it happens
        print(frame.index, frame.track_ids, frame.scores)
    result = predictor.run("input.mp4")               # the video-level VideoResult
    with result, open_sink("out.json") as sink:
        sink.add(result)

Both in one pass: ``stream = predictor.stream(src)``, iterate it, then ``stream.result``.

Every source goes the same way (DESIGN 5): a reader yields frames, the shortest-edge resize runs
beside it in the read-ahead thread, chunks of ``chunk_size`` frames go through the network with
the query state carried across chunks (so nothing depends on the chunk size), and the
accumulator turns each chunk into per-frame online results and, at the end, the video-level
ones. Memory stays constant in the video's length: frames wait in a bounded queue, masks in a
spill file. Panoptic and semantic models need the video-level class scores before any mask can
be decided, so their videos are read and run twice (see ``postprocess``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from videomt_cli.errors import InputError
from videomt_cli.inference import postprocess, preprocess
from videomt_cli.io import masks as mask_ops
from videomt_cli.io.prefetch import read_ahead
from videomt_cli.io.read import Frame, Source, open_source
from videomt_cli.io.window import Window
from videomt_cli.modeling import checkpoint, labels, registry
from videomt_cli.modeling.device import pick_device, pick_dtype
from videomt_cli.records import TASKS, Category, FrameResult, Timeline, VideoResult

# progress(frames_done, frames_total or None, pass_index, passes)
Progress = Callable[[int, "int | None", int, int], None]

OPTIONS = ("device", "dtype", "task", "min_size", "max_size", "chunk_size", "max_num", "score_threshold",
           "read_ahead")


def _check_int(name: str, value, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high and value > high):
        bound = f"{low}..{high}" if high else f">= {low}"
        raise InputError(f"{name} must be a whole number {bound}, got {value!r}.")


def check_options(options: dict) -> None:
    """Refuse unknown, misspelled or out-of-range options before anything loads."""
    for key in options:
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InputError(f"Unknown option {key!r}.{hint} Options: {', '.join(OPTIONS)}.")
    o = {k: v for k, v in options.items() if v is not None}
    if "task" in o and o["task"] not in TASKS:
        raise InputError(f"Unknown --task {o['task']!r}; use one of {', '.join(TASKS)}.")
    if "dtype" in o:
        pick_dtype(o["dtype"])
    for name, low, high in (("chunk_size", 1, 4096), ("min_size", 32, 4096), ("max_size", 32, 8192),
                            ("max_num", 1, 10000), ("read_ahead", 1, 1024)):
        if name in o:
            _check_int("--" + name.replace("_", "-"), o[name], low, high)
    if "score_threshold" in o:
        t = o["score_threshold"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise InputError(f"--score-threshold must be a number in 0..1, got {t!r}.")


@dataclass(frozen=True)
class Predictor:
    """A loaded model and the settings that turn a source into results. Nothing mutates it:
    per-run choices (window, classes) are arguments of :meth:`stream` and :meth:`run`."""

    loaded: checkpoint.Loaded = field(repr=False)
    task: str
    categories: tuple[Category, ...]
    device: torch.device
    dtype: torch.dtype = torch.float32
    min_size: int = 448
    max_size: int = 1333
    chunk_size: int = 8
    max_num: int = 10
    score_threshold: float = 0.0
    read_ahead: int = 8
    entry: registry.ModelEntry | None = None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @classmethod
    def from_model(cls, model: str | None = None, **options) -> "Predictor":
        """Load a model by registry name, hub id, directory or file (None: the registry default).

        options: device ("auto"), dtype ("fp32"), task, min_size, max_size, chunk_size, max_num,
        score_threshold, read_ahead; checked before the model loads (``InputError``)."""
        check_options(options)
        o = {k: v for k, v in options.items() if v is not None}
        entry = registry.default() if model is None else registry.match(model)
        source = entry.source() if model is None else model  # load_model resolves registry names
        device = pick_device(o.pop("device", "auto"))
        dtype = pick_dtype(o.pop("dtype", "fp32"))
        warnings, notes = [], []
        if device.type == "cpu" and dtype == torch.float16:
            warnings.append("fp16 on the CPU is slow and less accurate; bf16 is the CPU's fast path.")
        loaded = checkpoint.load_model(source, device=device, dtype=dtype)
        if model is None and entry is not None and entry.file is not None:
            notes.append(f"{entry.name} is a small demo model trained on synthetic shapes (circle, square, "
                         f"triangle); `videomt models` lists the released VidEoMT models (--model NAME).")
        task = o.pop("task", None) or (entry.task if entry else "instance")
        o.setdefault("min_size", entry.min_size if entry else 448)
        if entry is not None:
            o.setdefault("max_num", entry.max_num)
        return cls(loaded=loaded, task=task, categories=tuple(_categories_for(loaded, entry)), device=device,
                   dtype=dtype, entry=entry, warnings=tuple(warnings), notes=tuple(notes), **o)

    @property
    def model(self):
        return self.loaded.model

    # ------------------------------------------------------------------ the two verbs

    def stream(self, source, *, start=None, end=None, stride: int = 1, classes=None, fps=None,
               video_id: int = 1, final: bool = True, progress: Progress | None = None) -> "Stream":
        """Per-frame results as they happen: a :class:`Stream` yielding one :class:`FrameResult`
        per processed frame; after the last one, ``stream.result`` is the video-level result
        (``final=False``: none, for sources that can be read only once).

        source: a video file, a folder of frames, a ``Source``, or an iterable of (H, W, 3) uint8
        RGB arrays (``fps`` gives their rate, default 30). start/end: frame numbers or times
        ('4.5s'); stride: every Nth frame; classes: names or dataset ids to keep.
        """
        return Stream(self, source, Window.of(start, end, stride), self._class_ids(classes), fps, video_id,
                      final=final, online=True, progress=progress)

    def run(self, source, *, start=None, end=None, stride: int = 1, classes=None, fps=None, video_id: int = 1,
            progress: Progress | None = None) -> VideoResult:
        """The video-level result of one source (as :meth:`stream` takes), exactly as the official
        evaluation computes it. Close it (or use ``with``) when written."""
        stream = self.prepare_run(source, start=start, end=end, stride=stride, classes=classes, fps=fps,
                                  video_id=video_id, progress=progress)
        for _ in stream:
            pass
        return stream.result

    def prepare_run(self, source, *, start=None, end=None, stride: int = 1, classes=None, fps=None,
                    video_id: int = 1, progress: Progress | None = None) -> "Stream":
        """The :class:`Stream` that :meth:`run` drives (video-level result, no online selections):
        for drivers that make the network calls themselves (``lockstep``)."""
        return Stream(self, source, Window.of(start, end, stride), self._class_ids(classes), fps, video_id,
                      final=True, online=False, progress=progress)

    def _class_ids(self, classes) -> set[int] | None:
        if classes is None:
            return None
        spec = [classes] if isinstance(classes, (str, int)) else list(classes)
        return labels.resolve_classes([str(c) for c in spec], list(self.categories)) or None

    # ------------------------------------------------------------------ steps

    def geometry(self, height: int, width: int) -> preprocess.Geometry:
        return preprocess.compute_geometry(height, width, self.min_size, self.max_size)

    def accumulator(self, geometry, class_ids=None, online: bool = False,
                    keep_masks: bool = True) -> postprocess.Accumulator:
        return postprocess.make_accumulator(self.task, list(self.categories), geometry, max_num=self.max_num,
                                            score_threshold=self.score_threshold, class_ids=class_ids, online=online,
                                            keep_masks=keep_masks)

    def prepared(self, frames: Iterable[Frame], geometry) -> Iterator[tuple[Frame, np.ndarray]]:
        """(frame, network-ready uint8 image): the host part of preprocessing, run where it is
        iterated (the read-ahead thread)."""
        for frame in frames:
            yield frame, preprocess.host_resize(frame.image, geometry, self.device)

    @torch.inference_mode()
    def forward(self, images: list[np.ndarray], geometry, state):
        """Prepared uint8 frames of one video -> (class logits (T, Q, K+1), mask logits (T, Q, h4, w4))
        in float32, and the new state."""
        return self.forward_batch([ChunkRequest(images, geometry, state)])[0]

    @torch.inference_mode()
    def forward_batch(self, requests: list["ChunkRequest"]) -> list[tuple]:
        """Chunks of B videos in one network call -> one (class logits, mask logits, state) each, as
        :meth:`forward` gives. They must share the padded size, the frame count and whether a
        state is carried (None: all at a pass's start)."""
        first = requests[0]
        if any(r.geometry.padded != first.geometry.padded or len(r.images) != len(first.images)
               or (r.state is None) != (first.state is None) for r in requests):
            raise InputError("forward_batch takes chunks of one padded size and length, all with a state or none.")
        pixels = torch.stack([preprocess.preprocess(np.stack(r.images), r.geometry, device=self.device,
                                                    dtype=self.dtype) for r in requests])
        state = None if first.state is None else torch.cat([r.state for r in requests])
        outputs, state = self.model(pixels, state)
        return [(outputs.class_logits[b].float(), outputs.mask_logits[b].float(), state[b:b + 1])
                for b in range(len(requests))]


class Stream:
    """Iterate it for :class:`FrameResult` s; ``result`` is the video-level :class:`VideoResult`
    once the iteration ended (for two-pass tasks the last ``next`` runs the second pass).

    ``info`` is the source's :class:`VideoInfo`; ``timeline`` what reading learned. Closing the
    stream early (``close()``, ``break`` and garbage collection) stops the reader thread and
    deletes the spill file.
    """

    def __init__(self, predictor: Predictor, source, window: Window, class_ids, fps, video_id: int, *,
                 final: bool, online: bool, progress: Progress | None) -> None:
        self.predictor = predictor
        self.source: Source = open_source(source, fps=fps)
        self.info = self.source.info
        window.check_against(self.info.num_frames, self.info.duration)
        if final and predictor.task != "instance" and not self.source.rereadable:
            raise InputError(f"{predictor.task} video-level results need the frames twice (the class scores of the "
                             f"whole video decide every mask), but this source can be read once: pass a list, a "
                             f"(T, H, W, 3) array, a file or a folder, or stream(..., final=False) for online "
                             f"results only.")
        self.window = window
        self.class_ids = class_ids
        self.video_id = video_id
        self.final = final
        self.online = online
        self.progress = progress
        self.result: VideoResult | None = None
        self.timeline: Timeline | None = None
        self._run = self._frames()

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> FrameResult:
        return next(self._run)

    def close(self) -> None:
        self._run.close()

    def _frames(self) -> Iterator[FrameResult]:
        """Drive :meth:`steps` alone: each chunk through the network as it comes."""
        steps = self.steps()
        try:
            item = next(steps)
            while True:
                if isinstance(item, ChunkRequest):
                    item = steps.send(self.predictor.forward(item.images, item.geometry, item.state))
                else:
                    yield item
                    item = next(steps)
        except StopIteration:
            return
        finally:
            steps.close()

    def steps(self) -> Iterator["ChunkRequest | FrameResult"]:
        """The video through the engine, with the network call left to the caller: yields a
        :class:`ChunkRequest` per chunk, to be answered by ``send((class_logits, mask_logits,
        state))`` (what :meth:`Predictor.forward` returns), and the chunk's FrameResults after it.
        ``result`` is set when it ends. ``Stream`` answers each request itself; ``lockstep``
        answers the requests of several videos with one batched call."""
        p = self.predictor
        info = self.info
        geometry = p.geometry(info.height, info.width)
        total = self.window.expected(info.num_frames, info.fps)
        acc = p.accumulator(geometry, self.class_ids, online=self.online, keep_masks=self.final)
        processed: list[int] = []
        passes = acc.passes if self.final else 1
        with acc:  # the spill file goes on every exit (errors, Ctrl-C, an abandoned stream)
            for pass_index in range(passes):
                reader = self.source.frames(self.window)
                state, done = None, 0
                with _prepared_chunks(p, reader, geometry) as chunks:
                    for chunk in chunks:
                        class_logits, mask_logits, state = yield ChunkRequest([image for _, image in chunk],
                                                                              geometry, state)
                        frames = [f for f, _ in chunk]
                        online = acc.add(pass_index, [f.index for f in frames], class_logits, mask_logits)
                        reader.done(frames)
                        if pass_index == 0:
                            processed.extend(f.index for f in frames)
                        done += len(chunk)
                        if self.progress is not None:
                            self.progress(done, total, pass_index, passes)
                        for frame, selection in zip(frames, online):
                            yield _frame_result(frame, selection, geometry.original)
                if pass_index == 0:
                    self.timeline = reader.timeline
                    if not processed:
                        n = self.timeline.num_frames if self.timeline else info.num_frames
                        raise InputError(f"No frame of {info.path} falls in the requested --start/--end range "
                                         f"(the video has {n} frames).")
            if not self.final:
                return
            timeline = self.timeline
            num_frames = timeline.num_frames if timeline is not None else processed[-1] + 1
            segments, store = acc.result(num_frames)
        self.result = VideoResult(
            video=info, task=p.task, categories=p.categories, segments=tuple(segments), store=store,
            num_frames=num_frames, processed=tuple(processed), video_id=self.video_id, timeline=timeline,
            warnings=info.warnings + (timeline.warnings if timeline is not None else ()))


@dataclass(frozen=True)
class ChunkRequest:
    """A chunk of one video waiting for the network: prepared uint8 frames (H', W', 3), the
    video's geometry, and its query state (None at the start of a pass)."""

    images: list[np.ndarray]
    geometry: preprocess.Geometry
    state: torch.Tensor | None


def _frame_result(frame: Frame, selection: postprocess.Online, size: tuple[int, int]) -> FrameResult:
    boxes = mask_ops.bboxes(selection.rles).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    return FrameResult(index=frame.index, time=frame.time, size=size,
                       track_ids=np.asarray(selection.track_ids, dtype=np.int64),
                       class_ids=np.asarray(selection.category_ids, dtype=np.int64),
                       scores=np.asarray(selection.scores, dtype=np.float32), boxes=boxes.reshape(-1, 4),
                       rles=tuple(selection.rles), image=frame.image)


@contextmanager
def _prepared_chunks(p: Predictor, reader, geometry) -> Iterator[Iterator[list]]:
    """Chunks of (frame, network-ready image). Files, folders and arrays are decoded and resized
    ahead in the read-ahead thread, and a chunk waits for ``chunk_size`` frames. A live reader
    (``io.live``) buffers in its own thread, where it drops frames when asked to keep up: a
    read-ahead queue would hold frames it can no longer drop. Its chunks are what waits, up to
    ``chunk_size`` frames, resized here: a frame never waits for later ones to arrive."""
    live = getattr(reader, "chunks", None)
    if live is None:
        with read_ahead(p.prepared(reader, geometry), p.read_ahead) as queue:
            yield _chunks(queue, p.chunk_size)
        return
    chunks = live(p.chunk_size)
    try:
        yield ([(f, preprocess.host_resize(f.image, geometry, p.device)) for f in frames] for frames in chunks)
    finally:
        chunks.close()


def _chunks(frames: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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
        return [replace(category, id=int(cid)) for category, cid in zip(generic, ids)]
    return generic
