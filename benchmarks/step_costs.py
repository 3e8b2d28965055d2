# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Where one speculative step's time goes: verify pass, stream pass, host work.

Prefills a ``--context``-token prompt, drafts a ``--budget``-node tree from the
model's streams, then times, with the cache rolled back after each (so every repeat
sees the same state):

- plain: one plain decoding step (1 row, synced), the yardstick;
- verify: the tree's pass through every layer, the float32 LM head over its nodes,
  and the argmax on the host;
- stream: compaction of the accepted path, the accepted node's γ streams through
  the top layers, the stream LM head and its top-k on the host;
- head: of the stream pass, the stream LM head and top-k alone (what the draft
  vocabulary changes), on fixed stream states;
- host: the Python work of a step outside those passes (acceptance, drafting the
  next tree, its masks and tables);
- draft, draft plain: of the host work, drafting the next tree alone, with the
  model's n-gram rerank (as decoding drafts) and without it;
- graph: building (not running) the verify and stream passes' graphs, the Python
  share of those two passes;
- step: a whole decoder step (median over the passes of a real greedy run, with
  the accepted-node stream pass), which the three parts should roughly add up to;
- rows: the verify pass with the stream rows of the 4 likeliest anchors in it
  (``stream_pass="likely"``), and "step likely", a real run's step with that pass
  (the accepted-node pass only where those anchors miss).

Every configuration (``--paths`` x ``--draft-vocab``) is measured round-robin in one
process, so a noisy machine slows all of them alike; medians in ms, the load average
printed beside them. Runs against older checkouts too (then only the "cpu" path
and the full vocabulary exist):

    python benchmarks/step_costs.py [--model smollm2-135m-instruct] [--context 200]
        [--budget 16] [--repeats 15] [--paths cpu,gpu] [--draft-vocab 0,8192]
"""

import argparse
import contextlib
import json
import os
import statistics
import time
from typing import Callable, Dict, List, Optional

from mlx_specstream.blas import active_blas, ensure_openblas
from mlx_specstream.registry import DEFAULT_MODEL

TEXT = (
    "Explain, step by step and with examples, how a hash table stores and finds "
    "keys, what happens on a collision, how resizing works, and when a balanced "
    "search tree is the better choice. "
)


def _timed(fn: Callable[[], Optional[float]]) -> float:
    """ms ``fn`` took, or what it says it took."""
    tic = time.perf_counter()
    own = fn()
    return (time.perf_counter() - tic) * 1e3 if own is None else own


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> None:
    ensure_openblas()
    import mlx.core as mx
    import numpy as np

    from mlx_specstream import load
    from mlx_specstream import decoder as dec
    from mlx_specstream.drafters import StreamDrafter
    from mlx_specstream.models.cache import make_cache
    from mlx_specstream.models.msa import Rows
    from mlx_specstream.prompts import apply_chat_template, encode_prompt
    from mlx_specstream.sample_utils import accept_greedy
    from mlx_specstream.tree import Tree, TreeShape

    try:  # absent before the per-device decode path
        from mlx_specstream.models.fast_ops import use_decode_path
    except ImportError:
        use_decode_path = None

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--context", type=int, default=200)
    p.add_argument("--budget", type=int, default=16)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--steps", type=int, default=40, help="passes of the real run")
    p.add_argument("--paths", default="cpu", help="decode paths, comma-separated")
    p.add_argument(
        "--draft-vocab",
        default="model",
        help="comma-separated K values (0: the whole vocabulary; 'model': the "
        "model's own subset, or the whole vocabulary if it has none)",
    )
    p.add_argument("--out", default=None, help="write the medians as JSON")
    args = p.parse_args(argv)

    model, tokenizer = load(args.model)
    mx.eval(model.parameters())
    shipped = getattr(model, "draft_vocab", None)
    ranking = shipped if shipped is not None else np.arange(model.args.vocab_size)
    ks: List = []
    for k in args.draft_vocab.split(","):
        ks.append("model" if k == "model" else int(k))
    if any(k not in ("model", 0) for k in ks) and not hasattr(model, "set_draft_vocab"):
        raise SystemExit("error: this checkout has no draft vocabulary; use 0")
    paths = args.paths.split(",")
    if use_decode_path is None and paths != ["cpu"]:
        raise SystemExit("error: this checkout has only the cpu path")

    def configure(path: str, k):
        if hasattr(model, "set_draft_vocab"):
            if k == "model":
                model.set_draft_vocab(shipped)
            else:
                model.set_draft_vocab(None if k == 0 else ranking[:k])
            # Slice the head now (once at load in real use), not in a timed pass.
            mx.eval(model.stream_logits(mx.zeros((1, model.args.hidden_size))))
        if use_decode_path is None:
            return contextlib.nullcontext()
        return use_decode_path(path)

    ids = encode_prompt(tokenizer, apply_chat_template(tokenizer, TEXT * 8))
    ids = ids[: args.context]
    cache = make_cache(model)
    dec.prefill(model, ids, cache, 512)
    offset = cache[0].offset
    shape = TreeShape(budget=args.budget)
    plain_drafter = StreamDrafter(shape)
    try:  # decoding's drafter: reranked by the model's n-gram table, if it has one
        from mlx_specstream.defaults import stream_drafter

        drafter = stream_drafter(model, shape)
    except ImportError:
        drafter = plain_drafter
    g = model.streams.args.num_streams

    def rollback():
        for c in cache:
            c.offset = offset

    # The tree: drafted from the streams of the last prompt token.
    h = dec._streams_after_compaction(
        model,
        cache,
        model.run_layers(
            model.embed(mx.array(ids[-1:])),
            Rows.causal(1, offset, model.streams),
            cache,
            0,
            model.split,
        )[0, 0],
        offset,
    )
    rollback()
    tree = drafter.draft(ids[-1], dec._stream_topk(model, h, drafter.top_k), ids)
    path = [0] + tree.children[0][:1]  # the root and its first child accepted
    history = list(ids)

    def plain():
        rows = Rows.causal(1, offset, model.streams)
        hh = model.run_layers(
            model.embed(mx.array(ids[-1:])), rows, cache, 0, len(model.layers)
        )
        mx.argmax(model.logits(hh[0], float32=True), axis=-1).item()
        rollback()

    state = {}

    def verify_pass(anchors_of=None):
        """The tree's pass (stream rows for ``anchors_of``'s nodes), its float32 LM
        head and the argmax on the host; the cache rolled back."""
        fresh = Tree(tree.tokens, tree.parents)  # no cached masks: as a new draft
        pss = dec._forward_tree(model, cache, fresh, 0.0, anchors_of)
        logits = model.logits(pss.h_top[0, : fresh.size], float32=True)
        argmax = np.array(mx.argmax(logits, axis=-1))
        rollback()
        return pss, argmax

    def verify():
        pss, state["argmax"] = verify_pass()
        state["h_split"] = pss.h_split

    def stream():
        start = offset
        for i, c in enumerate(cache):
            c.offset = start + tree.size  # as after the verify pass
            c.compact(start, path)
        s = dec._streams_after_compaction(
            model, cache, state["h_split"][0, path[-1]], start + len(path) - 1
        )
        state["streams"] = dec._stream_topk(model, s, drafter.top_k)
        rollback()

    def head():
        dec._stream_topk(model, h, drafter.top_k)

    likely = hasattr(Tree, "likely_anchors")  # older checkouts lack the pass

    def rows():
        if not likely:
            return 0.0
        verify_pass(lambda t: t.likely_anchors(4))

    def host():
        fresh = Tree(tree.tokens, tree.parents)
        accept_greedy(fresh, state["argmax"])
        nxt = drafter.draft(tree.tokens[path[-1]], state["streams"], history)
        Rows.tree(nxt.ancestor_mask, nxt.depths, offset, model.streams)

    def draft():
        drafter.draft(tree.tokens[path[-1]], state["streams"], history)

    def draft_plain():
        plain_drafter.draft(tree.tokens[path[-1]], state["streams"], history)

    def graph() -> float:
        """ms to build both graphs; they then run untimed, so nothing lazy is left
        in the cache for the next measurement."""
        tic = time.perf_counter()
        fresh = Tree(tree.tokens, tree.parents)
        pss = dec._forward_tree(model, cache, fresh, 0.0, None)
        out = [model.logits(pss.h_top[0, : fresh.size], float32=True)]
        for c in cache:
            c.offset = offset + tree.size
            c.compact(offset, path)
        s = dec._streams_after_compaction(
            model, cache, pss.h_split[0, path[-1]], offset + len(path) - 1
        )
        out.append(getattr(model, "stream_logits", model.logits)(s))
        ms = (time.perf_counter() - tic) * 1e3
        mx.eval(out, [(c.keys, c.values) for c in cache])
        rollback()
        return ms

    def step_ms(stream_pass: str = "accepted") -> float:
        """Median ms per pass of a real greedy run from the same prompt."""
        if stream_pass == "likely" and not likely:
            return 0.0
        times, tic = [], time.perf_counter()
        steps = dec.speculative_generate_step(
            ids, model, drafter, options=dec.DecodeOptions(stream_pass=stream_pass)
        )
        for n, _ in enumerate(steps):
            now = time.perf_counter()
            if n > 0:  # the first yield includes the prefill
                times.append((now - tic) * 1e3)
            tic = now
            if n == args.steps:
                break
        return statistics.median(times)

    configs = [(pth, k) for pth in paths for k in ks]
    parts: Dict[tuple, Dict[str, List[float]]] = {
        c: {
            n: []
            for n in (
                "plain",
                "verify",
                "stream",
                "head",
                "host",
                "draft",
                "draft_plain",
                "graph",
                "rows",
            )
        }
        for c in configs
    }
    fns = dict(
        plain=plain,
        verify=verify,
        stream=stream,
        head=head,
        host=host,
        draft=draft,
        draft_plain=draft_plain,
        graph=graph,
        rows=rows,
    )
    for c in configs:  # warm up: compile, trace the bucketed shapes
        with configure(*c):
            for fn in fns.values():
                fn()
    loads = [_load()]
    for _ in range(args.repeats):
        for c in configs:
            with configure(*c):
                for name, fn in fns.items():
                    parts[c][name].append(_timed(fn))
    steps, steps_likely = {}, {}
    for c in configs:
        with configure(*c):
            steps[c] = step_ms()
            steps_likely[c] = step_ms("likely")
    loads.append(_load())

    print(
        f"model {args.model}, context {len(ids)} tokens, {tree.size}-node tree, "
        f"γ={g}, {active_blas()}, device {mx.default_device()}"
    )
    print(f"load average (1/5/15 min) before: {loads[0]}, after: {loads[1]}")
    print(
        "| path | draft vocab | plain | verify | stream | head | host | draft "
        "| draft plain | graph | step | step / plain | verify + rows | step likely "
        "| likely / plain |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    report = []
    for c in configs:
        med = {n: statistics.median(v) for n, v in parts[c].items()}
        k = c[1]
        if k == "model":
            k = len(shipped) if shipped is not None else model.args.vocab_size
        k = k or model.args.vocab_size
        print(
            f"| {c[0]} | {k} | {med['plain']:.1f} | {med['verify']:.1f} | "
            f"{med['stream']:.1f} | {med['head']:.1f} | {med['host']:.2f} | "
            f"{med['draft']:.2f} | {med['draft_plain']:.2f} | {med['graph']:.1f} | "
            f"{steps[c]:.1f} | "
            f"{steps[c] / med['plain']:.2f} | {med['rows']:.1f} | "
            f"{steps_likely[c]:.1f} | {steps_likely[c] / med['plain']:.2f} |"
        )
        report.append(
            dict(
                path=c[0],
                draft_vocab=k,
                step=steps[c],
                step_likely=steps_likely[c],
                **med,
            )
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(load=loads, rows=report), f, indent=2)


if __name__ == "__main__":
    main()
