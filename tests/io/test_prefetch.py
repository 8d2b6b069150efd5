"""videomt_cli.io.prefetch: reading ahead in a thread, errors re-raised in the consumer, and the
thread stopped (and its source closed) however the consumer leaves."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import iohelp  # noqa: E402
from iohelp import N  # noqa: E402

from videomt_cli.errors import InputError  # noqa: E402
from videomt_cli.io.prefetch import Prefetcher, read_ahead  # noqa: E402
from videomt_cli.io.read import Frame, read_frames  # noqa: E402

media = iohelp.media_fixture  # the shared videos, a session fixture


def test_read_ahead_yields_everything_in_order(media):
    with read_ahead(read_frames(media["mp4"]), maxsize=2) as frames:
        assert isinstance(frames, Prefetcher)
        got = [f.index for f in frames]
    assert got == list(range(N))


def test_read_ahead_reraises_errors_in_the_consumer():
    def source():
        yield 1
        yield 2
        raise ZeroDivisionError("boom in the decoder thread")

    p = read_ahead(source())
    got = []
    with pytest.raises(ZeroDivisionError, match="boom"):
        for x in p:
            got.append(x)
    assert got == [1, 2]
    p._thread.join(2)
    assert not p.alive


def _endless(state):
    try:
        i = 0
        while True:
            yield i
            i += 1
    finally:
        state["closed"] = True


def test_read_ahead_stops_on_early_break():
    state = {}
    with read_ahead(_endless(state), maxsize=3) as p:
        for x in p:
            if x == 5:
                break
    assert not p.alive
    assert state.get("closed")  # the source generator was closed in its own thread


def test_read_ahead_stops_when_dropped():
    state = {}
    p = read_ahead(_endless(state), maxsize=3)
    next(p)
    thread = p._thread
    del p
    gc.collect()
    thread.join(3)
    assert not thread.is_alive() and state.get("closed")


def test_read_ahead_stops_on_keyboard_interrupt():
    state = {}
    with pytest.raises(KeyboardInterrupt):
        with read_ahead(_endless(state)) as p:
            for x in p:
                if x == 2:
                    raise KeyboardInterrupt
    assert not p.alive and state.get("closed")


def test_read_ahead_closes_the_video(media):
    with read_ahead(read_frames(media["mp4"]), maxsize=1) as p:
        first = next(p)
    assert isinstance(first, Frame) and not p.alive


def test_read_ahead_after_the_end_stays_ended():
    p = read_ahead(iter([1, 2]))
    assert list(p) == [1, 2]
    assert list(p) == [] and not p.alive


def test_read_ahead_maxsize_must_be_positive():
    with pytest.raises(InputError):
        read_ahead([1], maxsize=0)
