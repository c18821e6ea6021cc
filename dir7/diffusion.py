"""Diffusion objective (the paper's eq. 17) and samplers, on top of ``diffusers`` schedulers.

Training: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, loss = ||eps - eps_theta(x_t, t, q)||^2,
with the caption replaced by the empty prompt for a fraction of samples so that one
network gives both the conditional and the unconditional prediction (classifier-free
guidance). Optionally each sample's loss is weighted by Min-SNR-gamma (Hang et al. 2023).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from diffusers import DDPMScheduler

SAMPLERS = ("ddim", "ddpm", "dpm++")


def make_scheduler(name: str, num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2"):
    """A fresh ``diffusers`` scheduler for the named sampler (schedulers carry state: one per run)."""
    # imported here: diffusers takes over a second to import, and `import dir7` should not pay it
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type="epsilon",
        # "trailing" puts the first sampling step at t = T-1; "leading" would start at a
        # less noisy t than the pure noise we begin from (diffusers' own recommendation)
        timestep_spacing="trailing",
    )
    if name == "ddpm":
        return DDPMScheduler(**common, clip_sample=True)
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=False)
    if name == "dpm++":
        # dpmsolver++ steps on the predicted x0; at t = T-1 (abar ~ 1e-9 under the cosine
        # schedule) that prediction divides eps by ~5e-5: clamp it to the image range, as DDIM's
        # clip_sample does (diffusers' dynamic thresholding, for pixel-space models)
        return DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=2, thresholding=True, sample_max_value=1.0
        )
    raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")


def step_kwargs(name: str, generator: torch.Generator | None = None) -> dict:
    """Extra arguments for ``scheduler.step`` of the named sampler."""
    if name == "ddpm":
        return {"generator": generator}  # the noise DDPM adds follows the seed
    if name == "ddim":
        # Numerical trap: DDIM clips its x0 prediction (clip_sample) but by default keeps
        # stepping along the *unclipped* eps. At t = T-1 (abar ~ 0) x0 = (x - eps)/sqrt(abar) is
        # mostly amplified error, so the two disagree and the step drops most of the noise the
        # next timestep needs; images then gain objects nobody asked for (ShapesEval 0.20 vs
        # dpm++'s 0.67 on the shapes model's stage-6 weights). Re-deriving eps from the clipped x0
        # fixes it.
        return {"use_clipped_model_output": True}
    return {}


def predicted_x0(x_t: torch.Tensor, eps: torch.Tensor, t: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The model's current guess of the clean image (what the demo previews)."""
    abar = alphas_cumprod[int(t)].to(x_t.device, torch.float32)
    return ((x_t - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)


def drop_captions(captions: list[str], p: float, generator: torch.Generator | None = None,
                  rank: int = 0, world: int = 1) -> list[str]:
    """Replace each caption by the empty prompt with probability p (text dropout for guidance).

    Data-parallel training passes its ``rank`` and ``world`` size: the draws are made for the
    global batch (``world * len(captions)``, the same on every rank) and each rank keeps its
    positions ``rank::world``, so N processes drop what one process with the whole batch would.
    The draws are made even at p = 0, so the generator's later draws do not depend on p."""
    drop = (torch.rand(world * len(captions), generator=generator) < p)[rank::world]
    return ["" if d else c for c, d in zip(captions, drop.tolist())]


def min_snr_weights(t: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights of the eps-prediction loss: min(SNR_t, gamma) / SNR_t, SNR = abar / (1 - abar).

    Why: the plain eps loss is largest at the lowest noise levels (dir7-shapes after its
    plain-loss stages, shapes batch: 0.0043 at t = 10, at most 0.0014 elsewhere;
    ``python -m dir7.eval loss-by-timestep``),
    where the x0 it implies is nearly exact anyway, while layout (which objects, how many)
    is decided at high noise, where a small eps error is a large x0 error (x0 error = eps
    error / sqrt(SNR)). Capping the weight of the low-noise steps (SNR > gamma) moves the
    gradient toward the layout. Steps with SNR <= gamma keep weight 1.
    """
    abar = alphas_cumprod.to(t.device, torch.float64)[t]  # [B], on the device: no sync
    snr = abar / (1 - abar)
    return (snr.clamp(max=gamma) / snr).to(torch.float32)


def diffusion_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    text_states: torch.Tensor,
    text_mask: torch.Tensor,
    scheduler: DDPMScheduler,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    snr_gamma: float = 0.0,
) -> torch.Tensor:
    """Eq. 17: epsilon-prediction MSE at uniformly drawn timesteps. ``x0 [B, C, S, S]`` in [-1, 1].

    ``snr_gamma > 0`` weights each sample's MSE by :func:`min_snr_weights` (the loss is then
    the batch mean of weighted per-sample MSEs, so data-parallel ranks still average exactly).

    Timesteps and noise are drawn from ``generator`` on the CPU (so a run is reproducible on
    any device) unless given; data-parallel training passes each rank its slice of the
    global batch's draws, so N processes compute exactly what one would.
    """
    B = x0.shape[0]
    if t is None:
        t = torch.randint(0, scheduler.config.num_train_timesteps, (B,), generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    t, noise = t.to(x0.device), noise.to(x0.device)
    x_t = scheduler.add_noise(x0.float(), noise, t)
    eps = model(x_t, t, text_states, text_mask)
    if snr_gamma <= 0:
        return F.mse_loss(eps.float(), noise)
    per_sample = (eps.float() - noise).square().mean(dim=(1, 2, 3))  # [B]
    weights = min_snr_weights(t, scheduler.alphas_cumprod, snr_gamma)
    return (per_sample * weights).mean()
