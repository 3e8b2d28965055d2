# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Public generation API: ``stream_generate`` and ``generate``, in the mlx-lm idiom."""

import argparse
import resource
import sys
import time
from dataclasses import dataclass, replace
from typing import Iterator, List, Optional, Sequence, Union

import mlx.core as mx
from mlx_lm.tokenizer_utils import TokenizerWrapper

from .blas import active_blas, ensure_openblas
from .cli_args import add_decoding_args, load_from_args
from .decoder import (
    DecodeOptions,
    Step,
    generate_step,
    speculative_generate_step,
)
from .defaults import DEFAULT_STREAM_PASS, choose_speculation
from .drafters import Drafter
from .models.llama import Model
from .prompts import apply_chat_template, encode_prompt
from .sample_utils import SamplingArgs
from .tree import TreeShape


@dataclass
class GenerationResponse:
    """One forward pass worth of output.

    Args:
        text: the new text of this response.
        tokens: the new token ids (accepted drafts and the correction token).
        generation_tokens: tokens generated so far.
        forward_calls: decode forward passes so far (prefill's last position counts).
        accepted: draft tokens accepted in this pass.
        tree_size: draft tree nodes verified in this pass.
        finish_reason: "stop" (EOS), "length" (max_tokens) or None.
    """

    text: str
    tokens: List[int]
    prompt_tokens: int
    prompt_tps: float
    generation_tokens: int
    generation_tps: float
    forward_calls: int
    accepted: int
    tree_size: int
    peak_memory: float  # GB
    finish_reason: Optional[str] = None

    @property
    def tokens_per_pass(self) -> float:
        return self.generation_tokens / max(1, self.forward_calls)


def _check_inputs(model: Model, prompt: List[int], max_tokens: int) -> None:
    if not prompt:
        raise ValueError("prompt is empty: give at least one token")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    vocab = model.args.vocab_size
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise ValueError(
            f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})"
        )
    context = model.args.max_position_embeddings
    if context and len(prompt) + max_tokens > context:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) exceeds the "
            f"model's context length ({context}); shorten the prompt or lower max_tokens"
        )


def peak_memory_gb() -> float:
    """Peak memory of this process: MLX's allocator, else the resident set size."""
    peak = mx.get_peak_memory()
    if peak == 0:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return peak / 1e9


def stream_generate(
    model: Model,
    tokenizer: TokenizerWrapper,
    prompt: Union[str, Sequence[int]],
    max_tokens: int = 256,
    temp: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    speculative: bool = True,
    tree: Optional[TreeShape] = None,
    prune_threshold: Optional[float] = None,
    stream_pass: Optional[str] = None,
    drafter: Optional[Drafter] = None,
    prompt_lookup: Optional[bool] = None,
    prefill_step_size: int = 512,
) -> Iterator[GenerationResponse]:
    """Generate text, yielding one response per forward pass.

    Args:
        model, tokenizer: from ``load``.
        prompt: a string or a list of token ids.
        max_tokens: the exact maximum number of generated tokens.
        temp, top_p, top_k: sampling; ``temp=0`` is greedy.
        speculative: Speculative Streaming (True) or plain autoregressive decoding.
        tree: draft tree shape (default: the budget calibrated for this device when
            ``mlx-specstream calibrate`` has run, else best-first with 16 nodes).
        prune_threshold: early-exit pruning threshold (default: the model's setting).
        stream_pass: "tree" (streams for every node, one pass) or "accepted" (the
            accepted node's streams alone, after the pass). Default: calibrated,
            else "tree".
        drafter: replaces the stream drafter (prompt lookup, tests' oracles).
        prompt_lookup: put an n-gram chain copied from the prompt/output in each
            tree, within its budget. Default: calibrated, else False.

    Yields:
        ``GenerationResponse``.
    """
    if not isinstance(tokenizer, TokenizerWrapper):
        tokenizer = TokenizerWrapper(tokenizer)
    ids = encode_prompt(tokenizer, prompt)
    _check_inputs(model, ids, max_tokens)
    sampling = SamplingArgs(temp, top_p, top_k)
    spec = None
    if speculative:
        if prune_threshold is None:
            prune_threshold = model.streams.args.prune_threshold
        # Checked even where plain decoding is chosen: bad settings fail alike.
        options = DecodeOptions(
            prune_threshold, stream_pass or DEFAULT_STREAM_PASS, prefill_step_size
        )
        spec = choose_speculation(model, tree, drafter, stream_pass, prompt_lookup)
    if spec is not None:
        options = replace(options, stream_pass=spec.stream_pass)
        steps = speculative_generate_step(
            ids, model, spec.drafter, sampling, options, max_tokens
        )
    else:
        steps = (
            Step([t], 1, 1, 0)
            for t in generate_step(ids, model, sampling, prefill_step_size)
        )

    detokenizer = tokenizer.detokenizer
    detokenizer.reset()
    eos = set(tokenizer.eos_token_ids)
    tic = time.perf_counter()
    n, calls, prompt_tps, t_first = 0, 0, 0.0, tic
    for step in steps:
        calls += 1
        if calls == 1:
            t_first = time.perf_counter()
            prompt_tps = len(ids) / (t_first - tic)
        tokens, finish = [], None
        for t in step.tokens:
            if t in eos:
                finish = "stop"
                break
            tokens.append(t)
            detokenizer.add_token(t)
            if n + len(tokens) == max_tokens:
                finish = "length"
                break
        n += len(tokens)
        if finish:
            detokenizer.finalize()
        elapsed = time.perf_counter() - t_first
        yield GenerationResponse(
            text=detokenizer.last_segment,
            tokens=tokens,
            prompt_tokens=len(ids),
            prompt_tps=prompt_tps,
            generation_tokens=n,
            generation_tps=(n - 1) / elapsed if n > 1 and elapsed > 0 else 0.0,
            forward_calls=calls,
            accepted=step.accepted,
            tree_size=step.verified,
            peak_memory=peak_memory_gb(),
            finish_reason=finish,
        )
        if finish:
            return


def generate(
    model: Model,
    tokenizer: TokenizerWrapper,
    prompt: Union[str, Sequence[int]],
    verbose: bool = False,
    **kwargs,
) -> str:
    """Generate a complete response; keyword arguments as ``stream_generate``."""
    text, last = "", None
    for last in stream_generate(model, tokenizer, prompt, **kwargs):
        text += last.text
        if verbose:
            print(last.text, end="", flush=True)
    if verbose and last is not None:
        print()
        print_stats(last)
    return text


def print_stats(r: GenerationResponse) -> None:
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
            streams = "with" if model.has_streams else "no"
            print(f"BLAS: {active_blas()}")
            print(f"Model: {args.model} ({streams} trained streams)")
            print("=" * 10)
        generate(model, tokenizer, prompt, verbose=True, **kwargs)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    ensure_openblas()
    main()
