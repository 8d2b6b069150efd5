"""The one way videomt writes a file or folder: into a hidden temporary beside the destination,
renamed onto it only when complete. An interrupted or failed write leaves the destination as it
was and nothing else behind.

    with atomic_path("out.json") as tmp:        # a Path that does not exist yet
        tmp.write_text(...)
    # out.json now holds the whole text; on an exception, neither it nor tmp changed or stayed

Long-lived writers (sinks, the overlay encoder) hold an :class:`AtomicPath` and call
``commit()`` or ``discard()`` themselves. No torch here.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from videomt_cli.errors import OutputError


def temp_name(path: Path, suffix: str = "") -> Path:
    """A hidden, unique name in ``path``'s folder (so the final rename stays on one file system)
    that keeps the real suffix last: muxers and image writers pick the format from it."""
    return path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}{path.suffix}{suffix}")


def os_reason(err: OSError) -> str:
    return err.strerror or str(err)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


class AtomicPath:
    """A temporary file or folder name for ``path``; ``commit()`` moves it into place.

    ``create=True`` makes the temporary (an empty file, or the folder when ``is_dir``) at once, so
    an unwritable destination fails here with an :class:`OutputError`; with ``create=False`` only
    the name is reserved (for writers that create the file themselves, such as FFmpeg's muxers).
    Parent folders are created. ``overwrite=False`` refuses to replace a destination that
    appeared meanwhile.
    """

    def __init__(self, path: str | os.PathLike, *, is_dir: bool = False, overwrite: bool = True,
                 create: bool = True) -> None:
        self.path = Path(path)
        self.is_dir = is_dir
        self.overwrite = overwrite
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp: Path | None = temp_name(self.path)
            if create and is_dir:
                os.mkdir(self.tmp)
            elif create:
                with open(self.tmp, "xb"):
                    pass
        except OSError as err:
            raise OutputError(f"Cannot write {self.path}: {os_reason(err)}. "
                              f"Check the folder exists and is writable, or choose another output.") from None

    def commit(self) -> Path:
        """Move the finished temporary onto the destination (a folder replaces a folder)."""
        if self.tmp is None:
            raise OutputError(f"{self.path}: the output was already committed or discarded.")
        path, tmp = self.path, self.tmp
        exists = path.exists() or path.is_symlink()
        if exists and not self.overwrite:
            self.discard()
            raise OutputError(f"{path} already exists; use --overwrite to replace it.")
        try:
            if exists and (self.is_dir or path.is_dir()):
                # Nothing can be renamed onto a non-empty folder (nor a folder onto a file): move
                # the old output aside, put the new one in place, then delete the old one.
                old = temp_name(path, ".old")
                os.replace(path, old)
                try:
                    os.replace(tmp, path)
                except OSError:
                    os.replace(old, path)
                    raise
                _remove(old)
            else:
                os.replace(tmp, path)
        except OSError as err:
            self.discard()
            raise OutputError(f"Cannot move the finished output to {path}: {os_reason(err)}.") from None
        self.tmp = None
        return path

    def discard(self) -> None:
        """Remove the temporary; the destination is left as it was."""
        tmp, self.tmp = self.tmp, None
        if tmp is not None:
            _remove(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path (an empty file, or an empty folder with ``is_dir``) for ``path``;
    committed on a clean exit, removed on any exception (Ctrl-C too)."""
    out = AtomicPath(path, is_dir=is_dir, overwrite=overwrite)
    try:
        yield out.tmp
    except BaseException:
        out.discard()
        raise
    out.commit()


def fsync_file(f) -> None:
    """Flush a file object to disk before it is renamed into place."""
    f.flush()
    os.fsync(f.fileno())
