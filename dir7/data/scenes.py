"""Procedural shapes scenes: vocabulary, exact rasterisation, scene sampling.

A scene is 1-4 flat-coloured, axis-aligned shapes on a dark gray background, rendered
without anti-aliasing so every object pixel has exactly its palette colour. The
:class:`Scene` dataclass is the ground truth: captions are written from it
(:mod:`dir7.data.captions`) and the ShapesEval self-check compares the evaluator's
detections against it.

Geometry conventions: pixel (x, y) has its centre at (x + 0.5, y + 0.5); a shape of side
``s`` at ``(x0, y0)`` covers the pixels of the box ``[x0, x0 + s) x [y0, y0 + s)`` whose
centres fall inside the shape. Every shape lives in a square box, pointing up.

Everything random takes a ``numpy.random.Generator``; :func:`sample_rng` derives the one
for sample ``index`` of ``seed`` so a sample never depends on worker count or order.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------

IMAGE_SIZE = 64
SHAPES = ("circle", "square", "triangle", "star", "heart")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
PLACES = ("left", "right", "top", "bottom", "center")
MAX_OBJECTS = 4

# Saturated, well separated colours on a dark neutral gray. The closest pair (orange and
# yellow) is ~107 apart in RGB, every colour is > 150 from the background, so
# nearest-colour classification survives noise of sigma ~20 per channel.
BACKGROUND = (40, 40, 40)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "orange": (255, 128, 0),
    "yellow": (240, 230, 30),
    "green": (30, 190, 50),
    "blue": (40, 90, 240),
    "purple": (150, 50, 210),
    "pink": (255, 120, 200),
    "white": (245, 245, 245),
}

# Side lengths (pixels, inclusive ranges) of the two sizes at 64x64. The gap between them
# (15 -> 20) lets the evaluator call the size from the bounding box even on blurry samples.
SIZE_RANGES = {"small": (11, 15), "large": (20, 25)}
SIZE_THRESHOLD = 17.5  # bounding-box side separating small from large (at 64 px)
GAP = 3      # minimum empty pixels between two objects' boxes, so objects never merge
MARGIN = 2   # minimum empty pixels between an object and the image border

# Colour-shape pairs never shown in training (split="train") and evaluated separately
# (split="heldout"): each shape and each colour still occurs in training with other
# partners, so generating these pairs needs compositional generalisation.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("orange", "heart"),
    ("yellow", "circle"),
    ("green", "star"),
    ("blue", "square"),
    ("pink", "heart"),
)
ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for s in SHAPES for c in COLORS)
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p not in HELDOUT_PAIRS)
SPLITS = ("train", "heldout", "all")

# The GenEval-like task kinds (plus "multi": 2-4 objects, all described) the sampler draws.
KINDS = ("single_object", "two_object", "counting", "colors", "position", "color_attr", "multi")
DEFAULT_KIND_WEIGHTS = {
    "single_object": 1.0, "two_object": 1.0, "counting": 1.5, "colors": 1.0,
    "position": 2.0, "color_attr": 1.5, "multi": 1.0,
}


# ---------------------------------------------------------------------------------------
# Shape geometry
# ---------------------------------------------------------------------------------------


def _normalise(poly: np.ndarray) -> np.ndarray:
    """Scale a polygon to fill the unit box [0, 1]^2 (y down)."""
    lo, hi = poly.min(0), poly.max(0)
    return (poly - lo) / (hi - lo)


def _star_polygon(points: int = 5, inner: float = 0.5) -> np.ndarray:
    # A fat star (inner radius 0.5, the classic one is 0.38) keeps its arms a few pixels
    # wide even at the small size, so the rasterised shape stays recognisable.
    ang = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    rad = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return _normalise(np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1))


def _heart_polygon(n: int = 96) -> np.ndarray:
    # The classic parametric heart; y is flipped because image y grows downwards.
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return _normalise(np.stack([x, -y], 1))


POLYGONS: dict[str, np.ndarray] = {
    "triangle": np.array([[0.5, 0.0], [1.0, 1.0], [0.0, 1.0]]),
    "star": _star_polygon(),
    "heart": _heart_polygon(),
}


def _polygon_mask(poly: np.ndarray, w: int, h: int) -> np.ndarray:
    """Even-odd point-in-polygon test of every pixel centre of a ``w x h`` box."""
    x = (np.arange(w) + 0.5) / w
    y = (np.arange(h) + 0.5) / h
    X, Y = np.meshgrid(x, y)
    inside = np.zeros((h, w), dtype=bool)
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    for ax, ay, bx, by in zip(x1, y1, x2, y2):
        if ay == by:
            continue  # horizontal edges never cross a horizontal ray
        crosses = (ay > Y) != (by > Y)
        x_at = ax + (Y - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (X < x_at)
    return inside


@functools.lru_cache(maxsize=4096)
def shape_mask(shape: str, w: int, h: int | None = None) -> np.ndarray:
    """Boolean ``[h, w]`` mask of ``shape`` filling a ``w x h`` box (read-only, cached).

    The renderer and the evaluator's shape templates both come from here, so a clean
    render matches its template exactly.
    """
    h = w if h is None else h
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if w < 1 or h < 1:
        raise ValueError(f"shape box must be at least 1x1, got {w}x{h}")
    if shape == "square":
        mask = np.ones((h, w), dtype=bool)
    elif shape == "circle":
        u = (np.arange(w) + 0.5) / w - 0.5
        v = (np.arange(h) + 0.5) / h - 0.5
        mask = u[None, :] ** 2 + v[:, None] ** 2 <= 0.25
    else:
        mask = _polygon_mask(POLYGONS[shape], w, h)
    mask.flags.writeable = False
    return mask


# ---------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """One object: a ``side x side`` box at ``(x0, y0)`` (top-left, pixels)."""

    shape: str
    color: str
    size: str  # "small" | "large"
    x0: int
    y0: int
    side: int

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` with exclusive ``x1, y1`` (the box the shape is drawn in)."""
        return (self.x0, self.y0, self.x0 + self.side, self.y0 + self.side)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.side / 2, self.y0 + self.side / 2)

    @property
    def pair(self) -> tuple[str, str]:
        return (self.color, self.shape)


@dataclass
class Scene:
    """Ground truth of one image.

    ``kind`` is the GenEval-like task the scene was sampled for; ``relation`` is
    ``(subject, relation, reference)`` object indices for "position" scenes ("objects[subject]
    is <relation> objects[reference]"); ``place`` is the absolute place of a single object
    when the caption states one. ``say_color`` / ``say_size`` tell the captioner whether to
    mention colours / sizes (where they are uniform within a described group).
    """

    objects: list[SceneObject]
    kind: str = "multi"
    relation: tuple[int, str, int] | None = None
    place: str | None = None
    say_color: bool = True
    say_size: bool = False
    image_size: int = IMAGE_SIZE
    background: tuple[int, int, int] = field(default=BACKGROUND)

    def pairs(self) -> list[tuple[str, str]]:
        return [o.pair for o in self.objects]

    def has_heldout_pair(self) -> bool:
        return any(p in HELDOUT_PAIRS for p in self.pairs())


def relative_position(
    box_a: tuple[float, float, float, float], box_b: tuple[float, float, float, float],
    threshold: float = 0.1,
) -> set[str]:
    """Relations of box A to box B, with GenEval's rule (``evaluate_images.py``).

    The offset between box centres is shrunk by ``threshold`` times the summed box sizes
    per axis; a relation holds when its axis carries more than half of the (unshrunk)
    offset's length. So diagonal placements can hold two relations, touching-close ones
    none. Boxes are ``(x0, y0, x1, y1)``; y grows downwards ("above" = smaller y).
    """
    a = np.asarray(box_a, dtype=float).reshape(2, 2)
    b = np.asarray(box_b, dtype=float).reshape(2, 2)
    offset = a.mean(0) - b.mean(0)
    dims = (a[1] - a[0]) + (b[1] - b[0])
    revised = np.maximum(np.abs(offset) - threshold * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


def place_of(center: tuple[float, float], image_size: int = IMAGE_SIZE) -> str | None:
    """Absolute place of a point: one of :data:`PLACES`, or None (corners, in between).

    "left" means the left middle band (not a corner), etc.; centre is the middle square.
    """
    nx = center[0] / image_size - 0.5
    ny = center[1] / image_size - 0.5
    band = 0.125  # half-width of the middle bands
    if abs(nx) < band and abs(ny) < band:
        return "center"
    if abs(ny) < band and nx <= -0.15:
        return "left"
    if abs(ny) < band and nx >= 0.15:
        return "right"
    if abs(nx) < band and ny <= -0.15:
        return "top"
    if abs(nx) < band and ny >= 0.15:
        return "bottom"
    return None


def render_scene(scene: Scene) -> np.ndarray:
    """The scene as a ``uint8 [H, W, 3]`` array: exact palette colours, no anti-aliasing."""
    n = scene.image_size
    img = np.empty((n, n, 3), dtype=np.uint8)
    img[:] = scene.background
    for o in scene.objects:
        x0, y0, x1, y1 = o.bbox
        if x0 < 0 or y0 < 0 or x1 > n or y1 > n:
            raise ValueError(f"object {o} does not fit in a {n}x{n} image")
        mask = shape_mask(o.shape, o.side)
        img[y0:y1, x0:x1][mask] = PALETTE[o.color]
    return img


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------

_SPLIT_CODES = {"train": 0, "heldout": 1, "all": 2}


def sample_rng(seed: int, index: int, split: str = "train") -> np.random.Generator:
    """The generator of sample ``index`` of ``seed``: independent of any other sample."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.Generator(np.random.PCG64([int(seed), int(index), _SPLIT_CODES[split]]))


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _side(rng: np.random.Generator, size: str, image_size: int) -> int:
    lo, hi = SIZE_RANGES[size]
    scale = image_size / IMAGE_SIZE
    return round(int(rng.integers(lo, hi + 1)) * scale)


def _boxes_clear(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _place(
    rng: np.random.Generator, sides: list[int], image_size: int, check=None, tries: int = 60
) -> list[tuple[int, int]] | None:
    """Random non-overlapping top-left corners for boxes of ``sides`` (None if none found).

    ``check(positions, sides)`` can reject complete layouts (e.g. a relation that must hold).
    """
    for _ in range(tries):
        pos: list[tuple[int, int]] = []
        boxes: list[tuple[int, int, int, int]] = []
        for s in sides:
            for _ in range(30):
                hi = image_size - MARGIN - s
                x, y = (int(v) for v in rng.integers(MARGIN, hi + 1, size=2))
                box = (x, y, x + s, y + s)
                if all(_boxes_clear(box, b, GAP) for b in boxes):
                    pos.append((x, y))
                    boxes.append(box)
                    break
            else:
                break
        if len(pos) == len(sides) and (check is None or check(pos, sides)):
            return pos
    return None


@dataclass
class _Spec:
    """What to draw before placement: shapes, colours, sizes."""

    shapes: list[str]
    colors: list[str]
    sizes: list[str]


def _color_for(rng: np.random.Generator, shape: str, allowed: set[tuple[str, str]], avoid=()) -> str:
    options = [c for c in COLORS if (c, shape) in allowed and c not in avoid]
    if not options:  # every colour of this shape is excluded: fall back to any allowed one
        options = [c for c in COLORS if (c, shape) in allowed]
    return _pick(rng, options)


def _random_size(rng: np.random.Generator) -> str:
    return _pick(rng, SIZES)


def _spec_for_kind(
    rng: np.random.Generator, kind: str, allowed: set[tuple[str, str]], focus: tuple[str, str] | None
) -> tuple[_Spec, bool]:
    """Shapes/colours/sizes for a scene of ``kind``. Returns (spec, colours_uniform_forced).

    With ``focus`` (held-out split), object 0 (all objects for counting) has that pair.
    """
    shapes: list[str]
    colors: list[str]
    if kind in ("single_object", "colors"):
        shape = focus[1] if focus else _pick(rng, SHAPES)
        color = focus[0] if focus else _color_for(rng, shape, allowed)
        return _Spec([shape], [color], [_random_size(rng)]), False
    if kind in ("two_object", "color_attr", "position"):
        first = focus[1] if focus else _pick(rng, SHAPES)
        same_shape = kind == "position" and rng.random() < 0.2
        second = first if same_shape else _pick(rng, [s for s in SHAPES if s != first])
        c1 = focus[0] if focus else _color_for(rng, first, allowed)
        # colour attribution needs two different colours; so does telling two equal shapes apart
        distinct = kind == "color_attr" or same_shape or rng.random() < 0.7
        c2 = _color_for(rng, second, allowed, avoid=(c1,) if distinct else ())
        shapes, colors = [first, second], [c1, c2]
        if rng.random() < 0.5 and kind != "position":
            shapes, colors = shapes[::-1], colors[::-1]  # focus object not always first
        return _Spec(shapes, colors, [_random_size(rng), _random_size(rng)]), same_shape
    if kind == "counting":
        n = int(rng.choice([1, 2, 3, 4], p=[0.1, 0.3, 0.3, 0.3]))
        shape = focus[1] if focus else _pick(rng, SHAPES)
        uniform_color = focus is not None or rng.random() < 0.6
        if uniform_color:
            colors = [focus[0] if focus else _color_for(rng, shape, allowed)] * n
        else:
            colors = [_color_for(rng, shape, allowed) for _ in range(n)]
        uniform_size = rng.random() < 0.5
        sizes = [_random_size(rng)] * n if uniform_size else [_random_size(rng) for _ in range(n)]
        return _Spec([shape] * n, colors, sizes), False
    if kind == "multi":
        n = int(rng.integers(2, MAX_OBJECTS + 1))
        shapes = [_pick(rng, SHAPES) for _ in range(n)]
        colors = [_color_for(rng, s, allowed) for s in shapes]
        if focus:
            shapes[0], colors[0] = focus[1], focus[0]
        return _Spec(shapes, colors, [_random_size(rng) for _ in range(n)]), False
    raise ValueError(f"unknown scene kind {kind!r}; expected one of {KINDS}")


def sample_scene(
    rng: np.random.Generator,
    split: str = "train",
    kind: str | None = None,
    kind_weights: dict[str, float] | None = None,
    image_size: int = IMAGE_SIZE,
) -> Scene:
    """Draw a random scene.

    ``split="train"`` never uses a held-out colour-shape pair; ``"heldout"`` puts one held-out
    pair in every scene (its colour always captioned), everything else from training
    pairs; ``"all"`` uses every pair. ``kind`` fixes the task kind, else it is drawn with
    ``kind_weights`` (default :data:`DEFAULT_KIND_WEIGHTS`).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if kind is None:
        weights = kind_weights or DEFAULT_KIND_WEIGHTS
        names = [k for k in KINDS if weights.get(k, 0) > 0]
        if not names:
            raise ValueError(f"kind_weights gives no kind a positive weight: {weights}")
        p = np.array([weights[k] for k in names], dtype=float)
        kind = names[int(rng.choice(len(names), p=p / p.sum()))]
    elif kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {KINDS}")
    allowed = set(ALL_PAIRS if split == "all" else TRAIN_PAIRS)
    focus = _pick(rng, HELDOUT_PAIRS) if split == "heldout" else None

    for _attempt in range(20):
        spec, force_color = _spec_for_kind(rng, kind, allowed, focus)
        sizes = list(spec.sizes)
        place = relation = None
        check = None
        if kind in ("single_object", "colors") and rng.random() < 0.4:
            place = _pick(rng, PLACES)

            def check(pos, sides, want=place):
                return place_of((pos[0][0] + sides[0] / 2, pos[0][1] + sides[0] / 2), image_size) == want

        elif kind == "position":
            rel = _pick(rng, RELATIONS)
            relation = (0, rel, 1)

            def check(pos, sides, rel=rel):
                a = (pos[0][0], pos[0][1], pos[0][0] + sides[0], pos[0][1] + sides[0])
                b = (pos[1][0], pos[1][1], pos[1][0] + sides[1], pos[1][1] + sides[1])
                # exactly one relation, so the picture is unambiguous
                return relative_position(a, b) == {rel}

        for _shrink in range(3):
            sides_px = [_side(rng, sz, image_size) for sz in sizes]
            pos = _place(rng, sides_px, image_size, check)
            if pos is not None:
                break
            # crowded: make the largest object small and try again
            big = [i for i, sz in enumerate(sizes) if sz == "large"]
            if big:
                sizes[big[0]] = "small"
        if pos is None:
            continue
        objects = [
            SceneObject(sh, co, sz, x, y, side)
            for sh, co, sz, (x, y), side in zip(spec.shapes, spec.colors, sizes, pos, sides_px)
        ]
        if kind in ("colors", "color_attr") or focus is not None or force_color:
            say_color = True
        else:
            say_color = bool(rng.random() < 0.5)
        say_size = bool(rng.random() < 0.35)
        return Scene(objects, kind=kind, relation=relation, place=place, say_color=say_color,
                     say_size=say_size, image_size=image_size)
    raise RuntimeError(f"could not place a {kind!r} scene in {image_size}x{image_size} (image too small?)")
