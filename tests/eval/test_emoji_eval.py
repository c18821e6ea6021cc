"""EmojiEval on the tiny fixture set: the judge trains, round-trips, and scores real images above noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dir7.data import emoji as emoji_data
from dir7.eval import emoji
from dir7.eval.__main__ import main
from tests.data.test_emoji import make_packages

pytest.importorskip("torchmetrics")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emoji_eval")
    data = tmp / "data"
    emoji_data.build(data, make_packages(tmp / "packages", shift=40), progress=False)
    info = emoji.train_judge(data, tmp / "judge", epochs=3, batch_size=8, test_every=3, log=lambda *_: None)
    seen, held, showcase = emoji.make_prompts(data, seen=50)
    # the showcase: each everyday label the set has, once, without a skin tone, in a seen style
    seen_pairs = {(r["concept"], r["style"]) for r in emoji_data.load_records(data) if r["split"] == "train"}
    assert sorted(p["prompt"].split(" in ")[0] for p in showcase) == ["a cat face", "a thumbs up"]
    assert all("skin_tone" not in p and (p["concept"], p["style"]) in seen_pairs for p in showcase)
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in seen + held))
    return data, tmp / "judge", info, prompts


def test_the_judge_round_trips_and_reports_its_own_accuracy_and_floor(setup):
    _, judge_dir, info, _ = setup
    judge, stored, stats = emoji.EmojiJudge.load(judge_dir)
    assert stored["test_accuracy"] == info["test_accuracy"] and set(info["test_accuracy"]) == {
        "concept_top1", "concept_top5", "style_accuracy", "skin_tone_accuracy"}
    assert info["fd_real_vs_real"] >= 0 and int(stats["n"]) == info["images"]
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    judge2, _, _ = emoji.EmojiJudge.load(judge_dir)
    torch.testing.assert_close(judge(x)["concept"], judge2(x)["concept"])


def test_real_images_score_better_than_noise(setup):
    data, judge_dir, _, prompts = setup
    judge, _, stats = emoji.EmojiJudge.load(judge_dir)
    items = emoji.load_prompts(prompts)
    real = emoji.evaluate(items, emoji.real_generate(data), judge, stats, images_per_prompt=1)
    rng = np.random.default_rng(0)

    def noise(texts, seed):
        return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in texts]

    fake = emoji.evaluate(items, noise, judge, stats, images_per_prompt=1)
    for key in ("concept_top1", "concept_top5", "style_accuracy", "skin_tone_accuracy", "fd"):
        assert key in real and key in fake
    assert real["fd"] < fake["fd"]
    assert real["images"] == len(items) and len(real["details"]) == len(items)


def test_cli_scores_and_rejects_bad_input(setup, tmp_path):
    data, judge_dir, _, prompts = setup
    out = tmp_path / "r.json"
    report = main(["emoji", "--real", str(data), "--judge", str(judge_dir), "--prompts", str(prompts),
                   "--images-per-prompt", "1", "--out", str(out)])
    assert json.loads(out.read_text())["concept_top1"] == report["concept_top1"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a cat", "concept": "FFFFF", "style": "noto"}) + "\n")
    with pytest.raises(SystemExit, match="does not know"):
        main(["emoji", "--real", str(data), "--judge", str(judge_dir), "--prompts", str(bad), "--out", str(out)])
    bad.write_text(json.dumps({"prompt": "a cat"}) + "\n")
    with pytest.raises(SystemExit, match="missing"):
        main(["emoji", "--judge", str(judge_dir), "--prompts", str(bad), "--out", str(out)])
    with pytest.raises(SystemExit, match="no emoji judge"):
        main(["emoji", "--judge", str(tmp_path / "none"), "--prompts", str(prompts), "--out", str(out)])
