"""Many videos in one run: sources -> one output per video in a folder, a manifest, resume, a lock.

    from videomt_cli.corpus import Summary, run_corpus

    records = run_corpus(["videos/", "extra/*.mkv", "@more.txt"], "out/", fmt="ytvis")
    print(Summary.of(records).line())   # "3 ok, 1 failed, 0 skipped; 96 frames in 8.1 s, 11.9 frames/s"

The unit of work is one video (the query state runs through it from the first frame):
``work.segment_one`` runs one video with a loaded predictor and returns its manifest record;
:func:`run_corpus` checks the output folder, takes its lock, loads the model once, plans (resume)
and loops, appending each record to the manifest before the next video starts. The Ray backend
(``backend="ray"``) runs ``segment_one`` in model actors on a cluster and its driver appends the
records they return, with the same plan, lock and manifest.

    run_corpus(["s3://bucket/in/"], "s3://bucket/out/", backend="ray", workers=8)

- ``sources``: which sources name which videos, and each output's name.
- ``manifest``: ``OUT/manifest.jsonl``, its records, the summary, the lock.
- ``work``: the fingerprint of what changes results, the resume plan, one video.
- ``places``: the output folder, local or in a store, behind one interface.
- ``remote``: store URLs (fsspec: ``s3://`` with s3fs, ...): listing, local copies, uploads.
- ``ray_backend``: the Ray Core backend (model actors, retries, the driver's manifest).

The output folder belongs to videomt: it must be new, empty (hidden files aside) or hold a
``manifest.jsonl`` (else only with ``overwrite``), and must not hold an input; an output in it
is replaced when its video runs again. Bad sources and bad videos are failed records and the run
goes on; a bad option, an unusable output folder or a held lock raise before the model loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from videomt_cli.corpus.manifest import LOCK_NAME, MANIFEST_NAME, Manifest, Record, Summary, folder_lock
from videomt_cli.corpus.places import LocalFolder, StoreFolder, folder_of
from videomt_cli.corpus.sources import (SUFFIXES, VIDEO_EXTENSIONS, CorpusItem, expand_sources, is_corpus,
                                        output_names, suffix_for)
from videomt_cli.corpus.work import (CorpusProgress, Job, fingerprint, plan, segment_batched, segment_one,
                                     settings_of, settled, weights_digest)
from videomt_cli.errors import InputError

DEFAULT_FORMAT = "ytvis"
BACKENDS = ("local", "ray")


def run_corpus(sources: Iterable[str | os.PathLike], output: str | os.PathLike, *, model: str | None = None,
               predictor=None, fmt: str | None = None, overwrite: bool = False,
               progress: CorpusProgress | None = None, start=None, end=None, stride: int = 1, classes=None,
               sink_options: dict | None = None, backend: str = "local", ray_address: str | None = None,
               workers: int | None = None, batch_videos: int = 1, **options) -> list[Record]:
    """Segment every video ``sources`` name into the folder ``output``; return one record per
    video, in the order of the sources.

    The model loads once, after the output folder is checked and locked: ``model`` and ``options``
    as ``Predictor.from_model`` takes them, or ``predictor``: a loaded ``Predictor``, or a function
    of no arguments that returns one (the CLI's, which prints the model's notes). ``fmt``: a
    ``--format`` name (default ytvis, ``.json``);
    ``sink_options`` go to each sink (``alpha``, ``color_by`` for overlays). ``start``, ``end``,
    ``stride``, ``classes``: as ``Predictor.run``. ``overwrite``: run every video again, and
    allow a folder videomt did not write. Each record is in the manifest before the next video
    starts. Bad sources and videos are failed records; an unusable output folder, a bad option
    or a held lock raise at once (before the model loads).

    Sources and ``output`` may be store URLs (``s3://bucket/prefix/``; ``corpus.remote``).
    ``backend="ray"`` runs the videos on a Ray cluster (``corpus.ray_backend``): ``ray_address``
    (default: the Ray this process is connected to, else one started for the run), ``workers``
    (model actors; default one per GPU, else one per 2 CPUs); the model loads in each worker, from
    ``model`` and ``options`` or the ``predictor`` function (a loaded ``Predictor`` is refused).
    ``batch_videos`` (local backend): that many videos through the network together
    (``inference.lockstep``); their lines reach the manifest in the order the videos end."""
    from videomt_cli.io.window import Window
    from videomt_cli.sinks import format_for

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if backend not in BACKENDS:
        raise InputError(f"Unknown backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    if backend == "local" and (ray_address is not None or workers is not None):
        raise InputError("--ray-address and --workers apply to --backend ray.")
    if not isinstance(batch_videos, int) or isinstance(batch_videos, bool) or not 1 <= batch_videos <= 256:
        raise InputError(f"batch_videos must be a whole number from 1 to 256, got {batch_videos!r}.")
    if backend == "ray" and batch_videos != 1:
        raise InputError("--batch-videos applies to the local backend (each Ray worker runs one video at a time; "
                         "use more --workers instead).")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a whole number of at least 1, got {workers!r}.")
    fmt = format_for(os.fspath(output), fmt or DEFAULT_FORMAT)
    suffix_for(fmt)  # a format with no per-video file fails before anything is read
    if predictor is not None and (model is not None or options):
        raise InputError("pass either predictor= or model= and its options, not both.")
    if predictor is None:
        from videomt_cli.inference.predictor import check_options

        check_options(options)
    if backend == "ray":
        from videomt_cli.corpus import ray_backend

        # missing: one line saying what to install, before anything else
        ray_backend.import_ray(local=not (ray_address or os.environ.get("RAY_ADDRESS")))
        if predictor is not None and hasattr(predictor, "run"):
            raise InputError("backend='ray' loads the model in each worker: pass model= and its options, or "
                             "predictor= a function that loads it, not a loaded Predictor.")
    Window.of(start, end, stride)
    progress = progress or CorpusProgress()
    place = folder_of(output)
    items = expand_sources(sources, exclude=place.key)
    if not items:
        raise InputError("No sources given: pass video files, folders, globs or @list.txt.")
    place.check(items, overwrite)
    place.prepare()
    window = {"start": start, "end": end, "stride": stride, "classes": classes}
    with place.lock(), place.manifest() as manifest:
        latest = manifest.latest()
        manifest.create()
        if backend == "ray":
            return ray_backend.run(items, place, fmt, latest, manifest, overwrite=overwrite, window=window,
                                   sink_options=sink_options, progress=progress, model=model, predictor=predictor,
                                   options=options, address=ray_address, workers=workers)
        if predictor is None:
            from videomt_cli.inference.predictor import Predictor

            predictor = Predictor.from_model(model, **options)
        elif not hasattr(predictor, "run"):
            predictor = predictor()
        settings = settings_of(predictor, fmt, sink_options=sink_options, **window)
        fp = fingerprint(settings)
        jobs = plan(items, place.key, fmt, fp, latest, overwrite, exists=place.exists())
        progress.planned(jobs)
        if batch_videos > 1:
            by_index = {}
            for index, record in segment_batched(predictor, jobs, place, fmt, fp=fp, settings=settings,
                                                 batch_videos=batch_videos, window=window,
                                                 sink_options=sink_options, progress=progress):
                manifest.append(record)
                by_index[index] = record
                progress.video_done(index, len(jobs), record)
            return [by_index[i] for i in range(len(jobs))]
        records = []
        for index, job in enumerate(jobs):
            progress.video_started(index, len(jobs), job)
            record = segment_one(predictor, job, place, fmt, fp=fp, settings=settings, window=window,
                                 sink_options=sink_options, progress=progress)
            manifest.append(record)
            records.append(record)
            progress.video_done(index, len(jobs), record)
    return records


__all__ = ["BACKENDS", "DEFAULT_FORMAT", "LOCK_NAME", "MANIFEST_NAME", "SUFFIXES", "VIDEO_EXTENSIONS", "CorpusItem",
           "CorpusProgress", "Job", "LocalFolder", "Manifest", "Record", "StoreFolder", "Summary", "expand_sources",
           "fingerprint", "folder_lock", "folder_of", "is_corpus", "output_names", "plan", "run_corpus",
           "segment_one", "settings_of", "settled", "suffix_for", "weights_digest"]
