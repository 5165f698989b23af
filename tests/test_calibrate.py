"""Calibration and "not music": temperature scaling, ECE, the threshold rule, and their place in bundles and results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from acousticsense.bundle import BundleConfig, read_config, save_bundle, write_config
from acousticsense.calibrate import ece, fit_temperature, ood_threshold, reliability, scale, track_score, warnings_for
from acousticsense.errors import BundleError
from acousticsense.inference import Classifier
from conftest import music_like, random_model, tiny_config, write_audio


def overconfident(n: int = 400, classes: int = 5, sharpen: float = 3.0, seed: int = 0):
    """Window probabilities of a model whose logits are `sharpen` times too large, and the true labels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g) * 1.5
    truth = torch.multinomial(logits.softmax(-1), 1, generator=g)[:, 0]  # labels drawn from the calibrated model
    return [p[None] for p in (logits * sharpen).softmax(-1)], truth.tolist()


def test_ece_of_known_cases():
    assert ece(np.full(100, 0.8), np.r_[np.ones(80), np.zeros(20)]) == pytest.approx(0.0)
    assert ece(np.full(100, 0.9), np.r_[np.ones(60), np.zeros(40)]) == pytest.approx(0.3)
    bins = reliability(np.array([0.05, 0.95, 0.97]), np.array([0, 1, 0]))
    assert len(bins) == 15 and bins[0]["count"] == 1 and bins[-1] == {"low": pytest.approx(14 / 15, abs=1e-4), "high": 1.0, "count": 2,
                                                                       "confidence": 0.96, "accuracy": 0.5}


def test_temperature_recovers_the_sharpening_and_lowers_ece():
    probs, truth = overconfident()
    t = fit_temperature(probs, truth)
    assert t == pytest.approx(3.0, rel=0.25)
    before = torch.cat(probs).max(-1)
    after = torch.cat([scale(p, t) for p in probs]).max(-1)
    hits = lambda m: (m.indices == torch.tensor(truth)).numpy()  # noqa: E731
    assert ece(after.values.numpy(), hits(after)) < 0.5 * ece(before.values.numpy(), hits(before))
    assert torch.equal(after.indices, before.indices)  # scaling never changes a window's ranking
    assert torch.allclose(scale(probs[0], 1.0), probs[0], atol=1e-6)


def test_temperature_of_tracks_whose_windows_disagree_softens():
    """Two windows in three confidently right, one confidently wrong: 67 % accuracy at 90 % confidence wants T > 1
    (the NLL of the tracks' mean probabilities would instead run to the smallest T, rewarding vote shares)."""
    right, wrong = torch.tensor([0.9, 0.05, 0.05]), torch.tensor([0.05, 0.9, 0.05])
    tracks = [torch.stack([right, right, wrong]).roll(k, -1) for k in range(3)] * 4
    t = fit_temperature(tracks, [0, 1, 2] * 4)
    assert 1.2 < t < 5 and scale(right[None], t)[0, 0] == pytest.approx(2 / 3, abs=0.03)
    assert fit_temperature([], []) == 1.0  # nothing to fit: no scaling


def test_threshold_and_warnings():
    assert ood_threshold([0.9, 0.8, 0.95] * 50, [0.1, 0.12, 0.2] * 50) == pytest.approx(np.sqrt(0.2 * 0.8), abs=1e-3)
    assert ood_threshold([0.9, 0.5, 0.95] * 50, [0.6] * 10) == 0.5  # no gap: the lowest music score flags nothing
    music = np.linspace(0.6, 0.99, 40)
    threshold = ood_threshold(list(music), [0.1] * 40)  # a small validation set: at most 1 % of it (none) flagged
    assert np.mean(music < threshold) == 0 and threshold > 0.1
    assert ood_threshold([0.12345, 0.9] * 20, []) == 0.1234  # rounded down: the lowest music score is not flagged
    uniform = torch.full((6, 4), 0.25)
    confident = torch.tensor([[0.9, 0.05, 0.03, 0.02]] * 6)
    split = torch.tensor([[0.9, 0.05, 0.03, 0.02], [0.05, 0.9, 0.03, 0.02]] * 3)  # sure of each window, not of the track
    assert [w["code"] for w in warnings_for(uniform, uniform.mean(0), 0.5)] == ["not_music"]
    assert warnings_for(confident, confident.mean(0), 0.5) == []
    assert [w["code"] for w in warnings_for(split, split.mean(0), 0.5)] == ["low_confidence"]
    assert warnings_for(uniform, uniform.mean(0), None) == []
    close = torch.tensor([[0.734, 0.133, 0.133]])
    [w] = warnings_for(close, close.mean(0), 0.7346)
    assert w["code"] == "not_music" and "(music score 0.734 < 0.735)" in w["message"]  # was "0.73 < 0.73": saying nothing
    assert track_score(split) == pytest.approx(0.9)


def test_bundle_carries_calibration_and_inference_applies_it(tmp_path):
    config = tiny_config()
    model = random_model(config)
    plain = save_bundle(tmp_path / "plain", model, config)
    calibrated = save_bundle(tmp_path / "calibrated", model, BundleConfig(**{**config.__dict__, "calibration": {"temperature": 4.0, "ood_threshold": 0.99}}))
    assert read_config(calibrated).calibration == {"temperature": 4.0, "ood_threshold": 0.99}
    assert "calibration" not in json.loads((plain / "config.json").read_text())  # older readers see the same file as before
    clip = write_audio(tmp_path / "clip.wav", music_like(5.0, 22050), 22050)
    a = Classifier.from_bundle(plain, device="cpu").classify(clip)
    b = Classifier.from_bundle(calibrated, device="cpu").classify(clip)
    assert [w.label for w in a.timeline] == [w.label for w in b.timeline]  # each window's top genre is unchanged
    window = next(w for w in a.timeline if not w.silent)
    expected = scale(torch.tensor([list(window.probabilities.values())]), 4.0)[0]
    got = next(w for w in b.timeline if not w.silent).probabilities
    assert list(got.values()) == pytest.approx(expected.tolist(), abs=1e-4)  # from probabilities rounded to 6 places
    assert {w["code"] for w in b.warnings} & {"not_music", "low_confidence"}  # a random model is never 99 % sure
    assert not {w["code"] for w in a.warnings} & {"not_music", "low_confidence"}  # no threshold: no such warning

    for bad in ({"temperature": 0}, {"temperature": float("nan")}, {"temperature": 1.0, "ood_threshold": 2}, {"temperature": "1"}, []):
        raw = json.loads((calibrated / "config.json").read_text())
        raw["calibration"] = bad
        (calibrated / "config.json").write_text(json.dumps(raw))
        with pytest.raises(BundleError, match="calibration"):
            read_config(calibrated)
    write_config(calibrated, config)


def test_figures_draw_every_script(tmp_path):
    """Labels are the bundle's, in any script: the confusion matrix and the reliability diagram draw 流行 with a
    font that has it (DejaVu Sans alone drew boxes), and name no font that is not installed."""
    import warnings

    from acousticsense.calibrate import plot_reliability
    from acousticsense.evaluate import plot_confusion
    from acousticsense.plots import font_family

    if font_family() == ("DejaVu Sans",):
        pytest.skip("no CJK font installed (make setup installs Debian's fonts-droid-fallback)")
    labels = ["流行", "摇滚", "Jazz", "Ünïcode"]
    level = {"confusion": {"labels": labels, "matrix": np.eye(4, dtype=int).tolist()}, "accuracy": 1.0, "macro_f1": 1.0, "n": 4}
    report = {"track": level, "window": level, "model_id": "模型", "data": {"source": "民乐"}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_confusion(report, tmp_path / "confusion.png")
        plot_reliability(reliability(np.array([0.9, 0.6]), np.array([1, 0])), 0.1, tmp_path / "reliability.png", title="模型: ")
    assert not [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert (tmp_path / "confusion.png").stat().st_size > 10_000 and (tmp_path / "reliability.png").stat().st_size > 5_000
