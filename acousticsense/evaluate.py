"""Score a model bundle on labelled data through the real inference path.

    >>> from acousticsense.evaluate import evaluate
    >>> evaluate("runs/my-model", "data/test", out_dir="runs/my-model/eval")["track"]["accuracy"]
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from .calibrate import ECE_BINS, ece, plot_reliability, reliability
from .data import DataError, read_corpus
from .errors import output_folder
from .files import write_whole
from .inference import Classifier
from .options import DEFAULT_BATCH_SIZE, spelled_as
from .results import Failure, flags_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_NAME = "report.json"
FIGURE_NAME = "confusion.png"
RELIABILITY_NAME = "reliability.png"
TOP_K = 5


def evaluate(
    bundle: str | os.PathLike | None,
    data: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    held_out: bool = False,
) -> dict[str, Any]:
    """Classify every track of DATA (see :func:`acousticsense.data.read_corpus`) and score it.

    Track level uses each Result's ranking; window level uses every non-silent window's
    probabilities. ``calibration`` gives the expected calibration error (15 bins) of the top-1
    probability, by track and by window, with the reliability bins. Tracks labelled ``_not_music``
    are classified too: ``not_music`` reports how often they are flagged (``not_music`` or
    ``low_confidence`` warning), by kind (the file name up to its first dot), and how often music is.
    With ``out_dir``, writes ``report.json``, ``confusion.png`` and ``reliability.png`` there.
    ``held_out``: the figures are to be recorded as held-out ones, so the corpus the bundle was trained on is
    refused (a :class:`DataError`) before anything is classified. Returns the report.
    """
    clf = Classifier.from_bundle(bundle, device=device, batch_size=batch_size)  # first, as it comes first on the command line
    corpus = read_corpus(data)
    training_corpus = trained_on(clf.config.provenance, corpus.info)
    if held_out and training_corpus:
        raise _not_held_out(data, corpus.info)
    labels = clf.labels
    spelled = {x: spelled_as(x, labels) for x in corpus.labels}  # a GTZAN folder "hiphop" is the model's Hip-Hop
    unknown = sorted(x for x, label in spelled.items() if label is None)
    if unknown:
        raise DataError(f"{data}: label(s) unknown to model {clf.config.model_id}: {', '.join(unknown)} "
                        f"(it knows {', '.join(labels)}; in any case, with or without punctuation)")
    out = None if out_dir is None else output_folder(Path(out_dir))
    truth = {str(t.path): spelled[t.label] for t in corpus.tracks}
    tracks: dict[str, list] = {"true": [], "ranked": []}
    windows: dict[str, list] = {"true": [], "ranked": []}
    predictions, failures, silent, flagged = [], [], [], {}
    confidence: dict[str, list] = {"track": [], "window": []}
    sources = [t.path for t in corpus.tracks + corpus.not_music]
    results = clf.classify_many(sources, top_k=len(labels))
    for r in tqdm(results, total=len(sources), unit="track", disable=not progress, file=sys.stderr):
        if isinstance(r, Failure):
            failures.append(r.to_dict())
            continue
        label = truth.get(r.source)
        if r.silent:
            silent.append(r.source)
            continue
        flagged[r.source] = bool(flags_of(r.warnings))
        if label is None:  # not music
            continue
        confidence["track"].append((r.top_k[0].probability, r.label == label))
        confidence["window"] += [(w.probability, w.label == label) for w in r.timeline if not w.silent]
        tracks["true"].append(label)
        tracks["ranked"].append([g.label for g in r.top_k])
        for w in r.timeline:
            if not w.silent:
                windows["true"].append(label)
                windows["ranked"].append(sorted(w.probabilities, key=w.probabilities.get, reverse=True))
        predictions.append({"source": r.source, "label": label, "predicted": r.label, "probability": r.top_k[0].probability,
                            "flagged": flagged[r.source]})
    if not predictions:
        raise DataError(f"{data}: no track could be classified ({len(failures)} failed, {len(silent)} silent)")
    report = {
        "model_id": clf.config.model_id,
        "bundle": str(bundle) if bundle is not None else "(built-in default)",
        "data": corpus.info,
        "labels": labels,  # the model's, in its output order
        "tracks": {"listed": len(corpus.tracks), "scored": len(predictions), "failed": len(failures), "silent": len(silent)},
        "unscored_labels": [spelled[x] for x in corpus.labels if spelled[x] not in set(tracks["true"])],  # every track failed or was silent
        "training_corpus": training_corpus,  # its figures are not held-out ones
        "track": scores(tracks["true"], tracks["ranked"], labels),
        "window": scores(windows["true"], windows["ranked"], labels),
        "calibration": {
            "temperature": clf.config.temperature,
            **{f"{level}_ece": round(ece(*zip(*pairs)), 4) for level, pairs in confidence.items()},
            "bins": ECE_BINS,
            "track_reliability": reliability(*zip(*confidence["track"])),
        },
        "not_music": _flag_rates(corpus, flagged, clf.config.ood_threshold),
        "predictions": predictions,
        "failures": failures,
        "silent": silent,
    }
    if out is not None:  # the figures first: a report.json says the set is whole
        plot_confusion(report, out / FIGURE_NAME)
        plot_reliability(report["calibration"]["track_reliability"], report["calibration"]["track_ece"], out / RELIABILITY_NAME,
                         f"{clf.config.model_id}: ")
        write_whole(out / REPORT_NAME, (json.dumps(report, indent=2) + "\n").encode())
    return report


def _flag_rates(corpus, flagged: dict[str, bool], threshold: float | None) -> dict[str, Any]:
    """How often not-music tracks (overall and by kind) and music tracks carry a FLAGS warning. A bundle
    without a threshold flags nothing: its rates are None (not measured), not 0."""
    music = [flagged[str(t.path)] for t in corpus.tracks if str(t.path) in flagged]
    others = [(t.path.name.split(".")[0], flagged[str(t.path)]) for t in corpus.not_music if str(t.path) in flagged]

    def rate(flags: list[bool]) -> float | None:
        return round(float(np.mean(flags)), 4) if flags and threshold is not None else None

    return {
        "threshold": threshold,
        "music_tracks": len(music),
        "music_flagged": rate(music),
        "not_music_tracks": len(others),
        "not_music_flagged": rate([f for _, f in others]),
        "by_kind": {k: rate([f for kk, f in others if kk == k]) for k in sorted({k for k, _ in others})} if threshold is not None else {},
    }


def trained_on(provenance: dict[str, Any], info: dict[str, Any]) -> bool:
    """Whether a corpus (its :func:`~acousticsense.data.read_corpus` info) is the one a bundle's provenance says it
    was trained on: the same folder name and, where a manifest records how the corpus was made (``synth``'s seed
    and settings), the same manifest. Names and manifests are all a bundle records (never a machine's paths)."""
    data = provenance.get("data") or {}
    return data.get("source") == info["source"] and data.get("manifest") == info.get("manifest")


def _not_held_out(where: str | os.PathLike, info: dict[str, Any]) -> DataError:
    how = "folder name and manifest" if info.get("manifest") else "folder name"
    return DataError(f"{where}: the corpus this model was trained on (the same {how} as its provenance records: {info['source']!r}); "
                     "its figures are not recorded as held-out ones (a folder of other tracks: give it another name)")


def record_metrics(bundle: str | os.PathLike, report: dict[str, Any], key: str = "held_out") -> dict[str, Any] | None:
    """Store a report's headline figures in the bundle's config (``metrics[key]``); not those of the corpus the
    bundle was trained on as ``held_out`` (a :class:`DataError`). Returns the figures they replace, if any."""
    from .config import read_config, write_config

    if key == "held_out" and report.get("training_corpus"):
        raise _not_held_out(report["data"]["source"], report["data"])

    config = read_config(bundle)
    replaced = config.metrics.get(key)
    config.metrics[key] = {
        "data": report["data"],
        "tracks": report["tracks"]["scored"],
        **{f"{level}_{name}": round(report[level][name], 4) for level in ("track", "window") for name in ("accuracy", "top5_accuracy", "macro_f1")},
        **{k: report["calibration"][k] for k in ("track_ece", "window_ece")},
        **{k: report["not_music"][k] for k in ("music_flagged", "not_music_flagged") if report["not_music"][k] is not None},
    }
    write_config(bundle, config)
    return replaced if isinstance(replaced, dict) else None


def scores(true: list[str], ranked: list[list[str]], labels: list[str]) -> dict[str, Any]:
    """Accuracy, top-5 accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    ``ranked`` holds each item's labels best first. Per-class figures and the macro-F1 cover
    the labels present in ``true``; the confusion matrix also has a column (and row) for
    every other label that was predicted, in the model's label order.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    pred = [r[0] for r in ranked]
    present = [x for x in labels if x in set(true)]
    shown = [x for x in labels if x in set(true) | set(pred)]
    precision, recall, f1, support = precision_recall_fscore_support(true, pred, labels=present, zero_division=0)
    with warnings.catch_warnings():  # one label present: the matrix is 1x1, which sklearn warns about; the report says so
        warnings.simplefilter("ignore", UserWarning)
        confusion = confusion_matrix(true, pred, labels=shown).tolist()
    return {
        "n": len(true),
        "accuracy": float(accuracy_score(true, pred)),
        "top5_accuracy": float(np.mean([t in r[:TOP_K] for t, r in zip(true, ranked)])),
        "macro_f1": float(f1_score(true, pred, labels=present, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(present, precision, recall, f1, support)
        },
        "confusion": {"labels": shown, "matrix": confusion},
    }


def plot_confusion(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Track- and window-level confusion matrices side by side (a PNG written whole or not at all): cells shaded by
    row share, labelled with counts."""
    from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

    from .plots import png_bytes, styled

    n = max(len(report[level]["confusion"]["labels"]) for level in ("track", "window"))
    side = max(4.5, 0.55 * n + 2.5)
    with styled():
        fig = Figure(figsize=(2 * side + 1.5, side + 0.8), layout="constrained")
        _draw_confusion(fig, report)
    write_whole(path, png_bytes(fig, dpi=110))
    return Path(path)


def _draw_confusion(fig: Figure, report: dict[str, Any]) -> None:
    axes = fig.subplots(1, 2)
    for ax, level in zip(axes, ("track", "window")):
        s = report[level]
        names, counts = s["confusion"]["labels"], np.array(s["confusion"]["matrix"])
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{level}s: accuracy {s['accuracy']:.1%}, macro-F1 {s['macro_f1']:.3f} (n={s['n']})")
        fontsize = 9 if len(names) <= 12 else 7
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=fontsize, color="white" if share[i, j] > 0.5 else "black")
    fig.suptitle(f"{report['model_id']} on {report['data']['source']}")
