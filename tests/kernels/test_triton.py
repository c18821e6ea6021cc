"""Triton WKV-7 kernels against the float64 sequential reference.

On a machine without CUDA the same tests run the kernels through Triton's interpreter
(``TRITON_INTERPRET=1``, CPU tensors) at tiny shapes; with CUDA they also run full-size
variants on the GPU. Every check draws fresh random inputs and compares with
``wkv7_naive`` on float64 copies of the same (already rounded) inputs, by relative RMS
error ``||x - ref|| / ||ref||``; NaN never passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import REPO, subprocess_env

pytest.importorskip("triton")

HAS_CUDA = torch.cuda.is_available()


# conftest.py sets TRITON_INTERPRET=1 on a machine without a GPU, before triton is imported
if not HAS_CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    raise RuntimeError("without a GPU these tests need TRITON_INTERPRET=1 from the start (see tests/conftest.py)")

from dir7_kernels import naive, triton_chunk, triton_recurrent  # noqa: E402  (importable: conftest imports dir7)

wkv7_naive = naive.wkv7_naive
DEVICE = "cuda" if HAS_CUDA else "cpu"
TOL = {torch.float32: 2e-3, torch.bfloat16: 1e-2, torch.float16: 1e-2}
RWKV7_W_SCALE = -0.6065306597126334


# =====================================================================================
# Inputs and comparison
# =====================================================================================


@dataclass(frozen=True)
class Case:
    B: int
    T: int
    H: int
    K: int
    V: int
    dtype: torch.dtype
    h0: bool           # pass an initial state
    final: bool        # ask for the final state
    w_kind: str        # "rwkv7": -0.6065 * sigmoid(randn); "fla": logsigmoid(randn);
    #                    "aligned": nearly equal keys, eta ~ 1, w ~ 0 (hard case for the
    #                    chunk kernel's triangular inverse: (I - L)^{-1} far from I)
    scale: float = 1.0

    def __str__(self) -> str:
        dt = str(self.dtype).removeprefix("torch.")
        flags = ("h0" if self.h0 else "") + ("+final" if self.final else "")
        return f"B{self.B}-T{self.T}-H{self.H}-K{self.K}-V{self.V}-{dt}-{self.w_kind}-{flags or 'plain'}"


def make_inputs(c: Case, device: str = DEVICE, requires_grad: bool = False):
    """RWKV-7-shaped inputs: a = -kk, b = kk * eta with kk unit-norm per head, eta in (0, 1)."""
    shape = (c.B, c.T, c.H, c.K)
    r = torch.randn(shape)
    k = torch.randn(shape)
    v = torch.randn(c.B, c.T, c.H, c.V)
    z = torch.randn(shape)
    w = RWKV7_W_SCALE * torch.sigmoid(z) if c.w_kind == "rwkv7" else F.logsigmoid(z)
    kk = F.normalize(torch.randn(shape), dim=-1)
    eta = torch.rand(shape)
    if c.w_kind == "aligned":
        w = -0.01 * torch.rand(shape)
        kk = F.normalize(torch.randn(c.B, 1, c.H, c.K) + 0.05 * torch.randn(shape), dim=-1)
        eta = 0.95 + 0.05 * eta
    xs = [x.to(device=device, dtype=c.dtype) for x in (r, w, k, v, -kk, kk * eta)]
    h0 = torch.randn(c.B, c.H, c.K, c.V, device=device) if c.h0 else None
    if requires_grad:
        xs = [x.requires_grad_() for x in xs]
        if h0 is not None:
            h0.requires_grad_()
    return xs, h0


def reference(xs, h0, c: Case):
    """float64 sequential reference on upcast copies (leaf tensors, for its own gradients)."""
    xd = [x.detach().double().requires_grad_() for x in xs]
    hd = None if h0 is None else h0.detach().double().requires_grad_()
    o, ht = wkv7_naive(*xd, scale=c.scale, initial_state=hd, output_final_state=c.final)
    return xd, hd, o, ht


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(x).all(), "non-finite values in the result"
    x, ref = x.detach().double().cpu(), ref.detach().double().cpu()
    denom = ref.norm()
    return float((x - ref).norm() / denom) if denom > 0 else float((x - ref).norm())


def assert_close(name: str, x: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    assert x.shape == ref.shape, f"{name}: shape {tuple(x.shape)} != {tuple(ref.shape)}"
    err = rel_err(x, ref)
    assert err < TOL[dtype], f"{name}: relative RMS error {err:.3e} >= {TOL[dtype]:.0e}"


# =====================================================================================
# Cases: tiny on CPU (interpreter), full size on GPU
# =====================================================================================

f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
slow = pytest.mark.slow
CPU_CASES = [
    pytest.param(Case(1, 1, 2, 16, 16, f32, True, True, "fla"), id="T1"),
    pytest.param(Case(1, 15, 1, 16, 16, bf16, False, True, "rwkv7"), id="T15-bf16"),
    pytest.param(Case(2, 63, 1, 16, 16, f32, True, False, "fla", scale=0.5), id="T63-B2"),
    pytest.param(Case(1, 65, 2, 16, 16, bf16, True, True, "rwkv7"), id="T65-H2-bf16"),
    pytest.param(Case(1, 40, 1, 16, 32, f16, True, True, "fla"), id="T40-V32-fp16"),
    pytest.param(Case(1, 48, 1, 16, 16, f32, True, True, "aligned"), id="T48-aligned"),
    pytest.param(Case(1, 48, 1, 16, 16, bf16, True, True, "aligned"), id="T48-aligned-bf16"),
    pytest.param(Case(1, 257, 1, 16, 16, f32, True, True, "fla"), id="T257", marks=slow),
    pytest.param(Case(1, 33, 1, 32, 32, f32, False, False, "rwkv7"), id="T33-K32", marks=slow),
    pytest.param(Case(1, 20, 1, 64, 64, bf16, True, True, "fla"), id="T20-K64-bf16", marks=slow),
]
GPU_CASES = [
    pytest.param(Case(B, T, H, K, K, dt, h0, final, wk), id=str(Case(B, T, H, K, K, dt, h0, final, wk)))
    for i, (T, K, dt) in enumerate(
        (T, K, dt) for T in (1, 15, 63, 65, 257) for K in (16, 32, 64) for dt in (f32, bf16)
    )
    for (B, H) in [((2, 3), (3, 4), (1, 8))[i % 3]]
    for (h0, final) in [((True, True), (False, True), (True, False), (False, False))[i % 4]]
    for wk in [("fla", "rwkv7", "aligned")[i % 3]]
]
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="full-size variants need a GPU")


def cases():
    """Tiny cases always (interpreter on CPU, compiled on GPU); full-size ones on GPU only."""
    return CPU_CASES + [pytest.param(*p.values, marks=[needs_cuda], id="gpu-" + p.id) for p in GPU_CASES]


# =====================================================================================
# Tests
# =====================================================================================


# the forward-only kernels: fused recurrent and the chunked forward
FORWARDS = {
    "recurrent": lambda *x, **kw: triton_recurrent.wkv7_triton_recurrent(*x, **kw),
    "chunk": lambda *x, **kw: triton_chunk.wkv7_triton_chunk_fwd(*x, **kw),
}


@pytest.mark.parametrize("kernel", list(FORWARDS))
@pytest.mark.parametrize("c", cases())
def test_forward_kernels(c: Case, kernel: str):
    xs, h0 = make_inputs(c)
    o, ht = FORWARDS[kernel](*xs, scale=c.scale, initial_state=h0, output_final_state=c.final)
    _, _, o_ref, ht_ref = reference(xs, h0, c)
    assert o.dtype == c.dtype
    assert_close("o", o, o_ref, c.dtype)
    if c.final:
        assert ht.dtype == torch.float32
        assert_close("final state", ht, ht_ref, c.dtype)
    else:
        assert ht is None


@pytest.mark.parametrize("c", cases())
@pytest.mark.parametrize("bwd", ["fused", "split"])
def test_chunk_forward_backward(c: Case, bwd: str, monkeypatch):
    # each backward at every size (the kernel picks one by T, SPLIT_BWD_MIN_T)
    monkeypatch.setattr(triton_chunk, "SPLIT_BWD_MIN_T", 0 if bwd == "split" else 1 << 30)
    xs, h0 = make_inputs(c, requires_grad=True)
    o, ht = triton_chunk.wkv7_triton_chunk(*xs, scale=c.scale, initial_state=h0, output_final_state=c.final)
    xd, hd, o_ref, ht_ref = reference(xs, h0, c)
    assert_close("o", o, o_ref, c.dtype)

    # random cotangents for the output and (when returned) the final state
    do = torch.randn_like(o)
    loss, loss_ref = (o * do).sum(), (o_ref * do.double()).sum()
    if c.final:
        assert_close("final state", ht, ht_ref, c.dtype)
        dht = torch.randn_like(ht)
        loss, loss_ref = loss + (ht * dht).sum(), loss_ref + (ht_ref * dht.double()).sum()
    leaves = xs + ([h0] if h0 is not None else [])
    grads = torch.autograd.grad(loss, leaves)
    grads_ref = torch.autograd.grad(loss_ref, xd + ([hd] if hd is not None else []))
    for name, g, g_ref, x in zip(("dr", "dw", "dk", "dv", "da", "db", "dh0"), grads, grads_ref, leaves):
        assert g.dtype == x.dtype, f"{name}: dtype {g.dtype} != input dtype {x.dtype}"
        assert_close(name, g, g_ref, c.dtype)


BWD_AGREE_CASES = [
    # V = 32 with 16-column tiles: the dS scan splits V over programs, the per-chunk kernel loops over it
    pytest.param(Case(1, 37, 2, 16, 32, f32, True, True, "fla", scale=0.5), 1e-5, id="T37-V32-f32"),
    pytest.param(Case(2, 20, 1, 16, 16, bf16, False, True, "aligned"), 1e-2, id="T20-B2-aligned-bf16"),
]


@pytest.mark.parametrize(("c", "tol"), BWD_AGREE_CASES)
def test_chunk_backward_impls_agree(c: Case, tol: float):
    """The two backwards ("split" and "fused", chosen by ``SPLIT_BWD_MIN_T``) give the same gradients
    on the same forward states, the split one with V cut into tiles in both of its kernels."""
    xs, h0 = make_inputs(c)
    o, _, hs = triton_chunk.chunk_fwd(*xs, c.scale, h0, True, store_states=True)
    do = torch.randn_like(o)
    dht = torch.randn(c.B, c.H, c.K, c.V, device=DEVICE) if c.final else None
    args = (*xs, c.scale, hs, do, dht, c.h0)
    fused = triton_chunk.chunk_bwd(*args, impl="fused")
    split = triton_chunk.chunk_bwd(*args, impl="split", scan_BV=16, chunk_BV=16)
    for name, g, g_ref in zip(("dr", "dw", "dk", "dv", "da", "db", "dh0"), split, fused):
        if g_ref is None:
            assert g is None, name
            continue
        assert g.dtype == g_ref.dtype, name
        err = rel_err(g, g_ref)
        assert err < tol, f"{name}: split vs fused relative RMS {err:.3e} >= {tol:.0e}"


@pytest.mark.parametrize("chunk_size", [16, 32])
def test_chunk_forward_no_grad(chunk_size: int):
    """The inference path of the chunked kernel (no states stored), both chunk sizes, and a V
    split over several programs."""
    c = Case(1, 50, 2, 16, 32, f32, True, True, "fla")
    xs, h0 = make_inputs(c)
    with torch.no_grad():
        o, ht = triton_chunk.wkv7_triton_chunk_fwd(
            *xs, scale=c.scale, initial_state=h0, output_final_state=True, chunk_size=chunk_size, BV=16,
        )
    _, _, o_ref, ht_ref = reference(xs, h0, c)
    assert_close("o", o, o_ref, c.dtype)
    assert_close("final state", ht, ht_ref, c.dtype)


@pytest.mark.parametrize("kernel", ["recurrent", "chunk"])
def test_no_write_past_the_end(kernel: str):
    """Outputs written into views of larger buffers: every element of the view is written
    (it starts as NaN), nothing after it changes (it holds a sentinel). V = 24 is not a
    power of two, so the tiles have masked lanes that must stay unwritten."""
    c = Case(2, 37, 2, 16, 24, bf16, True, True, "rwkv7")
    xs, h0 = make_inputs(c)
    n_o, n_s, extra = c.B * c.T * c.H * c.V, c.B * c.H * c.K * c.V, 1000
    sentinel = -4096.0  # exact in bf16 and float32
    o_buf = torch.full((n_o + extra,), sentinel, dtype=c.dtype, device=DEVICE)
    s_buf = torch.full((n_s + extra,), sentinel, dtype=torch.float32, device=DEVICE)
    o_buf[:n_o] = float("nan")
    s_buf[:n_s] = float("nan")
    o_view = o_buf[:n_o].view(c.B, c.T, c.H, c.V)
    s_view = s_buf[:n_s].view(c.B, c.H, c.K, c.V)
    o, ht = FORWARDS[kernel](*xs, initial_state=h0, output_final_state=True, out=o_view, final_state_out=s_view)
    assert o.data_ptr() == o_view.data_ptr() and ht.data_ptr() == s_view.data_ptr()
    assert (o_buf[n_o:] == sentinel).all(), "output written past its end"
    assert (s_buf[n_s:] == sentinel).all(), "final state written past its end"
    _, _, o_ref, ht_ref = reference(xs, h0, c)
    assert_close("o", o_view, o_ref, c.dtype)           # also: no NaN left, so all written
    assert_close("final state", s_view, ht_ref, c.dtype)


@pytest.mark.parametrize("missing", ["triton", "numba", "triton, numba"])
def test_import_without_triton_or_numba(missing: str):
    """``import dir7`` and the CPU path (with and without gradient) work where Triton or Numba is missing."""
    code = (
        "import sys\n"
        f"for name in {missing.split(', ')!r}: sys.modules[name] = None\n"
        "import torch, dir7\n"
        "x = torch.randn(1, 5, 1, 16)\n"
        "o, _ = dir7.wkv7(x, -torch.rand_like(x), x, x, -x, x)\n"
        "assert o.shape == (1, 5, 1, 16) and torch.isfinite(o).all()\n"
        "o, _ = dir7.wkv7(x.requires_grad_(), -torch.rand_like(x), x, x, -x, x)\n"
        "o.sum().backward()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr


@needs_cuda
def test_dispatch_routes_cuda_to_triton():
    """On CUDA, ``wkv7`` uses the Triton kernels and still matches the reference, with and
    without gradients, on both sides of the recurrent/chunk threshold."""
    import dir7_kernels as kernels
    from dir7_kernels import dispatch

    for T in (dispatch.RECURRENT_MAX_T, dispatch.RECURRENT_MAX_T + 1):
        c = Case(2, T, 4, 64, 64, bf16, True, True, "rwkv7")
        xs, h0 = make_inputs(c, requires_grad=True)
        o, ht = kernels.wkv7(*xs, initial_state=h0, output_final_state=True)
        xd, _, o_ref, ht_ref = reference(xs, h0, c)
        assert_close("o", o, o_ref, c.dtype)
        assert_close("final state", ht, ht_ref, c.dtype)
        g = torch.autograd.grad(o.float().sum(), xs[0])[0]
        g_ref = torch.autograd.grad(o_ref.sum(), xd[0])[0]
        assert_close("dr", g, g_ref, c.dtype)
        with torch.no_grad():
            o2, _ = kernels.wkv7(*xs, initial_state=h0)
        assert_close("o (no grad)", o2, o_ref, c.dtype)
