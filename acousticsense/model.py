"""The torchvision VisionTransformer family behind one factory."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import torch
from torch import nn

from .config import ARCHITECTURES, HEAD_TYPES, MAX_HEAD_LAYERS, MAX_HEAD_WEIGHTS, MAX_HIDDEN, MAX_LABELS, PREPROCESSING_INTS
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
    widths = [spec["hidden_dim"], *(hidden if head["type"] == "mlp" else []), num_classes]
    if len(widths) - 2 > MAX_HEAD_LAYERS or sum(a * b for a, b in zip(widths, widths[1:])) > MAX_HEAD_WEIGHTS:
        raise ParameterError(f"an mlp head has at most {MAX_HEAD_LAYERS} hidden layers and {MAX_HEAD_WEIGHTS:,} weights, not {len(widths) - 2} layers of {hidden!r:.80}")
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


class FusedInference(nn.Module):
    """``vit`` for inference (eval mode): each encoder block runs as an ``nn.TransformerEncoderLayer`` over the
    block's own modules, which PyTorch runs, without gradients, as one fused op (``_transformer_encoder_layer_fwd``).

    ViT-B/16 in bf16 on an H100: 1.08x the windows/s of torchvision's blocks (the engine 1.09-1.11x; BENCHMARKS.md),
    with the same numbers. Each of ``vit``'s modules is registered here once, so that ``functional_call`` (the bf16
    weights) swaps every weight exactly once and puts the model's own back.
    """

    def __init__(self, vit: VisionTransformer):
        super().__init__()
        self.conv_proj, self.class_token, self.pos_embedding = vit.conv_proj, vit.class_token, vit.encoder.pos_embedding
        self.dropout, self.ln, self.heads = vit.encoder.dropout, vit.encoder.ln, vit.heads
        self.blocks = nn.Sequential(*(_encoder_layer(block) for block in vit.encoder.layers))
        self.image_size = vit.image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ParameterError(f"images of {tuple(images.shape[-2:])} pixels; this model takes {self.image_size} x {self.image_size}")
        x = self.conv_proj(images).flatten(2).transpose(1, 2)  # (B, patches, hidden), as VisionTransformer._process_input
        x = torch.cat([self.class_token.expand(len(x), -1, -1), x], dim=1)
        x = self.ln(self.blocks(self.dropout(x + self.pos_embedding)))
        return self.heads(x[:, 0])


def _encoder_layer(block: nn.Module) -> nn.TransformerEncoderLayer:
    """A torchvision ``EncoderBlock`` as a pre-norm ``TransformerEncoderLayer`` that shares its modules (no copies)."""
    linear1, linear2 = block.mlp[0], block.mlp[3]  # MLPBlock: Linear, GELU, Dropout, Linear, Dropout
    layer = nn.TransformerEncoderLayer(
        linear1.in_features, block.self_attention.num_heads, linear1.out_features, dropout=0.0, activation="gelu",
        layer_norm_eps=block.ln_1.eps, batch_first=True, norm_first=True, device="meta",
    ).eval()  # on "meta": its own weights are never allocated, the block's replace them; eval before: not the block's modules
    layer.self_attn, layer.linear1, layer.linear2, layer.norm1, layer.norm2 = block.self_attention, linear1, linear2, block.ln_1, block.ln_2
    return layer


def inference_model(model: nn.Module) -> nn.Module:
    """What :class:`~acousticsense.inference.Classifier` runs: a ViT with an even number of heads (ViT-B/16, ViT-S/16)
    as :class:`FusedInference`; anything else as it is: PyTorch fuses no layer with an odd number of heads (the
    ViT-Ti presets, the built-in model), and an ONNX model is ONNX Runtime's."""
    if isinstance(model, VisionTransformer) and model.encoder.layers[0].self_attention.num_heads % 2 == 0:
        return FusedInference(model)
    return model
