# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Check tensors against the model a config describes, and merge PEFT LoRA adapters.

Base weights keep their Hugging Face names (mlx-lm uses the same ones), so there is
no rename table for HF checkpoints; GGUF names are mapped in ``gguf.py``.
"""

import math
import re
from pathlib import Path
from typing import Dict, Tuple

import mlx.core as mx
from mlx.utils import tree_flatten

from mlx_specstream.format import STREAMS_FILE, StreamArgs, stream_tensor_shapes
from mlx_specstream.models.llama import Model

from .checkpoint import Origins, Weights, load_safetensors, load_torch_bin, read_json
from .errors import ConvertError, ConvertFileNotFoundError


def base_shapes(model: Model) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every base (non-stream) parameter of ``model``."""
    return {
        k: tuple(v.shape)
        for k, v in tree_flatten(model.parameters())
        if not k.startswith("streams.")
    }


def check_base_weights(
    weights: Weights, origins: Origins, model: Model, source: Path
) -> Weights:
    """Drop tensors the model does not use by design, then check names and shapes.

    Args:
        weights: Hugging Face names -> tensors.
        origins: the file each tensor came from (named in errors).
        model: a model built from the config; its parameters are the expectation.
        source: the weights file (or index) named when a tensor is missing.

    Returns:
        The weights ``model.load_weights`` takes.
    """
    weights = model.sanitize(dict(weights))  # rotary inv_freq, tied lm_head
    expected = base_shapes(model)
    for k, v in weights.items():
        where = origins.get(k, source)
        if k not in expected:
            raise ConvertError(
                where, f"unexpected tensor {k!r} (not in a {model.model_type} model)"
            )
        if tuple(v.shape) != expected[k]:
            raise ConvertError(
                where,
                f"tensor {k!r} has shape {tuple(v.shape)}, config.json implies "
                f"{expected[k]}",
            )
        if not mx.issubdtype(v.dtype, mx.floating):
            raise ConvertError(
                where, f"tensor {k!r} has dtype {v.dtype}, expected a float type"
            )
    missing = [k for k in expected if k not in weights]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConvertError(source, f"missing tensor {missing[0]!r}{more}")
    return weights


def check_stream_weights(
    tensors: Weights, args: StreamArgs, model: Model, directory: Path
) -> Weights:
    """Check stream tensors against ``format.stream_tensor_shapes``; return them float32."""
    a = model.args
    expected = stream_tensor_shapes(
        args, a.hidden_size, a.layer_dims, a.num_hidden_layers
    )
    path = directory / STREAMS_FILE
    for k, v in tensors.items():
        if k not in expected:
            raise ConvertError(
                path,
                f"unexpected tensor {k!r} for the settings in speculative_streaming.json",
            )
        if tuple(v.shape) != tuple(expected[k]):
            raise ConvertError(
                path,
                f"tensor {k!r} has shape {tuple(v.shape)}, expected {tuple(expected[k])}",
            )
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise ConvertError(path, f"missing tensor {missing[0]!r}")
    return {k: v.astype(mx.float32) for k, v in tensors.items()}


# --- PEFT LoRA -------------------------------------------------------------------

_LORA_KEY = re.compile(
    r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[\w-]+)?\.weight"
)


def _pattern_value(pattern: Dict, module: str, default):
    """PEFT's ``rank_pattern`` / ``alpha_pattern`` lookup: key matches a name suffix."""
    for key, value in (pattern or {}).items():
        if module == key or re.match(rf"(.*\.)?{key}$", module):
            return value
    return default


def _targets(config: Dict, module: str) -> bool:
    target = config.get("target_modules")
    if isinstance(target, str):  # a regex on the full module name
        return re.fullmatch(target, module) is not None
    if target is None or target == "all-linear":
        return True
    return module.split(".")[-1] in target or module in target


def load_adapter(adapter_dir: Path) -> Tuple[Dict, Weights, Path]:
    """``adapter_config.json`` and the tensors of a PEFT LoRA directory."""
    if not adapter_dir.is_dir():
        raise ConvertFileNotFoundError(adapter_dir, "adapter directory not found")
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = read_json(cfg_path)
    kind = cfg.get("peft_type", "LORA")
    if kind != "LORA":
        raise ConvertError(cfg_path, f"unsupported adapter type {kind!r} (only LORA)")
    for key, ok, what in (
        ("use_dora", False, "DoRA"),
        ("fan_in_fan_out", False, "fan_in_fan_out"),
        ("bias", "none", "trained biases"),
    ):
        if cfg.get(key, ok) not in (ok, None):
            raise ConvertError(
                cfg_path, f"unsupported adapter setting {key}={cfg[key]!r} ({what})"
            )
    for name in ("r", "lora_alpha"):
        if not isinstance(cfg.get(name), (int, float)) or cfg[name] <= 0:
            raise ConvertError(
                cfg_path, f"'{name}' must be a positive number, got {cfg.get(name)!r}"
            )
    st, pt = (
        adapter_dir / "adapter_model.safetensors",
        adapter_dir / "adapter_model.bin",
    )
    if st.exists():
        return cfg, load_safetensors(st), st
    if pt.exists():
        return cfg, load_torch_bin(pt), pt
    raise ConvertFileNotFoundError(
        adapter_dir, "no adapter_model.safetensors or adapter_model.bin"
    )


def merge_lora(weights: Weights, adapter_dir: Path) -> Tuple[Weights, int]:
    """Merge a PEFT LoRA adapter into base weights: ``W += scale * B @ A``.

    ``scale = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``); the
    rank and alpha of a module may be overridden by ``rank_pattern`` /
    ``alpha_pattern``. Merged in float32, stored back in each weight's dtype.

    Returns:
        The merged weights and the number of modules merged.
    """
    cfg, tensors, file = load_adapter(adapter_dir)
    pairs: Dict[str, Dict[str, mx.array]] = {}
    for key, v in tensors.items():
        m = _LORA_KEY.fullmatch(key)
        if m is None:
            raise ConvertError(
                file,
                f"unsupported adapter tensor {key!r} (only lora_A/lora_B of linear layers)",
            )
        pairs.setdefault(m.group(1), {})[m.group(2)] = v
    if not pairs:
        raise ConvertError(file, "no LoRA tensors in the adapter")
    weights = dict(weights)
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ConvertError(
                file, f"module {module!r} has lora_{'A' if 'B' in ab else 'B'} missing"
            )
        if not _targets(cfg, module):
            raise ConvertError(
                file,
                f"module {module!r} is not in target_modules of adapter_config.json",
            )
        name = f"{module}.weight"
        if name not in weights:
            raise ConvertError(
                file,
                f"adapter targets {module!r}, which has no weight in the base model",
            )
        w, a, b = weights[name], ab["A"], ab["B"]
        r = a.shape[0]
        if (
            a.ndim != 2
            or b.ndim != 2
            or b.shape[1] != r
            or (b.shape[0], a.shape[1]) != tuple(w.shape)
        ):
            raise ConvertError(
                file,
                f"LoRA shapes A {tuple(a.shape)}, B {tuple(b.shape)} of {module!r} do not "
                f"fit its weight {tuple(w.shape)}",
            )
        alpha = _pattern_value(cfg.get("alpha_pattern"), module, cfg["lora_alpha"])
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        delta = (b.astype(mx.float32) @ a.astype(mx.float32)) * scale
        weights[name] = (w.astype(mx.float32) + delta).astype(w.dtype)
    return weights, len(pairs)
