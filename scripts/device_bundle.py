"""Shrink what a training run must carry to a size-limited GPU machine.

The device machine takes the working tree plus at most 64 MiB of extra files and cannot
download anything, so the text encoder and any weights to continue from must travel with
the tree. Two pieces do not fit as they are (the fp16 MiniLM alone is 45 MB, a dir7-demo
training checkpoint with its EMA 67 MB), so:

    python -m scripts.device_bundle encoder .gpu/minilm-shapes [--data emoji:DIR]
        The default text encoder in fp16 with every word-embedding row that no caption or
        evaluation prompt of the data uses set to zero, and the weights file gzipped (the
        zero rows compress away: about 21 MB instead of 45). For training and evaluating on
        that data only (the procedural shapes by default, or a built emoji set, whose
        captions are all enumerated): on those texts it gives exactly what the unpruned fp16
        copy gives, which the command checks on captions before it writes anything. On the
        GPU machine: gunzip .gpu/minilm-shapes/model.safetensors.gz;
        export DIR7_TEXT_ENCODER_DIR=...

    python -m scripts.device_bundle weights runs/prefix/checkpoint .gpu/carry
        The model and EMA weights of a training checkpoint in fp16 (33 MB for dir7-demo),
        laid out as a training checkpoint without optimizer state, for
        ``python -m dir7.train --init-from .gpu/carry`` (a warm start, not an exact resume).

    python -m scripts.device_bundle weights checkpoints/dir7-shapes .gpu/base
        The same for a model directory (config.json + shards, e.g. the shipped model: 26 MB
        instead of 52). The tracked fp32 shards travel with the tree too, so move them out of
        the working tree for that call and carry .gpu/base instead.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dir7.checkpoint import CONFIG_NAME, load_state_dict, save_state_dict
from dir7.data import captions as caption_words
from dir7.data.captions import caption_scene
from dir7.data.scenes import SPLITS, sample_rng, sample_scene
from dir7.pipeline import CARD_NAME, PIPELINE_CONFIG_NAME
from dir7.text_encoder import DEFAULT_TEXT_ENCODER, TextEncoder, resolve_text_encoder
from dir7.vocabulary import VOCABULARY_NAME

EMBEDDING = "embeddings.word_embeddings.weight"


def _captions(seed: int, n: int) -> list[str]:
    texts = []
    for i in range(n):
        split = SPLITS[i % len(SPLITS)]
        rng = sample_rng(seed, i, split)
        texts.append(caption_scene(sample_scene(rng, split), rng))
    return texts


def _vocabulary_texts() -> list[str]:
    """Every word list of the caption grammar, the evaluation prompts and the training grid's prompts."""
    from dir7.eval.shapes import PROMPTS_PATH
    from dir7.train import SAMPLE_PROMPTS

    texts = ["", *SAMPLE_PROMPTS]
    for name in dir(caption_words):
        value = getattr(caption_words, name)
        if name.isupper() and isinstance(value, (dict, tuple)):
            texts.append(json.dumps(value, default=str))  # every word, plus punctuation
    with open(PROMPTS_PATH) as f:
        texts += [json.loads(line)["prompt"] for line in f if line.strip()]
    return texts


def _emoji_texts(root: str) -> list[str]:
    """Every caption an emoji set can produce (each record, template and keyword), the emoji
    prompt files' prompts and the sample grid's: a finite list, so nothing needs sampling."""
    from dir7.data.emoji import HELDOUT_TEMPLATES, SAMPLE_PROMPTS, TRAIN_TEMPLATES, caption, load_records
    from dir7.eval.emoji import PROMPTS_HELDOUT, PROMPTS_SEEN, PROMPTS_SHOWCASE

    texts = {"", *SAMPLE_PROMPTS}
    for record in load_records(root):
        for template in (*TRAIN_TEMPLATES, *HELDOUT_TEMPLATES):
            for i in range(max(1, len(record.get("keywords") or ()))):
                texts.add(caption(record, template, keyword_index=i))
    for path in (PROMPTS_SEEN, PROMPTS_HELDOUT, PROMPTS_SHOWCASE):
        with open(path) as f:
            texts.update(json.loads(line)["prompt"] for line in f if line.strip())
    return sorted(texts)


def pack_encoder(out: Path, data: str, n_captions: int) -> None:
    source = Path(resolve_text_encoder(DEFAULT_TEXT_ENCODER))
    weights = source / "model.safetensors"
    full = TextEncoder.from_pretrained(DEFAULT_TEXT_ENCODER)
    tokenizer = full.tokenizer
    if data == "shapes":
        texts = [*_vocabulary_texts(), *_captions(seed=0, n=n_captions)]
        check = _captions(seed=12345, n=2000)  # fresh captions from another seed
    elif data.startswith("emoji:"):
        texts = _emoji_texts(data[len("emoji:"):])
        # every caption is enumerated, so none can miss a token; what is checked is that the
        # pruned copy gives the same states as the fp16 one on a sample of them
        check = texts[::max(1, len(texts) // 2000)]
    else:
        raise SystemExit(f"--data {data!r}: expected shapes or emoji:DIR")
    used: set[int] = set()
    for text in texts:
        used.update(tokenizer(text)["input_ids"])
    used.add(tokenizer.pad_token_id)

    # the check captions must not need a token outside the kept set
    missing = {t for text in check for t in tokenizer(text)["input_ids"]} - used
    if missing:
        dropped = tokenizer.convert_ids_to_tokens(sorted(missing))
        raise SystemExit(f"fresh captions use tokens the pruned copy drops: {dropped}")

    state = {k: v.half() for k, v in load_file(str(weights)).items()}
    key = next(k for k in state if k.endswith(EMBEDDING))
    keep = torch.zeros(state[key].shape[0], dtype=torch.bool)
    keep[sorted(used)] = True
    state[key] = torch.where(keep[:, None], state[key], torch.zeros_like(state[key]))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for f in source.iterdir():  # config and tokenizer files as they are
            if f.is_file() and f.suffix in (".json", ".txt"):
                shutil.copy(f, tmp / f.name)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        pruned = TextEncoder.from_pretrained(tmp)
        full.model.half().float()  # the same fp16 rounding, so only the pruning differs
        for i in range(0, len(check), 250):
            a, _ = pruned(check[i:i + 250])
            b, _ = full(check[i:i + 250])
            if not torch.equal(a, b):
                raise SystemExit(f"the pruned encoder's states differ from the fp16 encoder's on {data} captions")
        out.mkdir(parents=True, exist_ok=True)
        for f in tmp.iterdir():
            if f.name != "model.safetensors":
                shutil.copy(f, out / f.name)
        with open(tmp / "model.safetensors", "rb") as src, gzip.open(out / "model.safetensors.gz", "wb", 6) as dst:
            shutil.copyfileobj(src, dst)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"{out}: {int(keep.sum())} of {keep.numel()} token rows kept, {size:.1f} MB; "
          f"identical states on {len(check)} captions")


def pack_weights(checkpoint: Path, out: Path) -> None:
    """fp16 copies of the weights, laid out as the source is: a training checkpoint's model and
    EMA (without optimizer state), or a model directory's one set."""
    configs = [CONFIG_NAME, PIPELINE_CONFIG_NAME, CARD_NAME, VOCABULARY_NAME]
    if (checkpoint / "train_state.json").is_file():
        copied, weights = ["train_state.json", *(f"ema/{name}" for name in configs)], [".", "ema"]
    elif (checkpoint / CONFIG_NAME).is_file():
        copied, weights = configs, ["."]
    else:
        raise SystemExit(f"{checkpoint} is neither a training checkpoint (train_state.json) "
                         f"nor a model directory ({CONFIG_NAME})")
    for name in copied:
        if (checkpoint / name).is_file():  # a card, or an older model's pipeline config or vocabulary, may be absent
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(checkpoint / name, out / name)
    for sub in weights:
        state = load_state_dict(checkpoint / sub, prefix="model")
        save_state_dict({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, out / sub)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(f"{out}: weights in fp16, {size:.1f} MB (for --init-from)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    enc = sub.add_parser("encoder", help="pruned fp16 text encoder for training on one data set")
    enc.add_argument("out", type=Path)
    enc.add_argument("--data", default="shapes", help="shapes (default) or emoji:DIR (a built emoji set)")
    enc.add_argument("--captions", type=int, default=200_000, help="captions sampled to collect the vocabulary")
    w = sub.add_parser("weights", help="fp16 weights of a training checkpoint (model + EMA) or a model directory")
    w.add_argument("checkpoint", type=Path)
    w.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.what == "encoder":
        pack_encoder(args.out, args.data, args.captions)
    else:
        pack_weights(args.checkpoint, args.out)


if __name__ == "__main__":
    main()
