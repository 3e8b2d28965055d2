# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Which drafter and stream pass a run uses when the caller does not say.

The choice is the calibration cached for this model and device
(``mlx-specstream calibrate``, or ``calibrate.ensure_calibrated``). Without one,
decoding is plain: a tree that does not pay on a device makes every token slower
(a 16-node tree ran at 0.77x plain on a 2-core CPU), and only a measurement tells.
"""

from dataclasses import dataclass
from typing import Optional

from ..models.llama import Model
from .drafters import Drafter, MixedDrafter, PromptLookupDrafter, StreamDrafter
from .state import state_of
from .tree import TreeShape

# The stream pass of an explicit tree without calibration: the accepted node's
# streams after the pass cost less than stream rows for every node where rows
# are not free (measured on CPU); on GPUs calibration compares both.
DEFAULT_STREAM_PASS = "accepted"


@dataclass(frozen=True)
class Speculation:
    drafter: Drafter
    stream_pass: str
    # Where the tree is the calibrated default, FALLBACK_MARGIN x the calibrated cost
    # of a step relative to a plain one (0 otherwise): a run whose tokens per pass
    # stay below it falls back to plain decoding (``DecodeOptions.fallback_cost``).
    fallback_cost: float = 0.0


# A run falls back only where its tokens per pass are clearly below the step's cost:
# eight passes are a noisy estimate, and a run that drops to plain decoding returns
# to the tree only when prompt lookup would pay. At the full cost, the fallback cost
# 1.5% of the speed on this CPU's held-out prompts (2% chat, 5% unseen chat
# subjects; none on task prompts, where it never fired); at 0.85x it fired on none
# of the held-out prompts and on few validation ones (docs/results.md, session 6).
FALLBACK_MARGIN = 0.85


def prompt_lookup_drafter(model: Model) -> PromptLookupDrafter:
    """Prompt lookup with the model's n-gram table of its own answers, if it has one."""
    return PromptLookupDrafter(store=state_of(model).ngrams)


def stream_drafter(model: Model, tree: TreeShape) -> StreamDrafter:
    """The stream drafter, its trees reranked by the model's n-gram table where it
    ships one."""
    return StreamDrafter(tree, store=state_of(model).ngrams)


def choose_speculation(
    model: Model,
    tree: Optional[TreeShape] = None,
    drafter: Optional[Drafter] = None,
    stream_pass: Optional[str] = None,
    prompt_lookup: Optional[bool] = None,
) -> Optional[Speculation]:
    """The drafter and stream pass of a run; None means plain decoding.

    Explicit arguments win; what they leave open comes from the calibration, and
    with no calibration an explicit ``tree``, ``drafter`` or ``prompt_lookup`` is
    honoured while nothing at all means plain decoding.
    """
    state = state_of(model)
    cal = state.calibration
    if stream_pass is None:
        stream_pass = cal.stream_pass if cal is not None else DEFAULT_STREAM_PASS
    if drafter is not None:
        return Speculation(drafter, stream_pass)
    if prompt_lookup is None:
        prompt_lookup = cal is not None and cal.prompt_lookup
    if not state.has_streams:
        # Untrained streams draft noise: only prompt lookup, and only when asked.
        return (
            Speculation(prompt_lookup_drafter(model), stream_pass)
            if prompt_lookup
            else None
        )
    fallback = 0.0
    if tree is None:
        if cal is None and not prompt_lookup:
            return None  # not measured on this device: plain decoding
        tree = TreeShape(budget=cal.budget) if cal is not None else TreeShape()
        if cal is not None:
            costs = cal.all_costs.get(stream_pass) or cal.costs
            fallback = FALLBACK_MARGIN * costs.get(cal.budget, 0.0)
    streams = stream_drafter(model, tree)
    if prompt_lookup:
        return Speculation(
            MixedDrafter(streams, prompt_lookup_drafter(model)), stream_pass, fallback
        )
    if streams.shape.size <= 1:
        return None  # a one-node tree is plain decoding
    return Speculation(streams, stream_pass, fallback)
