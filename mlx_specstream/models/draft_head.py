# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The LM head restricted to a draft vocabulary (FR-Spec, arXiv 2502.14856).

Drafting only needs the few tokens a stream is likely to propose, so stream logits and
their top-k are taken over a frequency-ranked subset of K token ids: the head's rows for
those ids, sliced once. A stream pass over γ rows reads the whole (V, h) head for
a handful of rows, so its cost is the head's size; K / V of the rows costs K / V of
that. Verification keeps the full head, so decoding output does not change.
"""

from typing import Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

_ROW_KEYS = ("weight", "scales", "biases", "bias")  # (V, ...) tensors of a head


class DraftHead:
    """``h (R, hidden) -> (R, K)`` logits of the draft vocabulary ``ids``.

    Args:
        head: the LM head: ``nn.Linear`` / ``nn.QuantizedLinear``, or the tied
            ``nn.Embedding`` / ``nn.QuantizedEmbedding`` (used as a linear layer).
        ids: (K,) distinct token ids.
    """

    def __init__(self, head: nn.Module, ids: np.ndarray):
        self.source = head["weight"]  # which weights the slices were taken from
        idx = mx.array(ids.astype(np.int32))
        # A quantized head packs each row on its own, so slicing rows of the packed
        # weight, scales and biases gives the quantized head of the subset.
        self.rows = {k: head[k][idx] for k in _ROW_KEYS if k in head}
        mx.eval(self.rows)
        self.quantized = "scales" in head
        if self.quantized:
            self.group_size, self.bits = head.group_size, head.bits
            self.mode = getattr(head, "mode", "affine")

    def __call__(self, h: mx.array) -> mx.array:
        r = self.rows
        if self.quantized:
            out = mx.quantized_matmul(
                h,
                r["weight"],
                scales=r["scales"],
                biases=r.get("biases"),
                transpose=True,
                group_size=self.group_size,
                bits=self.bits,
                mode=self.mode,
            )
        else:
            out = h @ r["weight"].T
        if "bias" in r:
            out = out + r["bias"]
        return out


def check_draft_vocab(ids: np.ndarray, vocab_size: int) -> Optional[str]:
    """What is wrong with a draft vocabulary, or None where it is usable."""
    if ids.ndim != 1 or ids.size == 0:
        return f"draft_vocab must be a non-empty 1-D array, got shape {ids.shape}"
    if not np.issubdtype(ids.dtype, np.integer):
        return f"draft_vocab must hold integer token ids, got {ids.dtype}"
    if ids.min() < 0 or ids.max() >= vocab_size:
        bad = int(ids.min() if ids.min() < 0 else ids.max())
        return f"draft_vocab id {bad} is outside the vocabulary [0, {vocab_size})"
    if np.unique(ids).size != ids.size:
        return "draft_vocab ids are not unique"
    return None
