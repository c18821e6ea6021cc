"""The recipe files' training commands stay runnable: each one dir7.train accepts, with a buildable model.

A recipe is the record of how a model was trained; a flag renamed in dir7.train, or a preset or
model field that no longer exists, would otherwise only show when someone spends a GPU session
on it. ``DRY_RUN=1`` makes a recipe print its commands without running them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from dir7.train import parse_args

ROOT = Path(__file__).resolve().parents[2]

SHAPES_STAGES = "1 2 3 4 5 6 7 7a 7b 8 9 9a 9b 10 11 11a 11b 12 13".split()
EMOJI_RUNS = ("train", "train2", "train3", "train3-pooled")


def dry_run(recipe: str, *args: str) -> list[list[str]]:
    """The dir7.train argument lists a recipe prints for ``args`` under DRY_RUN=1."""
    out = subprocess.run(["bash", f"recipes/{recipe}", *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "DRY_RUN": "1"}, timeout=60)
    assert out.returncode == 0, out.stderr
    commands = []
    for line in out.stdout.splitlines():
        words = shlex.split(line.removeprefix("+ "))
        if "dir7.train" in words:
            commands.append(words[words.index("dir7.train") + 1:])
    return commands


def check(argv: list[str]):
    """The TrainConfig dir7.train makes of ``argv``, once its model config has been built."""
    tc = parse_args(argv)
    tc.model_config()  # raises on an unknown preset, model field or value
    return tc


@pytest.mark.parametrize("stage", SHAPES_STAGES)
def test_shapes_recipe_stage_is_accepted_by_dir7_train(stage):
    commands = dry_run("dir7-shapes.sh", stage)
    if stage == "1":  # the ablation stage hands over to crosswkv-ablation.sh, which runs the arms itself
        assert not commands
        return
    assert commands, f"stage {stage} printed no dir7.train command"
    for argv in commands:
        check(argv)


@pytest.mark.parametrize("run", EMOJI_RUNS)
def test_emoji_recipe_run_is_accepted_and_stops_where_its_record_did(run):
    commands = dry_run("dir7-emoji.sh", run, "data/emoji")
    assert len(commands) == 1
    tc = check(commands[0])
    assert tc.data == "emoji:data/emoji"
    # every recorded emoji run was stopped by a time limit; the recipe pins the step it reached
    assert 0 < tc.stop_step < tc.steps


def test_emoji_recipe_run_3_arms_differ_only_in_pooled_text():
    (control,), (pooled,) = dry_run("dir7-emoji.sh", "train3", "D"), dry_run("dir7-emoji.sh", "train3-pooled", "D")
    a, b = parse_args(control), parse_args(pooled)
    assert not a.model_config().pooled_text and b.model_config().pooled_text
    differ = {f for f in vars(a) if getattr(a, f) != getattr(b, f)}
    assert differ == {"model_overrides", "out", "stop_step"}
