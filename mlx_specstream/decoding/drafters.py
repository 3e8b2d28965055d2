# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Drafters: where the next tree's candidate paths come from.

``StreamDrafter`` is Speculative Streaming proper: the γ streams of the accepted node.
``PromptLookupDrafter`` copies the tokens that followed the latest earlier occurrence
of the current n-gram in the prompt or output (draft-free prompt lookup decoding),
and where there is none, follows the model's n-gram table of its own answers.
``MixedDrafter`` merges both into one tree: lookup is nearly free and strong where the
answer copies the input (SQL column names, slot values).
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

import mlx.core as mx
import numpy as np

from ..models.fast_ops import decode_path
from .ngrams import MAX_CONTEXT, NgramStore
from .tree import (
    Children,
    Tree,
    TreeShape,
    best_first_paths,
    best_first_walk,
    cartesian_paths,
    walk_depth,
)


@dataclass(frozen=True)
class StreamTopK:
    """The accepted node's stream candidates, most probable first."""

    tokens: np.ndarray  # (γ, K)
    logprobs: np.ndarray  # (γ, K)


def topk_queue(logits: mx.array, k: int, on_device: bool) -> List[mx.array]:
    """Queue (γ, V) logits' top-``k`` on the device; ``topk_finish`` ends it on the
    host once the arrays are read (with the rest of the pass, in one read).

    Args:
        on_device: take the top-k with MLX and bring only (γ, k) to the host;
            else bring the float32 logits (numpy's exp and partition beat MLX's
            CPU ones).
    """
    k = min(k, logits.shape[-1])
    lp = logits.astype(mx.float32)
    if not on_device:
        return [lp]
    lp = lp - mx.logsumexp(lp, axis=-1, keepdims=True)
    idx = mx.argpartition(-lp, k - 1, axis=-1)[:, :k]
    return [idx, mx.take_along_axis(lp, idx, axis=-1)]


def topk_finish(
    read: Sequence[np.ndarray], k: int, vocab: Optional[np.ndarray] = None
) -> StreamTopK:
    """``topk_queue``'s arrays, read to the host -> candidates, most probable first.

    Args:
        vocab: (V,) the token id of each logit column (a draft vocabulary); None:
            column i is token i.
    """
    if len(read) == 1:  # the logits: normalise and partition here
        lp = np.array(read[0], np.float32)
        k = min(k, lp.shape[-1])
        m = lp.max(axis=-1, keepdims=True)
        lp -= m + np.log(np.exp(lp - m).sum(axis=-1, keepdims=True))
        idx = np.argpartition(-lp, k - 1, axis=-1)[:, :k]
        vals = np.take_along_axis(lp, idx, axis=-1)
    else:
        idx, vals = np.asarray(read[0]), np.asarray(read[1])
    order = np.argsort(-vals, axis=-1, kind="stable")
    idx = np.take_along_axis(idx, order, -1)
    return StreamTopK(
        idx if vocab is None else vocab[idx], np.take_along_axis(vals, order, -1)
    )


def topk_logprobs(
    logits: mx.array,
    k: int,
    vocab: Optional[np.ndarray] = None,
    on_device: Optional[bool] = None,
) -> StreamTopK:
    """(γ, V) logits -> the top ``k`` log-probabilities per row, most probable first
    (one host read; ``on_device`` None: the decode path's ``device_topk``)."""
    if on_device is None:
        on_device = decode_path().device_topk
    queued = topk_queue(logits, k, on_device)
    mx.eval(queued)  # host sync
    return topk_finish([np.array(a) for a in queued], k, vocab)


class Drafter(Protocol):
    """Proposes the next tree. ``top_k``: candidates per stream it needs (0: the
    streams are not run). A drafter with its own heads (Medusa) also defines
    ``head_logits(hidden (h,)) -> (K, V) logits``, called on the accepted node's
    final normalised hidden state instead of running the streams."""

    top_k: int

    def draft(
        self, root: int, streams: Optional[StreamTopK], history: Sequence[int]
    ) -> Tree: ...


@dataclass
class StreamDrafter:
    """Drafts the next tree from the speculative streams.

    Args:
        store: the model's n-gram table of its own answers (``NgramStore``): where
            given, a best-first tree reranks each node's children by what the table
            says follows the history and the path to the node. Stream j drafts token
            t + j without seeing the j - 1 tokens the tree puts before it; the table
            sees them.
        store_weight: the table's log-probability is added at this weight, then the
            row is renormalised to the stream's total. 0.3 was best of 0.15-0.5 on the
            default model's validation split; with 16 nodes + lookup it drafts 3.8%
            more tokens per pass there on chat and 4.7% more in all, 7% and 6% on the
            held-out prompts.
    """

    shape: TreeShape = field(default_factory=TreeShape)
    store: Optional[NgramStore] = None
    store_weight: float = 0.3

    @property
    def top_k(self) -> int:
        return self.shape.top_k

    def paths(
        self,
        streams: Optional[StreamTopK],
        budget: Optional[int] = None,
        history: Sequence[int] = (),
    ) -> List[Tuple[int, ...]]:
        """Draft paths; ``budget`` (best-first only) overrides the shape's;
        ``history`` (ending with the root) conditions the store's rerank."""
        if streams is None:
            return []
        if self.shape.kind == "cartesian":
            return cartesian_paths(streams.tokens, self.shape.branching)
        # The decoder's own candidates, whatever a replay passes: a rerank can
        # promote any candidate it is given.
        tokens = streams.tokens[:, : self.top_k]
        # (γ, K) - (γ, 1): stream g + 1 ranks g * depth_penalty nats lower.
        depth = np.arange(tokens.shape[0])[:, None]
        scores = streams.logprobs[:, : self.top_k] - self.shape.depth_penalty * depth
        budget = budget or self.shape.budget
        if self.store is None or self.store_weight == 0 or not len(history):
            return best_first_paths(tokens, scores, budget, self.shape.max_depth)
        totals = _logsumexp(scores)  # (γ,): a reranked row keeps its stream's total
        return best_first_walk(
            self._reranked(tokens, scores, totals, history),
            budget,
            walk_depth(self.shape.max_depth, len(scores)),
            bounds=totals,  # no score of a row exceeds its total
        )

    def _reranked(
        self,
        tokens: np.ndarray,
        scores: np.ndarray,
        totals: np.ndarray,
        history: Sequence[int],
    ) -> Children:
        context = [int(t) for t in history[-MAX_CONTEXT:]]

        def children(path: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
            g = len(path)
            p = self.store.probs(context + list(path), tokens[g])
            s = scores[g] + self.store_weight * np.log(p)
            s += totals[g] - _logsumexp(s[None])[0]
            order = np.argsort(-s, kind="stable")
            return tokens[g][order], s[order]

        return children

    def draft(
        self, root: int, streams: Optional[StreamTopK], history: Sequence[int]
    ) -> Tree:
        return Tree.from_paths(root, self.paths(streams, history=history))


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """(n, K) -> (n,)"""
    m = x.max(axis=-1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=-1))


@dataclass
class PromptLookupDrafter:
    """Prompt lookup: match the last ``n`` tokens (longest first) earlier in history.

    Args:
        max_ngram, min_ngram: n-gram sizes tried, longest first.
        length: tokens proposed after a match (a chain).
        store: the model's n-gram table of its own answers (``NgramStore``), asked
            when history holds no match of 2 or more tokens, before a 1-token match
            (which is mostly chance): on the default model's validation split it
            drafts 5.7% more tokens per pass on chat at 16 nodes.
    """

    max_ngram: int = 3
    min_ngram: int = 1
    length: int = 8
    top_k: int = 0
    store: Optional[NgramStore] = None

    def paths(self, history: Sequence[int]) -> List[Tuple[int, ...]]:
        h = np.asarray(history)
        for n in range(self.max_ngram, max(self.min_ngram, 2) - 1, -1):
            follow = self._follow(h, n)
            if follow:
                return [follow]
        chain = [] if self.store is None else self.store.chain(history, self.length)
        if chain:
            return [tuple(chain)]
        follow = self._follow(h, 1) if self.min_ngram <= 1 else ()
        return [follow] if follow else []

    def _follow(self, h: np.ndarray, n: int) -> Tuple[int, ...]:
        """What followed the latest earlier occurrence of the last ``n`` tokens."""
        if h.size <= n:
            return ()
        # (len - n, n) sliding windows over everything but the tail itself
        windows = np.lib.stride_tricks.sliding_window_view(h[:-1], n)
        hits = np.flatnonzero((windows == h[-n:]).all(axis=1))
        if not hits.size:
            return ()
        start = hits[-1] + n  # the latest occurrence
        return tuple(int(t) for t in h[start : start + self.length])

    def draft(
        self, root: int, streams: Optional[StreamTopK], history: Sequence[int]
    ) -> Tree:
        return Tree.from_paths(root, self.paths(history))


@dataclass
class MixedDrafter:
    """A prompt-lookup chain plus a stream tree (shared prefixes merge).

    The stream tree gives up one node per chain token, so the tree stays within the
    stream drafter's budget: the verify pass costs what the calibration measured.
    The chain takes at most half the budget (a longer one starved small trees on the
    validation split).
    """

    streams: StreamDrafter = field(default_factory=StreamDrafter)
    lookup: PromptLookupDrafter = field(default_factory=PromptLookupDrafter)

    @property
    def top_k(self) -> int:
        return self.streams.top_k

    def draft(
        self, root: int, streams: Optional[StreamTopK], history: Sequence[int]
    ) -> Tree:
        room = self.streams.shape.budget // 2
        chain = [p[:room] for p in self.lookup.paths(history)[:1] if room > 0]
        budget = self.streams.shape.budget - sum(len(p) for p in chain)
        tree = self.streams.paths(streams, budget, history) if budget > 1 else []
        return Tree.from_paths(root, chain + tree)


def lookup_of(drafter: Drafter) -> Optional[PromptLookupDrafter]:
    """The prompt lookup a drafter drafts with, if any."""
    if isinstance(drafter, PromptLookupDrafter):
        return drafter
    return getattr(drafter, "lookup", None)


class LookupWatch:
    """Would prompt lookup draft well here? Asked once per plain-decoded token.

    Each call drafts a lookup chain after the conversation so far and scores the
    chain drafted two tokens earlier: a hit if its first two tokens came true. True
    once ``hits`` of the last ``window`` scored chains hit. After the calibrated
    fallback, this brings speculation back where an answer turns to copying (code,
    lists, a repeated phrase): on the default model's held-out chat prompts it
    replayed 5-7% faster than staying plain (at step costs 1.7-2.0x plain).
    """

    def __init__(self, lookup: PromptLookupDrafter, hits: int, window: int):
        self.lookup, self.hits = lookup, hits
        self.recent: deque = deque(maxlen=window)
        self.chains: Dict[int, Tuple[int, ...]] = {}  # history length -> chain

    def __call__(self, history: Sequence[int]) -> bool:
        n = len(history)
        chain = self.chains.pop(n - 2, None)
        if chain is not None:
            self.recent.append(tuple(history[n - 2 : n]) == chain[:2])
        paths = self.lookup.paths(history)
        self.chains[n] = tuple(paths[0]) if paths else ()
        return self.hits > 0 and sum(self.recent) >= self.hits
