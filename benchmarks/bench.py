# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""``mlx-specstream bench``: decoding methods side by side on the same prompts.

Methods run interleaved, prompt by prompt, in one process on the same weights, so
machine noise hits them alike. Each method's greedy output is checked against plain
decoding. Writes ``bench.json``, ``bench.md`` and ``bench.png`` to ``--out``.
"""

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import mlx.core as mx
import mlx_lm
from mlx.utils import tree_flatten

from mlx_specstream.blas import active_blas, ensure_openblas
from mlx_specstream.calibrate import ensure_calibrated
from mlx_specstream.decoding.defaults import prompt_lookup_drafter, stream_drafter
from mlx_specstream.decoding.drafters import MixedDrafter, StreamDrafter
from mlx_specstream.decoding.medusa import MedusaDrafter, load_medusa
from mlx_specstream.decoding.state import state_of
from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.generate import stream_generate
from mlx_specstream.loading.calibration import describe, device_key
from mlx_specstream.loading.registry import DEFAULT_MODEL
from mlx_specstream.prompts import apply_chat_template, encode_prompt, read_prompts
from mlx_specstream.utils import load

CHAT_PROMPTS = [
    "Which ocean is the largest, and how deep is it?",
    "Give me three tips for learning a new language.",
    "Explain what a hash table is in two sentences.",
    "Write a haiku about a quiet harbour at dawn.",
]
# More generic chat prompts, none of them in any training data (``--chat all``).
MORE_CHAT = [
    "How do I make a good cup of tea?",
    "What are the main causes of climate change?",
    "Suggest a name for a small bakery.",
    "Why is the sky blue?",
    "Write a short thank-you note to a colleague.",
    "When should I use a dictionary instead of a list in Python?",
    "Give me a simple recipe for pancakes.",
    "How can I stay focused while working from home?",
]


@dataclass
class Result:
    tokens: int = 0
    seconds: float = 0.0  # decode time after the first token
    passes: int = 0
    ttft: List[float] = field(default_factory=list)
    depth_hist: Dict[int, int] = field(default_factory=dict)  # accepted drafts per pass
    identical: int = 0
    runs: int = 0
    peak_gb: float = 0.0

    def summary(self, baseline_tps: Optional[float]) -> Dict:
        tps = self.tokens / self.seconds if self.seconds else 0.0
        n = sum(self.depth_hist.values()) or 1
        return {
            "tokens_per_s": tps,
            "ratio_to_mlx_lm": tps / baseline_tps if baseline_tps else None,
            "tokens_per_pass": (self.tokens + len(self.ttft)) / max(1, self.passes),
            # P(a pass accepts at least d drafts), d = 1..4
            "acceptance_by_depth": [
                sum(v for k, v in self.depth_hist.items() if k >= d) / n
                for d in range(1, 5)
            ],
            "ttft_s": sum(self.ttft) / max(1, len(self.ttft)),
            "peak_memory_gb": self.peak_gb,
            "identical_to_plain": f"{self.identical}/{self.runs}",
        }


def task_group(task: str) -> str:
    """The group a task set's prompts are reported under: the chat task set's test
    split is ``chat_test``, apart from the hand-written ``chat`` prompts."""
    return "chat_test" if task == "chat" else task


OPEN_PROMPTS = Path(__file__).resolve().parent / "prompts"


def open_prompts(split: str) -> List[tuple]:
    """(category, prompt) pairs of the open-prompt set: "eval" is frozen and only
    reported, "valid" is where settings are chosen (``prompts/``)."""
    path = OPEN_PROMPTS / f"open_{split}.jsonl"
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(r["category"], r["prompt"]) for r in rows]


def load_prompts(
    data: Optional[str],
    per_task: int,
    chat: str = "4",
    open_split: Optional[str] = None,
) -> List[tuple]:
    """(task, prompt) pairs: held-out test splits of ``data`` plus chat prompts
    (``chat``: "4" the first four, "all" twelve); with ``open_split``, the
    open-prompt set by category instead of the chat prompts."""
    if open_split is not None:
        prompts = open_prompts(open_split)
    else:
        chats = CHAT_PROMPTS + (MORE_CHAT if chat == "all" else [])
        prompts = [("chat", p) for p in chats]
    if data:
        for f in sorted(Path(data).glob("*_test.jsonl")):
            if f.stem.startswith("subset"):  # a mix of the task files, not a task
                continue
            task = task_group(f.stem[: -len("_test")])
            prompts += [(task, p) for p in read_prompts(f)[:per_task]]
    return prompts


def _ours(model, tokenizer, ids, max_tokens, **kw) -> tuple:
    """Tokens, time to first token, decode seconds, passes, accepted per pass."""
    tic = time.perf_counter()
    out, acc, first, last = [], [], None, None
    for last in stream_generate(model, tokenizer, ids, max_tokens=max_tokens, **kw):
        if first is None:
            first = time.perf_counter()
        elif not last.from_draft or last.finish_reason:  # a pass's last token
            acc.append(last.accepted)
        out += [] if last.finish_reason == "stop" else [last.token]
    return out, first - tic, time.perf_counter() - first, last.forward_calls, acc


def _with_calibration(model, calibration, tokenizer, ids, max_tokens) -> tuple:
    """``_ours`` with the defaults that ``calibration`` (maybe None) gives."""
    state = state_of(model)
    cal, state.calibration = state.calibration, calibration
    try:
        return _ours(model, tokenizer, ids, max_tokens)
    finally:
        state.calibration = cal


def _no_fallback(calibration):
    """The calibration without the step costs that the fall-back rule reads: the
    calibrated default that never drops to plain decoding."""
    if calibration is None:
        return None
    return dataclasses.replace(calibration, costs={}, all_costs={})


def _mlx_lm(model, tokenizer, ids, max_tokens) -> tuple:
    tic = time.perf_counter()
    out, first = [], None
    for r in mlx_lm.stream_generate(model, tokenizer, ids, max_tokens=max_tokens):
        if first is None:
            first = time.perf_counter()
        if r.finish_reason == "stop" and r.token in tokenizer.eos_token_ids:
            break
        out.append(r.token)
    return out, first - tic, time.perf_counter() - first, len(out) + 1, []


def make_methods(model, args) -> Dict[str, Callable]:
    """Method name -> ``f(ids) -> (tokens, ttft, seconds, passes, accepted)``."""
    theirs, their_tok = mlx_lm.load(str(state_of(model).path))
    tok = args.tokenizer
    best_first = stream_drafter(model, TreeShape(budget=16))
    lookup = prompt_lookup_drafter(model)  # with the model's n-gram table, if any
    ss = {
        "ss_cartesian": dict(
            drafter=StreamDrafter(TreeShape("cartesian", (2, 2, 1, 1))),
            stream_pass="tree",
        ),
        "ss_best_first": dict(drafter=best_first, stream_pass="tree"),
        "ss_best_first_accepted_pass": dict(drafter=best_first, stream_pass="accepted"),
        "ss_pruned": dict(
            drafter=best_first,
            stream_pass="tree",
            prune_threshold=args.prune_threshold,
        ),
        "ss_plus_lookup": dict(
            drafter=MixedDrafter(best_first, lookup), stream_pass="tree"
        ),
        "ss_plus_lookup_accepted_pass": dict(
            drafter=MixedDrafter(best_first, lookup), stream_pass="accepted"
        ),
        "ss_plus_lookup_likely_pass": dict(
            drafter=MixedDrafter(best_first, lookup), stream_pass="likely"
        ),
        "ss8_plus_lookup_likely_pass": dict(
            drafter=MixedDrafter(stream_drafter(model, TreeShape(budget=8)), lookup),
            stream_pass="likely",
        ),
        # What users get by default: the tree, stream pass and lookup calibrated
        # for this device (plain decoding where no tree pays).
        "ss_calibrated": dict(),
        "prompt_lookup": dict(drafter=lookup),
    }
    methods = {
        "mlx_lm": lambda ids: _mlx_lm(theirs, their_tok, ids, args.max_tokens),
        "ours_plain": lambda ids: _ours(
            model, tok, ids, args.max_tokens, speculative=False
        ),
    }
    for name, kw in ss.items():
        methods[name] = lambda ids, kw=kw: _ours(model, tok, ids, args.max_tokens, **kw)
    methods["api_default_uncalibrated"] = lambda ids: _with_calibration(
        model, None, tok, ids, args.max_tokens
    )
    methods["ss_calibrated_no_fallback"] = lambda ids: _with_calibration(
        model, _no_fallback(state_of(model).calibration), tok, ids, args.max_tokens
    )
    if args.medusa:
        heads = load_medusa(args.medusa)
        drafter = MedusaDrafter(heads, TreeShape(budget=16))
        methods["medusa"] = lambda ids: _ours(
            model, tok, ids, args.max_tokens, drafter=drafter
        )
    return {k: v for k, v in methods.items() if not args.methods or k in args.methods}


def run(model, tokenizer, args) -> Dict:
    args.tokenizer = tokenizer
    methods = make_methods(model, args)
    results = {name: Result() for name in methods}
    prompts = load_prompts(
        args.data, args.per_task, args.chat, getattr(args, "open", None)
    )
    by_task: Dict[str, Dict[str, Result]] = {}
    deadline = getattr(args, "deadline", None)  # callers before --time-limit lack it
    done = 0
    for i, (task, prompt) in enumerate(prompts):
        if i and deadline is not None and time.perf_counter() > deadline:
            print(
                f"time limit: stopped after {i} of {len(prompts)} prompts",
                file=sys.stderr,
            )
            break
        done = i + 1
        ids = encode_prompt(tokenizer, apply_chat_template(tokenizer, prompt))
        groups = [task] + ([] if task.startswith("chat") else ["all tasks"])
        for rep in range(args.repeats):
            names = list(methods)
            k = (i * args.repeats + rep) % len(names)
            names = names[k:] + names[:k]  # rotate the order
            outputs = {}
            for name in names:
                mx.reset_peak_memory()
                out, ttft, secs, passes, acc = methods[name](ids)
                outputs[name] = out
                for r in [results[name]] + [
                    by_task.setdefault(g, {}).setdefault(name, Result()) for g in groups
                ]:
                    r.tokens += len(out) - 1 if out else 0
                    r.seconds += secs
                    r.passes += passes
                    r.ttft.append(ttft)
                    for a in acc:
                        r.depth_hist[a] = r.depth_hist.get(a, 0) + 1
                    r.peak_gb = max(r.peak_gb, mx.get_peak_memory() / 1e9)
            for name, out in outputs.items():
                for r in [results[name]] + [by_task[g][name] for g in groups]:
                    r.runs += 1
                    r.identical += (
                        out == outputs["ours_plain"] if "ours_plain" in outputs else 0
                    )
        print(
            f"[{i + 1}/{len(prompts)}] {task}: "
            + ", ".join(f"{n} {len(outputs[n])}" for n in methods),
            file=sys.stderr,
        )
    base = (
        results["mlx_lm"].tokens / results["mlx_lm"].seconds
        if "mlx_lm" in results
        else None
    )
    report = {name: r.summary(base) for name, r in results.items()}
    tasks = {}
    for task, rs in by_task.items():
        tb = rs["mlx_lm"].tokens / rs["mlx_lm"].seconds if "mlx_lm" in rs else None
        tasks[task] = {name: r.summary(tb) for name, r in rs.items()}
    return {"methods": report, "by_task": tasks, "prompts": [done, len(prompts)]}


def extra_parameters(model, args) -> Dict[str, int]:
    out = {"streams": model.streams.num_parameters()}
    if args.medusa:
        out["medusa"] = sum(
            v.size for _, v in tree_flatten(load_medusa(args.medusa).parameters())
        )
    return out


def write_report(report: Dict, out: Path, header: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    done, total = report.get("prompts", (0, 0))
    if done < total:  # a --time-limit cut the run short
        header += f"; time limit: {done} of {total} prompts"
    lines = [
        header,
        "",
        "| method | tokens/s | vs mlx_lm | tokens/pass | accept ≥1/≥2/≥3/≥4 | "
        "TTFT s | peak GB | same as plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["methods"].items():
        acc = "/".join(f"{a:.2f}" for a in m["acceptance_by_depth"])
        ratio = f"{m['ratio_to_mlx_lm']:.2f}x" if m["ratio_to_mlx_lm"] else "-"
        lines.append(
            f"| {name} | {m['tokens_per_s']:.2f} | {ratio} | {m['tokens_per_pass']:.2f} | "
            f"{acc} | {m['ttft_s']:.2f} | {m['peak_memory_gb']:.3f} | {m['identical_to_plain']} |"
        )
    lines += _by_task(report, "Tokens per pass by task:", "{tokens_per_pass:.2f}")
    if "mlx_lm" in report["methods"]:
        lines += _by_task(
            report, "Speed relative to mlx_lm by task:", "{ratio_to_mlx_lm:.2f}x"
        )
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    _plot(report, out / "bench.png")


def _by_task(report: Dict, title: str, cell: str) -> List[str]:
    """A task x method table of one summary figure (``cell`` formats a summary)."""
    names = list(report["methods"])
    lines = ["", title, "", "| task | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---|" * len(names))
    for task, ms in report["by_task"].items():
        lines.append(
            f"| {task} | " + " | ".join(cell.format(**ms[n]) for n in names) + " |"
        )
    return lines


def _plot(report: Dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(report["methods"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.barh(names, [report["methods"][n]["tokens_per_s"] for n in names])
    a.set_xlabel("tokens/s")
    b.barh(
        names,
        [report["methods"][n]["tokens_per_pass"] for n in names],
        color="tab:orange",
    )
    b.set_xlabel("tokens per forward pass")
    b.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="mlx-specstream bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument(
        "--data", default=None, help="directory with {task}_test.jsonl files"
    )
    p.add_argument("--per-task", type=int, default=3)
    p.add_argument(
        "--chat",
        choices=("4", "all"),
        default="4",
        help="chat prompts: the first four, or all twelve held-out ones",
    )
    p.add_argument(
        "--open",
        choices=("eval", "valid"),
        default=None,
        help="the open-prompt set (benchmarks/prompts/) by category instead of the "
        "chat prompts: 'eval' is frozen, report only; choose settings on 'valid'",
    )
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each prompt per method (the order rotates each run); timings "
        "are summed, so noise shrinks with more",
    )
    p.add_argument("--prune-threshold", type=float, default=0.01)
    p.add_argument("--medusa", default=None, help="directory with medusa heads")
    p.add_argument("--methods", nargs="*", default=None)
    p.add_argument("--out", default="bench")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds from start: begin no new prompt after this; the report covers "
        "the prompts done (at least one)",
    )
    args = p.parse_args(argv)
    args.deadline = (
        time.perf_counter() + args.time_limit if args.time_limit is not None else None
    )
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    try:
        model, tokenizer = load(args.model)
        ensure_calibrated(model, tokenizer)
        cal = state_of(model).calibration
        calibrated = describe(cal) if cal else "none"
        header = (
            f"Machine: {device_key()}; BLAS: {active_blas()}; model: {args.model}; "
            f"max_tokens {args.max_tokens}; greedy; extra parameters: {extra_parameters(model, args)}; "
            f"ss_calibrated: {calibrated}"
        )
        print(header, file=sys.stderr)
        report = run(model, tokenizer, args)
        report["header"] = header
        write_report(report, Path(args.out), header)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print((Path(args.out) / "bench.md").read_text())


if __name__ == "__main__":
    ensure_openblas()
    main()
