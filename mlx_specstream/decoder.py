# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Speculative Streaming decoding loop (arXiv 2402.11131 §3.2.2, App. A.1).

Prefill runs the prompt with streams at its last position. Each later step is one
forward pass over the flattened draft tree: the lower layers, optional pruning at
layer l by early-exit transition probability, then the top Ns layers with γ stream
rows per surviving node. Main logits verify the tree; the accepted path's K/V are
compacted into contiguous cache slots; the last accepted node gives the correction
token (the next root) and, through its streams, the next draft.

With ``stream_pass="accepted"`` the verify pass carries no stream rows; instead the
accepted node's γ streams run alone through the top Ns layers after compaction. That
trades a short extra pass for T·γ fewer rows, which pays off where rows are costly.
"""

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import mlx.core as mx
import numpy as np

from .drafters import Drafter, StreamTopK, topk_logprobs
from .models.cache import make_cache
from .models.llama import Model
from .models.msa import Rows
from .sample_utils import (
    SamplingArgs,
    accept_greedy,
    accept_sampled,
    sample,
    target_logprobs,
)
from .tree import Tree


@dataclass(frozen=True)
class DecodeOptions:
    """Runtime knobs of the speculative loop."""

    prune_threshold: float = 0.0
    stream_pass: str = "tree"  # "tree" (paper: one pass) or "accepted"
    prefill_step_size: int = 512

    def __post_init__(self):
        if self.stream_pass not in ("tree", "accepted"):
            raise ValueError(
                f"stream_pass must be 'tree' or 'accepted', got {self.stream_pass!r}"
            )
        if not 0.0 <= self.prune_threshold < 1.0:
            raise ValueError(
                f"prune_threshold must be in [0, 1), got {self.prune_threshold}"
            )


@dataclass
class Step:
    """What one forward pass produced."""

    tokens: List[int]  # accepted draft tokens, then the correction token
    tree_size: int  # nodes drafted (root included)
    verified: int  # nodes that reached the top layers (after pruning)
    accepted: int  # draft tokens accepted (len(tokens) - 1)


def prefill(
    model: Model, tokens: Sequence[int], cache: list, step_size: int
) -> mx.array:
    """Run all but the last prompt token through every layer, in chunks."""
    for s in range(0, len(tokens) - 1, step_size):
        chunk = mx.array(tokens[s : min(s + step_size, len(tokens) - 1)])
        rows = Rows.causal(chunk.size, cache[0].offset, model.streams)
        model.run_layers(model.embed(chunk), rows, cache, 0, len(model.layers))
        mx.eval([c.keys for c in cache])


def generate_step(
    prompt: Sequence[int],
    model: Model,
    sampling: SamplingArgs = SamplingArgs(),
    prefill_step_size: int = 512,
    prompt_cache: Optional[list] = None,
) -> Iterator[int]:
    """Plain autoregressive decoding with the same model and cache code (the oracle).

    Yields one token per forward pass, forever; the caller stops it.
    """
    cache = prompt_cache if prompt_cache is not None else make_cache(model)
    prefill(model, prompt, cache, prefill_step_size)

    def _step(y: mx.array) -> mx.array:
        rows = Rows.causal(1, cache[0].offset, model.streams)
        h = model.run_layers(model.embed(y), rows, cache, 0, len(model.layers))
        return sample(model.logits(h[0]), sampling)

    y = _step(mx.array(prompt[-1:]))
    mx.async_eval(y)
    while True:
        # Build the next step while this one computes (as mlx-lm does).
        next_y = _step(y)
        mx.async_eval(next_y)
        yield y.item()  # host sync
        y = next_y


class _Verifier:
    """Turns main logits at the tree nodes into an accepted path and correction."""

    def __init__(self, sampling: SamplingArgs):
        self.sampling = sampling
        # Host RNG for rejection sampling, seeded from MLX's so mx.random.seed works.
        self.rng = np.random.default_rng(
            int(mx.random.randint(0, 2**31 - 1, ()).item())
        )

    def __call__(self, tree: Tree, logits: mx.array) -> tuple:
        if self.sampling.greedy:
            return accept_greedy(tree, np.array(mx.argmax(logits, axis=-1)))
        probs = mx.exp(target_logprobs(logits, self.sampling))
        return accept_sampled(tree, np.array(probs), self.rng)


def _stream_topk(model: Model, h_streams: mx.array, k: int) -> StreamTopK:
    """(γ, h) stream states of the accepted node -> top-k candidates per stream."""
    return topk_logprobs(model.logits(h_streams), k)


def _prune(model: Model, tree: Tree, h_split: mx.array, threshold: float) -> List[int]:
    """Nodes kept after dropping children with early-exit probability < threshold."""
    if threshold <= 0 or tree.size == 1:
        return list(range(tree.size))
    lp = model.early_exit(h_split).astype(mx.float32)
    lp = lp - mx.logsumexp(lp, axis=-1, keepdims=True)
    parents = mx.array(tree.parents[1:])
    trans = np.array(mx.exp(lp[parents, mx.array(tree.tokens[1:])]))  # host sync
    keep = [0]
    alive = np.zeros(tree.size, bool)
    alive[0] = True
    for i in range(1, tree.size):
        alive[i] = alive[tree.parents[i]] and trans[i - 1] >= threshold
        if alive[i]:
            keep.append(i)
    return keep


def speculative_generate_step(
    prompt: Sequence[int],
    model: Model,
    drafter: Drafter,
    sampling: SamplingArgs = SamplingArgs(),
    options: DecodeOptions = DecodeOptions(),
    max_tokens: int = -1,
    prompt_cache: Optional[list] = None,
) -> Iterator[Step]:
    """Speculative Streaming decoding; yields one ``Step`` per forward pass.

    Args:
        max_tokens: stop after this many tokens (-1: never); trees are cut so that
            no pass drafts past it.
        prompt_cache: per-layer caches to fill (default: new ones); after each
            step they hold the prompt and every emitted token but the last.
    """
    cache = prompt_cache if prompt_cache is not None else make_cache(model)
    verify = _Verifier(sampling)
    history = list(prompt)
    prefill(model, prompt, cache, options.prefill_step_size)
    heads = getattr(drafter, "candidates", None)  # drafters with their own heads
    streams_in_pass = (
        options.stream_pass == "tree" and drafter.top_k > 0 and heads is None
    )

    # The last prompt token is a one-node tree whose streams draft the first tree.
    tree = Tree((prompt[-1],), (-1,))
    emitted = 0
    while max_tokens < 0 or emitted < max_tokens:
        offset = cache[0].offset
        p = _forward_tree(model, cache, tree, options.prune_threshold, streams_in_pass)
        T = p.tree.size
        path, correction = verify(p.tree, model.logits(p.h_top[0, :T]))  # host sync
        # Keep the accepted path's K/V: tree rows below layer l, verified rows above.
        for i, c in enumerate(cache):
            c.compact(offset, [p.kept[n] for n in path] if i < model.split else path)
        tokens = [p.tree.tokens[n] for n in path[1:]] + [correction]
        history.extend(tokens)
        anchor = path[-1]
        if heads is not None:  # e.g. Medusa: heads on the accepted node's final state
            streams = heads(model.model.norm(p.h_top[0, anchor]))
        elif streams_in_pass:
            g = model.streams.args.num_streams
            streams = _stream_topk(
                model, p.h_top[0, T + anchor * g : T + (anchor + 1) * g], drafter.top_k
            )
        elif drafter.top_k > 0:
            s = _streams_after_compaction(
                model, cache, p.h_split[0, anchor], offset + len(path) - 1
            )
            streams = _stream_topk(model, s, drafter.top_k)
        else:
            streams = None
        emitted += len(tokens)
        yield Step(tokens, tree.size, T, len(tokens) - 1)
        tree = drafter.draft(correction, streams, history)
        if max_tokens >= 0:
            tree = tree.within(max_tokens - emitted)


@dataclass
class _Pass:
    """One verify pass: the verified (pruned) tree and the hidden states it left."""

    tree: Tree
    kept: List[int]  # index in the drafted tree of each verified node
    h_split: mx.array  # (1, T, h) main states entering layer l
    h_top: mx.array  # (1, T [+ T * γ], h) top-layer states, main rows first


def _forward_tree(
    model: Model, cache: list, tree: Tree, prune_threshold: float, with_streams: bool
) -> _Pass:
    """Lower layers, pruning at layer l, stream insertion, top layers."""
    offset = cache[0].offset
    rows = Rows.tree(tree.ancestor_mask, tree.depths, offset, model.streams)
    h = model.run_layers(
        model.embed(mx.array(tree.tokens)), rows, cache, 0, model.split
    )
    kept = _prune(model, tree, h[0], prune_threshold)
    if len(kept) < tree.size:  # pruned rows skip the top layers
        tree, h = tree.keep(kept), h[:, mx.array(kept)]
        rows = Rows.tree(tree.ancestor_mask, tree.depths, offset, model.streams)
    h_split = h
    if with_streams:
        rows = rows.with_streams(list(range(tree.size)))
        s = model.streams.insert_streams(h[0]).reshape(1, -1, h.shape[-1])
        h = mx.concatenate([h, s], axis=1)
    return _Pass(
        tree,
        kept,
        h_split,
        model.run_layers(h, rows, cache, model.split, len(model.layers)),
    )


def _streams_after_compaction(
    model: Model, cache: list, h_anchor: mx.array, position: int
) -> mx.array:
    """Run the accepted node's γ streams alone through the top layers, (γ, h)."""
    s = model.streams.insert_streams(h_anchor[None])  # (1, γ, h)
    rows = Rows.streams_only(cache[0].offset, position, model.streams)
    out = model.run_layers(s, rows, cache, model.split, len(model.layers))
    return out[0]
