"""The one way videomt writes a file or folder: into a hidden temporary beside the destination,
renamed onto it only when complete. An interrupted or failed write leaves the destination as it
was and nothing else behind.

    with atomic_path("out.json") as tmp:        # a Path that does not exist yet
        tmp.write_text(...)
    # out.json now holds the whole text; on an exception, neither it nor tmp changed or stayed

Long-lived writers (sinks, the overlay encoder) hold an :class:`AtomicPath` and call
``commit()`` or ``discard()`` themselves; ``discard()`` never raises.

A temporary's name carries the writing process's id (``.out.tmp-<host>-<pid>-<random>.json``):
a process killed outright (SIGKILL, a power cut) cannot clean up, so the next write to the same
destination removes the temporaries of that destination whose process is gone, never a live
run's. Also here, the one translation of a failed write (an ``OSError``) into a readable cause
(:func:`write_cause`, :func:`output_error`), and the check that an output is not an input
(:func:`refuse_input_as_output`). No torch here.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from videomt_cli.errors import OutputError, VideoMTError

# A short tag of this machine: a pid says something only on the machine that wrote it (a folder
# shared over the network holds temporaries of other machines' live runs).
_HOST = hashlib.blake2s(socket.gethostname().encode(), digest_size=2).hexdigest()


def temp_name(path: Path, suffix: str = "") -> Path:
    """A hidden, unique name in ``path``'s folder (so the final rename stays on one file system)
    that keeps the real suffix last (muxers and image writers pick the format from it) and names
    the writing process (so leftovers of a killed run are recognised)."""
    return path.with_name(f".{path.stem}.tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}{suffix}")


# ----------------------------------------------------------------------------- readable causes

_CAUSES = {
    errno.ENOSPC: "no space left on the device of {path}",
    errno.EDQUOT: "the disk quota on the device of {path} is used up",
    errno.EROFS: "the device of {path} is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "the file is larger than the file system of {path} allows",
    errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.EIO: "an input/output error on the device of {path}",
}

_ADVICE = {
    errno.ENOSPC: "free some space there or choose another output",
    errno.EDQUOT: "free some space there or choose another output",
    errno.EROFS: "choose another output",
    errno.EACCES: "check the folder is writable, or choose another output",
    errno.EPERM: "check the folder is writable, or choose another output",
    errno.EFBIG: "choose another output",
}

#: errnos that mean the place, not the program, is at fault: the CLI reports them in one line.
WRITE_ERRNOS = frozenset(_CAUSES) | {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EMFILE}


def write_cause(err: OSError, path: str | os.PathLike | None = None) -> str:
    """Why a write failed, in words that name the place: ``"no space left on the device of
    out.json"`` for ENOSPC, ``"the device of X is read-only"`` for EROFS; else the system's text."""
    where = os.fspath(path) if path is not None else (err.filename or "the output")
    cause = _CAUSES.get(err.errno)
    if cause is None:
        return err.strerror or str(err) or type(err).__name__
    return cause.format(path=where)


def os_reason(err: OSError) -> str:
    return write_cause(err)


def output_error(err: OSError, path: str | os.PathLike, advice: str | None = None) -> OutputError:
    """One :class:`OutputError` for a failed write to ``path``: ``"Cannot write PATH: CAUSE; ADVICE."``"""
    advice = advice if advice is not None else _ADVICE.get(
        err.errno, "check the folder exists and is writable, or choose another output")
    return OutputError(f"Cannot write {os.fspath(path)}: {write_cause(err, path)}; {advice}.")


def os_error_behind(err: BaseException, folder: str | os.PathLike) -> OSError | None:
    """The ``OSError`` behind a failed write, also where a native writer hides it: safetensors
    says "(os error 28)", ``torch.save`` only "unexpected pos ..." (then a device with no block
    left for ``folder`` means ENOSPC). None when nothing points at the place."""
    if isinstance(err, OSError):
        return err
    m = re.search(r"os error (\d+)", str(err))
    if m:
        return OSError(int(m[1]), os.strerror(int(m[1])))
    try:
        if os.statvfs(folder).f_bavail == 0:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except (OSError, AttributeError):  # no statvfs (Windows)
        pass
    return None


# ----------------------------------------------------------------------------- inputs are not outputs


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.realpath(os.fspath(path))))


def refuse_input_as_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                           what: str = "input") -> None:
    """Raise :class:`OutputError` when ``output`` is one of ``inputs`` (the same file by any path:
    a symlink, a hard link, ``./x``), lies inside an input folder (a frame folder), or is a folder
    that holds an input (a PNG output replaced wholesale). Inputs that are not paths (None, a hub
    id that is no file) are skipped. Call it before any work, whatever ``--overwrite`` says."""
    out = _resolved(output)
    for source in inputs:
        if source is None or not os.path.exists(os.fspath(source)):
            continue
        src = _resolved(source)
        same = out == src
        if not same and os.path.exists(out):
            try:
                same = os.path.samefile(out, src)
            except OSError:
                pass
        if same:
            raise OutputError(f"The output {os.fspath(output)} is the {what} {os.fspath(source)}: videomt never "
                              f"writes over what it reads, even with --overwrite; choose another output.")
        if src.is_dir() and out.is_relative_to(src):
            raise OutputError(f"The output {os.fspath(output)} is inside the {what} folder {os.fspath(source)}; "
                              f"choose an output outside it.")
        if src.is_relative_to(out):
            raise OutputError(f"The output {os.fspath(output)} holds the {what} {os.fspath(source)}, which "
                              f"writing it would delete; choose another output.")


# ----------------------------------------------------------------------------- leftovers of killed runs


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` that a killed process left (its hidden temporary
    names, written on this machine by a process that is gone); return what was removed. An
    old output moved aside for a folder replacement (``.old``) is put back when the destination
    is missing. Never raises."""
    path = Path(path)
    # ``.out.tmp-H-PID-X.json``, its ``.old`` twin, and a writer's temporary of that temporary
    # (``..out.tmp-H-PID-X.tmp-H-PID-Y.mp4``: the overlay's muxer writes beside the sink's name).
    tag = rf"\.tmp-{_HOST}-(\d+)-[0-9a-f]{{8}}"
    pattern = re.compile(rf"\.(\.)?{re.escape(path.stem)}{tag}(?(1){tag}){re.escape(path.suffix)}(\.old)?")
    removed = []
    try:
        names = [e.name for e in os.scandir(path.parent)]
    except OSError:
        return removed
    for name in sorted(names, key=lambda n: not n.endswith(".old")):  # restore an old output first
        m = pattern.fullmatch(name)
        if m is None or any(pid is not None and _alive(int(pid)) for pid in (m[2], m[3])):
            continue
        leftover = path.with_name(name)
        if m[4] and not (path.exists() or path.is_symlink()):
            try:
                os.replace(leftover, path)
                continue
            except OSError:
                pass
        _remove(leftover)
        removed.append(leftover)
    return removed


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


# ----------------------------------------------------------------------------- the atomic path


class AtomicPath:
    """A temporary file or folder name for ``path``; ``commit()`` moves it into place.

    ``create=True`` makes the temporary (an empty file, or the folder when ``is_dir``) at once, so
    an unwritable destination fails here with an :class:`OutputError`; with ``create=False`` only
    the name is reserved (for writers that create the file themselves, such as FFmpeg's muxers).
    Parent folders are created (and removed again by ``discard()`` while empty); leftovers of
    killed runs into ``path`` are removed first.
    ``overwrite=False`` refuses to replace a destination that appeared meanwhile.
    """

    def __init__(self, path: str | os.PathLike, *, is_dir: bool = False, overwrite: bool = True,
                 create: bool = True) -> None:
        self.path = Path(path)
        self.is_dir = is_dir
        self.overwrite = overwrite
        self.tmp: Path | None = None
        # The folders this write creates: removed again (when still empty) if it is discarded.
        self._made = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.path)
            tmp = temp_name(self.path)
            if create and is_dir:
                os.mkdir(tmp)
            elif create:
                with open(tmp, "xb"):
                    pass
            self.tmp = tmp
        except OSError as err:
            self.tmp = tmp if "tmp" in locals() and os.path.lexists(tmp) else None
            self.discard()
            raise output_error(err, self.path) from None
        except BaseException:  # Ctrl-C between creating the temporary and keeping its name
            self.tmp = tmp if create and "tmp" in locals() else None
            self.discard()
            raise

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
                except BaseException:
                    os.replace(old, path)
                    raise
                _remove(old)
            else:
                os.replace(tmp, path)
        except OSError as err:
            self.discard()
            raise output_error(err, path) from None
        self.tmp, self._made = None, []
        return path

    def discard(self) -> None:
        """Remove the temporary; the destination is left as it was. Never raises."""
        tmp, self.tmp = self.tmp, None
        if tmp is not None:
            _remove(tmp)
        made, self._made = self._made, []
        for folder in made:  # deepest first; one that holds something else stays
            try:
                folder.rmdir()
            except OSError:
                break


@contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path (an empty file, or an empty folder with ``is_dir``) for ``path``;
    committed on a clean exit, removed on any exception (Ctrl-C too). A failed write inside the
    block (an ``OSError``, or a native writer's error with one behind it: see
    :func:`os_error_behind`) becomes one :class:`OutputError` naming the cause and ``path``."""
    out = AtomicPath(path, is_dir=is_dir, overwrite=overwrite)
    try:
        yield out.tmp
    except Exception as err:
        cause = None if isinstance(err, VideoMTError) else os_error_behind(err, out.path.parent)
        out.discard()
        if cause is None:
            raise
        raise output_error(cause, path) from None
    except BaseException:
        out.discard()
        raise
    out.commit()


def fsync_file(f) -> None:
    """Flush a file object to disk before it is renamed into place."""
    f.flush()
    os.fsync(f.fileno())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` with Python's own I/O, so a failure is an ``OSError`` with its
    errno (native writers such as libpng print their own lines and return only False)."""
    with open(path, "wb") as f:
        f.write(data)
