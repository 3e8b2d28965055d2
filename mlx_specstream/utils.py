# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""``load``: a model name or directory -> ``(model, tokenizer)``, as in mlx-lm."""

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from mlx_lm.tokenizer_utils import TokenizerWrapper
from mlx_lm.utils import load_tokenizer

from .decoding.state import state_of
from .device import on_device
from .loading.calibration import load_calibration
from .loading.files import read_json
from .loading.model_io import (  # noqa: F401 (re-exported: mlx-lm keeps these in utils)
    build_model,
    load_model,
    save_model,
)
from .loading.precision import set_compute_dtype
from .loading.registry import resolve
from .models.llama import Model


def load(
    path_or_name: Union[str, Path],
    tokenizer_config: Optional[Dict[str, Any]] = None,
    lazy: bool = True,
    compute_dtype: str = "auto",
) -> Tuple[Model, TokenizerWrapper]:
    """Load a model and its tokenizer.

    Args:
        path_or_name: a local directory, a registered name (``smollm2-135m-instruct``)
            or a Hugging Face repo id.
        tokenizer_config: extra keyword arguments for the tokenizer.
        lazy: leave weights memory-mapped until first use.
        compute_dtype: "auto" (float32 on the CPU, where low-precision matmuls
            are slower and round coarsely; the model's dtype on a GPU), "float32"
            or "model" (see ``precision.py``).

    Returns:
        ``(model, tokenizer)``.
    """
    path = resolve(path_or_name)
    # Made on the generation stream, which any thread may evaluate: lazily loaded
    # weights built on this thread's own stream could be read on this thread only.
    with on_device():
        model = load_model(path, lazy=lazy)
        set_compute_dtype(model, compute_dtype)
    state = state_of(model)
    state.path = path
    # The tree budget measured on this device by `mlx-specstream calibrate`, if any.
    state.calibration = load_calibration(path)
    tokenizer = load_tokenizer(
        path, tokenizer_config or {}, eos_token_ids=_eos_ids(path)
    )
    return model, tokenizer


def _eos_ids(path: Path) -> Optional[list]:
    """EOS ids from config.json / generation_config.json, as mlx-lm does."""
    for name in ("generation_config.json", "config.json"):
        f = path / name
        if f.exists():
            eos = read_json(f).get("eos_token_id")
            if eos is not None:
                return [eos] if isinstance(eos, int) else list(eos)
    return None
