"""Decode many inputs ahead of the model: forked worker processes, a bounded number of files in flight,
input order kept, and a file that kills its decoder reported as its own :class:`~acousticsense.results.Failure`."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .audio import Audio, AudioSource, check_sample_rate, load_audio, source_name
from .config import RESAMPLERS
from .errors import ParameterError
from .options import MAX_SECONDS_RANGE, in_range
from .results import Failure, guarded

# Processes (forked: nothing of the caller's script is re-imported), not threads: decoding holds the GIL
# most of its time, and two decoding threads were slower than one. 0: decode in this process. Once this process
# has used CUDA they come from a fork server instead (see _pool).
DECODE_WORKERS = min(4, os.cpu_count() or 1) if "fork" in multiprocessing.get_all_start_methods() else 0
DECODE_AHEAD = 2  # inputs decoded ahead of the model at most: memory stays bounded however many files
STOP_SIGNAL = signal.SIGUSR1  # DecodeAhead.close(kill=True) sends it: a worker abandons the file it is decoding
_END = object()


class DecodeAhead(Iterator[tuple[str, "Audio | Failure"]]):
    """``(name, load_audio(source, ...))`` for each source, in input order, or its :class:`Failure`.

    Decoding starts when this is made: files go to :data:`DECODE_WORKERS` processes, at most
    :data:`DECODE_AHEAD` ahead of the consumer (plus the one it holds). ``first_here``: the first file is decoded
    in this process when asked for, so one file alone needs no pool; ``False`` for a caller that has other work
    first (``predict`` loading torch and the model meanwhile). Bytes, file objects and arrays are decoded here.
    A file that kills its worker (FFmpeg crashing on it) becomes its own :class:`Failure`: the files in flight
    with it are decoded again, each in a process of its own, and a new pool takes the rest. ``close`` (or the
    end of a ``with`` block) stops the workers; a ``with`` block left by an exception (Ctrl-C, a bad option) stops
    them at once: they drop the files they are decoding rather than finish them.
    """

    def __init__(self, sources: Iterable[AudioSource], sample_rate: int, max_seconds: float, resampler: str, first_here: bool = True):
        if resampler not in RESAMPLERS:
            raise ParameterError(f"resampler must be one of {', '.join(RESAMPLERS)}, not {resampler!r}")
        self.params = (check_sample_rate(sample_rate), in_range("max_seconds", max_seconds, MAX_SECONDS_RANGE), resampler)
        self.closed = False
        self._sources = iter(sources)
        self._ahead: deque[tuple[str, AudioSource, Future | None]] = deque()
        self._pool: ProcessPoolExecutor | None = None
        self._pids: Sequence[int] = ()  # the pool's workers, as each wrote its own in
        self._first_here = first_here
        self._paths = 0
        self._fill()

    def __next__(self) -> tuple[str, Audio | Failure]:
        self._fill()
        if not self._ahead:
            self.close()
            raise StopIteration
        name, source, decoding = self._ahead.popleft()
        if decoding is None:
            return name, _decode(source, *self.params)
        try:
            return name, decoding.result()
        except (BrokenProcessPool, CancelledError):  # a worker died on this file or on one in flight with it; or
            # its pool, broken by such a file and dropped, had cancelled it unstarted: decoded again, alone
            self._drop_pool()
            return name, _decode_alone(source, self.params)

    def __enter__(self) -> "DecodeAhead":
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(kill=kind is not None)

    def close(self, kill: bool = False) -> None:
        """Stop decoding: files not started are dropped and the workers end, after the files they are decoding
        or, with ``kill``, at once (each drops its file at the next frame)."""
        self.closed = True
        self._ahead.clear()
        self._sources = iter(())
        if kill and self._pool is not None:  # ask each worker to drop its file (killing one could leave a queue locked)
            for pid in [p for p in self._pids if p]:
                with contextlib.suppress(OSError):
                    os.kill(pid, STOP_SIGNAL)
        self._drop_pool(wait=True)

    def _fill(self) -> None:
        """Start decoding sources until :data:`DECODE_AHEAD` are ahead of the one the consumer takes next."""
        while len(self._ahead) <= DECODE_AHEAD:
            source = next(self._sources, _END)
            if source is _END:
                return
            decoding = None
            if isinstance(source, (str, os.PathLike)):
                self._paths += 1
                if DECODE_WORKERS and (self._paths > 1 or not self._first_here):
                    for _ in range(2):  # a pool broken by a file in flight is replaced for the rest
                        if self._pool is None:
                            self._pool, self._pids = _pool(DECODE_WORKERS)
                        try:
                            decoding = self._pool.submit(_decode, source, *self.params)
                            break
                        except BrokenProcessPool:
                            self._drop_pool()
            self._ahead.append((source_name(source), source, decoding))

    def _drop_pool(self, wait: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool, self._pids = None, ()


def _decode(source: AudioSource, *args: object) -> Audio | Failure:
    """``load_audio(source, *args)``, or the :class:`Failure` of ``source`` (runs in a worker process)."""
    global _busy
    if _stopping:  # a file already queued to this worker when the stop came
        return Failure(source_name(source), "decoding stopped")
    _busy = True
    try:
        return guarded(source_name(source), load_audio, source, *args)
    finally:
        _busy = False


class _Stopped(Exception):
    """Raised in a worker's decoding by :data:`STOP_SIGNAL`: the file becomes a Failure nobody reads."""


_busy = False  # a worker is decoding (the stop signal interrupts only that, never the pool's own messaging)
_stopping = False  # the stop signal came: files still queued to this worker are dropped too


def _stop(signum: int, frame: object) -> None:
    global _stopping
    _stopping = True
    if _busy:
        raise _Stopped("decoding stopped")


def _pool(workers: int) -> tuple[ProcessPoolExecutor, Sequence[int]]:
    """Decoding processes that leave Ctrl-C to this one and end with it, even when it is killed; and the shared
    array where each writes its process id. Forked from this process (nothing of the caller's script is
    re-imported) unless it has used CUDA: CUDA's threads and locks do not survive a fork (PyTorch's guidance), so
    the workers are then forked from a fork server, a clean process started once (it imports the caller's
    ``__main__`` as spawned processes do)."""
    context = multiprocessing.get_context("forkserver" if cuda_initialised() else "fork")
    pids = context.Array(ctypes.c_int, workers)
    parent = os.getpid() if context.get_start_method() == "fork" else None
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start, initargs=(parent, pids)), pids


def cuda_initialised() -> bool:
    """Whether this process has used CUDA (torch is never imported here for the answer)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized()


def _worker_start(parent: int | None, pids: Any) -> None:
    """A decoding worker writes its process id into the first free slot of ``pids``, ignores Ctrl-C (the parent handles it),
    drops its file on :data:`STOP_SIGNAL`, and, on Linux, is killed when its parent dies: a forked worker shares the
    parent's pipes, so it would never see them close and would wait forever. ``parent``: the process that forked
    it, checked in case it died first; ``None`` for a fork server's worker (the server ends when the caller does)."""
    with pids.get_lock():
        free = [i for i, pid in enumerate(pids) if not pid]
        if free:
            pids[free[0]] = os.getpid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the CLI's Ctrl-C stand-in, inherited by a fork: a stopped worker just ends
    signal.signal(STOP_SIGNAL, _stop)
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _decode_alone(source: AudioSource, args: tuple[object, ...]) -> Audio | Failure:
    """:func:`_decode` in a process of its own: if that one dies too, ``source`` is what kills it."""
    name = source_name(source)
    with _pool(1)[0] as alone:
        try:
            return alone.submit(_decode, source, *args).result()
        except BrokenProcessPool:
            return Failure(name, f"{name}: decoding crashed (the decoder process died on this file)")
