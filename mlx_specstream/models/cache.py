# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""KV cache with tree compaction, on top of mlx-lm's ``KVCache``."""

from typing import Any, List, Sequence

import mlx.core as mx
from mlx_lm.models.cache import KVCache


class TreeKVCache(KVCache):
    """mlx-lm's KVCache plus ``compact``: keep the accepted path of a draft tree.

    A verify pass writes K/V for every tree node at ``[start, start + T)``. After
    verification only the accepted nodes stay, moved into contiguous slots
    ``[start, start + len(keep))``; the rest is overwritten by the next pass.
    """

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


def make_cache(model: Any) -> List[TreeKVCache]:
    """One cache per layer, owned by the caller."""
    return [TreeKVCache() for _ in model.layers]
