"""Render one short example clip per genre (seed 2, never used for training) as Opus-in-Ogg for the web app and README."""

from pathlib import Path

from acousticsense.degrade import encode
from acousticsense.synth import GENRES, SAMPLE_RATE, clip_seed, render_clip, slug

OUT = Path(__file__).resolve().parent.parent / "acousticsense" / "assets" / "examples"
SECONDS = 10.0
SEED = 2


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for genre in GENRES:
        samples, _ = render_clip(genre, clip_seed(SEED, genre, 0), SECONDS)
        (OUT / f"{slug(genre)}.ogg").write_bytes(encode(samples, SAMPLE_RATE, "libopus", 40_000))
    print(f"wrote {len(GENRES)} clips to {OUT}")


if __name__ == "__main__":
    main()
