"""Torch datasets over the procedural shapes scenes, plus batching helpers.

Sample ``i`` of ``ShapesDataset(seed=s, split=...)`` is a pure function of ``(s, i, split)``,
so results do not depend on worker count, batch order or resumption: to resume after
``k`` samples, start the index sampler at ``k``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .captions import caption_scene
from .scenes import IMAGE_SIZE, SPLITS, Scene, render_scene, sample_rng, sample_scene


@dataclass
class ShapesSample:
    """One sample: the scene (ground truth), its caption and the rendered ``uint8`` image."""

    scene: Scene
    caption: str
    image: np.ndarray  # uint8 [H, W, 3]


def make_sample(
    seed: int, index: int, split: str = "train", kind: str | None = None,
    kind_weights: dict[str, float] | None = None, image_size: int = IMAGE_SIZE,
) -> ShapesSample:
    """Sample ``index`` of ``seed``: always the same scene, caption and image."""
    rng = sample_rng(seed, index, split)
    scene = sample_scene(rng, split, kind=kind, kind_weights=kind_weights, image_size=image_size)
    return ShapesSample(scene, caption_scene(scene, rng), render_scene(scene))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8 [H, W, 3]`` -> ``float32 [3, H, W]`` in [-1, 1] (what the model trains on)."""
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image)  # torch wants writable memory (PIL-backed arrays are read-only)
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class ShapesDataset(Dataset):
    """Map-style dataset of ``(image [3, S, S] in [-1, 1], caption)`` pairs rendered on the fly.

    ``length`` is nominal (indices beyond it are just as valid): keep it large and iterate
    sequentially (``shuffle=False``; samples are independent draws already), e.g. with
    :func:`shapes_dataloader`. Held-out colour-shape pairs never appear with
    ``split="train"``; ``split="heldout"`` scenes always contain one.
    """

    def __init__(
        self, split: str = "train", seed: int = 0, length: int = 10_000_000,
        kind: str | None = None, kind_weights: dict[str, float] | None = None,
        image_size: int = IMAGE_SIZE,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32 to fit the shapes, got {image_size}")
        self.split, self.seed, self.length = split, int(seed), int(length)
        self.kind, self.kind_weights, self.image_size = kind, kind_weights, image_size

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> ShapesSample:
        return make_sample(self.seed, index, self.split, self.kind, self.kind_weights, self.image_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if index < 0:
            raise IndexError(f"index must be >= 0, got {index}")
        s = self.sample(int(index))
        return to_tensor(s.image), s.caption


def collate(batch: Sequence[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    """Stack images, keep captions as a list of strings."""
    images, captions = zip(*batch)
    return torch.stack(images), list(captions)


class IndexSampler(Sampler[int]):
    """Indices ``start + rank, start + rank + world_size, ...`` (endless unless ``stop``).

    Rank r of a data-parallel job sees a disjoint slice of one global stream; the global
    batch at step k is the same for any world size when each rank takes ``batch / world``.
    """

    def __init__(self, start: int = 0, stop: int | None = None, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size

    def __iter__(self) -> Iterator[int]:
        i = self.start + self.rank
        while self.stop is None or i < self.stop:
            yield i
            i += self.world_size

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless IndexSampler has no length")
        return max(0, -(-(self.stop - self.start - self.rank) // self.world_size))


def shapes_dataloader(
    batch_size: int, split: str = "train", seed: int = 0, start: int = 0, stop: int | None = None,
    rank: int = 0, world_size: int = 1, num_workers: int = 2, image_size: int = IMAGE_SIZE,
    kind_weights: dict[str, float] | None = None, **loader_kwargs,
) -> DataLoader:
    """A DataLoader of ``(images [B, 3, S, S], captions list[str])`` batches.

    ``start`` is a global sample index (``step * global_batch`` to resume exactly); with
    ``rank``/``world_size`` each process reads every ``world_size``-th sample of that stream.
    """
    ds = ShapesDataset(split, seed, image_size=image_size, kind_weights=kind_weights)
    sampler = IndexSampler(start, stop, rank, world_size)
    kwargs = {"persistent_workers": num_workers > 0}
    kwargs.update(loader_kwargs)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, **kwargs)
