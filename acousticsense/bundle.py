"""Self-describing model bundles: ``config.json`` (labels, preprocessing, provenance) + ``model.safetensors``.

A bundle written by ``acousticsense export`` holds ``model.onnx`` instead and runs through ONNX Runtime.

A bundle cannot be run with another model's labels or preprocessing: both live in its
config, and loading checks the weights against the config key by key and shape by shape.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .config import AGGREGATIONS, CONFIG_NAME, FORMAT_VERSION, ONNX_NAME, WEIGHTS_NAME, BundleConfig, bundle_path, config_text, read_config, write_config  # noqa: F401 - part of this module's interface
from .errors import BundleError, ParameterError, output_folder
from .files import replacing
from .model_files import check_onnx, model_file
from .options import DEFAULT_BUNDLE, EXAMPLES_DIR  # noqa: F401 - part of this module's interface


@dataclass
class Bundle:
    """A loaded bundle: its config and the model in eval mode."""

    config: BundleConfig
    model: nn.Module
    path: Path | None = None


def save_bundle(path: str | os.PathLike, model: nn.Module, config: BundleConfig) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into directory ``path`` (atomically per file). Both are
    checked first (the config as :func:`read_config` would, the weights against it): a refused save leaves what
    was in ``path`` as it was."""
    path = bundle_path(path)
    if path.exists() and not path.is_dir():
        raise BundleError(f"{path}: exists and is not a folder")
    config_text(config)
    if not isinstance(model, nn.Module):
        raise BundleError(f"{path}: the model to save is a torch module, not {type(model).__name__}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _check_weights(config, state, str(path))
    output_folder(path)
    with replacing(path / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format_version": str(FORMAT_VERSION), "model_id": str(config.model_id)})
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) & 0o666)  # safetensors writes 0600: readable as the folder is (a service may load it)
    (path / ONNX_NAME).unlink(missing_ok=True)  # a stale export would shadow these weights
    write_config(path, config)
    return path


def check_new_bundle_folder(out: str | os.PathLike) -> None:
    """Refuse an ``--out`` that would mix a new bundle into what is there (another bundle, say): a new or empty folder only."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise BundleError(f"{out}: exists and is a file, not a folder; choose a new folder")
        if out.is_dir() and any(out.iterdir()):
            raise BundleError(f"{out}: exists and is not an empty folder; choose a new one")
    except OSError as e:  # a name longer than the system allows, no permission to list it
        raise BundleError(f"{out}: cannot be used as the new bundle's folder ({e.strerror or e})") from None


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checked_device(device: str | torch.device | None) -> torch.device:
    """``device`` (default: :func:`default_device`): ``cpu``, or ``cuda``/``cuda:N`` for a GPU this machine has;
    anything else is a :class:`ParameterError`."""
    try:
        device = torch.device(device) if device is not None else default_device()
    except (RuntimeError, TypeError):  # torch's message lists some twenty device types it knows of
        raise ParameterError(f"device {device!r}: not a device name (cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ParameterError(f"device {device}: the model runs on cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(f"device {device}: no CUDA GPU is available here (use cpu)")
        if device.index is not None and device.index >= (count := torch.cuda.device_count()):
            raise ParameterError(f"device {device}: this machine has {count} CUDA GPU{'s' if count > 1 else ''} (cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    return device


WEIGHT_TYPES = ("F32", "F16", "BF16", "F64")  # safetensors' names of the types a bundle's weights may have: read as float32


def load_bundle(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle strictly (``None``: the built-in default model); an exported one runs through ONNX Runtime."""
    device = checked_device(device)
    path = bundle_path(path) if path is not None else DEFAULT_BUNDLE
    config = read_config(path)
    weights_path = model_file(path)
    if weights_path.name == ONNX_NAME:
        return Bundle(config, OnnxModel(weights_path, len(config.labels), config.architecture["image_size"]), path)
    model = config.build_model(path)  # of bounded size, whatever the config asks (model.build_model)
    model.load_state_dict(_read_weights(weights_path, config, model.state_dict()), strict=True, assign=True)
    return Bundle(config, model.to(device).eval(), path)


def _read_weights(path: Path, config: BundleConfig, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights in ``path`` as float32, read only once the file's header shows names, shapes and types that fit
    ``expected``: a file never makes this read more than the model's size."""
    try:
        with safe_open(str(path), "pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            _check_shapes(config, {k: torch.empty(s.get_shape(), device="meta") for k, s in slices.items()}, str(path), expected)
            if odd := sorted({s.get_dtype() for s in slices.values()} - set(WEIGHT_TYPES)):
                raise BundleError(f"{path}: weights of type {', '.join(odd)}; a model's are floating point ({', '.join(WEIGHT_TYPES)})")
            state = {k: f.get_tensor(k).float() for k in slices}
    except (SafetensorError, OSError) as e:
        raise BundleError(f"{path}: unreadable weights ({e})") from None
    check_finite(state, str(path))
    return state


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
            data = path.read_bytes()  # read once: checked, then handed to ONNX Runtime (no path it could resolve others from)
        except OSError as e:
            raise BundleError(f"{path}: cannot be read ({e.strerror or e})") from None
        check_onnx(path, data)
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors for a bad file
            raise BundleError(f"{path}: not a usable ONNX model ({' '.join(str(e).split())[:200]})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        fits = len(inputs) == len(outputs) == 1 and list(inputs[0].shape[1:]) == [3, image_size, image_size] and list(outputs[0].shape[1:]) == [n_labels]
        if not fits:
            raise BundleError(
                f"{path}: the model takes {[list(i.shape) for i in inputs]} and gives {[list(o.shape) for o in outputs]}; "
                f"config.json asks for images [batch, 3, {image_size}, {image_size}] and {n_labels} labels"
            )
        self.input = inputs[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input: images.detach().float().cpu().numpy()})
        return torch.from_numpy(logits)


def _check_weights(config: BundleConfig, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise a BundleError listing missing/unexpected keys and shape mismatches, or naming non-finite weights."""
    _check_shapes(config, state, where, config.build_model(where).state_dict())
    check_finite(state, where)


def _check_shapes(config: BundleConfig, state: dict[str, torch.Tensor], where: str, expected: dict[str, torch.Tensor]) -> None:
    if report := weights_mismatch(expected, state):
        raise BundleError(f"{where}: weights do not match {config.architecture} with {len(config.labels)} labels:\n{report}")


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """A :class:`BundleError` from ``where`` naming the weights that hold NaN or infinite values, if any."""
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise BundleError(f"{where}: weights hold NaN or infinite values ({', '.join(broken[:3])}{more}): the model would answer nothing")


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
