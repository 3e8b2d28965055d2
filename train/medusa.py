# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""``mlx-specstream medusa-train``: train Medusa-1 heads on a frozen base (PyTorch).

The base never changes, so one no-grad pass per sequence (on first use) caches its
final normalised hidden states at the anchors that have a target; a step then runs
only the heads, on a few sampled anchors per sequence. Head k (0-based) at position
t learns token t + 2 + k with cross-entropy over completion tokens, weighted by
``head_decay ** k`` as in Medusa. The data is the JSONL of ``mlx-specstream distill``
(the model's own greedy answers as exact ids). Output: ``medusa.json``,
``medusa.safetensors`` (read by ``mlx_specstream.decoding.medusa.load_medusa``) and
``medusa_summary.json``, written atomically.
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from mlx_specstream.decoding.medusa import MEDUSA_CONFIG, MEDUSA_WEIGHTS
from mlx_specstream.loading.files import write_atomically, write_file_atomically
from mlx_specstream.loading.registry import resolve

from .examples import BatchPlan, Example, load_examples
from .state import lr_schedule
from .trainer import TrainError, load_base

SUMMARY_FILE = "medusa_summary.json"
IGNORE = -100


class TorchMedusaHeads(nn.Module):
    """PyTorch twin of ``mlx_specstream.decoding.medusa.MedusaHeads`` (same tensor names)."""

    def __init__(self, lm_head: torch.Tensor, num_heads: int = 4):
        super().__init__()
        V, h = lm_head.shape
        self.heads = nn.ModuleList()
        for _ in range(num_heads):
            head = nn.Module()
            head.block = nn.Linear(h, h)
            head.lm_head = nn.Linear(h, V, bias=False)
            with torch.no_grad():  # a fresh head is the base LM head
                head.block.weight.zero_()
                head.block.bias.zero_()
                head.lm_head.weight.copy_(lm_head)
            self.heads.append(head)

    def head_logits(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """(N, h) final normalised states -> (N, V) logits of head k."""
        head = self.heads[k]
        return head.lm_head(h + F.silu(head.block(h)))


@dataclass
class AnchorCache:
    """Frozen-base states of one sequence at its anchors (n of them)."""

    hidden: torch.Tensor  # (n, h) final normalised hidden state at t
    targets: torch.Tensor  # (n, K) token t + 2 + k, IGNORE where not a completion token


@torch.no_grad()
def cache_anchors(
    base: nn.Module, ex: Example, num_heads: int
) -> Optional[AnchorCache]:
    """One frozen pass over ``ex``; None when no head has a target in it."""
    T = len(ex.ids)
    ids = torch.as_tensor(ex.ids, dtype=torch.long)
    # targets[t, k] = ids[t + 2 + k] where that is a completion token
    targets = torch.full((T, num_heads), IGNORE, dtype=torch.long)
    for k in range(num_heads):
        s = 2 + k
        if s < T:
            learn = torch.as_tensor(ex.target[s:])
            targets[: T - s, k] = torch.where(learn, ids[s:], IGNORE)
    anchors = (targets != IGNORE).any(dim=1).nonzero()[:, 0]
    if anchors.numel() == 0:
        return None
    # LlamaModel / Qwen2Model return the states after the final norm
    h = base(input_ids=ids[None], use_cache=False).last_hidden_state[0]
    return AnchorCache(h[anchors].float().contiguous(), targets[anchors])


class AnchorSampler:
    """Training batches of anchors; each sequence's frozen pass runs on first use."""

    def __init__(
        self,
        base: nn.Module,
        examples: List[Example],
        num_heads: int,
        anchors: int,
        rng: np.random.Generator,
    ):
        self.base, self.examples, self.num_heads = base, examples, num_heads
        self.anchors, self.rng = anchors, rng
        self.cache: Dict[int, Optional[AnchorCache]] = {}

    def batch(
        self, indices: Sequence[int]
    ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """(N, h) states and (N, K) targets of up to ``anchors`` positions per sequence."""
        hs, ts = [], []
        for i in indices:
            if i not in self.cache:
                self.cache[i] = cache_anchors(
                    self.base, self.examples[i], self.num_heads
                )
            c = self.cache[i]
            if c is None:
                continue
            pick = torch.arange(len(c.hidden))
            if 0 < self.anchors < len(pick):
                pick = torch.as_tensor(
                    np.sort(self.rng.choice(len(pick), self.anchors, replace=False))
                )
            hs.append(c.hidden[pick])
            ts.append(c.targets[pick])
        return (torch.cat(hs), torch.cat(ts)) if hs else None


def head_losses(
    heads: TorchMedusaHeads, h: torch.Tensor, targets: torch.Tensor
) -> List[torch.Tensor]:
    """Mean cross-entropy of each head over its (non-ignored) targets."""
    out = []
    for k in range(len(heads.heads)):
        t = targets[:, k]
        keep = t != IGNORE
        if not keep.any():
            out.append(h.new_zeros(()))
            continue
        out.append(F.cross_entropy(heads.head_logits(k, h[keep]), t[keep]))
    return out


@torch.no_grad()
def evaluate(
    heads: TorchMedusaHeads, caches: Sequence[AnchorCache], chunk: int = 256
) -> Dict[str, float]:
    """Per-head top-1 accuracy and loss over every anchor of ``caches``."""
    K = len(heads.heads)
    h = torch.cat([c.hidden for c in caches])
    targets = torch.cat([c.targets for c in caches])
    hits, nll, count = np.zeros(K), np.zeros(K), np.zeros(K)
    for s in range(0, len(h), chunk):
        hs, ts = h[s : s + chunk], targets[s : s + chunk]
        for k in range(K):
            keep = ts[:, k] != IGNORE
            if keep.any():
                logits = heads.head_logits(k, hs[keep])
                hits[k] += (logits.argmax(-1) == ts[keep, k]).sum().item()
                nll[k] += F.cross_entropy(logits, ts[keep, k], reduction="sum").item()
                count[k] += keep.sum().item()
    count = np.maximum(count, 1)
    out = {f"acc{k + 1}": float(hits[k] / count[k]) for k in range(K)}
    out.update({f"loss{k + 1}": float(nll[k] / count[k]) for k in range(K)})
    return out


def train_medusa(
    model_dir: str,
    train_jsonl: str,
    valid_jsonl: Optional[str],
    out_dir: str,
    steps: int = 200,
    lr: float = 1e-3,
    batch_size: int = 8,
    seed: int = 0,
    num_heads: int = 4,
    anchors: int = 32,
    head_decay: float = 0.8,
    warmup_steps: Optional[int] = None,
    weight_decay: float = 0.0,
    max_seq_length: int = 1024,
    val_limit: int = 64,
    time_limit: float = 0.0,
    threads: Optional[int] = None,
    force: bool = False,
    progress: bool = True,
) -> Dict:
    """Train Medusa-1 heads on a frozen base model and write them to ``out_dir``.

    Args:
        model_dir: Hugging Face (or our MLX) model directory, or a .gguf file.
        train_jsonl, valid_jsonl: distilled JSONL (``prompt_tokens``,
            ``completion_tokens``, ``finish_reason``); valid may be None.
        out_dir: output directory (replaced only with ``force``).
        steps: optimizer steps; ``batch_size`` sequences each, ``anchors`` sampled
            positions per sequence (0: all).
        lr, warmup_steps, weight_decay: AdamW with linear warmup (default 5%) and
            linear decay.
        head_decay: loss weight of head k is ``head_decay ** k``.
        max_seq_length: sequences are cut to this many tokens.
        val_limit: validation sequences used (all anchors of each).
        time_limit: stop training after this many seconds (0: no limit); the heads
            are then evaluated and saved as usual.
        threads: torch CPU threads.

    Returns:
        The summary also written to ``out_dir/medusa_summary.json``.
    """
    t0 = time.perf_counter()
    if steps < 1 or batch_size < 1 or anchors < 0 or num_heads < 1:
        raise TrainError("steps, batch_size and num_heads must be >= 1, anchors >= 0")
    out = Path(out_dir)
    if out.exists() and not force:
        raise TrainError(f"{out}: already exists (use --force to replace it)")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    hf, tok = load_base(model_dir)
    hf.requires_grad_(False)
    base = hf.base_model
    train_ex, _ = load_examples(train_jsonl, tok, max_seq_length)
    valid_ex = load_examples(valid_jsonl, tok, max_seq_length)[0] if valid_jsonl else []
    # a random subset: distilled files are sorted by prompt length
    if len(valid_ex) > val_limit:
        pick = np.random.default_rng([seed, 1]).choice(
            len(valid_ex), val_limit, replace=False
        )
        valid_ex = [valid_ex[i] for i in sorted(pick)]
    heads = TorchMedusaHeads(
        hf.get_output_embeddings().weight.detach().float(), num_heads
    )
    n_params = sum(p.numel() for p in heads.parameters())

    def log(msg: str) -> None:
        if progress:
            tqdm.write(msg, file=sys.stderr)

    log(
        f"medusa: {num_heads} heads, {n_params / 1e6:.1f}M parameters; "
        f"{len(train_ex)} train / {len(valid_ex)} valid sequences"
    )

    valid = [
        c
        for c in (cache_anchors(base, ex, num_heads) for ex in valid_ex)
        if c is not None
    ]
    summary: Dict = {"num_parameters": n_params, "train_sequences": len(train_ex)}
    if valid:
        summary["valid_init"] = evaluate(heads, valid)
        log("valid at init (heads = LM head): " + _fmt(summary["valid_init"]))

    # fused: on CPU the plain update of ~114M parameters costs more than the step itself
    opt = torch.optim.AdamW(
        heads.parameters(), lr=lr, weight_decay=weight_decay, fused=True
    )
    warmup = min(100, steps // 20) if warmup_steps is None else warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(steps, warmup))
    plan = BatchPlan(len(train_ex), batch_size, 0, 1, seed)
    sampler = AnchorSampler(base, train_ex, num_heads, anchors, rng)
    weights = [head_decay**k for k in range(num_heads)]
    t_train, step, losses = time.perf_counter(), 0, []
    bar = tqdm(total=steps, desc="medusa", disable=not progress, file=sys.stderr)
    while step < steps and not (time_limit and time.perf_counter() - t0 > time_limit):
        batch = sampler.batch(plan.batch(step))
        step += 1
        bar.update(1)
        if batch is None:
            continue
        per_head = head_losses(heads, *batch)
        loss = sum(w * l for w, l in zip(weights, per_head))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append([l.item() for l in per_head])
        bar.set_postfix(loss=f"{loss.item():.3f}", seqs=len(sampler.cache))
    bar.close()
    summary.update(
        steps=step,
        train_seconds=time.perf_counter() - t_train,
        sequences_seen=len(sampler.cache),
        train_loss_first=_mean_heads(losses[:10]),
        train_loss_last=_mean_heads(losses[-10:]),
    )
    if valid:
        summary["valid"] = evaluate(heads, valid)
        log("valid after training: " + _fmt(summary["valid"]))
    summary["seconds"] = time.perf_counter() - t0
    config = {
        "num_heads": num_heads,
        "hidden_size": heads.heads[0].block.in_features,
        "vocab_size": heads.heads[0].lm_head.out_features,
    }

    def write(tmp: Path) -> None:
        state = {
            k: v.detach().float().contiguous() for k, v in heads.state_dict().items()
        }
        # save_file makes its file private; this gives it the usual permissions
        write_file_atomically(tmp / MEDUSA_WEIGHTS, lambda f: save_file(state, str(f)))
        (tmp / MEDUSA_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")

    write_atomically(out, write, force)
    return summary


def _mean_heads(rows: List[List[float]]) -> List[float]:
    return np.mean(rows, axis=0).round(4).tolist() if rows else []


def _fmt(metrics: Dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlx-specstream medusa-train", description=__doc__.split("\n")[0]
    )
    a = p.add_argument
    a("--model", dest="model_dir", required=True, help="model dir, name or .gguf")
    a("--train", dest="train_jsonl", required=True, help="distilled JSONL")
    a("--valid", dest="valid_jsonl", help="distilled validation JSONL")
    a("--out", dest="out_dir", required=True, help="output directory")
    a("--steps", type=int, default=200)
    a("--lr", type=float, default=1e-3)
    a("--batch-size", type=int, default=8, help="sequences per step")
    a("--anchors", type=int, default=32, help="positions per sequence (0: all)")
    a("--num-heads", type=int, default=4)
    a("--head-decay", type=float, default=0.8, help="loss weight decay per head")
    a("--warmup-steps", type=int, help="linear warmup (default 5%%, at most 100)")
    a("--weight-decay", type=float, default=0.0)
    a("--max-seq-length", type=int, default=1024)
    a("--val-limit", type=int, default=64, help="validation sequences")
    a("--time-limit", type=float, default=0.0, help="training seconds (0: no limit)")
    a("--threads", type=int, help="torch CPU threads")
    a("--seed", type=int, default=0)
    a("--force", action="store_true", help="replace an existing --out")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    """CLI entry: on bad input prints ``error: ...`` and exits 1, never a traceback."""
    args = vars(build_parser().parse_args(argv))
    try:
        if not args["model_dir"].endswith(".gguf"):
            args["model_dir"] = str(resolve(args["model_dir"]))
        summary = train_medusa(**args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(
        f"wrote {args['out_dir']}: {summary['num_parameters']:,} head parameters, "
        f"{summary['steps']} steps, {summary['seconds']:.0f} s"
    )
    for name in ("valid_init", "valid"):
        if name in summary:
            m = summary[name]
            accs = [
                f"head {k} {m[f'acc{k}']:.3f}" for k in range(1, args["num_heads"] + 1)
            ]
            print(f"{name} top-1: " + ", ".join(accs))


if __name__ == "__main__":
    main()
