"""Users' own images: a folder with ``captions.jsonl``, or class folders.

* ``root/captions.jsonl`` with lines ``{"file": "img/0001.png", "caption": "a cat"}``
  (``file_name`` / ``image`` / ``path`` for the file and ``text`` / ``prompt`` for the caption are
  accepted too); paths are relative to ``root``.
* ``root/<class name>/*.png|jpg|...``: the folder name becomes the caption,
  ``golden_retriever`` -> "a photo of a golden retriever" (CIFAR-10 / ImageNet-style trees;
  pass ``class_names`` to map folder ids such as ImageNet's ``n01440764`` to words).

Images are converted to RGB, resized so the short side is ``size`` and centre-cropped.
Problems are reported with the file (and line) at construction, not mid-training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .datasets import to_tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FILE_KEYS = ("file", "file_name", "image", "path")
CAPTION_KEYS = ("caption", "text", "prompt")


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """RGB ``uint8 [size, size, 3]``: short side resized to ``size``, then centre-cropped."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def class_caption(name: str, template: str = "a photo of {}") -> str:
    """``golden_retriever`` -> "a photo of a golden retriever" (a/an by the first letter)."""
    words = " ".join(name.replace("_", " ").replace("-", " ").split())
    if not words:
        raise ValueError(f"class folder name {name!r} has no words to caption")
    article = "an" if words[0].lower() in "aeiou" else "a"
    return template.format(f"{article} {words}")


class _ImageCaptionDataset(Dataset):
    """Shared ``(files, captions)`` dataset yielding ``(image [3, S, S] in [-1, 1], caption)``."""

    def __init__(self, files: list[Path], captions: list[str], size: int):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.files, self.captions, self.size = files, captions, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return to_tensor(load_image(self.files[index], self.size)), self.captions[index]


class CaptionFolderDataset(_ImageCaptionDataset):
    """Images listed in ``root/<captions_file>`` (JSON lines) with their captions."""

    def __init__(self, root: str | os.PathLike, size: int = 64, captions_file: str = "captions.jsonl"):
        root = Path(root)
        path = root / captions_file
        if not path.is_file():
            raise FileNotFoundError(f"no {captions_file} in {root}")
        files, captions = [], []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {lineno}: invalid JSON ({e.msg})") from e
                if not isinstance(rec, dict):
                    raise ValueError(f"{path}, line {lineno}: expected a JSON object, got {type(rec).__name__}")
                file = next((rec[k] for k in FILE_KEYS if k in rec), None)
                caption = next((rec[k] for k in CAPTION_KEYS if k in rec), None)
                if not isinstance(file, str) or not file:
                    raise ValueError(f"{path}, line {lineno}: no image file (one of keys {FILE_KEYS})")
                if not isinstance(caption, str):
                    raise ValueError(f"{path}, line {lineno}: no caption string (one of keys {CAPTION_KEYS})")
                image_path = root / file
                if not image_path.is_file():
                    raise FileNotFoundError(f"{path}, line {lineno}: image file not found: {image_path}")
                files.append(image_path)
                captions.append(caption)
        if not files:
            raise ValueError(f"{path} lists no images")
        super().__init__(files, captions, size)


class ClassFolderDataset(_ImageCaptionDataset):
    """``root/<class>/<image>`` trees; the class folder's name (or ``class_names[name]``) is the caption."""

    def __init__(
        self, root: str | os.PathLike, size: int = 64, template: str = "a photo of {}",
        class_names: Mapping[str, str] | None = None,
    ):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise ValueError(f"{root} has no captions.jsonl and no class sub-folders")
        files, captions, self.classes = [], [], []
        for d in classes:
            images = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not images:
                continue  # e.g. a stray folder; reported below only if no class has images
            name = class_names.get(d.name, d.name) if class_names else d.name
            caption = class_caption(name, template)
            self.classes.append(d.name)
            files.extend(images)
            captions.extend([caption] * len(images))
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {root}")
        super().__init__(files, captions, size)


def image_folder_dataset(root: str | os.PathLike, size: int = 64, **kwargs) -> _ImageCaptionDataset:
    """:class:`CaptionFolderDataset` if ``root/captions.jsonl`` exists, else :class:`ClassFolderDataset`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    captions_file = kwargs.pop("captions_file", "captions.jsonl")
    if (root / captions_file).is_file():
        if kwargs:
            raise TypeError(f"unexpected arguments for a captions.jsonl folder: {sorted(kwargs)}")
        return CaptionFolderDataset(root, size, captions_file)
    return ClassFolderDataset(root, size, **kwargs)
