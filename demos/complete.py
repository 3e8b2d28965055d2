# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Completion demo: stream a continuation of raw text (no chat template).

python demos/complete.py --prompt "The three primary colours are"
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlx_specstream.blas import ensure_openblas  # noqa: E402

if __name__ == "__main__":
    ensure_openblas()
    from mlx_specstream import load, stream_generate
    from mlx_specstream.generate import add_decoding_args, decoding_kwargs, print_stats

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
