# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Draft trees as data (arXiv 2402.11131 §3.2.2-3.2.3, App. A.1).

A tree is rooted at the correction token, the last token the main stream issued.
Nodes are flattened in an order where parents come before children. Node ``i`` sits
at RoPE position ``prefix + depth[i]`` and attends to the prefix, its ancestors and
itself. For the toy tree ``root -> a -> b, root -> c``::

    tokens  = (r, a, b, c)      parents = (-1, 0, 1, 0)     depths = (0, 1, 2, 1)
    ancestor_mask = [[1, 0, 0, 0],
                     [1, 1, 0, 0],
                     [1, 1, 1, 0],
                     [1, 0, 0, 1]]

Two shapes are drafted from the γ stream distributions of the accepted node: the
paper's Cartesian product of per-stream top-k, and a best-first tree that adds nodes
in order of joint stream probability until a node budget is spent.
"""

import heapq
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class Tree:
    tokens: Tuple[int, ...]
    parents: Tuple[int, ...]  # -1 for the root; parents[i] < i

    @classmethod
    def from_paths(cls, root: int, paths: Sequence[Sequence[int]]) -> "Tree":
        """A trie of token ``paths`` below ``root``; shared prefixes become one node."""
        tokens, parents = [root], [-1]
        child: Dict[Tuple[int, int], int] = {}
        for path in paths:
            node = 0
            for tok in path:
                key = (node, int(tok))
                if key not in child:
                    child[key] = len(tokens)
                    tokens.append(int(tok))
                    parents.append(node)
                node = child[key]
        return cls(tuple(tokens), tuple(parents))

    @property
    def size(self) -> int:
        return len(self.tokens)

    @cached_property
    def depths(self) -> np.ndarray:
        d = np.zeros(self.size, np.int32)
        for i, p in enumerate(self.parents[1:], 1):
            d[i] = d[p] + 1
        return d

    @cached_property
    def ancestor_mask(self) -> np.ndarray:
        """(T, T) bool: ``[i, j]`` is True iff node j is node i or an ancestor of it."""
        m = np.eye(self.size, dtype=bool)
        for i, p in enumerate(self.parents[1:], 1):
            m[i] |= m[p]
        return m

    @cached_property
    def children(self) -> List[List[int]]:
        out: List[List[int]] = [[] for _ in range(self.size)]
        for i, p in enumerate(self.parents[1:], 1):
            out[p].append(i)
        return out

    def path(self, node: int) -> List[int]:
        """Node indices from the root to ``node``, both included."""
        out = [node]
        while self.parents[out[-1]] >= 0:
            out.append(self.parents[out[-1]])
        return out[::-1]

    @cached_property
    def subtree_sizes(self) -> np.ndarray:
        """(T,) nodes in each node's subtree, itself included."""
        n = np.ones(self.size, np.int32)
        for i in range(self.size - 1, 0, -1):  # children come after their parents
            n[self.parents[i]] += n[i]
        return n

    def likely_anchors(self, n: int) -> List[int]:
        """The ``n`` nodes with the largest subtrees (the earlier on a tie), in node
        order: where the accepted path most likely ends. Best-first trees grow most
        below their most probable nodes, and drafters list their best child first.
        A parent's subtree is larger than its child's, so the set is closed under
        parents. (On the default model's calibration prompts, 4 of 16 nodes hold
        the end of the accepted path in 68% of passes, the root alone in 42%.)"""
        order = sorted(range(self.size), key=lambda i: (-self.subtree_sizes[i], i))
        return sorted(order[:n])

    def keep(self, nodes: Sequence[int]) -> "Tree":
        """The sub-tree of ``nodes`` (increasing, closed under parents), re-indexed."""
        index = {n: i for i, n in enumerate(nodes)}
        parents = tuple(
            -1 if self.parents[n] < 0 else index[self.parents[n]] for n in nodes
        )
        return Tree(tuple(self.tokens[n] for n in nodes), parents)

    def truncate_depth(self, max_depth: int) -> "Tree":
        return self.keep([i for i in range(self.size) if self.depths[i] <= max_depth])

    def within(self, tokens_left: int) -> "Tree":
        """The tree cut so one pass emits at most ``tokens_left`` tokens (a pass emits
        up to depth + 1); drafting further is wasted work."""
        if self.depths.max() < tokens_left:
            return self
        return self.truncate_depth(max(0, tokens_left - 1))


@dataclass(frozen=True)
class TreeShape:
    """How to draft a tree from stream distributions.

    Args:
        kind: "cartesian" (the paper: every depth-g node gets the top ``branching[g]``
            tokens of stream g + 1) or "best_first" (add the most probable node by
            joint stream probability until ``budget`` nodes, root included).
        branching: top-k per depth for "cartesian"; its length caps the depth.
        budget: node budget for "best_first".
        max_depth: deepest draft level for "best_first" (default: every stream).
        depth_penalty: "best_first" only: stream g + 1's log-probabilities are
            lowered by ``g * depth_penalty`` nats when nodes are ranked. The joint
            stream probability overrates deep nodes; 0.5 was the best of 0-1.5 on
            the default model's validation split (+2.5% tokens per pass at 16 nodes).
    """

    kind: str = "best_first"
    branching: Tuple[int, ...] = (2, 2, 1, 1)
    budget: int = 16
    max_depth: int = 0
    depth_penalty: float = 0.5

    def __post_init__(self):
        if self.kind not in ("cartesian", "best_first"):
            raise ValueError(
                f"tree kind must be 'cartesian' or 'best_first', got {self.kind!r}"
            )
        if self.kind == "cartesian" and (not self.branching or min(self.branching) < 1):
            raise ValueError(
                f"branching must be positive integers, got {self.branching}"
            )
        if self.budget < 1:
            raise ValueError(f"tree budget must be >= 1, got {self.budget}")
        if self.depth_penalty < 0:
            raise ValueError(f"depth_penalty must be >= 0, got {self.depth_penalty}")

    @property
    def top_k(self) -> int:
        """How many candidates per stream the drafter needs."""
        return (
            max(self.branching) if self.kind == "cartesian" else max(1, self.budget - 1)
        )

    @property
    def size(self) -> int:
        """Node count of a full tree (root included)."""
        if self.kind == "best_first":
            return self.budget
        n, width = 1, 1
        for k in self.branching:
            width *= k
            n += width
        return n


def cartesian_paths(
    tokens: np.ndarray, branching: Sequence[int]
) -> List[Tuple[int, ...]]:
    """Root-to-leaf paths of the Cartesian top-k tree.

    Args:
        tokens: (γ, K) candidate tokens per stream, most probable first.
        branching: top-k at each depth; depth is ``min(len(branching), γ)``.
    """
    paths: List[Tuple[int, ...]] = [()]
    for g, k in enumerate(branching[: tokens.shape[0]]):
        paths = [p + (int(t),) for p in paths for t in tokens[g, :k]]
    return paths


def walk_depth(max_depth: int, num_streams: int) -> int:
    """The deepest level a best-first tree drafts: ``max_depth`` (0: no cap), and
    never past the streams."""
    return num_streams if max_depth <= 0 else min(max_depth, num_streams)


# path -> (tokens (K,), scores (K,)) of the path's children, scores sorted
# decreasing and at most 0 (log-probabilities, possibly reranked)
Children = Callable[[Tuple[int, ...]], Tuple[np.ndarray, np.ndarray]]


def best_first_walk(
    children: Children,
    budget: int,
    max_depth: int,
    bounds: Optional[Sequence[float]] = None,
) -> List[Tuple[int, ...]]:
    """Paths of the ``budget - 1`` best nodes below the root, best first.

    A node's score is the sum of the scores along its path. Children come sorted and
    scores are at most 0, so a node's next sibling and first child always score at
    most the node itself: a heap walk enumerates nodes in score order, and every
    node's parent is taken before it.

    Args:
        bounds: ``bounds[g]`` is at least every score of a depth-g row. Given, a
            taken node's children are asked for only once its score plus that bound
            would be taken next (an expensive ``children`` is then asked less);
            without, once per node taken above ``max_depth``.
    """
    rows = {(): children(())}
    # heap entries: (-score, ranks), ranks[i] the rank of the path's i-th token; a
    # last rank of -1 stands for a node's children not asked for yet
    heap = [(-float(rows[()][1][0]), (0,))] if len(rows[()][0]) else []
    paths: Dict[Tuple[int, ...], Tuple[int, ...]] = {(): ()}
    negs: Dict[Tuple[int, ...], float] = {}
    nodes: List[Tuple[int, ...]] = []

    def first_child(ranks: Tuple[int, ...], neg: float) -> None:
        row = rows[ranks] = children(paths[ranks])
        if len(row[0]):
            heapq.heappush(heap, (neg - row[1][0], ranks + (0,)))

    while heap and len(nodes) < budget - 1:
        neg, ranks = heapq.heappop(heap)
        parent, r = ranks[:-1], ranks[-1]
        if r < 0:  # the bound came up: ask for the children now
            first_child(parent, negs[parent])
            continue
        tokens, scores = rows[parent]
        path = paths[ranks] = paths[parent] + (int(tokens[r]),)
        nodes.append(path)
        if r + 1 < len(tokens):  # next sibling
            heapq.heappush(heap, (neg + scores[r] - scores[r + 1], parent + (r + 1,)))
        if len(ranks) >= max_depth:
            continue
        if bounds is not None:  # first child, later
            negs[ranks] = neg
            heapq.heappush(heap, (neg - bounds[len(ranks)], ranks + (-1,)))
        else:
            first_child(ranks, neg)
    return nodes


def best_first_paths(
    tokens: np.ndarray, logprobs: np.ndarray, budget: int, max_depth: int = 0
) -> List[Tuple[int, ...]]:
    """Nodes of the most probable tree with ``budget`` nodes, root included.

    A node at depth g is a choice of rank r_1..r_g in streams 1..g; its score is the
    sum of those log-probabilities.

    Args:
        tokens, logprobs: (γ, K) per-stream candidates, sorted by decreasing logprob.
    """
    return best_first_walk(
        lambda path: (tokens[len(path)], logprobs[len(path)]),
        budget,
        walk_depth(max_depth, tokens.shape[0]),
    )
