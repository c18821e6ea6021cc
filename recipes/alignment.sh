#!/usr/bin/env bash
# Does CrossWKV earn its place? Five text paths trained from scratch at equal budget on the shapes
# data, then scored with ShapesEval. Run from the repository root, on a GPU.
#
#   bash recipes/alignment.sh params              # each arm's parameter count (no GPU needed)
#   bash recipes/alignment.sh train ARM [ARM ...]  # train the arms side by side (two fit on one H200)
#   bash recipes/alignment.sh eval ARM [ARM ...]   # ShapesEval, 4 images per prompt, seeds 0-3
#   bash recipes/alignment.sh table                # the results table (docs/experiments.md) from the reports
#
# Arms, each at the shipped model's size class (dir7-shapes: 12.96M):
#   paper, prefix, state   DIR-7 (dir7-demo grown to 11 blocks) with that CrossWKV mode
#   attention              the same DIR-7 with softmax cross-attention in place of CrossWKV
#   dit                    a DiT with self- and cross-attention (diffusers' PixArt blocks, dit-shapes)
# Measured parameter counts (bash recipes/alignment.sh params): paper 12.56M, prefix 12.96M,
# state 12.96M, attention 12.33M, dit 12.90M: all within 5% of the shipped model.
#
# Every arm gets the same data (the procedural shapes, seed 0), recipe, batch, learning-rate
# schedule and number of training images: STEPS x BATCH = 8,000 x 512 = 4.1M images by default.
# A run longer than one sitting continues exactly where its checkpoint left it when "train" is
# rerun (dir7.train resumes weights, optimizer, EMA, random stream and data position); MINUTES
# bounds one invocation. Each run's log.jsonl records images/s, so both views (equal images,
# equal GPU time) can be read. Outputs: $RUNS/ARM/ (log.jsonl, checkpoint/, report_seedS.json).
set -euo pipefail
RUNS=${RUNS:-runs/alignment}
STEPS=${STEPS:-8000}
BATCH=${BATCH:-512}
LR=${LR:-5e-4}
WARMUP=${WARMUP:-500}
MINUTES=${MINUTES:-0}
COMPILE=${COMPILE:---compile}
SEEDS=${SEEDS:-"0 1 2 3"}
ARMS_ALL="paper prefix state attention dit"
mkdir -p "$RUNS"

model_args() {  # arm -> the dir7.train model flags
    case "$1" in
        paper|prefix|state|attention) echo "--preset dir7-demo --set depth=11 --set cross_mode=$1" ;;
        dit) echo "--preset dit-shapes" ;;
        *) echo "unknown arm '$1'; arms: $ARMS_ALL" >&2; return 2 ;;
    esac
}

case "${1:-}" in
params)
    python3 - <<'EOF'
import torch
from dir7.architectures import build_model, config_from_preset
arms = {m: ("dir7-demo", {"depth": 11, "cross_mode": m}) for m in ("paper", "prefix", "state", "attention")}
arms["dit"] = ("dit-shapes", {})
for arm, (preset, overrides) in arms.items():
    with torch.device("meta"):
        model = build_model(config_from_preset(preset, **overrides))
    print(f"{arm:10s} {sum(p.numel() for p in model.parameters()):>12,}")
EOF
    ;;
train)
    shift
    [ $# -gt 0 ] || { echo "name the arms to train: $ARMS_ALL" >&2; exit 2; }
    for arm in "$@"; do
        args=$(model_args "$arm")
        # shellcheck disable=SC2086  (args is a list of flags)
        python3 -m dir7.train --out "$RUNS/$arm" $args --steps "$STEPS" --batch-size "$BATCH" --lr "$LR" \
            --warmup "$WARMUP" --lr-schedule cosine --ema-decay 0.999 --workers 5 --sample-every 0 \
            --save-every 500 --log-every 100 --time-limit-min "$MINUTES" --text-pad-multiple 48 "$COMPILE" \
            >> "$RUNS/$arm.train.log" 2>&1 &
    done
    wait
    for arm in "$@"; do tail -n 1 "$RUNS/$arm/log.jsonl"; done
    ;;
eval)
    shift
    [ $# -gt 0 ] || { echo "name the arms to score: $ARMS_ALL" >&2; exit 2; }
    for arm in "$@"; do
        model_args "$arm" > /dev/null
        for seed in $SEEDS; do
            python3 -m dir7.eval shapes --checkpoint "$RUNS/$arm/checkpoint/ema" --device cuda --images-per-prompt 4 \
                --seed "$seed" --batch-size 256 --out "$RUNS/$arm/report_seed$seed.json" >> "$RUNS/$arm.eval.log" 2>&1
        done
    done
    ;;
table)
    python3 - "$RUNS" $ARMS_ALL <<'EOF'
import json, statistics, sys
from pathlib import Path
runs, arms = Path(sys.argv[1]), sys.argv[2:]
print("| arm | overall (mean +- sd over seeds) | in-distribution | held-out | seeds |")
print("|---|---|---|---|---|")
for arm in arms:
    reports = [json.loads(p.read_text()) for p in sorted((runs / arm).glob("report_seed*.json"))]
    if not reports:
        print(f"| {arm} | not scored | | | 0 |")
        continue
    def stat(key):
        xs = [r[key] for r in reports]
        return f"{statistics.mean(xs):.3f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"
    print(f"| {arm} | {stat('overall')} | {stat('overall_in_distribution')} | {stat('overall_heldout')} | {len(reports)} |")
EOF
    ;;
*)
    echo "usage: bash recipes/alignment.sh params | train ARM... | eval ARM... | table" >&2
    exit 2
    ;;
esac
