"""Importing published checkpoints: exact weights, real labels, faithful preprocessing, strict refusal."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models import vit_b_16
from torchvision.models.vision_transformer import VisionTransformer
from typer.testing import CliRunner

from acousticsense.bundle import BundleError, load_bundle, read_config
from acousticsense.cli import app
from acousticsense.errors import ParameterError
from acousticsense.features import windows_to_images
from acousticsense.inference import Classifier
from acousticsense.importers import (
    CCMUSIC_LABELS,
    CCMUSIC_PREPROCESSING,
    CheckpointError,
    import_ccmusic,
    import_torchvision,
    load_state_dict,
    pull,
)

from ccmusic_demo import demo_images, demo_vote, specshow_image
from conftest import music_like, write_audio

PRE = CCMUSIC_PREPROCESSING


def ccmusic_reference_model(seed: int = 0) -> nn.Module:
    """ccmusic's model, built the way their code builds it: torchvision vit_b_16 + their MLP head, all random."""
    torch.manual_seed(seed)
    model = vit_b_16()
    model.heads.head = nn.Sequential(
        nn.Dropout(), nn.Linear(768, 289), nn.ReLU(inplace=True),
        nn.Dropout(), nn.Linear(289, 110), nn.ReLU(inplace=True),
        nn.Dropout(), nn.Linear(110, 42), nn.ReLU(inplace=True),
        nn.Linear(42, 16),
    )  # fmt: skip
    return model.eval()


@pytest.fixture(scope="module")
def ccmusic(tmp_path_factory):
    """(save.pt path, reference model, its state dict, imported bundle dir)."""
    tmp = tmp_path_factory.mktemp("ccmusic")
    model = ccmusic_reference_model()
    state = model.state_dict()
    torch.save(state, tmp / "save.pt")
    return tmp / "save.pt", model, state, import_ccmusic(tmp / "save.pt", tmp / "bundle")


def chunks(seeds) -> torch.Tensor:
    """One 11.4 s chunk per seed, each three different 3.8 s music-like pieces (music_like's cost grows with length squared)."""
    third = PRE.window_seconds / 3
    return torch.stack([torch.from_numpy(np.concatenate([music_like(third, PRE.sample_rate, seed=3 * s + i)[0] for i in range(3)])) for s in seeds])


def test_ccmusic_bundle_reproduces_the_checkpoint(ccmusic):
    save_pt, reference, _, out = ccmusic
    bundle = load_bundle(out)
    config = bundle.config
    assert config.labels == CCMUSIC_LABELS and len(config.labels) == 16
    assert config.architecture == {"name": "vit_b_16", "image_size": 224, "head": {"type": "mlp", "hidden": [289, 110, 42], "dropout": 0.5}}
    assert config.provenance["source"] == "ccmusic-database/music_genre"
    assert config.provenance["file"] == "save.pt"
    assert config.provenance["sha256"] == hashlib.sha256(save_pt.read_bytes()).hexdigest()
    pre = config.preprocessing
    assert (pre.sample_rate, pre.window_seconds, pre.n_mels, pre.n_fft, pre.hop_length) == (22050, 11.4, 128, 2048, 512)
    assert (pre.db_ref, pre.top_db, pre.flip_frequency, pre.colormap, pre.image_size) == ("max", 80.0, True, "magma", 224)
    assert pre.mean == pre.std == (0.5, 0.5, 0.5)
    assert pre == CCMUSIC_PREPROCESSING  # render_size included, through config.json
    images = windows_to_images(chunks([1, 2]), pre)
    with torch.inference_mode():
        assert torch.allclose(bundle.model(images), reference(images), atol=1e-5)


def sensitive(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Their random model made fast (2 of 12 blocks) and input-sensitive: its raw top-1 is one class for every input,
    so the last bias is shifted by the mean logits over ``images`` (a fixed change of the model): a strict test with near ties."""
    model = copy.deepcopy(model)
    model.encoder.layers = model.encoder.layers[:2]
    with torch.inference_mode():
        model.heads.head[-1].bias -= model(images).mean(0)
    return model


def test_torch_rendering_matches_specshow(ccmusic):
    import librosa

    windows = chunks(range(24))
    ours = windows_to_images(windows, PRE)
    theirs = torch.stack(
        [specshow_image(librosa.power_to_db(librosa.feature.melspectrogram(y=w.numpy(), sr=22050), ref=np.max)) for w in windows]
    )
    diff = (ours - theirs).abs().mean(dim=(1, 2, 3))  # on the normalised [-1, 1] scale; measured: 0 (the same pixels)
    assert diff.max() < 1e-4, diff  # room for a float-rounding flip of a colour or two
    model = sensitive(ccmusic[1], theirs)
    with torch.inference_mode():
        a, b = model(ours), model(theirs)
    assert len(set(b.argmax(1).tolist())) >= 8
    assert (a.argmax(1) == b.argmax(1)).all()


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> list:
    """Real-length stereo tracks: mp3 at 44.1 kHz, flac at 48 kHz, wav at 32 kHz (each a chain of pieces; formats librosa reads)."""
    d = tmp_path_factory.mktemp("songs")
    out = []
    for k, (ext, sr, seconds) in enumerate(((".mp3", 44100, 150), (".flac", 48000, 100), (".wav", 32000, 75))):
        pieces = [music_like(5.0, sr, seed=100 * k + i, channels=2) for i in range(seconds // 5)]
        out.append(write_audio(d / f"song{k}{ext}", np.concatenate(pieces, axis=1), sr))
    return out


def test_ccmusic_bundle_reproduces_the_demo_pipeline(ccmusic, songs):
    """Same checkpoint, same tracks: the imported bundle through our engine agrees with the demo's own pipeline."""
    _, reference, _, out = ccmusic
    theirs = [demo_images(path) for path in songs]
    model = sensitive(reference, torch.cat(theirs))
    clf = Classifier(load_bundle(out), device="cpu")
    clf.model = model  # the bundle's preprocessing and vote, with the fast input-sensitive version of its model
    agree = total = 0
    seen = set()
    for path, images in zip(songs, theirs):
        features = clf.preprocess(path)
        probs = clf.forward([features])[0]
        with torch.inference_mode():
            logits = model(images)
        assert len(probs) == len(logits), path  # the same chunks
        agree += int((probs.argmax(1) == logits.argmax(1)).sum())
        total += len(probs)
        seen |= set(logits.argmax(1).tolist())
        assert clf.postprocess(features, probs).label == CCMUSIC_LABELS[demo_vote(logits)], path
    assert total == 13 + 8 + 6 and len(seen) >= 6  # the check means something: the chunks' top-1s differ
    assert agree / total >= 0.98, (agree, total)


def test_foreign_checkpoints_are_refused_with_a_key_report(ccmusic, tmp_path):
    state = ccmusic[2]
    plain = {k: v for k, v in state.items() if not k.startswith("heads.")}
    plain |= {"heads.head.weight": torch.zeros(16, 768), "heads.head.bias": torch.zeros(16)}
    torch.save(plain, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError) as e:
        import_ccmusic(tmp_path / "plain.pt", tmp_path / "out")
    message = str(e.value)
    assert message.startswith("plain.pt: does not fit vit_b_16") and "\n" not in message
    assert "missing keys (8)" in message and "heads.head.1.weight" in message and "heads.head.9.bias" in message
    assert "unexpected keys (2): heads.head.weight; heads.head.bias" in message
    assert "acousticsense import torchvision" in message

    wrong = dict(state) | {"heads.head.9.weight": torch.zeros(10, 42), "heads.head.9.bias": torch.zeros(10)}
    torch.save({"state_dict": wrong}, tmp_path / "ten.pt")  # wrapped, as some trainers save
    with pytest.raises(CheckpointError, match=r"shape mismatches \(2\): heads.head.9.weight: expected \(16, 42\), got \(10, 42\)"):
        import_ccmusic(tmp_path / "ten.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_checkpoints_are_refused(tmp_path):
    (tmp_path / "song.pt").write_bytes(b"ID3 this is an mp3, not weights")
    with pytest.raises(CheckpointError, match=r"^song.pt: not a PyTorch checkpoint"):
        load_state_dict(tmp_path / "song.pt")
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"^list.pt: not a state dict"):
        load_state_dict(tmp_path / "list.pt")
    torch.save(vit_ti(2), tmp_path / "whole.pt")  # a pickled module, not its state dict
    with pytest.raises(CheckpointError, match=r"^whole.pt: a pickled torchvision.models.vision_transformer.VisionTransformer, not a state dict"):
        load_state_dict(tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match=r"^missing.pt: no such file"):
        load_state_dict(tmp_path / "missing.pt")
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"^folder.pt: a folder, not a checkpoint file$"):
        load_state_dict(tmp_path / "folder.pt")

    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(CheckpointError, match=r"^evil.pt: not a PyTorch checkpoint"):  # never unpickled
        load_state_dict(tmp_path / "evil.pt")


def test_bad_inputs_of_an_import_are_named(tmp_path):
    """The checkpoint or labels file at fault is named, not the output folder; safetensors say their own reason."""

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"w": Evil()}, tmp_path / "evil_zip.pt")  # torch.save's own format, which named no culprit
    with pytest.raises(CheckpointError, match=r"^evil_zip.pt: a pickled \S*system, not a state dict; not unpickled, as that would run its code"):
        load_state_dict(tmp_path / "evil_zip.pt")
    state = vit_ti(2).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"^cut.safetensors: unreadable safetensors file \(Error while deserializing header"):
        load_state_dict(tmp_path / "cut.safetensors")
    (tmp_path / "dup.txt").write_text("Jazz\njazz\n")
    with pytest.raises(BundleError, match=r"^dup.txt: 'labels' names a genre twice \(case aside\): Jazz, jazz$"):
        import_torchvision(tmp_path / "w.safetensors", tmp_path / "dup.txt", tmp_path / "out")
    torch.save(state | {"class_token": torch.full_like(state["class_token"], float("nan"))}, tmp_path / "nan.pt")
    with pytest.raises(BundleError, match=r"^nan.pt: weights hold NaN or infinite values \(class_token\)"):
        import_torchvision(tmp_path / "nan.pt", ["a", "b"], tmp_path / "out")
    with pytest.raises(ParameterError, match=r"^aggregation must be one of mean, vote, not 'median'$"):  # blamed the output folder
        import_torchvision(tmp_path / "w.safetensors", ["a", "b"], tmp_path / "out", aggregation="median")
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()


def test_an_import_never_writes_into_a_folder_that_holds_something(tmp_path):
    torch.save(vit_ti(2).state_dict(), tmp_path / "mine.pth")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "config.json").write_text("{}")  # another bundle, say
    with pytest.raises(BundleError, match="bundle: exists and is not an empty folder; choose a new one"):
        import_torchvision(tmp_path / "mine.pth", ["a", "b"], tmp_path / "bundle")
    assert (tmp_path / "bundle" / "config.json").read_text() == "{}"


def test_a_checkpoint_that_unpacks_to_more_than_a_model_holds_is_refused_unread(tmp_path, monkeypatch):
    """What the zip's directory declares is checked first: a 2 MB compressed file had unpacked to 2.6 GB."""
    torch.save({"w": torch.zeros(100_000)}, tmp_path / "big.pt")
    monkeypatch.setattr("acousticsense.importers.MAX_CHECKPOINT_BYTES", 300_000)
    monkeypatch.setattr("torch.load", lambda *a, **k: pytest.fail("read anyway"))
    with pytest.raises(CheckpointError, match=r"^big.pt: unpacks to 0.0 GiB; a checkpoint of these models holds at most 0.000279397 GiB"):
        load_state_dict(tmp_path / "big.pt")


def vit_ti(num_classes: int, image_size: int = 64, num_layers: int = 12) -> VisionTransformer:
    torch.manual_seed(1)
    model = VisionTransformer(image_size=image_size, patch_size=16, num_layers=num_layers, num_heads=3, hidden_dim=192, mlp_dim=768, num_classes=num_classes)
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


def test_torchvision_import_is_exact(tmp_path):
    model = vit_ti(5)
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "mine.pth")  # DataParallel, wrapped
    (tmp_path / "labels.json").write_text(json.dumps(["a", "b", "c", "d", "e"]))
    out = import_torchvision(tmp_path / "mine.pth", tmp_path / "labels.json", tmp_path / "bundle")
    bundle = load_bundle(out)
    assert bundle.config.architecture == {"name": "vit_ti_16", "image_size": 64, "head": {"type": "linear"}}
    assert bundle.config.labels == ["a", "b", "c", "d", "e"] and bundle.config.preprocessing.image_size == 64
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(bundle.model(x), model(x))

    (tmp_path / "four.txt").write_text("a\nb\n\nc\nd\n")
    with pytest.raises(CheckpointError, match=r"^four.txt: 4 labels, but the checkpoint's head has 5 outputs"):
        import_torchvision(tmp_path / "mine.pth", tmp_path / "four.txt", tmp_path / "b2")
    with pytest.raises(CheckpointError, match=r"^mine.pth: does not fit vit_s_16"):
        import_torchvision(tmp_path / "mine.pth", tmp_path / "labels.json", tmp_path / "b3", arch="vit_s_16")

    torch.save(vit_ti(5, num_layers=6).state_dict(), tmp_path / "six.pth")  # as wide as vit_ti_16, half as deep
    assert read_config(import_torchvision(tmp_path / "six.pth", tmp_path / "labels.json", tmp_path / "b4")).architecture["name"] == "vit_mini_16"
    for pos in (torch.zeros(197), torch.zeros(1, 0, 192)):  # were IndexError / ValueError tracebacks
        torch.save(model.state_dict() | {"encoder.pos_embedding": pos}, tmp_path / "odd.pth")
        with pytest.raises(CheckpointError, match=r"^odd.pth: not a torchvision ViT with a Linear head"):
            import_torchvision(tmp_path / "odd.pth", tmp_path / "labels.json", tmp_path / "b5")
    torch.save(vit_ti(5, num_layers=4).state_dict(), tmp_path / "four.pth")
    with pytest.raises(CheckpointError, match=r"^four.pth: 4 layers of width 192 match none of"):
        import_torchvision(tmp_path / "four.pth", tmp_path / "labels.json", tmp_path / "b5")


def test_pull_offline_says_what_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError) as e:
        pull("ccmusic-vit_b_16_mel", tmp_path / "out")
    message = str(e.value)
    assert "https://huggingface.co/ccmusic-database/music_genre/resolve/main/vit_b_16_mel/save.pt" in message
    assert f"acousticsense import ccmusic save.pt --out {tmp_path / 'out'}" in message
    with pytest.raises(CheckpointError, match="unknown model"):
        pull("nope")


def test_pull_takes_the_registry_entrys_file_and_importer(ccmusic, monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr("acousticsense.importers._reachable", lambda url: False)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda repo, filename, **kw: asked.append((repo, filename)) or str(ccmusic[0]))
    out = pull("ccmusic-vit_b_16_mel", tmp_path / "b")
    assert asked == [("ccmusic-database/music_genre", "vit_b_16_mel/save.pt")]
    config = read_config(out)
    assert config.model_id == "ccmusic-vit_b_16_mel" and config.aggregation == "vote" and config.preprocessing == PRE
    listed = CliRunner().invoke(app, ["pull", "--list"])
    assert listed.exit_code == 0 and listed.stdout.startswith("ccmusic-vit_b_16_mel\tccmusic-database/music_genre: ViT-B/16")


def test_cli(ccmusic, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["import", "ccmusic", str(ccmusic[0]), "--out", str(tmp_path / "b"), "--aggregation", "vote"])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["info", str(tmp_path / "b")])
    assert info.exit_code == 0
    config = json.loads(info.stdout)
    assert config["labels"] == CCMUSIC_LABELS and config["aggregation"] == "vote"

    (tmp_path / "junk.pt").write_text("not a checkpoint")
    for args in (
        ["import", "ccmusic", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "x")],
        ["import", "ccmusic", str(ccmusic[0]), "--out", str(tmp_path / "x"), "--aggregation", "median"],
        ["import", "torchvision", str(tmp_path / "junk.pt"), "--labels", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "x")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_cli_torchvision_with_preprocessing(tmp_path):
    torch.save(vit_ti(2, image_size=32).state_dict(), tmp_path / "tiny.pt")
    (tmp_path / "labels.txt").write_text("calm\nloud\n")
    signal = {"sample_rate": 16000, "window_seconds": 3.0, "hop_seconds": 1.5, "n_fft": 1024, "hop_length": 256, "n_mels": 64}
    (tmp_path / "pre.json").write_text(json.dumps(signal | {"colormap": "magma"}))
    args = ["import", "torchvision", str(tmp_path / "tiny.pt"), "--labels", str(tmp_path / "labels.txt"), "--out", str(tmp_path / "b")]
    result = CliRunner().invoke(app, args + ["--preprocessing", str(tmp_path / "pre.json")])
    assert result.exit_code == 0, result.output
    pre = load_bundle(tmp_path / "b").config.preprocessing
    assert (pre.window_seconds, pre.n_mels, pre.colormap, pre.image_size) == (3.0, 64, "magma", 32)
    assert "warning" not in result.stderr and "preprocessing_assumed" not in read_config(tmp_path / "b").provenance
    # what the signal was is never guessed in silence: said, and recorded in the bundle (none given, or part of it)
    guessed = CliRunner().invoke(app, args[:-1] + [str(tmp_path / "guessed")])
    assert guessed.exit_code == 0 and guessed.stderr.startswith("warning: no --preprocessing given: assumed sample_rate, window_seconds, "
                                                                "hop_seconds, n_fft, hop_length, n_mels: the bundle takes the defaults (sample_rate 22050, window_seconds 8")
    assert read_config(tmp_path / "guessed").provenance["preprocessing_assumed"] == ["sample_rate", "window_seconds", "hop_seconds", "n_fft", "hop_length", "n_mels"]
    (tmp_path / "part.json").write_text(json.dumps({"window_seconds": 10, "colormap": "magma"}))  # part of the signal stated: the rest is said and recorded
    part = CliRunner().invoke(app, args[:-1] + [str(tmp_path / "part"), "--preprocessing", str(tmp_path / "part.json")])
    assert part.exit_code == 0 and part.stderr.startswith("warning: --preprocessing does not state sample_rate, hop_seconds, n_fft, hop_length, n_mels: "
                                                          "the bundle takes the defaults (sample_rate 22050, hop_seconds 4, n_fft 2048, hop_length 512, n_mels 128)")
    (tmp_path / "bad.json").write_text(json.dumps({"window_secs": 3.0}))
    result = CliRunner().invoke(app, args + ["--preprocessing", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "window_secs" in result.stderr
    # hostile files: each one line naming the file (were tracebacks: RecursionError, int(), UnicodeDecodeError, a list)
    for name, content, message in [
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "invalid JSON (nested too deeply)"),
        ("huge.json", b'{"n_fft": ' + b"9" * 5000 + b"}", "invalid JSON (Exceeds the limit"),
        ("latin1.json", b'{"colormap": "\xff"}', "invalid JSON or text (not UTF-8"),
        ("list.json", b"[1, 2]", "invalid preprocessing (expected a JSON object of its fields)"),
        ("null.json", b"null", "invalid preprocessing (expected a JSON object of its fields)"),  # not "none given"
    ]:
        (tmp_path / name).write_bytes(content)
        result = CliRunner().invoke(app, args + ["--preprocessing", str(tmp_path / name)])
        assert result.exit_code == 2 and f"{tmp_path / name}: {message}" in result.stderr, result.stderr


def test_a_labels_file_with_a_byte_order_mark_reads_as_written(tmp_path):
    from acousticsense.importers import read_labels

    (tmp_path / "labels.txt").write_bytes("\ufeffJazz\nPop\n\nRock\n".encode())
    (tmp_path / "labels.json").write_bytes('\ufeff["Jazz", "Pop", "Rock"]'.encode())
    assert read_labels(tmp_path / "labels.txt") == read_labels(tmp_path / "labels.json") == ["Jazz", "Pop", "Rock"]
    os.mkfifo(tmp_path / "fifo")
    for hostile in ("/dev/zero", tmp_path / "fifo", tmp_path):  # /dev/zero was read until memory ran out; a FIFO waited for ever
        with pytest.raises(CheckpointError, match=f"{hostile}: not a regular file"):
            read_labels(hostile)
