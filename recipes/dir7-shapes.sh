#!/usr/bin/env bash
# How the shipped model checkpoints/dir7-shapes was trained: the training command of every
# stage, one command per stage, and the ShapesEval command each stage was scored with.
# docs/training.md has the table of stages, their results and the history. Run from the
# repository root, on a GPU (stage 13: two GPUs).
#
#   bash recipes/dir7-shapes.sh STAGE          # train one stage
#   bash recipes/dir7-shapes.sh eval DIR [...] # ShapesEval of model directory DIR at seeds 0-3
#
# STAGE is one of 1 2 3 4 5 6 7 7a 8 9 9b 10 11 11b 12 13 (7b, 9a and 11a name 7, 9 and 11).
# The shipped line is 1 2 3 4 5 6 7 9 10 11 12 13; 7a, 9b and 11b are the runs trained side by
# side with 7, 9 and 11, and 8 a continuation of 7; none of those four was carried on.
#
# Each stage is a warm start (dir7.train --init-from) from the EMA model directory of the stage
# before it, under $RUNS (default: runs), so run the stages in order: stage 3 reads
# $RUNS/prefix2/checkpoint/ema, stage 4 $RUNS/s3/checkpoint/ema, and so on. Every stage stops
# at its recorded wall-clock limit (--time-limit-min); a run stopped early by it ends where its
# cosine schedule then stands, as the recorded stages did (docs/training.md gives the steps each
# reached). Rerunning a stage's command resumes that stage exactly from $RUNS/<stage>/checkpoint.
# Where a recorded stage started from an fp16 copy of its source (stages 2 and 13, made with
# python -m scripts.device_bundle weights), this recipe starts from the fp32 weights.
#
# "eval DIR" writes DIR/shapes_eval_seed{0,1,2,3}.json (and a sample grid beside each) and prints
# the mean of the four; arguments after DIR go to python -m dir7.eval shapes, e.g.
# --guidance-interval 400,999 (the shipped default since stage 11; a model trained from stage 1
# with this recipe carries dpm++, 25 steps, guidance 2.5 at every step in its pipeline_config.json).
#
# DRY_RUN=1 prints the commands without running them.
set -euo pipefail

RUNS=${RUNS:-runs}
HERE=$(dirname "$0")
# the scene mix of stages 5-13: more of the scene kinds the model failed (dir7.data KINDS)
MIX=single_object=0.5,colors=0.5,two_object=2.5,counting=3,position=2.5,color_attr=2
# the 11-block model's scan orders (dir7.model.grown_config of dir7-demo grown by 4 blocks)
SCANS_11=row,row_reverse,col,col_reverse,row,col_reverse,col,col_reverse,row,row_reverse,col

usage() {
    echo "usage: $0 STAGE | eval DIR [dir7.eval shapes options]" >&2
    echo "  STAGE: 1 2 3 4 5 6 7 7a 8 9 9b 10 11 11b 12 13 (7b, 9a, 11a: the same as 7, 9, 11)" >&2
    exit 2
}

run() {  # print the command, then run it (unless DRY_RUN=1)
    printf '+ %s\n' "$*"
    if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}

score() {  # DIR [extra dir7.eval shapes options]: ShapesEval at seeds 0-3, as every stage was scored
    local dir=$1 seed
    shift
    [ -f "$dir/config.json" ] || [ "${DRY_RUN:-0}" = 1 ] \
        || { echo "$dir is not a model directory (no config.json)" >&2; exit 2; }
    for seed in 0 1 2 3; do
        run python -m dir7.eval shapes --checkpoint "$dir" --device cuda --images-per-prompt 4 \
            --batch-size 256 --seed "$seed" --out "$dir/shapes_eval_seed$seed.json" "$@"
    done
    [ "${DRY_RUN:-0}" = 1 ] && return
    python -c "
import json, sys
keys = ('overall', 'overall_in_distribution', 'overall_heldout')
reports = [json.load(open(f'{sys.argv[1]}/shapes_eval_seed{s}.json')) for s in range(4)]
print('mean of seeds 0-3:', {k: round(sum(r[k] for r in reports) / 4, 4) for k in keys})
" "$dir"
}

[ $# -ge 1 ] || usage
stage=$1
case "$stage" in
1)  # CrossWKV ablation: prefix and paper side by side on one GPU for 12 minutes (batch 256, lr 5e-4
    # constant after a 500-step warm-up), each scored; the winner (prefix) continued alone for 3.6
    # minutes, to step 3,631. Writes $RUNS/prefix and $RUNS/paper.
    [ $# -eq 1 ] || usage
    run env RUNS="$RUNS" COMPILE=1 ABLATE_MINUTES=12 MINUTES=3.6 STEPS=40000 ABLATE_IMAGES=4 \
        bash "$HERE/crosswkv-ablation.sh" ablate
    ;;
2)  # warm start from stage 1's prefix run (model and EMA weights; fresh AdamW moments); stopped by
    # the time limit at step 4,564 of 7,500. Captions padded to the default multiple of 16.
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/prefix2" --set cross_mode=prefix --steps 7500 --batch-size 512 \
        --lr 5e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 5 --sample-every 0 \
        --save-every 1000 --log-every 100 --time-limit-min 22.5 --init-from "$RUNS/prefix/checkpoint" --compile
    ;;
3)  # captions padded to 48 tokens: the compiled model compiles once; 5,383 of 5,600 steps
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s3" --set cross_mode=prefix --steps 5600 --batch-size 512 \
        --lr 3e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 5 --sample-every 0 \
        --save-every 1000 --log-every 100 --time-limit-min 22 --init-from "$RUNS/prefix2/checkpoint/ema" \
        --compile --text-pad-multiple 48
    ;;
4)  # lr 2e-4; 3,976 of 4,200 steps
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s4" --set cross_mode=prefix --steps 4200 --batch-size 512 \
        --lr 2e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 5 --sample-every 0 \
        --save-every 1000 --log-every 100 --time-limit-min 17.5 --init-from "$RUNS/s3/checkpoint/ema" \
        --compile --text-pad-multiple 48
    ;;
5)  # more two-object, counting, position and colour-attribution scenes (--kind-weights)
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s5" --set cross_mode=prefix --steps 5000 --batch-size 512 \
        --lr 2.5e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 5 --sample-every 0 \
        --save-every 1000 --log-every 100 --time-limit-min 20 --init-from "$RUNS/s4/checkpoint/ema" \
        --compile --text-pad-multiple 48 --kind-weights "$MIX"
    ;;
6)  # the same mix, lr 2e-4; 4,854 of 5,000 steps
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s6" --set cross_mode=prefix --steps 5000 --batch-size 512 \
        --lr 2e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 5 --sample-every 0 \
        --save-every 1000 --log-every 100 --time-limit-min 19 --init-from "$RUNS/s5/checkpoint/ema" \
        --compile --text-pad-multiple 48 --kind-weights "$MIX"
    ;;
7|7b)  # Min-SNR-5 loss weights; trained side by side on one GPU with 7a
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s7b" --set cross_mode=prefix --steps 2800 --batch-size 512 \
        --lr 2e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 5 --sample-every 0 \
        --save-every 1000 --log-every 100 --time-limit-min 18 --init-from "$RUNS/s6/checkpoint/ema" \
        --compile --text-pad-multiple 48 --kind-weights "$MIX" --snr-gamma 5
    ;;
7a)  # not carried on: stage 7 without --snr-gamma 5 (the plain eq. 17 loss)
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s7a" --set cross_mode=prefix --steps 2800 --batch-size 512 \
        --lr 2e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 5 --sample-every 0 \
        --save-every 1000 --log-every 100 --time-limit-min 18 --init-from "$RUNS/s6/checkpoint/ema" \
        --compile --text-pad-multiple 48 --kind-weights "$MIX"
    ;;
8)  # not carried on: stage 7 continued alone for 2,200 steps at lr 1e-4 with Min-SNR-5. Its exact
    # command was not recorded: the other flags here are stage 7's (its 18-minute limit did not
    # bind; the run took 9.1 minutes).
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s8" --set cross_mode=prefix --steps 2200 --batch-size 512 \
        --lr 1e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 5 --sample-every 0 \
        --save-every 1000 --log-every 100 --time-limit-min 18 --init-from "$RUNS/s7b/checkpoint/ema" \
        --compile --text-pad-multiple 48 --kind-weights "$MIX" --snr-gamma 5
    ;;
9|9a)  # stage 7's recipe from 7b: the control for 9b, trained side by side with it on one GPU
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s9a" --set cross_mode=prefix --steps 2800 --batch-size 512 \
        --lr 2e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 5 --sample-every 0 \
        --save-every 1000 --log-every 100 --time-limit-min 19 --init-from "$RUNS/s7b/checkpoint/ema" \
        --compile --text-pad-multiple 48 --kind-weights "$MIX" --snr-gamma 5
    ;;
9b)  # not carried on: stage 9 with the pooled text in adaLN (its new path starts as a no-op)
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s9b" --set cross_mode=prefix --set pooled_text=true --steps 2800 \
        --batch-size 512 --lr 2e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 5 \
        --sample-every 0 --save-every 1000 --log-every 100 --time-limit-min 19 \
        --init-from "$RUNS/s7b/checkpoint/ema" --compile --text-pad-multiple 48 --kind-weights "$MIX" --snr-gamma 5
    ;;
10)  # 9a continued alone
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s10" --set cross_mode=prefix --steps 3800 --batch-size 512 \
        --lr 2e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 6 --sample-every 0 \
        --save-every 500 --log-every 100 --time-limit-min 17 --init-from "$RUNS/s9a/checkpoint/ema" \
        --compile --text-pad-multiple 48 --kind-weights "$MIX" --snr-gamma 5
    ;;
11|11a)  # stage 10 continued (7 blocks); trained beside 11b, one run per GPU; 1,183 of 1,200 steps
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s11a" --set cross_mode=prefix --steps 1200 --batch-size 512 \
        --lr 2e-4 --warmup 100 --lr-schedule cosine --ema-decay 0.999 --workers 7 --sample-every 0 \
        --save-every 400 --log-every 100 --time-limit-min 6.3 --init-from "$RUNS/s10/checkpoint/ema" \
        --compile --text-pad-multiple 48 --kind-weights "$MIX" --snr-gamma 5
    ;;
11b)  # not carried on: stage 11 with the model grown by 4 identity-initialised blocks (11 blocks)
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s11b" --set cross_mode=prefix --steps 1200 --batch-size 512 \
        --lr 2e-4 --warmup 100 --lr-schedule cosine --ema-decay 0.999 --workers 7 --sample-every 0 \
        --save-every 400 --log-every 100 --time-limit-min 6.3 --init-from "$RUNS/s10/checkpoint/ema" \
        --compile --text-pad-multiple 48 --kind-weights "$MIX" --snr-gamma 5 --grow-depth 4
    ;;
12)  # stage 11a grown by 4 identity-initialised blocks to 11, batch 1024 on one GPU; 1,387 of 3,200 steps
    [ $# -eq 1 ] || usage
    run python -m dir7.train --out "$RUNS/s12" --set cross_mode=prefix --steps 3200 --batch-size 1024 \
        --lr 3e-4 --warmup 200 --lr-schedule cosine --ema-decay 0.999 --workers 7 --sample-every 0 \
        --save-every 250 --log-every 50 --init-from "$RUNS/s11a/checkpoint/ema" --compile \
        --text-pad-multiple 48 --kind-weights "$MIX" --snr-gamma 5 --grow-depth 4 --time-limit-min 16
    ;;
13)  # stage 12 continued for the whole cosine schedule, data parallel over two GPUs (512 per GPU);
    # the 11-block model is named by its depth and scan orders, so --init-from finds the same model
    [ $# -eq 1 ] || usage
    run torchrun --standalone --nproc_per_node 2 -m dir7.train --out "$RUNS/s13" --set cross_mode=prefix \
        --set depth=11 --set scan_orders="$SCANS_11" --steps 3200 --batch-size 1024 --lr 3e-4 --warmup 200 \
        --lr-schedule cosine --ema-decay 0.999 --workers 7 --sample-every 0 --save-every 250 --log-every 50 \
        --init-from "$RUNS/s12/checkpoint/ema" --compile --text-pad-multiple 48 --kind-weights "$MIX" \
        --snr-gamma 5 --time-limit-min 22.32
    ;;
eval)
    [ $# -ge 2 ] || usage
    shift
    score "$@"
    ;;
*)
    usage ;;
esac
