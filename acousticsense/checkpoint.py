"""A training run's folder: its checkpoint (read weights-only) and its log, each replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .errors import TrainError
from .files import replacing, write_whole

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A run's checkpoint, read weights-only (a run folder from elsewhere runs no code), or a one-line TrainError."""
    from torch.torch_version import TorchVersion  # runs before 2026-11-27 stored torch.__version__ as this str subclass

    try:
        with torch.serialization.safe_globals([TorchVersion]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle, zip and torch raise many kinds for a damaged or foreign file
        raise TrainError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    keys = ("model", "optimizer", "scheduler", "state", "rng", "recipe", "bundle_config", "split", "data", "init")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in keys) or not all(isinstance(ckpt[k], dict) for k in ("recipe", "bundle_config", "split", "state")):
        raise TrainError(f"{path}: not a training checkpoint of this program (expected {', '.join(keys)})")
    return ckpt


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file: an interruption leaves the previous checkpoint whole."""
    with replacing(path) as tmp:
        torch.save(obj, tmp)


def write_log(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``train_log.jsonl`` (one JSON object per completed epoch) atomically."""
    write_whole(out / LOG_NAME, "".join(json.dumps(entry) + "\n" for entry in history).encode())
