# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Evaluation prompts never seen in training, the draft corpus or calibration.

The frozen open-prompt set (``benchmarks/prompts/open_eval.jsonl``) and the
benchmarks' own prompts are checked against every prompt the shipped streams were
trained on (the seeded task sets of docs/reproducing.md, regenerated here), the
self-written conversations when present, and the calibration prompts. A prompt
leaks if its normalised text equals one of them, or if half or more of its word
8-grams (fewer words for a short prompt) occur in them (a near-twin). The set is frozen: its hash is pinned, so a
change to it is a visible decision, not an accident.
"""

import hashlib
import json
import re
from pathlib import Path
from typing import Dict, Iterable, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "benchmarks" / "prompts"
# sha256 of open_eval.jsonl as frozen on 2026-12-08, before any setting was chosen on it.
FROZEN_EVAL_SHA256 = "ed916c9e4ab8ea71e795d79ff2e020365d3f7a6ff82a9e4e9b41e3f71d4461e0"
N = 8  # words per gram of the near-twin test


def _norm(text: str) -> List[str]:
    return re.findall(r"\w+", text.lower())


def _n(words: List[str]) -> int:
    """Gram length for a prompt: 8 words, fewer for a short prompt (so that
    "What is the capital of France?" meets "Which city is the capital of France?")."""
    return max(4, min(N, len(words) - 1))


def _grams(words: List[str], n: int = N) -> Set[str]:
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def _read(name: str) -> List[dict]:
    with open(PROMPTS / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluation_prompts() -> Dict[str, str]:
    """id -> prompt of everything reported as an evaluation."""
    from benchmarks.bench import CHAT_PROMPTS, MORE_CHAT
    from benchmarks.bench_server import PROMPTS as SERVER_PROMPTS

    out = {r["id"]: r["prompt"] for r in _read("open_eval.jsonl")}
    for name, group in (
        ("bench", CHAT_PROMPTS + MORE_CHAT),
        ("bench_server", SERVER_PROMPTS),
    ):
        out.update({f"{name}-{i}": p for i, p in enumerate(group)})
    return out


def training_prompts() -> Iterable[str]:
    """Every prompt the shipped streams' stages drew from (docs/reproducing.md),
    regenerated from the same seeds and sizes (a superset: every task, every
    split), and the self-written conversations' user turns where they exist."""
    from train.datasets import make

    for seed, sizes in ((0, (320, 40, 40)), (1, (220, 1, 1))):
        for task, gen in make.TASKS.items():
            for split, n in zip(("train", "valid", "test"), sizes):
                for ex in gen(split, n, seed):
                    yield ex["prompt"]
    for seed, sizes in ((0, (900, 40, 40)), (1, (900, 1, 1))):
        for split, n in zip(("train", "valid", "test"), sizes):
            for ex in make.TASKS["chat"](split, n, seed):
                yield ex["prompt"]
    for path in sorted((ROOT / "data" / "magpie").glob("*.jsonl")):
        from train.datasets import magpie

        for rec in magpie.read(path):
            yield from (m["content"] for m in rec["messages"] if m["role"] == "user")


def _leaks(evals: Dict[str, str], seen: Iterable[str]) -> List[str]:
    exact: Set[str] = set()
    grams: Dict[int, Set[str]] = {n: set() for n in range(4, N + 1)}
    for text in seen:
        words = _norm(text)
        exact.add(" ".join(words))
        for n, g in grams.items():
            g |= _grams(words, n)
    found = []
    for key, prompt in evals.items():
        words = _norm(prompt)
        n = _n(words)
        mine = _grams(words, n)
        shared = len(mine & grams[n]) / len(mine)
        if " ".join(words) in exact or shared >= 0.5:
            found.append(f"{key} ({shared:.0%} of its {n}-grams): {prompt[:80]!r}")
    return found


def test_the_open_set_is_frozen_and_its_splits_disjoint():
    data = (PROMPTS / "open_eval.jsonl").read_bytes()
    assert hashlib.sha256(data).hexdigest() == FROZEN_EVAL_SHA256
    evals, valid = _read("open_eval.jsonl"), _read("open_valid.jsonl")
    cats = {r["category"] for r in evals}
    assert cats == {r["category"] for r in valid} and len(cats) >= 12
    for r in evals + valid:
        assert set(r) == {"id", "category", "in_distribution", "prompt"}
    ids = [r["id"] for r in evals + valid]
    assert len(ids) == len(set(ids))
    # No passage or phrase is shared between the splits.
    g = set().union(*(_grams(_norm(r["prompt"])) for r in evals))
    assert not g & set().union(*(_grams(_norm(r["prompt"])) for r in valid))


def test_no_evaluation_prompt_in_training_or_calibration():
    from mlx_specstream.calibrate import CALIBRATION_PROMPTS

    evals = evaluation_prompts()
    assert not _leaks(evals, training_prompts()), "in training data"
    assert not _leaks(evals, CALIBRATION_PROMPTS), "in the calibration prompts"
    valid = {r["id"]: r["prompt"] for r in _read("open_valid.jsonl")}
    assert not _leaks(valid, training_prompts()), "validation prompts in training"


def test_the_leak_test_has_power():
    """A training prompt, a near-twin of one and a calibration prompt are caught."""
    from mlx_specstream.calibrate import CALIBRATION_PROMPTS

    train = list(training_prompts())
    long_one = next(p for p in train if len(_norm(p)) >= 3 * N)
    twin = long_one.replace(".", "!") + " Please answer briefly."
    probe = {"same": train[5], "twin": twin, "fresh": "Zyx qwv plok?"}
    assert sorted(k.split()[0] for k in _leaks(probe, train)) == ["same", "twin"]
    assert _leaks({"c": CALIBRATION_PROMPTS[1]}, CALIBRATION_PROMPTS)


@pytest.mark.slow
def test_no_evaluation_answer_in_the_draft_corpus():
    """The shipped draft corpus holds the model's answers to training prompts: an
    evaluation prompt whose greedy answer opens with a run found there has a
    twin in training (as "What is the capital of France?" had)."""
    import numpy as np

    from mlx_specstream import load
    from mlx_specstream.decoding.state import state_of
    from mlx_specstream.generate import stream_generate
    from mlx_specstream.prompts import apply_chat_template, encode_prompt

    try:  # fetched and converted by .ci/run; elsewhere it may be unavailable
        model, tokenizer = load("smollm2-135m-instruct")
    except Exception as e:  # noqa: BLE001 - no network, no cache: skip cleanly
        pytest.skip(f"the default model is unavailable here: {e}")
    store = state_of(model).ngrams
    assert store is not None, "the default model ships a draft corpus"
    corpus = np.asarray(store.corpus, dtype=np.int64)
    W, SHORTEST = 12, 6  # answer tokens compared (an answer may end sooner)
    runs = {
        n: {corpus[i : i + n].tobytes() for i in range(len(corpus) - n + 1)}
        for n in range(SHORTEST, W + 1)
    }
    found = []
    for key, prompt in evaluation_prompts().items():
        ids = encode_prompt(tokenizer, apply_chat_template(tokenizer, prompt))
        answer = [
            r.token
            for r in stream_generate(
                model, tokenizer, ids, max_tokens=W, speculative=False
            )
        ]
        answer = [t for t in answer if t not in tokenizer.eos_token_ids]
        n = len(answer)
        if n >= SHORTEST and np.asarray(answer, np.int64).tobytes() in runs[n]:
            found.append(f"{key}: {prompt[:60]!r}")
    assert not found, found
