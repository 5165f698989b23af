"""Classifier: windows -> probabilities -> track result, batching, silence, short clips, the CLI."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from acousticsense.audio import AudioError
from acousticsense.inference import Classifier, Failure, aggregate
from conftest import TINY_LABELS, music_like, write_audio

SR = 22050


@pytest.fixture(scope="module")
def clf(tiny_bundle):
    return Classifier.from_bundle(tiny_bundle, device="cpu")


def test_result_schema_and_probabilities(clf, clip_mp3):
    r = clf.classify(clip_mp3, top_k=3)
    assert r.source == str(clip_mp3) and r.model_id == "tiny-test"
    assert abs(r.duration - 7.0) < 0.1
    assert len(r.top_k) == 3 and [g.label for g in r.top_k][0] == r.label
    probs = [g.probability for g in r.top_k]
    assert probs == sorted(probs, reverse=True)
    # 7 s, 2 s windows every 1 s: starts 0..5, no extra window needed (5 + 2 = 7)
    assert [w.start for w in r.timeline] == [0, 1, 2, 3, 4, 5]
    assert all(abs(sum(w.probabilities.values()) - 1) < 1e-4 for w in r.timeline)
    mean = np.mean([[w.probabilities[l] for l in TINY_LABELS] for w in r.timeline], axis=0)
    assert r.top_k[0].probability == pytest.approx(mean.max(), abs=1e-5)
    assert r.warnings == []
    json.dumps(r.to_dict())


def test_inputs_agree_path_bytes_array(clf, clip_mp3):
    from acousticsense.audio import load_audio

    a = clf.classify(clip_mp3).top_k
    assert clf.classify(clip_mp3.read_bytes()).top_k == a
    assert clf.classify(load_audio(clip_mp3, SR).samples).top_k == a


def test_classify_many_batches_across_files_and_keeps_order(tiny_bundle, tmp_path, clip_mp3):
    files = [write_audio(tmp_path / f"{i}.wav", music_like(2.5 + i, SR, seed=i), SR) for i in range(4)]
    files.insert(2, tmp_path / "missing.wav")
    single = Classifier.from_bundle(tiny_bundle, device="cpu")
    batched = Classifier.from_bundle(tiny_bundle, device="cpu", batch_size=5)
    results = list(batched.classify_many(files))
    assert [r.source for r in results] == [str(f) for f in files]
    assert isinstance(results[2], Failure) and "missing.wav: file not found" in results[2].error
    for f, r in zip(files, results):
        if not isinstance(r, Failure):
            ref = single.classify(f)
            assert [g.label for g in r.top_k] == [g.label for g in ref.top_k]
            assert np.allclose([g.probability for g in r.top_k], [g.probability for g in ref.top_k], atol=1e-5)


def test_short_clip_is_classified_with_a_warning(clf):
    r = clf.classify(music_like(0.2, SR)[0])
    assert len(r.timeline) == 1 and len(r.top_k) == 4 and not r.silent
    assert r.timeline[0].end == pytest.approx(0.2)
    assert [w["code"] for w in r.warnings] == ["short_audio"]
    assert "0.20 s" in r.warnings[0]["message"]


def test_silence(clf):
    r = clf.classify(np.zeros(5 * SR, np.float32))
    assert r.silent and r.top_k == [] and r.label is None
    assert all(w.silent and w.label is None for w in r.timeline)
    assert "silent" in [w["code"] for w in r.warnings]


def test_silent_windows_are_left_out_of_the_track_result(clf):
    music = music_like(4.0, SR)[0]
    track = np.concatenate([music, np.zeros(4 * SR, np.float32)])
    r = clf.classify(track)
    silent = [w.silent for w in r.timeline]
    assert not silent[0] and silent[-1]
    loud = [w for w in r.timeline if not w.silent]
    mean = np.mean([[w.probabilities[l] for l in TINY_LABELS] for w in loud], axis=0)
    assert r.top_k[0].probability == pytest.approx(mean.max(), abs=1e-5)
    assert "silent_windows" in [w["code"] for w in r.warnings]


def test_window_and_hop_override(clf, clip_mp3):
    r = clf.classify(clip_mp3, window=3.0, hop=3.0)
    assert [(w.start, w.end) for w in r.timeline] == [(0, 3), (3, 6), (pytest.approx(4.0, abs=0.05), pytest.approx(7.0, abs=0.05))]


def test_aggregation_rules():
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0]])
    assert torch.allclose(aggregate(probs, "mean"), torch.tensor([0.4, 0.6]))
    votes = aggregate(probs, "vote")
    assert votes.argmax() == 0 and votes[0] == pytest.approx(2 / 3, abs=1e-5)
    with pytest.raises(ValueError):
        aggregate(probs, "median")


def test_bad_audio_raises_audio_error(clf, tmp_path):
    with pytest.raises(AudioError, match="nope.ogg: file not found"):
        clf.classify(tmp_path / "nope.ogg")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "acousticsense.cli", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_cli_predict_json(tiny_bundle, clip_mp3):
    out = _cli("predict", clip_mp3, "--model", tiny_bundle, "--json", "--top-k", "3")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [set(g) for g in doc["top_k"]] == [{"label", "probability"}] * 3
    assert len(doc["timeline"]) == 6 and doc["warnings"] == [] and doc["model_id"] == "tiny-test"


def test_cli_failures_are_one_line_and_others_still_run(tiny_bundle, clip_mp3, tmp_path):
    text = tmp_path / "readme.mp3"
    text.write_text("not audio")
    out = _cli("predict", text, clip_mp3, tmp_path / "gone.wav", "--model", tiny_bundle, "--csv")
    assert out.returncode == 1
    errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 2 and "readme.mp3: not a readable audio file" in errors[0] and "gone.wav: file not found" in errors[1]
    assert "Traceback" not in out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["rank"] for r in rows if r["source"] == str(clip_mp3)] == ["1", "2", "3", "4"]
    assert rows[0]["error"].startswith(str(text))


def test_cli_table_and_bad_model(tiny_bundle, clip_mp3, tmp_path):
    out = _cli("predict", clip_mp3, "--model", tiny_bundle)
    assert out.returncode == 0 and "probability" in out.stdout
    bad = _cli("predict", clip_mp3, "--model", tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing config.json" in bad.stderr
    info = _cli("info", tiny_bundle)
    assert info.returncode == 0 and json.loads(info.stdout)["labels"] == TINY_LABELS
