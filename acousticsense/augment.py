"""Training-time augmentation of power mel spectrograms: background noise at a random SNR, SpecAugment.

Noise is added where it is cheap and exact in expectation: in the power mel domain. Signal and noise are
independent, so their powers add; the noise is a real rendered noise's mel (white, pink, brown, mains hum and,
with espeak-ng, babble), cropped at random and scaled to the drawn SNR against each window's mean power.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import Preprocessing
from .degrade import NOISE_KINDS, noise
from .features import track_mel

MASKS_PER_AXIS = 2  # SpecAugment: this many frequency masks and this many time masks per sample
NOISE_SECONDS = 40.0  # length of each rendered noise the crops come from (at least four windows)
SNR_DB = (0.0, 30.0)  # range the SNR of an augmented window is drawn from (uniform in dB)


class NoiseBank:
    """Power mels of one long rendering of each noise kind; `add` mixes random crops into a batch."""

    def __init__(self, pre: Preprocessing, seed: int = 0, kinds: tuple[str, ...] | None = None):
        from .speech import have_espeak

        rng = np.random.default_rng(seed)
        self.kinds = kinds or tuple(k for k in NOISE_KINDS if k != "babble" or have_espeak())
        n = round(max(NOISE_SECONDS, 4 * pre.window_seconds) * pre.sample_rate)
        self.mels = torch.stack([track_mel(torch.from_numpy(noise(k, n, pre.sample_rate, rng)).float(), pre) for k in self.kinds])

    def add(self, power: torch.Tensor, prob: float, snr_db: tuple[float, float] = SNR_DB) -> torch.Tensor:
        """`power` (B, n_mels, frames) with noise added to each window with probability `prob`."""
        batch, width = len(power), power.shape[-1]
        hit = torch.rand(batch) < prob
        if prob <= 0 or not hit.any():
            return power
        kind = torch.randint(len(self.kinds), (batch,))
        start = torch.randint(0, self.mels.shape[-1] - width + 1, (batch,))
        crops = torch.stack([self.mels[k, :, s : s + width] for k, s in zip(kind.tolist(), start.tolist())]).to(power.device)
        snr = torch.empty(batch).uniform_(*snr_db).to(power.device)
        scale = power.mean((1, 2)) / crops.mean((1, 2)).clamp_min(1e-20) * 10 ** (-snr / 10)
        return torch.where(hit.to(power.device)[:, None, None], power + scale[:, None, None] * crops, power)


def spec_augment(db: torch.Tensor, freq_mask: float, time_mask: float, masks: int = MASKS_PER_AXIS) -> torch.Tensor:
    """SpecAugment on dB spectrograms (B, n_mels, frames): random bands and spans set to each item's floor."""
    floor = db.amin(dim=(-2, -1), keepdim=True)
    batch = len(db)
    for axis, fraction in ((1, freq_mask), (2, time_mask)):
        size = db.shape[axis]
        widest = int(fraction * size)
        if widest < 1:
            continue
        pos = torch.arange(size, device=db.device)
        for _ in range(masks):
            width = torch.randint(0, widest + 1, (batch, 1), device=db.device)
            start = (torch.rand(batch, 1, device=db.device) * (size - width + 1)).long()
            hit = (pos >= start) & (pos < start + width)
            db = torch.where(hit[:, :, None] if axis == 1 else hit[:, None, :], floor, db)
    return db


