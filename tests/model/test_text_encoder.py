"""Text encoder: the default MiniLM from its pip package, and a CLIP text tower from a local dir."""

from __future__ import annotations

import json

import pytest
import torch

import dir7


def test_default_encoder_gives_per_token_states(text_encoder):
    states, mask = text_encoder(["a red circle left of a blue square", "two stars"])
    assert states.dtype == torch.float32 and states.shape[0] == 2 and states.shape[2] == 384
    assert mask.dtype == torch.bool and mask.shape == states.shape[:2]
    assert mask[0].all() and not mask[1].all()  # the short prompt is padded
    assert all(not p.requires_grad for p in text_encoder.parameters())  # frozen


def test_padding_does_not_change_real_token_states(text_encoder):
    alone, _ = text_encoder("two stars")
    batched, mask = text_encoder(["two stars", "a much longer prompt about many different things"])
    n = int(mask[0].sum())
    assert n == alone.shape[1]
    assert torch.allclose(batched[0, :n], alone[0], atol=1e-5)
    padded, pmask = text_encoder(["two stars"], pad_to_multiple_of=16)
    assert padded.shape[1] == 16 and pmask.shape == (1, 16)
    assert pmask[0].sum() == n and not pmask[0, n:].any()
    assert torch.allclose(padded[0, :n], alone[0], atol=1e-5)


def test_truncation_and_token_count():
    enc = dir7.TextEncoder.from_pretrained(max_length=8)
    long_prompt = "a big red ball to the left of a tiny blue square above two green stars"
    assert enc.count_tokens(long_prompt) > 8
    states, mask = enc(long_prompt)
    assert states.shape[1] == 8 and mask.all()


def test_prepend_eot_puts_the_end_of_text_token_first():
    enc = dir7.TextEncoder.from_pretrained(prepend_eot=True)
    ids = enc.tokenizer(enc._texts(["two stars"])[0])["input_ids"]
    assert enc.tokenizer.convert_ids_to_tokens(ids)[:3] == ["[CLS]", "[SEP]", "two"]
    assert enc.count_tokens("two stars") == 5


def test_missing_encoder_gives_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="never downloads"):
        dir7.TextEncoder.from_pretrained(str(tmp_path / "nowhere"))


def _tiny_clip(directory):
    """A random CLIP text tower with a real (byte-level, merge-free) CLIP tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    # GPT-2 / CLIP byte-level alphabet: printable bytes map to themselves, the rest to 256+
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tok.save_pretrained(directory)
    cfg = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
    )
    CLIPTextModel(cfg).save_pretrained(directory)
    return tok


def test_clip_text_encoder_from_a_local_directory(tmp_path):
    from transformers import CLIPTextModel

    _tiny_clip(tmp_path)
    enc = dir7.TextEncoder.from_pretrained(str(tmp_path), prepend_eot=True)
    assert isinstance(enc.model, CLIPTextModel) and enc.dim == 32
    states, mask = enc(["red", "a blue star"])
    assert states.shape[:2] == mask.shape and states.shape[2] == 32
    ids = enc.tokenizer(enc._texts(["red"])[0])["input_ids"]
    assert enc.tokenizer.convert_ids_to_tokens(ids)[:2] == ["<|startoftext|>", "<|endoftext|>"]
    # a DIR-7 model conditioned on it
    cfg = dir7.DIR7Config.from_preset("dir7-demo", text_dim=32, dim=64, depth=1, head_size=16, image_size=16,
                                      patch_size=4, conv_channels=8, text_encoder=str(tmp_path))
    pipe = dir7.DIR7Pipeline(dir7.DIR7Model(cfg), enc)
    assert pipe("red", num_inference_steps=2, seed=0).images[0].size == (16, 16)
