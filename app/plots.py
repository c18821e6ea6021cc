"""Plotly figures of CrossWKV state statistics, redrawn while the demo samples.

Both figures show the two metrics side by side so they can be compared at a glance:
- RMS of a layer's final CrossWKV state (how much text information the state holds), on a log
  axis: the layers' states differ by orders of magnitude (a new or idle layer sits near 0.01, a
  busy one near 1), and on a linear axis the small ones all lie on the floor;
- its stable rank ||S||_F^2 / ||S||_2^2 (how many directions that information is spread over).

Layers get colours from a sequential scale, one per layer for any depth (first layer dark, last
light), explained by a colour bar instead of a legend that would need scrolling.

The figures are plain dicts (``*_spec``) with the bare "none" template: the page streams them as
JSON without building a ``go.Figure``, whose validation cost 31 ms per update of the trajectory
alone (``make_subplots`` and the default template cost more). ``trajectory_figure`` and
``heatmap_figure`` wrap the same specs in validated figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import get_colorscale, sample_colorscale

METRICS = (("rms", "State RMS"), ("stable_rank", "Stable rank"))
LAYER_SCALE = "Plasma"
_SCALE_END = 0.85  # Plasma's last stretch is a pale yellow that vanishes on white
_RMS_FLOOR = 1e-6  # an all-zero state (an untrained layer) has RMS 0, which a log axis cannot show
_HEIGHT = 340
_AXIS_STYLE = {"gridcolor": "#e5e7eb", "linecolor": "#9ca3af", "zeroline": False, "automargin": True}


def layer_colors(n_layers: int) -> list[str]:
    """One distinct colour per layer, evenly spaced along a perceptual sequential scale."""
    if n_layers <= 1:
        return sample_colorscale(LAYER_SCALE, [0.0])
    return sample_colorscale(LAYER_SCALE, [_SCALE_END * i / (n_layers - 1) for i in range(n_layers)])


def _check(rms: np.ndarray, stable_rank: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    rms, stable_rank = np.asarray(rms, dtype=float), np.asarray(stable_rank, dtype=float)
    if rms.ndim != ndim or rms.shape != stable_rank.shape:
        raise ValueError(
            f"expected two arrays of equal shape with {ndim} dims, got {rms.shape} and {stable_rank.shape}"
        )
    return rms, stable_rank


def _two_panel_layout(title: str, domains: tuple[tuple[float, float], tuple[float, float]], bottom: int) -> dict:
    """Layout of two side-by-side panels (x/y and x2/y2), each titled with its metric."""
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "height": _HEIGHT,
        "margin": {"l": 60, "r": 30, "t": 70, "b": bottom},
        "template": "none",  # not the default "plotly" template: it would add ~7 KB to every update
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "font": {"color": "#1f2937"},
        # Keeps zoom/pan while the figure is replaced on every update.
        "uirevision": "dir7-state",
        "showlegend": False,
        "annotations": [],
    }
    for i, ((lo, hi), (_, label)) in enumerate(zip(domains, METRICS), start=1):
        suffix = "" if i == 1 else str(i)
        layout[f"xaxis{suffix}"] = {"domain": [lo, hi], "anchor": f"y{suffix}", **_AXIS_STYLE}
        layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", **_AXIS_STYLE}
        layout["annotations"].append(
            {"text": label, "x": (lo + hi) / 2, "y": 1.0, "xref": "paper", "yref": "paper",
             "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 15}}
        )  # fmt: skip
    return layout


def trajectory_spec(
    rms: np.ndarray,
    stable_rank: np.ndarray,
    total_steps: int | None = None,
    timesteps: Sequence[int] | None = None,
) -> dict:
    """Per-layer metric (mean over heads) against the denoising step, for the steps done so far.

    ``rms`` and ``stable_rank`` are ``[steps, layers, heads]``. ``total_steps`` fixes the x range so
    the lines visibly grow towards the end instead of the axis rescaling on every update.
    """
    rms, stable_rank = _check(rms, stable_rank, 3)
    n_steps, n_layers, n_heads = rms.shape
    colors = layer_colors(n_layers)
    x = list(range(1, n_steps + 1))
    t = [int(v) for v in timesteps] if timesteps is not None and len(timesteps) == n_steps else [None] * n_steps
    data = []
    for panel, values in enumerate((np.maximum(rms, _RMS_FLOOR), stable_rank), start=1):
        per_layer = values.mean(axis=2)  # mean over heads -> [steps, layers]
        suffix = "" if panel == 1 else str(panel)
        label = METRICS[panel - 1][1]
        for layer in range(n_layers):
            data.append({
                "type": "scatter", "x": x, "y": _values(per_layer[:, layer]), "xaxis": f"x{suffix}",
                "yaxis": f"y{suffix}",
                "mode": "lines+markers" if n_steps < 30 else "lines",
                "name": f"layer {layer}",
                "line": {"color": colors[layer], "width": 2},
                "marker": {"size": 4},
                "customdata": t,
                "hovertemplate": (f"layer {layer}, mean of {n_heads} heads<br>step %{{x}}, t = %{{customdata}}"
                                  f"<br>{label}: %{{y:.4g}}<extra></extra>"),
            })
    # the colour bar: an invisible trace carrying the layer scale
    data.append({
        "type": "scatter", "x": [None], "y": [None], "mode": "markers", "hoverinfo": "skip",
        "marker": {"color": [0], "cmin": 0, "cmax": max(n_layers - 1, 1) / _SCALE_END if n_layers > 1 else 1,
                   # the scale itself, not its name: plotly.js knows only a few scales by name
                   "colorscale": get_colorscale(LAYER_SCALE), "showscale": True,
                   "colorbar": {"title": {"text": "layer"}, "x": 1.01, "xanchor": "left", "len": 0.85,
                                "thickness": 12, "tickvals": list(range(n_layers)),
                                "ticktext": [str(i) for i in range(n_layers)]}},
    })
    step_note = f"step {n_steps}/{total_steps}" if total_steps else f"{n_steps} steps"
    layout = _two_panel_layout(
        f"CrossWKV state per layer across denoising ({step_note})", ((0.0, 0.43), (0.55, 0.98)), bottom=45
    )
    x_range = [0.5, max(total_steps or n_steps, 1) + 0.5]
    for axis in ("xaxis", "xaxis2"):
        layout[axis].update(title={"text": "denoising step"}, range=x_range)
    layout["yaxis"].update(title={"text": "state RMS (log scale)"}, type="log")
    layout["yaxis2"].update(title={"text": "stable rank"})
    return {"data": data, "layout": layout}


def heatmap_spec(rms: np.ndarray, stable_rank: np.ndarray, step: int | None = None, total: int | None = None) -> dict:
    """Layer x head heatmaps of both metrics at one step; ``rms``/``stable_rank`` are ``[layers, heads]``."""
    rms, stable_rank = _check(rms, stable_rank, 2)
    n_layers, n_heads = rms.shape
    domains = ((0.0, 0.36), (0.64, 1.0))
    where = f"step {step}/{total}" if step is not None and total else "current step"
    data = []
    for panel, (values, (_, label)) in enumerate(zip((rms, stable_rank), METRICS), start=1):
        suffix = "" if panel == 1 else str(panel)
        data.append(
            {
                "type": "heatmap",
                "z": _values(values),
                "x": list(range(n_heads)),
                "y": list(range(n_layers)),
                "xaxis": f"x{suffix}",
                "yaxis": f"y{suffix}",
                "colorscale": "Viridis",
                # each colour bar just right of its own panel, clear of the next one
                "colorbar": {"x": domains[panel - 1][1] + 0.01, "xanchor": "left", "len": 0.85, "thickness": 12},
                "hovertemplate": f"layer %{{y}}, head %{{x}}, {where}<br>{label}: %{{z:.4g}}<extra></extra>",
            }
        )
    layout = _two_panel_layout(f"CrossWKV state by layer × head ({where})", domains, bottom=45)
    for suffix in ("", "2"):
        layout[f"xaxis{suffix}"].update(title={"text": "head"}, dtick=1, showgrid=False)
        layout[f"yaxis{suffix}"].update(title={"text": "layer"}, dtick=1, autorange="reversed", showgrid=False)
    return {"data": data, "layout": layout}


def to_json(spec: dict) -> str:
    """A spec as the JSON plotly.js reads (the specs hold no NaN: ``_values`` made them gaps)."""
    return json.dumps(spec, allow_nan=False)


def _values(a: np.ndarray) -> list:
    """Numbers as a JSON-able (nested) list, NaN and inf as None: a gap in the plot, not an error."""
    return np.where(np.isfinite(a), a, None).tolist()


def trajectory_figure(*args, **kwargs) -> go.Figure:
    """:func:`trajectory_spec` as a validated plotly figure."""
    return go.Figure(trajectory_spec(*args, **kwargs))


def heatmap_figure(*args, **kwargs) -> go.Figure:
    """:func:`heatmap_spec` as a validated plotly figure."""
    return go.Figure(heatmap_spec(*args, **kwargs))
