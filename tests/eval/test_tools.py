"""The analysis commands of ``python -m dir7.eval``: failures, loss-by-timestep, guidance-sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dir7
from dir7.eval.__main__ import main as cli_main
from dir7.eval.failures import KINDS
from tests.helpers import REPO, randomize_zero_inits, tiny_config

SHIPPED_REPORT = REPO / "results" / "dir7-shapes" / "shapes_eval.json"


def test_failures_accounts_for_every_failed_image(tmp_path, capsys):
    report = json.loads(SHIPPED_REPORT.read_text())
    out = tmp_path / "failures.json"
    summary = cli_main(["failures", str(SHIPPED_REPORT), "--json", str(out)])
    assert json.loads(out.read_text()) == summary
    assert summary["images"] == len(report["images"])
    for task, row in summary["tasks"].items():
        failed = [r for r in report["images"] if r["tag"] == task and not r["passed"]]
        assert row["failed"] == len(failed)
        assert sum(row[k] for k in KINDS) == sum(len(r["reasons"]) for r in failed)
    assert "| two_object |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a ShapesEval report"):
        cli_main(["failures", str(tmp_path / "nope.json")])


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, text_encoder):
    path = tmp_path_factory.mktemp("tiny") / "model"
    model = dir7.DIR7Model(tiny_config(image_size=32, patch_size=4))
    dir7.DIR7Pipeline(model, text_encoder).save_pretrained(path)
    return path


def test_loss_by_timestep_reports_every_timestep_with_its_weight(tiny_model_dir, capsys):
    rows = cli_main(["loss-by-timestep", "--checkpoint", str(tiny_model_dir), "--batch", "2",
                     "--timesteps", "10,990"])
    assert [r["t"] for r in rows] == [10, 990]
    assert all(0 <= r["eps_mse"] < 10 for r in rows)  # finite: NaN fails the comparison
    assert rows[0]["min_snr_weight"] < 1 and rows[1]["min_snr_weight"] == 1
    assert "| 990 |" in capsys.readouterr().out
    assert all(0 <= r["eps_mse_swapped_text"] < 10 for r in rows)
    with pytest.raises(SystemExit, match="timesteps must lie"):
        cli_main(["loss-by-timestep", "--checkpoint", str(tiny_model_dir), "--timesteps", "1000"])
    with pytest.raises(SystemExit, match="at least 2"):
        cli_main(["loss-by-timestep", "--checkpoint", str(tiny_model_dir), "--batch", "1"])


def test_text_gain_is_zero_for_a_model_whose_text_path_is_cut(tmp_path, text_encoder):
    args = ["loss-by-timestep", "--batch", "3", "--timesteps", "500,900"]
    torch.manual_seed(0)
    # softmax cross-attention with a strong text projection: a random model that reads its prompt
    # (a random CrossWKV passes the prompt on far more weakly, too weakly to see in a float32 loss)
    model = randomize_zero_inits(dir7.DIR7Model(tiny_config(image_size=32, patch_size=4, cross_mode="attention")))
    for block in model.blocks:
        block.cross.text_in.weight.data.normal_(std=1.0)
    pipe = dir7.DIR7Pipeline(model, text_encoder)
    pipe.save_pretrained(tmp_path / "live")
    assert all(abs(r["text_gain"]) > 1e-4 for r in cli_main([*args, "--checkpoint", str(tmp_path / "live")]))
    for block in model.blocks:
        block.cross.text_in.weight.data.zero_()  # the only way in for the text
    pipe.save_pretrained(tmp_path / "deaf")
    assert all(r["text_gain"] == 0 for r in cli_main([*args, "--checkpoint", str(tmp_path / "deaf")]))


@pytest.mark.slow
def test_guidance_sweep_scores_the_grid_then_the_finalists(tiny_model_dir, tmp_path):
    out = tmp_path / "sweep.json"
    args = ["guidance-sweep", "--checkpoint", str(tiny_model_dir), "--guidance", "1.5", "3", "--intervals", "all",
            "400,999", "--val-seeds", "7", "--test-seeds", "0", "--top", "1", "--images-per-prompt", "1",
            "--batch-size", "8", "--devices", "cpu", "--workers", "1", "--limit", "2", "--out", str(out)]
    cli_main(args)
    result = json.loads(out.read_text())
    assert len(result["validation"]) == 4  # 2 guidance scales x 2 intervals
    best = result["validation"][0]
    # the best validation setting and the model's own default (2.5 at every step, not in the grid)
    assert [(r["guidance"], r["interval"], r["is_default"]) for r in result["test"]] == [
        (best["guidance"], best["interval"], False), (2.5, "all", True)]
    assert result["evals_per_image"] == {"all": 50, "400,999": 40}
    with pytest.raises(SystemExit, match="must differ"):
        cli_main([*args[:-2], "--test-seeds", "7", "--out", str(out)])


def test_rescore_writes_the_report_judged_by_the_current_rules(tmp_path, capsys):
    out = tmp_path / "rescored.json"
    new = cli_main(["rescore", str(SHIPPED_REPORT), "--out", str(out)])
    assert json.loads(out.read_text())["overall"] == new["overall"] < new["scores_before_rescoring"]["overall"]
    assert "images changed" in capsys.readouterr().out


def test_text_paths_measures_the_part_of_each_cross_layer_that_is_the_prompts():
    from dir7.eval.text_paths import measure

    def share(model):
        return [r["text_share"] for r in measure(model)]

    torch.manual_seed(0)
    # attention reads only the text: all of its output changes with the prompt
    assert all(s > 0.8 for s in share(dir7.DIR7Model(tiny_config(cross_mode="attention"))))
    # prefix mode reads a state the image tokens also write: only part of it changes
    prefix = dir7.DIR7Model(tiny_config(cross_mode="prefix"))
    assert all(0 < s < 0.5 for s in share(prefix))
    for block in prefix.blocks:
        block.cross.text_in.weight.data.zero_()
    assert all(s == 0 for s in share(prefix))  # cut off from the text


def test_a_fresh_state_mode_layer_passes_on_about_as_much_prompt_as_cross_attention():
    """State mode's key init (CrossWKV.reset_text_parameters): with RWKV-7's, a tenth of W_v's
    bound, a fresh layer handed on 20x less prompt than cross-attention (its state is written by
    the text tokens alone); the init is there so that the text path does not start muted."""
    from dir7.eval.text_paths import measure

    def prompt_part(mode):
        torch.manual_seed(0)
        model = dir7.DIR7Model(dir7.DIR7Config.from_preset("dir7-demo", depth=3, cross_mode=mode))
        return float(np.mean([r["text_std"] for r in measure(model)]))

    state, attention = prompt_part("state"), prompt_part("attention")
    assert attention / 3 < state < attention * 3, (state, attention)


def test_text_paths_command(capsys):
    rows = cli_main(["text-paths", "--modes", "state", "--batch", "1"])
    assert list(rows) == ["state"] and len(rows["state"]) == dir7.DIR7Config.from_preset("dir7-demo").depth
    assert "| state |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cross_mode"):
        cli_main(["text-paths", "--modes", "nonsense"])
