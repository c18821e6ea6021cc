"""Benchmarks for DIR-7. ``python -m dir7.eval shapes ...`` runs ShapesEval (see :mod:`.shapes`)."""

from .shapes import (
    PROMPTS_PATH,
    TASKS,
    DetectedObject,
    detect_objects,
    evaluate,
    failure_kind,
    format_report,
    load_prompts,
    make_grid,
    metadata_split,
    scene_for_metadata,
    scene_metadata,
    score_image,
    validate_metadata,
)

__all__ = [
    "PROMPTS_PATH",
    "TASKS",
    "DetectedObject",
    "detect_objects",
    "evaluate",
    "failure_kind",
    "format_report",
    "load_prompts",
    "make_grid",
    "metadata_split",
    "scene_for_metadata",
    "scene_metadata",
    "score_image",
    "validate_metadata",
]
