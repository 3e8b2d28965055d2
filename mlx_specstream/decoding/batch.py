# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Several sequences decoded plainly in one forward pass (continuous batching).

mlx-lm's ``BatchGenerator`` runs the batch on the model's mlx-lm twin (the same
weights, ``models/twin.py``): sequences join after their prefill and leave when
they finish or are cancelled, between steps. A sequence comes in with its
``PromptCache`` (the conversation so far, K/V fed) and goes out with one again, so
a request can move between speculative decoding alone and a batch mid-answer.

Trees are not batched: a batch step decodes one token per sequence.
"""

import contextlib
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence

import mlx.core as mx
from mlx_lm.generate import BatchGenerator

from ..models.cache import PromptCache


class BatchDecoder:
    """A running batch: ``add`` sequences, ``step`` them, ``remove`` them.

    Args:
        twin: the model's mlx-lm twin.
        eos: token ids that end a sequence.
        cap: most sequences decoding at once.
        guard: entered around all device work, giving the stream to use (the
            API's ``device.on_device``: its lock makes the batch thread safe).
    """

    def __init__(
        self,
        twin: Any,
        eos: Sequence[int],
        cap: int,
        guard: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    ):
        if cap < 1:
            raise ValueError(f"the batch cap must be >= 1, got {cap}")
        self._guard = guard
        with guard() as stream:
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
        prompt = cache.take_unfed()
        layers, history = list(cache), list(cache.tokens)
        with self._guard():
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
        with self._guard():
            out = []
            for r in self._gen.next_generated():
                # An ending EOS stays in the record, as stream_generate keeps it.
                self._conversation[r.uid].append(int(r.token))
                if r.finish_reason is not None:  # it left the batch: keep its K/V
                    self._finished[r.uid] = r.prompt_cache
                out.append((r.uid, int(r.token), r.finish_reason))
            return out

    def remove(self, uid: int) -> PromptCache:
        """Take a sequence out; returns its conversation's ``PromptCache``."""
        with self._guard():
            conversation = self._conversation.pop(uid)
            layers = self._finished.pop(uid, None)
            if layers is None:  # still decoding (or waiting for its prefill)
                caches = self._gen.remove([uid], return_prompt_caches=True)
                layers = caches[uid][0]
            cache = PromptCache.from_layers(layers, conversation)
            mx.async_eval([c.keys for c in cache if c.keys is not None])
            return cache

    def close(self) -> None:
        with self._guard():
            self._gen.close()
