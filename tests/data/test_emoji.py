"""The emoji data builder on a tiny fixture: two styles, a skin-tone emoji, a component to skip."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dir7.data import emoji
from dir7.train import TrainConfig, make_loader

# (unified, name, category, colour): the fixture's emoji; 1F44D has two skin variations
ENTRIES = [
    ("1F431", "CAT FACE", "Animals & Nature", (200, 120, 30)),
    ("1F44D", "THUMBS UP SIGN", "People & Body", (240, 200, 60)),
    ("1F3FB", "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "Component", (255, 220, 180)),
]
VARIATIONS = {"1F3FB": (250, 210, 170), "1F3FF": (90, 60, 40)}


def _png(colour, size=64) -> bytes:
    """A solid colour with a transparent top-left quarter (to check the compositing)."""
    a = np.zeros((size, size, 4), np.uint8)
    a[..., :3], a[..., 3] = colour, 255
    a[: size // 2, : size // 2, 3] = 0
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _svg(colour) -> bytes:
    """The same picture as _png, as an SVG (the top-left quarter left transparent)."""
    fill = "#{:02x}{:02x}{:02x}".format(*colour)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect x="0" y="32" width="64" '
            f'height="32" fill="{fill}"/><rect x="32" y="0" width="32" height="32" fill="{fill}"/></svg>').encode()


LABELS = {"1F431": "cat face", "1F44D": "thumbs up"}


def _style_files(style: emoji.Style, colour_of) -> dict[str, bytes]:
    """A style's images of the fixture's emoji, named the way its package names them."""
    files = {}
    for code, _, category, _ in ENTRIES:
        if category == "Component":
            continue
        variants = [(code, None)] + ([(f"{code}-{t}", t) for t in VARIATIONS] if code == "1F44D" else [])
        for full, tone in variants:
            colour = colour_of(code, tone)
            if style.kind == "datasource":
                files[f"{style.image_dir}/{full.lower()}.png"] = _png(colour)
            elif style.kind == "openmoji":
                files[f"{style.image_dir}/{full}.svg"] = _svg(colour)
            else:  # fluent: by label, "-default" for the untoned form of a toned emoji
                slug = LABELS[code].replace(" ", "-")
                name = slug + ("" if code != "1F44D" else f"-{emoji.SKIN_TONES[tone]}" if tone else "-default")
                files[f"{style.image_dir}/{name}.svg"] = _svg(colour)
    return files


def make_packages(root: Path, shift: int = 0) -> Path:
    """Tarballs laid out as the npm packages are; each style's colours shifted by ``shift``."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for code, name, category, _ in ENTRIES:
        entry = {"unified": code, "name": name, "short_name": name.lower(), "short_names": [name.lower()],
                 "image": f"{code.lower()}.png", "category": category, "subcategory": "x",
                 **{s.has_key: True for s in emoji.STYLES.values() if s.has_key}}
        if code == "1F44D":
            entry["skin_variations"] = {t: {"unified": f"{code}-{t}", "image": f"{code.lower()}-{t.lower()}.png"}
                                        for t in VARIATIONS}
        entries.append(entry)
    for i, style in enumerate(emoji.STYLES.values()):
        def colour_of(code, tone, i=i):
            base = VARIATIONS[tone] if tone else next(c for e, *_, c in ENTRIES if e == code)
            return tuple(min(255, c + shift * i) for c in base)

        files = {style.licence_file: f"licence of {style.package}".encode(), **_style_files(style, colour_of)}
        if style.kind == "datasource":
            files["package/emoji.json"] = json.dumps(entries).encode()
        _tar(root / emoji.tarball_name(style.package, style.version), files)
    text = [{"hexcode": code, "label": label, "tags": ["cat", "kitten"] if code == "1F431" else ["hand", "like"]}
            for code, label in LABELS.items()]
    _tar(root / emoji.tarball_name(*emoji.TEXT_PACKAGE),
         {"package/en/data.json": json.dumps(text).encode(), "package/LICENSE": b"MIT"})
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emoji")
    out = tmp / "data"
    manifest = emoji.build(out, make_packages(tmp / "packages", shift=3), progress=False)
    return out, manifest


def test_build_writes_every_image_of_every_style_with_its_records(built):
    out, manifest = built
    records = emoji.load_records(out)
    n_styles = len(emoji.STYLES)
    assert len(records) == manifest["images"] == n_styles * 4      # cat, thumbs up and its two tones
    assert not any(r["category"] == "Component" for r in records)  # swatches alone are not concepts
    thumbs = [r for r in records if r["concept"] == "1F44D"]
    assert sorted(r["skin_tone"] or "" for r in thumbs) == sorted(["", "light", "dark"] * n_styles)
    assert all(r["label"] == "thumbs up" and r["keywords"] == ["hand", "like"] for r in thumbs)
    assert {r["style"] for r in records} == set(emoji.STYLES)
    # each record points at its own image: composited onto the background where it was transparent
    for r in records:
        with np.load(out / f"shard_{r['shard']:03d}.npz") as z:
            img = z["images"][r["row"]]
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert tuple(img[5, 5]) == emoji.BACKGROUND
        tone = r["code"].split("-")[1] if "-" in r["code"] else None
        i = list(emoji.STYLES).index(r["style"])
        base = VARIATIONS[tone] if tone else next(c for code, *_, c in ENTRIES if code == r["code"])
        expected = np.array([min(255, c + 3 * i) for c in base])
        # PNGs land exactly; SVGs are rendered at 256 pixels and downsampled, so allow a unit
        assert np.abs(img[40, 40].astype(int) - expected).max() <= 1, (r["style"], r["code"])


def test_build_keeps_licences_and_attribution_and_small_shards(built):
    out, _ = built
    names = {p.name for p in (out / "LICENSES").iterdir()}
    assert "ATTRIBUTION.md" in names and "emojibase-data.LICENSE" in names
    for style in emoji.STYLES.values():
        assert f"{style.package}.LICENSE" in names
        assert style.attribution in (out / "LICENSES" / "ATTRIBUTION.md").read_text()
    assert all(p.stat().st_size < 16 * 2**20 for p in out.glob("shard_*.npz"))


def test_heldout_pairs_are_deterministic_and_never_a_concepts_only_style():
    styles = sorted(emoji.STYLES)
    concepts = {f"{0x1F000 + i:X}": list(styles) for i in range(2000)}
    concepts["2764-FE0F"] = [styles[0]]  # drawn in one style only: never held out
    held = emoji.heldout_pairs(concepts)
    assert held == emoji.heldout_pairs(dict(reversed(list(concepts.items()))))
    assert 0.02 < len(held) / len(concepts) < 0.08
    assert all(c != "2764-FE0F" for c, _ in held)
    assert len({c for c, _ in held}) == len(held)  # one style per concept, the others stay seen
    assert {s for _, s in held} == set(styles)     # every style loses some concepts


def test_captions_name_the_thing_its_tone_and_style():
    r = {"label": "thumbs up", "keywords": ["like"], "style": "twemoji", "skin_tone": "dark",
         "category": "People & Body"}
    caps = [emoji.caption(r, t) for t in emoji.TRAIN_TEMPLATES]
    assert "thumbs up with dark skin tone" in caps and "thumbs up with dark skin tone, Twemoji style" in caps
    assert "a like emoji" in caps and "a thumbs up with dark skin tone, people and body" in caps
    assert emoji.caption({**r, "label": "flag: Japan", "skin_tone": None}, "{a}") == "a flag of Japan"
    assert not set(emoji.HELDOUT_TEMPLATES) & set(emoji.TRAIN_TEMPLATES)


def test_dataset_and_training_loader_read_the_built_set(built):
    out, _ = built
    ds = emoji.EmojiDataset(out, "train")
    n_train = sum(r["split"] == "train" for r in emoji.load_records(out))
    assert len(ds) == n_train * len(emoji.TRAIN_TEMPLATES)
    x, cap = ds[len(emoji.TRAIN_TEMPLATES) + 1]
    assert x.shape == (3, 64, 64) and x.min() >= -1 and x.max() <= 1 and isinstance(cap, str) and cap
    assert ds[5][1] == ds[5][1]  # deterministic: an exact resume sees the same item
    loader = make_loader(TrainConfig(data=f"emoji:{out}", batch_size=4, workers=0), 64, start=0, rank=0, world=1)
    images, captions = next(iter(loader))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32 and len(captions) == 4
    with pytest.raises(ValueError, match="64x64"):
        emoji.EmojiDataset(out, "train", size=32)


def test_clear_errors_for_missing_packages_and_unbuilt_sets(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="missing"):
        emoji.build(tmp_path / "out", tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown style"):
        emoji.build(tmp_path / "out", tmp_path, styles=("apple",), progress=False)
    with pytest.raises(FileNotFoundError, match=r"python -m dir7\.data\.emoji build"):
        emoji.EmojiDataset(tmp_path / "nothing")
    make_packages(tmp_path / "pk")
    assert emoji.main(["build", "--out", str(tmp_path / "cli"), "--packages", str(tmp_path / "pk")]) == 0
    assert (tmp_path / "cli" / "records.jsonl").is_file()
    assert emoji.main(["build", "--out", str(tmp_path / "x"), "--packages", str(tmp_path / "pk"),
                       "--styles", "apple"]) == 2
    assert "unknown style" in capsys.readouterr().err


def test_the_device_bundles_vocabulary_holds_every_caption_and_prompt_of_a_set(built):
    from dir7.eval.emoji import PROMPTS_SEEN
    from dir7.train import sample_prompts
    from scripts.device_bundle import _emoji_texts

    out, _ = built
    texts = set(_emoji_texts(str(out)))
    ds = emoji.EmojiDataset(out, "train")
    assert {ds[i][1] for i in range(len(ds))} <= texts
    r = emoji.load_records(out)[0]
    assert {emoji.caption(r, t) for t in emoji.HELDOUT_TEMPLATES} <= texts
    assert json.loads(PROMPTS_SEEN.read_text().splitlines()[0])["prompt"] in texts
    # an emoji run samples its grids from emoji prompts, every other run from shapes prompts
    assert sample_prompts(TrainConfig(data=f"emoji:{out}")) == emoji.SAMPLE_PROMPTS
    assert set(emoji.SAMPLE_PROMPTS) <= texts
    assert sample_prompts(TrainConfig()) != emoji.SAMPLE_PROMPTS
