"""Classify tracks: waveform -> mel of the whole track -> window slices -> ViT -> window probabilities -> track result.

:class:`Classifier` exposes the three stages every caller shares (the CLI, REST, the web page, ``evaluate``,
training validation): :meth:`~Classifier.preprocess` (decode, mel, windows, silence),
:meth:`~Classifier.forward` (the model, in batches across inputs) and :meth:`~Classifier.postprocess` (the result).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import torch

from . import options as limits
from .audio import Audio, AudioSource, load_audio, source_name
from .bundle import Bundle, BundleConfig, checked_device, default_device, load_bundle
from .calibrate import warnings_for
from .config import Options, Preprocessing
from .decoding import DecodeAhead
from .errors import AcousticSenseError, ParameterError
from .features import (
    fill_word,
    fit_to_window,
    gaps,
    place_windows,
    power_to_images,
    short_audio,
    too_short,
    track_mel,
    uncovered_share,
    window_count,
    window_levels_db,
)
from .model import inference_model
from .options import DEFAULT_BATCH_SIZE, DEFAULT_MAX_SECONDS, DEFAULT_TOP_K, MAX_BATCH_SIZE, whole_in_range
from .results import FLAGS, Failure, Genre, Result, Window, aggregate, guarded, one_line, track_embedding

__all__ = ["Classifier", "Features", "Options", "Result", "Failure", "Genre", "Window", "aggregate", "default_device"]

PRECISIONS = ("fp32", "bf16")


@dataclass
class Features:
    """One input after :meth:`Classifier.preprocess`: the whole track's mel, where its windows lie, what decoding noted.

    The decoded samples are not kept: only the mel is needed from here on.
    """

    source: str
    duration: float  # seconds decoded (before a short clip is filled to one window)
    warnings: list[tuple[str, str]]  # (code, message) from decoding
    options: Options
    mel: torch.Tensor  # (n_mels, frames) power mel spectrogram of the (fitted) track, on the model's device
    starts: torch.Tensor  # (B,) window starts in samples
    frames: torch.Tensor  # (B,) each window's first mel frame; a window is mel[:, f : f + width]
    width: int  # mel frames per window
    silent: torch.Tensor  # (B,) bool: below the silence level, left out of the model and the result

    def windows(self) -> Iterator[torch.Tensor]:
        """The mel (n_mels, width) of each non-silent window: views, never copies."""
        return (self.mel[:, f : f + self.width] for f in self.frames[~self.silent].tolist())

    @property
    def filled(self) -> str | None:
        """How a clip shorter than one window was filled to it ("repeated", "zero-padded"); None: it was long enough."""
        pre = self.options.pre
        return fill_word(pre) if self.duration < pre.window_seconds else None

    @property
    def peak(self) -> torch.Tensor:
        """The track's largest mel power (the dB reference when the bundle's ``db_scope`` is ``"track"``)."""
        return self.mel.amax()


class Classifier:
    """A loaded model bundle ready to classify audio.

    >>> clf = Classifier.from_bundle()          # the built-in default model
    >>> clf.classify("song.mp3").top_k[0]
    """

    def __init__(
        self, bundle: Bundle, device: str | torch.device | None = None, batch_size: int = DEFAULT_BATCH_SIZE, precision: str | None = None
    ):
        """``precision``: ``"fp32"`` or ``"bf16"`` (the model runs on a bfloat16 copy of its weights and images);
        default bf16 on CUDA, fp32 on the CPU (where bf16 is several times slower). ``self.model`` keeps the
        bundle's weights as they are (training updates them, ``explain`` takes gradients through them)."""
        if not isinstance(bundle, Bundle):
            raise ParameterError(f"Classifier takes a Bundle (what load_bundle returns), not {type(bundle).__name__}; for a folder use Classifier.from_bundle(path)")
        batch_size = whole_in_range("batch_size", batch_size, 1, MAX_BATCH_SIZE)
        self.device = checked_device(device)
        self.precision = precision or ("bf16" if self.device.type == "cuda" else "fp32")
        if self.precision not in PRECISIONS:
            raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        self.config: BundleConfig = bundle.config
        self.model = bundle.model.to(self.device).eval()
        self.batch_size = int(batch_size)

    @property
    def model(self) -> torch.nn.Module:
        """The bundle's model (torchvision's ViT, or an ONNX model): what training updates and explanations use.
        :meth:`forward` runs its modules (shared, not copied); to swap one, assign a whole new ``model``."""
        return self._model

    @model.setter
    def model(self, model: torch.nn.Module) -> None:
        self._model = model
        self._net = inference_model(model)  # what forward() runs: the same weights, fused blocks (model.FusedInference)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike | None = None, device: str | torch.device | None = None, **kwargs: Any) -> "Classifier":
        """Load a bundle directory (``None``: the built-in default model)."""
        bundle = load_bundle(path, device)  # which checks the device first
        return cls(bundle, device, **kwargs)

    @property
    def labels(self) -> list[str]:
        """The genres this model tells apart, in the order of its outputs."""
        return self.config.labels

    @property
    def sample_rate(self) -> int:
        """The rate (Hz) a waveform given as an array must be at: the bundle's (files are resampled to it)."""
        return self.config.preprocessing.sample_rate

    def options(
        self,
        top_k: int = DEFAULT_TOP_K,
        window: float | None = None,
        hop: float | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        override_window: bool = False,
    ) -> Options:
        """The bundle's :meth:`~acousticsense.config.BundleConfig.options`: request options checked against their
        documented ranges and the model (:class:`ParameterError` names the first bad one)."""
        return self.config.options(top_k, window, hop, max_seconds, override_window)

    def classify(
        self,
        source: AudioSource,
        top_k: int = DEFAULT_TOP_K,
        window: float | None = None,
        hop: float | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        override_window: bool = False,
        embed: bool = False,
    ) -> Result:
        """Classify one file, bytes, file object, or mono float waveform at the model's sample rate.

        ``embed``: also give the track's :attr:`Result.embedding` (see :meth:`forward`).
        Raises :class:`ParameterError` for options out of range (see :meth:`options`) and
        :class:`AudioError` for input that is not usable audio.
        """
        features = self.preprocess(source, self.options(top_k, window, hop, max_seconds, override_window))
        if not embed:
            return self.postprocess(features, self.forward([features])[0])
        return self.postprocess(features, *self.forward([features], embed=True)[0])

    def classify_many(
        self,
        sources: Iterable[AudioSource],
        top_k: int = DEFAULT_TOP_K,
        window: float | None = None,
        hop: float | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        override_window: bool = False,
        embed: bool = False,
    ) -> Iterator[Result | Failure]:
        """Classify many inputs, batching windows across files; yields in input order.

        Options are checked at the call (:class:`ParameterError`). Files after the first are decoded by
        :data:`~acousticsense.decoding.DECODE_WORKERS` processes while this one computes features and runs the model, at most
        :data:`~acousticsense.decoding.DECODE_AHEAD` ahead. ``sources`` may also be a
        :class:`~acousticsense.decoding.DecodeAhead` started before this model loaded (``predict`` decodes while torch
        starts); it must decode at this model's sample rate and resampler and with the same ``max_seconds``.
        Whatever goes wrong with one input (unreadable, too many windows, any unexpected error) yields a
        :class:`Failure` with a one-line reason, and the others go on.
        """
        if isinstance(sources, (str, bytes, bytearray, os.PathLike, np.ndarray)) or callable(getattr(sources, "read", None)) or not isinstance(sources, Iterable):
            raise ParameterError("classify_many takes a list (or any iterable) of sources; for one source use classify")
        try:
            if embed:
                self._embedding_layer()  # refused now, not at the first file
            opts = self.options(top_k, window, hop, max_seconds, override_window)
            if isinstance(sources, DecodeAhead):
                wanted = (opts.pre.sample_rate, opts.max_seconds, opts.pre.resampler)
                if sources.closed:
                    raise ParameterError("this DecodeAhead is closed (or used up): start a new one")
                if sources.params != wanted:
                    raise ParameterError(f"the files are being decoded as (sample rate, max seconds, resampler) {sources.params}, this model needs {wanted}")
        except ParameterError:
            if isinstance(sources, DecodeAhead):
                sources.close(kill=True)  # refused: its workers are not left running
            raise
        return self._classify_many(sources, opts, embed)

    def _classify_many(self, sources: Iterable[AudioSource], opts: Options, embed: bool = False) -> Iterator[Result | Failure]:
        pending: list[Features] = []

        def flush() -> Iterator[Result | Failure]:
            if not pending:
                return
            try:
                outputs = self.forward(pending, embed=True) if embed else [(p,) for p in self.forward(pending)]
            except Exception as e:  # noqa: BLE001 - reported per file, never lost
                yield from (Failure(f.source, one_line(f.source, e)) for f in pending)
            else:
                for f, out in zip(pending, outputs):
                    yield guarded(f.source, self.postprocess, f, *out)
            pending.clear()

        for features in self._preprocess_ahead(sources, opts):
            if isinstance(features, Failure):
                yield from flush()  # keeps the input order
                yield features
                continue
            pending.append(features)
            if sum(int((~f.silent).sum()) for f in pending) >= self.batch_size:
                yield from flush()
        yield from flush()

    def _preprocess_ahead(self, sources: Iterable[AudioSource], opts: Options) -> Iterator[Features | Failure]:
        """:meth:`preprocess` of each source, in input order, decoded ahead by :class:`DecodeAhead`."""
        pre = opts.pre
        with sources if isinstance(sources, DecodeAhead) else DecodeAhead(sources, pre.sample_rate, opts.max_seconds, pre.resampler) as decoded:
            for name, audio in decoded:
                item = audio if isinstance(audio, Failure) else guarded(name, self._features, name, audio, opts)
                del audio  # the samples are not kept while the model runs (only the mel is needed from here on)
                yield item

    def preprocess(self, source: AudioSource, opts: Options | None = None) -> Features:
        """Decode ``source``, compute its whole-track mel once, place the windows and mark the silent ones.

        Raises :class:`AudioError` for unusable input and :class:`ParameterError` when the track would
        make more than :data:`~acousticsense.options.MAX_WINDOWS` windows.
        """
        if opts is None:
            opts = self.options()
        elif not isinstance(opts, Options):
            raise ParameterError(f"opts must be what Classifier.options() returns, not {type(opts).__name__}")
        self._check_preprocessing(opts.pre)
        pre = opts.pre
        return self._features(source_name(source), load_audio(source, pre.sample_rate, opts.max_seconds, pre.resampler), opts)

    def _check_preprocessing(self, pre: Preprocessing) -> None:
        """Refuse preprocessing other than this model's (its window and hop aside, which options may change): another
        sample rate or mel would be classified without a word, wrongly."""
        own = self.config.preprocessing
        if pre != own and pre.replace(window_seconds=own.window_seconds, hop_seconds=own.hop_seconds) != own:
            raise ParameterError("these options or features were made for other preprocessing than this model's: make them with this Classifier's options() / preprocess()")

    def _features(self, name: str, audio: Audio, opts: Options) -> Features:
        """The rest of :meth:`preprocess`, from decoded audio."""
        pre = opts.pre
        count = window_count(len(audio.samples), pre)
        if count > limits.MAX_WINDOWS:
            raise ParameterError(
                f"{name}: {audio.duration:.0f} s with a hop of {pre.hop_seconds:g} s makes {count} windows, "
                f"more than the {limits.MAX_WINDOWS} analysed per track; use a hop of at least "
                f"{math.ceil(10 * (len(audio.samples) - pre.window_samples) / (limits.MAX_WINDOWS - 1) / pre.sample_rate) / 10:g} s"
            )
        samples = fit_to_window(torch.from_numpy(audio.samples), pre)
        if self.device.type == "cuda":  # one pinned, asynchronous copy of the track
            samples = samples.pin_memory().to(self.device, non_blocking=True)
        starts, frames, width = place_windows(len(samples), pre)
        silent = window_levels_db(samples, frames, pre).cpu() < pre.silence_db
        return Features(name, audio.duration, audio.warnings, opts, track_mel(samples, pre), starts, frames, width, silent)

    def _embedding_layer(self) -> torch.nn.Module:
        """The classification head, whose input is the ViT's pooled representation (the class token)."""
        heads = getattr(self.model, "heads", None)
        if not isinstance(heads, torch.nn.Module):
            raise ParameterError(f"{self.config.model_id}: this backend gives no embeddings (an exported bundle); use the torch bundle it came from")
        return heads

    @overload
    def forward(self, items: Sequence[Features], embed: Literal[False] = False) -> list[torch.Tensor]: ...
    @overload
    def forward(self, items: Sequence[Features], embed: Literal[True]) -> list[tuple[torch.Tensor, torch.Tensor]]: ...

    @torch.inference_mode()
    def forward(self, items: Sequence[Features], embed: bool = False) -> list[torch.Tensor] | list[tuple[torch.Tensor, torch.Tensor]]:
        """Softmax probabilities (windows, labels) of each item's non-silent windows, in batches that span items.
        With ``embed``: (probabilities, pooled) per item, ``pooled`` (windows, dim) being the class token the head reads.

        Only one batch of mel windows is copied at a time. Items must share their preprocessing. Nothing waits
        for the GPU until the last batch is queued: the results come back in one copy.
        """
        if not isinstance(items, (list, tuple)) or not all(isinstance(f, Features) for f in items):
            raise ParameterError("forward() takes a list of Features (what preprocess() returns)")
        if not items:
            return []
        pre = items[0].options.pre
        if any(f.options.pre != pre for f in items):
            raise ParameterError("forward() needs items preprocessed with the same options")
        self._check_preprocessing(pre)
        track_db = pre.db_scope == "track"
        # bf16: every layer in bfloat16 (on an H100, ViT-B/16 ran 10,200 windows/s so, 6,400 under autocast; fused 11,000)
        weights = {n: p.to(torch.bfloat16) for n, p in self._net.named_parameters()} if self.precision == "bf16" else {}
        out: list[torch.Tensor] = []
        pooled: list[torch.Tensor] = []
        parts: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (windows (k, n_mels, width), their track's peak)
        hook = self._embedding_layer().register_forward_pre_hook(lambda _, args: pooled.append(args[0].float())) if embed else None

        def run() -> None:
            windows = torch.cat([w for w, _ in parts])
            peak = torch.cat([p.expand(len(w)) for w, p in parts]).view(-1, 1, 1) if track_db else None
            images = power_to_images(windows, pre, peak)
            logits = torch.func.functional_call(self._net, weights, (images.bfloat16(),)) if weights else self._net(images)
            out.append((logits.float() / self.config.temperature).softmax(-1))
            parts.clear()

        try:
            filled = 0
            for f in items:
                first = f.frames[~f.silent]
                if self.device.type == "cuda":
                    first = first.pin_memory().to(self.device, non_blocking=True)
                windows = f.mel.unfold(1, f.width, 1)  # (n_mels, frames - width + 1, width): every window, a view
                done = 0
                while done < len(first):
                    if filled == self.batch_size or (parts and parts[0][0].shape[-1] != f.width):  # widths differ between tracks when centred
                        run()
                        filled = 0
                    take = min(self.batch_size - filled, len(first) - done)
                    parts.append((windows[:, first[done : done + take]].transpose(0, 1), f.peak if track_db else None))
                    filled += take
                    done += take
            if parts:
                run()
        finally:
            if hook is not None:
                hook.remove()
        sizes = [int((~f.silent).sum()) for f in items]
        probs = torch.cat(out).cpu() if out else torch.zeros(0, len(self.labels))
        if not embed:
            return list(probs.split(sizes))
        reps = torch.cat(pooled).cpu() if pooled else torch.zeros(0, 0)
        return list(zip(probs.split(sizes), reps.split(sizes)))

    def postprocess(self, features: Features, probs: torch.Tensor | np.ndarray, pooled: torch.Tensor | None = None) -> Result:
        """The track's :class:`Result` from the probabilities of its non-silent windows (from :meth:`forward`);
        with their ``pooled`` representations, also its :func:`track_embedding`."""
        if not isinstance(features, Features):
            raise ParameterError("postprocess() takes the Features that preprocess() returned")
        labels, opts, pre = self.labels, features.options, features.options.pre
        try:
            probs = torch.as_tensor(probs, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise ParameterError(f"{features.source}: postprocess needs probabilities as a tensor or array (from forward), not {type(probs).__name__}") from None
        if tuple(probs.shape) != (int((~features.silent).sum()), len(labels)):
            raise ParameterError(
                f"{features.source}: postprocess needs ({int((~features.silent).sum())}, {len(labels)}) probabilities "
                f"(one row per non-silent window, from forward), got {tuple(probs.shape)}"
            )
        if pooled is not None and (not isinstance(pooled, torch.Tensor) or pooled.ndim != 2 or len(pooled) != len(probs) or not bool(torch.isfinite(pooled).all())):
            shape = tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__
            raise ParameterError(f"{features.source}: postprocess needs pooled as finite (windows, dim) = ({len(probs)}, dim) values from forward(embed=True), not {shape}")
        if not torch.isfinite(probs).all():
            raise AcousticSenseError(f"{features.source}: the model gave non-finite probabilities for this input; no result is reported")
        if len(probs) and (probs.amin() < 0 or (probs.sum(1) - 1).abs().amax() > 1e-3):
            raise ParameterError(f"{features.source}: postprocess needs probabilities (each row at least 0 and summing to 1, as forward gives)")
        warnings = [{"code": c, "message": m} for c, m in features.warnings] + [dict(n) for n in opts.notes]
        duration = features.duration
        if features.filled:
            code, message = short_audio(duration, pre)
            warnings.append({"code": code, "message": message})
        if pre.hop_samples > pre.window_samples:  # only such a hop leaves audio between windows
            missed = uncovered_share(features.starts.tolist(), round(duration * pre.sample_rate), pre.window_samples)
            if missed >= 0.005:
                code, message = gaps(missed, pre)
                warnings.append({"code": code, "message": message})
        silent = features.silent
        all_probs = torch.zeros(len(silent), len(labels))
        all_probs[~silent] = probs
        timeline = []
        for start, is_silent, row in zip(features.starts.tolist(), silent.tolist(), all_probs):
            t0 = start / pre.sample_rate
            t1 = min(t0 + pre.window_seconds, duration)
            if is_silent:
                timeline.append(Window(round(t0, 3), round(t1, 3), None, 0.0, True, {}))
            else:
                best = int(row.argmax())
                timeline.append(Window(round(t0, 3), round(t1, 3), labels[best], round(float(row[best]), 6), False, _as_dict(labels, row)))
        if bool(silent.all()):
            warnings.append({"code": "silent", "message": f"no window is louder than {pre.silence_db:g} dBFS: the recording is silent"})
            return Result(features.source, self.config.model_id, round(duration, 3), [], timeline, True, self.config.aggregation, warnings)
        if bool(silent.any()):
            warnings.append({"code": "silent_windows", "message": f"{int(silent.sum())} of {len(silent)} windows are silent and were left out"})
        track = aggregate(probs, self.config.aggregation)
        warnings += warnings_for(probs, track, self.config.ood_threshold)
        if (short := too_short(duration, pre)) and not any(w["code"] in FLAGS for w in warnings):
            warnings.append({"code": short[0], "message": short[1]})
        order = track.argsort(descending=True)[: opts.top_k].tolist()
        top = [Genre(labels[i], round(float(track[i]), 6)) for i in order]
        embedding = None if pooled is None else track_embedding(pooled, probs)
        return Result(features.source, self.config.model_id, round(duration, 3), top, timeline, False, self.config.aggregation, warnings, embedding)


def _as_dict(labels: list[str], row: torch.Tensor) -> dict[str, float]:
    return {label: round(float(v), 6) for label, v in zip(labels, row)}
