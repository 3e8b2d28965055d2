# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Pipelined speculative decoding: the host builds pass k + 1 while the device runs
pass k (``models/resident.py``).

The loop in ``decoder.py`` reads each pass back before it drafts the next tree on
the host, so the device idles while the host drafts and builds, and the host idles
while the device computes. Here drafting is on the device too: the tree has a
fixed shape (``resident_shape``: node i takes candidate ``rank[i]`` of stream
``depth[i]`` of the accepted node), verification (greedy or tree rejection
sampling) is on the device, and the cache offset advances on the device. The host
reads pass k's tokens after it has queued pass k + 1, one pass late, as
``mlx_lm.generate`` reads token k.

What it gives up: the tree's shape cannot follow the streams' confidence, and
there is no prompt lookup, n-gram reranking or logits processors (the loop in
``decoder.py`` has them). Greedy output is plain greedy output; sampled output has
plain sampling's distribution.
"""

from collections import Counter
from dataclasses import dataclass, replace
from typing import (
    Callable,
    Hashable,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..models import resident
from ..models.cache import as_prompt_cache
from ..models.fast_ops import KEY_BUCKET, Compiled, decode_path
from ..models.llama import Model
from ..sample_utils import SamplingArgs, log_softmax
from .decoder import ProgressCallback, Step, _begin
from .drafters import StreamTopK
from .state import state_of
from .tree import Tree, best_first_walk
from .verify import TreeArrays, greedy_verdict, sampled_verdict

# Prior probability that stream g + 1's rank-r candidate is right, given the path
# above it is: FIRST * DEPTH**g * RANK**r. A guess; it orders the fixed tree's
# nodes where the calibration fitted none (``fit_paths``) or too few.
FIRST, DEPTH, RANK = 0.45, 0.8, 0.35
# Tree nodes whose streams ride in each pass on the CPU (on a GPU: every node).
STREAMED_NODES = 4

# (γ, h) stream states of the accepted node (or, where it carried none, of its
# deepest streamed ancestor), (1,) its correction token, k -> (γ, k) int32
# candidate token ids per depth, most probable first (device arrays).
DeviceDrafter = Callable[[mx.array, mx.array, int], mx.array]


Paths = Sequence[Tuple[int, ...]]  # rank tuples below the root, parents first


def resident_shape(
    budget: int, num_streams: int, paths: Optional[Paths] = None
) -> Tree:
    """The fixed tree of ``budget`` nodes: the first ``budget - 1`` of ``paths``
    (``fit_paths``' order, e.g. from the calibration), then the most probable
    under the prior.

    Its ``tokens`` are ranks (node i is candidate ``tokens[i]`` of stream
    ``depths[i]``; the root's entry is unused)."""
    if budget < 1:
        raise ValueError(f"tree budget must be >= 1, got {budget}")
    K = max(1, budget - 1)
    ranks = np.arange(K)

    def children(path):
        g = len(path)
        return ranks, np.log(FIRST * DEPTH**g * RANK**ranks)

    chosen: List[Tuple[int, ...]] = []
    for p in list(paths or ()) + best_first_walk(children, budget, num_streams):
        p = tuple(int(r) for r in p)
        # Parents first, no repeats, within the streams.
        if len(chosen) == budget - 1:
            break
        if (
            0 < len(p) <= num_streams
            and p not in chosen
            and (len(p) == 1 or p[:-1] in chosen)
        ):
            chosen.append(p)
    return Tree.from_paths(0, chosen)


def fit_paths(
    samples: Iterable[Tuple[StreamTopK, Sequence[int], int]], max_nodes: int = 31
) -> List[Tuple[int, ...]]:
    """The rank paths that most often match a greedy answer, most often first
    (Medusa's sparse tree): for ``(candidates (L, γ, k), sequence, start)`` each
    root position r of the answer, stream g's candidates at r - 1 are scored
    against token r + 1 + g. A fixed tree's expected accepted drafts are the sum
    of its nodes' match rates, so the best tree of B nodes is the first B - 1."""
    counts: Counter = Counter()
    for cands, seq, start in samples:
        for r in range(max(1, start), len(seq) - 1):
            path: Tuple[int, ...] = ()
            for g, row in enumerate(cands.tokens[r - 1]):
                if r + 1 + g >= len(seq):
                    break
                hit = np.flatnonzero(row == seq[r + 1 + g])
                if not hit.size:
                    break
                path += (int(hit[0]),)
                counts[path] += 1
    # A parent matches at least as often as its child: shorter first on a tie.
    return sorted(counts, key=lambda p: (-counts[p], len(p), p))[:max_nodes]


@dataclass
class _Pass:
    """One queued pass (lazy arrays)."""

    size: int  # tree nodes
    read: mx.array  # (T + 2,) int32: the path's tokens, its length, the correction
    logits: mx.array  # (T, V) float32: the path nodes' logits, in path order
    root: mx.array  # (1,) int32: the next tree's root (this pass's correction)
    candidates: mx.array  # (γ, K) int32 token ids, most probable first
    offset: mx.array  # (1,) int32: the cache length after this pass


class _Layout:
    """A fixed tree shape as the pass needs it, on the host and the device."""

    def __init__(self, tree: Tree, top_k: int, num_streams: int, streamed: int):
        self.tree = tree
        self.size, self.depth = tree.size, int(tree.depths.max())
        self.arrays = TreeArrays.of(tree)
        nodes = self.streamed = tuple(likely_anchors(tree, streamed))
        self.shape = resident.ShapeArrays.of(
            tree.depths, tree.ancestor_mask, nodes, num_streams
        )
        self.stream_rows = len(nodes) * num_streams
        # (T - 1,): where each non-root node's token sits in the (γ, K) candidates.
        where = (tree.depths[1:] - 1) * top_k + np.array(tree.tokens[1:])
        self.picks = mx.array(where.astype(np.int32))


def likely_anchors(tree: Tree, n: int) -> List[int]:
    """The ``n`` nodes of a tree of ranks most likely to end the accepted path
    under the prior (a node's match chance less its children's), the root first:
    the nodes whose streams ride in the verification pass."""
    match = np.ones(tree.size)
    for i in range(1, tree.size):
        g = tree.depths[i] - 1  # the stream that drafted node i
        match[i] = match[tree.parents[i]] * FIRST * DEPTH**g * RANK ** tree.tokens[i]
    end = match.copy()
    for i in range(1, tree.size):
        end[tree.parents[i]] -= match[i]
    order = [0] + [int(i) for i in np.argsort(-end[1:], kind="stable") + 1]
    return sorted(order[: max(1, n)])


def resident_generate_step(
    prompt: Sequence[int],
    model: Model,
    budget: int = 16,
    max_tokens: int = -1,
    sampling: SamplingArgs = SamplingArgs(),
    prefill_step_size: int = 512,
    prompt_cache: Optional[list] = None,
    *,
    prompt_progress_callback: Optional[ProgressCallback] = None,
    draft: Optional[DeviceDrafter] = None,
    paths: Optional[Paths] = None,
    streamed: Optional[int] = None,
) -> Iterator[Step]:
    """Speculative Streaming with a fixed ``budget``-node tree, pipelined.

    Yields one ``Step`` per pass, as ``speculative_generate_step`` does, and keeps
    the same cache contract: at each yield the cache records every emitted token
    and has fed all but the last.

    Args:
        sampling: greedy, or the distribution trees are verified against by tree
            rejection sampling (no XTC).
        draft: where the candidates come from (default: the streams' top-k on
            the draft vocabulary); it must stay on the device.
        paths: the tree's rank paths, best first (``fit_paths``; default: the
            prior's).
        streamed: how many tree nodes carry their streams in the pass (the
            most likely to be accepted, ``likely_anchors``; default: all on the
            "gpu" decode path, ``STREAMED_NODES`` on the CPU). Where the accepted
            node carried none, its deepest streamed ancestor drafts.
    """
    if not resident.supported(model):
        raise ValueError(
            "pipelined decoding does not serve sliding-window attention "
            f"({model.model_type}): use speculative_generate_step"
        )
    if not sampling.tree_exact:
        raise ValueError("XTC sampling cannot verify a draft tree: decode plainly")
    cache = as_prompt_cache(model, prompt_cache)
    path = decode_path()
    total = _begin(
        model, prompt, cache, prefill_step_size, prompt_progress_callback, path
    )
    if max_tokens == 0:  # as speculative_generate_step: prefilled, nothing drafted
        return
    g = model.streams.args.num_streams
    tree = resident_shape(budget, g, paths)
    top_k = max(1, max(tree.tokens[1:], default=0) + 1)
    if streamed is None:  # a GPU's rows are cheap; this CPU pays for each
        streamed = tree.size if path.name == "gpu" else STREAMED_NODES
    lone = _Layout(Tree((0,), (-1,)), top_k, g, 1)
    full = _Layout(tree, top_k, g, streamed)
    vocab = mx.zeros((1,), mx.int32)  # unused where the streams draft from all
    if draft is None:
        if model.draft_vocab is not None:
            vocab = mx.array(model.draft_vocab)
        draw = _stream_top_k(model, model.draft_vocab is not None)
    else:
        custom = draft

        def draw(states, correction, k, vocab, shift):
            return custom(states, correction, k)

    first = _tree_pass(model, lone, sampling, draw, top_k, path)
    full_pass = _tree_pass(model, full, sampling, draw, top_k, path)
    if draft is None:  # traced once per key-slot count, kept for later generations
        head = model.draft_head()  # sliced before tracing: traces read it as is
        key = (full.tree, full.streamed, top_k, sampling, path, id(head))
        step = _cached(model, key, lambda: _compile(full_pass, sampling))
    else:  # a caller's drafter: traced for this generation only
        step = _compile(full_pass, sampling)

    def queue(layout: _Layout, root, candidates, offset, num_keys: int) -> _Pass:
        resident.reserve(cache, num_keys)
        buffers = [(c.keys, c.values) for c in cache]
        # The first pass runs eagerly: it may allocate the buffers (keys None).
        run = first if layout is lone else step
        outs, buffers = run(root, candidates, offset, _slots(num_keys), vocab, buffers)
        for c, (k, v) in zip(cache, buffers):
            c.keys, c.values = k, v
        read, nxt, after, logits = outs
        p = _Pass(layout.size, read, logits, read[-1:], nxt, after)
        mx.async_eval(p.read, p.candidates, p.offset)
        return p

    def keys_for(known: int, before: _Layout, layout: _Layout) -> int:
        # The next pass starts at most `before.depth + 1` slots past `known`.
        need = known + before.depth + 1 + layout.size + layout.stream_rows
        return -(-need // KEY_BUCKET) * KEY_BUCKET

    known = cache[0].offset  # the cache length before the pending pass
    root = mx.array(cache.tokens[-1:], mx.int32)
    pending = queue(
        lone,
        root,
        mx.zeros((g, top_k), mx.int32),  # unused by a one-node tree
        mx.array([known], mx.int32),
        keys_for(known, lone, lone),
    )
    layout_of_pending = lone
    emitted = 0
    while True:
        nxt = queue(
            full,
            pending.root,
            pending.candidates,
            pending.offset,
            keys_for(known, layout_of_pending, full),
        )
        read = np.array(pending.read)  # host sync: the pending pass only
        T = pending.size
        n, correction = int(read[T]), int(read[T + 1])
        tokens = [int(t) for t in read[1:n]] + [correction]
        if max_tokens >= 0:
            tokens = tokens[: max_tokens - emitted]
        known += len(tokens)
        for c in cache:
            c.offset = known
        cache.tokens.extend(tokens)  # the last stays pending: the next root
        if emitted == 0 and prompt_progress_callback is not None:
            prompt_progress_callback(total, total)
        emitted += len(tokens)
        logprobs = log_softmax(pending.logits[: len(tokens)])
        yield Step(tokens, T, T, len(tokens) - 1, logprobs, 1)
        if 0 <= max_tokens <= emitted:
            return
        pending, layout_of_pending = nxt, full


class _Buffers:
    """A layer cache inside a traced pass: its K/V buffers as plain arrays."""

    def __init__(self, keys: Optional[mx.array], values: Optional[mx.array]):
        self.keys, self.values = keys, values


_SLOTS: dict = {}


def _slots(n: int) -> mx.array:
    """(n,) arange: its length tells a traced pass how many key slots rows see."""
    if n not in _SLOTS:
        _SLOTS[n] = mx.arange(n, dtype=mx.int32)
        mx.eval(_SLOTS[n])  # evaluated here: any thread's stream may read it
    return _SLOTS[n]


def _tree_pass(
    model: Model,
    layout: _Layout,
    sampling: SamplingArgs,
    draft: DeviceDrafter,
    top_k: int,
    path,
) -> Callable:
    """One pass over ``layout``'s tree as a function of arrays only (so that
    ``mx.compile`` can trace it): the root (1,), the previous candidates
    (γ, K), the cache offset (1,), the key slots (P,), the draft vocabulary and
    each layer's (keys, values) buffers -> ((the read (T + 2,), next candidates,
    the next offset, the path's logits), the updated buffers)."""

    def run(root, candidates, offset, slots, vocab, buffers):
        cache = [_Buffers(k, v) for k, v in buffers]
        num_keys = slots.shape[0]
        if layout.size == 1:
            tokens = root
        else:  # (T,): the root, then each node's candidate
            tokens = mx.concatenate([root, candidates.reshape(-1)[layout.picks]])
        logits, states = resident.fused_pass(
            model, cache, tokens, layout.shape, offset, num_keys, path
        )
        arrays = replace(layout.arrays, tokens=tokens)
        if sampling.greedy:
            v = greedy_verdict(arrays, logits)
        else:
            v = sampled_verdict(arrays, logits, sampling)
        # The accepted node's streams, or its deepest streamed ancestor's, whose
        # stream j + shift drafts what the node's stream j would.
        nodes = layout.shape.streamed
        depth = layout.shape.depths[nodes]
        on_path = layout.shape.ancestors[v.anchor][nodes]
        best = mx.argmax(mx.where(on_path, depth, -1))
        shift = layout.shape.depths[v.anchor] - depth[best]
        nxt = draft(states[best], v.correction[None], top_k, vocab, shift)
        resident.compact(cache, offset, v.order[: layout.depth + 1])
        read = mx.concatenate([tokens[v.order], v.length[None], v.correction[None]])
        outs = (read, nxt, offset + v.length, v.logits)
        return outs, [(c.keys, c.values) for c in cache]

    return run


def _compile(run: Callable, sampling: SamplingArgs) -> Compiled:
    """``run`` compiled (a sampled pass draws from and advances MLX's random
    state); where this MLX cannot compile, ``run`` itself. The weights are
    constants of the trace: ``_cached`` drops traces of replaced weights."""
    return Compiled(run, [] if sampling.greedy else [mx.random.state])


def _cached(model: Model, key: Hashable, make: Callable[[], Callable]) -> Callable:
    """The model's compiled pass for ``key``, made once for its current weights
    (a trace holds the weights it was traced with: new weights, new traces)."""
    weights = tuple(id(v) for _, v in tree_flatten(model.parameters()))
    passes = state_of(model).compiled_passes
    if passes.get("weights") != weights:
        passes.clear()
        passes["weights"] = weights
    if key not in passes:
        passes[key] = make()
    return passes[key]


def _stream_top_k(model: Model, has_vocab: bool) -> Callable:
    """The default drafter: each stream's top-k over the draft vocabulary."""

    def draft(states, correction, k, vocab, shift):
        top = _top_k(model.stream_logits(states), k, vocab if has_vocab else None)
        g = top.shape[0]  # (γ, k): row j from stream j + shift (the last repeats)
        return top[mx.clip(mx.arange(g) + shift, 0, g - 1)]

    return draft


def _top_k(logits: mx.array, k: int, vocab: Optional[mx.array]) -> mx.array:
    """(γ, K') logits -> (γ, k) token ids, most probable first (on the device)."""
    k = min(k, logits.shape[-1])
    idx = mx.argpartition(-logits, k - 1, axis=-1)[:, :k]
    order = mx.argsort(-mx.take_along_axis(logits, idx, axis=-1), axis=-1)
    idx = mx.take_along_axis(idx, order, axis=-1).astype(mx.int32)
    return idx if vocab is None else vocab[idx]
