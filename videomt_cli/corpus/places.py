"""Where a corpus' outputs go: a local folder (:class:`LocalFolder`) or a store prefix
(``remote.StoreFolder``), behind one interface the run, its workers and the plan use. No torch.

Both have: ``label`` (as the user named it), ``key`` (what source expansion never searches),
``check(items, overwrite)`` (the folder rules of ``corpus``), ``prepare()``, ``lock()``,
``manifest()``, ``exists()`` (a ``name -> bool`` for the resume plan), ``join(name)`` (an
output's full name, for messages) and ``output(name)``: a context giving the local path a sink
writes that output to, put in place when the block ends without an exception (a local sink
renames its own temporary into place; a store's output is uploaded then).

A local output folder shared by every worker (NFS, a cluster file system) is a local folder:
each worker writes its outputs there through the sinks' temporary-then-rename.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from videomt_cli.corpus.manifest import MANIFEST_NAME, Manifest, folder_lock
from videomt_cli.corpus.remote import StoreFolder, is_url
from videomt_cli.errors import OutputError
from videomt_cli.io.atomic import output_error, refuse_input_as_output


class LocalFolder:
    """An output folder on a file system."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.label = os.fspath(path)

    @property
    def key(self) -> str:
        return os.fspath(self.path)

    def join(self, name: str) -> str:
        return os.fspath(self.path / name)

    def check(self, items: list, overwrite: bool) -> None:
        """Refuse an output folder that is a file, holds an input or lies in a frame folder, or
        that videomt did not write (without ``overwrite``)."""
        output = self.path
        if output.exists() and not output.is_dir():
            raise OutputError(f"{output} is a file; with several videos -o names a folder (one output per video).")
        out = Path(os.path.realpath(output))
        for item in items:
            if item.path is None or is_url(item.path) or not os.path.exists(item.path):
                continue
            real = Path(os.path.realpath(item.path))
            if real.is_relative_to(out):
                raise OutputError(f"The output folder {output} holds the input {item.source}: outputs would be "
                                  f"read as inputs; choose an output folder outside the inputs.")
            if item.kind == "folder" and out.is_relative_to(real):
                raise OutputError(f"The output folder {output} is inside the frame folder {item.source}; choose a "
                                  f"folder outside it.")
        if output.is_dir() and not overwrite and not (output / MANIFEST_NAME).exists() and any(
                not name.startswith(".") for name in os.listdir(output)):
            raise OutputError(f"{output} is a folder that videomt did not write (no {MANIFEST_NAME}); choose a new "
                              f"or empty folder, or pass --overwrite to write into it.")

    def prepare(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise output_error(e, self.path) from None

    def lock(self):
        return folder_lock(self.path)

    def manifest(self) -> Manifest:
        return Manifest(self.path / MANIFEST_NAME)

    def exists(self):
        return lambda name: os.path.lexists(self.path / name)

    @contextmanager
    def output(self, name: str, source: str | None = None):
        """The destination itself: the sink writes a temporary beside it and renames it into place."""
        target = self.path / name
        refuse_input_as_output(target, [source])
        yield target


def folder_of(output: str | os.PathLike) -> LocalFolder | StoreFolder:
    """The place ``output`` names: a store URL (``remote.is_url``) or a local folder."""
    if isinstance(output, (LocalFolder, StoreFolder)):
        return output
    return StoreFolder(os.fspath(output)) if is_url(output) else LocalFolder(output)


__all__ = ["LocalFolder", "StoreFolder", "folder_of"]
