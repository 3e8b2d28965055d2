# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Check tensors against the model a config describes, and merge PEFT LoRA adapters.

Base weights keep their Hugging Face names (mlx-lm uses the same ones), so there is
no rename table for HF checkpoints; GGUF names are mapped in ``gguf.py``.
"""

import math
import re
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import mlx.core as mx

from mlx_specstream.format import SETTINGS_FILE, STREAMS_FILE
from mlx_specstream.loading.files import load_safetensors, read_json
from mlx_specstream.loading.model_io import base_shapes, check_shapes, stream_shapes
from mlx_specstream.models.llama import Model

from .checkpoint import Origins, Weights, load_torch_bin
from .errors import ConvertError, ConvertFileNotFoundError


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
    check_shapes(
        base_shapes(model),
        weights,
        source,
        origins=origins,
        unexpected=f" (not in a {model.model_type} model)",
        implied_by="config.json implies",
        count_missing=True,
    )
    for k, v in weights.items():
        if not mx.issubdtype(v.dtype, mx.floating):
            raise ConvertError(
                origins.get(k, source),
                f"tensor {k!r} has dtype {v.dtype}, expected a float type",
            )
    return weights


def check_stream_weights(tensors: Weights, model: Model, directory: Path) -> Weights:
    """Check stream tensors against the model's streams (``model_io.stream_shapes``);
    return them float32."""
    check_shapes(
        stream_shapes(model),
        tensors,
        directory / STREAMS_FILE,
        unexpected=f" for the settings in {SETTINGS_FILE}",
    )
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


def merge_lora(
    weights: Weights,
    adapter_dir: Path,
    rename: Optional[Callable[[str], Optional[str]]] = None,
) -> Tuple[Weights, int]:
    """Merge a PEFT LoRA adapter into base weights: ``W += scale * B @ A``.

    ``rename`` maps a checkpoint weight name to the model's (``Model.weight_name``
    of a family that renames, e.g. multimodal Gemma 3); None from it skips a module
    the model drops (a vision tower).

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
    weights, skipped = dict(weights), 0
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
        if rename is not None:
            name = rename(name)
            if name is None:  # outside the model that is converted
                skipped += 1
                continue
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
    return weights, len(pairs) - skipped
