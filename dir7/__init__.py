"""DIR-7: text-to-image diffusion on RWKV-7, conditioned on text through CrossWKV.

Public API (everything the app and notebooks use):
    DIR7Config, DIR7Model, PRESETS                       the network and its presets
    TimeMix, CrossWKV, ChannelMix, LoRA                  RWKV-7 layers
    TextEncoder                                          frozen per-token text encoder
    DIR7Pipeline, DIR7PipelineOutput, StepOutput         sampling (diffusers schedulers)
    PipelineConfig, PIPELINE_PRESETS                     a model's sampling defaults
    diffusion_loss, drop_captions, make_scheduler        training objective
    state_rms, stable_rank, StateStats                   state statistics
    wkv7                                                 the WKV recurrence (dispatching)
    keep_freed_memory                                    a CPU application's malloc setting (the demo's)
"""

from .checkpoint import CheckpointError
from .diffusion import SAMPLERS, diffusion_loss, drop_captions, make_scheduler, predicted_x0
from .model import PRESETS, DIR7Config, DIR7Model, count_parameters_by_part
from .ops import wkv7, wkv7_chunked, wkv7_naive
from .pipeline import (
    MAX_GUIDANCE,
    MAX_SEED,
    PIPELINE_PRESETS,
    DIR7Pipeline,
    DIR7PipelineOutput,
    PipelineConfig,
    StepOutput,
    default_checkpoint,
    format_guidance_interval,
    image_grid,
    load_configs,
    parse_guidance_interval,
)
from .runtime import keep_freed_memory
from .rwkv7 import ChannelMix, CrossWKV, LoRA, TimeMix
from .stats import StateStats, layer_head_stats, stable_rank, state_rms
from .text_encoder import DEFAULT_TEXT_ENCODER, TextEncoder

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "MAX_GUIDANCE",
    "MAX_SEED",
    "PIPELINE_PRESETS",
    "PRESETS",
    "SAMPLERS",
    "ChannelMix",
    "CheckpointError",
    "CrossWKV",
    "DIR7Config",
    "DIR7Model",
    "DIR7Pipeline",
    "DIR7PipelineOutput",
    "LoRA",
    "PipelineConfig",
    "StateStats",
    "StepOutput",
    "TextEncoder",
    "TimeMix",
    "count_parameters_by_part",
    "default_checkpoint",
    "diffusion_loss",
    "drop_captions",
    "format_guidance_interval",
    "image_grid",
    "keep_freed_memory",
    "layer_head_stats",
    "load_configs",
    "make_scheduler",
    "parse_guidance_interval",
    "predicted_x0",
    "stable_rank",
    "state_rms",
    "wkv7",
    "wkv7_chunked",
    "wkv7_naive",
]
