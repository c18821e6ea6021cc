"""The example prompts chosen from a model's reports: per ShapesEval task or per emoji style, only
prompts drawn right often enough, written into a model card's front matter."""

from __future__ import annotations

import json

import pytest

from dir7.eval.__main__ import main


def _shapes_report(path, rows):
    path.write_text(json.dumps({"images": [{"tag": t, "prompt": p, "passed": ok, "split": s} for t, p, ok, s in rows]}))
    return str(path)


def _emoji_report(path, rows, prompts="dir7/eval/emoji_prompts_showcase.jsonl"):
    details = [{"style": s, "prompt": p, "concept_top1": ok} for s, p, ok in rows]
    path.write_text(json.dumps({"settings": {"benchmark": "emoji", "prompts": prompts}, "details": details}))
    return str(path)


def test_emoji_examples_are_the_best_prompt_of_each_style_across_reports(tmp_path):
    a = _emoji_report(tmp_path / "a.json", [("noto", "a cat face in Noto style", True),
                                            ("noto", "a dog face in Noto style", True),
                                            ("twemoji", "a pizza in Twemoji style", True),
                                            ("openmoji", "a rocket in OpenMoji style", False)])
    b = _emoji_report(tmp_path / "b.json", [("noto", "a cat face in Noto style", True),
                                            ("noto", "a dog face in Noto style", False),
                                            ("twemoji", "a pizza in Twemoji style", True),
                                            ("openmoji", "a rocket in OpenMoji style", False)])
    card = tmp_path / "README.md"
    card.write_text("---\nsummary: draws emoji\n---\n\n# m\n")
    chosen = main(["examples", a, b, "--card", str(card)])
    # the dog face passed once in two, the rocket never: neither is an example at --min-pass 1
    assert chosen == ["a cat face in Noto style", "a pizza in Twemoji style"]
    assert "- text: a cat face in Noto style" in card.read_text() and "summary: draws emoji" in card.read_text()
    assert main(["examples", a, b, "--min-pass", "0.5"]) == [
        "a cat face in Noto style", "a pizza in Twemoji style"]  # the cat (2 of 2) outranks the dog (1 of 2)
    assert main(["examples", a, b, "--min-pass", "0.5", "--per-task", "2"]) == [
        "a cat face in Noto style", "a dog face in Noto style", "a pizza in Twemoji style"]
    # a held-out pair is never an example, however well it was drawn
    held = _emoji_report(tmp_path / "h.json", [("openmoji", "a fox in OpenMoji style", True)],
                         prompts="/x/dir7/eval/emoji_prompts_heldout.jsonl")
    assert main(["examples", a, held]) == ["a cat face in Noto style", "a pizza in Twemoji style"]


def test_shapes_examples_keep_the_task_order_and_skip_heldout_prompts(tmp_path):
    r = _shapes_report(tmp_path / "r.json", [("two_object", "a circle and a star", True, "in_distribution"),
                                             ("single_object", "a circle", True, "in_distribution"),
                                             ("single_object", "a heart", True, "heldout")])
    assert main(["examples", r]) == ["a circle", "a circle and a star"]


def test_a_file_that_is_not_a_report_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match=r"bad\.json"):
        main(["examples", str(bad)])
    bad.write_text("{")
    with pytest.raises(SystemExit, match="not a report"):
        main(["examples", str(bad)])
