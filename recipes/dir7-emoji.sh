#!/usr/bin/env bash
# The emoji model: the data, the training run, its evaluation (docs/training.md records each run;
# none is shipped yet). Run from the repository root; "train", "sweep" and "eval" on a GPU.
#
#   bash recipes/dir7-emoji.sh data DIR          # build the emoji set (npm pack + rasterise, ~9 min, CPU)
#   bash recipes/dir7-emoji.sh train DIR         # train from scratch on it (rerun to resume exactly)
#   bash recipes/dir7-emoji.sh eval MODEL [...]  # EmojiEval: seen, held-out and showcase prompts, seeds 0-1;
#                                                # further arguments go to python -m dir7.eval emoji
#   bash recipes/dir7-emoji.sh sweep MODEL       # EmojiEval of the first 200 seen prompts (seed 100, kept
#                                                # apart from the reported seeds) at guidance 1.5, 3, 5 on
#                                                # every step, then the best scale on timesteps 400-999 only
#
# The model is the dir7-demo architecture (7 blocks, 192 wide, patch 4: the size that samples a
# 64x64 image on two CPU cores in a few seconds), trained with the "emoji" training preset of
# dir7.train (batch 512, lr 5e-4 on a cosine schedule, Min-SNR-5, compiled) for at most
# $MINUTES minutes (default 8) in one sitting; docs/training.md records the run. Outputs go
# under $RUNS (default runs): $RUNS/emoji/{log.jsonl,checkpoint/}; the shipped weights are the
# EMA model directory $RUNS/emoji/checkpoint/ema.
#
# DRY_RUN=1 prints the commands without running them.
set -euo pipefail

RUNS=${RUNS:-runs}
MINUTES=${MINUTES:-8}
SEEDS=${SEEDS:-"0 1"}
GUIDANCE=${GUIDANCE:-"1.5 3.0 5.0"}
PYTHON=${PYTHON:-python}

usage() {
    echo "usage: $0 data DIR | train DIR | eval MODEL [dir7.eval emoji options] | sweep MODEL" >&2
    exit 2
}

run() {  # print the command, then run it (unless DRY_RUN=1)
    printf '+ %s\n' "$*"
    if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}

[ $# -ge 2 ] || usage
what=$1 target=$2
shift 2
case "$what" in
data)
    run "$PYTHON" -m dir7.data.emoji build --out "$target"
    ;;
train)
    run "$PYTHON" -m dir7.train --train-preset emoji --data "emoji:$target" --preset dir7-demo \
        --out "$RUNS/emoji" --time-limit-min "$MINUTES"
    ;;
eval)
    for seed in $SEEDS; do
        for split in seen heldout showcase; do
            run "$PYTHON" -m dir7.eval emoji --checkpoint "$target" --device cuda --images-per-prompt 4 \
                --batch-size 800 --seed "$seed" --prompts "dir7/eval/emoji_prompts_$split.jsonl" \
                --out "$target/emoji_eval_${split}_seed$seed.json" "$@"
        done
    done
    ;;
sweep)
    for g in $GUIDANCE; do
        run "$PYTHON" -m dir7.eval emoji --checkpoint "$target" --device cuda --images-per-prompt 4 \
            --batch-size 800 --seed 100 --limit 200 --guidance "$g" --guidance-interval all \
            --out "$target/sweep_g$g.json"
    done
    [ "${DRY_RUN:-0}" = 1 ] && exit 0
    best=$("$PYTHON" -c "
import json, sys
r = {g: json.load(open(f'$target/sweep_g{g}.json')) for g in sys.argv[1:]}
print(max(r, key=lambda g: (round(r[g]['concept_top1'], 2), -r[g]['fd'])))" $GUIDANCE)
    run "$PYTHON" -m dir7.eval emoji --checkpoint "$target" --device cuda --images-per-prompt 4 \
        --batch-size 800 --seed 100 --limit 200 --guidance "$best" --guidance-interval 400,999 \
        --out "$target/sweep_interval_g$best.json"
    echo "best guidance scale: $best (set it, and the interval if it scored within 0.01, in $target/pipeline_config.json)"
    ;;
*)
    usage
    ;;
esac
