# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The server's prompt cache across requests, and stop strings cut across tokens.

``PromptStore`` keeps the K/V caches of recent requests in an LRU keyed by the tokens
each cache holds, bounded by entry count and bytes (as ``mlx_lm.server`` does). A new
request takes the entry that shares the longest prefix with its tokens, trims it to
that prefix and decodes only the rest; the cache then goes back under the tokens it
holds after the answer (prompt and answer, as ``stream_generate`` leaves it), so the
next turn of a chat, which resends both, reuses all of it.

``StopMatcher`` cuts text at the first stop string and never lets out text that could
still become the start of one, so a stop string split over several tokens is cut as
exactly as one inside a single token.
"""

import threading
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

from mlx_lm.utils import common_prefix_len

from ..models.cache import PromptCache

# Length of the longest common prefix of two token sequences (mlx-lm's).
common_prefix = common_prefix_len


def cache_nbytes(cache: list) -> int:
    """Bytes of K/V a per-layer cache list has allocated."""
    return int(sum(getattr(c, "nbytes", 0) for c in cache))


class PromptStore:
    """LRU of prompt caches keyed by the exact tokens each one holds.

    Caches are the runtime's ``PromptCache`` (``make_prompt_cache``): a list of
    layer caches that records the conversation it holds in ``tokens`` and drops its
    last ``n`` tokens, K/V and record alike, with ``trim(n)``.

    Args:
        max_entries: caches kept at most (0 disables the store).
        max_bytes: bytes of K/V kept at most, over all entries.
    """

    def __init__(self, max_entries: int = 8, max_bytes: int = 2 << 30):
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("max_entries and max_bytes must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: "OrderedDict[Tuple[int, ...], list]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(cache_nbytes(c) for c in self._entries.values())

    def take(self, tokens: Sequence[int], limit: int) -> Tuple[Optional[list], int]:
        """The cache sharing the longest prefix with ``tokens``, trimmed to it.

        A request that continues an entry's whole conversation takes the entry
        itself (it leaves the store). One that shares only a prefix (a system
        prompt, an earlier turn) gets a copy of that prefix and the entry stays, so
        requests that share it, at once or later, all reuse it (the copy shares the
        K/V arrays until it grows).

        Args:
            tokens: the new request's tokens.
            limit: reuse at most this many (the decoder needs at least one new token).

        Returns:
            ``(cache, reused)``: a cache holding the first ``reused`` tokens, or
            ``(None, 0)`` when nothing is shared.
        """
        with self._lock:
            best, best_n = None, 0
            for key in self._entries:
                n = min(common_prefix(key, tokens), limit)
                if n > best_n:
                    best, best_n = key, n
            if best is None:
                self.misses += 1
                return None, 0
            self.hits += 1
            self.reused_tokens += best_n
            if best_n == len(best):
                return self._entries.pop(best), best_n
            self._entries.move_to_end(best)  # used: the last to be evicted
            entry = self._entries[best]
        return PromptCache.from_layers(list(entry), entry.tokens[:best_n]), best_n

    def put(self, cache: list) -> None:
        """Keep ``cache`` under the tokens it holds; evict the oldest if over."""
        if self.max_entries == 0 or not cache.tokens:
            return
        if cache_nbytes(cache) > self.max_bytes:
            return
        key = tuple(int(t) for t in cache.tokens)
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = cache
            total = sum(cache_nbytes(c) for c in self._entries.values())
            while self._entries and (
                len(self._entries) > self.max_entries or total > self.max_bytes
            ):
                _, old = self._entries.popitem(last=False)
                total -= cache_nbytes(old)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def stats(self) -> dict:
        return dict(
            entries=len(self._entries),
            nbytes=self.nbytes,
            max_entries=self.max_entries,
            max_bytes=self.max_bytes,
            hits=self.hits,
            misses=self.misses,
            reused_tokens=self.reused_tokens,
        )


class StopMatcher:
    """Text in, text out: cut at the first stop string, hold back possible starts.

    ``feed`` returns the text that is safe to emit and whether a stop string was
    found (then generation ends and the stop string itself is never emitted);
    ``flush`` returns what was held back once generation ends for another reason.
    """

    def __init__(self, stops: Sequence[str] = ()):
        self.stops: List[str] = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> Tuple[str, bool]:
        self.held += text
        if not self.stops:
            out, self.held = self.held, ""
            return out, False
        found = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if found:
            out, self.held = self.held[: min(found)], ""
            return out, True
        k = self._partial()
        out, self.held = (
            self.held[: len(self.held) - k],
            self.held[len(self.held) - k :],
        )
        return out, False

    def _partial(self) -> int:
        """Length of the longest tail of ``held`` that begins some stop string."""
        longest = max(len(s) for s in self.stops) - 1
        for k in range(min(len(self.held), longest), 0, -1):
            tail = self.held[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out
