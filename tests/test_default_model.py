"""The shipped default model: self-describing, and it recognises freshly synthesized music."""

import wave

import numpy as np
import pytest

from acousticsense.bundle import DEFAULT_BUNDLE, read_config
from acousticsense.calibrate import ece
from acousticsense.degrade import add_noise, noise, reencode
from acousticsense.inference import Classifier
from acousticsense.results import flags_of
from acousticsense.synth import GENRES, HELD_OUT_SOUNDFONT, NOT_MUSIC, SAMPLE_RATE, make_corpus

FRESH_SEED = 3  # training used seeds 0, 5 and 6, the held-out split seed 1, the example clips seed 2
PER_GENRE = 4
NOT_MUSIC_PER_KIND = 10
# bounds for the few clips a CI run can afford; the issue's goals (97 %, 5 and 2 points, 95 %, 0.05, 90 % / 2 %) are
# measured on many more clips by benchmarks/bench_robustness.py (BENCHMARKS.md);
# measured there: clean 0.963, pink/babble noise at 10 dB -0.06/-0.06, Opus -0.01, MuseScore_General 0.931, ECE 0.05,
# not music flagged 0.97 (speech) to 1.00, clean music 0.0. The accuracy goals are not all reached yet (see BENCHMARKS.md).
CLEAN_TOP1, NOISE_DROP, CODEC_DROP, UNHEARD_TOP1, MAX_ECE = 0.8, 0.25, 0.08, 0.6, 0.12
NOT_MUSIC_FLAGGED, MUSIC_FLAGGED = 0.8, 0.05
SIZE_LIMIT = 30 * 2**20


def test_bundle_describes_itself():
    config = read_config(DEFAULT_BUNDLE)
    assert config.labels == list(GENRES)
    assert config.architecture["name"] == "vit_mini_16" and config.preprocessing.image_size == 128
    assert (DEFAULT_BUNDLE / "model.safetensors").stat().st_size < SIZE_LIMIT
    held_out = config.metrics["held_out"]  # recorded by `make model` on the seed-1 corpus
    assert held_out["data"]["manifest"]["seed"] == 1 and held_out["tracks"] == 320
    assert held_out["track_accuracy"] >= 0.93 and held_out["track_top5_accuracy"] >= 0.99  # 0.956 recorded
    # the ECE goal (0.05) is met by window (0.025 recorded), not quite by track (0.053; 0.041 with the bundle before)
    assert held_out["track_ece"] <= 0.06 and held_out["not_music_flagged"] >= 0.9 and held_out["music_flagged"] <= 0.02
    calibrated = config.metrics["calibrated"]  # T minimises the validation NLL (tracks weighted equally; 2 windows each here): not above T = 1's
    assert calibrated["val_loss"] <= config.metrics["val_loss"] and 0 < config.calibration["ood_threshold"] < 0.5
    assert calibrated["val_ece"] <= 0.06 and held_out["window_ece"] <= 0.05
    # its last training stage: fine-tuned on the seed-6 corpus from the bundle fine-tuned on the seed-5 one (make_model.sh, FRESH=1)
    assert config.provenance["data"]["manifest"]["seed"] == 6 and config.provenance["init"]["model_id"] == "acousticsense-synth16-vit_mini-ft2"
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


def read_wav(path) -> np.ndarray:
    with wave.open(str(path), "rb") as f:
        return np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float32) / 32768


def rendered(folder, **kw) -> list[tuple[str, np.ndarray]]:
    manifest = make_corpus(folder, seconds=10.0, seed=FRESH_SEED, workers=2, progress=False, **kw)
    rows = [line.split(",")[:2] for line in manifest.read_text().splitlines()[1:]]
    return [(label, read_wav(folder / path)) for path, label in rows]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> list[tuple[str, np.ndarray]]:
    """PER_GENRE clips per genre and NOT_MUSIC_PER_KIND speech, noise and tone clips, a seed never trained on."""
    return rendered(tmp_path_factory.mktemp("fresh"), per_genre=PER_GENRE, not_music=NOT_MUSIC_PER_KIND)


def scores(clf, clips) -> dict[str, float]:
    results = [clf.classify(x) for _, x in clips]
    hits = np.array([r.label == label for (label, _), r in zip(clips, results)])
    flagged = np.array([bool(flags_of(r.warnings)) for r in results])
    return {"top1": hits.mean(), "ece": ece(np.array([r.top_k[0].probability for r in results]), hits),
            "flagged": flagged.mean(), "per_genre": {g: hits[[lab == g for lab, _ in clips]].mean() for g in {lab for lab, _ in clips}}}


def test_the_issue_goals_on_fresh_clips(default_classifier, fresh):
    """The goals of the built-in model on clips rendered with an unseen seed (BENCHMARKS.md measures them on more
    clips: these bounds allow for the few clips CI can afford)."""
    music = [(g, x) for g, x in fresh if g != NOT_MUSIC]
    others = [x for g, x in fresh if g == NOT_MUSIC]
    clean = scores(default_classifier, music)
    assert clean["top1"] >= CLEAN_TOP1, f"clean top-1 {clean['top1']:.3f}; per genre {clean['per_genre']}"
    assert min(clean["per_genre"].values()) > 0, clean["per_genre"]  # every genre recognised
    assert clean["ece"] <= MAX_ECE
    assert clean["flagged"] <= MUSIC_FLAGGED

    rng = np.random.default_rng(0)
    for kind in ("pink", "babble"):
        noisy = [(g, add_noise(x, noise(kind, len(x), SAMPLE_RATE, rng), 10.0)) for g, x in music]
        top1 = scores(default_classifier, noisy)["top1"]
        assert top1 >= clean["top1"] - NOISE_DROP, f"{kind} noise at 10 dB: top-1 {top1:.3f} vs clean {clean['top1']:.3f}"
    opus = scores(default_classifier, [(g, reencode(x, SAMPLE_RATE, "libopus", 32000)) for g, x in music])["top1"]
    assert opus >= clean["top1"] - CODEC_DROP

    flagged = scores(default_classifier, [(NOT_MUSIC, x) for x in others])["flagged"]
    assert flagged >= NOT_MUSIC_FLAGGED, f"only {flagged:.2f} of speech/noise/tones flagged"


def test_a_soundfont_never_trained_on(default_classifier, tmp_path):
    config = read_config(DEFAULT_BUNDLE)
    trained_with = config.provenance["data"]["manifest"]["soundfonts"]
    assert trained_with == ["TimGM6mb", "FluidR3_GM"] and HELD_OUT_SOUNDFONT not in trained_with
    # MuseScore_General takes 6 s to load per clip: one clip per genre here, ten in the benchmark
    clips = rendered(tmp_path / "unheard", per_genre=1, soundfonts=[HELD_OUT_SOUNDFONT])
    top1 = scores(default_classifier, clips)["top1"]
    assert top1 >= UNHEARD_TOP1, f"top-1 {top1:.3f} with {HELD_OUT_SOUNDFONT}"
