# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Shared-mode training: a LoRA shared by main and streams, eq. 5 loss.

``L = α0 CE(main -> t+1) + Σ_j α_j CE(stream j -> t+1+j)`` over completion tokens
(α0 = 1, α_j = 0.1), through the full reference forward with γ streams at every
position (v1 §3.2.4). The pruning adapter learns next-token CE of the early-exit
logits on a detached M, so it never shapes the LoRA of the lower layers.
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .examples import Example
from .reference import StreamingReference
from .state import acceptance_stats

# Phi-3's fused projections holding each adaptable part.
_FUSED = {
    "q_proj": "qkv_proj",
    "k_proj": "qkv_proj",
    "v_proj": "qkv_proj",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
}


def add_shared_lora(
    ref: StreamingReference, rank: int, alpha: float, modules: Sequence[str]
):
    """Wrap the HF model's linear layers with a PEFT LoRA in place; returns the PeftModel.

    ``ref.hf`` keeps pointing at the same (now adapted) model, so main and stream
    rows both go through the LoRA.
    """
    from peft import LoraConfig, get_peft_model  # optional: shared mode only

    present = {name.split(".")[-1] for name, _ in ref.hf.named_modules()}
    # A model with fused projections (Phi-3) adapts the fused module of each part.
    names = sorted(
        {
            n if n in present else _FUSED.get(n, n)
            for n in (m.split(".")[-1] for m in modules)
        }
    )
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0
    )
    return get_peft_model(ref.hf, config)


@dataclass
class TokenBatch:
    ids: torch.Tensor  # (B, T) right-padded
    mask: torch.Tensor  # (B, T) 1 for real tokens
    target: torch.Tensor  # (B, T) bool, completion tokens


def collate_tokens(
    examples: List[Example], pad_id: int, device: torch.device
) -> TokenBatch:
    t = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), t), pad_id, dtype=torch.long)
    mask = torch.zeros(len(examples), t, dtype=torch.long)
    target = torch.zeros(len(examples), t, dtype=torch.bool)
    for r, e in enumerate(examples):
        n = len(e.ids)
        ids[r, :n], mask[r, :n], target[r, :n] = (
            torch.as_tensor(e.ids),
            1,
            torch.as_tensor(e.target),
        )
    return TokenBatch(ids.to(device), mask.to(device), target.to(device))


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # mean CE; an empty selection gives 0 and stays connected to the graph (DDP)
    return F.cross_entropy(logits.float(), labels, reduction="sum") / max(
        len(labels), 1
    )


class SharedObjective(nn.Module):
    """Eq. 5 loss of a token batch; a module so DDP can wrap it."""

    def __init__(
        self, ref: StreamingReference, alpha0: float = 1.0, alpha_stream: float = 0.1
    ):
        super().__init__()
        self.ref, self.alpha0, self.alpha_stream = ref, alpha0, alpha_stream

    def forward(
        self, batch: TokenBatch
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        ref, ids, tgt = self.ref, batch.ids, batch.target
        b, t = ids.shape
        gamma = ref.args.num_streams
        h, m, kvs, (cos, sin), mask = ref.main_pass(ids, batch.mask)
        s = ref.stream_pass(m, kvs, cos, sin, mask)  # (B, T, γ, h)
        ok0 = tgt[:, 1:]  # main row t predicts token t + 1
        main_logits = ref.logits(h[:, :-1][ok0])
        main_loss = _ce(main_logits, ids[:, 1:][ok0])
        greedy = torch.zeros(b, t, dtype=torch.long, device=ids.device)
        greedy[:, :-1][ok0] = main_logits.argmax(-1).detach()
        loss = self.alpha0 * main_loss
        ok = torch.zeros(b, t, gamma, dtype=torch.bool, device=ids.device)
        pred = torch.zeros_like(ok, dtype=torch.long)
        own = torch.zeros_like(pred)  # the model's own greedy token at t + 1 + j
        stream_loss = torch.zeros((), device=ids.device)
        for j in range(1, gamma + 1):
            if t - 1 - j <= 0:
                break
            okj = tgt[:, 1 + j :]  # stream j at t predicts token t + 1 + j
            logits = ref.logits(s[:, : t - 1 - j, j - 1][okj])
            ce = _ce(logits, ids[:, 1 + j :][okj])
            stream_loss = stream_loss + ce.detach() / gamma
            loss = loss + self.alpha_stream * ce
            ok[:, : t - 1 - j, j - 1] = okj
            pred[:, : t - 1 - j, j - 1][okj] = logits.argmax(-1)
            own[:, : t - 1 - j, j - 1] = greedy[:, j : t - 1]
        stats = acceptance_stats(pred, own, ok)
        prune_loss = torch.zeros((), device=ids.device)
        if ref.prune is not None:
            early = ref.logits(ref.prune_hidden(m.detach()[:, :-1][ok0]))
            prune_loss = _ce(early, ids[:, 1:][ok0])
            loss = loss + prune_loss
        stats.update(
            main_loss=main_loss.detach().double(),
            stream_loss=stream_loss.double(),
            prune_loss=prune_loss.detach().double(),
        )
        return loss, stats


@torch.no_grad()
def evaluate_shared(
    objective: SharedObjective,
    examples: List[Example],
    indices: List[int],
    batch_size: int,
    pad_id: int,
) -> Dict[str, torch.Tensor]:
    """Loss (token-weighted by batch) and acceptance sums over the given examples."""
    dev = objective.ref.stream_embed.device
    total: Dict[str, torch.Tensor] = {}
    for lo in range(0, len(indices), batch_size):
        batch = collate_tokens(
            [examples[i] for i in indices[lo : lo + batch_size]], pad_id, dev
        )
        _, st = objective(batch)
        n = batch.target[:, 1:].sum().double()
        for k in ("main", "stream", "prune"):  # token-weighted means over batches
            st[f"{k}_loss"], st[f"{k}_n"] = st[f"{k}_loss"] * n, n
        for k, v in st.items():
            total[k] = total.get(k, 0) + v.cpu()
    return total


class SharedTask:
    """Shared-mode batches and evaluation for the training loop."""

    def __init__(
        self,
        ref: StreamingReference,
        train: List[Example],
        valid: List[Example],
        pad_id: int,
        batch_size: int,
        device: torch.device,
        alpha_stream: float = 0.1,
    ):
        self.objective = SharedObjective(ref, alpha_stream=alpha_stream)
        self.train, self.valid, self.pad_id = train, valid, pad_id
        self.batch_size, self.device, self.frozen_time = batch_size, device, 0.0

    def batch(self, idx: List[int], rng=None) -> Tuple[TokenBatch, int]:
        """The batch of the given sequences and how many completion tokens it holds."""
        b = collate_tokens([self.train[i] for i in idx], self.pad_id, self.device)
        return b, int(b.target[:, 1:].sum())

    def evaluate(self, indices: List[int]) -> Dict[str, torch.Tensor]:
        return evaluate_shared(
            self.objective, self.valid, indices, self.batch_size, self.pad_id
        )
