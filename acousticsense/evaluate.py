"""Score a model bundle on labelled data through the real inference path.

    >>> from acousticsense.evaluate import evaluate
    >>> evaluate("runs/my-model", "data/test", out_dir="runs/my-model/eval")["track"]["accuracy"]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .inference import Classifier, Failure
from .options import DEFAULT_BATCH_SIZE
from .train import DataError, read_corpus

REPORT_NAME = "report.json"
FIGURE_NAME = "confusion.png"
TOP_K = 5


def evaluate(
    bundle: str | os.PathLike | None,
    data: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> dict[str, Any]:
    """Classify every track of DATA (see :func:`acousticsense.train.read_corpus`) and score it.

    Track level uses each Result's ranking; window level uses every non-silent window's
    probabilities. With ``out_dir``, writes ``report.json`` and ``confusion.png`` there.
    Returns the report.
    """
    corpus = read_corpus(data)
    clf = Classifier.from_bundle(bundle, device=device, batch_size=batch_size)
    labels = clf.labels
    unknown = sorted(set(corpus.labels) - set(labels))
    if unknown:
        raise DataError(f"{data}: label(s) unknown to model {clf.config.model_id}: {', '.join(unknown)} (it knows {', '.join(labels)})")
    truth = {str(t.path): t.label for t in corpus.tracks}
    tracks: dict[str, list] = {"true": [], "ranked": []}
    windows: dict[str, list] = {"true": [], "ranked": []}
    predictions, failures, silent = [], [], []
    results = clf.classify_many([t.path for t in corpus.tracks], top_k=len(labels))
    for r in tqdm(results, total=len(corpus.tracks), unit="track", disable=not progress, file=sys.stderr):
        if isinstance(r, Failure):
            failures.append(r.to_dict())
            continue
        label = truth[r.source]
        if r.silent:
            silent.append(r.source)
            continue
        tracks["true"].append(label)
        tracks["ranked"].append([g.label for g in r.top_k])
        for w in r.timeline:
            if not w.silent:
                windows["true"].append(label)
                windows["ranked"].append(sorted(w.probabilities, key=w.probabilities.get, reverse=True))
        predictions.append({"source": r.source, "label": label, "predicted": r.label, "probability": r.top_k[0].probability})
    if not predictions:
        raise DataError(f"{data}: no track could be classified ({len(failures)} failed, {len(silent)} silent)")
    report = {
        "model_id": clf.config.model_id,
        "bundle": str(bundle) if bundle is not None else "(built-in default)",
        "data": corpus.info,
        "tracks": {"listed": len(corpus.tracks), "scored": len(predictions), "failed": len(failures), "silent": len(silent)},
        "track": scores(tracks["true"], tracks["ranked"], labels),
        "window": scores(windows["true"], windows["ranked"], labels),
        "predictions": predictions,
        "failures": failures,
        "silent": silent,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        plot_confusion(report, out / FIGURE_NAME)
    return report


def record_metrics(bundle: str | os.PathLike, report: dict[str, Any], key: str = "held_out") -> None:
    """Store a report's headline figures in the bundle's config (``metrics[key]``)."""
    from .bundle import read_config, write_config

    config = read_config(bundle)
    config.metrics[key] = {
        "data": report["data"],
        "tracks": report["tracks"]["scored"],
        **{f"{level}_{name}": round(report[level][name], 4) for level in ("track", "window") for name in ("accuracy", "top5_accuracy", "macro_f1")},
    }
    write_config(bundle, config)


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
    return {
        "n": len(true),
        "accuracy": float(accuracy_score(true, pred)),
        "top5_accuracy": float(np.mean([t in r[:TOP_K] for t, r in zip(true, ranked)])),
        "macro_f1": float(f1_score(true, pred, labels=present, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(present, precision, recall, f1, support)
        },
        "confusion": {"labels": shown, "matrix": confusion_matrix(true, pred, labels=shown).tolist()},
    }


def plot_confusion(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Track- and window-level confusion matrices side by side: cells shaded by row share, labelled with counts."""
    from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

    n = max(len(report[level]["confusion"]["labels"]) for level in ("track", "window"))
    side = max(4.5, 0.55 * n + 2.5)
    fig = Figure(figsize=(2 * side + 1.5, side + 0.8), layout="constrained")
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
    fig.savefig(path, dpi=110)
    return Path(path)
