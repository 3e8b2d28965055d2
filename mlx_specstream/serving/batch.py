# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Several sequences decoded plainly in one forward pass (continuous batching).

mlx-lm's ``BatchGenerator`` runs the batch on the model's mlx-lm twin (the same
weights, ``models/twin.py``): sequences join after their prefill and leave when
they finish or are cancelled, between steps. A sequence comes in with its
``PromptCache`` (the conversation so far, K/V fed) and goes out with one again, so
a request can move between speculative decoding alone and a batch mid-answer.

Trees are not batched: a batch step decodes one token per sequence.
"""

from typing import Any, Dict, List, Optional, Sequence

import mlx.core as mx
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import KVCache

from ..device import on_device
from ..models.cache import PromptCache, TreeKVCache


def take_unfed(cache: PromptCache) -> List[int]:
    """Take the conversation's unfed tokens off ``cache``'s record and return them
    (the next decoder's prompt); a fully fed cache gives its last token back to be
    fed again, since a decoder needs one."""
    cache.sync()
    if cache.pending == 0:
        last = cache.tokens[-1]
        cache.trim(1)
        return [last]
    fed = cache.fed
    prompt = cache.tokens[fed:]
    del cache.tokens[fed:]
    cache.pending = 0
    return prompt


def from_batch_output(layers: Sequence[KVCache], conversation: List[int]) -> PromptCache:
    """A ``PromptCache`` from a sequence's mlx-lm layer caches and its
    conversation (prompt and tokens so far; those past the K/V are pending).
    K/V past the conversation (mlx-lm feeds a step ahead: a final EOS) are dropped."""
    out = PromptCache()
    for c in layers:
        t = TreeKVCache()
        n = min(c.offset, len(conversation))
        if c.keys is not None and n > 0:
            t.keys, t.values = c.keys[..., :n, :], c.values[..., :n, :]
            t.offset = n
        out.append(t)
    out.tokens = list(conversation)
    out.pending = len(conversation) - (out[0].offset if out else 0)
    return out


class BatchDecoder:
    """A running batch: ``add`` sequences, ``step`` them, ``remove`` them.

    Args:
        twin: the model's mlx-lm twin.
        eos: token ids that end a sequence.
        cap: most sequences decoding at once.
    """

    def __init__(self, twin: Any, eos: Sequence[int], cap: int):
        if cap < 1:
            raise ValueError(f"the batch cap must be >= 1, got {cap}")
        with on_device() as stream:
            self._gen = BatchGenerator(
                twin,
                stop_tokens=[[int(t)] for t in eos],
                completion_batch_size=cap,
                prefill_batch_size=cap,
                stream=stream,
            )
        self.cap = cap
        # uid -> the conversation so far (history, prompt, tokens generated)
        self._conversation: Dict[int, List[int]] = {}
        self._finished: Dict[int, List[Any]] = {}  # uid -> its layer caches

    def __len__(self) -> int:
        return len(self._conversation)

    def add(
        self,
        cache: PromptCache,
        max_tokens: int,
        sampler: Any,
        processors: Optional[List[Any]] = None,
    ) -> int:
        """Queue a sequence continuing ``cache``'s conversation; returns its uid.
        The cache's layers now belong to the batch (``remove`` gives them back)."""
        prompt = take_unfed(cache)
        layers, history = list(cache), list(cache.tokens)
        with on_device():
            (uid,) = self._gen.insert(
                [prompt],
                [max_tokens],
                caches=[layers],
                all_tokens=[history],
                samplers=[sampler],
                logits_processors=[list(processors or [])],
            )
        self._conversation[uid] = history + prompt
        return uid

    def step(self) -> List[tuple]:
        """One batch step (prefill chunks first, as they come): ``(uid, token,
        finish_reason)`` for each sequence that made a token. A finished
        sequence stays until ``remove``."""
        with on_device():
            out = []
            for r in self._gen.next_generated():
                if r.finish_reason != "stop":  # an EOS is not part of the answer
                    self._conversation[r.uid].append(int(r.token))
                if r.finish_reason is not None:  # it left the batch: keep its K/V
                    self._finished[r.uid] = r.prompt_cache
                out.append((r.uid, int(r.token), r.finish_reason))
            return out

    def remove(self, uid: int) -> PromptCache:
        """Take a sequence out; returns its conversation's ``PromptCache``."""
        with on_device():
            conversation = self._conversation.pop(uid)
            layers = self._finished.pop(uid, None)
            if layers is None:  # still decoding (or waiting for its prefill)
                caches = self._gen.remove([uid], return_prompt_caches=True)
                layers = caches[uid][0]
            cache = from_batch_output(layers, conversation)
            mx.async_eval([c.keys for c in cache if c.keys is not None])
            return cache

    def close(self) -> None:
        with on_device():
            self._gen.close()
