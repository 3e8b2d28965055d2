# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The main demo: Speculative Streaming next to plain decoding on the same prompts.

    python demos/compare.py [--model smollm2-135m-instruct] [--prompt "..."]

Both runs decode greedily with the same weights; the text must be identical, and the
speculative run needs fewer forward passes.
"""

import argparse
import sys

from mlx_specstream.blas import active_blas, ensure_openblas
from mlx_specstream.decoding.state import state_of
from mlx_specstream.loading.registry import DEFAULT_MODEL

PROMPTS = [
    "What is the capital of France?",
    "Write a SQL query that returns the names of all employees in the sales "
    "department from the table employees(name, department, salary).",
    "List five tips for staying focused while studying.",
]


def speculative_settings(model) -> dict:
    """The calibrated tree where calibration found one that pays on this device;
    else a fixed 16-node tree (streams + prompt lookup, accepted-node stream pass,
    the fastest fixed setting on the 2-core CPU), so the streams are always shown."""
    from mlx_specstream.decoding.tree import TreeShape

    cal = state_of(model).calibration
    if cal is not None and cal.budget > 1:
        return {}  # stream_generate's defaults are the calibrated choice
    return dict(tree=TreeShape(budget=16), stream_pass="accepted", prompt_lookup=True)


def run(model, tokenizer, prompt, speculative, max_tokens):
    from mlx_specstream import stream_generate

    text, last = "", None
    kw = speculative_settings(model) if speculative else {}
    for last in stream_generate(
        model, tokenizer, prompt, max_tokens=max_tokens, speculative=speculative, **kw
    ):
        text += last.text
    return text, last


def main():
    ensure_openblas()
    from mlx_specstream import load
    from mlx_specstream.calibrate import ensure_calibrated
    from mlx_specstream.loading.calibration import describe
    from mlx_specstream.prompts import apply_chat_template

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--prompt", action="append", default=None)
    p.add_argument("--max-tokens", type=int, default=96)
    args = p.parse_args()

    print(f"BLAS: {active_blas()}")
    print(f"Loading {args.model} (first use fetches and converts it)...")
    model, tokenizer = load(args.model)
    state = state_of(model)
    print(f"Trained streams: {'yes' if state.has_streams else 'no'}")
    ensure_calibrated(model, tokenizer)
    if state.calibration is not None:
        print(f"Calibrated for this device: {describe(state.calibration)}")
        if state.calibration.budget == 1:
            print(
                "The demo shows a fixed 16-node tree instead, so the streams are seen."
            )
    print()
    # Warm-up of both decoders (allocation, compiled kernels), so the first prompt's
    # figures are not the one-off costs.
    warm = apply_chat_template(tokenizer, "Hello")
    run(model, tokenizer, warm, False, 16)
    run(model, tokenizer, warm, True, 16)
    same_all = True
    for prompt in args.prompt or PROMPTS:
        chat = apply_chat_template(tokenizer, prompt)
        plain, rp = run(model, tokenizer, chat, False, args.max_tokens)
        spec, rs = run(model, tokenizer, chat, True, args.max_tokens)
        same = plain == spec
        same_all &= same
        print(f"### {prompt}\n{spec.strip()}\n")
        print(
            f"  plain decoding:        {rp.generation_tps:6.2f} tokens/s, "
            f"{rp.tokens_per_pass:.2f} tokens per forward pass"
        )
        print(
            f"  Speculative Streaming: {rs.generation_tps:6.2f} tokens/s, "
            f"{rs.tokens_per_pass:.2f} tokens per forward pass "
            f"({rs.generation_tps / max(rp.generation_tps, 1e-9):.2f}x)"
        )
        print(f"  identical text: {'yes' if same else 'NO'}\n")
    sys.exit(0 if same_all else 1)


if __name__ == "__main__":
    main()
