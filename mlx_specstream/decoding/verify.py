# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Tree verification on the device: the accepted path and the correction token.

Both rules take a tree's main logits and return lazy arrays, so a pass's
verification, the next draft's stream pass and its top-k all queue behind the
forward pass and reach the host in one read.

Greedy: a child is accepted iff its token is its parent's argmax (the first such
sibling, as a walk from the root takes it); the path ends at the deepest node whose
ancestors were all accepted; the correction is that node's argmax.

Tree rejection sampling (lossless, App. A.1): at a node with target distribution
p, children x_1, x_2, ... are tried in order; child k is accepted with probability
p(x_k) / (1 - p(x_1) - ... - p(x_{k-1})), the residual's mass after the earlier
rejections. Where all are rejected, the correction is drawn from p with the
rejected tokens removed. Each child's test needs only p(x_k) and its earlier
siblings' mass, so every node is tested at once with one uniform draw per node;
the accepted path is the chain of first-accepted children from the root.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence

import mlx.core as mx
import numpy as np

from ..sample_utils import (
    LogitsProcessor,
    SamplingArgs,
    apply_logits_processors,
    log_softmax,
    target_logprobs,
)
from .tree import Tree


@dataclass(frozen=True)
class TreeArrays:
    """A tree as the device verifies it; T nodes, parents before children."""

    tokens: mx.array  # (T,) int32
    parents: mx.array  # (T,) int32, the root's own index for the root
    depths: mx.array  # (T,) int32
    ancestors: mx.array  # (T, T) float32: [i, j] = 1 iff j is i or an ancestor
    earlier: mx.array  # (T, T) float32: [i, j] = 1 iff j is an earlier sibling of i

    @classmethod
    def of(cls, tree: Tree) -> "TreeArrays":
        parents = np.maximum(np.array(tree.parents, np.int32), 0)
        T = tree.size
        idx = np.arange(T)
        earlier = (parents[:, None] == parents[None, :]) & (idx[None, :] < idx[:, None])
        earlier[0] = False  # the root has no siblings
        earlier[:, 0] = False
        return cls(
            mx.array(np.array(tree.tokens, np.int32)),
            mx.array(parents),
            mx.array(tree.depths.astype(np.int32)),
            mx.array(tree.ancestor_mask.astype(np.float32)),
            mx.array(earlier.astype(np.float32)),
        )


@dataclass
class Verdict:
    """The accepted path of a verified tree (lazy device arrays).

    ``order[d]`` is the accepted node at depth d for d < ``length`` (entries past
    it are meaningless); ``anchor`` is the last of them, ``visible`` its path as a
    (T,) mask; ``logits`` (T, V) are each path node's (processed) logits, in path
    order (``logprobs(n)`` normalises the first n).
    """

    order: mx.array  # (T,) int32
    length: mx.array  # () int32: accepted nodes, the root included
    anchor: mx.array  # () int32
    depth: mx.array  # () int32: the anchor's depth (length - 1)
    visible: mx.array  # (T,) bool
    correction: mx.array  # () int32
    logits: mx.array  # (T, V) float32

    def logprobs(self, n: int) -> mx.array:
        """(n, V) log-softmax of the first n path nodes' logits (lazy)."""
        return log_softmax(self.logits[:n])


def _chain(t: TreeArrays, accept: mx.array) -> tuple:
    """(anchor, visible) of the path of first-accepted children from the root.

    Args:
        accept: (T,) bool, per node: accepted by its parent's test (root: True).
    """
    # Only the first accepted sibling counts: a walk from the root stops there.
    first = accept & ((t.earlier @ accept.astype(mx.float32)) == 0)
    # On the path iff no node on the way from the root (itself included) failed.
    on_path = (t.ancestors @ (~first).astype(mx.float32)) == 0
    anchor = mx.argmax(mx.where(on_path, t.depths, -1)).astype(mx.int32)
    return anchor, t.ancestors[anchor] > 0


def _verdict(
    t: TreeArrays,
    anchor: mx.array,
    visible: mx.array,
    correction: mx.array,
    logits: mx.array,
) -> Verdict:
    T = t.tokens.shape[0]
    # (T, T): node i is the path's node at depth d; an empty column gives 0.
    at_depth = visible[:, None] & (t.depths[:, None] == mx.arange(T)[None, :])
    order = mx.argmax(at_depth.astype(mx.int32), axis=0).astype(mx.int32)
    depth = t.depths[anchor]
    return Verdict(order, depth + 1, anchor, depth, visible, correction, logits[order])


def greedy_verdict(
    t: TreeArrays, logits: mx.array, keep: Optional[mx.array] = None
) -> Verdict:
    """Greedy verification of (T, V) node logits; ``keep`` (T,) bool: nodes
    pruning left (None: all). The tokens may be device arrays (a tree whose
    tokens were drafted on the device)."""
    root = mx.arange(t.tokens.shape[0]) == 0
    argmax = mx.argmax(logits, axis=-1).astype(mx.int32)
    accept = (t.tokens == argmax[t.parents]) | root
    if keep is not None:
        accept = accept & keep
    anchor, visible = _chain(t, accept)
    return _verdict(t, anchor, visible, argmax[anchor], logits)


def sampled_verdict(
    t: TreeArrays,
    logits: mx.array,
    sampling: SamplingArgs,
    keep: Optional[mx.array] = None,
) -> Verdict:
    """Tree rejection sampling of (T, V) node logits against ``sampling``'s
    distribution; siblings must carry distinct tokens. The tokens may be device
    arrays."""
    T = t.tokens.shape[0]
    root = mx.arange(T) == 0
    # The filters are shift invariant: logits serve as log-probabilities.
    probs = mx.exp(target_logprobs(logits, sampling))  # (T, V)
    q = probs[t.parents, t.tokens]  # (T,): each child's mass under its parent
    if keep is not None:
        q = mx.where(keep, q, 0.0)
    left = 1.0 - t.earlier @ q  # the residual's mass when the child is tried
    u = mx.random.uniform(shape=(T,))
    accept = ((u * left < q) & (left > 0)) | root
    anchor, visible = _chain(t, accept)
    # Draw the correction from the anchor's residual: p without its children
    # (each tried and rejected; pruned ones were never tried).
    children = (t.parents == anchor) & ~root
    if keep is not None:
        children = children & keep
    p = probs[anchor].at[t.tokens].multiply(mx.where(children, 0.0, 1.0))
    # Every candidate rejected and nothing left (a top-k edge): p itself.
    p = mx.where(p.sum() > 0, p, probs[anchor])
    correction = mx.random.categorical(mx.log(p)).astype(mx.int32)
    return _verdict(t, anchor, visible, correction, logits)


class TreeVerifier:
    """Verifies trees against a sampler (greedy or tree rejection sampling), with
    mlx-lm logits processors applied at every node with that node's history."""

    def __init__(
        self, sampling: SamplingArgs, processors: Optional[Sequence[LogitsProcessor]]
    ):
        if not sampling.tree_exact:
            raise ValueError(
                "XTC sampling cannot verify a draft tree: decode plainly "
                "(speculative=False)"
            )
        self.sampling = sampling
        self.processors = processors

    def __call__(
        self,
        tree: Tree,
        logits: mx.array,
        history: List[int],
        keep: Optional[mx.array] = None,
    ) -> Verdict:
        """Verify (T, V) node logits; ``history`` is the conversation up to the
        root; ``keep`` (T,) bool: nodes pruning left (None: all)."""
        if self.processors:
            nodes = _node_histories(mx.array(history), tree)
            logits = apply_logits_processors(self.processors, nodes, logits)
        t = TreeArrays.of(tree)
        if self.sampling.greedy:
            return greedy_verdict(t, logits, keep)
        return sampled_verdict(t, logits, self.sampling, keep)


def _node_histories(context: mx.array, tree: Tree) -> List[mx.array]:
    """Each node's history: the context (ending with the root), then the node's
    ancestors below the root and the node itself."""
    out = []
    for i in range(tree.size):
        below = [tree.tokens[j] for j in tree.path(i)[1:]]
        out.append(
            mx.concatenate([context, mx.array(below, context.dtype)])
            if below
            else context
        )
    return out
