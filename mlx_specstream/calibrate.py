# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Pick the draft tree for this device and model.

Speed is tokens per pass over the cost of a pass. Both are measured:

- the cost ``c(T)`` of a decoding step with a tree of ``T`` nodes, relative to a plain
  one-token step, by timing the decoder's own steps on this device (methods
  interleaved round by round), for both stream passes: streams for every tree node
  in the verify pass (the paper's layout) or only for the accepted node, afterwards;
- the tokens per pass ``E(T)`` of a best-first tree of ``T`` nodes, with and without
  a prompt-lookup chain in the tree, by replaying greedy decoding of calibration
  prompts: the greedy output is the same for every tree, and the streams at every
  position come from one training-layout pass, so every tree is scored on the same
  text without decoding again.

The (budget, stream pass, lookup) with the largest ``E(T) / c(T)`` wins; ``T = 1``
(plain decoding) is a candidate, so the choice is never expected to be slower than
plain decoding. Results are cached per model and device.
"""

import hashlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union

import mlx.core as mx
import numpy as np

from .decoder import DecodeOptions, generate_step, speculative_generate_step
from .drafters import (
    Drafter,
    MixedDrafter,
    StreamDrafter,
    StreamTopK,
    topk_logprobs,
)
from .models.llama import Model
from .tree import TreeShape

# Bump when what is measured changes: older cached results are then re-measured.
CALIBRATION_VERSION = 3
DEFAULT_BUDGETS = (1, 2, 4, 8, 16, 32)
STREAM_PASSES = ("tree", "accepted")
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
    costs: Dict[int, float]  # c(T) with the chosen stream pass, relative to plain
    tokens_per_pass: Dict[int, float]  # E(T) with the chosen drafter
    step_seconds: float  # one plain step
    stream_pass: str = "tree"
    prompt_lookup: bool = False
    # Every measurement: costs by stream pass, tokens per pass by drafter.
    all_costs: Dict[str, Dict[int, float]] = field(default_factory=dict)
    all_tokens_per_pass: Dict[str, Dict[int, float]] = field(default_factory=dict)
    version: int = CALIBRATION_VERSION

    @property
    def expected_speedup(self) -> float:
        return self.tokens_per_pass[self.budget] / self.costs[self.budget]


def device_key() -> str:
    """What the timings depend on: machine, MLX device and BLAS."""
    from .blas import active_blas

    return f"{platform.machine()}|{platform.processor() or platform.system()}|{mx.default_device()}|{active_blas().split(' (')[0]}"


def _timed_block(steps: Iterator, n: int) -> List[float]:
    """Seconds of ``n`` consecutive steps of a decoding generator.

    Plain decoding queues step t + 1 before it returns step t, so the first step of a
    block may have run while other configurations were timed: it is left out, and
    the queue is drained afterwards so it cannot overlap the next block.
    """
    next(steps)
    times = []
    for _ in range(n):
        tic = time.perf_counter()
        next(steps)
        times.append(time.perf_counter() - tic)
    mx.synchronize()
    return times


def measure_costs(
    model: Model,
    sizes: Sequence[int],
    stream_passes: Sequence[str] = STREAM_PASSES,
    prefix: int = 128,
    rounds: int = 3,
    block: int = 3,
) -> Dict[str, Dict[int, float]]:
    """Median seconds per decoding step: ``{stream_pass: {T: s}}``, ``T = 1`` plain.

    Every configuration decodes the same random prompt with the real decoder, a few
    steps per configuration per round, so slow spells of a noisy machine hit all.
    """
    rng = np.random.default_rng(0)
    prompt = rng.integers(1, model.args.vocab_size, prefix + 1).tolist()
    runs = {("plain", 1): generate_step(prompt, model)}
    for sp in stream_passes:
        for T in sizes:
            if T > 1:
                drafter = StreamDrafter(TreeShape(budget=T))
                options = DecodeOptions(stream_pass=sp)
                runs[(sp, T)] = speculative_generate_step(
                    prompt, model, drafter, options=options
                )
    times: Dict[tuple, List[float]] = {k: [] for k in runs}
    for r in range(rounds + 1):  # round 0 runs prefill and warms up
        for k, run in runs.items():
            t = _timed_block(run, block)
            if r:
                times[k] += t
    plain = statistics.median(times[("plain", 1)])
    return {
        sp: {1: plain, **{T: statistics.median(times[(sp, T)]) for T in sizes if T > 1}}
        for sp in stream_passes
    }


def stream_candidates(model: Model, tokens: Sequence[int], k: int) -> StreamTopK:
    """Top-k stream candidates at every position of a sequence, (L, γ, k)."""
    _, streams = model.all_stream_logits(mx.array(tokens))
    L, g, V = streams.shape
    # The decoder's own top-k, so replayed drafts are the decoder's drafts.
    top = topk_logprobs(streams.reshape(L * g, V), k)
    return StreamTopK(top.tokens.reshape(L, g, -1), top.logprobs.reshape(L, g, -1))


def replay(
    cands: StreamTopK,
    seq: Sequence[int],
    start: int,
    drafter: Union[TreeShape, Drafter],
    max_tokens: int = -1,
) -> tuple:
    """Passes and tokens greedy Speculative Streaming needs for ``seq[start:]``.

    The root of each tree is the last emitted token at position r; its drafts come
    from the streams of position r - 1 (stream j predicts token r + j).
    ``max_tokens`` (-1: none) cuts trees as the decoder does near its limit.

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
        if max_tokens >= 0:
            tree = tree.within(max_tokens - (r - start + 1))
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
    """Measure this device and the model's streams; return the best tree."""
    from .generate import apply_chat_template, encode_prompt

    budgets = sorted({1, *budgets})
    seconds = measure_costs(model, budgets)
    base = seconds[STREAM_PASSES[0]][1]
    costs = {sp: {T: s / base for T, s in c.items()} for sp, c in seconds.items()}
    drafters = {
        "streams": lambda T: StreamDrafter(TreeShape(budget=T)),
        "streams+lookup": lambda T: MixedDrafter(StreamDrafter(TreeShape(budget=T))),
    }
    passes = {d: {T: 0 for T in budgets} for d in drafters}
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
        for d, make in drafters.items():
            for T in budgets:
                passes[d][T] += replay(cands, seq, len(ids), make(T))[0]
        total += len(out)
    tpp = {d: {T: total / max(1, n) for T, n in v.items()} for d, v in passes.items()}
    choices = [(T, sp, d) for T in budgets for sp in costs for d in tpp]
    T, sp, d = max(choices, key=lambda c: tpp[c[2]][c[0]] / costs[c[1]][c[0]])
    if T == 1:
        sp, d = STREAM_PASSES[0], "streams"
    cal = Calibration(
        T, device_key(), costs[sp], tpp[d], base, sp, d == "streams+lookup", costs, tpp
    )
    if verbose:
        for T in budgets:
            row = ", ".join(f"{k} {c[T]:.2f}x" for k, c in costs.items())
            e = ", ".join(f"{k} {v[T]:.2f}" for k, v in tpp.items())
            print(f"  T={T:3d}: cost ({row}); tokens/pass ({e})")
    return cal


def describe(cal: Calibration) -> str:
    """The choice in words."""
    if cal.budget == 1:
        return "plain decoding (no tree pays for itself on this device)"
    how = "streams + prompt lookup" if cal.prompt_lookup else "streams"
    return (
        f"{cal.budget}-node tree from {how}, stream pass {cal.stream_pass!r} "
        f"(expected {cal.expected_speedup:.2f}x plain)"
    )


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
    """The cached result for this model and device; None if absent or outdated."""
    f = cache_file(model_path)
    if not f.exists():
        return None
    try:
        d = json.loads(f.read_text())
        if d.get("version") != CALIBRATION_VERSION:
            return None
        to_int = lambda m: {int(k): v for k, v in m.items()}  # noqa: E731
        d["costs"], d["tokens_per_pass"] = to_int(d["costs"]), to_int(
            d["tokens_per_pass"]
        )
        for k in ("all_costs", "all_tokens_per_pass"):
            d[k] = {name: to_int(v) for name, v in d[k].items()}
        return Calibration(**d)
    except (ValueError, KeyError, TypeError):  # unreadable: measure again
        return None


def save_calibration(model_path: Path, cal: Calibration) -> Path:
    f = cache_file(model_path)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(cal), indent=2))
    tmp.replace(f)
    return f


def read_prompts(path: Union[str, Path]) -> List[str]:
    """Calibration prompts from a file: JSONL records with ``prompt`` (or chat
    ``messages``, first user turn), or plain text with one prompt per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        prompts = lines
    else:
        prompts = []
        for i, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                prompt = rec.get("prompt") or next(
                    m["content"] for m in rec["messages"] if m["role"] == "user"
                )
            except (ValueError, KeyError, TypeError, StopIteration, AttributeError):
                raise ValueError(
                    f"{path}:{i}: expected a 'prompt' string or chat 'messages'"
                ) from None
            prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


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
    p.add_argument(
        "--prompts",
        default=None,
        help="calibrate on your own prompts: JSONL with 'prompt' or chat 'messages', "
        "or a text file with one prompt per line (default: 5 built-in prompts)",
    )
    args = p.parse_args(argv)
    try:
        budgets = sorted({1, *(int(b) for b in args.budgets.split(","))})
        prompts = read_prompts(args.prompts) if args.prompts else CALIBRATION_PROMPTS
        path = resolve(args.model)
        model, tokenizer = load(path)
        from .blas import active_blas

        print(f"BLAS: {active_blas()}\nCalibrating {args.model} on {device_key()} ...")
        cal = calibrate(
            model,
            tokenizer,
            prompts,
            budgets=budgets,
            max_tokens=args.max_tokens,
            verbose=True,
        )
        f = save_calibration(path, cal)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"best: {describe(cal)}; saved {f}")
