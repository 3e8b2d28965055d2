# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Rank the vocabulary by what the model itself emits, and choose the draft subset.

FR-Spec (arXiv 2502.14856) drafts from the K most frequent tokens. Here frequency is
measured on the model's own greedy answers (mlx-lm's batched greedy decoding of the
same weights, for speed), since drafting predicts what this model will say:

    python benchmarks/draft_vocab.py rank [--per-task 40] [--out RANKING.json]
        [--write-assets K]
    python benchmarks/draft_vocab.py eval --ranking RANKING.json
        [--ks 1024,2048,4096,8192,16384,32768,0]

``rank`` answers the ``train`` split of the synthetic task sets (``train/datasets``)
and writes every token id, most emitted first (ties: more often in the prompts, then
the lower id, which byte-level BPE gives to more frequent merges); ``--write-assets K``
stores the first K as the ``draft_vocab`` tensor of the shipped streams.
``eval`` answers held-out prompts (the ``test`` splits and the chat prompts of
``bench.py`` and ``eval_acceptance.py``) and replays greedy decoding for each K
(0: the whole vocabulary): tokens per pass and the share of emitted tokens inside
the subset. ``step_costs.py --draft-vocab`` measures what each K costs per pass.
"""

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

from mlx_specstream.blas import ensure_openblas
from mlx_specstream.loading.registry import DEFAULT_MODEL

TASKS = ("sql", "mr2text", "dialogue", "instructions")
ASSETS = Path(__file__).resolve().parents[1] / "mlx_specstream" / "assets"


def prompts_for(split: str, per_task: int, chat: bool) -> List[tuple]:
    """(task, prompt text) pairs of the synthetic task sets, plus chat prompts."""
    from mlx_specstream.benchmarks.bench import CHAT_PROMPTS, MORE_CHAT
    from mlx_specstream.train.datasets.make import TASKS as GENERATORS

    out = []
    for task in TASKS:
        out += [(task, e["prompt"]) for e in GENERATORS[task](split, per_task, 0)]
    if chat:
        out += [("chat", p) for p in CHAT_PROMPTS + MORE_CHAT]
    return out


def greedy_answers(path: Path, prompts: List[tuple], max_tokens: int) -> List[dict]:
    """The model's greedy answers, batched through mlx-lm (same weights)."""
    import mlx_lm

    from mlx_specstream.prompts import apply_chat_template, encode_prompt

    model, tok = mlx_lm.load(str(path))
    eos = set(tok.eos_token_ids)
    ids = [encode_prompt(tok, apply_chat_template(tok, p)) for _, p in prompts]
    records, tic = [], time.perf_counter()
    for s in range(0, len(ids), 16):
        batch = ids[s : s + 16]
        res = mlx_lm.batch_generate(
            model, tok, batch, max_tokens=max_tokens, return_token_ids=True
        )
        for (task, _), p, out in zip(prompts[s : s + 16], batch, res.token_ids):
            out = list(out)
            stop = next((i for i, t in enumerate(out) if t in eos), None)
            records.append(
                dict(
                    task=task,
                    prompt_tokens=p,
                    completion_tokens=out if stop is None else out[: stop + 1],
                )
            )
        print(
            f"\r{len(records)}/{len(ids)} answers, {time.perf_counter() - tic:.0f} s",
            end="",
            file=sys.stderr,
        )
    print(file=sys.stderr)
    return records


def rank(records: List[dict], vocab_size: int) -> List[int]:
    """Every token id, most emitted first (then most prompted, then lowest id)."""
    emitted = Counter(t for r in records for t in r["completion_tokens"])
    prompted = Counter(t for r in records for t in r["prompt_tokens"])
    return sorted(range(vocab_size), key=lambda t: (-emitted[t], -prompted[t], t))


def write_stream_tensor(file: Path, key: str, values) -> None:
    """Set the int32 tensor ``key`` of the stream file ``file`` (rewritten atomically)."""
    import os

    import mlx.core as mx

    tensors = dict(mx.load(str(file)))
    tensors[key] = mx.array(values, mx.int32)
    # mx.save_safetensors appends ".safetensors" to other names: keep the suffix.
    tmp = file.with_name(f".tmp-{os.getpid()}-{file.name}")
    mx.save_safetensors(str(tmp), tensors)
    os.replace(tmp, file)


def write_assets(name: str, ids: List[int]) -> Path:
    """Store ``ids`` as the shipped streams' draft_vocab."""
    from mlx_specstream.format import DRAFT_VOCAB, STREAMS_FILE

    file = ASSETS / name / STREAMS_FILE
    write_stream_tensor(file, DRAFT_VOCAB, ids)
    return file


def evaluate(model, records: List[dict], ranking: List[int], ks: List[int]) -> Dict:
    """Tokens per pass (replayed) and subset coverage per K.

    Stream logits are computed once per answer over the whole vocabulary and each
    K takes its columns (what ``stream_logits`` computes, up to rounding).
    """
    import mlx.core as mx
    import numpy as np

    from mlx_specstream.decoding.drafters import (
        MixedDrafter,
        StreamDrafter,
        StreamTopK,
        topk_logprobs,
    )
    from mlx_specstream.decoding.replay import replay
    from mlx_specstream.decoding.tree import TreeShape

    drafters = {
        "best_first_16": StreamDrafter(TreeShape(budget=16)),
        "best_first_16+lookup": MixedDrafter(StreamDrafter(TreeShape(budget=16))),
        "best_first_32": StreamDrafter(TreeShape(budget=32)),
    }
    V = model.args.vocab_size
    ks = [k or V for k in ks]
    subsets = {k: np.array(ranking[:k], np.int32) for k in ks}
    passes = {k: Counter() for k in ks}
    covered, tokens = Counter(), 0
    model.set_draft_vocab(None)
    for n, rec in enumerate(records):
        seq = rec["prompt_tokens"] + rec["completion_tokens"]
        _, streams = model.all_stream_logits(mx.array(seq))  # (L, γ, V)
        L, g, _ = streams.shape
        streams = streams.reshape(L * g, V)
        tokens += len(rec["completion_tokens"])
        for k, ids in subsets.items():
            top = topk_logprobs(streams[:, mx.array(ids)], 32, ids)
            cands = StreamTopK(
                top.tokens.reshape(L, g, -1), top.logprobs.reshape(L, g, -1)
            )
            for name, d in drafters.items():
                passes[k][name] += replay(cands, seq, len(rec["prompt_tokens"]), d)[0]
            inside = set(ids.tolist())
            covered[k] += sum(t in inside for t in rec["completion_tokens"])
        print(f"\r{n + 1}/{len(records)} replayed", end="", file=sys.stderr)
    print(file=sys.stderr)
    return {
        k: dict(
            coverage=covered[k] / tokens,
            **{name: tokens / passes[k][name] for name in drafters},
        )
        for k in ks
    }


def main(argv=None) -> None:
    ensure_openblas()
    from mlx_specstream import load
    from mlx_specstream.decoding.state import state_of

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["rank", "eval"])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--per-task", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--out", default=None, help="ranking (rank) / figures (eval), JSON")
    p.add_argument("--ranking", default=None, help="eval: a ranking from rank")
    p.add_argument("--ks", default="1024,2048,4096,8192,16384,32768,0")
    p.add_argument("--write-assets", type=int, default=0, metavar="K")
    p.add_argument("--records", default=None, help="reuse / save the answers, JSONL")
    args = p.parse_args(argv)

    model, _ = load(args.model)
    records = None
    if args.records and Path(args.records).exists():
        records = [json.loads(line) for line in open(args.records)]

    def answers(split: str, per_task: int, chat: bool) -> List[dict]:
        out = greedy_answers(
            state_of(model).path, prompts_for(split, per_task, chat), args.max_tokens
        )
        if args.records:
            Path(args.records).write_text("".join(json.dumps(r) + "\n" for r in out))
        return out

    if args.command == "rank":
        if records is None:
            records = answers("train", args.per_task or 40, chat=False)
        ranking = rank(records, model.args.vocab_size)
        emitted = len({t for r in records for t in r["completion_tokens"]})
        print(
            f"{len(records)} answers, "
            f"{sum(len(r['completion_tokens']) for r in records)} tokens, "
            f"{emitted} distinct emitted"
        )
        if args.out:
            Path(args.out).write_text(
                json.dumps(dict(model=args.model, emitted=emitted, ranking=ranking))
            )
        if args.write_assets:
            f = write_assets(args.model, ranking[: args.write_assets])
            print(f"wrote draft_vocab (K={args.write_assets}) to {f}")
    else:
        if not args.ranking:
            sys.exit("error: eval needs --ranking (from the rank command)")
        ranking = json.loads(Path(args.ranking).read_text())["ranking"]
        if records is None:
            records = answers("test", args.per_task or 8, chat=True)
        ks = [int(k) for k in args.ks.split(",")]
        table = evaluate(model, records, ranking, ks)
        cols = list(next(iter(table.values())))
        print(f"{len(records)} held-out answers; tokens per pass (replayed)")
        print("| K | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for k, row in table.items():
            print(f"| {k} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
        if args.out:
            Path(args.out).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
