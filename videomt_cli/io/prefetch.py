"""Read ahead: run an iterator (a reader, a reader plus the resize) in a thread of its own, a
bounded number of items ahead of the consumer. No torch.

    with read_ahead(source.frames(), maxsize=8) as frames:
        for frame in frames: ...
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable

from videomt_cli.errors import InputError

_DONE = object()


def _produce(iterable: Iterable, q: queue.Queue, stop: threading.Event) -> None:
    """Thread body: move items into ``q`` until exhausted, failed or told to stop.

    Holds no reference to the Prefetcher, so dropping the consumer lets it be collected (and
    closed) even while this thread waits on a full queue.
    """

    def put(msg) -> bool:
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    it = iter(iterable)
    try:
        for item in it:
            if not put((True, item)):
                return
        put((True, _DONE))
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, who re-raises it
        put((False, e))
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()  # a generator closes its container here, in the thread that ran it
            except Exception:
                pass


def join(thread: threading.Thread, timeout: float | None = None, on_interrupt=None) -> None:
    """Wait for ``thread`` even when a signal's KeyboardInterrupt lands during the wait (the CLI
    turns SIGTERM/SIGHUP into one): the wait goes on to the end (``on_interrupt()`` is called first,
    to tell the thread to hurry), then the interrupt is raised. A thread left running while its
    files close is what can crash a process in native code."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    interrupted: BaseException | None = None
    while thread.is_alive():
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        try:
            thread.join(0.1 if left is None else min(0.1, left))
        except KeyboardInterrupt as e:
            if interrupted is None and on_interrupt is not None:
                on_interrupt()
            interrupted = interrupted or e
    if interrupted is not None:
        raise interrupted


class Prefetcher:
    """Run an iterator in a daemon thread, ``maxsize`` items ahead of the consumer.

    Iterate it like the source. An exception raised by the source is re-raised in the consumer
    (with its original traceback). ``close()`` (also on ``with`` exit, early ``break`` inside
    ``with``, garbage collection) stops the thread after at most the item it is producing.
    """

    def __init__(self, iterable: Iterable, maxsize: int = 8):
        if maxsize < 1:
            raise InputError(f"maxsize must be >= 1, got {maxsize}.")
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(
            target=_produce, args=(iterable, self._queue, self._stop), name="videomt-read-ahead", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        ok, item = self._queue.get()  # interruptible by Ctrl-C in the main thread
        if ok and item is not _DONE:
            return item
        self._finished = True
        self.close()
        if ok:
            raise StopIteration
        raise item

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (up to ``timeout`` seconds; it is a daemon anyway)."""
        self._finished = True
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if threading.current_thread() is not self._thread:
            join(self._thread, timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._stop.set()
        except Exception:
            pass


def read_ahead(iterable: Iterable, maxsize: int = 8) -> Prefetcher:
    """``Prefetcher(iterable, maxsize)``: decode ahead of the model. Use it as a context manager::

        with read_ahead(read_frames(info, stride=2)) as frames:
            for frame in frames: ...
    """
    return Prefetcher(iterable, maxsize)
