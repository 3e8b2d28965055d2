# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""RoPE at explicit per-row positions (tree nodes and stream rows share a position
with their anchor), with cos/sin tables made once per pass."""

from typing import Dict, Optional, Union

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.rope_utils import initialize_rope

from . import fast_ops

Positions = Union[int, mx.array]
# The rope_scaling types mlx-lm's initialize_rope builds for a whole-head rotation.
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")


def make_rope(
    dims: int,
    base: float,
    traditional: bool,
    scaling: Optional[Dict] = None,
    max_position_embeddings: Optional[int] = None,
) -> nn.Module:
    """mlx-lm's ``initialize_rope``, with a ValueError that says what is wrong with
    ``rope_scaling`` (an unknown type, a missing field) instead of its bare error."""
    kind = "default"
    if scaling is not None:
        kind = scaling.get("type") or scaling.get("rope_type", "default")
        if kind not in ROPE_TYPES:
            raise ValueError(
                f"unsupported rope_scaling type {kind!r} "
                f"(supported: {', '.join(ROPE_TYPES)})"
            )
    try:
        return initialize_rope(
            dims, base, traditional, scaling, max_position_embeddings
        )
    except KeyError as e:
        raise ValueError(f"rope_scaling of type {kind!r} lacks {e}") from None
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise ValueError(f"invalid rope_scaling {scaling!r} ({e})") from None


def apply_rope(
    rope: nn.Module, x: mx.array, positions: Positions, tables: Optional[tuple] = None
) -> mx.array:
    """RoPE on (1, R, n_heads, head_dim) rows at arbitrary per-row positions.

    ``tables`` (from ``rope_tables``) rotate with multiplies only; MLX's per-row rope
    recomputes sines and cosines for every head of every layer, slowly on CPU.
    """
    if isinstance(positions, int):
        return rope(x.transpose(0, 2, 1, 3), offset=positions)
    if tables is not None:
        return fast_ops.rotate(x, *tables).transpose(0, 2, 1, 3)
    _, R, H, D = x.shape
    # Each row becomes its own batch entry so fast.rope takes one offset per row.
    x = rope(x.reshape(R, 1, H, D).transpose(0, 2, 1, 3), offset=positions)
    return x.transpose(2, 1, 0, 3)  # (R, H, 1, D) -> (1, H, R, D)


def rope_tables(rope: nn.Module, positions: mx.array, head_dim: int) -> Optional[tuple]:
    """(cos, sin, traditional) of each row's rotation, read off ``rope`` itself.

    Rotating a unit vector gives cos and sin in the slots of each rotated pair, so
    any RoPE variant (scaled, YaRN, ...) is covered. None where the module rotates
    only part of the head or does not say how it pairs dimensions.
    """
    traditional = getattr(rope, "traditional", None)
    if getattr(rope, "dims", None) != head_dim or traditional is None:
        return None
    half = head_dim // 2
    unit = mx.zeros((head_dim,))
    unit = unit.at[0::2].add(1.0) if traditional else unit.at[:half].add(1.0)
    R = positions.size
    out = apply_rope(rope, mx.broadcast_to(unit, (1, R, 1, head_dim)), positions)
    out = out[0, 0]  # (R, head_dim)
    cos, sin = (
        (out[:, 0::2], out[:, 1::2]) if traditional else (out[:, :half], out[:, half:])
    )
    # (R, half) -> (1, R, 1, half): broadcast over heads
    return cos[None, :, None], sin[None, :, None], traditional
