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


class OutputError(VideoMTError):
    """An output that cannot be written: it exists (without --overwrite), it is one of the inputs, or
    the place is full, over quota, read-only or not writable (the message names the cause)."""


class VideoError(VideoMTError):
    """A video or frame folder that cannot be read, or an overlay video that cannot be written."""


class DatasetError(VideoMTError):
    """A dataset or results file that cannot be read or does not fit: bad JSON, unknown video or
    category ids, a per-frame list of the wrong length, an empty dataset."""


class TrainingError(VideoMTError):
    """Training cannot go on: a diverged loss, or a resume file that does not fit this run."""
