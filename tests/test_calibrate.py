# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Calibration replays greedy decoding; its tokens per pass must be the decoder's."""

import pytest
from conftest import tiny_hf_tokenizer, tiny_model, wrap

from mlx_specstream.calibrate import calibrate, replay, stream_candidates
from mlx_specstream.format import StreamArgs
from mlx_specstream.generate import stream_generate
from mlx_specstream.tree import TreeShape


@pytest.mark.parametrize("budget", [1, 4, 12])
def test_replay_counts_the_decoders_passes(budget):
    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    # Strong random streams so that some drafts are accepted.
    model = tiny_model(
        3, StreamArgs(num_streams=3, num_stream_layers=3), stream_scale=0.2
    )
    prompt = [7, 3, 9, 12, 40, 41]
    rs = list(
        stream_generate(
            model, tok, prompt, max_tokens=40, tree=TreeShape(budget=budget)
        )
    )
    out = [t for r in rs for t in r.tokens]
    seq = prompt + out
    cands = stream_candidates(model, seq, budget)
    passes, tokens, depths = replay(cands, seq, len(prompt), TreeShape(budget=budget))
    assert tokens == 40
    assert passes == rs[-1].forward_calls
    assert depths == [r.accepted for r in rs[1:]]


def test_calibrate_picks_a_measured_budget():
    tok = wrap(tiny_hf_tokenizer())
    model = tiny_model(0)
    cal = calibrate(
        model, tok, prompts=["t1 t2 t3", "t9 t8"], budgets=(1, 4, 8), max_tokens=12
    )
    assert cal.budget in (1, 4, 8)
    assert cal.costs[1] == 1.0 and cal.tokens_per_pass[1] == 1.0
    best = max(cal.tokens_per_pass[T] / cal.costs[T] for T in (1, 4, 8))
    assert cal.expected_speedup == best


def test_replay_with_prompt_lookup_matches_the_decoder():
    from mlx_specstream.drafters import MixedDrafter, StreamDrafter

    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(
        4, StreamArgs(num_streams=3, num_stream_layers=3), stream_scale=0.2
    )
    prompt = [7, 3, 9, 12, 7, 3, 9, 12, 40]
    drafter = MixedDrafter(StreamDrafter(TreeShape(budget=6)))
    rs = list(stream_generate(model, tok, prompt, max_tokens=30, drafter=drafter))
    seq = prompt + [t for r in rs for t in r.tokens]
    passes, _, depths = replay(
        stream_candidates(model, seq, 6), seq, len(prompt), drafter
    )
    assert passes == rs[-1].forward_calls
    assert depths == [r.accepted for r in rs[1:]]
