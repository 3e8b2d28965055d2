# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Drafting from a vocabulary subset (FR-Spec): output unchanged, drafts in the subset,
the subset stored with the streams and checked on load.

The greedy output with a draft vocabulary of each size, for every family, tree and
stream pass, is checked in test_generate.test_greedy_lossless_matrix."""

from collections import Counter

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import emitted, tiny_config, tiny_hf_tokenizer, tiny_model, wrap
from test_generate import PROMPT, SHAPES, OracleDrafter, V, per_pass, run, subset
from test_sampling import (
    SAMPLED_TEMP,
    _chi2_ok,
    next_token_law,
    sample_speculative,
    sampling_model,
    two_token_laws,
)

from mlx_specstream.decoding.replay import replay, stream_candidates
from mlx_specstream.decoding.state import state_of
from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.errors import ModelFileError
from mlx_specstream.format import DRAFT_VOCAB, STREAMS_FILE
from mlx_specstream.generate import stream_generate
from mlx_specstream.loading.model_io import load_model, save_model
from mlx_specstream.sample_utils import SamplingArgs


@pytest.mark.parametrize("seed", [0, 1])
def test_a_subset_without_the_answer_tokens_drafts_nothing_right(seed):
    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(seed, stream_scale=0.2)
    plain, _ = run(model, tok, max_tokens=32, speculative=False)
    model.set_draft_vocab(subset(seed, 40, exclude=plain))
    spec, rs = run(model, tok, max_tokens=32, tree=TreeShape(budget=8))
    assert spec == plain
    assert all(n == 1 for n in per_pass(rs))  # no draft can be accepted


@pytest.mark.parametrize("depth", [1, 4])
def test_oracle_drafts_accepted_with_a_draft_vocabulary(depth):
    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(4, **SHAPES[1])
    plain, _ = run(model, tok, max_tokens=30, speculative=False)
    model.set_draft_vocab(
        subset(4, 8, exclude=plain)
    )  # the oracle's tokens are outside
    drafter = OracleDrafter(plain, len(PROMPT), depth)
    spec, rs = run(model, tok, max_tokens=30, drafter=drafter)
    assert spec == plain
    assert max(per_pass(rs)) == depth + 1


GEMMA = next(s for s in SHAPES if s.get("model_type") == "gemma3_text")


@pytest.mark.parametrize("tied", [False, True, "gemma"])
@pytest.mark.parametrize("quantized", [False, True])
def test_stream_logits_are_the_full_logits_of_the_subset(tied, quantized):
    if tied == "gemma":  # its own final norm, and soft-capped logits
        model = tiny_model(2, **GEMMA, final_logit_softcapping=3.0)
    else:
        model = tiny_model(2, tie_word_embeddings=tied)
    if quantized:
        nn.quantize(model, group_size=32, bits=8)
    h = mx.random.normal((5, model.args.hidden_size))
    full = np.array(model.logits(h))
    ids = subset(2, 17)
    model.set_draft_vocab(ids)
    np.testing.assert_allclose(
        np.array(model.stream_logits(h)), full[:, ids], atol=1e-5
    )
    # New head weights are sliced again.
    head = model.lm_head_module()
    head.weight = head.weight[::-1] if not quantized else head.weight
    if not quantized:
        full = np.array(model.logits(h))
        np.testing.assert_allclose(
            np.array(model.stream_logits(h)), full[:, ids], atol=1e-5
        )


def test_replay_with_a_draft_vocabulary_counts_the_decoders_passes():
    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(3, stream_scale=0.2)
    model.set_draft_vocab(subset(3, 30))
    prompt = [7, 3, 9, 12, 40, 41]
    shape = TreeShape(budget=6)
    rs = list(stream_generate(model, tok, prompt, max_tokens=30, tree=shape))
    seq = prompt + [t for r in rs for t in emitted(r)]
    cands = stream_candidates(model, seq, 6)
    assert set(cands.tokens.ravel().tolist()) <= set(model.draft_vocab.tolist())
    passes, _, _ = replay(cands, seq, len(prompt), shape, max_tokens=30)
    assert passes == rs[-1].forward_calls


def test_sampling_with_a_draft_vocabulary_keeps_the_distribution():
    """The law of generated token 2 equals the model's exact law (test_sampling's
    end-to-end check) when streams draft from 6 of 16 tokens."""
    model, tok = sampling_model()
    probs = next_token_law(model, SamplingArgs(temp=SAMPLED_TEMP))

    _, p2 = two_token_laws(probs)
    # The subset holds the likeliest second tokens, so drafts are often accepted.
    model.set_draft_vocab(np.argsort(-p2)[:6])
    n, c2, drafted = 500, Counter(), 0
    for rs in sample_speculative(model, tok, n, seed=5):
        c2[rs[1].token] += 1
        drafted += rs[1].from_draft
    assert _chi2_ok(c2, p2, n)
    assert drafted > n // 10  # drafts from the subset were accepted
    top = Counter({int(np.argmax(p2)): n})
    assert not _chi2_ok(top, p2, n)  # the test has power


def test_draft_vocabulary_is_saved_with_the_streams(tmp_path):
    model = tiny_model(1)
    ids = subset(1, 20)
    model.set_draft_vocab(ids)
    save_model(model, tiny_config(), tmp_path)
    assert DRAFT_VOCAB in mx.load(str(tmp_path / STREAMS_FILE))
    loaded = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.draft_vocab, ids)
    assert state_of(loaded).has_streams


def test_streams_without_a_draft_vocabulary_still_load(tmp_path):
    save_model(tiny_model(1), tiny_config(), tmp_path)
    assert DRAFT_VOCAB not in mx.load(str(tmp_path / STREAMS_FILE))
    assert load_model(tmp_path).draft_vocab is None


@pytest.mark.parametrize(
    "bad, message",
    [
        (mx.array([1, 2, V], mx.int32), f"id {V} is outside the vocabulary"),
        (mx.array([-1, 2], mx.int32), "id -1 is outside the vocabulary"),
        (mx.array([3, 5, 3], mx.int32), "not unique"),
        (mx.array([[1, 2]], mx.int32), "non-empty 1-D"),
        (mx.zeros((0,), mx.int32), "non-empty 1-D"),
        (mx.array([1.0, 2.0]), "integer token ids"),
    ],
)
def test_bad_draft_vocabulary_is_a_clear_error(tmp_path, bad, message):
    save_model(tiny_model(1), tiny_config(), tmp_path)
    file = tmp_path / STREAMS_FILE
    tensors = dict(mx.load(str(file)))
    tensors[DRAFT_VOCAB] = bad
    mx.save_safetensors(str(file), tensors)
    with pytest.raises(ModelFileError, match=message) as e:
        load_model(tmp_path)
    assert STREAMS_FILE in str(e.value)
    with pytest.raises(ValueError, match=message):
        tiny_model(1).set_draft_vocab(np.array(bad))


def test_ranking_counts_what_the_model_emitted():
    from mlx_specstream.benchmarks.draft_vocab import rank

    records = [
        dict(prompt_tokens=[9, 9, 4], completion_tokens=[3, 3, 7]),
        dict(prompt_tokens=[4, 8], completion_tokens=[7, 3, 1]),
    ]
    # Emitted 3 x3, 7 x2, 1 x1; then prompted 4 x2, 9 x2 (lower id first), 8; then ids.
    assert rank(records, 12) == [3, 7, 1, 4, 9, 8, 0, 2, 5, 6, 10, 11]
