"""Train DIR-7.

    python -m dir7.train --out runs/demo --preset dir7-demo --steps 20000 --batch-size 128
    python -m dir7.train --out runs/s --train-preset shapes --set cross_mode=paper   # a named recipe base
    torchrun --nproc_per_node 4 -m dir7.train --out runs/demo ...      # data parallel (DDP)

AdamW (the paper's lr 1e-4 by default, linear warm-up), bf16 autocast on GPU, gradient
clipping, EMA weights, text dropout for classifier-free guidance, a progress bar and a
JSONL log, periodic sample grids, and atomic checkpoints that resume exactly: rerun the same
command and training continues from ``<out>/checkpoint`` with the same weights, optimizer
moments, EMA, random-number stream and data position as if it had never stopped.

Exactness across process counts: every rank draws the *global* batch's timesteps, noise
and caption dropout from one generator and takes its own slice, and the data stream is
indexed by global sample number, so N processes with batch B/N compute what one process
with batch B does (up to the order of floating-point sums in the gradient all-reduce).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .architectures import ModelConfig, build_model, config_from_preset
from .checkpoint import CONFIG_NAME, atomic_directory_write, load_into, load_state_dict, save_state_dict
from .diffusion import diffusion_loss, drop_captions, make_scheduler
from .model import DIR7Config, DIR7Model, grow_into, grown_config, grown_layout
from .pipeline import DIR7Pipeline, PipelineConfig, image_grid, load_configs, save_configs
from .runtime import to_device
from .text_encoder import TextEncoder
from .vocabulary import VOCABULARY_NAME, load_vocabulary, save_vocabulary, words

SAMPLE_PROMPTS = (
    "a red circle",
    "two blue squares",
    "a green star above a yellow heart",
    "a large purple triangle on the left",
    "three white circles",
    "a pink heart to the right of an orange square",
    "a small blue star",
    "four yellow triangles",
)


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything about a training run that is not the model (``DIR7Config``, chosen by ``preset``
    plus ``--set`` edits) or how to sample with it (``PipelineConfig``, carried from ``init_from``)."""

    out: str = "runs/dir7"          # run directory: log.jsonl, samples/, checkpoint/
    preset: str = "dir7-demo"       # model preset: dir7.PRESETS, or a DiT baseline's (dir7.dit.DIT_PRESETS)
    model_overrides: list[str] = field(default_factory=list)  # "field=value" edits of the preset, e.g.
                                    # depth=9 or cross_mode=paper (the CrossWKV variant)
    data: str = "shapes"            # "shapes" (procedural, dir7.data), "emoji:DIR" (a set built by
                                    # python -m dir7.data.emoji build) or a folder of the user's images
    kind_weights: str = ""          # shapes only: scene-kind mix as "kind=weight,...", e.g. "counting=3" to
                                    # show more of a task the model fails; unlisted kinds keep
                                    # dir7.data.DEFAULT_KIND_WEIGHTS, 0 drops a kind
    batch_size: int = 128           # global batch, split evenly over processes
    steps: int = 20000              # optimizer steps in total
    lr: float = 1e-4                # AdamW learning rate (the paper's 1e-4)
    warmup: int = 500               # linear warm-up steps
    lr_schedule: str = "constant"   # "constant" after warm-up, or "cosine" down to 10%
    weight_decay: float = 0.0       # AdamW decoupled weight decay
    grad_clip: float = 1.0          # max global gradient norm
    ema_decay: float = 0.999        # EMA of the weights; the EMA is what gets shipped
    text_dropout: float = 0.1       # fraction of captions replaced by "" (classifier-free guidance)
    snr_gamma: float = 0.0          # Min-SNR-gamma loss weights (5 in Hang et al. 2023): low-noise steps
                                    # weigh min(SNR, gamma)/SNR, moving gradient toward the high-noise
                                    # steps that decide layout; 0 = the paper's unweighted eq. 17
    seed: int = 0                   # model init, data stream and diffusion noise
    log_every: int = 50             # steps between log lines
    sample_every: int = 2000        # steps between sample grids (0: never)
    save_every: int = 1000          # steps between checkpoints (the last step always saves)
    workers: int = 2                # data-loader worker processes per GPU
    precision: str = "auto"         # "bf16" autocast, "fp32", or "auto" (bf16 on CUDA)
    compile: bool = False           # torch.compile the model: fewer, fused kernels (minutes of compiling first)
    text_pad_multiple: int = 16     # captions padded to a multiple of this many tokens. A compiled model
                                    # recompiles (~3 min on an H100) for each new length; 48 covers
                                    # every shapes caption (longest seen: 35 tokens), so one compile
    device: str = "auto"            # "cuda", "cpu" or "auto"
    max_steps_this_run: int = 0     # stop after this many steps of this invocation (0: no limit)
    stop_step: int = 0              # stop (saving) once the run reaches this step, however many invocations
                                    # it took; the schedule stays the one of `steps` (0: run to `steps`)
    time_limit_min: float = 0.0     # stop (saving first) after this many minutes of this invocation (0: none)
    init_from: str = ""             # start a *new* run from these weights (see load_initial_weights); "" = random init
    grow_depth: int = 0             # with init_from: train a model this many (even) blocks deeper, whose new
                                    # blocks start as the identity (dir7.model.grow_into); 0 = same depth

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TrainConfig:
        if name not in TRAIN_PRESETS:
            raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}")
        return dataclasses.replace(TRAIN_PRESETS[name], **overrides)

    def model_config(self) -> ModelConfig:
        cfg = config_from_preset(self.preset)
        fields = {f.name: f for f in dataclasses.fields(cfg)}
        edits = {}
        for item in self.model_overrides:
            name, sep, value = item.partition("=")
            if not sep or name not in fields:
                raise ValueError(f"model override {item!r}: expected field=value with a {type(cfg).__name__} field")
            current = getattr(cfg, name)
            try:
                if isinstance(current, bool):
                    edits[name] = value.lower() in ("1", "true", "yes")
                elif isinstance(current, tuple):  # a list, comma-separated: scan_orders=row,col,row_reverse
                    kind = type(current[0]) if current else str
                    edits[name] = tuple(kind(v.strip()) for v in value.split(","))
                else:
                    edits[name] = type(current)(value)
            except ValueError as err:
                raise ValueError(f"model override {item!r}: {err}") from None
        return dataclasses.replace(cfg, **edits)

    def scene_kind_weights(self) -> dict[str, float]:
        """``kind_weights`` parsed over the defaults; errors name the bad item."""
        from .data import DEFAULT_KIND_WEIGHTS, KINDS

        weights = dict(DEFAULT_KIND_WEIGHTS)
        for item in filter(None, (part.strip() for part in self.kind_weights.split(","))):
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in KINDS:
                raise ValueError(f"kind weight {item!r}: expected kind=weight with a kind from {KINDS}")
            try:
                weights[name] = float(value)
            except ValueError:
                raise ValueError(f"kind weight {item!r}: {value!r} is not a number") from None
            if not math.isfinite(weights[name]) or weights[name] < 0:
                raise ValueError(f"kind weight {item!r}: weights must be finite and >= 0")
        if not any(w > 0 for w in weights.values()):
            raise ValueError(f"kind weights {self.kind_weights!r} leave no scene kind with a positive weight")
        return weights


# the scene mix of the shapes model's later stages: more of the tasks it failed (docs/training.md)
SHAPES_KIND_WEIGHTS = "single_object=0.5,colors=0.5,two_object=2.5,counting=3,position=2.5,color_attr=2"

TRAIN_PRESETS: dict[str, TrainConfig] = {
    # the paper's optimiser settings (lr 1e-4, constant after warm-up)
    "default": TrainConfig(),
    # a few hundred steps on a CPU: checks that a setup trains end to end
    "smoke": TrainConfig(batch_size=16, steps=200, warmup=20, log_every=10, sample_every=0, save_every=100,
                         workers=0),
    # the shipped shapes model's stages 7-13 on one GPU (recipes/dir7-shapes.sh): batch 512, cosine
    # schedule, Min-SNR-5, compiled, captions padded to one length
    "shapes": TrainConfig(batch_size=512, steps=5000, lr=2e-4, warmup=200, lr_schedule="cosine", workers=5,
                          sample_every=0, log_every=100, compile=True, text_pad_multiple=48,
                          kind_weights=SHAPES_KIND_WEIGHTS, snr_gamma=5.0),
    # the emoji model from scratch on one GPU (recipes/dir7-emoji.sh; run 1 in docs/training.md): the shapes recipe's
    # optimiser with the from-scratch learning rate of the shapes model's first stage; every emoji
    # caption is at most 30 tokens, so one padded length (one compile)
    "emoji": TrainConfig(batch_size=512, steps=2000, lr=5e-4, warmup=200, lr_schedule="cosine", workers=5,
                         sample_every=0, log_every=100, save_every=500, compile=True, text_pad_multiple=32,
                         snr_gamma=5.0),
}


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


class EndlessShuffle(Dataset):
    """A finite dataset as an endless stream: global index j -> item perm_e[j mod N], a new
    permutation for every epoch e, seeded, so the stream is a pure function of j."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.n = dataset, seed, len(dataset)
        if self.n == 0:
            raise ValueError("the training folder holds no images")

    def __len__(self) -> int:
        return 2**62

    def _permutation(self, epoch: int) -> torch.Tensor:
        # one permutation per epoch, kept while the stream is in it (each worker keeps its own)
        if getattr(self, "_epoch", None) != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def __getitem__(self, j: int):
        epoch, pos = divmod(int(j), self.n)
        return self.dataset[int(self._permutation(epoch)[pos])]


def make_loader(tc: TrainConfig, image_size: int, start: int, rank: int, world: int) -> DataLoader:
    from .data import IndexSampler, ShapesDataset, collate, training_dataset

    local_batch = tc.batch_size // world
    dataset = training_dataset(tc.data, image_size, seed=tc.seed, kind_weights=tc.scene_kind_weights())
    if not isinstance(dataset, ShapesDataset):  # scenes are drawn afresh per index; a finite set is reshuffled
        dataset = EndlessShuffle(dataset, seed=tc.seed)
    sampler = IndexSampler(start=start, rank=rank, world_size=world)
    return DataLoader(dataset, batch_size=local_batch, sampler=sampler, num_workers=tc.workers,
                      collate_fn=collate, persistent_workers=tc.workers > 0, pin_memory=torch.cuda.is_available())


# ---------------------------------------------------------------------------------------
# Checkpoints: weights, EMA, optimizer, random state (safetensors + JSON, no pickle)
# ---------------------------------------------------------------------------------------


def _optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_state(path: Path, tc: TrainConfig, step: int, model, ema, opt, generator,
                        pipeline_config: PipelineConfig, vocabulary: set[str], command: str = "") -> None:
    opt_tensors, opt_meta = _optimizer_to_tensors(opt)
    model_state, ema_state = model.state_dict(), ema.state_dict()

    def write(tmp: Path) -> None:
        (tmp / "ema").mkdir()
        save_configs(tmp / "ema", model.config, pipeline_config)  # a model directory of the EMA weights
        save_vocabulary(tmp / "ema" / VOCABULARY_NAME, vocabulary)
        save_state_dict(ema_state, tmp / "ema")
        save_state_dict(model_state, tmp, prefix="model")
        save_state_dict(opt_tensors, tmp, prefix="optimizer")
        save_file({"generator": generator.get_state()}, str(tmp / "rng.safetensors"))
        (tmp / "train_state.json").write_text(json.dumps(
            {"step": step, "command": command, "train_config": dataclasses.asdict(tc), "optimizer": opt_meta},
            indent=2))

    atomic_directory_write(path, write)


# DIR7Config switches a warm start may turn on, with the modules they add. Each module's
# output layer starts at zero, so the grown model computes exactly what its source did
# (tested) and training then learns to use the new path.
GROWABLE = {"pooled_text": "text_pool."}


def model_directory(path: Path) -> Path:
    """The model directory of a checkpoint: a training checkpoint's EMA one, or the path itself."""
    return path / "ema" if (path / "train_state.json").is_file() else path


def load_initial_weights(path: Path, model, ema) -> None:
    """Warm start (``--init-from``): weights without the rest of a training state.

    ``path`` is either a training checkpoint (``<run>/checkpoint``: model and EMA weights are
    taken, the optimizer moments, step and random stream are not) or a model directory
    (config.json + shards: the same weights go into the model and its EMA). Any float dtype
    is accepted (a half-precision copy is cast up). Unlike resuming, this is not exact: AdamW
    starts with fresh moments, so use a warm-up. Used for fine-tuning, and to carry a run
    to another machine when the full optimizer state is too large to move. The two models
    must agree in every config field, except that a ``GROWABLE`` switch may be on here and off
    there (e.g. ``--set pooled_text=true``): its new module keeps its no-op initialisation.
    """
    path = Path(path)
    is_training_checkpoint = (path / "train_state.json").is_file()
    source = model_directory(path)
    new_modules: tuple[str, ...] = ()
    if (source / CONFIG_NAME).is_file():
        # the shapes could match while the meaning differs (cross_mode, scan orders, init, text encoder)
        theirs = load_configs(source)[0].to_dict()
        ours = model.config.to_dict()
        differ = sorted(k for k in ours if ours[k] != theirs[k])
        grown = [k for k in differ if k in GROWABLE and ours[k] and not theirs[k]]
        new_modules = tuple(GROWABLE[k] for k in grown)
        differ = [k for k in differ if k not in grown]
        if differ:
            raise ValueError(f"--init-from {path}: its model differs from this run's in {differ} "
                             f"(e.g. {differ[0]}: {theirs[differ[0]]!r} there, {ours[differ[0]]!r} here)")
    if is_training_checkpoint:
        load_into(model, path, prefix="model", new_modules=new_modules)
        load_into(ema, path / "ema", new_modules=new_modules)
    elif (source / CONFIG_NAME).is_file():
        load_into(model, path, new_modules=new_modules)
        ema.load_state_dict(model.state_dict())
    else:
        raise FileNotFoundError(f"--init-from {path}: neither a training checkpoint (train_state.json) "
                                f"nor a model directory ({CONFIG_NAME})")
    for p in [*model.parameters(), *ema.parameters()]:
        if not torch.isfinite(p).all():
            raise ValueError(f"--init-from {path}: the weights hold NaN or inf")


def run_vocabulary(tc: TrainConfig, ckpt: Path) -> set[str]:
    """The training captions' words so far: this run's own (resuming), plus those of the weights it
    starts from (they were trained on those captions too)."""
    vocabulary: set[str] = set()
    for path in (ckpt, Path(tc.init_from) if tc.init_from else None):
        if path is not None:
            vocabulary |= load_vocabulary(model_directory(path) / VOCABULARY_NAME) or set()
    return vocabulary


def run_pipeline_config(tc: TrainConfig, ckpt: Path) -> PipelineConfig:
    """The sampling defaults a run saves with its weights and samples its grids with: its own
    (resuming), else those of the weights it starts from (they were tuned for them), else the
    defaults."""
    for path in (ckpt, Path(tc.init_from) if tc.init_from else None):
        if path is not None and (model_directory(path) / CONFIG_NAME).is_file():
            return load_configs(model_directory(path))[1]
    return PipelineConfig()


def load_training_state(path: Path, model, ema, opt, generator) -> int:
    meta = json.loads((path / "train_state.json").read_text())
    load_into(model, path, prefix="model")
    load_into(ema, path / "ema")
    _optimizer_from_tensors(opt, load_state_dict(path, prefix="optimizer"), meta["optimizer"])
    generator.set_state(load_file(str(path / "rng.safetensors"))["generator"])
    return int(meta["step"])


# ---------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------


def lr_at(tc: TrainConfig, step: int) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    if tc.lr_schedule == "cosine":
        progress = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
        return tc.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    return tc.lr


def trim_log(path: Path, step: int) -> None:
    """Drop the log lines of steps after ``step``: an interrupted run logged steps past its last
    checkpoint, and resuming redoes them, so keeping them would list those steps twice. A line
    cut short by the interruption (not valid JSON) goes too. A run that starts at step 0 (no
    checkpoint yet) keeps no line: its directory's log is then that of a run it replaces."""
    if not path.is_file():
        return

    def logged_step(line: str) -> int | None:
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            return None

    text = path.read_text()
    kept = "".join(line.rstrip("\n") + "\n" for line in text.splitlines()
                   if (s := logged_step(line)) is not None and s <= step)
    if kept != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(kept)
        tmp.replace(path)  # atomic: a crash here leaves the old log, never half of one


def ema_decay_at(tc: TrainConfig, step: int) -> float:
    # ramp-up: early on the EMA would otherwise be dominated by the random init
    return min(tc.ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_p = list(ema.parameters())
    torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1.0 - decay)


def training_step(net, model, ema, opt, enc, scheduler, images, captions, t, noise, *,
                  lr: float, ema_decay: float, grad_clip: float, use_bf16: bool, text_pad_multiple: int,
                  snr_gamma: float = 0.0):
    """One optimizer step on a (local) batch: encode text, eq. 17 loss, backward, clip,
    AdamW, EMA. ``net`` is the model or its DDP/compiled wrapper; ``model`` the plain module.
    Returns the loss and the gradient norm as tensors (reading them would sync the GPU)."""
    device = next(model.parameters()).device
    # padding is masked out (the model is invariant to it); a compiled model sees few shapes
    text, mask = enc(captions, pad_to_multiple_of=text_pad_multiple)
    # every host-to-GPU copy of the step from pinned memory (runtime.to_device): one from pageable
    # memory would make the host wait for the GPU to finish the previous step
    images, t, noise = (to_device(x, device) for x in (images, t, noise))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        loss = diffusion_loss(net, images, text, mask, scheduler, t=t, noise=noise, snr_gamma=snr_gamma)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    update_ema(ema, model, ema_decay)
    return loss.detach(), grad_norm


def _setup_distributed(device_arg: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device_arg == "auto" else device_arg == "cuda"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def sample_prompts(tc: TrainConfig) -> tuple[str, ...]:
    """The fixed prompts of a run's sample grids: the emoji set's own for emoji data, else shapes'."""
    if tc.data.startswith("emoji:"):
        from .data.emoji import SAMPLE_PROMPTS as EMOJI_SAMPLE_PROMPTS

        return EMOJI_SAMPLE_PROMPTS
    return SAMPLE_PROMPTS


@torch.no_grad()
def write_sample_grid(path: Path, ema: torch.nn.Module, enc: TextEncoder, pipeline_config: PipelineConfig,
                      prompts: tuple[str, ...], seed: int) -> None:
    """Sample the fixed prompts with the run's own sampling defaults (what the shipped model would use)."""
    pipe = DIR7Pipeline(ema, enc, pipeline_config, name="ema")
    out = pipe(list(prompts), seed=seed, stats=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(out.images, cols=4, scale=2).save(path)


def train(tc: TrainConfig) -> Path:
    """Run (or resume) training; returns the checkpoint directory."""
    rank, world, device = _setup_distributed(tc.device)
    if tc.batch_size % world:
        raise ValueError(f"batch size {tc.batch_size} does not split evenly over {world} processes")
    if tc.text_pad_multiple < 1:
        raise ValueError(f"text_pad_multiple must be >= 1, got {tc.text_pad_multiple}")
    if not (math.isfinite(tc.snr_gamma) and tc.snr_gamma >= 0):
        raise ValueError(f"snr_gamma must be >= 0 (0 turns the weighting off), got {tc.snr_gamma}")
    if not 0 <= tc.stop_step <= tc.steps:
        raise ValueError(f"stop_step must lie in 0..steps ({tc.steps}; 0: run to steps), got {tc.stop_step}")
    if tc.grow_depth and not tc.init_from:
        raise ValueError("--grow-depth deepens the --init-from model; give --init-from too")
    if tc.grow_depth:
        if not isinstance(tc.model_config(), DIR7Config):
            raise ValueError("--grow-depth grows a DIR-7 model; the DiT baseline does not grow")
        grown_layout(tc.model_config().depth, tc.grow_depth)  # an odd or negative count fails here
    if tc.kind_weights and tc.data != "shapes":
        raise ValueError("--kind-weights mixes the procedural shapes scenes; it does not apply to a folder")
    tc.scene_kind_weights()  # bad weights fail here, before the model is built
    use_bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")
    out = Path(tc.out)
    ckpt = out / "checkpoint"
    cfg = tc.model_config()
    command = "python -m dir7.train " + " ".join(sys.argv[1:])
    pipeline_config = run_pipeline_config(tc, ckpt)
    # the words of every caption trained on (on rank 0, whose share of a long run covers them all),
    # saved with each checkpoint for DIR7Pipeline.unknown_words
    vocabulary = run_vocabulary(tc, ckpt)

    source_cfg = cfg  # the --init-from model's config; a grown run trains a deeper one
    if tc.grow_depth:
        cfg = grown_config(cfg, tc.grow_depth)

    torch.manual_seed(tc.seed)  # identical init on every rank
    model = build_model(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    enc = TextEncoder.from_pretrained(cfg.text_encoder, cfg.max_text_len, cfg.prepend_eot).to(device)
    # fused: one kernel for the whole update on CUDA instead of several per parameter
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                            fused=device.type == "cuda")
    scheduler = make_scheduler("ddpm", cfg.num_train_timesteps, cfg.beta_schedule)
    generator = torch.Generator().manual_seed(tc.seed + 1)  # global-batch draws, same on every rank

    step = 0
    if (ckpt / "train_state.json").is_file():  # resuming this run wins over --init-from
        step = load_training_state(ckpt, model, ema, opt, generator)
    elif tc.grow_depth:  # a resumed grown run is already deep (above); a new one grows its source
        source = DIR7Model(source_cfg).to(device)
        source_ema = copy.deepcopy(source)
        load_initial_weights(Path(tc.init_from), source, source_ema)
        grow_into(source, model)
        grow_into(source_ema, ema)
        del source, source_ema
    elif tc.init_from:
        load_initial_weights(Path(tc.init_from), model, ema)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    if tc.compile:
        # static shapes: a rare longer caption then costs one more static graph, not a
        # recompile of everything with symbolic sizes
        net = torch.compile(net, dynamic=False)

    loader = make_loader(tc, cfg.image_size, start=step * tc.batch_size, rank=rank, world=world)
    batches = iter(loader)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        trim_log(out / "log.jsonl", step)
    log_file = (out / "log.jsonl").open("a") if rank == 0 else None
    pbar = tqdm(total=tc.steps, initial=step, desc="train", disable=rank != 0, dynamic_ncols=True)
    stop_at = min(tc.steps, tc.stop_step or tc.steps,
                  step + tc.max_steps_this_run if tc.max_steps_this_run else tc.steps)
    B, S = tc.batch_size, cfg.image_size
    mine = slice(rank, None, world)  # this rank's positions in the global batch (IndexSampler order)
    t_start = t_log = time.perf_counter()
    seen = 0

    while step < stop_at:
        images, captions = next(batches)
        t = torch.randint(0, cfg.num_train_timesteps, (B,), generator=generator)[mine]
        noise = torch.randn(B, cfg.in_channels, S, S, generator=generator)[mine]
        captions = drop_captions(captions, tc.text_dropout, generator, rank=rank, world=world)
        for caption in captions:
            vocabulary.update(words(caption))
        loss, grad_norm = training_step(net, model, ema, opt, enc, scheduler, images, captions, t, noise,
                                        lr=lr_at(tc, step), ema_decay=ema_decay_at(tc, step + 1),
                                        grad_clip=tc.grad_clip, use_bf16=use_bf16,
                                        text_pad_multiple=tc.text_pad_multiple, snr_gamma=tc.snr_gamma)
        step += 1
        seen += B
        pbar.update(1)
        # every rank must stop at the same step (rank clocks differ), so with DDP the ranks agree
        # by an all-reduce, on the GPU for NCCL; its .item() waits for the GPU, hence every 10 steps
        if tc.time_limit_min and (world == 1 or step % 10 == 0):
            over = torch.tensor(float(time.perf_counter() - t_start > 60 * tc.time_limit_min),
                                device=device if world > 1 else "cpu")
            if world > 1:
                dist.all_reduce(over, op=dist.ReduceOp.MAX)
            if over.item():
                stop_at = step  # the save below runs for this step

        if step % tc.log_every == 0 or step == stop_at:
            loss_avg = loss.clone()
            if world > 1:
                dist.all_reduce(loss_avg, op=dist.ReduceOp.AVG)
            now = time.perf_counter()
            record = {"step": step, "loss": loss_avg.item(), "lr": lr_at(tc, step - 1),
                      "grad_norm": float(grad_norm), "images_per_s": seen / (now - t_log)}
            t_log, seen = now, 0
            if rank == 0:
                pbar.set_postfix(loss=f"{record['loss']:.4f}")
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
        if step % tc.save_every == 0 or step == stop_at:
            if rank == 0:
                save_training_state(ckpt, tc, step, model, ema, opt, generator, pipeline_config, vocabulary,
                                    command)
            if world > 1:
                dist.barrier()
        if rank == 0 and tc.sample_every and (step % tc.sample_every == 0 or step == tc.steps):
            write_sample_grid(out / "samples" / f"step_{step:07d}.png", ema, enc, pipeline_config,
                              sample_prompts(tc), seed=tc.seed)

    pbar.close()
    if log_file:
        log_file.close()
    return ckpt


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """``--train-preset NAME`` (default "default") gives the defaults; every other flag overrides one field."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--train-preset", default="default", choices=sorted(TRAIN_PRESETS))
    known, _ = pre.parse_known_args(argv)
    defaults = TRAIN_PRESETS[known.train_preset]
    ap = argparse.ArgumentParser(prog="python -m dir7.train", description=__doc__, parents=[pre],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "model_overrides":
            ap.add_argument("--set", dest=f.name, action="append", default=[], metavar="FIELD=VALUE",
                            help="change a field of the preset's DIR7Config (repeatable), e.g. --set depth=9, "
                                 "--set cross_mode=paper; a list is comma-separated: --set scan_orders=row,col")
        elif isinstance(getattr(defaults, f.name), bool):
            ap.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                            default=getattr(defaults, f.name), help=f"default: {getattr(defaults, f.name)}")
        else:
            ap.add_argument(flag, dest=f.name, type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name), help=f"default: {getattr(defaults, f.name)}")
    args = vars(ap.parse_args(argv))
    args.pop("train_preset")
    tc = TrainConfig(**args)
    for name, allowed in (("lr_schedule", ("constant", "cosine")), ("precision", ("auto", "bf16", "fp32")),
                          ("device", ("auto", "cuda", "cpu"))):
        if getattr(tc, name) not in allowed:
            ap.error(f"--{name.replace('_', '-')} must be one of {allowed}")
    return tc


def main(argv: list[str] | None = None) -> None:
    tc = parse_args(argv)
    ckpt = train(tc)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {ckpt}  (EMA pipeline: {ckpt / 'ema'})")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
