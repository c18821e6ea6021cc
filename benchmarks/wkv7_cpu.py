"""CPU timing of the WKV-7 recurrence: sequential reference, chunked PyTorch, the Numba loop.

    python -m benchmarks.wkv7_cpu [--threads 2] [--repeats 7] [--B 2 --T 272 --H 6 --K 32] [--json out.json]

Times the forward of each (and forward+backward of the two differentiable ones) at the given
shape (default: a guided step of the shipped model's cross layer: batch 2, 256 image tokens plus
a 16-token prompt, 6 heads of 32), float32, RWKV-7-like inputs; reports the median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import dir7  # noqa: F401  (makes dir7_kernels importable in a checkout)
from dir7_kernels import wkv7_chunked, wkv7_naive
from dir7_kernels.cpu_recurrent import wkv7_cpu_recurrent


def make_inputs(B, T, H, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, K, generator=g) for _ in range(3))
    w = -0.6065306597126334 * torch.sigmoid(torch.randn(B, T, H, K, generator=g))
    kk = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1)
    eta = torch.sigmoid(torch.randn(B, T, H, K, generator=g))
    return [r, w, k, v, -kk, kk * eta]


def time_it(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--B", type=int, default=2)
    ap.add_argument("--T", type=int, default=272)
    ap.add_argument("--H", type=int, default=6)
    ap.add_argument("--K", type=int, default=32)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    inputs = make_inputs(args.B, args.T, args.H, args.K)
    # correctness first: the chunked version must equal the reference on these inputs
    o_ref, s_ref = wkv7_naive(*[x.double() for x in inputs], output_final_state=True)
    err = 0.0
    for fn in (wkv7_chunked, wkv7_cpu_recurrent):
        o, s = fn(*inputs, output_final_state=True)
        e = max(((x.double() - ref).norm() / ref.norm()).item() for x, ref in ((o, o_ref), (s, s_ref)))
        assert e < 2e-3, f"{fn.__name__} disagrees with the reference: relative error {e:.2e}"
        err = max(err, e)

    leaves = [x.clone().requires_grad_() for x in inputs]

    def fwd(fn):
        with torch.no_grad():
            fn(*inputs)

    def fwd_bwd(fn):
        o, _ = fn(*leaves)
        o.sum().backward()

    rows = []
    for label, run in (("forward", fwd), ("forward+backward", fwd_bwd)):
        row = {"pass": label, "naive_ms": 1e3 * time_it(lambda run=run: run(wkv7_naive), args.repeats),
               "chunked_ms": 1e3 * time_it(lambda run=run: run(wkv7_chunked), args.repeats)}
        if label == "forward":  # the compiled loop is inference only
            row["numba_ms"] = 1e3 * time_it(lambda run=run: run(wkv7_cpu_recurrent), args.repeats)
        rows.append(row)
    shape = f"B={args.B} T={args.T} H={args.H} K={args.K}, float32, {args.threads} threads"
    print(f"WKV-7 on CPU ({shape}); largest relative error against the float64 reference: {err:.1e}")
    print("| pass | sequential (ms) | chunked (ms) | Numba loop (ms) |\n|---|---|---|---|")
    for r in rows:
        numba_ms = f"{r['numba_ms']:.2f}" if "numba_ms" in r else "—"
        print(f"| {r['pass']} | {r['naive_ms']:.1f} | {r['chunked_ms']:.2f} | {numba_ms} |")
    if args.json:
        args.json.write_text(json.dumps({"shape": shape, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
