"""Emoji as text-image training data: thousands of drawn concepts, with names, keywords and
categories, in several artists' styles, from openly licensed npm packages.

    python -m dir7.data.emoji build --out data/emoji              # fetch (npm pack) and build
    python -m dir7.data.emoji build --out data/emoji --packages DIR  # from tarballs already in DIR
    python -m dir7.train --data emoji:data/emoji ...               # train on it

The builder is a one-off: it fetches the packages with ``npm pack`` (nothing is fetched at
training or run time), composites every image onto a light background at 64x64, joins the
styles by Unicode sequence, attaches the text of emojibase (label, keywords), and writes:

    DIR/records.jsonl     one line per image: code (its Unicode sequence, emoji-datasource's
                          ``unified``), concept (the base emoji's code, skin tone removed), style,
                          skin_tone, gender, hair, label, keywords, name, category, subcategory,
                          split ("train" or "heldout"), shard and row
    DIR/shard_NNN.npz     the images, uint8 [N, 64, 64, 3], compressed (each well under 16 MiB)
    DIR/LICENSES/         each package's licence, and ATTRIBUTION.md (which style is whose, how licensed)
    DIR/manifest.json     package versions, counts, the held-out pairs and caption templates

Styles (``STYLES``): ``noto`` (Google's Noto Emoji, Apache-2.0) and ``twemoji`` (Twemoji,
CC-BY-4.0) as emoji-datasource's 64-pixel PNGs; ``openmoji`` (CC-BY-SA-4.0) and ``fluent-flat``
(Microsoft's Fluent Emoji, flat, MIT) as SVGs, rendered at 256 pixels with resvg and downsampled
(``pip install resvg-py``). The concepts are the Noto package's emoji.json; a style that does not
draw one simply has no image of it. Apple's and Facebook's sets are left out: they are not openly
licensed.

The split is deterministic: a fixed ~5% of the concepts drawn in two or more styles lose one of
their styles entirely (every skin tone of it): the concept is still seen in the other styles and
the style on other concepts. ``HELDOUT_TEMPLATES`` are caption templates never used in training.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .datasets import to_tensor

IMAGE_SIZE = 64
BACKGROUND = (250, 250, 250)  # light, as the visitors expect emoji to be shown
SHARD_IMAGES = 1000           # images per shard: compressed, well under 16 MiB
HELDOUT_EVERY = 20            # one concept in 20 (of those drawn in 2+ styles) loses a style


@dataclass(frozen=True)
class Style:
    """One artist's set: the npm package it comes from and how its images are found in it."""

    name: str             # the style's id in records and prompts ("noto", "twemoji", ...)
    display: str          # how captions name it
    package: str          # npm package
    version: str
    kind: str             # "datasource": emoji-datasource PNGs named by emoji.json's "image";
                          # "openmoji": SVGs named by the Unicode sequence; "fluent": SVGs named
                          # by the CLDR label ("thumbs-up-dark.svg")
    image_dir: str        # the images' folder inside the package
    licence_file: str     # the package's licence, copied beside the built set
    licence: str
    attribution: str
    has_key: str = ""     # datasource only: emoji.json's flag that this set draws an emoji


STYLES: dict[str, Style] = {s.name: s for s in (
    Style("noto", "Noto", "emoji-datasource-google", "16.0.0", "datasource", "package/img/google/64",
          "package/LICENSE", "Apache-2.0 (images), MIT (emoji-datasource data)",
          "Noto Emoji, Copyright Google Inc., Apache License 2.0 (github.com/googlefonts/noto-emoji); "
          "packaged by emoji-datasource (iamcal/emoji-data), MIT.", has_key="has_img_google"),
    Style("twemoji", "Twemoji", "emoji-datasource-twitter", "16.0.0", "datasource", "package/img/twitter/64",
          "package/LICENSE", "CC-BY-4.0 (images), MIT (emoji-datasource data)",
          "Twemoji, Copyright Twitter, Inc. and other contributors, CC-BY 4.0 "
          "(github.com/jdecked/twemoji); packaged by emoji-datasource (iamcal/emoji-data), MIT.",
          has_key="has_img_twitter"),
    Style("openmoji", "OpenMoji", "openmoji", "17.0.0", "openmoji", "package/color/svg", "package/LICENSE.txt",
          "CC-BY-SA-4.0", "OpenMoji, the open-source emoji and icon project (openmoji.org), CC BY-SA 4.0: "
          "images derived from it are shared under the same licence."),
    Style("fluent-flat", "Fluent", "fluentui-emoji", "1.3.0", "fluent", "package/icons/flat", "package/LICENSE",
          "MIT", "Fluent Emoji (flat), Copyright Microsoft Corporation, MIT (github.com/microsoft/fluentui-emoji); "
          "packaged for npm as fluentui-emoji, MIT."),
)}
# the set whose emoji.json lists the concepts every style is matched against
CATALOGUE = "noto"
RENDER_SIZE = 256  # SVGs are rendered this large, then downsampled with antialiasing: small details stay legible
TEXT_PACKAGE = ("emojibase-data", "17.0.0")   # labels and keywords (MIT)
SKIN_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}
_SLUG = re.compile(r"[^a-z0-9]+")

# Caption templates. {a} is the label with its article ("a cat face"), {label} without,
# {style} the style's display name, {kw} one keyword with its article, {cat} the category.
TRAIN_TEMPLATES = (
    "{label}",
    "{a}",
    "an emoji of {a}",
    "{label}, {style} style",
    "{a} in {style} style",
    "{style} emoji of {a}",
    "{kw} emoji",
    "{a}, {cat}",
    "{label} emoji",
)
HELDOUT_TEMPLATES = (
    "a picture of {a}, drawn in the {style} style",
    "{label} icon",
)
# the training run's sample grid (dir7.train --data emoji:DIR): everyday things, each style, a skin tone
SAMPLE_PROMPTS = (
    "a cat face",
    "pizza, Twemoji style",
    "a rocket in OpenMoji style",
    "a red apple in Fluent style",
    "thumbs up with dark skin tone",
    "Noto emoji of a sunflower",
    "a birthday cake",
    "flag of Japan",
)


def _article(words: str) -> str:
    return f"{'an' if words[:1].lower() in 'aeiou' else 'a'} {words}"


def _strip_fe0f(code: str) -> str:
    return "-".join(p for p in code.upper().split("-") if p != "FE0F")


def plain_label(label: str) -> str:
    """emojibase's "flag: Japan", "keycap: #", "woman: white hair" as a caption says them."""
    for prefix, said in (("flag: ", "flag of "), ("keycap: ", "keycap ")):
        if label.startswith(prefix):
            return said + label[len(prefix):]
    return label.replace(": ", " with ", 1).replace(": ", ", ") if label.count(": ") == 1 and \
        label.split(": ")[1].endswith("hair") else label.replace(": ", ", ")


def caption(record: dict, template: str, keyword_index: int = 0) -> str:
    """A caption for one record from one template (a skin tone, when there is one, is said too)."""
    label = plain_label(record["label"])
    if record.get("skin_tone") and "skin tone" not in label:
        tones = record["skin_tone"].replace("-", " ").split("/")
        label = f"{label} with {' and '.join(tones)} skin tone{'s' if len(tones) > 1 else ''}"
    keywords = record.get("keywords") or [record["label"]]
    kw = keywords[keyword_index % len(keywords)]
    return template.format(label=label, a=_article(label), style=STYLES[record["style"]].display,
                           kw=_article(kw), cat=record["category"].lower().replace("&", "and"))


def _variants(entry: dict) -> list[tuple[str, str, str | None]]:
    """``(code, image file, skin tone)`` of an emoji.json entry and each of its skin variations."""
    out = [(entry["unified"], entry["image"], None)]
    for tones, var in (entry.get("skin_variations") or {}).items():
        names = [SKIN_TONES[t] for t in tones.split("-") if t in SKIN_TONES]
        out.append((var["unified"], var["image"], "/".join(dict.fromkeys(names)) or None))
    return out


def _gender_hair(name: str) -> tuple[str | None, str | None]:
    words = name.lower().split()
    gender = "woman" if {"woman", "women", "female"} & set(words) else \
        "man" if {"man", "men", "male"} & set(words) else None
    hair = next((h for h in ("red hair", "curly hair", "white hair", "bald") if h in name.lower()), None)
    return gender, hair


def heldout_pairs(concept_styles: dict[str, list[str]]) -> set[tuple[str, str]]:
    """The (concept, style) pairs held out: deterministic in the concept's code, never a concept's
    only style."""
    pairs = set()
    for concept, styles in concept_styles.items():
        if len(styles) < 2:
            continue
        h = int(hashlib.sha1(concept.encode()).hexdigest(), 16)
        if h % HELDOUT_EVERY == 0:
            pairs.add((concept, sorted(styles)[(h // HELDOUT_EVERY) % len(styles)]))
    return pairs


def _composite(png: bytes) -> np.ndarray:
    """An RGBA emoji -> RGB uint8 [64, 64, 3] on BACKGROUND: alpha-composited at its own size,
    then downsampled with antialiasing (Lanczos) if it is larger."""
    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGBA")
        canvas = Image.new("RGBA", im.size, (*BACKGROUND, 255))
        canvas.alpha_composite(im)
        rgb = canvas.convert("RGB")
    if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


def _render_svg(svg: bytes) -> bytes:
    """An SVG -> RGBA PNG bytes at RENDER_SIZE (resvg: fast, and faithful to gradients and masks)."""
    try:
        import resvg_py
    except ImportError as e:
        raise RuntimeError("the SVG styles need resvg-py: pip install resvg-py") from e
    return bytes(resvg_py.svg_to_bytes(svg_string=svg.decode("utf-8"), width=RENDER_SIZE, height=RENDER_SIZE,
                                       skip_system_fonts=True))


def _slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")


class _Locator:
    """Which file of a style's package draws a given emoji (or None)."""

    def __init__(self, style: Style, names: set[str]):
        self.style = style
        prefix = style.image_dir + "/"
        self.files = {n[len(prefix):]: n for n in names if n.startswith(prefix)}
        if style.kind == "openmoji":  # named by the sequence, with or without FE0F
            self.by_code = {_strip_fe0f(Path(f).stem): n for f, n in self.files.items() if f.endswith(".svg")}

    def __call__(self, entry: dict, code: str, image: str, tone: str | None, label: str) -> str | None:
        kind = self.style.kind
        if kind == "datasource":
            return self.files.get(image) if entry.get(self.style.has_key) else None
        if kind == "openmoji":
            return self.by_code.get(_strip_fe0f(code))
        if tone is not None and "/" in tone:
            return None  # Fluent draws one skin tone per emoji, not the mixed-tone couples
        slug = _slug(label)
        if tone is None:
            return self.files.get(f"{slug}.svg") or self.files.get(f"{slug}-default.svg")
        return self.files.get(f"{slug}-{tone}.svg")


# ---------------------------------------------------------------------------------------
# Fetch and build
# ---------------------------------------------------------------------------------------


def tarball_name(package: str, version: str) -> str:
    return f"{package}-{version}.tgz"


def fetch(packages_dir: Path, styles: tuple[str, ...] = tuple(STYLES)) -> None:
    """``npm pack`` the packages of ``styles`` and the text into ``packages_dir`` (skipping those present)."""
    packages_dir.mkdir(parents=True, exist_ok=True)
    wanted = [(STYLES[s].package, STYLES[s].version) for s in (CATALOGUE, *styles) if s in STYLES] + [TEXT_PACKAGE]
    for package, version in dict.fromkeys(wanted):
        if (packages_dir / tarball_name(package, version)).is_file():
            continue
        if shutil.which("npm") is None:
            raise RuntimeError("npm is needed to fetch the emoji packages (or pass --packages with the tarballs)")
        print(f"npm pack {package}@{version}", flush=True)
        subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=packages_dir, check=True,
                       stdout=subprocess.DEVNULL)


def _read_json(tar: tarfile.TarFile, member: str):
    f = tar.extractfile(member)
    if f is None:
        raise ValueError(f"{tar.name}: no {member}")
    return json.load(f)


def build(out: Path, packages_dir: Path, styles: tuple[str, ...] = tuple(STYLES), progress: bool = True) -> dict:
    """Build the data set into ``out`` from the tarballs in ``packages_dir``; returns the manifest."""
    unknown = sorted(set(styles) - set(STYLES))
    if unknown:
        raise ValueError(f"unknown style(s) {unknown}; known: {sorted(STYLES)}")
    needed = [(STYLES[s].package, STYLES[s].version) for s in (CATALOGUE, *styles)] + [TEXT_PACKAGE]
    missing = [tarball_name(p, v) for p, v in dict.fromkeys(needed)
               if not (packages_dir / tarball_name(p, v)).is_file()]
    if missing:
        raise FileNotFoundError(f"{packages_dir}: missing {missing} (run without --packages to fetch them)")
    with tarfile.open(packages_dir / tarball_name(*TEXT_PACKAGE)) as tar:
        text = {_strip_fe0f(e["hexcode"]): e for e in _read_json(tar, "package/en/data.json")}
        text_licence = tar.extractfile("package/LICENSE").read()

    with tarfile.open(packages_dir / tarball_name(STYLES[CATALOGUE].package, STYLES[CATALOGUE].version)) as tar:
        # the concepts: every emoji of the catalogue but the components (skin-tone swatches, hair parts)
        entries = [e for e in _read_json(tar, "package/emoji.json") if e["category"] != "Component"]

    records, images = [], []
    licences = {"emojibase-data.LICENSE": text_licence}
    for style_name in styles:
        style = STYLES[style_name]
        with tarfile.open(packages_dir / tarball_name(style.package, style.version)) as tar:
            names = set(tar.getnames())
            if style.licence_file not in names:
                raise ValueError(f"{tar.name}: no {style.licence_file}; the images cannot ship without it")
            licences[f"{style.package}.LICENSE"] = tar.extractfile(style.licence_file).read()
            locate = _Locator(style, names)
            for entry in entries:
                base_text = text.get(_strip_fe0f(entry["unified"]), {})
                label = base_text.get("label") or (entry["name"] or entry["short_name"]).lower()
                for code, image, tone in _variants(entry):
                    member = locate(entry, code, image, tone, label)
                    if member is None:
                        continue
                    data = tar.extractfile(member).read()
                    gender, hair = _gender_hair(entry["name"] or "")
                    records.append({
                        "code": code, "concept": entry["unified"], "style": style_name, "skin_tone": tone,
                        "gender": gender, "hair": hair, "label": label,
                        "keywords": base_text.get("tags", []), "name": entry["name"],
                        "short_names": entry.get("short_names", []), "category": entry["category"],
                        "subcategory": entry.get("subcategory"),
                    })
                    images.append(_composite(_render_svg(data) if member.endswith(".svg") else data))
        if progress:
            print(f"{style_name}: {sum(r['style'] == style_name for r in records)} images", flush=True)

    concept_styles: dict[str, list[str]] = {}
    for r in records:
        concept_styles.setdefault(r["concept"], [])
        if r["style"] not in concept_styles[r["concept"]]:
            concept_styles[r["concept"]].append(r["style"])
    held = heldout_pairs(concept_styles)
    for r in records:
        r["split"] = "heldout" if (r["concept"], r["style"]) in held else "train"

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard_*.npz"):
        old.unlink()
    stack = np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for shard, start in enumerate(range(0, len(records), SHARD_IMAGES)):
        np.savez_compressed(out / f"shard_{shard:03d}.npz", images=stack[start:start + SHARD_IMAGES])
        for row, r in enumerate(records[start:start + SHARD_IMAGES]):
            r["shard"], r["row"] = shard, row
    with open(out / "records.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    lic = out / "LICENSES"
    lic.mkdir(exist_ok=True)
    for name, body in licences.items():
        (lic / name).write_bytes(body)
    (lic / "ATTRIBUTION.md").write_text(
        "# Where the images and texts come from\n\n" + "\n".join(
            f"- `{s}` ({STYLES[s].package} {STYLES[s].version}): {STYLES[s].attribution} Licence: {STYLES[s].licence}."
            for s in styles) +
        f"\n- Labels and keywords: {TEXT_PACKAGE[0]} {TEXT_PACKAGE[1]} (milesj/emojibase), MIT.\n")
    manifest = {
        "styles": {s: dataclasses.asdict(STYLES[s]) for s in styles},
        "text_package": list(TEXT_PACKAGE), "images": len(records),
        "concepts": len(concept_styles), "heldout_pairs": sorted(map(list, held)),
        "train_templates": list(TRAIN_TEMPLATES), "heldout_templates": list(HELDOUT_TEMPLATES),
        "image_size": IMAGE_SIZE, "background": list(BACKGROUND),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if progress:
        print(f"{len(records)} images of {len(concept_styles)} concepts, {len(held)} held-out pairs -> {out}")
    return manifest


# ---------------------------------------------------------------------------------------
# Training data
# ---------------------------------------------------------------------------------------


def load_records(root: str | Path) -> list[dict]:
    path = Path(root) / "records.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no records.jsonl (build it: python -m dir7.data.emoji build --out {root})")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Shards:
    """A built set's images by record: each shard is read once, on first use (once per worker)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._loaded: dict[int, np.ndarray] = {}

    def __getitem__(self, record: dict) -> np.ndarray:
        """The image of ``record`` (a records.jsonl line): uint8 [64, 64, 3]."""
        shard = record["shard"]
        if shard not in self._loaded:
            with np.load(self.root / f"shard_{shard:03d}.npz") as z:
                self._loaded[shard] = z["images"]
        return self._loaded[shard][record["row"]]


class EmojiDataset(Dataset):
    """``(image [3, S, S] in [-1, 1], caption)`` for every (image, training template) of a split.

    Item ``i`` is image ``i // n_templates`` with template ``i % n_templates`` (and a keyword
    chosen by the image), so captions vary and every item is deterministic (exact resume).
    """

    def __init__(self, root: str | Path, split: str = "train", size: int = IMAGE_SIZE):
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        if size != IMAGE_SIZE:
            raise ValueError(f"the emoji data is built at {IMAGE_SIZE}x{IMAGE_SIZE}; the model wants {size}")
        self.root = Path(root)
        self.records = [r for r in load_records(root) if r["split"] == split]
        if not self.records:
            raise ValueError(f"{root}: no {split!r} images")
        self.templates = TRAIN_TEMPLATES
        self.shards = Shards(root)

    def __len__(self) -> int:
        return len(self.records) * len(self.templates)

    def image(self, index: int) -> np.ndarray:
        return self.shards[self.records[index]]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        image_index, t = divmod(int(i), len(self.templates))
        r = self.records[image_index]
        return to_tensor(self.image(image_index)), caption(r, self.templates[t], keyword_index=image_index + t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dir7.data.emoji", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="fetch the packages (npm pack) and build the data set")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--packages", type=Path, default=None,
                   help="a folder holding (or to receive) the package tarballs; default: OUT/packages")
    b.add_argument("--styles", default=",".join(STYLES), help=f"comma-separated, of {','.join(STYLES)}")
    args = ap.parse_args(argv)
    packages = args.packages or args.out / "packages"
    try:
        styles = tuple(s for s in args.styles.split(",") if s)
        fetch(packages, styles)
        build(args.out, packages, styles)
    except (OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
