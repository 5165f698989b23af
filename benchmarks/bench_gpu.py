"""ViT-B/16 and the built-in model on a CUDA GPU: the model alone, the engine's forward, and files end to end.

    python benchmarks/bench_gpu.py [--tracks 48] [--seconds 240] [--files 16]

(1) ViT-B/16 alone (random weights, random images at 224²), per batch size: fp32, bf16 autocast, weights
    cast to bf16, and those through ``model.FusedInference`` (fused encoder blocks: what ``Classifier`` runs on
    CUDA by default). Timed with CUDA events, median of 10.
(2) ``Classifier.forward`` over the features of ``--tracks`` tracks already on the GPU (each track's mel computed
    once by ``preprocess``), with ViT-B/16, with a model that returns zeros (what the engine costs around
    the model) and with the built-in model, per batch size: windows/s. "unfused": ViT-B/16 bf16 with
    torchvision's own encoder blocks (the engine before ``FusedInference``), the baseline in the same run.
(3) ``classify_many`` of ``--files`` encoded tracks (decoded by the CPU workers): x real time.
The audio is synthetic (tests/conftest.music_like), so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from acousticsense.bundle import Bundle, BundleConfig
from acousticsense.config import Preprocessing
from acousticsense.inference import Classifier
from acousticsense.model import build_model, inference_model

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import music_like, write_audio  # noqa: E402

LABELS = [f"genre{i}" for i in range(16)]


class _Zeros(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.new_zeros(len(images), len(LABELS))


def cuda_ms(fn, repeat: int = 10, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()`` on the GPU (CUDA events)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def wall(fn, repeat: int = 3) -> tuple[object, float]:
    """``fn()`` and its median wall-clock seconds (synchronised)."""
    times, out = [], None
    for _ in range(repeat):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def model_alone(batches: list[int]) -> None:
    print("(1) ViT-B/16 alone, 224², windows/s")
    model = build_model("vit_b_16", len(LABELS)).cuda().eval()
    half = build_model("vit_b_16", len(LABELS)).cuda().eval().to(torch.bfloat16)
    fused = inference_model(half)
    for batch in batches:
        images = torch.randn(batch, 3, 224, 224, device="cuda")
        with torch.inference_mode():
            fp32 = cuda_ms(lambda images=images: model(images))
            with torch.autocast("cuda", dtype=torch.bfloat16):
                auto = cuda_ms(lambda images=images: model(images))
            cast = cuda_ms(lambda images=images: half(images.bfloat16()))
            both = cuda_ms(lambda images=images: fused(images.bfloat16()))
        print(f"  batch {batch:5d}: fp32 {batch / fp32 * 1e3:8.0f}   bf16 autocast {batch / auto * 1e3:8.0f}   bf16 weights {batch / cast * 1e3:8.0f}"
              f"   bf16 weights, fused blocks {batch / both * 1e3:8.0f}")


def engine(tracks: int, seconds: float, batches: list[int]) -> None:
    pre = Preprocessing(image_size=224)
    vit_b = Bundle(BundleConfig("vit-b-16-random", {"name": "vit_b_16", "image_size": 224}, LABELS, pre), build_model("vit_b_16", len(LABELS)))
    torch.nn.init.normal_(vit_b.model.heads.head.weight, std=0.05)  # not the all-zero head: the probabilities differ
    zeros = Bundle(vit_b.config, _Zeros())
    audio = [np.roll(music_like(60.0, seed=i)[0], 997 * i) for i in range(tracks)]
    audio = [np.tile(a, int(np.ceil(seconds / 60)))[: int(seconds * pre.sample_rate)] for a in audio]
    clf = Classifier(vit_b, "cuda")
    features, prep = wall(lambda: [clf.preprocess(a) for a in audio])
    windows = sum(int((~f.silent).sum()) for f in features)
    print(f"(2) engine: {tracks} tracks x {seconds:.0f} s, {windows} windows; preprocess (mel of each track on the GPU) "
          f"{prep:.2f} s = {tracks * seconds / prep:.0f}x real time")
    builtin = Classifier.from_bundle(None, "cuda")
    small = [builtin.preprocess(a) for a in audio]
    probs = {}
    for batch in batches:
        line = []
        unfused = Classifier(vit_b, "cuda", batch)
        unfused._net = unfused.model  # the baseline: torchvision's own encoder blocks
        for name, c, items in (("ViT-B/16 bf16", Classifier(vit_b, "cuda", batch), features),
                               ("ViT-B/16 bf16 unfused", unfused, features),
                               ("ViT-B/16 fp32", Classifier(vit_b, "cuda", batch, "fp32"), features),
                               ("no model", Classifier(zeros, "cuda", batch), features),
                               ("built-in bf16", Classifier(Bundle(builtin.config, builtin.model), "cuda", batch), small)):
            c.forward(items[:2])  # warm-up
            probs[name], s = wall(lambda c=c, items=items: torch.cat(c.forward(items)))
            line.append(f"{name} {windows / s:7.0f}")
        print(f"  batch {batch:5d}: " + "   ".join(line))
    fp32 = probs["ViT-B/16 fp32"]
    for name in ("ViT-B/16 bf16", "ViT-B/16 bf16 unfused"):
        print(f"  {name} vs fp32: max |dp| {float((probs[name] - fp32).abs().max()):.4f}, "
              f"window top-1 agreement {float((probs[name].argmax(1) == fp32.argmax(1)).float().mean()):.4f}")


def end_to_end(files: int, seconds: float, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"track{i:02d}.ogg" for i in range(files)]
        with Pool(min(files, 8)) as pool:
            pool.starmap(_write, [(p, seconds, i) for i, p in enumerate(paths)])
        for name, clf in (("built-in", Classifier.from_bundle(None, "cuda", batch_size=batch)),):
            list(clf.classify_many(paths[:1]))
            results, s = wall(lambda clf=clf: list(clf.classify_many(paths)), repeat=2)
            failed = sum(not hasattr(r, "top_k") for r in results)
            print(f"(3) classify_many, {files} ogg files x {seconds:.0f} s, {name}: {s:.2f} s = {files * seconds / s:.0f}x real time ({failed} failed)")


def _write(path: Path, seconds: float, seed: int) -> None:
    samples = np.tile(music_like(60.0, seed=seed), (1, int(np.ceil(seconds / 60))))[:, : int(seconds * 22050)]
    write_audio(path, np.concatenate([samples, samples]), 22050)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--batches", default="64,256,1024")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    batches = [int(b) for b in args.batches.split(",")]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    model_alone(batches)
    engine(args.tracks, args.seconds, batches)
    end_to_end(args.files, args.seconds, max(batches))


if __name__ == "__main__":
    main()
