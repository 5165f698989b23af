"""The same answers on CUDA as on the CPU (skipped where no GPU is present, as in CI)."""

import pytest
import torch

from acousticsense.features import Preprocessing, mel_power, power_to_db, windows_to_images
from acousticsense.inference import Classifier
from conftest import frame_windows, music_like

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_features_on_gpu_match_cpu():
    pre = Preprocessing()
    windows, _ = frame_windows(torch.from_numpy(music_like(20.0, seed=4)[0]), pre)
    cpu_db = power_to_db(mel_power(windows, pre), pre)
    gpu_db = power_to_db(mel_power(windows.cuda(), pre), pre).cpu()
    assert (cpu_db - gpu_db).abs().max() < 0.01
    assert (windows_to_images(windows, pre) - windows_to_images(windows.cuda(), pre).cpu()).abs().max() < 1e-3


def test_classify_on_gpu_matches_cpu(tiny_bundle, clip_mp3):
    cpu = Classifier.from_bundle(tiny_bundle, device="cpu").classify(clip_mp3)
    gpu_clf = Classifier.from_bundle(tiny_bundle, device="cuda", precision="fp32")
    gpu = gpu_clf.classify(clip_mp3)
    assert next(gpu_clf.model.parameters()).is_cuda
    assert [g.label for g in gpu.top_k] == [g.label for g in cpu.top_k]
    assert max(abs(a.probability - b.probability) for a, b in zip(gpu.top_k, cpu.top_k)) < 1e-3
    many = list(gpu_clf.classify_many([clip_mp3, clip_mp3]))
    assert [g.label for g in many[1].top_k] == [g.label for g in cpu.top_k]


def test_bf16_is_the_cuda_default_and_stays_close(tiny_bundle, clip_mp3):
    fp32 = Classifier.from_bundle(tiny_bundle, device="cuda", precision="fp32").classify(clip_mp3, top_k=4)
    clf = Classifier.from_bundle(tiny_bundle, device="cuda")
    assert clf.precision == "bf16"
    bf16 = clf.classify(clip_mp3, top_k=4)
    assert next(clf.model.parameters()).dtype == torch.float32  # the bf16 copy is the forward's own
    by_label = {g.label: g.probability for g in fp32.top_k}
    assert max(abs(g.probability - by_label[g.label]) for g in bf16.top_k) < 0.02


def test_bf16_embeddings_on_gpu(tiny_bundle, clip_mp3):
    clf = Classifier.from_bundle(tiny_bundle, device="cuda")
    [(probs, pooled)] = clf.forward([clf.preprocess(clip_mp3)], embed=True)
    assert probs.device.type == pooled.device.type == "cpu" and len(probs) == len(pooled) > 0
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-3) and torch.isfinite(pooled).all()
