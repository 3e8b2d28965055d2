# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The forward passes Speculative Streaming decodes with (arXiv 2402.11131 §3.2).

The decoder gives this module tokens (a prompt chunk, one token, a flattened draft
tree) and gets back what verification and drafting need: main-row logits, the
states the streams start from, stream states. It never touches the model's layers,
rows or stream parameters itself. Nothing here reads back to the host: every
output is a lazy array the decoder evaluates once per pass.

A tree pass runs the lower layers over the nodes, then the top ``Ns`` layers with
γ stream rows for the anchors it is asked for (``anchors``). The accepted node's
streams can also run after verification (``node_streams``), against the tree's
K/V still in the cache: the node is given as device arrays, so the pass queues
behind verification without waiting for it.
"""

from dataclasses import dataclass
from typing import Any, List, Optional, Protocol, Sequence, Tuple

import mlx.core as mx
import numpy as np

from .fast_ops import DecodePath
from .llama import Model
from .msa import Rows


class Tree(Protocol):
    """A flattened draft tree, as ``decoding/tree.py``'s ``Tree`` gives it."""

    tokens: Tuple[int, ...]
    parents: Tuple[int, ...]  # -1 for the root; parents[i] < i
    depths: np.ndarray  # (T,)
    ancestor_mask: np.ndarray  # (T, T) bool: [i, j] iff j is i or an ancestor

    @property
    def size(self) -> int: ...


def prefill(
    model: Model, tokens: Sequence[int], cache: List[Any], path: DecodePath
) -> None:
    """Run ``tokens`` through every layer into the cache (no logits)."""
    rows = Rows.causal(len(tokens), cache[0].offset, model.streams, path)
    model.run_layers(model.embed(mx.array(tokens)), rows, cache, 0, len(model.layers))


def step_logits(
    model: Model, token: mx.array, cache: List[Any], path: DecodePath
) -> mx.array:
    """One plain decoding step: (1,) token -> (1, V) float32 logits."""
    rows = Rows.causal(1, cache[0].offset, model.streams, path)
    h = model.run_layers(model.embed(token), rows, cache, 0, len(model.layers))
    return model.logits(h[0], float32=True)


@dataclass
class TreePass:
    """What a tree pass leaves for verification and drafting (lazy arrays)."""

    logits: mx.array  # (T, V) float32 main logits of the nodes
    h_split: mx.array  # (T, h) main states entering the first stream layer
    h_top: mx.array  # (T, h) main states after the last layer (before the norm)
    stream_states: Optional[mx.array]  # (A * γ, h): the anchors' streams, in order
    keep: Optional[mx.array]  # (T,) bool: nodes that survive pruning (None: all)


def tree_pass(
    model: Model,
    cache: List[Any],
    tree: Tree,
    anchors: Sequence[int],
    prune_threshold: float,
    path: DecodePath,
) -> TreePass:
    """The verify pass over a flattened tree, with stream rows for ``anchors``.

    Pruning (threshold > 0) masks, on the device, children whose early-exit
    probability at layer l is below the threshold (and their subtrees): every node
    still runs through the top layers, but verification accepts only kept ones.
    """
    offset = cache[0].offset
    T = tree.size
    if T == 1:
        # A lone root (the first pass after prefill, or nothing drafted) runs exactly
        # as a plain step: the same kernels, so in low precision the same rounding.
        rows = Rows.causal(1, offset, model.streams, path)
    else:
        rows = Rows.tree(tree.ancestor_mask, tree.depths, offset, model.streams, path)
    tokens = mx.array(tree.tokens)
    h = model.run_layers(model.embed(tokens), rows, cache, 0, model.split)
    keep = None
    if prune_threshold > 0 and T > 1:
        keep = _kept(model, tree, tokens, h[0], prune_threshold)
    h_split = h[0]
    if anchors:
        rows = rows.with_streams(list(anchors))
        a = h[0] if len(anchors) == T else h[0, mx.array(list(anchors))]
        s = model.streams.insert_streams(a).reshape(1, -1, h.shape[-1])  # (1, A*γ, h)
        h = mx.concatenate([h, s], axis=1)
    h = model.run_layers(h, rows, cache, model.split, len(model.layers))[0]
    return TreePass(
        model.logits(h[:T], float32=True),
        h_split,
        h[:T],
        h[T:] if anchors else None,
        keep,
    )


def _kept(
    model: Model, tree: Tree, tokens: mx.array, h_split: mx.array, threshold: float
) -> mx.array:
    """(T,) bool: the root, and nodes whose transition from their parent has
    early-exit probability >= threshold, as have all their ancestors."""
    lp = model.early_exit(h_split).astype(mx.float32)
    lp = lp - mx.logsumexp(lp, axis=-1, keepdims=True)
    parents = mx.array(np.maximum(np.array(tree.parents), 0))
    trans = mx.exp(lp[parents, tokens])  # (T,): the root's entry is ignored
    ok = (trans >= threshold) | (mx.arange(tree.size) == 0)
    # A node is kept iff no node on its path (itself included) failed.
    ancestors = mx.array(tree.ancestor_mask.astype(np.float32))
    return (ancestors @ (~ok).astype(mx.float32)) == 0


def node_streams(
    model: Model,
    cache: List[Any],
    tree: Tree,
    visible: mx.array,
    depth: mx.array,
    h_node: mx.array,
    path: DecodePath,
) -> mx.array:
    """The γ streams of one node of the tree just verified, through the top layers.

    Runs against the tree's K/V in the cache (before compaction), the node given
    on the device so that this pass needs no host read.

    Args:
        visible: (T,) bool, the node and its ancestors.
        depth: () int, the node's depth.
        h_node: (h,) the node's main state entering layer l.

    Returns:
        (γ, h) stream states after the last layer.
    """
    start = cache[0].offset - tree.size
    positions = start + tree.depths.astype(np.int64)
    rows = Rows.streams_on_tree(
        start, positions, visible, start + depth, model.streams, path
    )
    s = model.streams.insert_streams(h_node[None])  # (1, γ, h)
    return model.run_layers(s, rows, cache, model.split, len(model.layers))[0]


def draft_logits(model: Model, states: mx.array) -> mx.array:
    """(R, h) stream states -> (R, K) draft logits (K: the draft vocabulary, or V)."""
    return model.stream_logits(states)


def final_states(model: Model, h: mx.array) -> mx.array:
    """Final-normalised states (what Medusa heads read)."""
    return model.model.norm(h)


def num_streams(model: Model) -> int:
    return model.streams.args.num_streams
