"""Training data for DIR-7.

* Procedural shapes scenes (``scenes``, ``captions``, ``datasets``): 64x64 images of 1-4
  coloured shapes with true captions, rendered on the fly and deterministic per
  ``(seed, index)``; some colour-shape pairs (:data:`HELDOUT_PAIRS`) never appear in training.
* Emoji (``emoji``): thousands of drawn concepts in several artists' styles, built once from
  openly licensed npm packages (``python -m dir7.data.emoji build --out DIR``), trained on with
  ``dir7.train --data emoji:DIR``.
* Users' own images (``folders``): a folder with ``captions.jsonl`` or class folders.

Typical training use::

    from dir7.data import shapes_dataloader
    loader = shapes_dataloader(batch_size=128, seed=0, start=step * 128, num_workers=2)
    for images, captions in loader: ...   # [B, 3, 64, 64] in [-1, 1], list[str]
"""

from .captions import caption_scene, noun_phrase
from .datasets import (
    IndexSampler,
    ShapesDataset,
    ShapesSample,
    collate,
    make_sample,
    shapes_dataloader,
    to_tensor,
)
from .folders import (
    CaptionFolderDataset,
    ClassFolderDataset,
    class_caption,
    image_folder_dataset,
    load_image,
)
from .scenes import (
    ALL_PAIRS,
    BACKGROUND,
    COLORS,
    DEFAULT_KIND_WEIGHTS,
    HELDOUT_PAIRS,
    IMAGE_SIZE,
    KINDS,
    MAX_OBJECTS,
    PALETTE,
    PLACES,
    RELATIONS,
    SHAPES,
    SIZE_RANGES,
    SIZE_THRESHOLD,
    SIZES,
    SPLITS,
    TRAIN_PAIRS,
    Scene,
    SceneObject,
    place_of,
    relative_position,
    render_scene,
    sample_rng,
    sample_scene,
    shape_mask,
)


def training_dataset(spec: str, image_size: int = IMAGE_SIZE, seed: int = 0, kind_weights=None):
    """The training pairs a ``--data`` spec names: ``"shapes"`` (procedural scenes of ``seed``,
    mixed by ``kind_weights``), ``"emoji:DIR"`` (a built emoji set's training split) or the path of
    a folder of the user's images. Items are ``(image [3, S, S] in [-1, 1], caption)``."""
    if spec == "shapes":
        return ShapesDataset("train", seed=seed, image_size=image_size, kind_weights=kind_weights)
    if spec.startswith("emoji:"):
        from .emoji import EmojiDataset  # here, so that importing dir7.data leaves the emoji module out

        return EmojiDataset(spec[len("emoji:"):], "train", size=image_size)
    return image_folder_dataset(spec, size=image_size)


__all__ = [
    "ALL_PAIRS",
    "BACKGROUND",
    "COLORS",
    "DEFAULT_KIND_WEIGHTS",
    "HELDOUT_PAIRS",
    "IMAGE_SIZE",
    "KINDS",
    "MAX_OBJECTS",
    "PALETTE",
    "PLACES",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SIZE_RANGES",
    "SIZE_THRESHOLD",
    "SPLITS",
    "TRAIN_PAIRS",
    "CaptionFolderDataset",
    "ClassFolderDataset",
    "IndexSampler",
    "Scene",
    "SceneObject",
    "ShapesDataset",
    "ShapesSample",
    "caption_scene",
    "class_caption",
    "collate",
    "image_folder_dataset",
    "load_image",
    "make_sample",
    "noun_phrase",
    "place_of",
    "relative_position",
    "render_scene",
    "sample_rng",
    "sample_scene",
    "shape_mask",
    "shapes_dataloader",
    "to_tensor",
    "training_dataset",
]
