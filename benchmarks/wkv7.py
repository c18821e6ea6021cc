"""WKV-7 kernels on the GPU it finds, against the strongest public peers: correctness first, then timings.

    python -m benchmarks.wkv7 --out results/benchmarks/wkv7_results.json [--sweep] [--model]
        [--resume] [--wind-rwkv PATH/TO/wind_rwkv]

1. measures the card's device-to-device copy bandwidth (the memory-floor column);
2. checks our kernels (and the peers', for information) against the float64 sequential
   reference at the benchmark size, forward and every gradient; exits non-zero on failure;
3. optionally (--sweep) times launch configurations of our kernels and uses the best;
4. times, at B=16, H=16, K=V=64, bf16, T in {256, 1024, 4096} (median of do_bench, inputs
   rotated so the L2 cache does not flatter): our fused-recurrent forward, chunk forward and
   chunk forward+backward; fla's chunk_rwkv7 at its default and at its fastest setting
   (``lower_bound``, which RWKV-7's decay range allows) forward and forward+backward, and its
   fused_recurrent forward (if fla imports); wind_rwkv's chunked CUDA kernel forward and
   forward+backward (with --wind-rwkv); SDPA self- and cross-attention (77 keys);
5. optionally (--model) times one dir7-s denoising step with our kernels and with fla's;
6. writes the JSON (--out); ``python -m benchmarks.render`` turns it into BENCHMARKS.md.

The JSON is written after every part; ``--resume`` reuses the parts already in ``--out`` (a
call cut off by a time limit continues where it stopped).

Peers' traps: fla's fused_recurrent_rwkv7 defaults to scale = 1/sqrt(K), so scale=1.0 is passed
everywhere. wind_rwkv (johanwind/wind_rwkv, MIT; not on PyPI: give the path of a clone, which
stays outside this repository) parametrises the decay as exp(-exp(w')), so it is given
w' = log(-w), computed before the timed region; its state is [V, K] and bf16, and T must be a
multiple of 16. Its loader builds the CUDA extension with nvcc (about 17 s) on first use.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

import dir7  # noqa: F401  (makes dir7_kernels importable in a checkout)
from dir7_kernels import triton_chunk, triton_recurrent
from dir7_kernels.naive import wkv7_naive

RWKV7_W_SCALE = -0.6065306597126334
B, H, K = 16, 16, 64
DTYPE = torch.bfloat16
LOG: list[str] = []


def log(msg: str = "") -> None:
    print(msg, flush=True)
    LOG.append(msg)


# =====================================================================================
# Inputs, reference, timing helpers
# =====================================================================================


def make_inputs(Bn, T, Hn, Kn, dtype=DTYPE, w_kind="rwkv7", requires_grad=False, device="cuda"):
    """RWKV-7-shaped random inputs: a = -kk, b = kk * eta, w = -0.6065 * sigmoid(.)."""
    shape = (Bn, T, Hn, Kn)
    z = torch.randn(shape, device=device)
    w = RWKV7_W_SCALE * torch.sigmoid(z) if w_kind == "rwkv7" else F.logsigmoid(z)
    kk = F.normalize(torch.randn(shape, device=device), dim=-1)
    eta = torch.rand(shape, device=device)
    xs = [torch.randn(shape, device=device), w, torch.randn(shape, device=device),
          torch.randn(shape, device=device), -kk, kk * eta]
    return [x.to(dtype).requires_grad_(requires_grad) for x in xs]


def rel(x, ref) -> float:
    x, ref = x.detach().double(), ref.detach().double()
    if not torch.isfinite(x).all():
        return float("nan")
    return float((x - ref).norm() / ref.norm())


def bench(fn, rep_ms=200) -> float:
    """Median milliseconds of ``fn`` (device events, after warm-up)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=50, rep=rep_ms, return_mode="median"))


def rotating(make, T, min_bytes=200 * 2**20, max_sets=8):
    """Enough input sets that one pass over them overflows L2 (50-60 MB on an H100/H200)."""
    per_set = 7 * B * T * H * K * 2
    n = max(2, min(max_sets, math.ceil(min_bytes / per_set)))
    sets = [make() for _ in range(n)]
    it = itertools.cycle(sets)
    return sets, (lambda: next(it))


# =====================================================================================
# Peers: fla (optional) and wind_rwkv (optional, from a path)
# =====================================================================================


def load_fla():
    try:
        import fla
        from fla.ops.rwkv7 import chunk_rwkv7, fused_recurrent_rwkv7
        return {"version": fla.__version__, "chunk": chunk_rwkv7, "fused": fused_recurrent_rwkv7}
    except Exception as e:  # report, keep going with our kernels
        log(f"fla not available: {e!r}")
        return None


def fla_chunk(fla, lower_bound=None):
    """fla's chunk_rwkv7; ``lower_bound`` (its fastest path) tells it the log-decay's floor."""
    def f(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False):
        kw = {} if lower_bound is None else {"lower_bound": lower_bound}
        return fla["chunk"](r, w, k, v, a, b, scale=scale, initial_state=initial_state,
                            output_final_state=output_final_state, **kw)
    return f


def fla_fused(fla):
    def f(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False):
        return fla["fused"](r, w, k, v, a, b, scale=scale, initial_state=initial_state,
                            output_final_state=output_final_state)
    return f


# the log-decay floor our layers guarantee (w = -0.6065 * sigmoid(.)), a hair below for rounding
FLA_LOWER_BOUND = RWKV7_W_SCALE - 1e-4


def load_wind(path: str | None):
    """wind_rwkv's chunked CUDA kernel from a clone at ``path`` (built by its own loader), or None."""
    if not path:
        return None
    try:
        init = Path(path) / "wind_rwkv" / "__init__.py"
        spec = importlib.util.spec_from_file_location("wind_rwkv", init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["wind_rwkv"] = module
        spec.loader.exec_module(module)
        from wind_rwkv.rwkv7 import attn_chunked_cuda, load_chunked_cuda

        t0 = time.perf_counter()
        load_chunked_cuda(K)
        log(f"wind_rwkv chunked CUDA built in {time.perf_counter() - t0:.1f} s")
        return attn_chunked_cuda
    except Exception as e:
        log(f"wind_rwkv not available: {e!r}")
        return None


def wind_inputs(xs):
    """Our inputs in wind_rwkv's form: w' = log(-w) (its decay is exp(-exp(w')))."""
    r, w, k, v, a, b = xs
    return [r, torch.log(-w.float()).to(w.dtype), k, v, a, b]


def wind_call(attn):
    """wind_rwkv with our contract: state [B, H, K, V] float32 in and out, scale 1."""
    def f(r, w_log, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False):
        assert scale == 1.0, "wind_rwkv has no scale"
        s0 = None if initial_state is None else initial_state.transpose(-1, -2).to(DTYPE).contiguous()
        y, sT = attn(r, w_log, k, v, a, b, s0)
        return y, (sT.transpose(-1, -2).float() if output_final_state else None)
    return f


# =====================================================================================
# 1. bandwidth
# =====================================================================================


def measure_bandwidth() -> float:
    n = 2**30  # 1 GiB each way
    x = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * n / (ms * 1e-3)  # bytes read + written per second


# =====================================================================================
# 2. correctness at full size
# =====================================================================================


def check_correctness(fla, wind) -> dict:
    out, failures = {}, []
    ours = {
        "ours recurrent": lambda *x, **kw: triton_recurrent.wkv7_triton_recurrent(*x, **kw),
        "ours chunk": lambda *x, **kw: triton_chunk.wkv7_triton_chunk(*x, **kw),
    }
    others = {} if fla is None else {
        "fla chunk": fla_chunk(fla), "fla chunk lower_bound": fla_chunk(fla, FLA_LOWER_BOUND),
        "fla fused_recurrent": fla_fused(fla)}
    torch.manual_seed(1)
    for T in (256, 1024, 4096):
        xs = make_inputs(B, T, H, K)
        h0 = torch.randn(B, H, K, K, device="cuda")
        ref_o, ref_s = wkv7_naive(*[x.double() for x in xs], initial_state=h0.double(), output_final_state=True)
        runs = {**{n: (f, xs) for n, f in {**ours, **others}.items()}}
        if wind is not None:
            runs["wind_rwkv chunked"] = (wind_call(wind), wind_inputs(xs))
        for name, (f, inputs) in runs.items():
            with torch.no_grad():
                o, s = f(*inputs, scale=1.0, initial_state=h0, output_final_state=True)
            eo, es = rel(o, ref_o), rel(s, ref_s)
            out[f"fwd T={T} {name}"] = {"o": eo, "state": es}
            log(f"  fwd  T={T:5d} {name:22s} o {eo:.2e}  final state {es:.2e}")
            if name.startswith("ours") and not (eo < 1e-2 and es < 1e-2):
                failures.append(f"fwd T={T} {name}: o {eo:.2e}, state {es:.2e}")
        del ref_o, ref_s
    # gradients: the full batch at an odd length, and a longer sequence at a smaller batch
    grads = {"ours chunk": (triton_chunk.wkv7_triton_chunk, lambda xs: xs)}
    if fla is not None:
        grads["fla chunk lower_bound"] = (fla_chunk(fla, FLA_LOWER_BOUND), lambda xs: xs)
    for Bn, T, w_kind in ((B, 257, "rwkv7"), (2, 1024, "rwkv7")):
        xs = make_inputs(Bn, T, H, K, w_kind=w_kind, requires_grad=True)
        h0 = torch.randn(Bn, H, K, K, device="cuda", requires_grad=True)
        xd = [x.detach().double().requires_grad_() for x in [*xs, h0]]
        ro, rs = wkv7_naive(*xd[:6], initial_state=xd[6], output_final_state=True)
        do, ds = torch.randn_like(ro), torch.randn_like(rs)
        rg = torch.autograd.grad((ro * do).sum() + (rs * ds).sum(), xd)
        for name, (f, _) in grads.items():
            o, s = f(*xs, initial_state=h0, output_final_state=True)
            g = torch.autograd.grad((o * do.to(o.dtype)).sum() + (s * ds.float()).sum(), [*xs, h0])
            errs = {"o": rel(o, ro), "state": rel(s, rs)}
            errs.update({n: rel(a, b) for n, a, b in zip(("dr", "dw", "dk", "dv", "da", "db", "dh0"), g, rg)})
            out[f"fwd+bwd B={Bn} T={T} {name}"] = errs
            log(f"  grad B={Bn} T={T} {name}: " + "  ".join(f"{n} {e:.2e}" for n, e in errs.items()))
            bad = [n for n, e in errs.items() if not e < 1e-2]
            if bad and name.startswith("ours"):
                failures.append(f"fwd+bwd B={Bn} T={T} {name}: {bad}")
        del ro, rs, rg, xd
    torch.cuda.empty_cache()
    if failures:
        log("CORRECTNESS FAILED: " + "; ".join(failures))
    return {"errors": out, "failures": failures}


# =====================================================================================
# 3. launch-configuration sweep
# =====================================================================================


def sweep() -> dict:
    """A few launch shapes around the ones that won a wider sweep (docs/wkv7-kernel-notes.md)."""
    res = {"recurrent": {}, "chunk_fwd": {}, "chunk_bwd": {}}
    for T in (256, 1024):
        _, nxt = rotating(lambda T=T: make_inputs(B, T, H, K), T)
        for BV, nw in ((16, 1), (32, 2)):
            ms = bench(lambda BV=BV, nw=nw, nxt=nxt: triton_recurrent.wkv7_triton_recurrent(
                *nxt(), BV=BV, num_warps=nw))
            res["recurrent"][f"T={T} BV={BV} nw={nw}"] = ms
            log(f"  recurrent T={T} BV={BV:2d} warps={nw}: {ms:.3f} ms")
    for T in (1024, 4096):
        _, nxt = rotating(lambda T=T: make_inputs(B, T, H, K), T)
        for C, BV, nw in ((16, 32, 2), (16, 64, 4), (16, 32, 4), (32, 32, 2)):
            ms = bench(lambda C=C, BV=BV, nw=nw, nxt=nxt: triton_chunk.wkv7_triton_chunk_fwd(
                *nxt(), chunk_size=C, BV=BV, num_warps=nw))
            res["chunk_fwd"][f"T={T} C={C} BV={BV} nw={nw}"] = ms
            log(f"  chunk fwd T={T} C={C} BV={BV:2d} warps={nw}: {ms:.3f} ms")
        xs = make_inputs(B, T, H, K)
        do = torch.randn(B, T, H, K, device="cuda", dtype=DTYPE)
        for C, nw in ((16, 4), (16, 8)):
            _, _, hs = triton_chunk.chunk_fwd(*xs, 1.0, None, False, store_states=True, chunk_size=C)
            ms = bench(lambda C=C, nw=nw, hs=hs, xs=xs, do=do: triton_chunk.chunk_bwd(
                *xs, 1.0, hs, do, None, False, chunk_size=C, num_warps=nw))
            res["chunk_bwd"][f"T={T} C={C} nw={nw}"] = ms
            log(f"  chunk bwd (kernel only) T={T} C={C} warps={nw}: {ms:.3f} ms")
            del hs
    return res


def crossover() -> dict:
    """Inference: fused-recurrent vs chunk forward at short T (sets the dispatch threshold)."""
    res = {}
    for T in (1, 16, 64, 256):
        _, nxt = rotating(lambda T=T: make_inputs(B, T, H, K), T)
        rec = bench(lambda nxt=nxt: triton_recurrent.wkv7_triton_recurrent(*nxt()))
        chk = bench(lambda nxt=nxt: triton_chunk.wkv7_triton_chunk_fwd(*nxt()))
        res[T] = {"recurrent": rec, "chunk": chk}
        log(f"  T={T:4d}: recurrent {rec:.4f} ms, chunk {chk:.4f} ms")
    return res


def _parse(key: str) -> dict:
    return {k: int(v) for k, v in (part.split("=") for part in key.split())}


def apply_best(res: dict) -> dict:
    """Set the kernels' launch defaults to the fastest configurations of the sweep
    (summed over the swept lengths), so the table below times what the sweep found."""
    def best(table, fields):
        totals = {}
        for key, ms in table.items():
            cfg = _parse(key)
            ident = tuple(cfg[f] for f in fields)
            totals[ident] = totals.get(ident, 0.0) + ms
        return min(totals, key=totals.get), totals

    (bv, nw), _ = best(res["recurrent"], ("BV", "nw"))
    triton_recurrent.DEFAULT_BV, triton_recurrent.DEFAULT_NUM_WARPS = bv, nw
    (C, BV, nw), fwd_totals = best(res["chunk_fwd"], ("C", "BV", "nw"))
    triton_chunk.DEFAULT_CHUNK, triton_chunk.DEFAULT_FWD_BV, triton_chunk.DEFAULT_FWD_WARPS = C, BV, nw
    # training: forward at the best (BV, warps) for that chunk length + backward
    _, bwd_totals = best(res["chunk_bwd"], ("C", "nw"))
    scores = {(c, bnw): ms + min(v for k, v in fwd_totals.items() if k[0] == c) for (c, bnw), ms in bwd_totals.items()}
    triton_chunk.TRAIN_CHUNK, triton_chunk.DEFAULT_BWD_WARPS = min(scores, key=scores.get)
    return current_config()


def current_config() -> dict:
    return {
        "recurrent": {"BV": triton_recurrent.DEFAULT_BV, "num_warps": triton_recurrent.DEFAULT_NUM_WARPS},
        "chunk_fwd": {"chunk": triton_chunk.DEFAULT_CHUNK, "BV": triton_chunk.DEFAULT_FWD_BV,
                      "num_warps": triton_chunk.DEFAULT_FWD_WARPS},
        "train": {"chunk": triton_chunk.TRAIN_CHUNK, "bwd_num_warps": triton_chunk.DEFAULT_BWD_WARPS},
    }


# =====================================================================================
# 4. the table
# =====================================================================================


def time_row(T: int, fla, wind, bw: float) -> dict:
    row = {"T": T, "floor_ms": 7 * B * T * H * K * 2 / bw * 1e3}

    def fwd(f, convert=lambda xs: xs):
        _, nxt = rotating(lambda: convert(make_inputs(B, T, H, K)), T)
        return bench(lambda: f(*nxt(), scale=1.0))

    def fwd_bwd(f, convert=lambda xs: xs):
        def make():
            xs = [x.detach().requires_grad_() for x in convert(make_inputs(B, T, H, K))]
            return xs, torch.randn(B, T, H, K, device="cuda", dtype=DTYPE)
        _, nxt = rotating(make, T)

        def step():
            xs, do = nxt()
            o = f(*xs, scale=1.0)[0]
            torch.autograd.grad(o, xs, do)
        return bench(step)

    def attempt(key, thunk):
        try:
            row[key] = thunk()
        except Exception as e:
            row[key] = None
            log(f"  {key} T={T} failed: {e!r}")
        torch.cuda.empty_cache()

    attempt("ours_recurrent_fwd", lambda: fwd(triton_recurrent.wkv7_triton_recurrent))
    attempt("ours_chunk_fwd", lambda: fwd(triton_chunk.wkv7_triton_chunk_fwd))
    attempt("ours_chunk_fwd_bwd", lambda: fwd_bwd(triton_chunk.wkv7_triton_chunk))
    if fla is not None:
        attempt("fla_chunk_fwd", lambda: fwd(fla_chunk(fla)))
        attempt("fla_chunk_lower_bound_fwd", lambda: fwd(fla_chunk(fla, FLA_LOWER_BOUND)))
        attempt("fla_fused_recurrent_fwd", lambda: fwd(fla_fused(fla)))
        attempt("fla_chunk_fwd_bwd", lambda: fwd_bwd(fla_chunk(fla)))
        attempt("fla_chunk_lower_bound_fwd_bwd", lambda: fwd_bwd(fla_chunk(fla, FLA_LOWER_BOUND)))
    if wind is not None and T % 16 == 0:
        attempt("wind_chunked_fwd", lambda: fwd(wind_call(wind), wind_inputs))
        attempt("wind_chunked_fwd_bwd", lambda: fwd_bwd(wind_call(wind), wind_inputs))

    def sdpa(L):
        def mk():
            q = torch.randn(B, H, T, K, device="cuda", dtype=DTYPE)
            kv = torch.randn(2, B, H, L, K, device="cuda", dtype=DTYPE)
            return q, kv
        _, nxt = rotating(mk, T)

        def run():
            q, kv = nxt()
            return F.scaled_dot_product_attention(q, kv[0], kv[1])
        return bench(run)

    attempt("sdpa_self_fwd", lambda: sdpa(T))
    attempt("sdpa_cross77_fwd", lambda: sdpa(77))
    return row


# =====================================================================================
# 5. one dir7-s sampling step, ours vs fla swapped in
# =====================================================================================


def time_model_step(fla, batch=8) -> dict:
    try:
        import dir7.rwkv7
        cfg = dir7.DIR7Config.from_preset("dir7-s")
        model = dir7.DIR7Model(cfg).cuda().eval()
        # an untrained DIR-7 outputs exactly zero (adaLN-Zero gates, zero decoder): give the
        # zero-initialised parameters values so the kernels' outputs can be compared through it
        with torch.no_grad():
            for p in model.parameters():
                if torch.count_nonzero(p) == 0:
                    p.normal_(std=0.05)
        x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device="cuda")
        text = torch.randn(batch, cfg.max_text_len, cfg.text_dim, device="cuda")
        t = torch.full((batch,), 500.0, device="cuda")
    except Exception as e:
        log(f"dir7-s step not timed: {e!r}")
        return {"error": repr(e)}

    ours = dir7.rwkv7.wkv7  # the layers call the recurrence through this one binding
    res = {"batch": batch, "tokens": cfg.num_tokens, "heads": cfg.n_heads}
    variants = {"ours": ours}
    if fla is not None:
        variants["fla chunk"] = fla_chunk(fla)
        variants["fla chunk lower_bound"] = fla_chunk(fla, FLA_LOWER_BOUND)
    outputs = {}
    try:
        for name, fn in variants.items():
            dir7.rwkv7.wkv7 = fn
            # bf16 autocast, as sampling runs; the WKV inputs then arrive in mixed dtypes
            with torch.no_grad(), torch.autocast("cuda", dtype=DTYPE):
                try:
                    ms = bench(lambda: model(x, t, text), rep_ms=500)
                except Exception as e:
                    log(f"  dir7-s step with {name} failed: {e!r}")
                    res.setdefault("errors", {})[name] = repr(e)
                    ms = None
                if ms is not None:
                    outputs[name] = model(x, t, text).float()
            res[name] = ms
            log(f"  dir7-s step (B={batch}) with {name}: {ms if ms is None else f'{ms:.3f} ms'}")
        # same weights, same inputs: the kernels must agree on the model's output too
        for name, eps in outputs.items():
            if name != "ours" and "ours" in outputs:
                res[f"rel diff of eps, ours vs {name}"] = rel(outputs["ours"], eps)
                log(f"  eps rel diff ours vs {name}: {res[f'rel diff of eps, ours vs {name}']:.2e}")
    finally:
        dir7.rwkv7.wkv7 = ours
    return res


# =====================================================================================
# 6. the BENCHMARKS.md section (python -m benchmarks.render)
# =====================================================================================

COLUMNS = [
    ("floor_ms", "memory floor*"),
    ("ours_recurrent_fwd", "**ours fused-recurrent fwd**"),
    ("ours_chunk_fwd", "**ours chunk fwd**"),
    ("fla_chunk_fwd", "fla chunk fwd"),
    ("fla_chunk_lower_bound_fwd", "fla chunk lower_bound fwd"),
    ("fla_fused_recurrent_fwd", "fla fused_recurrent fwd"),
    ("wind_chunked_fwd", "wind_rwkv chunked fwd"),
    ("ours_chunk_fwd_bwd", "**ours chunk fwd+bwd**"),
    ("fla_chunk_fwd_bwd", "fla chunk fwd+bwd"),
    ("fla_chunk_lower_bound_fwd_bwd", "fla chunk lower_bound fwd+bwd"),
    ("wind_chunked_fwd_bwd", "wind_rwkv chunked fwd+bwd"),
    ("sdpa_self_fwd", "SDPA self-attn fwd"),
    ("sdpa_cross77_fwd", "SDPA cross-attn (77) fwd"),
]
PEER_FWD = ("fla_chunk_fwd", "fla_chunk_lower_bound_fwd", "fla_fused_recurrent_fwd", "wind_chunked_fwd")
PEER_FWD_BWD = ("fla_chunk_fwd_bwd", "fla_chunk_lower_bound_fwd_bwd", "wind_chunked_fwd_bwd")
COMMAND = ("python -m benchmarks.wkv7 --out results/benchmarks/wkv7_results.json --sweep --model --resume "
           "--wind-rwkv PATH/TO/wind_rwkv")


def fmt(x) -> str:
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.2f}")


def markdown(result: dict) -> str:
    env = result["env"]
    cols = [c for c in COLUMNS if any(row.get(c[0]) is not None for row in result["rows"])]
    fla = f"fla {env['fla']}" if env.get("fla") else "fla not run (--no-fla)"
    lines = [
        "## WKV-7 kernels",
        "",
        f"{env['gpu']}, {env['date']}, torch {env['torch']}, triton {env['triton']}, {fla}; "
        f"bf16, B={B}, H={H}, K=V={K}; milliseconds, median of `triton.testing.do_bench`, "
        "inputs rotated so the L2 cache does not flatter. Correctness was checked at these sizes "
        "first (see the JSON).",
        "",
        "| T | " + " | ".join(c[1] for c in cols) + " | fwd: best peer / ours | fwd+bwd: best peer / ours |",
        "|---|" + "---|" * (len(cols) + 2),
    ]
    for row in result["rows"]:
        ours = [row.get(k) for k in ("ours_recurrent_fwd", "ours_chunk_fwd") if row.get(k) is not None]
        theirs = [row[k] for k in PEER_FWD if row.get(k) is not None]
        speed_f = f"{min(theirs) / min(ours):.2f}x" if ours and theirs else "—"
        fb_o, fb_p = row.get("ours_chunk_fwd_bwd"), [row[k] for k in PEER_FWD_BWD if row.get(k) is not None]
        speed_b = f"{min(fb_p) / fb_o:.2f}x" if fb_o and fb_p else "—"
        lines.append(f"| {row['T']} | " + " | ".join(fmt(row.get(k)) for k, _ in cols) + f" | {speed_f} | {speed_b} |")
    lines += [
        "",
        f"\\* six bf16 inputs read once and one output written, over the measured device-to-device "
        f"copy bandwidth of this card ({result['bandwidth_TBps']:.2f} TB/s, bytes read + written).",
        "",
    ]
    cross = result.get("crossover")
    if cross:
        lines += ["Inference at short T (same shapes), which sets `dispatch.RECURRENT_MAX_T`:", "",
                  "| T | ours fused-recurrent fwd | ours chunk fwd |", "|---|---|---|"]
        lines += [f"| {T} | {v['recurrent']:.4f} | {v['chunk']:.4f} |" for T, v in cross.items()]
        lines.append("")
    cfg = result.get("config")
    if cfg:
        lines += [f"Launch configurations timed: `{json.dumps(cfg)}`.", ""]
    m = result.get("model_step")
    timed = {k: v for k, v in (m or {}).items()
             if k not in ("batch", "tokens", "heads", "errors", "note") and not k.startswith("rel diff")}
    if m and "error" not in m and any(v is not None for v in timed.values()):
        parts = [f"{k}: {fmt(v)} ms" for k, v in timed.items()]
        parts += [f"{k}: {v:.1e}" for k, v in m.items() if k.startswith("rel diff")]
        lines += [f"One dir7-s denoising step (model forward, bf16 autocast, batch {m['batch']}, {m['tokens']} "
                  f"image tokens, {m['heads']} heads), WKV kernel swapped: " + "; ".join(parts) + ".", ""]
    lines += ["Reproduce (on the GPU; fla installed, a clone of wind_rwkv outside the repository):", "",
              "```", result.get("command", COMMAND), "```", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/benchmarks/wkv7_results.json")
    p.add_argument("--sweep", action="store_true", help="time launch configurations first")
    p.add_argument("--model", action="store_true", help="time one dir7-s step, ours vs fla")
    p.add_argument("--T", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--wind-rwkv", default=None, metavar="PATH", help="a clone of johanwind/wind_rwkv (a peer)")
    p.add_argument("--no-fla", action="store_true",
                   help="leave fla out (its Triton autotuning takes minutes on first use of each shape)")
    p.add_argument("--resume", action="store_true", help="keep the parts already in --out, run the rest")
    args = p.parse_args()
    command = " ".join(["python -m benchmarks.wkv7", *sys.argv[1:]])
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    fla, wind = (None if args.no_fla else load_fla()), load_wind(args.wind_rwkv)
    out = Path(args.out)
    result = json.loads(out.read_text()) if args.resume and out.is_file() else {}
    if result:
        # a resumed result is the earlier runs' work plus this one's: keep their log and command
        LOG[:0] = [*result.get("log", []), f"--- resumed by: {command}"]
        if result.get("command") not in (None, command):
            result.setdefault("earlier_commands", []).append(result["command"])

    def save():
        result["command"] = command
        result["log"] = LOG
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))

    result.setdefault("env", {
        "gpu": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
        "triton": triton.__version__, "fla": fla["version"] if fla else None, "python": platform.python_version(),
        "wind_rwkv": wind is not None,
    })
    log(f"env: {result['env']}")
    if "bandwidth_TBps" not in result:
        result["bandwidth_TBps"] = measure_bandwidth() / 1e12
    bw = result["bandwidth_TBps"] * 1e12
    log(f"copy bandwidth: {bw / 1e12:.2f} TB/s")

    if "correctness" not in result:
        log("correctness at full size (relative RMS error vs float64 sequential reference):")
        result["correctness"] = check_correctness(fla, wind)
        save()
    if result["correctness"]["failures"]:
        log("CORRECTNESS FAILED: " + "; ".join(result["correctness"]["failures"]))
        return 1

    if args.sweep:
        if "sweep" not in result:
            log("launch-configuration sweep:")
            result["sweep"] = sweep()
        result["chosen"] = apply_best(result["sweep"])
        log(f"chosen launch configurations: {result['chosen']}")
        save()
    result["config"] = current_config()
    if "crossover" not in result:
        log("inference crossover (B=16, H=16, K=64, bf16):")
        result["crossover"] = crossover()
        save()

    log("timings (ms):")
    rows = {row["T"]: row for row in result.get("rows", [])}
    for T in args.T:
        if T not in rows:
            rows[T] = time_row(T, fla, wind, bw)
            result["rows"] = [rows[t] for t in args.T if t in rows]
            save()
        log(f"  T={T}: " + ", ".join(f"{k}={fmt(v)}" for k, v in rows[T].items() if k != "T"))
    if args.model and "model_step" not in result:
        log("dir7-s sampling step:")
        try:
            result["model_step"] = time_model_step(fla)
        except Exception as e:
            traceback.print_exc()
            result["model_step"] = {"error": repr(e)}
    save()
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
