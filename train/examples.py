# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Training data: JSONL records -> token ids plus a mask of the tokens to learn.

Each line is ``{"prompt": str, "completion": str}`` or ``{"messages": [{"role",
"content"}, ...]}``. The tokenizer's chat template is applied when it has one
(prompt/completion become one user and one assistant turn); loss covers the
completion / assistant tokens only. Records written by ``mlx-specstream distill``
also carry the exact ids (``prompt_tokens``, ``completion_tokens``, ``finish_reason``);
those are used as they are, since re-tokenizing the text can differ from what the
model generated.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from .datasets import DataError


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file that does not exist."""


@dataclass
class Example:
    """One tokenized sequence.

    Attributes:
        ids: token ids (T,).
        target: (T,) bool, token i is a completion token (to be predicted).
    """

    ids: np.ndarray
    target: np.ndarray


def read_jsonl(path: Union[str, Path]) -> List[Tuple[int, Dict]]:
    """Parse a JSONL file into (line number, record) pairs, checking each record."""
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(f"{path}: no such file")
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            _check_record(rec, f"{path}:{n}")
            records.append((n, rec))
    if not records:
        raise DataError(f"{path}: no records")
    return records


def _check_record(rec, where: str) -> None:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object")
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: 'messages' must be a non-empty list")
        for m in msgs:
            if not (
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
            ):
                raise DataError(
                    f"{where}: each message needs string 'role' and 'content'"
                )
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(f"{where}: no assistant message to learn")
    elif isinstance(rec.get("prompt"), str) and isinstance(rec.get("completion"), str):
        if not rec["completion"]:
            raise DataError(f"{where}: empty 'completion'")
    else:
        raise DataError(
            f"{where}: expected string 'prompt' and 'completion', or 'messages'"
        )


def _segments(tokenizer, rec: Dict) -> Tuple[str, List[Tuple[int, int]]]:
    """Full text and the character spans to learn."""
    if "messages" not in rec and not getattr(tokenizer, "chat_template", None):
        # plain LM: prompt then completion then EOS
        eos = tokenizer.eos_token or ""
        text = rec["prompt"] + rec["completion"] + eos
        return text, [(len(rec["prompt"]), len(text))]
    msgs = rec.get("messages") or [
        {"role": "user", "content": rec["prompt"]},
        {"role": "assistant", "content": rec["completion"]},
    ]
    render = lambda m, gen: tokenizer.apply_chat_template(  # noqa: E731
        m, tokenize=False, add_generation_prompt=gen
    )
    text = render(msgs, False)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        # the assistant turn is what msgs[:i+1] adds after msgs[:i] + generation prompt
        prefix, upto = render(msgs[:i], True), render(msgs[: i + 1], False)
        if not (text.startswith(upto) and upto.startswith(prefix)):
            raise ValueError(
                "the chat template is not prefix-stable; cannot mask turns"
            )
        spans.append((len(prefix), len(upto)))
    return text, spans


def _exact_ids(tokenizer, rec: Dict, where: str) -> Tuple[List[int], int]:
    """Ids and prompt length of a distilled record (end-of-turn re-added on "stop")."""
    ids = [rec["prompt_tokens"], rec["completion_tokens"]]
    if not all(isinstance(x, list) and all(isinstance(i, int) for i in x) for x in ids):
        raise DataError(
            f"{where}: 'prompt_tokens'/'completion_tokens' must be int lists"
        )
    eos = [tokenizer.eos_token_id] if rec.get("finish_reason") == "stop" else []
    return ids[0] + ids[1] + eos, len(ids[0])


def encode(tokenizer, rec: Dict, max_length: int, where: str = "") -> Example:
    """Tokenize a record; token i is a target if it starts inside a learned span."""
    if "prompt_tokens" in rec and "completion_tokens" in rec:
        ids, n_prompt = _exact_ids(tokenizer, rec, where)
        ids = np.asarray(ids, dtype=np.int64)[:max_length]
        return Example(ids=ids, target=np.arange(len(ids)) >= max(n_prompt, 1))
    try:
        text, spans = _segments(tokenizer, rec)
    except ValueError as e:
        raise DataError(f"{where}: {e}") from None
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)[:max_length]
    starts = np.asarray([o[0] for o in enc["offset_mapping"]], dtype=np.int64)[
        :max_length
    ]
    target = np.zeros(len(ids), dtype=bool)
    for s, e in spans:
        target |= (starts >= s) & (starts < e)
    target[0] = False  # nothing predicts the first token
    return Example(ids=ids, target=target)


def load_examples(
    path: Union[str, Path], tokenizer, max_length: int
) -> Tuple[List[Example], int]:
    """Read and tokenize a JSONL file.

    Returns:
        The examples with at least one target token, and how many were dropped
        (all targets cut off by ``max_length``).
    """
    out, dropped = [], 0
    for n, rec in read_jsonl(path):
        ex = encode(tokenizer, rec, max_length, f"{path}:{n}")
        if ex.target.any():
            out.append(ex)
        else:
            dropped += 1
    if not out:
        raise DataError(
            f"{path}: no record has completion tokens within {max_length} tokens"
        )
    return out, dropped


class BatchPlan:
    """Deterministic batches: a static shard per rank, reshuffled each epoch.

    Batch ``step`` depends only on (seed, rank, step), so a resumed run sees the same
    data as an uninterrupted one. All ranks take the same number of steps per epoch.
    """

    def __init__(
        self, num_examples: int, batch_size: int, rank: int, world: int, seed: int
    ):
        per_rank = num_examples // world
        if per_rank == 0:
            raise DataError(f"{num_examples} training examples for {world} processes")
        self.indices = np.arange(num_examples)[rank::world][:per_rank]
        self.batch_size = min(batch_size, per_rank)
        self.steps_per_epoch = -(-per_rank // self.batch_size)
        self.rank, self.seed = rank, seed

    def batch(self, step: int) -> List[int]:
        """Example indices (into the full list) of training step ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch, self.rank]).permutation(
            self.indices
        )
        return order[k * self.batch_size : (k + 1) * self.batch_size].tolist()

    def rng(self, step: int) -> np.random.Generator:
        """Randomness of step ``step`` on this rank (anchor sampling)."""
        return np.random.default_rng([self.seed, 1_000_003, step, self.rank])
