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
]
