# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Command-line flags shared by ``generate``, ``chat``, ``server`` and the demos.

Flags an mlx-lm user knows (``--model``, ``--prompt``, ``--max-tokens``, ``--temp``,
``--top-p``, ``--min-p``, ``--top-k``, ``--seed``, ``--system-prompt``) mean what they
mean in ``mlx_lm.generate``.
"""

import argparse
from typing import Tuple

import mlx.core as mx
from mlx_lm.tokenizer_utils import TokenizerWrapper

from .calibrate import ensure_calibrated
from .decoding.decoder import STREAM_PASSES
from .decoding.tree import TreeShape
from .loading.registry import DEFAULT_MODEL
from .models.llama import Model
from .utils import load


def add_decoding_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="MLX directory, registered name or HF repo",
    )
    parser.add_argument("--max-tokens", "-m", type=int, default=256)
    parser.add_argument("--temp", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--min-p", type=float, default=0.0)
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
        choices=list(STREAM_PASSES),
        default=None,
        help="streams for every tree node in the pass, for the accepted node only "
        "(after it), or for the likeliest nodes in it (default: calibrated)",
    )
    parser.add_argument(
        "--prompt-lookup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add prompt-lookup drafts to the tree (default: calibrated)",
    )
    parser.add_argument(
        "--pipelined",
        action="store_true",
        help="greedy speculation with a fixed tree, drafted and verified on the "
        "device while the host builds the next pass",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print the BLAS in use and timings"
    )


def decoding_kwargs(args: argparse.Namespace) -> dict:
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
        min_p=args.min_p,
        top_k=args.top_k,
        speculative=not args.no_speculative,
        tree=tree,
        prune_threshold=args.prune_threshold,
        stream_pass=args.stream_pass,
        prompt_lookup=args.prompt_lookup,
        pipelined=args.pipelined,
    )


def load_from_args(args: argparse.Namespace) -> Tuple[Model, TokenizerWrapper, dict]:
    """Seed, model, tokenizer and ``stream_generate`` keyword arguments for a command.

    Commands calibrate on first use when the calibrated tree will be used.
    """
    if args.seed is not None:
        mx.random.seed(args.seed)
    kwargs = decoding_kwargs(args)
    model, tokenizer = load(args.model)
    if kwargs["speculative"] and kwargs["tree"] is None:
        ensure_calibrated(model, tokenizer)
    return model, tokenizer, kwargs
