# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Efficient lossless-mode training: a cached frozen pass, then stream rows only.

The base is frozen, so main rows never change: one no-grad pass per sequence caches
the main state M entering layer l, the post-RoPE main K/V of the top Ns layers and
the frozen model's own next-token distribution (top-k) at every position. A step
then runs only the stream rows of a few sampled anchors through the MSA layers
(``StreamingReference.stream_pass``), against the cached K/V.

Targets are the frozen model's own predictions: stream j at anchor t learns the main
distribution at t + j (which predicts token t + 1 + j), either soft (cross-entropy
to its top-k, renormalised) or hard (its argmax). The pruning adapter learns the
main distribution at t from the early-exit logits of M_t.
"""

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .examples import Example
from .reference import StreamingReference
from .state import acceptance_stats


@dataclass
class SeqCache:
    """Frozen-model quantities of one sequence of T tokens."""

    target: torch.Tensor  # (T,) bool: token is a completion token
    m: torch.Tensor  # (T, h) main state entering layer l
    kv: torch.Tensor  # (Ns, 2, Hkv, T, d) post-RoPE main K/V of the MSA layers
    top_p: torch.Tensor  # (T, k) main probabilities at t (they predict token t + 1)
    top_i: torch.Tensor  # (T, k) int32 token ids of top_p

    def nbytes(self) -> int:
        return sum(
            x.numel() * x.element_size()
            for x in (self.m, self.kv, self.top_p, self.top_i)
        )


@torch.no_grad()
def build_cache(
    ref: StreamingReference, ex: Example, top_k: int, dtype: torch.dtype
) -> SeqCache:
    """One frozen pass over a single unpadded sequence (deterministic per sequence)."""
    dev = ref.stream_embed.device
    ids = torch.as_tensor(ex.ids, device=dev)[None]
    h, m, kvs, _, _ = ref.main_pass(ids)
    probs = torch.softmax(ref.logits(h[0]).float(), dim=-1)
    top_p, top_i = probs.topk(top_k, dim=-1)
    kv = torch.stack([torch.stack(kv)[:, 0] for kv in kvs])  # (Ns, 2, Hkv, T, d)
    return SeqCache(
        target=torch.as_tensor(ex.target),
        m=m[0].to("cpu", dtype),
        kv=kv.to("cpu", dtype),
        top_p=top_p.to("cpu", dtype),
        top_i=top_i.to("cpu", torch.int32),
    )


class FrozenCache:
    """Caches built on first use and kept while their total stays within budget."""

    def __init__(
        self,
        ref: StreamingReference,
        examples: List[Example],
        top_k: int,
        dtype: torch.dtype = torch.float32,
        max_bytes: float = 8e9,
    ):
        self.ref, self.examples, self.top_k, self.dtype = ref, examples, top_k, dtype
        self.max_bytes, self.nbytes, self.store = max_bytes, 0, {}
        self.built_tokens = 0

    def __getitem__(self, i: int) -> SeqCache:
        if i in self.store:
            return self.store[i]
        c = build_cache(self.ref, self.examples[i], self.top_k, self.dtype)
        self.built_tokens += len(self.examples[i].ids)
        if self.nbytes + c.nbytes() <= self.max_bytes:
            self.store[i], self.nbytes = c, self.nbytes + c.nbytes()
        return c


def valid_anchors(target: torch.Tensor) -> np.ndarray:
    """Anchors t whose next token is a completion token and whose stream 1 has a target."""
    t = np.arange(max(len(target) - 2, 0))
    return t[target.numpy()[t + 1]]


def sample_anchors(cache: SeqCache, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` distinct valid anchors, sorted."""
    valid = valid_anchors(cache.target)
    if len(valid) > n:
        valid = np.sort(rng.choice(valid, n, replace=False))
    return valid


@dataclass
class AnchorBatch:
    """Stream inputs and targets of A anchor slots in each of B sequences."""

    m: torch.Tensor  # (B, A, h) main state at the anchors, layer l
    kvs: List[Tuple[torch.Tensor, torch.Tensor]]  # per MSA layer: K, V (B, Hkv, L, d)
    pos: torch.Tensor  # (B, A) anchor positions
    key_ok: torch.Tensor  # (B, A, L) main key visible to the anchor
    anchor_ok: torch.Tensor  # (B, A) slot holds a real anchor
    stream_ok: torch.Tensor  # (B, A, γ) stream j of the anchor has a target
    stream_p: torch.Tensor  # (B, A, γ, k) teacher top-k at t + j
    stream_i: torch.Tensor  # (B, A, γ, k)
    prune_p: torch.Tensor  # (B, A, k) teacher top-k at t
    prune_i: torch.Tensor  # (B, A, k)


def collate(
    caches: List[SeqCache], anchors: List[np.ndarray], gamma: int, device: torch.device
) -> AnchorBatch:
    """Gather the anchors' cached inputs and teacher targets, padded to a batch."""
    b, a = len(caches), max(1, max(len(x) for x in anchors))
    length = max(
        int(x.max()) + 1 if len(x) else 1 for x in anchors
    )  # keys past anchors unused
    c0 = caches[0]
    ns, _, hkv, _, d = c0.kv.shape
    k = c0.top_p.shape[-1]
    m = torch.zeros(b, a, c0.m.shape[-1])
    kv = torch.zeros(ns, 2, b, hkv, length, d)
    pos = torch.zeros(b, a, dtype=torch.long)
    anchor_ok = torch.zeros(b, a, dtype=torch.bool)
    stream_ok = torch.zeros(b, a, gamma, dtype=torch.bool)
    sp, si = torch.zeros(b, a, gamma, k), torch.zeros(b, a, gamma, k, dtype=torch.long)
    pp, pi = torch.zeros(b, a, k), torch.zeros(b, a, k, dtype=torch.long)
    js = torch.arange(1, gamma + 1)
    for r, (c, t) in enumerate(zip(caches, anchors)):
        n, tl = len(t), len(c.target)
        if n == 0:
            continue
        t = torch.as_tensor(t, dtype=torch.long)
        use = min(tl, length)
        kv[:, :, r, :, :use] = c.kv[:, :, :, :use].float()
        m[r, :n], pos[r, :n], anchor_ok[r, :n] = c.m[t].float(), t, True
        pp[r, :n], pi[r, :n] = c.top_p[t].float(), c.top_i[t].long()
        tj = t[:, None] + js  # (n, γ) teacher position t + j predicts token t + 1 + j
        ok = tj + 1 <= tl - 1
        tj = tj.clamp(max=tl - 1)
        stream_ok[r, :n] = ok & c.target[(tj + 1).clamp(max=tl - 1)]
        sp[r, :n], si[r, :n] = c.top_p[tj].float(), c.top_i[tj].long()
    key_ok = torch.arange(length)[None, None, :] <= pos[:, :, None]
    to = lambda x: x.to(device)  # noqa: E731
    return AnchorBatch(
        m=to(m),
        kvs=[(to(kv[i, 0]), to(kv[i, 1])) for i in range(ns)],
        pos=to(pos),
        key_ok=to(key_ok),
        anchor_ok=to(anchor_ok),
        stream_ok=to(stream_ok),
        stream_p=to(sp),
        stream_i=to(si),
        prune_p=to(pp),
        prune_i=to(pi),
    )


def stream_hidden(ref: StreamingReference, batch: AnchorBatch) -> torch.Tensor:
    """Final stream states (B, A, γ, h) of the batch's anchors."""
    cos, sin = ref.rotary(batch.m, batch.pos)
    return ref.stream_pass(batch.m, batch.kvs, cos, sin, batch.key_ok)


def distill_loss(
    logits: torch.Tensor, p: torch.Tensor, idx: torch.Tensor, soft: bool
) -> torch.Tensor:
    """Mean over rows of CE to the teacher: top-k renormalised (soft) or its argmax (hard).

    Args:
        logits: (R, V) student logits.
        p, idx: (R, k) teacher probabilities and token ids, best first.
    """
    n = max(
        logits.shape[0], 1
    )  # an empty selection gives 0, still connected to the graph
    if not soft:
        return F.cross_entropy(logits.float(), idx[:, 0], reduction="sum") / n
    logq = torch.log_softmax(logits.float(), dim=-1).gather(1, idx)
    p = p / p.sum(-1, keepdim=True)
    return -(p * logq).sum() / n


class LosslessObjective(nn.Module):
    """Loss of one anchor batch; a module so DDP can wrap it.

    Args:
        ref: the model; only its stream parameters are trained.
        soft: soft (top-k distillation) or hard (greedy token) targets.
    """

    def __init__(self, ref: StreamingReference, soft: bool = False):
        super().__init__()
        self.ref, self.soft = ref, soft

    def forward(
        self, batch: AnchorBatch
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        ref = self.ref
        s = stream_hidden(ref, batch)
        ok = batch.stream_ok
        logits = ref.logits(s[ok])  # only rows with a target reach the LM head
        stream_loss = distill_loss(
            logits, batch.stream_p[ok], batch.stream_i[ok], self.soft
        )
        pred = torch.zeros(ok.shape, dtype=torch.long, device=ok.device)
        pred[ok] = logits.argmax(-1)
        stats = acceptance_stats(pred, batch.stream_i[..., 0], ok)
        loss, prune_loss = stream_loss, torch.zeros((), device=ok.device)
        if ref.prune is not None:
            a = batch.anchor_ok
            early = ref.logits(ref.prune_hidden(batch.m[a]))
            prune_loss = distill_loss(
                early, batch.prune_p[a], batch.prune_i[a], self.soft
            )
            loss = loss + prune_loss
        stats["stream_loss"] = stream_loss.detach().double()
        stats["prune_loss"] = prune_loss.detach().double()
        return loss, stats


def efficient_stream_logits(
    ref: StreamingReference, caches: List[SeqCache], anchors: List[np.ndarray]
) -> torch.Tensor:
    """Stream logits (B, A, γ, V) at the given anchors from cached frozen passes."""
    batch = collate(caches, anchors, ref.args.num_streams, ref.stream_embed.device)
    return ref.logits(stream_hidden(ref, batch))


@torch.no_grad()
def evaluate(
    objective: LosslessObjective,
    cache: FrozenCache,
    indices: List[int],
    chunk: int = 64,
    limit: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Loss and acceptance sums over every valid anchor of the given sequences."""
    gamma, dev = objective.ref.args.num_streams, objective.ref.stream_embed.device
    total: Dict[str, torch.Tensor] = {}
    for i in indices[:limit]:
        c = cache[i]
        valid = valid_anchors(c.target)
        for lo in range(0, len(valid), chunk):
            batch = collate([c], [valid[lo : lo + chunk]], gamma, dev)
            _, st = objective(batch)
            st["stream_n"] = batch.stream_ok.sum().double()
            st["prune_n"] = batch.anchor_ok.sum().double()
            st["stream_loss"] = st["stream_loss"] * st["stream_n"]
            st["prune_loss"] = st["prune_loss"] * st["prune_n"]
            for k, v in st.items():
                total[k] = total.get(k, 0) + v.cpu()
    return total


def usable(examples: List[Example]) -> List[Example]:
    """Sequences with at least one anchor whose stream 1 has a target."""
    return [e for e in examples if len(valid_anchors(torch.as_tensor(e.target)))]


class LosslessTask:
    """Lossless-mode batches and evaluation for the training loop.

    Args:
        anchors: anchors sampled per sequence and step.
        cache_bytes: memory for cached frozen passes (train and valid each).
    """

    def __init__(
        self,
        ref: StreamingReference,
        train: List[Example],
        valid: List[Example],
        soft: bool,
        top_k: int,
        anchors: int,
        cache_dtype: torch.dtype,
        cache_bytes: float,
        device: torch.device,
    ):
        self.objective = LosslessObjective(ref, soft)
        self.train, self.valid = train, valid
        self.train_cache = FrozenCache(ref, train, top_k, cache_dtype, cache_bytes)
        self.valid_cache = FrozenCache(ref, valid, top_k, cache_dtype, cache_bytes)
        self.anchors, self.device, self.frozen_time = anchors, device, 0.0

    def batch(
        self, idx: List[int], rng: np.random.Generator
    ) -> Tuple[AnchorBatch, int]:
        """The batch of the given sequences and how many stream targets it holds."""
        t0 = time.perf_counter()
        caches = [self.train_cache[i] for i in idx]
        self.frozen_time += time.perf_counter() - t0
        anchors = [sample_anchors(c, self.anchors, rng) for c in caches]
        gamma = self.objective.ref.args.num_streams
        b = collate(caches, anchors, gamma, self.device)
        return b, int(b.stream_ok.sum())

    def evaluate(self, indices: List[int]) -> Dict[str, torch.Tensor]:
        return evaluate(self.objective, self.valid_cache, indices)
