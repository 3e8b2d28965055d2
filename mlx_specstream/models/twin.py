# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""An mlx-lm module that shares a model's weights, for batched plain decoding.

Several sequences in one plain forward pass is what mlx-lm's ``BatchGenerator``
does, with left-padded ``BatchKVCache`` rows and per-row offsets. Our model runs
one sequence (its rows are a tree's), so batched plain steps go through mlx-lm's
own class for the family, built around the same weight arrays (no copy): what it
computes is checked once against our forward pass on a probe sequence.
"""

import dataclasses
import threading
import weakref
from typing import Any, Dict, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .llama import Model

_PROBE = 24  # tokens the twin is checked on: longer than the tests' tiny windows
_TWINS: Dict[int, Optional[nn.Module]] = {}
_LOCK = threading.Lock()


def mlx_lm_twin(model: Model) -> Optional[nn.Module]:
    """mlx-lm's module for ``model``'s family on the same weights, or None where
    batching is not served: a family with sliding-window layers (mlx-lm gives them
    rotating caches, ours are full), one mlx-lm lacks, or a probe that disagrees.
    Made once per model."""
    key = id(model)
    with _LOCK:
        if key in _TWINS:
            return _TWINS[key]
    twin = _build(model)
    with _LOCK:
        if key not in _TWINS:
            _TWINS[key] = twin
            weakref.finalize(model, _TWINS.pop, key, None)
        return _TWINS[key]


def _build(model: Model) -> Optional[nn.Module]:
    from mlx_lm.utils import _get_classes

    config: Dict[str, Any] = dataclasses.asdict(model.args)
    if any("sliding" in str(t) for t in config.get("layer_types") or ()):
        return None
    try:
        model_class, args_class = _get_classes(config)
        twin = model_class(args_class.from_dict(config))
    except Exception:  # noqa: BLE001 - a family mlx-lm cannot build: no batching
        return None
    ours = dict(tree_flatten(model.parameters()))
    theirs = [k for k, _ in tree_flatten(twin.parameters())]
    if any(k not in ours for k in theirs):
        return None
    # The twin's random initial weights are lazy and never evaluated.
    twin.load_weights([(k, ours[k]) for k in theirs], strict=True)
    twin.eval()
    return twin if _agrees(model, twin) else None


def _agrees(model: Model, twin: nn.Module) -> bool:
    """Both modules give the same logits on a probe (to rounding, relative to the
    logits' size), and the same argmax wherever the top two are not that close."""
    vocab = model.args.vocab_size
    probe = mx.array([[(7 * i + 3) % vocab for i in range(_PROBE)]])
    a = model(probe).astype(mx.float32)
    b = twin(probe).astype(mx.float32)
    tol = 1e-2 * float(mx.abs(a).max()) + 1e-5
    if float(mx.abs(a - b).max()) > tol:
        return False
    top2 = mx.sort(a, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 2 * tol
    return bool(mx.all(~clear | (a.argmax(-1) == b.argmax(-1))))
