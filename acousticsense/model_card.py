"""A bundle's model card: what the model is, what it learned from and how well it did, in words, from its records."""

from __future__ import annotations

from typing import Any

from .config import BundleConfig

INIT_WORDS = {"none": "starting from random weights", "imagenet": "starting from ImageNet image-recognition weights"}


def model_card(config: BundleConfig) -> str:
    """Markdown, in words: what the model is, what it learned from, how well it did on data it never saw.

    Bundles made by ``acousticsense train`` / ``evaluate --record`` are described from their records; any
    other provenance (e.g. an imported checkpoint's source) is listed as it is. Records not in the form those
    commands write (a hand-edited config.json) leave a card of what the config guarantees: name and labels.
    """
    try:
        return _model_card(config)
    except (KeyError, TypeError, ValueError, AttributeError):
        return (f"### About the model\n**{config.model_id}** tells {len(config.labels)} genres apart: {', '.join(config.labels)}.\n\n"
                "Its provenance and metrics are not recorded in the form `acousticsense train` writes, so they are not shown.")


def _model_card(config: BundleConfig) -> str:
    arch, pre, p, m = config.architecture, config.preprocessing, config.provenance, config.metrics
    combine = "averages their probabilities" if config.aggregation == "mean" else "lets them vote"
    lines = [
        "### About the model",
        f"**{config.model_id}** is a Vision Transformer (`{arch['name']}`, {arch['image_size']}×{arch['image_size']}-pixel pictures) "
        f"that tells {len(config.labels)} genres apart: {', '.join(config.labels)}.",
        f"It looks at {pre.window_seconds:g}-second windows, one every {pre.hop_seconds:g} s, and {combine} for the whole track.",
    ]
    data, recipe = p.get("data"), p.get("recipe")
    if data and recipe:
        split = p.get("split", {})
        music = {side: split[f"{side}_tracks"] - split.get(f"{side}_not_music", 0) for side in ("train", "val") if isinstance(split.get(f"{side}_tracks"), int)}
        start = INIT_WORDS.get(recipe["init"], "fine-tuning another model")
        lines.append(
            f"\n**What it learned from:** {_corpus(data)}. It trained on {_count(music.get('train'))} of them for {recipe['epochs']} passes, "
            f"{start}, and kept the pass that did best on the other {_count(music.get('val'))} (pass {p.get('epoch', '?')})."
        )
    else:
        lines.append("\n**Where it comes from**" + ("" if p else ": not recorded"))
        lines += [f"- {key}: {_short(value)}" for key, value in p.items()]
    held = m.get("held_out")
    if held:
        lines.append(
            f"\n**How well it does:** on {_corpus(held['data'], new=True)} that it never heard while learning, its first answer is right "
            f"for {held['track_accuracy']:.1%} of them and the right genre is among its top five for {held['track_top5_accuracy']:.1%}. "
            f"On one {pre.window_seconds:g}-second window alone: {held['window_accuracy']:.1%}."
        )
    else:
        lines.append("\n**How well it does:** not measured on held-out music yet (`acousticsense evaluate BUNDLE DATA --record`).")
    if config.ood_threshold is not None:
        caught = (held or {}).get("not_music_flagged")
        measured = f" ({caught:.0%} of held-out speech, noise and tones were)" if caught is not None else ""
        lines.append(
            f"\n**When it is unsure:** its probabilities are calibrated (temperature {config.temperature:.3g}). A recording whose "
            f"windows mostly score below {config.ood_threshold:.2f} for every genre is flagged as not music{measured}, and "
            "one whose top genre stays below that is flagged as uncertain."
        )
    if _synthetic(data or {}):
        heard = ("General MIDI instruments, synthetic voices and simulated studio production"
                 if str(data["manifest"].get("synth_version", "1")) != "1" else "General MIDI instruments only")
        lines.append(f"\nIt has only heard rendered music ({heard}), never a real band: on real recordings, treat it as a demo.")
    return "\n".join(lines)


def _synthetic(data: dict[str, Any]) -> bool:
    return "synth_version" in data.get("manifest", {})


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def _corpus(data: dict[str, Any], new: bool = False) -> str:
    """'3,200 synthetic clips of 12 s in 16 genres, composed and rendered by this project' from a recorded corpus description."""
    if not _synthetic(data):
        return f"{_count(data['tracks'])} recordings in {data['labels']} genres"
    if new:
        return f"{_count(data['tracks'])} new synthetic clips"
    seconds = data["manifest"].get("seconds")
    length = f" of {seconds:g} s" if seconds else ""
    others = f", plus {_count(data['not_music'])} clips of speech, noise and tones that are no genre" if data.get("not_music") else ""
    return f"{_count(data['tracks'])} synthetic clips{length} in {data['labels']} genres, composed and rendered by this project{others}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_short(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value)
    return str(value)
