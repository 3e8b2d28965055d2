# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Completion demo: stream a continuation of raw text (no chat template).

python demos/complete.py --prompt "The three primary colours are"
"""

import argparse

from mlx_specstream.blas import ensure_openblas

if __name__ == "__main__":
    ensure_openblas()
    from mlx_specstream import load, stream_generate
    from mlx_specstream.cli_args import add_decoding_args, decoding_kwargs
    from mlx_specstream.generate import print_stats

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_decoding_args(p)
    p.add_argument("--prompt", default="The three primary colours are")
    args = p.parse_args()
    model, tokenizer = load(args.model)
    print(args.prompt, end="", flush=True)
    last = None
    for last in stream_generate(model, tokenizer, args.prompt, **decoding_kwargs(args)):
        print(last.text, end="", flush=True)
    print()
    print_stats(last)
