"""Train a model bundle on a folder-per-genre tree or a manifest of labelled tracks.

Every track is decoded and turned into a full-length power mel spectrogram once; a training
sample is a random window-length crop of it, converted to the model's image by the same
functions inference uses. Validation frames each held-out track exactly as inference does.

    >>> from acousticsense.train import train
    >>> train("data/genres", "runs/my-model", epochs=20)     # -> the bundle directory
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .augment import NoiseBank, spec_augment
from .bundle import CONFIG_NAME, WEIGHTS_NAME, Bundle, BundleConfig, check_new_bundle_folder, checked_device, load_bundle, save_bundle, write_config
from .calibrate import MIN_CALIBRATION_TRACKS, ece, fit_temperature, ood_threshold, scale, track_score, warnings_for
from .checkpoint import CHECKPOINT_NAME, LOG_NAME, atomic_save, load_checkpoint, write_log
from .config import ARCHITECTURES, Preprocessing, config_text
from .data import Track, read_corpus, split_tracks
from .errors import TrainError, output_folder
from .features import db_to_image, power_to_db
from .inference import Classifier
from .model import DEFAULT_ARCH
from .options import HOP_RANGE, MAX_BATCH_SIZE, WINDOW_RANGE, is_number, is_whole
from .pretrained import initial_model
from .results import aggregate
from .trainsets import NO_GENRE, ValSet, load_tracks

GRAD_CLIP_NORM = 1.0
MAX_EPOCHS = 100_000
MAX_WORKERS = 256  # decoding threads
NO_DECAY = ("class_token", "encoder.pos_embedding")  # with biases and norm weights: no weight decay
RESUMABLE = ("epochs", "patience", "device", "workers")  # recipe entries a resumed run may change


@dataclass
class TrainConfig:
    """The training recipe. ``None`` means the default, or the ``init`` bundle's value."""

    arch: str | None = None  # a config.ARCHITECTURES name; vit_ti_16 by default
    image_size: int | None = None  # 128
    window: float | None = None  # seconds per window, 8
    hop: float | None = None  # seconds between validation windows, 4
    preemphasis: float | None = None  # pre-emphasis coefficient of the bundle's preprocessing (0 = off, the default)
    init: str = "none"  # "none" | "imagenet" (vit_b_16 only) | a bundle directory to fine-tune
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    mixup: float = 0.0  # Beta(alpha, alpha) mixup of images and targets; 0 = off
    noise: float = 0.0  # share of training windows given background noise at 0-30 dB SNR (augment.NoiseBank)
    freq_mask: float = 0.15  # SpecAugment: each mask is up to this fraction of the mel bands (0 = off)
    time_mask: float = 0.15  # ... and up to this fraction of the frames (0 = off)
    patience: int = 5  # stop after this many epochs without a better validation result (0 = never)
    val_fraction: float = 0.15  # of each label's tracks held out for validation
    seed: int = 0
    device: str | None = None  # default: cuda if available
    workers: int | None = None  # decoding threads (default: up to 8)

    def __post_init__(self) -> None:
        rules = {  # option: (test of its value, what it must be)
            "window": (lambda v: v is None or (is_number(v) and WINDOW_RANGE[0] <= v <= WINDOW_RANGE[1]), f"from {WINDOW_RANGE[0]:g} to {WINDOW_RANGE[1]:g} seconds, as predict allows"),
            "hop": (lambda v: v is None or (is_number(v) and HOP_RANGE[0] <= v <= HOP_RANGE[1]), f"from {HOP_RANGE[0]:g} to {HOP_RANGE[1]:g} seconds, as predict allows"),
            "epochs": (lambda v: is_whole(v, 1, MAX_EPOCHS), f"a whole number from 1 to {MAX_EPOCHS:,}"),
            "batch_size": (lambda v: is_whole(v, 1, MAX_BATCH_SIZE), f"a whole number from 1 to {MAX_BATCH_SIZE:,}"),
            "lr": (lambda v: is_number(v) and 0 < v <= 1, "a number above 0 and at most 1"),
            **{name: (lambda v: is_number(v) and v >= 0, "a number >= 0") for name in ("weight_decay", "warmup_epochs", "mixup")},
            **{name: (lambda v: is_number(v) and 0 <= v < 1, "a fraction in [0, 1)") for name in ("freq_mask", "time_mask", "val_fraction")},
            "noise": (lambda v: is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
            "patience": (lambda v: is_whole(v, 0, MAX_EPOCHS), "a whole number >= 0"),
            "seed": (lambda v: is_whole(v, 0, 2**63 - 1), "a whole number >= 0"),
            "workers": (lambda v: v is None or is_whole(v, 1, MAX_WORKERS), f"a whole number from 1 to {MAX_WORKERS}"),
        }
        for name, (ok, rule) in rules.items():
            if not ok(value := getattr(self, name)):
                raise TrainError(f"{name} must be {rule}, not {value!r}")
        if self.arch is not None and self.arch not in ARCHITECTURES:
            raise TrainError(f"unknown architecture {self.arch!r}; known: {', '.join(ARCHITECTURES)}")


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (or SIGTERM under the CLI); ``epoch``: the last epoch its checkpoint holds (0: none)."""

    def __init__(self, epoch: int):
        super().__init__(f"interrupted after epoch {epoch}")
        self.epoch = epoch


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train(data: str | os.PathLike, out: str | os.PathLike | None = None, *, resume: bool = False, progress: bool = True, **recipe: Any) -> Path:
    """Train on DATA (see :func:`read_corpus`) and save the best model as a bundle in ``out``.

    ``recipe`` holds :class:`TrainConfig` fields. ``out`` also receives ``checkpoint.pt``
    (every epoch) and ``train_log.jsonl``; ``resume=True`` continues the run in ``out``
    where it stopped (``epochs``, ``patience``, ``device`` and ``workers`` may change).
    Under ``torchrun`` (WORLD_SIZE > 1) it trains with DistributedDataParallel.
    Returns the bundle directory.
    """
    rank, world, local_rank = _init_distributed()
    out = Path(out) if out is not None else default_out(data, recipe.get("arch"))
    ckpt_path = out / CHECKPOINT_NAME
    progress = progress and rank == 0
    if resume:
        if not ckpt_path.is_file():
            raise TrainError(f"{out}: no {CHECKPOINT_NAME} to resume from")
        ckpt = load_checkpoint(ckpt_path)
        trained_on = ckpt.get("data_path")
        if trained_on is not None and str(Path(data).resolve()) != trained_on:  # the split lists that corpus' tracks
            raise TrainError(f"{out}: this run trains on {trained_on}, not {data}; resume it with that DATA (or start a new run)")
        config = _resumed_config(ckpt["recipe"], recipe)
        bundle_config = BundleConfig.from_dict(ckpt["bundle_config"], where=str(ckpt_path))
        labels, pre = bundle_config.labels, bundle_config.preprocessing
        train_tracks, val_tracks = ([Track(Path(p), label) for p, label in ckpt["split"][side]] for side in ("train", "val"))
        gone: set[Track] = set()  # the split made at the start lists only files that were there
        data_info, init_info = ckpt["data"], ckpt["init"]
        model = bundle_config.build_model(ckpt_path)
    else:
        if ckpt_path.exists() or (out / CONFIG_NAME).exists():
            raise TrainError(f"{out}: already holds a training run or bundle; pass --resume to continue it, or choose another --out")
        check_new_bundle_folder(out)  # never into a folder of other things (a music library)
        try:
            config = TrainConfig(**recipe)
        except TypeError as e:
            raise TrainError(str(e)) from None
        corpus = read_corpus(data)
        if len(corpus.labels) < 2:
            raise TrainError(f"{data}: only one genre ({corpus.labels[0]}); a classifier needs tracks of at least two (one folder per genre)")
        torch.manual_seed(config.seed)
        model, bundle_config, init_info = initial_model(config, corpus.labels, progress)
        bundle_config.model_id = out.resolve().name or "model"  # --out . is named after the folder it means
        config_text(bundle_config)  # labels a bundle may not hold (Jazz and jazz) are refused now, not after an epoch
        labels, pre, data_info = bundle_config.labels, bundle_config.preprocessing, corpus.info
        listed = corpus.tracks + corpus.not_music
        gone = {t for t in listed if not os.path.isfile(t.path)}  # a manifest's row with no file: left out before the split,
        for t in sorted(gone, key=lambda t: str(t.path)) if rank == 0 else []:  # where it could take a genre's only place
            tqdm.write(f"warning: skipping {t.path}: no such file", file=sys.stderr)
        train_tracks, val_tracks = split_tracks([t for t in listed if t not in gone], config.val_fraction, config.seed)
        ckpt = None
    device = torch.device(f"cuda:{local_rank}") if world > 1 and torch.cuda.is_available() else checked_device(config.device)
    output_folder(out)  # before the tracks are decoded: a folder that cannot be made fails now
    torch.manual_seed(config.seed + rank)

    validator = Classifier(Bundle(bundle_config, model), device, batch_size=config.batch_size)  # moves the model to device
    train_set, val_set, sizes = load_tracks(train_tracks, val_tracks, labels, validator, config.workers or min(8, os.cpu_count() or 1), progress)
    sizes["skipped_files"] += len(gone)
    net: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    sampler = torch.utils.data.DistributedSampler(train_set, world, rank, seed=config.seed) if world > 1 else torch.utils.data.RandomSampler(train_set)
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, drop_last=len(train_set) > config.batch_size * world)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    steps = len(loader)
    schedule = partial(lr_factor, warmup_steps=round(config.warmup_epochs * steps), total_steps=config.epochs * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    noise_bank = NoiseBank(pre, config.seed) if config.noise > 0 else None
    state = {"epoch": 0, "best": None, "best_epoch": 0, "since_best": 0, "history": []}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        # by epochs: fewer or more readable tracks now change the steps per epoch; --epochs may stretch the schedule
        scheduler.last_epoch = state["epoch"] * steps
        for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base_lr * schedule(scheduler.last_epoch)
        before = ckpt["bundle_config"].get("provenance", {}).get("split", {})
        if changed := [f"{k.replace('_', ' ')} {before[k]} -> {sizes[k]}" for k in ("train_tracks", "val_tracks") if before.get(k, sizes[k]) != sizes[k]]:
            tqdm.write(f"warning: the run's tracks are not all as readable as when it started ({', '.join(changed)}): validation figures "
                       "from here on are not comparable with the earlier epochs', which chose the best epoch so far", file=sys.stderr)
        if state["best_epoch"] and "val_loss" in state["history"][state["best_epoch"] - 1]:  # a run saved when the rule differed
            state["best"] = list(selection_key(state["history"][state["best_epoch"] - 1]))
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
    recipe_dict = {**asdict(config), **_resolved(bundle_config)}
    # absolute: --resume from another working directory finds the same files
    split = {"train": [[str(t.path.resolve()), t.label] for t in train_tracks], "val": [[str(t.path.resolve()), t.label] for t in val_tracks]}
    saved_epoch = state["epoch"]  # what checkpoint.pt holds
    if rank == 0:
        write_log(out, state["history"])
        tqdm.write(
            f"training {bundle_config.architecture['name']} at {pre.image_size}px on {sizes['train_tracks']} tracks "
            f"({sizes['train_windows']} windows/epoch), validating on {sizes['val_tracks']} ({sizes['val_windows']} windows), {device}",
            file=sys.stderr,
        )
        if not val_tracks:
            why = "--val-fraction is 0" if not config.val_fraction else "no genre has the 2 tracks a split needs"
            tqdm.write(f"warning: nothing to validate on ({why}): each epoch's weights replace the last, with no early stopping and no calibration", file=sys.stderr)

    try:
        for epoch in range(state["epoch"] + 1, config.epochs + 1):
            if config.patience and state["since_best"] >= config.patience:
                if rank == 0:
                    tqdm.write(f"stopped early: no better validation result in the {config.patience} epochs since epoch {state['best_epoch']} "
                               "(--patience; 0 = never)", file=sys.stderr)
                break
            if world > 1:
                sampler.set_epoch(epoch)
            train_loss, seconds, seen = _train_epoch(net, loader, optimizer, scheduler, config, pre, device, f"epoch {epoch}/{config.epochs}", progress, len(labels), noise_bank)
            metrics = _validate(validator, val_set)
            key = selection_key(metrics) if metrics else (epoch, 0.0)
            improved = state["best"] is None or key > tuple(state["best"])
            entry = {"epoch": epoch, "train_loss": train_loss, **(metrics or {}), "lr": scheduler.get_last_lr()[0], "seconds": round(seconds, 2), "windows_per_s": round(seen * world / seconds, 2)}
            state["history"].append(entry)
            state["epoch"] = epoch
            if improved:
                state.update(best=list(key), best_epoch=epoch, since_best=0)
            else:
                state["since_best"] += 1
            if rank == 0:
                if improved:
                    bundle_config.provenance = {
                        "trained_with": "acousticsense train",
                        "recipe": recipe_dict,
                        "init": init_info,
                        "data": data_info,
                        "split": sizes,
                        "epoch": epoch,
                        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "torch": str(torch.__version__),
                        "world_size": world,
                    }
                    bundle_config.metrics = {k: v for k, v in entry.items() if k.startswith("val_")} | {"epoch": epoch}
                    save_bundle(out, model, bundle_config)
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "state": state,
                    "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
                    "recipe": recipe_dict,
                    "bundle_config": bundle_config.to_dict(),
                    "split": split,
                    "data_path": str(Path(data).resolve()),
                    "data": data_info,
                    "init": init_info,
                }
                atomic_save(checkpoint, ckpt_path)
                saved_epoch = epoch
                write_log(out, state["history"])
                shown = " ".join(f"{k} {v:.4g}" for k, v in entry.items() if k not in ("epoch", "seconds", "windows_per_s"))
                tqdm.write(f"epoch {epoch}: {shown} ({seconds:.0f} s){' *' if improved else ''}", file=sys.stderr)
    except BaseException as e:
        if saved_epoch == 0 and ckpt is None and rank == 0:  # no checkpoint saved: the folder is left as new for the next try
            for name in (LOG_NAME, CONFIG_NAME, WEIGHTS_NAME):  # the first epoch's bundle, if stopped before its checkpoint
                (out / name).unlink(missing_ok=True)
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(saved_epoch) from e
        raise
    finally:
        if world > 1:
            dist.destroy_process_group()
    if rank == 0 and state["history"]:
        best = state["history"][state["best_epoch"] - 1]
        shown = ", ".join(f"{k} {v:.4g}" for k, v in best.items() if k.startswith("val_"))
        tqdm.write(f"best: epoch {state['best_epoch']} ({shown}), saved in {out}" if shown else f"last: epoch {state['best_epoch']} (not validated), saved in {out}", file=sys.stderr)
        calibration = _calibrate(out, device, config.batch_size, val_set)
        if calibration:
            tqdm.write("calibrated: " + ", ".join(f"{k} {v:.4g}" for k, v in calibration.items() if v is not None), file=sys.stderr)
            if calibration["val_music_tracks"] < MIN_CALIBRATION_TRACKS:
                n = calibration["val_music_tracks"]
                tqdm.write(f"note: only {n} validation music track{'s' * (n != 1)} (fewer than {MIN_CALIBRATION_TRACKS}): "
                           "the temperature stays 1, as a fit on so few would not hold on new audio", file=sys.stderr)
    return out


def selection_key(metrics: dict[str, float]) -> tuple[float, float]:
    """How epochs are compared (the larger key is kept): the lower validation loss (the NLL of every window), then the
    higher track accuracy. The loss first: on a few hundred tracks the accuracy moves by whole tracks between
    epochs, and picked by it a fine-tuning run kept an epoch 2.2 points worse on held-out clips than its last."""
    return -metrics["val_loss"], metrics["val_track_acc"]


def soft_targets(target: torch.Tensor, n_labels: int) -> torch.Tensor:
    """Training targets: one-hot rows for genres, uniform rows for NO_GENRE (not music: no genre is right)."""
    soft = torch.full((len(target), n_labels), 1.0 / n_labels, device=target.device)
    music = target != NO_GENRE
    soft[music] = F.one_hot(target[music], n_labels).float()
    return soft


def _calibrate(out: Path, device: torch.device, batch_size: int, val: ValSet) -> dict[str, float] | None:
    """Fit the temperature and the not-music threshold (calibrate.py) on the validation tracks with the saved
    (best) weights, and write them into the bundle's config.json, with the validation figures they give
    (``metrics.calibrated``: what `evaluate` of the validation tracks reports). Returns what was measured."""
    music = [(f, t) for f, t in zip(val.features, val.targets) if t != NO_GENRE]
    if not music:
        return None
    clf = Classifier(load_bundle(out, device), device, batch_size=batch_size)
    clf.config.calibration = {}
    rule = clf.config.aggregation
    probs = clf.forward([f for f, _ in music])
    others = clf.forward([f for f, t in zip(val.features, val.targets) if t == NO_GENRE])
    targets = torch.tensor([t for _, t in music])

    def track_ece(window_probs: list[torch.Tensor]) -> float:
        conf, pred = torch.stack([aggregate(p, rule) for p in window_probs]).max(-1)
        return ece(conf.numpy(), (pred == targets).numpy())

    temperature = fit_temperature(probs, targets.tolist()) if len(music) >= MIN_CALIBRATION_TRACKS else 1.0
    probs, others = [scale(p, temperature) for p in probs], [scale(p, temperature) for p in others]
    # a threshold only for a model taught what is not music: without such tracks it would flag real music at random
    threshold = ood_threshold([track_score(p) for p in probs], [track_score(p) for p in others]) if others else None
    clf.config.calibration = {"temperature": temperature, "ood_threshold": threshold}
    measured = {"temperature": temperature, "ood_threshold": threshold, "val_music_tracks": len(music),
                "val_ece_uncalibrated": round(track_ece([scale(p, 1 / temperature) for p in probs]), 4),
                "val_ece": round(track_ece(probs), 4)}
    if threshold is not None:  # without one nothing is flagged: no rate to report
        for key, group in (("val_music_flagged", probs), ("val_not_music_flagged", others)):
            measured[key] = round(float(np.mean([bool(warnings_for(p, aggregate(p, rule), threshold)) for p in group])), 4)
    clf.config.metrics["calibrated"] = {**(_validate(clf, val) or {}), **{k: v for k, v in measured.items() if k.startswith("val_")}}
    write_config(out, clf.config)
    return measured


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only, as ViTs are usually trained."""
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.ndim >= 2 and n not in NO_DECAY]
    rest = [p for n, p in named if p.ndim < 2 or n in NO_DECAY]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def default_out(data: str | os.PathLike, arch: str | None = None) -> Path:
    """Where a run goes without ``out``: ``runs/<DATA name>-<arch>``."""
    return Path("runs") / f"{Path(data).stem}-{arch or DEFAULT_ARCH}"


def _train_epoch(net: nn.Module, loader, optimizer, scheduler, config: TrainConfig, pre: Preprocessing, device: torch.device, desc: str, progress: bool, n_labels: int, noise_bank: NoiseBank | None = None) -> tuple[float, float, int]:
    """One pass over the training windows; returns (mean loss, seconds, windows seen)."""
    net.train()
    start, total, count = time.perf_counter(), 0.0, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress, file=sys.stderr) as bar:
        for power, peak, target in bar:
            power, target = power.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if noise_bank is not None:
                power = noise_bank.add(power, config.noise)
            peak = torch.maximum(peak.to(device).view(-1, 1, 1), power.amax((1, 2), keepdim=True)) if pre.db_scope == "track" else None
            images = db_to_image(spec_augment(power_to_db(power, pre, peak), config.freq_mask, config.time_mask), pre)
            soft = soft_targets(target, n_labels)
            with autocast:
                if config.mixup > 0:
                    lam = float(torch.distributions.Beta(config.mixup, config.mixup).sample())
                    perm = torch.randperm(len(images), device=device)
                    logits = net(lam * images + (1 - lam) * images[perm]).float()
                    loss = F.cross_entropy(logits, lam * soft + (1 - lam) * soft[perm])
                else:
                    loss = F.cross_entropy(net(images).float(), soft)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP_NORM)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(target)
            count += len(target)
            bar.set_postfix(loss=f"{total / count:.3f}")
    return total / max(1, count), time.perf_counter() - start, count


def _validate(clf: Classifier, val: ValSet) -> dict[str, float] | None:
    """Window loss and accuracy, and track accuracy, through the inference stages themselves (as ``evaluate`` scores)."""
    if not val.features:
        return None
    clf.model.eval()
    music = [(f, t) for f, t in zip(val.features, val.targets) if t != NO_GENRE]
    if not music:
        return None
    probs = clf.forward([f for f, _ in music])
    windows = torch.cat(probs)
    targets = torch.cat([torch.full((len(p),), t) for p, (_, t) in zip(probs, music)])
    track_hits = [int(aggregate(p, clf.config.aggregation).argmax()) == t for p, (_, t) in zip(probs, music)]
    return {
        "val_loss": round(float(F.nll_loss(windows.clamp_min(1e-12).log(), targets)), 5),
        "val_window_acc": round(float((windows.argmax(-1) == targets).float().mean()), 5),
        "val_track_acc": round(sum(track_hits) / len(track_hits), 5),
    }


def _resolved(bundle_config: BundleConfig) -> dict[str, Any]:
    """The recipe entries that defaulted to None, as they were resolved."""
    pre = bundle_config.preprocessing
    return {"arch": bundle_config.architecture["name"], "image_size": pre.image_size, "window": pre.window_seconds, "hop": pre.hop_seconds,
            "preemphasis": pre.preemphasis}


def _resumed_config(saved: dict[str, Any], recipe: dict[str, Any]) -> TrainConfig:
    """The checkpoint's recipe with the entries a resumed run may change."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise TrainError(f"unknown recipe entries: {', '.join(unknown)}")
    changed = sorted(k for k, v in recipe.items() if k not in RESUMABLE and v is not None and v != saved.get(k))
    if changed:
        raise TrainError(f"a resumed run keeps its recipe; cannot change {', '.join(changed)} (only {', '.join(RESUMABLE)})")
    if recipe.get("epochs") is not None and recipe["epochs"] < saved["epochs"]:  # the cosine schedule would jump to its end
        raise TrainError(f"--epochs {recipe['epochs']}: a resumed run may raise its epochs ({saved['epochs']}), not lower them "
                         "(the learning rate would drop at once); to stop now, use the bundle the run folder holds")
    return TrainConfig(**{**saved, **{k: v for k, v in recipe.items() if k in RESUMABLE and v is not None}})


def _init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, local_rank
