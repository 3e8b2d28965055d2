# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Pick the draft tree for this device and model.

Speed is tokens per pass over the cost of a pass. Both are measured:

- the cost ``c(T)`` of a decoding step with a tree of ``T`` nodes, relative to a plain
  one-token step, by timing the decoder's own steps on this device (methods
  interleaved round by round, on the longest calibration prompt), for each stream
  pass: streams for every tree node in the verify pass (the paper's layout), only
  for the accepted node afterwards, or for the likeliest nodes in the pass;
- the tokens per pass ``E(T)`` of a best-first tree of ``T`` nodes, with and without
  a prompt-lookup chain in the tree, by replaying greedy decoding of calibration
  prompts: the greedy output is the same for every tree, and the streams at every
  position come from one training-layout pass, so every tree is scored on the same
  text without decoding again.

The (budget, stream pass, lookup) with the largest ``E(T) / c(T)`` wins; ``T = 1``
(plain decoding) is a candidate, so the choice is never expected to be slower than
plain decoding. Results are cached per model and device.
"""

import argparse
import os
import resource
import statistics
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence

import mlx.core as mx
import numpy as np
from mlx_lm.tokenizer_utils import TokenizerWrapper

from .blas import active_blas, ensure_openblas
from .decoding.decoder import (
    STREAM_PASSES,
    DecodeOptions,
    generate_step,
    speculative_generate_step,
)
from .decoding.defaults import prompt_lookup_drafter, stream_drafter
from .decoding.drafters import MixedDrafter
from .decoding.replay import replay, stream_candidates
from .decoding.resident import fit_paths
from .decoding.state import state_of
from .decoding.tree import TreeShape
from .loading.calibration import (
    Calibration,
    cache_file,
    describe,
    device_key,
    save_calibration,
)
from .loading.registry import DEFAULT_MODEL, resolve
from .models.llama import Model
from .prompts import apply_chat_template, encode_prompt, read_prompts
from .utils import load

DEFAULT_BUDGETS = (1, 2, 4, 8, 16, 32)
BUSY_NOTE = (
    "Other processes kept the CPU busy while timing (load {:.2f} per core): this "
    "result is used now but not cached; calibrate again on a quiet machine"
)
CALIBRATION_PROMPTS = (
    "Which planet is closest to the sun, and how long is its year?",
    "Write a SQL query that lists the name and salary of every employee in the sales "
    "department, from the table employees(name TEXT, department TEXT, salary INTEGER).",
    "Summarize this conversation. #Person1#: Are you coming to the party tonight? "
    "#Person2#: I can't, I have to finish my report. #Person1#: Too bad, maybe next time.",
    "Describe this restaurant in one sentence: name[The Eagle], eatType[coffee shop], "
    "food[French], priceRange[moderate], area[riverside], familyFriendly[yes].",
    "List three tips for sleeping better.",
    "Explain in a short paragraph how a bicycle's gears make climbing hills easier.",
    "Write a Python function that returns the squares of the even numbers in a list.",
    "Rewrite this message to sound more polite: Send me the report by Friday.",
)


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
    prompt: Optional[Sequence[int]] = None,
) -> Dict[str, Dict[int, float]]:
    """Seconds per decoding step: ``{stream_pass: {T: s}}``, ``T = 1`` plain (its
    median); a tree's is the plain median times its median ratio to plain.

    Every configuration decodes the same prompt with the real decoder, a few steps
    per configuration per round, so slow spells of a noisy machine hit all; each
    round's blocks are compared with that round's plain block. Give a
    real ``prompt`` (token ids): the "likely" stream pass costs more where its
    anchors miss the accepted node, which a random one (``prefix`` tokens, the
    default) hardly ever does.
    """
    if prompt is None:
        rng = np.random.default_rng(0)
        prompt = rng.integers(1, model.args.vocab_size, prefix + 1).tolist()
    runs = {("plain", 1): generate_step(prompt, model)}
    for sp in stream_passes:
        for T in sizes:
            if T > 1:
                drafter = stream_drafter(model, TreeShape(budget=T))
                options = DecodeOptions(stream_pass=sp)
                runs[(sp, T)] = speculative_generate_step(
                    prompt, model, drafter, options=options
                )
    # Costs are ratios to the plain step of the same round (adjacent blocks), then
    # medians over rounds: a load that comes and goes slows a round's blocks alike,
    # where medians of raw times would mix quiet and busy rounds.
    plain_times: List[float] = []
    ratios: Dict[tuple, List[float]] = {k: [] for k in runs if k != ("plain", 1)}
    for r in range(rounds + 1):  # round 0 runs prefill and warms up
        block_times = {
            k: statistics.median(_timed_block(run, block)) for k, run in runs.items()
        }
        if r:
            plain_r = block_times[("plain", 1)]
            plain_times.append(plain_r)
            for k in ratios:
                ratios[k].append(block_times[k] / plain_r)
    plain = statistics.median(plain_times)
    return {
        sp: {
            1: plain,
            **{T: plain * statistics.median(ratios[(sp, T)]) for T in sizes if T > 1},
        }
        for sp in stream_passes
    }


def others_load(since: tuple) -> float:
    """Other processes' mean runnable threads per CPU core since ``since`` (a
    ``_clock()``): the 1-minute load average less this process's own CPU use.
    0 where the load average is unknown, and on a GPU, whose timings a busy CPU
    barely touches."""
    if mx.default_device() != mx.cpu or not hasattr(os, "getloadavg"):
        return 0.0
    wall, cpu = (a - b for a, b in zip(_clock(), since))
    own = cpu / max(wall, 1e-9)
    return max(0.0, os.getloadavg()[0] - own) / (os.cpu_count() or 1)


def _clock() -> tuple:
    """(wall seconds, this process's CPU seconds)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime + r.ru_stime


def calibrate(
    model: Model,
    tokenizer,
    prompts: Sequence[str] = CALIBRATION_PROMPTS,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    max_tokens: int = 64,
    verbose: bool = False,
) -> Calibration:
    """Measure this device and the model's streams; return the best tree."""
    budgets = sorted({1, *budgets})
    prompt_ids = [
        encode_prompt(tokenizer, apply_chat_template(tokenizer, p)) for p in prompts
    ]
    since = _clock()
    seconds = measure_costs(model, budgets, prompt=max(prompt_ids, key=len))
    load = others_load(since)
    base = seconds[STREAM_PASSES[0]][1]
    costs = {sp: {T: s / base for T, s in c.items()} for sp, c in seconds.items()}
    drafters = {
        "streams": lambda T: stream_drafter(model, TreeShape(budget=T)),
        "streams+lookup": lambda T: MixedDrafter(
            stream_drafter(model, TreeShape(budget=T)), prompt_lookup_drafter(model)
        ),
    }
    passes = {d: {T: 0 for T in budgets} for d in drafters}
    total, samples = 0, []
    for ids in prompt_ids:
        out = []
        for t in generate_step(ids, model):
            if t in tokenizer.eos_token_ids or len(out) == max_tokens:
                break
            out.append(t)
        seq = ids + out
        cands = stream_candidates(model, seq, max(budgets))
        samples.append((cands, seq, len(ids)))
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
        T,
        device_key(),
        costs[sp],
        tpp[d],
        base,
        sp,
        d == "streams+lookup",
        costs,
        tpp,
        load=load,
        pipelined_paths=[list(p) for p in fit_paths(samples, max(budgets) - 1)],
    )
    if verbose:
        for T in budgets:
            row = ", ".join(f"{k} {c[T]:.2f}x" for k, c in costs.items())
            e = ", ".join(f"{k} {v[T]:.2f}" for k, v in tpp.items())
            print(f"  T={T:3d}: cost ({row}); tokens/pass ({e})")
    return cal


def ensure_calibrated(model: Model, tokenizer: TokenizerWrapper) -> None:
    """Calibrate on first use and cache the result, where streams could be used.

    Costs about a minute on a 2-core CPU, once per model and device.
    """
    state = state_of(model)
    if state.calibration is not None or not state.has_streams:
        return
    print(
        "Calibrating the draft tree for this device (once, about a minute) ...",
        file=sys.stderr,
    )
    state.calibration = calibrate(model, tokenizer)
    print(f"Draft tree: {describe(state.calibration)}", file=sys.stderr)
    if not save_calibration(state.path, state.calibration):
        print(BUSY_NOTE.format(state.calibration.load), file=sys.stderr)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="mlx-specstream calibrate", description=__doc__.splitlines()[0]
    )
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)))
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument(
        "--prompts",
        default=None,
        help="calibrate on your own prompts: JSONL with 'prompt' or chat 'messages', "
        "or a text file with one prompt per line (default: 8 built-in prompts)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="cache the result even if other processes kept the CPU busy",
    )
    args = p.parse_args(argv)
    try:
        budgets = sorted({1, *(int(b) for b in args.budgets.split(","))})
        prompts = read_prompts(args.prompts) if args.prompts else CALIBRATION_PROMPTS
        path = resolve(args.model)
        model, tokenizer = load(path)
        print(f"BLAS: {active_blas()}\nCalibrating {args.model} on {device_key()} ...")
        cal = calibrate(
            model,
            tokenizer,
            prompts,
            budgets=budgets,
            max_tokens=args.max_tokens,
            verbose=True,
        )
        saved = save_calibration(path, cal, force=args.force)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    if saved:
        print(f"best: {describe(cal)}; saved {cache_file(path)}")
    else:
        print(f"best: {describe(cal)}\n{BUSY_NOTE.format(cal.load)} (or pass --force)")


if __name__ == "__main__":
    ensure_openblas()
    main()
