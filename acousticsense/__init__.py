"""AcousticSense: music genre recognition with Vision Transformers on mel spectrograms.

    >>> import acousticsense
    >>> clf = acousticsense.Classifier.from_bundle()      # the built-in default model
    >>> clf.classify("song.mp3").top_k
"""

import os

# numpy's OpenBLAS threads fight torch's for the same cores; one is enough for our numpy work.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .errors import AcousticSenseError, AudioError, BundleError, ParameterError  # noqa: E402

# Everything else loads on first use (PEP 562), so `import acousticsense` and the CLI's --help stay instant.
_LAZY = {
    "ARCHITECTURES": "config",
    "Audio": "audio",
    "Bundle": "bundle",
    "BundleConfig": "config",
    "Catalog": "catalog",
    "Classifier": "inference",
    "Failure": "results",
    "Preprocessing": "config",
    "Result": "results",
    "build_model": "model",
    "load_audio": "audio",
    "load_bundle": "bundle",
    "read_config": "config",
    "save_bundle": "bundle",
    "windows_to_images": "features",
}

__all__ = [
    "ARCHITECTURES",
    "AcousticSenseError",
    "Audio",
    "AudioError",
    "Bundle",
    "BundleConfig",
    "BundleError",
    "Catalog",
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


def __getattr__(name: str):  # noqa: ANN202
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
