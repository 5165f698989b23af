#!/usr/bin/env bash
# One-time set-up on a fresh machine: Debian packages, a virtual environment, the project.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# Debian packages: FluidSynth, General MIDI SoundFonts and espeak-ng (render the synthetic training corpus: its
# instruments and voices), Chromium (browser tests) and a CJK font (figures draw labels in any script, plots.py).
DEBS="libfluidsynth3 timgm6mb-soundfont fluid-soundfont-gm musescore-general-soundfont espeak-ng chromium fonts-droid-fallback"
missing=$(for p in $DEBS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: $missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch/torchvision first and pinned exactly: pip takes them from this machine's local files.
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q -e ".[dev,synth,onnx,ray]"
touch "$VENV/.installed"
