# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Public generation API: ``stream_generate`` and ``generate``, in the mlx-lm idiom."""

import argparse
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Union

import mlx.core as mx
from mlx_lm.tokenizer_utils import TokenizerWrapper

from .decoder import (
    DecodeOptions,
    Step,
    generate_step,
    speculative_generate_step,
)
from .drafters import Drafter, MixedDrafter, PromptLookupDrafter, StreamDrafter
from .models.llama import Model
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


def encode_prompt(
    tokenizer: TokenizerWrapper, prompt: Union[str, Sequence[int]]
) -> List[int]:
    """Token ids of ``prompt``; BOS is added unless the text already starts with it."""
    if isinstance(prompt, str):
        bos = tokenizer.bos_token
        add_special = bos is None or not prompt.startswith(bos)
        return list(tokenizer.encode(prompt, add_special_tokens=add_special))
    return [int(t) for t in prompt]


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
        import resource

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
    if speculative:
        if prune_threshold is None:
            prune_threshold = model.streams.args.prune_threshold
        cal = model.calibration
        if stream_pass is None:
            stream_pass = cal.stream_pass if cal is not None else "tree"
        if prompt_lookup is None:
            prompt_lookup = cal is not None and cal.prompt_lookup
        options = DecodeOptions(prune_threshold, stream_pass, prefill_step_size)
        drafter = _choose_drafter(model, tree, drafter, prompt_lookup)
        speculative = drafter is not None
    if speculative:
        steps = speculative_generate_step(
            ids, model, drafter, sampling, options, max_tokens
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


def _choose_drafter(
    model: Model,
    tree: Optional[TreeShape],
    drafter: Optional[Drafter],
    prompt_lookup: bool,
) -> Optional[Drafter]:
    """The drafter of a speculative run; None where plain decoding is just as good."""
    if drafter is not None:
        return drafter
    if not model.has_streams:
        # Untrained streams draft noise: verifying it costs more than it saves.
        return PromptLookupDrafter()
    if tree is None and model.calibration is not None:
        tree = TreeShape(budget=model.calibration.budget)
    streams = StreamDrafter(tree or TreeShape())
    if prompt_lookup:
        return MixedDrafter(streams)
    return streams if streams.shape.size > 1 else None  # one node: plain decoding


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


DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_PROMPT = "What is the capital of France?"


def apply_chat_template(
    tokenizer: TokenizerWrapper, prompt: str, system: Optional[str] = None
) -> str:
    """Wrap a user message in the model's chat template, when it has one."""
    if not getattr(tokenizer, "chat_template", None):
        return prompt
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


def add_decoding_args(parser) -> None:
    """Flags shared by ``generate``, ``chat`` and the demos."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="MLX directory, registered name or HF repo",
    )
    parser.add_argument("--max-tokens", "-m", type=int, default=256)
    parser.add_argument("--temp", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--no-speculative", action="store_true", help="plain autoregressive decoding"
    )
    parser.add_argument(
        "--tree", choices=["best_first", "cartesian"], default="best_first"
    )
    parser.add_argument(
        "--tree-budget",
        type=int,
        default=None,
        help="nodes of a best-first tree (default: calibrated for this device on first use)",
    )
    parser.add_argument(
        "--branching", default="2,2,1,1", help="per-depth top-k of a Cartesian tree"
    )
    parser.add_argument("--prune-threshold", type=float, default=None)
    parser.add_argument(
        "--stream-pass",
        choices=["tree", "accepted"],
        default=None,
        help="streams for every tree node in the pass, or for the accepted node only "
        "(default: calibrated)",
    )
    parser.add_argument(
        "--prompt-lookup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add prompt-lookup drafts to the tree (default: calibrated)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print the BLAS in use and timings"
    )


def decoding_kwargs(args) -> dict:
    """``stream_generate`` keyword arguments from parsed flags."""
    branching = tuple(int(k) for k in args.branching.split(","))
    if args.tree == "best_first" and args.tree_budget is None:
        tree = None  # the calibrated budget
    else:
        tree = TreeShape(args.tree, branching, args.tree_budget or TreeShape().budget)
    return dict(
        max_tokens=args.max_tokens,
        temp=args.temp,
        top_p=args.top_p,
        top_k=args.top_k,
        speculative=not args.no_speculative,
        tree=tree,
        prune_threshold=args.prune_threshold,
        stream_pass=args.stream_pass,
        prompt_lookup=args.prompt_lookup,
    )


def load_from_args(args) -> tuple:
    """Seed, decoding keyword arguments, model and tokenizer for a CLI command."""
    from .utils import load

    if args.seed is not None:
        mx.random.seed(args.seed)
    kwargs = decoding_kwargs(args)
    model, tokenizer = load(args.model)
    ensure_calibrated(model, tokenizer, kwargs)
    return model, tokenizer, kwargs


def ensure_calibrated(model: Model, tokenizer: TokenizerWrapper, kwargs: dict) -> None:
    """Calibrate the tree budget on first use (CLI and demos), when it will be used."""
    if model.calibration is not None or not model.has_streams:
        return
    if not kwargs.get("speculative", True) or kwargs.get("tree") is not None:
        return
    import sys

    from .calibrate import calibrate, describe, save_calibration

    print(
        "Calibrating the draft tree for this device (once, about a minute) ...",
        file=sys.stderr,
    )
    model.calibration = calibrate(model, tokenizer)
    save_calibration(model.path, model.calibration)
    print(f"Draft tree: {describe(model.calibration)}", file=sys.stderr)


def main(argv=None) -> None:
    import sys

    parser = argparse.ArgumentParser(
        prog="mlx-specstream generate", description="Generate text."
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
            from .blas import active_blas

            print(f"BLAS: {active_blas()}")
            print(
                f"Model: {args.model} ({'with' if model.has_streams else 'no'} trained streams)"
            )
            print("=" * 10)
        generate(model, tokenizer, prompt, verbose=True, **kwargs)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
