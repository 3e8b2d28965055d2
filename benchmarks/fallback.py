# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The calibrated default's fallback to plain decoding, policy by policy, on chat.

Open chat is where the calibrated tree sits near break-even on a CPU, so what it does
when a run stops paying decides whether it is faster than plain at all. Per prompt,
in rotating order (greedy, ``--max-tokens``):

- plain: plain decoding;
- no_resume: the calibrated tree, plain for good once it falls back;
- resume: the same, with speculation resumed when prompt lookup would pay again
  (``DecodeOptions.resume_hits``, the default);
- never: the calibrated tree without any fallback.

Prompts: the bench's twelve held-out chat prompts and the first ``--chat-test``
prompts of a chat test split. Speed is relative to plain over each group's tokens.

    python benchmarks/fallback.py --chat-test-file data/chat/distilled/chat_test.jsonl \\
        [--max-tokens 128] [--out fallback.json]
"""

import argparse
import json
import sys
import time
from pathlib import Path

from mlx_specstream.blas import ensure_openblas
from mlx_specstream.loading.registry import DEFAULT_MODEL

POLICIES = ("plain", "no_resume", "resume", "never")


def main() -> None:
    ensure_openblas()
    from mlx_specstream.benchmarks.bench import CHAT_PROMPTS, MORE_CHAT

    from mlx_specstream import load
    from mlx_specstream.calibrate import ensure_calibrated
    from mlx_specstream.decoding.decoder import (
        DecodeOptions,
        plain_generate_step,
        speculative_generate_step,
    )
    from mlx_specstream.decoding.defaults import choose_speculation
    from mlx_specstream.prompts import apply_chat_template, encode_prompt
    from mlx_specstream.sample_utils import SamplingArgs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--chat-test-file", default=None, help="distill output JSONL")
    p.add_argument("--chat-test", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    model, tok = load(args.model)
    ensure_calibrated(model, tok)
    spec = choose_speculation(model)
    if spec is None or not spec.fallback_cost:
        sys.exit(
            "error: the calibrated default decodes plainly here: nothing to compare"
        )
    prompts = [("chat", q) for q in CHAT_PROMPTS + MORE_CHAT]
    if args.chat_test_file:
        with open(args.chat_test_file) as f:
            test = [json.loads(line)["prompt"] for line in f][: args.chat_test]
        prompts += [("chat_test", q) for q in test]
    eos = set(tok.eos_token_ids)

    def decode(ids, policy: str) -> tuple:
        if policy == "plain":
            steps = plain_generate_step(ids, model)
        else:
            options = DecodeOptions(
                stream_pass=spec.stream_pass,
                fallback_cost=0.0 if policy == "never" else spec.fallback_cost,
                resume_hits=DecodeOptions.resume_hits if policy == "resume" else 0,
            )
            steps = speculative_generate_step(
                ids, model, spec.drafter, SamplingArgs(), options, args.max_tokens
            )
        out, tic = [], None
        for step in steps:
            tic = tic or time.perf_counter()  # from the first token, as the bench
            for t in step.tokens:
                if t in eos or len(out) == args.max_tokens:
                    return out, time.perf_counter() - tic
                out.append(t)
            if len(out) == args.max_tokens:
                return out, time.perf_counter() - tic

    rows = []
    for i, (group, prompt) in enumerate(prompts):
        ids = encode_prompt(tok, apply_chat_template(tok, prompt))
        order = POLICIES[i % 4 :] + POLICIES[: i % 4]
        runs = {policy: decode(ids, policy) for policy in order}
        ref = runs["plain"][0]
        rows.append(
            dict(
                group=group,
                tokens=len(ref),
                seconds={k: runs[k][1] for k in POLICIES},
                identical={k: runs[k][0] == ref for k in POLICIES},
            )
        )
        print(f"\r{i + 1}/{len(prompts)} prompts", end="", file=sys.stderr)
    print(file=sys.stderr)
    print("| group | prompts | " + " | ".join(POLICIES) + " | identical to plain |")
    print("|---|---|" + "---|" * len(POLICIES) + "---|")
    for group in ("chat", "chat_test", "all"):
        rs = [r for r in rows if group in ("all", r["group"])]
        if not rs:
            continue
        n = sum(r["tokens"] for r in rs)
        plain_tps = n / sum(r["seconds"]["plain"] for r in rs)
        ratio = {k: n / sum(r["seconds"][k] for r in rs) / plain_tps for k in POLICIES}
        same = sum(all(r["identical"].values()) for r in rs)
        cells = " | ".join(f"{ratio[k]:.3f}x" for k in POLICIES)
        print(f"| {group} | {len(rs)} | {cells} | {same}/{len(rs)} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
