# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Text-to-SQL quality and tokens per pass of shared-mode fine-tunes (issue 4).

Greedy-decodes every test prompt (chat template, as ``mlx-specstream generate``) and
scores the first query of each answer: exact match after sqlglot normalisation and
execution accuracy on the record's stored rows (``convert/data/sql.py``). The streams
model is decoded plainly and speculatively (a fixed 16-node best-first tree, so no
calibration is involved; with and without prompt lookup); every speculative answer
must equal the plain one (the lossless invariant).

    python benchmarks/eval_sql_shared.py --data data/smollm2/sql_test.jsonl \\
        --streams runs/sql-shared-streams-mlx --no-streams runs/sql-shared-nostreams-mlx \\
        --out benchmarks/results/shared_sql.md
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mlx_specstream.blas import ensure_openblas
from mlx_specstream.loading.registry import DEFAULT_MODEL

# (label, model key, decoding): speculative decoding only for the streams model.
ROWS = [
    ("base (untuned)", "base", "plain"),
    ("shared LoRA, no streams (α_j = 0)", "no_streams", "plain"),
    ("shared LoRA + streams (α_j = {a})", "streams", "plain"),
    ("shared LoRA + streams (α_j = {a})", "streams", "tree16"),
    ("shared LoRA + streams (α_j = {a})", "streams", "tree16+lookup"),
]


def plain_batched(path: str, prompts: List[List[int]], max_tokens: int) -> List[str]:
    """Greedy answers of mlx-lm's batched decoder (``mlx-specstream distill``'s path).

    mlx-lm reads a converted directory as the plain (merged) base model; batching
    makes plain decoding ~6x faster on a CPU than batch 1.
    """
    from mlx_specstream.train.distill import load, mlx_batches

    from mlx_specstream.loading.registry import resolve

    model, tokenizer = load(resolve(path))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts = [""] * len(prompts)
    for i, ids, _ in mlx_batches(model, tokenizer, prompts, order, max_tokens, 64):
        texts[i] = tokenizer.decode(ids)
    return texts


def decode(model, tokenizer, prompts: List[List[int]], mode: str, max_tokens: int):
    """Batch-1 greedy answers, generated tokens and forward passes (stream_generate)."""
    from mlx_specstream.decoding.tree import TreeShape
    from mlx_specstream.generate import stream_generate

    kw: Dict = dict(max_tokens=max_tokens, speculative=mode != "plain")
    if mode != "plain":
        kw.update(tree=TreeShape(budget=16), prompt_lookup=mode.endswith("lookup"))
    texts, tokens, passes = [], 0, 0
    for i, ids in enumerate(prompts):
        text, last = "", None
        for last in stream_generate(model, tokenizer, ids, **kw):
            text += last.text
        texts.append(text)
        tokens += last.generation_tokens
        passes += last.forward_calls
        print(f"\r{mode}: {i + 1}/{len(prompts)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return texts, tokens, passes


def score(texts: List[str], records: List[dict]) -> Tuple[float, float]:
    """(exact match, execution accuracy) of the first query of each answer."""
    from mlx_specstream.train.datasets.sql import (
        exact_match,
        execution_match,
        extract_sql,
    )

    em = ex = 0
    for text, rec in zip(texts, records):
        pred, gold, meta = extract_sql(text), rec["completion"], rec["meta"]
        em += exact_match(pred, gold)
        ex += execution_match(pred, gold, meta["schema"], meta["rows"])
    return em / len(records), ex / len(records)


def main(argv: Optional[List[str]] = None) -> None:
    ensure_openblas()
    from mlx_specstream import load
    from mlx_specstream.prompts import apply_chat_template, encode_prompt

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/smollm2/sql_test.jsonl")
    p.add_argument("--base", default=DEFAULT_MODEL)
    p.add_argument("--streams", required=True, help="MLX dir, shared mode with streams")
    p.add_argument(
        "--stream-loss-weight", default="0.1", help="its α_j (for the table's label)"
    )
    p.add_argument("--no-streams", required=True, help="MLX dir, shared mode α_j = 0")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--limit", type=int, help="first N test records only")
    p.add_argument("--out", help="write the markdown table here")
    args = p.parse_args(argv)
    records = [json.loads(line) for line in open(args.data) if line.strip()]
    records = records[: args.limit]
    paths = {"base": args.base, "streams": args.streams, "no_streams": args.no_streams}
    lines = [
        "| model | decoding | exact match | execution acc. | tokens/pass | = plain |",
        "|---|---|---|---|---|---|",
    ]
    plain: Dict[str, List[str]] = {}
    loaded: Dict[str, Tuple] = {}
    failures = 0
    for label, key, mode in ROWS:
        if key not in loaded:
            loaded = {key: load(paths[key])}  # one model in memory at a time
        model, tok = loaded[key]
        ids = [
            encode_prompt(tok, apply_chat_template(tok, r["prompt"])) for r in records
        ]
        same, tpp = "-", 1.0
        if mode == "plain":
            texts = plain[key] = plain_batched(paths[key], ids, args.max_tokens)
        else:
            texts, n_tok, n_pass = decode(model, tok, ids, mode, args.max_tokens)
            tpp = n_tok / max(n_pass, 1)
            recheck = [i for i, t in enumerate(texts) if t != plain[key][i]]
            print(f"{mode}: {len(recheck)} answer(s) != batched plain", file=sys.stderr)
            for i in recheck:  # batched and batch-1 plain can differ by rounding
                plain[key][i] = decode(
                    model, tok, ids[i : i + 1], "plain", args.max_tokens
                )[0][0]
            n_same = sum(a == b for a, b in zip(texts, plain[key]))
            failures += n_same != len(records)
            same = f"{n_same}/{len(records)}"
        em, ex = score(texts, records)
        label = label.format(a=args.stream_loss_weight)
        lines.append(f"| {label} | {mode} | {em:.3f} | {ex:.3f} | {tpp:.2f} | {same} |")
        print(lines[-1], file=sys.stderr)
    table = "\n".join(lines)
    print(table)
    if args.out:
        cmd = "python " + " ".join([sys.argv[0]] + sys.argv[1:])
        note = (
            f"{len(records)} records of `{args.data}`, greedy, `--max-tokens "
            f"{args.max_tokens}`. Plain rows: mlx-lm batched greedy decoding; tree16: "
            "a fixed 16-node best-first tree; tokens/pass = generated tokens / forward "
            "passes over the set; = plain: answers identical to plain decoding."
            "\n\n```bash\n" + cmd + "\n```\n\n"
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(f"# Shared mode on text-to-SQL\n\n{note}{table}\n")
    if failures:
        sys.exit(f"error: speculative output differed from plain in {failures} run(s)")


if __name__ == "__main__":
    main()
