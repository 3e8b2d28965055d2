# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Tokens per forward pass of greedy Speculative Streaming, per task and tree.

Replays decoding on the model's own greedy answers (``mlx-specstream distill``
output): greedy output does not depend on the tree, and the streams at every position
come from one training-layout pass, so each tree is scored on the same text.
``tests/test_calibrate.py`` checks that the replay counts the decoder's passes
exactly.

    python benchmarks/eval_acceptance.py --model smollm2-135m-instruct \\
        --data data/smollm2/distilled/test.jsonl --chat

``--chat`` adds the bench's twelve held-out chat prompts (task "chat"), answered
greedily on the spot; records of the chat task set count as task "chat_test".
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from mlx_specstream.blas import ensure_openblas
from mlx_specstream.loading.registry import DEFAULT_MODEL

TREES = {
    "chain_top1": ("cartesian", (1, 1, 1, 1)),
    "cartesian_2211": ("cartesian", (2, 2, 1, 1)),
    "best_first_8": ("best_first", 8),
    "best_first_16": ("best_first", 16),
    "best_first_32": ("best_first", 32),
}


def chat_records(model, tokenizer, max_tokens: int) -> list:
    """Greedy answers to the chat prompts, in the distill output's layout."""
    from mlx_specstream.benchmarks.bench import CHAT_PROMPTS, MORE_CHAT

    from mlx_specstream.decoding.decoder import generate_step
    from mlx_specstream.prompts import apply_chat_template, encode_prompt

    records = []
    for prompt in CHAT_PROMPTS + MORE_CHAT:
        ids = encode_prompt(tokenizer, apply_chat_template(tokenizer, prompt))
        out, finish = [], "length"
        for t in generate_step(ids, model):
            if t in tokenizer.eos_token_ids:
                finish = "stop"
                break
            out.append(t)
            if len(out) == max_tokens:
                break
        records.append(
            dict(
                task="chat",
                prompt_tokens=ids,
                completion_tokens=out,
                finish_reason=finish,
            )
        )
    return records


def main():
    ensure_openblas()
    from mlx_specstream.benchmarks.bench import task_group

    from mlx_specstream import load
    from mlx_specstream.decoding.defaults import prompt_lookup_drafter, stream_drafter
    from mlx_specstream.decoding.drafters import MixedDrafter, StreamDrafter
    from mlx_specstream.decoding.replay import replay, stream_candidates
    from mlx_specstream.decoding.tree import TreeShape

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--data", nargs="+", default=[])
    p.add_argument("--chat", action="store_true", help="add generic chat prompts")
    p.add_argument("--chat-max-tokens", type=int, default=96)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    model, tokenizer = load(args.model)
    eos = next(iter(tokenizer.eos_token_ids))

    # Trees as decoding drafts them: best-first trees reranked by the model's n-gram
    # table of its own answers where the model ships one ("no_rerank": without).
    drafters = {}
    for name, (kind, arg) in TREES.items():
        shape = TreeShape(kind, arg) if kind == "cartesian" else TreeShape(budget=arg)
        drafters[name] = stream_drafter(model, shape)
    # Prompt lookup as decoding runs it: with the same table where history holds no
    # match ("prompt_only": without it).
    lookup = prompt_lookup_drafter(model)
    for budget in (16, 32):
        drafters[f"best_first_{budget}+lookup"] = MixedDrafter(
            stream_drafter(model, TreeShape(budget=budget)), lookup
        )
    drafters["best_first_16+lookup_no_rerank"] = MixedDrafter(
        StreamDrafter(TreeShape(budget=16)), lookup
    )
    drafters["best_first_16+prompt_only"] = MixedDrafter(
        StreamDrafter(TreeShape(budget=16))
    )
    drafters["lookup_only"] = lookup
    # Ablation: best-first ranked by the plain joint probability (no depth penalty).
    drafters["best_first_16_no_penalty"] = StreamDrafter(
        TreeShape(budget=16, depth_penalty=0.0)
    )

    passes = defaultdict(lambda: defaultdict(int))
    tokens = defaultdict(int)
    n = 0
    records = [json.loads(line) for f in args.data for line in open(f)]
    for rec in records:  # the chat task set's test split, apart from --chat's prompts
        rec["task"] = task_group(rec["task"])
    if args.chat:
        records += chat_records(model, tokenizer, args.chat_max_tokens)
    if not records:
        sys.exit("error: nothing to score (pass --data and/or --chat)")
    for rec in records:
        done = rec["completion_tokens"] + (
            [eos] if rec["finish_reason"] == "stop" else []
        )
        seq = rec["prompt_tokens"] + done
        cands = stream_candidates(model, seq, 32)
        for task in (rec["task"], "all"):
            tokens[task] += len(done)
        for name, drafter in drafters.items():
            np_, _, _ = replay(cands, seq, len(rec["prompt_tokens"]), drafter)
            for task in (rec["task"], "all"):
                passes[task][name] += np_
        n += 1
        print(f"\r{n} sequences", end="", file=sys.stderr)
    print(file=sys.stderr)
    table = {t: {d: tokens[t] / passes[t][d] for d in drafters} for t in passes}
    print("| task | " + " | ".join(drafters) + " |")
    print("|---|" + "---|" * len(drafters))
    for t, row in sorted(table.items(), key=lambda kv: kv[0] == "all"):
        print(f"| {t} | " + " | ".join(f"{row[d]:.2f}" for d in drafters) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
