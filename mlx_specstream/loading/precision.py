# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The dtype a loaded model computes in, per device.

MLX's CPU backend has no BLAS for bfloat16/float16 and its quantized matmul
accumulates in the activation dtype: with bfloat16 activations a 576 x 1536 8-bit
matmul is off by ~8% of its largest output (float32 activations: ~0.5%), and a
decoding step of a bf16 / q8 model is 3.5x / 5.5x slower than in float32
(``benchmarks/precision_costs.py``). Such rounding makes any two decoders
part at gaps of several nats, not only at ties. So on the CPU a low-precision model
computes in float32: its weights keep their values (bf16/fp16 values are exact in
float32; quantized weights stay packed, only scales, biases and norms are widened).
GPUs (Metal, CUDA) accumulate in float32 already and keep the model's dtype.
"""

from typing import Optional

import mlx.core as mx
import mlx.nn as nn

COMPUTE_DTYPES = ("auto", "float32", "model")


def compute_dtype(
    model: nn.Module, choice: Optional[str] = "auto"
) -> Optional[mx.Dtype]:
    """The dtype ``model`` should compute in, or None to keep its own.

    Args:
        choice: "auto" (float32 on the CPU, the model's dtype on a GPU), "float32",
            or "model" (the model's own dtype everywhere).
    """
    choice = choice or "auto"
    if choice not in COMPUTE_DTYPES:
        raise ValueError(
            f"compute_dtype {choice!r}: expected one of {', '.join(COMPUTE_DTYPES)}"
        )
    if choice == "model" or (choice == "auto" and mx.default_device() != mx.cpu):
        return None
    return mx.float32


def set_compute_dtype(model: nn.Module, choice: Optional[str] = "auto") -> None:
    """Widen ``model``'s floating parameters to the compute dtype (see module doc)."""
    dtype = compute_dtype(model, choice)
    if dtype is None:
        return
    model.set_dtype(
        dtype,
        predicate=lambda t: mx.issubdtype(t, mx.floating) and t != dtype,
    )
