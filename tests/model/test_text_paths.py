"""The text paths compared by the alignment study: every CrossWKV mode, cross-attention inside the
DIR-7 block, and the DiT baseline, behind one model interface and one checkpoint format."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import dir7
from dir7.architectures import build_model, config_from_dict, config_from_preset
from dir7.dit import DiTConfig, DiTModel
from tests.helpers import randomize_zero_inits, tiny_config

ARMS = ["paper", "prefix", "state", "attention", "dit"]


def arm_config(arm: str):
    if arm == "dit":
        return DiTConfig(image_size=16, patch_size=2, heads=4, head_dim=16, depth=2)
    return tiny_config(cross_mode=arm)


def arm_model(arm: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(arm_config(arm))
    if arm == "dit":  # DiT's zero-initialised output: give it weights so the text matters
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        return model
    return randomize_zero_inits(model)


@pytest.mark.parametrize("arm", ARMS)
def test_every_arm_maps_noisy_images_to_eps_and_says_whether_it_has_a_state(arm, text_encoder):
    model = arm_model(arm).eval()
    text, mask = text_encoder(["a red circle", "two blue squares left of a star"])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    with torch.no_grad():
        eps = model(x, t, text, mask)
        other = model(x, t, text.flip(0), mask.flip(0))
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert not torch.allclose(eps, other)  # the text matters
    has_state = getattr(model, "has_state", True)
    assert has_state == (arm not in ("attention", "dit"))
    if not has_state:
        with pytest.raises(ValueError, match="no recurrent state"):
            model(x, t, text, mask, return_states=True)


@pytest.mark.parametrize("arm", ARMS)
def test_padding_the_prompt_changes_nothing(arm, text_encoder):
    model = arm_model(arm).eval()
    text, mask = text_encoder(["a red circle"])
    padded = torch.cat([text, 50 * torch.randn(1, 9, text.shape[-1])], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 9, dtype=torch.bool)], dim=1)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    with torch.no_grad():
        a, b = model(x, t, text, mask), model(x, t, padded, padded_mask)
    # float32; the DiT masks padding with a -10000 bias (diffusers), exact to rounding
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arm", ARMS)
def test_a_model_directory_round_trips_every_arm(arm, text_encoder, tmp_path):
    pipe = dir7.DIR7Pipeline(arm_model(arm), text_encoder)
    pipe.save_pretrained(tmp_path / arm)
    saved = json.loads((tmp_path / arm / "config.json").read_text())
    assert saved["model_type"] == ("dit" if arm == "dit" else "dir7")
    loaded = dir7.DIR7Pipeline.from_pretrained(tmp_path / arm, text_encoder=text_encoder)
    assert type(loaded.model.config) is type(pipe.model.config) and loaded.model.config == pipe.model.config
    kw = dict(num_inference_steps=3, seed=4, guidance_scale=3.0)
    a, b = pipe("a red circle", **kw), loaded("a red circle", **kw)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    # state statistics where there is a state; for the others the pipeline says so by leaving them empty
    assert (a.state_stats.rms.numel() > 0) == pipe.has_state


def test_config_types_are_named_in_the_file_and_checked():
    assert isinstance(config_from_dict(tiny_config().to_dict()), dir7.DIR7Config)
    legacy = {k: v for k, v in tiny_config().to_dict().items() if k != "model_type"}
    assert isinstance(config_from_dict(legacy), dir7.DIR7Config)  # written before the DiT existed
    dit = DiTConfig(depth=3)
    assert config_from_dict(json.loads(json.dumps(dit.to_dict()))) == dit
    with pytest.raises(ValueError, match="unknown model_type"):
        config_from_dict({"model_type": "unet"})
    with pytest.raises(ValueError, match="not a 'dit' one"):
        DiTConfig.from_dict(tiny_config().to_dict())
    with pytest.raises(ValueError, match="unknown DiTConfig field"):
        DiTConfig.from_dict({"depth": 2, "cross_mode": "prefix"})
    assert isinstance(config_from_preset("dit-shapes"), DiTConfig)
    assert isinstance(config_from_preset("dir7-demo"), dir7.DIR7Config)


def test_the_arms_of_the_alignment_study_are_within_ten_percent_in_parameters():
    """At the shipped model's size class (dir7-demo grown to 11 blocks; the DiT of 21 blocks)."""
    base = dataclasses.replace(dir7.DIR7Config.from_preset("dir7-demo"), depth=11)
    counts = {}
    with torch.device("meta"):
        for arm in ("paper", "prefix", "state", "attention"):
            counts[arm] = dir7.DIR7Model(dataclasses.replace(base, cross_mode=arm)).num_parameters()
        counts["dit"] = DiTModel(DiTConfig.from_preset("dit-shapes")).num_parameters()
    ref = counts["prefix"]
    assert all(abs(n - ref) <= 0.10 * ref for n in counts.values()), counts


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["state", "attention", "dit"])
def test_a_tiny_model_of_each_new_arm_overfits_one_image_caption_pair(arm, text_encoder):
    """Loss on a fixed evaluation batch falls at least 10x in a few hundred CPU steps
    (the prefix and paper modes: tests/train/test_objective.py)."""
    from tests.train.test_objective import overfit_loss_ratio

    torch.manual_seed(0)
    ratio = overfit_loss_ratio(build_model(arm_config(arm)), text_encoder)
    assert ratio < 0.1, f"the loss only fell to {ratio:.3f} of its start"
