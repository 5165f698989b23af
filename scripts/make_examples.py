"""Render one short example clip per genre (seed 2, never used for training) as Opus-in-Ogg for the web app and README."""

from pathlib import Path

import av
import numpy as np

from acousticsense.synth import GENRES, SAMPLE_RATE, clip_seed, render_clip, slug

OUT = Path(__file__).resolve().parent.parent / "acousticsense" / "assets" / "examples"
SECONDS = 10.0
SEED = 2


def write_ogg(path: Path, samples: np.ndarray, sr: int, bitrate: int = 40_000) -> None:
    """Encode mono float samples as Opus in an Ogg container."""
    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        stream.bit_rate = bitrate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        frame = av.AudioFrame.from_ndarray(samples[None].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = sr
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for genre in GENRES:
        samples, _ = render_clip(genre, clip_seed(SEED, genre, 0), SECONDS)
        write_ogg(OUT / f"{slug(genre)}.ogg", samples, SAMPLE_RATE)
    print(f"wrote {len(GENRES)} clips to {OUT}")


if __name__ == "__main__":
    main()
