#!/usr/bin/env bash
# Rebuild the built-in default model from nothing: render the synthetic corpus, train, score on a
# held-out corpus rendered with another seed, and install the bundle as acousticsense/assets/default_model.
# The corpus: two SoundFonts (TimGM6mb, FluidR3_GM), voices, production chains, plus speech/noise/tone clips
# taught as "no genre"; training adds background noise to half the windows and ends by calibrating.
# On this project's 2-core CPU the whole run takes 55-65 minutes (BENCHMARKS.md); a GPU is used when present.
# FINETUNE=1 then fine-tunes the result 24 more epochs (FT_EPOCHS) with --noise 0.7 into $RUN-ft (about 25 minutes
# more); FRESH=1 (implies FINETUNE) then, for each seed of FRESH_SEEDS (default "5 6"), renders a new corpus with it
# and fine-tunes the last model 20 more epochs (FRESH_EPOCHS) on it, into $RUN-ft2, $RUN-ft3 (about 40 minutes each):
# new music to learn from, and a validation split of clips no earlier stage trained on, for the early stopping and
# the calibration. The last model made is installed; the shipped bundle was made with FRESH=1 (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DATA=${DATA:-data}
RUN=${RUN:-runs/acousticsense-synth16-vit_mini}
PER_GENRE=${PER_GENRE:-160}
NOT_MUSIC=${NOT_MUSIC:-120}
EPOCHS=${EPOCHS:-55}
if [ -n "${FRESH:-}" ]; then FINETUNE=1; fi

"$BIN/acousticsense" synth "$DATA/synth-train" --per-genre "$PER_GENRE" --not-music "$NOT_MUSIC" --seconds 12 --seed 0
"$BIN/acousticsense" synth "$DATA/synth-heldout" --per-genre 20 --not-music 20 --seconds 12 --seed 1
"$BIN/acousticsense" train "$DATA/synth-train" --out "$RUN" --arch vit_mini_16 --image-size 128 --window 8 --hop 4 \
    --epochs "$EPOCHS" --noise 0.5 --batch-size 32 --lr 5e-4 --warmup-epochs 2 --patience 12 --seed 0 ${RESUME:+--resume}
"$BIN/acousticsense" evaluate "$RUN" "$DATA/synth-heldout" --out "$RUN/heldout" --record
# finetune DATA FROM OUT EPOCHS PATIENCE: fine-tune the bundle FROM on DATA into OUT with more background noise
# (continued where it stopped under RESUME=1), then score it on the held-out clips
finetune() {
    local resume=""
    if [ -n "${RESUME:-}" ] && [ -f "$3/checkpoint.pt" ]; then resume=--resume; fi
    "$BIN/acousticsense" train "$1" --out "$3" --init "$2" --epochs "$4" --lr 2e-4 --warmup-epochs 1 --noise 0.7 \
        --batch-size 32 --patience "$5" --seed 0 $resume
    "$BIN/acousticsense" evaluate "$3" "$DATA/synth-heldout" --out "$3/heldout" --record
}
if [ -n "${FINETUNE:-}" ]; then  # 24 more epochs on the same corpus and split
    finetune "$DATA/synth-train" "$RUN" "$RUN-ft" "${FT_EPOCHS:-24}" 12
    RUN="$RUN-ft"
fi
if [ -n "${FRESH:-}" ]; then  # the shipped bundle's last steps: 20 more epochs on each of two fresh corpora (seeds 5, 6)
    stage=2
    for seed in ${FRESH_SEEDS:-5 6}; do
        "$BIN/acousticsense" synth "$DATA/synth-train$seed" --per-genre "$PER_GENRE" --not-music "$NOT_MUSIC" --seconds 12 --seed "$seed"
        finetune "$DATA/synth-train$seed" "$RUN" "${RUN%-ft*}-ft$stage" "${FRESH_EPOCHS:-20}" 8
        RUN="${RUN%-ft*}-ft$stage"
        stage=$((stage + 1))
    done
fi
mkdir -p acousticsense/assets/default_model
cp "$RUN/config.json" "$RUN/model.safetensors" acousticsense/assets/default_model/
echo "installed $RUN as acousticsense/assets/default_model"
