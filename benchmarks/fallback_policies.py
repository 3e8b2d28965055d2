# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Fallback rules of the calibrated default under a cost model: speed-ups free of
timing noise.

Greedy decoding with the calibrated drafter and stream pass, once per rule, on
distilled prompts (a chat file and a task file, validation splits for choosing a
rule). Pass counts are deterministic, so each rule's speed-up is counted, not timed:
tokens / (tree passes x ``--cost`` + plain passes), ``--cost`` defaulting to the
calibrated step cost. The rules:

- calibrated: as shipped (``DecodeOptions`` defaults);
- never: no fallback;
- after12, after16: the decision after 12 or 16 tree passes instead of 8;
- cost*0.85: fall back only below 0.85x the calibrated cost.

    python benchmarks/fallback_policies.py --chat data/chat/distilled/chat_valid.jsonl \\
        --tasks data/smollm2/distilled/valid.jsonl [--cost 1.9] [--max-tokens 64]
"""

import argparse
import json
import sys
from dataclasses import replace

from mlx_specstream.blas import ensure_openblas
from mlx_specstream.loading.registry import DEFAULT_MODEL


def main() -> None:
    ensure_openblas()
    from mlx_specstream import load
    from mlx_specstream.calibrate import ensure_calibrated
    from mlx_specstream.decoding.decoder import DecodeOptions, speculative_generate_step
    from mlx_specstream.decoding.defaults import choose_speculation

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--chat", required=True, help="distill output JSONL (chat)")
    p.add_argument("--tasks", required=True, help="distill output JSONL (tasks)")
    p.add_argument("--n-chat", type=int, default=24)
    p.add_argument("--n-tasks", type=int, default=14, help="every third record")
    p.add_argument("--cost", type=float, default=0.0, help="0: the calibrated one")
    p.add_argument("--max-tokens", type=int, default=64)
    args = p.parse_args()

    model, tok = load(args.model)
    ensure_calibrated(model, tok)
    spec = choose_speculation(model)
    if spec is None or not spec.fallback_cost:
        sys.exit("error: the calibrated default decodes plainly here: no fallback")
    cost = args.cost or spec.fallback_cost
    base = DecodeOptions(stream_pass=spec.stream_pass, fallback_cost=spec.fallback_cost)
    rules = {
        "calibrated": base,
        "never": replace(base, fallback_cost=0.0),
        "after12": replace(base, fallback_after=12),
        "after16": replace(base, fallback_after=16),
        "cost*0.85": replace(base, fallback_cost=spec.fallback_cost * 0.85),
    }
    groups = {
        "chat": [json.loads(line) for line in open(args.chat)][: args.n_chat],
        "tasks": [json.loads(line) for line in open(args.tasks)][::3][: args.n_tasks],
    }
    eos = set(tok.eos_token_ids)
    # rule -> group -> [tokens, cost in plain steps]
    sums = {r: {g: [0, 0.0] for g in (*groups, "all")} for r in rules}
    for group, records in groups.items():
        for rec in records:
            for rule, options in rules.items():
                steps = speculative_generate_step(
                    rec["prompt_tokens"],
                    model,
                    spec.drafter,
                    options=options,
                    max_tokens=args.max_tokens,
                )
                for step in steps:
                    for g in (group, "all"):
                        sums[rule][g][0] += len(step.tokens)
                        sums[rule][g][1] += cost if step.tree_size > 1 else 1.0
                    if eos.intersection(step.tokens):
                        break
    print(
        f"{type(spec.drafter).__name__}, {spec.stream_pass} pass, "
        f"calibrated cost {spec.fallback_cost:.2f}, counted at {cost:.2f}"
    )
    print("| rule | " + " | ".join((*groups, "all")) + " |")
    print("|---|" + "---|" * (len(groups) + 1))
    for rule, s in sums.items():
        row = " | ".join(f"{t / c:.3f}x" for t, c in s.values())
        print(f"| {rule} | {row} |")


if __name__ == "__main__":
    main()
