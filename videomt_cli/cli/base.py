"""What every command shares: the Typer app, the consoles, the one error line, signals, progress.

Library errors (the ``VideoMTError`` family) become one red line and exit code 1; usage errors exit 2.

Signals: Ctrl-C (SIGINT), SIGTERM and SIGHUP all unwind the same way, as an :class:`Interrupted`
(a ``KeyboardInterrupt``) raised in the main thread, so every ``with`` block removes its
temporary output; the run then ends with one line ("Interrupted.", "Terminated.", "Hangup.")
and exit code 128 + the signal's number (130, 143, 129). Whatever exception surfaces after a
signal (C code can turn the interrupt into another one) is reported as that signal. A live run
(``segment`` on a stream, or to JSON lines) is softer: its first signal only ends the stream, what
has arrived is processed and every output committed, then the same line and exit code; a second
signal unwinds as above.
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from videomt_cli.errors import InputError, VideoMTError
from videomt_cli.io.atomic import WRITE_ERRNOS, write_cause

app = typer.Typer(
    name="videomt",
    help="Video segmentation and tracking with VidEoMT: video in, masks and tracks out.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


class State:
    quiet = False


# ----------------------------------------------------------------------------- signals


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, SIGHUP) turned into an exception that unwinds the run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_SIGNAL_LINES = {signal.SIGINT: "Interrupted.", signal.SIGTERM: "Terminated."}
if hasattr(signal, "SIGHUP"):
    _SIGNAL_LINES[signal.SIGHUP] = "Hangup."


class Signals:
    """The one place signals become a clean unwind (installed by :func:`main`).

    The first signal raises :class:`Interrupted` in the main thread (in a live run's
    :meth:`soft` mode it ends the stream instead). Another one during the
    unwind is ignored, so the cleanup finishes (unless the unwind takes more than 2 seconds, or
    the first was swallowed: then it raises again). A swallowed one (by C code, or by a callback
    that cannot raise, where Python would print "Exception ignored") is raised again by
    :meth:`check` at the next chunk, frame or commit. While the output is being moved
    into place (:meth:`deferred`) a signal only waits; once the output is in place
    (``finished``) the command has succeeded and a late signal changes nothing.
    """

    received: int | None = None
    at = 0.0
    deferring = False
    finished = False
    soft_stop = None  # a live run's stop(signum): see soft()

    installed: list[int] = []

    @classmethod
    def install(cls) -> None:
        cls.received, cls.at, cls.deferring, cls.finished, cls.soft_stop = None, 0.0, False, False, None
        cls.installed = []
        if sys.unraisablehook != cls._unraisable:
            cls._next_hook = sys.unraisablehook
        sys.unraisablehook = cls._unraisable
        for signum in _SIGNAL_LINES:
            try:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue  # nohup, a background job: the signal is meant to be ignored
                signal.signal(signum, cls._handle)
                cls.installed.append(signum)
            except (ValueError, OSError):  # not the main thread (embedded use): leave it alone
                pass

    @classmethod
    def ignore(cls) -> None:
        """The run is over: ignore the signals until the process is gone. (Python puts the default
        handlers back while it shuts down, and a signal then would kill the finished run silently.)"""
        cls.finished = True
        for signum in cls.installed:
            try:
                signal.signal(signum, signal.SIG_IGN)
            except (ValueError, OSError):
                pass
        if sys.unraisablehook == cls._unraisable:
            sys.unraisablehook = cls._next_hook

    _next_hook = staticmethod(sys.__unraisablehook__)

    @classmethod
    def _unraisable(cls, unraisable) -> None:
        # The signal came while Python ran a callback that cannot raise (a weakref callback of the
        # import system, a __del__): Python would print "Exception ignored in ..." and a traceback.
        # Stay silent; the next check() (every chunk, every frame, before the commit) raises it.
        if isinstance(unraisable.exc_value, Interrupted) or (
                cls.received is not None and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            return
        cls._next_hook(unraisable)

    @classmethod
    def _handle(cls, signum, frame) -> None:
        now = time.monotonic()
        if cls.finished:
            return
        if cls.received is None:
            cls.received, cls.at = signum, now
            if cls.soft_stop is not None:
                cls.soft_stop(signum)  # a live run: the stream ends as at its end, no exception
                return
            if not cls.deferring:
                raise Interrupted(signum)
        elif cls.soft_stop is not None and not cls.deferring:
            cls.soft_stop, cls.at = None, now  # the second signal of a live run aborts, as outside one
            raise Interrupted(cls.received)
        elif not cls.deferring and now - cls.at > 2.0:
            cls.at = now
            raise Interrupted(cls.received)

    @classmethod
    def check(cls) -> None:
        """Raise the signal received (one that C code swallowed, or one deferred) now (not in a
        live run's soft mode, where the first signal ends the stream instead)."""
        if cls.received is not None and not cls.finished and cls.soft_stop is None:
            raise Interrupted(cls.received)

    @classmethod
    @contextmanager
    def soft(cls, stop):
        """A live run's soft mode: the first signal calls ``stop(signum)`` and returns, so the
        stream ends as at its end, what has arrived is processed and every output is committed;
        the command then exits 128 + the signal's number (see :func:`exit_if_signalled`). A
        second signal unwinds at once, as outside soft mode."""
        cls.soft_stop = stop
        try:
            yield
        finally:
            cls.soft_stop = None

    @classmethod
    @contextmanager
    def deferred(cls):
        cls.deferring = True
        try:
            yield
        finally:
            cls.deferring = False


def exit_if_signalled() -> None:
    """After a soft-stopped live run has committed its outputs: exit as the signal says (its one
    line, 130 / 143 / 129)."""
    if Signals.received is not None and not Signals.finished:
        raise typer.Exit(128 + int(Signals.received))


def commit(sink) -> None:
    """Move a sink's output into place: a signal received before stops it; one during waits."""
    Signals.check()
    with Signals.deferred():
        sink.close()
    Signals.finished = True


QUIET_HELP = "Print only errors and final paths (no progress bars)."


@app.callback()
def _main(quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP)) -> None:
    State.quiet = quiet  # reset on every invocation: the CLI may run many times in one process (tests)


def quiet_option():
    # The same flag on the commands that print progress, so `videomt segment x.mp4 -q` works as well
    # as `videomt -q segment x.mp4` (people put it after the command).
    return typer.Option(False, "--quiet", "-q", help=QUIET_HELP)


def set_quiet(quiet: bool) -> None:
    State.quiet = State.quiet or quiet


def say(*args, **kwargs) -> None:
    # soft_wrap: a long path must stay on one line that scripts can copy, not be folded at 80 columns.
    if not State.quiet:
        out.print(*args, soft_wrap=True, **kwargs)


def wrote(path, details: str = "") -> None:
    """The final line of a command that writes something: the bare path under --quiet (for scripts).
    Output to stdout (``-o -``): the line goes to stderr, after the data, and not under --quiet."""
    console = err if str(path) == "-" else out
    if State.quiet:
        if console is out:
            out.print(escape(str(path)), soft_wrap=True, highlight=False)
    else:
        console.print(f"[green]Wrote[/green] {escape('stdout' if console is err else str(path))}{escape(details)}",
                      soft_wrap=True)


def warn(message: str) -> None:
    # Messages hold paths and lists like [1, 2]: escape them so Rich never reads them as markup.
    err.print(f"[yellow]Warning:[/yellow] {escape(str(message))}", soft_wrap=True, highlight=False)


def parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    """'448x800', '448,800' or '640' -> (h, w)."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--size {text!r} is not HxW or a single number, e.g. 448x800 or 640.") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise InputError(f"--size {text!r} must be two positive numbers HxW, e.g. 448x800.")
    return values[0], values[1]



@contextmanager
def progress_bar():
    """A Rich progress bar on stderr (silent under --quiet).

    When the block fails the bar is erased, so a user error leaves exactly one red line on stderr
    (the error), not a half-drawn bar above it.
    """
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=err, disable=State.quiet, transient=False)
    with bar:
        try:
            yield bar
        except BaseException:
            bar.live.transient = True  # a terminal: erase the bar
            bar.live.stop()
            bar.disable = True  # so Progress.stop adds no blank line (it does on pipes and files)
            raise


# ----------------------------------------------------------------------------- entry point


def error_line(message: str) -> None:
    # escape: messages quote paths and lists ([1, 2], a folder named [old]) that Rich would eat as markup.
    try:
        err.print(f"[red]Error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    except OSError:  # stderr is gone (a closed terminal): the exit code still says it
        pass


def _signal_exit(signum: int) -> int:
    try:
        err.print(f"[red]{_SIGNAL_LINES.get(signum, 'Interrupted.')}[/red]", highlight=False)
    except OSError:
        pass
    return 128 + int(signum)


def _os_error_message(e: OSError) -> str:
    cause = write_cause(e, e.filename)
    if e.filename is None or str(e.filename) in cause:
        return cause[:1].upper() + cause[1:] + "."
    return f"{e.filename}: {cause}."


def _run() -> int:
    """Run the app; return the exit code, with the one line for errors and signals printed."""
    try:
        from videomt_cli.modeling.device import keep_heap  # imports torch: a signal may come meanwhile

        keep_heap()
        app()  # standalone: Typer prints usage errors itself and exits 2
        return 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if Signals.received is not None and not Signals.finished:
            return _signal_exit(Signals.received)
        if isinstance(e.code, str):  # sys.exit("message"): Python would print it
            error_line(e.code)
        if code == 130:  # Typer turns a KeyboardInterrupt inside a command into a silent exit 130
            return _signal_exit(signal.SIGINT)
        return code
    except KeyboardInterrupt as e:  # raised outside Typer's own handling (e.g. while importing)
        return _signal_exit(Signals.received or getattr(e, "signum", signal.SIGINT))
    except VideoMTError as e:
        if Signals.received is not None and not Signals.finished:
            return _signal_exit(Signals.received)
        error_line(str(e))
        return 1
    except OSError as e:
        if Signals.received is not None and not Signals.finished:
            return _signal_exit(Signals.received)
        if e.errno not in WRITE_ERRNOS:
            raise
        error_line(_os_error_message(e))  # a full disk or a read-only place the library did not name
        return 1
    except BaseException:
        if Signals.received is not None and not Signals.finished:
            # C code (pycocotools, numpy) can turn the interrupt into another exception
            return _signal_exit(Signals.received)
        raise


def main() -> None:
    """Console-script entry: one red line and exit 1 for user errors, 2 for usage; a signal
    (Ctrl-C, SIGTERM, SIGHUP) cleans up, prints one line and exits 128 + its number.

    Once the run is over, SIGINT, SIGTERM and SIGHUP are ignored until the process is gone (it
    is exiting): a late signal never kills a finished run silently. In-process callers (tests)
    restore their own handlers afterwards.
    """
    Signals.install()
    try:
        code = _run()
    finally:
        Signals.ignore()  # the run is over: a late signal changes nothing
    sys.exit(code)

