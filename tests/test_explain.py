"""Relevance maps (acousticsense.explain) on the built-in model: exact forward, shape and mass, faithfulness."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from acousticsense.audio import load_audio
from acousticsense.bundle import EXAMPLES_DIR
from acousticsense.errors import AudioError, ParameterError
from acousticsense.explain import (
    METHODS,
    _forward,
    explain,
    faithfulness,
    patches_to_mel,
    relevance_figure,
    save_png,
    window_images,
)
from acousticsense.inference import Classifier

EXAMPLES = sorted(Path(EXAMPLES_DIR).glob("*.ogg"))
# Measured (benchmarks/bench_explain.py): deleting the top 20 % of the patches lowers the top genre's probability
# by 0.18 on average over the 16 clips, a random 20 % by 0.003; the test keeps a margin that is well inside that gap.
FAITHFULNESS_MARGIN = 0.1


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier.from_bundle(device="cpu")


@pytest.fixture(scope="module")
def blues(clf: Classifier):
    return clf.preprocess(EXAMPLES[0])


def test_step_by_step_forward_equals_the_model(clf: Classifier, blues) -> None:
    images = window_images(blues)
    with torch.inference_mode():
        logits, attns, _ = _forward(clf.model, images)
        assert torch.allclose(logits, clf.model(images), atol=1e-5, rtol=0)
    assert len(attns) == len(clf.model.encoder.layers) and attns[0].shape == (len(images), 3, 65, 65)
    assert torch.allclose((logits / clf.config.temperature).softmax(-1), clf.forward([blues])[0], atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_map_has_the_spectrogram_shape_and_sums_to_one(clf: Classifier, blues, method: str) -> None:
    e = explain(clf, blues, method=method)
    assert e.relevance.shape == tuple(blues.mel.shape) and e.relevance.dtype == np.float32
    assert e.relevance.min() >= 0 and abs(float(e.relevance.sum(dtype=np.float64)) - 1) < 1e-5
    result = clf.postprocess(blues, clf.forward([blues])[0])
    assert e.genre == e.top_genre == result.label and e.probability == pytest.approx(result.top_k[0].probability, abs=1e-5)
    d = json.loads(json.dumps(e.to_dict()))
    assert d["shape"] == list(blues.mel.shape) and np.array(d["relevance"]).shape == e.relevance.shape
    assert d["method"] == method and len(d["mel_hz"]) == blues.mel.shape[0] and d["mel_hz"] == sorted(d["mel_hz"])


def test_patches_map_back_onto_the_right_bands_and_frames() -> None:
    """Image row 0 is the highest frequency (flip_frequency); patch column 0 is the window's first frames."""
    scores = torch.zeros(1, 8, 8)
    scores[0, 0, 0] = 1  # top-left patch of the image
    m = patches_to_mel(scores, 128, 345, flip_frequency=True)[0]
    rows, cols = np.nonzero(m.numpy())
    assert (rows.min(), rows.max()) == (112, 127) and cols.min() == 0 and 42 <= cols.max() <= 43
    assert float(m.sum()) == pytest.approx(1)
    assert np.nonzero(patches_to_mel(scores, 128, 345, flip_frequency=False)[0].numpy())[0].max() == 15


@pytest.mark.parametrize("music_first", [True, False])
def test_half_silent_clip_puts_the_mass_on_the_music(clf: Classifier, music_first: bool) -> None:
    sr = clf.config.preprocessing.sample_rate
    for path in EXAMPLES[:3]:
        music = load_audio(path, sr).samples[: 8 * sr]
        quiet = np.zeros_like(music)
        rel = explain(clf, np.concatenate([music, quiet] if music_first else [quiet, music])).relevance
        half = rel.shape[1] // 2
        share = rel[:, :half].sum() if music_first else rel[:, half:].sum()
        assert share >= 0.8, (path.name, share)


def test_deleting_the_most_relevant_patches_costs_more_than_random(clf: Classifier) -> None:
    runs = [faithfulness(clf, path, fraction=0.2, draws=1) for path in EXAMPLES]
    top, random = np.mean([r["top"] for r in runs]), np.mean([r["random"] for r in runs])
    assert top - random > FAITHFULNESS_MARGIN, (top, random)


def test_another_genre_gives_another_map(clf: Classifier, blues) -> None:
    top = explain(clf, blues)
    probs = clf.forward([blues])[0].mean(0)
    second = clf.labels[int(probs.argsort(descending=True)[1])]
    other = explain(clf, blues, genre=second)
    assert other.genre == second and other.top_genre == top.genre
    assert other.probability == pytest.approx(float(probs[clf.labels.index(second)]), abs=1e-5)
    assert np.abs(other.relevance - top.relevance).sum() > 0.2


def test_bad_requests_are_refused(clf: Classifier, blues) -> None:
    with pytest.raises(ParameterError, match="Blues.*Country"):
        explain(clf, blues, genre="Polka")
    with pytest.raises(ParameterError, match="rollout"):
        explain(clf, blues, method="lime")
    with pytest.raises(AudioError, match="silent"):
        explain(clf, np.zeros(10 * 22050, np.float32))
    e = explain(clf, blues)
    for bad, message in [
        (lambda: faithfulness(clf, blues, fraction=1.5), "fraction must be a number between 0 and 1, not 1.5"),
        (lambda: faithfulness(clf, blues, draws=0), "draws must be a whole number from 1 to 100, not 0"),
        (lambda: faithfulness(clf, blues, genre="Polka"), "unknown genre 'Polka'"),
        (lambda: faithfulness(clf, blues, method="lime"), "unknown method 'lime'"),
        (lambda: e.to_dict(bands=0), "bands must be a whole number from 1 to"),
        (lambda: e.to_dict(columns=2.5), "columns must be a whole number from 1 to"),
        (lambda: relevance_figure(e, width=-3), "width must be a number of inches from 1 to 100, not -3"),
    ]:  # were deep numpy/torch/matplotlib errors (or a figure of negative size)
        with pytest.raises(ParameterError, match=message):
            bad()


def test_explain_warns_as_predict_does(clf: Classifier) -> None:
    """A clip shorter than the window: predict says it was filled, and so does the map of it (it said nothing)."""
    short = load_audio(EXAMPLES[0], clf.config.preprocessing.sample_rate, max_seconds=1.0).samples
    predicted = [w["code"] for w in clf.classify(short).warnings]
    explained = explain(clf, short)
    assert "short_audio" in predicted and [c for c, _ in explained.warnings] == predicted
    assert explained.to_dict()["warnings"][0]["code"] == predicted[0]


def test_figure_is_labelled_and_saved(clf: Classifier, blues, tmp_path: Path) -> None:
    e = explain(clf, blues)
    ax = relevance_figure(e).axes[0]
    assert ax.get_xlabel() == "time (s)" and ax.get_ylabel() == "frequency (Hz)"
    assert ax.get_xlim()[1] == pytest.approx(blues.mel.shape[1] * 512 / 22050)
    save_png(e, tmp_path / "map.png")
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert e.warnings == [] and e.to_dict()["warnings"] == []
    cut = explain(clf, clf.preprocess(EXAMPLES[0], clf.options(max_seconds=5.0)))  # what decoding noted is kept: the map covers 5 s
    assert [c for c, _ in cut.warnings] == ["truncated", "short_audio"]  # 5 s of an 8 s window: filled, as predict says
    assert cut.to_dict()["warnings"][0]["code"] == "truncated"


def test_the_figure_shows_what_was_heard_and_whether_to_trust_it(clf: Classifier, blues) -> None:
    """A 0.3 s clip was drawn as 8 s of music titled "Where it heard Metal (p = 1.00)"; a not-music track's map
    named a genre that the page said it would not name; the title did not say which method made the map."""
    title = relevance_figure(explain(clf, blues, method="rollout")).axes[0].get_title()
    assert title.startswith("Where it heard ") and "rollout)" in title and "\n" not in title  # clean music: no flag
    short = explain(clf, load_audio(EXAMPLES[0], clf.config.preprocessing.sample_rate, max_seconds=1.0).samples)
    assert short.filled == "repeated" and short.duration == pytest.approx(1.0) and short.to_dict()["duration"] == pytest.approx(1.0)
    ax = relevance_figure(short).axes[0]
    drawn = ax.get_xlim()[1]
    assert drawn == pytest.approx(8.0, abs=0.05) and ax.get_title().endswith("\nflagged low confidence")  # shorter than a third of the window
    shaded = [p.get_x() for p in ax.patches]  # the part after 1 s is marked as the fill, not as audio
    assert shaded == [pytest.approx(1.0)] and ax.get_xlabel() == "time (s); shaded: the clip repeated to fill one window"
    assert not relevance_figure(explain(clf, blues)).axes[0].patches  # a whole window: nothing shaded
    from acousticsense.ui import spectrogram_figure  # the web page's spectrogram beside it: the same shading

    page = spectrogram_figure(clf.preprocess(load_audio(EXAMPLES[0], clf.config.preprocessing.sample_rate, max_seconds=1.0).samples)).axes[0]
    assert [p.get_x() for p in page.patches] == [pytest.approx(1.0)] and not spectrogram_figure(blues).axes[0].patches
    noise = np.random.default_rng(0).standard_normal(22050 * 9).astype(np.float32) * 0.1
    flagged = explain(clf, noise)
    assert "not_music" in {c for c, _ in flagged.warnings}
    assert relevance_figure(flagged).axes[0].get_title().endswith("\nflagged not music: no genre is named")


def test_the_rest_api_explains_on_request_and_draws_the_map(tiny_bundle, clip_mp3):
    from fastapi.testclient import TestClient

    from acousticsense.api import EXPLAIN_BANDS, create_api

    with TestClient(create_api(tiny_bundle, max_seconds=30)) as client:
        files = {"file": ("clip.mp3", clip_mp3.read_bytes(), "audio/mpeg")}
        plain = client.post("/api/v1/classify", files=files).json()
        assert "explanation" not in plain
        doc = client.post("/api/v1/classify?explain=true&genre=Jazz", files=files).json()
        e = doc["explanation"]
        assert e["genre"] == "Jazz" and e["method"] == "grad_rollout" and e["shape"][0] == EXPLAIN_BANDS
        assert np.asarray(e["relevance"]).shape == tuple(e["shape"]) and np.sum(e["relevance"]) == pytest.approx(1.0, abs=1e-3)
        assert e["seconds_per_frame"] * e["shape"][1] == pytest.approx(doc["duration"], rel=0.2)
        png = client.post("/api/v1/explain.png", files=files)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        bad = client.post("/api/v1/explain.png?genre=Polka", files=files)
        assert bad.status_code == 400 and "Polka" in bad.json()["detail"]
        silence = io.BytesIO()
        with wave.open(silence, "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(22050), w.writeframes(bytes(2 * 22050 * 3))
        quiet = {"file": ("silent.wav", silence.getvalue(), "audio/wav")}
        doc = client.post("/api/v1/classify?explain=true", files=quiet).json()  # the result, as without explain, and no map
        assert doc["silent"] is True and doc["explanation"] is None
        nothing = client.post("/api/v1/explain.png", files=quiet)
        assert nothing.status_code == 422 and "nothing to explain" in nothing.json()["detail"]
    with TestClient(create_api(tiny_bundle, max_seconds=30)) as client, pytest.MonkeyPatch.context() as mp:
        mp.setattr("acousticsense.api.SERVER_MAX_EXPLAINED", 10)  # an explanation's cost grows with its windows: bounded
        costly = client.post("/api/v1/classify?explain=true&hop=0.5", files=files)
        assert costly.status_code == 400 and "11 windows to explain, more than the 10 one request may have" in costly.json()["detail"]
        assert client.post("/api/v1/classify?hop=0.5", files=files).status_code == 200


def test_the_cli_writes_the_map_only_to_a_png_name(clip_mp3, tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "acousticsense.cli", "explain", str(clip_mp3), "--out", str(tmp_path / "m.jpg")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and out.stderr == f"error: --out {tmp_path / 'm.jpg'}: the map is a PNG; name the file .png\n"
    assert not (tmp_path / "m.jpg").exists()
    out = subprocess.run([sys.executable, "-m", "acousticsense.cli", "explain", str(clip_mp3), "--out", str(tmp_path / "m.png"), "--json"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    doc = json.loads(out.stdout)  # 7 s of an 8 s window: said on stderr as without --json (it said nothing)
    assert out.returncode == 0 and doc["duration"] == pytest.approx(7.0, abs=0.05) and doc["warnings"][0]["code"] == "short_audio"
    assert out.stderr.startswith("warning: clip is 7.0") and (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
