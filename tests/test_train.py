"""Training and evaluation: split, pipeline, learning, resume, fine-tuning, reports.

Most tests use music_like clips filtered into one frequency band per label (Bass, Mid,
Treble, Air): clearly distinct classes a tiny ViT learns in a few CPU epochs. One test
renders a tiny corpus of four synthetic genres (synth.make_corpus) and learns those.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from conftest import frame_windows, music_like, write_audio
from typer.testing import CliRunner

from acousticsense import train as train_module
from acousticsense.augment import NoiseBank, spec_augment
from acousticsense.bundle import load_bundle, read_config
from acousticsense.cli import app
from acousticsense.data import DataError, Track, read_corpus, split_tracks
from acousticsense.errors import AcousticSenseError, ParameterError, output_folder
from acousticsense.evaluate import evaluate, record_metrics, trained_on
from acousticsense.features import Preprocessing, db_to_image, frames_per_window, mel_power, power_to_db, window_count, windows_to_images
from acousticsense.inference import Classifier
from acousticsense.pretrained import initial_model
from acousticsense.synth import make_corpus
from acousticsense.train import TrainConfig, TrainError, lr_factor, selection_key, train

SR = 22050
BANDS = {"Air": (5000, 11025), "Bass": (0, 300), "Mid": (300, 1200), "Treble": (1200, 5000)}  # Hz, sorted by name
FAST = dict(image_size=32, window=2.0, hop=1.0, batch_size=8, lr=1e-3, freq_mask=0.0, time_mask=0.0, val_fraction=0.34, patience=0, device="cpu", workers=2)


def band_clip(label: str, seed: int, seconds: float = 4.0) -> np.ndarray:
    """music_like audio with everything outside the label's band attenuated by 34 dB: (1, n)."""
    y = music_like(seconds, SR, seed=seed)[0]
    lo, hi = BANDS[label]
    spectrum = np.fft.rfft(y)
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    spectrum *= np.where((freqs >= lo) & (freqs < hi), 1.0, 0.02)
    y = np.fft.irfft(spectrum, len(y))
    return (0.5 * y / np.abs(y).max())[None].astype(np.float32)


def make_band_corpus(root: Path, per_label: int = 6, labels=tuple(BANDS)) -> Path:
    for k, label in enumerate(labels):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            write_audio(root / label / f"{label.lower()}.{i:05d}.wav", band_clip(label, 100 * k + i), SR)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_band_corpus(tmp_path_factory.mktemp("data") / "bands")


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    return train(corpus, tmp_path_factory.mktemp("runs") / "bands", epochs=5, progress=False, **FAST)


# --- data listing and split -------------------------------------------------------------


def test_split_is_by_track_stratified_and_deterministic():
    tracks = [Track(Path(f"/d/{label}/{i}.wav"), label) for label, n in (("a", 20), ("b", 7), ("c", 2), ("d", 1)) for i in range(n)]
    train_a, val_a = split_tracks(tracks, 0.15, seed=3)
    assert not {t.path for t in train_a} & {t.path for t in val_a}
    assert sorted(train_a + val_a, key=str) == sorted(tracks, key=str)
    per_label = {label: sum(t.label == label for t in val_a) for label in "abcd"}
    assert per_label == {"a": 3, "b": 1, "c": 1, "d": 0}  # round(n * f), at least one when n >= 2, never all
    assert split_tracks(list(reversed(tracks)), 0.15, seed=3) == (train_a, val_a)  # listing order does not matter
    assert split_tracks(tracks, 0.15, seed=4)[1] != val_a
    # a label's split does not move when another label is added
    more = tracks + [Track(Path(f"/d/e/{i}.wav"), "e") for i in range(9)]
    assert [t for t in split_tracks(more, 0.15, seed=3)[1] if t.label != "e"] == val_a


def test_copies_of_a_file_stay_on_one_side_of_the_split(tmp_path):
    """A byte-identical copy in validation is a track the model trained on: validation would flatter it."""
    for i in range(8):
        (tmp_path / f"{i}.wav").write_bytes(os.urandom(1000) * (i + 1))
    for name in ("copy1.wav", "copy2.wav", "copy3.wav"):
        (tmp_path / name).write_bytes((tmp_path / "0.wav").read_bytes())
    tracks = [Track(p, "a") for p in sorted(tmp_path.glob("*.wav"))]
    copies = {tmp_path / n for n in ("0.wav", "copy1.wav", "copy2.wav", "copy3.wav")}
    sides = set()
    for seed in range(12):
        train, val = split_tracks(tracks, 0.4, seed)
        assert len(train) + len(val) == 11 and 1 <= len(val) <= 4
        in_val = {t.path for t in val} & copies
        assert in_val in (set(), copies), seed  # all four on one side
        sides.add(bool(in_val))
    assert sides == {True, False}  # and the group does go to validation for some seeds


def test_read_corpus_formats(tmp_path, monkeypatch):
    for label in ("Rock", "Jazz"):
        (tmp_path / "tree" / label).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "tree" / label / f"{i}.wav").write_bytes(b"x")
    (tmp_path / "tree" / "Jazz" / ".hidden").write_bytes(b"x")
    c = read_corpus(tmp_path / "tree")
    assert c.labels == ["Jazz", "Rock"] and len(c.tracks) == 4 and c.info["format"] == "folders"

    # manifest.csv at the root wins; manifest.json's genre order and scalars are kept
    (tmp_path / "tree" / "manifest.csv").write_text("path,label,tempo\nRock/0.wav,Rock,120\nJazz/0.wav,Jazz,90\n")
    (tmp_path / "tree" / "manifest.json").write_text(json.dumps({"synth_version": "1", "seed": 7, "genres": ["Rock", "Pop", "Jazz"], "clips": []}))
    c = read_corpus(tmp_path / "tree")
    assert c.labels == ["Rock", "Jazz"] and [t.path for t in c.tracks] == [tmp_path / "tree/Rock/0.wav", tmp_path / "tree/Jazz/0.wav"]
    assert c.info["manifest"] == {"synth_version": "1", "seed": 7}

    (tmp_path / "list.json").write_text(json.dumps([{"path": "tree/Rock/1.wav", "label": "Rock"}]))
    assert read_corpus(tmp_path / "list.json").tracks == [Track(tmp_path / "tree/Rock/1.wav", "Rock")]

    (tmp_path / "bad.csv").write_text("file,genre\na.wav,Rock\n")
    with pytest.raises(DataError, match="bad.csv: needs 'path' and 'label' columns"):
        read_corpus(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="no such file"):
        read_corpus(tmp_path / "missing")
    (tmp_path / "excel.csv").write_bytes("\ufeffpath,label\ntree/Rock/1.wav,Rock\ntree/Jazz/1.wav,Jazz\n".encode())  # Excel's "CSV UTF-8"
    assert len(read_corpus(tmp_path / "excel.csv").tracks) == 2
    (tmp_path / "twice.csv").write_text("path,label\ntree/Rock/1.wav,Rock\ntree/Jazz/0.wav,Jazz\ntree/Jazz/../Rock/1.wav,Rock\n")
    with pytest.raises(DataError, match=r"twice.csv: .*Rock/1.wav is listed twice \(label 'Rock'\); list each track once"):
        read_corpus(tmp_path / "twice.csv")  # it would be trained and validated on
    (tmp_path / "both.csv").write_text("path,label\ntree/Rock/1.wav,Rock\ntree/Rock/1.wav,Jazz\n")
    with pytest.raises(DataError, match=r"is listed under two labels \('Rock' and 'Jazz'\)"):
        read_corpus(tmp_path / "both.csv")
    (tmp_path / "speech.csv").write_text("path,label\ntree/Rock/1.wav,_not_music\n")
    with pytest.raises(DataError, match=r"no labelled music tracks found \(only 1 _not_music tracks"):
        read_corpus(tmp_path / "speech.csv")
    (tmp_path / "flat").mkdir()  # clips with no genre folders: the layout is said
    (tmp_path / "flat" / "take1.wav").write_bytes(b"RIFF")
    with pytest.raises(DataError, match=r"flat: no labelled music tracks found \(expected a folder per genre, e.g. DATA/Jazz/take1.wav"):
        read_corpus(tmp_path / "flat")
    with pytest.raises(AcousticSenseError, match="take1.wav: exists and is a file, not a folder$"):
        output_folder(tmp_path / "flat" / "take1.wav")  # evaluate --out naming a file said 'cannot create this folder (File exists)'
    with monkeypatch.context() as m:  # an existing folder on a read-only disk: said before the work, not after it
        m.setattr(os, "access", lambda *a, **k: False)
        with pytest.raises(AcousticSenseError, match="flat: this folder cannot be written to$"):
            output_folder(tmp_path / "flat")


def test_bad_files_are_skipped_and_an_empty_label_aborts(tmp_path, capsys):
    data = make_band_corpus(tmp_path / "data", per_label=3, labels=("Bass", "Treble"))
    (data / "Bass" / "broken.wav").write_bytes(b"RIFF not really audio")
    write_audio(data / "Treble" / "blip.wav", band_clip("Treble", 9, seconds=0.3), SR)  # predict flags it low_confidence: said here too
    out = train(data, tmp_path / "run", epochs=1, progress=False, **FAST)
    err = capsys.readouterr().err
    assert "warning: skipping" in err and "broken.wav" in err and "skipped 1 of 8 files" in err
    assert read_config(out).provenance["split"]["skipped_files"] == 1
    assert f"warning: 1 track is under a third of the 2 s window (e.g. {data / 'Treble' / 'blip.wav'}), repeated to fill one" in err
    (data / "Treble" / "blip.wav").unlink()

    (data / "Air").mkdir()
    (data / "Air" / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match="no usable training tracks for label\\(s\\): Air"):
        train(data, tmp_path / "run2", epochs=1, progress=False, **FAST)

    manifest = tmp_path / "listed.csv"  # a row whose file is gone is left out before the split: it took Bass's only place
    manifest.write_text("path,label\n" + "".join(f"{label}/{label.lower()}.00000.wav,{label}\n" for label in ("Bass", "Treble"))
                        + "Bass/gone.wav,Bass\nTreble/treble.00001.wav,Treble\n")
    shutil.copy(manifest, data / "listed.csv")
    out = train(data / "listed.csv", tmp_path / "run3", epochs=1, progress=False, **FAST)
    assert f"warning: skipping {data / 'Bass' / 'gone.wav'}: no such file" in capsys.readouterr().err
    assert read_config(out).provenance["split"]["train_tracks"] == 2 and read_config(out).provenance["split"]["skipped_files"] == 1


def test_a_run_into_the_current_folder_is_named_after_it(corpus, tmp_path, monkeypatch):
    """--out . gave the model_id '' (Path('.').name), which a bundle may not have."""
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path / "my-model")
    assert read_config(train(corpus, Path("."), epochs=1, progress=False, **FAST)).model_id == "my-model"


def test_training_without_validation_tracks_says_so(tmp_path, capsys):
    """One track per genre leaves nothing to validate on: said up front, and the end says "not validated", not "()"."""
    data = make_band_corpus(tmp_path / "data", per_label=1, labels=("Bass", "Treble"))
    out = train(data, tmp_path / "run", epochs=1, progress=False, **FAST)
    err = capsys.readouterr().err
    assert "warning: nothing to validate on (no genre has the 2 tracks a split needs): each epoch's weights replace the last" in err
    assert f"last: epoch 1 (not validated), saved in {out}" in err and "()" not in err


def test_a_checkpoint_from_elsewhere_runs_no_code_and_a_damaged_one_is_one_line(tmp_path):
    """--resume read checkpoint.pt with pickle's full powers: a run folder handed over could run any command."""
    import os

    data = make_band_corpus(tmp_path / "data", per_label=2, labels=("Bass", "Treble"))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil").mkdir()
    torch.save({"recipe": Payload()}, tmp_path / "evil" / "checkpoint.pt")
    with pytest.raises(TrainError, match=r"evil/checkpoint.pt: not a readable training checkpoint \(UnpicklingError"):
        train(data, tmp_path / "evil", resume=True, progress=False)
    assert not marker.exists()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(TrainError, match="empty/checkpoint.pt: not a readable training checkpoint"):
        train(data, tmp_path / "empty", resume=True, progress=False)
    (tmp_path / "other").mkdir()
    torch.save({"model": {}}, tmp_path / "other" / "checkpoint.pt")
    with pytest.raises(TrainError, match="other/checkpoint.pt: not a training checkpoint of this program"):
        train(data, tmp_path / "other", resume=True, progress=False)


def test_a_genre_whose_validation_files_all_fail_is_named(tmp_path, capsys):
    """The split is made before decoding: a genre whose held-out file does not decode was validated on nothing, silently."""
    data = make_band_corpus(tmp_path / "data", per_label=3, labels=("Bass", "Treble"))
    _, val = split_tracks(read_corpus(data).tracks, FAST["val_fraction"], seed=0)
    broken = next(t.path for t in val if t.label == "Bass")
    broken.write_bytes(b"RIFF not really audio")
    train(data, tmp_path / "run", epochs=1, progress=False, **FAST)
    err = capsys.readouterr().err
    assert f"warning: skipping {broken}" in err
    assert "warning: no usable validation track left for Bass (each failed to decode or is silent)" in err


def test_a_folder_corpus_takes_audio_files_only(tmp_path):
    """An album folder's cover.jpg or notes.txt took a track's place (and could be its genre's only validation track)."""
    data = make_band_corpus(tmp_path / "data", per_label=2, labels=("Bass", "Treble"))
    (data / "Bass" / "cover.jpg").write_bytes(b"\xff\xd8 not audio")
    (data / "Treble" / "notes.txt").write_text("liner notes")
    assert sorted(t.path.name for t in read_corpus(data).tracks) == ["bass.00000.wav", "bass.00001.wav", "treble.00000.wav", "treble.00001.wav"]
    (data / "Bass" / "linked.wav").symlink_to(data / "Treble" / "treble.00000.wav")  # links are not followed, as scan and predict
    outside = make_band_corpus(tmp_path / "outside", per_label=2, labels=("Mid",))
    (data / "Mid").symlink_to(outside / "Mid", target_is_directory=True)
    assert sorted(t.path.name for t in read_corpus(data).tracks) == ["bass.00000.wav", "bass.00001.wav", "treble.00000.wav", "treble.00001.wav"]
    (data / "Empty").mkdir()
    (data / "Empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="Empty: label folder has no audio files"):
        read_corpus(data)


def test_labels_that_clash_by_case_are_refused_before_any_decoding(tmp_path):
    data = make_band_corpus(tmp_path / "data", per_label=2, labels=("Bass", "Treble"))
    (data / "Bass").rename(data / "BASS")
    make_band_corpus(data, per_label=2, labels=("Bass",))
    with pytest.raises(AcousticSenseError, match=r"the genres BASS, Bass differ only in case; a model's genres must differ by more"):
        train(data, tmp_path / "run", epochs=1, progress=False, **FAST)
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


def test_a_manifest_names_regular_files_and_labels_without_control_characters(tmp_path):
    import os

    good = write_audio(tmp_path / "a.wav", band_clip("Bass", 1), SR)
    os.mkfifo(tmp_path / "fifo.wav")
    cases = [
        (f"path,label\n{good},Bass\nfifo.wav,Treble\n", "fifo.wav is not a regular file"),
        (f"path,label\n{good},Bass\n/dev/zero,Treble\n", "/dev/zero is not a regular file"),
        (f'path,label\n{good},"Hip\nHop"\n', "the label 'Hip\\\\nHop' holds control characters"),
    ]
    for text, message in cases:
        (tmp_path / "m.csv").write_text(text)
        with pytest.raises(DataError, match=message):
            read_corpus(tmp_path / "m.csv")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    with pytest.raises(DataError, match="zero.json: not a regular file"):
        read_corpus(tmp_path / "zero.json")


# --- pipeline pieces --------------------------------------------------------------------


def test_training_crops_are_inference_windows():
    pre = Preprocessing(window_seconds=2.0, hop_seconds=1.0, image_size=32)
    x = torch.from_numpy(music_like(5.0, SR, seed=1)[0])
    for n in (100, pre.window_samples, pre.window_samples + 1, len(x)):
        assert window_count(n, pre) == len(frame_windows(x[:n], pre)[0])
    windows, _ = frame_windows(x, pre)
    frames = frames_per_window(pre)
    assert mel_power(windows, pre).shape[-1] == frames
    # a crop of the whole track's mel at frame k gives (nearly) the image of the window starting there
    full = mel_power(x[None], pre)[0]
    k = 50
    crop = db_to_image(power_to_db(full[None, :, k : k + frames], pre), pre)
    own = windows_to_images(x[None, k * pre.hop_length : k * pre.hop_length + pre.window_samples], pre)
    assert (crop - own).abs().mean() < 0.02  # only the edge frames differ (padding vs context)


def test_spec_augment_masks_bands_and_spans():
    torch.manual_seed(0)
    db = torch.randn(6, 40, 50)
    assert torch.equal(spec_augment(db, 0.0, 0.0), db)
    out = spec_augment(db, 0.3, 0.3)
    floor = db.amin(dim=(-2, -1), keepdim=True)
    masked = out != db
    assert torch.equal(out[masked], floor.expand_as(db)[masked])
    assert masked.any() and masked.float().mean() < 0.7
    rows, cols = masked.all(dim=2), masked.all(dim=1)  # whole mel bands, whole time spans
    assert bool((rows.any(1) | cols.any(1)).all())


def test_noise_bank_mixes_at_the_drawn_snr_even_for_long_windows():
    pre = Preprocessing(sample_rate=8000, window_seconds=60.0, n_fft=256, hop_length=128, n_mels=32)
    bank = NoiseBank(pre, seed=1, kinds=("white", "pink"))
    torch.manual_seed(0)
    power = torch.rand(3, 32, frames_per_window(pre)) + 0.5  # windows longer than NOISE_SECONDS
    noisy = bank.add(power, prob=1.0, snr_db=(10.0, 10.0))
    added = (noisy - power).mean((1, 2)) / power.mean((1, 2))
    assert torch.allclose(added, torch.full((3,), 0.1), rtol=1e-3)  # noise power 10 dB below each window's
    assert torch.equal(bank.add(power, prob=0.0), power)


def test_lr_schedule_warms_up_then_decays_to_zero():
    f = [lr_factor(s, warmup_steps=4, total_steps=20) for s in range(21)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and f[4] == 1.0
    assert all(a >= b for a, b in zip(f[4:], f[5:])) and f[12] == pytest.approx(0.5) and f[20] == 0.0


# --- learning, the bundle, evaluation ---------------------------------------------------


def test_a_tiny_vit_learns_the_classes(trained, corpus):
    config = read_config(trained)
    assert config.labels == sorted(BANDS)
    assert config.metrics["val_window_acc"] >= 0.6 and config.metrics["val_track_acc"] >= 0.6  # chance: 0.25
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3, 4, 5]
    assert set(log[0]) >= {"train_loss", "val_loss", "val_window_acc", "val_track_acc", "lr", "seconds"}
    best = max(log, key=selection_key)  # the lowest validation loss
    assert config.metrics["epoch"] == best["epoch"] and config.metrics["val_loss"] == best["val_loss"]
    p = config.provenance
    assert p["recipe"]["arch"] == "vit_ti_16" and p["recipe"]["window"] == 2.0 and p["recipe"]["epochs"] == 5
    assert p["split"] == {"train_tracks": 16, "val_tracks": 8, "train_windows": 48, "val_windows": 24, "skipped_files": 0,
                          "train_not_music": 0, "val_not_music": 0}
    assert p["data"]["tracks"] == 24 and p["torch"] == torch.__version__ and p["date"]
    assert p["data"]["source"] == corpus.name  # the corpus by name, never the build machine's absolute folder
    assert config.preprocessing.window_seconds == 2.0 and config.preprocessing.image_size == 32
    load_bundle(trained)  # strict load


def test_evaluate_on_the_held_out_tracks(trained, corpus, tmp_path):
    _, val = split_tracks(read_corpus(corpus).tracks, FAST["val_fraction"], seed=0)
    manifest = tmp_path / "val.csv"
    manifest.write_text("path,label\n" + "".join(f"{t.path},{t.label}\n" for t in val))
    report = evaluate(trained, manifest, out_dir=tmp_path / "report")

    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    png = (tmp_path / "report" / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    for level in ("track", "window"):
        assert set(report[level]) == {"n", "accuracy", "top5_accuracy", "macro_f1", "per_class", "confusion"}
        assert set(report[level]["per_class"]) == set(BANDS)
        assert report[level]["top5_accuracy"] == 1.0  # 4 classes
        assert np.array(report[level]["confusion"]["matrix"]).sum() == report[level]["n"]

    # the same numbers, computed independently through the inference API
    results = list(Classifier.from_bundle(trained, device="cpu").classify_many([t.path for t in val]))
    truth = [t.label for t in val]
    assert [p["predicted"] for p in report["predictions"]] == [r.label for r in results]
    assert report["track"]["n"] == len(val) == 8
    assert report["track"]["accuracy"] == pytest.approx(np.mean([r.label == y for r, y in zip(results, truth)]))
    window_hits = [w.label == y for r, y in zip(results, truth) for w in r.timeline if not w.silent]
    assert report["window"]["n"] == len(window_hits) == 24
    assert report["window"]["accuracy"] == pytest.approx(np.mean(window_hits))
    assert report["track"]["accuracy"] >= 0.6 and report["window"]["accuracy"] >= 0.6
    # training validation ran the same stages on the same tracks: the saved (best) epoch's numbers, once calibrated, are evaluate's
    metrics = read_config(trained).metrics["calibrated"]
    assert metrics["val_track_acc"] == round(report["track"]["accuracy"], 5)
    assert metrics["val_window_acc"] == round(report["window"]["accuracy"], 5)
    assert metrics["val_ece"] == round(report["calibration"]["track_ece"], 4)

    # this bundle has no not-music threshold (no such clips in its data), so it flags nothing: the rates are not measured, not 0
    assert read_config(trained).calibration["ood_threshold"] is None and "val_music_flagged" not in metrics
    assert report["not_music"]["threshold"] is None and report["not_music"]["music_tracks"] == 8
    assert report["not_music"]["music_flagged"] is None and report["not_music"]["by_kind"] == {}

    manifest.write_text(f"path,label\n{val[0].path},Polka\n{val[1].path},Bass\n")
    with pytest.raises(DataError, match="unknown to model bands: Polka"):
        evaluate(trained, manifest, out_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # refused before its output folder is made
    manifest.write_text("path,label\n" + "".join(f"{t.path},{t.label.upper()}\n" for t in val))  # GTZAN spells genres its own way
    assert evaluate(trained, manifest)["track"] == report["track"]

    assert report["training_corpus"] is False
    own = evaluate(trained, corpus)  # the corpus it was trained on: said so, and not recorded as held-out figures
    assert own["training_corpus"] is True
    with pytest.raises(DataError, match=r"^bands: the corpus this model was trained on \(the same folder name as its provenance records: 'bands'\); "
                                         r"its figures are not recorded as held-out ones \(a folder of other tracks: give it another name\)$"):
        record_metrics(trained, own)
    with pytest.raises(DataError, match=f"^{corpus}: the corpus this model was trained on"):  # evaluate --record: refused before any track is classified
        evaluate(trained, corpus, held_out=True)  # the path given is named, and why it counts as the training corpus


def test_the_training_corpus_is_known_by_its_name_and_manifest():
    """A held-out synth corpus copied under the training corpus' folder name is still held out (it was refused)."""
    made = {"synth_version": "3", "seed": 0, "per_genre": 3}
    provenance = {"data": {"source": "corpus", "manifest": made}}
    assert trained_on(provenance, {"source": "corpus", "manifest": made})
    assert not trained_on(provenance, {"source": "corpus", "manifest": made | {"seed": 1}})
    assert not trained_on(provenance, {"source": "other", "manifest": made})
    assert trained_on({"data": {"source": "genres"}}, {"source": "genres"})  # folders per genre: the name is all there is
    assert not trained_on({}, {"source": "genres"})  # an imported model names no corpus


def test_a_tiny_vit_learns_synthetic_genres_and_what_is_not_music(tmp_path):
    """4 rendered genres x 10 clips x 4 s plus 8 speech, noise and tone clips each, a 6-layer ViT at 64 px with
    noise augmentation, 30 CPU epochs (about a minute); scored on clips rendered with another seed."""
    genres = ("Classical", "Metal", "Reggae", "Electronic")
    manifest = make_corpus(tmp_path / "synth", per_genre=10, seconds=4.0, seed=5, genres=genres, workers=2, progress=False, not_music=8)
    held_out = make_corpus(tmp_path / "held", per_genre=4, seconds=4.0, seed=6, genres=genres, workers=2, progress=False, not_music=5)
    recipe = {**FAST, "image_size": 64, "lr": 5e-4, "val_fraction": 0.3, "noise": 0.5}
    out = train(manifest.parent, tmp_path / "run", arch="vit_mini_16", epochs=30, progress=False, **recipe)
    config = read_config(out)
    assert config.labels == list(genres)  # the manifest's genre order; _not_music is not a label
    split = config.provenance["split"]
    assert (split["val_tracks"], split["val_not_music"], split["train_not_music"]) == (12 + 7, 7, 17)  # 30 % of 24
    assert config.provenance["data"]["manifest"]["seed"] == 5 and config.provenance["recipe"]["noise"] == 0.5
    assert set(config.calibration) == {"temperature", "ood_threshold"} and 0 < config.calibration["ood_threshold"] < 1
    calibrated = config.metrics["calibrated"]
    # 12 validation music tracks: too few to fit a temperature that holds on new audio (test_calibrate and the shipped
    # model's metrics show the ECE falling on enough data), so it stays 1 and the ECE is what it was
    assert calibrated["val_music_tracks"] == 12 and config.calibration["temperature"] == 1.0
    assert calibrated["val_ece"] == calibrated["val_ece_uncalibrated"]

    report = evaluate(out, held_out.parent, out_dir=tmp_path / "report")
    assert report["track"]["n"] == 16
    assert report["track"]["accuracy"] >= 0.6 and report["window"]["accuracy"] >= 0.55  # chance: 0.25
    assert (tmp_path / "report" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "report" / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    flags = report["not_music"]
    assert flags["not_music_tracks"] == 15 and set(flags["by_kind"]) == {"speech", "noise", "tones"}
    assert flags["not_music_flagged"] >= 0.7 and flags["not_music_flagged"] >= flags["music_flagged"] + 0.4  # the score separates them


def test_cli_evaluate_and_train_errors(trained, corpus, tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(trained), str(corpus), "--device", "cpu", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "24 tracks scored" in result.output and "track   accuracy" in result.output
    assert (tmp_path / "r" / "report.json").is_file() and (tmp_path / "r" / "confusion.png").is_file()
    half = make_band_corpus(tmp_path / "half", per_label=1, labels=("Bass", "Mid"))
    (half / "Mid" / "mid.00000.wav").write_bytes(b"RIFF" + bytes(40))  # Mid's only track does not decode
    result = CliRunner().invoke(app, ["evaluate", str(trained), str(half), "--device", "cpu"])
    assert result.exit_code == 0 and "1 tracks scored (1 failed" in result.output
    assert "warning: no track of Mid could be scored (each failed or was silent)" in result.output

    copy = shutil.copytree(trained, tmp_path / "copy")  # --record says what it writes and whose figures it replaces
    for said in ("(metrics.held_out)\n", "(metrics.held_out), replacing those of 1 track of half\n"):
        result = CliRunner().invoke(app, ["evaluate", str(copy), str(half), "--device", "cpu", "--record"])
        assert result.exit_code == 0 and result.output.endswith(said) and read_config(copy).metrics["held_out"]["tracks"] == 1

    result = runner.invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "error:" in result.output and "no such file" in result.output
    result = runner.invoke(app, ["train", str(corpus), "--out", str(trained)])
    assert result.exit_code == 2 and "already holds a training run" in result.output
    music = tmp_path / "music"  # a folder of other things: the run's files were dropped among them
    music.mkdir()
    (music / "song.ogg").write_bytes(b"OggS")
    result = runner.invoke(app, ["train", str(corpus), "--out", str(music)])
    assert result.exit_code == 2 and f"{music}: exists and is not an empty folder; choose a new one" in result.output
    assert [p.name for p in music.iterdir()] == ["song.ogg"]
    one = make_band_corpus(tmp_path / "one", per_label=2, labels=("Bass",))
    result = runner.invoke(app, ["train", str(one), "--out", str(tmp_path / "z")])
    assert result.exit_code == 2 and "only one genre (Bass); a classifier needs tracks of at least two" in result.output
    assert not (tmp_path / "z").exists()

    def interrupted(*args, **kwargs):
        (tmp_path / "y").mkdir()
        (tmp_path / "y" / "checkpoint.pt").write_bytes(b"")
        raise train_module.Interrupted(3)

    monkeypatch.setattr(train_module, "train", interrupted)
    result = runner.invoke(app, ["train", str(corpus), "--out", str(tmp_path / "y")])
    assert result.exit_code == 130 and result.output.splitlines() == [  # one line (there were two)
        f"error: interrupted ({tmp_path / 'y' / 'checkpoint.pt'} holds epoch 3); continue with: acousticsense train {corpus} --out {tmp_path / 'y'} --resume"]


# --- resume -----------------------------------------------------------------------------


def test_a_run_stopped_before_its_first_epoch_leaves_its_folder_as_new(corpus, tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(ParameterError, match=r"device 'bogus': not a device name \(cpu, cuda or cuda:N\)"):
        train(corpus, tmp_path / "run", epochs=1, progress=False, **(FAST | {"device": "bogus"}))
    assert not (tmp_path / "run").exists()  # refused before the folder is made
    monkeypatch.setattr(train_module, "db_to_image", stop)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(corpus, tmp_path / "run", epochs=1, progress=False, **FAST)
    assert stopped.value.epoch == 0 and list((tmp_path / "run").iterdir()) == []  # no empty log that refused the next try
    monkeypatch.undo()
    monkeypatch.setattr(train_module, "atomic_save", stop)  # Ctrl-C after the first epoch's bundle, before its checkpoint
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(corpus, tmp_path / "run", epochs=1, progress=False, **FAST)
    assert stopped.value.epoch == 0 and list((tmp_path / "run").iterdir()) == []  # its bundle had refused both a new try and --resume
    monkeypatch.undo()
    assert (train(corpus, tmp_path / "run", epochs=1, progress=False, **FAST) / "model.safetensors").is_file()


def test_early_stopping_and_a_genre_without_validation_are_said(tmp_path, monkeypatch, capsys):
    data = make_band_corpus(tmp_path / "data", per_label=3, labels=("Bass", "Treble"))
    make_band_corpus(data, per_label=1, labels=("Mid",))
    monkeypatch.setattr(train_module, "_validate", lambda clf, val: {"val_loss": 1.0, "val_window_acc": 0.5, "val_track_acc": 0.5})
    train(data, tmp_path / "run", epochs=4, progress=False, **(FAST | {"patience": 1}))
    err = capsys.readouterr().err
    assert "warning: no validation track for Mid (a genre needs 2 tracks to hold one out)" in err
    assert "stopped early: no better validation result in the 1 epochs since epoch 1 (--patience; 0 = never)" in err
    assert len((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()) == 2


def test_resuming_with_fewer_readable_tracks_keeps_the_schedule_by_epochs(corpus, tmp_path, capsys):
    data = shutil.copytree(corpus, tmp_path / "data")
    run = train(data, tmp_path / "run", epochs=2, progress=False, **FAST)
    one_per_genre = dict((label, Path(p)) for p, label in torch.load(run / "checkpoint.pt", weights_only=True)["split"]["train"])
    for path in one_per_genre.values():
        path.unlink()
    train(data, run, resume=True, epochs=4, progress=False)
    assert "warning: the run's tracks are not all as readable as when it started (train tracks 16 -> 12)" in capsys.readouterr().err
    steps = 12 * 3 // FAST["batch_size"]  # 12 tracks of 4 s: 3 windows each (2 s, hop 1 s); it was 16 tracks, 6 steps
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[2]["lr"] == pytest.approx(FAST["lr"] * lr_factor(3 * steps, steps, 4 * steps))  # 3 epochs of 4 done: was off by a third


def test_resume_after_an_interruption_equals_an_uninterrupted_run(corpus, tmp_path, monkeypatch):
    recipe = dict(epochs=2, progress=False, **FAST)
    straight = train(corpus, tmp_path / "straight", **recipe)

    calls = {"n": 0}
    real = train_module.db_to_image

    def stop_in_epoch_2(*args, **kwargs):  # called once per training batch; 6 batches an epoch
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "db_to_image", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(corpus, tmp_path / "resumed", **recipe)
    monkeypatch.undo()
    log = [json.loads(line)["epoch"] for line in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert log == [1] and stopped.value.epoch == 1
    with pytest.raises(TrainError, match="cannot change lr"):
        train(corpus, tmp_path / "resumed", resume=True, lr=0.5, progress=False)
    for bad, message in ((dict(window=0.1), "window must be from 0.5 to 60 seconds, as predict allows"), (dict(hop=1e4), "hop must be from 0.1 to 3600"), (dict(window=math.nan), "window must be from")):
        with pytest.raises(TrainError, match=message):  # were taken as the bundle's (a window of 0.05 s, a hop of 1000 s)
            TrainConfig(**bad)
    with pytest.raises(TrainError, match="--epochs 1: a resumed run may raise its epochs \\(2\\), not lower them"):
        train(corpus, tmp_path / "resumed", resume=True, epochs=1, progress=False)
    elsewhere = make_band_corpus(tmp_path / "other", per_label=2)  # its split lists the first corpus' tracks
    with pytest.raises(TrainError, match=f"this run trains on {corpus.resolve()}, not {elsewhere}; resume it with that DATA"):
        train(elsewhere, tmp_path / "resumed", resume=True, progress=False)
    split = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["split"]
    assert all(Path(p).is_absolute() for side in split.values() for p, _ in side)  # found from any working directory

    resumed = train(corpus, tmp_path / "resumed", resume=True, progress=False)
    log = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2]
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(resumed / "checkpoint.pt", weights_only=False)
    assert a["state"]["epoch"] == b["state"]["epoch"] == 2
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6)
    straight_log = [json.loads(line) for line in (straight / "train_log.jsonl").read_text().splitlines()]
    assert [e["val_loss"] for e in log] == pytest.approx([e["val_loss"] for e in straight_log], abs=1e-4)

    # a finished run can be extended: the schedule stretches to the new epoch count
    train(corpus, straight, resume=True, epochs=4, progress=False)
    log = [json.loads(line) for line in (straight / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3, 4]
    assert log[1]["lr"] == 0.0 and log[2]["lr"] == pytest.approx(1e-3 * lr_factor(18, 6, 24)) and log[3]["lr"] == 0.0


# --- initialisation ---------------------------------------------------------------------


def test_init_from_a_bundle_keeps_or_replaces_the_head(tiny_bundle):
    base = load_bundle(tiny_bundle)
    labels = base.config.labels  # Blues, Jazz, Metal, Reggae
    model, config, info = initial_model(TrainConfig(init=str(tiny_bundle)), list(reversed(labels)), progress=False)
    assert config.labels == labels and not info["head_replaced"]  # same classes: the bundle's order and head
    assert config.preprocessing == base.config.preprocessing  # kept unless overridden
    for key, value in base.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)

    model, config, info = initial_model(TrainConfig(init=str(tiny_bundle), window=1.5), ["Polka", "Jazz"], progress=False)
    assert config.labels == ["Polka", "Jazz"] and info["head_replaced"]
    assert model.heads.head.weight.shape == (2, 192) and config.preprocessing.window_seconds == 1.5
    for key, value in base.model.state_dict().items():
        if not key.startswith("heads."):
            assert torch.equal(model.state_dict()[key], value)
    with pytest.raises(TrainError, match="cannot be fine-tuned as vit_s_16"):
        initial_model(TrainConfig(init=str(tiny_bundle), arch="vit_s_16"), labels, progress=False)


def test_init_imagenet_offline_is_a_clear_error(monkeypatch, corpus, tmp_path):
    def offline(url, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(TrainError) as e:
        train(corpus, tmp_path / "run", init="imagenet", arch="vit_b_16", image_size=32, progress=False)
    message = str(e.value)
    assert "https://download.pytorch.org/models/vit_b_16-c867db91.pth" in message and "--init none" in message
    assert "name resolution" in message and not (tmp_path / "run").exists()
    with pytest.raises(TrainError, match="vit_b_16 only"):
        train(corpus, tmp_path / "run", init="imagenet", arch="vit_ti_16", progress=False)


def test_init_imagenet_resizes_position_embeddings(monkeypatch):
    from torchvision.models import vit_b_16

    torch.manual_seed(0)
    published = vit_b_16().state_dict()  # stands in for the ImageNet weights (224 px, 1000 classes)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kwargs: published)
    model, config, info = initial_model(TrainConfig(init="imagenet", arch="vit_b_16", image_size=32), ["a", "b", "c"], progress=False)
    state = model.state_dict()
    assert state["encoder.pos_embedding"].shape == (1, 5, 768) and state["heads.head.weight"].shape == (3, 768)
    assert torch.equal(state["encoder.pos_embedding"][:, 0], published["encoder.pos_embedding"][:, 0])  # class token's
    assert torch.equal(state["conv_proj.weight"], published["conv_proj.weight"])
    assert config.preprocessing.mean == (0.485, 0.456, 0.406) and info == {"from": "imagenet"}


@pytest.mark.parametrize("bad,message", [
    (dict(mixup=-1.0), "mixup must be a number >= 0, not -1.0"),
    (dict(weight_decay=math.inf), "weight_decay must be a number >= 0, not inf"),
    (dict(val_fraction=1.0), "val_fraction must be a fraction in [0, 1), not 1.0"),
    (dict(epochs=2.5), "epochs must be a whole number from 1 to"),
    (dict(arch="vit_zz"), "unknown architecture 'vit_zz'; known: "),
])
def test_a_bad_training_option_is_named_with_its_value(bad, message):
    with pytest.raises(TrainError, match=re.escape(message)):
        TrainConfig(**bad)
