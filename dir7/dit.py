"""A DiT with self- and cross-attention, the baseline DIR-7 is measured against.

The network is diffusers' ``PixArtTransformer2DModel`` (DiT blocks with cross-attention to the
text and adaLN-single timestep conditioning), not a reimplementation, behind DIR-7's model
interface: ``model(x_t, t, text_states, text_mask) -> eps``, pixels in and out, the same text
encoder and noise schedule fields as ``DIR7Config``, so the sampling pipeline runs it unchanged.
It has no recurrent state: ``return_states`` is refused, and ``has_state`` tells callers so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .model import config_from_fields


@dataclass
class DiTConfig:
    """The architecture of the DiT baseline (PixArt-style blocks) and its noise schedule."""

    model_type: ClassVar[str] = "dit"  # config.json's "model_type" (dir7.architectures)

    image_size: int = 64          # pixels per side (pixel space, like DIR-7)
    in_channels: int = 3          # RGB in, RGB epsilon out
    patch_size: int = 2           # tokens are patch x patch pixels: T = (image_size / patch_size)^2
    heads: int = 6                # attention heads
    head_dim: int = 64            # width per head; the model's width is heads * head_dim
    depth: int = 24               # transformer blocks (DiT-S/2 has 12 without cross-attention;
                                  # 24 matches dir7-s's parameter count)
    # text conditioning: the same fields and meaning as DIR7Config's
    text_encoder: str = "all-MiniLM-L6-v2"
    text_dim: int = 384
    max_text_len: int = 77
    prepend_eot: bool = False
    # diffusion
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if min(self.heads, self.head_dim, self.depth) < 1:
            raise ValueError("heads, head_dim and depth must be >= 1")

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_preset(cls, name: str, **overrides) -> DiTConfig:
        if name not in DIT_PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}; choose one of {sorted(DIT_PRESETS)}")
        return dataclasses.replace(DIT_PRESETS[name], **overrides)

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> DiTConfig:
        return config_from_fields(cls, d, source)


DIT_PRESETS: dict[str, DiTConfig] = {
    # DiT-S/2 widths with cross-attention, as deep as dir7-s is large (58.2M against 58.0M)
    "dit-s": DiTConfig(),
    # the shipped shapes model's size class: 64x64 pixels, patch 4, width 192 (12.9M against 13.0M)
    "dit-shapes": DiTConfig(patch_size=4, heads=6, head_dim=32, depth=21),
}


class DiTModel(nn.Module):
    """Epsilon-prediction DiT: ``model(x_t, t, text_states, text_mask) -> eps``."""

    has_state = False  # no recurrent state: the pipeline's state statistics do not apply

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        from diffusers import PixArtTransformer2DModel  # imported here: diffusers is slow to import

        self.config = cfg
        self.net = PixArtTransformer2DModel(
            num_attention_heads=cfg.heads, attention_head_dim=cfg.head_dim, in_channels=cfg.in_channels,
            out_channels=cfg.in_channels, num_layers=cfg.depth, cross_attention_dim=cfg.dim,
            caption_channels=cfg.text_dim, sample_size=cfg.image_size, patch_size=cfg.patch_size,
            norm_type="ada_norm_single", use_additional_conditions=False,
            num_embeds_ada_norm=cfg.num_train_timesteps,
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DiT's and PixArt's initialisation (diffusers' modules keep PyTorch's defaults): Xavier-
        uniform linear layers with zero biases, the timestep MLP and the caption projection at
        N(0, 0.02), the patch embedding like a linear layer, and zero for the adaLN-single
        modulation and the output projection, so the model starts as the zero function and each
        block's modulation starts from its learnt table alone."""
        net = self.net
        if net.proj_out.weight.is_meta:
            return
        for module in net.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        proj = net.pos_embed.proj  # a conv over patches: Xavier on its flattened kernel
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        for lin in (net.adaln_single.emb.timestep_embedder.linear_1, net.adaln_single.emb.timestep_embedder.linear_2,
                    net.caption_projection.linear_1, net.caption_projection.linear_2):
            nn.init.normal_(lin.weight, std=0.02)
        nn.init.zeros_(net.adaln_single.linear.weight)
        nn.init.zeros_(net.adaln_single.linear.bias)
        nn.init.zeros_(net.proj_out.weight)  # the blocks' scale_shift_tables keep diffusers' randn / sqrt(D)
        nn.init.zeros_(net.proj_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, text_states: torch.Tensor,
                text_mask: torch.Tensor | None = None, return_states: bool = False) -> torch.Tensor:
        if return_states:
            raise ValueError("a DiT has no recurrent state to return (state statistics apply to DIR-7 only)")
        B = x.shape[0]
        t = torch.as_tensor(t, device=x.device).float().expand(B) if not torch.is_tensor(t) or t.dim() == 0 else t
        mask = None if text_mask is None else text_mask.to(x.dtype)
        return self.net(x, encoder_hidden_states=text_states, timestep=t, encoder_attention_mask=mask,
                        return_dict=False)[0]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["DIT_PRESETS", "DiTConfig", "DiTModel"]
