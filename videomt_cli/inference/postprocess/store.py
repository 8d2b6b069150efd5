"""Where a video's masks wait for the end of the video: an unnamed temporary file of per-frame
RLE records (:class:`SpillStore`), and the view of it a result owns (:class:`SpillMasks`).
No torch.

A record is ``int32 n | int32 keys[n] | int32 lengths[n] | ascii counts...``, one per frame; in
memory only the frame index and file offset of each record are kept (16 bytes a frame). Keys are
query indices (instance, panoptic) or head class indices (semantic).

The file lives in the temporary folder (``TMPDIR``, else ``/tmp``); when that folder fills up or
cannot be written, the error is one :class:`~videomt_cli.errors.OutputError` that names the
folder and says to point ``TMPDIR`` elsewhere. Being unnamed, the file disappears with the
process however it ends (SIGKILL too).
"""

from __future__ import annotations

import os
import tempfile
from array import array

import numpy as np

from videomt_cli.errors import OutputError
from videomt_cli.io import masks as mask_ops
from videomt_cli.io.atomic import write_cause
from videomt_cli.records import RLE


def spill_error(err: OSError) -> OutputError:
    """The one error for a spill file that cannot be written or read back: names the folder."""
    try:
        folder = tempfile.gettempdir()
    except OSError:
        folder = os.environ.get("TMPDIR") or "the temporary folder"
    return OutputError(f"Cannot write the temporary file in {folder} (TMPDIR) where a video's masks wait for its "
                       f"last frame: {write_cause(err, folder)}; free some space there or set TMPDIR to a folder "
                       f"with room (TMPDIR=/path/with/space videomt ...).")


class SpillStore:
    """Per-frame lists of (key, RLE counts) in an unnamed temporary file, deleted when closed."""

    def __init__(self) -> None:
        try:
            self._file = tempfile.TemporaryFile(prefix="videomt-")
        except OSError as err:
            raise spill_error(err) from None
        self._frames = array("q")
        self._offsets = array("q")
        self._end = 0
        self._lookup: dict[int, int] | None = None

    def write(self, frame: int, keys, counts: list[str]) -> None:
        keys = np.asarray(keys, dtype=np.int32).reshape(-1)
        blobs = [c.encode("ascii") for c in counts]
        lengths = np.array([len(b) for b in blobs], dtype=np.int32)
        record = np.array([len(blobs)], dtype=np.int32).tobytes() + keys.tobytes() + lengths.tobytes() + b"".join(blobs)
        try:
            self._file.seek(self._end)
            self._file.write(record)
        except OSError as err:
            self.close()  # the temporary folder is full: give its space back at once
            raise spill_error(err) from None
        self._frames.append(frame)
        self._offsets.append(self._end)
        self._end += len(record)
        self._lookup = None

    def __contains__(self, frame: int) -> bool:
        return frame in self._index()

    @property
    def last_frame(self) -> int:
        return max(self._frames, default=-1)

    def _index(self) -> dict[int, int]:
        if self._lookup is None:
            self._lookup = dict(zip(self._frames, self._offsets))
        return self._lookup

    def read(self, frame: int, wanted=None) -> dict[int, str]:
        """{key: counts} of ``frame`` for the keys in ``wanted`` (all keys when None)."""
        try:
            return self._read(frame, wanted)
        except OSError as err:  # buffered records flushed by the first seek: a full disk shows here
            self.close()
            raise spill_error(err) from None

    def _read(self, frame: int, wanted) -> dict[int, str]:
        offset = self._index()[frame]
        f = self._file
        f.seek(offset)
        n = int(np.frombuffer(f.read(4), dtype=np.int32)[0])
        if n == 0:
            return {}
        head = np.frombuffer(f.read(8 * n), dtype=np.int32)
        keys, lengths = head[:n], head[n:].astype(np.int64)
        starts = offset + 4 + 8 * n + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        out = {}
        for key, start, length in zip(keys.tolist(), starts.tolist(), lengths.tolist()):
            if wanted is not None and key not in wanted:
                continue
            f.seek(start)
            out[key] = f.read(length).decode("ascii")
        return out

    @property
    def nbytes(self) -> int:
        """Bytes in the temporary file."""
        return self._end

    @property
    def index_nbytes(self) -> int:
        """Bytes of the in-memory index."""
        return self._frames.itemsize * len(self._frames) + self._offsets.itemsize * len(self._offsets)

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        """Close (and so delete) the file. Never raises: a flush on a full disk fails again."""
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:
                pass


class SpillMasks:
    """A result's masks read from a :class:`SpillStore` it owns (a ``records.MaskStore``).

    ``keys`` maps each track id to the store keys whose union is its mask (one query for a track,
    several for a merged stuff segment). Frames never written are None; a written frame without
    the track's keys is the empty mask. One frame's records are cached: sinks walk frames in order,
    segment after segment or frame after frame.
    """

    def __init__(self, store: SpillStore, keys: dict[int, list[int]], size: tuple[int, int]) -> None:
        self.store = store
        self.keys = {t: list(k) for t, k in keys.items()}
        self.size = size
        self._wanted = {k for ks in self.keys.values() for k in ks}
        self._frame, self._found = None, {}
        self._empty: RLE | None = None

    def mask(self, track_id: int, frame: int) -> RLE | None:
        if self.store.closed:
            raise ValueError("the result was closed: its masks are gone")
        if frame not in self.store:
            return None
        if frame != self._frame:
            self._frame, self._found = frame, self.store.read(frame, self._wanted)
        h, w = self.size
        present = [self._found[k] for k in self.keys[track_id] if k in self._found]
        if not present:
            if self._empty is None:
                self._empty = mask_ops.empty(h, w)
            return self._empty
        if len(present) == 1:
            return {"size": [h, w], "counts": present[0]}
        # stuff segments made of several queries: their masks are disjoint
        union = mask_ops.decode_many([{"size": [h, w], "counts": c} for c in present]).any(0)
        return mask_ops.encode(union)[0]

    def close(self) -> None:
        self.store.close()
