# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Host work per speculative pass, on a model whose matmuls cost almost nothing.

On a GPU a small model's matmuls are nearly free, so what a decoding step costs is
mostly host work: Python, graph building, host syncs. This measures it on a
random Llama model of ``--layers`` layers, ``--hidden`` wide (built once, written
to a temporary directory with random, nonzero stream weights, and loaded by both
mlx-lm and mlx-specstream), or on a real model (``--model``):

- mlx-lm: ms per token of ``mlx_lm.generate.generate_step``, greedy;
- plain: ms per token of our plain decoding (``plain_generate_step``);
- tree / likely / accepted: our speculative decoding with a ``--budget``-node tree
  and that stream pass: ms per pass (decode time / passes), tokens per pass, and
  the host syncs per pass (``Step.host_reads``; "n/a" where the decoder has no
  such field);
- ratios: plain / mlx-lm token, a pass / mlx-lm token, a pass / plain step.

Every run prefills the same ``--prompt-tokens`` prompt and decodes ``--tokens``
tokens greedily; the first yield (prefill) is left out of the time. Each repeat runs
every method once in turn, the order rotated from repeat to repeat, after a warm-up
run of each; medians over the repeats. Random streams accept little; what is
measured is the cost of a pass. Every method's greedy tokens are checked: ours
(speculative against plain) strictly, and mlx-lm's too on the random model (float32
on both sides); a difference prints MISMATCH and exits non-zero. On a real model
mlx-lm computes in our compute dtype (``--mlx-lm-dtype ours``; float32 on the CPU)
and a difference from it is reported, not fatal, unless ``--strict-mlx-lm``.

``--baseline-src DIR`` measures another checkout of this repository (e.g. the code
before a refactor) against this one in the same run: each side runs in its own
subprocess (``PYTHONPATH`` set to its checkout), sides alternating for
``--rounds`` rounds on the same model directory; the table gives the medians over
rounds per side. The worker uses only APIs older checkouts have.

    python benchmarks/overhead.py [--repeats 7] [--tokens 64] [--prompt-tokens 32]
        [--layers 4] [--hidden 64] [--budget 16] [--passes tree,likely,accepted]
        [--out overhead.json]
    python benchmarks/overhead.py --model [NAME_OR_DIR]  # alone: smollm2-135m-instruct
    python benchmarks/overhead.py --baseline-src /tmp/before [--rounds 3]
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mlx_specstream.blas import active_blas, ensure_openblas

HERE = Path(__file__).resolve()
# The checkout this script belongs to: its mlx_specstream/ is at the root.
CHECKOUT = HERE.parents[1]
JSON_MARK = "OVERHEAD_JSON "  # a worker's figures: one stdout line, this prefix
METHODS_PLAIN = ("mlx_lm", "plain")
TEXT = (
    "Explain, step by step and with examples, how a hash table stores and finds "
    "keys, what happens on a collision, how resizing works, and when a balanced "
    "search tree is the better choice. "
)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _layered() -> bool:
    """Whether the imported checkout has the subpackage layout (decoding/, ...).
    Tested on the folder: an editable install of another checkout can still
    provide ``mlx_specstream.decoding`` to an older one."""
    import mlx_specstream

    return (Path(mlx_specstream.__file__).parent / "decoding").is_dir()


def _state(model):
    """The model's ``ModelState`` (None in older checkouts)."""
    if not _layered():
        return None
    from mlx_specstream.decoding.state import state_of

    return state_of(model)


def _model_dir(model):
    """Where the model was loaded from (``ModelState.path``; older checkouts kept
    it on the model)."""
    state = _state(model)
    return model.path if state is None else state.path


def _has_streams(model) -> bool:
    state = _state(model)
    if state is None:  # older checkouts kept it on the model
        return bool(getattr(model, "has_streams", True))
    return state.has_streams


def _median(xs: Sequence[Optional[float]]) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --- the random model --------------------------------------------------------


def random_config(args) -> Dict:
    return dict(
        model_type="llama",
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        intermediate_size=args.intermediate or 2 * args.hidden,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        rms_norm_eps=1e-5,
        vocab_size=args.vocab,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )


def write_random_model(path: Path, args, seed: int = 0) -> Path:
    """A random float32 Llama model with random stream weights, and a word-level
    tokenizer (token i is ``t{i}``, id 0 ``</s>``), written to ``path``: an
    mlx-specstream and an mlx-lm model directory at once."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mlx_specstream.format import StreamArgs
    from mlx_specstream.loading.model_io import build_model, save_model

    config = random_config(args)
    mx.random.seed(seed)
    model = build_model(
        config,
        StreamArgs(num_streams=args.streams, num_stream_layers=args.stream_layers),
    )
    # Larger embeddings than nn.Embedding's default make logits peaky: no greedy
    # ties, so mlx-lm's and our argmax agree (as the tests' tiny models).
    emb = model.model.embed_tokens.weight
    model.model.embed_tokens.weight = mx.random.normal(emb.shape)
    rand = [
        (k, 0.5 * mx.random.normal(v.shape) / (v.shape[-2] if v.ndim > 1 else 1) ** 0.5)
        for k, v in tree_flatten(model.streams.parameters())
    ]
    model.streams.update(tree_unflatten(rand))
    mx.eval(model.parameters())
    save_model(model, config, path)
    vocab = {"</s>": 0, **{f"t{i}": i for i in range(1, args.vocab)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>").save_pretrained(
        path
    )
    return path


# --- one side's figures (in-process; also the worker) -------------------------


def _sync(*streams) -> None:
    """Wait for work still queued (mlx-lm schedules a step past its last yield)."""
    import mlx.core as mx

    mx.synchronize()
    for s in streams:
        try:
            mx.synchronize(s)
        except (TypeError, ValueError, RuntimeError):
            pass


def _timed_run(steps, n: int, tokens_of) -> Dict:
    """Run ``steps`` until ``n`` tokens; the first yield (prefill, and for a
    speculative run its lone-root pass) is left out of the time."""
    toks: List[int] = []
    reads: List[Optional[int]] = []
    passes, first_tokens, t_first, t_last = 0, 0, None, None
    for step in steps:
        now = time.perf_counter()
        new = tokens_of(step)
        toks += new
        passes += 1
        if t_first is None:
            t_first, first_tokens = now, len(new)
        else:
            reads.append(getattr(step, "host_reads", None))
        t_last = now
        if len(toks) >= n:
            break
    close = getattr(steps, "close", None)
    if close is not None:
        close()
    timed = max(1, passes - 1)
    return dict(
        tokens=toks,
        ms_per_pass=(t_last - t_first) * 1e3 / timed,
        tokens_per_pass=(len(toks) - first_tokens) / timed,
        host_reads=_median(reads),
    )


def _first_difference(a: Sequence[int], b: Sequence[int], n: int) -> Optional[int]:
    a, b = list(a[:n]), list(b[:n])
    if a == b:
        return None
    diff = (i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return next(diff, min(len(a), len(b)))


def measure(
    model_ref: str,
    tokens: int = 64,
    prompt_tokens: int = 32,
    repeats: int = 7,
    budget: int = 16,
    passes: Sequence[str] = ("tree", "likely", "accepted", "pipelined"),
    warmup: int = 1,
    mlx_lm_dtype: str = "ours",
    strict_mlx_lm: bool = False,
    random_model: bool = False,
) -> Dict:
    """Every method's figures on ``model_ref`` (a directory or a registered name),
    interleaved round-robin in this process.

    Returns:
        ``{"figures": {name: value}, "check": {...}, "info": {...}}``; figure names
        are ``method.quantity`` (``mlx_lm.ms_per_token``, ``tree.ms_per_pass``,
        ``ratio.tree_pass_vs_mlx_lm`` ...), None where not measured.
    """
    import importlib

    import mlx.core as mx
    import mlx_lm
    import numpy as np

    import mlx_specstream
    from mlx_specstream import load

    # This checkout's layout, or the flat one of older checkouts.
    pkg = "mlx_specstream.decoding." if _layered() else "mlx_specstream."
    dec = importlib.import_module(pkg + "decoder")
    StreamDrafter = importlib.import_module(pkg + "drafters").StreamDrafter
    TreeShape = importlib.import_module(pkg + "tree").TreeShape

    # The module: ``mlx_lm.generate`` is also the package's generate function.
    lm_generate = importlib.import_module("mlx_lm.generate")
    if tokens < 2:
        raise ValueError("--tokens must be >= 2")
    model, tokenizer = load(model_ref)
    mx.eval(model.parameters())
    model_dir = _model_dir(model)
    theirs, _ = mlx_lm.load(str(model_dir))
    ours_dtype = model.model.norm.weight.dtype
    if mlx_lm_dtype == "ours":  # compute in our dtype (float32 on the CPU)
        theirs.set_dtype(
            ours_dtype,
            predicate=lambda t: mx.issubdtype(t, mx.floating) and t != ours_dtype,
        )
    mx.eval(theirs.parameters())

    if random_model:
        rng = np.random.default_rng(0)
        ids = [int(t) for t in rng.integers(1, model.args.vocab_size, prompt_tokens)]
    else:
        from mlx_specstream.prompts import apply_chat_template, encode_prompt

        # The end of a long chat prompt: the user's text, then the assistant header.
        ids = list(encode_prompt(tokenizer, apply_chat_template(tokenizer, TEXT * 8)))
        ids = ids[-prompt_tokens:]

    shape = TreeShape(budget=budget)
    try:  # decoding's drafter: reranked by the model's n-gram table, if it has one
        stream_drafter = importlib.import_module(pkg + "defaults").stream_drafter

        drafter = stream_drafter(model, shape)
    except ImportError:
        drafter = StreamDrafter(shape)
    known = tuple(getattr(dec, "STREAM_PASSES", ("tree", "accepted")))
    try:  # the pipelined loop (fixed tree, greedy), where this checkout has it
        resident = importlib.import_module(pkg + "resident")
        known += ("pipelined",)
    except ImportError:
        resident = None
    absent = [p for p in passes if p not in known]
    passes = [p for p in passes if p in known]
    gen_stream = getattr(lm_generate, "generation_stream", None)

    def run_mlx_lm():
        steps = lm_generate.generate_step(mx.array(ids), theirs, max_tokens=tokens)
        out = _timed_run(steps, tokens, lambda s: [int(s[0])])
        _sync(*([gen_stream] if gen_stream is not None else []))
        return out

    def run_plain():
        out = _timed_run(
            dec.plain_generate_step(ids, model), tokens, lambda s: list(s.tokens)
        )
        _sync()
        return out

    def run_spec(stream_pass):
        def run():
            if stream_pass == "pipelined":  # the calibrated shape, if there is one
                cal = getattr(_state(model), "calibration", None)
                paths = getattr(cal, "pipelined_paths", None)
                steps = resident.resident_generate_step(
                    ids, model, budget=budget, paths=paths
                )
            else:
                options = dec.DecodeOptions(stream_pass=stream_pass)
                steps = dec.speculative_generate_step(
                    ids, model, drafter, options=options
                )
            out = _timed_run(steps, tokens, lambda s: list(s.tokens))
            _sync()
            return out

        return run

    fns = {"mlx_lm": run_mlx_lm, "plain": run_plain}
    fns.update({p: run_spec(p) for p in passes})
    names = list(fns)
    outputs: Dict[str, List[int]] = {}
    for _ in range(max(1, warmup)):  # compile, trace the shapes
        for name in names:
            outputs[name] = fns[name]()["tokens"]
    runs: Dict[str, List[Dict]] = {name: [] for name in names}
    loads = [_load()]
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out = fns[name]()
            if out["tokens"][:tokens] != outputs[name][:tokens]:
                outputs[name + " (repeat)"] = out["tokens"]
            runs[name].append(out)
    loads.append(_load())

    f: Dict[str, Optional[float]] = {}
    for name in names:
        rs = runs[name]
        ms = _median([x["ms_per_pass"] for x in rs])
        if name in METHODS_PLAIN:
            f[f"{name}.ms_per_token"] = ms
            if name == "plain":
                f["plain.host_reads"] = _median([x["host_reads"] for x in rs])
        else:
            tpp = _median([x["tokens_per_pass"] for x in rs])
            f[f"{name}.ms_per_pass"] = ms
            f[f"{name}.tokens_per_pass"] = tpp
            f[f"{name}.ms_per_token"] = ms / tpp if ms and tpp else None
            f[f"{name}.host_reads"] = _median([x["host_reads"] for x in rs])
    for p in absent:
        for q in ("ms_per_pass", "tokens_per_pass", "ms_per_token", "host_reads"):
            f[f"{p}.{q}"] = None
    lm, plain = f["mlx_lm.ms_per_token"], f["plain.ms_per_token"]
    f["ratio.plain_vs_mlx_lm"] = plain / lm if plain and lm else None
    for p in list(passes) + absent:
        ms = f[f"{p}.ms_per_pass"]
        f[f"ratio.{p}_pass_vs_mlx_lm"] = ms / lm if ms and lm else None
        f[f"ratio.{p}_pass_vs_plain"] = ms / plain if ms and plain else None

    # Greedy output: ours strictly against our plain decoding, and against mlx-lm's.
    ref = outputs["plain"]
    ours_bad = {
        name: _first_difference(toks, ref, tokens)
        for name, toks in outputs.items()
        if name not in ("mlx_lm", "mlx_lm (repeat)")
    }
    ours_bad = {k: v for k, v in ours_bad.items() if v is not None}
    lm_diff = _first_difference(outputs["mlx_lm"], ref, tokens)
    if "mlx_lm (repeat)" in outputs:
        lm_diff = lm_diff if lm_diff is not None else -1
    check = dict(
        ours_identical=not ours_bad,
        ours_mismatch=ours_bad,  # method -> first differing token index
        mlx_lm_identical=lm_diff is None,
        mlx_lm_first_difference=lm_diff,
        strict_mlx_lm=strict_mlx_lm,
        ok=not ours_bad and (lm_diff is None or not strict_mlx_lm),
        tokens_checked=tokens,
        plain_tokens=ref[:tokens],
    )
    info = dict(
        model=str(model_ref),
        model_path=str(model_dir),
        mlx_specstream=str(Path(mlx_specstream.__file__).resolve().parent),
        checkout_rev=_git_rev(Path(mlx_specstream.__file__).resolve().parents[1]),
        mlx=mx.__version__,
        mlx_lm=getattr(mlx_lm, "__version__", "?"),
        device=str(mx.default_device()),
        blas=active_blas(),
        dtype=str(ours_dtype),
        mlx_lm_dtype=(
            str(theirs.model.norm.weight.dtype)
            if hasattr(theirs, "model") and hasattr(theirs.model, "norm")
            else mlx_lm_dtype
        ),
        layers=model.args.num_hidden_layers,
        hidden=model.args.hidden_size,
        vocab=model.args.vocab_size,
        num_streams=model.streams.args.num_streams,
        num_stream_layers=model.streams.args.num_stream_layers,
        has_streams=_has_streams(model),
        prompt_tokens=len(ids),
        tokens=tokens,
        repeats=repeats,
        budget=budget,
        passes=list(passes),
        passes_absent=absent,
        load=loads,
    )
    return dict(figures=f, check=check, info=info)


def _git_rev(root: Path) -> Optional[str]:
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) or None


# --- the table ---------------------------------------------------------------


def rows(passes: Sequence[str]) -> List[tuple]:
    """(figure name, label, format) in table order."""
    out = [
        ("mlx_lm.ms_per_token", "mlx-lm ms/token", "{:.3f}"),
        ("plain.ms_per_token", "plain ms/token", "{:.3f}"),
        ("plain.host_reads", "plain host reads/token", "{:g}"),
    ]
    for p in passes:
        out += [
            (f"{p}.ms_per_pass", f"{p} ms/pass", "{:.3f}"),
            (f"{p}.tokens_per_pass", f"{p} tokens/pass", "{:.2f}"),
            (f"{p}.ms_per_token", f"{p} ms/token", "{:.3f}"),
            (f"{p}.host_reads", f"{p} host reads/pass", "{:g}"),
        ]
    out.append(("ratio.plain_vs_mlx_lm", "plain / mlx-lm token", "{:.2f}x"))
    for p in passes:
        out.append((f"ratio.{p}_pass_vs_mlx_lm", f"{p} pass / mlx-lm token", "{:.2f}x"))
        out.append((f"ratio.{p}_pass_vs_plain", f"{p} pass / plain step", "{:.2f}x"))
    return out


def _fmt(v, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


RATIO_COLUMN = "after / before"


def table(columns: Dict[str, Dict[str, Optional[float]]], passes: Sequence[str]) -> str:
    """A markdown table: rows = figures, one column per side (and the ratio of
    the sides, ``RATIO_COLUMN``, where there are two)."""
    names = list(columns)
    lines = ["| figure | " + " | ".join(names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for key, label, fmt in rows(passes):
        cells = [
            _fmt(columns[c].get(key), "{:.2f}x" if c == RATIO_COLUMN else fmt)
            for c in names
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_lines(check: Dict, side: str = "") -> List[str]:
    pre = f"{side}: " if side else ""
    out = []
    if check["ours_identical"]:
        n = check["tokens_checked"]
        out.append(f"{pre}ours: speculative == plain greedy ({n} tokens)")
    else:
        out.append(
            f"{pre}MISMATCH ours: first differing token per method "
            f"{check['ours_mismatch']}"
        )
    if check["mlx_lm_identical"]:
        out.append(f"{pre}mlx-lm: identical greedy tokens")
    else:
        tag = "MISMATCH" if check["strict_mlx_lm"] else "note"
        out.append(
            f"{pre}{tag} mlx-lm: differs from ours at token "
            f"{check['mlx_lm_first_difference']} (-1: mlx-lm's repeats differ)"
        )
    return out


# --- before / after ----------------------------------------------------------


def run_worker(
    src: Path, args, model_ref: str, strict: bool, random_model: bool
) -> Dict:
    """One side's figures from a subprocess with ``src`` first on the path."""
    cmd = [
        sys.executable,
        str(HERE),
        "--worker",
        "--model",
        model_ref,
        "--tokens",
        str(args.tokens),
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--repeats",
        str(args.repeats),
        "--budget",
        str(args.budget),
        "--passes",
        ",".join(args.passes),
        "--warmup",
        str(args.warmup),
        "--mlx-lm-dtype",
        args.mlx_lm_dtype,
    ]
    if strict:
        cmd.append("--strict-mlx-lm")
    if random_model:
        cmd.append("--random-prompt")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [x for x in r.stdout.splitlines() if x.startswith(JSON_MARK)]
    if not lines:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"error: the worker for {src} failed (exit {r.returncode})")
    res = json.loads(lines[-1][len(JSON_MARK) :])
    got = Path(res["info"]["mlx_specstream"]).parent
    if got.resolve() != src.resolve():
        raise SystemExit(
            f"error: the worker for {src} imported mlx_specstream from {got}"
        )
    return res


def _median_figures(results: List[Dict]) -> Dict[str, Optional[float]]:
    keys = list(results[0]["figures"])
    return {k: _median([r["figures"].get(k) for r in results]) for k in keys}


def before_after(args, model_ref: str, strict: bool, random_model: bool) -> Dict:
    sides = {
        "before": Path(args.baseline_src).resolve(),
        "after": Path(args.src).resolve(),
    }
    results: Dict[str, List[Dict]] = {s: [] for s in sides}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for side in order:
            print(f"round {r + 1}/{args.rounds}: {side} ({sides[side]})", flush=True)
            res = run_worker(sides[side], args, model_ref, strict, random_model)
            results[side].append(res)
    return dict(
        sides={s: str(p) for s, p in sides.items()},
        medians={s: _median_figures(results[s]) for s in sides},
        runs=results,
    )


# --- command line ------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        nargs="?",
        default=None,
        const="",
        help="a model name or directory (alone: the registry's default "
        "model; not given: a random model of --layers x --hidden)",
    )
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--budget", type=int, default=16, help="tree nodes, root included")
    p.add_argument(
        "--passes",
        default="tree,likely,accepted,pipelined",
        type=lambda s: [x for x in s.split(",") if x],
    )
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=0, help="default: 2 x hidden")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--streams", type=int, default=4, help="num_streams")
    p.add_argument("--stream-layers", type=int, default=2, help="num_stream_layers")
    p.add_argument(
        "--mlx-lm-dtype",
        choices=("ours", "model"),
        default="ours",
        help="mlx-lm computes in our compute dtype, or its model's own",
    )
    p.add_argument(
        "--strict-mlx-lm",
        action="store_true",
        help="a difference from mlx-lm's greedy tokens is a MISMATCH "
        "(always on for the random model)",
    )
    p.add_argument(
        "--baseline-src",
        default=None,
        help="another checkout (its mlx_specstream/ at its root): "
        "measured against --src in alternating subprocesses",
    )
    p.add_argument("--src", default=str(CHECKOUT), help="the 'after' checkout")
    p.add_argument("--rounds", type=int, default=3, help="with --baseline-src")
    p.add_argument("--out", default=None, help="write every figure as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--random-prompt", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model == "":
        from mlx_specstream.loading.registry import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    return args


def _measure(args, model_ref: str, strict: bool, random_model: bool) -> Dict:
    return measure(
        model_ref,
        tokens=args.tokens,
        prompt_tokens=args.prompt_tokens,
        repeats=args.repeats,
        budget=args.budget,
        passes=args.passes,
        warmup=args.warmup,
        mlx_lm_dtype=args.mlx_lm_dtype,
        strict_mlx_lm=strict,
        random_model=random_model,
    )


def run(args) -> Dict:
    """Measure (one side in process, or both sides in subprocesses), print the
    table, write ``--out``; returns the report (``report["ok"]``: outputs agree)."""
    if args.worker:
        res = _measure(args, args.model, args.strict_mlx_lm, args.random_prompt)
        print(JSON_MARK + json.dumps(res), flush=True)
        return res
    loads = [_load()]
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        random_model = args.model is None
        model_ref = args.model
        if random_model:
            model_ref = str(write_random_model(Path(tmp) / "model", args))
        strict = args.strict_mlx_lm or random_model
        if args.baseline_src:
            ba = before_after(args, model_ref, strict, random_model)
            checks = {s: [r["check"] for r in rs] for s, rs in ba["runs"].items()}
            info = {s: rs[0]["info"] for s, rs in ba["runs"].items()}
            columns = ba["medians"]
            passes = [p for p in args.passes]
        else:
            res = _measure(args, model_ref, strict, random_model)
            checks = {"": [res["check"]]}
            info = {"": res["info"]}
            columns = {"median": res["figures"]}
            passes = res["info"]["passes"] + res["info"]["passes_absent"]
    loads.append(_load())
    ok = all(c["ok"] for cs in checks.values() for c in cs)

    import mlx.core as mx

    first = next(iter(info.values()))
    what = "random model" if random_model else f"model {args.model}"
    print(
        f"{what}: {first['layers']} layers, hidden {first['hidden']}, vocab "
        f"{first['vocab']}, γ={first['num_streams']}, "
        f"Ns={first['num_stream_layers']}, "
        f"{first['dtype']} (mlx-lm {first['mlx_lm_dtype']}); prompt "
        f"{first['prompt_tokens']} tokens, {args.tokens} decoded, {args.budget}-node "
        f"tree; {args.repeats} repeats"
        + (f" x {args.rounds} rounds" if args.baseline_src else "")
    )
    print(
        f"MLX {mx.__version__}, mlx-lm {first['mlx_lm']}, device {first['device']}, "
        f"{first['blas']}"
    )
    for side, i in info.items():
        print(f"{side or 'code'}: {i['mlx_specstream']} @ {i['checkout_rev']}")
    print(f"load average (1/5/15 min) before: {loads[0]}, after: {loads[1]}")
    if args.baseline_src:
        after, before = columns["after"], columns["before"]
        columns = dict(columns)
        columns[RATIO_COLUMN] = {
            k: (after[k] / before[k] if after.get(k) and before.get(k) else None)
            for k in after
        }
    print(table(columns, passes))
    for side, cs in checks.items():
        seen = set()
        for c in cs:
            for line in check_lines(c, side):
                if line not in seen:
                    seen.add(line)
                    print(line)
    report = dict(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        argv=sys.argv[1:],
        load=loads,
        mlx=mx.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
        random_model=random_model,
        model=args.model,
        settings={k: v for k, v in vars(args).items() if k not in ("worker", "out")},
        info=info,
        figures=columns,
        checks=checks,
        ok=ok,
    )
    if args.baseline_src:
        report["runs"] = {s: [r["figures"] for r in rs] for s, rs in ba["runs"].items()}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


def main(argv=None) -> None:
    ensure_openblas()
    report = run(parse_args(argv))
    ok = report["ok"] if "ok" in report else report["check"]["ok"]  # worker: check
    if not ok:
        print("MISMATCH: greedy outputs differ (see above)", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
