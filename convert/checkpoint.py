# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Read a PyTorch (Hugging Face) checkpoint directory and its stream files.

Everything here returns MLX arrays keyed by Hugging Face names and raises
``ConvertError("<file>: <problem>")`` on bad input. torch is imported only to read
``pytorch_model.bin`` files, and only with ``weights_only=True``.
"""

import pickle
import shutil
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import mlx.core as mx

from mlx_specstream.format import (
    SETTINGS_FILE,
    STREAMS_FILE,
    SUPPORTED_ARCHITECTURES,
    StreamArgs,
)
from mlx_specstream.loading.files import load_safetensors, read_json
from mlx_specstream.loading.model_io import load_stream_args

from .errors import ConvertError, ConvertFileNotFoundError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
# Tensors are keyed by name; each remembers the file it came from for error messages.
Weights = Dict[str, mx.array]
Origins = Dict[str, Path]


def read_hf_config(model_dir: Path) -> Dict:
    """``config.json`` of a supported architecture (llama, mistral, qwen2)."""
    path = model_dir / "config.json"
    config = read_json(path)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ConvertError(
            path,
            f"unsupported architecture model_type={model_type!r} "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})",
        )
    archs = config.get("architectures") or []
    bad = [a for a in archs if a not in SUPPORTED_ARCHITECTURES.values()]
    if bad:
        raise ConvertError(
            path,
            f"unsupported architecture {bad[0]!r} "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES.values())})",
        )
    return config


def load_torch_bin(path: Path) -> Weights:
    """A ``pytorch_model.bin`` state dict, loaded with ``weights_only=True``.

    A pickle that needs code execution (any global outside torch's allow-list) is
    refused by torch before anything runs; we report it and stop.
    """
    try:
        import torch  # optional (the convert extra), needed for .bin files only
    except ImportError:
        raise ConvertError(
            path,
            "reading .bin checkpoints needs PyTorch "
            "(pip install 'mlx-specstream[convert]') or convert it to safetensors",
        ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln), "")
        raise ConvertError(
            path,
            "refusing to load: the pickle needs code execution "
            f"(weights_only=True rejected it{': ' + detail if detail else ''})",
        ) from None
    except Exception as e:
        line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConvertError(
            path, f"corrupt or unreadable PyTorch file ({line})"
        ) from None
    if not isinstance(state, dict):
        raise ConvertError(path, f"expected a state dict, found {type(state).__name__}")
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ConvertError(
                path, f"entry {k!r} is a {type(v).__name__}, not a tensor"
            )
        v = v.detach().contiguous()
        if v.dtype == torch.bfloat16:  # numpy has no bfloat16
            out[k] = mx.array(v.float().numpy()).astype(mx.bfloat16)
        else:
            out[k] = mx.array(v.numpy())
    return out


def _load_sharded(index: Path, loader) -> Tuple[Weights, Origins]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConvertError(index, "no 'weight_map' in index")
    weights, origins = {}, {}
    for shard in sorted(set(weight_map.values())):
        path = index.parent / shard
        if not path.is_file():
            raise ConvertFileNotFoundError(
                path, f"shard listed in {index.name} not found"
            )
        for k, v in loader(path).items():
            weights[k], origins[k] = v, path
    for k, shard in weight_map.items():
        if k not in weights:
            raise ConvertError(
                index.parent / shard, f"missing tensor {k!r} (listed in {index.name})"
            )
    return weights, origins


def load_hf_weights(model_dir: Path) -> Tuple[Weights, Origins, Path]:
    """Base weights of a Hugging Face directory, the file of each tensor, and the
    weights file (or index) itself.

    Looks for, in order: ``model.safetensors``, ``model.safetensors.index.json``,
    ``pytorch_model.bin``, ``pytorch_model.bin.index.json``.
    """
    st, st_index = (
        model_dir / "model.safetensors",
        model_dir / "model.safetensors.index.json",
    )
    pt, pt_index = (
        model_dir / "pytorch_model.bin",
        model_dir / "pytorch_model.bin.index.json",
    )
    if st.exists():
        w = load_safetensors(st)
        return w, {k: st for k in w}, st
    if st_index.exists():
        return (*_load_sharded(st_index, load_safetensors), st_index)
    if pt.exists():
        w = load_torch_bin(pt)
        return w, {k: pt for k in w}, pt
    if pt_index.exists():
        return (*_load_sharded(pt_index, load_torch_bin), pt_index)
    raise ConvertFileNotFoundError(
        model_dir,
        "no weights found (expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin)",
    )


def load_streams(directory: Path) -> Optional[Tuple[StreamArgs, Weights]]:
    """Stream settings and tensors from ``directory``, or None when it has neither."""
    settings, tensors = directory / SETTINGS_FILE, directory / STREAMS_FILE
    if not settings.exists() and not tensors.exists():
        return None
    if not settings.exists():
        raise ConvertFileNotFoundError(
            settings, f"missing (but {STREAMS_FILE} is present)"
        )
    if not tensors.exists():
        raise ConvertFileNotFoundError(
            tensors, f"missing (but {SETTINGS_FILE} is present)"
        )
    return load_stream_args(directory), load_safetensors(tensors)


def copy_tokenizer(src: Path, dst: Path) -> int:
    """Copy the tokenizer files of ``src`` to ``dst``; return how many were copied."""
    n = 0
    for name in TOKENIZER_FILES:
        f = src / name
        if f.is_file():
            if f.suffix == ".json":
                read_json(f)  # a broken tokenizer file would only fail at load time
            shutil.copy2(f, dst / name)
            n += 1
    if n == 0:
        print(f"warning: {src}: no tokenizer files to copy", file=sys.stderr)
    return n
