# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Self-written conversations (``train/datasets/magpie.py``): the plan of each
conversation is a function of (seed, index), splits are disjoint by construction,
filters drop degenerate turns, and an interrupted file resumes cleanly."""

import json

from train.datasets import magpie


def test_plans_are_seeded_balanced_and_split_by_index():
    a = [magpie.plan(7, i) for i in range(240)]
    b = [magpie.plan(7, i) for i in range(240)]
    assert [(p.category, p.opener, p.follow_up, p.split) for p in a] == [
        (p.category, p.opener, p.follow_up, p.split) for p in b
    ]
    counts = {c: sum(p.category == c for p in a) for c in magpie.CATEGORIES}
    assert set(counts.values()) == {240 // len(magpie.CATEGORIES)}
    splits = [p.split for p in a]
    assert 0.03 < splits.count("valid") / len(splits) < 0.2
    # Another seed gives other splits: the split is drawn, not a fixed pattern.
    assert splits != [magpie.plan(8, i).split for i in range(240)]
    for p in a:  # passages only where the category works on a text
        assert len(p.passage_openers) == magpie.PASSAGES.get(p.category, 0)
        assert p.opener in magpie.CATEGORIES[p.category]


def test_filters():
    assert magpie.degenerate("hi there")
    assert magpie.degenerate("tell me the the the the answer please")
    assert not magpie.degenerate("tell me how a heat pump works in winter")
    assert magpie.dedup_key("How do I, sort a LIST in Python quickly today?") == (
        magpie.dedup_key("how do i sort a list in python quickly today")
    )
    assert magpie._whole_sentences("One. Two three. Four fi") == "One. Two three."


def test_resume_cuts_an_interrupted_chunk(tmp_path):
    path = tmp_path / "conv.jsonl"

    def rec(i, key):
        return {
            "messages": [{"role": "user", "content": "q"}],
            "id": f"magpie-{i}",
            "split": "train",
            "meta": {"key": key},
        }

    lines = [rec(0, "a b"), rec(1, "c d"), {"type": "chunk", "next": 2}, rec(2, "e f")]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    nxt, seen = magpie.existing(path)
    assert (nxt, seen) == (2, {"a b", "c d"})
    kept = [json.loads(x) for x in path.read_text().splitlines()]
    assert kept == lines[:3]  # the half-written chunk is gone
    assert [r["id"] for r in magpie.read(path)] == ["magpie-0", "magpie-1"]
    assert magpie.existing(tmp_path / "none.jsonl") == (0, set())
