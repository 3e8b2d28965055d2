# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Replay greedy Speculative Streaming offline: tokens per pass for any drafter.

Greedy output does not depend on the tree, and the streams at every position come
from one training-layout pass, so every tree is scored on the same text without
decoding again. ``tests/test_calibrate.py`` checks the replay against the decoder.
"""

from typing import List, Sequence, Union

import mlx.core as mx

from ..models.llama import Model
from .drafters import Drafter, StreamDrafter, StreamTopK, topk_logprobs
from .tree import TreeShape


def stream_candidates(model: Model, tokens: Sequence[int], k: int) -> StreamTopK:
    """Top-k stream candidates at every position of a sequence, (L, γ, k)."""
    _, streams = model.all_stream_logits(mx.array(tokens), draft=True)
    L, g, V = streams.shape
    # The decoder's own top-k (and draft vocabulary), so replayed drafts are the
    # decoder's drafts.
    top = topk_logprobs(streams.reshape(L * g, V), k, model.draft_vocab)
    return StreamTopK(top.tokens.reshape(L, g, -1), top.logprobs.reshape(L, g, -1))


def replay(
    cands: StreamTopK,
    seq: Sequence[int],
    start: int,
    drafter: Union[TreeShape, Drafter],
    max_tokens: int = -1,
) -> tuple:
    """Passes and tokens greedy Speculative Streaming needs for ``seq[start:]``.

    The root of each tree is the last emitted token at position r; its drafts come
    from the streams of position r - 1 (stream j predicts token r + j).
    ``max_tokens`` (-1: none) cuts trees as the decoder does near its limit.

    Returns:
        ``(passes, tokens, accepted drafts per pass after prefill)``.
    """
    if isinstance(drafter, TreeShape):
        drafter = StreamDrafter(drafter)
    passes, r = 1, start  # prefill emits seq[start]
    depths: List[int] = []
    while r + 1 < len(seq):
        step = StreamTopK(cands.tokens[r - 1], cands.logprobs[r - 1])
        tree = drafter.draft(seq[r], step, seq[: r + 1])
        if max_tokens >= 0:
            tree = tree.within(max_tokens - (r - start + 1))
        node, d = 0, 0
        while r + d + 1 < len(seq):
            nxt = [c for c in tree.children[node] if tree.tokens[c] == seq[r + d + 1]]
            if not nxt:
                break
            node, d = nxt[0], d + 1
        depths.append(d)
        passes += 1
        r += d + 1
    return passes, len(seq) - start, depths
