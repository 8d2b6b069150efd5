"""Which videos a corpus' sources name, and where each one's output goes. No torch.

Sources (:func:`expand_sources`), each one of:

- a video file, taken whatever its suffix (the reader decides; a file that is no video fails);
- a folder: if its files (hidden ones aside) include frame images (``io.images.IMAGE_EXTENSIONS``)
  and no video files (:data:`VIDEO_EXTENSIONS`), it is one video, a frame folder, and its
  subfolders are not looked at; otherwise every video file in it is a video and every subfolder
  is searched by the same rule (so YouTube-VIS' ``JPEGImages/`` gives one video per subfolder).
  Other files are skipped; hidden names, unreadable subfolders and the output folder are never
  entered; a symlinked folder is followed once;
- a glob (``*``, ``?``, ``[``; ``**`` for any depth), used when no file has that very name;
- ``@list.txt``: one source a line (a path, folder, glob or URL; relative paths from the current
  folder, as if typed on the command line); blank lines and lines starting with ``#`` skipped.
  The list may itself be in a store (``@s3://bucket/list.txt``);
- a store URL (``s3://bucket/prefix/``, an object, a glob; ``remote``): the same rules over the
  store's listing; each item carries the object's ``stamp`` (size and ETag).

A path that does not exist, a glob that matches nothing, a folder that holds no video, and a
stream URL (``http(s)://``, ``rtsp://``: download the video first) become items with an
``error`` (failed records); the others run. The same path reached twice is one video. Order: as
given; inside a folder or glob, natural name order.

Outputs (:func:`output_names`): ``<path relative to the common root>`` with the format's suffix
instead of the video's (``a/b.mp4`` -> ``a/b.json``; a PNG folder ``a/b/``). The common root is
the deepest folder holding every video named by a path (found or missing, so a name does not
depend on whether a file is there); store URLs have theirs (``s3://b/in/x/a.mp4`` and
``s3://b/in/y.mp4`` -> ``x/a.json``, ``y.json``), apart from local paths' and other stores'.
Where two outputs would be one (``a.mp4`` and ``a.mov``; case is ignored, for macOS and
Windows) or one would hold another (PNG folders ``a/`` and ``a/b/``), those videos keep their
whole name (``a.mp4.json``, ``a.mov.json``).
"""

from __future__ import annotations

import glob
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from videomt_cli.corpus.remote import canonical, expand_url, is_url, read_text
from videomt_cli.errors import InputError
from videomt_cli.io.images import IMAGE_EXTENSIONS, natural_key

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                    ".wmv", ".flv", ".3gp", ".ogv")
#: The suffix of each format's output; "" is a folder (PNG). A format needs an entry here to be
#: written one file per video (``suffix_for``).
SUFFIXES = {"ytvis": ".json", "ytvis-dataset": ".json", "coco": ".json", "png": "", "overlay": ".mp4",
            "mot": ".txt", "mots": ".txt", "cvat": ".xml", "labelstudio": ".json"}
#: Names in the output folder that no output may take.
RESERVED = ("manifest.jsonl", ".videomt.lock")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?[]")


@dataclass(frozen=True)
class CorpusItem:
    """One video of a corpus, or a source that names none (``error`` set).

    source: the text that named it (as typed, or as found under a folder or glob).
    path: its absolute path (None for a URL or a glob that matched nothing).
    kind: ``"file"``, ``"folder"`` (frame images), ``"url"`` (a stream URL, refused), or
        ``"none"`` (names no video: a missing path, an empty or unreadable folder, a glob that
        matched nothing). A store video is a ``"file"`` or ``"folder"`` whose ``path`` is its URL.
    rel: its path relative to the corpus' common root, POSIX style (None without ``path``).
    stamp: a store object's version as listed (``remote.object_stamp``); None for local paths,
        whose stamp is read when the plan is made.
    """

    source: str
    path: str | None
    kind: str
    rel: str | None = None
    error: str | None = None
    stamp: str | None = None


def is_corpus(sources: Iterable[str | os.PathLike]) -> bool:
    """Whether ``sources`` can name more than one video (several, a ``@list``, a glob, a folder
    that is not one frame folder): the CLI's choice between one output and an output folder."""
    sources = [os.fspath(s) for s in sources]
    if len(sources) != 1:
        return True
    text = sources[0]
    if text.startswith("@") or is_url(text):  # a store URL is read in corpus mode, even one object
        return True
    if os.path.isdir(text):
        try:
            entries = _frame_folder(text)
        except OSError:  # unreadable: the one-video path says why
            return False
        # a folder of videos (or of folders); one holding neither images nor videos is left to the
        # one-video path, whose message ("no images") says what a frame folder needs
        return entries is not None and any(e.is_dir() or os.path.splitext(e.name)[1].lower() in VIDEO_EXTENSIONS
                                           for e in entries)
    if os.path.exists(text) or _URL.match(text) or not _GLOB.search(text):
        return False
    # a pattern that matches nothing is left to the one-video path: "[draft] walk.mp4" that does
    # not exist is a missing file, said so, not an empty corpus
    return any(True for _ in glob.iglob(text, recursive=True))


def expand_sources(sources: Iterable[str | os.PathLike], *, exclude: str | os.PathLike | None = None
                   ) -> list[CorpusItem]:
    """The videos ``sources`` name, in order, each with its ``rel`` name (module docstring).

    ``exclude`` (the output folder) is never searched. A ``@list`` file that cannot be read is an
    ``InputError``; a source that names no video is an item with ``error``."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    exclude = None if exclude is None else os.fspath(exclude)
    skip_url = exclude if exclude is not None and is_url(exclude) else None
    skip = os.path.realpath(exclude) if exclude is not None and skip_url is None else None
    found: list[CorpusItem] = []
    for source in sources:
        text = os.fspath(source)
        if text.startswith("@"):
            for line in _list_lines(text[1:]):
                found.extend(_expand(line, skip, skip_url))
        else:
            found.extend(_expand(text, skip, skip_url))
    items, seen = [], set()
    for item in found:
        key = os.path.normcase(item.path) if item.path else item.source
        if key not in seen:
            seen.add(key)
            items.append(item)
    return _with_rel(items)


def _list_lines(name: str) -> list[str]:
    try:
        text = read_text(name) if is_url(name) else Path(name).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"The list file {name} does not exist: check the path after '@'.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"Cannot read the list file {name} ({getattr(e, 'strerror', None) or e}): it must be "
                         f"UTF-8 text, one path a line.") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _expand(text: str, skip: str | None, skip_url: str | None = None) -> list[CorpusItem]:
    if is_url(text):
        return expand_url(text, exclude=canonical(skip_url) if skip_url else None)
    if _URL.match(text):
        return [CorpusItem(text, None, "url", error=f"{text}: corpus mode reads files and store URLs (s3://, "
                                                    f"gs://, ...), not streams; download the video and pass "
                                                    f"its path.")]
    if os.path.exists(text):
        return _found(text, skip, top=True)
    if _GLOB.search(text):
        matches = sorted(glob.glob(text, recursive=True), key=natural_key)
        items = [item for match in matches for item in _found(match, skip, top=False)]
        return items or [CorpusItem(text, None, "none", error=f"No file matches {text}: check the pattern.")]
    return [CorpusItem(text, os.path.abspath(text), "none",
                       error=f"{text} does not exist: check the path (a video file or a folder of frame images).")]


def _found(text: str, skip: str | None, top: bool) -> list[CorpusItem]:
    if not os.path.isdir(text):
        return [CorpusItem(text, os.path.abspath(text), "file")]
    try:
        items = list(_walk(text, skip, set(), top=True))
    except OSError as e:
        return [CorpusItem(text, os.path.abspath(text), "none",
                           error=f"Cannot read the folder {text} ({e.strerror or e}): check its permissions.")]
    if not items and top:
        return [CorpusItem(text, os.path.abspath(text), "none",
                           error=f"{text} holds no video ({', '.join(e[1:] for e in VIDEO_EXTENSIONS[:5])}, ...) "
                                 f"and no frame images: check the folder.")]
    return items


def _frame_folder(folder: str) -> list[os.DirEntry] | None:
    """None when ``folder`` is a frame folder (images, no videos); else its entries to search.
    An unreadable folder raises ``OSError``."""
    with os.scandir(folder) as scan:
        entries = [e for e in scan if not e.name.startswith(".")]
    suffixes = {os.path.splitext(e.name)[1].lower() for e in entries if e.is_file()}
    if suffixes & set(IMAGE_EXTENSIONS) and not suffixes & set(VIDEO_EXTENSIONS):
        return None
    return entries


def _walk(folder: str, skip: str | None, seen: set[str], top: bool = False) -> Iterator[CorpusItem]:
    real = os.path.realpath(folder)
    if real == skip or real in seen:  # the output folder; a symlink loop
        return
    seen.add(real)
    try:
        entries = _frame_folder(folder)
    except OSError:
        if top:
            raise
        return  # an unreadable subfolder holds nothing we can read
    if entries is None:
        yield CorpusItem(folder, os.path.abspath(folder), "folder")
        return
    for entry in sorted(entries, key=lambda e: natural_key(e.name)):
        path = os.path.join(folder, entry.name)
        if entry.is_dir():
            yield from _walk(path, skip, seen)
        elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in VIDEO_EXTENSIONS:
            yield CorpusItem(path, os.path.abspath(path), "file")


def _with_rel(items: list[CorpusItem]) -> list[CorpusItem]:
    """Each item's ``rel``: under the common root of the local paths, or of the URLs of its store
    (``s3://``, ``gs://``, ...: each scheme has its own root)."""
    groups: dict[str, list[str]] = {}
    for item in items:
        if item.path is not None:
            m = _URL.match(item.path)
            groups.setdefault(m.group(0).lower() if m else "", []).append(item.path)
    roots = {}
    for scheme, paths in groups.items():
        if scheme:
            roots[scheme] = posixpath.commonpath([posixpath.dirname(p[len(scheme):]) for p in paths])
            continue
        try:
            roots[scheme] = os.path.commonpath([os.path.dirname(p) for p in paths])
        except ValueError:  # paths on different drives (Windows): keep them whole
            roots[scheme] = ""
    out = []
    for item in items:
        if item.path is None:
            out.append(item)
            continue
        m = _URL.match(item.path)
        if m:
            rel = posixpath.relpath(item.path[m.end():], roots[m.group(0).lower()] or ".")
            out.append(replace(item, rel=rel))
            continue
        root = roots[""]
        rel = os.path.relpath(item.path, root) if root else os.path.splitdrive(item.path)[1].lstrip("\\/")
        out.append(replace(item, rel=Path(rel).as_posix()))
    return out


def suffix_for(fmt: str) -> str:
    """The suffix of one video's output in ``--format fmt`` ("" for a folder); ``InputError`` for a
    format that has no per-video file."""
    if fmt not in SUFFIXES:
        from videomt_cli.sinks import FORMATS

        usable = [name for name in SUFFIXES if name in FORMATS]
        raise InputError(f"--format {fmt} cannot be written one output per video; with several videos use one of "
                         f"{', '.join(usable)}.")
    return SUFFIXES[fmt]


def output_names(items: list[CorpusItem], fmt: str) -> list[str | None]:
    """Each item's output, relative to the output folder (None for an item without ``rel``):
    its ``rel`` with the format's suffix for the video's; on a clash (module docstring) the
    clashing videos keep their full name, and what still clashes gets ``~2``, ``~3``, ..."""
    suffix = suffix_for(fmt)

    def stem(item: CorpusItem) -> str:
        rel = PurePosixPath(item.rel)
        return str(rel.with_suffix("")) if item.kind != "folder" and rel.suffix and rel.stem else str(rel)

    names = [None if item.rel is None else stem(item) + suffix for item in items]
    for index in _clashes(names):
        names[index] = items[index].rel + suffix
    for n, index in enumerate(sorted(_clashes(names)), start=2):
        names[index] = f"{items[index].rel}~{n}{suffix}"
    assert not _clashes(names), names
    return names


def _clashes(names: list[str | None]) -> set[int]:
    """Indices of outputs that are another's (case-insensitively: macOS, Windows), hold another's
    (a folder), or take the manifest's or the lock's name."""
    keys = [None if n is None else n.casefold() for n in names]
    first: dict[str, int] = {}
    clash: set[int] = set()
    for i, key in enumerate(keys):
        if key is None:
            continue
        if key in first:
            clash.update((first[key], i))
        first.setdefault(key, i)
        if key in RESERVED:
            clash.add(i)
    parents = {str(p) for key in keys if key is not None for p in PurePosixPath(key).parents}
    clash.update(i for i, key in enumerate(keys) if key is not None and key in parents)
    return clash
