# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""``mlx-specstream train``: train speculative streams (design.md §2, two modes).

lossless: the base stays frozen; P, the insertion map, stream-only adapters and the
pruning adapter learn the frozen model's own predictions (``train/lossless.py``).
shared: a LoRA shared by main and streams plus the stream parameters learn eq. 5
(``train/shared.py``). Runs under ``torchrun`` with DDP; rank 0 writes
``speculative_streaming.json``, ``streams.safetensors`` (and ``adapter/``) to --out.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from tqdm import tqdm

from mlx_specstream.format import STREAM_ADAPTER_MODULES, StreamArgs

from . import lossless
from .datasets import DataError
from .examples import BatchPlan, load_examples
from .reference import StreamingReference
from .shared import SharedTask, add_shared_lora
from .state import (
    STATE_FILE,
    all_reduce_sums,
    empty_sums,
    init_distributed,
    load_checkpoint,
    lr_schedule,
    peak_memory_mb,
    save_checkpoint,
    summarize,
    trainable,
)

MODE_DEFAULTS = {
    "lossless": {"lr": 3e-3, "stream_adapter_rank": 8},
    "shared": {"lr": 5e-4, "stream_adapter_rank": 0},
}
SUMMARY_FILE = "train_summary.json"


class TrainError(ValueError):
    """Bad training arguments; the message names the file or flag."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlx-specstream train", description=__doc__.split("\n")[0]
    )
    a = p.add_argument
    a("--model", required=True, help="HF model directory or .gguf file")
    a("--train", required=True, help="JSONL: {prompt, completion} or {messages}")
    a("--valid", help="validation JSONL")
    a("--out", required=True, help="output directory")
    a("--mode", choices=("lossless", "shared"), default="lossless")
    a("--resume", action="store_true", help="continue from OUT/trainer_state.pt")
    a(
        "--init-streams",
        help="start from trained streams (a directory with streams.safetensors and "
        "matching settings), e.g. to fine-tune shipped streams on your own data",
    )
    a("--seed", type=int, default=0)
    a("--steps", type=int, help="optimizer steps (default: --epochs worth)")
    a("--epochs", type=float, default=1.0)
    a("--lr", type=float, help="peak learning rate (lossless 3e-3, shared 5e-4)")
    a("--warmup-steps", type=int, help="linear warmup (default 5%%, at most 100)")
    a("--weight-decay", type=float, default=0.0)
    a("--grad-clip", type=float, default=1.0)
    a("--batch-size", type=int, default=8, help="sequences per step and process")
    a("--max-seq-length", type=int, default=512)
    a("--num-streams", type=int, default=4)
    a("--num-stream-layers", type=int, default=8)
    a("--stream-adapter-rank", type=int, help="lossless 8, shared 0")
    a("--insertion-rank", type=int, default=16)
    a("--prune-rank", type=int, default=8)
    a("--lora-rank", type=int, default=32, help="shared mode LoRA rank")
    a("--lora-alpha", type=float, help="shared mode LoRA alpha (default 2 x rank)")
    a(
        "--stream-loss-weight",
        type=float,
        default=0.1,
        help="shared mode: alpha_j of eq. 5, the weight of each stream's loss (main "
        "is 1); 0 is the no-streams baseline: a plain LoRA fine-tune, streams stay "
        "at their init",
    )
    a("--anchors", type=int, default=16, help="lossless: anchors per sequence")
    a("--target", choices=("soft", "hard"), default="hard", help="lossless targets")
    a("--soft-top-k", type=int, default=32, help="lossless: teacher tokens kept")
    a("--cache-dtype", choices=("float32", "bfloat16"), default="float32")
    a("--cache-gb", type=float, default=8.0, help="lossless: frozen-pass cache")
    a("--eval-every", type=int, default=100)
    a("--val-limit", type=int, default=64, help="validation sequences per eval")
    a("--save-every", type=int, default=100)
    a("--run-steps", type=int, help="stop after this many steps (then --resume)")
    a("--threads", type=int, help="torch CPU threads per process")
    return p


def load_base(path: str):
    """(HF model in float32, tokenizer) from a directory or a .gguf file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # slow to import

    p, kw = Path(path), {}
    if p.suffix == ".gguf":
        if not p.is_file():
            raise TrainError(f"{p}: no such file")
        p, kw = p.parent, {"gguf_file": p.name}
    elif not (p / "config.json").is_file():
        raise TrainError(f"{p}: not a model directory (no config.json)")
    try:
        tok = AutoTokenizer.from_pretrained(str(p), **kw)
        model = AutoModelForCausalLM.from_pretrained(str(p), dtype=torch.float32, **kw)
    except (OSError, ValueError) as e:
        raise TrainError(f"{path}: cannot load ({str(e).splitlines()[0]})") from None
    return model.eval(), tok


def _log(msg: str, rank: int) -> None:
    if rank == 0:
        tqdm.write(msg, file=sys.stderr)


def _fmt(metrics: Dict) -> str:
    f = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return ", ".join(f"{k} {f(v)}" for k, v in metrics.items())


def _setup(args, rank: int, world: int, device: torch.device):
    """Model, stream settings, task (objective + batches) and the PEFT model."""
    torch.manual_seed(args.seed)
    hf, tok = load_base(args.model)
    hf.requires_grad_(False)
    sargs = StreamArgs(
        num_streams=args.num_streams,
        num_stream_layers=args.num_stream_layers,
        mode=args.mode,
        stream_adapter_rank=args.stream_adapter_rank,
        insertion_rank=args.insertion_rank,
        prune_rank=args.prune_rank,
    )
    ref = StreamingReference(hf.to(device), sargs)
    ref.init_stream_parameters(torch.Generator().manual_seed(args.seed))
    if args.init_streams:
        try:
            ref.load_streams(args.init_streams)
        except (ValueError, FileNotFoundError) as e:
            raise TrainError(f"--init-streams: {e}") from None
    train_ex, dropped = load_examples(args.train, tok, args.max_seq_length)
    valid_ex = (
        load_examples(args.valid, tok, args.max_seq_length)[0] if args.valid else []
    )
    if args.mode == "lossless":
        n = len(train_ex)
        train_ex, valid_ex = lossless.usable(train_ex), lossless.usable(valid_ex)
        dropped += n - len(train_ex)
        if not train_ex:
            raise DataError(
                f"{args.train}: no sequence has 2 completion tokens to learn"
            )
        task = lossless.LosslessTask(
            ref,
            train_ex,
            valid_ex,
            soft=args.target == "soft",
            top_k=args.soft_top_k,
            anchors=args.anchors,
            cache_dtype=getattr(torch, args.cache_dtype),
            cache_bytes=args.cache_gb * 1e9,
            device=device,
        )
        return ref, task, None, dropped
    alpha = args.lora_alpha or 2 * args.lora_rank
    peft_model = add_shared_lora(ref, args.lora_rank, alpha, STREAM_ADAPTER_MODULES)
    ref.to(device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    task = SharedTask(
        ref, train_ex, valid_ex, pad, args.batch_size, device, args.stream_loss_weight
    )
    return ref, task, peft_model, dropped


def train(args: argparse.Namespace) -> Tuple[Dict, StreamingReference]:
    """Run training as configured by ``build_parser``'s arguments.

    Returns:
        The summary written to ``OUT/train_summary.json`` and the trained model.
    """
    t_start = time.perf_counter()
    rank, world, device = init_distributed()
    if args.threads:
        torch.set_num_threads(args.threads)
    for k, v in MODE_DEFAULTS[args.mode].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    out = Path(args.out)
    if (out / STATE_FILE).exists() and not args.resume:
        raise TrainError(f"{out}: holds a checkpoint; pass --resume or another --out")
    ref, task, peft_model, dropped = _setup(args, rank, world, device)
    objective, n_train, n_valid = task.objective, len(task.train), len(task.valid)
    plan = BatchPlan(n_train, args.batch_size, rank, world, args.seed)
    total = args.steps or max(1, math.ceil(args.epochs * plan.steps_per_epoch))
    warmup = min(100, total // 20) if args.warmup_steps is None else args.warmup_steps
    params = trainable(objective)
    opt = torch.optim.AdamW(params.values(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(total, warmup))
    meta = {"mode": args.mode, "stream_args": ref.args.to_dict()}
    meta["lora_rank"] = args.lora_rank if args.mode == "shared" else None
    start = 0
    if args.resume and (out / STATE_FILE).exists():
        start = load_checkpoint(out, objective, opt, sched, meta)
        _log(f"resumed from {out / STATE_FILE} at step {start}", rank)
    model = objective
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(objective, device_ids=ids)
    n_params = sum(p.numel() for p in params.values())
    _log(
        f"{args.mode}: {n_train} train / {n_valid} valid sequences ({dropped} dropped),"
        f" {world} process(es), {total} steps of {plan.batch_size} sequences,"
        f" {n_params:,} trainable parameters",
        rank,
    )
    val_idx = list(range(n_valid))[: args.val_limit][rank::world]
    losses = ("stream", "prune") + (("main",) if args.mode == "shared" else ())

    def evaluate(step: int) -> Dict:
        objective.eval()
        sums = empty_sums(ref.args.num_streams, losses)
        sums.update(task.evaluate(val_idx))
        objective.train()
        metrics = summarize(all_reduce_sums(sums, device), "val_")
        _log(f"step {step}: {_fmt(metrics)}", rank)
        return metrics

    evaluating = n_valid > 0 and args.eval_every > 0
    metrics = evaluate(start) if evaluating else {}
    run: Dict = {}
    seq_tokens = target_tokens = steps_run = 0
    t_loop, t_other = time.perf_counter(), 0.0
    end = min(total, start + args.run_steps) if args.run_steps else total
    bar = tqdm(total=total, initial=start, disable=rank != 0, file=sys.stderr)
    for step in range(start, end):
        idx = plan.batch(step)
        batch, n_targets = task.batch(idx, plan.rng(step))
        target_tokens += n_targets
        seq_tokens += sum(len(task.train[i].ids) for i in idx)
        loss, stats = model(batch)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params.values(), args.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        steps_run += 1
        stats["loss"], stats["steps"] = loss.detach().double(), torch.tensor(1.0)
        for k, v in stats.items():
            run[k] = run.get(k, 0) + v.cpu()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        done, t0 = step + 1 == end, time.perf_counter()
        if evaluating and ((step + 1) % args.eval_every == 0 or done):
            tpp = summarize(run).get("tokens_per_pass", 0.0)
            loss_avg = float(run["loss"] / run["steps"])
            # Peak memory at every evaluation: a killed run still leaves it in the log.
            mem = ", ".join(f"{k} {v:.0f}" for k, v in peak_memory_mb(device).items())
            _log(
                f"step {step + 1}: train loss {loss_avg:.4f}, tokens/pass {tpp:.3f}, {mem}",
                rank,
            )
            run, metrics = {}, evaluate(step + 1)
        if rank == 0 and ((step + 1) % args.save_every == 0 or done):
            save_checkpoint(out, ref, objective, opt, sched, step + 1, meta, peft_model)
        if world > 1:
            torch.distributed.barrier()
        t_other += time.perf_counter() - t0
    bar.close()
    if rank == 0 and steps_run == 0:
        save_checkpoint(out, ref, objective, opt, sched, start, meta, peft_model)
    t_train = time.perf_counter() - t_loop - t_other
    per_s = lambda n: round(n * world / max(t_train, 1e-9), 1)  # noqa: E731
    summary = {
        "mode": args.mode,
        "steps": total,
        "steps_run": steps_run,
        "last_step": start + steps_run,
        "world_size": world,
        "wall_time_s": round(time.perf_counter() - t_start, 2),
        "train_time_s": round(t_train, 2),
        "frozen_pass_time_s": round(task.frozen_time, 2),
        "s_per_step": round((t_train - task.frozen_time) / max(steps_run, 1), 4),
        "seq_tokens_per_s": per_s(seq_tokens),
        "target_tokens_per_s": per_s(target_tokens),
        "trainable_params": n_params,
        **peak_memory_mb(device),
        **metrics,
        "args": vars(args),
    }
    if rank == 0:
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        _log(json.dumps({k: v for k, v in summary.items() if k != "args"}), rank)
    return summary, ref


def main(argv: Optional[List[str]] = None) -> None:
    """CLI entry: on bad input prints ``error: ...`` and exits 1, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
