# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""An n-gram table over the model's own past answers: drafts where the prompt has none.

Prompt lookup copies what followed the current n-gram earlier in the conversation.
Open chat often has no such match, yet a small model answers in set phrases ("Here
are some tips", "I hope this helps"). ``NgramStore`` keeps, for every 2- to 4-gram of
a corpus of the model's greedy answers (its self-distilled training data), the token
that most often follows it, and drafts a chain by following those tokens while the
longest matching n-gram predicts its successor often enough. Verification decides
what is kept, so a poor chain costs tree nodes, never correctness. The corpus ships
as the optional ``draft_corpus`` tensor of the stream file (``format.py``).

The same counts give ``probs``: a smoothed estimate of what follows a context, which
the stream drafter uses to rerank stream candidates along each tree path. Stream j
drafts token t + j without seeing the j - 1 tokens the tree puts before it; the table
does see them.
"""

from typing import Iterable, List, Sequence

import numpy as np

MAX_NGRAM = 4
MIN_NGRAM = 2
# Longest context ``probs`` conditions on (3 and 4 measured the same).
MAX_CONTEXT = 3
SEPARATOR = -1  # between sequences of a flat corpus
# Odd multiplier of the rolling hash; n-gram keys are hashed into 64 bits, and a
# collision only drafts a wrong token.
_PRIME = np.uint64(0x9E3779B97F4A7C15)
_PRIME_INT, _MASK = int(_PRIME), (1 << 64) - 1


def _hash(windows: np.ndarray) -> np.ndarray:
    """(N, n) token windows -> (N,) uint64 keys."""
    h = np.zeros(windows.shape[0], np.uint64)
    with np.errstate(over="ignore"):
        for col in windows.T.astype(np.uint64):
            h = h * _PRIME + col + np.uint64(1)
    return h


def _key(context: Sequence[int]) -> np.uint64:
    """``_hash`` of one n-gram, in Python ints: per-call numpy overhead dominates
    at n <= 4, and drafting asks for dozens of keys per tree."""
    h = 0
    for t in context:
        h = (h * _PRIME_INT + int(t) + 1) & _MASK
    return np.uint64(h)


class NgramStore:
    """The most frequent successor of every n-gram (``MIN_NGRAM``..``MAX_NGRAM``) of
    a token corpus.

    Args:
        corpus: (L,) int32 token ids; ``SEPARATOR`` between sequences.
    """

    def __init__(self, corpus: np.ndarray, vocab_size: int = 0):
        corpus = np.asarray(corpus)
        if corpus.ndim != 1 or not np.issubdtype(corpus.dtype, np.integer):
            raise ValueError(
                f"draft_corpus must be a 1-D array of token ids, got {corpus.dtype} "
                f"of shape {corpus.shape}"
            )
        if corpus.size and corpus.min() < SEPARATOR:
            raise ValueError(f"draft_corpus holds a negative id {corpus.min()}")
        self.corpus = corpus.astype(np.int32)
        tokens = self.corpus[self.corpus != SEPARATOR]
        self.vocab_size = max(vocab_size, int(tokens.max()) + 1 if tokens.size else 1)
        self._unigram = np.bincount(tokens, minlength=self.vocab_size)
        self._unigram_total = int(self._unigram.sum()) + self.vocab_size  # add-one
        # n -> (keys, successors, counts) of every (n-gram, successor) pair, sorted
        # by key then successor, and the running count (len + 1,) for totals
        n_max = max(MAX_NGRAM, MAX_CONTEXT)
        self._pairs = {n: self._pair_table(n) for n in range(1, n_max + 1)}
        # n -> (sorted keys, successor, its count, all successors' count)
        self._tables = {n: self._top_table(n) for n in range(MIN_NGRAM, MAX_NGRAM + 1)}

    @classmethod
    def from_sequences(
        cls, sequences: Iterable[Sequence[int]], vocab_size: int = 0
    ) -> "NgramStore":
        parts: List[int] = []
        for s in sequences:
            parts.extend(int(t) for t in s)
            parts.append(SEPARATOR)
        return cls(np.array(parts, np.int32), vocab_size)

    def _pair_table(self, n: int) -> tuple:
        c = self.corpus
        w = np.zeros((0, n + 1), np.int32)
        if c.size > n:  # (L - n, n + 1) windows: an n-gram and its successor
            w = np.lib.stride_tricks.sliding_window_view(c, n + 1)
            w = w[(w != SEPARATOR).all(axis=1)]
        keys, succ = _hash(w[:, :n]), w[:, n].astype(np.int64)
        order = np.lexsort((succ, keys))
        keys, succ = keys[order], succ[order]
        first = np.r_[True, (keys[1:] != keys[:-1]) | (succ[1:] != succ[:-1])]
        first = first[: keys.size]  # np.r_ leaves one True where there are no keys
        count = np.diff(np.r_[np.flatnonzero(first), keys.size])
        return keys[first], succ[first], count, np.r_[0, np.cumsum(count)]

    def _top_table(self, n: int) -> tuple:
        pair_keys, pair_succ, pair_count, _ = self._pairs[n]
        if not pair_keys.size:
            empty = np.zeros(0, np.int64)
            return np.zeros(0, np.uint64), empty, empty, empty
        # Per key, its most frequent successor (the smallest id on a tie) first.
        order = np.lexsort((pair_succ, -pair_count, pair_keys))
        pair_keys, pair_succ, pair_count = (
            pair_keys[order],
            pair_succ[order],
            pair_count[order],
        )
        starts = np.flatnonzero(np.r_[True, pair_keys[1:] != pair_keys[:-1]])
        total = np.add.reduceat(pair_count, starts)
        return pair_keys[starts], pair_succ[starts], pair_count[starts], total

    def probs(
        self, context: Sequence[int], tokens: np.ndarray, smoothing: float = 1.0
    ) -> np.ndarray:
        """P(token | context) for each of ``tokens`` (K,): add-one unigram counts,
        then each longer context the corpus holds (up to ``MAX_CONTEXT``) mixed in
        as (its counts + ``smoothing`` * the shorter estimate) / (its total +
        ``smoothing``), so a context seen often outweighs the shorter ones."""
        tokens = np.asarray(tokens, np.int64)
        inside = tokens < self.vocab_size
        counts = np.where(inside, self._unigram[np.where(inside, tokens, 0)], 0)
        p = (counts + 1.0) / self._unigram_total
        for n in range(1, min(MAX_CONTEXT, len(context)) + 1):
            keys, succ, count, cum = self._pairs[n]
            key = _key(context[-n:])
            lo, hi = np.searchsorted(keys, key), np.searchsorted(keys, key, "right")
            if lo == hi:
                break  # a longer context holding this one is unknown too
            i = lo + np.searchsorted(succ[lo:hi], tokens)
            j = np.minimum(i, hi - 1)  # in range, to read; ``hit`` says if it counts
            hit = (i < hi) & (succ[j] == tokens)
            c = np.where(hit, count[j], 0)
            p = (c + smoothing * p) / (cum[hi] - cum[lo] + smoothing)
        return p

    def successor(self, context: Sequence[int]) -> tuple:
        """``(token, probability)`` after the longest n-gram ending ``context`` that
        the corpus holds; ``(None, 0.0)`` where none does."""
        for n in range(min(MAX_NGRAM, len(context)), MIN_NGRAM - 1, -1):
            keys, succ, count, total = self._tables[n]
            key = _key(context[-n:])
            i = np.searchsorted(keys, key)
            if i < keys.size and keys[i] == key:
                return int(succ[i]), float(count[i] / total[i])
        return None, 0.0

    def chain(
        self, history: Sequence[int], length: int, min_prob: float = 0.3
    ) -> List[int]:
        """Up to ``length`` tokens following ``history``, each the most frequent
        successor of the longest known n-gram before it, while that successor's
        share of the n-gram's successors is at least ``min_prob`` (0.3 gave the most
        tokens per pass on the default model's validation split, of 0.2-0.5)."""
        context = [int(t) for t in history[-MAX_NGRAM:]]
        out: List[int] = []
        while len(out) < length:
            tok, p = self.successor(context)
            if tok is None or p < min_prob:
                break
            out.append(tok)
            context = (context + [tok])[-MAX_NGRAM:]
        return out
