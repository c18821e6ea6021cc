"""The DIR-7 backbone: an epsilon-prediction network for pixel-space diffusion.

    x_t [B, 3, S, S] --conv stem + patchify--> tokens [B, T, D], T = (S / patch)^2
      -> blocks [RWKV-7 time mixing, CrossWKV(text), channel mixing], adaLN-Zero on t,
         U-ViT long skips from the first half of the stack to the second
      -> linear + unpatchify + conv decoder (with a pixel-level skip from the stem) -> eps

Each block scans the image tokens in its own order (rows, rows reversed, columns,
columns reversed, ...): a layer is unidirectional (the paper's point), the stack is not.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .attention import CrossAttention
from .ops import adaln_modulate
from .rwkv7 import CROSS_MODES, ChannelMix, CrossWKV, TimeMix

SCAN_ORDERS = ("row", "row_reverse", "col", "col_reverse")
INITS = ("rwkv7", "xavier")


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------


@dataclass
class DIR7Config:
    """The architecture of a DIR-7 network and the noise schedule it was trained for.

    Nothing else: how to sample with a model lives in its ``PipelineConfig``
    (``pipeline_config.json`` beside ``config.json``), how it was trained in ``TrainConfig``.
    """

    model_type: ClassVar[str] = "dir7"  # config.json's "model_type" (dir7.architectures)

    # image
    image_size: int = 64          # pixels per side; DIR-7 runs in pixel space (no VAE)
    in_channels: int = 3          # RGB in, RGB epsilon out
    patch_size: int = 2           # tokens are patch x patch pixels: T = (image_size / patch_size)^2
    conv_channels: int = 64       # width of the conv stem / decoder around the token stack
    # token stack
    dim: int = 384                # D, the token width (= heads x head_size)
    depth: int = 13               # number of DIR-7 blocks; U-ViT skips pair block i with depth-1-i
    head_size: int = 64           # K = V per head; RWKV-7's kernels are tuned for 64
    mlp_ratio: float = 4.0        # channel-mix hidden width / D (RWKV-7 uses 4)
    decay_lora: int = 64          # LoRA rank of the decay w (paper: 64)
    iclr_lora: int = 64           # LoRA rank of the in-context learning rate eta (paper: 64)
    value_lora: int = 16          # LoRA rank of the value-residual mix (paper: 16)
    gate_lora: int = 128          # LoRA rank of the output gate g (paper: 128)
    scan_orders: tuple[str, ...] = SCAN_ORDERS  # block i scans in scan_orders[i % len]
    init: str = "rwkv7"           # "rwkv7": RWKV-7's reference recipe; "xavier": the paper's (ablation)
    # text conditioning
    cross_mode: str = "prefix"    # text path: CrossWKV "paper" (eqs. 4-16), "prefix" or "state" (see
                                  # rwkv7.CrossWKV), or "attention" (softmax cross-attention, no state)
    text_encoder: str = "all-MiniLM-L6-v2"  # name or path loaded by dir7.TextEncoder
    text_dim: int = 384           # per-token width of that encoder (MiniLM 384, CLIP-L 768)
    max_text_len: int = 77        # prompts are truncated to this many tokens (CLIP's 77)
    prepend_eot: bool = False     # the paper's <|endoftext|>-first trick
    pooled_text: bool = False     # also add the prompt's mean text state to adaLN's conditioning (the global
                                  # path of SD3 / DiT-style models): every token sees the whole prompt with
                                  # no decay. Not in the paper, whose text enters through CrossWKV only
    # diffusion
    num_train_timesteps: int = 1000   # eq. 17's T
    beta_schedule: str = "squaredcos_cap_v2"  # diffusers name; cosine suits 64x64 pixels better than linear

    def __post_init__(self):
        self.scan_orders = tuple(self.scan_orders)  # JSON gives a list
        if self.dim % self.head_size:
            raise ValueError(f"dim ({self.dim}) must be a multiple of head_size ({self.head_size})")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if self.cross_mode not in CROSS_MODES:
            raise ValueError(f"cross_mode must be one of {CROSS_MODES}, got {self.cross_mode!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        bad = [o for o in self.scan_orders if o not in SCAN_ORDERS]
        if bad or not self.scan_orders:
            raise ValueError(f"scan_orders must be a non-empty tuple of {SCAN_ORDERS}, got {self.scan_orders}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")

    @property
    def n_heads(self) -> int:
        return self.dim // self.head_size

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_preset(cls, name: str, **overrides) -> DIR7Config:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict:
        d = {"model_type": self.model_type, **dataclasses.asdict(self)}
        d["scan_orders"] = list(self.scan_orders)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> DIR7Config:
        """Build from a saved dict; unknown keys are an error (a typo must not pass silently).
        Configs written before the sampling defaults moved out go through
        ``dir7.pipeline.split_legacy_config`` first."""
        return config_from_fields(cls, d, source)


def config_from_fields(cls, d: dict, source: str):
    """``cls(**d)`` for a saved config dict (its "model_type", if any, must be ``cls``'s); an
    unknown key is an error, so a typo in a config file never passes silently."""
    d = dict(d)
    model_type = d.pop("model_type", cls.model_type)
    if model_type != cls.model_type:
        raise ValueError(f"{source}: a {model_type!r} config, not a {cls.model_type!r} one")
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} field(s) {unknown}")
    return cls(**d)


PRESETS: dict[str, DIR7Config] = {
    # Diffusion-RWKV-S/2's shape, which the paper copies (D=384, depth 13, 6 heads, patch 2)
    "dir7-s": DIR7Config(dim=384, depth=13, head_size=64, patch_size=2),
    # Diffusion-RWKV-H/2's shape (D=1024, depth 37, 16 heads, patch 2)
    "dir7-h": DIR7Config(dim=1024, depth=37, head_size=64, patch_size=2, conv_channels=128),
    # small enough to sample a 64x64 image on two CPU cores in seconds
    "dir7-demo": DIR7Config(
        dim=192, depth=7, head_size=32, patch_size=4, conv_channels=32,
        decay_lora=32, iclr_lora=32, value_lora=16, gate_lora=64,
    ),
}


# ---------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps, as in DDPM / DiT. [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE / DiT), [grid * grid, dim], raster order."""
    def one_axis(d: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
        out = pos.double().reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    emb = torch.cat([one_axis(dim // 2, ys), one_axis(dim - dim // 2, xs)], dim=1)
    return emb.float()


def scan_permutation(order: str, grid: int) -> torch.Tensor:
    """Token indices (into raster order) in the order a block scans them."""
    idx = torch.arange(grid * grid).view(grid, grid)
    if order.startswith("col"):
        idx = idx.t()
    idx = idx.reshape(-1)
    return idx.flip(0) if order.endswith("reverse") else idx


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


# adaLN: LayerNorm(x) (no affine, this eps, in float32) * (1 + scale) + shift, out in the
# modulation's dtype (under autocast the layers after it run in bf16, see rwkv7.compute_dtype).
# dir7.ops.adaln_modulate runs it as one Triton pass each way on CUDA (kernels/triton_adaln.py).
NORM_EPS = 1e-6


# ---------------------------------------------------------------------------------------
# Block and model
# ---------------------------------------------------------------------------------------


class DIR7Block(nn.Module):
    """[time mixing, CrossWKV, channel mixing], each pre-normed, modulated and gated (adaLN-Zero)."""

    def __init__(self, cfg: DIR7Config, layer_id: int, long_skip: bool):
        super().__init__()
        D = cfg.dim
        self.skip_proj = nn.Linear(2 * D, D) if long_skip else None
        self.time_mix = TimeMix(cfg, layer_id, cfg.depth)
        self.cross = (CrossAttention if cfg.cross_mode == "attention" else CrossWKV)(cfg, layer_id, cfg.depth)
        self.channel_mix = ChannelMix(cfg, layer_id, cfg.depth)
        # shift, scale, gate for each of the three sub-layers; zero init = the block starts as identity
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(D, 9 * D))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, c, text, text_mask, v_first_self, v_first_cross, skip=None, output_state=False):
        """x [B, T, D] in this block's scan order; c [B, D]; returns (x, v_firsts, cross_state)."""
        if self.skip_proj is not None:
            x = self.skip_proj(torch.cat([x, skip], dim=-1))
        mods = self.ada(c).chunk(9, dim=-1)
        shift1, scale1, gate1, shift2, scale2, gate2, shift3, scale3, gate3 = mods

        # each sub-layer's output enters the residual stream through its adaLN-Zero gate
        h, v_first_self, _ = self.time_mix(adaln_modulate(x, shift1, scale1, NORM_EPS), v_first_self)
        x = torch.addcmul(x, gate1[:, None], h)
        h, v_first_cross, state = self.cross(
            adaln_modulate(x, shift2, scale2, NORM_EPS), text, text_mask, v_first_cross, output_final_state=output_state
        )
        x = torch.addcmul(x, gate2[:, None], h)
        x = torch.addcmul(x, gate3[:, None], self.channel_mix(adaln_modulate(x, shift3, scale3, NORM_EPS)))
        return x, v_first_self, v_first_cross, state


class DIR7Model(nn.Module):
    """Epsilon-prediction network: ``model(x_t, t, text_states, text_mask) -> eps``."""

    def __init__(self, cfg: DIR7Config):
        super().__init__()
        self.config = cfg
        D, p, C = cfg.dim, cfg.patch_size, cfg.conv_channels
        grid = cfg.image_size // p
        self.grid = grid

        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, C, 3, padding=1), nn.SiLU())
        self.patchify = nn.Conv2d(C, D, kernel_size=p, stride=p)
        self.t_embed = TimestepEmbedder(D)
        self.text_norm = nn.LayerNorm(cfg.text_dim)
        # optional global text path into adaLN; its last layer starts at zero, so switching it on
        # in a warm start leaves the source model's function unchanged (see dir7.train.GROWABLE)
        self.text_pool = (
            nn.Sequential(nn.Linear(cfg.text_dim, D), nn.SiLU(), nn.Linear(D, D)) if cfg.pooled_text else None
        )

        # U-ViT: blocks [0, n_skip) feed skips to blocks (depth - n_skip, depth] in reverse
        self.n_skip = cfg.depth // 2
        self.blocks = nn.ModuleList(
            DIR7Block(cfg, i, long_skip=i >= cfg.depth - self.n_skip) for i in range(cfg.depth)
        )

        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.unpatch = nn.Linear(D, p * p * C)
        self.decoder = nn.Sequential(nn.SiLU(), nn.Conv2d(C, cfg.in_channels, 3, padding=1))

        # derived, not learned: kept out of checkpoints
        self.register_buffer("pos_embed", sincos_pos_embed_2d(D, grid)[None], persistent=False)
        perms = torch.stack([scan_permutation(o, grid) for o in cfg.scan_orders])   # [n_orders, T]
        inv = torch.argsort(perms, dim=1)
        self.register_buffer("scan_perm", perms, persistent=False)
        self.register_buffer("scan_inv", inv, persistent=False)
        # scan_move[a, b]: tokens in order a -> order b (index n_orders: raster order)
        n, raster = perms.shape[0], torch.arange(grid * grid)
        into = torch.cat([perms, raster[None]])                       # [n + 1, T]: order -> raster
        out_of = torch.cat([inv, raster[None]])                       # [n + 1, T]: raster -> order
        self.register_buffer("scan_move", out_of[:, None, :].expand(-1, n + 1, -1).gather(
            2, into[None].expand(n + 1, -1, -1)), persistent=False)  # [n + 1, n + 1, T]
        self._init_outer()

    @torch.no_grad()
    def _init_outer(self) -> None:
        if self.unpatch.weight.is_meta:
            return
        nn.init.zeros_(self.final_ada[1].weight)
        nn.init.zeros_(self.final_ada[1].bias)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        if self.text_pool is not None:
            nn.init.zeros_(self.text_pool[2].weight)
            nn.init.zeros_(self.text_pool[2].bias)
        # the output starts at exactly zero (eps-MSE starts at 1); the conv gets gradient from step one
        nn.init.zeros_(self.decoder[1].weight)
        nn.init.zeros_(self.decoder[1].bias)

    def _move(self, x: torch.Tensor, source: int, target: int, prefix: int = 0) -> torch.Tensor:
        """Tokens ``x [B, prefix + T, D]`` from scan order ``source`` into ``target`` (index
        ``n_orders`` is raster order); the first ``prefix`` positions (text) keep their place."""
        if source == target:
            return x
        move = self.scan_move[source, target]
        if not prefix:
            return x[:, move]
        return torch.cat([x[:, :prefix], x[:, prefix:][:, move]], dim=1)

    @property
    def has_state(self) -> bool:
        """Whether the text path has a recurrent state (every mode but "attention")."""
        return self.config.cross_mode != "attention"

    @property
    def cross_layers(self) -> int:
        return len(self.blocks)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        return_states: bool = False,
    ):
        """x [B, C, S, S] noisy image, t [B] (or scalar) timestep, text_states [B, L, Dq],
        text_mask [B, L] (True = real token). Returns eps [B, C, S, S], and with
        ``return_states`` also the final CrossWKV state of every block, [B, H, K, K] each."""
        cfg = self.config
        B, C_in, S, S2 = x.shape
        if (C_in, S, S2) != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"expected images [B, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}], got {tuple(x.shape)}"
            )
        if text_states.dim() != 3 or text_states.shape[0] != B or text_states.shape[-1] != cfg.text_dim:
            raise ValueError(f"expected text_states [{B}, L, {cfg.text_dim}], got {tuple(text_states.shape)}")
        if return_states and not self.has_state:
            raise ValueError("cross_mode='attention' has no recurrent state to return (check model.has_state)")
        if text_mask is None:
            text_mask = torch.ones(text_states.shape[:2], dtype=torch.bool, device=x.device)
        t = torch.as_tensor(t, device=x.device).float().expand(B) if not torch.is_tensor(t) or t.dim() == 0 else t

        c = self.t_embed(t)                                           # [B, D]
        h0 = self.stem(x)                                             # [B, C, S, S]
        tok = self.patchify(h0).flatten(2).transpose(1, 2)            # [B, T, D], raster order
        tok = tok + self.pos_embed.to(tok.dtype)
        text = self.text_norm(text_states)
        text_mask = text_mask.bool()
        if self.text_pool is not None:
            # mean over real tokens only, so padding never changes the output
            keep = text_mask.to(text.dtype)[..., None]                # [B, L, 1]
            pooled = (text * keep).sum(1) / keep.sum(1).clamp_min(1)  # [B, Dq]
            c = c + self.text_pool(pooled)                            # [B, D]

        # Tokens stay in the scan order of the block that last ran: moving to the next block's order
        # is one gather (scan_move), not one back to raster order and another out of it. Block 0's
        # values (v_first, self and cross) and the U-ViT skips keep the order they were made in and
        # are moved into a block's order when it needs them (v_first once per order).
        n_orders = self.scan_perm.shape[0]
        order = n_orders                                              # raster order
        v0 = v0_order = None                                          # (v_first self, cross), its order
        v_first: dict[int, tuple] = {}                                # v0 moved into each order used
        skips, states = [], []
        for i, block in enumerate(self.blocks):
            tok, order = self._move(tok, order, i % n_orders), i % n_orders
            skip = None
            if block.skip_proj is not None:
                skip, skip_order = skips.pop()
                skip = self._move(skip, skip_order, order)
            vs = vc = None
            if v0 is not None:
                if order not in v_first:
                    vc = v0[1]
                    if vc is not None and block.cross.v_first_has_image:  # a text prefix may come first
                        vc = self._move(vc, v0_order, order, prefix=vc.shape[1] - tok.shape[1])
                    v_first[order] = (self._move(v0[0], v0_order, order), vc)
                vs, vc = v_first[order]
            tok, vs, vc, state = block(tok, c, text, text_mask, vs, vc, skip, return_states)
            if i == 0:
                v0, v0_order = (vs, vc), order
                v_first[order] = v0
            if i < self.n_skip:
                skips.append((tok, order))
            states.append(state)
        tok = self._move(tok, order, n_orders)                        # back to raster order

        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        tok = self.unpatch(adaln_modulate(tok, shift, scale, NORM_EPS))  # [B, T, p*p*C]
        p, g = cfg.patch_size, self.grid
        h = tok.view(B, g, g, p, p, -1).permute(0, 5, 1, 3, 2, 4).reshape(B, -1, S, S)  # unpatchify
        eps = self.decoder(h + h0)                                    # pixel-level skip from the stem
        return (eps, states) if return_states else eps

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------------------
# Growing a trained model deeper
# ---------------------------------------------------------------------------------------


def grown_layout(depth: int, extra: int) -> list[int | None]:
    """Where each block of a model grown from ``depth`` to ``depth + extra`` blocks comes from:
    its index in the old model, or None for a new block.

    Half the new blocks go after the old skip sources, half after the old middle, so that the
    U-ViT skips pair every old block with its old partner and the new blocks with each other
    (depth 7 + 4: [0, 1, 2, new, new, 3, new, new, 4, 5, 6])."""
    if extra < 2 or extra % 2:
        raise ValueError(f"a model grows by an even number (>= 2) of blocks, to keep its U-ViT skips paired; "
                         f"got {extra}")
    if depth < 2:
        # block 0 makes the value-residual v_first that every later block mixes in, so it must
        # stay first; with one block the new ones would have to go before it
        raise ValueError(f"only a model of depth >= 2 can grow (its first block stays first); got depth {depth}")
    n_skip, half = depth // 2, extra // 2
    return [*range(n_skip), *[None] * half, *range(n_skip, depth - n_skip), *[None] * half,
            *range(depth - n_skip, depth)]


def grown_config(cfg: DIR7Config, extra: int) -> DIR7Config:
    """``cfg`` with ``extra`` more blocks. Every old block keeps its scan order (``scan_orders``
    becomes one entry per block); a new block takes the order of its position in the old cycle."""
    n = len(cfg.scan_orders)
    orders = [cfg.scan_orders[(pos if old is None else old) % n]
              for pos, old in enumerate(grown_layout(cfg.depth, extra))]
    return dataclasses.replace(cfg, depth=cfg.depth + extra, scan_orders=tuple(orders))


@torch.no_grad()
def grow_into(source: DIR7Model, target: DIR7Model) -> None:
    """Copy a trained ``source`` into ``target``, built from ``grown_config(source.config, extra)``,
    so that ``target`` computes exactly what ``source`` does.

    The new blocks keep ``target``'s fresh initialisation, which is already the identity for
    the residual stream (adaLN-Zero gates start at zero), except that a new block taking a U-ViT
    skip must pass x through its skip projection unchanged: its projection becomes [I | 0].
    Training then starts from the source's function with more capacity (a warm start with
    ``python -m dir7.train --init-from ... --grow-depth extra``)."""
    extra = target.config.depth - source.config.depth
    expected = grown_config(source.config, extra).to_dict()
    theirs = target.config.to_dict()
    differ = sorted(k for k in expected if expected[k] != theirs[k])
    if differ:
        raise ValueError(f"target model is not the source grown by {extra} blocks: it differs in {differ}")
    layout = grown_layout(source.config.depth, extra)
    position = {old: pos for pos, old in enumerate(layout) if old is not None}
    state = target.state_dict()
    for name, tensor in source.state_dict().items():
        if name.startswith("blocks."):
            _, index, rest = name.split(".", 2)
            name = f"blocks.{position[int(index)]}.{rest}"
        state[name] = tensor
    D = source.config.dim
    for pos, old in enumerate(layout):
        proj = target.blocks[pos].skip_proj
        if old is None and proj is not None:
            identity = torch.zeros_like(proj.weight)                  # [D, 2D]: [x, skip] -> x
            identity[:, :D] = torch.eye(D, dtype=identity.dtype, device=identity.device)
            state[f"blocks.{pos}.skip_proj.weight"] = identity
            state[f"blocks.{pos}.skip_proj.bias"] = torch.zeros_like(proj.bias)
    target.load_state_dict(state)


def count_parameters_by_part(model: DIR7Model) -> dict[str, int]:
    """Parameter counts grouped the way the README reports them."""
    parts = {"time_mix": 0, "cross_wkv": 0, "channel_mix": 0, "adaLN": 0, "skips": 0, "stem_decoder_embed": 0}
    for name, p in model.named_parameters():
        n = p.numel()
        if ".time_mix." in name:
            parts["time_mix"] += n
        elif ".cross." in name:
            parts["cross_wkv"] += n
        elif ".channel_mix." in name:
            parts["channel_mix"] += n
        elif ".ada." in name:
            parts["adaLN"] += n
        elif ".skip_proj." in name:
            parts["skips"] += n
        else:
            parts["stem_decoder_embed"] += n
    parts["total"] = sum(parts.values())
    return parts


__all__ = ["PRESETS", "DIR7Block", "DIR7Config", "DIR7Model", "count_parameters_by_part", "grow_into",
           "grown_config", "grown_layout"]
