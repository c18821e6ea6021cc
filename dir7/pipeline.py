"""Text -> image sampling with a DIR-7 model: ``DIR7Pipeline`` and its ``PipelineConfig``.

    pipe = DIR7Pipeline.from_pretrained("checkpoints/dir7-shapes")
    out = pipe("a red circle", seed=0)               # the model's own sampling defaults
    out.images[0].save("red_circle.png"); out.state_stats.rms  # [steps, B, layers, heads]

``steps(...)`` is the same sampling loop as a generator (one event per denoising step),
for callers that stream, such as the demo app.

A model directory holds ``config.json`` (the network: ``DIR7Config``, or ``DiTConfig`` for the
DiT baseline; see ``dir7.architectures``), ``pipeline_config.json``
(how to sample with it: ``PipelineConfig``), the sharded weights and a model card
(``README.md``); the app, the evaluator and the training sample grid all sample with the
``PipelineConfig`` found there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .architectures import ModelConfig, build_model, config_from_dict
from .checkpoint import CONFIG_NAME, CheckpointError, atomic_directory_write, load_into, save_state_dict
from .diffusion import SAMPLERS, make_scheduler, predicted_x0, step_kwargs
from .model import DIR7Model
from .stats import StateStats, layer_head_stats
from .text_encoder import TextEncoder
from .vocabulary import VOCABULARY_NAME, load_vocabulary, save_vocabulary, unknown_words

PIPELINE_CONFIG_NAME = "pipeline_config.json"
CARD_NAME = "README.md"
# a source checkout carries the shipped model beside the package; an installed package does not
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "dir7-shapes"
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 20.0
MAX_IMAGES_PER_PROMPT = 16


# ---------------------------------------------------------------------------------------
# Guidance interval
# ---------------------------------------------------------------------------------------


def check_guidance_interval(interval, num_train_timesteps: int | None = None) -> tuple[int, int]:
    """``(lo, hi)``: whole timesteps with ``0 <= lo <= hi`` (``< num_train_timesteps`` when given),
    as a tuple; else ValueError."""
    top = math.inf if num_train_timesteps is None else num_train_timesteps
    if (not isinstance(interval, list | tuple) or len(interval) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in interval)
            or not 0 <= interval[0] <= interval[1] < top):
        upto = "" if num_train_timesteps is None else f" from 0 to {num_train_timesteps - 1}"
        raise ValueError(f"The guidance interval must be two whole timesteps lo <= hi{upto}, got {interval!r}.")
    return int(interval[0]), int(interval[1])


def check_steps(steps, max_steps: int | None = None) -> None:
    top = math.inf if max_steps is None else max_steps
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= top:
        upto = "" if max_steps is None else f" to {max_steps}"
        raise ValueError(f"Steps must be a whole number from 1{upto}, got {steps!r}.")


def check_guidance_scale(scale) -> None:
    if (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
            or not math.isfinite(scale) or not 0 <= scale <= MAX_GUIDANCE):
        raise ValueError(f"Guidance scale must be a number from 0 to {MAX_GUIDANCE:g}, got {scale!r}.")


def check_sampler(sampler) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")


def parse_guidance_interval(text: str) -> tuple[int, int] | str:
    """A guidance interval's text form (command lines, the demo's PNG text): ``"all"`` for every
    step, or ``"LO,HI"`` -> ``(LO, HI)``. Only the form is checked here; the range is the model's
    (``check_guidance_interval``)."""
    if text == "all":
        return text
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"expected LO,HI (two whole timesteps) or 'all', got {text!r}") from None
    return lo, hi


def format_guidance_interval(interval: tuple[int, int] | None) -> str:
    """The inverse of :func:`parse_guidance_interval`; None (every step) is ``"all"``."""
    return "all" if interval is None else f"{int(interval[0])},{int(interval[1])}"


# ---------------------------------------------------------------------------------------
# Sampling defaults of a model
# ---------------------------------------------------------------------------------------


@dataclass
class PipelineConfig:
    """How to sample with one model: the defaults of ``DIR7Pipeline`` for it, saved beside its
    weights as ``pipeline_config.json``. The one source of the app's, the evaluator's and the
    training sample grid's settings (an argument given to the pipeline still wins)."""

    sampler: str = "dpm++"            # DPM-Solver++ 2M, second order: on the shapes model it scores like DDIM
                                      # at 25 steps (docs/experiments.md); "ddim" and "ddpm" are the paper's
    num_inference_steps: int = 25     # 15 / 25 / 50 dpm++ steps: ShapesEval 0.660 / 0.670 / 0.672 (shapes model)
    guidance_scale: float = 2.5       # classifier-free guidance; on ShapesEval 2.5 beat 1.5 and tied 4-9
    guidance_interval: tuple[int, int] | None = None  # guide only at timesteps lo..hi (Kynkaanniemi et al.
                                      # 2024), None = every step; outside it one conditional pass per step

    def __post_init__(self):
        check_sampler(self.sampler)
        check_steps(self.num_inference_steps)  # the upper end is the model's to check (check_inputs)
        check_guidance_scale(self.guidance_scale)
        if self.guidance_interval is not None:  # JSON gives a list; the upper end is the model's to check
            self.guidance_interval = check_guidance_interval(self.guidance_interval)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> PipelineConfig:
        if name not in PIPELINE_PRESETS:
            raise ValueError(f"unknown pipeline preset {name!r}; choose one of {sorted(PIPELINE_PRESETS)}")
        return dataclasses.replace(PIPELINE_PRESETS[name], **overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.guidance_interval is not None:
            d["guidance_interval"] = list(self.guidance_interval)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "pipeline config") -> PipelineConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown PipelineConfig field(s) {unknown}")
        return cls(**d)


PIPELINE_PRESETS: dict[str, PipelineConfig] = {
    # the default: a fast second-order solver, every step guided
    "dpm++-25": PipelineConfig(),
    # the paper's sampler and step count
    "ddim-50": PipelineConfig(sampler="ddim", num_inference_steps=50),
    # the paper's evaluation setting: ancestral DDPM, 250 steps
    "ddpm-250": PipelineConfig(sampler="ddpm", num_inference_steps=250),
}


# Keys that config.json held before the sampling defaults got a file of their own: the
# sampling defaults move to the PipelineConfig, the rest (a training hyperparameter and
# free-form provenance) are no longer a model's business and are dropped.
LEGACY_SAMPLING_KEYS = {"default_sampler": "sampler", "default_steps": "num_inference_steps",
                        "default_guidance": "guidance_scale", "default_guidance_interval": "guidance_interval"}
LEGACY_DROPPED_KEYS = ("text_dropout", "notes")


def split_legacy_config(saved: dict) -> tuple[dict, dict]:
    """A saved ``config.json`` -> (model config fields, sampling defaults it carried)."""
    model = {k: v for k, v in saved.items() if k not in LEGACY_SAMPLING_KEYS and k not in LEGACY_DROPPED_KEYS}
    sampling = {LEGACY_SAMPLING_KEYS[k]: v for k, v in saved.items() if k in LEGACY_SAMPLING_KEYS}
    return model, sampling


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def load_configs(directory: str | os.PathLike) -> tuple[ModelConfig, PipelineConfig]:
    """The model config and sampling defaults of a model directory. Reads ``config.json`` in the
    current layout and in the one before ``pipeline_config.json`` existed (its ``default_*`` keys
    become the sampling defaults); a ``pipeline_config.json`` wins over them."""
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"no DIR-7 model at {directory} ({CONFIG_NAME} missing)")
    model_fields, sampling = split_legacy_config(_read_json(config_path))
    pipeline_path = directory / PIPELINE_CONFIG_NAME
    if pipeline_path.is_file():
        sampling = _read_json(pipeline_path)
    try:
        cfg = config_from_dict(model_fields, source=str(config_path))
        pipeline_cfg = PipelineConfig.from_dict(sampling, source=str(pipeline_path))
        if pipeline_cfg.guidance_interval is not None:
            check_guidance_interval(pipeline_cfg.guidance_interval, cfg.num_train_timesteps)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{directory}: invalid config: {e}") from e
    return cfg, pipeline_cfg


def save_configs(directory: Path, cfg: ModelConfig, pipeline_cfg: PipelineConfig) -> None:
    (directory / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (directory / PIPELINE_CONFIG_NAME).write_text(json.dumps(pipeline_cfg.to_dict(), indent=2) + "\n")


def read_model_card(directory: str | os.PathLike) -> dict:
    """The front matter of a model directory's card (``README.md``), {} without one."""
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard  # the Hub's own card parser (YAML front matter)

    return ModelCard.load(path).data.to_dict()


def load_model(directory: str | os.PathLike) -> tuple[torch.nn.Module, PipelineConfig]:
    """A model directory's network with its weights, and its sampling defaults (no text encoder)."""
    cfg, pipeline_cfg = load_configs(directory)
    model = build_model(cfg)
    load_into(model, Path(directory))
    return model, pipeline_cfg


def default_checkpoint() -> Path:
    """``$DIR7_CHECKPOINT`` if set, else the shipped model of a source checkout.

    Raises FileNotFoundError with what to do when neither exists (an installed package does
    not carry the shipped weights)."""
    if os.environ.get("DIR7_CHECKPOINT"):
        return Path(os.environ["DIR7_CHECKPOINT"])
    if (SHIPPED_CHECKPOINT / CONFIG_NAME).is_file():
        return SHIPPED_CHECKPOINT
    raise FileNotFoundError(
        "no model given: pass a model directory, e.g. DIR7Pipeline.from_pretrained('path/to/dir7-shapes'), "
        "or set DIR7_CHECKPOINT to one (the shipped models are in the checkpoints/ folder of the "
        "DIR-7 repository; an installed package does not carry them)"
    )


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """``[B, 3, S, S]`` in [-1, 1] -> PIL images."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(np.ascontiguousarray(a.permute(1, 2, 0).cpu().numpy())) for a in arr]


def image_grid(images: list[Image.Image], cols: int, scale: int = 1) -> Image.Image:
    """Tile equally sized images row by row, optionally enlarged (nearest neighbour)."""
    w, h = images[0].size
    rows = -(-len(images) // cols)
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    return grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST) if scale > 1 else grid


@dataclass
class StepOutput:
    """One denoising step, as streamed by :meth:`DIR7Pipeline.steps`."""

    step: int                       # 0-based index of the step just done
    total: int                      # number of steps
    timestep: int                   # diffusion timestep of this step
    preview: list[Image.Image]      # the model's x0 prediction, one per image
    state_rms: torch.Tensor         # [B, cross layers, heads], conditional branch
    stable_rank: torch.Tensor       # [B, cross layers, heads]
    seed: int                       # the seed used (drawn at random when None was asked)
    images: list[Image.Image] | None = None  # the final images, on the last step only


@dataclass
class DIR7PipelineOutput:
    images: list[Image.Image]
    state_stats: StateStats
    seed: int


class DIR7Pipeline:
    SAMPLERS = SAMPLERS

    def __init__(self, model: DIR7Model, text_encoder: TextEncoder, config: PipelineConfig | None = None,
                 name: str = "untrained", trained: bool = False, card: dict | None = None,
                 vocabulary: frozenset[str] | None = None):
        if text_encoder.dim != model.config.text_dim:
            raise ValueError(
                f"text encoder {text_encoder.name!r} gives {text_encoder.dim}-d states, "
                f"the model expects text_dim={model.config.text_dim}"
            )
        self.model = model.eval()
        self.text_encoder = text_encoder
        self.config = config if config is not None else PipelineConfig()
        if self.config.guidance_interval is not None:
            check_guidance_interval(self.config.guidance_interval, model.config.num_train_timesteps)
        self.name = name
        self.trained = trained
        self.card = dict(card or {})  # the model card's front matter (licence, summary, example prompts)
        self.vocabulary = vocabulary  # the words of the training captions (None: not known)
        self._compiled = None  # the network under torch.compile (see compile()), used when no states are asked for

    # ---- construction, saving ---------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: ModelConfig, text_encoder: TextEncoder | None = None,
                    config: PipelineConfig | None = None) -> DIR7Pipeline:
        """A randomly initialised model (clearly ``trained=False``)."""
        enc = text_encoder or TextEncoder.from_pretrained(cfg.text_encoder, cfg.max_text_len, cfg.prepend_eot)
        return cls(build_model(cfg), enc, config, name="untrained", trained=False)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, text_encoder: TextEncoder | None = None
    ) -> DIR7Pipeline:
        """Load a model directory (``config.json``, ``pipeline_config.json``, sharded safetensors,
        optionally a model card). ``path=None``: ``$DIR7_CHECKPOINT``, else the shipped model of a
        source checkout."""
        path = Path(path) if path is not None else default_checkpoint()
        model, pipeline_cfg = load_model(path)
        cfg = model.config
        enc = text_encoder or TextEncoder.from_pretrained(cfg.text_encoder, cfg.max_text_len, cfg.prepend_eot)
        return cls(model, enc, pipeline_cfg, name=path.name, trained=True, card=read_model_card(path),
                   vocabulary=load_vocabulary(path / VOCABULARY_NAME))

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json``, ``pipeline_config.json``, the model's weights and (when known) its
        training vocabulary; the frozen text encoder is not copied, a model card is written by hand."""
        cfg, state = self.model.config, self.model.state_dict()

        def write(tmp: Path) -> None:
            save_configs(tmp, cfg, self.config)
            save_state_dict(state, tmp)
            if self.vocabulary is not None:
                save_vocabulary(tmp / VOCABULARY_NAME, self.vocabulary)

        return atomic_directory_write(path, write)

    def warm_up(self) -> None:
        """One tiny sampling step, so that what compiles on first use (the CPU's Numba loops, the
        Triton kernels) compiles now and not in the first request. Compiled code is cached on disk:
        the first start on a machine takes about a minute on a CPU, later ones a second."""
        self("warm up", num_inference_steps=1, guidance_scale=2.0, seed=0)

    def compile(self, mode: str | None = None) -> DIR7Pipeline:
        """Sample with the network under ``torch.compile``: fewer, fused kernels and, with
        ``mode="reduce-overhead"``, CUDA graphs that remove the launch overhead of each step.

        Applies to sampling without state statistics (``stats=False``, as the evaluator samples);
        the demo's live plots read the states, so those calls stay eager. The first call of each
        batch size compiles (minutes on a GPU); later ones reuse it. Images match the eager ones to
        rounding, not bit for bit (fused kernels reorder floating-point sums)."""
        self._compiled = torch.compile(self.model, mode=mode)
        return self

    def to(self, device: str | torch.device) -> DIR7Pipeline:
        self.model.to(device)
        self.text_encoder.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def unknown_words(self, prompt: str) -> list[str]:
        """The prompt's words that no training caption of this model contained ([] when the
        vocabulary is not known): what the model will draw something for without having learnt it."""
        return [] if self.vocabulary is None else unknown_words(prompt, self.vocabulary)

    @property
    def has_state(self) -> bool:
        """Whether the model has a recurrent (CrossWKV) state whose statistics can be shown."""
        return getattr(self.model, "has_state", True)

    @property
    def info(self) -> dict:
        """What a page or a report says about the model (the app's banner, the evaluator's JSON)."""
        cfg = self.model.config
        return {
            "name": self.name, "trained": self.trained, "params": self.model.num_parameters(),
            "cross_mode": getattr(cfg, "cross_mode", None), "image_size": cfg.image_size,
            "text_encoder": cfg.text_encoder, "summary": str(self.card.get("summary", "")),
            "sampling": self.config.to_dict(), "has_state": self.has_state,
            "examples": [str(w["text"]) for w in self.card.get("widget", []) if isinstance(w, dict) and "text" in w],
            "vocabulary_size": None if self.vocabulary is None else len(self.vocabulary),
        }

    # ---- input checking ---------------------------------------------------------------

    def check_inputs(
        self, prompt, negative_prompt=None, num_inference_steps=None, guidance_scale=None, seed=0,
        sampler=None, num_images_per_prompt: int = 1, guidance_interval=None,
    ) -> None:
        """Raise ``ValueError`` with a message meant for a person, for anything we cannot sample."""
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list | tuple) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("The prompt must be a string or a non-empty list of strings.")
        if any(not p.strip() for p in prompts):
            raise ValueError("Please enter a prompt: it is empty.")
        if negative_prompt is not None:
            negs = [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
            if not isinstance(negs, list | tuple) or not all(isinstance(p, str) for p in negs):
                raise ValueError("The negative prompt must be a string or a list of strings.")
            if len(negs) not in (1, len(prompts)):
                raise ValueError(f"Got {len(negs)} negative prompts for {len(prompts)} prompts.")
        max_steps = self.model.config.num_train_timesteps
        if num_inference_steps is not None:
            check_steps(num_inference_steps, max_steps)
        if guidance_scale is not None:
            check_guidance_scale(guidance_scale)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED
        ):
            raise ValueError(f"Seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}.")
        if guidance_interval is not None:
            check_guidance_interval(guidance_interval, max_steps)
        if sampler is not None:
            check_sampler(sampler)
        if not (isinstance(num_images_per_prompt, numbers.Integral)
                and 1 <= num_images_per_prompt <= MAX_IMAGES_PER_PROMPT):
            raise ValueError(f"num_images_per_prompt must be from 1 to {MAX_IMAGES_PER_PROMPT}.")

    # ---- sampling ---------------------------------------------------------------------

    @torch.no_grad()
    def steps(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = 0,
        sampler: str | None = None,
        num_images_per_prompt: int = 1,
        guidance_interval: tuple[int, int] | None = None,
        stats: bool = True,
    ) -> Iterator[StepOutput]:
        """Sample, yielding a :class:`StepOutput` after every denoising step.

        Defaults (None) come from the model's ``PipelineConfig`` (``self.config``). ``seed=None``
        draws one; the seed used is in every event. Same inputs and seed give bit-identical images on the CPU.
        ``guidance_interval=(lo, hi)`` applies the guidance only at timesteps lo <= t <= hi
        (Kynkaanniemi et al. 2024); the other steps run the conditional branch alone, which
        also halves their cost.
        ``stats=False`` skips the x0 previews and the state statistics (empty in every event):
        on a CPU they take most of a step's time, which a caller that wants only the images (the
        evaluator) need not spend.
        """
        cfg, defaults = self.model.config, self.config
        num_inference_steps = defaults.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance_scale = defaults.guidance_scale if guidance_scale is None else guidance_scale
        sampler = defaults.sampler if sampler is None else sampler
        guidance_interval = defaults.guidance_interval if guidance_interval is None else guidance_interval
        self.check_inputs(prompt, negative_prompt, num_inference_steps, guidance_scale, seed, sampler,
                          num_images_per_prompt, guidance_interval)
        lo, hi = (0, cfg.num_train_timesteps - 1) if guidance_interval is None else guidance_interval
        seed = secrets.randbelow(MAX_SEED + 1) if seed is None else int(seed)

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negs = [negative_prompt or ""] if not isinstance(negative_prompt, list | tuple) else list(negative_prompt)
        negs = negs * len(prompts) if len(negs) == 1 else negs  # one negative prompt for all
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        negs = [n for n in negs for _ in range(num_images_per_prompt)]
        B = len(prompts)

        guided = guidance_scale != 1.0  # at scale 1 the unconditional branch cancels out
        text, mask = self.text_encoder(prompts)
        if guided:
            null_text, null_mask = self.text_encoder(negs)
            text, mask = _cat_text((null_text, null_mask), (text, mask))  # [uncond; cond]

        # state statistics need a recurrent state (a DiT baseline has none: its events carry none)
        with_states = stats and self.has_state
        scheduler = make_scheduler(sampler, cfg.num_train_timesteps, cfg.beta_schedule)
        scheduler.set_timesteps(num_inference_steps)
        generator = torch.Generator("cpu").manual_seed(seed)
        S = cfg.image_size
        # noise is drawn on the CPU so a seed means the same image on every device
        x = torch.randn(B, cfg.in_channels, S, S, generator=generator).to(self.device)
        x = x * scheduler.init_noise_sigma
        extra = step_kwargs(sampler, generator)

        net = self._compiled if self._compiled is not None and not with_states else self.model
        timesteps = scheduler.timesteps
        for i, t in enumerate(timesteps):
            x_in = scheduler.scale_model_input(x, t)
            guide = guided and lo <= int(t) <= hi
            model_in = torch.cat([x_in, x_in]) if guide else x_in
            t_batch = torch.full((model_in.shape[0],), int(t), device=self.device)
            if guided and not guide:  # outside the interval: the conditional half of [uncond; cond] alone
                out = net(model_in, t_batch, text[B:], mask[B:], return_states=with_states)
            else:
                out = net(model_in, t_batch, text, mask, return_states=with_states)
            eps, states = out if with_states else (out, [])
            if guide:
                eps_uncond, eps_cond = eps.chunk(2)
                # guidance on all channels (DiT's reference code guided only the first three)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
                states = [s[B:] for s in states]                         # conditional branch
            preview = to_pil(predicted_x0(x, eps, int(t), scheduler.alphas_cumprod)) if stats else []
            x = scheduler.step(eps, t, x, **extra).prev_sample
            rms, srank = layer_head_stats(states) if with_states else (torch.empty(0), torch.empty(0))
            last = i == len(timesteps) - 1
            yield StepOutput(
                step=i, total=len(timesteps), timestep=int(t), preview=preview,
                state_rms=rms.cpu(), stable_rank=srank.cpu(), seed=seed,
                images=to_pil(x) if last else None,
            )

    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = 0,
        sampler: str | None = None,
        num_images_per_prompt: int = 1,
        callback: Callable[[int, int, dict], None] | None = None,
        progress: bool = False,
        guidance_interval: tuple[int, int] | None = None,
        stats: bool = True,
    ) -> DIR7PipelineOutput:
        """Sample images. ``callback(step, total, info)`` runs after every step; ``info`` holds
        ``timestep``, ``preview`` (x0 prediction, PIL), ``state_rms`` and ``stable_rank``."""
        state_stats = StateStats()  # stays empty with stats=False
        events = self.steps(prompt, negative_prompt, num_inference_steps, guidance_scale, seed, sampler,
                            num_images_per_prompt, guidance_interval, stats)
        if progress:
            from tqdm.auto import tqdm

            events = tqdm(events, total=num_inference_steps or self.config.num_inference_steps, desc="sampling")
        for ev in events:
            if stats and self.has_state:
                state_stats.append(ev.timestep, ev.state_rms, ev.stable_rank)
            if callback is not None:
                callback(ev.step, ev.total, {"timestep": ev.timestep, "preview": ev.preview,
                                             "state_rms": ev.state_rms, "stable_rank": ev.stable_rank})
        return DIR7PipelineOutput(images=ev.images, state_stats=state_stats, seed=ev.seed)


def _cat_text(*parts: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate (states, mask) batches of different lengths, padding with masked zeros."""
    L = max(s.shape[1] for s, _ in parts)
    states = [torch.nn.functional.pad(s, (0, 0, 0, L - s.shape[1])) for s, _ in parts]
    masks = [torch.nn.functional.pad(m, (0, L - m.shape[1]), value=False) for _, m in parts]
    return torch.cat(states), torch.cat(masks)
