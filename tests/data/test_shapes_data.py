"""dir7.data: procedural shapes scenes (determinism, exact rendering, truthful captions,
held-out pairs, speed) and loaders for users' own image folders."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from dir7.data import (
    ALL_PAIRS,
    BACKGROUND,
    COLORS,
    HELDOUT_PAIRS,
    KINDS,
    PALETTE,
    SHAPES,
    SIZE_RANGES,
    TRAIN_PAIRS,
    CaptionFolderDataset,
    ClassFolderDataset,
    IndexSampler,
    ShapesDataset,
    class_caption,
    collate,
    image_folder_dataset,
    make_sample,
    place_of,
    relative_position,
    render_scene,
    shapes_dataloader,
)
from dir7.data.captions import RELATION_WORDS, SHAPE_WORDS, SIZE_WORDS
from dir7.data.scenes import GAP, MARGIN

N = 600  # samples per statistical check: enough to see every kind, fast on 2 cores


@pytest.fixture(scope="module")
def samples():
    return [make_sample(7, i) for i in range(N)]


# ---- vocabulary and held-out pairs --------------------------------------------------------


def test_heldout_pairs_leave_every_shape_and_color_in_training():
    assert 4 <= len(HELDOUT_PAIRS) <= 8 and set(HELDOUT_PAIRS) <= set(ALL_PAIRS)
    assert len(ALL_PAIRS) == len(SHAPES) * len(COLORS) == 40
    assert set(TRAIN_PAIRS) == set(ALL_PAIRS) - set(HELDOUT_PAIRS)
    assert {s for _, s in TRAIN_PAIRS} == set(SHAPES)
    assert {c for c, _ in TRAIN_PAIRS} == set(COLORS)


def test_palette_is_well_separated_from_itself_and_the_background():
    cols = np.array([PALETTE[c] for c in COLORS] + [BACKGROUND], dtype=float)
    d = np.linalg.norm(cols[:, None] - cols[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() > 80  # robust nearest-colour classification under noise


# ---- determinism ----------------------------------------------------------------------------


def test_sample_is_a_pure_function_of_seed_index_split():
    a, b = make_sample(3, 41), make_sample(3, 41)
    assert a.caption == b.caption and a.scene == b.scene and np.array_equal(a.image, b.image)
    others = [make_sample(4, 41), make_sample(3, 42), make_sample(3, 41, "heldout")]
    assert all(not np.array_equal(a.image, o.image) for o in others)


def test_dataloader_batches_do_not_depend_on_workers():
    ds = ShapesDataset(seed=5)
    one = [b for _, b in zip(range(3), shapes_dataloader(8, seed=5, num_workers=0))]
    two = [b for _, b in zip(range(3), shapes_dataloader(8, seed=5, num_workers=2))]
    for (x1, c1), (x2, c2) in zip(one, two):
        assert torch.equal(x1, x2) and c1 == c2
    x, c = ds[9]
    assert torch.equal(one[1][0][1], x) and one[1][1][1] == c


def test_resume_and_data_parallel_slices_cover_the_global_stream():
    # resuming at sample 16 continues exactly where a run of 2 batches of 8 stopped
    full = [b for _, b in zip(range(3), shapes_dataloader(8, seed=1, num_workers=0))]
    resumed = next(iter(shapes_dataloader(8, seed=1, start=16, num_workers=0)))
    assert torch.equal(full[2][0], resumed[0]) and full[2][1] == resumed[1]
    # two ranks with batch 4 each read exactly the 8 samples of one global batch
    ranks = [list(zip(range(4), IndexSampler(start=8, rank=r, world_size=2))) for r in range(2)]
    assert sorted(i for r in ranks for _, i in r) == list(range(8, 16))
    assert len(IndexSampler(0, 10, rank=1, world_size=3)) == len(range(1, 10, 3))


def test_item_is_a_float_tensor_in_range_and_collate_keeps_captions():
    ds = ShapesDataset()
    x, cap = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and isinstance(cap, str) and cap
    xb, caps = collate([ds[0], ds[1]])
    assert xb.shape == (2, 3, 64, 64) and caps == [cap, ds[1][1]]


# ---- scenes and rendering ---------------------------------------------------------------


def test_render_is_exact_and_objects_are_separate(samples):
    allowed = {tuple(PALETTE[c]) for c in COLORS} | {BACKGROUND}
    for s in samples:
        img, objs = s.image, s.scene.objects
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert {tuple(p) for p in img.reshape(-1, 3)} <= allowed  # no anti-aliasing
        assert 1 <= len(objs) <= 4
        for o in objs:
            x0, y0, x1, y1 = o.bbox
            assert MARGIN <= x0 and x1 <= 64 - MARGIN and MARGIN <= y0 and y1 <= 64 - MARGIN
            lo, hi = SIZE_RANGES[o.size]
            assert lo <= o.side <= hi
            assert (img[y0:y1, x0:x1] == PALETTE[o.color]).all(-1).sum() > 0.3 * o.side**2
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                gap_x = max(b.bbox[0] - a.bbox[2], a.bbox[0] - b.bbox[2])
                gap_y = max(b.bbox[1] - a.bbox[3], a.bbox[1] - b.bbox[3])
                assert max(gap_x, gap_y) >= GAP


def test_sampler_covers_the_vocabulary_and_all_kinds(samples):
    scenes = [s.scene for s in samples]
    assert {sc.kind for sc in scenes} == set(KINDS)
    objs = [o for sc in scenes for o in sc.objects]
    assert {o.shape for o in objs} == set(SHAPES)
    assert {o.color for o in objs} == set(COLORS)
    assert {o.size for o in objs} == {"small", "large"}
    assert {len(sc.objects) for sc in scenes} == {1, 2, 3, 4}
    assert {sc.relation[1] for sc in scenes if sc.relation} == set(RELATION_WORDS)
    assert {sc.place for sc in scenes if sc.place} == {"left", "right", "top", "bottom", "center"}


def test_train_split_never_shows_a_heldout_pair_and_heldout_split_always_does():
    for i in range(1500):
        assert not make_sample(11, i, "train").scene.has_heldout_pair()
    for i in range(300):
        s = make_sample(11, i, "heldout")
        held = [o for o in s.scene.objects if o.pair in HELDOUT_PAIRS]
        assert held, s
        # the caption names the held-out pair's colour (and the scene says colours)
        assert s.scene.say_color and re.search(rf"\b{held[0].color}\b", s.caption)


def test_relations_and_places_hold_in_the_picture(samples):
    for s in samples:
        sc = s.scene
        if sc.relation:
            i, rel, j = sc.relation
            assert relative_position(sc.objects[i].bbox, sc.objects[j].bbox) == {rel}
        if sc.place:
            assert place_of(sc.objects[0].center) == sc.place


# ---- captions ----------------------------------------------------------------------------

_SHAPE_RE = {s: re.compile(r"\b(" + "|".join(re.escape(w) for pair in ws for w in pair) + r")\b")
             for s, ws in SHAPE_WORDS.items()}


def test_captions_are_true_of_their_scene(samples):
    for s in samples:
        cap, sc = s.caption, s.scene
        shapes = {o.shape for o in sc.objects}
        colors = {o.color for o in sc.objects}
        sizes = {o.size for o in sc.objects}
        for shape in SHAPES:  # every object's shape is named, no other shape is
            assert bool(_SHAPE_RE[shape].search(cap)) == (shape in shapes), (cap, sc)
        for c in COLORS:  # only colours that are there
            if re.search(rf"\b{c}\b", cap):
                assert c in colors, (cap, sc)
        for size, words in SIZE_WORDS.items():
            if any(re.search(rf"\b{w}\b", cap) for w in words):
                assert size in sizes, (cap, sc)
        if sc.kind in ("colors", "color_attr"):
            assert all(re.search(rf"\b{c}\b", cap) for c in colors), (cap, sc)
        if sc.kind == "counting" and len(sc.objects) > 1:
            n = len(sc.objects)
            assert re.search(rf"\b({['two', 'three', 'four'][n - 2]}|{n}|pair)\b", cap), (cap, sc)
        if sc.relation:
            words = [w for ws in RELATION_WORDS.values() for w in ws]
            assert any(w in cap for w in words), cap


def test_captions_vary_in_templates_and_synonyms(samples):
    caps = [s.caption for s in samples]
    assert len(set(caps)) > 0.8 * len(caps)
    words = Counter(w for c in caps for w in c.split())
    for syn in ("ball", "box", "big", "tiny", "photo"):
        assert words[syn] > 0, syn
    assert any(c.startswith("there are") for c in caps) and any(" and " in c for c in caps)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="split"):
        ShapesDataset(split="validation")
    with pytest.raises(ValueError, match="kind"):
        make_sample(0, 0, kind="painting")
    with pytest.raises(ValueError, match="index"):
        make_sample(0, -1)


def test_render_rejects_objects_outside_the_image():
    from dir7.data import Scene, SceneObject

    with pytest.raises(ValueError, match="fit"):
        render_scene(Scene([SceneObject("circle", "red", "large", 50, 50, 20)]))


# ---- users' own images --------------------------------------------------------------------


def _img(path, size=(80, 50), color=(200, 10, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 128).save(path)


def test_caption_folder_with_key_aliases(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "sub" / "b.jpg", (30, 40))
    _img(tmp_path / "c.png", mode="L")
    lines = [{"file": "a.png", "caption": "red"}, {"file_name": "sub/b.jpg", "text": "small"},
             {"image": "c.png", "caption": "gray"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    ds = image_folder_dataset(tmp_path, size=32)
    assert isinstance(ds, CaptionFolderDataset) and len(ds) == 3
    x, cap = ds[0]
    assert x.shape == (3, 32, 32) and cap == "red"
    assert torch.allclose(x[:, 16, 16], torch.tensor([200, 10, 10]) / 127.5 - 1, atol=0.02)
    assert ds[1][0].shape == (3, 32, 32) and ds[1][1] == "small"   # upscaled and cropped
    assert ds[2][0].shape == (3, 32, 32)                            # grayscale -> RGB


def test_caption_folder_errors_name_the_problem(tmp_path):
    _img(tmp_path / "a.png")
    f = tmp_path / "captions.jsonl"
    f.write_text('{"file": "a.png", "caption": "x"}\n{"file": "missing.png", "caption": "y"}\n')
    with pytest.raises(FileNotFoundError, match=r"line 2.*missing\.png"):
        CaptionFolderDataset(tmp_path)
    f.write_text('{"file": "a.png", "caption": "x"}\n{"file": "a.png", caption}\n')
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        CaptionFolderDataset(tmp_path)
    f.write_text('{"file": "a.png"}\n')
    with pytest.raises(ValueError, match="line 1: no caption"):
        CaptionFolderDataset(tmp_path)
    f.write_text("\n")
    with pytest.raises(ValueError, match="lists no images"):
        CaptionFolderDataset(tmp_path)


def test_class_folders_become_captions(tmp_path):
    _img(tmp_path / "golden_retriever" / "1.png")
    _img(tmp_path / "golden_retriever" / "2.jpg")
    _img(tmp_path / "apple" / "x.png", (64, 64))
    (tmp_path / "empty").mkdir()
    ds = image_folder_dataset(tmp_path, size=16)
    assert isinstance(ds, ClassFolderDataset) and len(ds) == 3
    assert sorted(set(ds.captions)) == ["a photo of a golden retriever", "a photo of an apple"]
    assert ds[0][0].shape == (3, 16, 16)
    named = ClassFolderDataset(tmp_path, class_names={"apple": "granny smith"})
    assert "a photo of a granny smith" in named.captions
    assert class_caption("elephant") == "a photo of an elephant"
    assert class_caption("sports-car", "a picture of {}") == "a picture of a sports car"


def test_empty_or_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        image_folder_dataset(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"no captions\.jsonl and no class sub-folders"):
        image_folder_dataset(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="no images"):
        image_folder_dataset(tmp_path)
