"""Bundles round-trip bit-exactly and refuse anything that does not match their config."""

import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from acousticsense.bundle import BundleError, load_bundle, read_config, save_bundle
from conftest import TINY_LABELS, random_model, tiny_config


def test_round_trip_is_bit_exact(tmp_path):
    config = tiny_config(colormap="magma")
    model = random_model(config, seed=3)
    save_bundle(tmp_path / "b", model, config)
    bundle = load_bundle(tmp_path / "b")
    assert bundle.config.to_dict() == config.to_dict()
    saved, loaded = model.state_dict(), bundle.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model(x), bundle.model(x))


def test_weights_with_nan_are_refused_and_the_file_is_readable_as_its_folder(tmp_path):
    config = tiny_config()
    model = random_model(config)
    path = save_bundle(tmp_path / "b", model, config)
    assert (path / "model.safetensors").stat().st_mode & 0o777 == (path / "config.json").stat().st_mode & 0o777  # not 0600
    with torch.no_grad():
        model.heads.head.bias[0] = float("nan")
    with pytest.raises(BundleError, match=r"c: weights hold NaN or infinite values \(heads.head.bias\): the model would answer nothing"):
        save_bundle(tmp_path / "c", model, config)
    assert not (tmp_path / "c").exists()
    state = load_file(path / "model.safetensors") | {"conv_proj.weight": torch.full_like(load_file(path / "model.safetensors")["conv_proj.weight"], float("inf"))}
    save_file(state, path / "model.safetensors")
    with pytest.raises(BundleError, match="weights hold NaN or infinite values \\(conv_proj.weight\\)"):
        load_bundle(path)


def _edit_config(path, **changes):
    """Change top-level keys of a bundle's config; ``preprocessing`` changes are merged into its own (``None`` removes one)."""
    data = json.loads((path / "config.json").read_text())
    pre = data["preprocessing"] | changes.pop("preprocessing", {})
    data.update(changes, preprocessing={k: v for k, v in pre.items() if v is not None} if isinstance(pre, dict) else pre)
    (path / "config.json").write_text(json.dumps(data))


@pytest.fixture
def saved(tmp_path):
    config = tiny_config()
    return save_bundle(tmp_path / "b", random_model(config), config)


@pytest.mark.parametrize("dtype,message", [
    (torch.int64, "weights of type I64; a model's are floating point"),
    (torch.bool, "weights of type BOOL"),
    (torch.float8_e4m3fn, "weights of type F8_E4M3"),
])
def test_weights_are_floating_point_read_as_float32(tmp_path, dtype, message):
    config = tiny_config()
    path = save_bundle(tmp_path / "b", random_model(config), config)
    state = load_file(path / "model.safetensors")
    save_file({k: v.half() if k.startswith("encoder") else v.double() for k, v in state.items()}, path / "model.safetensors")
    model = load_bundle(path).model  # F16 and F64 are read as float32, to the same numbers (as far as F16 holds them)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(model.state_dict()["conv_proj.weight"], state["conv_proj.weight"])
    save_file(state | {"class_token": torch.full_like(state["class_token"], 1e39, dtype=torch.float64)}, path / "model.safetensors")
    with pytest.raises(BundleError, match=r"NaN or infinite values \(class_token\)"):  # F64 beyond float32
        load_bundle(path)
    save_file(state | {"class_token": state["class_token"].to(dtype)}, path / "model.safetensors")
    with pytest.raises(BundleError, match=message):
        load_bundle(path)
    big = state | {"heads.head.weight": torch.zeros(len(config.labels), 192 * 1000)}  # a shape that does not fit: not read
    save_file(big, path / "model.safetensors")
    with pytest.raises(BundleError, match=r"heads.head.weight: expected \(4, 192\), got \(4, 192000\)"):
        load_bundle(path)


def test_labels_that_do_not_match_the_head_are_refused(saved):
    _edit_config(saved, labels=TINY_LABELS + ["Polka", "Ska"])
    with pytest.raises(BundleError) as err:
        load_bundle(saved)
    assert "heads.head.weight: expected (6, 192), got (4, 192)" in str(err.value)
    assert "6 labels" in str(err.value)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(labels=[]), "'labels' must be a non-empty list"),
        (dict(labels=["a", "a", "b", "c"]), r"names a genre twice \(case aside\): a"),
        (dict(labels=["Jazz", "jazz", "b", "c"]), r"names a genre twice \(case aside\): Jazz, jazz"),
        (dict(labels=["Hip\nHop", "R,B \x1b[31mred", "b", "c"]), "'labels' holds control characters"),
        (dict(labels=["\ud800", "b", "c", "d"]), "'labels' holds control characters"),  # a lone surrogate: CSV output failed
        (dict(architecture={"name": "vit_mini_16", "image_size": 32, "head": {"type": "mlp", "hidden": [10**9]}}), "'hidden' layer sizes from 1 to 16384"),
        # the head's size is the config's to say: bounded, checked before anything is built (was GBs, then a shape error)
        (dict(architecture={"name": "vit_mini_16", "image_size": 32, "head": {"type": "mlp", "hidden": [16384] * 8}}), "at most 8 hidden layers and 16,777,216 weights"),
        (dict(architecture={"name": "vit_mini_16", "image_size": 32, "head": {"type": "mlp", "hidden": [1] * 10_000}}), "at most 8 hidden layers"),
        (dict(architecture={"name": "resnet50", "image_size": 32}), "unknown architecture 'resnet50'"),
        (dict(format_version=99), "format_version 99 is not supported"),
        (dict(provenance=["a list"]), "'provenance' must be a JSON object"),  # export failed on it after its work
        (dict(aggregation="median"), "aggregation 'median'"),
        (dict(preprocessing={"sample_rate": 22050, "bogus": 1}), "unknown preprocessing parameters: bogus"),
        (dict(preprocessing={"image_size": 64}), "image_size 64 != architecture image_size 32"),
        # what the model was trained on is stated, never defaulted (a hand-made config without sample_rate ran at 22,050 Hz)
        (dict(preprocessing={"sample_rate": None, "n_mels": None}), r"preprocessing must state sample_rate, n_mels \(what the model was trained on"),
        (dict(extra=1, Labels=["a"]), "unknown keys 'Labels', 'extra'"),
        (dict(architecture={"name": "vit_mini_16", "image_size": 32, "depth": 99}), "unknown architecture keys 'depth'"),
        (dict(architecture={"name": "vit_mini_16", "image_size": 32, "head": {"type": "linear", "width": 3}}), "unknown architecture's head keys 'width'"),
        (dict(model_id={"a": 1}), r"model_id must be a name \(text without control characters\), not \{'a': 1\}"),
        (dict(metrics="x"), "'metrics' must be a JSON object"),
        # a config.json is input: it must not decide what a file costs, nor fail each file with an internal error
        (dict(preprocessing={"image_size": 32, "hop_length": 10**9}), "hop_length must be a whole number from 1 to 65536"),
        (dict(preprocessing={"image_size": 32, "n_mels": 100_000}), "n_mels must be a whole number from 1 to 512"),
        (dict(preprocessing={"image_size": 32, "window_seconds": 1e7}), "window_seconds must be a number from 0.05 to 600"),
        (dict(preprocessing={"image_size": 32, "n_fft": 2048.5}), "n_fft must be a whole number"),
        (dict(preprocessing={"image_size": 32, "silence_db": "loud"}), "silence_db must be a number"),
        (dict(preprocessing={"image_size": 32, "std": [0.5, 0.5]}), "mean and std must be three numbers each"),
        (dict(preprocessing={"image_size": 32, "std": "abc"}), "std must be a list of numbers"),
        (dict(preprocessing={"image_size": 32, "colormap": "nope"}), "colormap must be null or a matplotlib colormap name"),
        (dict(preprocessing={"image_size": 32, "fmin": 9000, "fmax": 100}), "0 <= fmin < fmax <= sample_rate / 2"),
        (dict(preprocessing={"image_size": 32, "top_db": -5}), "top_db must be a positive number or null"),
        (dict(preprocessing={"image_size": 32, "jpeg_quality": True}), "jpeg_quality must be an integer from 1 to 95"),
        (dict(preprocessing={"image_size": 32, "sample_rate": 10**12}), "sample_rate must be a whole number from 1 to 384000"),
        (dict(preprocessing={"image_size": 32, "hop_length": 4096, "n_fft": 2048}), r"hop_length \(4096\) must not exceed n_fft \(2048\)"),
        # numbers float32 cannot hold made every file fail later as if the audio were at fault
        (dict(preprocessing={"image_size": 32, "db_amin": 1e300}), "db_amin must be a number from 1e-30 to 1"),
        (dict(preprocessing={"image_size": 32, "db_ref": 1e300}), "db_ref 'max' or one from 1e-30 to 1e30"),
        (dict(preprocessing={"image_size": 32, "std": [1e-300] * 3}), r"std from 1e-6 to 1e6"),
        (dict(preprocessing={"image_size": 32, "mean": [1e308] * 3}), r"\|mean\| up to 1e6"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(saved, changes, message):
    _edit_config(saved, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(saved)


def test_missing_labels_key(saved):
    data = json.loads((saved / "config.json").read_text())
    del data["labels"]
    (saved / "config.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="missing labels"):
        read_config(saved)


def test_foreign_weights_report_missing_unexpected_and_shapes(saved):
    state = load_file(str(saved / "model.safetensors"))
    state["heads.extra.weight"] = torch.zeros(3)
    del state["encoder.ln.bias"]
    state["conv_proj.bias"] = torch.zeros(7)
    save_file(state, str(saved / "model.safetensors"))
    with pytest.raises(BundleError) as err:
        load_bundle(saved)
    report = str(err.value)
    assert "missing keys (1): encoder.ln.bias" in report
    assert "unexpected keys (1): heads.extra.weight" in report
    assert "conv_proj.bias: expected (192,), got (7,)" in report


@pytest.mark.parametrize("damage,message", [
    (lambda p: (p / "model.safetensors").unlink(), "missing model.safetensors"),
    (lambda p: (p / "model.safetensors").write_bytes(b"garbage"), "unreadable weights"),
    (lambda p: (p / "config.json").write_text("{not json"), "invalid JSON"),
    (lambda p: (p / "config.json").write_text("[" * 100_000 + "]" * 100_000), r"invalid JSON \(nested too deeply\)"),
    (lambda p: (p / "config.json").unlink(), "missing config.json"),
    # these were tracebacks (ValueError of int(), UnicodeDecodeError) or read whatever size the file had
    (lambda p: (p / "config.json").write_text('{"labels": ["a", "b"], "x": ' + "9" * 5000 + "}"), "invalid JSON"),
    (lambda p: (p / "config.json").write_bytes(b'{"labels": ["\xff"]}'), "invalid JSON"),
    (lambda p: (p / "config.json").write_bytes(b" " * (16 << 20) + b"{}"), "larger than 16 MiB"),
    (lambda p: ((p / "config.json").unlink(), os.mkfifo(p / "config.json")), "config.json: not a regular file"),  # was "missing", or a hang
    (lambda p: ((p / "config.json").unlink(), (p / "config.json").mkdir()), "config.json: not a regular file"),
])
def test_damaged_bundles(saved, damage, message):
    damage(saved)
    with pytest.raises(BundleError, match=message):
        load_bundle(saved)


def test_not_a_directory(tmp_path):
    with pytest.raises(BundleError, match="nothing: no such model bundle directory"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="file: not a model bundle directory"):
        load_bundle(tmp_path / "file")


def test_a_refused_save_leaves_the_bundle_there_as_it_was(tmp_path):
    """The config is checked as a reader would check it before anything is written: a save that failed half-way
    had left new weights beside the old config (a bundle that no longer loaded)."""
    config = tiny_config()
    path = save_bundle(tmp_path / "b", random_model(config, seed=1), config)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    fewer = tiny_config(labels=TINY_LABELS[:3])
    bad_configs = [
        (dataclasses.replace(fewer, provenance={"tags": {"a"}}), "cannot be written as JSON"),
        (dataclasses.replace(fewer, labels=["a", "a", "b"]), "names a genre twice"),
        (dataclasses.replace(fewer, aggregation="median"), "aggregation 'median'"),
        (dataclasses.replace(fewer, calibration={"temperature": 0}), "'calibration' needs a 'temperature'"),
        (fewer.to_dict(), "a bundle's config is a BundleConfig, not dict"),
    ]
    for bad, message in bad_configs:
        with pytest.raises(BundleError, match=message):
            save_bundle(path, random_model(fewer), bad)
    with pytest.raises(BundleError, match="the model to save is a torch module, not NoneType"):
        save_bundle(path, None, fewer)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert load_bundle(path).config.labels == TINY_LABELS


@pytest.mark.parametrize("path", [5, 3.5, b"bundle"])
def test_a_bundle_is_named_by_a_path(path):
    for call in (lambda: load_bundle(path), lambda: read_config(path), lambda: read_config(None)):  # load_bundle(None): the built-in one
        with pytest.raises(BundleError, match="a bundle is a folder given by its path, not"):
            call()
