"""What every sink shares: destination checks, an atomic temporary output, and the names of a
video's frames. No torch.

A sink is a context manager fed :class:`~videomt_cli.records.VideoResult` records; it writes into
a temporary file or folder beside the destination (``io.atomic``) and renames it into place only
when the ``with`` block exits without an exception. An interrupted or failed run leaves nothing
behind and never touches an existing file at the destination. An existing destination is refused
unless ``overwrite=True``.

A failed write (an ``OSError``: a full disk, a quota, a read-only device) becomes one
:class:`~videomt_cli.errors.OutputError` naming the cause and the destination, the temporary is
removed, and the cleanup paths (``abort``) never raise.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
import json
import os
from pathlib import Path

from videomt_cli.errors import InputError, OutputError
from videomt_cli.io.atomic import AtomicPath, fsync_file, output_error
from videomt_cli.records import RLE, Category, VideoResult

META_NAME = "meta.json"


def writes(method):
    """Decorate a sink method that writes: an ``OSError`` inside it becomes the sink's one
    :class:`OutputError` (cause and destination), and the temporary output is removed."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._aborting():
            return method(self, *args, **kwargs)

    return wrapper


class Sink:
    """Base of all sinks. Subclasses set ``format`` and ``is_dir`` and implement ``_begin`` (start
    the temporary output), ``add`` and ``_finish`` (complete it before the rename)."""

    format = ""
    is_dir = False
    create_tmp = True  # False: the writer creates the file itself (FFmpeg's muxers)

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.count = 0  # videos added
        self.warnings: list[str] = []
        self._out: AtomicPath | None = None
        self._closed = False
        self._check_destination()

    @property
    def tmp(self) -> Path | None:
        return self._out.tmp if self._out is not None else None

    def _check_destination(self) -> None:
        path = self.path
        if path.exists() or path.is_symlink():
            if not self.overwrite:
                raise OutputError(f"{path} already exists; use --overwrite to replace it.")
            if path.is_dir() and not path.is_symlink():
                if not self.is_dir:
                    raise OutputError(f"{path} is a folder; give a file name for the {self.format} output.")
                if any(path.iterdir()) and not (path / META_NAME).is_file():
                    raise OutputError(f"{path} is a folder that videomt did not write (no {META_NAME}); "
                                      f"refusing to replace it even with --overwrite. Choose another folder.")
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"Cannot write {path}: {parent} is not a folder.")

    # -- life cycle

    def open(self) -> "Sink":
        if self._out is None and not self._closed:
            self._out = AtomicPath(self.path, is_dir=self.is_dir, overwrite=self.overwrite, create=self.create_tmp)
            with self._aborting():
                self._begin()
        return self

    @contextmanager
    def _aborting(self):
        """Any failure inside removes the temporary output; an ``OSError`` becomes one
        :class:`OutputError` naming the cause and the destination."""
        try:
            yield
        except OSError as err:
            self.abort()
            raise output_error(err, self.path) from None
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> "Sink":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def add(self, result: VideoResult) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Finish the temporary output and move it into place."""
        if self._closed:
            return
        self.open()
        with self._aborting():
            self._finish()
            self._out.commit()
        self._closed = True

    def abort(self) -> None:
        """Remove the temporary output; the destination is left as it was. Never raises: it runs
        while another error (a full disk, Ctrl-C) is on its way to the user."""
        self._closed = True
        try:
            self._release()
        except Exception:  # noqa: BLE001 - closing a file on a full disk fails again: the file goes anyway
            pass
        if self._out is not None:
            self._out.discard()

    def _begin(self) -> None:
        pass

    def _finish(self) -> None:
        pass

    def _release(self) -> None:
        """Close open handles (called on abort)."""


# ----------------------------------------------------------------------------- shared helpers


def choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    """A format option's value, lower-cased; one that is not ``allowed`` is an ``InputError``."""
    key = str(value).strip().lower()
    if key not in allowed:
        raise InputError(f"Unknown {what} {value!r}; choose one of {', '.join(allowed)}.")
    return key


def plain_rle(rle: RLE | None) -> dict | None:
    """An RLE as plain JSON (str counts, int size), or None."""
    if rle is None:
        return None
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def video_name(result: VideoResult) -> str:
    """A short name for the video: the folder's name for an image folder, a stream's name (``io.live``),
    else the file's stem."""
    info = result.video
    if info.kind == "live":
        from videomt_cli.io.live import stream_name

        return stream_name(info.path)
    path = Path(info.path.rstrip("/\\"))
    name = path.name if info.is_image_folder else path.stem
    return name if name and info.kind != "arrays" else f"video{result.video_id}"


def frame_file_names(result: VideoResult) -> list[str]:
    """One image name per frame, YouTube-VIS style ``<video name>/<frame file>``: an image folder's
    own file names, else ``00000.jpg``, ``00001.jpg``, ..."""
    n = result.num_frames
    name = video_name(result)
    files = result.video.file_names
    if len(files) == n:
        return [f if "/" in f else f"{name}/{f}" for f in files]
    return [f"{name}/{i:05d}.jpg" for i in range(n)]


def category_json(c: Category) -> dict:
    return {"id": c.id, "name": c.name, "supercategory": "thing" if c.isthing else "stuff",
            "isthing": int(c.isthing), "color": list(c.color)}


def dump(obj, f) -> None:
    f.write(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def category_name(result: VideoResult, category_id: int) -> str:
    try:
        return result.category(category_id).name
    except KeyError:
        return str(category_id)


class StreamSink(Sink):
    """A sink that streams into one open temporary file ``self._f`` (text or bytes by ``mode``),
    flushed to disk before the rename."""

    mode = "wb"

    def _begin(self) -> None:
        self._f = open(self.tmp, self.mode)

    def _finish(self) -> None:
        fsync_file(self._f)
        self._f.close()

    def _release(self) -> None:
        f = getattr(self, "_f", None)
        if f is not None and not f.closed:
            try:
                f.close()  # flushes: on a full disk that fails again, and the file is closed anyway
            except OSError:
                pass


class JsonSink(Sink):
    """A sink that builds one JSON document in memory and writes it at the end."""

    def __init__(self, path, overwrite: bool = False) -> None:
        super().__init__(path, overwrite)
        self.categories: dict[int, Category] = {}

    def _add_categories(self, result: VideoResult) -> None:
        for c in result.categories:
            self.categories.setdefault(c.id, c)

    def _categories_json(self) -> list[dict]:
        return [category_json(c) for c in sorted(self.categories.values(), key=lambda c: c.id)]

    def _document(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> None:
        from videomt_cli.io.atomic import fsync_file

        with open(self.tmp, "wb") as f:
            dump(self._document(), f)
            fsync_file(f)
