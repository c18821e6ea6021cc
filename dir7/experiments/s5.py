"""S5 state tracking: can a model keep a running product of permutations?

The task (Merrill et al., "The Illusion of State in State-Space Models"; RWKV-7 paper,
section on expressivity): a sequence ``x_1 .. x_n`` of permutations of 5 elements is read
token by token; at every position ``t`` the model predicts the prefix product
``y_t = x_t ∘ ... ∘ x_2 ∘ x_1`` (apply ``x_1`` first), a 120-way classification. S5 is
non-solvable, so no fixed-depth model with only diagonal (commuting) transitions can track
it at every length; the generalised delta rule of RWKV-7 has non-diagonal transitions.

Models of the same width and depth are compared:

- ``rwkv7``: pre-LayerNorm residual blocks of ``dir7.TimeMix`` + ``dir7.ChannelMix``;
- ``rwkv7_diag``: the same, with the delta-rule terms zeroed (``a = b = 0``: only the
  diagonal decay and the write ``k v^T`` remain; see :class:`DiagonalTimeMix`);
- ``rwkv7_reflect`` (an extra we added): ``rwkv7`` with the removal doubled
  (``b = 2 kk eta``, see :class:`ReflectingTimeMix`), so a transition's eigenvalue along the
  removal key spans (-1, 1) instead of (0, 1): it can reflect, which non-solvable groups need;
- ``transformer``: causal softmax attention (``F.scaled_dot_product_attention``) with
  rotary position embeddings (RoPE, relative, so nothing is tied to the training length)
  and a GELU MLP of the same hidden width.

Tokens enter as their 5x5 permutation matrices (``S5Config.token_input``). All models train on
length ``train_len`` (every prefix is a training target, so lengths 1..16 are all seen) and are
tested on longer sequences. Run ``python -m dir7.experiments.s5 --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..model import DIR7Config
from ..rwkv7 import ChannelMix, TimeMix

MODELS = ("rwkv7", "transformer", "rwkv7_diag", "rwkv7_reflect")
N_ELEMENTS = 120  # |S5| = 5!

# ---------------------------------------------------------------------------------------
# The group
# ---------------------------------------------------------------------------------------


def permutations(n: int = 5) -> list[tuple[int, ...]]:
    """All permutations of ``range(n)`` in lexicographic order; index 0 is the identity."""
    return list(itertools.permutations(range(n)))


def compose(p: tuple[int, ...], q: tuple[int, ...]) -> tuple[int, ...]:
    """``p ∘ q``: apply ``q`` first, then ``p`` (so ``(p ∘ q)[i] = p[q[i]]``)."""
    return tuple(p[i] for i in q)


def multiplication_table(n: int = 5) -> torch.Tensor:
    """``table[i, j]`` = index of ``perm_i ∘ perm_j``; ``[n!, n!]`` long."""
    perms = permutations(n)
    index = {p: i for i, p in enumerate(perms)}
    return torch.tensor([[index[compose(p, q)] for q in perms] for p in perms], dtype=torch.long)


def prefix_products(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Labels for ``x [B, T]`` (element indices): ``y_t = x_t ∘ y_{t-1}``, ``y_1 = x_1``."""
    y = torch.empty_like(x)
    acc = x[:, 0]
    y[:, 0] = acc
    for t in range(1, x.shape[1]):
        acc = table[x[:, t], acc]  # the new permutation is applied after the product so far
        y[:, t] = acc
    return y


def sample_batch(
    batch: int, length: int, table: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly random sequences ``[batch, length]`` and their prefix products."""
    x = torch.randint(0, table.shape[0], (batch, length), generator=generator, device=generator.device)
    return x, prefix_products(x, table)


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


@dataclass
class S5Config:
    dim: int = 64          # token width, the same for all three models
    depth: int = 4         # residual blocks
    head_size: int = 16    # RWKV head size and attention head size (dim / head_size heads)
    mlp_ratio: float = 4.0
    # "matrix": a token enters as its 5x5 permutation matrix (25 features, then a Linear);
    # "index": a learned embedding per element (the model must discover the group structure
    # from the labels alone, which takes far more steps than a CPU budget allows)
    token_input: str = "matrix"


def permutation_matrices(n: int = 5) -> torch.Tensor:
    """``[n!, n * n]``: row i is the flattened matrix P with ``P[p[j], j] = 1`` for perm_i = p."""
    perms = permutations(n)
    mats = torch.zeros(len(perms), n, n)
    for i, p in enumerate(perms):
        mats[i, list(p), list(range(n))] = 1.0
    return mats.flatten(1)


class TokenEmbedding(nn.Module):
    """Element index -> ``[dim]`` vector (see ``S5Config.token_input``). No positions."""

    def __init__(self, cfg: S5Config):
        super().__init__()
        if cfg.token_input == "matrix":
            self.register_buffer("features", permutation_matrices(), persistent=False)
            self.proj = nn.Linear(self.features.shape[1], cfg.dim)
        elif cfg.token_input == "index":
            self.features = None
            self.proj = nn.Embedding(N_ELEMENTS, cfg.dim)
        else:
            raise ValueError(f"token_input must be 'matrix' or 'index', got {cfg.token_input!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) if self.features is None else self.proj(self.features[x])


def rwkv_config(cfg: S5Config) -> DIR7Config:
    """A DIR7Config that only sizes the TimeMix / ChannelMix layers (image fields unused)."""
    # LoRA ranks scaled down with the width, in RWKV-7's proportions for small models
    return dataclasses.replace(
        DIR7Config.from_preset("dir7-demo"),
        dim=cfg.dim, depth=cfg.depth, head_size=cfg.head_size, mlp_ratio=cfg.mlp_ratio,
        decay_lora=max(cfg.dim // 4, 8), iclr_lora=max(cfg.dim // 4, 8),
        value_lora=max(cfg.dim // 8, 4), gate_lora=max(cfg.dim // 2, 8),
    )


class DiagonalTimeMix(TimeMix):
    """TimeMix with the delta-rule removal and replacement switched off (``a = b = 0``).

    ``TimeMix.mix`` forms the removal key as ``kk = normalize(k * k_k)`` and passes
    ``a = -kk``, ``b = kk * eta``; ``kk`` is used for nothing else. Replacing the learned
    ``k_k`` by a constant zero buffer makes ``kk = 0`` (``F.normalize`` maps 0 to 0), so
    ``S_t = diag(exp(w_t)) S_{t-1} + k_t v_t^T`` exactly, with every other part of the layer
    (decay LoRA, eta-scaled write key, bonus, gate, GroupNorm) unchanged.
    """

    def __init__(self, cfg, layer_id: int, n_layers: int):
        super().__init__(cfg, layer_id, n_layers)
        dim = self.k_k.shape[0]
        del self.k_k
        self.register_buffer("k_k", torch.zeros(dim))


class ReflectingTimeMix(TimeMix):
    """TimeMix whose transition can reflect: ``b = 2 kk eta`` instead of ``kk eta``.

    RWKV-7 keeps ``1 - eta`` of the state along the removal key ``kk``, an eigenvalue in (0, 1);
    doubling the removal lets it reach (-1, 1), i.e. reflections, which Grazzi et al. (2024)
    show diagonal-plus-rank-one RNNs need for parity and S5 tracking."""

    def project(self, x, v_first, receptance=None, keep=None):
        r, w, k, v, a, b, g, v_first = super().project(x, v_first, receptance, keep)
        return r, w, k, v, a, 2 * b, g, v_first


TIME_MIXES = {"rwkv7": TimeMix, "rwkv7_diag": DiagonalTimeMix, "rwkv7_reflect": ReflectingTimeMix}


class RWKVBlock(nn.Module):
    def __init__(self, rcfg: DIR7Config, layer_id: int, variant: str = "rwkv7"):
        super().__init__()
        mix_cls = TIME_MIXES[variant]
        self.ln1, self.ln2 = nn.LayerNorm(rcfg.dim), nn.LayerNorm(rcfg.dim)
        self.time_mix = mix_cls(rcfg, layer_id, rcfg.depth)
        self.channel_mix = ChannelMix(rcfg, layer_id, rcfg.depth)

    def forward(self, x, v_first):
        h, v_first, _ = self.time_mix(self.ln1(x), v_first)
        x = x + h
        return x + self.channel_mix(self.ln2(x)), v_first


class RWKVTracker(nn.Module):
    """Embedding -> RWKV-7 blocks -> LayerNorm -> 120-way head. No positional embedding."""

    def __init__(self, cfg: S5Config, variant: str = "rwkv7"):
        super().__init__()
        rcfg = rwkv_config(cfg)
        self.embed = TokenEmbedding(cfg)
        self.blocks = nn.ModuleList(RWKVBlock(rcfg, i, variant) for i in range(cfg.depth))
        self.ln_out = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, N_ELEMENTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T]`` element indices -> logits ``[B, T, 120]``."""
        h, v_first = self.embed(x), None
        for block in self.blocks:
            h, v_first = block(h, v_first)
        return self.head(self.ln_out(h))


def rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding on ``[B, H, T, K]`` (pairs of channels rotated by angle t·θ_i)."""
    T, K = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(0, K, 2, device=x.device, dtype=torch.float32) / K)  # [K/2]
    angle = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * theta       # [T, K/2]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class AttentionBlock(nn.Module):
    def __init__(self, cfg: S5Config):
        super().__init__()
        D = cfg.dim
        self.n_heads = D // cfg.head_size
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.out = nn.Linear(D, D, bias=False)
        hidden = int(cfg.mlp_ratio * D)
        self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(), nn.Linear(hidden, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)  # [B, H, T, K]
        o = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        x = x + self.out(o.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x))


class TransformerTracker(nn.Module):
    """Embedding -> causal attention blocks with RoPE -> LayerNorm -> 120-way head."""

    def __init__(self, cfg: S5Config):
        super().__init__()
        self.embed = TokenEmbedding(cfg)
        self.blocks = nn.ModuleList(AttentionBlock(cfg) for _ in range(cfg.depth))
        self.ln_out = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, N_ELEMENTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_out(h))


def build_model(name: str, cfg: S5Config) -> nn.Module:
    if name in TIME_MIXES:
        return RWKVTracker(cfg, variant=name)
    if name == "transformer":
        return TransformerTracker(cfg)
    raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")


# ---------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------


@dataclass
class S5Settings:
    model: S5Config = field(default_factory=S5Config)
    steps: int = 6000
    batch: int = 64
    train_len: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    test_lens: tuple[int, ...] = (8, 16, 32, 64, 128)
    test_batch: int = 256
    seed: int = 0
    log_every: int = 50

    @classmethod
    def fast(cls) -> S5Settings:
        """A setting that finishes in about a minute on a CPU (for the notebook in CI)."""
        return cls(model=S5Config(dim=32, depth=2, head_size=16), steps=300, batch=32,
                   test_lens=(8, 16, 32, 64), test_batch=64)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["test_lens"] = list(self.test_lens)
        return d


def lr_at(step: int, s: S5Settings) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(s.steps - s.warmup, 1)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_model(
    name: str, s: S5Settings, device: str = "cpu", progress: bool = True
) -> tuple[nn.Module, list[tuple[int, float, float]]]:
    """Train one model; returns it and its log ``[(step, loss, token accuracy), ...]``."""
    from tqdm.auto import tqdm

    torch.manual_seed(s.seed)
    table = multiplication_table().to(device)
    gen = torch.Generator(device=device).manual_seed(s.seed + 1)  # same data for every model
    model = build_model(name, s.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))
    log: list[tuple[int, float, float]] = []
    bar = tqdm(range(s.steps), desc=name, disable=not progress, mininterval=2.0)
    loss_sum = acc_sum = 0.0
    n = 0
    model.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, s)
        x, y = sample_batch(s.batch, s.train_len, table, gen)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, N_ELEMENTS), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # the recurrent models occasionally spike early on: clipping keeps runs comparable
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_sum += loss.item()
        acc_sum += (logits.argmax(-1) == y).float().mean().item()
        n += 1
        if (step + 1) % s.log_every == 0 or step + 1 == s.steps:
            log.append((step + 1, loss_sum / n, acc_sum / n))
            bar.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{acc_sum / n:.3f}")
            loss_sum = acc_sum = 0.0
            n = 0
    return model, log


@torch.no_grad()
def evaluate(model: nn.Module, s: S5Settings, device: str = "cpu") -> dict[int, dict]:
    """Per test length: token accuracy over all positions, at the last position and beyond ``train_len``;
    for the longest length also the accuracy at every position."""
    table = multiplication_table().to(device)
    gen = torch.Generator(device=device).manual_seed(s.seed + 12345)  # held-out sequences
    model.eval()
    out = {}
    for length in s.test_lens:
        x, y = sample_batch(s.test_batch, length, table, gen)
        correct = (model(x).argmax(-1) == y).float()               # [B, T]
        beyond = correct[:, s.train_len:]
        out[length] = {
            "all": correct.mean().item(),
            "last": correct[:, -1].mean().item(),
            # None (JSON null) where the test length does not exceed the training length
            "beyond_train": beyond.mean().item() if beyond.numel() else None,
        }
        if length == max(s.test_lens):
            # where along the sequence a model stops tracking: accuracy per position
            out[length]["per_position"] = [round(a, 4) for a in correct.mean(0).tolist()]
    return out


def run_experiment(
    s: S5Settings, models: tuple[str, ...] = MODELS, device: str = "cpu", progress: bool = True
) -> dict:
    """Train and test every model; returns the JSON-ready results."""
    start = time.time()
    results: dict = {
        "task": "S5 prefix products (120-way per token)",
        "settings": s.to_dict(),
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "positional_encoding": {m: "RoPE" if m == "transformer" else "none" for m in MODELS},
        "chance": 1 / N_ELEMENTS,
        "models": {},
    }
    for name in models:
        t0 = time.time()
        model, log = train_model(name, s, device, progress)
        acc = evaluate(model, s, device)
        results["models"][name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(time.time() - t0, 1),
            "train_log": [{"step": st, "loss": lo, "acc": ac} for st, lo, ac in log],
            # JSON keys are strings; readers convert back with int()
            "accuracy": {str(k): v for k, v in acc.items()},
        }
    results["wall_seconds"] = round(time.time() - start, 1)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="S5 state tracking: RWKV-7 vs attention vs diagonal-only RWKV-7")
    p.add_argument("--out", type=Path, default=Path("notebooks/data/s5_results.json"))
    p.add_argument("--fast", action="store_true", help="tiny models and few steps (about a minute on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--steps", type=int, default=None, help="training steps per model")
    p.add_argument("--batch", type=int, default=None, help="sequences per training step")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merge", type=Path, nargs="+", metavar="RESULTS.json",
                   help="combine result files of separate runs (one per --models, e.g. run in parallel "
                        "processes) into --out instead of training")
    args = p.parse_args(argv)
    if args.merge:
        results = merge_results([json.loads(f.read_text()) for f in args.merge])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        print(format_table(results))
        print(f"wrote {args.out}")
        return

    torch.set_num_threads(args.threads)
    s = S5Settings.fast() if args.fast else S5Settings()
    s = dataclasses.replace(s, seed=args.seed, **({"steps": args.steps} if args.steps else {}),
                            **({"batch": args.batch} if args.batch else {}))
    results = run_experiment(s, tuple(args.models), args.device)
    results["command"] = "python -m dir7.experiments.s5 " + " ".join(argv if argv is not None else _argv())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(format_table(results))
    print(f"wrote {args.out} ({results['wall_seconds']} s on {args.device})")


def merge_results(parts: list[dict]) -> dict:
    """One results dict from runs of disjoint model sets with identical settings."""
    if not parts:
        raise ValueError("nothing to merge")
    merged = {**parts[0], "models": {}, "commands": [], "wall_seconds": 0.0}
    merged.pop("command", None)
    for part in parts:
        if part["settings"] != parts[0]["settings"]:
            raise ValueError("cannot merge S5 results trained with different settings")
        clash = set(part["models"]) & set(merged["models"])
        if clash:
            raise ValueError(f"model(s) {sorted(clash)} appear in more than one file")
        merged["models"].update(part["models"])
        merged["commands"].append(part.get("command", ""))
        merged["wall_seconds"] = max(merged["wall_seconds"], part["wall_seconds"])  # run side by side
    return merged


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


def format_table(results: dict, metric: str = "all") -> str:
    """A markdown table: accuracy (``metric``: all / last / beyond_train) per model and length."""
    lens = results["settings"]["test_lens"]
    lines = ["| model | params | " + " | ".join(f"n={n}" for n in lens) + " |",
             "|---|---|" + "---|" * len(lens)]
    for name, r in results["models"].items():
        values = (r["accuracy"][str(n)][metric] for n in lens)
        accs = " | ".join("–" if v is None else f"{v:.3f}" for v in values)
        lines.append(f"| {name} | {r['params']:,} | {accs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
