"""Labelled tracks decoded for training: random window crops of each track's whole mel (training) and the
inference stages' own Features (validation, so it frames and scores tracks exactly as ``predict`` does)."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from .audio import load_audio
from .config import Preprocessing
from .data import NOT_MUSIC, DataError, Track
from .errors import AcousticSenseError
from .features import fill_word, fit_to_window, frames_per_window, too_short, track_mel, window_count
from .inference import Classifier, Features

NO_GENRE = -1  # training target of a not-music track: probability spread evenly over every label


@dataclass
class TrainSet(torch.utils.data.Dataset):
    """Random window crops of full-track power mels (with the track's peak power); each track counts its inference windows per epoch."""

    mels: list[torch.Tensor]  # (n_mels, frames) per track
    targets: list[int]  # label index, or NO_GENRE for not-music tracks
    counts: list[int]  # windows per track on the inference grid
    frames: int  # frames per window

    def __post_init__(self) -> None:
        self.index = [i for i, n in enumerate(self.counts) for _ in range(n)]
        self.peaks = [mel.amax() for mel in self.mels]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        track = self.index[i]
        mel = self.mels[track]
        start = int(torch.randint(0, mel.shape[-1] - self.frames + 1, ()))
        return mel[:, start : start + self.frames], self.peaks[track], self.targets[track]


@dataclass
class ValSet:
    """Validation tracks, preprocessed once exactly as inference preprocesses them (at least one non-silent window each)."""

    features: list[Features]
    targets: list[int]  # label index per track, NO_GENRE for not-music

    @property
    def windows(self) -> int:
        return sum(int((~f.silent).sum()) for f in self.features)


def _featurize(track: Track, pre: Preprocessing, validator: Classifier | None) -> Any:
    """Decode once; training: (whole-track power mel, window count, seconds); validation: the classifier's Features."""
    if validator is not None:
        return validator.preprocess(track.path)
    samples = torch.from_numpy(load_audio(track.path, pre.sample_rate, resampler=pre.resampler).samples)
    count = window_count(len(samples), pre)
    return track_mel(fit_to_window(samples, pre), pre), count, len(samples) / pre.sample_rate  # a short clip is filled as inference fills it


def load_tracks(
    train: list[Track], val: list[Track], labels: list[str], validator: Classifier, workers: int, progress: bool
) -> tuple[TrainSet, ValSet, dict[str, int]]:
    """Decode and featurize every track in threads; unreadable files are skipped with a warning."""
    pre = validator.config.preprocessing
    jobs = [(t, None) for t in train] + [(t, validator) for t in val]

    def run(job: tuple[Track, Classifier | None]) -> Any:
        try:
            return _featurize(job[0], pre, job[1])
        except AcousticSenseError as e:
            return e

    pool = ThreadPoolExecutor(workers)
    try:
        results = list(tqdm(pool.map(run, jobs), total=len(jobs), desc="decoding", unit="track", disable=not progress, file=sys.stderr))
    finally:
        pool.shutdown(cancel_futures=True)  # Ctrl-C must not wait for the queue
    skipped = [r for r in results if isinstance(r, AcousticSenseError)]
    for e in skipped:
        tqdm.write(f"warning: skipping {e}", file=sys.stderr)
    if skipped:
        tqdm.write(f"warning: skipped {len(skipped)} of {len(jobs)} files", file=sys.stderr)
    target = {label: i for i, label in enumerate(labels)} | {NOT_MUSIC: NO_GENRE}
    ok_train = [(t, r) for t, r in zip(train, results) if not isinstance(r, AcousticSenseError)]
    missing = [label for label in labels if not any(t.label == label for t, _ in ok_train)]
    if missing:
        raise DataError(f"no usable training tracks for label(s): {', '.join(missing)}")
    train_set = TrainSet([r[0] for _, r in ok_train], [target[t.label] for t, _ in ok_train], [r[1] for _, r in ok_train], frames_per_window(pre))
    ok_val = [(t, r) for t, r in zip(val, results[len(train) :]) if isinstance(r, Features) and bool((~r.silent).any())]
    val_set = ValSet([r for _, r in ok_val], [target[t.label] for t, _ in ok_val])
    scant = [t.path for t, r in ok_train if too_short(r[2], pre)] + [t.path for t, r in ok_val if too_short(r.duration, pre)]
    if scant:  # predict flags such a clip low_confidence: as training data it is a whole window made of a few seconds
        tqdm.write(f"warning: {len(scant)} track{'s are' if len(scant) > 1 else ' is'} under a third of the {pre.window_seconds:g} s window "
                   f"(e.g. {scant[0]}), {fill_word(pre)} to fill one: too little audio to learn a genre from", file=sys.stderr)
    if val and (unsplit := [label for label in labels if not any(t.label == label for t in val)]):
        tqdm.write(f"warning: no validation track for {', '.join(unsplit)} (a genre needs 2 tracks to hold one out): "
                   "the best epoch and the calibration are chosen without them", file=sys.stderr)
    unvalidated = [label for label in labels if any(t.label == label for t in val) and not any(t.label == label for t, _ in ok_val)]
    if unvalidated:  # the split was made before decoding: a genre whose held-out files all failed is validated on nothing
        tqdm.write(f"warning: no usable validation track left for {', '.join(unvalidated)} (each failed to decode or is silent): "
                   "the best epoch and the calibration are chosen without them", file=sys.stderr)
    sizes = {
        "train_tracks": len(ok_train),
        "val_tracks": len(ok_val),
        "train_not_music": sum(t.label == NOT_MUSIC for t, _ in ok_train),
        "val_not_music": sum(t.label == NOT_MUSIC for t, _ in ok_val),
        "train_windows": len(train_set),
        "val_windows": val_set.windows,
        "skipped_files": len(skipped),
    }
    return train_set, val_set, sizes
