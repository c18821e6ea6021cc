"""How strongly each block's text path passes the prompt on: its output, and the part that is the text's.

    python -m dir7.eval text-paths [--preset dir7-demo] [--modes prefix,state,paper,attention]
    python -m dir7.eval text-paths --checkpoint DIR        # a trained model instead of fresh ones

For each model (a freshly initialised one per ``--modes`` entry, or the ``--checkpoint``), one
batch of images goes through the network twice, with two different prompts of the same length
(random text states of unit scale, what the model's text LayerNorm hands on), and every block's
cross sub-layer (CrossWKV or cross-attention) is watched before its adaLN gate: the std of its
output, and the std of the difference between the two passes over sqrt(2), the part that
depends on the prompt. Their ratio, the text share, is about 1 for a path that reads only the
text (state, paper, attention) and small where the image tokens write most of what is read
(prefix). The output's size matters because every sub-layer enters through an adaLN-Zero gate
that starts at zero: the gate's first gradient is proportional to it, so a text path that starts
weaker than the others is opened later. Runs on the CPU in seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--checkpoint", default=None, help="a model directory (default: fresh models of --preset)")
    ap.add_argument("--preset", default="dir7-demo", help="the architecture of the fresh models")
    ap.add_argument("--modes", default="prefix,state,paper,attention",
                    help="cross_mode of each fresh model, comma-separated")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--text-tokens", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the per-block rows, with the settings, to this JSON file")


def measure(model: torch.nn.Module, batch: int = 2, text_tokens: int = 12, seed: int = 0) -> list[dict]:
    """Per block: ``{"block", "output_std", "text_std", "text_share"}`` of its cross sub-layer."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.full((batch,), cfg.num_train_timesteps // 2)
    mask = torch.ones(batch, text_tokens, dtype=torch.bool)
    texts = [torch.randn(batch, text_tokens, cfg.text_dim, generator=g) for _ in range(2)]
    outs: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    hooks = [block.cross.register_forward_hook(
        lambda _mod, _inp, out, i=i: outs[i].append((out[0] if isinstance(out, tuple) else out).float()))
        for i, block in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            for text in texts:
                model(x, t, text, mask)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for i, (a, b) in enumerate(outs):
        out_std, text_std = float(a.std()), float((a - b).std()) / 2**0.5
        rows.append({"block": i, "output_std": out_std, "text_std": text_std,
                     "text_share": text_std / out_std if out_std > 0 else 0.0})
    return rows


def run(args: argparse.Namespace) -> dict[str, list[dict]]:
    from ..architectures import build_model
    from ..model import PRESETS, DIR7Config
    from ..pipeline import load_model

    if args.checkpoint:
        try:
            models = {args.checkpoint: load_model(args.checkpoint)[0].eval()}  # random text: no encoder needed
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: {e}") from None
        if not hasattr(models[args.checkpoint], "blocks"):
            raise SystemExit("error: text-paths watches DIR-7 blocks; this model has none (a DiT baseline?)")
    else:
        if args.preset not in PRESETS:
            raise SystemExit(f"error: unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
        models = {}
        for mode in args.modes.split(","):
            torch.manual_seed(args.seed)
            try:
                cfg = dataclasses.replace(DIR7Config.from_preset(args.preset), cross_mode=mode)
            except ValueError as e:
                raise SystemExit(f"error: {e}") from None
            models[mode] = build_model(cfg).eval()
    print("| model | cross output std (mean over blocks) | its prompt-dependent part | text share |")
    print("|---|---|---|---|")
    result = {}
    for name, model in models.items():
        rows = measure(model, args.batch, args.text_tokens, args.seed)
        result[name] = rows
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("output_std", "text_std", "text_share")}
        print(f"| {name} | {mean['output_std']:.2e} | {mean['text_std']:.2e} | {mean['text_share']:.0%} |")
    if args.out:
        settings = {k: getattr(args, k) for k in ("checkpoint", "preset", "modes", "batch", "text_tokens", "seed")}
        Path(args.out).write_text(json.dumps({"settings": settings, "models": result}, indent=1) + "\n")
    return result
