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

Each pass reads back to the host once: verification, the next draft's stream pass
(the accepted node's, queued behind verification on the device) and its top-k are
evaluated together (``Step.host_reads``). Only a "likely" pass whose accepted node
is not among its anchors, and Medusa-free drafters aside, reads a second time.

Both loops continue a ``PromptCache``: it records the conversation, and the token
the previous call left unfed is fed before the new prompt. mlx-lm logits processors
see the conversation at every row they process: in a tree, each node's own path.
"""

from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence

import mlx.core as mx
import numpy as np

from ..models import streaming
from ..models.cache import PromptCache, as_prompt_cache
from ..models.fast_ops import DecodePath, decode_path
from ..models.llama import Model
from ..sample_utils import (
    LogitsProcessor,
    Sampler,
    SamplingArgs,
    apply_logits_processors,
    known_sampler,
    log_softmax,
)
from .drafters import Drafter, LookupWatch, lookup_of, topk_finish, topk_queue
from .tree import Tree
from .verify import TreeVerifier

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
    host_reads: int = 1  # times this pass waited for the device and read back


def prefill(
    model: Model,
    tokens: Sequence[int],
    cache: list,
    step_size: int,
    progress: Optional[ProgressCallback] = None,
    path: Optional[DecodePath] = None,
) -> None:
    """Run all but the last token through every layer, in chunks.

    Args:
        progress: called with ``(tokens processed, len(tokens))`` after each chunk.
        path: the kernels (None: the device's).
    """
    path = path or decode_path()
    for s in range(0, len(tokens) - 1, step_size):
        e = min(s + step_size, len(tokens) - 1)
        streaming.prefill(model, tokens[s:e], cache, path)
        mx.eval([c.keys for c in cache])
        if progress is not None:
            progress(e, len(tokens))


def _begin(
    model: Model,
    prompt: Sequence[int],
    cache: PromptCache,
    step_size: int,
    progress: Optional[ProgressCallback],
    path: DecodePath,
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
    prefill(model, todo, cache, step_size, progress, path)
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
    path = decode_path()  # once per generation
    total = _begin(
        model, prompt, cache, prefill_step_size, prompt_progress_callback, path
    )
    done = None
    if prompt_progress_callback is not None:
        done = lambda: prompt_progress_callback(total, total)  # noqa: E731
    yield from _plain_steps(model, cache, sampler, logits_processors, path, done)


def _plain_steps(
    model: Model,
    cache: PromptCache,
    sampler: Sampler,
    logits_processors: Optional[Sequence[LogitsProcessor]],
    path: DecodePath,
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
        logits = streaming.step_logits(model, y, cache, path)  # (1, V) float32
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
    verify = TreeVerifier(sampling, logits_processors)
    path = decode_path()  # once per generation
    total = _begin(
        model, prompt, cache, options.prefill_step_size, prompt_progress_callback, path
    )
    heads = getattr(drafter, "head_logits", None)  # drafters with their own heads
    run_streams = drafter.top_k > 0 and heads is None
    anchors_of = _anchor_choice(options) if run_streams else None
    drafts = _Drafts(model, drafter.top_k, path)

    lookup = lookup_of(drafter) if options.resume_hits else None
    # The last prompt token is a one-node tree whose streams draft the first tree.
    tree = Tree((cache.tokens[-1],), (-1,))
    emitted = 0
    stretch = [0, 0]  # tokens and passes since speculation (re)started
    while max_tokens < 0 or emitted < max_tokens:
        start = cache[0].offset
        anchors = anchors_of(tree) if anchors_of is not None else []
        p = streaming.tree_pass(
            model, cache, tree, anchors, options.prune_threshold, path
        )
        v = verify(tree, p.logits, cache.tokens, p.keep)
        # The next draft's candidates, queued behind verification on the device.
        hit = mx.array(True)
        if heads is not None:  # e.g. Medusa: heads on the accepted node's final state
            queued = drafts.queue(
                heads(streaming.final_states(model, p.h_top[v.anchor]))
            )
        elif anchors:  # its stream rows ride in the verify pass, if it is an anchor
            states, hit = _anchor_states(p.stream_states, v.anchor, anchors, drafts.g)
            queued = drafts.queue(streaming.draft_logits(model, states))
        elif run_streams:  # "accepted": its streams after the pass
            states = streaming.node_streams(
                model, cache, tree, v.visible, v.depth, p.h_split[v.anchor], path
            )
            queued = drafts.queue(streaming.draft_logits(model, states))
        else:
            queued = []
        kept = p.keep.sum() if p.keep is not None else mx.array(tree.size)
        facts = mx.stack([v.length, v.correction, kept.astype(mx.int32), hit])
        order, facts, *candidates = _read([v.order, facts, *queued])  # host sync
        n, correction, verified, hit = (int(x) for x in facts)
        nodes = order[:n].tolist()
        reads = 1
        if not hit:  # "likely" missed: the accepted node's streams, after all
            anchor = nodes[-1]
            states = streaming.node_streams(
                model,
                cache,
                tree,
                mx.array(tree.ancestor_mask[anchor]),
                mx.array(n - 1),
                p.h_split[anchor],
                path,
            )
            candidates = _read(drafts.queue(streaming.draft_logits(model, states)))
            reads += 1
        # Keep the accepted path's K/V, and copy them while the host drafts.
        for c in cache:
            c.compact(start, nodes)
        mx.async_eval([c.keys for c in cache] + [c.values for c in cache])
        tokens = [tree.tokens[i] for i in nodes[1:]] + [correction]
        cache.tokens.extend(tokens)  # the correction stays pending: the next root
        if emitted == 0 and prompt_progress_callback is not None:
            prompt_progress_callback(total, total)
        streams = drafts.finish(candidates, heads is None) if candidates else None
        emitted += len(tokens)
        stretch = [stretch[0] + len(tokens), stretch[1] + 1]
        yield Step(tokens, tree.size, verified, n - 1, v.logprobs(n), reads)
        if (
            options.fallback_cost > 0
            and stretch[1] > options.fallback_after
            and stretch[0] - 1 < options.fallback_cost * (stretch[1] - 1)
        ):  # slower than plain decoding so far: decode plainly, maybe resume
            watch = None
            if lookup is not None:
                watch = LookupWatch(lookup, options.resume_hits, options.resume_window)
            for step in _plain_steps(
                model, cache, sampling, logits_processors, path, resume=watch
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


def _read(arrays: Sequence[mx.array]) -> List[np.ndarray]:
    """A pass's host read: evaluate ``arrays`` together and bring them over."""
    mx.eval(*arrays)  # host sync
    return [np.array(a) for a in arrays]


class _Drafts:
    """The next draft's top-k: queued on the device, finished on the host."""

    def __init__(self, model: Model, k: int, path: DecodePath):
        self.k, self.on_device = k, path.device_topk
        self.vocab = model.draft_vocab
        self.g = streaming.num_streams(model)

    def queue(self, logits: mx.array) -> List[mx.array]:
        return topk_queue(logits, self.k, self.on_device)

    def finish(self, read: List[np.ndarray], streams: bool):
        # Stream logits cover the draft vocabulary where there is one.
        return topk_finish(read, self.k, self.vocab if streams else None)


def _anchor_states(
    states: mx.array, anchor: mx.array, anchors: List[int], g: int
) -> tuple:
    """The accepted node's γ stream states among the anchors' (A * γ, h), and
    whether it is an anchor (else the rows are the first anchor's, unused)."""
    match = mx.array(anchors) == anchor  # (A,)
    rows = mx.argmax(match) * g + mx.arange(g)
    return states[rows], match.any()


AnchorChoice = Callable[[Tree], List[int]]


def _anchor_choice(options: DecodeOptions) -> Optional[AnchorChoice]:
    """Which verified nodes get stream rows in the verify pass (None: none, the
    "accepted" pass)."""
    if options.stream_pass == "tree":
        return lambda tree: list(range(tree.size))
    if options.stream_pass == "likely":
        return lambda tree: tree.likely_anchors(options.likely_anchors)
    return None
