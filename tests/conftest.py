"""Shared fixtures: music-like signals, encoded audio files, tiny random-weight bundles."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from acousticsense.bundle import BundleConfig, save_bundle
from acousticsense.features import Preprocessing, fit_to_window, window_starts

TINY_LABELS = ["Blues", "Jazz", "Metal", "Reggae"]


def frame_windows(samples: torch.Tensor, pre: Preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference windows, copied out of the waveform one by one: ``(windows (B, L), starts (B,))``.

    Inference copies no windows (it slices the frames of ``track_mel``); the tests compare it with this.
    """
    samples = fit_to_window(samples, pre)
    starts = window_starts(samples.shape[-1], pre)
    return samples.unfold(-1, pre.window_samples, 1)[starts.to(samples.device)], starts.to(samples.device)

# (container format, codec) per file extension, for encoding test fixtures with PyAV.
ENCODINGS = {
    ".wav": ("wav", "pcm_s16le"),
    ".flac": ("flac", "flac"),
    ".mp3": ("mp3", "libmp3lame"),
    ".ogg": ("ogg", "vorbis"),
    ".opus": ("ogg", "libopus"),
    ".m4a": ("mp4", "aac"),
    ".aac": ("adts", "aac"),
    ".aiff": ("aiff", "pcm_s16be"),
}


def music_like(seconds: float, sr: int = 22050, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A few seconds of notes with harmonics, decaying envelopes and noisy drum hits: (channels, n) float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = np.zeros(n)
    beat = 60 / rng.uniform(80, 140)
    for onset in np.arange(0, seconds, beat / 2):
        i = int(onset * sr)
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        seg = t[: min(n - i, int(1.5 * sr))]  # each note rings for at most 1.5 s
        j = i + len(seg)
        env = np.exp(-seg * rng.uniform(2, 6))
        y[i:j] += sum(0.2 / k * np.sin(2 * np.pi * k * f0 * seg) for k in range(1, 6)) * env
        y[i:j] += 0.1 * rng.standard_normal(len(seg)) * np.exp(-seg * 40)
    y = 0.5 * y / np.abs(y).max()
    out = np.stack([np.roll(y, 37 * c) for c in range(channels)])
    return out.astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, sr: int) -> Path:
    """Encode (channels, n) float samples to ``path``; the format follows the extension."""
    fmt, codec = ENCODINGS[path.suffix]
    samples = np.atleast_2d(samples).astype(np.float32)
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[samples.shape[0]]
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=sr, layout=layout)
        stream.codec_context.options = {"strict": "experimental"}  # FFmpeg's native vorbis encoder
        frame_format = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=frame_format, layout=layout, rate=sr)
        for i in range(0, samples.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i : i + 4096]), format="fltp", layout=layout)
            frame.sample_rate = sr
            for f in resampler.resample(frame):
                for packet in stream.encode(f):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def video(path: Path, with_audio: bool) -> Path:
    """A 2 s mpeg4 video in mp4, with or without an AAC track."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height = 32, 32
        a = c.add_stream("aac", rate=22050, layout="mono") if with_audio else None
        for i in range(20):
            for p in v.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 10, np.uint8), format="rgb24")):
                c.mux(p)
        if a is not None:
            y = music_like(2.0, 22050)
            for i in range(0, y.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y[:, i : i + 1024]), format="fltp", layout="mono")
                frame.sample_rate = 22050
                for p in a.encode(frame):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path


def tiny_config(labels: list[str] = TINY_LABELS, **pre_changes) -> BundleConfig:
    """A config for a fast test model: ViT-Ti at 32x32 on 2 s windows."""
    pre = Preprocessing(window_seconds=2.0, hop_seconds=1.0, image_size=32, **pre_changes)
    return BundleConfig(
        model_id="tiny-test",
        architecture={"name": "vit_ti_16", "image_size": 32, "head": {"type": "linear"}},
        labels=list(labels),
        preprocessing=pre,
        provenance={"trained_on": "nothing (random weights for tests)"},
    )


def random_model(config: BundleConfig, seed: int = 0) -> torch.nn.Module:
    """The config's model with every weight random, the zero-initialised head included."""
    torch.manual_seed(seed)
    model = config.build_model()
    with torch.no_grad():
        for p in model.heads.parameters():
            p.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    config = tiny_config()
    return save_bundle(tmp_path_factory.mktemp("bundle") / "tiny", random_model(config), config)


@pytest.fixture(scope="session")
def clip_mp3(tmp_path_factory) -> Path:
    """7 s of stereo music-like audio at 44.1 kHz as mp3."""
    return write_audio(tmp_path_factory.mktemp("audio") / "clip.mp3", music_like(7.0, 44100, channels=2), 44100)
