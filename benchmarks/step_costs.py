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
printed beside them. Needs the model-side pass (``models/streaming.py``); for a
before/after comparison with older checkouts, ``benchmarks/overhead.py --model
--baseline-src DIR`` runs both:

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
from mlx_specstream.loading.registry import DEFAULT_MODEL

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
    from mlx_specstream.decoding import decoder as dec
    from mlx_specstream.decoding.drafters import StreamDrafter, topk_logprobs
    from mlx_specstream.decoding.tree import Tree, TreeShape
    from mlx_specstream.decoding.verify import TreeArrays
    from mlx_specstream.models import streaming
    from mlx_specstream.models.cache import make_prompt_cache
    from mlx_specstream.models.fast_ops import decode_path, use_decode_path
    from mlx_specstream.models.msa import Rows
    from mlx_specstream.prompts import apply_chat_template, encode_prompt

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
    cache = make_prompt_cache(model)
    dec.prefill(model, ids, cache, 512)
    offset = cache[0].offset
    shape = TreeShape(budget=args.budget)
    plain_drafter = StreamDrafter(shape)
    try:  # decoding's drafter: reranked by the model's n-gram table, if it has one
        from mlx_specstream.decoding.defaults import stream_drafter

        drafter = stream_drafter(model, shape)
    except ImportError:
        drafter = plain_drafter

    def rollback():
        for c in cache:
            c.offset = offset

    def topk(states):
        logits = streaming.draft_logits(model, states)
        return topk_logprobs(logits, drafter.top_k, on_device=decode_path().device_topk)

    def node_streams(t, h_split, node):
        """The streams of ``node`` of the tree ``t`` just run (K/V in the cache)."""
        visible = mx.array(t.ancestor_mask[node])
        depth = mx.array(int(t.depths[node]))
        return streaming.node_streams(
            model, cache, t, visible, depth, h_split[node], decode_path()
        )

    # The tree: drafted from the streams of the last prompt token.
    root = Tree((ids[-1],), (-1,))
    pss = streaming.tree_pass(model, cache, root, [], 0.0, decode_path())
    h = node_streams(root, pss.h_split, 0)
    mx.eval(h)
    rollback()
    tree = drafter.draft(ids[-1], topk(h), ids)
    path = [0] + tree.children[0][:1]  # the root and its first child accepted
    history = list(ids)

    def plain():
        logits = streaming.step_logits(model, mx.array(ids[-1:]), cache, decode_path())
        mx.argmax(logits, axis=-1).item()
        rollback()

    state = {}

    def verify_pass(anchors_of=None):
        """The tree's pass (stream rows for ``anchors_of``'s nodes), its float32 LM
        head and the argmax on the host; the cache rolled back."""
        fresh = Tree(tree.tokens, tree.parents)  # no cached masks: as a new draft
        anchors = anchors_of(fresh) if anchors_of is not None else []
        pss = streaming.tree_pass(model, cache, fresh, anchors, 0.0, decode_path())
        argmax = np.array(mx.argmax(pss.logits, axis=-1))
        rollback()
        return pss, argmax

    def verify():
        pss, state["argmax"] = verify_pass()
        state["h_split"] = pss.h_split

    def stream():
        for c in cache:
            c.offset = offset + tree.size  # as after the verify pass
        s = node_streams(tree, state["h_split"], path[-1])
        state["streams"] = topk(s)
        for c in cache:
            c.compact(offset, path)
        mx.eval([c.keys for c in cache])
        rollback()

    def head():
        topk(h)

    likely = hasattr(Tree, "likely_anchors")  # older checkouts lack the pass

    def rows():
        if not likely:
            return 0.0
        verify_pass(lambda t: t.likely_anchors(4))

    def host():
        nxt = drafter.draft(tree.tokens[path[-1]], state["streams"], history)
        Rows.tree(nxt.ancestor_mask, nxt.depths, offset, model.streams)
        TreeArrays.of(nxt)  # what verification takes to the device

    def draft():
        drafter.draft(tree.tokens[path[-1]], state["streams"], history)

    def draft_plain():
        plain_drafter.draft(tree.tokens[path[-1]], state["streams"], history)

    def graph() -> float:
        """ms to build both graphs; they then run untimed, so nothing lazy is left
        in the cache for the next measurement."""
        tic = time.perf_counter()
        fresh = Tree(tree.tokens, tree.parents)
        pss = streaming.tree_pass(model, cache, fresh, [], 0.0, decode_path())
        out = [pss.logits]
        s = node_streams(fresh, pss.h_split, path[-1])
        out.append(streaming.draft_logits(model, s))
        for c in cache:
            c.compact(offset, path)
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
        f"γ={streaming.num_streams(model)}, {active_blas()}, device {mx.default_device()}"
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
