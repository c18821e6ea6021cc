"""The diffusion objective (eq. 17), text dropout, and that a tiny model can learn at all."""

from __future__ import annotations

import math

import pytest
import torch

import dir7
from dir7.diffusion import min_snr_weights, step_kwargs
from tests.helpers import tiny_config


def test_loss_is_reproducible_with_a_generator():
    cfg = tiny_config()
    model = dir7.DIR7Model(cfg)
    sched = dir7.make_scheduler("ddpm", beta_schedule=cfg.beta_schedule)
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    text, mask = torch.randn(4, 5, cfg.text_dim), torch.ones(4, 5, dtype=torch.bool)
    a = dir7.diffusion_loss(model, x0, text, mask, sched, torch.Generator().manual_seed(1))
    b = dir7.diffusion_loss(model, x0, text, mask, sched, torch.Generator().manual_seed(1))
    assert a.item() == b.item()
    assert abs(a.item() - 1.0) < 0.3  # zero output at init: the loss is the noise variance


def test_min_snr_weighting_caps_only_the_low_noise_steps_and_splits_over_ranks():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = dir7.DIR7Model(cfg)
    torch.nn.init.normal_(model.decoder[1].weight, std=0.1)  # a non-zero output, so losses differ per sample
    sched = dir7.make_scheduler("ddpm", beta_schedule=cfg.beta_schedule)
    x0 = torch.rand(6, 3, 16, 16) * 2 - 1
    text, mask = torch.randn(6, 5, cfg.text_dim), torch.ones(6, 5, dtype=torch.bool)
    noise = torch.randn(6, 3, 16, 16)
    abar = sched.alphas_cumprod.double()
    snr = abar / (1 - abar)
    gamma = 5.0
    high = torch.nonzero(snr <= gamma).flatten()  # noisy steps: weight 1
    low = torch.nonzero(snr > 4 * gamma).flatten()  # clean steps: weight gamma / SNR
    assert len(high) and len(low)

    def loss(t, g=0.0, rows=slice(None)):
        return dir7.diffusion_loss(model, x0[rows], text[rows], mask[rows], sched, t=t, noise=noise[rows],
                                   snr_gamma=g)

    t_high = high[torch.linspace(0, len(high) - 1, 6).long()]
    assert torch.allclose(loss(t_high, gamma), loss(t_high))  # weight 1 where SNR <= gamma: plain eq. 17
    t_low = low[torch.linspace(0, len(low) - 1, 6).long()]
    per_sample = torch.stack([loss(t_low[i:i + 1], 0.0, slice(i, i + 1)) for i in range(6)])
    expected = (per_sample * (gamma / snr[t_low]).float()).mean()
    assert torch.allclose(loss(t_low, gamma), expected, rtol=1e-5)
    assert loss(t_low, gamma) < loss(t_low)
    w = min_snr_weights(torch.arange(len(snr)), sched.alphas_cumprod, gamma)
    assert torch.isfinite(w).all() and (w > 0).all() and (w <= 1).all()
    assert torch.all(w[1:] >= w[:-1])  # noisier steps never weigh less
    # the batch loss is the mean of per-sample terms: halves on two ranks average to it exactly
    t_mix = torch.cat([t_high[:3], t_low[:3]])
    halves = (loss(t_mix[:3], gamma, slice(0, 3)) + loss(t_mix[3:], gamma, slice(3, 6))) / 2
    assert torch.allclose(loss(t_mix, gamma), halves, rtol=1e-5)


def test_drop_captions_replaces_about_p_of_them():
    captions = [f"caption {i}" for i in range(4000)]
    dropped = dir7.drop_captions(captions, 0.1, torch.Generator().manual_seed(0))
    frac = sum(c == "" for c in dropped) / len(captions)
    assert 0.08 < frac < 0.12
    assert all(d in ("", c) for c, d in zip(captions, dropped))
    assert dir7.drop_captions(captions, 0.0) == captions


@pytest.mark.parametrize("sampler", dir7.SAMPLERS)
def test_a_sampling_step_from_pure_noise_keeps_the_noise_the_next_timestep_needs(sampler):
    """At t = T-1 the x0 prediction is mostly amplified error and gets clipped; a sampler that
    then steps along the unclipped eps (DDIM's default) drops the noise and the image goes wrong."""
    sched = dir7.make_scheduler(sampler)
    sched.set_timesteps(25)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 32, generator=g)
    t, t_next = sched.timesteps[:2]
    eps = torch.zeros_like(x)  # a poor guess: an untrained model's output
    x_next = sched.step(eps, t, x, **step_kwargs(sampler, g)).prev_sample
    expected = (1 - sched.alphas_cumprod[int(t_next)]).sqrt().item()
    assert torch.isfinite(x_next).all()
    assert 0.8 * expected < x_next.std().item() < 1.25 * expected


def overfit_loss_ratio(model: torch.nn.Module, text_encoder, steps: int = 500, lr: float = 3e-3) -> float:
    """Train ``model`` (16x16 images) on one image-caption pair; the loss on a fixed evaluation
    batch after ``steps`` AdamW steps over the loss before."""
    sched = dir7.make_scheduler("ddpm", beta_schedule=model.config.beta_schedule)
    image = torch.full((1, 3, 16, 16), -1.0)
    image[:, 0, 4:12, 2:8] = 1.0     # a red box on the left
    image[:, 2, 6:10, 9:14] = 1.0    # a blue one on the right
    text, mask = text_encoder("a red box left of a blue box")

    def batch(n):
        return image.expand(n, -1, -1, -1), text.expand(n, -1, -1), mask.expand(n, -1)

    def eval_loss():
        with torch.no_grad():
            return dir7.diffusion_loss(model, *batch(64), sched, torch.Generator().manual_seed(123)).item()

    before = eval_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    # cosine to zero: the last steps settle instead of leaving the loss where one noisy step put it
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = dir7.diffusion_loss(model, *batch(16), sched, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    return eval_loss() / before


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["prefix", "paper"])
def test_tiny_model_overfits_one_image_caption_pair(mode, text_encoder):
    """Loss on a fixed evaluation batch must fall at least 10x in a few hundred CPU steps."""
    ratio = overfit_loss_ratio(dir7.DIR7Model(tiny_config(cross_mode=mode)), text_encoder)
    assert ratio < 0.1, f"the loss only fell to {ratio:.3f} of its start"
