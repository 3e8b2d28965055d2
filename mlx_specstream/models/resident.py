# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Tree passes whose cache offset lives on the device, so the host never waits.

``streaming.tree_pass`` takes the cache offset and the tree's tokens from the host,
so a pass can be built only once the previous one has been read back. Here the
offset, the tree's tokens and the accepted node stay device arrays: the host
builds pass k + 1 from pass k's lazy outputs while the device still runs pass k,
as ``mlx_lm.generate`` builds token k + 1 before reading token k. The tree's
*shape* is fixed (host data); only its tokens come from the device.

One pass verifies the tree and drafts the next: the top layers carry, beside the
tree's nodes, the streams of a few nodes fixed in advance (those most likely to
be accepted; on a GPU, where rows are cheap, all of them), so no second pass
runs the accepted node's streams once verification has chosen it.

K/V are written with ``mx.slice_update`` at the device offset into the layer
caches' buffers, and every row attends over the first ``num_keys`` buffer slots (a
host upper bound on what the pass can see) under a mask built on the device.
Families with sliding-window layers are not served: their windows need the
query positions on the host.
"""

from dataclasses import dataclass
from typing import Any, List

import mlx.core as mx
import numpy as np

from .fast_ops import DecodePath
from .llama import Model
from .msa import Rows, stream_sight

GROW = 256  # buffer slots added at a time, as mlx-lm's KVCache does


def supported(model: Model) -> bool:
    """Whether this module can run ``model``'s passes (no sliding windows)."""
    return all(
        getattr(layer.self_attn, "window", None) is None for layer in model.layers
    )


@dataclass(frozen=True)
class ShapeArrays:
    """A fixed tree shape on the device: T nodes, parents before children, and
    the S nodes whose γ streams ride in the same pass (``streamed``)."""

    depths: mx.array  # (T,) int32
    ancestors: mx.array  # (T, T) bool: [i, j] iff j is i or an ancestor
    streamed: mx.array  # (S,) int32 node indices, the root first
    # (T + Sγ, T + Sγ) bool, the top layers' rows: each node sees its path; stream
    # j of a streamed node its node's path and streams 1..j of that node.
    sight: mx.array
    # (T + Sγ,) int32 RoPE offsets: nodes at their depth, streams at their node's.
    row_depths: mx.array

    @classmethod
    def of(cls, depths: np.ndarray, ancestors: np.ndarray, streamed, num_streams: int):
        streamed = np.asarray(streamed, np.int32)
        sight = stream_sight(ancestors, streamed, num_streams)
        rows = np.concatenate([depths, np.repeat(depths[streamed], num_streams)])
        return cls(
            mx.array(depths.astype(np.int32)),
            mx.array(ancestors),
            mx.array(streamed),
            mx.array(sight),
            mx.array(rows.astype(np.int32)),
        )


def _with_tree(local: mx.array, rel: mx.array) -> mx.array:
    """(R, P) mask over key slots ``rel`` (relative to the tree's first row): the
    whole prefix, then ``local`` (R, n) over the n slots from the tree's first."""
    n = local.shape[1]
    cols = mx.take(local, mx.clip(rel, 0, n - 1), axis=1)  # (R, P)
    return (rel < 0)[None] | (cols & (rel < n)[None])


class _Write:
    """One layer's cache for one pass: K/V written at a device position into the
    layer cache's buffers; every row sees the first ``num_keys`` slots."""

    def __init__(self, layer: Any, at: mx.array, num_keys: int):
        self.layer, self.at, self.num_keys = layer, at, num_keys

    def update_and_fetch(self, keys: mx.array, values: mx.array, **_) -> tuple:
        c = self.layer
        if c.keys is None:  # nothing cached yet (a one-token prompt)
            B, H, _, D = keys.shape
            slots = -(-self.num_keys // GROW) * GROW
            c.keys = mx.zeros((B, H, slots, D), keys.dtype)
            c.values = mx.zeros((B, H, slots, values.shape[3]), values.dtype)
        c.keys = mx.slice_update(c.keys, keys, self.at, axes=(2,))
        c.values = mx.slice_update(c.values, values, self.at, axes=(2,))
        return c.keys[..., : self.num_keys, :], c.values[..., : self.num_keys, :]


def reserve(cache: List[Any], slots: int) -> None:
    """Grow every layer's K/V buffers to at least ``slots`` slots (lazy)."""
    for c in cache:
        if c.keys is None:  # allocated by the first write
            continue
        have = c.keys.shape[2]
        if have >= slots:
            continue
        extra = -(-(slots - have) // GROW) * GROW
        B, H, _, D = c.keys.shape
        Dv = c.values.shape[3]
        c.keys = mx.concatenate([c.keys, mx.zeros((B, H, extra, D), c.keys.dtype)], 2)
        c.values = mx.concatenate(
            [c.values, mx.zeros((B, H, extra, Dv), c.values.dtype)], 2
        )


def fused_pass(
    model: Model,
    cache: List[Any],
    tokens: mx.array,
    shape: ShapeArrays,
    offset: mx.array,
    num_keys: int,
    path: DecodePath,
) -> tuple:
    """The tree's nodes through every layer, and in the top layers the streams of
    ``shape.streamed`` nodes beside them (one pass: verification and the next
    draft). Node K/V go to ``offset .. offset + T - 1``; the streams' land past
    them and are never kept.

    Args:
        tokens: (T,) int32 node tokens; offset: (1,) int32, the cache length.
        num_keys: key slots every row attends over (>= offset + T + Sγ).

    Returns:
        ((T, V) float32 node logits, (S, γ, h) stream states after the last layer)
    """
    T = tokens.shape[0]
    S = shape.streamed.shape[0]
    rel = mx.arange(num_keys) - offset  # (P,): key slot relative to the root
    writes = [_Write(c, offset, num_keys) for c in cache]
    low = Rows(
        T,
        0,
        offset + shape.depths,
        _with_tree(shape.ancestors, rel),
        model.streams,
        path=path,
    )
    h = model.run_layers(model.embed(tokens), low, writes, 0, model.split)
    s = model.streams.insert_streams(h[0][shape.streamed])  # (S, γ, h)
    g = s.shape[1]
    top = Rows(
        T,
        0,
        offset + shape.row_depths,
        _with_tree(shape.sight, rel),
        model.streams,
        num_stream=S * g,
        path=path,
    )
    x = mx.concatenate([h, s.reshape(1, S * g, -1)], axis=1)
    h = model.run_layers(x, top, writes, model.split, len(model.layers))[0]
    logits = model.logits(h[:T], float32=True)
    return logits, h[T:].reshape(S, g, -1)


def compact(cache: List[Any], offset: mx.array, order: mx.array) -> None:
    """Move the accepted path's rows ``offset + order`` to ``offset ..`` (every
    entry of ``order`` is moved; those past the path land past the new offset)."""
    idx = offset + order
    for c in cache:
        c.keys = mx.slice_update(c.keys, mx.take(c.keys, idx, axis=2), offset, (2,))
        c.values = mx.slice_update(
            c.values, mx.take(c.values, idx, axis=2), offset, (2,)
        )
