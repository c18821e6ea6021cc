"""The two chunked forward kernels side by side, with fla's best forward in the same process (GPU).

    python3 benchmarks/wkv7_layouts.py [--out wkv7_layouts.json]

The S^T kernel (``transposed=True``, the default since session 4: state held transposed,
bf16 products for half inputs) against the previous S kernel (``transposed=False``: tf32
products), over a few launch configurations. First, at full size, each configuration's
output and final state are compared with the float64 sequential reference (relative RMS
error; a configuration over 1e-2 is reported and not timed). Then medians of do_bench at
B=16, H=16, K=V=64, bf16, T in {256, 1024, 4096} with inputs rotated past L2, the dir7-s
sampling shape (B=8, H=6, T=1024), and fla 0.6.0's chunk (plain and lower_bound) and
fused-recurrent forwards on the same inputs, so the ratio to fla's best is taken within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wkv7 import RWKV7_W_SCALE, B, H, K, bench, fla_chunk, fla_fused, load_fla, log, make_inputs, rel, rotating

from kernels import triton_chunk
from kernels.naive import wkv7_naive

# (transposed, BV, num_warps): both kernels at BV 64 / 4 warps (the S kernel's default), then
# other launches of the S^T one; BV 32 / 2 warps measured fastest and became the default
CONFIGS = [(True, 64, 4), (False, 64, 4), (True, 64, 8), (True, 32, 4), (True, 32, 2)]
TOL = 1e-2  # the bf16 bar of the kernel tests


def ours(xs, transposed, BV, nw, h0=None):
    return triton_chunk.wkv7_triton_chunk_fwd(*xs, initial_state=h0, output_final_state=True,
                                              transposed=transposed, BV=BV, num_warps=nw)


def correctness() -> dict:
    """Full-size check against the float64 sequential reference (B=2, T=1024, H=4, with h0)."""
    res = {}
    for w_kind in ("rwkv7", "fla"):
        xs = make_inputs(2, 1024, 4, K, w_kind=w_kind)
        h0 = torch.randn(2, 4, K, K, device="cuda")
        ref_o, ref_s = wkv7_naive(*[x.double() for x in xs], initial_state=h0.double(), output_final_state=True)
        for cfg in CONFIGS:
            o, s = ours(xs, *cfg, h0=h0)
            res[f"{w_kind} {cfg}"] = {"o": rel(o, ref_o), "state": rel(s, ref_s)}
            log(f"  {w_kind} transposed={cfg[0]} BV={cfg[1]} nw={cfg[2]}: {res[f'{w_kind} {cfg}']}")
    return res


def timings(ok: set) -> dict:
    fla = load_fla()
    shapes = {"T=256": (B, 256, H), "T=1024": (B, 1024, H), "T=4096": (B, 4096, H),
              "dir7-s (B=8, H=6, T=1024)": (8, 1024, 6)}
    res = {}
    for name, (Bn, T, Hn) in shapes.items():
        _, nxt = rotating(lambda Bn=Bn, T=T, Hn=Hn: make_inputs(Bn, T, Hn, K), T)
        row = {}
        for cfg in CONFIGS:
            if cfg in ok:
                key = f"ours transposed={cfg[0]} BV={cfg[1]} nw={cfg[2]}"
                row[key] = bench(lambda cfg=cfg, nxt=nxt: ours(nxt(), *cfg))
        if fla is not None:
            lb = RWKV7_W_SCALE - 1e-4  # as benchmarks/wkv7.py: the tightest bound valid for these w
            for key, f in (("fla chunk", fla_chunk(fla)), ("fla chunk lower_bound", fla_chunk(fla, lower_bound=lb)),
                           ("fla fused_recurrent", fla_fused(fla))):
                if key == "fla fused_recurrent" and T > 1024:
                    continue  # minutes per call at T=4096 (BENCHMARKS.md: "—")
                try:
                    row[key] = bench(lambda f=f, nxt=nxt: f(*nxt(), scale=1.0, output_final_state=True))
                except Exception as e:
                    row[key] = repr(e)[:200]
            fla_best = min(v for k_, v in row.items() if k_.startswith("fla") and isinstance(v, float))
            row["fla best"] = fla_best
            for k_ in [k_ for k_ in row if k_.startswith("ours")]:
                row[f"{k_} speed-up vs fla best"] = fla_best / row[k_]
        res[name] = row
        log(f"  {name}: " + ", ".join(f"{k_}={v:.3f}" if isinstance(v, float) else f"{k_}={v}"
                                      for k_, v in row.items()))
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="wkv7_layouts.json")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    result = {"gpu": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
              "configs (transposed, BV, num_warps)": CONFIGS}
    log("correctness, relative RMS error vs float64 (B=2, T=1024, H=4, K=V=64, bf16, with h0):")
    result["correctness"] = correctness()
    ok = {cfg for cfg in CONFIGS
          if all(max(v["o"], v["state"]) < TOL for k_, v in result["correctness"].items() if k_.endswith(str(cfg)))}
    Path(args.out).write_text(json.dumps(result, indent=1))
    log("forward timings, ms (median of do_bench):")
    result["timings"] = timings(ok)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0 if len(ok) == len(CONFIGS) else 1


if __name__ == "__main__":
    sys.exit(main())
