#!/usr/bin/env bash
# Rebuild the built-in default model from nothing: render the synthetic corpus, train, score on a
# held-out corpus rendered with another seed, and install the bundle as acousticsense/assets/default_model.
# On this project's 2-core CPU the whole run takes about 40 minutes (BENCHMARKS.md); a GPU is used when present.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DATA=${DATA:-data}
RUN=${RUN:-runs/acousticsense-synth16-vit_mini}
PER_GENRE=${PER_GENRE:-200}
EPOCHS=${EPOCHS:-36}

"$BIN/acousticsense" synth "$DATA/synth-train" --per-genre "$PER_GENRE" --seconds 12 --seed 0
"$BIN/acousticsense" synth "$DATA/synth-heldout" --per-genre 20 --seconds 12 --seed 1
"$BIN/acousticsense" train "$DATA/synth-train" --out "$RUN" --arch vit_mini_16 --image-size 128 --window 8 --hop 4 \
    --epochs "$EPOCHS" --batch-size 32 --lr 5e-4 --warmup-epochs 2 --patience 10 --seed 0 ${RESUME:+--resume}
"$BIN/acousticsense" evaluate "$RUN" "$DATA/synth-heldout" --out "$RUN/heldout" --record
mkdir -p acousticsense/assets/default_model
cp "$RUN/config.json" "$RUN/model.safetensors" acousticsense/assets/default_model/
echo "installed $RUN as acousticsense/assets/default_model"
