"""The training commands of the CLI: ``synth`` (the synthetic corpus), ``train`` and ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli import DeviceOpt, app, fail, printable
from .options import DEFAULT_BATCH_SIZE, HOP_RANGE, MAX_BATCH_SIZE, MAX_SYNTH_CLIPS, SYNTH_SECONDS_RANGE, WINDOW_RANGE


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="A folder per label (or with a manifest.csv), or a CSV/JSON manifest with path,label.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory: bundle, checkpoint.pt, train_log.jsonl (default: runs/DATA-ARCH).")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="vit_ti_16 (default), vit_mini_16, vit_s_16 or vit_b_16.")] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Model input size in pixels (default 128, or the --init bundle's).")] = None,
    window: Annotated[Optional[float], typer.Option("--window", help=f"Window length in seconds, {WINDOW_RANGE[0]:g} to {WINDOW_RANGE[1]:g} (default 8, or the --init bundle's).")] = None,
    hop: Annotated[Optional[float], typer.Option("--hop", help=f"Hop between windows in seconds, {HOP_RANGE[0]:g} to {HOP_RANGE[1]:g} (default 4, or the --init bundle's): validation and inference use it, and an epoch takes as many random crops of each track as it gives windows.")] = None,
    init: Annotated[Optional[str], typer.Option("--init", help="none (default), imagenet (vit_b_16; downloads torchvision's weights) or a bundle to fine-tune.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs (default 30).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Windows per batch and process (default 32).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak AdamW learning rate (default 3e-4).")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="AdamW weight decay (default 0.05).")] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option("--warmup-epochs", help="Linear warm-up before the cosine decay (default 1).")] = None,
    mixup: Annotated[Optional[float], typer.Option("--mixup", help="Mixup alpha; 0 = off (default).")] = None,
    preemphasis: Annotated[Optional[float], typer.Option("--preemphasis", help="Pre-emphasis coefficient the bundle applies before its mel (e.g. 0.97); 0 = off (default).")] = None,
    noise: Annotated[Optional[float], typer.Option("--noise", help="Share of training windows given background noise (white/pink/brown/hum/babble) at 0-30 dB SNR; 0 = off (default).")] = None,
    freq_mask: Annotated[Optional[float], typer.Option("--freq-mask", help="SpecAugment: widest frequency mask, a fraction of the mel bands; 0 = off (default 0.15).")] = None,
    time_mask: Annotated[Optional[float], typer.Option("--time-mask", help="SpecAugment: widest time mask, a fraction of the frames; 0 = off (default 0.15).")] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Stop after this many epochs without a lower validation loss; 0 = never (default 5).")] = None,
    val_fraction: Annotated[Optional[float], typer.Option("--val-fraction", help="Share of each label's tracks held out (default 0.15).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the split, the initialisation and the sampling (default 0).")] = None,
    device: DeviceOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out (--epochs/--patience may change).")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Decoding threads (default: up to 8).")] = None,
) -> None:
    """Train a model bundle (best epoch on validation) on labelled audio. Ctrl-C keeps the last epoch: --resume goes on."""
    from .checkpoint import CHECKPOINT_NAME
    from .train import default_out
    from .train import train as run_training

    recipe = dict(
        arch=arch, image_size=image_size, window=window, hop=hop, init=init, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, mixup=mixup, noise=noise, preemphasis=preemphasis, freq_mask=freq_mask, time_mask=time_mask, patience=patience, val_fraction=val_fraction,
        seed=seed, device=device, workers=workers,
    )  # fmt: skip
    try:
        path = run_training(data, out, resume=resume, **{k: v for k, v in recipe.items() if v is not None})
    except RuntimeError as e:  # e.g. an unavailable CUDA device
        fail(f"training failed: {e}")
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (a service manager's or scheduler's stop)
        run = Path(out or default_out(data, arch))
        if (run / CHECKPOINT_NAME).is_file():
            held = f" ({run / CHECKPOINT_NAME} holds epoch {e.epoch})" if getattr(e, "epoch", 0) else ""
            fail(f"interrupted{held}; continue with: acousticsense train {data} --out {run} --resume", code=130)
        fail("interrupted before the first epoch was saved: nothing to resume; start again (without --resume)", code=130)
    typer.echo(f"wrote {path}; use it with: acousticsense predict --model {path} FILE")


@app.command()
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Model bundle directory.")],
    data: Annotated[Path, typer.Argument(help="Labelled audio: a folder per label (or with a manifest.csv), or a CSV/JSON manifest.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write report.json, confusion.png and reliability.png here.")] = None,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=MAX_BATCH_SIZE, help="Windows per model batch (across files).")] = DEFAULT_BATCH_SIZE,
    record: Annotated[bool, typer.Option("--record", help="Also store the headline figures in the bundle's config (metrics.held_out).")] = False,
) -> None:
    """Score a bundle on labelled audio: accuracy, macro-F1, top-5 and calibration (ECE, reliability diagram), by track and by window.

    Also per class, and how often the tracks of a _not_music/ folder are flagged."""
    from .evaluate import evaluate as run_evaluation
    from .evaluate import record_metrics

    try:
        report = run_evaluation(bundle, data, out, device=device, batch_size=batch_size, progress=True, held_out=record)
        replaced = record_metrics(bundle, report) if record else None
    except RuntimeError as e:
        fail(f"cannot evaluate on {device or 'the default device'}: {e}")
    t = report["tracks"]
    typer.echo(f"{report['model_id']} on {data}: {t['scored']} tracks scored ({t['failed']} failed, {t['silent']} silent)")
    for level in ("track", "window"):
        s = report[level]
        top5 = f"  top-5 {s['top5_accuracy']:.3f}" if len(report["labels"]) > 5 else ""  # with 5 genres or fewer, always 1
        typer.echo(f"  {level:<6}  accuracy {s['accuracy']:.3f}  macro-F1 {s['macro_f1']:.3f}{top5}  (n={s['n']})")
    c, n = report["calibration"], report["not_music"]
    typer.echo(f"  calibration (temperature {c['temperature']:.3g}): ECE {c['track_ece']:.3f} by track, {c['window_ece']:.3f} by window")
    if n["threshold"] is not None:
        shown = f"; not music flagged {n['not_music_flagged']:.3f} of {n['not_music_tracks']}" if n["not_music_tracks"] else ""
        typer.echo(f"  not-music threshold {n['threshold']:.3g}: music flagged {n['music_flagged']:.3f}{shown}"
                   + "".join(f", {k} {v:.3f}" for k, v in n["by_kind"].items()))
    worst = sorted(report["track"]["per_class"].items(), key=lambda kv: kv[1]["recall"])[:3]
    typer.echo("  lowest track recall: " + ", ".join(f"{k} {v['recall']:.2f}" for k, v in worst))
    for f in report["failures"]:
        typer.echo(f"  skipped {printable(f['error'])}", err=True)
    if report["unscored_labels"]:
        typer.echo(f"warning: no track of {', '.join(report['unscored_labels'])} could be scored (each failed or was silent): "
                   "the figures above leave them out", err=True)
    if report["training_corpus"]:
        typer.echo(f"warning: {printable(data)} is the corpus this model was trained on (its provenance names {report['data']['source']!r}): "
                   "training tracks score high; these are not held-out figures", err=True)
    if out is not None:
        from .evaluate import FIGURE_NAME, RELIABILITY_NAME, REPORT_NAME

        typer.echo(f"  report: {out / REPORT_NAME}, {out / FIGURE_NAME}, {out / RELIABILITY_NAME}")
    if record:
        typer.echo(f"recorded as {printable(bundle)}'s held-out figures (metrics.held_out){_replaced(replaced)}")


def _replaced(figures: dict | None) -> str:
    """What ``evaluate --record`` replaced: the figures of how many tracks of which corpus (a bundle's own words)."""
    if figures is None:
        return ""
    data, n = figures.get("data"), figures.get("tracks")
    source = data.get("source") if isinstance(data, dict) else None
    return ", replacing those" + (f" of {n} track{'' if n == 1 else 's'}" if isinstance(n, int) else "") + (f" of {printable(source)}" if isinstance(source, str) else "")


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder for <Genre>/<slug>.NNNNN.wav, manifest.csv and manifest.json.")],
    per_genre: Annotated[int, typer.Option("--per-genre", min=1, max=MAX_SYNTH_CLIPS, help="Clips per genre.")] = 60,
    seconds: Annotated[float, typer.Option("--seconds", min=SYNTH_SECONDS_RANGE[0], max=SYNTH_SECONDS_RANGE[1], help="Clip length in seconds.")] = 12.0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Corpus seed: same seed, same audio.")] = 0,
    genres: Annotated[Optional[list[str]], typer.Option("--genres", help="Comma-separated or repeated genre names (default: all 16).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Parallel processes (default: one per CPU core).")] = None,
    soundfont: Annotated[Optional[list[str]], typer.Option("--soundfont", help="A General MIDI SoundFont to render with: TimGM6mb, FluidR3_GM, MuseScore_General or a .sf2/.sf3 path; repeat for a pool each clip and part draws from (default: TimGM6mb and FluidR3_GM).")] = None,
    not_music: Annotated[int, typer.Option("--not-music", min=0, max=MAX_SYNTH_CLIPS, help="Also this many clips of each of speech, noise and tones in _not_music/ (training teaches them as no genre).")] = 0,
) -> None:
    """Render the synthetic labelled training corpus (resumable: clips already written are kept)."""
    try:
        from .synth import GENRES, TRAIN_SOUNDFONTS, make_corpus, parse_genres
    except ImportError as e:
        fail(f"synth needs the 'synth' extra ({e}): pip install 'acousticsense[synth]' (make run/test install it)")

    names = parse_genres([g.strip() for item in genres or GENRES for g in item.split(",") if g.strip()])
    manifest = make_corpus(out_dir, per_genre, seconds=seconds, seed=seed, genres=names, workers=workers,
                           soundfonts=soundfont or TRAIN_SOUNDFONTS, not_music=not_music)
    typer.echo(f"manifest: {manifest}")
