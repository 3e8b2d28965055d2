# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Stages 4-6 of reproducing the default model's streams: open chat data.

    python scripts/repro_stage4_chat.py prompts [--data data/smollm2] [--chat data/chat]
    python scripts/repro_stage4_chat.py prompts6 [--chat data/chat] [--chat-s1 data/chat_s1]
    python scripts/repro_stage4_chat.py mix --stage 4|5|6 [--chat data/chat]

``prompts`` reads the seed-0 task files (``mlx-specstream data --out data/smollm2 --seed 0
--n-train 320 ...``) and the chat task set (``mlx-specstream data --out data/chat --seed 0
--tasks chat --n-train 900 ...``) and writes, in ``--chat``:

- ``chat_train600.jsonl``: the first 600 chat training prompts (stage 4);
- ``chat_train_more.jsonl``: chat training prompts 601-900 (stage 5);
- ``tasks_sample_train.jsonl``: the first 50 training prompts of each task (prompts the
  stage-1 streams were trained on, so the tasks are not forgotten);
- ``tasks_sample2_train.jsonl``: training prompts 51-125 of each task (stage 5).

``prompts6`` writes the stage-6 prompts, in ``--chat``:

- ``chat_train_rest.jsonl``: the prompts of ``chat_train_more.jsonl`` that stage 5 did
  not distill (it was stopped after 128 of them);
- ``chat_train_s1.jsonl``: the seed-1 chat training prompts (``mlx-specstream data --out
  data/chat_s1 --seed 1 --tasks chat --n-train 900 ...``) that are not a seed-0 prompt of
  any split (441 of 900: the templates give a limited number of distinct prompts).

``mix`` shuffles the distilled files (``--chat``/distilled/) into the stage's training
file, ``train_v{stage}.jsonl`` (docs/reproducing.md).
"""

import argparse
import json
import random
from pathlib import Path

from mlx_specstream.loading.files import write_text_atomically

TASKS = ("sql", "mr2text", "dialogue", "instructions")
MIXES = {  # stage: (shuffle seed, distilled files)
    4: (0, ("chat_train", "tasks_sample_train")),
    5: (
        1,
        ("chat_train", "chat_train_more", "tasks_sample_train", "tasks_sample2_train"),
    ),
    6: (
        2,
        (
            "chat_train",
            "chat_train_more",
            "chat_train_rest",
            "chat_train_s1",
            "tasks_sample_train",
            "tasks_sample2_train",
        ),
    ),
}


def _lines(path: Path) -> list:
    return path.read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list) -> None:
    write_text_atomically(path, "\n".join(lines) + "\n")
    print(f"wrote {path} ({len(lines)} lines)")


def prompts(data: Path, chat: Path) -> None:
    train = _lines(chat / "chat_train.jsonl")
    _write(chat / "chat_train600.jsonl", train[:600])
    _write(chat / "chat_train_more.jsonl", train[600:900])
    tasks = {t: _lines(data / f"{t}_train.jsonl") for t in TASKS}
    _write(chat / "tasks_sample_train.jsonl", [x for t in TASKS for x in tasks[t][:50]])
    _write(
        chat / "tasks_sample2_train.jsonl",
        [x for t in TASKS for x in tasks[t][50:125]],
    )


def prompts6(chat: Path, chat_s1: Path) -> None:
    done = {
        json.loads(x)["id"] for x in _lines(chat / "distilled/chat_train_more.jsonl")
    }
    rest = [
        x
        for x in _lines(chat / "chat_train_more.jsonl")
        if json.loads(x)["id"] not in done
    ]
    _write(chat / "chat_train_rest.jsonl", rest)
    seen = {
        json.loads(x)["prompt"]
        for split in ("train", "valid", "test")
        for x in _lines(chat / f"chat_{split}.jsonl")
    }
    new = [
        x
        for x in _lines(chat_s1 / "chat_train.jsonl")
        if json.loads(x)["prompt"] not in seen
    ]
    _write(chat / "chat_train_s1.jsonl", new)


def mix(chat: Path, stage: int) -> None:
    seed, files = MIXES[stage]
    lines = [x for f in files for x in _lines(chat / "distilled" / f"{f}.jsonl")]
    random.Random(seed).shuffle(lines)
    _write(chat / "distilled" / f"train_v{stage}.jsonl", lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=("prompts", "prompts6", "mix"))
    p.add_argument("--data", default="data/smollm2", help="seed-0 task files")
    p.add_argument("--chat", default="data/chat", help="chat task set folder")
    p.add_argument("--chat-s1", default="data/chat_s1", help="seed-1 chat task set")
    p.add_argument("--stage", type=int, choices=sorted(MIXES), default=4)
    args = p.parse_args()
    if args.step == "prompts":
        prompts(Path(args.data), Path(args.chat))
    elif args.step == "prompts6":
        prompts6(Path(args.chat), Path(args.chat_s1))
    else:
        mix(Path(args.chat), args.stage)


if __name__ == "__main__":
    main()
