"""ShapesEval: GenEval's protocol, decided exactly from the pixels of shapes images.

GenEval (Ghosh et al., 2023) checks each prompt's metadata (``include`` / ``exclude``
clauses with ``class``, ``count``, ``color``, ``position``) against an object detector's
output. Our images are flat shapes on a known background, so the "detector" here is exact
image analysis instead of a network:

1. colour segmentation: each pixel is explained as ``background + alpha * (colour -
   background)`` for the palette colour with the smallest residual; ``alpha >= 0.5`` makes it
   foreground (so blurred edges go to the nearer side, never to a third colour), a large
   residual (an off-palette colour) makes it background;
2. a 3x3 majority vote of colour labels among foreground pixels (cleans noisy edges);
3. connected components per colour (8-connected), holes filled, specks below
   ``MIN_AREA`` dropped;
4. shape = the template (the renderer's own mask, sharp or blurred, stretched to the
   component's box) with the highest IoU. A blob is "unknown" (counts as no object) when
   that IoU is below ``MIN_SHAPE_IOU``, its box is too small or elongated, or its pixels are
   off the palette colour (``MAX_COLOR_DIST``): this keeps noise blobs out;
5. size from the box side; position from the box (GenEval's rule), centroid reported.

Scoring follows GenEval's ``evaluate_images.py``: include clauses are ANDed, exclude
clauses ORed, an image passes when every clause holds, a task's score is the mean over its
images and the overall score the mean over tasks. Differences, all because detection is
exact here: the objects a clause is checked on are *all* detected objects of its class
(and colour, when given), not the detector's top ``count``; a position clause needs
``count`` of them to be in the relation to every object of the target clause.
Extensions (not in GenEval, unused in our prompt file): optional ``size``
("small"/"large") and ``place`` (one of ``dir7.data.PLACES``) keys in include clauses.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ..data.scenes import (
    BACKGROUND,
    COLORS,
    HELDOUT_PAIRS,
    IMAGE_SIZE,
    PALETTE,
    PLACES,
    RELATIONS,
    SHAPES,
    SIZE_RANGES,
    SIZE_THRESHOLD,
    SIZES,
    Scene,
    SceneObject,
    _place,
    place_of,
    relative_position,
    shape_mask,
)

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
PROMPTS_PATH = Path(__file__).with_name("shapes_prompts.jsonl")
SPLIT_NAMES = ("in_distribution", "heldout")

# Decision thresholds. Images are analysed at 64x64 (other sizes are resampled first).
MIN_ALPHA = 0.5         # fraction of the way from background to a colour that makes a pixel foreground
MAX_RESIDUAL = 90.0     # RGB distance from the nearest background->colour line beyond which a pixel is "other"
MIN_AREA = 30           # pixels; the smallest object (an 11 px star) has 53, ~47 when blurred
MIN_SIDE = 9            # box side; the smallest object is 11 px, ~9 px when blurred
MAX_ASPECT = 1.4        # box aspect; every shape's box is (nearly) square, noise blobs rarely are
MIN_SHAPE_IOU = 0.7     # best template IoU below this: the blob is not one of our shapes
MAX_COLOR_DIST = 50.0   # median distance of a blob's pixels from its colour's line above this: a muddy blob

_PAL = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)  # [C, 3]
_BG = np.array(BACKGROUND, dtype=np.float32)
_DIR = _PAL - _BG                                                # background -> colour lines
_DIR_SQ = (_DIR**2).sum(1)
_EIGHT = np.ones((3, 3), dtype=bool)


# ---------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------


@dataclass
class DetectedObject:
    """One object found in an image. ``bbox`` is ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive."""

    shape: str | None   # None: a blob that matches no shape template well enough
    color: str
    size: str
    bbox: tuple[int, int, int, int]
    area: int
    centroid: tuple[float, float]
    shape_iou: float    # IoU with the best template (confidence of ``shape``)
    color_dist: float = 0.0  # median RGB distance of its pixels from the background->colour line

    @property
    def center(self) -> tuple[float, float]:
        """Box centre (what GenEval's position rule uses)."""
        return ((self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bbox"] = list(self.bbox)
        d["centroid"] = [round(v, 2) for v in self.centroid]
        d["shape_iou"] = round(self.shape_iou, 3)
        d["color_dist"] = round(self.color_dist, 1)
        return d


def to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """RGB ``uint8 [64, 64, 3]`` from a PIL image or array (other sizes are box-resampled)."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.min() >= -1.0 - 1e-6 and arr.max() <= 1.0 + 1e-6:
                raise ValueError("float arrays are ambiguous ([-1, 1] or [0, 1]?): pass uint8 or a PIL image")
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"expected an [H, W, 3] RGB array, got shape {arr.shape}")
        image = Image.fromarray(arr[..., :3])
    elif not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8)


def segment_colors(arr: np.ndarray) -> np.ndarray:
    """Per-pixel colour index into :data:`COLORS`, -1 for background / other. ``[H, W]`` int."""
    h, w, _ = arr.shape
    q = arr.reshape(-1, 3).astype(np.float32) - _BG                     # [N, 3]
    alpha = (q @ _DIR.T) / _DIR_SQ                                     # [N, C] position along each line
    a = np.clip(alpha, 0.0, 1.0)
    resid = np.linalg.norm(q[:, None, :] - a[..., None] * _DIR[None], axis=-1)  # [N, C]
    best = resid.argmin(1)
    idx = np.arange(len(best))
    fg = (alpha[idx, best] >= MIN_ALPHA) & (resid[idx, best] <= MAX_RESIDUAL)
    labels = np.where(fg, best, -1).reshape(h, w)
    return _majority(labels)


def _majority(labels: np.ndarray) -> np.ndarray:
    """Re-label each foreground pixel with the commonest colour among its foreground 3x3 neighbours.

    Only colours change, never foreground vs background, so thin parts (star tips) survive.
    The pixel's own label wins ties.
    """
    fg = labels >= 0
    if not fg.any():
        return labels
    onehot = (labels[None] == np.arange(len(COLORS))[:, None, None]).astype(np.float32)
    counts = ndimage.uniform_filter(onehot, size=(1, 3, 3), mode="constant") * 9 + 0.5 * onehot
    return np.where(fg, counts.argmax(0), -1)


BLUR_SIGMAS = (0.7, 1.1, 1.5)  # blur levels (pixels) the shape templates also come in


@functools.lru_cache(maxsize=8192)
def _blurred_template(shape: str, side: int, sigma: float) -> np.ndarray:
    """``shape`` of ``side`` px, Gaussian-blurred and re-thresholded at 0.5, cropped to its box.

    That is what a blurry image of the shape looks like after our foreground threshold: star
    tips and heart notches round off, so a blurred star is matched by these, not by a circle.
    ``sigma=0`` is the sharp render cropped to its pixels (a triangle's apex row can be empty).
    """
    pad = 4
    m = np.zeros((side + 2 * pad, side + 2 * pad), dtype=np.float32)
    m[pad:-pad, pad:-pad] = shape_mask(shape, side)
    b = (ndimage.gaussian_filter(m, sigma, mode="constant") if sigma > 0 else m) >= 0.5
    ys, xs = np.nonzero(b)
    if len(ys) == 0:
        return shape_mask(shape, side)
    return b[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


@functools.lru_cache(maxsize=65536)
def _templates(shape: str, w: int, h: int) -> tuple[np.ndarray, ...]:
    """Candidate masks of ``shape`` stretched to a ``w x h`` box: sharp, and blurred at
    :data:`BLUR_SIGMAS`, from originals of the box's side or slightly larger (rasterising
    and blurring shrink a pointy shape's box)."""
    out = [shape_mask(shape, w, h)]
    side = max(w, h)
    for sigma in (0.0, *BLUR_SIGMAS):
        for grow in (0, 1, 2):
            t = _blurred_template(shape, side + grow, sigma)
            rows = ((np.arange(h) + 0.5) * t.shape[0] / h).astype(int)
            cols = ((np.arange(w) + 0.5) * t.shape[1] / w).astype(int)
            out.append(t[rows][:, cols])
    return tuple(out)


def classify_shape(mask: np.ndarray) -> tuple[str | None, float, dict[str, float]]:
    """Best-matching shape of a cropped boolean mask: (shape or None, its IoU, IoU per shape).

    A shape's IoU is its best over the sharp template and the blurred ones.
    """
    h, w = mask.shape
    area = int(mask.sum())
    ious = {}
    for s in SHAPES:
        best = 0.0
        for t in _templates(s, w, h):
            inter = int(np.logical_and(mask, t).sum())
            best = max(best, inter / (area + int(t.sum()) - inter))
        ious[s] = best
    shape = max(ious, key=ious.get)
    return (shape if ious[shape] >= MIN_SHAPE_IOU else None), ious[shape], ious


def detect_objects(image: Image.Image | np.ndarray) -> list[DetectedObject]:
    """All objects in an image, ordered top-to-bottom, left-to-right."""
    arr = to_array(image)
    labels = segment_colors(arr)
    scale = (arr.shape[0] * arr.shape[1]) / IMAGE_SIZE**2
    min_area = MIN_AREA * scale
    min_side = MIN_SIDE * math.sqrt(scale)
    size_threshold = SIZE_THRESHOLD * math.sqrt(scale)
    objects = []
    for ci, color in enumerate(COLORS):
        mask = labels == ci
        if not mask.any():
            continue
        comps, _ = ndimage.label(mask, structure=_EIGHT)
        for k, sl in enumerate(ndimage.find_objects(comps), 1):
            crop = ndimage.binary_fill_holes(comps[sl] == k)
            area = int(crop.sum())
            if area < min_area:
                continue
            shape, iou, _ = classify_shape(crop)
            h, w = crop.shape
            side = max(h, w)
            if side < min_side or side > MAX_ASPECT * min(h, w):
                shape = None  # too thin or too elongated for any of our shapes: noise, not an object
            y0, x0 = sl[0].start, sl[1].start
            ys, xs = np.nonzero(crop)
            # how far the object's pixels are off the background->colour line (0 for a clean
            # render; blur moves pixels along the line, wrong hues and noise move them off it)
            q = arr[sl][crop].astype(np.float32) - _BG
            a = np.clip(q @ _DIR[ci] / _DIR_SQ[ci], 0.0, 1.0)
            dist = float(np.median(np.linalg.norm(q - a[:, None] * _DIR[ci], axis=-1)))
            if dist > MAX_COLOR_DIST:
                shape = None
            objects.append(DetectedObject(
                shape=shape, color=color, size="large" if side >= size_threshold else "small",
                bbox=(x0, y0, sl[1].stop, sl[0].stop), area=area,
                centroid=(x0 + xs.mean() + 0.5, y0 + ys.mean() + 0.5), shape_iou=iou, color_dist=dist,
            ))
    objects.sort(key=lambda o: (o.bbox[1], o.bbox[0]))
    return objects


# ---------------------------------------------------------------------------------------
# Metadata (GenEval's JSONL format) and scoring
# ---------------------------------------------------------------------------------------


def validate_metadata(md: dict, where: str = "metadata") -> None:
    """Raise ``ValueError`` (naming ``where`` and the field) unless ``md`` is a valid prompt record."""

    def bad(msg: str):
        raise ValueError(f"{where}: {msg}")

    if not isinstance(md, dict):
        bad(f"expected a JSON object, got {type(md).__name__}")
    if not isinstance(md.get("tag"), str):
        bad("missing string 'tag'")
    if not isinstance(md.get("prompt"), str) or not md["prompt"].strip():
        bad("missing non-empty string 'prompt'")
    include = md.get("include")
    if not isinstance(include, list) or not include:
        bad("'include' must be a non-empty list of clauses")
    for i, req in enumerate(include):
        if not isinstance(req, dict):
            bad(f"include[{i}] is not an object")
        if req.get("class") not in SHAPES:
            bad(f"include[{i}].class {req.get('class')!r} is not one of {SHAPES}")
        cnt = req.get("count")
        if not isinstance(cnt, int) or isinstance(cnt, bool) or cnt < 1:
            bad(f"include[{i}].count must be a positive integer, got {cnt!r}")
        if "color" in req and req["color"] not in COLORS:
            bad(f"include[{i}].color {req['color']!r} is not one of {COLORS}")
        if "size" in req and req["size"] not in SIZES:
            bad(f"include[{i}].size {req['size']!r} is not one of {SIZES}")
        if "place" in req and req["place"] not in PLACES:
            bad(f"include[{i}].place {req['place']!r} is not one of {PLACES}")
        if "position" in req:
            pos = req["position"]
            if (not isinstance(pos, list | tuple) or len(pos) != 2 or pos[0] not in RELATIONS
                    or not isinstance(pos[1], int) or not 0 <= pos[1] < i):
                bad(f"include[{i}].position must be [relation in {RELATIONS}, index of an earlier "
                    f"include clause], got {pos!r}")
    for i, req in enumerate(md.get("exclude", [])):
        if not isinstance(req, dict) or req.get("class") not in SHAPES:
            bad(f"exclude[{i}] must be an object with 'class' one of {SHAPES}")
        cnt = req.get("count")
        if not isinstance(cnt, int) or isinstance(cnt, bool) or cnt < 1:
            bad(f"exclude[{i}].count must be a positive integer, got {cnt!r}")
    if md.get("split", "in_distribution") not in SPLIT_NAMES:
        bad(f"'split' must be one of {SPLIT_NAMES}, got {md.get('split')!r}")


def metadata_split(md: dict) -> str:
    """``"heldout"`` if marked so or if any include clause asks for a held-out colour-shape pair."""
    if "split" in md:
        return md["split"]
    for req in md.get("include", []):
        if (req.get("color"), req.get("class")) in HELDOUT_PAIRS:
            return "heldout"
    return "in_distribution"


def _describe(req: dict) -> str:
    return " ".join(str(w) for w in (req.get("size"), req.get("color"), req["class"]) if w)


def unknown_reason(blob: dict) -> str:
    """Why an unknown blob (``DetectedObject.to_dict()`` of a blob matching no shape) fails an image."""
    return f"unknown object: a {blob['color']} blob at {tuple(blob['bbox'])} that is none of the shapes"


def check_clauses(objects: Sequence[DetectedObject], md: dict,
                  unknown: Sequence[dict] = ()) -> tuple[bool, list[str]]:
    """GenEval's clause logic on detected objects: (passed, reasons for failure).

    Stricter than GenEval's in one way: every ``unknown`` blob (a coloured region matching none
    of the shapes: a malformed, merged or half-drawn object) fails the image. Otherwise an image
    with the named objects passed whatever else it held, which favours a model that draws
    malformed or merged shapes (8 of 996 images of the shipped model's seed-0 report passed so)."""
    reasons: list[str] = [unknown_reason(blob) for blob in unknown]
    groups: list[list[DetectedObject] | None] = []
    for req in md["include"]:
        want = req["count"]
        cands = [o for o in objects if o.shape == req["class"]
                 and ("color" not in req or o.color == req["color"])
                 and ("size" not in req or o.size == req["size"])
                 and ("place" not in req or place_of(o.center) == req["place"])]
        ok = len(cands) >= want
        if not ok:
            found = [f"{o.color} {o.shape}" for o in objects if o.shape == req["class"]]
            reasons.append(f"expected {_describe(req)}>={want}, found {len(cands)}"
                           + (f" (all {req['class']}s: {', '.join(found)})" if found else ""))
        elif "position" in req:
            rel, target = req["position"]
            if groups[target] is None:
                ok = False
                reasons.append(f"no target for {_describe(req)} to be {rel}")
            else:
                placed = [o for o in cands
                          if all(rel in relative_position(o.bbox, t.bbox) for t in groups[target])]
                if len(placed) < want:
                    ok = False
                    found = sorted({r for o in cands for t in groups[target]
                                    for r in relative_position(o.bbox, t.bbox)})
                    reasons.append(f"expected {_describe(req)} {rel} target, found "
                                   f"{' and '.join(found) or 'no relation'}")
                cands = placed
        groups.append(cands if ok else None)
    for req in md.get("exclude", []):
        n = sum(o.shape == req["class"] and ("color" not in req or o.color == req["color"]) for o in objects)
        if n >= req["count"]:
            reasons.append(f"expected {_describe(req)}<{req['count']}, found {n}")
    return not reasons, reasons


# The kinds of reason check_clauses writes, matched in order (a missing object is the
# "found 0" case of too few). Kept beside check_clauses: a new reason format must be added here.
FAILURE_KINDS = (
    ("missing", re.compile(r"expected .+>=\d+, found 0\b")),
    ("too_few", re.compile(r"expected .+>=\d+, found \d+")),
    ("no_target", re.compile(r"no target for .+ to be ")),
    ("misplaced", re.compile(r"expected .+ target, found ")),
    ("too_many", re.compile(r"expected .+<\d+, found \d+")),
    ("unknown", re.compile(r"unknown object: ")),
)


def failure_kind(reason: str) -> str:
    """The kind of one failure reason of :func:`check_clauses`: missing (no matching
    object), too_few, no_target (a position clause whose target is missing), misplaced
    (present, wrong relation), too_many (an exclude clause) or unknown (a blob that is no shape)."""
    for kind, pattern in FAILURE_KINDS:
        if pattern.match(reason):
            return kind
    raise ValueError(f"not a ShapesEval failure reason: {reason!r}")


def score_image(image: Image.Image | np.ndarray, metadata: dict) -> tuple[bool, dict]:
    """Does ``image`` satisfy every clause of ``metadata``? Returns (passed, details).

    ``details`` holds ``objects`` (detections as dicts), ``unknown`` (blobs matching no
    shape) and ``reasons`` (why it failed; empty when it passed).
    """
    validate_metadata(metadata)
    objects = detect_objects(image)
    known = [o for o in objects if o.shape is not None]
    unknown = [o.to_dict() for o in objects if o.shape is None]
    passed, reasons = check_clauses(known, metadata, unknown)
    return passed, {"objects": [o.to_dict() for o in known], "unknown": unknown, "reasons": reasons}


def load_prompts(path: str | os.PathLike | None = None) -> list[dict]:
    """Prompt metadata from a GenEval-style JSONL file (default: our shipped file), validated."""
    path = Path(path) if path is not None else PROMPTS_PATH
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    prompts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                md = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {lineno}: invalid JSON ({e.msg})") from e
            validate_metadata(md, f"{path}, line {lineno}")
            prompts.append(md)
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


# ---------------------------------------------------------------------------------------
# Ground truth <-> metadata
# ---------------------------------------------------------------------------------------


def scene_metadata(scene: Scene, tag: str | None = None) -> dict:
    """Complete GenEval metadata of a rendered scene (every object's class, count, colour,
    the scene's relation, and exclusions pinning each class's count). True of the scene."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, o in enumerate(scene.objects):
        groups.setdefault((o.shape, o.color), []).append(i)
    keys = list(groups)
    include: list[dict] = []
    if scene.relation is not None:
        subj, rel, ref = scene.relation
        kr = (scene.objects[ref].shape, scene.objects[ref].color)
        ks = (scene.objects[subj].shape, scene.objects[subj].color)
        if len(groups[kr]) == 1 and len(groups[ks]) == 1:  # relation of single objects only
            keys = [kr, ks] + [k for k in keys if k not in (kr, ks)]
            include.append({"class": kr[0], "count": 1, "color": kr[1]})
            include.append({"class": ks[0], "count": 1, "color": ks[1], "position": [rel, 0]})
    for k in keys[len(include):]:
        include.append({"class": k[0], "count": len(groups[k]), "color": k[1]})
    shape_counts: dict[str, int] = {}
    for o in scene.objects:
        shape_counts[o.shape] = shape_counts.get(o.shape, 0) + 1
    exclude = [{"class": s, "count": n + 1} for s, n in shape_counts.items()]
    exclude += [{"class": s, "count": 1} for s in SHAPES if s not in shape_counts]
    return {"tag": tag or scene.kind, "prompt": f"scene of {len(scene.objects)} objects",
            "include": include, "exclude": exclude}


def scene_for_metadata(md: dict, rng: np.random.Generator, tries: int = 50) -> Scene:
    """A random scene that satisfies ``md`` (an "oracle" generator: the best any model can do).

    Unspecified colours avoid held-out pairs when the prompt is in-distribution; objects that
    must be in a relation are placed by rejection sampling with the evaluator's rule.
    """
    validate_metadata(md)
    heldout_ok = metadata_split(md) == "heldout"
    specs: list[tuple[int, str, str, str]] = []  # (clause index, shape, colour, size)
    for ci, req in enumerate(md["include"]):
        for _ in range(req["count"]):
            color = req.get("color")
            if color is None:
                options = [c for c in COLORS if heldout_ok or (c, req["class"]) not in HELDOUT_PAIRS]
                color = options[int(rng.integers(len(options)))]
            size = req.get("size") or SIZES[int(rng.integers(2))]
            specs.append((ci, req["class"], color, size))
    if len(specs) > 6:
        raise ValueError(f"metadata asks for {len(specs)} objects; the oracle draws at most 6")

    def check(pos, sides):
        boxes = [(x, y, x + s, y + s) for (x, y), s in zip(pos, sides)]
        for ci, req in enumerate(md["include"]):
            if "position" in req:
                rel, target = req["position"]
                mine = [b for b, sp in zip(boxes, specs) if sp[0] == ci]
                theirs = [b for b, sp in zip(boxes, specs) if sp[0] == target]
                if not all(relative_position(a, b) == {rel} for a in mine for b in theirs):
                    return False
            if "place" in req:
                mine = [b for b, sp in zip(boxes, specs) if sp[0] == ci]
                if any(place_of(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)) != req["place"] for b in mine):
                    return False
        return True

    for _ in range(tries):
        sides = [int(rng.integers(SIZE_RANGES[sp[3]][0], SIZE_RANGES[sp[3]][1] + 1)) for sp in specs]
        pos = _place(rng, sides, IMAGE_SIZE, check)
        if pos is not None:
            objs = [SceneObject(sp[1], sp[2], sp[3], x, y, s) for sp, (x, y), s in zip(specs, pos, sides)]
            return Scene(objs, kind=md["tag"])
    raise RuntimeError(f"could not lay out a scene for prompt {md['prompt']!r}")


# ---------------------------------------------------------------------------------------
# Benchmark loop and report
# ---------------------------------------------------------------------------------------

Generate = Callable[[list[str], int], list[Image.Image]]


def _scores(records: Iterable[dict]) -> dict:
    """Task scores (mean over images), overall (mean over tasks), image counts."""
    by_task: dict[str, list[bool]] = {}
    for r in records:
        by_task.setdefault(r["tag"], []).append(r["passed"])
    tasks = {t: float(np.mean(v)) for t, v in by_task.items()}
    return {
        "overall": float(np.mean(list(tasks.values()))) if tasks else None,
        "tasks": tasks,
        "images": {t: len(v) for t, v in by_task.items()},
    }


def _grid_picks(prompts: Sequence[dict], max_cells: int) -> set[int]:
    """Prompt indices to show in the grid: evenly spread over every (split, task) group."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, md in enumerate(prompts):
        groups.setdefault((metadata_split(md), md["tag"]), []).append(i)
    per = max(1, max_cells // max(1, len(groups)))
    picks: set[int] = set()
    for idx in groups.values():
        step = max(1, len(idx) / per)
        picks.update(idx[int(k * step)] for k in range(min(per, len(idx))))
    return picks


def make_grid(cells: Sequence[tuple[Image.Image, bool, str]], columns: int = 8, scale: int = 2) -> Image.Image:
    """Samples with a green (passed) or red (failed) border and their prompt underneath."""
    font = ImageFont.load_default()
    border, text_h = 4, 36
    cw = IMAGE_SIZE * scale + 2 * border
    ch = cw + text_h
    rows = max(1, math.ceil(len(cells) / columns))
    grid = Image.new("RGB", (columns * cw, rows * ch), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    chars = max(8, cw // 6)
    for k, (img, passed, prompt) in enumerate(cells):
        x, y = (k % columns) * cw, (k // columns) * ch
        draw.rectangle([x, y, x + cw - 1, y + cw - 1], fill=(30, 170, 60) if passed else (220, 30, 30))
        im = img.convert("RGB").resize((IMAGE_SIZE * scale, IMAGE_SIZE * scale), Image.Resampling.NEAREST)
        grid.paste(im, (x + border, y + border))
        words, lines, line = prompt.split(), [], ""
        for wd in words:
            if len(line) + len(wd) + 1 > chars and line:
                lines.append(line)
                line = wd
            else:
                line = f"{line} {wd}".strip()
        lines.append(line)
        for li, text in enumerate(lines[:3]):
            draw.text((x + 2, y + cw + 1 + 11 * li), text, fill=(0, 0, 0), font=font)
    return grid


def evaluate(
    prompts: Sequence[dict],
    generate: Generate,
    images_per_prompt: int = 4,
    seed: int = 0,
    batch_size: int = 32,
    grid_path: str | os.PathLike | None = None,
    grid_cells: int = 64,
    progress: bool = True,
) -> dict:
    """Run ShapesEval: generate ``images_per_prompt`` images per prompt and score them.

    ``generate(prompts, seed)`` returns one image per prompt; it is called on consecutive
    batches of at most ``batch_size`` (prompt, image) jobs with ``seed + batch index``, so
    a report is reproducible for the same (seed, batch_size). Returns the report dict (see
    :func:`format_report` for a summary) and, with ``grid_path``, writes a grid of samples.
    """
    if images_per_prompt < 1 or batch_size < 1:
        raise ValueError(f"images_per_prompt and batch_size must be >= 1, got {images_per_prompt}, {batch_size}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to evaluate")
    for i, md in enumerate(prompts):
        validate_metadata(md, f"prompt {i}")
    jobs = [(p, j) for p in range(len(prompts)) for j in range(images_per_prompt)]
    picks = _grid_picks(prompts, grid_cells) if grid_path else set()
    cells: list[tuple[Image.Image, bool, str]] = []
    records: list[dict] = []

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="ShapesEval", unit="img")
    for b, start in enumerate(range(0, len(jobs), batch_size)):
        batch = jobs[start:start + batch_size]
        texts = [prompts[p]["prompt"] for p, _ in batch]
        images = generate(texts, seed + b)
        if len(images) != len(batch):
            raise RuntimeError(f"generate returned {len(images)} images for {len(batch)} prompts")
        for (p, j), img in zip(batch, images):
            md = prompts[p]
            passed, details = score_image(img, md)
            records.append({"prompt_index": p, "image_index": j, "tag": md["tag"],
                            "split": metadata_split(md), "prompt": md["prompt"], "passed": passed,
                            **details})
            if p in picks and j == 0:
                cells.append((img, passed, md["prompt"]))
        if bar is not None:
            bar.update(len(batch))
            done = _scores(records)["overall"]
            bar.set_postfix(overall=f"{done:.3f}")
    if bar is not None:
        bar.close()

    report = report_scores(records)
    report["settings"] = {"images_per_prompt": images_per_prompt, "seed": seed, "batch_size": batch_size,
                          "num_prompts": len(prompts), "num_images": len(records)}
    report["images"] = records
    if grid_path:
        make_grid(cells).save(grid_path)
        report["grid"] = str(grid_path)
    return report


def report_scores(records: Sequence[dict]) -> dict:
    """A report's scores from its per-image records: overall, per task, per split, images and
    prompts correct."""
    everything = _scores(records)
    splits = {s: _scores(r for r in records if r["split"] == s) for s in SPLIT_NAMES}
    report: dict = {"overall": everything["overall"]}
    report.update(everything["tasks"])
    report["overall_in_distribution"] = splits["in_distribution"]["overall"]
    report["overall_heldout"] = splits["heldout"]["overall"]
    report["splits"] = splits
    report["images_correct"] = float(np.mean([r["passed"] for r in records]))
    by_prompt: dict[int, bool] = {}
    for r in records:
        by_prompt[r["prompt_index"]] = by_prompt.get(r["prompt_index"], False) or r["passed"]
    report["prompts_correct"] = float(np.mean(list(by_prompt.values())))
    return report


def rescore(report: dict) -> dict:
    """A stored report judged by the current rules, from its stored detections (a report written
    before unknown blobs failed an image gets them counted against it); the old scores are kept
    under ``scores_before_rescoring``."""
    records = []
    for r in report["images"]:
        reasons = [x for x in r["reasons"] if failure_kind(x) != "unknown"]
        unknown = [unknown_reason(blob) for blob in r["unknown"]]
        records.append({**r, "reasons": unknown + reasons, "passed": not unknown and not reasons})
    before = {k: report[k] for k in ("overall", "overall_in_distribution", "overall_heldout", *TASKS) if k in report}
    return {**report, **report_scores(records), "images": records, "scores_before_rescoring": before}


def read_report_images(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """The per-image records of one or more ShapesEval reports, in order (for the command-line
    tools: a file that is not a report exits with an error naming it)."""
    records: list[dict] = []
    for path in paths:
        try:
            records += json.loads(Path(path).read_text())["images"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise SystemExit(f"error: {path}: not a ShapesEval report ({e})") from None
    return records


def format_report(report: dict) -> str:
    """A small text table of a report's scores."""
    lines = [f"{'task':<16}{'all':>8}{'in-dist':>10}{'held-out':>10}"]
    splits = report["splits"]

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    for t in [*TASKS, *sorted(set(splits["in_distribution"]["tasks"]) - set(TASKS))]:
        if t not in report:
            continue
        lines.append(f"{t:<16}{fmt(report.get(t)):>8}{fmt(splits['in_distribution']['tasks'].get(t)):>10}"
                     f"{fmt(splits['heldout']['tasks'].get(t)):>10}")
    lines.append(f"{'overall':<16}{fmt(report['overall']):>8}{fmt(report['overall_in_distribution']):>10}"
                 f"{fmt(report['overall_heldout']):>10}")
    return "\n".join(lines)
