"""State statistics of the WKV recurrence (docs/design.md section 4): what the demo plots.

For one head's state ``S [K, V]``:
    RMS(S)         = sqrt(mean(S_ij^2))
    stable_rank(S) = ||S||_F^2 / ||S||_2^2     in [1, min(K, V)], and 0 for S = 0
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def state_rms(S: torch.Tensor) -> torch.Tensor:
    """``[..., K, V] -> [...]``."""
    return S.float().square().mean(dim=(-2, -1)).sqrt()


def stable_rank(S: torch.Tensor) -> torch.Tensor:
    """``[..., K, V] -> [...]``. A zero state has stable rank 0 (not NaN)."""
    S = S.float()
    fro2 = S.square().sum(dim=(-2, -1))
    spec = torch.linalg.matrix_norm(S, ord=2)  # largest singular value (an SVD per head)
    return torch.where(spec > 0, fro2 / spec.clamp_min(1e-30).square(), torch.zeros_like(fro2))


def layer_head_stats(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Final states of each layer, ``[B, H, K, V]`` each -> (rms, stable_rank), ``[B, layers, H]`` each."""
    stacked = torch.stack([s.float() for s in states], dim=1)  # [B, layers, H, K, V]
    return state_rms(stacked), stable_rank(stacked)


@dataclass
class StateStats:
    """Per denoising step: ``rms`` and ``stable_rank`` are ``[steps, B, layers, heads]``."""

    timesteps: list[int] = field(default_factory=list)
    rms_steps: list[torch.Tensor] = field(default_factory=list)
    stable_rank_steps: list[torch.Tensor] = field(default_factory=list)

    def append(self, timestep: int, rms: torch.Tensor, srank: torch.Tensor) -> None:
        self.timesteps.append(int(timestep))
        self.rms_steps.append(rms.detach().cpu())
        self.stable_rank_steps.append(srank.detach().cpu())

    @property
    def rms(self) -> torch.Tensor:
        return torch.stack(self.rms_steps) if self.rms_steps else torch.empty(0)

    @property
    def stable_rank(self) -> torch.Tensor:
        return torch.stack(self.stable_rank_steps) if self.stable_rank_steps else torch.empty(0)

    def to_dict(self) -> dict:
        return {"timesteps": self.timesteps, "rms": self.rms.tolist(), "stable_rank": self.stable_rank.tolist()}
