# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Stage 3 of reproducing the default model's streams: new prompts from data seed 1.

    python scripts/repro_stage3_more_train_s1.py [--data data/smollm2] [--new data/smollm2_s1]

Reads the seed-1 training prompts written by
``mlx-specstream data --out data/smollm2_s1 --seed 1 --n-train 220 --n-valid 1 --n-test 1``,
drops every prompt that occurs in a seed-0 split (train, valid or test of any task) or
earlier in the new set (with the shipped data: 46 instructions and 3 dialogues of 880),
shuffles the rest with ``random.Random(1)`` and writes ``more_train_s1.jsonl`` into
``--data``, byte-identical to the file the shipped streams were trained from
(docs/reproducing.md, stage 3). A prompt is compared by its ``prompt`` field, else by
its ``messages``.
"""

import argparse
import json
import random
from pathlib import Path

from mlx_specstream.loading.files import write_text_atomically

TASKS = ("sql", "mr2text", "dialogue", "instructions")  # the order the streams used
SPLITS = ("train", "valid", "test")


def key(line: str) -> str:
    record = json.loads(line)
    return json.dumps(record.get("prompt") or record["messages"], sort_keys=True)


def read_lines(path: Path) -> list:
    return path.read_text(encoding="utf-8").splitlines()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/smollm2", help="seed-0 task files; output")
    p.add_argument("--new", default="data/smollm2_s1", help="seed-1 task files")
    args = p.parse_args()
    data, new = Path(args.data), Path(args.new)
    seen = {
        key(line)
        for task in TASKS
        for split in SPLITS
        for line in read_lines(data / f"{task}_{split}.jsonl")
        if line.strip()
    }
    lines = []
    for task in TASKS:
        for line in read_lines(new / f"{task}_train.jsonl"):
            if line.strip() and key(line) not in seen:
                seen.add(key(line))
                lines.append(line)
    random.Random(1).shuffle(lines)
    out = data / "more_train_s1.jsonl"
    write_text_atomically(out, "\n".join(lines) + "\n")
    print(f"wrote {out} ({len(lines)} prompts)")


if __name__ == "__main__":
    main()
