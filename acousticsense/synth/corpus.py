"""Corpus bookkeeping: render many clips into folders, resumably, with a manifest."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import wave
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ..data import NOT_MUSIC
from ..errors import ParameterError, output_folder
from ..files import replacing, write_whole
from ..options import MAX_SYNTH_CLIPS, SYNTH_SECONDS_RANGE, in_range, whole_in_range
from ..speech import have_espeak
from .arrange import SAMPLE_RATE, SYNTH_VERSION, clip_params, clip_seed
from .not_music import KINDS, not_music_seed, render_not_music
from .render import render_clip
from .soundfonts import TRAIN_SOUNDFONTS, soundfont_names
from .styles import GENRES, STYLES, parse_genres, slug

MANIFEST_COLUMNS = ("path", "label", "index", "seed", "rng_seed", "tempo", "meter", "key", "mode", "scale", "progression",
                    "swing", "drums", "programs", "soundfont", "voices", "drive", "pump", "lofi", "reverb_rt60",
                    "noise_snr_db", "loudness_dbfs", "kind")


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV written under a temporary name and moved into place, so a crash never leaves half a file."""
    with replacing(path) as tmp, wave.open(str(tmp), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(np.round(np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def _is_complete(path: Path, frames: int, sample_rate: int) -> bool:
    try:
        with wave.open(str(path), "rb") as f:
            return (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()) == (1, 2, sample_rate, frames)
    except (OSError, EOFError, wave.Error):
        return False


def _write_clip(job: tuple, path: Path) -> dict:
    """Render one clip -- (genre, rng_seed, seconds, soundfonts) or (NOT_MUSIC, kind, rng_seed, seconds) -- to path."""
    if job[0] == NOT_MUSIC:
        audio, params = render_not_music(job[1], job[2], job[3], SAMPLE_RATE)
    else:
        audio, params = render_clip(job[0], job[1], job[2], SAMPLE_RATE, job[3])
    _write_wav(path, audio, SAMPLE_RATE)
    return params


def _manifest_row(rel: str, params: dict, seed: int, index: int) -> dict:
    if params.get("label") == NOT_MUSIC:
        return {"path": rel, "label": NOT_MUSIC, "index": index, "seed": seed, "rng_seed": params["rng_seed"],
                "kind": params["kind"], "noise_snr_db": params.get("snr_db", "")}
    prod, voices = params["production"], [p["voice"]["kind"] for p in params["parts"] if p["voice"]]
    return {"path": rel, "label": params["genre"], "index": index, "seed": seed, "rng_seed": params["rng_seed"],
            "tempo": params["tempo"], "meter": params["meter"], "key": params["key"], "mode": params["mode"],
            "scale": params["scale"], "progression": params["progression"], "swing": params["swing"],
            "drums": params["drums"]["pattern"] if params["drums"] else "",
            "programs": " ".join(f"{p['role']}:{p['program']}" for p in params["parts"]),
            "soundfont": params["soundfont"], "voices": " ".join(voices), "drive": prod["drive"],
            "pump": prod["pump_depth"], "lofi": int(prod["lofi"] is not None), "kind": "music",
            **{k: params["effects"][k] for k in ("reverb_rt60", "noise_snr_db", "loudness_dbfs")}}


def make_corpus(out_dir: str | os.PathLike, per_genre: int, seconds: float = 12.0, seed: int = 0,
                genres: Sequence[str] = GENRES, workers: int | None = None, progress: bool = True,
                soundfonts: Sequence[str] = TRAIN_SOUNDFONTS, not_music: int = 0) -> Path:
    """Render `per_genre` clips per genre into out_dir/<Genre>/<slug>.<index:05d>.wav plus manifest.csv/json, and
    `not_music` clips of each not-music kind (speech, noise, tones) into out_dir/_not_music/<kind>.<index:05d>.wav.

    Clip i of a genre depends only on (seed, genre, i), so a larger `per_genre` extends a corpus. Each clip and
    part draws its SoundFont from `soundfonts` (registry names or .sf2/.sf3 paths; see `soundfonts.SOUNDFONTS`).

    Resumable: music clips already on disk (complete WAVs) are kept and their parameters regenerated from the seed
    (not-music clips are cheap and rendered again). Refuses to mix settings with an earlier run in the same folder.
    Workers are spawned processes, so scripts calling this need the usual ``if __name__ == "__main__":`` guard.
    Returns the manifest.csv path.
    """
    names = parse_genres(genres)
    whole_in_range("per_genre", per_genre, 1, MAX_SYNTH_CLIPS)
    whole_in_range("not_music", not_music, 0, MAX_SYNTH_CLIPS)
    whole_in_range("seed", seed, 0, 2**63 - 1)
    in_range("seconds", seconds, SYNTH_SECONDS_RANGE)
    spoken = [g for g in names if any(part.role == "rap" for part in STYLES[g].parts)] + ["not-music speech"] * bool(not_music)
    if spoken and not have_espeak():  # before anything is written, not in a worker half-way through
        raise ParameterError(f"{', '.join(dict.fromkeys(spoken))} need espeak-ng for their voices: apt-get install espeak-ng")
    pool, out = soundfont_names(soundfonts), Path(out_dir)
    config = {"synth_version": SYNTH_VERSION, "seed": seed, "seconds": float(seconds), "sample_rate": SAMPLE_RATE,
              "soundfonts": list(pool)}
    manifest_json = out / "manifest.json"
    if manifest_json.exists():
        try:
            old = json.loads(manifest_json.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            old = None
        if not isinstance(old, dict) or "synth_version" not in old:
            raise ParameterError(f"{out}: its manifest.json was not written by synth; use a new folder")
        if {k: old.get(k) for k in config} != config:
            raise ParameterError(f"{out} holds a corpus made with other settings "
                                 f"({json.dumps({k: old.get(k) for k in config})}); use a new folder")
        if old.get("genres") != list(names) or per_genre < old.get("per_genre", 0) or not_music < old.get("not_music", 0):
            raise ParameterError(f"{out} holds {old.get('per_genre')} clips of {', '.join(map(str, old.get('genres') or []))} and "
                                 f"{old.get('not_music')} not-music ones: resume with those genres and at least as many clips, or use a new folder")
    elif out.is_dir() and any(out.iterdir()):
        raise ParameterError(f"{out}: holds files synth did not make (no manifest.json of its own); use a new or empty folder")
    output_folder(out)
    header = {**config, "per_genre": per_genre, "not_music": not_music, "genres": list(names)}
    write_whole(manifest_json, json.dumps({**header, "complete": False, "clips": []}, indent=1).encode())

    frames, params, todo = round(seconds * SAMPLE_RATE), {}, {}
    rels = []
    for genre in names:
        (out / genre).mkdir(exist_ok=True)
        for i in range(per_genre):
            rel, rng_seed = f"{genre}/{slug(genre)}.{i:05d}.wav", clip_seed(seed, genre, i)
            rels.append((rel, i))
            if _is_complete(out / rel, frames, SAMPLE_RATE):
                params[rel] = clip_params(genre, rng_seed, seconds, SAMPLE_RATE, pool)
            else:
                todo[rel] = (genre, rng_seed, seconds, pool)
    if not_music:
        (out / NOT_MUSIC).mkdir(exist_ok=True)
    for kind in KINDS if not_music else ():
        for i in range(not_music):
            rel = f"{NOT_MUSIC}/{kind}.{i:05d}.wav"
            rels.append((rel, i))
            todo[rel] = (NOT_MUSIC, kind, not_music_seed(seed, kind, i), seconds)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    with tqdm(total=len(params) + len(todo), initial=len(params), desc="synth", unit="clip", disable=not progress) as bar:
        if workers == 1:
            for rel, job in todo.items():
                params[rel] = _write_clip(job, out / rel)
                bar.update()
        else:
            # spawn, not fork: a child forked after FluidSynth ran in the parent deadlocks
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as executor:
                futures = {executor.submit(_write_clip, job, out / rel): rel for rel, job in todo.items()}
                try:
                    for fut in as_completed(futures):
                        params[futures[fut]] = fut.result()
                        bar.update()
                except BaseException:
                    executor.shutdown(cancel_futures=True)
                    raise

    manifest_csv = out / "manifest.csv"
    rows = [_manifest_row(rel, params[rel], seed, i) for rel, i in rels]
    with replacing(manifest_csv) as tmp, open(tmp, "x", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    clips = [{"path": rel, "index": i, **params[rel]} for rel, i in rels]
    write_whole(manifest_json, json.dumps({**header, "complete": True, "clips": clips}, indent=1).encode())
    return manifest_csv
