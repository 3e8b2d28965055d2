# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Pick the draft tree budget for this device and model.

Speed is tokens per pass over the cost of a pass. Both are measured:

- the cost ``c(T)`` of a verify pass over ``T`` tree nodes (streams included),
  relative to a plain one-token step, by timing passes on this device;
- the tokens per pass ``E(T)`` of a best-first tree of ``T`` nodes, by replaying
  greedy decoding of calibration prompts: the greedy output is the same for every
  tree, and the streams at every position come from one training-layout pass, so
  every budget is scored on the same text without decoding again.

The budget with the largest ``E(T) / c(T)`` wins; ``T = 1`` (plain decoding) is a
candidate, so the choice is never expected to be slower than plain decoding.
Results are cached per model and device.
"""

import hashlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import mlx.core as mx
import numpy as np

from .decoder import _forward_tree, generate_step, prefill
from .drafters import Drafter, StreamDrafter, StreamTopK
from .models.cache import make_cache
from .models.llama import Model
from .tree import Tree, TreeShape

DEFAULT_BUDGETS = (1, 2, 4, 6, 8, 12, 16, 24, 32)
CALIBRATION_PROMPTS = (
    "What is the capital of France?",
    "Write a SQL query that lists the name and salary of every employee in the sales "
    "department, from the table employees(name TEXT, department TEXT, salary INTEGER).",
    "Summarize this conversation. #Person1#: Are you coming to the party tonight? "
    "#Person2#: I can't, I have to finish my report. #Person1#: Too bad, maybe next time.",
    "Describe this restaurant in one sentence: name[The Eagle], eatType[coffee shop], "
    "food[French], priceRange[moderate], area[riverside], familyFriendly[yes].",
    "List three tips for sleeping better.",
)


@dataclass
class Calibration:
    budget: int  # best-first tree nodes, root included (1: plain decoding)
    device: str
    costs: Dict[int, float]  # c(T), relative to a one-token step
    tokens_per_pass: Dict[int, float]  # E(T)
    step_seconds: float  # one plain step

    @property
    def expected_speedup(self) -> float:
        return self.tokens_per_pass[self.budget] / self.costs[self.budget]


def device_key() -> str:
    """What the timings depend on: machine, MLX device and BLAS."""
    from .blas import active_blas

    return f"{platform.machine()}|{platform.processor() or platform.system()}|{mx.default_device()}|{active_blas().split(' (')[0]}"


def measure_costs(
    model: Model, sizes: Sequence[int], prefix: int = 128, reps: int = 3
) -> Dict[int, float]:
    """Median seconds of a verify pass over a best-first tree of each size."""
    rng = np.random.default_rng(0)
    cache = make_cache(model)
    prefill(
        model, rng.integers(1, model.args.vocab_size, prefix + 1).tolist(), cache, 512
    )
    g = model.streams.args.num_streams
    out: Dict[int, List[float]] = {T: [] for T in sizes}
    for r in range(reps + 1):  # round 0 warms up
        for T in sizes:
            K = max(1, T)
            topk = StreamTopK(
                rng.integers(1, model.args.vocab_size, (g, K)),
                -np.tile(np.arange(K, dtype=np.float32), (g, 1)),
            )
            tree = StreamDrafter(TreeShape(budget=T)).draft(1, topk, [])
            tic = time.perf_counter()
            _verify_pass(model, cache, tree, prefix, streams=T > 1)
            if r:
                out[T].append(time.perf_counter() - tic)
    return {T: statistics.median(v) for T, v in out.items()}


def _verify_pass(
    model: Model, cache: list, tree: Tree, prefix: int, streams: bool
) -> None:
    """Time the decoder's own verify pass, then drop what it wrote to the cache."""
    p = _forward_tree(model, cache, tree, 0.0, streams)
    mx.eval(mx.argmax(model.logits(p.h_top[0, : tree.size]), axis=-1))
    for c in cache:
        c.offset = prefix


def stream_candidates(model: Model, tokens: Sequence[int], k: int) -> StreamTopK:
    """Top-k stream candidates at every position of a sequence, (L, γ, k)."""
    _, streams = model.all_stream_logits(mx.array(tokens))
    lp = streams - mx.logsumexp(streams, axis=-1, keepdims=True)
    idx = mx.argsort(-lp, axis=-1)[..., :k]
    return StreamTopK(np.array(idx), np.array(mx.take_along_axis(lp, idx, axis=-1)))


def replay(
    cands: StreamTopK,
    seq: Sequence[int],
    start: int,
    drafter: Union[TreeShape, Drafter],
) -> tuple:
    """Passes and tokens greedy Speculative Streaming needs for ``seq[start:]``.

    The root of each tree is the last emitted token at position r; its drafts come
    from the streams of position r - 1 (stream j predicts token r + j).

    Returns:
        ``(passes, tokens, accepted drafts per pass after prefill)``.
    """
    if isinstance(drafter, TreeShape):
        drafter = StreamDrafter(drafter)
    passes, r = 1, start  # prefill emits seq[start]
    depths: List[int] = []
    while r + 1 < len(seq):
        step = StreamTopK(cands.tokens[r - 1], cands.logprobs[r - 1])
        tree = drafter.draft(seq[r], step, seq[: r + 1])
        node, d = 0, 0
        while r + d + 1 < len(seq):
            nxt = [c for c in tree.children[node] if tree.tokens[c] == seq[r + d + 1]]
            if not nxt:
                break
            node, d = nxt[0], d + 1
        depths.append(d)
        passes += 1
        r += d + 1
    return passes, len(seq) - start, depths


def calibrate(
    model: Model,
    tokenizer,
    prompts: Sequence[str] = CALIBRATION_PROMPTS,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    max_tokens: int = 64,
    verbose: bool = False,
) -> Calibration:
    """Measure this device and the model's streams; return the best tree budget."""
    from .generate import apply_chat_template, encode_prompt

    costs = measure_costs(model, budgets)
    base = costs[budgets[0]] if budgets[0] == 1 else measure_costs(model, [1])[1]
    rel = {T: c / base for T, c in costs.items()}
    passes = {T: 0 for T in budgets}
    total = 0
    for p in prompts:
        ids = encode_prompt(tokenizer, apply_chat_template(tokenizer, p))
        out = []
        for t in generate_step(ids, model):
            if t in tokenizer.eos_token_ids or len(out) == max_tokens:
                break
            out.append(t)
        seq = ids + out
        cands = stream_candidates(model, seq, max(budgets))
        for T in budgets:
            n, tokens, _ = replay(cands, seq, len(ids), TreeShape(budget=T))
            passes[T] += n
        total += len(out)
    tpp = {T: total / max(1, passes[T]) for T in budgets}
    best = max(budgets, key=lambda T: tpp[T] / rel[T])
    cal = Calibration(best, device_key(), rel, tpp, base)
    if verbose:
        for T in budgets:
            print(
                f"  T={T:3d}: cost {rel[T]:.2f}x, {tpp[T]:.2f} tokens/pass, "
                f"expected {tpp[T] / rel[T]:.2f}x plain"
            )
    return cal


def cache_file(model_path: Path) -> Path:
    from .registry import cache_root

    h = hashlib.sha256(str(Path(model_path).resolve()).encode())
    for name in ("config.json", "speculative_streaming.json"):
        f = Path(model_path) / name
        if f.exists():
            h.update(f.read_bytes())
    if (Path(model_path) / "streams.safetensors").exists():
        h.update(
            str((Path(model_path) / "streams.safetensors").stat().st_mtime_ns).encode()
        )
    h.update(device_key().encode())
    return cache_root().parent / "calibration" / f"{h.hexdigest()[:16]}.json"


def load_calibration(model_path: Path) -> Optional[Calibration]:
    f = cache_file(model_path)
    if not f.exists():
        return None
    d = json.loads(f.read_text())
    to_int = lambda m: {int(k): v for k, v in m.items()}  # noqa: E731
    return Calibration(
        d["budget"],
        d["device"],
        to_int(d["costs"]),
        to_int(d["tokens_per_pass"]),
        d["step_seconds"],
    )


def save_calibration(model_path: Path, cal: Calibration) -> Path:
    f = cache_file(model_path)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(cal), indent=2))
    tmp.replace(f)
    return f


def main(argv=None) -> None:
    import argparse
    import sys

    from .registry import resolve
    from .utils import load

    p = argparse.ArgumentParser(
        prog="mlx-specstream calibrate", description=__doc__.splitlines()[0]
    )
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)))
    p.add_argument("--max-tokens", type=int, default=64)
    args = p.parse_args(argv)
    try:
        budgets = sorted({1, *(int(b) for b in args.budgets.split(","))})
        path = resolve(args.model)
        model, tokenizer = load(path)
        from .blas import active_blas

        print(f"BLAS: {active_blas()}\nCalibrating {args.model} on {device_key()} ...")
        cal = calibrate(
            model, tokenizer, budgets=budgets, max_tokens=args.max_tokens, verbose=True
        )
        f = save_calibration(path, cal)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(
        f"best tree budget: {cal.budget} nodes (expected {cal.expected_speedup:.2f}x plain); saved {f}"
    )
