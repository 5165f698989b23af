"""The shipped default model: self-describing, and it recognises freshly synthesized music."""

import numpy as np
import pytest

from acousticsense.bundle import DEFAULT_BUNDLE, read_config
from acousticsense.inference import Classifier
from acousticsense.synth import GENRES, clip_seed, render_clip

FRESH_SEED = 3  # training used seed 0, the held-out split seed 1, the example clips seed 2
PER_GENRE = 4
SIZE_LIMIT = 30 * 2**20


def test_bundle_describes_itself():
    config = read_config(DEFAULT_BUNDLE)
    assert config.labels == list(GENRES)
    assert config.architecture["name"] == "vit_mini_16" and config.preprocessing.image_size == 128
    assert (DEFAULT_BUNDLE / "model.safetensors").stat().st_size < SIZE_LIMIT
    held_out = config.metrics["held_out"]  # recorded by `make model` on the seed-1 corpus
    assert held_out["data"]["manifest"]["seed"] == 1 and held_out["tracks"] == 320
    assert held_out["track_accuracy"] >= 0.90 and held_out["track_top5_accuracy"] >= 0.99
    assert config.provenance["data"]["manifest"]["seed"] == 0  # trained on the seed-0 corpus
    assert not absolute_paths(config.to_dict()), "the bundle names folders of the machine that built it"


def absolute_paths(value) -> list[str]:
    """Every string in a JSON-like value that looks like an absolute file path."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in absolute_paths(v)]
    return [value] if isinstance(value, str) and (value.startswith(("/", "~")) or value[1:3] == ":\\") else []


@pytest.fixture(scope="module")
def default_classifier():
    return Classifier.from_bundle(device="cpu")


def test_fresh_synthetic_clips_beat_80_percent(default_classifier):
    clips = [(g, render_clip(g, clip_seed(FRESH_SEED, g, i), 10.0)[0]) for g in GENRES for i in range(PER_GENRE)]
    results = [default_classifier.classify(samples) for _, samples in clips]
    truth = np.array([g for g, _ in clips])
    top1 = np.array([r.label for r in results])
    top5 = np.array([g in [x.label for x in r.top_k] for (g, _), r in zip(clips, results)])
    accuracy = (top1 == truth).mean()
    per_genre = {g: (top1[truth == g] == g).mean() for g in GENRES}
    assert accuracy > 0.80, f"top-1 {accuracy:.2%}; per genre {per_genre}"
    assert top5.mean() > 0.95
    assert sum(v == 0 for v in per_genre.values()) == 0, f"a genre is never recognised: {per_genre}"
