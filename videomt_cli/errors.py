"""One error family for everything a user can get wrong.

Library code raises these with a message that says what to do next; the CLI turns any of
them into one red line and exit code 1. Anything else that escapes is a bug and keeps its
traceback.
"""


class VideoMTError(Exception):
    """Base of every user-facing error of videomt."""


class CheckpointError(VideoMTError):
    """A checkpoint that cannot be found, read, or does not fit the model."""


class InputError(VideoMTError, ValueError):
    """An argument of the wrong shape, type or range (also a ``ValueError``)."""
