"""Synthetic corpus: deterministic audio, genre features in the arrangement, GTZAN layout, resuming, CLI."""

from __future__ import annotations

import csv
import json
import wave

import numpy as np
import pytest
from typer.testing import CliRunner

from acousticsense.cli import app
from acousticsense.errors import ParameterError
from acousticsense.synth import GENRES, SAMPLE_RATE, STYLES, SYNTH_VERSION, TRAIN_SOUNDFONTS, clip_params, clip_seed, make_corpus, parse_genres, render_clip
from acousticsense.synth.arrange import _arrange, _streams
from acousticsense.synth.theory import (
    CHH, CLAP, CLAVES, COMP_RHYTHMS, CONGA_OPEN, DRUM_PATTERNS, KICK, NOTE_NAMES, OHH, RIM, SNARE, scale_fits,
)

SR = SAMPLE_RATE
N_PLANS = 30  # parameter sets per genre for the feature tests (cheap: nothing is rendered)
PLANS = {g: [clip_params(g, clip_seed(1, g, i), 12.0) for i in range(N_PLANS)] for g in GENRES}


def onsets(pattern: str, note: int) -> list[int]:
    """Step indices of a drum note in the first bar of a groove."""
    beats, spb, rows = DRUM_PATTERNS[pattern]
    return [i for i, c in enumerate(rows.get(note, "")[:beats * spb]) if c != "."]


def read_wav(path) -> tuple[np.ndarray, tuple]:
    with wave.open(str(path), "rb") as f:
        info = (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes())
        return np.frombuffer(f.readframes(f.getnframes()), "<i2"), info


@pytest.fixture(scope="module")
def clips() -> dict[str, tuple[np.ndarray, dict]]:
    return {g: render_clip(g, clip_seed(0, g, 0), 2.0) for g in GENRES}


def test_every_genre_renders_valid_audio(clips):
    assert tuple(clips) == GENRES == tuple(STYLES)
    for genre, (audio, params) in clips.items():
        assert audio.dtype == np.float32 and audio.shape == (2 * SR,)
        assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
        assert np.sqrt(np.mean(audio ** 2)) > 0.02, genre  # loudness target is -26..-14 dBFS
        assert np.abs(audio[: SR // 2]).max() > 0.05, genre  # music from the first moment (mid-song excerpt)
        assert json.loads(json.dumps(params)) == params
        assert (params["genre"], params["synth_version"], params["sample_rate"]) == (genre, SYNTH_VERSION, SR)
        lo, hi = STYLES[genre].tempo
        assert lo <= params["tempo"] <= hi


def test_same_seed_same_audio_other_seed_other_audio():
    a, pa = render_clip("Jazz", 42, 1.5)
    b, pb = render_clip("Jazz", 42, 1.5)
    c, pc = render_clip("Jazz", 43, 1.5)
    assert np.array_equal(a, b) and pa == pb
    assert a.shape == c.shape and not np.allclose(a, c) and pa != pc


def test_params_regenerate_without_rendering(clips):
    audio, params = clips["Latin"]
    assert clip_params("Latin", params["rng_seed"], 2.0) == params


def test_clip_seed_mixes_seed_genre_and_index():
    seeds = {clip_seed(s, g, i) for s in (0, 1) for g in GENRES for i in range(3)}
    assert len(seeds) == 2 * len(GENRES) * 3
    assert clip_seed(7, "Rap", 5) == clip_seed(7, "Rap", 5)


def test_style_table_is_consistent():
    for name, (beats, spb, rows) in DRUM_PATTERNS.items():
        assert all(len(row) % (beats * spb) == 0 and set(row) <= set(".Xxog?r") for row in rows.values()), name
    for genre, plans in PLANS.items():
        style = STYLES[genre]
        for p in plans:
            assert style.tempo[0] <= p["tempo"] <= style.tempo[1]
            assert p["progression"] in style.progressions and scale_fits(p["scale"], p["progression"])
            assert (p["drums"] or {"pattern": ""})["pattern"] in style.drums
            pools = {(part.role, prog) for part in style.parts for prog in part.programs}
            assert all((q["role"], q["program"]) in pools for q in p["parts"])
        tempos = [p["tempo"] for p in plans]  # tempo, key and instrumentation vary inside a genre
        assert max(tempos) - min(tempos) > 0.3 * (style.tempo[1] - style.tempo[0])
        assert len({p["key"] for p in plans}) >= 6
        assert len({tuple(q["program"] for q in p["parts"]) for p in plans}) >= 10


def test_blues_is_a_12_bar_dominant_shuffle():
    for p in PLANS["Blues"]:
        roots = {(NOTE_NAMES.index(c[:-1]) - p["tonic"]) % 12 for c in p["chords"]}
        assert len(p["chords"]) == 12 and all(c.endswith("7") for c in p["chords"]) and roots == {0, 5, 7}
        assert DRUM_PATTERNS[p["drums"]["pattern"]][1] == 3 and p["swing"] >= 0.6  # triplet grid, swung 8ths


def test_jazz_is_swung_ii_V_I_with_extensions_and_walking_bass():
    for p in PLANS["Jazz"]:
        assert p["progression"].startswith(("ii-V", "minor_ii-V", "I-vi-ii-V"))
        assert all(q not in ("maj", "min") for q in p["qualities"])  # sevenths and beyond only
        assert {q["role"]: q["pattern"] for q in p["parts"]}["bass"] == "walking"
        assert DRUM_PATTERNS[p["drums"]["pattern"]][1] == 3
    assert any(q in ("9", "13", "m9", "m11", "maj9", "6") for p in PLANS["Jazz"] for q in p["qualities"])


@pytest.mark.parametrize("genre", ["Electronic", "Disco"])
def test_four_on_the_floor_with_offbeat_open_hats(genre):
    for p in PLANS[genre]:
        pattern = p["drums"]["pattern"]
        assert onsets(pattern, KICK) == [0, 4, 8, 12] and onsets(pattern, OHH) == [2, 6, 10, 14]


def test_reggae_one_drop_with_skank_off_the_beat():
    for p in PLANS["Reggae"]:
        assert onsets(p["drums"]["pattern"], KICK) == [8]  # nothing on one: the drop is on three
        assert {q["role"]: q["pattern"] for q in p["parts"]}["skank"] == "skank"
    assert [pos for pos, _, _ in COMP_RHYTHMS["skank"][1]] == [1, 3]


def test_metal_is_fast_distorted_with_double_kick():
    for p in PLANS["Metal"]:
        kicks = onsets(p["drums"]["pattern"], KICK)
        assert p["tempo"] >= 140 and any(b - a == 1 for a, b in zip(kicks, kicks[1:]))  # consecutive 16ths
        assert {q["role"]: q["program"] for q in p["parts"]}["guitar"] == 30  # Distortion Guitar
    assert min(p["tempo"] for p in PLANS["Metal"]) > np.median([p["tempo"] for p in PLANS["Rock"]])


def test_classical_is_strings_piano_and_winds_without_drums():
    orchestral = set(range(0, 8)) | set(range(40, 50)) | set(range(56, 62)) | set(range(68, 76))
    for p in PLANS["Classical"]:
        assert p["drums"] is None and {q["program"] for q in p["parts"]} <= orchestral
    assert {p["meter"] for p in PLANS["Classical"]} == {"3/4", "4/4"}


def test_latin_has_clave_congas_and_montuno():
    for p in PLANS["Latin"]:
        pattern = p["drums"]["pattern"]
        assert "clave" in pattern and (onsets(pattern, CLAVES) or onsets(pattern, RIM))
        assert {q["role"]: q["pattern"] for q in p["parts"]}["piano"] == "montuno"
    son = DRUM_PATTERNS["son_clave_32"][2]
    assert [i for i, c in enumerate(son[CLAVES]) if c != "."] == [0, 6, 12, 20, 24] and CONGA_OPEN in son


def test_rap_is_half_time_trap_with_808_and_flow_hiphop_is_swung_boom_bap():
    for p in PLANS["Rap"]:
        pattern, roles = p["drums"]["pattern"], {q["role"]: q["pattern"] for q in p["parts"]}
        assert onsets(pattern, CLAP) == [8] and "r" in DRUM_PATTERNS[pattern][2][CHH]  # backbeat on 3, hat rolls
        assert roles["bass"] == "sub808" and roles["rap"] == "rap"
    for p in PLANS["Hip-Hop"]:
        snares = set(onsets(p["drums"]["pattern"], SNARE))  # backbeat on 2 and 4 (plus ghost notes)
        assert {4, 12} <= snares and not {0, 8} & snares and p["swing"] > 0.53 and p["swing_unit"] == "16th"
    assert max(p["tempo"] for p in PLANS["Hip-Hop"]) < min(p["tempo"] for p in PLANS["Rap"])


def test_country_train_beat_and_folk_acoustic():
    for p in PLANS["Country"]:
        guitar = {q["role"]: q["program"] for q in p["parts"]}["guitar"]
        assert guitar in (24, 25, 27) and p["drums"]["pattern"] in ("train", "train_accent", "two_step")
    trains = [p for p in PLANS["Country"] if p["drums"]["pattern"].startswith("train")]
    assert len(trains) > N_PLANS / 2 and all(len(onsets(p["drums"]["pattern"], SNARE)) == 16 for p in trains)
    assert any(q["program"] == 110 for p in PLANS["Country"] for q in p["parts"])  # fiddle
    assert sum(p["drums"] is None for p in PLANS["Folk"]) >= N_PLANS / 5  # often no kit at all


def test_world_is_modal_with_world_instruments():
    world_leads = {104, 106, 107, 75, 77, 111, 109, 79}
    for p in PLANS["World"]:
        assert p["progression"].startswith("drone") and p["scale"] not in ("major", "minor")
        assert {q["role"]: q["program"] for q in p["parts"]}["lead"] in world_leads


def test_pop_uses_the_pop_progressions():
    for p in PLANS["Pop"]:
        roots = [(NOTE_NAMES.index(c.rstrip("m")) - p["tonic"]) % 12 for c in p["chords"]]
        assert sorted(roots) == [0, 5, 7, 9] and p["mode"] == "major"


def test_arrangement_realises_the_groove():
    """Kick onsets of a quantised house clip are a beat apart; a one-drop kick lands on beat three."""
    for genre, beat_in_bar in (("Electronic", None), ("Reggae", 2.0)):
        seed = clip_seed(2, genre, 0)
        params = clip_params(genre, seed, 6.0)
        stems = _arrange(params, _streams(seed)[1])
        kicks = np.array(sorted(n.start for n in stems[0].inst.notes if n.pitch == KICK))
        beat = 60 / params["tempo"]
        if beat_in_bar is None:
            assert params["humanize"]["timing_ms"] == 0 and np.allclose(np.diff(kicks), beat)
        else:
            phase = (kicks / beat) % 4
            assert np.all(np.abs(phase - beat_in_bar) < 0.1)


def test_make_corpus_layout_manifest_and_resume(tmp_path):
    out = tmp_path / "corpus"
    args = dict(per_genre=2, seconds=2.0, seed=3, genres=["Hip-Hop", "R&B"], progress=False)
    manifest = make_corpus(out, workers=2, **args)
    wavs = ["Hip-Hop/hiphop.00000.wav", "Hip-Hop/hiphop.00001.wav", "R&B/rb.00000.wav", "R&B/rb.00001.wav"]
    assert manifest == out / "manifest.csv"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == wavs and not list(out.rglob("*.tmp"))
    assert all(read_wav(out / rel)[1] == (1, 2, SR, 2 * SR) for rel in wavs)

    rows = list(csv.DictReader(manifest.open()))
    assert [r["path"] for r in rows] == wavs and [r["label"] for r in rows] == ["Hip-Hop"] * 2 + ["R&B"] * 2
    assert all(r["seed"] == "3" and float(r["tempo"]) > 0 for r in rows)
    meta = json.loads((out / "manifest.json").read_text())
    assert {k: meta[k] for k in ("synth_version", "seed", "per_genre", "seconds", "sample_rate", "soundfonts", "genres", "complete")} == {
        "synth_version": SYNTH_VERSION, "seed": 3, "per_genre": 2, "seconds": 2.0, "sample_rate": SR, "soundfonts": list(TRAIN_SOUNDFONTS),
        "genres": ["Hip-Hop", "R&B"], "complete": True}
    assert [c["path"] for c in meta["clips"]] == wavs

    # the worker processes wrote exactly what render_clip makes here, and recorded its parameters
    audio, params = render_clip("R&B", clip_seed(3, "R&B", 1), 2.0)
    # bit for bit: FluidSynth renders in float, so its per-process int16 dither never enters
    assert np.array_equal(read_wav(out / wavs[3])[0], np.round(audio * 32767).astype(np.int16))
    assert {k: v for k, v in meta["clips"][3].items() if k not in ("path", "index")} == params

    # resume: an interrupted run lost one clip; only that one is rendered again, identically
    before = {rel: (out / rel).stat().st_mtime_ns for rel in wavs}
    lost = (out / wavs[1]).read_bytes()
    (out / wavs[1]).unlink()
    csv_text = manifest.read_text()
    make_corpus(out, workers=1, **args)
    assert all((out / rel).stat().st_mtime_ns == before[rel] for rel in wavs if rel != wavs[1])
    assert (out / wavs[1]).read_bytes() == lost and manifest.read_text() == csv_text

    with pytest.raises(ParameterError, match="other settings"):
        make_corpus(out, workers=1, **{**args, "seed": 4})
    for changes in ({"genres": ["Hip-Hop"]}, {"per_genre": 1}):  # it had shrunk the manifest, leaving clips it no longer listed
        with pytest.raises(ParameterError, match="resume with those genres and at least as many clips"):
            make_corpus(out, workers=1, **{**args, **changes})
    assert manifest.read_text() == csv_text
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.csv").write_text("path,label\nsong.wav,Jazz\n")  # a user's own corpus is not taken over
    with pytest.raises(ParameterError, match="holds files synth did not make"):
        make_corpus(mine, workers=1, **args)
    (mine / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ParameterError, match="its manifest.json was not written by synth"):
        make_corpus(mine, workers=1, **args)
    assert (mine / "manifest.csv").read_text() == "path,label\nsong.wav,Jazz\n"
    older = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**older, "synth_version": "2"}))  # clips of another renderer
    with pytest.raises(ParameterError, match='other settings .*"synth_version": "2"'):
        make_corpus(out, workers=1, **args)  # never resumed into a mix of the two


def test_unknown_genre_is_refused(tmp_path):
    with pytest.raises(ParameterError, match=r"'Polka'.*valid genres: Blues, Classical, Jazz"):
        make_corpus(tmp_path / "c", 1, genres=["Blues", "Polka"], progress=False)
    assert not (tmp_path / "c").exists()
    with pytest.raises(ParameterError, match="valid genres"):
        render_clip("polka", 0, 1.0)
    assert parse_genres(["hiphop", "r&b", "RB", "Metal"]) == ("Hip-Hop", "R&B", "Metal")


def test_missing_espeak_is_reported_before_anything_is_written(tmp_path, monkeypatch):
    import acousticsense.synth.corpus as corpus

    monkeypatch.setattr(corpus, "have_espeak", lambda: False)
    with pytest.raises(ParameterError, match=r"^Rap need espeak-ng.*apt-get install espeak-ng"):
        make_corpus(tmp_path / "c", 1, seconds=1.0, genres=["Blues", "Rap"], progress=False, workers=1)
    with pytest.raises(ParameterError, match="not-music speech need espeak-ng"):
        make_corpus(tmp_path / "c", 1, seconds=1.0, genres=["Blues"], not_music=1, progress=False, workers=1)
    assert not (tmp_path / "c").exists()
    make_corpus(tmp_path / "c", 1, seconds=1.0, genres=["Blues"], progress=False, workers=1)  # no voice: no espeak-ng needed
    assert len(list((tmp_path / "c").rglob("*.wav"))) == 1


def test_cli_synth(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["synth", str(tmp_path / "c"), "--per-genre", "1", "--seconds", "1",
                             "--genres", "Blues,Jazz", "--genres", "Rap", "--workers", "1"])
    assert ok.exit_code == 0, ok.output
    assert "manifest.csv" in ok.output and len(list((tmp_path / "c").rglob("*.wav"))) == 3
    bad = runner.invoke(app, ["synth", str(tmp_path / "d"), "--genres", "Blues,Polka"])
    assert bad.exit_code == 2 and "Polka" in bad.output and "Traceback" not in bad.output
    huge = runner.invoke(app, ["synth", str(tmp_path / "d"), "--seconds", "100000"])  # one clip is rendered in memory: 24 GB, killed
    assert huge.exit_code == 2 and "100000.0 is not in the range 0.5<=x<=600.0" in huge.stderr
    with pytest.raises(ParameterError, match=r"^seconds must be a number from 0.5 to 600 s, not 100000$"):
        make_corpus(tmp_path / "d", 1, seconds=100000, genres=["Blues"], progress=False, workers=1)
    assert not (tmp_path / "d").exists()


def test_cli_synth_soundfonts_and_not_music(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["synth", str(tmp_path / "c"), "--per-genre", "1", "--seconds", "1", "--genres", "Jazz",
                             "--soundfont", "TimGM6mb", "--not-music", "2", "--workers", "1"])
    assert ok.exit_code == 0, ok.output
    meta = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert meta["soundfonts"] == ["TimGM6mb"] and meta["not_music"] == 2
    assert sorted(p.name for p in (tmp_path / "c" / "_not_music").iterdir()) == [
        f"{k}.{i:05d}.wav" for k in ("noise", "speech", "tones") for i in range(2)]
    rows = list(csv.DictReader((tmp_path / "c" / "manifest.csv").open()))
    assert [r["label"] for r in rows] == ["Jazz"] + ["_not_music"] * 6 and rows[0]["soundfont"] == "TimGM6mb"
    for bad, reason in ((str(tmp_path / "x.sf2"), "not a SoundFont file"), ("/etc/passwd", "not a SoundFont file")):
        out = runner.invoke(app, ["synth", str(tmp_path / "d"), "--genres", "Jazz", "--soundfont", bad])
        assert out.exit_code == 2 and reason in out.output and "Traceback" not in out.output
