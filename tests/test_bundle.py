"""Bundles round-trip bit-exactly and refuse anything that does not match their config."""

import json

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


def _edit_config(path, **changes):
    data = json.loads((path / "config.json").read_text())
    data.update(changes)
    (path / "config.json").write_text(json.dumps(data))


@pytest.fixture
def saved(tmp_path):
    config = tiny_config()
    return save_bundle(tmp_path / "b", random_model(config), config)


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
        (dict(labels=["a", "a", "b", "c"]), "duplicates"),
        (dict(architecture={"name": "resnet50", "image_size": 32}), "unknown architecture 'resnet50'"),
        (dict(format_version=99), "format_version 99 is not supported"),
        (dict(aggregation="median"), "aggregation 'median'"),
        (dict(preprocessing={"sample_rate": 22050, "bogus": 1}), "unknown preprocessing parameters: bogus"),
        (dict(preprocessing={"image_size": 64}), "image_size 64 != architecture image_size 32"),
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
    (lambda p: (p / "config.json").unlink(), "missing config.json"),
])
def test_damaged_bundles(saved, damage, message):
    damage(saved)
    with pytest.raises(BundleError, match=message):
        load_bundle(saved)


def test_not_a_directory(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle directory"):
        load_bundle(tmp_path / "nothing")
