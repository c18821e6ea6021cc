"""The DIR-7 Gradio demo: ``service`` (model + validation + streaming), ``plots`` and ``ui``.

``app.py`` at the repository root builds and launches it; everything else lives here so the
tests and the latency benchmark can use the same pieces.
"""

from app.service import DemoService, GenerationRequest, InputError, ModelRegistry, StepUpdate
from app.ui import build_demo, launch_options

__all__ = ["DemoService", "GenerationRequest", "InputError", "ModelRegistry", "StepUpdate", "build_demo",
           "launch_options"]
