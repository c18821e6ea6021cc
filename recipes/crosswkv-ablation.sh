#!/usr/bin/env bash
# The CrossWKV ablation: DIR-7 trained on the procedural shapes data in several CrossWKV modes
# side by side on one GPU, then scored with ShapesEval. Run from the repository root.
#
#   bash recipes/crosswkv-ablation.sh train     # every mode in MODES side by side, same settings
#   bash recipes/crosswkv-ablation.sh eval      # ShapesEval (IMAGES per prompt) on each run's EMA weights
#   bash recipes/crosswkv-ablation.sh ablate    # train, score, continue the winner (stage 1 of the
#                                               # shipped model: bash recipes/dir7-shapes.sh 1)
#
# Settings come from the environment: RUNS (runs), MODES ("prefix paper": values of the model
# config's cross_mode, passed as dir7.train --set cross_mode=MODE), STEPS (total schedule),
# MINUTES (wall-clock limit of this invocation, 0 = none), BATCH, LR, WARMUP, SCHEDULE (constant
# or cosine), COMPILE (1 = torch.compile), IMAGES (images per prompt in eval), ABLATE_MINUTES
# (phase 1 of "ablate", default 8), ABLATE_IMAGES (images per prompt in the ablation's eval,
# default 1), INIT_FROM (start new runs from these weights: dir7.train --init-from), KIND_WEIGHTS
# (the scene-kind mix: dir7.train --kind-weights), SNR_GAMMA (Min-SNR-gamma loss weights:
# dir7.train --snr-gamma).
#
# "ablate": phase 1 trains every mode side by side for ABLATE_MINUTES (the same GPU time for
# each), scores each with ShapesEval at ABLATE_IMAGES per prompt (saved as report_ablation.json),
# then phase 2 continues only the best-scoring mode for MINUTES and scores it with IMAGES per
# prompt (report.json). Rerunning "train" continues every run exactly where its checkpoint left
# it (dir7.train resumes weights, optimizer, EMA, random stream and data position), so a long
# schedule can be split over several time-limited invocations. Each run writes
# $RUNS/MODE/ (log.jsonl, checkpoint/, checkpoint/ema) and the logs $RUNS/MODE.train.log and
# $RUNS/MODE.eval.log.
set -euo pipefail
RUNS=${RUNS:-runs}
MODES=${MODES:-"prefix paper"}
STEPS=${STEPS:-30000}
MINUTES=${MINUTES:-0}
BATCH=${BATCH:-256}
LR=${LR:-5e-4}
SCHEDULE=${SCHEDULE:-constant}
WARMUP=${WARMUP:-500}
COMPILE=${COMPILE:-0}
IMAGES=${IMAGES:-4}
mkdir -p "$RUNS"

run_train() {  # mode minutes --compile|--no-compile
    python3 -m dir7.train --out "$RUNS/$1" --set cross_mode="$1" --steps "$STEPS" --batch-size "$BATCH" \
        --lr "$LR" --warmup "$WARMUP" --lr-schedule "$SCHEDULE" --ema-decay 0.999 --workers 5 --sample-every 0 \
        --save-every 1000 --log-every 100 --time-limit-min "$2" --text-pad-multiple 48 ${INIT_FROM:+--init-from "$INIT_FROM"} \
        ${KIND_WEIGHTS:+--kind-weights "$KIND_WEIGHTS"} ${SNR_GAMMA:+--snr-gamma "$SNR_GAMMA"} "$3" \
        >> "$RUNS/$1.train.log" 2>&1
}

train_one() {  # mode minutes: one run in the background; retried eagerly if compiling fails at once
    local mode=$1 minutes=$2 flag=--no-compile
    [ "$COMPILE" = 1 ] && flag=--compile
    (
        run_train "$mode" "$minutes" "$flag" \
        || { [ "$flag" = --compile ] && [ ! -e "$RUNS/$mode/checkpoint/train_state.json" ] \
             && echo "compile failed: training $mode without torch.compile" >> "$RUNS/$mode.train.log" \
             && run_train "$mode" "$minutes" --no-compile; }
    ) &
}

eval_one() {  # mode images report-name
    python3 -m dir7.eval shapes --checkpoint "$RUNS/$1/checkpoint/ema" --device cuda \
        --images-per-prompt "$2" --batch-size 256 --out "$RUNS/$1/$3" > "$RUNS/$1.eval.log" 2>&1
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], {k: round(r[k], 3) for k in ('overall', 'overall_in_distribution', 'overall_heldout')})" "$RUNS/$1/$3" "$1"
}

case "${1:-train}" in
train)
    for mode in $MODES; do train_one "$mode" "$MINUTES"; done
    wait
    for mode in $MODES; do tail -n 1 "$RUNS/$mode/log.jsonl"; done
    ;;
eval)
    for mode in $MODES; do eval_one "$mode" "$IMAGES" report.json & done
    wait
    ;;
ablate)
    for mode in $MODES; do train_one "$mode" "${ABLATE_MINUTES:-8}"; done
    wait
    for mode in $MODES; do tail -n 1 "$RUNS/$mode/log.jsonl"; eval_one "$mode" "${ABLATE_IMAGES:-1}" report_ablation.json & done
    wait
    best=$(python3 -c "import json,sys; print(max(sys.argv[2:], key=lambda m: json.load(open(f'{sys.argv[1]}/{m}/report_ablation.json'))['overall']))" "$RUNS" $MODES)
    echo "phase 2: continuing $best" | tee "$RUNS/winner.txt"
    train_one "$best" "$MINUTES"
    wait
    tail -n 1 "$RUNS/$best/log.jsonl"
    eval_one "$best" "$IMAGES" report.json
    ;;
*)
    echo "usage: $0 train|eval|ablate" >&2; exit 2 ;;
esac
