"""Turn published checkpoints into model bundles with the labels and preprocessing they were trained with.

A checkpoint is only ever read with ``torch.load(weights_only=True)`` (no arbitrary code is
unpickled) and loaded strictly: a file that does not fit the architecture is refused with a
report of its missing and unexpected keys and mismatched shapes, never half-loaded.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError

from .bundle import BundleConfig, check_finite, check_new_bundle_folder, save_bundle, weights_mismatch
from .config import AGGREGATIONS, ARCHITECTURES, SIGNAL_KEYS, Preprocessing, check_labels
from .errors import AcousticSenseError, ParameterError
from .files import parse_json, read_small_text
from .model import build_model

# ccmusic-database/music_genre, vit_b_16_mel: a torchvision vit_b_16 whose heads.head is ccmusic's
# Dropout/Linear/ReLU MLP (768 -> 289 -> 110 -> 42 -> 16), trained on magma specshow renderings.
CCMUSIC_REPO = "ccmusic-database/music_genre"
CCMUSIC_FILE = "vit_b_16_mel/save.pt"
CCMUSIC_URL = f"https://huggingface.co/{CCMUSIC_REPO}/resolve/main/{CCMUSIC_FILE}"
CCMUSIC_LABELS = [
    "Symphony", "Opera", "Solo", "Chamber", "Pop_vocal_ballad", "Adult_contemporary", "Teen_pop",
    "Contemporary_dance_pop", "Dance_pop", "Classic_indie_pop", "Chamber_cabaret_and_art_pop", "Soul_or_RnB",
    "Adult_alternative_rock", "Uplifting_anthemic_rock", "Soft_rock", "Acoustic_pop",
]  # fmt: skip
CCMUSIC_ARCHITECTURE = {"name": "vit_b_16", "image_size": 224, "head": {"type": "mlp", "hidden": [289, 110, 42], "dropout": 0.5}}
CCMUSIC_PREPROCESSING = Preprocessing(  # their demo: librosa.load, one mel and power_to_db(ref=np.max) of the whole track,
    sample_rate=22050,  # centred 11.4 s chunks, each drawn with specshow and saved as JPEG, then a vote
    resampler="soxr_hq",
    window_seconds=11.4,
    hop_seconds=11.4,  # non-overlapping chunks, as their demo cuts them
    chunking="centred",
    n_fft=2048,
    hop_length=512,
    n_mels=128,
    db_ref="max",
    db_scope="track",
    top_db=80.0,
    flip_frequency=True,
    colormap="magma",
    render_size=(369.6, 496.0),  # the axes of matplotlib's default 640x480 figure, saved with bbox_inches="tight"
    jpeg_quality=75,  # matplotlib saves .jpg through PIL at its default quality
    image_size=224,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
)
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
MAX_CHECKPOINT_BYTES = 1 << 30  # ViT-B/16, the largest preset, is 0.35 GB in fp32
HUB_TIMEOUT = 5.0  # seconds to wait for the hub before calling it offline


class CheckpointError(AcousticSenseError):
    """A checkpoint, labels file or download that cannot become a bundle (message: "NAME: reason")."""


def import_ccmusic(save_pt: str | os.PathLike, out: str | os.PathLike, aggregation: str = "vote") -> Path:
    """Bundle ccmusic's ``vit_b_16_mel/save.pt`` with its 16 labels and its preprocessing."""
    _check_aggregation(aggregation)
    check_new_bundle_folder(out)
    state = load_state_dict(save_pt)
    config = BundleConfig(
        model_id="ccmusic-vit_b_16_mel",
        architecture=CCMUSIC_ARCHITECTURE,
        labels=CCMUSIC_LABELS,
        preprocessing=CCMUSIC_PREPROCESSING,
        aggregation=aggregation,
        provenance={"source": CCMUSIC_REPO, "checkpoint": "vit_b_16_mel", "url": CCMUSIC_URL, **_file_provenance(save_pt)},
    )
    hint = " (a plain Linear head: use `acousticsense import torchvision`)" if "heads.head.weight" in state else ""
    return _bundle(config, state, save_pt, out, hint)


@dataclass(frozen=True)
class Pullable:
    """A published checkpoint that ``pull`` knows: where it is on the hub and which importer bundles it."""

    repo: str
    filename: str
    importer: Callable[[str | os.PathLike, str | os.PathLike], Path]
    import_command: str  # what to run on a file fetched by hand
    description: str


PULLABLE: dict[str, Pullable] = {
    "ccmusic-vit_b_16_mel": Pullable(
        CCMUSIC_REPO, CCMUSIC_FILE, import_ccmusic, "acousticsense import ccmusic",
        "ccmusic-database/music_genre: ViT-B/16 on magma mel spectrograms, 16 genres (Symphony ... Acoustic_pop)",
    ),
}  # fmt: skip


def import_torchvision(
    state_dict_path: str | os.PathLike,
    labels: str | os.PathLike | list[str],
    out: str | os.PathLike,
    arch: str | None = None,
    image_size: int | None = None,
    preprocessing: dict[str, Any] | None = None,
    aggregation: str = "mean",
    preprocessing_name: str = "preprocessing",
) -> Path:
    """Bundle a torchvision ViT state dict with a Linear head (``heads.head``).

    ``labels`` is a list or a file (one label a line, or a JSON list) in output order.
    ``arch`` and ``image_size`` default to what the weights' shapes say. ``preprocessing`` (the
    :class:`Preprocessing` fields the model was trained with) must say what it was trained on; its
    ``image_size`` is set to the model's. The signal's parameters it does not state (``config.SIGNAL_KEYS``:
    all of them without it) take the package's defaults, and the bundle's provenance names them
    (``preprocessing_assumed``). Errors in it name ``preprocessing_name`` (the CLI: its file).
    """
    name = Path(state_dict_path).name
    _check_aggregation(aggregation)
    given = {} if preprocessing is None else preprocessing
    if not isinstance(given, dict):
        raise ParameterError(f"{preprocessing_name}: invalid preprocessing (expected a JSON object of its fields)")
    try:
        pre = Preprocessing.from_dict(given)
    except (TypeError, ValueError, AcousticSenseError) as e:
        raise ParameterError(f"{preprocessing_name}: invalid preprocessing ({e})") from None
    assumed = [k for k in SIGNAL_KEYS if k not in given]
    check_new_bundle_folder(out)
    state = load_state_dict(state_dict_path)
    head, pos = state.get("heads.head.weight"), state.get("encoder.pos_embedding")
    if head is None or head.dim() != 2 or pos is None or pos.dim() != 3 or pos.shape[1] < 2:
        raise CheckpointError(f"{name}: not a torchvision ViT with a Linear head (no heads.head.weight of (labels, width) / encoder.pos_embedding of (1, tokens, width))")
    if arch is None:
        layers = len({k.split(".")[2] for k in state if k.startswith("encoder.layers.")})
        arch = next((a for a, spec in ARCHITECTURES.items() if (spec["hidden_dim"], spec["num_layers"]) == (head.shape[1], layers)), None)
        if arch is None:
            raise CheckpointError(f"{name}: {layers} layers of width {head.shape[1]} match none of {', '.join(ARCHITECTURES)}")
    if image_size is None:
        image_size = round((pos.shape[1] - 1) ** 0.5) * ARCHITECTURES.get(arch, {}).get("patch_size", 16)
    where = "labels" if isinstance(labels, list) else Path(labels).name
    names = check_labels(labels if isinstance(labels, list) else read_labels(labels), where)
    if len(names) != head.shape[0]:
        raise CheckpointError(f"{where}: {len(names)} labels, but the checkpoint's head has {head.shape[0]} outputs")
    config = BundleConfig(
        model_id=Path(state_dict_path).stem,
        architecture={"name": arch, "image_size": image_size, "head": {"type": "linear"}},
        labels=names,
        preprocessing=pre.replace(image_size=image_size),
        aggregation=aggregation,
        provenance={"source": "torchvision state_dict", **_file_provenance(state_dict_path),
                    **({"preprocessing_assumed": assumed} if assumed else {})},
    )
    return _bundle(config, state, state_dict_path, out)


def pull(name: str, out: str | os.PathLike | None = None) -> Path:
    """Download a known checkpoint from the Hugging Face hub (or its cache) and import it into ``out`` (default ``./NAME``)."""
    from huggingface_hub import constants, hf_hub_download

    entry = PULLABLE.get(name)
    if entry is None:
        raise CheckpointError(f"{name}: unknown model; known: {', '.join(PULLABLE)}")
    repo, filename = entry.repo, entry.filename
    out = Path(out) if out is not None else Path(name)
    check_new_bundle_folder(out)
    offline = constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    reachable = not offline and _reachable(constants.ENDPOINT)
    try:  # unreachable: only the local hub cache is tried
        path = hf_hub_download(repo, filename, local_files_only=not reachable, etag_timeout=HUB_TIMEOUT)
    except Exception as e:  # not cached, hub errors, network failures: all end the same way
        reason = str(e).splitlines()[0] if reachable else "HF_HUB_OFFLINE is set" if offline else f"{constants.ENDPOINT} is unreachable"
        raise CheckpointError(
            f"{name}: cannot download {repo}/{filename} ({reason}); fetch https://huggingface.co/{repo}/resolve/main/{filename} "
            f"yourself and run: {entry.import_command} {Path(filename).name} --out {out}"
        ) from None
    return entry.importer(path, out)


def _check_aggregation(aggregation: str) -> None:
    """Said as the option's fault before any file is read (the bundle's config would blame the output folder)."""
    if aggregation not in AGGREGATIONS:
        raise ParameterError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, not {aggregation!r}")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict safely: bare, or wrapped under a common key; a DataParallel ``module.`` prefix is dropped."""
    name = Path(path).name
    if not Path(path).is_file():
        raise CheckpointError(f"{name}: {'a folder, not a checkpoint file' if Path(path).is_dir() else 'no such file'}")
    unpacked = _unpacked_bytes(path)
    if unpacked > MAX_CHECKPOINT_BYTES:  # a small compressed file may unpack to gigabytes
        raise CheckpointError(f"{name}: unpacks to {unpacked / 2**30:.1f} GiB; a checkpoint of these models holds at most {MAX_CHECKPOINT_BYTES / 2**30:g} GiB")
    try:
        with warnings.catch_warnings():  # e.g. about a foreign file's pickle protocol: the error below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except SafetensorError as e:  # torch.load reads safetensors too
        raise CheckpointError(f"{name}: unreadable safetensors file ({e})") from None
    except Exception as e:  # torch raises many types for foreign files
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(e))
        if found:
            raise CheckpointError(f"{name}: a pickled {found[1]}, not a state dict; not unpickled, as that would run its code (save model.state_dict())") from None
        raise CheckpointError(f"{name}: not a PyTorch checkpoint of tensors (weights-only torch.load failed)") from None
    if isinstance(obj, dict):
        obj = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), obj)
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{name}: not a state dict (a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def _unpacked_bytes(path: str | os.PathLike) -> int:
    """What a checkpoint holds once read: its zip entries' sizes as the zip's directory declares them (the format
    ``torch.save`` writes), or the file's size."""
    try:
        with zipfile.ZipFile(path) as z:
            return sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return Path(path).stat().st_size


def read_labels(path: str | os.PathLike) -> list[str]:
    """Labels from a small text file: a JSON list, or one label a line (blank lines ignored)."""
    text = read_small_text(Path(path), CheckpointError)
    if text.lstrip().startswith("["):
        labels = parse_json(text, path, CheckpointError)
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise CheckpointError(f"{path}: the JSON list must hold strings")
        return labels
    return [line.strip() for line in text.splitlines() if line.strip()]


def _bundle(config: BundleConfig, state: dict[str, torch.Tensor], path: str | os.PathLike, out: str | os.PathLike, hint: str = "") -> Path:
    """Load ``state`` strictly into the config's model and save the bundle, or raise a one-line key/shape report."""
    BundleConfig.from_dict(config.to_dict(), where=str(out))  # the checks a loader will make, before any work
    arch = config.architecture
    with torch.device("meta"):  # shapes only: no memory, no random init that the checkpoint would overwrite
        model = build_model(arch["name"], len(config.labels), arch["image_size"], head=arch["head"])
    report = weights_mismatch(model.state_dict(), state)
    if report:
        lines = " | ".join(line.strip() for line in report.splitlines())
        raise CheckpointError(f"{Path(path).name}: does not fit {arch['name']} with a {arch['head']['type']} head{hint}: {lines}")
    check_finite(state, Path(path).name)
    model.to_empty(device="cpu").load_state_dict(state, strict=True)  # sets every tensor: a ViT has no non-persistent buffers
    return save_bundle(out, model.eval(), config)


def _file_provenance(path: str | os.PathLike) -> dict[str, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"file": Path(path).name, "sha256": digest.hexdigest()}


def _reachable(url: str) -> bool:
    """Whether ``url``'s host accepts a connection within HUB_TIMEOUT (fail fast when offline)."""
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=HUB_TIMEOUT).close()
        return True
    except OSError:
        return False
