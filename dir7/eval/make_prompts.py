"""Write ShapesEval's prompt file (``shapes_prompts.jsonl``) deterministically.

GenEval's six tasks with GenEval's phrasing ("a photo of ..."), our shapes as classes:

* in-distribution (no held-out colour-shape pair anywhere): single_object (every shape, two
  phrasings), two_object (every ordered pair of shapes), counting (every shape x 2-4, with
  GenEval's "count n, exclude n+1"), colors (every training pair), position and color_attr
  (random samples);
* held-out (``"split": "heldout"``): every line asks for a held-out pair with its colour in the
  metadata, in each of the six tasks.

    python -m dir7.eval.make_prompts [--out FILE] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from ..data.scenes import HELDOUT_PAIRS, RELATIONS, SHAPES, TRAIN_PAIRS
from .shapes import PROMPTS_PATH

NUMBERS = {2: "two", 3: "three", 4: "four"}


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _obj(shape: str, color: str | None = None) -> str:
    return _a(f"{color} {shape}" if color else shape)


def _clause(shape: str, count: int = 1, color: str | None = None, position=None) -> dict:
    c: dict = {"class": shape, "count": count}
    if color:
        c["color"] = color
    if position:
        c["position"] = list(position)
    return c


def build_prompts(seed: int = 0, n_position: int = 40, n_color_attr: int = 40) -> list[dict]:
    """All prompt records, in-distribution first, then held-out; same seed, same list."""
    rng = np.random.default_rng(seed)
    out: list[dict] = []

    def add(tag, prompt, include, exclude=None, split="in_distribution"):
        md = {"tag": tag, "prompt": prompt, "include": include}
        if exclude:
            md["exclude"] = exclude
        md["split"] = split
        out.append(md)

    # ---- in-distribution ---------------------------------------------------------------
    for s in SHAPES:
        add("single_object", f"a photo of {_obj(s)}", [_clause(s)])
        add("single_object", _obj(s), [_clause(s)])
    for a, b in itertools.permutations(SHAPES, 2):
        add("two_object", f"a photo of {_obj(a)} and {_obj(b)}", [_clause(a), _clause(b)])
    for s in SHAPES:
        for n in (2, 3, 4):
            add("counting", f"a photo of {NUMBERS[n]} {s}s", [_clause(s, n)], [_clause(s, n + 1)])
    for c, s in TRAIN_PAIRS:
        add("colors", f"a photo of {_obj(s, c)}", [_clause(s, 1, c)])
    combos = [(a, b, r) for a, b in itertools.permutations(SHAPES, 2) for r in RELATIONS]
    for k in rng.choice(len(combos), size=min(n_position, len(combos)), replace=False):
        a, b, r = combos[int(k)]
        # GenEval: "a photo of A <rel> B" -> include [B, A with position (rel, 0)]
        add("position", f"a photo of {_obj(a)} {r} {_obj(b)}", [_clause(b), _clause(a, 1, None, (r, 0))])
    pairs = [(p, q) for p in TRAIN_PAIRS for q in TRAIN_PAIRS if p[1] != q[1] and p[0] != q[0]]
    for k in rng.choice(len(pairs), size=n_color_attr, replace=False):
        (ca, sa), (cb, sb) = pairs[int(k)]
        add("color_attr", f"a photo of {_obj(sa, ca)} and {_obj(sb, cb)}",
            [_clause(sa, 1, ca), _clause(sb, 1, cb)])

    # ---- held-out: every line asks for a held-out pair, by colour ---------------------
    h = "heldout"
    for c, s in HELDOUT_PAIRS:
        add("single_object", _obj(s, c), [_clause(s, 1, c)], split=h)
        add("colors", f"a photo of {_obj(s, c)}", [_clause(s, 1, c)], split=h)
        for n in (2, 3, 4):
            add("counting", f"a photo of {NUMBERS[n]} {c} {s}s", [_clause(s, n, c)], [_clause(s, n + 1)], split=h)
        others = [x for x in SHAPES if x != s]
        for o in rng.choice(others, size=2, replace=False):
            o = str(o)
            if rng.random() < 0.5:
                add("two_object", f"a photo of {_obj(s, c)} and {_obj(o)}", [_clause(s, 1, c), _clause(o)], split=h)
            else:
                add("two_object", f"a photo of {_obj(o)} and {_obj(s, c)}", [_clause(o), _clause(s, 1, c)], split=h)
        partners = [(pc, ps) for pc, ps in TRAIN_PAIRS if ps != s and pc != c]
        for k in rng.choice(len(partners), size=4, replace=False):
            pc, ps = partners[int(k)]
            if rng.random() < 0.5:
                add("color_attr", f"a photo of {_obj(s, c)} and {_obj(ps, pc)}",
                    [_clause(s, 1, c), _clause(ps, 1, pc)], split=h)
            else:
                add("color_attr", f"a photo of {_obj(ps, pc)} and {_obj(s, c)}",
                    [_clause(ps, 1, pc), _clause(s, 1, c)], split=h)
        for k in rng.choice(len(partners), size=4, replace=False):
            pc, ps = partners[int(k)]
            r = RELATIONS[int(rng.integers(len(RELATIONS)))]
            if rng.random() < 0.5:  # the held-out object is the subject
                add("position", f"a photo of {_obj(s, c)} {r} {_obj(ps, pc)}",
                    [_clause(ps, 1, pc), _clause(s, 1, c, (r, 0))], split=h)
            else:
                add("position", f"a photo of {_obj(ps, pc)} {r} {_obj(s, c)}",
                    [_clause(s, 1, c), _clause(ps, 1, pc, (r, 0))], split=h)
    return out


def write_prompts(path: str | Path = PROMPTS_PATH, seed: int = 0) -> int:
    """Write the prompt file; returns the number of lines."""
    prompts = build_prompts(seed)
    with open(path, "w", encoding="utf-8") as f:
        for md in prompts:
            f.write(json.dumps(md) + "\n")
    return len(prompts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(PROMPTS_PATH), help="output JSONL (default: the shipped file)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = write_prompts(args.out, args.seed)
    print(f"wrote {n} prompts to {args.out}")


if __name__ == "__main__":
    main()
