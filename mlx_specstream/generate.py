# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Public generation API: ``stream_generate`` and ``generate``, a drop-in for mlx-lm's.

Code written for ``mlx_lm.stream_generate`` runs unchanged: one response per token
with mlx-lm's fields, ``sampler`` / ``logits_processors`` / ``prompt_cache`` with
mlx-lm's meaning, and the same output distribution (token for token when greedy).
"""

import argparse
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Union

import mlx.core as mx
from mlx_lm.tokenizer_utils import TokenizerWrapper

from .blas import active_blas, ensure_openblas
from .cli_args import add_decoding_args, load_from_args
from .decoding.decoder import (
    DecodeOptions,
    ProgressCallback,
    Step,
    plain_generate_step,
    speculative_generate_step,
)
from .decoding.defaults import DEFAULT_STREAM_PASS, choose_speculation
from .decoding.drafters import Drafter
from .decoding.resident import resident_generate_step
from .decoding.state import state_of
from .decoding.tree import TreeShape
from .device import device_steps, generating
from .models.cache import PromptCache, as_prompt_cache
from .models.llama import Model
from .models.resident import supported as resident_supported
from .prompts import apply_chat_template, encode_prompt
from .sample_utils import LogitsProcessor, Sampler, SamplingArgs, known_sampler


@dataclass
class GenerationResponse:
    """One generated token, with mlx-lm's fields first.

    Args:
        text: the next segment of decoded text (may be empty).
        token: the token.
        logprobs: (V,) float32 log-probabilities of the token's step: the
            log-softmax of the (processed) logits, before sampling filters and
            temperature, as mlx-lm gives them.
        from_draft: True for an accepted draft token, False for a pass's correction
            token (every token of plain decoding).
        prompt_tokens: tokens of the prompt given to this call.
        prompt_tps: prompt tokens per second (until the first token).
        generation_tokens: tokens generated so far (an ending EOS counts, as in
            mlx-lm).
        generation_tps: generation tokens per second since the first token.
        peak_memory: peak memory so far, GB.
        finish_reason: "stop" (the token is an EOS), "length" (max_tokens reached)
            or None.
        forward_calls: decoding forward passes so far (prefill's last position
            counts).
        accepted: draft tokens accepted in this token's pass.
        tree_size: draft tree nodes verified in this token's pass.
        speculative: this call decodes with Speculative Streaming; False where
            plain decoding was chosen (``speculative=False``, an opaque sampler, or
            no tree given and none calibrated on this device: see ``defaults.py``).
    """

    text: str
    token: int
    logprobs: mx.array
    from_draft: bool
    prompt_tokens: int
    prompt_tps: float
    generation_tokens: int
    generation_tps: float
    peak_memory: float
    finish_reason: Optional[str] = None
    forward_calls: int = 0
    accepted: int = 0
    tree_size: int = 1
    speculative: bool = False

    @property
    def tokens_per_pass(self) -> float:
        return self.generation_tokens / max(1, self.forward_calls)


# mlx-lm keyword arguments that change nothing here are accepted and ignored;
# those that would change the output are refused unless left unset.
_IGNORED_KWARGS = ("stream", "kv_group_size", "quantized_kv_start", "num_draft_tokens")
_REFUSED_KWARGS = {
    "draft_model": "the speculative streams are the draft; there is no draft model",
    "max_kv_size": "draft trees need an unbounded KV cache (no rotating cache)",
    "kv_bits": "KV cache quantization is not supported",
    "input_embeddings": "give token ids",
}


def _check_mlx_lm_kwargs(kwargs: dict) -> None:
    for name, value in kwargs.items():
        if name in _IGNORED_KWARGS:
            continue
        if name not in _REFUSED_KWARGS:
            raise TypeError(
                f"stream_generate() got an unexpected keyword argument {name!r}"
            )
        if value is not None:
            raise ValueError(f"{name} is not supported: {_REFUSED_KWARGS[name]}")


def _check_inputs(
    model: Model, prompt: List[int], max_tokens: int, cached: int = 0
) -> int:
    """Validate the request; returns the token limit (-1: none)."""
    if not prompt:
        raise ValueError("prompt is empty: give at least one token")
    if max_tokens == 0 or max_tokens < -1:
        raise ValueError(f"max_tokens must be >= 1 (or -1: no limit), got {max_tokens}")
    vocab = model.args.vocab_size
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise ValueError(
            f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})"
        )
    context = model.args.max_position_embeddings
    used = cached + len(prompt)
    if max_tokens < 0 and not context:
        return -1
    if max_tokens < 0 and used < context:
        return context - used  # "no limit": until the context is full
    if context and used + max(max_tokens, 1) > context:
        where = f" after {cached} cached tokens" if cached else ""
        raise ValueError(
            f"prompt ({len(prompt)} tokens{where}) + max_tokens ({max_tokens}) exceeds "
            f"the model's context length ({context}); shorten the prompt or lower "
            "max_tokens"
        )
    return max_tokens


def _sampling(
    sampler: Optional[Sampler],
    temp: float,
    top_p: float,
    min_p: float,
    top_k: int,
    min_tokens_to_keep: int,
) -> Sampler:
    """``sampler``, or the one the loose settings make (validated either way)."""
    loose = SamplingArgs(temp, top_p, min_p, min_tokens_to_keep, top_k)
    if sampler is None:
        return loose
    unset = (temp, min_p, top_k, min_tokens_to_keep) == (0.0, 0.0, 0, 1)
    if not (unset and top_p in (0.0, 1.0)):
        raise ValueError(
            "give either sampler or temp/top_p/min_p/top_k/min_tokens_to_keep, "
            "not both"
        )
    return sampler


def peak_memory_gb() -> float:
    """Peak memory of this process: MLX's allocator, else the resident set size."""
    peak = mx.get_peak_memory()
    if peak == 0:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return peak / 1e9


def stream_generate(
    model: Model,
    tokenizer: TokenizerWrapper,
    prompt: Union[str, mx.array, Sequence[int]],
    max_tokens: int = 256,
    *,
    sampler: Optional[Sampler] = None,
    logits_processors: Optional[List[LogitsProcessor]] = None,
    prompt_cache: Optional[List[Any]] = None,
    prefill_step_size: int = 512,
    prompt_progress_callback: Optional[ProgressCallback] = None,
    temp: float = 0.0,
    top_p: float = 0.0,
    min_p: float = 0.0,
    top_k: int = 0,
    min_tokens_to_keep: int = 1,
    speculative: bool = True,
    tree: Optional[TreeShape] = None,
    prune_threshold: Optional[float] = None,
    stream_pass: Optional[str] = None,
    drafter: Optional[Drafter] = None,
    prompt_lookup: Optional[bool] = None,
    pipelined: bool = False,
    **kwargs,
) -> Iterator[GenerationResponse]:
    """Generate text, yielding one response per token, as ``mlx_lm.stream_generate``.

    Speculative Streaming is lossless: greedy output equals plain greedy decoding
    token for token, and sampled output has plain sampling's distribution.

    Args:
        model, tokenizer: from ``load``.
        prompt: a string, a list of token ids or an ``mx.array`` of them. With a
            ``prompt_cache``, only the new part of the conversation.
        max_tokens: the exact maximum number of generated tokens; -1: until EOS or
            the model's context is full.
        sampler: from ``mlx_specstream.sample_utils.make_sampler`` (trees are
            verified against exactly its distribution), or any mlx-lm sampler
            (``mlx_lm.sample_utils.make_sampler``'s closure, XTC): such an opaque
            callable is run as it is, on plain decoding, so output equals mlx-lm's.
            mlx-lm's greedy sampler is recognised and speculates. Default: from
            ``temp`` etc.
        logits_processors: mlx-lm processors ``(tokens, logits (1, V)) -> logits``
            (``make_logits_processors``). They run at every tree node with that
            node's own history, so output equals plain decoding with them. They see
            the whole conversation the ``prompt_cache`` holds, not only this call's
            prompt as in mlx-lm (so a reused cache decodes as from scratch).
        prompt_cache: from ``make_prompt_cache(model)`` (or mlx-lm's, which returns
            ours): it holds the conversation so far, is continued, and afterwards
            holds it all, generated tokens included (the EOS too, as mlx-lm's).
            Output equals decoding the whole conversation from scratch.
        prefill_step_size: prompt tokens per prefill chunk.
        prompt_progress_callback: ``(processed, total)`` while the prompt is
            processed (total: the new prompt, plus the token the previous call on
            this cache left unfed).
        temp, top_p, min_p, top_k, min_tokens_to_keep: sampling as
            ``make_sampler``'s, when no ``sampler`` is given (``temp=0``: greedy;
            ``top_p`` 0 or 1: off).
        speculative: Speculative Streaming (True) or plain autoregressive decoding.
        tree: draft tree shape. Default: the calibrated tree when
            ``mlx-specstream calibrate`` has run on this device, else plain decoding
            (see ``defaults.py``).
        prune_threshold: early-exit pruning threshold (default: the model's setting).
        stream_pass: "tree" (streams for every node, one pass), "accepted" (the
            accepted node's streams alone, after the pass) or "likely" (streams
            for the likeliest nodes in the pass, the accepted node's after it
            when it is another). Default: calibrated, else "accepted".
        drafter: replaces the stream drafter (prompt lookup, tests' oracles).
        prompt_lookup: put an n-gram chain copied from the conversation in each
            tree, within its budget. Default: calibrated, else False.
        pipelined: speculation with a fixed tree of ``tree``'s budget (default:
            calibrated, else 16), drafted, verified and advanced on the device so
            the host builds each pass while the previous one runs
            (``decoding/resident.py``). No opaque samplers, processors, prompt
            lookup or sliding-window families (``ValueError``).
        kwargs: other ``mlx_lm.stream_generate`` arguments. ``stream``,
            ``kv_group_size``, ``quantized_kv_start`` and ``num_draft_tokens`` are
            ignored (they change nothing here); ``draft_model``, ``max_kv_size``,
            ``kv_bits`` and ``input_embeddings`` raise ``ValueError`` unless None;
            anything else raises ``TypeError``.

    Yields:
        ``GenerationResponse``, one per token; the last has ``finish_reason``
        "stop" (its token is the EOS, its text the detokenizer's remainder) or
        "length".
    """
    _check_mlx_lm_kwargs(kwargs)
    if not isinstance(tokenizer, TokenizerWrapper):
        tokenizer = TokenizerWrapper(tokenizer)
    if isinstance(prompt, mx.array):
        prompt = prompt.tolist()
    ids = encode_prompt(tokenizer, prompt)
    cache = as_prompt_cache(model, prompt_cache)
    cache.sync()
    limit = _check_inputs(model, ids, max_tokens, len(cache.tokens))
    sampler = _sampling(sampler, temp, top_p, min_p, top_k, min_tokens_to_keep)
    known = known_sampler(sampler)
    asked_prune = prune_threshold
    spec = None
    if speculative and not pipelined:
        if prune_threshold is None:
            prune_threshold = model.streams.args.prune_threshold
        if known is not None and known.tree_exact:  # else plain, with that sampler
            spec = choose_speculation(model, tree, drafter, stream_pass, prompt_lookup)
        # Checked even where plain decoding is chosen: bad settings fail alike.
        options = DecodeOptions(
            prune_threshold,
            spec.stream_pass if spec else stream_pass or DEFAULT_STREAM_PASS,
            prefill_step_size,
            fallback_cost=spec.fallback_cost if spec else 0.0,
        )
    common = dict(
        prompt_cache=cache,
        logits_processors=logits_processors,
        prompt_progress_callback=prompt_progress_callback,
    )
    if pipelined:
        asked = (speculative, tree, drafter, prompt_lookup, stream_pass, asked_prune)
        budget, paths = _pipelined_budget(model, known, logits_processors, *asked)
        steps = resident_generate_step(
            ids,
            model,
            budget,
            limit,
            known,
            prefill_step_size,
            cache,
            prompt_progress_callback=prompt_progress_callback,
            paths=paths,
        )
    elif spec is not None:
        steps = speculative_generate_step(
            ids, model, spec.drafter, known, options, limit, **common
        )
    else:
        steps = plain_generate_step(ids, model, sampler, prefill_step_size, **common)
    with generating(model):  # the wired limit on Metal, as mlx_lm.generate
        yield from _responses(
            steps, tokenizer, cache, len(ids), limit, spec is not None or pipelined
        )


def _pipelined_budget(
    model: Model,
    known: Optional[SamplingArgs],
    processors: Optional[List[LogitsProcessor]],
    speculative: bool,
    tree: Optional[TreeShape],
    drafter: Optional[Drafter],
    prompt_lookup: Optional[bool],
    stream_pass: Optional[str],
    prune_threshold: Optional[float],
) -> tuple:
    """``(budget, rank paths)`` of a pipelined run's fixed tree (the calibrated
    ones where there are); a clear error for what the pipelined loop cannot do."""
    problems = []
    if not speculative:
        problems.append("speculative=False")
    if known is None or not known.tree_exact:
        problems.append("an opaque sampler or XTC (trees need a known distribution)")
    if processors:
        problems.append("logits processors")
    if drafter is not None or prompt_lookup:
        problems.append("another drafter or prompt lookup")
    if stream_pass is not None:
        problems.append("a stream_pass (its streams run after the pass)")
    if prune_threshold:
        problems.append("pruning")
    if tree is not None and tree.kind != "best_first":
        problems.append(f"a {tree.kind!r} tree (it takes a budget)")
    if not resident_supported(model):
        problems.append(f"sliding-window attention ({model.model_type})")
    if problems:
        raise ValueError("pipelined=True does not support " + ", ".join(problems))
    cal = state_of(model).calibration
    paths = cal.pipelined_paths if cal is not None else None
    if tree is not None:
        return tree.budget, paths
    budget = cal.budget if cal is not None and cal.budget > 1 else TreeShape().budget
    return budget, paths


def _responses(
    steps: Iterator[Step],
    tokenizer: TokenizerWrapper,
    cache: PromptCache,
    prompt_tokens: int,
    limit: int,
    speculative: bool,
) -> Iterator[GenerationResponse]:
    """Per-token responses from per-pass steps; stops at EOS or ``limit`` tokens.

    The cache ends up holding exactly the tokens yielded: a pass's tokens after an
    EOS, or after the token where the caller stopped iterating, are trimmed off.

    Each step runs under ``device.py``'s lock on its stream, released before every
    yield; a step's ``logprobs`` and K/V are scheduled there, so a caller may read
    them later on any thread, and advance this generator from any thread.
    """
    detokenizer = tokenizer.detokenizer
    detokenizer.reset()
    eos = set(tokenizer.eos_token_ids)
    tic = time.perf_counter()
    n, calls, prompt_tps, t_first = 0, 0, 0.0, tic
    for step, logprobs in device_steps(steps, cache):
        calls += 1
        if calls == 1:
            t_first = time.perf_counter()
            prompt_tps = prompt_tokens / (t_first - tic)
        for k, token in enumerate(step.tokens):
            n += 1
            finish = None
            if token in eos:
                finish = "stop"
            else:
                detokenizer.add_token(token)
                if n == limit:
                    finish = "length"
            unseen = len(step.tokens) - k - 1
            if finish:
                detokenizer.finalize()
                cache.trim(unseen)
            held = len(cache.tokens)
            elapsed = time.perf_counter() - t_first
            try:
                yield GenerationResponse(
                    text=detokenizer.last_segment,
                    token=token,
                    logprobs=logprobs[k],
                    from_draft=k < step.accepted,
                    prompt_tokens=prompt_tokens,
                    prompt_tps=prompt_tps,
                    generation_tokens=n,
                    generation_tps=n / elapsed if elapsed > 0 else 0.0,
                    peak_memory=peak_memory_gb(),
                    finish_reason=finish,
                    forward_calls=calls,
                    accepted=step.accepted,
                    tree_size=step.verified,
                    speculative=speculative,
                )
            except GeneratorExit:  # the caller stopped here: forget the rest
                if not finish and len(cache.tokens) == held:  # not reused since
                    cache.trim(unseen)
                raise
            if finish:
                return


def generate(
    model: Model,
    tokenizer: TokenizerWrapper,
    prompt: Union[str, mx.array, Sequence[int]],
    verbose: bool = False,
    **kwargs,
) -> str:
    """Generate a complete response, as ``mlx_lm.generate``.

    Args:
        verbose: print the text as it comes, then timings (as mlx-lm does, plus
            tokens per forward pass).
        kwargs: as ``stream_generate``.

    Returns:
        The generated text.
    """
    if verbose:
        print("=" * 10)
    text, last = "", None
    for last in stream_generate(model, tokenizer, prompt, **kwargs):
        text += last.text
        if verbose:
            print(last.text, end="", flush=True)
    if verbose:
        print()
        if not text:
            print("No text generated for this prompt")
        if last is not None:
            print_stats(last)
    return text


def print_stats(r: GenerationResponse) -> None:
    """mlx-lm's closing statistics, plus tokens per forward pass."""
    print("=" * 10)
    print(f"Prompt: {r.prompt_tokens} tokens, {r.prompt_tps:.3f} tokens-per-sec")
    print(
        f"Generation: {r.generation_tokens} tokens, {r.generation_tps:.3f} tokens-per-sec"
    )
    print(
        f"Tokens per forward pass: {r.tokens_per_pass:.2f} ({r.forward_calls} passes)"
    )
    print(f"Peak memory: {r.peak_memory:.3f} GB")


DEFAULT_PROMPT = "What is the capital of France?"


def main(argv: Optional[List[str]] = None) -> None:
    """``mlx-specstream generate`` (also ``mlx_specstream.generate``)."""
    parser = argparse.ArgumentParser(
        prog="mlx_specstream.generate", description="Generate text."
    )
    add_decoding_args(parser)
    parser.add_argument(
        "--prompt", "-p", default=DEFAULT_PROMPT, help="'-' reads stdin"
    )
    parser.add_argument("--system-prompt", default=None)
    parser.add_argument("--ignore-chat-template", action="store_true")
    args = parser.parse_args(argv)
    try:
        model, tokenizer, kwargs = load_from_args(args)
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        if not args.ignore_chat_template:
            prompt = apply_chat_template(tokenizer, prompt, args.system_prompt)
        if args.verbose:
            streams = "with" if state_of(model).has_streams else "no"
            print(f"BLAS: {active_blas()}")
            print(f"Model: {args.model} ({streams} trained streams)")
        generate(model, tokenizer, prompt, verbose=True, **kwargs)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    ensure_openblas()
    main()
