"""Time and check the two chunked-WKV backwards of kernels/triton_chunk.py, "fused" and "split"
(the kernel picks one by sequence length, ``SPLIT_BWD_MIN_T``; here each is forced in turn).

    python -m benchmarks.wkv7_bwd [--T 256 1024 4096] [--sweep] [--no-ref]
    python -m benchmarks.wkv7_bwd --variants [--T ...] [--B 512 --H 6 --K 32 --T 304]

B=16, H=16, K=V=64 unless --B, --H, --K say otherwise; bf16, rwkv7-style inputs. For each T:
the two implementations' gradients against each other at the benchmark size (relative RMS),
then forward+backward (autograd, as benchmarks/wkv7.py times it) and the backward alone
(chunk_bwd), median of do_bench with inputs rotated past L2. --sweep also times launch variants
of the split backward. Unless --no-ref, first a float64 sequential-reference check at B=2, H=4, T=1024 for both.

--variants: the training path (autograd forward + backward, the kernel's own choice of
backward) under each of ``VARIANTS`` (module defaults of kernels/triton_chunk.py: the V-side
product precision, the storage dtype of the saved states and of the state gradients), each
checked against the float64 reference first, then timed at every T; with --kernels also the
per-chunk kernel's configurations alone. The check fails only where the default misses the 1e-2
bar or does not run.
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import dir7  # noqa: F401
from dir7_kernels import triton_chunk
from dir7_kernels.naive import wkv7_naive

H, K = 16, 64
DT = torch.bfloat16


def force(impl: str) -> None:
    """Make every sequence length take ``impl``'s backward."""
    triton_chunk.SPLIT_BWD_MIN_T = 0 if impl == "split" else 1 << 30


def inputs(B, T, Hn=None, w_kind="rwkv7", dtype=DT):
    shape = (B, T, H if Hn is None else Hn, K)
    z = torch.randn(shape, device="cuda")
    w = -0.6065306597126334 * torch.sigmoid(z) if w_kind == "rwkv7" else F.logsigmoid(z)
    kk = F.normalize(torch.randn(shape, device="cuda"), dim=-1)
    eta = torch.rand(shape, device="cuda")
    xs = [torch.randn(shape, device="cuda"), w, torch.randn(shape, device="cuda"),
          torch.randn(shape, device="cuda"), -kk, kk * eta]
    return [x.to(dtype) for x in xs]


def rel(x, ref):
    x, ref = x.double(), ref.double()
    if not torch.isfinite(x).all():
        return float("nan")
    return float((x - ref).norm() / ref.norm())


def grads(impl, xs, h0, do, dht):
    """The chunked kernel's gradients with the backward ``impl`` forced (None: the kernel's own choice)."""
    if impl is not None:
        force(impl)
    xs = [x.detach().requires_grad_() for x in xs]
    leaves = xs + ([h0.detach().requires_grad_()] if h0 is not None else [])
    o, ht = triton_chunk.wkv7_triton_chunk(*xs, initial_state=leaves[6] if h0 is not None else None,
                                           output_final_state=True)
    return torch.autograd.grad((o.float() * do).sum() + (ht * dht).sum(), leaves)


NAMES = ("dr", "dw", "dk", "dv", "da", "db", "dh0")


def reference_case(w_kind="rwkv7"):
    """The float64 check's inputs at B=2, H=4, T=1024 (with h0 and both cotangents) and the sequential
    reference's gradients: ``(xs, h0, do, dht, grads)``."""
    torch.manual_seed(1)
    xs = inputs(2, 1024, 4, w_kind)
    h0 = torch.randn(2, 4, K, K, device="cuda")
    do = torch.randn(2, 1024, 4, K, device="cuda")
    dht = torch.randn(2, 4, K, K, device="cuda")
    xd = [x.detach().double().requires_grad_() for x in xs] + [h0.double().requires_grad_()]
    o, ht = wkv7_naive(*xd[:6], initial_state=xd[6], output_final_state=True)
    return xs, h0, do, dht, torch.autograd.grad((o * do.double()).sum() + (ht * dht.double()).sum(), xd)

F32_STATES = {"DEFAULT_DHS_DTYPE": torch.float32, "DEFAULT_STATES_DTYPE": torch.float32}
# name -> overrides of kernels/triton_chunk.py's module defaults
VARIANTS = {
    "default (tf32 V side, bf16 hs + dhs)": {},
    "tf32 V side, float32 hs + dhs": F32_STATES,
    "tf32 V side, float32 hs, bf16 dhs": {"DEFAULT_STATES_DTYPE": torch.float32},
    "bf16 V side, bf16 hs + dhs": {"DEFAULT_BWD_STATE_PRECISION": "bf16"},
    "bf16 V side, float32 hs + dhs": {**F32_STATES, "DEFAULT_BWD_STATE_PRECISION": "bf16"},
}


def apply_variant(overrides: dict) -> dict:
    """Set the module defaults; returns the old values (to put back)."""
    old = {name: getattr(triton_chunk, name) for name in overrides}
    for name, value in overrides.items():
        setattr(triton_chunk, name, value)
    return old


def variants_main(Ts, B):
    """Accuracy against float64, then forward + backward time, of each of VARIANTS."""
    xs, h0, do, dht, gref = reference_case()
    sets = {T: [(inputs(B, T), torch.randn(B, T, H, K, device="cuda", dtype=DT)) for _ in range(2)] for T in Ts}
    ok = True
    for name, overrides in VARIANTS.items():
        old = apply_variant(overrides)
        try:
            errs = [rel(a, b) for a, b in zip(grads(None, xs, h0, do, dht), gref)]
            good = all(e < 1e-2 for e in errs)
            ok &= good or not name.startswith("default")
            line = f"{name:40s} worst rel err {max(errs):.2e} ({NAMES[errs.index(max(errs))]})" + \
                ("" if good else " FAILS the 1e-2 bar")
            for T in Ts:
                it = itertools.cycle(sets[T])

                def step(it=it):
                    x, d = next(it)
                    x = [t.detach().requires_grad_() for t in x]
                    torch.autograd.grad(triton_chunk.wkv7_triton_chunk(*x)[0], x, d)
                line += f" | T={T} {do_bench(step, warmup=30, rep=300, return_mode='median'):.3f} ms"
            print(line, flush=True)
        except Exception as e:  # a variant that does not compile or run: report it, time the others
            print(f"{name:40s} FAILED TO RUN: {e!r}"[:2000], flush=True)
            ok &= not name.startswith("default")
        finally:
            apply_variant(old)
    print("CHECKS", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


def ref_check():
    ok = True
    for w_kind in ("rwkv7", "fla"):
        xs, h0, do, dht, gref = reference_case(w_kind)
        for impl in ("fused", "split"):
            g = grads(impl, xs, h0, do, dht)
            errs = [rel(a, b) for a, b in zip(g, gref)]
            ok &= all(e < 1e-2 for e in errs)
            print(f"ref check {w_kind:5s} {impl:5s}: " + " ".join(f"{n} {e:.2e}" for n, e in zip(NAMES, errs)),
                  flush=True)
    return ok


def kernel_stats(r, w, k, v, a, b, do, hs):
    """The split's two kernels launched by hand: time and registers / spills of each."""
    tc = triton_chunk
    B_, T, H_, K_ = r.shape
    C = tc.TRAIN_CHUNK
    NT = -(-T // C)
    dhs = torch.empty_like(hs)
    outs = [torch.empty_like(x) for x in (r, w, k, v, a, b)]
    for sbv, sw, sp in ((32, 2, "bf16"), (64, 2, "bf16")):
        def scan(sbv=sbv, sw=sw, sp=sp):
            return tc._chunk_bwd_scan_kernel[(K_ // sbv, B_ * H_)](
                r, w, a, b, do, do, dhs, do, 1.0, T, H=H_, K=K_, V=K_, C=C, BK=K_, BV=sbv,
                USE_DHT=False, STORE_DH0=False, PRECISION=sp, num_warps=sw)
        ck = scan()
        ms = do_bench(scan, warmup=20, rep=200, return_mode="median")
        print(f"T={T} scan BV={sbv} warps={sw} {sp}: {ms:.3f} ms, regs {ck.n_regs}, spills {ck.n_spills}",
              flush=True)
    for bv, nw, pr, sp in ((64, 4, "tf32", "tf32"), (32, 4, "tf32", "tf32"), (16, 4, "tf32", "tf32"),
                           (32, 2, "tf32", "tf32"), (16, 2, "tf32", "tf32"), (32, 8, "tf32", "tf32"),
                           (32, 4, "tf32", "bf16"), (16, 4, "tf32", "bf16"), (16, 2, "tf32", "bf16"),
                           (32, 2, "tf32", "bf16"), (16, 4, "bf16", "bf16")):
        def chunk(bv=bv, nw=nw, pr=pr, sp=sp):
            return tc._chunk_bwd_chunk_kernel[(NT, B_ * H_)](
                r, w, k, v, a, b, hs, dhs, do, *outs, 1.0, T, H=H_, K=K_, V=K_, C=C, BK=K_, BV=bv,
                PRECISION=pr, SPREC=sp, num_warps=nw)
        ck = chunk()
        ms = do_bench(chunk, warmup=20, rep=200, return_mode="median")
        print(f"T={T} chunk BV={bv} warps={nw} {pr}/{sp}: {ms:.3f} ms, regs {ck.n_regs}, spills {ck.n_spills}, "
              f"smem {ck.metadata.shared}", flush=True)


def main():
    global H, K  # the benchmark shape (--H, --K), read by inputs() and the checks
    p = argparse.ArgumentParser()
    p.add_argument("--T", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--B", type=int, default=16)
    p.add_argument("--H", type=int, default=H, help="heads (the shapes and emoji models: --B 512 --H 6 --K 32)")
    p.add_argument("--K", type=int, default=K, help="head size (K = V)")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--no-ref", action="store_true")
    p.add_argument("--kernels", action="store_true", help="time the split's two kernels alone, print registers")
    p.add_argument("--ref-only", action="store_true")
    p.add_argument("--variants", action="store_true", help="accuracy and fwd+bwd time of each of VARIANTS")
    args = p.parse_args()
    H, K = args.H, args.K
    if args.variants:
        print(torch.cuda.get_device_name(), torch.__version__, flush=True)
        rc = variants_main(args.T, args.B)
        if args.kernels:  # the per-chunk configurations' times, registers and spills at each T
            for T in args.T:
                torch.manual_seed(0)
                xs, do = inputs(args.B, T), torch.randn(args.B, T, H, K, device="cuda", dtype=DT)
                kernel_stats(*xs, do, triton_chunk.chunk_fwd(*xs, 1.0, None, False, store_states=True)[2])
        return rc
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    ok = True if args.no_ref else ref_check()
    if args.ref_only:
        print("CHECKS", "PASSED" if ok else "FAILED")
        return 0 if ok else 1
    B = args.B
    for T in args.T:
        torch.manual_seed(0)
        n_sets = max(2, min(8, math.ceil(200 * 2**20 / (7 * B * T * H * K * 2))))
        sets = [(inputs(B, T), torch.randn(B, T, H, K, device="cuda", dtype=DT)) for _ in range(n_sets)]
        xs, do = sets[0]
        # agreement of the two backwards at the benchmark size (with h0 and dht)
        h0 = torch.randn(B, H, K, K, device="cuda")
        dht = torch.randn(B, H, K, K, device="cuda")
        gf = grads("fused", xs, h0, do.float(), dht)
        gs = grads("split", xs, h0, do.float(), dht)
        errs = [rel(a, b) for a, b in zip(gs, gf)]
        ok &= all(e < 1e-2 for e in errs)
        print(f"T={T} split vs fused: " + " ".join(f"{n} {e:.2e}" for n, e in zip(NAMES, errs)), flush=True)
        del gf, gs

        it = itertools.cycle(sets)

        def step(impl, it=it):
            force(impl)
            x, d = next(it)
            x = [t.detach().requires_grad_() for t in x]
            o = triton_chunk.wkv7_triton_chunk(*x)[0]
            torch.autograd.grad(o, x, d)

        res = {}
        for impl in ("fused", "split"):
            res[impl] = do_bench(lambda impl=impl: step(impl), warmup=50, rep=300, return_mode="median")
        fwd = do_bench(lambda it=it: triton_chunk.wkv7_triton_chunk_fwd(*next(it)[0]), warmup=50, rep=300,
                       return_mode="median")
        print(f"T={T} fwd {fwd:.3f} ms | fwd+bwd fused {res['fused']:.3f} ms, split {res['split']:.3f} ms",
              flush=True)
        # backward alone, per configuration
        hss = [triton_chunk.chunk_fwd(*x, 1.0, None, False, store_states=True)[2] for x, _ in sets[:2]]
        it2 = itertools.cycle(list(zip([s[0] for s in sets[:2]], [s[1] for s in sets[:2]], hss)))

        def bwd(it2=it2, **kw):
            x, d, hs = next(it2)
            return triton_chunk.chunk_bwd(*x, 1.0, hs, d, None, False, **kw)

        cfgs = [dict(impl="fused"), dict(impl="split")]
        if args.sweep:
            cfgs += [dict(impl="split", num_warps=nw) for nw in (2, 8)]
            cfgs += [dict(impl="split", scan_BV=bv, scan_warps=sw) for bv, sw in ((16, 1), (32, 4), (64, 4), (64, 2))]
            cfgs += [dict(impl="split", scan_precision="tf32"), dict(impl="split", precision="bf16")]
            cfgs += [dict(impl="split", state_precision="bf16", num_warps=nw) for nw in (4, 8)]
            cfgs += [dict(impl="split", dhs_dtype=torch.float32), dict(impl="split", scan_BV=64)]
        for kw in cfgs:
            ms = do_bench(lambda kw=kw: bwd(**kw), warmup=30, rep=300, return_mode="median")
            print(f"T={T} bwd alone {kw}: {ms:.3f} ms", flush=True)
        if args.kernels:
            kernel_stats(*sets[0][0], sets[0][1], hss[0])
        del sets, hss
        torch.cuda.empty_cache()
    print("CHECKS", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
