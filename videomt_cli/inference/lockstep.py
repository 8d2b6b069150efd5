"""Several videos through the network together (``segment --batch-videos B``).

Each video keeps its own reader, query state and accumulator (``Stream.steps``); only the network
call is shared. At every step the waiting chunks are grouped by what can be stacked into one
(B, T, 3, H, W) call: the same padded frame size, the same number of frames, and all carrying a
query state or all at a pass's start (the model takes one state tensor for the batch, so a video
joining the batch runs its first chunk with the other newcomers, then joins the rest). A finished
video's slot is refilled by the next one. Each video's results are those of running it alone, to
the float rounding a batched matmul brings (the guarantee the README states for ``--chunk-size``).

    for job, result, error in run_lockstep(predictor, jobs, batch_videos=4):
        ...   # in the order the videos finish; error is the VideoMTError of a bad video
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from videomt_cli.inference.predictor import ChunkRequest, Predictor, Stream
from videomt_cli.records import VideoResult


@dataclass(frozen=True)
class LockstepJob:
    """One video: ``source`` as ``Predictor.run`` takes it, ``options`` its keyword arguments
    (start, end, stride, classes, fps, video_id, progress); ``key`` is handed back with the result."""

    key: object
    source: object
    options: dict = field(default_factory=dict)


class _Slot:
    """One video in the batch: its steps generator and the chunk it waits with."""

    def __init__(self, job: LockstepJob, stream: Stream) -> None:
        self.job = job
        self.stream = stream
        self.steps = stream.steps()
        self.pending: ChunkRequest | None = None
        self.done = False

    def advance(self, reply=None) -> None:
        """Run the video up to its next network call (or its end), answering the last with ``reply``."""
        item = next(self.steps) if reply is None else self.steps.send(reply)
        while not isinstance(item, ChunkRequest):  # per-frame results: a corpus writes the video-level one
            item = next(self.steps)
        self.pending = item

    def key(self) -> tuple:
        r = self.pending
        return r.geometry.padded, len(r.images), r.state is None

    def close(self) -> None:
        self.steps.close()


def run_lockstep(predictor: Predictor, jobs: Iterable[LockstepJob],
                 batch_videos: int) -> Iterator[tuple[LockstepJob, VideoResult | None, Exception | None]]:
    """Run ``jobs`` ``batch_videos`` at a time; yield (job, result, None) as each video ends, or
    (job, None, error) for a video that failed (a ``VideoMTError``, or another exception: a bug);
    its slot goes to the next. Close each result. Interrupts propagate."""
    if batch_videos < 1:
        raise ValueError("batch_videos must be at least 1")
    queue = iter(jobs)
    slots: list[_Slot] = []
    try:
        while True:
            finished: list[tuple[LockstepJob, VideoResult | None, Exception | None]] = []
            while len(slots) < batch_videos:
                job = next(queue, None)
                if job is None:
                    break
                try:
                    slot = _Slot(job, predictor.prepare_run(job.source, **job.options))
                    slot.advance()
                except StopIteration:  # pragma: no cover - a video always has a first chunk or an error
                    continue
                except Exception as error:  # noqa: BLE001 - a bad video (VideoMTError) or a bug: that video's
                    finished.append((job, None, error))
                    continue
                slots.append(slot)
            yield from finished
            finished = []
            if not slots:
                return
            groups: dict[tuple, list[_Slot]] = {}
            for slot in slots:
                groups.setdefault(slot.key(), []).append(slot)
            for group in groups.values():
                replies = predictor.forward_batch([slot.pending for slot in group])
                for slot, reply in zip(group, replies):
                    try:
                        slot.advance(reply)
                    except StopIteration:
                        slot.done = True
                        finished.append((slot.job, slot.stream.result, None))
                    except Exception as error:  # noqa: BLE001 - as above
                        slot.done = True
                        finished.append((slot.job, None, error))
            for slot in slots:
                if slot.done:
                    slot.close()
            slots = [slot for slot in slots if not slot.done]
            yield from finished
    finally:
        for slot in slots:
            slot.close()
