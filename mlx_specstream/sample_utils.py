# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Samplers and logits processors (tree acceptance: ``verify.py``).

``make_sampler`` means what mlx-lm's does: top-p, min-p, XTC and top-k filter the
untempered log-probabilities, in that order, then the temperature scales what is
left (``temp=0`` is greedy). It returns ``SamplingArgs``, a callable that carries
its parameters, so a draft tree can be verified against exactly its distribution.

Tree rejection sampling keeps the output distribution equal to plain sampling:
drafts are deterministic (a point mass q = δ_x), so child x of a node with target p
is accepted with probability min(1, p(x) / q(x)) = p(x); on rejection the residual
norm(max(p - q, 0)) is p with x removed and renormalised, and the next child is
tried against it. If no child is accepted the correction token is sampled from
what is left (``verify.py`` does it on the device).
"""

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import mlx.core as mx
from mlx_lm.sample_utils import (  # noqa: F401 (make_logits_processors: re-exported)
    apply_min_p,
    apply_top_k,
    apply_top_p,
    apply_xtc,
    greedy_sampler,
    make_logits_processors,
)

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


def _check_range(name: str, value: float, low: float, high: float) -> None:
    # `not low <= v <= high` is also True for NaN.
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


@dataclass(frozen=True)
class SamplingArgs:
    """mlx-lm's sampler as data; call it on (N, V) log-probabilities for N tokens.

    Args:
        temp: temperature; 0 is greedy (the other settings are then unused).
        top_p: nucleus mass kept; 0 or 1 is off.
        min_p: tokens below ``min_p`` times the top probability are dropped; 0 is off.
        min_tokens_to_keep: tokens min-p always keeps.
        top_k: the ``top_k`` most probable tokens are kept; 0 (or >= the vocabulary)
            is off.
        xtc_probability, xtc_threshold, xtc_special_tokens: XTC sampling. Its random
            cut makes a tree unverifiable, so XTC decodes plainly.
    """

    temp: float = 0.0
    top_p: float = 0.0
    min_p: float = 0.0
    min_tokens_to_keep: int = 1
    top_k: int = 0
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    xtc_special_tokens: Tuple[int, ...] = ()

    def __post_init__(self):
        if not (self.temp >= 0 and math.isfinite(self.temp)):
            raise ValueError(f"temp must be a finite number >= 0, got {self.temp}")
        _check_range("top_p", self.top_p, 0.0, 1.0)
        _check_range("min_p", self.min_p, 0.0, 1.0)
        _check_range("xtc_probability", self.xtc_probability, 0.0, 1.0)
        _check_range("xtc_threshold", self.xtc_threshold, 0.0, 0.5)
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k}")
        if not isinstance(self.min_tokens_to_keep, int) or self.min_tokens_to_keep < 1:
            raise ValueError(
                f"min_tokens_to_keep must be an integer >= 1, got "
                f"{self.min_tokens_to_keep}"
            )

    @property
    def greedy(self) -> bool:
        return self.temp == 0.0

    @property
    def tree_exact(self) -> bool:
        """Whether a draft tree can be verified against this sampler exactly."""
        return self.greedy or self.xtc_probability == 0.0

    def filter(self, logprobs: mx.array) -> mx.array:
        """Top-p, min-p, XTC, top-k on untempered log-probs (mlx-lm's order)."""
        if 0.0 < self.top_p < 1.0:
            logprobs = apply_top_p(logprobs, self.top_p)
        if self.min_p != 0.0:
            logprobs = apply_min_p(logprobs, self.min_p, self.min_tokens_to_keep)
        if self.xtc_probability > 0.0:
            logprobs = apply_xtc(
                logprobs,
                self.xtc_probability,
                self.xtc_threshold,
                list(self.xtc_special_tokens),
            )
        if 0 < self.top_k < logprobs.shape[-1]:  # mlx-lm refuses top_k >= V
            logprobs = apply_top_k(logprobs, self.top_k)
        return logprobs

    def __call__(self, logprobs: mx.array) -> mx.array:
        """One token per row of (N, V) log-probabilities, (N,)."""
        if self.greedy:
            return mx.argmax(logprobs, axis=-1)
        return mx.random.categorical(self.filter(logprobs) * (1.0 / self.temp))


def make_sampler(
    temp: float = 0.0,
    top_p: float = 0.0,
    min_p: float = 0.0,
    min_tokens_to_keep: int = 1,
    top_k: int = 0,
    xtc_probability: float = 0.0,
    xtc_threshold: float = 0.1,
    xtc_special_tokens: Optional[List[int]] = None,
) -> SamplingArgs:
    """A sampler with ``mlx_lm.sample_utils.make_sampler``'s signature and meaning.

    Returns:
        ``SamplingArgs``: called on log-probabilities it samples as mlx-lm's
        sampler does; ``stream_generate`` also verifies draft trees against it.
    """
    return SamplingArgs(
        temp,
        top_p,
        min_p,
        min_tokens_to_keep,
        top_k,
        xtc_probability,
        xtc_threshold,
        tuple(xtc_special_tokens or ()),
    )


def known_sampler(sampler: Sampler) -> Optional[SamplingArgs]:
    """``sampler``'s parameters where they are known (ours, or mlx-lm's greedy
    sampler), else None: an opaque callable can only be run as it is."""
    if isinstance(sampler, SamplingArgs):
        return sampler
    if sampler is greedy_sampler:  # what mlx-lm's make_sampler(temp=0) returns
        return SamplingArgs()
    return None


def target_logprobs(logprobs: mx.array, args: SamplingArgs) -> mx.array:
    """Normalised log-probabilities of what ``args`` samples from, (N, V).

    Args:
        logprobs: (N, V) log-probabilities (or logits: the filters are shift
            invariant).
        args: a sampler with ``temp > 0`` and no XTC.
    """
    lp = args.filter(logprobs.astype(mx.float32)) * (1.0 / args.temp)
    return lp - mx.logsumexp(lp, axis=-1, keepdims=True)


def log_softmax(logits: mx.array) -> mx.array:
    """Float32 log-probabilities of (N, V) logits (what responses carry)."""
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def apply_logits_processors(
    processors: Sequence[LogitsProcessor],
    histories: Sequence[mx.array],
    logits: mx.array,
) -> mx.array:
    """mlx-lm logits processors on each row of (N, V) logits with its own history.

    Args:
        processors: callables ``(tokens (n,), logits (1, V)) -> logits (1, V)``.
        histories: row i's tokens: everything before it, its own token included.
    """
    rows = []
    for i, tokens in enumerate(histories):
        row = logits[i : i + 1]
        for p in processors:
            row = p(tokens, row)
        rows.append(row)
    return rows[0] if len(rows) == 1 else mx.concatenate(rows, axis=0)
