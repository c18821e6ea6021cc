"""Service layer of the demo: the models it offers, raw-input validation, streamed sampling.

:class:`ModelRegistry` knows which models the page offers and loads each once, on first use;
:class:`DemoService` is one loaded model with what the page says about it, its validation and
its sampling. Nothing here knows about Gradio, so the same code is exercised by unit tests, by
the web UI (``app.ui``) and by the latency benchmark. Everything a user can get wrong becomes an
:class:`InputError` whose message is meant to be shown verbatim in the page.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin

import dir7

log = logging.getLogger(__name__)

# The UI limits. The pipeline itself accepts up to 1000 steps (ddpm), but on a shared CPU demo
# a 1000-step request would hold the single worker for minutes, so the app caps it lower.
MIN_STEPS, MAX_STEPS = 1, 250
# guidance and seed ranges are the pipeline's own (one source of truth with the Python API)
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, dir7.MAX_GUIDANCE
MAX_SEED = dir7.MAX_SEED
# Prompts longer than the encoder's token budget are truncated with a notice; this character cap
# only bounds the tokenizer's work on absurd inputs (the textbox's max_length is client-side only).
MAX_PROMPT_CHARS = 4000

DEFAULT_SEED = 0
DEMO_PRESET = "dir7-demo"
# the name the untrained stand-in goes by in the selector, the API and the PNG metadata
FALLBACK_NAME = f"{DEMO_PRESET}-untrained"
REPO_ROOT = Path(__file__).resolve().parent.parent
# The shipped models: every folder here with a config.json (the emoji judge, a classifier for
# the evaluation, has none and is no model to sample).
CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"
MODEL_CONFIG = "config.json"  # what makes a folder a model directory (dir7.load_configs reads it)


def repo_url() -> str:
    """Prefix of links to files of this repository, "" when unknown.

    ``DIR7_REPO_URL`` (e.g. a GitHub ``.../blob/main/``) wins; on a Hugging Face Space (which sets
    ``SPACE_ID``) the Space's own file view. Run locally, the files are on the visitor's disk, not
    behind the server (which serves none of them), so the page names their paths instead.
    """
    base = os.environ.get("DIR7_REPO_URL", "").strip()
    if not base and os.environ.get("SPACE_ID"):
        base = f"https://huggingface.co/spaces/{os.environ['SPACE_ID']}/blob/main/"
    return base if not base or base.endswith("/") else base + "/"


class InputError(ValueError):
    """Bad user input; the message is user-readable and safe to show in the page."""


@dataclass(frozen=True)
class GenerationRequest:
    """Validated, typed inputs of one generation."""

    prompt: str
    negative_prompt: str | None
    num_inference_steps: int
    guidance_scale: float
    seed: int
    sampler: str


def png_text(
    request: GenerationRequest, model: str, guidance_interval: tuple[int, int] | None = None
) -> dict[str, str]:
    """How an image was made, kept as PNG text chunks in the final image (and its download).

    It also keeps the page working: Gradio caches a PIL output under the hash of its encoded
    bytes and rewrites that file in place, and the final image's pixels usually equal the last
    x0 preview's. Without these chunks both share one cache file, rewritten while the browser
    may still be reading the preview ("Too much data for declared Content-Length"), and the
    final image can fail to load.
    """
    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or "",
        "seed": str(request.seed),
        "steps": str(request.num_inference_steps),
        "guidance": f"{request.guidance_scale:g}",
        "guidance_interval": dir7.format_guidance_interval(guidance_interval),  # the model's default
        "sampler": request.sampler,
        "model": model,
    }


@dataclass
class StepUpdate:
    """What the page shows after one denoising step (first image of the batch only)."""

    step: int  # denoising steps done so far, 1-based
    total: int
    timestep: int
    preview: Image.Image  # the model's x0 prediction at this step
    rms: np.ndarray  # [steps so far, layers, heads]: RMS of each CrossWKV layer's final state
    stable_rank: np.ndarray  # [steps so far, layers, heads]
    elapsed_s: float  # since the generation started
    image: Image.Image | None = None  # the final image, on the last step only
    timesteps: list[int] = field(default_factory=list)  # diffusion timestep of every step so far

    @property
    def done(self) -> bool:
        return self.image is not None


# --------------------------------------------------------------------------------------------
# Coercion of raw values. The handler receives whatever the client sent (JSON through the API,
# not only what the sliders allow), so nothing is assumed about types.
# --------------------------------------------------------------------------------------------


def _as_number(value: Any, what: str) -> float | int:
    if isinstance(value, bool):  # bool is an int subclass; True as "1 step" would be a silent surprise
        raise InputError(f"{what} must be a number, not {value!r}.")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            pass
    raise InputError(f"{what} must be a number, got {_short_repr(value)}.")


def _as_int(value: Any, what: str, lo: int, hi: int) -> int:
    number = _as_number(value, what)
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise InputError(f"{what} must be a whole number between {lo} and {hi}, got {_short_repr(value)}.")
        number = int(number)
    if not lo <= number <= hi:
        raise InputError(f"{what} must be a whole number between {lo} and {hi}, got {_short_repr(value)}.")
    return number


def _as_float(value: Any, what: str, lo: float, hi: float) -> float:
    number = float(_as_number(value, what))
    if not math.isfinite(number) or not lo <= number <= hi:
        raise InputError(f"{what} must be between {lo:g} and {hi:g}, got {_short_repr(value)}.")
    return number


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------


class DemoService:
    """One loaded model (a pipeline shared by every visitor) plus the logic around it.

    Made by :class:`ModelRegistry` (or :meth:`load` for a single model). ``name`` is how the page,
    the API and the PNG metadata call it (default: the pipeline's own name).
    """

    def __init__(self, pipe: Any, *, name: str | None = None, fallback_reason: str | None = None,
                 tmp_dir: str | Path | None = None, checkpoint_path: str | Path | None = None):
        self.pipe = pipe
        self.name = name or pipe.name
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        # Set when no trained checkpoint could be loaded and a random model stands in.
        self.fallback_reason = fallback_reason
        self.samplers: tuple[str, ...] = tuple(dir7.DIR7Pipeline.SAMPLERS)
        self.encoder = pipe.text_encoder  # for count_tokens / max_length (truncation notices)
        # Final PNGs are written here for the download widget; Gradio copies them into its own
        # cache, so only the most recent few are kept on disk.
        if tmp_dir is None:
            tmp_dir = tempfile.mkdtemp(prefix="dir7-app-")
            # Our own folder: remove it with the service (or at interpreter exit).
            weakref.finalize(self, shutil.rmtree, tmp_dir, ignore_errors=True)
        self._tmp_dir = Path(tmp_dir)
        self._recent_files: deque[Path] = deque()
        self._files_lock = threading.Lock()
        self._active = 0
        self._active_lock = threading.Lock()

    # ---- loading -----------------------------------------------------------------------------

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | None = None) -> DemoService:
        """One model: the given checkpoint, else the default of :meth:`ModelRegistry.discover`."""
        return ModelRegistry.discover(None if checkpoint is None else [checkpoint], device=device).get()

    # ---- facts for the page ------------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.pipe.info)

    @property
    def trained(self) -> bool:
        return self.fallback_reason is None and bool(self.info.get("trained", False))

    @property
    def max_tokens(self) -> int:
        return int(self.encoder.max_length)

    @property
    def defaults(self) -> dict[str, Any]:
        """Steps, guidance and sampler of the model's ``PipelineConfig``, kept inside the UI's ranges."""
        sampling = self.pipe.config
        return {
            "num_inference_steps": min(max(sampling.num_inference_steps, MIN_STEPS), MAX_STEPS),
            "guidance_scale": min(max(sampling.guidance_scale, MIN_GUIDANCE), MAX_GUIDANCE),
            "sampler": sampling.sampler,
            "seed": DEFAULT_SEED,
        }

    @property
    def active_generations(self) -> int:
        """Generations currently running (a cancelled one leaves this count when it is closed)."""
        return self._active

    def capability(self) -> str:
        """One line for the top of the page: what this model draws, at what size, and its card."""
        info = self.info
        if not self.trained:
            why = self.fallback_reason or "this checkpoint is not a trained model"
            return ("⚠️ **UNTRAINED MODEL — random weights.** It draws coloured noise; the state plots still "
                    f"show how CrossWKV behaves. Reason: {why}.")
        summary = info.get("summary") or "A DIR-7 model (its card has no summary)."
        card = self.card_location()
        where = f"[model card]({card})" if "://" in card else f"model card: `{card}`"
        return f"**{self.name}:** {summary} · {where}"

    def card_location(self) -> str:
        """The model card's URL when the repository's is known (see repo_url), else its path."""
        path = self.checkpoint_path / "README.md" if self.checkpoint_path else None
        if path is None:
            return "none"
        try:
            relative = path.resolve().relative_to(REPO_ROOT)
        except ValueError:
            return str(path)  # a model outside the repository: its path on this machine
        base = repo_url()
        return f"{base}{relative.as_posix()}" if base else relative.as_posix()

    def describe(self) -> str:
        """The model's technical details, one line (under the capability line)."""
        info = self.info
        bits = [f"Model **{self.name}**"]
        if not self.trained:
            bits.append("random init")
        params = info.get("params")
        if isinstance(params, int):
            bits.append(f"{params / 1e6:.1f} M parameters")
        if info.get("image_size"):
            bits.append(f"{info['image_size']}×{info['image_size']} px")
        if info.get("cross_mode"):
            bits.append(f"CrossWKV mode: {info['cross_mode']}")
        if info.get("text_encoder"):
            bits.append(f"text encoder: {info['text_encoder']} (≤ {self.max_tokens} tokens)")
        bits.append(f"device: {self.device}")
        return " · ".join(bits)

    @property
    def examples(self) -> list[str]:
        """Example prompts from the model card (chosen by the evaluator: ``python -m dir7.eval examples``)."""
        return list(self.info.get("examples") or [])

    @property
    def device(self) -> str:
        return str(self.pipe.device)

    @property
    def has_state(self) -> bool:
        """Whether the model's text path has a recurrent state whose statistics the page plots."""
        return bool(getattr(self.pipe, "has_state", True))

    # ---- validation --------------------------------------------------------------------------

    def validate(
        self,
        prompt: Any,
        negative_prompt: Any,
        num_inference_steps: Any,
        guidance_scale: Any,
        sampler: Any,
        seed: Any,
        randomize_seed: Any = False,
    ) -> tuple[GenerationRequest, list[str]]:
        """Turn raw UI/API values into a request, or raise InputError. Also returns notices for the user."""
        notices: list[str] = []
        prompt = self._check_prompt(prompt, "Prompt", notices, required=True)
        negative = self._check_prompt(negative_prompt, "Negative prompt", notices, required=False)
        steps = _as_int(num_inference_steps, "Steps", MIN_STEPS, MAX_STEPS)
        guidance = _as_float(guidance_scale, "Guidance scale", MIN_GUIDANCE, MAX_GUIDANCE)
        if not isinstance(sampler, str) or sampler not in self.samplers:
            raise InputError(f"Sampler must be one of {', '.join(self.samplers)}; got {_short_repr(sampler)}.")
        if randomize_seed is True:
            # A randomized run ignores whatever is in the seed box; the seed used is reported back.
            seed_value = secrets.randbelow(MAX_SEED + 1)
        else:
            if seed is None or (isinstance(seed, str) and not seed.strip()):
                raise InputError(f"Seed is empty: enter a whole number between 0 and {MAX_SEED}, or tick Randomize.")
            seed_value = _as_int(seed, "Seed", 0, MAX_SEED)
        request = GenerationRequest(prompt, negative, steps, guidance, seed_value, sampler)
        try:
            # The pipeline's own rules (shared with the Python API) are the final word.
            self.pipe.check_inputs(
                request.prompt,
                negative_prompt=request.negative_prompt,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance_scale,
                seed=request.seed,
                sampler=request.sampler,
            )
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return request, notices

    def _check_prompt(self, text: Any, what: str, notices: list[str], *, required: bool) -> str | None:
        if text is None and not required:
            return None
        if not isinstance(text, str):
            raise InputError(f"{what} must be text, got {_short_repr(text)}.")
        if not text.strip():
            if required:
                raise InputError("Please enter a prompt: it is empty or only whitespace.")
            return None
        if len(text) > MAX_PROMPT_CHARS:
            raise InputError(
                f"{what} is {len(text):,} characters long; the limit is {MAX_PROMPT_CHARS:,} "
                f"(the text encoder reads at most {self.max_tokens} tokens anyway)."
            )
        limit = self.max_tokens
        n_tokens = int(self.encoder.count_tokens(text))
        if n_tokens > limit:
            notices.append(
                f"{what} is {n_tokens} tokens long; the text encoder reads only the first {limit} "
                f"(special tokens included), so the rest was ignored."
            )
        unknown = self.pipe.unknown_words(text) if required else []
        if unknown:
            shown = ", ".join(unknown[:12]) + (f" and {len(unknown) - 12} more" if len(unknown) > 12 else "")
            notices.append(
                f"Never seen in training: {shown}. The model draws only what its training captions "
                f"describe, so it ignores or misreads {'these words' if len(unknown) > 1 else 'this word'}."
            )
        return text

    # ---- sampling ----------------------------------------------------------------------------

    def generate(
        self, request: GenerationRequest, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[StepUpdate]:
        """Yield one StepUpdate per denoising step; the last carries the final image.

        Cancellation happens between steps: either ``should_stop()`` turns true, or the consumer
        stops iterating and closes this generator (what Gradio does on Stop). Either way the
        pipeline's generator is closed so no more steps run.
        """
        start = time.perf_counter()
        rms_steps: list[np.ndarray] = []
        rank_steps: list[np.ndarray] = []
        timesteps: list[int] = []
        with self._active_lock:
            self._active += 1
        events = self.pipe.steps(
            request.prompt,
            negative_prompt=request.negative_prompt,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            seed=request.seed,
            sampler=request.sampler,
        )
        try:
            for ev in events:
                # Only one image per request in the demo: keep batch element 0 (a model without a
                # recurrent state, cross_mode="attention" or the DiT, has no statistics: [0, 0])
                rms_steps.append(_to_numpy(ev.state_rms)[0] if self.has_state else np.zeros((0, 0)))
                rank_steps.append(_to_numpy(ev.stable_rank)[0] if self.has_state else np.zeros((0, 0)))
                timesteps.append(int(ev.timestep))
                final = ev.images[0] if ev.images else None
                if final is not None:
                    final.info.update(png_text(request, self.name, self.pipe.config.guidance_interval))
                yield StepUpdate(
                    step=int(ev.step) + 1,
                    total=int(ev.total),
                    timestep=int(ev.timestep),
                    preview=ev.preview[0],
                    rms=np.stack(rms_steps),
                    stable_rank=np.stack(rank_steps),
                    elapsed_s=time.perf_counter() - start,
                    image=final,
                    timesteps=list(timesteps),
                )
                if final is not None:
                    return
                if should_stop is not None and should_stop():
                    return
        finally:
            events.close()  # no-op when it ran to the end; otherwise no further step is computed
            with self._active_lock:
                self._active -= 1

    def save_png(self, image: Image.Image, request: GenerationRequest) -> Path:
        """Write the final image as PNG for download; keeps only the most recent files on disk."""
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        model = re.sub(r"[^\w.-]+", "-", self.name)  # a name given as a path (see discover) has slashes
        name = f"{model}_seed{request.seed}_{request.num_inference_steps}steps_{secrets.token_hex(4)}.png"
        path = self._tmp_dir / name
        pnginfo = PngImagePlugin.PngInfo()
        for key, value in image.info.items():
            if isinstance(value, str):
                pnginfo.add_text(key, value)
        image.save(path, format="PNG", pnginfo=pnginfo)
        with self._files_lock:
            self._recent_files.append(path)
            while len(self._recent_files) > 64:
                self._recent_files.popleft().unlink(missing_ok=True)
        return path


@dataclass(frozen=True)
class ModelSource:
    """A model the page offers, before it is loaded."""

    name: str  # unique among the page's models: the selector's entry and the API's ``model`` value
    path: Path | None = None  # its model directory; None for the untrained stand-in
    fallback_reason: str | None = None  # why the untrained stand-in is there

    def load(self, device: str) -> DemoService:
        """Read the weights, move them to ``device`` and warm up (seconds on a CPU; see warm_up)."""
        pipe = build_untrained_pipeline() if self.path is None else dir7.DIR7Pipeline.from_pretrained(self.path)
        pipe = pipe.to(device)
        start = time.perf_counter()
        pipe.warm_up()  # compiles the kernels before the model's first request, not during it
        log.info("%s loaded; warm-up (kernels compiled or loaded from the cache): %.1f s",
                 self.name, time.perf_counter() - start)
        return DemoService(pipe, name=self.name, fallback_reason=self.fallback_reason, checkpoint_path=self.path)


class ModelRegistry:
    """The models the page offers, by name, the first being the default. Each is loaded on first
    use (:meth:`get`) and then kept: visitors switch between models without waiting twice."""

    def __init__(self, sources: Sequence[ModelSource], device: str | None = None,
                 loaded: Sequence[DemoService] = ()):
        if not sources:
            raise ValueError("a ModelRegistry needs at least one model")
        self.device = resolve_device(device)
        self._sources = {source.name: source for source in sources}
        if len(self._sources) < len(sources):
            raise ValueError(f"two models are named alike: {', '.join(s.name for s in sources)}")
        self._loaded = {service.name: service for service in loaded}
        # one lock per model: requests for a model being loaded wait for that one load (instead of
        # loading it again), while models already loaded stay available
        self._locks = {name: threading.Lock() for name in self._sources}

    @classmethod
    def discover(cls, checkpoints: Sequence[str | Path] | None = None, *, device: str | None = None,
                 root: Path = CHECKPOINTS_DIR) -> ModelRegistry:
        """The models to offer, none loaded yet.

        ``checkpoints`` (``--checkpoint``, repeatable): exactly those model directories, in that
        order; else ``$DIR7_CHECKPOINT`` alone; else every model directory shipped in ``root``,
        ``dir7.default_checkpoint()``'s first, the others by name. With none of them, an untrained
        stand-in. A directory that was asked for but holds no model is an error, not a fallback:
        silently showing noise instead of the model someone pointed at would be misleading.
        Every model's configuration is read now, so a broken one fails at start-up, not when a
        visitor first selects it (FileNotFoundError, or dir7.CheckpointError).
        """
        if checkpoints:
            paths = [Path(path) for path in checkpoints]
        elif os.environ.get("DIR7_CHECKPOINT"):
            paths = [dir7.default_checkpoint()]
        else:
            paths = shipped_models(root)
        for path in paths:
            dir7.load_configs(path)
        if not paths:
            # The page gets a short reason; the log names the folder searched (a server path).
            log.warning("no model directory in %s; using a randomly initialised %s model", root, DEMO_PRESET)
            return cls([ModelSource(FALLBACK_NAME, fallback_reason="no trained checkpoint was found")], device)
        return cls([ModelSource(name, path) for name, path in zip(model_names(paths), paths)], device)

    @classmethod
    def of(cls, *services: DemoService) -> ModelRegistry:
        """Models already loaded (tests, the latency benchmark), the first being the default."""
        sources = [ModelSource(s.name, s.checkpoint_path, s.fallback_reason) for s in services]
        return cls(sources, device=services[0].device if services else None, loaded=services)

    @property
    def names(self) -> list[str]:
        return list(self._sources)

    @property
    def default(self) -> str:
        return self.names[0]

    def resolve(self, name: Any) -> str:
        """The model's name; None or "" is the default. InputError for a name not offered here."""
        if name is None or name == "":
            return self.default
        if not isinstance(name, str) or name not in self._sources:
            raise InputError(f"Unknown model {_short_repr(name)}: this demo serves {', '.join(self.names)}.")
        return name

    def is_loaded(self, name: Any = None) -> bool:
        return self.resolve(name) in self._loaded

    def get(self, name: Any = None) -> DemoService:
        """The model, loaded now if it is its first use (the caller waits: tell the user)."""
        name = self.resolve(name)
        with self._locks[name]:
            if name not in self._loaded:
                self._loaded[name] = self._sources[name].load(self.device)
            return self._loaded[name]

    @property
    def active_generations(self) -> int:
        return sum(service.active_generations for service in list(self._loaded.values()))


def model_names(paths: Sequence[Path]) -> list[str]:
    """Each model's name: its folder's, or where two folders share one (two runs' "ema") the
    fewest trailing path parts that tell them apart ("run1/ema"). Never the whole server path:
    the names are shown to visitors and written into the images."""
    parts = [path.resolve().parts for path in paths]
    if len(set(parts)) < len(parts):
        raise ValueError(f"a model was given twice: {', '.join(map(str, paths))}")
    for n in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    raise AssertionError("unreachable: distinct paths differ in some trailing part")


def shipped_models(root: Path = CHECKPOINTS_DIR) -> list[Path]:
    """The model directories in ``root``: ``dir7.default_checkpoint()``'s first, the others by name."""
    if not root.is_dir():
        return []
    try:
        first = dir7.default_checkpoint().resolve()
    except FileNotFoundError:
        first = None
    models = [path for path in root.iterdir() if (path / MODEL_CONFIG).is_file()]
    return sorted(models, key=lambda path: (path.resolve() != first, path.name))


class StopFlags:
    """One stop flag per browser session's running generation, whatever its model: the Stop
    button sets it, the sampling loop reads it between steps (nothing waits in Gradio's queue)."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        """A fresh stop flag for the generation a session starts now (replacing an older one)."""
        flag = threading.Event()
        with self._lock:
            self._flags[session] = flag
        return flag

    def request(self, session: str) -> bool:
        """Ask the session's running generation to stop after its current step; False if none runs."""
        with self._lock:
            flag = self._flags.get(session)
        if flag is None:
            return False
        flag.set()
        return True

    def release(self, session: str, flag: threading.Event) -> None:
        with self._lock:
            if self._flags.get(session) is flag:
                del self._flags[session]


def resolve_device(device: str | None) -> str:
    """'auto'/None → CUDA when present (the GPU kernels are used there), else CPU."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but CUDA is not available here (try --device cpu)")
    return device


def build_untrained_pipeline(text_encoder: Any = None, **config_overrides: Any) -> Any:
    """A randomly initialised ``dir7-demo`` pipeline (tests pass overrides for a tiny model)."""
    cfg = dir7.DIR7Config.from_preset(DEMO_PRESET, **config_overrides)
    return dir7.DIR7Pipeline.from_config(cfg, text_encoder=text_encoder)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
