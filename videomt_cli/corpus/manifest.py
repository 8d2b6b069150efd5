"""The corpus manifest, ``OUT/manifest.jsonl``, its records, the run's summary, and the folder lock.
No torch.

One JSON object a line, appended, flushed and fsynced as each video ends (:class:`Record`):
``source`` (absolute path), ``output`` (relative to the output folder), ``status`` (``ok``,
``failed``, ``skipped``), ``error`` (the one-line message), ``frames`` (processed), ``seconds``,
``fps``, ``segments``, ``warnings``, ``model``, ``fingerprint`` and ``settings`` (what it hashes),
``stamp`` (the source's size and mtime), ``finished`` (UTC, ISO 8601); ``traceback`` only for an
internal error. A line that does not parse (torn by a kill) is ignored, and the next append starts
on a new line, so a kill at any moment leaves every complete line readable.

The lock: ``OUT/.videomt.lock`` held with ``fcntl.flock`` for a whole run (:func:`folder_lock`);
a second run into the same folder is refused at once, naming the holder's pid. The kernel drops
the lock when its process ends, SIGKILL too, so no stale lock is left.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from videomt_cli.errors import OutputError
from videomt_cli.io.atomic import output_error

MANIFEST_NAME = "manifest.jsonl"
LOCK_NAME = ".videomt.lock"
STATUSES = ("ok", "failed", "skipped")


@dataclass(frozen=True)
class Record:
    """One manifest line: what became of one video (module docstring lists the fields)."""

    source: str
    output: str | None
    status: str
    error: str | None = None
    frames: int = 0
    seconds: float = 0.0
    fps: float | None = None
    segments: int | None = None
    warnings: tuple[str, ...] = ()
    model: str | None = None
    fingerprint: str | None = None
    settings: dict = field(default_factory=dict, compare=False)
    stamp: str | None = None
    finished: str | None = None
    traceback: str | None = None  # only for an internal error (a bug): what to report

    def to_line(self) -> bytes:
        """One JSON line, ASCII; every field but ``traceback`` always present (null when unknown)."""
        d = asdict(self)
        if d["traceback"] is None:
            del d["traceback"]
        d["warnings"] = list(self.warnings)
        return json.dumps(d, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"

    @classmethod
    def from_json(cls, d: dict) -> "Record":
        names = cls.__dataclass_fields__
        values = {k: v for k, v in d.items() if k in names}
        values["warnings"] = tuple(values.get("warnings") or ())
        values["settings"] = values.get("settings") or {}
        return cls(**values)


@dataclass(frozen=True)
class Summary:
    """What a corpus run did: counts, and the frames and seconds of the videos it ran."""

    ok: int
    failed: int
    skipped: int
    frames: int
    seconds: float

    @classmethod
    def of(cls, records: Iterable[Record]) -> "Summary":
        records = list(records)
        done = [r for r in records if r.status == "ok"]
        return cls(ok=len(done), failed=sum(r.status == "failed" for r in records),
                   skipped=sum(r.status == "skipped" for r in records), frames=sum(r.frames for r in done),
                   seconds=sum(r.seconds for r in done))

    @property
    def fps(self) -> float | None:
        return self.frames / self.seconds if self.seconds > 0 else None

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, else 1."""
        return 1 if self.failed else 0

    def line(self) -> str:
        rate = f", {self.fps:.1f} frames/s" if self.fps is not None else ""
        return (f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped; {self.frames} frames in "
                f"{self.seconds:.1f} s{rate}")


class Manifest:
    """``OUT/manifest.jsonl``: read its records, append one durably (``append``), ``close()``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.ignored = 0  # lines that did not parse (a torn last line) at the last read
        self._fd: int | None = None

    def records(self) -> list[Record]:
        """Every record that parses, in file order."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise OutputError(f"Cannot read {self.path}: {e.strerror or e}.") from None
        records, self.ignored = [], 0
        for line in data.splitlines():
            try:
                d = json.loads(line)
                if not isinstance(d, dict) or d.get("status") not in STATUSES or "source" not in d:
                    raise ValueError
                records.append(Record.from_json(d))
            except (ValueError, TypeError):
                self.ignored += line.strip() != b""
        return records

    def latest(self) -> dict[str, Record]:
        """The last record of each output."""
        return {r.output: r for r in self.records() if r.output is not None}

    def create(self) -> None:
        """Make the file (empty) if missing, durably: it marks the folder as a corpus folder."""
        self._open()

    def append(self, record: Record) -> None:
        """Add one line and fsync it; a torn last line left by a kill is ended first."""
        fd = self._open()
        data = record.to_line()
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError as e:
            raise output_error(e, self.path) from None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        try:
            new = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if _last_byte(self.path) not in (None, b"\n"):
                os.write(fd, b"\n")  # a torn last line stays a line of its own, ignored
            os.fsync(fd)
            if new:
                _fsync_dir(self.path.parent)
        except OSError as e:
            raise output_error(e, self.path) from None
        self._fd = fd
        return fd


def _last_byte(path: Path) -> bytes | None:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return None
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder
        pass
    finally:
        os.close(fd)


@contextmanager
def folder_lock(folder: str | os.PathLike, *, label: str | None = None) -> Iterator[None]:
    """Hold ``folder/.videomt.lock`` (``fcntl.flock``) or raise :class:`OutputError` at once when
    another run holds it. The kernel releases it when this process ends, however it ends.
    ``label``: what the message calls the folder (a store URL whose lock is kept locally)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise output_error(e, path) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise output_error(e, path) from None
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            who = f" (pid {pid})" if pid.isdigit() else ""
            raise OutputError(f"Another videomt run{who} is writing to {label or folder}: wait for it to end, or "
                              f"choose another output folder.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock
