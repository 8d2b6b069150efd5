"""``backend="ray"``: a corpus on a Ray cluster, with Ray Core: model actors fed one video per task.
No torch on the driver.

    run_corpus(["s3://bucket/in/"], "s3://bucket/out/", backend="ray", ray_address="ray://head:10001")

Why Ray Core and not Ray Data: the unit of work is one video and its record; the driver writes
the manifest (one line per video, as it ends), reports progress per video and keeps the
local backend's resume rules, which a streaming dataset of rows would hide. Ray Data's
``read_videos`` yields frames, which does not fit (DESIGN 9).

- **Cluster**: the Ray this process is connected to (``ray.init`` by the caller), else
  ``ray_address`` or ``$RAY_ADDRESS`` (``ray://HOST:10001``, ``HOST:6379``, or ``auto``: the one
  ``ray start`` runs on this machine), else a new local Ray started for the run (listening on
  127.0.0.1 only, shut down at the end).
- **Workers**: when the cluster has GPUs and the device is not ``cpu``, ``workers`` GPU actors
  (default one per GPU; more than the GPUs share them, ``num_gpus=1/k`` for k per GPU; Ray sets
  ``CUDA_VISIBLE_DEVICES``, so ``device="auto"`` picks that GPU); else ``workers`` CPU actors
  (default one per 2 CPUs), each given ``CPUs // workers`` CPUs (so torch's threads: Ray sets
  ``OMP_NUM_THREADS``). Each loads the model once, in ``__init__``, and
  says hello with its settings: the driver takes the first one's fingerprint and refuses a worker
  whose settings differ (other weights). Workers that never start (no room on the cluster) are
  waited for while the others work; none within ``READY_TIMEOUT`` is an error.
- **Tasks**: one video each, ``work.segment_one`` in the actor: the same code, outputs and
  records as the local backend; the driver hands the next video to whichever actor is free and
  writes the skipped and failed-source records itself.
- **Retries**: actors restart when their process dies (``max_restarts=-1``: loss of a worker or
  its node, the OOM killer, a crash in native code) and the video in flight runs again from its
  first frame (``max_task_retries=2``); a video that kills its worker 3 times is a failed record
  and that actor is replaced. Outputs are atomic, so a killed try leaves nothing but a temporary
  (removed by the next write to the same output on that machine).
- **The manifest**: written by the driver only (same lines, same lock), a line per video as it
  ends, so lines are in completion order; ``run`` returns the records in source order.
- **Progress**: ``planned``, ``video_started`` (when a video is handed to a worker),
  ``video_done`` and ``check`` are called on the driver; per-frame ``frames`` is not forwarded.
- **What workers need**: videomt installed (the same version), the sources and the output
  folder at the same paths (a shared file system) or store URLs, the store's credentials. The
  driver passes only the store's endpoint variables (``remote.ENDPOINT_VARIABLES``) to them,
  never credentials. What loading the model prints (notes, warnings) is printed once, from the
  first worker.
- **Interrupts**: Ctrl-C or a signal on the driver kills the actors; videos in flight have no
  record (they run next time); SIGKILL of the driver ends its actors too (Ray owns them by job).
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import socket
import sys
import time
from collections import deque
from contextlib import redirect_stderr, redirect_stdout

from videomt_cli import errors
from videomt_cli.corpus.manifest import Record
from videomt_cli.corpus.places import LocalFolder
from videomt_cli.corpus.remote import ENDPOINT_VARIABLES, one_line
from videomt_cli.corpus.work import CorpusProgress, fingerprint, model_name, plan, segment_one, settings_of, settled
from videomt_cli.errors import InputError, VideoMTError

INSTALL = 'pip install "videomt[ray]"'
MAX_TASK_RETRIES = 2  # a video runs at most 3 times when its worker dies under it
READY_TIMEOUT = 600.0  # seconds to wait for the first worker (an autoscaler may be adding nodes)
POLL = 0.25  # seconds between checks for an interrupt while waiting on the cluster


def import_ray(local: bool = False):
    """The ``ray`` module, or one :class:`InputError` saying how to install it. ``local``: a
    Ray may be started here, so make it listen on 127.0.0.1 only (read when ray is imported)."""
    if local and "ray" not in sys.modules:
        # Ray's switch for single-machine clusters (its default on macOS and Windows): every
        # service binds to the loopback address; a cluster that others join is started by `ray start`.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise InputError(f"--backend ray needs Ray: {INSTALL}") from None
    return ray


def load_model(model, options: dict):
    """What a worker loads when ``run_corpus`` was given ``model=`` and its options."""
    from videomt_cli.inference.predictor import Predictor

    return Predictor.from_model(model, **options)


class Worker:
    """One model actor: loads the predictor once, then runs one video per call (module docstring).
    Made a Ray actor by :func:`run` (``ray.remote(Worker)``), so importing this module needs no Ray."""

    def __init__(self, load) -> None:
        self.predictor = None
        self.error: tuple[str, str] | None = None
        said = io.StringIO()
        try:
            with redirect_stdout(said), redirect_stderr(said):  # printed once by the driver
                predictor = load()
                if not hasattr(predictor, "run"):
                    raise InputError(f"the predictor function returned a {type(predictor).__name__}, not a "
                                     f"Predictor.")
            self.predictor = predictor
        except VideoMTError as e:
            self.error = (type(e).__name__, str(e))
        except Exception as e:  # noqa: BLE001 - reported by the driver in one line
            self.error = ("InputError", f"The model could not be loaded on a Ray worker ({socket.gethostname()}): "
                                        f"{one_line(e)}")
        self.said = said.getvalue()

    def hello(self, fmt: str, window: dict, sink_options: dict | None) -> dict:
        """Who this worker is, what loading printed, and its settings (or why it has none)."""
        reply = {"pid": os.getpid(), "host": socket.gethostname(), "said": self.said, "error": self.error}
        if self.predictor is not None:
            try:
                reply["settings"] = settings_of(self.predictor, fmt, sink_options=sink_options, **window)
            except VideoMTError as e:
                reply["error"] = (type(e).__name__, str(e))
            reply["model"] = model_name(self.predictor)
            reply["device"] = str(self.predictor.device)
        return reply

    def segment(self, index: int, job, output: str, fmt: str, fp: str, settings: dict, window: dict,
                sink_options: dict | None) -> tuple[int, Record]:
        """Run one video (``work.segment_one``) and return ``(index, record)``."""
        if self.predictor is None:  # restarted, and the model no longer loads here
            name, message = self.error
            return index, settled(job, model="", fp=fp, settings=settings, error=message)
        return index, segment_one(self.predictor, job, output, fmt, fp=fp, settings=settings, window=window,
                                  sink_options=sink_options)

    def pid(self) -> int:
        return os.getpid()


def _raise(error: tuple[str, str]):
    """A worker's load error, raised on the driver as the same videomt error."""
    name, message = error
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, VideoMTError)):
        cls = InputError
    raise cls(message)


def _connect(ray, address: str | None) -> bool:
    """Join the cluster (module docstring); True when this call connected (so disconnects after)."""
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING)
    try:
        if address is None:  # "local": a new Ray, even where `ray start` left one (--ray-address auto joins it)
            ray.init(address="local", **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise InputError(f"Cannot start or join {where}: {_first_line(e)}; check --ray-address (ray://HOST:10001, "
                         f"HOST:6379, or auto), that the cluster is up, and for a cluster with token "
                         f"authentication RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN).") from None
    return True


def actor_resources(cluster: dict, workers: int | None, device: str | None) -> tuple[int, dict]:
    """How many model actors, and each one's Ray options, for a cluster's resources
    (``ray.cluster_resources()``: ``{"CPU": 16.0, "GPU": 2.0, ...}``; module docstring)."""
    gpus, cpus = float(cluster.get("GPU", 0)), float(cluster.get("CPU", 1))
    gpu = gpus >= 1 and str(device or "auto").split(":")[0] not in ("cpu", "mps")
    count = workers or (int(gpus) if gpu else max(1, int(cpus) // 2))
    options = dict(max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)
    if gpu:
        # More workers than GPUs share them (3 per GPU: 1/3 each): one video's decoding thread
        # cannot keep a large GPU busy. Ray takes 4 decimals; rounding down keeps k per GPU.
        share = math.floor(10000 / math.ceil(count / gpus)) / 10000
        options.update(num_gpus=share, num_cpus=1)  # decoding threads are FFmpeg's; torch runs on the GPU
    else:
        options.update(num_gpus=0, num_cpus=max(1, int(cpus) // count))
    return count, options


class _Pool:
    """The model actors, the ones ready for a video, and their hellos."""

    def __init__(self, ray, load, workers: int | None, device: str | None, hello_args: tuple) -> None:
        self.ray = ray
        self.load = load
        self.hello_args = hello_args
        count, options = actor_resources(ray.cluster_resources(), workers, device)
        self.gpu = options["num_gpus"] > 0
        self.retries = options["max_task_retries"]
        env = {k: os.environ[k] for k in ENDPOINT_VARIABLES if k in os.environ}
        if env:
            options["runtime_env"] = {"env_vars": env}
        self.actor_class = ray.remote(Worker).options(**options)
        self.hellos: dict = {}  # hello future -> actor
        self.actors: list = []
        self.idle: deque = deque()
        self.first: dict | None = None
        self.lost = 0  # workers that died before saying hello
        self.count = count
        for _ in range(count):
            self.add()

    def add(self) -> None:
        actor = self.actor_class.remote(self.load)
        self.actors.append(actor)
        self.hellos[actor.hello.remote(*self.hello_args)] = actor

    def replace(self, actor) -> None:
        """A worker that died under the same video too often: a fresh one in its place."""
        self.kill(actor)
        self.add()

    def kill(self, actor) -> None:
        if actor in self.actors:
            self.actors.remove(actor)
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def greet(self, future, progress: CorpusProgress) -> None:
        """A hello came back: the actor is ready (or refused)."""
        actor = self.hellos.pop(future)
        try:
            reply = self.ray.get(future)
        except self.ray.exceptions.RayError as e:  # died while loading, past its retries: another one
            self.kill(actor)
            self.lost += 1
            if self.lost > 2 * self.count:
                raise InputError(f"Ray workers keep dying while loading the model ({self.lost} so far): "
                                 f"{_first_line(e)}") from None
            self.add()
            return
        if reply.get("error"):
            self.kill(actor)
            _raise(reply["error"])
        if self.first is None:
            self.first = reply
            if reply["said"]:
                progress.said(reply["said"])  # the model's notes and warnings, once
        elif reply["settings"] != self.first["settings"]:
            differ = sorted(k for k in reply["settings"] if reply["settings"][k] != self.first["settings"].get(k))
            self.kill(actor)
            raise InputError(f"The Ray worker on {reply['host']} loaded a model whose {', '.join(differ)} differ "
                             f"from the first worker's ({self.first['host']}): every worker needs the same weights "
                             f"and options.")
        self.idle.append(actor)

    def close(self) -> None:
        for actor in list(self.actors):
            self.kill(actor)


def run(items, place, fmt: str, latest: dict, manifest, *, overwrite: bool, window: dict,
        sink_options: dict | None, progress: CorpusProgress, model, predictor, options: dict,
        address: str | None, workers: int | None) -> list[Record]:
    """The Ray backend of ``run_corpus`` (called with the folder checked and locked and the
    manifest open): start the workers, plan with the first one's fingerprint, run, record."""
    address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's own way to name a cluster
    ray = import_ray(local=address is None)
    connected = _connect(ray, address)
    load = predictor if predictor is not None else functools.partial(load_model, model, dict(options))
    output = os.path.abspath(place.path) if isinstance(place, LocalFolder) else place.key  # workers' cwd differs
    pool = None
    try:
        pool = _Pool(ray, load, workers, options.get("device"), (fmt, window, sink_options))
        deadline = time.monotonic() + READY_TIMEOUT
        while pool.first is None:
            ready, _ = ray.wait(list(pool.hellos), num_returns=1, timeout=POLL)
            progress.check()
            for future in ready:
                pool.greet(future, progress)
            if pool.first is None and time.monotonic() > deadline:
                have = ray.cluster_resources()
                raise InputError(f"No Ray worker started within {READY_TIMEOUT:.0f} s (the cluster has "
                                 f"{have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs): check --workers and "
                                 f"the cluster's resources.")
        settings, name = pool.first["settings"], pool.first["model"]
        fp = fingerprint(settings)
        jobs = plan(items, place.key, fmt, fp, latest, overwrite, exists=place.exists())
        progress.planned(jobs)
        total = len(jobs)
        records: list[Record | None] = [None] * total
        queue = deque(range(total))
        running: dict = {}  # task future -> (index, actor)

        def done(index: int, record: Record) -> None:
            manifest.append(record)
            records[index] = record
            progress.video_done(index, total, record)

        while queue or running:
            while queue and (jobs[queue[0]].action != "run" or pool.idle):
                index = queue.popleft()
                job = jobs[index]
                progress.video_started(index, total, job)
                if job.action != "run":
                    done(index, settled(job, model=name, fp=fp, settings=settings))
                    continue
                actor = pool.idle.popleft()
                future = actor.segment.remote(index, job, output, fmt, fp, settings, window, sink_options)
                running[future] = (index, actor)
            if not running and not pool.hellos:  # every worker refused or died: cannot go on
                raise InputError("No Ray worker is left to run the corpus: see the lines above.")
            ready, _ = ray.wait(list(running) + list(pool.hellos), num_returns=1, timeout=POLL)
            progress.check()
            for future in ready:
                if future in pool.hellos:
                    pool.greet(future, progress)
                    continue
                index, actor = running.pop(future)
                try:
                    index, record = ray.get(future)
                    pool.idle.append(actor)
                except ray.exceptions.RayActorError as e:
                    pool.replace(actor)
                    tries = pool.retries + 1
                    record = settled(jobs[index], model=name, fp=fp, settings=settings,
                                     error=f"the Ray worker running this video died ({tries} "
                                           f"{'try' if tries == 1 else 'tries'}; killed, out of memory, or a crash "
                                           f"in native code): {_first_line(e)}")
                except ray.exceptions.RayError as e:
                    pool.idle.append(actor)
                    record = settled(jobs[index], model=name, fp=fp, settings=settings,
                                     error=f"the Ray task for this video failed: {_first_line(e)}")
                done(index, record)
        return records
    finally:
        if pool is not None:
            pool.close()
        if connected:
            ray.shutdown()


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


__all__ = ["INSTALL", "MAX_TASK_RETRIES", "Worker", "actor_resources", "import_ray", "load_model", "run"]
