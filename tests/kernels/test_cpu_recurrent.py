"""The Numba CPU kernel (inference) against the float64 sequential reference."""

from __future__ import annotations

import pytest
import torch

from dir7_kernels import wkv7_naive
from dir7_kernels.cpu_recurrent import wkv7_cpu_recurrent
from tests.kernels.test_chunked import rel_err, rwkv7_inputs

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


@pytest.mark.parametrize(("B", "T", "H", "K", "V"), [(1, 1, 1, 16, 16), (2, 37, 3, 16, 12), (1, 130, 2, 32, 32),
                                                     (3, 9, 1, 8, 24), (1, 0, 2, 16, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_state", [False, True])
def test_matches_the_reference(B, T, H, K, V, dtype, with_state):
    ref_inputs = rwkv7_inputs(B, T, H, K, V=V, log_decay="logsigmoid", seed=T + K)
    inputs = [x.to(dtype) for x in ref_inputs]
    s0 = torch.randn(B, H, K, V) if with_state else None
    o, S = wkv7_cpu_recurrent(*inputs, scale=0.7, initial_state=s0, output_final_state=True)
    o_ref, S_ref = wkv7_naive(*(x.double() for x in inputs), scale=0.7,
                              initial_state=None if s0 is None else s0.double(), output_final_state=True)
    assert o.dtype == dtype and o.shape == (B, T, H, V)
    assert S.dtype == torch.float32 and S.shape == (B, H, K, V)
    if T:
        assert rel_err(o.double(), o_ref) < TOL[dtype]
    assert rel_err(S.double(), S_ref) < TOL[dtype] if (T or with_state) else torch.count_nonzero(S) == 0


def test_no_final_state_unless_asked_and_bad_input_is_refused():
    inputs = [x.float() for x in rwkv7_inputs(1, 5, 1, 16, seed=2)]
    assert wkv7_cpu_recurrent(*inputs)[1] is None
    with pytest.raises(ValueError, match="w has shape"):
        wkv7_cpu_recurrent(inputs[0], inputs[1][:, :4], *inputs[2:])
    with pytest.raises(ValueError, match="initial_state"):
        wkv7_cpu_recurrent(*inputs, initial_state=torch.zeros(1, 1, 16, 3))


def test_nan_in_the_input_is_not_hidden():
    inputs = [x.float() for x in rwkv7_inputs(1, 6, 1, 16, seed=4)]
    inputs[3][0, 2, 0, 5] = float("nan")
    o, _ = wkv7_cpu_recurrent(*inputs)
    assert torch.isnan(o[0, 2:]).any() and torch.isfinite(o[0, :2]).all()
