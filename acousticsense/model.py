"""The torchvision VisionTransformer family behind one factory."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from torch import nn

from .config import MAX_HIDDEN, MAX_LABELS, PREPROCESSING_INTS
from .errors import ParameterError
from .options import is_number, is_whole, whole_in_range


def _import_vision_transformer() -> type[nn.Module]:
    """torchvision's ``VisionTransformer``, without importing ``torch._dynamo`` (1.2-2.8 s on a 2-core machine).

    ``torchvision.ops``, which every torchvision model pulls in, imports ``torch._dynamo.utils`` for one function
    that only ``roi_align`` calls. While torchvision loads, that module is a stand-in: the function, and any other
    name asked of it, import the real one first. The real module loads as usual for anything that asks later.
    """
    name = "torch._dynamo.utils"
    if "torchvision" in sys.modules or name in sys.modules:
        from torchvision.models.vision_transformer import VisionTransformer

        return VisionTransformer

    def real(attr: str) -> Any:
        if attr.startswith("__"):  # what introspection asks of every module (__file__, __path__): not the real module's
            raise AttributeError(attr)
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attr)

    stand_in = types.ModuleType(name)
    stand_in.__getattr__ = real  # type: ignore[method-assign]  # PEP 562: names not defined here
    stand_in.is_compile_supported = lambda *args, **kwargs: real("is_compile_supported")(*args, **kwargs)  # type: ignore[attr-defined]
    sys.modules[name] = stand_in
    try:
        from torchvision.models.vision_transformer import VisionTransformer
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
    return VisionTransformer


VisionTransformer = _import_vision_transformer()

# Presets: the torchvision ViT-B/16 as torchvision builds it, the DeiT-sized smaller ones, and a
# 6-layer ViT-Ti ("mini") that trains and runs twice as fast on a CPU (the built-in model).
ARCHITECTURES: dict[str, dict[str, int]] = {
    "vit_b_16": dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
    "vit_s_16": dict(patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536),
    "vit_ti_16": dict(patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768),
    "vit_mini_16": dict(patch_size=16, num_layers=6, num_heads=3, hidden_dim=192, mlp_dim=768),
}
HEAD_TYPES = ("linear", "mlp")
DEFAULT_ARCH = "vit_ti_16"  # what `train` builds unless told otherwise


def build_model(
    name: str,
    num_classes: int,
    image_size: int = 224,
    head: dict[str, Any] | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
) -> VisionTransformer:
    """Build an untrained ViT preset with ``num_classes`` outputs.

    ``head`` is ``{"type": "linear"}`` (torchvision's ``heads.head``, the default) or
    ``{"type": "mlp", "hidden": [h1, h2, ...], "dropout": p}``: (Dropout, Linear, ReLU)
    per hidden layer then a final Linear, as some published checkpoints use.
    """
    if name not in ARCHITECTURES:
        raise ParameterError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    spec = ARCHITECTURES[name]
    whole_in_range("num_classes", num_classes, 1, MAX_LABELS)
    if not is_whole(image_size, 1, PREPROCESSING_INTS["image_size"][1]) or image_size % spec["patch_size"]:
        raise ParameterError(f"image_size must be a multiple of the patch size {spec['patch_size']} up to {PREPROCESSING_INTS['image_size'][1]}, not {image_size!r}")
    head = head or {"type": "linear"}
    if not isinstance(head, dict) or head.get("type") not in HEAD_TYPES:
        raise ParameterError(f"head must be {{'type': one of {', '.join(HEAD_TYPES)}, ...}}, not {head!r}")
    hidden = head.get("hidden")
    if head["type"] == "mlp" and not (isinstance(hidden, list) and all(is_whole(h, 1, MAX_HIDDEN) for h in hidden)):
        raise ParameterError(f"an mlp head needs 'hidden': a list of layer sizes from 1 to {MAX_HIDDEN}, not {hidden!r}")
    for key, p in (("dropout", dropout), ("attention_dropout", attention_dropout), ("head dropout", head.get("dropout", 0.0))):
        if not is_number(p) or not 0 <= p < 1:
            raise ParameterError(f"{key} must be a number in [0, 1), not {p!r}")
    model = VisionTransformer(
        image_size=image_size,
        num_classes=num_classes,
        dropout=dropout,
        attention_dropout=attention_dropout,
        **spec,
    )
    if head["type"] == "mlp":
        model.heads.head = mlp_head(spec["hidden_dim"], head["hidden"], num_classes, head.get("dropout", 0.0))
    return model


def mlp_head(in_dim: int, hidden: list[int], num_classes: int, dropout: float) -> nn.Sequential:
    """(Dropout, Linear, ReLU) for each hidden width, then Linear to the classes."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, num_classes))
    return nn.Sequential(*layers)
