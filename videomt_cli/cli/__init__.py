"""The ``videomt`` command line. The only package that imports Typer and Rich.

Every command parses its options, calls the library, and renders progress and results:

- ``base``: the Typer app, consoles, the one error line, signals, progress bars, ``main``.
- ``models``: ``convert``, ``verify``, ``info``, ``models`` (checkpoints and media).
- ``segment``: ``segment`` (one video, a corpus, or results re-written with ``--from``) and ``overlay``.
- ``datasets``: ``eval``, ``synth``, ``train``, ``import`` (annotations back into a dataset).
"""

from videomt_cli.cli.base import app, main
from videomt_cli.cli import models, segment, datasets  # noqa: F401,E402,I001 - registers the commands in this order

__all__ = ["app", "main"]
