# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Self-distillation targets: the model's own greedy answers to a JSONL file of prompts.

Streams are trained to predict what the frozen base model will say, so the targets are
its greedy completions (chat template applied), generated in batches with mlx-lm's
``BatchGenerator`` (continuous batching). Each finished record is appended to the
output at once, so an interrupted run resumes where it stopped: ids already in the
output are skipped.
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import mlx.core as mx
import mlx_lm
from mlx_lm.generate import BatchGenerator
from tqdm import tqdm

from mlx_specstream.blas import active_blas, ensure_openblas
from mlx_specstream.loading.files import read_json, write_text_atomically
from mlx_specstream.loading.model_io import normalise_config
from mlx_specstream.loading.registry import resolve

from .datasets import DataError

DEFAULT_MAX_TOKENS = 128
DEFAULT_BATCH_SIZE = 32


@dataclass
class DistillStats:
    """What one ``distill`` call did."""

    prompts: int = 0  # generated in this call
    skipped: int = 0  # already in the output
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_sec(self) -> float:
        """Generated tokens per wall-clock second (prompt processing included)."""
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


def _prompt_of(record: Dict[str, Any]) -> Optional[str]:
    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    for m in record.get("messages") or []:
        if isinstance(m, dict) and m.get("role") == "user":
            return m.get("content")
    return None


def read_prompts(paths: Union[str, Sequence[str]]) -> List[Dict[str, Any]]:
    """Records of one or more prompt JSONL files (``id`` plus ``prompt`` or a user
    message); ids must be unique across all of them.

    Raises:
        DataError: naming the file and line of the first bad record.
    """
    records, ids = [], set()
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: input file not found")
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{i}: not valid JSON ({e.msg})") from None
                if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                    raise DataError(f"{path}:{i}: record has no string 'id'")
                if not _prompt_of(rec):
                    raise DataError(
                        f"{path}:{i}: record has no 'prompt' or user message"
                    )
                if rec["id"] in ids:
                    raise DataError(f"{path}:{i}: duplicate id '{rec['id']}'")
                ids.add(rec["id"])
                records.append(rec)
    return records


def read_done(path: str) -> Set[str]:
    """Ids already in an output file; drops a torn last line left by a killed run."""
    path = Path(path)
    if not path.exists():
        return set()
    good, ids = [], set()
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for line in lines:
        try:
            rec = json.loads(line)
            ids.add(rec["id"])
            good.append(line if line.endswith("\n") else line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    if len(good) != len(lines) or (lines and not lines[-1].endswith("\n")):
        write_text_atomically(path, "".join(good))
    return ids


def resolve_model(name_or_path: str) -> Path:
    """A model directory: an existing path, else a name known to the registry."""
    p = Path(name_or_path)
    if p.exists():
        if not (p / "config.json").is_file():
            raise DataError(f"{p}: not a model directory (no config.json)")
        return p
    return Path(resolve(name_or_path))


def load(path: Path, dtype: str = "float32") -> Tuple[Any, Any]:
    """Load a model directory with mlx-lm and cast it (``dtype``: float32, float16,
    bfloat16 or ``native`` to keep the stored precision)."""
    config = read_json(path / "config.json")
    # transformers 5 moves rope_theta into rope_parameters; mlx-lm would fall back to
    # its 10000 default and silently produce a different model.
    overrides = {k: v for k, v in normalise_config(config).items() if k not in config}
    model, tokenizer = mlx_lm.load(str(path), model_config=overrides or None)
    if dtype != "native":
        model.set_dtype(getattr(mx, dtype))
    return model, tokenizer


def chat_tokens(tokenizer: Any, prompt: str) -> List[int]:
    """Token ids of ``prompt`` as a single user turn, generation prompt appended."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the tokenizer has no chat template")
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True
    )
    if hasattr(ids, "keys"):  # some transformers versions return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def distill(
    model: Any,
    tokenizer: Any,
    records: List[Dict[str, Any]],
    output_path: str,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    model_name: str = "",
    backend: str = "mlx",
    model_dir: Optional[Path] = None,
) -> DistillStats:
    """Append the model's greedy completion of every record not yet in the output.

    Args:
        model: An mlx-lm model.
        tokenizer: Its ``TokenizerWrapper``.
        records: Input records (see ``read_prompts``).
        output_path: JSONL output; existing ids are skipped (resume).
        max_tokens: Most tokens generated per prompt.
        batch_size: Sequences decoded together.
        progress: Show a progress bar.
        model_name: Recorded in each output record.
        backend: "mlx" (mlx-lm's BatchGenerator on ``model``) or "torch"
            (transformers on ``model_dir``; faster on Linux CPUs).
        model_dir: The model directory, for the torch backend.

    Returns:
        A ``DistillStats``. Output records are the input records with ``completion``
        and the assistant message replaced by the model's text, the old completion in
        ``reference``, and ``prompt_tokens``, ``completion_tokens`` (ids, end-of-turn
        token left out) and ``finish_reason`` ("stop" or "length").
    """
    if max_tokens < 1 or batch_size < 1:
        raise DataError("--max-tokens and --batch-size must be >= 1")
    done = read_done(output_path)
    todo = [r for r in records if r["id"] not in done]
    stats = DistillStats(skipped=len(records) - len(todo))
    if not todo:
        return stats
    prompts = [chat_tokens(tokenizer, _prompt_of(r)) for r in todo]
    # Similar lengths side by side: each prefill batch pads to its longest prompt.
    order = sorted(range(len(todo)), key=lambda i: len(prompts[i]))
    tic = time.perf_counter()
    if backend == "torch":
        from .distill_torch import torch_greedy_batches  # torch: for this backend only

        results = torch_greedy_batches(
            model_dir, prompts, order, max_tokens, batch_size, tokenizer.eos_token_ids
        )
    else:
        results = mlx_batches(model, tokenizer, prompts, order, max_tokens, batch_size)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(todo), unit="prompt", disable=not progress, file=sys.stderr)
    try:
        with open(output_path, "a", encoding="utf-8") as out:
            for i, ids, reason in results:
                rec = _output(todo[i], prompts[i], ids, reason, tokenizer)
                rec["distill"] = {"model": model_name, "max_tokens": max_tokens}
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                out.flush()
                stats.prompts += 1
                stats.prompt_tokens += len(prompts[i])
                stats.generated_tokens += len(ids) + (reason == "stop")
                stats.seconds = time.perf_counter() - tic
                bar.update(1)
                bar.set_postfix_str(f"{stats.tokens_per_sec:.1f} tok/s", refresh=False)
    finally:
        bar.close()
    stats.seconds = time.perf_counter() - tic
    return stats


def mlx_batches(model, tokenizer, prompts, order, max_tokens, batch_size):
    """Yield ``(prompt index, completion ids without EOS, finish reason)``."""
    gen = BatchGenerator(
        model,
        max_tokens=max_tokens,
        stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        completion_batch_size=batch_size,
        prefill_batch_size=batch_size,
    )
    uids = gen.insert([prompts[i] for i in order])
    index = dict(zip(uids, order))
    tokens: Dict[int, List[int]] = {uid: [] for uid in uids}
    try:
        while responses := gen.next_generated():
            for r in responses:
                if r.finish_reason != "stop":  # the end-of-turn token is not text
                    tokens[r.uid].append(r.token)
                if r.finish_reason is not None:
                    yield index[r.uid], tokens.pop(r.uid), r.finish_reason
    finally:
        gen.close()


def _output(
    rec: Dict[str, Any], prompt_ids: List[int], ids: List[int], reason: str, tokenizer
) -> Dict[str, Any]:
    text = tokenizer.decode(ids)
    out = dict(rec, reference=rec.get("completion", ""), completion=text)
    out["messages"] = [
        {"role": "user", "content": _prompt_of(rec)},
        {"role": "assistant", "content": text},
    ]
    out.update(prompt_tokens=prompt_ids, completion_tokens=ids, finish_reason=reason)
    return out


def setup_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-specstream distill",
        description="Replace the completions of a prompt JSONL file with the model's "
        "own greedy answers (self-distillation targets). Resumable.",
    )
    parser.add_argument("--model", required=True, help="Model directory or name.")
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        help="Prompt JSONL file(s), e.g. data/*_train.jsonl.",
    )
    parser.add_argument("--output", required=True, help="Output JSONL file.")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16", "native"],
        help="Compute precision (float32 is the fast path on CPU).",
    )
    parser.add_argument(
        "--backend",
        default="mlx",
        choices=["mlx", "torch"],
        help="mlx: mlx-lm batched decoding; torch: transformers (3x faster on Linux CPUs).",
    )
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """CLI entry point; on bad input prints ``error: ...`` and exits with status 1."""
    args = setup_arg_parser().parse_args(argv)
    # the runtime's CLI re-executes with OpenBLAS preloaded on Linux
    print(f"BLAS: {active_blas()}", file=sys.stderr)
    try:
        records = read_prompts(args.input)
        path = resolve_model(args.model)
        model, tokenizer = load(path, args.dtype)
        stats = distill(
            model,
            tokenizer,
            records,
            args.output,
            args.max_tokens,
            args.batch_size,
            not args.no_progress,
            args.model,
            args.backend,
            path,
        )
    except (ValueError, OSError) as e:  # DataError, or the registry's own errors
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(
        f"{args.output}: {stats.prompts} new, {stats.skipped} already done; "
        f"{stats.generated_tokens} tokens in {stats.seconds:.1f} s "
        f"({stats.tokens_per_sec:.1f} tokens/s, batch size {args.batch_size})"
    )


if __name__ == "__main__":
    ensure_openblas()  # fp32 decoding on Linux CPU is ~30x faster with OpenBLAS
    main()
