# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Write the synthetic task sets as chat-format JSONL (``{task}_{split}.jsonl``)."""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from mlx_specstream.loading.files import write_file_atomically

from . import SPLITS, DataError, chat, dialogue, instructions, mr2text, sql

TASKS: Dict[str, Callable[[str, int, int], List[dict]]] = {
    "sql": sql.generate,
    "mr2text": mr2text.generate,
    "dialogue": dialogue.generate,
    "instructions": instructions.generate,
    "chat": chat.generate,
}
DEFAULT_SIZES = {"train": 500, "valid": 50, "test": 50}


def to_record(example: dict) -> dict:
    """An example in the training format: chat ``messages`` plus the raw fields."""
    return {
        "messages": [
            {"role": "user", "content": example["prompt"]},
            {"role": "assistant", "content": example["completion"]},
        ],
        "task": example["task"],
        "id": example["id"],
        "prompt": example["prompt"],
        "completion": example["completion"],
        "meta": example.get("meta", {}),
    }


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Write ``records`` to ``path`` atomically (temp file in the same folder + rename).

    Returns:
        The number of records written.
    """
    n = 0

    def write(tmp: Path) -> None:
        nonlocal n
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
                n += 1

    write_file_atomically(path, write)
    return n


def make_datasets(
    out_dir: str,
    seed: int = 0,
    sizes: Optional[Mapping[str, int]] = None,
    tasks: Optional[Sequence[str]] = None,
    verbose: bool = False,
) -> Dict[str, Path]:
    """Generate every (task, split) file under ``out_dir``.

    Args:
        out_dir: Output folder (created if needed).
        seed: Data set seed; the same seed gives byte-identical files.
        sizes: Examples per split and task, e.g. ``{"train": 500, "valid": 50,
            "test": 50}``; missing splits take ``DEFAULT_SIZES``.
        tasks: Task names (default: all of ``TASKS``).
        verbose: Print one line per file with its size and generation speed.

    Returns:
        ``{"{task}_{split}": path}`` for every file written.
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = [s for s in sizes if s not in SPLITS]
    if unknown:
        raise DataError(
            f"unknown split '{unknown[0]}' (choose from {', '.join(SPLITS)})"
        )
    tasks = list(tasks or TASKS)
    for t in tasks:
        if t not in TASKS:
            raise DataError(f"unknown task '{t}' (choose from {', '.join(TASKS)})")
    paths = {}
    for task in tasks:
        for split in SPLITS:
            tic = time.perf_counter()
            examples = TASKS[task](split, sizes[split], seed)
            path = Path(out_dir) / f"{task}_{split}.jsonl"
            write_jsonl(path, map(to_record, examples))
            paths[f"{task}_{split}"] = path
            if verbose:
                dt = time.perf_counter() - tic
                rate = len(examples) / dt if dt > 0 else float("inf")
                print(f"{path}: {len(examples)} examples ({rate:.0f} examples/s)")
    return paths


def setup_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-specstream data",
        description="Generate seeded synthetic task sets (text-to-SQL, meaning "
        "representation to text, dialogue summaries, instructions) as JSONL.",
    )
    parser.add_argument("--out", required=True, help="Output folder.")
    parser.add_argument("--seed", type=int, default=0, help="Data set seed.")
    for split, flag in (
        ("train", "--n-train"),
        ("valid", "--n-valid"),
        ("test", "--n-test"),
    ):
        parser.add_argument(
            flag,
            type=int,
            default=DEFAULT_SIZES[split],
            help=f"Examples per task in the {split} split.",
        )
    parser.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help=f"Comma-separated tasks (default: {','.join(TASKS)}).",
    )
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """CLI entry point; on bad input prints ``error: ...`` and exits with status 1."""
    args = setup_arg_parser().parse_args(argv)
    sizes = {"train": args.n_train, "valid": args.n_valid, "test": args.n_test}
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    tic = time.perf_counter()
    try:
        paths = make_datasets(args.out, args.seed, sizes, tasks, verbose=True)
    except (DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(
        f"wrote {len(paths)} files to {args.out} in {time.perf_counter() - tic:.1f} s"
    )


if __name__ == "__main__":
    main()
