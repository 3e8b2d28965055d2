# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Store the model's own answers as the draft corpus prompt lookup falls back on.

    python benchmarks/draft_corpus.py --records DISTILLED.jsonl [...] \\
        (--write-assets NAME | --streams DIR/streams.safetensors)

Reads ``mlx-specstream distill`` output (the model's greedy answers to training
prompts; never held-out ones) and writes their ``completion_tokens``, one sequence
after another, as the ``draft_corpus`` tensor of a stream file: the shipped streams'
(``--write-assets``) or any converted model's (``--streams``). Decoding builds an
n-gram table from it (``mlx_specstream/decoding/ngrams.py``).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from mlx_specstream.benchmarks.draft_vocab import ASSETS, write_stream_tensor

from mlx_specstream.decoding.ngrams import NgramStore
from mlx_specstream.format import DRAFT_CORPUS, STREAMS_FILE


def read_answers(paths) -> list:
    """Every record's ``completion_tokens``, in file order."""
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append([int(t) for t in json.loads(line)["completion_tokens"]])
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(
                        f"{path}:{i}: not a distill record with completion_tokens ({e})"
                    ) from None
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", nargs="+", required=True)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--write-assets", metavar="NAME", help="a shipped model")
    where.add_argument("--streams", help="a stream file to add the corpus to")
    args = p.parse_args(argv)
    file = (
        Path(args.streams)
        if args.streams
        else ASSETS / args.write_assets / STREAMS_FILE
    )
    try:
        if not file.exists():
            raise FileNotFoundError(f"{file}: no such stream file")
        store = NgramStore.from_sequences(read_answers(args.records))
        write_stream_tensor(file, DRAFT_CORPUS, store.corpus)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    n = int((store.corpus >= 0).sum())
    print(
        f"wrote draft_corpus ({n} tokens, {np.count_nonzero(store.corpus < 0)} answers) to {file}"
    )


if __name__ == "__main__":
    main()
