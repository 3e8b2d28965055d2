# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""How often greedy decoders disagree with our plain greedy decoding, per dtype.

For each dtype (float32, bfloat16, float16, q8, q4; low-precision directories are
converted from the fp32 model into ``--cache``), the same prompts are decoded greedily
by our plain decoding (the reference) and by:

- ``plain-chunk7``: our plain decoding with 7-token prefill chunks (another equally
  valid plain decoder: the prompt's K/V are rounded differently);
- ``mlx-lm``: ``mlx_lm.stream_generate`` on ``mlx_lm.load`` of the same directory
  (in the directory's dtype);
- ``mlx-lm-f32``: the same, its model widened to float32 as ours is on the CPU
  (``precision.py``): the two runtimes with the same arithmetic;
- ``spec-accepted`` / ``spec-tree``: Speculative Streaming, a 16-node tree + prompt
  lookup, with the accepted-node or the in-tree stream pass.

Per dtype and setting it reports how many sequences differ from the reference and
the token index of the first difference, with the reference's log-probability gap
between its token and the other decoder's token there (0.0: an exact tie). Writes
``divergence.json`` and ``divergence.md`` to ``--out``.

    python benchmarks/divergence.py --dtypes float32,bfloat16,float16,q8,q4 \\
        --prompts 8 --max-tokens 32 --out benchmarks/results/divergence
"""

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

from mlx_specstream.blas import ensure_openblas

TASK_PROMPTS = [
    ("code", "Write a Python function that returns the n-th Fibonacci number."),
    ("math", "A train travels 60 km in 45 minutes. What is its speed in km/h?"),
    (
        "summary",
        "Summarize in one sentence: The city council voted on Tuesday to "
        "extend the bike lane network by 40 km over the next three years, citing "
        "safety and lower traffic.",
    ),
    (
        "sql",
        "Write an SQL query that lists the names of customers who placed more "
        "than five orders.",
    ),
]
DTYPES = {  # name -> converter arguments
    "float32": dict(dtype="float32"),
    "bfloat16": dict(dtype="bfloat16"),
    "float16": dict(dtype="float16"),
    "q8": dict(dtype="bfloat16", quantize=True, q_bits=8),
    "q4": dict(dtype="bfloat16", quantize=True, q_bits=4),
}
SETTINGS = ["plain-chunk7", "mlx-lm", "mlx-lm-f32", "spec-accepted", "spec-tree"]


def prompts(n: int, data: Optional[str], per_task: int) -> List[tuple]:
    """(task, text): bench's chat prompts (and ``data``'s task prompts), then ours."""
    from mlx_specstream.benchmarks.bench import load_prompts

    out = load_prompts(data, per_task) if data else load_prompts(None, 0)
    return (out + TASK_PROMPTS)[:n]


def model_dir(model: str, dtype: str, cache: Path) -> Path:
    """The MLX directory of ``model`` in ``dtype``, converted into ``cache`` once."""
    from mlx_specstream.convert.convert import convert

    from mlx_specstream.loading.registry import MODELS, gguf_path, resolve

    fp32 = resolve(model)
    if dtype == "float32":
        return fp32
    dst = cache / f"{Path(fp32).name}-{dtype}"
    if not dst.exists():
        src = gguf_path(model.lower()) if model.lower() in MODELS else fp32
        convert(src, dst, streams_path=fp32, **DTYPES[dtype])
    return dst


def first_diff(a: List[int], b: List[int]) -> Optional[int]:
    """Index of the first differing token (a prefix differs at its end); None if equal."""
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def decode_ours(model, tokenizer, ids, max_tokens, **kw) -> tuple:
    from mlx_specstream.generate import stream_generate

    out, lps = [], []
    for r in stream_generate(model, tokenizer, ids, max_tokens=max_tokens, **kw):
        out += [] if r.finish_reason == "stop" else [r.token]
        lps.append(r.logprobs)
    return out, lps


def decode_mlx_lm(model, tokenizer, ids, max_tokens) -> List[int]:
    import mlx_lm

    out = []
    for r in mlx_lm.stream_generate(model, tokenizer, ids, max_tokens=max_tokens):
        if r.finish_reason == "stop" and r.token in tokenizer.eos_token_ids:
            break
        out.append(r.token)
    return out


def run_dtype(
    path: Path, texts: List[tuple], max_tokens: int, compute: str = "auto"
) -> Dict:
    import mlx_lm

    from mlx_specstream import load
    from mlx_specstream.decoding.tree import TreeShape
    from mlx_specstream.loading.precision import set_compute_dtype
    from mlx_specstream.prompts import apply_chat_template, encode_prompt

    model, tokenizer = load(str(path), compute_dtype=compute)
    ref_model, _ = mlx_lm.load(str(path))
    wide_model, _ = mlx_lm.load(str(path))
    set_compute_dtype(wide_model, "float32")
    spec = dict(tree=TreeShape(budget=16), prompt_lookup=True)
    rows = {s: [] for s in SETTINGS}
    seconds = {s: 0.0 for s in ["plain"] + SETTINGS}
    for task, text in texts:
        ids = encode_prompt(tokenizer, apply_chat_template(tokenizer, text))
        tic = time.perf_counter()
        plain, lps = decode_ours(model, tokenizer, ids, max_tokens, speculative=False)
        seconds["plain"] += time.perf_counter() - tic
        outs = {}
        for s in SETTINGS:
            tic = time.perf_counter()
            if s == "plain-chunk7":
                outs[s], _ = decode_ours(
                    model,
                    tokenizer,
                    ids,
                    max_tokens,
                    speculative=False,
                    prefill_step_size=7,
                )
            elif s == "mlx-lm":
                outs[s] = decode_mlx_lm(ref_model, tokenizer, ids, max_tokens)
            elif s == "mlx-lm-f32":
                outs[s] = decode_mlx_lm(wide_model, tokenizer, ids, max_tokens)
            else:
                outs[s], _ = decode_ours(
                    model,
                    tokenizer,
                    ids,
                    max_tokens,
                    stream_pass=s.split("-")[1],
                    **spec,
                )
            seconds[s] += time.perf_counter() - tic
        for s, out in outs.items():
            i = first_diff(plain, out)
            gap = None
            if i is not None and i < min(len(plain), len(out)):
                lp = lps[i]
                gap = float(lp[plain[i]].item() - lp[out[i]].item())
            rows[s].append(dict(task=task, first_diff=i, gap=gap, tokens=len(plain)))
        print(
            f"  {task}: "
            + ", ".join(
                f"{s} {'=' if r[-1]['first_diff'] is None else r[-1]['first_diff']}"
                for s, r in rows.items()
            ),
            flush=True,
        )
    return dict(path=str(path), settings=rows, seconds=seconds)


def markdown(results: Dict, max_tokens: int, compute: str = "auto") -> str:
    lines = [
        f"Sequences (of {max_tokens} greedy tokens) that differ from our plain "
        "decoding; in brackets the first differing token index and the plain "
        f"log-probability gap there. Our decoders' compute dtype: {compute}.",
        "",
        "| dtype | prompts | " + " | ".join(SETTINGS) + " |",
        "|---|---|" + "---|" * len(SETTINGS),
    ]
    for dtype, r in results.items():
        cells = []
        for s in SETTINGS:
            rs = r["settings"][s]
            d = [x for x in rs if x["first_diff"] is not None]
            where = ", ".join(
                f"@{x['first_diff']}"
                + (f" Δ{x['gap']:.3f}" if x["gap"] is not None else "")
                for x in d
            )
            cells.append(f"{len(d)}/{len(rs)}" + (f" ({where})" if where else ""))
        lines.append(f"| {dtype} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ensure_openblas()
    from mlx_specstream.loading.registry import DEFAULT_MODEL

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="registered name or fp32 dir")
    p.add_argument("--dtypes", default="float32,bfloat16,float16,q8,q4")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument(
        "--quant-prompts",
        type=int,
        default=None,
        help="prompts for q8/q4 (default: --prompts)",
    )
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--data", default=None, help="folder of *_test.jsonl task prompts")
    p.add_argument("--per-task", type=int, default=1)
    p.add_argument(
        "--compute",
        default="auto",
        choices=["auto", "float32", "model"],
        help="our decoders' compute dtype (auto: float32 on the CPU; model: the "
        "directory's own dtype, as on a GPU); mlx-lm always runs the model's dtype",
    )
    p.add_argument("--cache", default="~/.cache/mlx_specstream/divergence")
    p.add_argument("--out", default="benchmarks/results/divergence")
    args = p.parse_args()
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for dtype in args.dtypes.split(","):
        if dtype not in DTYPES:
            raise SystemExit(
                f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})"
            )
        n = args.prompts
        if dtype.startswith("q") and args.quant_prompts is not None:
            n = args.quant_prompts
        print(f"{dtype}:", flush=True)
        path = model_dir(args.model, dtype, cache)
        results[dtype] = run_dtype(
            path, prompts(n, args.data, args.per_task), args.max_tokens, args.compute
        )
        # Written after each dtype so a long run can be read while it goes on.
        meta = dict(
            model=args.model,
            max_tokens=args.max_tokens,
            compute=args.compute,
            results=results,
        )
        (out / "divergence.json").write_text(json.dumps(meta, indent=1))
        (out / "divergence.md").write_text(
            markdown(results, args.max_tokens, args.compute)
        )
    print(markdown(results, args.max_tokens, args.compute))


if __name__ == "__main__":
    main()
