"""The words of the shapes training captions, for a model trained on them (its ``vocabulary.txt``).

    python -m scripts.shapes_vocabulary --out checkpoints/dir7-shapes/vocabulary.txt

``dir7.train`` saves the words of the captions it trains on with every checkpoint. The shipped
shapes model predates that, so its vocabulary is taken from the same caption stream it was
trained on: captions of the training split, drawn as ``dir7.data.ShapesDataset("train")`` draws
them, under the default scene mix and the later stages' mix. The grammar is small (under a
hundred words); the command checks that a second, disjoint sample of captions adds no word.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dir7.data import DEFAULT_KIND_WEIGHTS
from dir7.data.captions import caption_scene
from dir7.data.scenes import sample_rng, sample_scene
from dir7.train import SHAPES_KIND_WEIGHTS, TrainConfig
from dir7.vocabulary import save_vocabulary, words


def caption_words(seed: int, n: int, kind_weights: dict[str, float]) -> set[str]:
    found: set[str] = set()
    for i in range(n):
        rng = sample_rng(seed, i, "train")
        found.update(words(caption_scene(sample_scene(rng, "train", kind_weights=kind_weights), rng)))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--captions", type=int, default=20_000, help="captions drawn per scene mix")
    args = ap.parse_args()
    mixes = [dict(DEFAULT_KIND_WEIGHTS), TrainConfig(kind_weights=SHAPES_KIND_WEIGHTS).scene_kind_weights()]
    vocabulary = set().union(*(caption_words(0, args.captions, mix) for mix in mixes))
    check = set().union(*(caption_words(1, args.captions // 4, mix) for mix in mixes))
    if check - vocabulary:
        raise SystemExit(f"a second sample of captions has words the first missed: {sorted(check - vocabulary)}")
    save_vocabulary(args.out, vocabulary)
    print(f"{args.out}: {len(vocabulary)} words")


if __name__ == "__main__":
    main()
