"""Register caps vs residency for the chunked WKV-7 kernels (GPU).

    python3 benchmarks/wkv7_regs.py [--out regs.json]

Why: compiled for sm_90, the fused forward uses all 255 registers per thread at BV=64
(4 warps), so an SM holds at most two of its programs; at 8 warps only one. The backward
(8 warps) also takes 255 and spills. With B*H = 256 programs on 132 SMs, residency decides
whether the grid runs in one wave or two. This script times launch configurations with a
``maxnreg`` cap (more resident programs, some spills) against the defaults, after checking
that every configuration computes what the default one does (outputs and gradients, by
relative RMS error). Shapes: B=16, H=16, K=V=64, bf16, T in {1024, 4096}, plus the
``dir7-s`` sampling shape (batch 8 x 6 heads, 1024 tokens) for the forward.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wkv7 import B, H, K, bench, log, make_inputs, rel, rotating

from kernels import triton_chunk

# (BV, num_warps, maxnreg, num_stages); the first of each list was the default in session 3. The
# forward rows time the S kernel (transposed=False), the default then, which the results record.
FWD_CONFIGS = [(64, 4, None, None), (64, 8, 128, None), (32, 4, 128, None), (32, 8, 64, None), (16, 4, 128, None),
               (32, 4, None, None), (64, 4, None, 1), (64, 4, None, 2), (64, 4, None, 4), (32, 4, None, 1)]
BWD_CONFIGS = [(8, None), (8, 128), (16, 64), (4, 128)]
TOL = 5e-3  # vs the default configuration: both round the same bf16 inputs; tf32 products differ in order


def fwd(xs, BV, nw, nreg, stages):
    return triton_chunk.wkv7_triton_chunk_fwd(*xs, output_final_state=True, BV=BV, num_warps=nw, maxnreg=nreg,
                                              num_stages=stages, transposed=False)


def fwd_table(shapes) -> dict:
    res = {}
    for name, (Bn, T, Hn) in shapes.items():
        xs = make_inputs(Bn, T, Hn, K)
        ref_o, ref_s = fwd(xs, *FWD_CONFIGS[0])
        _, nxt = rotating(lambda Bn=Bn, T=T, Hn=Hn: make_inputs(Bn, T, Hn, K), T)
        for cfg in FWD_CONFIGS:
            key = f"{name} BV={cfg[0]} nw={cfg[1]} maxnreg={cfg[2]} stages={cfg[3]}"
            try:
                o, s = fwd(xs, *cfg)
                err = max(rel(o, ref_o), rel(s, ref_s))
                if not err < TOL:  # NaN fails too
                    res[key] = {"error": f"differs from the default: {err:.2e}"}
                else:
                    res[key] = {"ms": bench(lambda cfg=cfg, nxt=nxt: fwd(nxt(), *cfg)), "rel_vs_default": err}
            except Exception as e:  # a launch failure is a result too
                res[key] = {"error": repr(e)[:200]}
            log(f"  fwd {key}: {res[key]}")
    return res


def bwd_table(Ts) -> dict:
    res = {}
    for T in Ts:
        xs = make_inputs(B, T, H, K)
        do = torch.randn(B, T, H, K, device="cuda", dtype=xs[0].dtype)
        _, _, hs = triton_chunk.chunk_fwd(*xs, 1.0, None, False, store_states=True)
        ref = triton_chunk.chunk_bwd(*xs, 1.0, hs, do, None, False)[:6]
        for nw, nreg in BWD_CONFIGS:
            key = f"T={T} nw={nw} maxnreg={nreg}"
            try:
                grads = triton_chunk.chunk_bwd(*xs, 1.0, hs, do, None, False, num_warps=nw, maxnreg=nreg)[:6]
                err = max(rel(g, r) for g, r in zip(grads, ref))
                if not err < TOL:
                    res[key] = {"error": f"differs from the default: {err:.2e}"}
                else:
                    ms = bench(lambda nw=nw, nreg=nreg, xs=xs, hs=hs, do=do: triton_chunk.chunk_bwd(
                        *xs, 1.0, hs, do, None, False, num_warps=nw, maxnreg=nreg))
                    res[key] = {"ms": ms, "rel_vs_default": err}
            except Exception as e:
                res[key] = {"error": repr(e)[:200]}
            log(f"  bwd (kernel only) {key}: {res[key]}")
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="wkv7_regs.json")
    p.add_argument("--no-bwd", action="store_true")
    p.add_argument("--only", nargs="*", type=int, default=None, help="indices into FWD_CONFIGS (0 is always run)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    result = {"gpu": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
              "configs": {"fwd (BV, warps, maxnreg)": FWD_CONFIGS, "bwd (warps, maxnreg)": BWD_CONFIGS}}
    log("forward, fused chunk kernel (ms, median of do_bench):")
    shapes = {"T=1024": (B, 1024, H), "T=4096": (B, 4096, H), "dir7-s step (B=8, H=6, T=1024)": (8, 1024, 6)}
    if args.only is not None:
        FWD_CONFIGS[:] = [FWD_CONFIGS[0], *(FWD_CONFIGS[i] for i in args.only if i)]
    result["fwd"] = fwd_table(shapes)
    Path(args.out).write_text(json.dumps(result, indent=1))
    if not args.no_bwd:
        log("backward kernel:")
        result["bwd"] = bwd_table((1024, 4096))
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
