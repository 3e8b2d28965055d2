# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Training plumbing: process group, atomic checkpoints, metric reduction."""

import os
import resource
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from mlx_specstream.loading.files import (
    write_atomically,
    write_file_atomically,
    write_files_atomically,
)

from .reference import StreamingReference

STATE_FILE = "trainer_state.pt"
ADAPTER_DIR = "adapter"


def init_distributed() -> Tuple[int, int, torch.device]:
    """(rank, world size, device); starts a process group under torchrun.

    nccl when CUDA is available, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def all_reduce_sums(
    sums: Dict[str, torch.Tensor], device: torch.device
) -> Dict[str, torch.Tensor]:
    """Sum a dict of tensors over all ranks (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or not sums:
        return sums
    keys = sorted(sums)
    flat = [torch.as_tensor(sums[k], dtype=torch.float64).reshape(-1) for k in keys]
    buf = torch.cat(flat).to(device)
    dist.all_reduce(buf)
    out, i = {}, 0
    for k, f in zip(keys, flat):
        out[k] = buf[i : i + f.numel()].reshape(torch.as_tensor(sums[k]).shape).cpu()
        i += f.numel()
    return out


def summarize(sums: Dict[str, torch.Tensor], prefix: str = "") -> Dict[str, float]:
    """Means of summed statistics: losses, per-stream top-1 accuracy, tokens per pass."""
    out = {}
    for k in sorted(sums):  # "<name>_loss" sums are weighted by "<name>_n"
        n = sums.get(k[: -len("loss")] + "n")
        if k.endswith("_loss") and n is not None:
            out[k] = float(sums[k]) / max(float(n), 1.0)
    if "rows" in sums:
        out["stream_acc"] = [
            round(float(h / max(r, 1)), 4) for h, r in zip(sums["hit"], sums["rows"])
        ]
        out["tokens_per_pass"] = 1 + float(sums["run"]) / max(
            float(sums["anchors"]), 1.0
        )
    return {prefix + k: v for k, v in out.items()}


def acceptance_stats(
    pred: torch.Tensor, greedy: torch.Tensor, ok: torch.Tensor
) -> Dict[str, torch.Tensor]:
    """Sums for top-1 accuracy per stream and the accepted-run length per anchor.

    Args:
        pred, greedy: (B, A, γ) stream argmax and the frozen model's own next token.
        ok: (B, A, γ) rows with a target.
    """
    hit = (pred == greedy) & ok
    full = ok.all(-1)  # anchors where all γ streams have targets
    run = hit.long().cumprod(-1).sum(-1)
    return {
        "hit": hit.sum((0, 1)).double(),
        "rows": ok.sum((0, 1)).double(),
        "run": run[full].sum().double(),
        "anchors": full.sum().double(),
    }


def empty_sums(gamma: int, losses) -> Dict[str, torch.Tensor]:
    """Zero statistics, so every rank reduces the same keys (some may have no data)."""
    z = lambda *shape: torch.zeros(shape, dtype=torch.float64)  # noqa: E731
    out = {"hit": z(gamma), "rows": z(gamma), "run": z(), "anchors": z()}
    for k in losses:
        out[f"{k}_loss"], out[f"{k}_n"] = z(), z()
    return out


def lr_schedule(total: int, warmup: int):
    """Linear warmup to the peak, then linear decay to 0 at ``total`` (v1 §3.2.4)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def trainable(module: nn.Module) -> Dict[str, nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def save_adapter(peft_model, directory: Path) -> None:
    """Write the PEFT adapter to ``directory/adapter``, replacing the old one atomically."""
    write_atomically(
        Path(directory) / ADAPTER_DIR,
        lambda tmp: peft_model.save_pretrained(str(tmp)),
        force=True,
    )


def save_checkpoint(
    out: Path,
    ref: StreamingReference,
    objective: nn.Module,
    optimizer,
    scheduler,
    step: int,
    meta: Dict,
    peft_model=None,
) -> None:
    """Write stream files (+ PEFT adapter) and the resumable state, each file atomically.

    The state file goes last and holds the trainable tensors itself, so a resume never
    mixes files of two different steps.
    """
    write_files_atomically(out, ref.save_streams)
    if peft_model is not None:
        save_adapter(peft_model, out)
    state = {
        "step": step,
        "trainable": {k: v.detach().cpu() for k, v in trainable(objective).items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "meta": meta,
    }
    write_file_atomically(out / STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_checkpoint(
    out: Path, objective: nn.Module, optimizer, scheduler, meta: Dict
) -> int:
    """Restore a state written by ``save_checkpoint``; returns the step to continue from."""
    path = out / STATE_FILE
    state = torch.load(path, map_location="cpu", weights_only=False)
    for k in ("mode", "stream_args", "lora_rank"):
        if state["meta"].get(k) != meta.get(k):
            raise ValueError(
                f"{path}: checkpoint {k} {state['meta'].get(k)!r} differs from {meta.get(k)!r}"
            )
    params = trainable(objective)
    if set(params) != set(state["trainable"]):
        raise ValueError(f"{path}: trainable parameters differ from this model's")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(state["trainable"][k])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def peak_memory_mb(device: Optional[torch.device] = None) -> Dict[str, float]:
    """Peak resident memory of this process (and of the GPU when used), in MiB."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device is not None and device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
