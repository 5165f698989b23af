"""A bundle's model file, read without torch (``info`` checks a bundle with it before anything heavy loads): which one
(``model.safetensors``, or ``model.onnx`` for an export), whole, and fitting the bundle's config."""

from __future__ import annotations

import os
from pathlib import Path

from .config import ARCHITECTURES, CONFIG_NAME, ONNX_NAME, WEIGHTS_NAME, BundleConfig, bundle_path, read_config
from .errors import BundleError


def model_file(path: str | os.PathLike, config: BundleConfig | None = None) -> Path:
    """The bundle's one model file, ``model.onnx`` (an export) or ``model.safetensors``; the latter's header is read
    (without torch) to be sure it is whole and, given the bundle's ``config`` (``info``), that its encoder has the
    architecture's depth and width and its head one output per label. A :class:`BundleError` says what is missing,
    cut short, one too many or does not fit; every weight's name and shape is checked when they load."""
    path = bundle_path(path)
    weights, onnx = path / WEIGHTS_NAME, path / ONNX_NAME
    if onnx.is_file():
        if weights.exists():
            raise BundleError(f"{path}: holds both {WEIGHTS_NAME} and {ONNX_NAME}; a bundle has one model: remove the other")
        return onnx
    if not weights.is_file():
        raise BundleError(f"{path}: missing {ONNX_NAME if 'export' in read_config(path).provenance else WEIGHTS_NAME}")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "numpy") as f:  # opening reads the header: a file cut short fails here
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()} if config is not None else None
    except (SafetensorError, OSError) as e:
        raise BundleError(f"{weights}: unreadable weights ({e})") from None
    if shapes is not None:
        _check_header(weights, shapes, config)
    return weights


def _check_header(weights: Path, shapes: dict[str, list[int]], config: BundleConfig) -> None:
    """The weights' shapes (from their file's header) against the config: encoder depth and width, one output per label."""
    spec = ARCHITECTURES[config.architecture["name"]]
    layers = len({k.split(".")[2] for k in shapes if k.startswith("encoder.layers.")})
    width = (shapes.get("class_token") or [0])[-1]
    if (layers, width) != (spec["num_layers"], spec["hidden_dim"]):
        raise BundleError(f"{weights}: {layers} encoder layers of width {width}, but {CONFIG_NAME} names {config.architecture['name']} "
                          f"({spec['num_layers']} of {spec['hidden_dim']})")
    heads = [k for k in shapes if k.startswith("heads.head.") and k.endswith(".weight")]  # Linear, or an MLP's Linears by index
    last = shapes[max(heads, key=lambda k: int(k.split(".")[2]) if k.count(".") == 3 and k.split(".")[2].isdigit() else -1)] if heads else []
    if not last or last[0] != len(config.labels):
        raise BundleError(f"{weights}: its head gives {last[0] if last else 'no'} outputs, but {CONFIG_NAME} lists {len(config.labels)} labels")


def check_onnx(path: Path, data: bytes) -> None:
    """A :class:`BundleError` if ``data`` (read from ``path``) is not a whole ONNX model, or its graph keeps tensors in
    other files: ``export`` writes one self-contained file, and a bundle must not make ONNX Runtime read any file it
    names. Torch-free (``info`` checks an export with it)."""
    try:
        import onnx
    except ImportError:
        raise BundleError(f"{path}: running an ONNX bundle needs onnx and onnxruntime: pip install 'acousticsense[onnx]'") from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf's decode errors are untyped
        raise BundleError(f"{path}: not a usable ONNX model ({' '.join(str(e).split())[:200]})") from None
    if not model.graph.node:  # an empty file (or one cut before its graph) parses as an empty model
        raise BundleError(f"{path}: not a usable ONNX model (it holds no graph)")
    graphs, tensors = [model.graph], []
    while graphs:
        graph = graphs.pop()
        tensors += list(graph.initializer) + [t for s in graph.sparse_initializer for t in (s.values, s.indices)]
        for attribute in (a for node in graph.node for a in node.attribute):
            tensors += [attribute.t, *attribute.tensors]
            graphs += [attribute.g, *attribute.graphs]
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        raise BundleError(f"{path}: its tensors point to data in other files; a bundle's model.onnx must hold all its weights itself")
