"""The model families a DIR-7 model directory can hold, named by ``config.json``'s "model_type".

    "dir7"  DIR7Config -> DIR7Model   the RWKV-7 backbone (every CrossWKV mode, and "attention")
    "dit"   DiTConfig  -> DiTModel    the DiT baseline (diffusers' PixArt blocks)

Both take ``model(x_t, t, text_states, text_mask) -> eps`` and carry the same text-encoder and
noise-schedule fields, so training, evaluation and sampling treat them alike. A config without
"model_type" (written before the DiT existed) is a DIR-7 one.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from .dit import DIT_PRESETS, DiTConfig, DiTModel
from .model import PRESETS, DIR7Config, DIR7Model

ARCHITECTURES = {"dir7": (DIR7Config, DIR7Model), "dit": (DiTConfig, DiTModel)}
ModelConfig = DIR7Config | DiTConfig
ALL_PRESETS: dict[str, ModelConfig] = {**PRESETS, **DIT_PRESETS}


def config_from_dict(d: dict, source: str = "config") -> ModelConfig:
    model_type = d.get("model_type", "dir7")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{source}: unknown model_type {model_type!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[model_type][0].from_dict(d, source)


def config_from_preset(name: str, **overrides) -> ModelConfig:
    if name not in ALL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(ALL_PRESETS)}")
    return dataclasses.replace(ALL_PRESETS[name], **overrides)


def build_model(cfg: ModelConfig) -> nn.Module:
    return ARCHITECTURES[cfg.model_type][1](cfg)


__all__ = ["ALL_PRESETS", "ARCHITECTURES", "build_model", "config_from_dict", "config_from_preset"]
