"""Captions for shapes scenes: many templates, synonyms and word orders.

Every caption is true of its scene and describes every object in it (so the model never
learns to add unmentioned objects); attributes are left out at random where the scene's
``say_color`` / ``say_size`` flags allow it. The evaluation prompts use canonical words
("a photo of a red circle"), which are among the templates here too.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .scenes import Scene, SceneObject

SHAPE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {  # (singular, plural)
    "circle": (("circle", "circles"), ("ball", "balls"), ("disc", "discs"), ("dot", "dots"),
               ("round shape", "round shapes")),
    "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks"), ("tile", "tiles")),
    "triangle": (("triangle", "triangles"), ("triangle shape", "triangle shapes"),
                 ("triangular shape", "triangular shapes")),
    "star": (("star", "stars"), ("star shape", "star shapes"), ("five-pointed star", "five-pointed stars")),
    "heart": (("heart", "hearts"), ("heart shape", "heart shapes"), ("love heart", "love hearts")),
}
SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
RELATION_WORDS = {
    "left of": ("to the left of", "left of", "on the left of", "on the left side of"),
    "right of": ("to the right of", "right of", "on the right of", "on the right side of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath", "underneath"),
}
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
PLACE_WORDS = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the center", "in the middle", "at the center"),
}
# {x}: the noun phrase(s); "there is/are" agree in number.
FRAMES = ("{x}", "{x}", "{x}", "a photo of {x}", "an image of {x}", "a picture of {x}",
          "a drawing of {x}", "{x} on a dark background", "a simple render of {x}")


def _choice(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(
    rng: np.random.Generator, shape: str, count: int = 1, color: str | None = None, size: str | None = None
) -> str:
    """E.g. "a big red ball", "three tiny stars", "a heart colored pink"."""
    singular, plural = _choice(rng, SHAPE_WORDS[shape])
    noun = singular if count == 1 else plural
    size_word = _choice(rng, SIZE_WORDS[size]) if size else None
    post_color = color is not None and rng.random() < 0.12  # "a ball colored red"
    adjs = [w for w in (size_word, None if post_color else color) if w]
    body = " ".join([*adjs, noun])
    if post_color:
        body += f" {_choice(rng, ('colored', 'in'))} {color}"
    if count == 1:
        r = rng.random()
        det = "one" if r < 0.08 else "a single" if r < 0.14 else _article(body)
    else:
        r = rng.random()
        det = str(count) if r < 0.15 else "a pair of" if count == 2 and r < 0.25 else NUMBER_WORDS[count]
    return f"{det} {body}"


def _join(parts: list[str], rng: np.random.Generator) -> str:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return f"{parts[0]} {_choice(rng, ('and', 'and', 'and', 'together with', 'with'))} {parts[1]}"
    return ", ".join(parts[:-1]) + f"{_choice(rng, ('', ','))} and {parts[-1]}"


def _frame(rng: np.random.Generator, x: str, plural: bool) -> str:
    if rng.random() < 0.15:
        return f"there {'are' if plural else 'is'} {x}"
    return _choice(rng, FRAMES).format(x=x)


def _object_phrase(rng: np.random.Generator, o: SceneObject, scene: Scene) -> str:
    return noun_phrase(rng, o.shape, 1, o.color if scene.say_color else None,
                       o.size if scene.say_size else None)


def _group_phrases(rng: np.random.Generator, scene: Scene, by_color: bool) -> tuple[list[str], int]:
    """Noun phrases for groups of objects (by shape, or by shape and colour).

    A group's colour / size is only mentioned when the scene says so and it is uniform.
    Returns the phrases and the total number of objects.
    """
    groups: dict[tuple, list[SceneObject]] = {}
    for o in scene.objects:
        groups.setdefault((o.shape, o.color) if by_color else (o.shape,), []).append(o)
    keys = list(groups)
    order = rng.permutation(len(keys))
    phrases = []
    for i in order:
        objs = groups[keys[int(i)]]
        colors = Counter(o.color for o in objs)
        sizes = Counter(o.size for o in objs)
        color = objs[0].color if (scene.say_color or by_color) and len(colors) == 1 else None
        size = objs[0].size if scene.say_size and len(sizes) == 1 else None
        phrases.append(noun_phrase(rng, objs[0].shape, len(objs), color, size))
    return phrases, len(scene.objects)


def caption_scene(scene: Scene, rng: np.random.Generator) -> str:
    """A random true caption for ``scene``."""
    objs = scene.objects
    if scene.kind == "position" and scene.relation is not None:
        i, rel, j = scene.relation
        if rng.random() < 0.4:  # say it the other way round: "B right of A"
            i, j, rel = j, i, INVERSE_RELATION[rel]
        a, b = _object_phrase(rng, objs[i], scene), _object_phrase(rng, objs[j], scene)
        r = _choice(rng, RELATION_WORDS[rel])
        t = rng.random()
        if t < 0.55:
            return _frame(rng, f"{a} {r} {b}", False)
        if t < 0.75:
            return f"{r} {b} there is {a}"
        if t < 0.9:
            return f"{b} with {a} {r} it"
        return f"{a} is {r} {b}"
    if scene.kind in ("counting",):
        phrases, n = _group_phrases(rng, scene, by_color=False)
        return _frame(rng, phrases[0], n > 1)
    if len(objs) == 1:
        x = _object_phrase(rng, objs[0], scene)
        if scene.place is not None:
            p = _choice(rng, PLACE_WORDS[scene.place])
            x = f"{p}, {x}" if rng.random() < 0.25 else f"{x} {p}"
        return _frame(rng, x, False)
    if scene.kind in ("two_object", "color_attr"):
        parts = [_object_phrase(rng, o, scene) for o in objs]
        if rng.random() < 0.5:
            parts = parts[::-1]
        if rng.random() < 0.1:
            return f"both {parts[0]} and {parts[1]}"
        return _frame(rng, _join(parts, rng), True)
    # multi (and anything else): list every object, grouped by shape and colour
    phrases, n = _group_phrases(rng, scene, by_color=True)
    return _frame(rng, _join(phrases, rng), n > 1)


__all__ = ["INVERSE_RELATION", "SHAPE_WORDS", "SIZE_WORDS", "caption_scene", "noun_phrase"]
