"""End-to-end speed of classifying a 4-minute track, as ratios against decoding it (measured in the same run).

    python benchmarks/bench_inference.py [--model BUNDLE] [--device cpu|cuda] [--repeats 5]

Prints the median of each stage; the ratios are what to compare between machines and commits.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from acousticsense.audio import load_audio
from acousticsense.inference import Classifier
from acousticsense.synth import render_clip

TRACK_SECONDS = 240.0
SOURCE_RATE = 48000


def write_track(path: Path, seconds: float = TRACK_SECONDS, samples: np.ndarray | None = None) -> Path:
    """A 48 kHz stereo Ogg Vorbis (``.ogg``) or 44.1 kHz mp3 (``.mp3``) track of synthetic music
    (``samples``: mono at 22,050 Hz; default: rock)."""
    if samples is None:
        samples, _ = render_clip("Rock", 11, seconds)
    stereo = np.stack([samples, samples]).astype(np.float32)
    fmt, codec, rate = ("mp3", "libmp3lame", 44100) if path.suffix == ".mp3" else ("ogg", "vorbis", SOURCE_RATE)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        stream.codec_context.options = {"strict": "experimental"}
        resampler = av.AudioResampler(format=stream.codec_context.codec.audio_formats[0].name, layout="stereo", rate=rate)
        frame = av.AudioFrame.from_ndarray(stereo, format="fltp", layout="stereo")
        frame.sample_rate = 22050
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    clf = Classifier.from_bundle(args.model, device=args.device)
    pre = clf.config.preprocessing
    with tempfile.TemporaryDirectory() as tmp:
        track = write_track(Path(tmp) / "track.ogg")
        features = clf.preprocess(track)
        windows = features.frames
        stages = {  # the engine's own stages, as every caller runs them
            "decode (baseline)": median_time(lambda: load_audio(track, pre.sample_rate, resampler=pre.resampler), args.repeats),
            "preprocess": median_time(lambda: clf.preprocess(track), args.repeats),
            "forward": median_time(lambda: clf.forward([features]), args.repeats),
            "end to end": median_time(lambda: clf.classify(track), args.repeats),
        }
    base = stages["decode (baseline)"]
    print(f"{clf.config.model_id} on {clf.device}, torch threads {torch.get_num_threads()}: "
          f"{TRACK_SECONDS:.0f} s track at {SOURCE_RATE} Hz stereo, {len(windows)} windows of {pre.window_seconds:g} s")
    print(f"{'stage':<20}{'median s':>10}{'x decode':>10}")
    for name, seconds in stages.items():
        print(f"{name:<20}{seconds:>10.3f}{seconds / base:>10.2f}")
    print(f"windows/s end to end: {len(windows) / stages['end to end']:.1f}")


if __name__ == "__main__":
    main()
