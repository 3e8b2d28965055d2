# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Speculative Streaming decoding loop (arXiv 2402.11131 §3.2.2, App. A.1).

Prefill runs the prompt with streams at its last position. Each later step is one
forward pass over the flattened draft tree: the lower layers, optional pruning at
layer l by early-exit transition probability, then the top Ns layers with γ stream
rows per surviving node. Main logits verify the tree; the accepted path's K/V are
compacted into contiguous cache slots; the last accepted node gives the correction
token (the next root) and, through its streams, the next draft.

With ``stream_pass="accepted"`` the verify pass carries no stream rows; instead the
accepted node's γ streams run alone through the top Ns layers after compaction. That
trades a short extra pass for T·γ fewer rows, which pays off where rows are costly.
``stream_pass="likely"`` sits between them: stream rows ride in the verify pass for
the few nodes most likely to end the accepted path (``Tree.likely_anchors``), and
only when another node ends it do its streams run after the pass.

Both loops continue a ``PromptCache``: it records the conversation, and the token
the previous call left unfed is fed before the new prompt. mlx-lm logits processors
see the conversation at every row they process: in a tree, each node's own path.
"""

from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence

import mlx.core as mx
import numpy as np

from .drafters import Drafter, LookupWatch, StreamTopK, lookup_of, topk_logprobs
from .models.cache import PromptCache, as_prompt_cache
from .models.llama import Model
from .models.msa import Rows
from .sample_utils import (
    LogitsProcessor,
    Sampler,
    SamplingArgs,
    accept_greedy,
    accept_sampled,
    apply_logits_processors,
    known_sampler,
    log_softmax,
    target_logprobs,
)
from .tree import Tree

ProgressCallback = Callable[[int, int], None]


# "tree": stream rows for every node in the verify pass (the paper's layout);
# "accepted": the accepted node's streams alone, after the pass; "likely": rows for
# the likeliest anchors in the pass, the accepted node's after it on a miss.
STREAM_PASSES = ("tree", "accepted", "likely")


@dataclass(frozen=True)
class DecodeOptions:
    """Runtime knobs of the speculative loop."""

    prune_threshold: float = 0.0
    stream_pass: str = "tree"  # one of STREAM_PASSES
    prefill_step_size: int = 512
    likely_anchors: int = 4  # "likely": nodes given stream rows in the verify pass
    # A step's cost relative to a plain step (the calibration's c(T)); when set, a
    # run still below that many tokens per pass after ``fallback_after`` tree passes
    # (the first pass, a lone root, not counted) decodes plainly: speculation that
    # does not pay is dropped, until prompt lookup says it may pay again (below). After 4 passes, the 8-node default
    # dropped chat prompts on which it ran 1.16x plain (bench, 2026-12-06).
    fallback_cost: float = 0.0
    fallback_after: int = 8
    # After a fallback, speculation resumes once the run's prompt lookup would have
    # drafted 2+ correct tokens at ``resume_hits`` of the last ``resume_window`` plain
    # tokens (0: never resume); a resumed stretch is judged as above, on its own.
    resume_hits: int = 2
    resume_window: int = 16

    def __post_init__(self):
        if self.stream_pass not in STREAM_PASSES:
            raise ValueError(
                f"stream_pass must be one of {', '.join(map(repr, STREAM_PASSES))}, "
                f"got {self.stream_pass!r}"
            )
        if self.likely_anchors < 1:
            raise ValueError(f"likely_anchors must be >= 1, got {self.likely_anchors}")
        if self.resume_hits < 0 or self.resume_window < self.resume_hits:
            raise ValueError(
                "resume_hits must be in [0, resume_window], got "
                f"{self.resume_hits} of {self.resume_window}"
            )
        if self.fallback_cost < 0 or self.fallback_after < 1:
            raise ValueError(
                "fallback_cost must be >= 0 and fallback_after >= 1, got "
                f"{self.fallback_cost} and {self.fallback_after}"
            )
        if not 0.0 <= self.prune_threshold < 1.0:
            raise ValueError(
                f"prune_threshold must be in [0, 1), got {self.prune_threshold}"
            )


@dataclass
class Step:
    """What one forward pass produced."""

    tokens: List[int]  # accepted draft tokens, then the correction token
    tree_size: int  # nodes drafted (root included)
    verified: int  # nodes that reached the top layers (after pruning)
    accepted: int  # draft tokens accepted (len(tokens) - 1)
    # (len(tokens), V) float32: row k is the log-softmax of the (processed) logits
    # token k was drawn from. Lazy: computed only if read.
    logprobs: Optional[mx.array] = None


def prefill(
    model: Model,
    tokens: Sequence[int],
    cache: list,
    step_size: int,
    progress: Optional[ProgressCallback] = None,
) -> None:
    """Run all but the last token through every layer, in chunks.

    Args:
        progress: called with ``(tokens processed, len(tokens))`` after each chunk.
    """
    for s in range(0, len(tokens) - 1, step_size):
        e = min(s + step_size, len(tokens) - 1)
        rows = Rows.causal(e - s, cache[0].offset, model.streams)
        model.run_layers(
            model.embed(mx.array(tokens[s:e])), rows, cache, 0, len(model.layers)
        )
        mx.eval([c.keys for c in cache])
        if progress is not None:
            progress(e, len(tokens))


def _begin(
    model: Model,
    prompt: Sequence[int],
    cache: PromptCache,
    step_size: int,
    progress: Optional[ProgressCallback],
) -> int:
    """Feed the cache's pending tokens and all of ``prompt`` but its last token.

    Returns:
        How many tokens this call processes (for ``progress``).
    """
    if not prompt:
        raise ValueError("prompt is empty: give at least one token")
    cache.sync()
    todo = cache.tokens[cache.fed :] + list(prompt)
    if progress is not None:
        progress(0, len(todo))
    prefill(model, todo, cache, step_size, progress)
    # Recorded once fed: a prefill stopped midway leaves rows that `sync` drops.
    cache.tokens.extend(int(t) for t in prompt)
    cache.pending = 1
    return len(todo)


def plain_generate_step(
    prompt: Sequence[int],
    model: Model,
    sampler: Sampler = SamplingArgs(),
    prefill_step_size: int = 512,
    prompt_cache: Optional[list] = None,
    *,
    logits_processors: Optional[Sequence[LogitsProcessor]] = None,
    prompt_progress_callback: Optional[ProgressCallback] = None,
) -> Iterator[Step]:
    """Plain autoregressive decoding with the same model and cache code (the oracle).

    Args:
        prompt: the new tokens (the cache's conversation comes before them).
        sampler: ``SamplingArgs`` or any mlx-lm sampler ``(1, V) log-probs -> (1,)``.
        prompt_cache: a ``PromptCache`` to continue and fill (default: a new one).
        logits_processors: mlx-lm processors, given the whole conversation so far.

    Yields:
        One one-token ``Step`` per forward pass, forever; the caller stops it. At
        each yield the cache holds (and has fed) every token yielded.
    """
    cache = as_prompt_cache(model, prompt_cache)
    total = _begin(model, prompt, cache, prefill_step_size, prompt_progress_callback)
    done = None
    if prompt_progress_callback is not None:
        done = lambda: prompt_progress_callback(total, total)  # noqa: E731
    yield from _plain_steps(model, cache, sampler, logits_processors, done)


def _plain_steps(
    model: Model,
    cache: PromptCache,
    sampler: Sampler,
    logits_processors: Optional[Sequence[LogitsProcessor]],
    on_first: Optional[Callable[[], None]] = None,
    resume: Optional[Callable[[List[int]], bool]] = None,
) -> Iterator[Step]:
    """Plain decoding steps from a cache whose last token is not fed yet.

    Args:
        resume: asked with the conversation before each next step is built; once
            it returns True, the token in hand is yielded unfed (the cache's pending
            token, as after a speculative step) and the steps end.
    """
    known = known_sampler(sampler)
    greedy = known is not None and known.greedy
    context = mx.array(cache.tokens) if logits_processors else None

    def _step(y: mx.array) -> tuple:
        rows = Rows.causal(1, cache[0].offset, model.streams)
        h = model.run_layers(model.embed(y), rows, cache, 0, len(model.layers))
        logits = model.logits(h[0], float32=True)  # (1, V), as verification's
        if logits_processors:
            logits = apply_logits_processors(logits_processors, [context], logits)
        logprobs = log_softmax(logits)
        # Greedy takes the argmax of the logits, as tree verification does.
        return (mx.argmax(logits, axis=-1) if greedy else sampler(logprobs)), logprobs

    y, logprobs = _step(mx.array(cache.tokens[-1:]))
    mx.async_eval(y)
    first = True
    while True:
        if resume is not None and resume(cache.tokens):
            cache.tokens.append(y.item())  # host sync; stays pending
            cache.pending = 1
            yield Step([cache.tokens[-1]], 1, 1, 0, logprobs)
            return
        if logits_processors:
            context = mx.concatenate([context, y.astype(context.dtype)])
        # Build the next step while this one computes (as mlx-lm does); it feeds y.
        next_y, next_logprobs = _step(y)
        mx.async_eval(next_y)
        token = y.item()  # host sync
        if first and on_first is not None:
            on_first()
        first = False
        cache.tokens.append(token)
        cache.pending = 0
        yield Step([token], 1, 1, 0, logprobs)
        y, logprobs = next_y, next_logprobs


def generate_step(
    prompt: Sequence[int],
    model: Model,
    sampling: Sampler = SamplingArgs(),
    prefill_step_size: int = 512,
    prompt_cache: Optional[list] = None,
) -> Iterator[int]:
    """``plain_generate_step``'s token ids alone: one per forward pass, forever."""
    for step in plain_generate_step(
        prompt, model, sampling, prefill_step_size, prompt_cache
    ):
        yield step.tokens[0]


def _node_histories(context: mx.array, tree: Tree) -> List[mx.array]:
    """Each node's history: the context (ending with the root), then the node's
    ancestors below the root and the node itself."""
    out = []
    for i in range(tree.size):
        below = [tree.tokens[j] for j in tree.path(i)[1:]]
        out.append(
            mx.concatenate([context, mx.array(below, context.dtype)])
            if below
            else context
        )
    return out


class _Verifier:
    """Turns main logits at the tree nodes into an accepted path and correction."""

    def __init__(
        self, sampling: SamplingArgs, processors: Optional[Sequence[LogitsProcessor]]
    ):
        if not sampling.tree_exact:
            raise ValueError(
                "XTC sampling cannot verify a draft tree: decode plainly "
                "(speculative=False)"
            )
        self.sampling = sampling
        self.processors = processors
        # Host RNG for rejection sampling, seeded from MLX's so mx.random.seed works.
        self.rng = np.random.default_rng(
            int(mx.random.randint(0, 2**31 - 1, ()).item())
        )

    def __call__(self, tree: Tree, logits: mx.array, history: List[int]) -> tuple:
        """``(path, correction, logprobs (len(path), V))`` for (T, V) node logits;
        ``history`` is the conversation up to the root."""
        if self.processors:
            nodes = _node_histories(mx.array(history), tree)
            logits = apply_logits_processors(self.processors, nodes, logits)
        logprobs = log_softmax(logits)
        if self.sampling.greedy:
            path, correction = accept_greedy(tree, np.array(mx.argmax(logits, axis=-1)))
        else:
            probs = mx.exp(target_logprobs(logprobs, self.sampling))
            path, correction = accept_sampled(tree, np.array(probs), self.rng)
        return path, correction, logprobs[mx.array(path)]


def _stream_topk(model: Model, h_streams: mx.array, k: int) -> StreamTopK:
    """(γ, h) stream states of the accepted node -> top-k candidates per stream
    (over the model's draft vocabulary where it has one)."""
    return topk_logprobs(model.stream_logits(h_streams), k, model.draft_vocab)


def _prune(model: Model, tree: Tree, h_split: mx.array, threshold: float) -> List[int]:
    """Nodes kept after dropping children with early-exit probability < threshold."""
    if threshold <= 0 or tree.size == 1:
        return list(range(tree.size))
    lp = model.early_exit(h_split).astype(mx.float32)
    lp = lp - mx.logsumexp(lp, axis=-1, keepdims=True)
    parents = mx.array(tree.parents[1:])
    trans = np.array(mx.exp(lp[parents, mx.array(tree.tokens[1:])]))  # host sync
    keep = [0]
    alive = np.zeros(tree.size, bool)
    alive[0] = True
    for i in range(1, tree.size):
        alive[i] = alive[tree.parents[i]] and trans[i - 1] >= threshold
        if alive[i]:
            keep.append(i)
    return keep


def speculative_generate_step(
    prompt: Sequence[int],
    model: Model,
    drafter: Drafter,
    sampling: SamplingArgs = SamplingArgs(),
    options: DecodeOptions = DecodeOptions(),
    max_tokens: int = -1,
    prompt_cache: Optional[list] = None,
    *,
    logits_processors: Optional[Sequence[LogitsProcessor]] = None,
    prompt_progress_callback: Optional[ProgressCallback] = None,
) -> Iterator[Step]:
    """Speculative Streaming decoding; yields one ``Step`` per forward pass.

    Args:
        prompt: the new tokens (the cache's conversation comes before them).
        sampling: greedy, or a sampler whose distribution the tree is verified
            against (no XTC).
        max_tokens: stop after this many tokens (-1: never); trees are cut so that
            no pass drafts past it.
        prompt_cache: a ``PromptCache`` to continue and fill (default: a new one);
            after each step it records every emitted token and has fed all but
            the last (the next tree's root).
        logits_processors: mlx-lm processors, applied at every tree node with that
            node's own history (conversation, the node's ancestors, the node).
        prompt_progress_callback: ``(processed, total)`` during prefill.
    """
    cache = as_prompt_cache(model, prompt_cache)
    verify = _Verifier(sampling, logits_processors)
    total = _begin(
        model, prompt, cache, options.prefill_step_size, prompt_progress_callback
    )
    heads = getattr(drafter, "candidates", None)  # drafters with their own heads
    run_streams = drafter.top_k > 0 and heads is None
    anchors_of = _anchor_choice(options) if run_streams else None

    lookup = lookup_of(drafter) if options.resume_hits else None
    # The last prompt token is a one-node tree whose streams draft the first tree.
    tree = Tree((cache.tokens[-1],), (-1,))
    emitted = 0
    stretch = [0, 0]  # tokens and passes since speculation (re)started
    while max_tokens < 0 or emitted < max_tokens:
        offset = cache[0].offset
        p = _forward_tree(model, cache, tree, options.prune_threshold, anchors_of)
        T = p.tree.size
        path, correction, logprobs = verify(
            p.tree, model.logits(p.h_top[0, :T], float32=True), cache.tokens
        )  # host sync
        # Keep the accepted path's K/V: tree rows below layer l, verified rows above.
        lower = [p.kept[n] for n in path]
        for i, c in enumerate(cache):
            c.compact(offset, lower if i < model.split else path)
        tokens = [p.tree.tokens[n] for n in path[1:]] + [correction]
        cache.tokens.extend(tokens)  # the correction stays pending: the next root
        if emitted == 0 and prompt_progress_callback is not None:
            prompt_progress_callback(total, total)
        anchor = path[-1]
        if heads is not None:  # e.g. Medusa: heads on the accepted node's final state
            streams = heads(model.model.norm(p.h_top[0, anchor]))
        elif anchor in p.anchors:  # its stream rows rode in the verify pass
            g, a = model.streams.args.num_streams, p.anchors.index(anchor)
            streams = _stream_topk(
                model, p.h_top[0, T + a * g : T + (a + 1) * g], drafter.top_k
            )
        elif run_streams:
            s = _streams_after_compaction(
                model, cache, p.h_split[0, anchor], offset + len(path) - 1
            )
            streams = _stream_topk(model, s, drafter.top_k)
        else:
            streams = None
        emitted += len(tokens)
        stretch = [stretch[0] + len(tokens), stretch[1] + 1]
        yield Step(tokens, tree.size, T, len(tokens) - 1, logprobs)
        if (
            options.fallback_cost > 0
            and stretch[1] > options.fallback_after
            and stretch[0] - 1 < options.fallback_cost * (stretch[1] - 1)
        ):  # slower than plain decoding so far: decode plainly, maybe resume
            watch = None
            if lookup is not None:
                watch = LookupWatch(lookup, options.resume_hits, options.resume_window)
            for step in _plain_steps(
                model, cache, sampling, logits_processors, resume=watch
            ):
                if 0 <= max_tokens <= emitted:
                    return
                emitted += 1
                yield step
            if watch is None:
                return
            # The watch ended plain decoding: its last token is the next root.
            tree, stretch = Tree((cache.tokens[-1],), (-1,)), [0, 0]
            continue
        tree = drafter.draft(correction, streams, cache.tokens)
        if max_tokens >= 0:
            tree = tree.within(max_tokens - emitted)


@dataclass
class _Pass:
    """One verify pass: the verified (pruned) tree and the hidden states it left."""

    tree: Tree
    kept: List[int]  # index in the drafted tree of each verified node
    h_split: mx.array  # (1, T, h) main states entering layer l
    h_top: mx.array  # (1, T + A * γ, h) top-layer states, main rows first
    anchors: List[int]  # the A verified nodes whose stream rows follow the main rows


AnchorChoice = Callable[[Tree], List[int]]


def _anchor_choice(options: DecodeOptions) -> Optional[AnchorChoice]:
    """Which verified nodes get stream rows in the verify pass (None: none, the
    "accepted" pass)."""
    if options.stream_pass == "tree":
        return lambda tree: list(range(tree.size))
    if options.stream_pass == "likely":
        return lambda tree: tree.likely_anchors(options.likely_anchors)
    return None


def _forward_tree(
    model: Model,
    cache: list,
    tree: Tree,
    prune_threshold: float,
    anchors_of: Optional[AnchorChoice],
) -> _Pass:
    """Lower layers, pruning at layer l, stream insertion, top layers.

    Args:
        anchors_of: picks the nodes of the (pruned) tree that get γ stream rows in
            the top layers; None: no stream rows.
    """
    offset = cache[0].offset
    if tree.size == 1:
        # A lone root (the first pass after prefill, or a pass with nothing drafted)
        # runs exactly as a plain decoding step: the same kernels, so in low
        # precision the same rounding (a tree mask and per-row RoPE round otherwise).
        rows = Rows.causal(1, offset, model.streams)
    else:
        rows = Rows.tree(tree.ancestor_mask, tree.depths, offset, model.streams)
    h = model.run_layers(
        model.embed(mx.array(tree.tokens)), rows, cache, 0, model.split
    )
    kept = _prune(model, tree, h[0], prune_threshold)
    if len(kept) < tree.size:  # pruned rows skip the top layers
        tree, h = tree.keep(kept), h[:, mx.array(kept)]
        rows = Rows.tree(tree.ancestor_mask, tree.depths, offset, model.streams)
    h_split = h
    anchors = anchors_of(tree) if anchors_of is not None else []
    if anchors:
        rows = rows.with_streams(anchors)
        a = h[0] if len(anchors) == tree.size else h[0, mx.array(anchors)]
        s = model.streams.insert_streams(a).reshape(1, -1, h.shape[-1])  # (1, A*γ, h)
        h = mx.concatenate([h, s], axis=1)
    return _Pass(
        tree,
        kept,
        h_split,
        model.run_layers(h, rows, cache, model.split, len(model.layers)),
        anchors,
    )


def _streams_after_compaction(
    model: Model, cache: list, h_anchor: mx.array, position: int
) -> mx.array:
    """Run the accepted node's γ streams alone through the top layers, (γ, h)."""
    s = model.streams.insert_streams(h_anchor[None])  # (1, γ, h)
    rows = Rows.streams_only(cache[0].offset, position, model.streams)
    out = model.run_layers(s, rows, cache, model.split, len(model.layers))
    return out[0]
