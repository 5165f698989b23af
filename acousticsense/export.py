"""Export a bundle to ONNX (optionally int8) as a new bundle that runs through ONNX Runtime.

    >>> from acousticsense.export import export_onnx
    >>> export_onnx(None, "runs/default-onnx", int8=True)["check"]["max_abs_diff"]

The exported bundle keeps the config (labels, preprocessing, aggregation) and replaces the weights by
``model.onnx`` with a dynamic batch axis. After writing, the export checks itself: the example clips go
through the source bundle and the export with the same features, and the largest probability difference
and the top-1 agreement are stored in the new bundle's provenance and returned.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .bundle import CONFIG_NAME, EXAMPLES_DIR, ONNX_NAME, OnnxModel, check_new_bundle_folder, load_bundle, write_config
from .errors import BundleError, output_folder
from .inference import Classifier
from .options import MAX_BATCH_SIZE

OPSET = 18
EXAMPLE_BATCH = 2  # traced with a batch of 2: a batch of 1 would freeze the batch axis


def export_onnx(
    bundle: str | os.PathLike | None,
    out: str | os.PathLike,
    int8: bool = False,
    check_files: list[Path] | None = None,
) -> dict[str, Any]:
    """Write ``out`` (config.json + model.onnx) from ``bundle`` (``None``: the built-in model); returns the export record.

    ``int8`` applies ONNX Runtime's dynamic quantization (weights int8, activations quantized on the fly).
    ``check_files`` (default: the built-in example clips) are classified by both to measure the difference.
    """
    try:
        import onnxruntime  # noqa: F401 - needed to quantize and to check
    except ImportError:
        raise BundleError("ONNX export needs onnx and onnxruntime: pip install 'acousticsense[onnx]'") from None
    out = Path(out)
    check_new_bundle_folder(out)
    source = load_bundle(bundle, "cpu")  # a bad bundle is refused before any folder is made
    if isinstance(source.model, OnnxModel):
        raise BundleError(f"{bundle}: is already an ONNX export; export the bundle it came from ({source.config.provenance.get('export', {}).get('from', '?')})")
    made = not out.exists()
    output_folder(out)
    try:
        size = source.config.architecture["image_size"]
        with tempfile.TemporaryDirectory(prefix="acousticsense-onnx-") as tmp:
            fp32 = Path(tmp) / ONNX_NAME
            _export(source.model, size, fp32)
            final = fp32
            if int8:
                final = Path(tmp) / "int8.onnx"
                _quantize(fp32, final)
            shutil.copyfile(final, out / ONNX_NAME)
        config = source.config
        suffix = "-onnx-int8" if int8 else "-onnx"
        record: dict[str, Any] = {"from": config.model_id, "format": "onnx", "opset": OPSET, "quantization": "dynamic-int8" if int8 else None, "torch": str(torch.__version__)}
        config.model_id = config.model_id + suffix
        config.provenance = {**config.provenance, "export": record}
        write_config(out, config)
        record["check"] = check_export(bundle, out, check_files)
        write_config(out, config)
    except BaseException:  # a failed or interrupted export leaves no half bundle behind
        if made:
            shutil.rmtree(out, ignore_errors=True)
        else:  # the folder was there, empty: what this wrote goes
            for name in (ONNX_NAME, CONFIG_NAME):
                (out / name).unlink(missing_ok=True)
        raise
    return record


def check_export(bundle: str | os.PathLike | None, exported: str | os.PathLike, files: list[Path] | None = None) -> dict[str, Any]:
    """Classify ``files`` with both bundles on the same features: max |Δp| over windows, window and track top-1 agreement."""
    files = files if files is not None else sorted(p for p in EXAMPLES_DIR.iterdir() if p.is_file())
    reference = Classifier.from_bundle(bundle, device="cpu")
    candidate = Classifier.from_bundle(exported, device="cpu")
    opts = reference.options()
    diff, windows, same_windows, same_tracks, tracks = 0.0, 0, 0, 0, 0
    for path in files:
        features = reference.preprocess(path, opts)
        p_ref, p_new = reference.forward([features])[0], candidate.forward([features])[0]
        if not len(p_ref):
            continue  # silent
        diff = max(diff, float((p_ref - p_new).abs().max()))
        windows += len(p_ref)
        same_windows += int((p_ref.argmax(-1) == p_new.argmax(-1)).sum())
        tracks += 1
        same_tracks += reference.postprocess(features, p_ref).label == candidate.postprocess(features, p_new).label
    return {"files": tracks, "windows": windows, "max_abs_diff": float(f"{diff:.3g}"), "window_top1_agreement": same_windows, "track_top1_agreement": same_tracks}


def _export(model: torch.nn.Module, size: int, path: Path) -> None:
    """torch.onnx (dynamo) export with a dynamic batch axis, as one self-contained file."""
    example = torch.randn(EXAMPLE_BATCH, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH_SIZE)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        torch.onnx.export(
            model.eval(), (example,), str(path), input_names=["images"], output_names=["logits"],
            dynamic_shapes=({0: batch},), opset_version=OPSET, external_data=False, dynamo=True, verbose=False,
        )  # fmt: skip
    except Exception as e:
        if _interrupted(e):  # torch.onnx wraps whatever stops it, Ctrl-C too, in its own error
            raise KeyboardInterrupt from None
        raise
    finally:
        quiet.setLevel(level)


def _interrupted(error: BaseException | None) -> bool:
    """Whether a Ctrl-C is somewhere in the chain of causes of ``error``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the graph first is logged as a warning on every call
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)

