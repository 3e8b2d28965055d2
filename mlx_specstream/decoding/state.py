# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""What ``load`` found beside a model's weights, kept off the model object.

The model object holds weights and computes; where its files came from, whether
its streams were trained, the n-gram table of its own answers and the tree
calibrated for this device are one ``ModelState``, which ``state_of(model)``
returns (a fresh default for a model built in code) and the decoder's defaults
read. ``load`` fills it.
"""

import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional


@dataclass
class ModelState:
    """Args:
    path: the model directory (None: built in code).
    has_streams: the streams were trained (loaded from stream files); without
        them decoding drafts by prompt lookup only.
    ngrams: the n-gram table of the model's own answers (``NgramStore``) that
        prompt lookup falls back on and stream trees are reranked by.
    calibration: the tree measured for this model and device (``Calibration``,
        ``mlx-specstream calibrate``); None: not calibrated.
    compiled_passes: pipelined tree passes traced for this model
        (``decoding/resident.py``), kept so that later generations reuse them.
    """

    path: Optional[Path] = None
    has_streams: bool = True
    ngrams: Optional[Any] = None
    calibration: Optional[Any] = None
    compiled_passes: Dict[Any, Any] = field(default_factory=dict)


_STATES: Dict[int, ModelState] = {}
_LOCK = threading.Lock()


def state_of(model: Any) -> ModelState:
    """The model's state (made on first use; dropped with the model)."""
    with _LOCK:
        state = _STATES.get(id(model))
        if state is None:
            state = _STATES[id(model)] = ModelState()
            # Keyed by id: a module (a dict) is not hashable. The finalizer drops
            # the entry before the id can be reused.
            weakref.finalize(model, _STATES.pop, id(model), None)
        return state
