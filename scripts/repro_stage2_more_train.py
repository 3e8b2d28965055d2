# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Stage 2 of reproducing the default model's streams: the remaining training prompts.

    python scripts/repro_stage2_more_train.py [--data data/smollm2]

Takes training lines 100..319 of every task (the 880 prompts stage 1 did not use),
shuffles them with ``random.Random(0)`` so that tasks interleave, and writes
``more_train.jsonl`` beside the task files, byte-identical to the file the shipped
streams were trained from (docs/reproducing.md, stage 2).
"""

import argparse
import random
from pathlib import Path

from mlx_specstream.loading.files import write_text_atomically

TASKS = ("sql", "mr2text", "dialogue", "instructions")  # the order the streams used


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/smollm2", help="folder of the task files")
    data = Path(p.parse_args().data)
    lines = [
        line
        for task in TASKS
        for line in (data / f"{task}_train.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()[100:320]
    ]
    random.Random(0).shuffle(lines)
    out = data / "more_train.jsonl"
    write_text_atomically(out, "\n".join(lines) + "\n")
    print(f"wrote {out} ({len(lines)} prompts)")


if __name__ == "__main__":
    main()
