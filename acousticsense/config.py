"""A model bundle's ``config.json``: labels, architecture, calibration and every preprocessing parameter.

Torch-free, so a bundle's settings can be read (and its input decoding started) before torch has loaded.
:class:`Preprocessing` holds everything between a decoded waveform and the tensor the model sees, so a
model is always fed exactly what it was trained on.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .errors import BundleError, ParameterError
from .files import has_control_characters, read_json, write_whole
from .options import DEFAULT_MAX_SECONDS, DEFAULT_TOP_K, HOP_RANGE, MAX_SECONDS_RANGE, WINDOW_RANGE, echoed, in_range, is_number, is_whole

if TYPE_CHECKING:
    from torch import nn

# Defaults of the built-in models (audio hyperparameters).
SAMPLE_RATE = 22050
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 128
TOP_DB = 80.0
WINDOW_SECONDS = 8.0
HOP_SECONDS = 4.0
IMAGE_SIZE = 128
SILENCE_DB = -60.0  # windows whose RMS is below this (dBFS) count as silent
RESAMPLERS = ("ffmpeg", "soxr_hq")
MAX_LABELS = 10_000  # genres a bundle may name
MAX_HIDDEN = 16_384  # units of one hidden layer of an MLP head
MAX_HEAD_LAYERS = 8  # hidden layers of an MLP head (published checkpoints use up to 3)
MAX_HEAD_WEIGHTS = 1 << 24  # weights of an MLP head, 64 MB as float32: a config must not decide how much memory a load takes
# What a bundle's preprocessing may ask for. A config.json is input too: outside these it is refused, so a bundle
# never decides that one file costs gigabytes (a hop_length of 1e9 took 8.4 GB, a 1e7 s window asked for 1.6 TiB).
ARCHITECTURES: dict[str, dict[str, int]] = {  # the torchvision ViT presets a bundle may name (model.build_model builds them)
    "vit_b_16": dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
    "vit_s_16": dict(patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536),
    "vit_ti_16": dict(patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768),
    "vit_mini_16": dict(patch_size=16, num_layers=6, num_heads=3, hidden_dim=192, mlp_dim=768),
}
HEAD_TYPES = ("linear", "mlp")
PREPROCESSING_INTS = {"sample_rate": (1, 384_000), "n_fft": (16, 65_536), "hop_length": (1, 65_536), "n_mels": (1, 512), "image_size": (1, 1024)}
PREPROCESSING_NUMBERS = {"window_seconds": (0.05, 600.0), "hop_seconds": (0.01, 3600.0), "silence_db": (-200.0, 0.0)}


@dataclass(frozen=True)
class Preprocessing:
    """Everything between a decoded waveform and the tensor the model sees."""

    sample_rate: int = SAMPLE_RATE
    window_seconds: float = WINDOW_SECONDS
    hop_seconds: float = HOP_SECONDS
    short_pad: str = "repeat"  # how a clip shorter than one window is filled: "repeat" | "zeros"
    silence_db: float = SILENCE_DB
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    n_mels: int = N_MELS
    fmin: float = 0.0
    fmax: float | None = None
    mel_htk: bool = False
    mel_norm: str | None = "slaney"
    preemphasis: float = 0.0  # y[n] = x[n] - a x[n-1] before the STFT (0: off); applied as its exact power gain per FFT bin
    resampler: str = "ffmpeg"  # "ffmpeg" (FFmpeg's default resampler) | "soxr_hq" (librosa.load's default)
    chunking: str = "start"  # "start": windows every hop from 0, plus one aligned with the end | "centred": see place_windows
    db_ref: str | float = "max"  # "max" (librosa's ref=np.max) or a fixed power
    db_scope: str = "window"  # what the "max" reference and the top_db floor are taken over: "window" | "track"
    db_amin: float = 1e-10
    top_db: float | None = TOP_DB
    image_size: int = IMAGE_SIZE
    flip_frequency: bool = True  # low frequencies at the bottom of the image, as specshow draws them
    colormap: str | None = None  # None: grey replicated to 3 channels; or a matplotlib name ("magma")
    render_size: tuple[float, float] | None = None  # (height, width) in pixels of the plot the cells are drawn into, before the resize
    jpeg_quality: int | None = None  # the rendered image goes through JPEG at this quality before the resize (as saved plots do)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        for key in ("mean", "std", "render_size"):  # lists (JSON's arrays) become tuples: hashable, as the type says
            value = getattr(self, key)
            if isinstance(value, (list, tuple)) and all(is_number(v) for v in value):
                object.__setattr__(self, key, tuple(float(v) for v in value))
            elif value is not None or key != "render_size":
                raise ParameterError(f"{key} must be a list of numbers{' or null' if key == 'render_size' else ''}, not {value!r}")
        for key, (lo, hi) in {**PREPROCESSING_INTS, **PREPROCESSING_NUMBERS}.items():
            value = getattr(self, key)
            whole = key in PREPROCESSING_INTS
            if not (is_whole(value, lo, hi) if whole else is_number(value) and lo <= value <= hi):
                raise ParameterError(f"{key} must be {'a whole number' if whole else 'a number'} from {lo:g} to {hi:g}, not {value!r}")
        if self.hop_length > self.n_fft:
            raise ParameterError(f"hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft}): samples between frames would be skipped")
        numbers = is_number(self.fmin) and (self.fmax is None or is_number(self.fmax))
        if not numbers or not 0 <= self.fmin < (self.fmax if self.fmax is not None else self.sample_rate / 2) <= self.sample_rate / 2:
            raise ParameterError(f"fmin and fmax must satisfy 0 <= fmin < fmax <= sample_rate / 2 ({self.sample_rate / 2:g} Hz), not {self.fmin!r} and {self.fmax!r}")
        if self.top_db is not None and not (is_number(self.top_db) and self.top_db > 0):
            raise ParameterError(f"top_db must be a positive number or null, not {self.top_db!r}")
        if not (is_number(self.db_amin) and 1e-30 <= self.db_amin <= 1) or not (self.db_ref == "max" or (is_number(self.db_ref) and 1e-30 <= self.db_ref <= 1e30)):
            raise ParameterError(f"db_amin must be a number from 1e-30 to 1 and db_ref 'max' or one from 1e-30 to 1e30 (float32 powers), not {self.db_amin!r} and {self.db_ref!r}")
        if not (len(self.mean) == len(self.std) == 3 and max(map(abs, self.mean)) <= 1e6 and 1e-6 <= min(self.std) and max(self.std) <= 1e6):
            raise ParameterError(f"mean and std must be three numbers each (|mean| up to 1e6, std from 1e-6 to 1e6), not {list(self.mean)} and {list(self.std)}")
        if self.render_size is not None and not (len(self.render_size) == 2 and all(1 <= v <= 4096 for v in self.render_size)):
            raise ParameterError(f"render_size must be null or (height, width) in pixels from 1 to 4096, not {self.render_size!r}")
        for key in ("flip_frequency", "mel_htk"):
            if not isinstance(getattr(self, key), bool):
                raise ParameterError(f"{key} must be true or false, not {getattr(self, key)!r}")
        if self.mel_norm not in (None, "slaney"):
            raise ParameterError(f"mel_norm must be 'slaney' or null, not {self.mel_norm!r}")
        if self.colormap is not None and not (isinstance(self.colormap, str) and self.colormap in _colormap_names()):
            raise ParameterError(f"colormap must be null or a matplotlib colormap name (e.g. 'magma'), not {self.colormap!r}")
        if self.window_samples < 1 or self.hop_samples < 1:
            raise ParameterError(f"window_seconds and hop_seconds must each span at least one sample at {self.sample_rate} Hz")
        if self.short_pad not in ("repeat", "zeros"):
            raise ParameterError(f"short_pad must be 'repeat' or 'zeros', not {self.short_pad!r}")
        if isinstance(self.db_ref, str) and self.db_ref != "max":
            raise ParameterError(f"db_ref must be 'max' or a number, not {self.db_ref!r}")
        for key, allowed in (("resampler", RESAMPLERS), ("chunking", ("start", "centred")), ("db_scope", ("window", "track"))):
            if getattr(self, key) not in allowed:
                raise ParameterError(f"{key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}")
        if not is_number(self.preemphasis) or not 0 <= self.preemphasis < 1:
            raise ParameterError(f"preemphasis must be a number in [0, 1), not {self.preemphasis!r}")
        if self.jpeg_quality is not None and not is_whole(self.jpeg_quality, 1, 95):
            raise ParameterError(f"jpeg_quality must be an integer from 1 to 95 or null, not {self.jpeg_quality!r}")

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_seconds * self.sample_rate)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["render_size"] = list(self.render_size) if self.render_size else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        """Build from a config dict; unknown keys are an error, never ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParameterError(f"unknown preprocessing parameters: {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "Preprocessing":
        return Preprocessing.from_dict({**self.to_dict(), **changes})


@lru_cache(maxsize=1)
def _colormap_names() -> frozenset[str]:
    from matplotlib import colormaps  # only for a bundle that names a colormap

    return frozenset(colormaps)


@dataclass(frozen=True)
class Options:
    """Validated options of one request: the preprocessing to use and what to report."""

    pre: Preprocessing
    top_k: int
    max_seconds: float
    notes: tuple[dict[str, str], ...] = ()  # warnings every result carries (window_override)


FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"
AGGREGATIONS = ("mean", "vote")
ARCHITECTURE_KEYS = {"name", "image_size", "head"}
HEAD_KEYS = {"type", "hidden", "dropout"}
SIGNAL_KEYS = ("sample_rate", "window_seconds", "hop_seconds", "n_fft", "hop_length", "n_mels")  # a config must state these


def case_clashes(names: Iterable[str]) -> list[str]:
    """The names given more than once, case aside ("Jazz" and "jazz"), sorted: a model's genres must differ by more."""
    names = list(names)
    return sorted({x for x in names if sum(y.casefold() == x.casefold() for y in names) > 1})


def check_labels(labels: Any, where: str) -> list[str]:
    """``labels`` if they can name a model's outputs (non-empty distinct names, case aside, no control characters,
    at most :data:`MAX_LABELS`); else a :class:`BundleError` from ``where``."""
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise BundleError(f"{where}: 'labels' must be a non-empty list of names")
    if controlled := [x for x in labels if has_control_characters(x)]:
        raise BundleError(f"{where}: 'labels' holds control characters (a newline, a terminal escape) or lone surrogates: {controlled[:3]}")
    if len({x.casefold() for x in labels}) != len(labels):
        raise BundleError(f"{where}: 'labels' names a genre twice (case aside): {', '.join(case_clashes(labels))}")
    if len(labels) > MAX_LABELS:
        raise BundleError(f"{where}: 'labels' has {len(labels)} names; at most {MAX_LABELS}")
    return labels


@dataclass
class BundleConfig:
    """What a bundle's ``config.json`` holds."""

    model_id: str
    architecture: dict[str, Any]  # {"name": preset, "image_size": int, "head": {...}}
    labels: list[str]
    preprocessing: Preprocessing
    aggregation: str = "mean"  # how window probabilities become the track's: "mean" | "vote"
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)  # {"temperature": T, "ood_threshold": t}; see calibrate.py
    format_version: int = FORMAT_VERSION

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))

    @property
    def ood_threshold(self) -> float | None:
        t = self.calibration.get("ood_threshold")
        return None if t is None else float(t)

    def options(
        self,
        top_k: int = DEFAULT_TOP_K,
        window: float | None = None,
        hop: float | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        override_window: bool = False,
    ) -> Options:
        """Check a request's options against their documented ranges and this model; :class:`ParameterError` names
        the first bad one. Torch-free: ``predict`` checks them before it starts decoding.

        The bundle owns ``window_seconds``: the model was trained on windows of that length, and another
        length squeezes a different span of audio into the same image. A different ``window`` is refused
        unless ``override_window`` is set, and then every result carries a ``window_override`` warning (and,
        with no ``hop`` given, windows follow each other where the model's hop would skip audio). ``hop`` may
        change freely within :data:`HOP_RANGE`; one longer than the window may leave audio between windows, which
        the result's ``gaps`` warning measures.
        """
        pre = self.preprocessing
        if not is_whole(top_k, 1, math.inf):
            raise ParameterError(f"top_k must be a whole number of at least 1, not {top_k!r}")
        max_seconds = in_range("max_seconds", max_seconds, MAX_SECONDS_RANGE)
        if not isinstance(override_window, bool):  # "no" would have counted as yes
            raise ParameterError(f"override_window must be True or False, not {override_window!r}")
        changes: dict[str, float] = {}
        notes: list[dict[str, str]] = []
        if hop is not None:
            changes["hop_seconds"] = in_range("hop", hop, HOP_RANGE)
        if window is not None and window != pre.window_seconds:
            window = in_range("window", window, WINDOW_RANGE)
            if not override_window:
                raise ParameterError(
                    f"window {window:.9g} s differs from the {pre.window_seconds:.9g} s this model was trained on; "
                    "other lengths give spectrograms it has never seen (override_window / --override-window forces it)"
                )
            changes["window_seconds"] = float(window)
            shorter = hop is None and pre.hop_seconds > window  # the model's hop would leave audio between windows
            if shorter:
                changes["hop_seconds"] = float(window)
            notes.append({"code": "window_override", "message": f"windows of {window:g} s instead of the model's {pre.window_seconds:g} s"
                          + (f", every {window:g} s so that none is skipped" if shorter else "") + ": expect less accurate results"})
        return Options(pre.replace(**changes) if changes else pre, min(int(top_k), len(self.labels)), max_seconds, tuple(notes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "model_id": self.model_id,
            "architecture": self.architecture,
            "labels": list(self.labels),
            "preprocessing": self.preprocessing.to_dict(),
            "aggregation": self.aggregation,
            "provenance": self.provenance,
            "metrics": self.metrics,
            **({"calibration": self.calibration} if self.calibration else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "BundleConfig":
        """Validate and build; every problem is reported with what is wrong."""
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(f"{where}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
        missing = [k for k in ("model_id", "architecture", "labels", "preprocessing") if k not in d]
        if missing:
            raise BundleError(f"{where}: missing {', '.join(missing)}")
        if unknown := sorted(set(d) - {f.name for f in fields(cls)}):  # a misspelt key would be silently ignored
            raise BundleError(f"{where}: unknown keys {', '.join(map(repr, unknown))}")
        if not isinstance(d["model_id"], str) or not d["model_id"] or has_control_characters(d["model_id"]):
            raise BundleError(f"{where}: model_id must be a name (text without control characters), not {echoed(d['model_id'])}")
        labels = check_labels(d["labels"], where)
        arch = d["architecture"]
        if not isinstance(arch, dict) or "name" not in arch or "image_size" not in arch:
            raise BundleError(f"{where}: 'architecture' needs 'name' and 'image_size'")
        if not isinstance(arch["name"], str) or arch["name"] not in ARCHITECTURES:
            raise BundleError(f"{where}: unknown architecture {echoed(arch['name'])}; known: {', '.join(ARCHITECTURES)}")
        head = arch.get("head") or {"type": "linear"}
        for what, given, keys in (("architecture", arch, ARCHITECTURE_KEYS), ("architecture's head", head, HEAD_KEYS)):
            if isinstance(given, dict) and (unknown := sorted(set(given) - keys)):
                raise BundleError(f"{where}: unknown {what} keys {', '.join(map(repr, unknown))}")
        if not isinstance(d["preprocessing"], dict):
            raise BundleError(f"{where}: 'preprocessing' must be a JSON object of its parameters")
        if unsaid := [k for k in SIGNAL_KEYS if k not in d["preprocessing"]]:
            raise BundleError(f"{where}: preprocessing must state {', '.join(unsaid)} (what the model was trained on: a default would be a guess)")
        hidden = head.get("hidden", []) if isinstance(head, dict) else None
        if not isinstance(hidden, list) or not all(is_whole(h, 1, MAX_HIDDEN) for h in hidden):
            raise BundleError(f"{where}: the architecture's head needs 'hidden' layer sizes from 1 to {MAX_HIDDEN}, not {hidden!r}")
        aggregation = d.get("aggregation", "mean")
        if aggregation not in AGGREGATIONS:
            raise BundleError(f"{where}: aggregation {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
        try:
            pre = Preprocessing.from_dict(d["preprocessing"])
        except (TypeError, ValueError, ParameterError) as e:
            raise BundleError(f"{where}: preprocessing: {e}") from None
        if pre.image_size != arch["image_size"]:
            raise BundleError(f"{where}: preprocessing image_size {pre.image_size} != architecture image_size {arch['image_size']}")
        for key in ("provenance", "metrics"):
            if not isinstance(d.get(key, {}), dict):
                raise BundleError(f"{where}: '{key}' must be a JSON object")
        calibration = d.get("calibration", {})
        t, threshold = (calibration.get("temperature", 1.0), calibration.get("ood_threshold")) if isinstance(calibration, dict) else (None, None)
        if not isinstance(calibration, dict) or not is_number(t) or not 0.01 <= t <= 100 or not (threshold is None or (is_number(threshold) and 0 <= threshold <= 1)):
            raise BundleError(f"{where}: 'calibration' needs a 'temperature' from 0.01 to 100 and an 'ood_threshold' in [0, 1] (or none)")
        return cls(
            model_id=d["model_id"],
            architecture=arch,
            labels=labels,
            preprocessing=pre,
            aggregation=aggregation,
            provenance=d.get("provenance", {}),
            metrics=d.get("metrics", {}),
            calibration=calibration,
        )

    def build_model(self, where: str | os.PathLike | None = None) -> nn.Module:
        """An untrained model of this config's architecture and label count; one it cannot build is a
        :class:`BundleError` from ``where`` (the bundle's folder)."""
        from .model import (
            build_model,  # torchvision's model zoo takes a second to import: ONNX bundles never need it
        )

        arch = self.architecture
        try:
            return build_model(arch["name"], len(self.labels), arch["image_size"], head=arch.get("head"))
        except (ParameterError, ValueError, KeyError, TypeError) as e:
            raise BundleError(f"architecture: {e}" if where is None else f"{where}: architecture: {e}") from None


def bundle_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path`, or a :class:`BundleError` when it is no path at all (None, a number)."""
    if not isinstance(path, (str, os.PathLike)):
        raise BundleError(f"a bundle is a folder given by its path, not {type(path).__name__}")
    return Path(path)


def config_text(config: BundleConfig) -> str:
    """``config.json``'s text for ``config``, refused with a :class:`BundleError` unless :func:`read_config` would
    accept it: nothing is written that cannot be loaded."""
    if not isinstance(config, BundleConfig):
        raise BundleError(f"a bundle's config is a BundleConfig, not {type(config).__name__}")
    where = f"the config of {config.model_id!r}"
    try:
        text = json.dumps(config.to_dict(), indent=2) + "\n"
    except (AttributeError, TypeError, ValueError) as e:
        raise BundleError(f"{where}: cannot be written as JSON ({e})") from None
    BundleConfig.from_dict(json.loads(text), where=where)
    return text


def write_config(path: str | os.PathLike, config: BundleConfig) -> None:
    """(Re)write a bundle's ``config.json`` atomically, e.g. to record metrics."""
    write_whole(Path(path) / CONFIG_NAME, config_text(config).encode())


def read_config(path: str | os.PathLike) -> BundleConfig:
    """Read and validate a bundle's config without touching its weights."""
    path = bundle_path(path)
    config_path = path / CONFIG_NAME
    if not path.is_dir():
        what = "not a model bundle directory" if os.path.lexists(path) else "no such model bundle directory"
        raise BundleError(f"{path}: {what} (expected {CONFIG_NAME} and {WEIGHTS_NAME} inside)")
    if not os.path.lexists(config_path):
        raise BundleError(f"{path}: missing {CONFIG_NAME}")
    data = read_json(config_path, BundleError)
    if not isinstance(data, dict):
        raise BundleError(f"{config_path}: expected a JSON object")
    return BundleConfig.from_dict(data, where=str(config_path))
