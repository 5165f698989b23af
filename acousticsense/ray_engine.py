"""``scan --engine ray``: classify a library's new files with Ray Data, on this machine or a Ray cluster.

The paths the scan plans are taken lazily, :data:`CHUNK` at a time; each chunk becomes a Ray Data dataset whose
batches of :data:`BATCH` files go to a pool of actors, each holding the model: one actor per GPU, or on CPUs
one per :data:`CPUS_PER_ACTOR` CPUs (torch computes with threads). Outcomes come back in input order, as soon as
the files before them are done. The workers open the files themselves: on a cluster of several machines the
library and the bundle must be at the same path on every node (shared storage).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Outcome
from .errors import ParameterError, sigterm_as_interrupt
from .options import DEFAULT_MAX_SECONDS
from .results import one_line
from .scan import ScanEngine, outcome_of

CHUNK = 1024  # paths per dataset: each starts its actors (and loads the model) afresh, a few seconds
BATCH = 16  # files per actor call
CPUS_PER_ACTOR = 2  # CPUs reserved per CPU actor (one per GPU actor where the cluster has GPUs)
DEAD_BATCHES = 2  # batches per chunk whose actor died (not restarted) that become failed files; more stop the scan


class _Scorer:
    """A Ray Data actor: the model, loaded once, classifying batches of paths into :class:`Outcome` JSON."""

    def __init__(self, bundle: str | None, max_seconds: float):
        import ray

        from .inference import Classifier

        self.clf = Classifier.from_bundle(bundle, "cuda" if ray.get_gpu_ids() else "cpu")
        self.max_seconds = max_seconds

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        outcomes: list[Outcome] = []
        try:
            results = self.clf.classify_many(paths, top_k=len(self.clf.labels), max_seconds=self.max_seconds, embed=True)
            outcomes.extend(map(outcome_of, results))
        except Exception as e:  # noqa: BLE001 - classify_many reports per file; this guards the rest of the batch
            outcomes += [Outcome("failed", one_line(p, e)) for p in paths[len(outcomes) :]]
        return {"index": batch["index"], "outcome": np.array([o.to_json() for o in outcomes], dtype=object)}


def ray_engine(bundle: str | os.PathLike | None, address: str | None = None, max_seconds: float = DEFAULT_MAX_SECONDS) -> ScanEngine:
    """An :data:`~acousticsense.scan.ScanEngine` classifying with Ray Data (``address``: a cluster's; default: a Ray
    started here with all the CPUs and GPUs Ray finds, or the cluster ``RAY_ADDRESS`` names).

    Ray is started when the first path arrives and stopped at the end; a Ray already initialised in this process
    is used as it is (and left running). See the module docstring for what a cluster of several machines needs.
    """
    try:
        import ray
    except ImportError:
        raise ParameterError("--engine ray needs Ray: pip install 'acousticsense[ray]'") from None
    _check_reachable(address)
    bundle_dir = None if bundle is None else str(Path(bundle).expanduser().resolve())

    def run(paths: Iterator[str]) -> Iterator[Outcome]:
        first = next(paths, None)
        if first is None:
            return
        started = not ray.is_initialized()
        if started:  # no dashboard, nothing of the workers' output: the CLI's stdout is JSON
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            except ConnectionError as e:
                where = address or os.environ.get("RAY_ADDRESS")
                raise ParameterError(f"Ray cluster {where}: it does not answer ({e})") from None
        restore = sigterm_as_interrupt() if started else None  # Ray's own handler printed a C stack dump
        import ray.data as _ray_data  # noqa: F401 - configures its logger, to be quietened next

        data_log = logging.getLogger("ray.data")  # its console says when each chunk is done: not worth a line
        level = data_log.level
        data_log.setLevel(logging.ERROR)
        try:
            pending = itertools.chain([first], paths)
            while chunk := list(itertools.islice(pending, CHUNK)):
                yield from _classify_chunk(ray, chunk, bundle_dir, max_seconds)
        finally:
            data_log.setLevel(level)
            if started:
                ray.shutdown()
            if restore is not None:
                restore()

    return run


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) that does not accept a connection within ``timeout`` is refused at
    once: Ray itself retries for many minutes before it gives up."""
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout).close()
    except ValueError:
        raise ParameterError(f"--address {address}: expected HOST:PORT or ray://HOST:PORT") from None
    except OSError as e:
        raise ParameterError(f"Ray cluster {address}: it does not answer ({e.strerror or e})") from None


def _classify_chunk(ray: Any, chunk: list[str], bundle: str | None, max_seconds: float) -> Iterator[Outcome]:
    """One dataset over ``chunk``: its outcomes in input order (a file whose batch was lost to a dead worker fails)."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    per_actor = 1 if gpus else min(CPUS_PER_ACTOR, cpus)
    batches = -(-len(chunk) // BATCH)
    actors = min(batches, gpus or max(1, cpus // per_actor))  # a few new files load the model a few times only
    ds = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(chunk)], override_num_blocks=batches)
    context = ds.context  # this dataset's own copy: the caller's DataContext is left alone
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.max_errored_blocks = DEAD_BATCHES
    with warnings.catch_warnings():  # max_restarts goes through **ray_remote_args, deprecated in Ray 2.60
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            _Scorer,
            fn_constructor_kwargs=dict(bundle=bundle, max_seconds=max_seconds),
            batch_size=BATCH,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),  # what fits starts
            num_cpus=per_actor,
            num_gpus=1 if gpus else 0,
            max_restarts=0,  # a file that kills its worker fails its batch, not retried for ever (Ray's default)
        )
    done: dict[int, str] = {}
    following = 0
    batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        for batch in batches:
            done.update(zip(map(int, batch["index"]), map(str, batch["outcome"])))
            while following in done:
                yield Outcome.from_json(done.pop(following))
                following += 1
    finally:  # stopped (Ctrl-C between batches too): its executor shuts down now, before Ray does, not at garbage collection
        batches.close()
    for i in range(following, len(chunk)):
        text = done.pop(i, None)
        yield Outcome.from_json(text) if text else Outcome("failed", f"{chunk[i]}: the Ray worker classifying it died")
