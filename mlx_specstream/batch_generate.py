# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""``batch_generate``: several prompts at once, in the shape of ``mlx_lm.batch_generate``.

Several prompts decode plainly in one batch (``decoding/batch.py``: mlx-lm's
continuous batching on the model's mlx-lm twin, the same weights): on a CPU a wide
batch leaves no room for trees. One prompt, or a family that cannot batch (sliding
windows), decodes with Speculative Streaming, prompt by prompt. Greedy output is
the plain greedy output either way.
"""

import time
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Union

import mlx.core as mx
from mlx_lm.tokenizer_utils import TokenizerWrapper

from .decoding.batch import BatchDecoder
from .device import generating, on_device
from .generate import _check_inputs, peak_memory_gb, stream_generate
from .models.cache import PromptCache, as_prompt_cache
from .models.llama import Model
from .models.twin import mlx_lm_twin
from .prompts import encode_prompt
from .sample_utils import SamplingArgs

# stream_generate settings that only speculation uses (a batch ignores them).
_SPECULATION_KEYS = (
    "speculative",
    "tree",
    "prune_threshold",
    "stream_pass",
    "drafter",
    "prompt_lookup",
)
_SAMPLING_KEYS = ("temp", "top_p", "min_p", "top_k", "min_tokens_to_keep")


@dataclass
class BatchStats:
    """What a ``batch_generate`` call did (mlx-lm's field names)."""

    prompt_tokens: int = 0
    prompt_time: float = 0.0
    generation_tokens: int = 0
    generation_time: float = 0.0
    forward_passes: int = 0  # batch steps, or speculative passes prompt by prompt
    peak_memory: float = 0.0

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_time if self.prompt_time > 0 else 0.0

    @property
    def generation_tps(self) -> float:
        t = self.generation_time
        return self.generation_tokens / t if t > 0 else 0.0


@dataclass
class BatchResponse:
    """Args:
    texts: each prompt's generated text.
    stats: the whole call's figures.
    caches: each prompt's ``PromptCache`` after its answer (``return_prompt_caches``).
    token_ids: each prompt's generated tokens, an ending EOS left out
        (``return_token_ids``).
    batched: the prompts decoded in one plain batch (False: speculatively, one
        after another).
    """

    texts: List[str]
    stats: BatchStats
    caches: Optional[List[PromptCache]] = None
    token_ids: Optional[List[List[int]]] = None
    batched: bool = False


def batch_generate(
    model: Model,
    tokenizer: TokenizerWrapper,
    prompts: Sequence[Union[str, Sequence[int]]],
    prompt_caches: Optional[Sequence[Optional[List[Any]]]] = None,
    max_tokens: Union[int, Sequence[int]] = 128,
    verbose: bool = False,
    return_prompt_caches: bool = False,
    return_token_ids: bool = False,
    max_batch: int = 8,
    **kwargs,
) -> BatchResponse:
    """Generate an answer for every prompt, as ``mlx_lm.batch_generate``.

    Args:
        prompts: token lists (or strings, encoded as ``stream_generate`` does).
        prompt_caches: per prompt, a ``make_prompt_cache(model)`` cache holding
            the conversation before it (or None); they are not changed: the
            caches after the answers come back with ``return_prompt_caches``.
        max_tokens: one limit, or one per prompt.
        max_batch: most prompts decoded at once (1: each speculatively, in turn).
        kwargs: as ``stream_generate`` (sampling, ``sampler``, ``logits_processors``,
            tree settings); a batch uses the sampling and processors only.
    """
    n = len(prompts)
    if n == 0:
        return BatchResponse([], BatchStats(), [] if return_prompt_caches else None)
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    limits = [max_tokens] * n if isinstance(max_tokens, int) else list(max_tokens)
    caches = list(prompt_caches) if prompt_caches is not None else [None] * n
    if len(limits) != n or len(caches) != n:
        raise ValueError(
            f"{n} prompts need {n} max_tokens and prompt_caches, got "
            f"{len(limits)} and {len(caches)}"
        )
    ids = [
        encode_prompt(tokenizer, p) if isinstance(p, str) else list(p) for p in prompts
    ]
    # Copies that grow on their own (K/V arrays shared until written): the caller's
    # caches are left as they were.
    caches = [as_prompt_cache(model, c) for c in caches]
    caches = [PromptCache.from_layers(list(c), c.tokens) for c in caches]
    for p, c, m in zip(ids, caches, limits):
        c.sync()
        if m < 1:
            raise ValueError(f"max_tokens must be >= 1 in a batch, got {m}")
        _check_inputs(model, p, m, c.fed)
    twin = None
    if n > 1 and max_batch > 1:
        with on_device():  # its check runs both models
            twin = mlx_lm_twin(model)
    run = _batched if twin is not None else _in_turn
    tic = time.perf_counter()
    answers, stats = run(model, twin, tokenizer, ids, caches, limits, max_batch, kwargs)
    stats.peak_memory = peak_memory_gb()
    texts = [tokenizer.decode(a) for a in answers]
    if verbose:
        print(
            f"[batch_generate] {n} prompts in {time.perf_counter() - tic:.2f} s: "
            f"prompt {stats.prompt_tokens} tokens, {stats.prompt_tps:.1f} tokens/s; "
            f"generation {stats.generation_tokens} tokens, "
            f"{stats.generation_tps:.1f} tokens/s; peak memory {stats.peak_memory:.3f} GB"
        )
    return BatchResponse(
        texts,
        stats,
        caches if return_prompt_caches else None,
        answers if return_token_ids else None,
        twin is not None,
    )


def _in_turn(model, twin, tokenizer, ids, caches, limits, max_batch, kwargs):
    """Each prompt speculatively, one after another."""
    stats, answers = BatchStats(), []
    for prompt, cache, limit in zip(ids, caches, limits):
        answer, last = [], None
        for last in stream_generate(
            model, tokenizer, prompt, limit, prompt_cache=cache, **kwargs
        ):
            if last.finish_reason != "stop":
                answer.append(last.token)
        answers.append(answer)
        stats.prompt_tokens += len(prompt)
        if last is not None:
            stats.prompt_time += len(prompt) / max(last.prompt_tps, 1e-9)
            stats.generation_tokens += last.generation_tokens
            stats.generation_time += last.generation_tokens / max(
                last.generation_tps, 1e-9
            )
            stats.forward_passes += last.forward_calls
    return answers, stats


def _batched(model, twin, tokenizer, ids, caches, limits, max_batch, kwargs):
    """All prompts in one plain batch of at most ``max_batch`` at a time."""
    sampler = kwargs.get("sampler")
    if sampler is None:
        sampler = SamplingArgs(**{k: kwargs[k] for k in _SAMPLING_KEYS if k in kwargs})
    processors = kwargs.get("logits_processors")
    unknown = set(kwargs) - {*_SPECULATION_KEYS, *_SAMPLING_KEYS, "sampler"}
    unknown -= {"logits_processors", "prefill_step_size"}
    if unknown:
        raise TypeError(f"batch_generate() got unexpected arguments {sorted(unknown)}")
    eos = list(getattr(tokenizer, "eos_token_ids", None) or [])
    stats = BatchStats(prompt_tokens=sum(len(p) for p in ids))
    answers: List[List[int]] = [[] for _ in ids]
    with generating(model):
        batch = BatchDecoder(twin, eos, max_batch, on_device)
        try:
            where = {}
            for i, (prompt, cache, limit) in enumerate(zip(ids, caches, limits)):
                cache.tokens.extend(prompt)
                cache.pending += len(prompt)
                where[batch.add(cache, limit, sampler, processors)] = i
            tic, first = time.perf_counter(), None
            while where:
                out = batch.step()
                if out and first is None:
                    first = time.perf_counter()
                stats.forward_passes += bool(out)
                for uid, token, finish in out:
                    i = where[uid]
                    if finish != "stop":
                        answers[i].append(token)
                    stats.generation_tokens += 1
                    if finish is not None:
                        caches[i] = batch.remove(uid)
                        del where[uid]
            end = time.perf_counter()
            first = first or end
            stats.prompt_time, stats.generation_time = first - tic, end - first
        finally:
            batch.close()
    mx.eval([c.keys for cache in caches for c in cache if c.keys is not None])
    return answers, stats
