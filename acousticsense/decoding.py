"""Decode many inputs ahead of the model: forked worker processes, a bounded number of files in flight,
input order kept, and a file that kills its decoder reported as its own :class:`~acousticsense.results.Failure`."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .audio import Audio, AudioSource, load_audio, source_name
from .results import Failure, guarded

# Processes (forked: nothing of the caller's script is re-imported), not threads: decoding holds the GIL
# most of its time, and two decoding threads were slower than one. 0: decode in this process.
DECODE_WORKERS = min(4, os.cpu_count() or 1) if "fork" in multiprocessing.get_all_start_methods() else 0
DECODE_AHEAD = 2  # inputs decoded ahead of the model at most: memory stays bounded however many files


def decode_ahead(sources: Iterable[AudioSource], sample_rate: int, max_seconds: float, resampler: str) -> Iterator[tuple[str, Audio | Failure]]:
    """``(name, load_audio(source, ...))`` for each source, in input order, or its :class:`Failure`.

    Files after the first are decoded by :data:`DECODE_WORKERS` processes, at most :data:`DECODE_AHEAD` ahead
    of the consumer; one file alone, bytes, file objects and arrays are decoded here. A file that kills its
    worker (FFmpeg crashing on it) becomes its own :class:`Failure`: the files in flight with it are decoded
    again, each in a process of its own, and a new pool takes the rest.
    """
    args = (sample_rate, max_seconds, resampler)
    ahead: deque[tuple[str, AudioSource, Future | None]] = deque()
    pool: ProcessPoolExecutor | None = None
    paths = 0

    def drop_pool(wait: bool = False) -> None:
        nonlocal pool
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
            pool = None

    def ready(name: str, source: AudioSource, decoding: Future | None) -> tuple[str, Audio | Failure]:
        if decoding is None:
            return name, _decode(source, *args)
        try:
            return name, decoding.result()
        except BrokenProcessPool:  # a worker died on this file or on another one in flight
            drop_pool()
            return name, _decode_alone(source, args)

    try:
        for source in sources:
            decoding = None
            if isinstance(source, (str, os.PathLike)):
                paths += 1
                if DECODE_WORKERS and paths > 1:  # one file alone is decoded here: no pool, no copies
                    for _ in range(2):  # a pool broken by a file in flight is replaced for the rest
                        pool = pool or _pool(DECODE_WORKERS)
                        try:
                            decoding = pool.submit(_decode, source, *args)
                            break
                        except BrokenProcessPool:
                            drop_pool()
            ahead.append((source_name(source), source, decoding))
            if len(ahead) > DECODE_AHEAD:
                yield ready(*ahead.popleft())
        while ahead:
            yield ready(*ahead.popleft())
    finally:
        drop_pool(wait=True)


def _decode(source: AudioSource, *args: object) -> Audio | Failure:
    """``load_audio(source, *args)``, or the :class:`Failure` of ``source`` (runs in a worker process)."""
    return guarded(source_name(source), load_audio, source, *args)


def _pool(workers: int) -> ProcessPoolExecutor:
    """Forked decoding processes (nothing of the caller's script is re-imported) that leave Ctrl-C to this one
    and end with it, even when it is killed."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_start, initargs=(os.getpid(),))


def _worker_start(parent: int) -> None:
    """A decoding worker ignores Ctrl-C (the parent handles it) and, on Linux, is killed when the parent dies:
    a forked worker shares the parent's pipes, so it would never see them close and would wait forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _decode_alone(source: AudioSource, args: tuple[object, ...]) -> Audio | Failure:
    """:func:`_decode` in a process of its own: if that one dies too, ``source`` is what kills it."""
    name = source_name(source)
    with _pool(1) as alone:
        try:
            return alone.submit(_decode, source, *args).result()
        except BrokenProcessPool:
            return Failure(name, f"{name}: decoding crashed (the decoder process died on this file)")
