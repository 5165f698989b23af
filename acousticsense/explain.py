"""Which parts of the spectrogram made the model say a genre: relevance of the ViT's patches, per window,
mapped back onto the whole track's time-frequency grid.

Methods (``method=``), all from one step-by-step forward pass that equals ``model(images)``:

- ``"rollout"``: attention rollout (Abnar & Zuidema, 2020): per layer the heads' mean attention plus the
  identity, rows renormalised, multiplied through the layers; the class token's row over the patches.
  It does not depend on the genre.
- ``"grad_rollout"``: gradient-weighted rollout (Chefer, Gur & Wolf, ICCV 2021): per layer
  ``mean_heads(relu(grad ⊙ attention))`` of the genre's logit, accumulated as ``R += Ā R``.
- ``"input_x_grad"``: the positive part of input × gradient, summed over the patch embedding.

The default, ``grad_rollout``, is chosen by measurement (``benchmarks/bench_explain.py``, BENCHMARKS.md): on the
16 example clips, deleting its most relevant 20 % of patches lowered the top genre's probability by 0.18 (random
20 %: 0.002) with the model it was chosen on, on every clip (today's built-in model: 0.46 against 0.028 on average); rollout does 0.21 on average but not on 3 clips, and as it ignores the genre, for a
clip's second genre deleting its patches *raises* that genre's probability (median -82 %, where grad_rollout's
lowers it by 73 %). input × gradient is barely better than random (0.009).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .audio import AudioSource
from .errors import AudioError, ParameterError
from .features import mel_band_hz, power_to_db, power_to_images
from .files import write_whole
from .inference import Classifier, Features
from .options import is_number, label_in, whole_in_range
from .plots import PLOT_STYLE, mark_filled, png_bytes, styled
from .results import aggregate

METHODS = ("grad_rollout", "rollout", "input_x_grad")
DEFAULT_METHOD = "grad_rollout"


@dataclass
class Explanation:
    """A relevance map of one track for one genre.

    ``relevance`` (n_mels, frames) float32 lies on the grid of ``Features.mel`` (row 0: the lowest mel band;
    column j: the frame centred on ``j * seconds_per_frame`` s), is non-negative and sums to 1.
    """

    source: str
    genre: str
    probability: float  # the track's probability of ``genre`` (the model's aggregation of its windows)
    top_genre: str
    method: str
    relevance: np.ndarray  # (n_mels, frames) float32
    mel_db: np.ndarray  # (n_mels, frames) the track's mel in dB (track reference), for drawing
    seconds_per_frame: float
    duration: float  # seconds of audio heard: less than the frames cover when a short clip was filled to one window
    mel_hz: np.ndarray  # (n_mels,) each mel band's peak frequency in Hz
    window_frames: list[int]  # first frame of each window (width ``window_width``)
    window_width: int
    window_silent: list[bool]
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (code, message), as predict's: truncated, short_audio, not_music, ...
    filled: str | None = None  # how a clip shorter than one window was filled ("repeated", "zero-padded"); None: it was not

    def to_dict(self, bands: int | None = None, columns: int | None = None) -> dict[str, Any]:
        """JSON-ready, the map as nested lists ``[band][frame]`` (4 significant digits). At full resolution that
        is n_mels × frames numbers (about 0.6 MB per 10 s with the built-in model); ``bands`` / ``columns`` sum
        it into at most that many mel bands / time columns (``seconds_per_frame`` and ``mel_hz`` follow)."""
        for name, n in (("bands", bands), ("columns", columns)):
            if n is not None:
                whole_in_range(name, n, 1, 1 << 20)
        relevance, mel_hz, seconds = self.relevance, self.mel_hz, self.seconds_per_frame
        if bands is not None and bands < relevance.shape[0]:
            edges = np.linspace(0, relevance.shape[0], bands + 1).astype(int)[:-1]
            relevance, mel_hz = np.add.reduceat(relevance, edges, axis=0), np.array([mel_hz[e] for e in edges])
        if columns is not None and columns < relevance.shape[1]:
            step = -(-relevance.shape[1] // columns)
            relevance, seconds = np.add.reduceat(relevance, np.arange(0, relevance.shape[1], step), axis=1), seconds * step
        d = {
            "source": self.source,
            "genre": self.genre,
            "probability": round(self.probability, 6),
            "top_genre": self.top_genre,
            "method": self.method,
            "duration": round(self.duration, 3),
            "shape": list(relevance.shape),
            "seconds_per_frame": seconds,
            "mel_hz": [round(float(h), 2) for h in mel_hz],
            "relevance": [[float(f"{v:.4g}") for v in row] for row in relevance.tolist()],
            "warnings": [{"code": c, "message": m} for c, m in self.warnings],
        }
        if relevance is self.relevance:  # the windows' frames only mean something at full resolution
            d["windows"] = [{"first_frame": f, "frames": self.window_width, "silent": s} for f, s in zip(self.window_frames, self.window_silent)]
        return d


def explain(clf: Classifier, source: AudioSource | Features, genre: str | None = None, method: str = DEFAULT_METHOD) -> Explanation:
    """The relevance map of ``source`` (anything :meth:`Classifier.preprocess` takes, or its :class:`Features`)
    for ``genre`` (default: the track's top genre from the same run).

    Each non-silent window's patch relevance is normalised to 1, spread over the mel bands and frames its
    patch covers, weighted by the window's probability of the genre (its share of the track's mean) and
    averaged over the windows covering each frame (silent windows count as zero); the total is scaled to 1.
    Raises :class:`ParameterError` for an unknown genre or method, :class:`AudioError` for a silent track.
    """
    _check_method(method)
    genre = known_genre(clf, genre)
    features = source if isinstance(source, Features) else clf.preprocess(source)
    if bool(features.silent.all()):
        raise AudioError(f"{features.source}: no window is louder than {features.options.pre.silence_db:g} dBFS: the recording is silent, there is nothing to explain")
    images = window_images(features)
    with torch.inference_mode():
        probs = torch.cat([(_forward(clf.model, b)[0] / clf.config.temperature).softmax(-1) for b in images.split(clf.batch_size)]).cpu()
    track = aggregate(probs, clf.config.aggregation)
    result = clf.postprocess(features, probs)  # the warnings predict gives (short_audio, silent_windows, not_music, ...)
    top = result.top_k[0].label
    genre = genre or top
    target = clf.labels.index(genre)
    scores = torch.cat([patch_relevance(clf.model, b, target, method) for b in images.split(clf.batch_size)]).cpu()
    weights = probs[:, target].double()
    pre = features.options.pre
    relevance = stitch(features, scores, weights)
    return Explanation(
        source=features.source,
        genre=genre,
        probability=float(track[target]),
        top_genre=top,
        method=method,
        relevance=relevance,
        mel_db=power_to_db(features.mel[None], pre)[0].cpu().numpy(),
        seconds_per_frame=pre.hop_length / pre.sample_rate,
        duration=features.duration,
        mel_hz=mel_band_hz(pre),
        window_frames=features.frames.tolist(),
        window_width=features.width,
        window_silent=features.silent.tolist(),
        warnings=[(w["code"], w["message"]) for w in result.warnings],
        filled=features.filled,
    )


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def known_genre(clf: Classifier, genre: str | None) -> str | None:
    """``genre`` as the model spells it (any case: "jazz" is Jazz); :class:`ParameterError` for one it does not know."""
    return None if genre is None else label_in(genre, clf.labels, "unknown genre {genre}; this model's genres: {labels}")


def window_images(features: Features) -> torch.Tensor:
    """The model's input images (B, 3, S, S) of the non-silent windows, made as :meth:`Classifier.forward` makes them."""
    pre = features.options.pre
    windows = torch.stack(list(features.windows()))
    peak = features.peak.expand(len(windows), 1, 1) if pre.db_scope == "track" else None
    return power_to_images(windows, pre, peak)


def _vit(model: torch.nn.Module) -> torch.nn.Module:
    if not hasattr(model, "encoder") or not hasattr(model, "class_token"):
        raise ParameterError("explanations need the torch model (a torchvision VisionTransformer), not an exported bundle; use the bundle it came from")
    return model


def _attention(mha: torch.nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mha(x, x, x)`` (batch first, no masks) computed by hand, with its attention (B, heads, N, N) kept in the graph."""
    b, n, d = x.shape
    h = mha.num_heads
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1) * (d // h) ** -0.5).softmax(-1)
    return mha.out_proj((attn @ v).transpose(1, 2).reshape(b, n, d)), attn


def _forward(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The ViT's logits step by step (torchvision's EncoderBlock, eval mode): ``(logits, attention per layer, patch tokens)``."""
    vit = _vit(model)
    tokens = vit._process_input(images)
    x = torch.cat([vit.class_token.expand(len(tokens), -1, -1), tokens], 1) + vit.encoder.pos_embedding
    attns = []
    for block in vit.encoder.layers:
        y, attn = _attention(block.self_attention, block.ln_1(x))
        x = x + y
        x = x + block.mlp(block.ln_2(x))
        attns.append(attn)
    return vit.heads(vit.encoder.ln(x)[:, 0]), attns, tokens


def patch_relevance(model: torch.nn.Module, images: torch.Tensor, target: int, method: str = DEFAULT_METHOD) -> torch.Tensor:
    """Relevance (B, rows, cols) of each image's patches for class ``target``, non-negative, each image's summing to 1."""
    vit = _vit(model)
    grid = images.shape[-1] // vit.patch_size
    grad = method != "rollout"
    with torch.inference_mode(not grad), torch.set_grad_enabled(grad):
        images = images.detach().float().clone()  # a normal tensor, even if made in inference mode
        logits, attns, tokens = _forward(vit, images)
        eye = torch.eye(attns[0].shape[-1], device=images.device)
        if method == "rollout":
            rollout = eye
            for attn in attns:
                a = attn.mean(1) + eye
                rollout = (a / a.sum(-1, keepdim=True)) @ rollout
            scores = rollout[:, 0, 1:]
        else:
            grads = torch.autograd.grad(logits[:, target].sum(), attns if method == "grad_rollout" else [tokens])
            if method == "grad_rollout":
                r = eye.expand(len(images), -1, -1)
                for attn, grad in zip(attns, grads):
                    r = r + (grad * attn).clamp(min=0).mean(1) @ r
                scores = r[:, 0, 1:]
            elif method == "input_x_grad":
                scores = (tokens * grads[0]).sum(-1).clamp(min=0)
            else:
                raise ParameterError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        scores = scores.detach().float().reshape(-1, grid, grid)
    total = scores.sum((1, 2), keepdim=True)
    return torch.where(total > 0, scores / total.clamp_min(1e-30), torch.full_like(scores, 1 / grid**2))


def patches_to_mel(scores: torch.Tensor, n_mels: int, width: int, flip_frequency: bool) -> torch.Tensor:
    """Patch relevance (B, rows, cols) in image orientation -> (B, n_mels, width) on a window's mel grid.

    The image is the window's mel resized (or rasterised) to S × S, flipped when low frequencies are at the
    bottom: each mel cell takes the relevance of the patch its centre falls in, then each window sums to 1.
    """
    out = F.interpolate(scores[:, None].double(), size=(n_mels, width), mode="nearest-exact")[:, 0]
    out = out.flip(-2) if flip_frequency else out
    return out / out.sum((1, 2), keepdim=True).clamp_min(1e-30)


def stitch(features: Features, scores: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
    """Windows' patch relevance (non-silent windows, rows, cols) -> the track's map (n_mels, frames), summing to 1:
    each window's map times its weight, averaged over the windows (silent ones too) covering each frame."""
    n_mels, frames = features.mel.shape
    maps = patches_to_mel(scores, n_mels, features.width, features.options.pre.flip_frequency) * weights.view(-1, 1, 1)
    total = torch.zeros(n_mels, frames, dtype=torch.float64)
    count = torch.zeros(frames, dtype=torch.float64)
    loud = iter(maps)
    for first, silent in zip(features.frames.tolist(), features.silent.tolist()):
        count[first : first + features.width] += 1
        if not silent:
            total[:, first : first + features.width] += next(loud)
    total /= count.clamp_min(1)
    return (total / total.sum().clamp_min(1e-300)).numpy().astype(np.float32)


def delete_patches(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``images`` (B, C, S, S) with the patches where ``mask`` (B, rows, cols) is true set to each image's floor (its minimum)."""
    pixels = mask.repeat_interleave(images.shape[-2] // mask.shape[-2], -2).repeat_interleave(images.shape[-1] // mask.shape[-1], -1)
    return torch.where(pixels[:, None], images.amin((1, 2, 3), keepdim=True), images)


def faithfulness(
    clf: Classifier, source: AudioSource | Features, method: str = DEFAULT_METHOD, fraction: float = 0.2, draws: int = 5, seed: int = 0, genre: str | None = None
) -> dict[str, Any]:
    """How much deleting ``fraction`` of every window's patches (:func:`delete_patches`) lowers the track's mean
    probability of ``genre`` (default: its top genre): ``top`` the most relevant patches, ``random`` random ones
    (the mean of ``draws`` draws from ``seed``, each in ``random_draws``), ``bottom`` the least relevant;
    ``probability`` before. Positive numbers are drops. Meant for clips: it holds ``draws + 2`` copies of the images."""
    _check_method(method)
    genre = known_genre(clf, genre)
    if not (is_number(fraction) and 0 < fraction < 1):
        raise ParameterError(f"fraction must be a number between 0 and 1, not {fraction!r}")
    whole_in_range("draws", draws, 1, 100)
    whole_in_range("seed", seed, 0, 2**63 - 1)
    features = source if isinstance(source, Features) else clf.preprocess(source)
    if bool(features.silent.all()):
        raise AudioError(f"{features.source}: the recording is silent, there is nothing to delete")
    images = window_images(features)
    with torch.inference_mode():
        probs = torch.cat([(_forward(clf.model, b)[0] / clf.config.temperature).softmax(-1) for b in images.split(clf.batch_size)]).mean(0)
    target = int(probs.argmax()) if genre is None else clf.labels.index(genre)
    before = float(probs[target])
    scores = torch.cat([patch_relevance(clf.model, b, target, method) for b in images.split(clf.batch_size)])
    flat = scores.flatten(1)
    k = max(1, round(fraction * flat.shape[1]))

    gen = torch.Generator().manual_seed(seed)
    orders = [flat.argsort(1, descending=True), flat.argsort(1)] + [torch.rand(flat.shape, generator=gen).argsort(1) for _ in range(draws)]
    masks = torch.cat([torch.zeros_like(flat, dtype=torch.bool).scatter_(1, o[:, :k], True) for o in orders]).view(-1, *scores.shape[1:])
    deleted = delete_patches(images.repeat(len(orders), 1, 1, 1), masks)
    with torch.inference_mode():
        after = torch.cat([(_forward(clf.model, b)[0] / clf.config.temperature).softmax(-1)[:, target] for b in deleted.split(clf.batch_size)])
    drops = (before - after.view(len(orders), -1).mean(1)).tolist()
    return {"probability": before, "top": drops[0], "random": float(np.mean(drops[2:])), "bottom": drops[1], "random_draws": drops[2:]}


def relevance_figure(explanation: Explanation, width: float | None = None) -> Any:
    """The track's mel spectrogram (dB, grey) with the relevance map over it (colour, transparent where low);
    time in seconds, frequency in Hz; ``width`` in inches (default: growing with the track, 6 to 16). The title
    names the genre, its probability and the method, and says when the track was flagged not music or low
    confidence; what filled a clip shorter than one window is shaded. A :class:`matplotlib.figure.Figure` (no pyplot state)."""
    if width is not None and not (is_number(width) and 1 <= width <= 100):
        raise ParameterError(f"width must be a number of inches from 1 to 100, not {width!r}")
    import matplotlib
    from matplotlib.figure import Figure

    e = explanation
    n_mels, frames = e.relevance.shape
    duration = frames * e.seconds_per_frame
    extent = (0, duration, 0, n_mels)
    level = e.relevance / max(float(e.relevance.max()), 1e-30)
    overlay = matplotlib.colormaps["inferno"](level)
    overlay[..., 3] = 0.75 * np.sqrt(level)  # faint where the map is low, so the spectrogram shows through
    with styled(PLOT_STYLE):
        fig = Figure(figsize=(width or max(6.0, min(16.0, 1.5 + duration / 3)), 4.0), layout="constrained")
        ax = fig.subplots()
        ax.imshow(e.mel_db, origin="lower", aspect="auto", cmap="gray", extent=extent)
        ax.imshow(overlay, origin="lower", aspect="auto", extent=extent, interpolation="nearest")
        ticks = np.linspace(0, n_mels - 1, 5).round().astype(int)
        ax.set_yticks(ticks + 0.5, [f"{e.mel_hz[i]:,.0f}" for i in ticks])
        ax.set(title=relevance_title(e), xlabel="time (s)", ylabel="frequency (Hz)")
        mark_filled(ax, e.duration, duration, e.filled)
        mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), "inferno")
        fig.colorbar(mappable, ax=ax, label="relevance (1: the most)")
    return fig


def relevance_title(e: Explanation) -> str:
    """The figure's title: genre, probability and method, and the flag that says not to trust the genre."""
    codes = {code for code, _ in e.warnings}
    flag = "\nflagged not music: no genre is named" if "not_music" in codes else "\nflagged low confidence" if "low_confidence" in codes else ""
    return f"Where it heard {e.genre} (p = {e.probability:.2f}, {e.method}){flag}"


def save_png(explanation: Explanation, path: str | os.PathLike) -> None:
    """:func:`relevance_figure` saved as a PNG, whole or not at all (an interrupted save leaves what ``path`` held)."""
    write_whole(path, relevance_png(explanation))


def relevance_png(explanation: Explanation) -> bytes:
    """:func:`relevance_figure` as PNG bytes."""
    return png_bytes(relevance_figure(explanation))
