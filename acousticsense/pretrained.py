"""Where training starts: a new model, torchvision's ImageNet weights (resized to the model's patch grid), or a
bundle to fine-tune (its preprocessing, head and aggregation kept unless the recipe changes them)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

import torch
from torch import nn

from .bundle import BundleConfig, OnnxModel, load_bundle
from .config import ARCHITECTURES, Preprocessing
from .errors import BundleError, TrainError
from .model import DEFAULT_ARCH

if TYPE_CHECKING:
    from .train import TrainConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT = 30.0  # seconds without an answer before a download counts as failed


def initial_model(config: TrainConfig, labels: list[str], progress: bool) -> tuple[nn.Module, BundleConfig, dict[str, Any]]:
    """The model to start from, its bundle config (labels, preprocessing, architecture), and how it was initialised."""
    init = config.init
    if init in ("none", "imagenet"):
        arch = config.arch or DEFAULT_ARCH
        pre = Preprocessing()
        head = {"type": "linear"}
        if init == "imagenet":
            pre = pre.replace(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        aggregation, info = "mean", {"from": init}
    else:
        base = load_bundle(init)
        if isinstance(base.model, OnnxModel):
            raise TrainError(f"--init {init} is an ONNX export; fine-tune the bundle it was exported from ({base.config.provenance.get('export', {}).get('from', '?')})")
        arch = base.config.architecture["name"]
        if config.arch not in (None, arch):
            raise TrainError(f"--init {init} is a {arch}; it cannot be fine-tuned as {config.arch}")
        pre, head, aggregation = base.config.preprocessing, base.config.architecture.get("head", {"type": "linear"}), base.config.aggregation
        if set(labels) == set(base.config.labels):
            labels = list(base.config.labels)  # same classes: keep the bundle's order and its head
        info = {"from": "bundle", "path": Path(init).resolve().name, "model_id": base.config.model_id, "head_replaced": labels != base.config.labels}
    changes = {"window_seconds": config.window, "hop_seconds": config.hop, "image_size": config.image_size, "preemphasis": config.preemphasis}
    pre = pre.replace(**{k: v for k, v in changes.items() if v is not None})
    bundle_config = BundleConfig(
        model_id="untitled",
        architecture={"name": arch, "image_size": pre.image_size, "head": head},
        labels=list(labels),
        preprocessing=pre,
        aggregation=aggregation,
    )
    try:
        model = bundle_config.build_model()
    except BundleError as e:  # an architecture that cannot be built (an image size that is no multiple of the patch)
        raise TrainError(str(e)) from None
    if init == "imagenet":
        load_backbone(model, imagenet_state(arch, progress), pre.image_size, ARCHITECTURES[arch]["patch_size"])
    elif init != "none":
        load_backbone(model, base.model.state_dict(), pre.image_size, ARCHITECTURES[arch]["patch_size"], keep_head=not info["head_replaced"])
    return model, bundle_config, info


def imagenet_state(arch: str, progress: bool) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet-1k weights for ``arch`` (downloaded once into torch's hub cache)."""
    from torchvision.models import ViT_B_16_Weights

    if arch != "vit_b_16":
        raise TrainError(f"ImageNet weights are published for vit_b_16 only, not {arch}; use --arch vit_b_16 or --init none")
    url = ViT_B_16_Weights.IMAGENET1K_V1.url
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        return torch.hub.load_state_dict_from_url(url, progress=progress, check_hash=True, map_location="cpu")
    except (URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise TrainError(f"cannot download the ImageNet weights {url} ({reason}); --init none trains from scratch offline") from None
    finally:
        socket.setdefaulttimeout(previous)


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], image_size: int, patch_size: int, keep_head: bool = False) -> None:
    """Load pretrained weights into ``model``, resizing position embeddings; the head stays new unless ``keep_head``."""
    from torchvision.models.vision_transformer import interpolate_embeddings

    if state["encoder.pos_embedding"].shape != model.state_dict()["encoder.pos_embedding"].shape:
        state = interpolate_embeddings(image_size, patch_size, state)
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith("heads.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("heads.") for k in missing) or (keep_head and missing):
        raise TrainError(f"initial weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
