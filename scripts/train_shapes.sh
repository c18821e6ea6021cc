#!/usr/bin/env bash
# Train DIR-7 on the procedural shapes data with each CrossWKV mode, side by side on one GPU
# (same settings, same number of steps), then score every run with ShapesEval.
#
#   bash scripts/train_shapes.sh train     # STEPS, MINUTES, BATCH, RUNS, MODES from the environment
#   bash scripts/train_shapes.sh eval      # python -m dir7.eval shapes on each run's EMA weights
#
# Rerunning "train" continues every run exactly where its checkpoint left it (dir7.train
# resumes weights, optimizer, EMA, random stream and data position), so a long schedule
# can be split over several time-limited sessions.
set -euo pipefail
RUNS=${RUNS:-runs}
MODES=${MODES:-"prefix paper"}
STEPS=${STEPS:-30000}
MINUTES=${MINUTES:-0}
BATCH=${BATCH:-256}
LR=${LR:-3e-4}
mkdir -p "$RUNS"

case "${1:-train}" in
train)
    for mode in $MODES; do
        python3 -m dir7.train --out "$RUNS/$mode" --cross-mode "$mode" --steps "$STEPS" --batch-size "$BATCH" \
            --lr "$LR" --warmup 500 --lr-schedule constant --ema-decay 0.999 --workers 5 --sample-every 0 \
            --save-every 1000 --log-every 100 --time-limit-min "$MINUTES" >> "$RUNS/$mode.train.log" 2>&1 &
    done
    wait
    for mode in $MODES; do tail -n 1 "$RUNS/$mode/log.jsonl"; done
    ;;
eval)
    for mode in $MODES; do
        python3 -m dir7.eval shapes --checkpoint "$RUNS/$mode/checkpoint/ema" --device cuda \
            --images-per-prompt "${IMAGES:-4}" --batch-size 128 --out "$RUNS/$mode/report.json" \
            > "$RUNS/$mode.eval.log" 2>&1 &
    done
    wait
    for mode in $MODES; do
        python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], {k: round(r[k], 3) for k in ('overall', 'overall_in_distribution', 'overall_heldout')})" "$RUNS/$mode/report.json" "$mode"
    done
    ;;
*)
    echo "usage: $0 train|eval" >&2; exit 2 ;;
esac
