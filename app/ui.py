"""The Gradio page: model selector, controls, streamed preview, progress, state figures, explanation panel."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import gradio as gr
from gradio.components.plot import PlotData

from app.plots import heatmap_spec, to_json, trajectory_spec
from app.service import (
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    MIN_GUIDANCE,
    MIN_STEPS,
    DemoService,
    GenerationRequest,
    InputError,
    ModelRegistry,
    StepUpdate,
    StopFlags,
    repo_url,
)

log = logging.getLogger(__name__)

# Queue defaults: one sampling job at a time (the model is shared, and on a 2-core CPU two jobs
# in parallel would only slow each other down); a bounded wait list so that a burst of visitors
# gets a "queue is full" answer instead of waiting for ever.
DEFAULT_MAX_QUEUE = 16
DEFAULT_CONCURRENCY = 1
# Streaming is rate-limited on the page's side: every update makes the browser redraw, and a page
# busy redrawing streamed figures on a loaded machine stops answering clicks (Stop included).
# The x0 preview and the status are sent at most every DEFAULT_MIN_UPDATE_INTERVAL_S, the two
# figures at most every DEFAULT_FIGURE_INTERVAL_S (their data keep every step; the final image
# and figures are always sent).
DEFAULT_MIN_UPDATE_INTERVAL_S = 0.4
DEFAULT_FIGURE_INTERVAL_S = 1.5

NOTEBOOKS = (
    ("01_wkv_recurrence.ipynb", "the WKV-7 recurrence and its state"),
    ("02_crosswkv.ipynb", "CrossWKV step by step, paper vs prefix mode"),
    ("03_state_dynamics.ipynb", "these statistics across prompts, guidance and seeds"),
    ("04_state_tracking.ipynb", "what the state can track that attention cannot"),
)
# the prompt box's placeholder for a model whose card lists no example prompts
PLACEHOLDER = "a red circle left of a blue square"

CSS = """
#dir7-capability.untrained { border: 2px solid #d97706; background: #fff7ed; border-radius: 8px; padding: 8px 12px; }
#dir7-capability.untrained, #dir7-capability.untrained * { color: #7c2d12; }
#dir7-header h1 { margin-bottom: 0.2em; }
#dir7-details { font-size: 0.85em; opacity: 0.8; }
/* the images are tiny (64 px): scale them up to the box, keeping the pixels sharp */
#dir7-image img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
"""


def notebooks_markdown() -> str:
    """Where the notebooks are: links into the repository when its URL is known (a Space), else
    their paths and the command that opens them (the demo's server serves no repository file)."""
    base = repo_url()
    if base:
        items = "\n".join(f"- [`notebooks/{name}`]({base}notebooks/{name}): {what}" for name, what in NOTEBOOKS)
        return f"**Learn more** in the notebooks:\n{items}"
    items = "\n".join(f"- `notebooks/{name}`: {what}" for name, what in NOTEBOOKS)
    return ("**Learn more** in the notebooks of the repository, opened from its root with "
            f"`pip install -r requirements-dev.txt && jupyter lab notebooks/`:\n{items}")


def explanation_markdown() -> str:
    return f"""
**What is sampled.** DIR-7 turns noise into an image in the chosen number of denoising steps.
The image is the model's current guess of the *final* image (its x₀ prediction), so it sharpens
as sampling proceeds; after the last step it is the result.

**Where the text enters.** Each DIR-7 block has a **CrossWKV** layer: an RWKV-7 scan whose
*state* (one small matrix per head) is where the text is stored and read by the image tokens.
The figures show the final state of each CrossWKV layer's scan at every step (conditional branch):
**state RMS** `sqrt(mean(S²))`, how much is stored, and **stable rank** `‖S‖_F² / ‖S‖_2²`, between 1
and the head size, over how many directions it is spread.

**What healthy looks like.** In *across denoising* each line is one layer (the colour bar gives
its depth, mean over its heads): healthy curves stay bounded and change smoothly from step to
step, with a stable rank well above 1; a line that climbs without bound is unstable, one pinned
near rank 1 keeps a single direction. RMS is on a log scale, so layers that hold almost nothing
(often the first, or ones added to a model late in training) still show as their own line. In
*layer × head* each row is a layer (first at the top) and each column a head, at the current step.

Same prompt, settings and seed give the same image: untick *Randomize* and reuse the seed shown.

{notebooks_markdown()}
"""


def _progress_markdown(update: StepUpdate, request: GenerationRequest, notices: list[str], model: str) -> str:
    width = 20
    filled = round(width * update.step / max(update.total, 1))
    bar = "█" * filled + "░" * (width - filled)
    percent = 100 * update.step / max(update.total, 1)
    settings = f"{model} · seed {request.seed} · {request.sampler} · guidance {request.guidance_scale:g}"
    if update.done:
        head = f"**Done** — {update.total} steps in {update.elapsed_s:.1f} s · {settings}"
    else:
        head = (
            f"**Step {update.step} / {update.total}** `{bar}` {percent:.0f}% · "
            f"t = {update.timestep} · {update.elapsed_s:.1f} s · {settings}"
        )
    return _with_notices(head, notices)


def _with_notices(text: str, notices: list[str]) -> str:
    return text + "".join(f"\n\n⚠️ {note}" for note in notices)


def _stopped_markdown(update: StepUpdate | None, model: str, seed: int | None = None) -> str:
    """The last status of a stopped run (``seed`` None: stopped before its inputs were read)."""
    done = f" after step {update.step} of {update.total}" if update is not None else " before the first step"
    seed_text = f", seed {seed}" if seed is not None else ""
    return f"**Stopped**{done}{seed_text} · {model}. Press Generate to start again."


def _input_error(exc: InputError) -> gr.Error:
    # A toast with the message, no traceback in the page or the server log.
    return gr.Error(str(exc), title="Please check the input", print_exception=False)


def _load_model(
    models: ModelRegistry, name: str, show: Callable[[str], tuple[Any, ...]]
) -> Generator[tuple[Any, ...], None, DemoService]:
    """``models.get(name)`` inside a streaming handler (``service = yield from ...``): while a model
    loads, ``show(text)`` puts a notice in the page instead of leaving it silent for seconds; if it
    fails, a short message replaces the notice (the details, with server paths, go to the log)."""
    if not models.is_loaded(name):
        yield show(f"⏳ **Loading {name}…** (first use of this model: its weights are read and warmed up, "
                   "a few seconds)")
    try:
        return models.get(name)
    except Exception:
        log.exception("loading model %r failed", name)
        message = f"The model {name} could not be loaded; the details are in the server log."
        yield show(f"⚠️ {message}")
        raise gr.Error(f"{message} Please choose another model or try again.", title="Model unavailable",
                       print_exception=False) from None


def as_registry(models: ModelRegistry | DemoService) -> ModelRegistry:
    """A page can be built around one loaded model (as the latency benchmark does) or several."""
    return models if isinstance(models, ModelRegistry) else ModelRegistry.of(models)


def make_generate_handler(models: ModelRegistry | DemoService,
                          min_update_interval_s: float = DEFAULT_MIN_UPDATE_INTERVAL_S,
                          figure_interval_s: float = DEFAULT_FIGURE_INTERVAL_S, stops: StopFlags | None = None):
    """The streaming event handler; a plain function of raw values so tests can call it directly.
    ``stops``: the page's stop flags, shared with its Stop button."""
    models = as_registry(models)
    stops = stops if stops is not None else StopFlags()

    def generate(
        prompt: Any,
        negative_prompt: Any,
        num_inference_steps: Any,
        guidance_scale: Any,
        sampler: Any,
        seed: Any,
        randomize_seed: Any,
        model: Any = None,
        gr_request: gr.Request = None,
    ) -> Iterator[tuple[Any, ...]]:
        # Outputs: image, status, seed used, trajectory figure, heatmap figure, PNG file, model used.
        # ``model`` is the selector's value when Generate was clicked (None: the default): this run
        # keeps it whatever is selected meanwhile. ``gr_request`` (Gradio passes it) names the
        # browser session, whose Stop button sets the flag this run checks between steps; called
        # directly (tests), nothing can stop it.
        try:
            name = models.resolve(model)
        except InputError as exc:
            raise _input_error(exc) from None
        session = getattr(gr_request, "session_hash", None)
        # the flag exists from the click on, so Stop also works while the model is still loading
        stop = stops.start(session) if session else threading.Event()
        try:
            yield from _run(name, stop, (prompt, negative_prompt, num_inference_steps, guidance_scale, sampler, seed,
                                         randomize_seed))
        finally:
            if session:
                stops.release(session, stop)

    def _run(name: str, stop: threading.Event, inputs: tuple) -> Iterator[tuple[Any, ...]]:
        """One generation with model ``name``, from loading it (if it is its first use) to the final image."""
        service = yield from _load_model(  # the loading notice goes in the status line
            models, name, lambda text: (gr.skip(), text, gr.skip(), gr.skip(), gr.skip(), gr.skip(), name))
        if stop.is_set():  # stopped while the model loaded
            yield (gr.skip(), _stopped_markdown(None, name), gr.skip(), gr.skip(), gr.skip(), gr.skip(), name)
            return
        try:
            request, notices = service.validate(*inputs)
        except InputError as exc:
            raise _input_error(exc) from None
        for note in notices:
            gr.Warning(note, title="About this prompt")

        # First update right away: clear the previous result and show the seed and model used.
        yield (
            None,
            _with_notices(f"**Starting…** {name} · seed {request.seed}", notices),
            request.seed,
            None,
            None,
            None,
            name,
        )
        update = None
        last_sent = last_figures = float("-inf")  # the first step is always streamed at once
        try:
            for update in service.generate(request, should_stop=stop.is_set):
                now = time.monotonic()
                if not update.done and now - last_sent < min_update_interval_s:
                    continue  # coalesce fast steps; the next update carries their statistics
                last_sent = now
                if service.has_state and (update.done or now - last_figures >= figure_interval_s):
                    last_figures = now
                    figures = (  # JSON for plotly.js, without building validated go.Figure objects
                        PlotData(type="plotly", plot=to_json(trajectory_spec(
                            update.rms, update.stable_rank, update.total, update.timesteps))),
                        PlotData(type="plotly", plot=to_json(heatmap_spec(
                            update.rms[-1], update.stable_rank[-1], update.step, update.total))),
                    )
                elif update.done:
                    figures = (None, None)  # no state to plot: the API's result says so plainly
                else:
                    figures = (gr.skip(), gr.skip())
                status = _progress_markdown(update, request, notices, name)
                if update.done:
                    png = str(service.save_png(update.image, request))
                    yield (update.image, status, request.seed, *figures, png, name)
                else:  # the x0 preview; the download appears with the final image only
                    yield (update.preview, status, request.seed, *figures, gr.skip(), name)
        except Exception:
            # Log the details for the operator; the user gets a short message, not a stack trace.
            log.exception("sampling failed for %r", request)
            raise gr.Error(
                "Sampling failed unexpectedly; the details are in the server log. Please try again.",
                title="Something went wrong",
                print_exception=False,
            ) from None
        if stop.is_set() and (update is None or not update.done):
            # the last word of this run, so no in-flight step update can overwrite it
            yield (gr.skip(), _stopped_markdown(update, name, request.seed), request.seed, gr.skip(), gr.skip(),
                   gr.skip(), name)
            return
        if update is None or not update.done:
            # Only reached if the pipeline stopped early without a final image.
            raise gr.Error("Sampling ended before the final image.", print_exception=False)

    return generate


# The parts of the page that depend on the model, in the order the model switch updates them.
MODEL_VIEW = ("capability", "details", "prompt", "examples", "steps", "guidance", "sampler", "no_state", "plots")


def model_view(service: DemoService) -> dict[str, dict[str, Any]]:
    """The model-dependent properties of the page's parts (keys: MODEL_VIEW): the page is built
    with the default model's and updated with another's when it is selected."""
    defaults = service.defaults
    return {
        "capability": {"value": service.capability(), "elem_classes": [] if service.trained else ["untrained"]},
        "details": {"value": f"{service.describe()} · the text encoder reads up to {service.max_tokens} tokens"},
        "prompt": {"placeholder": (service.examples or [PLACEHOLDER])[0]},
        "examples": {"samples": [[p] for p in service.examples], "visible": bool(service.examples)},
        "steps": {"value": defaults["num_inference_steps"]},
        "guidance": {"value": defaults["guidance_scale"]},
        "sampler": {"value": defaults["sampler"]},
        "no_state": {"visible": not service.has_state},
        "plots": {"visible": service.has_state},
    }


def make_model_handler(models: ModelRegistry | DemoService):
    """The model selector's event handler: yields one update per MODEL_VIEW part, the model's view
    (after a loading notice in the capability line when the model is not loaded yet)."""
    models = as_registry(models)

    def select_model(model: Any) -> Iterator[tuple[Any, ...]]:
        try:
            name = models.resolve(model)
        except InputError as exc:
            raise _input_error(exc) from None
        service = yield from _load_model(  # the notice goes in the capability line, whose model it was
            models, name, lambda text: tuple(gr.update(value=text, elem_classes=[]) if part == "capability"
                                             else gr.skip() for part in MODEL_VIEW))
        view = model_view(service)
        yield tuple(gr.update(**view[part]) for part in MODEL_VIEW)

    return select_model


def build_demo(
    models: ModelRegistry | DemoService,
    *,
    max_queue: int = DEFAULT_MAX_QUEUE,
    concurrency_limit: int = DEFAULT_CONCURRENCY,
    min_update_interval_s: float = DEFAULT_MIN_UPDATE_INTERVAL_S,
    figure_interval_s: float = DEFAULT_FIGURE_INTERVAL_S,
) -> gr.Blocks:
    """Build the page around a registry of models (or one loaded model). The default model is
    loaded now if the caller has not loaded it yet; the others are loaded when first selected."""
    models = as_registry(models)
    service = models.get()
    view = model_view(service)
    stops = StopFlags()
    # Gradio's cache (streamed previews, the PNGs) is swept hourly; nothing else on disk is served.
    with gr.Blocks(title="DIR-7 · CrossWKV text-to-image", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# DIR-7: text-to-image on RWKV-7, with CrossWKV's state live", elem_id="dir7-header")
        # what the model can draw comes first: a visitor should not have to guess its vocabulary
        with gr.Row(equal_height=True):
            # with a single model the selector only names it (disabled, nothing to choose)
            model = gr.Dropdown(models.names, value=models.default, label="Model", elem_id="model",
                                interactive=len(models.names) > 1, scale=1, min_width=200)
            capability = gr.Markdown(**view["capability"], elem_id="dir7-capability")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                prompt = gr.Textbox(label="Prompt", **view["prompt"], lines=2, max_length=MAX_PROMPT_CHARS,
                                    elem_id="prompt")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                # A Dataset rather than gr.Examples: its prompts change with the model, and a model
                # without example prompts hides it (gr.Examples cannot start empty).
                examples = gr.Dataset(components=[prompt], **view["examples"], type="values",
                                      label="Examples (each drawn correctly in every scored image)",
                                      elem_id="examples")
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    negative = gr.Textbox(label="Negative prompt", placeholder="optional", lines=1,
                                          elem_id="negative")
                    with gr.Row():
                        steps = gr.Slider(MIN_STEPS, MAX_STEPS, **view["steps"], step=1, label="Steps",
                                          elem_id="steps")
                        guidance = gr.Slider(MIN_GUIDANCE, MAX_GUIDANCE, **view["guidance"], step=0.5,
                                             label="Guidance scale", elem_id="guidance")
                    sampler = gr.Dropdown(list(service.samplers), **view["sampler"], label="Sampler",
                                          elem_id="sampler")
                    with gr.Row():
                        # No precision/min/max on purpose: a fractional or out-of-range seed reaches the
                        # handler and gets a clear message instead of being silently rounded/clamped.
                        seed = gr.Number(value=service.defaults["seed"], label=f"Seed (0 – {MAX_SEED})",
                                         elem_id="seed", scale=2)
                        randomize = gr.Checkbox(value=False, label="Randomize seed", elem_id="randomize", scale=1)
                details = gr.Markdown(**view["details"], elem_id="dir7-details")
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(
                    label="x₀ preview → final image",
                    format="png",
                    type="pil",
                    interactive=False,
                    height=320,
                    buttons=["download", "fullscreen"],
                    elem_id="dir7-image",
                )
                status = gr.Markdown("Ready.", label="Status", elem_id="status")
                with gr.Row():
                    seed_used = gr.Number(label="Seed used", precision=0, interactive=False, elem_id="seed-used")
                    # which model made the image shown, whatever the selector says now
                    model_used = gr.Textbox(label="Model used", interactive=False, elem_id="model-used")
                    download = gr.File(label="Final image (PNG)", interactive=False, elem_id="download")
        no_state = gr.Markdown("This model has no recurrent state (its text path is softmax attention), so there "
                               "are no state statistics to plot.", **view["no_state"], elem_id="no-state")
        with gr.Row(**view["plots"]) as plots:
            trajectory_plot = gr.Plot(label="State across denoising steps", elem_id="plot-trajectory")
            heatmap_plot = gr.Plot(label="State by layer × head, current step", elem_id="plot-heatmap")
        with gr.Accordion("What do the plots mean?", open=False, elem_id="explanation"):
            gr.Markdown(explanation_markdown())

        parts = {"capability": capability, "details": details, "prompt": prompt, "examples": examples,
                 "steps": steps, "guidance": guidance, "sampler": sampler, "no_state": no_state, "plots": plots}
        model.change(
            fn=make_model_handler(models),
            inputs=[model],
            outputs=[parts[part] for part in MODEL_VIEW],
            preprocess=False,  # an unknown name gets the handler's message, not Gradio's
            show_progress="hidden",  # the capability line says when a model is loading
            # its own queue slots, not limited to a few: switching to a loaded model must not wait
            # behind a generation or another visitor's load (loads of one model run once anyway)
            concurrency_limit=None,
            api_visibility="private",
        )
        examples.click(fn=lambda sample: sample[0], inputs=[examples], outputs=[prompt], queue=False,
                       api_visibility="private")
        gr.on(
            triggers=[generate_btn.click, prompt.submit],
            fn=make_generate_handler(models, min_update_interval_s, figure_interval_s, stops),
            inputs=[prompt, negative, steps, guidance, sampler, seed, randomize, model],
            outputs=[image, status, seed_used, trajectory_plot, heatmap_plot, download, model_used],
            api_name="generate",
            # Raw values reach the handler, which validates everything itself: Gradio's own
            # preprocessing would round, clamp or reject some inputs with a less helpful message.
            preprocess=False,
            # Our own progress text is in the page; a full overlay would hide the streamed preview.
            show_progress="minimal",
            concurrency_limit=concurrency_limit,
        )
        # Stop sets the session's stop flag, outside the queue (it must not wait behind the job it
        # stops); the sampling loop reads it after each step and ends the stream with "Stopped".
        def stop(request: gr.Request) -> None:
            stops.request(request.session_hash)

        stop_btn.click(fn=stop, inputs=None, outputs=None, queue=False, api_name="stop")
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency_limit)
    return demo


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` that belong to the page itself (Gradio 6 takes CSS there)."""
    return {"css": CSS}
