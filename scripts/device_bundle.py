"""Shrink what a training run must carry to a size-limited GPU machine.

The device machine takes the working tree plus at most 64 MiB of extra files and cannot
download anything, so the text encoder and any weights to continue from must travel with
the tree. Two pieces do not fit as they are (the fp16 MiniLM alone is 45 MB, a dir7-demo
training checkpoint with its EMA 67 MB), so:

    python -m scripts.device_bundle encoder .gpu/minilm-shapes
        The default text encoder in fp16 with every word-embedding row that no shapes
        caption or evaluation prompt uses set to zero, and the weights file gzipped (the
        zero rows compress away: about 21 MB instead of 45). For training on the shapes data
        only: on those texts it gives exactly what the unpruned fp16 copy gives, which the
        command checks on fresh captions before it writes anything. On the GPU machine:
        gunzip .gpu/minilm-shapes/model.safetensors.gz; export DIR7_TEXT_ENCODER_DIR=...

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


def pack_encoder(out: Path, n_captions: int) -> None:
    source = Path(resolve_text_encoder(DEFAULT_TEXT_ENCODER))
    weights = source / "model.safetensors"
    full = TextEncoder.from_pretrained(DEFAULT_TEXT_ENCODER)
    tokenizer = full.tokenizer
    used: set[int] = set()
    for text in [*_vocabulary_texts(), *_captions(seed=0, n=n_captions)]:
        used.update(tokenizer(text)["input_ids"])
    used.add(tokenizer.pad_token_id)

    # fresh captions from another seed must not need a token outside the kept set
    check = _captions(seed=12345, n=2000)
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
                raise SystemExit("the pruned encoder's states differ from the fp16 encoder's on shapes captions")
        out.mkdir(parents=True, exist_ok=True)
        for f in tmp.iterdir():
            if f.name != "model.safetensors":
                shutil.copy(f, out / f.name)
        with open(tmp / "model.safetensors", "rb") as src, gzip.open(out / "model.safetensors.gz", "wb", 6) as dst:
            shutil.copyfileobj(src, dst)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"{out}: {int(keep.sum())} of {keep.numel()} token rows kept, {size:.1f} MB; "
          f"identical states on {len(check)} fresh captions")


def pack_weights(checkpoint: Path, out: Path) -> None:
    """fp16 copies of the weights, laid out as the source is: a training checkpoint's model and
    EMA (without optimizer state), or a model directory's one set."""
    configs = [CONFIG_NAME, PIPELINE_CONFIG_NAME, CARD_NAME]
    if (checkpoint / "train_state.json").is_file():
        copied, weights = ["train_state.json", *(f"ema/{name}" for name in configs)], [".", "ema"]
    elif (checkpoint / CONFIG_NAME).is_file():
        copied, weights = configs, ["."]
    else:
        raise SystemExit(f"{checkpoint} is neither a training checkpoint (train_state.json) "
                         f"nor a model directory ({CONFIG_NAME})")
    for name in copied:
        if (checkpoint / name).is_file():  # a model card, or an older model's pipeline config, may be absent
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
    enc = sub.add_parser("encoder", help="pruned fp16 text encoder for shapes training")
    enc.add_argument("out", type=Path)
    enc.add_argument("--captions", type=int, default=200_000, help="captions sampled to collect the vocabulary")
    w = sub.add_parser("weights", help="fp16 weights of a training checkpoint (model + EMA) or a model directory")
    w.add_argument("checkpoint", type=Path)
    w.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.what == "encoder":
        pack_encoder(args.out, args.captions)
    else:
        pack_weights(args.checkpoint, args.out)


if __name__ == "__main__":
    main()
