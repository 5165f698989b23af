"""Waveform -> mel power of the whole track (once) -> windows as slices of its frames -> dB -> the image a ViT
sees, all in torch; and where the windows go (every hop plus one at the end, or centred), how silent each is.

Every parameter lives in :class:`~acousticsense.config.Preprocessing`, which a model bundle stores in its
config, so a model is always fed exactly what it was trained on.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .config import Preprocessing
from .errors import AudioError, ParameterError

RENDER_BYTES = 1 << 28  # a bundle's render_size raster is drawn for at most this many bytes of windows at a time


def fit_to_window(samples: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """A mono waveform at least one window long: a shorter clip is filled by ``pre.short_pad``."""
    win, n = pre.window_samples, samples.shape[-1]
    if n == 0:
        raise AudioError("empty waveform")
    if n >= win:
        return samples
    return samples.repeat(-(-win // n))[:win] if pre.short_pad == "repeat" else F.pad(samples, (0, win - n))


def fill_word(pre: Preprocessing) -> str:
    """How :func:`fit_to_window` fills a clip shorter than one window: ``"repeated"`` or ``"zero-padded"``."""
    return "repeated" if pre.short_pad == "repeat" else "zero-padded"


def short_audio(duration: float, pre: Preprocessing) -> tuple[str, str]:
    """The ``short_audio`` warning of a clip of ``duration`` seconds, shorter than one window (see :func:`fit_to_window`)."""
    return "short_audio", f"clip is {duration:.2f} s, shorter than the {pre.window_seconds:g} s window; it was {fill_word(pre)} to fill one window"


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


SHORTEST_TRUSTED = 1 / 3  # of a window: a shorter clip is too little audio to trust its genre (the built-in model, 8 s
# windows, on cuts of its examples: 8/32 right at 0.5 s, 16/32 at 1 s, 19/32 at 2 s, 26/32 at 3 s; about 0.8 sure at each)


def too_short(duration: float, pre: Preprocessing) -> tuple[str, str] | None:
    """The ``low_confidence`` warning of a clip under :data:`SHORTEST_TRUSTED` of a window, else None."""
    if duration >= pre.window_seconds * SHORTEST_TRUSTED:
        return None
    return "low_confidence", f"only {duration:.2f} s of audio, under a third of the {pre.window_seconds:g} s window: too little to trust the genre"


def gaps(missed: float, pre: Preprocessing, what: str = "track") -> tuple[str, str]:
    """The ``gaps`` warning of a hop longer than the window, which leaves the share ``missed`` of the ``what`` unanalysed."""
    return "gaps", (f"the hop ({pre.hop_seconds:g} s) is longer than the window ({pre.window_seconds:g} s): "
                    f"{missed:.0%} of the {what} falls between windows and is not analysed")


def uncovered_share(starts: list[int], n: int, win: int) -> float:
    """The share of ``n`` samples that no window ``[start, start + win)`` covers (a hop longer than the window)."""
    covered = end = 0
    for start in sorted(starts):
        lo, hi = max(start, end), min(start + win, n)
        covered += max(hi - lo, 0)
        end = max(end, hi)
    return 1.0 - covered / n if n > 0 else 0.0


def window_count(n: int, pre: Preprocessing) -> int:
    """How many windows :func:`place_windows` places over ``n >= window_samples`` samples (without listing them)."""
    if pre.chunking == "centred":
        frames, width, hop = _centred_grid(n, pre)
        return 1 + max(0, frames - width) // hop
    return 1 + max(0, -(-(n - pre.window_samples) // pre.hop_samples))


def place_windows(n: int, pre: Preprocessing) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Where the windows of a track of ``n >= window_samples`` samples lie in its :func:`track_mel` frames.

    Returns ``(starts (B,) in samples, first frames (B,), frames per window)``. ``chunking="start"``: see
    :func:`window_starts` and :func:`window_frames`. ``chunking="centred"`` (ccmusic's demo): windows of
    ``int(window_seconds * frames / duration)`` frames every hop (in the same frames), as many as fit,
    the group centred in the track.
    """
    if pre.chunking == "start":
        starts = window_starts(n, pre)
        return starts, window_frames(starts, n, pre), frames_per_window(pre)
    frames, width, hop = _centred_grid(n, pre)
    count = window_count(n, pre)
    first = (frames - (count - 1) * hop - width) // 2 + hop * torch.arange(count)
    return first * pre.hop_length, first, width


def _centred_grid(n: int, pre: Preprocessing) -> tuple[int, int, int]:
    """(track frames, frames per window, frames per hop) of ``chunking="centred"``."""
    frames = 1 + n // pre.hop_length
    per_second = frames / (n / pre.sample_rate)
    width = min(frames, int(pre.window_seconds * per_second))
    return frames, width, max(1, int(pre.hop_seconds * per_second))


def frames_per_window(pre: Preprocessing) -> int:
    """Mel frames of one window (``torch.stft`` with ``center=True`` over ``window_samples``)."""
    return 1 + pre.window_samples // pre.hop_length


def window_frames(starts: torch.Tensor, n: int, pre: Preprocessing) -> torch.Tensor:
    """The first :func:`track_mel` frame of each window starting at ``starts`` (samples) in ``n >= window_samples`` samples.

    Frame ``j`` is centred on sample ``j * hop_length``: a window takes the frame nearest its start,
    kept inside the track's frames.
    """
    last = 1 + n // pre.hop_length - frames_per_window(pre)
    return torch.div(starts + pre.hop_length // 2, pre.hop_length, rounding_mode="floor").clamp(0, last)


def track_mel(samples: torch.Tensor, pre: Preprocessing, chunk_frames: int = 512) -> torch.Tensor:
    """Power mel spectrogram of a whole track (n_mels, 1 + n // hop_length), computed ``chunk_frames`` at a time.

    Equal to ``mel_power(samples[None], pre)[0]``, but its STFT never holds more than one chunk, so
    memory stays small for long tracks. Windows are slices of its frames.
    """
    n, hop, n_fft = samples.shape[-1], pre.hop_length, pre.n_fft
    frames = 1 + n // hop
    out = torch.empty(pre.n_mels, frames, device=samples.device)
    window = torch.hann_window(n_fft, device=samples.device)
    filters = mel_filters(pre, samples.device)
    for a in range(0, frames, chunk_frames):
        b = min(frames, a + chunk_frames)
        lo, hi = a * hop - n_fft // 2, (b - 1) * hop - n_fft // 2 + n_fft  # the samples frames a..b-1 see (center=True)
        segment = F.pad(samples[max(lo, 0) : min(hi, n)].float(), (max(0, -lo), max(0, hi - n)))
        stft = torch.stft(segment, n_fft=n_fft, hop_length=hop, window=window, center=False, return_complex=True)
        out[:, a:b] = filters @ (stft.real.square() + stft.imag.square())
    return out


def window_levels_db(samples: torch.Tensor, first_frames: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """RMS level (dBFS) of each window, from the hop-length blocks of samples its frames span.

    ``first_frames`` are :func:`window_frames`; the track is read block by block, never copied whole.
    """
    hop, n = pre.hop_length, samples.shape[-1]
    blocks = -(-n // hop)
    power = torch.cat([F.pad(chunk.float(), (0, -len(chunk) % hop)).view(-1, hop).square().mean(1) for chunk in samples.split(hop * 512)])
    total = F.pad(power.double().cumsum(0), (1, 0))
    first = first_frames.to(samples.device).clamp(max=blocks - 1)
    end = (first + max(1, pre.window_samples // hop)).clamp(max=blocks)
    mean_square = (total[end] - total[first]) / (end - first)
    return 10.0 * torch.log10(mean_square.clamp_min(1e-20)).float()


def hz_to_mel(hz: np.ndarray, htk: bool = False) -> np.ndarray:
    """Hertz to mels: HTK's formula, or Slaney's (linear below 1 kHz, logarithmic above), as librosa computes them."""
    hz = np.asanyarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    linear = hz / _SLANEY_STEP
    return np.where(hz >= _SLANEY_KNEE_HZ, _SLANEY_KNEE_HZ / _SLANEY_STEP + np.log(np.maximum(hz, 1e-10) / _SLANEY_KNEE_HZ) / _SLANEY_LOG_STEP, linear)


def mel_to_hz(mel: np.ndarray, htk: bool = False) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mel = np.asanyarray(mel, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    knee = _SLANEY_KNEE_HZ / _SLANEY_STEP
    return np.where(mel >= knee, _SLANEY_KNEE_HZ * np.exp(_SLANEY_LOG_STEP * (mel - knee)), mel * _SLANEY_STEP)


_SLANEY_STEP = 200.0 / 3  # Hz per mel below the knee
_SLANEY_KNEE_HZ = 1000.0
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


@lru_cache(maxsize=8)
def _mel_filters_np(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool, norm: str | None) -> np.ndarray:
    """Triangular filters on the mel scale, ``librosa.filters.mel``'s numbers without importing librosa (slow to load)."""
    if norm not in (None, "slaney"):
        raise ParameterError(f"mel_norm must be 'slaney' or null, not {norm!r}")
    fft_hz = np.linspace(0, sr / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(sr / 2 if fmax is None else fmax, htk), n_mels + 2), htk)
    ramps = edges[:, None] - fft_hz[None, :]
    widths = np.diff(edges)
    rising, falling = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    if norm == "slaney":  # each filter's area is the same
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def mel_filters(pre: Preprocessing, device: torch.device | str = "cpu") -> torch.Tensor:
    """The (n_mels, n_fft // 2 + 1) mel filter bank, identical to librosa's; with ``preemphasis`` a, each FFT bin
    is weighted by the filter's power gain |1 - a e^(-jw)|^2, so every mel is that of the pre-emphasised signal."""
    fb = _mel_filters_np(pre.sample_rate, pre.n_fft, pre.n_mels, pre.fmin, pre.fmax, pre.mel_htk, pre.mel_norm)
    if pre.preemphasis:
        w = np.linspace(0, np.pi, pre.n_fft // 2 + 1)
        fb = (fb * (1 + pre.preemphasis ** 2 - 2 * pre.preemphasis * np.cos(w))).astype(fb.dtype)
    return torch.from_numpy(fb).to(device)


def mel_band_hz(pre: Preprocessing) -> np.ndarray:
    """(n_mels,) each mel band's peak frequency in Hz (of the filter itself: pre-emphasis does not move a band)."""
    fb = _mel_filters_np(pre.sample_rate, pre.n_fft, pre.n_mels, pre.fmin, pre.fmax, pre.mel_htk, pre.mel_norm)
    return fb.argmax(-1) * pre.sample_rate / pre.n_fft


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


def power_to_db(power: torch.Tensor, pre: Preprocessing, peak: torch.Tensor | None = None) -> torch.Tensor:
    """``librosa.power_to_db`` applied to each item of a batch (B, n_mels, frames).

    ``peak`` (B, 1, 1): the largest power of each item's whole track, for ``db_scope="track"`` (the "max"
    reference and the ``top_db`` floor are then the track's, as when the whole track is converted at once).
    Without it, each item's own maximum.
    """
    amin = pre.db_amin
    peak = power.amax(dim=(-2, -1), keepdim=True) if peak is None else peak
    ref_db = 10.0 * torch.log10((peak if pre.db_ref == "max" else torch.tensor(float(pre.db_ref), device=power.device)).clamp_min(amin))
    log_spec = 10.0 * torch.log10(power.clamp_min(amin)) - ref_db
    if pre.top_db is not None:
        log_spec = torch.maximum(log_spec, 10.0 * torch.log10(peak.clamp_min(amin)) - ref_db - pre.top_db)
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
    if pre.render_size:  # a big plot is drawn a few windows at a time: the memory stays bounded, whatever a bundle asks
        step = max(1, RENDER_BYTES // int(4 * (3 if pre.colormap else 1) * pre.render_size[0] * pre.render_size[1]))
        if len(db) > step:
            return torch.cat([db_to_image(part, pre) for part in db.split(step)])
    lo = db.amin(dim=(-2, -1), keepdim=True)
    hi = db.amax(dim=(-2, -1), keepdim=True)
    x = (db - lo) / (hi - lo).clamp_min(1e-6)
    if pre.flip_frequency:
        x = x.flip(-2)
    if pre.colormap:
        x = _colormap_lut(pre.colormap).to(x.device)[(x * 256).long().clamp(0, 255)]
    else:
        x = x[..., None]
    if pre.jpeg_quality:  # 8 bits per channel, as saved; rounding before drawing gives the same pixels, cheaper
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    if pre.render_size:
        x = _rasterize(x, *pre.render_size)
    if pre.jpeg_quality:
        x = _saved_as_jpeg(x, pre.jpeg_quality, pre.image_size)
    else:
        x = F.interpolate(x.permute(0, 3, 1, 2), size=(pre.image_size, pre.image_size), mode="bilinear", antialias=True, align_corners=False)
    x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _rasterize(x: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Draw the cells of ``x`` (B, rows, cols, C) into a height x width plot as matplotlib's Agg does.

    Each pixel takes the cell under its centre (a centre on an edge, within Agg's 1/256-pixel
    precision, the cell before it); the saved image keeps whole pixels, so a fractional height
    loses its fraction at the top and a fractional width at the right.
    """
    rows = (torch.arange(int(height), dtype=torch.float64) + 0.5 + height % 1) * (x.shape[1] / height)
    cols = (torch.arange(int(width), dtype=torch.float64) + 0.5) * (x.shape[2] / width)
    rows, cols = (torch.ceil(rows - 1e-6) - 1).long().to(x.device), (torch.ceil(cols - 1e-6) - 1).long().to(x.device)
    return x[:, rows[:, None], cols[None, :]]


def _saved_as_jpeg(x: torch.Tensor, quality: int, size: int) -> torch.Tensor:
    """Each image of ``x`` (B, H, W, C, uint8) as a plot saved to JPEG at ``quality`` and read back at ``size``
    squared (B, C, size, size in [0, 1]): PIL's encoder (as matplotlib saves) and PIL's bilinear resize (as
    torchvision resizes a PIL image). PIL lets go of the GIL while it codes, so the images share torch's threads."""
    from PIL import Image

    def round_trip(image: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, format="jpeg", quality=quality)
        return np.asarray(Image.open(buf).resize((size, size), Image.Resampling.BILINEAR)).reshape(size, size, -1)

    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        out = list(pool.map(round_trip, x.cpu().numpy()))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device).float() / 255


def power_to_images(power: torch.Tensor, pre: Preprocessing, peak: torch.Tensor | None = None) -> torch.Tensor:
    """Mel power windows (B, n_mels, frames) -> the model's input images (B, 3, size, size): :func:`power_to_db`
    (``peak``: each window's track peak, for ``db_scope="track"``), then :func:`db_to_image`."""
    return db_to_image(power_to_db(power, pre, peak), pre)


def windows_to_images(windows: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """Waveform windows (B, L) -> model input (B, 3, size, size); ``L`` is ``pre.window_samples`` and the samples
    finite floats (anything else is a :class:`ParameterError`: a window of another length would be drawn as if it
    were one, silently wrong)."""
    if not isinstance(pre, Preprocessing):
        raise ParameterError(f"windows_to_images needs the model's Preprocessing, not {type(pre).__name__}")
    if not isinstance(windows, torch.Tensor) or not windows.is_floating_point() or windows.ndim != 2 or not len(windows) or windows.shape[1] != pre.window_samples:
        shape = tuple(windows.shape) if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise ParameterError(f"windows_to_images takes a float tensor of windows (B >= 1, {pre.window_samples} samples each), not {shape}")
    if not bool(torch.isfinite(windows).all()):
        raise ParameterError("windows_to_images: the windows hold NaN or infinite samples")
    return power_to_images(mel_power(windows, pre), pre)
