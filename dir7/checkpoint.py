"""Weights on disk: sharded safetensors + an index (Hugging Face's sharding convention).

A model directory (``DIR7Pipeline.save_pretrained``) holds:
    config.json                         the DIR7Config (architecture)
    pipeline_config.json                the PipelineConfig (sampling defaults)
    README.md                           the model card (written by hand)
    model.safetensors.index.json        {"metadata": ..., "weight_map": {tensor name: shard file}}
    model-00001-of-0000N.safetensors    the shards (each < 9 MiB)
No pickle anywhere. Writes go to a temporary directory renamed into place, so a crash
never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
MAX_SHARD_BYTES = 9 * 1024 * 1024  # under Hugging Face's 10 MB limit for a file outside Git LFS


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete or does not match the model it is loaded into."""


def save_state_dict(state_dict: dict[str, torch.Tensor], directory: Path, prefix: str = "model") -> list[str]:
    """Write sharded safetensors plus the index into ``directory``; returns the shard names."""
    state_dict = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    split = split_torch_state_dict_into_shards(
        state_dict, filename_pattern=prefix + "{suffix}.safetensors", max_shard_size=MAX_SHARD_BYTES
    )
    for filename, names in split.filename_to_tensors.items():
        save_file({n: state_dict[n] for n in names}, str(directory / filename), metadata={"format": "pt"})
    index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
    (directory / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    return sorted(split.filename_to_tensors)


def atomic_directory_write(target: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``target`` (replacing it)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        # mkdtemp makes private (0700) directories; a checkpoint is meant to be shared
        os.chmod(tmp, 0o755)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_state_dict(directory: str | os.PathLike, prefix: str = "model") -> dict[str, torch.Tensor]:
    """Read every shard named by the index; errors name the missing or broken file."""
    directory = Path(directory)
    index_path = directory / f"{prefix}.safetensors.index.json"
    if not index_path.is_file():
        raise CheckpointError(f"missing {index_path} (the shard index of the checkpoint)")
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index_path} is not a valid shard index: {e}") from e
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = directory / shard
        if not shard_path.is_file():
            raise CheckpointError(f"missing shard {shard_path} (listed in {index_path.name})")
        try:
            tensors = load_file(str(shard_path))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"could not read shard {shard_path}: {e}") from e
        expected = {n for n, f in weight_map.items() if f == shard}
        if set(tensors) != expected:
            missing = sorted(expected - set(tensors))[:5]
            raise CheckpointError(f"shard {shard_path} does not hold what {index_path.name} lists (missing {missing})")
        state.update(tensors)
    return state


def load_into(
    model: torch.nn.Module, directory: str | os.PathLike, prefix: str = "model", new_modules: tuple[str, ...] = ()
) -> None:
    """Load a checkpoint into ``model``, naming the file of any missing or mismatched tensor.

    ``new_modules``: name prefixes (e.g. ``"text_pool."``) of tensors the checkpoint may lack;
    they keep the model's own values. Every other tensor must be there, with its shape.
    """
    directory = Path(directory)
    state = load_state_dict(directory, prefix)
    weight_map = json.loads((directory / f"{prefix}.safetensors.index.json").read_text())["weight_map"]
    own = model.state_dict()
    missing = sorted(n for n in set(own) - set(state) if not n.startswith(tuple(new_modules)))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {directory} does not fit the model built from {CONFIG_NAME}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in state.items():
        if tensor.shape != own[name].shape:
            raise CheckpointError(
                f"{directory / weight_map[name]}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"the model built from {CONFIG_NAME} expects {tuple(own[name].shape)}"
            )
    # checked above: only tensors under new_modules may be absent, and they keep their values
    model.load_state_dict(state, strict=not new_modules)
