# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Batched greedy generation with PyTorch, the fast distillation backend on Linux CPUs.

Measured on the 2-core development machine (SmolLM2-135M, fp32, batch 64): about 71
tokens/s, against 21-24 tokens/s for mlx-lm's ``BatchGenerator`` on the MLX CPU
backend, whose non-GEMM ops run single-threaded. On Apple silicon use the MLX backend.
"""

from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

import torch
from transformers import AutoModelForCausalLM


def torch_greedy_batches(
    model_dir: Path,
    prompts: Sequence[List[int]],
    order: Sequence[int],
    max_tokens: int,
    batch_size: int,
    eos_ids: Sequence[int],
) -> Iterator[Tuple[int, List[int], str]]:
    """Yield ``(prompt index, completion ids without EOS, finish reason)``.

    Prompts are taken in ``order`` (similar lengths together) and left-padded.
    """
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32
    ).eval()
    eos = set(eos_ids)
    pad = next(iter(eos))
    for s in range(0, len(order), batch_size):
        idx = list(order[s : s + batch_size])
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=list(eos),
                pad_token_id=pad,
            )
        for row, i in enumerate(idx):
            new = out[row, width:].tolist()
            stop = next((k for k, t in enumerate(new) if t in eos), None)
            yield (i, new[:stop], "stop") if stop is not None else (i, new, "length")
