"""ccmusic's demo pipeline, re-implemented as its code is written (librosa + matplotlib + PIL), as the reference
that the imported bundle is checked against (tests/test_importers.py) and timed against (benchmarks/bench_engine.py)."""

from __future__ import annotations

import io

import numpy as np
import torch


def specshow_image(db: np.ndarray) -> torch.Tensor:
    """ccmusic's rendering: specshow on matplotlib's default figure, axes off, saved tight as JPEG, read back, resized."""
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    from torchvision import transforms

    librosa.display.specshow(db)
    plt.axis("off")
    buf = io.BytesIO()
    plt.savefig(buf, format="jpg", bbox_inches="tight", pad_inches=0.0)
    plt.close()
    image = Image.open(buf).convert("RGB")
    assert image.size == (496, 369)  # PRE.render_size (369.6, 496) as whole pixels, (width, height)
    to_tensor = transforms.Compose([transforms.Resize([224, 224]), transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    return to_tensor(image)


def demo_images(path) -> torch.Tensor:
    """ccmusic's demo up to the model, re-implemented as it is written: librosa.load at 22,050 Hz, the mel and
    power_to_db(ref=np.max) of the whole track, as many centred chunks of int(11.4 * frames / duration) frames as fit,
    each drawn by specshow and saved as JPEG."""
    import librosa

    y, sr = librosa.load(path, sr=22050)
    db = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr), ref=np.max)
    frames = db.shape[1]
    width = int(11.4 * frames / (len(y) / sr))
    n = frames // width
    offset = (frames - n * width) // 2
    return torch.stack([specshow_image(db[:, offset + i * width : offset + (i + 1) * width]) for i in range(n)])


def demo_vote(logits: torch.Tensor) -> int:
    """The demo's majority vote over chunks (ties to the higher mean probability)."""
    votes = torch.bincount(logits.argmax(1), minlength=logits.shape[1]).float()
    return int((votes + 1e-6 * logits.softmax(1).mean(0)).argmax())
