# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Greedy Speculative Streaming against plain greedy decoding on held-out prompts.

The bench's prompts (``bench.load_prompts``: its chat prompts and the first
``--per-task`` test prompts of each task), with the largest tree the results report
(32 nodes + prompt lookup, accepted-node stream pass). Prints each answer's verdict;
exits 1 if any answer differs.

    python benchmarks/check_lossless.py --data data/smollm2 --per-task 5
"""

import argparse
import sys
from typing import List

from mlx_specstream.blas import ensure_openblas
from mlx_specstream.loading.registry import DEFAULT_MODEL


def main() -> None:
    ensure_openblas()
    from mlx_specstream.benchmarks.bench import load_prompts

    from mlx_specstream import load, stream_generate
    from mlx_specstream.decoding.tree import TreeShape
    from mlx_specstream.prompts import apply_chat_template, encode_prompt

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--data", default="data/smollm2", help="folder of *_test.jsonl")
    p.add_argument("--per-task", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=64)
    args = p.parse_args()
    model, tokenizer = load(args.model)

    prompts = [
        (task, encode_prompt(tokenizer, apply_chat_template(tokenizer, text)))
        for task, text in load_prompts(args.data, args.per_task)
    ]

    def decode(ids: List[int], speculative: bool) -> tuple:
        kw = dict(tree=TreeShape(budget=32), prompt_lookup=True, stream_pass="accepted")
        out, last = [], None
        for last in stream_generate(
            model,
            tokenizer,
            ids,
            max_tokens=args.max_tokens,
            speculative=speculative,
            **(kw if speculative else {}),
        ):
            out += [] if last.finish_reason == "stop" else [last.token]
        return out, last

    same = tokens = passes = 0
    for task, ids in prompts:
        plain, _ = decode(ids, False)
        spec, last = decode(ids, True)
        same += plain == spec
        tokens, passes = tokens + last.generation_tokens, passes + last.forward_calls
        verdict = "identical" if plain == spec else "DIFFERENT"
        print(
            f"{task}: {verdict}, {len(plain)} tokens, {last.tokens_per_pass:.2f} per pass"
        )
    print(
        f"{same}/{len(prompts)} identical; {tokens / passes:.2f} tokens per pass in all"
    )
    sys.exit(0 if same == len(prompts) else 1)


if __name__ == "__main__":
    main()
