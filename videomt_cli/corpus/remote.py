"""Corpus sources and outputs in an object store, named by fsspec URLs (``s3://bucket/prefix/``,
``gs://``, ``az://``, ``memory://``, ...). No torch.

Which URLs: any scheme fsspec has a file system for, except the stream schemes (``http(s)://``,
``rtsp://``, ... are live sources to videomt) and ``file://`` (a local path). ``s3://`` needs
``s3fs`` (``pip install "videomt[s3]"``); the endpoint and credentials are the usual ones of the
store's client: for S3 ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``, or fsspec's
``FSSPEC_S3_ENDPOINT_URL``), ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an
instance role.

Sources (:func:`expand_url`): a URL names an object (one video), a prefix (searched by the rule
of local folders: a prefix whose objects include frame images and no videos is one frame
folder, else every video object in it and every sub-prefix by the same rule; hidden names and
the output prefix skipped), or a glob (``*``, ``?``, ``[``, ``**``). A corpus is listed once;
each item carries its ``stamp`` (size and ETag of the object, or a digest of a frame folder's
names, sizes and ETags), so resume needs no further request per video.

Reading (:func:`local_copy`): a worker downloads the video (or the frame folder's images) into a
temporary folder under ``TMPDIR``, keeping its name, runs it as a local file, and deletes the
copy. Why not PyAV on an fsspec file object: the reader probes, seeks (an MP4 index at the end of
the file) and decodes in passes, each of which would be a run of small ranged requests through
Python callbacks; a copy costs one streamed GET and disk for one video per worker, and every
rule of the local reader holds unchanged. Messages name the URL, never the temporary copy.

Writing (:class:`StoreFolder`): each output is written by its sink into a local temporary folder
(the same bytes as a local run) and then uploaded with one put of the complete file. An object
store has no rename, but a put is write-once: a reader sees the old object or the whole new one,
never a part (S3's multipart uploads, used above 100 MiB, also appear only when completed, and
s3fs aborts them on failure). A PNG folder is many objects: its ``meta.json`` is deleted first and
uploaded last, objects of the old folder that the new one lacks are deleted after it, and a
failed upload removes the folder, so a PNG folder without ``meta.json`` is incomplete.

The manifest (:class:`StoreManifest`): objects cannot be appended to, so the driver keeps a local
working copy (fsynced per record, as a local manifest) and puts the whole file after each record,
at most every max(2 s, 1 s per 2 MB of manifest), and at the end. A driver killed outright loses
at most the last interval's lines in the store: those videos run again next time. The lock is
a ``flock`` on a file under ``TMPDIR`` named by the URL: it refuses a second run into the same
prefix from the same machine; runs from two machines into one prefix are not detected.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from videomt_cli.corpus.manifest import LOCK_NAME, MANIFEST_NAME, Manifest, folder_lock
from videomt_cli.errors import InputError, OutputError, VideoMTError
from videomt_cli.io.images import IMAGE_EXTENSIONS, natural_key

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_GLOB = re.compile(r"[*?[]")
#: Schemes that are live streams (``io.live``) or local files, not stores.
NOT_STORES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "rtp", "http", "https", "file", "local")
#: The extra that brings a scheme's driver, where videomt has one.
EXTRAS = {"s3": "s3", "s3a": "s3"}
#: Environment variables that say *where* a store is (never credentials): passed to Ray workers.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
                      "FSSPEC_S3_ENDPOINT_URL")
META_NAME = "meta.json"  # a PNG folder's completeness marker (sinks.base.META_NAME)


def scheme_of(text: str) -> str | None:
    m = _URL.match(text)
    return m.group(1).lower() if m else None


def is_url(text) -> bool:
    """Whether ``text`` is a store URL (module docstring): a scheme fsspec knows, no stream, no file."""
    if not isinstance(text, (str, os.PathLike)):
        return False
    scheme = scheme_of(os.fspath(text))
    if scheme is None or scheme in NOT_STORES:
        return False
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:  # pragma: no cover - fsspec comes with huggingface_hub
        return scheme in EXTRAS
    return scheme in known_implementations or scheme in registry


def open_store(url: str):
    """``(fs, path)`` for a store URL; a missing driver is one ``InputError`` saying what to install."""
    scheme = scheme_of(url) or ""
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url)
    except ImportError as e:
        if scheme in EXTRAS:
            raise InputError(f"{scheme}:// URLs need s3fs: pip install \"videomt[{EXTRAS[scheme]}]\".") from None
        raise InputError(f"{scheme}:// URLs need a driver fsspec could not import ({one_line(e)}).") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"{url} is not a URL fsspec can open ({one_line(e)}).") from None


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if not isinstance(err, VideoMTError) else text


def store_error(err: BaseException, url: str, reading: bool = True) -> VideoMTError:
    """One line for a failed store request: not found, permission, or the client's own text."""
    if isinstance(err, VideoMTError):
        return err
    if isinstance(err, FileNotFoundError):
        cause = f"{url}: " + ("it does not exist" if reading else "no such bucket or container")
    elif isinstance(err, PermissionError):
        cause = f"{url}: access denied ({one_line(err)})"
    else:
        cause = f"{url}: {one_line(err)}"
    advice = "check the URL, the endpoint and the credentials"
    if reading:
        return InputError(f"Cannot read {cause}; {advice}.")
    return OutputError(f"Cannot write {cause}; {advice}.")


def canonical(url: str) -> str:
    """The URL as fsspec names it (``s3://bucket/key``), without a trailing slash."""
    fs, path = open_store(url)
    return fs.unstrip_protocol(path.rstrip("/"))


def _version(info: dict) -> str:
    for key in ("ETag", "etag", "md5", "md5Hash", "generation", "mtime", "LastModified", "last_modified",
                "created"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return ""


def object_stamp(info: dict) -> str:
    """An object's size and version (ETag, else a time): a changed object runs again."""
    return f"{int(info.get('size') or 0)}-{_version(info)}"


def folder_stamp(infos: Iterable[tuple[str, dict]]) -> str:
    h = hashlib.sha256()
    for name, info in sorted(infos):
        h.update(f"{name}|{object_stamp(info)};".encode())
    return "prefix-" + h.hexdigest()[:16]


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


# ----------------------------------------------------------------------------- sources


def expand_url(text: str, exclude: str | None = None) -> list:
    """The videos a store URL names (module docstring), as ``CorpusItem``s with ``stamp``; a URL
    that names nothing is one item with ``error``. ``exclude``: a canonical URL never searched."""
    from videomt_cli.corpus.sources import CorpusItem

    fs, path = open_store(text)
    path = path.rstrip("/")
    try:
        if _GLOB.search(path):
            matches = fs.glob(path, detail=True)
            items = []
            for name in sorted(matches, key=natural_key):
                if posixpath.basename(name.rstrip("/")).startswith("."):
                    continue  # as the shell's glob: hidden names only when asked for by name
                items.extend(_found(fs, name, matches[name], exclude, top=False))
            return items or [CorpusItem(text, None, "none", error=f"No object matches {text}: check the pattern.")]
        fs.invalidate_cache(path)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return [CorpusItem(text, fs.unstrip_protocol(path), "none",
                               error=f"{text} does not exist: check the URL (an object or a prefix holding videos).")]
        return _found(fs, path, info, exclude, top=True, source=text)
    except VideoMTError:
        raise
    except Exception as e:  # noqa: BLE001 - a store's client raises its own types; one line each
        return [CorpusItem(text, None, "none", error=str(store_error(e, text)))]


def _found(fs, path: str, info: dict, exclude: str | None, top: bool, source: str | None = None) -> list:
    from videomt_cli.corpus.sources import CorpusItem

    url = fs.unstrip_protocol(path)
    if info.get("type") != "directory":
        return [CorpusItem(source or url, url, "file", stamp=object_stamp(info))]
    items = list(_walk(fs, path, exclude))
    if not items and top:
        return [CorpusItem(source or url, url, "none",
                           error=f"{source or url} holds no video and no frame images: check the prefix.")]
    return items


def _walk(fs, root: str, exclude: str | None) -> Iterator:
    """The local folder rule (``sources``) over one listing of everything under ``root``."""
    from videomt_cli.corpus.sources import VIDEO_EXTENSIONS, CorpusItem

    listing = fs.find(root, detail=True, withdirs=False)
    files: dict[str, list[tuple[str, dict]]] = {}  # folder (relative, "" = root) -> its files
    folders: dict[str, set[str]] = {}  # folder -> its subfolders' names
    for key, info in listing.items():
        if info.get("type") == "directory" or key.endswith("/"):
            continue
        rel = posixpath.relpath(key, root)
        url = fs.unstrip_protocol(key)
        if rel.startswith("..") or _hidden(rel) or (exclude is not None and url.startswith(exclude + "/")):
            continue
        parent, name = posixpath.split(rel)
        files.setdefault(parent, []).append((name, info))
        while parent:  # every folder above knows its subfolder
            up, sub = posixpath.split(parent)
            folders.setdefault(up, set()).add(sub)
            parent = up

    def walk(folder: str) -> Iterator:
        here = files.get(folder, [])
        prefix = posixpath.join(root, folder) if folder else root
        suffixes = {posixpath.splitext(name)[1].lower() for name, _ in here}
        if suffixes & set(IMAGE_EXTENSIONS) and not suffixes & set(VIDEO_EXTENSIONS):
            url = fs.unstrip_protocol(prefix)
            images = [(n, i) for n, i in here if posixpath.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
            yield CorpusItem(url, url, "folder", stamp=folder_stamp(images))
            return
        entries = [(name, info) for name, info in here] + [(name, None) for name in folders.get(folder, ())]
        for name, info in sorted(entries, key=lambda e: natural_key(e[0])):
            if info is None:
                yield from walk(posixpath.join(folder, name) if folder else name)
            elif posixpath.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                url = fs.unstrip_protocol(posixpath.join(prefix, name))
                yield CorpusItem(url, url, "file", stamp=object_stamp(info))

    yield from walk("")


def read_text(url: str) -> str:
    """A small text object (an ``@list`` file in a store)."""
    fs, path = open_store(url)
    try:
        with fs.open(path, "rb") as f:
            return f.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"Cannot read the list file {url}: it must be UTF-8 text, one source a line.") from None
    except Exception as e:  # noqa: BLE001
        raise store_error(e, url) from None


@contextmanager
def local_copy(url: str, kind: str) -> Iterator[str]:
    """A local copy of a store video (``kind`` ``"file"``) or frame folder (``"folder"``: its
    images), under the same name in a new temporary folder; deleted on exit."""
    fs, path = open_store(url)
    path = path.rstrip("/")
    tmp = tempfile.mkdtemp(prefix="videomt-src-")
    try:
        local = os.path.join(tmp, posixpath.basename(path) or "video")
        try:
            if kind == "folder":
                os.mkdir(local)
                for entry in fs.ls(path, detail=True):
                    name = posixpath.basename(entry["name"].rstrip("/"))
                    if (entry.get("type") == "file" and not name.startswith(".")
                            and posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS):
                        fs.get_file(entry["name"], os.path.join(local, name))
            else:
                fs.get_file(path, local)
        except Exception as e:  # noqa: BLE001 - a store's client raises its own types
            raise store_error(e, url) from None
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- the output folder


class StoreFolder:
    """A corpus' output folder in a store (module docstring): checks, lock, manifest, which
    outputs exist, and putting one output in place."""

    def __init__(self, url: str) -> None:
        self.fs, path = open_store(os.fspath(url))
        self.root = path.rstrip("/")
        self.url = self.fs.unstrip_protocol(self.root)
        self.label = os.fspath(url)

    @property
    def key(self) -> str:
        """What the source expansion must never search (the canonical URL)."""
        return self.url

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def join(self, name: str) -> str:
        return self.fs.unstrip_protocol(self._path(name))

    def _names(self) -> set[str]:
        self.fs.invalidate_cache(self.root)
        try:
            listing = self.fs.find(self.root, withdirs=False)
        except FileNotFoundError:
            return set()
        except Exception as e:  # noqa: BLE001
            raise store_error(e, self.url, reading=False) from None
        return {posixpath.relpath(key, self.root) for key in listing if key != self.root}

    def check(self, items: list, overwrite: bool) -> None:
        """The local folder's rules: not an object, holds no input, is not inside a frame folder,
        and is new, empty (hidden names aside) or videomt's (it has ``manifest.jsonl``)."""
        try:
            if self.fs.isfile(self.root):
                raise OutputError(f"{self.label} is an object, not a prefix; with several videos -o names a "
                                  f"folder (end it with /).")
        except VideoMTError:
            raise
        except Exception as e:  # noqa: BLE001
            raise store_error(e, self.url, reading=False) from None
        for item in items:
            if item.path is None or not is_url(item.path):
                continue
            if item.path.startswith(self.url + "/"):
                raise OutputError(f"The output folder {self.label} holds the input {item.source}: outputs would "
                                  f"be read as inputs; choose an output prefix outside the inputs.")
            if item.kind == "folder" and (self.url + "/").startswith(item.path + "/"):
                raise OutputError(f"The output folder {self.label} is inside the frame folder {item.source}; "
                                  f"choose a prefix outside it.")
        names = self._names()
        if not overwrite and MANIFEST_NAME not in names and any(not _hidden(n) for n in names):
            raise OutputError(f"{self.label} holds objects that videomt did not write (no {MANIFEST_NAME}); "
                              f"choose a new or empty prefix, or pass --overwrite to write into it.")

    def prepare(self) -> None:
        """Nothing to make: a store has no folders."""

    def lock(self):
        """A ``flock`` on this machine, named by the URL (module docstring)."""
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / "videomt-locks" / digest
        folder.mkdir(parents=True, exist_ok=True)
        return folder_lock(folder, label=self.label)

    def manifest(self) -> "StoreManifest":
        return StoreManifest(self)

    def exists(self):
        """``name -> bool`` from one listing: a file output is its object, a PNG folder its
        ``meta.json`` (the marker uploaded last)."""
        names = self._names()
        return lambda name: name in names or posixpath.join(name, META_NAME) in names

    @contextmanager
    def output(self, name: str, source: str | None = None) -> Iterator[Path]:
        """A local path for the sink to write ``name`` to; uploaded when the block ends cleanly."""
        tmp = tempfile.mkdtemp(prefix="videomt-out-")
        try:
            target = Path(tmp) / name
            yield target
            self.upload(target, name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def upload(self, local: Path, name: str) -> None:
        """Put a finished local output in place: one put for a file; a folder's files with its
        ``meta.json`` removed first and put last, then the old folder's other objects removed; a
        failed folder upload removes the folder. Failures are one :class:`OutputError`."""
        dest = self._path(name)
        if not local.is_dir():
            try:
                self.fs.put_file(os.fspath(local), dest)
            except Exception as e:  # noqa: BLE001
                raise store_error(e, self.join(name), reading=False) from None
            return
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        marker = [f for f in files if f == META_NAME]
        try:
            old = {posixpath.relpath(k, dest) for k in self._under(dest)}
            if META_NAME in old:
                self.fs.rm_file(posixpath.join(dest, META_NAME))
            for rel in [f for f in files if f != META_NAME] + marker:
                self.fs.put_file(os.fspath(local / rel), posixpath.join(dest, rel))
            for rel in sorted(old - set(files)):
                self.fs.rm_file(posixpath.join(dest, rel))
        except Exception as e:  # noqa: BLE001
            self._remove(dest)
            raise store_error(e, self.join(name), reading=False) from None
        finally:
            self.fs.invalidate_cache(dest)

    def _under(self, dest: str) -> list[str]:
        self.fs.invalidate_cache(dest)
        try:
            return [k for k in self.fs.find(dest, withdirs=False) if k != dest]
        except FileNotFoundError:
            return []

    def _remove(self, dest: str) -> None:
        try:
            for key in self._under(dest):
                self.fs.rm_file(key)
        except Exception:  # noqa: BLE001 - cleanup after a failure: the failure is what is reported
            pass

    def put_bytes(self, name: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._path(name), data)
        except Exception as e:  # noqa: BLE001
            raise store_error(e, self.join(name), reading=False) from None

    def get_bytes(self, name: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(name))
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise store_error(e, self.join(name)) from None


class StoreManifest(Manifest):
    """A store's ``manifest.jsonl`` through a local working copy (module docstring)."""

    MIN_INTERVAL = 2.0  # seconds between two puts of the whole file
    BYTES_PER_SECOND = 2e6  # and one more second per 2 MB of it

    def __init__(self, folder: StoreFolder) -> None:
        self.folder = folder
        self._work = tempfile.mkdtemp(prefix="videomt-manifest-")
        super().__init__(Path(self._work) / MANIFEST_NAME)
        data = folder.get_bytes(MANIFEST_NAME)
        self._in_store = data is not None
        if data is not None:
            self.path.write_bytes(data)
        self._last = 0.0
        self._pending = False

    def create(self) -> None:
        super().create()
        if not self._in_store:  # an empty manifest marks the prefix as videomt's at once
            self.upload()

    def append(self, record) -> None:
        super().append(record)
        self._pending = True
        size = self.path.stat().st_size
        if time.monotonic() - self._last >= max(self.MIN_INTERVAL, size / self.BYTES_PER_SECOND):
            self.upload()

    def upload(self) -> None:
        """Put the whole working copy (one put: readers see the old file or the new one)."""
        self.folder.put_bytes(MANIFEST_NAME, self.path.read_bytes())
        self._in_store, self._pending, self._last = True, False, time.monotonic()

    def close(self) -> None:
        try:
            if self._pending:
                self.upload()
        finally:
            super().close()
            shutil.rmtree(self._work, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an error is on its way out: put what was recorded, but never mask that error
            self.close()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["ENDPOINT_VARIABLES", "LOCK_NAME", "StoreFolder", "StoreManifest", "canonical", "expand_url",
           "is_url", "local_copy", "object_stamp", "open_store", "read_text", "store_error"]
