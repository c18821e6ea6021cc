#!/usr/bin/env bash
# The emoji model: the data, the training run, its evaluation (docs/training.md records each run;
# none is shipped yet). Run from the repository root; "train", "sweep" and "eval" on a GPU.
#
#   bash recipes/dir7-emoji.sh data DIR          # build the emoji set (npm pack + rasterise, ~9 min, CPU)
#   bash recipes/dir7-emoji.sh train DIR         # run 1: from scratch on it (rerun to resume exactly)
#   bash recipes/dir7-emoji.sh train2 DIR        # run 2: run 1's EMA carried on (rerun to resume exactly)
#   bash recipes/dir7-emoji.sh train3 DIR        # run 3: run 2's EMA carried on (the control arm)
#   bash recipes/dir7-emoji.sh train3-pooled DIR # run 3's other arm: the same with pooled_text switched on
#                                                # (run both side by side on one GPU)
#   bash recipes/dir7-emoji.sh train4 DIR        # run 4: from scratch, 11 blocks, prefix mode (the control)
#   bash recipes/dir7-emoji.sh train4-state DIR  # run 4's other arm: the same in state mode (side by side)
#   bash recipes/dir7-emoji.sh eval MODEL [...]  # EmojiEval: seen, held-out and showcase prompts, seeds 0-1;
#                                                # further arguments go to python -m dir7.eval emoji
#   bash recipes/dir7-emoji.sh sweep MODEL       # EmojiEval of the first 200 seen prompts (seed 100, kept
#                                                # apart from the reported seeds) at guidance $GUIDANCE on
#                                                # timesteps $INTERVAL; with INTERVAL=all (run 1's sweep),
#                                                # then the best scale on timesteps 400-999 only. Run 2's:
#                                                # GUIDANCE="2.0 3.5 5.0" INTERVAL=400,999; run 3's:
#                                                # GUIDANCE="5.0 7.0" INTERVAL=400,999
#
# The model is the dir7-demo architecture (7 blocks, 192 wide, patch 4: the size that samples a
# 64x64 image on two CPU cores in a few seconds), trained with the "emoji" training preset of
# dir7.train (batch 512, lr 5e-4 on a cosine schedule over 2,000 steps, Min-SNR-5, compiled).
# Each run stops at the step its recorded run reached (a time limit stopped those: run 1 at
# step 1,203 of 2,000, run 2 at 3,104 of 4,000, run 3's arms at 1,639 and 1,651 of 1,850), so
# a rerun on any machine trains the same steps. Outputs go under $RUNS (default runs):
# $RUNS/emoji/, emoji2/, emoji3/ and emoji3-pooled/, each with log.jsonl and checkpoint/, whose
# ema/ is the model directory to evaluate or ship.
#
# DRY_RUN=1 prints the commands without running them.
set -euo pipefail

RUNS=${RUNS:-runs}
SEEDS=${SEEDS:-"0 1"}
GUIDANCE=${GUIDANCE:-"1.5 3.0 5.0"}
INTERVAL=${INTERVAL:-all}
PYTHON=${PYTHON:-python}

usage() {
    echo "usage: $0 data DIR | train DIR | train2 DIR | train3 DIR | train3-pooled DIR | train4 DIR | train4-state DIR | eval MODEL [dir7.eval emoji options] | sweep MODEL" >&2
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
        --out "$RUNS/emoji" --stop-step 1203
    ;;
train2)
    # a new cosine schedule over 4,000 steps at a lower peak, fresh AdamW moments (hence a warm-up)
    run "$PYTHON" -m dir7.train --train-preset emoji --data "emoji:$target" --preset dir7-demo \
        --init-from "$RUNS/emoji/checkpoint/ema" --lr 3e-4 --warmup 100 --steps 4000 \
        --out "$RUNS/emoji2" --stop-step 3104
    ;;
train3 | train3-pooled)
    # run 2's EMA on a new cosine schedule over 1,850 steps at peak lr 2.5e-4; the pooled arm adds the
    # mean text state to adaLN's conditioning (a growable switch: its new module starts as a no-op)
    if [ "$what" = train3 ]; then extra=(--out "$RUNS/emoji3" --stop-step 1639)
    else extra=(--set pooled_text=true --out "$RUNS/emoji3-pooled" --stop-step 1651); fi
    run "$PYTHON" -m dir7.train --train-preset emoji --data "emoji:$target" --preset dir7-demo \
        --init-from "$RUNS/emoji2/checkpoint/ema" --lr 2.5e-4 --warmup 100 --steps 1850 "${extra[@]}"
    ;;
train4 | train4-state)
    # from scratch, the shapes model's 11 blocks (dir7-demo is 7), at a constant lr after the warm-up,
    # so that a later session carries an arm on from its fp16 EMA (INIT=DIR: --init-from, fresh AdamW
    # moments, hence a warm-up again) without restarting a schedule; MINUTES bounds one sitting
    # The recorded arms (commit 0b04a3b, state mode's old key init) stopped at steps 1,392 and 1,450
    # (MINUTES=10.4); STOP= (empty) trains on until MINUTES or the --steps bound
    if [ "$what" = train4 ]; then extra=(--out "$RUNS/emoji4-prefix"); stop=${STOP-1392}
    else extra=(--set cross_mode=state --out "$RUNS/emoji4-state"); stop=${STOP-1450}; fi
    if [ -n "$stop" ]; then extra+=(--stop-step "$stop"); fi
    if [ -n "${INIT:-}" ]; then extra+=(--init-from "$INIT"); fi
    run "$PYTHON" -m dir7.train --train-preset emoji --data "emoji:$target" --preset dir7-demo --set depth=11 \
        --lr 4e-4 --warmup 200 --lr-schedule constant --steps 1000000 --time-limit-min "${MINUTES:-0}" \
        "${extra[@]}"
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
            --batch-size 800 --seed 100 --limit 200 --guidance "$g" --guidance-interval "$INTERVAL" \
            --out "$target/sweep_g$g.json"
    done
    if [ "${DRY_RUN:-0}" = 1 ] || [ "$INTERVAL" != all ]; then exit 0; fi
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
