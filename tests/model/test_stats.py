"""State RMS and stable rank (docs/design.md section 4)."""

from __future__ import annotations

import torch

from dir7 import layer_head_stats, stable_rank, state_rms


def test_rms_and_stable_rank_of_known_matrices():
    K = 8
    eye = torch.eye(K)
    assert torch.isclose(state_rms(eye), torch.tensor((1 / K) ** 0.5))
    assert torch.isclose(stable_rank(eye), torch.tensor(float(K)))          # all directions equal
    u, v = torch.randn(K, 1), torch.randn(1, K)
    assert torch.isclose(stable_rank(u @ v), torch.tensor(1.0), atol=1e-5)  # rank one
    assert stable_rank(torch.zeros(K, K)) == 0                              # defined, not NaN


def test_stable_rank_is_between_one_and_min_dim_and_scale_free():
    S = torch.randn(5, 3, 16, 12)
    sr = stable_rank(S)
    assert sr.shape == (5, 3) and (sr >= 1 - 1e-5).all() and (sr <= 12 + 1e-5).all()
    assert torch.allclose(stable_rank(7.0 * S), sr, rtol=1e-4)
    assert torch.allclose(state_rms(7.0 * S), 7.0 * state_rms(S), rtol=1e-5)


def test_layer_head_stats_stacks_layers():
    states = [torch.randn(2, 4, 16, 16) for _ in range(3)]
    rms, sr = layer_head_stats(states)
    assert rms.shape == sr.shape == (2, 3, 4)
    assert torch.allclose(rms[:, 1], state_rms(states[1]))
