"""Self-describing model bundles: ``config.json`` (labels, preprocessing, provenance) + ``model.safetensors``.

A bundle written by ``acousticsense export`` holds ``model.onnx`` instead and runs through ONNX Runtime.

A bundle cannot be run with another model's labels or preprocessing: both live in its
config, and loading checks the weights against the config key by key and shape by shape.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import BundleError, ParameterError
from .features import Preprocessing
from .options import DEFAULT_BUNDLE, EXAMPLES_DIR  # noqa: F401 - part of this module's interface

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"
AGGREGATIONS = ("mean", "vote")


@dataclass
class BundleConfig:
    """What a bundle's ``config.json`` holds."""

    model_id: str
    architecture: dict[str, Any]  # {"name": preset, "image_size": int, "head": {...}}
    labels: list[str]
    preprocessing: Preprocessing
    aggregation: str = "mean"  # how window probabilities become the track's: "mean" | "vote"
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)  # {"temperature": T, "ood_threshold": t}; see calibrate.py
    format_version: int = FORMAT_VERSION

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))

    @property
    def ood_threshold(self) -> float | None:
        t = self.calibration.get("ood_threshold")
        return None if t is None else float(t)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "model_id": self.model_id,
            "architecture": self.architecture,
            "labels": list(self.labels),
            "preprocessing": self.preprocessing.to_dict(),
            "aggregation": self.aggregation,
            "provenance": self.provenance,
            "metrics": self.metrics,
            **({"calibration": self.calibration} if self.calibration else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "BundleConfig":
        """Validate and build; every problem is reported with what is wrong."""
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(f"{where}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
        missing = [k for k in ("model_id", "architecture", "labels", "preprocessing") if k not in d]
        if missing:
            raise BundleError(f"{where}: missing {', '.join(missing)}")
        labels = d["labels"]
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise BundleError(f"{where}: 'labels' must be a non-empty list of names")
        if len(set(labels)) != len(labels):
            raise BundleError(f"{where}: 'labels' has duplicates")
        arch = d["architecture"]
        if not isinstance(arch, dict) or "name" not in arch or "image_size" not in arch:
            raise BundleError(f"{where}: 'architecture' needs 'name' and 'image_size'")
        aggregation = d.get("aggregation", "mean")
        if aggregation not in AGGREGATIONS:
            raise BundleError(f"{where}: aggregation {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
        try:
            pre = Preprocessing.from_dict(d["preprocessing"])
        except (TypeError, ValueError, ParameterError) as e:
            raise BundleError(f"{where}: preprocessing: {e}") from None
        if pre.image_size != arch["image_size"]:
            raise BundleError(f"{where}: preprocessing image_size {pre.image_size} != architecture image_size {arch['image_size']}")
        calibration = d.get("calibration", {})
        t, threshold = (calibration.get("temperature", 1.0), calibration.get("ood_threshold")) if isinstance(calibration, dict) else (None, None)
        if not isinstance(calibration, dict) or not _finite_number(t) or not 0.01 <= t <= 100 or not (threshold is None or (_finite_number(threshold) and 0 <= threshold <= 1)):
            raise BundleError(f"{where}: 'calibration' needs a 'temperature' from 0.01 to 100 and an 'ood_threshold' in [0, 1] (or none)")
        return cls(
            model_id=str(d["model_id"]),
            architecture=arch,
            labels=labels,
            preprocessing=pre,
            aggregation=aggregation,
            provenance=d.get("provenance", {}),
            metrics=d.get("metrics", {}),
            calibration=calibration,
        )

    def build_model(self) -> nn.Module:
        """An untrained model of this config's architecture and label count."""
        from .model import (
            build_model,  # torchvision's model zoo takes a second to import: ONNX bundles never need it
        )

        arch = self.architecture
        try:
            return build_model(arch["name"], len(self.labels), arch["image_size"], head=arch.get("head"))
        except (ValueError, KeyError, TypeError) as e:
            raise BundleError(f"architecture: {e}") from None


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class Bundle:
    """A loaded bundle: its config and the model in eval mode."""

    config: BundleConfig
    model: nn.Module
    path: Path | None = None


def save_bundle(path: str | os.PathLike, model: nn.Module, config: BundleConfig) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into directory ``path`` (atomically per file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BundleError(f"{path}: exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _check_weights(config, state, str(path))
    tmp = path / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format_version": str(FORMAT_VERSION), "model_id": config.model_id})
    os.replace(tmp, path / WEIGHTS_NAME)
    (path / ONNX_NAME).unlink(missing_ok=True)  # a stale export would shadow these weights
    write_config(path, config)
    return path


def write_config(path: str | os.PathLike, config: BundleConfig) -> None:
    """(Re)write a bundle's ``config.json`` atomically, e.g. to record metrics."""
    tmp = Path(path) / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    os.replace(tmp, Path(path) / CONFIG_NAME)


def read_config(path: str | os.PathLike) -> BundleConfig:
    """Read and validate a bundle's config without touching its weights."""
    path = Path(path)
    config_path = path / CONFIG_NAME
    if not path.is_dir():
        raise BundleError(f"{path}: not a model bundle directory (expected {CONFIG_NAME} and {WEIGHTS_NAME} inside)")
    if not config_path.is_file():
        raise BundleError(f"{path}: missing {CONFIG_NAME}")
    try:
        data = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{config_path}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{config_path}: expected a JSON object")
    return BundleConfig.from_dict(data, where=str(config_path))


def load_bundle(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle strictly (``None``: the built-in default model); an exported one runs through ONNX Runtime."""
    path = Path(path) if path is not None else DEFAULT_BUNDLE
    config = read_config(path)
    weights_path = path / WEIGHTS_NAME
    if (path / ONNX_NAME).is_file():
        if weights_path.exists():
            raise BundleError(f"{path}: holds both {WEIGHTS_NAME} and {ONNX_NAME}; a bundle has one model: remove the other")
        return Bundle(config, OnnxModel(path / ONNX_NAME, len(config.labels), config.architecture["image_size"]), path)
    if not weights_path.is_file():
        raise BundleError(f"{path}: missing {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise BundleError(f"{weights_path}: unreadable weights ({e})") from None
    model = config.build_model()
    _check_weights(config, state, str(weights_path), model.state_dict())
    model.load_state_dict(state, strict=True)
    return Bundle(config, model.to(device).eval(), path)


class OnnxModel(nn.Module):
    """An exported model as a module: images (B, 3, S, S) in, logits (B, labels) out, computed by ONNX Runtime on the CPU."""

    def __init__(self, path: Path, n_labels: int, image_size: int):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError(f"{path}: running an ONNX bundle needs onnxruntime: pip install 'acousticsense[onnx]'") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors for a bad file
            raise BundleError(f"{path}: not a usable ONNX model ({' '.join(str(e).split())[:200]})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, image_size, image_size] or outputs[0].shape[-1] != n_labels:
            raise BundleError(
                f"{path}: the model takes {[list(i.shape) for i in inputs]} and gives {list(outputs[0].shape)}; "
                f"config.json asks for images [batch, 3, {image_size}, {image_size}] and {n_labels} labels"
            )
        self.input = inputs[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input: images.detach().float().cpu().numpy()})
        return torch.from_numpy(logits)


def _check_weights(config: BundleConfig, state: dict[str, torch.Tensor], where: str, expected: dict[str, torch.Tensor] | None = None) -> None:
    """Raise a BundleError listing missing/unexpected keys and shape mismatches."""
    expected = expected if expected is not None else config.build_model().state_dict()
    report = weights_mismatch(expected, state)
    if report:
        raise BundleError(f"{where}: weights do not match {config.architecture} with {len(config.labels)} labels:\n{report}")


def weights_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], limit: int = 20) -> str:
    """A readable report of how ``state`` differs from ``expected`` in keys and shapes; '' if it fits."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(state[k].shape)}"
        for k in expected
        if k in state and tuple(expected[k].shape) != tuple(state[k].shape)
    ]
    lines = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = items[:limit] + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])
            lines.append(f"  {title} ({len(items)}): " + "; ".join(shown))
    return "\n".join(lines)
