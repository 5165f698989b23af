"""Waveform -> windows -> mel spectrogram (dB) -> the image a ViT sees, all in torch.

Every parameter lives in :class:`Preprocessing`, which a model bundle stores in its
config, so a model is always fed exactly what it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ParameterError

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
    db_ref: str | float = "max"  # "max" (per window, like librosa's ref=np.max) or a fixed power
    db_amin: float = 1e-10
    top_db: float | None = TOP_DB
    image_size: int = IMAGE_SIZE
    flip_frequency: bool = True  # low frequencies at the bottom of the image, as specshow draws them
    colormap: str | None = None  # None: grey replicated to 3 channels; or a matplotlib name ("magma")
    render_size: tuple[float, float] | None = None  # (height, width) in pixels of the plot the cells are drawn into, before the resize
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        for key in ("window_seconds", "hop_seconds", "sample_rate", "n_fft", "hop_length", "n_mels", "image_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ParameterError(f"{key} must be a finite positive number, not {value!r}")
        if self.window_samples < 1 or self.hop_samples < 1:
            raise ParameterError(f"window_seconds and hop_seconds must each span at least one sample at {self.sample_rate} Hz")
        if self.short_pad not in ("repeat", "zeros"):
            raise ParameterError(f"short_pad must be 'repeat' or 'zeros', not {self.short_pad!r}")
        if isinstance(self.db_ref, str) and self.db_ref != "max":
            raise ParameterError(f"db_ref must be 'max' or a number, not {self.db_ref!r}")

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
        d = dict(d)
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        if d.get("render_size"):
            d["render_size"] = tuple(float(v) for v in d["render_size"])
        return cls(**d)

    def replace(self, **changes: Any) -> "Preprocessing":
        return Preprocessing.from_dict({**self.to_dict(), **changes})


def fit_to_window(samples: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """A mono waveform at least one window long: a shorter clip is filled by ``pre.short_pad``."""
    win, n = pre.window_samples, samples.shape[-1]
    if n == 0:
        raise ValueError("empty waveform")
    if n >= win:
        return samples
    return samples.repeat(-(-win // n))[:win] if pre.short_pad == "repeat" else F.pad(samples, (0, win - n))


def window_starts(n: int, pre: Preprocessing) -> torch.Tensor:
    """Start sample of each window over ``n >= window_samples`` samples.

    Windows start every ``hop_samples``; if the hop grid leaves the end of the track
    uncovered, one last window is aligned with the end.
    """
    win, hop = pre.window_samples, pre.hop_samples
    starts = list(range(0, max(n - win, 0) + 1, hop))
    if starts[-1] + win < n:
        starts.append(n - win)
    return torch.tensor(starts, dtype=torch.long)


def window_count(n: int, pre: Preprocessing) -> int:
    """How many windows :func:`window_starts` places over ``n`` samples (without listing them)."""
    return 1 + max(0, -(-(n - pre.window_samples) // pre.hop_samples))


def gather_windows(samples: torch.Tensor, starts: torch.Tensor, win: int) -> torch.Tensor:
    """The windows (B, win) starting at ``starts``: only these are copied (no index tensor of their size)."""
    return samples.unfold(-1, win, 1)[starts.to(samples.device)]


def frame_windows(samples: torch.Tensor, pre: Preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a mono waveform into windows of ``pre.window_samples`` (see :func:`window_starts`).

    A clip shorter than one window becomes a single window filled by ``pre.short_pad``.
    Returns ``(windows (B, L), starts (B,))`` with starts in samples.
    """
    samples = fit_to_window(samples, pre)
    starts = window_starts(samples.shape[-1], pre)
    return gather_windows(samples, starts, pre.window_samples), starts.to(samples.device)


def window_rms_db(windows: torch.Tensor) -> torch.Tensor:
    """RMS level of each window in dBFS."""
    rms = windows.float().pow(2).mean(dim=-1).sqrt()
    return 20.0 * torch.log10(rms.clamp_min(1e-10))


@lru_cache(maxsize=8)
def _mel_filters_np(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool, norm: str | None) -> np.ndarray:
    import librosa  # imported lazily: librosa is slow to import and only its filter bank is used

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)


def mel_filters(pre: Preprocessing, device: torch.device | str = "cpu") -> torch.Tensor:
    """The (n_mels, n_fft // 2 + 1) mel filter bank, identical to librosa's."""
    fb = _mel_filters_np(pre.sample_rate, pre.n_fft, pre.n_mels, pre.fmin, pre.fmax, pre.mel_htk, pre.mel_norm)
    return torch.from_numpy(fb).to(device)


def mel_power(windows: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """Power mel spectrogram (B, n_mels, frames), as ``librosa.feature.melspectrogram`` computes it."""
    stft = torch.stft(
        windows.float(),
        n_fft=pre.n_fft,
        hop_length=pre.hop_length,
        window=torch.hann_window(pre.n_fft, device=windows.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = stft.real.square() + stft.imag.square()
    return mel_filters(pre, windows.device) @ power


def power_to_db(power: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """``librosa.power_to_db`` applied to each item of a batch (B, n_mels, frames)."""
    log_spec = 10.0 * torch.log10(power.clamp_min(pre.db_amin))
    if pre.db_ref == "max":
        ref = power.amax(dim=(-2, -1), keepdim=True)
    else:
        ref = torch.tensor(float(pre.db_ref), device=power.device)
    log_spec = log_spec - 10.0 * torch.log10(ref.clamp_min(pre.db_amin))
    if pre.top_db is not None:
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(-2, -1), keepdim=True) - pre.top_db)
    return log_spec


@lru_cache(maxsize=4)
def _colormap_lut(name: str) -> torch.Tensor:
    from matplotlib import colormaps  # only for building the 256-entry table, once

    return torch.from_numpy(colormaps[name].resampled(256)(np.arange(256))[:, :3]).float()


def db_to_image(db: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """dB spectrograms (B, n_mels, frames) -> normalised images (B, 3, size, size).

    Each spectrogram is scaled to [0, 1] by its own min and max (as a colour-mapped
    ``specshow`` does), optionally flipped so low frequencies are at the bottom,
    colour-mapped or replicated to three channels, resized, then normalised. With
    ``pre.render_size`` the cells are first drawn into that raster the way a plot saved as
    an image (``specshow``) draws them, so the resize sees the same pixels.
    """
    lo = db.amin(dim=(-2, -1), keepdim=True)
    hi = db.amax(dim=(-2, -1), keepdim=True)
    x = (db - lo) / (hi - lo).clamp_min(1e-6)
    if pre.flip_frequency:
        x = x.flip(-2)
    size = (pre.image_size, pre.image_size)
    if pre.colormap:
        lut = _colormap_lut(pre.colormap).to(x.device)
        x = lut[(x * 256).long().clamp(0, 255)].permute(0, 3, 1, 2)
    else:
        x = x[:, None]
    if pre.render_size:
        x = _rasterize(x, *pre.render_size)
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _rasterize(x: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Draw the cells of ``x`` (B, C, rows, cols) into a height x width plot as matplotlib's Agg does.

    Each pixel takes the cell under its centre; the saved image keeps whole pixels, so a
    fractional height loses its fraction at the top and a fractional width at the right.
    """
    rows = (torch.arange(int(height), device=x.device) + 0.5 + height % 1) * (x.shape[-2] / height)
    cols = (torch.arange(int(width), device=x.device) + 0.5) * (x.shape[-1] / width)
    return x[..., rows.long()[:, None], cols.long()[None, :]]


def windows_to_images(windows: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """Waveform windows (B, L) -> model input (B, 3, size, size)."""
    return db_to_image(power_to_db(mel_power(windows, pre), pre), pre)
