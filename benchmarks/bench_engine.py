"""The engine against ccmusic's demo pipeline, and the built-in model on one track and a folder, in one run.

    python benchmarks/bench_engine.py [--seconds 249] [--tracks 8] [--skip-onnx] [--repeat 5]

On the same audio (synthetic music rendered here, so nothing is downloaded):
  (1) the demo's reference pipeline with ViT-B/16 in ccmusic's layout (librosa.load, whole-track mel,
      specshow + JPEG per chunk, one chunk at a time through the model, as the demo does);
  (2) this engine with the same weights (the imported bundle): torch, ONNX and ONNX int8;
  (3) the built-in model: one track through the Python API, and a folder through `acousticsense predict`
      in a fresh process (start-up included).
It prints seconds, windows/s, x real time, the ratio to (1) and top-1 agreement with (1). The weights are
random (no checkpoint can be downloaded here); the head's last bias is shifted by the mean logits over the
demo's chunks so that top-1 follows the input, which makes the agreement a strict check.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from acousticsense.bundle import load_bundle
from acousticsense.importers import import_ccmusic
from acousticsense.inference import Classifier
from acousticsense.model import build_model
from acousticsense.synth import GENRES, render_clip

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]
from bench_inference import write_track  # noqa: E402
from ccmusic_demo import demo_images  # noqa: E402  (the reference the tests check the import against)


class _NoModel(torch.nn.Module):
    """Zeros for logits: what the engine costs around the model."""

    def __init__(self, labels: int):
        super().__init__()
        self.labels = labels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.new_zeros(len(images), self.labels)


def timed(fn, repeat: int = 1):
    """``fn()`` and its median time over ``repeat`` runs (this VM's timings drift by tens of percent between runs)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def row(name: str, seconds: float, windows: int, audio_s: float, base: float | None, agree: str = "") -> None:
    ratio = f"{base / seconds:8.2f}" if base else f"{'':>8}"
    print(f"{name:<44}{seconds:9.2f}{windows / seconds:10.1f}{audio_s / seconds:10.1f}{ratio}  {agree}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=249.0, help="length of the track compared with the demo")
    parser.add_argument("--tracks", type=int, default=8, help="tracks in the folder for the built-in model")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each stage but the ViT-B/16 forwards and the folders (median)")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        track = write_track(tmp / "track.mp3", args.seconds)  # mp3: a format librosa.load (soundfile) reads in full
        # ccmusic's layout with random weights, made input-sensitive on the demo's own chunks
        model = build_model("vit_b_16", 16, 224, head={"type": "mlp", "hidden": [289, 110, 42], "dropout": 0.5}).eval()
        demo_images(track)  # warm-up: librosa's first call compiles with numba (26 s in a fresh venv), not timed
        images, t_demo_pre = timed(lambda: demo_images(track), args.repeat)
        with torch.inference_mode():
            model.heads.head[-1].bias -= model(images).mean(0)
        torch.save(model.state_dict(), tmp / "save.pt")
        bundle = import_ccmusic(tmp / "save.pt", tmp / "ccmusic")

        def demo_forward() -> torch.Tensor:
            with torch.inference_mode():
                return torch.cat([model(image[None]) for image in images])  # one chunk at a time, as the demo

        logits, t_demo_fwd = timed(demo_forward)
        reference = logits.argmax(1)
        n = len(images)
        print(f"torch threads {torch.get_num_threads()}; {args.seconds:.0f} s track (44.1 kHz stereo mp3); ViT-B/16 windows: {n}")
        print(f"{'pipeline':<44}{'seconds':>9}{'win/s':>10}{'x real':>10}{'x (1)':>8}  top-1 vs (1)")
        t_demo = t_demo_pre + t_demo_fwd
        row("(1) demo: everything but the model", t_demo_pre, n, args.seconds, None)
        row("(1) demo: end to end", t_demo, n, args.seconds, None)
        variants = [("torch", bundle)]
        if not args.skip_onnx:
            from acousticsense.export import export_onnx

            for int8 in (False, True):
                out = tmp / f"onnx-{int8}"
                export_onnx(bundle, out, int8=int8, check_files=[])
                variants.append(("onnx int8" if int8 else "onnx", out))
        for name, path in variants:
            clf = Classifier(load_bundle(path), device="cpu", batch_size=8)
            clf.forward([clf.preprocess(track)])  # warm-up, as for (1)
            features, t_pre = timed(lambda clf=clf: clf.preprocess(track), args.repeat)
            probs, t_fwd = timed(lambda clf=clf, features=features: clf.forward([features])[0])
            same = int((probs.argmax(1) == reference).sum())
            if name == "torch":  # the same stages with the model replaced by nothing: decode, mel, images
                clf.model = _NoModel(len(clf.labels))
                _, t_images = timed(lambda clf=clf, features=features: clf.forward([features]), args.repeat)
                row("(2) ours: everything but the model", t_pre + t_images, n, args.seconds, t_demo_pre)
            row(f"(2) ours, {name}: end to end", t_pre + t_fwd, n, args.seconds, t_demo, f"{same}/{n} windows")

        # (3) the built-in model
        clf = Classifier.from_bundle(device="cpu")
        clf.classify(track)  # warm-up
        result, t_one = timed(lambda: clf.classify(track), args.repeat)
        row("(3) built-in model, one track", t_one, len(result.timeline), args.seconds, None)
        folder = tmp / "folder"
        folder.mkdir()
        total = 0.0
        for i in range(args.tracks):
            seconds = 150.0 + 30 * (i % 4)
            samples, _ = render_clip(GENRES[i % len(GENRES)], 100 + i, seconds)
            path = folder / f"t{i:02d}.ogg"
            write_track(path, seconds, samples)
            total += seconds
        files = sorted(folder.iterdir())
        results, t_api = timed(lambda: list(clf.classify_many(files)))
        windows = sum(len(r.timeline) for r in results)
        row(f"(3) built-in, {len(files)} tracks, Python API", t_api, windows, total, None)
        _, t_cli = timed(lambda: subprocess.run([sys.executable, "-m", "acousticsense.cli", "predict", *map(str, files), "--csv"], check=True, capture_output=True))
        row(f"(3) built-in, {len(files)} tracks, `predict` process", t_cli, windows, total, None)


if __name__ == "__main__":
    main()
