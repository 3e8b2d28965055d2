# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Stage 1 of reproducing the default model's streams: the prompt subsets.

    python scripts/repro_stage1_subsets.py [--data data/smollm2]

Reads ``{task}_{split}.jsonl`` as written by
``mlx-specstream data --out data/smollm2 --seed 0 --n-train 320 --n-valid 40 --n-test 40``
and writes ``subset_train.jsonl``, ``subset_valid.jsonl`` and ``subset_test.jsonl`` beside
them: the first 100 train / 10 valid / 20 test lines of each task, tasks in the order
below. The files are byte-identical to those the shipped streams were trained from
(docs/reproducing.md, stage 1).
"""

import argparse
from pathlib import Path

from mlx_specstream.loading.files import write_text_atomically

TASKS = ("sql", "mr2text", "dialogue", "instructions")  # the order the streams used
SIZES = (("train", 100), ("valid", 10), ("test", 20))  # lines per task and split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/smollm2", help="folder of the task files")
    data = Path(p.parse_args().data)
    for split, n in SIZES:
        text = ""
        for task in TASKS:
            lines = (data / f"{task}_{split}.jsonl").read_text(encoding="utf-8")
            text += "\n".join(lines.splitlines()[:n]) + "\n"
        out = data / f"subset_{split}.jsonl"
        write_text_atomically(out, text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
