# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Sampling and tree acceptance rules.

Greedy verification accepts a child iff its token is the parent's argmax, so the
output equals plain greedy decoding. With temperature, tree rejection sampling keeps
the output distribution equal to plain sampling: drafts are deterministic (a point
mass q = δ_x), so child x of a node with target p is accepted with probability
min(1, p(x) / q(x)) = p(x); on rejection the residual norm(max(p - q, 0)) is p with x
removed and renormalised, and the next child is tried against it. If no child is
accepted the correction token is sampled from what is left.
"""

from dataclasses import dataclass
from typing import List, Tuple

import mlx.core as mx
import numpy as np
from mlx_lm.sample_utils import apply_top_k, apply_top_p

from .tree import Tree


@dataclass(frozen=True)
class SamplingArgs:
    temp: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self):
        if self.temp < 0:
            raise ValueError(f"temp must be >= 0, got {self.temp}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temp == 0.0


def target_logprobs(logits: mx.array, args: SamplingArgs) -> mx.array:
    """Log-probabilities of the distribution plain sampling draws from, (N, V)."""
    logprobs = logits.astype(mx.float32) / args.temp
    logprobs = logprobs - mx.logsumexp(logprobs, axis=-1, keepdims=True)
    if args.top_k > 0:
        logprobs = apply_top_k(logprobs, args.top_k)
    if args.top_p < 1.0:
        logprobs = apply_top_p(logprobs, args.top_p)
    return logprobs - mx.logsumexp(logprobs, axis=-1, keepdims=True)


def sample(logits: mx.array, args: SamplingArgs) -> mx.array:
    """Plain sampling of one token per row of (N, V) logits."""
    if args.greedy:
        return mx.argmax(logits, axis=-1)
    return mx.random.categorical(target_logprobs(logits, args))


def accept_greedy(tree: Tree, argmax: np.ndarray) -> Tuple[List[int], int]:
    """Longest path whose tokens equal their parent's argmax.

    Returns:
        ``(path, correction)``: accepted node indices from the root, and the argmax
        of the last accepted node.
    """
    node = 0
    while True:
        nxt = [c for c in tree.children[node] if tree.tokens[c] == argmax[node]]
        if not nxt:
            break
        node = nxt[0]
    return tree.path(node), int(argmax[node])


def accept_sampled(
    tree: Tree, probs: np.ndarray, rng: np.random.Generator
) -> Tuple[List[int], int]:
    """Tree rejection sampling (see module docstring).

    Args:
        probs: (T, V) target probabilities at every node.
    """
    node = 0
    while True:
        p = probs[node].astype(np.float64)
        accepted = None
        for c in tree.children[node]:
            x = tree.tokens[c]
            total = p.sum()
            if total <= 0:
                break
            if rng.random() * total < p[x]:
                accepted = c
                break
            p[x] = 0.0  # rejected: residual is p without x
        if accepted is None:
            if p.sum() <= 0:  # every candidate rejected and nothing left (top-k edge)
                p = probs[node].astype(np.float64)
            return tree.path(node), int(rng.choice(p.size, p=p / p.sum()))
        node = accepted
