"""AcousticSense: music genre recognition with Vision Transformers on mel spectrograms.

    >>> import acousticsense
    >>> clf = acousticsense.Classifier.from_bundle()      # the built-in default model
    >>> clf.classify("song.mp3").top_k
"""

import os

# numpy's OpenBLAS threads fight torch's for the same cores; one is enough for our numpy work.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .audio import Audio, load_audio  # noqa: E402
from .bundle import Bundle, BundleConfig, load_bundle, read_config, save_bundle  # noqa: E402
from .errors import AcousticSenseError, AudioError, BundleError, ParameterError  # noqa: E402
from .features import Preprocessing, windows_to_images  # noqa: E402
from .inference import Classifier, Failure, Result  # noqa: E402
from .model import ARCHITECTURES, build_model  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "AcousticSenseError",
    "Audio",
    "AudioError",
    "Bundle",
    "BundleConfig",
    "BundleError",
    "Classifier",
    "Failure",
    "ParameterError",
    "Preprocessing",
    "Result",
    "build_model",
    "load_audio",
    "load_bundle",
    "read_config",
    "save_bundle",
    "windows_to_images",
]
