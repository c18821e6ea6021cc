"""CPU timing of the WKV-7 recurrence: sequential reference vs chunked PyTorch.

    python benchmarks/wkv7_cpu.py [--threads 2] [--repeats 7] [--json out.json]

Times forward and forward+backward at B=2, T=256, H=6, K=V=64 (dir7-s's head layout at
a 32x32 token grid), float32, RWKV-7-like inputs; reports the median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kernels import wkv7_chunked, wkv7_naive


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
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--H", type=int, default=6)
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    inputs = make_inputs(args.B, args.T, args.H, args.K)
    # correctness first: the chunked version must equal the reference on these inputs
    o_ref, s_ref = wkv7_naive(*[x.double() for x in inputs], output_final_state=True)
    o, s = wkv7_chunked(*inputs, output_final_state=True)
    err = max(((o.double() - o_ref).norm() / o_ref.norm()).item(), ((s.double() - s_ref).norm() / s_ref.norm()).item())
    assert err < 2e-3, f"chunked disagrees with the reference: relative error {err:.2e}"

    leaves = [x.clone().requires_grad_() for x in inputs]

    def fwd(fn):
        with torch.no_grad():
            fn(*inputs)

    def fwd_bwd(fn):
        o, _ = fn(*leaves)
        o.sum().backward()

    rows = []
    for label, run in (("forward", fwd), ("forward+backward", fwd_bwd)):
        t_naive = time_it(lambda run=run: run(wkv7_naive), args.repeats)
        t_chunk = time_it(lambda run=run: run(wkv7_chunked), args.repeats)
        rows.append({"pass": label, "naive_ms": 1e3 * t_naive, "chunked_ms": 1e3 * t_chunk,
                     "speedup": t_naive / t_chunk})
    shape = f"B={args.B} T={args.T} H={args.H} K={args.K}, float32, {args.threads} threads"
    print(f"WKV-7 on CPU ({shape}); chunked vs float64 reference: rel. error {err:.1e}")
    print("| pass | sequential (ms) | chunked (ms) | speed-up |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['pass']} | {r['naive_ms']:.1f} | {r['chunked_ms']:.1f} | {r['speedup']:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps({"shape": shape, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
