"""Classifier: windows -> probabilities -> track result, batching, silence, short clips, the CLI."""

import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future

import numpy as np
import pytest
import torch
from conftest import TINY_LABELS, music_like, random_model, tiny_config, write_audio

from acousticsense import decoding, options
from acousticsense.audio import load_audio
from acousticsense.bundle import Bundle, load_bundle
from acousticsense.config import Options, Preprocessing
from acousticsense.errors import AudioError, ParameterError
from acousticsense.features import db_to_image, power_to_db
from acousticsense.inference import Classifier, Failure, aggregate
from acousticsense.options import spelled_as

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
    assert [w["code"] for w in r.warnings] == ["short_audio", "low_confidence"]  # under a third of the window: not trusted
    assert "0.20 s" in r.warnings[0]["message"]
    assert r.warnings[1]["message"] == "only 0.20 s of audio, under a third of the 2 s window: too little to trust the genre"
    assert [w["code"] for w in clf.classify(music_like(1.0, SR)[0]).warnings] == ["short_audio"]  # half a window: filled, not flagged


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


def test_hop_is_free_but_the_bundle_owns_the_window(clf, clip_mp3):
    r = clf.classify(clip_mp3, hop=3.0)  # a hop longer than the window: allowed, and the audio left out is said
    assert [(w.start, w.end) for w in r.timeline] == [(0, 2), (3, 5), (pytest.approx(5.0, abs=0.05), pytest.approx(7.0, abs=0.05))]
    assert r.warnings == [{"code": "gaps", "message": "the hop (3 s) is longer than the window (2 s): 14% of the track falls between windows and is not analysed"}]
    whole = clf.classify(music_like(3.0, SR)[0], hop=3600)  # the window aligned with the end leaves nothing out: no warning
    assert [(w.start, w.end) for w in whole.timeline] == [(0, 2), (1, 3)] and whole.warnings == []
    assert clf.classify(clip_mp3, hop=2.0).warnings == [] and clf.classify(clip_mp3, window=2.0).warnings == []  # the model's own window is fine
    with pytest.raises(ParameterError, match="window 3 s differs from the 2 s this model was trained on"):
        clf.classify(clip_mp3, window=3.0)
    forced = clf.classify(clip_mp3, window=3.0, hop=3.0, override_window=True)
    assert [(w.start, w.end) for w in forced.timeline] == [(0, 3), (3, 6), (pytest.approx(4.0, abs=0.05), pytest.approx(7.0, abs=0.05))]
    assert [w["code"] for w in forced.warnings] == ["window_override"]
    short = clf.classify(clip_mp3, window=0.5, override_window=True)  # shorter than the model's hop (1 s): none skipped
    assert [w.start for w in short.timeline][:4] == [0.0, 0.5, 1.0, 1.5] and [w["code"] for w in short.warnings] == ["window_override"]
    assert "every 0.5 s so that none is skipped" in short.warnings[0]["message"]


BAD_OPTIONS = [
    ({"window": float("inf")}, "window must be a number from 0.5 to 60 s"),
    ({"window": 1e-6, "override_window": True}, "window must be"),
    ({"window": 1e9, "override_window": True}, "window must be"),
    ({"hop": float("inf")}, "hop must be a number from 0.1 to 3600 s"),
    ({"hop": 0.00001}, "hop must be"),
    ({"hop": float("nan")}, "hop must be"),
    ({"max_seconds": float("inf")}, "max_seconds must be a number from 1 to 14400 s"),
    ({"max_seconds": None}, "max_seconds must be"),
    ({"top_k": 0}, "top_k must be a whole number"),
    ({"top_k": 2.5}, "top_k must be a whole number"),
    ({"window": 3.0, "override_window": "no"}, "override_window must be True or False"),
]


@pytest.mark.parametrize("options,message", BAD_OPTIONS)
def test_options_out_of_range_are_refused_before_any_work(clf, options, message):
    with pytest.raises(ParameterError, match=message):
        clf.classify(np.zeros(10, np.float32), **options)
    with pytest.raises(ParameterError, match=message):
        next(clf.classify_many([], **options))


def test_a_genre_is_matched_in_any_case_and_without_punctuation():
    labels = ["Hip-Hop", "R&B", "Rock", "Jazz"]
    assert [spelled_as(x, labels) for x in ("hiphop", "HIP-HOP", "r&b", "rb", "jazz", "Polka")] == ["Hip-Hop", "Hip-Hop", "R&B", "R&B", "Jazz", None]
    assert spelled_as("ab", ["A-B", "AB!"]) is None  # two labels without punctuation: neither is guessed


def test_window_cap_bounds_the_work_of_one_track(clf, monkeypatch):
    monkeypatch.setattr(options, "MAX_WINDOWS", 10)
    ok = clf.classify(music_like(11.0, SR)[0], hop=1.0)  # (11 - 2) / 1 + 1 = 10 windows
    assert len(ok.timeline) == 10
    with pytest.raises(ParameterError, match="<array>: 11 s with a hop of 0.5 s makes 19 windows, more than the 10 analysed per track; use a hop of at least 1 s$"):
        clf.classify(music_like(11.0, SR)[0], hop=0.5)


def test_top_k_beyond_the_labels_gives_every_label(clf):
    assert clf.sample_rate == SR == clf.config.preprocessing.sample_rate  # the rate an array must be at
    assert len(clf.classify(music_like(3.0, SR)[0], top_k=100).top_k) == len(TINY_LABELS)


def test_one_failing_file_never_costs_the_others(clf, clip_mp3, monkeypatch):
    real = decoding.load_audio

    def flaky(source, *args):
        if str(source).endswith("boom.mp3"):
            raise RuntimeError("a bug\nover two lines")
        return real(source, *args)

    monkeypatch.setattr(decoding, "load_audio", flaky)
    results = list(clf.classify_many([clip_mp3, "boom.mp3", clip_mp3]))
    assert [type(r).__name__ for r in results] == ["Result", "Failure", "Result"]
    assert results[1].error == "boom.mp3: could not be analysed (RuntimeError: a bug over two lines)"
    from acousticsense.results import UNFORESEEN_CHARS, one_line

    long = one_line("x.mp3", RuntimeError("page " * 10_000))  # a library's error can run to pages: one line of bounded length
    assert long.startswith("x.mp3: could not be analysed (RuntimeError: page page") and long.endswith("...)")
    assert len(long) == len("x.mp3: could not be analysed ()") + UNFORESEEN_CHARS


def test_non_finite_model_output_is_a_failure_not_nan(clf, clip_mp3, monkeypatch):
    monkeypatch.setattr(clf, "model", lambda images: torch.full((len(images), len(TINY_LABELS)), float("nan")))
    [failure] = list(clf.classify_many([clip_mp3]))
    assert isinstance(failure, Failure) and "non-finite probabilities" in failure.error


def test_aggregation_rules():
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0]])
    assert torch.allclose(aggregate(probs, "mean"), torch.tensor([0.4, 0.6]))
    votes = aggregate(probs, "vote")
    assert votes.argmax() == 0 and votes[0] == pytest.approx(2 / 3, abs=1e-5)
    with pytest.raises(ParameterError, match="unknown aggregation .median."):
        aggregate(probs, "median")


def test_bad_audio_raises_audio_error(clf, tmp_path):
    with pytest.raises(AudioError, match="nope.ogg: file not found"):
        clf.classify(tmp_path / "nope.ogg")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "acousticsense", *map(str, args)], capture_output=True, text=True, timeout=120)


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


def test_cli_a_model_that_fails_to_load_writes_no_output(tiny_bundle, clip_mp3, tmp_path):
    """`--csv` had written its header before the model was refused (and `--json` of several files "[]")."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    for fmt in ("--csv", "--json"):
        out = _cli("predict", clip_mp3, clip_mp3, "--model", broken, fmt)
        assert out.returncode == 2 and out.stdout == "" and out.stderr.startswith("error:") and "Traceback" not in out.stderr, out


def test_cli_a_model_that_fails_in_torch_writes_no_output(tiny_bundle, clip_mp3, monkeypatch):
    """A RuntimeError while the model loads (CUDA out of memory) still printed "[]" and named "device None"."""
    from typer.testing import CliRunner

    from acousticsense.cli import app

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(Classifier, "from_bundle", out_of_memory)
    for fmt in ("--json", "--csv"):
        ran = CliRunner().invoke(app, ["predict", str(clip_mp3), str(clip_mp3), "--model", str(tiny_bundle), fmt])
        assert ran.exit_code == 2 and ran.stdout == "", ran.output
        assert ran.stderr == "error: cannot load the model on the default device: CUDA error: out of memory\n"


def test_cli_predict_of_a_folder_takes_its_audio_files(tiny_bundle, clip_mp3, tmp_path):
    """A folder stands for its audio files (by extension, sorted, sub-folders too, as `scan` walks); one with none is an error."""
    album = tmp_path / "album"
    (album / "disc2").mkdir(parents=True)
    for name in ("b.mp3", "a.mp3", "disc2/c.mp3"):
        (album / name).write_bytes(clip_mp3.read_bytes())
    (album / "cover.jpg").write_bytes(b"\xff\xd8 not audio")
    out = _cli("predict", album, "--model", tiny_bundle, "--json")
    assert out.returncode == 0, out.stderr
    assert [d["source"] for d in json.loads(out.stdout)] == [str(album / n) for n in ("a.mp3", "b.mp3", "disc2/c.mp3")]
    (tmp_path / "empty").mkdir()  # an input of its own, which fails (as a file would): the others are still answered
    bad = _cli("predict", tmp_path / "empty", album / "a.mp3", "--model", tiny_bundle, "--json")
    assert bad.returncode == 1 and bad.stderr.startswith(f"error: {tmp_path / 'empty'}: a folder with no audio files in it (by extension: ")
    assert bad.stderr.count("\n") == 1  # one line: the reason, not also "is a directory"
    assert [d.get("error", "ok")[:40] for d in json.loads(bad.stdout)] == [f"{tmp_path / 'empty'}: a folder with no audio"[:40], "ok"]


def test_cli_table_and_bad_model(tiny_bundle, clip_mp3, tmp_path):
    out = _cli("predict", clip_mp3, "--model", tiny_bundle)
    assert out.returncode == 0 and "probability" in out.stdout
    bad = _cli("predict", clip_mp3, "--model", tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing config.json" in bad.stderr
    info = _cli("info", tiny_bundle)
    assert info.returncode == 0 and json.loads(info.stdout)["labels"] == TINY_LABELS
    cut = shutil.copytree(tiny_bundle, tmp_path / "cut")  # weights cut short: info says so (it exited 0), as predict does
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:4000])
    for command in (("info", cut), ("predict", clip_mp3, "--model", cut)):
        bad = _cli(*command)
        assert bad.returncode == 2 and bad.stderr.startswith(f"error: {cut / 'model.safetensors'}: unreadable weights (Error while deserializing header"), bad.stderr
    fewer = shutil.copytree(tiny_bundle, tmp_path / "fewer")  # labels that do not fit the head: info says so (it exited 0), as predict does
    config = json.loads((fewer / "config.json").read_text())
    (fewer / "config.json").write_text(json.dumps(config | {"labels": config["labels"][:-1]}))
    bad = _cli("info", fewer)
    assert bad.returncode == 2 and bad.stderr == f"error: {fewer / 'model.safetensors'}: its head gives {len(TINY_LABELS)} outputs, but config.json lists {len(TINY_LABELS) - 1} labels\n"
    (fewer / "config.json").write_text(json.dumps(config | {"architecture": config["architecture"] | {"name": "vit_mini_16"}}))  # 6 layers, not 12
    bad = _cli("info", fewer)
    assert bad.returncode == 2 and bad.stderr == f"error: {fewer / 'model.safetensors'}: 12 encoder layers of width 192, but config.json names vit_mini_16 (6 of 192)\n"
    closed = subprocess.run([sys.executable, "-m", "acousticsense.cli", "predict", str(clip_mp3), "--json", "--model", str(tiny_bundle)],
                            stderr=subprocess.PIPE, text=True, timeout=120, preexec_fn=lambda: os.close(1))  # started with stdout closed (>&-)
    assert closed.returncode == 1 and closed.stderr == "error: cannot write the output (standard output is closed)\n"  # was an AttributeError
    for args, message in (((clip_mp3, "--bogus"), "No such option: --bogus"), (("frobnicate",), "No such command 'frobnicate'.")):
        bad = _cli(*args) if args[0] == "frobnicate" else _cli("predict", *args)  # were 5-line boxed usage panels
        assert bad.returncode == 2 and bad.stderr == f"error: {message}\n", bad.stderr
    bad = _cli("predict", clip_mp3, "--batch-size", "0")  # a value typer checks: one line as well, not a boxed usage text
    assert bad.returncode == 2 and bad.stderr == "error: Invalid value for '--batch-size': 0 is not in the range 1<=x<=4096.\n"


def test_precision_defaults_to_fp32_on_the_cpu_and_bf16_stays_close(tiny_bundle, clip_mp3):
    clf = Classifier.from_bundle(tiny_bundle, device="cpu")
    assert clf.precision == "fp32"
    fp32 = {g.label: g.probability for g in clf.classify(clip_mp3, top_k=4).top_k}
    bf16 = Classifier.from_bundle(tiny_bundle, device="cpu", precision="bf16").classify(clip_mp3, top_k=4)
    assert max(abs(g.probability - fp32[g.label]) for g in bf16.top_k) < 0.02
    with pytest.raises(ParameterError, match="precision must be one of fp32, bf16, not 'fp16'"):
        Classifier.from_bundle(tiny_bundle, device="cpu", precision="fp16")


def test_a_vit_with_even_heads_runs_fused_with_the_models_own_numbers(clip_mp3):
    """forward() runs ViT-S/B's encoder blocks as PyTorch's fused layer (model.FusedInference): same probabilities
    as the model itself, embeddings still pooled, and the bf16 copy leaves the model's weights as they were."""
    config = dataclasses.replace(tiny_config(), architecture={"name": "vit_s_16", "image_size": 32, "head": {"type": "linear"}})
    model = random_model(config)
    clf = Classifier(Bundle(config, model), "cpu")
    features = clf.preprocess(clip_mp3)
    images = db_to_image(power_to_db(torch.stack(list(features.windows())), config.preprocessing), config.preprocessing)
    with torch.inference_mode():
        want = model(images).softmax(-1)
    with torch.profiler.profile() as prof:
        [(got, pooled)] = clf.forward([features], embed=True)
    assert "aten::_transformer_encoder_layer_fwd" in {e.key for e in prof.key_averages()}
    assert want.std() > 0.01 and (got - want).abs().max() < 1e-5 and pooled.shape == (len(want), 384)
    [half] = Classifier(Bundle(config, model), "cpu", precision="bf16").forward([features])
    assert (half - want).abs().max() < 0.05 and all(p.dtype == torch.float32 for p in model.parameters())


def test_a_decoder_crash_in_a_worker_costs_only_its_file(tiny_bundle, clip_mp3, tmp_path, monkeypatch):
    """Files are decoded in worker processes; one that kills its worker (as an FFmpeg crash would) is its own Failure."""
    real = decoding.load_audio

    def crashing(source, *args):
        if str(source).endswith("bad.mp3"):
            os._exit(3)
        return real(source, *args)

    monkeypatch.setattr(decoding, "load_audio", crashing)
    paths = [tmp_path / f"{name}.mp3" for name in ("a", "b", "bad", *"cdefghij")]  # more files than fit in flight
    for path in paths:
        path.write_bytes(clip_mp3.read_bytes())
    clf = Classifier.from_bundle(tiny_bundle, device="cpu")
    results = list(clf.classify_many(paths))
    assert [type(r).__name__ for r in results] == ["Result"] * 2 + ["Failure"] + ["Result"] * 8
    assert results[2].error.startswith(f"{paths[2]}: decoding crashed")
    assert all(r.top_k == clf.classify(clip_mp3).top_k for r in results if r is not results[2])


def test_a_file_its_broken_pool_cancelled_unstarted_is_decoded_again(clip_mp3):
    """The pool a crash broke is dropped, which cancels the files it had not started: one raised CancelledError
    out of classify_many (a race the test above met once in CI)."""
    unstarted = Future()
    unstarted.cancel()
    with decoding.DecodeAhead([], SR, 30.0, "ffmpeg") as ahead:
        ahead._ahead.append((str(clip_mp3), clip_mp3, unstarted))
        name, audio = next(ahead)
    assert name == str(clip_mp3) and audio.samples.shape == load_audio(clip_mp3, SR).samples.shape


def test_classify_many_checks_its_arguments_at_the_call(tiny_bundle, clip_mp3):
    clf = Classifier.from_bundle(tiny_bundle, device="cpu")
    with pytest.raises(ParameterError, match="top_k"):
        clf.classify_many([clip_mp3], top_k=0)  # not only when iterated
    with pytest.raises(ParameterError, match="for one source use classify"):
        clf.classify_many(str(clip_mp3))
    features = clf.preprocess(clip_mp3)
    with pytest.raises(ParameterError, match=r"postprocess needs \(6, 4\) probabilities"):
        clf.postprocess(features, torch.zeros(3, 4))
    probs = clf.forward([features])[0]
    expected = clf.postprocess(features, probs).top_k
    assert clf.postprocess(features, probs.numpy()).top_k == clf.postprocess(features, probs.double().tolist()).top_k == expected
    for wrong in (-probs, probs * 2):
        with pytest.raises(ParameterError, match="postprocess needs probabilities \\(each row at least 0 and summing to 1"):
            clf.postprocess(features, wrong)
    with pytest.raises(ParameterError, match="postprocess needs probabilities as a tensor or array"):
        clf.postprocess(features, "0.5")
    for sources in (None, 5):
        with pytest.raises(ParameterError, match="classify_many takes a list"):
            clf.classify_many(sources)
    with pytest.raises(ParameterError, match="forward\\(\\) takes a list of Features"):
        clf.forward(f for f in [features])
    for pooled in (torch.full((6, 192), float("nan")), torch.ones(7, 5), "x"):
        with pytest.raises(ParameterError, match=r"postprocess needs pooled as finite \(windows, dim\)"):
            clf.postprocess(features, probs, pooled)
    other = Options(Preprocessing(sample_rate=16000, window_seconds=2.0, hop_seconds=1.0, image_size=32), 3, 10.0)
    for opts, message in ((other, "made for other preprocessing than this model's"), ({"top_k": 3}, "opts must be what Classifier.options\\(\\) returns, not dict")):
        with pytest.raises(ParameterError, match=message):
            clf.preprocess(clip_mp3, opts)
    stranger = Classifier.from_bundle(tiny_bundle, device="cpu")
    stranger.config = dataclasses.replace(stranger.config, preprocessing=other.pre)
    with pytest.raises(ParameterError, match="made for other preprocessing than this model's"):
        stranger.forward([features])
    with pytest.raises(ParameterError, match="forward\\(\\) takes a list of Features"):
        clf.forward(features)
    with pytest.raises(ParameterError, match="forward\\(\\) takes a list of Features"):
        clf.forward([None])
    with pytest.raises(ParameterError, match="no CUDA GPU is available"):
        if torch.cuda.is_available():
            raise ParameterError("no CUDA GPU is available (skipped: this machine has one)")
        Classifier.from_bundle(tiny_bundle, device="cuda")


@pytest.mark.parametrize("batch_size", [-1, 0, 1.5, None, "64", True, 10**6])
def test_a_batch_size_that_is_not_one_is_refused_up_front(tiny_bundle, batch_size):
    """-1 made forward() loop forever, 0 failed inside torch.cat at the first file."""
    with pytest.raises(ParameterError, match=r"batch_size must be a whole number from 1 to 4,096"):
        Classifier.from_bundle(tiny_bundle, device="cpu", batch_size=batch_size)


@pytest.mark.parametrize("device", ["mps", "meta", "bogus", 3.5, "cuda:99"])
def test_a_device_that_is_not_here_is_a_parameter_error(tiny_bundle, device):
    with pytest.raises(ParameterError, match="device"):
        Classifier.from_bundle(tiny_bundle, device=device)
    with pytest.raises(ParameterError, match="device"):
        load_bundle(tiny_bundle, device=device)


def test_a_classifier_is_made_from_a_bundle_not_a_path(tiny_bundle):
    with pytest.raises(ParameterError, match=r"Classifier takes a Bundle .* not str; for a folder use Classifier.from_bundle\(path\)"):
        Classifier(str(tiny_bundle))


def test_decoding_can_start_before_torch_and_the_model(tiny_bundle, clip_mp3):
    """predict reads the bundle's config and starts decoding before torch loads: the workers never carry torch,
    the first file goes to them too, and a classifier refuses a decoding started with other settings."""
    code = (
        "import os, sys; from acousticsense.config import read_config; from acousticsense.decoding import DecodeAhead; "
        f"pre = read_config({str(tiny_bundle)!r}).preprocessing; "
        f"d = DecodeAhead([{str(clip_mp3)!r}], pre.sample_rate, 30.0, pre.resampler, first_here=False); "
        "assert 'torch' not in sys.modules; from acousticsense.inference import Classifier; "
        "[r] = Classifier.from_bundle(sys.argv[1], device='cpu').classify_many(d, max_seconds=30.0); print(r.label)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tiny_bundle)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    clf = Classifier.from_bundle(tiny_bundle, device="cpu")
    assert out.stdout.strip() == clf.classify(clip_mp3).label
    with decoding.DecodeAhead([clip_mp3, clip_mp3], clf.config.preprocessing.sample_rate, 30.0, "ffmpeg", first_here=False) as early:
        assert all(d is not None for _, _, d in early._ahead)  # both in worker processes already
        with pytest.raises(ParameterError, match=r"decoded as .* \(22050, 30.0, 'ffmpeg'\), this model needs \(22050, 1800.0, 'ffmpeg'\)"):
            clf.classify_many(early)
    lone = decoding.DecodeAhead([clip_mp3], 22050, 30.0, "ffmpeg")
    assert [d for _, _, d in lone._ahead] == [None] and lone._pool is None  # one file alone: decoded here, no pool
    [(name, audio)] = list(lone)
    assert name == str(clip_mp3) and audio.duration > 0


def test_ctrl_c_keeps_the_results_written_so_far(tiny_bundle, clip_mp3, tmp_path):
    """predict writes each result as it comes: interrupted, its JSON array is closed and valid, and nothing is left running."""
    import signal
    import time

    files = [str(clip_mp3)] * 40
    proc = subprocess.Popen(
        [sys.executable, "-m", "acousticsense.cli", "predict", *files, "--model", str(tiny_bundle), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = proc.stdout.readline()  # "[": results are on their way
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.stdout.read(), proc.stderr.read()  # to the end: the process exits
    proc.wait(timeout=60)
    docs = json.loads(first + rest)
    assert 1 <= len(docs) < 40 and all(d["source"] == str(clip_mp3) for d in docs)
    assert "Traceback" not in err and proc.returncode != 0
    leftovers = subprocess.run(["pgrep", "-f", f"acousticsense.cli predict {clip_mp3}"], capture_output=True, text=True).stdout
    assert not leftovers.strip()


def test_a_ctrl_c_after_the_command_ended_keeps_its_exit_code(tiny_bundle):
    """A Ctrl-C while the interpreter tore down (unloading torch) made a finished command exit 130, saying nothing."""
    code = ("import os, signal, sys, time; from acousticsense import cli\n"
            "sys.argv = ['acousticsense', *sys.argv[1:]]\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    os.kill(os.getpid(), signal.SIGINT); time.sleep(30)\n")  # fmt: skip
    for args, status in ((("info", str(tiny_bundle)), 0), (("info", "/no/such/bundle"), 2)):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == status and "Traceback" not in out.stderr, out.stderr


def test_ctrl_c_while_the_model_loads_still_closes_the_json_array(tiny_bundle, clip_mp3):
    """Ctrl-C during the seconds torch takes to load left stdout empty: not JSON."""
    code = ("import sys; from acousticsense import cli\n"
            "def interrupted(*args, **kwargs): raise KeyboardInterrupt\n"
            "cli.load_classifier = interrupted; sys.argv = ['acousticsense', *sys.argv[1:]]; cli.main()")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, "predict", str(clip_mp3), str(clip_mp3), "--model", str(tiny_bundle), "--json"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert json.loads(out.stdout) == [] and out.returncode == 130 and "Traceback" not in out.stderr


def test_many_file_commands_let_the_decode_workers_have_the_cores(tiny_bundle, clip_mp3, tmp_path):
    """`predict` of several files and `scan` ask torch's OpenMP threads to sleep, not spin, between operations (set
    before torch loads: it reads the variable once); `predict` of one file does not, and a value the user set stays."""
    code = ("import atexit, os, sys; from acousticsense import cli; from acousticsense.cli import main; "
            "cli.done_cleanly = lambda: None; "  # the normal exit, which runs atexit hooks
            "atexit.register(lambda: print('OMP', os.environ.get('OMP_WAIT_POLICY'), file=sys.stderr)); "
            "sys.argv = ['acousticsense', *sys.argv[1:]]; main()")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}

    def policy(*args, **extra):
        out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env={**env, **extra}, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stderr.split("OMP ")[-1].strip()

    assert policy("predict", clip_mp3, clip_mp3, "--model", tiny_bundle, "--json") == "PASSIVE"
    assert policy("predict", clip_mp3, "--model", tiny_bundle, "--json") == "None"
    assert policy("predict", clip_mp3, clip_mp3, "--model", tiny_bundle, "--json", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.mp3").write_bytes(clip_mp3.read_bytes())
    assert policy("scan", tmp_path / "lib", "--db", tmp_path / "lib.db", "--model", tiny_bundle, "--json") == "PASSIVE"


def test_decoding_left_by_an_exception_stops_at_once(clip_mp3, monkeypatch):
    """Ctrl-C or a refused option while files decode: the workers drop their files instead of finishing them."""
    import time

    def endless(*args):  # a very long file (forked workers inherit this)
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(decoding, "load_audio", endless)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with decoding.DecodeAhead([clip_mp3] * 4, SR, 30.0, "ffmpeg", first_here=False) as ahead:
            pending = [f for _, _, f in ahead._ahead]
            time.sleep(0.5)
            raise KeyboardInterrupt
    assert time.monotonic() - start < 10 and ahead.closed
    assert all("decoding stopped" in f.result(timeout=0).error for f in pending)
    with pytest.raises(ParameterError, match="resampler must be one of ffmpeg, soxr_hq, not 'bogus'"):
        decoding.DecodeAhead([clip_mp3], SR, 30.0, "bogus")


def test_after_cuda_the_decoding_workers_come_from_a_fork_server(clip_mp3, monkeypatch):
    """A process that has used CUDA never forks its decoding workers (CUDA's threads and locks do not survive a
    fork): they come from a fork server, decode the same samples, and still stop at once when asked."""
    monkeypatch.setattr(decoding, "cuda_initialised", lambda: True)
    here = decoding.load_audio(clip_mp3, SR, 30.0, "ffmpeg")
    with decoding.DecodeAhead([clip_mp3] * 3, SR, 30.0, "ffmpeg", first_here=False) as ahead:
        assert ahead._pool._mp_context.get_start_method() == "forkserver"
        decoded = [audio for _, audio in ahead]
    assert all(np.array_equal(a.samples, here.samples) for a in decoded)
    with decoding.DecodeAhead([clip_mp3] * 3, SR, 30.0, "ffmpeg", first_here=False) as ahead:
        next(ahead)
        pids = [p for p in ahead._pids if p]
        parents = {int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) for p in pids}
        assert pids and os.getpid() not in parents  # forked by the server, not by this process
        ahead.close(kill=True)
    assert ahead._pool is None


def test_the_table_shows_labels_and_warnings_as_plain_text(capsys):
    """A label or message with square brackets is printed as written, never read as rich markup (it crashed)."""
    from acousticsense.cli import _print_table
    from acousticsense.results import Genre, Result

    _print_table(Result("a.wav", "m", 8.0, [Genre("Drum [/] Bass", 0.5), Genre("Nu [metal]", 0.4)], [], warnings=[{"code": "x", "message": "[bold]y[/]"}]))
    out = capsys.readouterr().out
    assert "Drum [/] Bass" in out and "Nu [metal]" in out and "x: [bold]y[/]" in out
    _print_table(Result("a\nb\x1b[2J.wav", "m", 8.0, [Genre("Jazz", 1.0)], [], warnings=[{"code": "x", "message": "in a\nb\x1b[2J.wav"}]))
    out = capsys.readouterr().out  # a file name's newline or terminal escape is shown, never acted on
    assert "\x1b" not in out and out.count("a\\nb\\x1b[2J.wav") == 2
