# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""KV cache with tree compaction, and mlx-lm's prompt cache that records its tokens."""

from typing import Any, Iterable, List, Optional, Sequence, Tuple

import mlx.core as mx
from mlx_lm.models.cache import KVCache


class TreeKVCache(KVCache):
    """mlx-lm's KVCache plus transient rows and ``compact`` (a draft tree's path).

    A verify pass writes K/V for every tree node at ``[start, start + T)``. After
    verification only the accepted nodes stay, moved into contiguous slots
    ``[start, start + len(keep))``; the rest is overwritten by the next pass.
    Stream rows are transient: written after the pass's main rows so attention
    reads one buffer, and never kept.
    """

    def update_and_fetch(
        self, keys: mx.array, values: mx.array, transient: int = 0, bucket: int = 0
    ) -> Tuple[mx.array, mx.array]:
        """Write (1, KH, R, D) K/V; return every key and value a row may see.

        Args:
            transient: the last ``transient`` rows are not kept (stream rows): the
                offset is rolled back past them after the write.
            bucket: return keys up to the next multiple of ``bucket`` (the rows
                past the written ones are masked by the caller), so a compiled
                softmax sees one shape for ``bucket`` tokens; 0: exactly.
        """
        K, V = super().update_and_fetch(keys, values)
        # Stream K/V go past the main rows (a concatenated copy made MLX's CPU
        # attention ~30x slower); rolling the offset back drops them.
        self.offset -= transient
        if bucket:
            P = K.shape[2]
            padded = min(-(-P // bucket) * bucket, self.keys.shape[2])
            if padded > P:
                K, V = self.keys[..., :padded, :], self.values[..., :padded, :]
        return K, V

    def compact(self, start: int, keep: Sequence[int]) -> None:
        """Keep tree rows ``keep`` (indices relative to ``start``), drop the rest.

        Args:
            start: cache offset before the verify pass.
            keep: increasing row indices of the accepted nodes within the pass.
        """
        n = len(keep)
        if start + n > self.offset or any(k >= self.offset - start for k in keep):
            raise ValueError(
                f"compact: rows {list(keep)} not all written (offset {self.offset}, "
                f"start {start})"
            )
        if list(keep) != list(range(n)):  # the root-only path needs no copy
            idx = mx.array(list(keep)) + start
            self.keys[..., start : start + n, :] = self.keys[..., idx, :]
            self.values[..., start : start + n, :] = self.values[..., idx, :]
        self.offset = start + n


class PromptCache(list):
    """mlx-lm's prompt cache (one cache per layer) that also records its tokens.

    ``tokens`` is the whole conversation the cache holds; the K/V of all but its
    last ``pending`` tokens are in the layer caches. The decoder leaves the newest
    token unfed (it is the next pass's tree root), so after ``stream_generate`` one
    token is usually pending; the next call feeds it before the new prompt. To
    mlx-lm code the cache holds ``len(tokens)`` tokens.

    The record also gives prompt lookup and logits processors the conversation's
    earlier turns. Layer caches trimmed behind its back (mlx-lm's
    ``trim_prompt_cache(cache, n)`` trims every layer by ``n``) are reconciled by
    ``sync``: the conversation loses its last ``n`` tokens, as mlx-lm means.
    """

    def __init__(self, layers: Iterable[TreeKVCache] = ()):
        super().__init__(layers)
        self.tokens: List[int] = []
        self.pending = 0

    @property
    def fed(self) -> int:
        """Tokens whose K/V are in the layer caches."""
        return len(self.tokens) - self.pending

    def sync(self) -> None:
        """Make the record and the layer caches agree.

        Layers trimmed by ``n`` (down to offset ``o``) drop the conversation's last
        ``n`` tokens: ``tokens[:o + pending]`` stay, the last ``pending`` of them
        still unfed. K/V rows past the record (a pass stopped midway, e.g. by
        Ctrl-C) are dropped.
        """
        if not self:
            return
        offset = min(c.offset for c in self)
        if offset < self.fed:
            del self.tokens[offset + self.pending :]
        for c in self:
            if c.offset > self.fed:
                c.trim(c.offset - self.fed)

    @classmethod
    def from_layers(
        cls, layers: Sequence[KVCache], conversation: Sequence[int]
    ) -> "PromptCache":
        """A record of ``conversation`` over mlx-lm layer caches (e.g. from a batch):
        tokens past their K/V are pending; K/V past the conversation (a token fed
        ahead, such as a final EOS) are dropped."""
        out = cls()
        for c in layers:
            t = TreeKVCache()
            n = min(c.offset, len(conversation))
            if c.keys is not None and n > 0:
                t.keys, t.values = c.keys[..., :n, :], c.values[..., :n, :]
                t.offset = n
            out.append(t)
        out.tokens = list(conversation)
        out.pending = len(out.tokens) - (out[0].offset if out else 0)
        return out

    def take_unfed(self) -> List[int]:
        """Take the unfed tokens off the record and return them (the next decoder's
        prompt); when all are fed, the last token is given back to be fed again,
        since a decoder needs one."""
        self.sync()
        if self.pending == 0:
            last = self.tokens[-1]
            self.trim(1)
            return [last]
        fed = self.fed
        prompt = self.tokens[fed:]
        del self.tokens[fed:]
        self.pending = 0
        return prompt

    def trim(self, n: int) -> int:
        """Drop the conversation's last ``n`` tokens; returns how many were dropped."""
        self.sync()
        n = max(0, min(n, len(self.tokens)))
        keep, fed = len(self.tokens) - n, self.fed
        if keep < fed:
            for c in self:
                c.trim(fed - keep)
            self.pending = 0
        else:
            self.pending -= n
        del self.tokens[keep:]
        return n


def make_prompt_cache(model: Any, max_kv_size: Optional[int] = None) -> PromptCache:
    """A cache for ``stream_generate(..., prompt_cache=...)``, as in mlx-lm.

    Args:
        model: the model (one cache per layer).
        max_kv_size: must be None: draft trees are written past the cache end and
            compacted, which a rotating cache cannot do.
    """
    if max_kv_size is not None:
        raise ValueError(
            "max_kv_size is not supported: draft trees need an unbounded KV cache"
        )
    return PromptCache(TreeKVCache() for _ in model.layers)


def as_prompt_cache(model: Any, cache: Optional[List[Any]]) -> PromptCache:
    """``cache`` as a ``PromptCache`` (a new one for None).

    A plain list of empty ``TreeKVCache`` is wrapped (its layers are shared); one
    that holds tokens cannot be, since what it holds is not recorded.
    """
    if cache is None:
        return make_prompt_cache(model)
    if len(cache) != len(model.layers) or not all(
        isinstance(c, TreeKVCache) for c in cache
    ):
        raise ValueError(
            "prompt_cache must come from make_prompt_cache(model) "
            "(one TreeKVCache per layer)"
        )
    if isinstance(cache, PromptCache):
        return cache
    if any(c.offset for c in cache):
        raise ValueError(
            "prompt_cache holds tokens it has no record of: make it with "
            "make_prompt_cache(model)"
        )
    return PromptCache(cache)
