# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The n-gram table of the model's own answers: what it drafts, where prompt lookup
asks it, that output stays plain greedy output, and the corpus in the stream file."""

import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import tiny_config, tiny_hf_tokenizer, tiny_model, wrap
from test_generate import run

from mlx_specstream.decoding.defaults import choose_speculation
from mlx_specstream.decoding.drafters import (
    PromptLookupDrafter,
    StreamDrafter,
    StreamTopK,
)
from mlx_specstream.decoding.ngrams import NgramStore
from mlx_specstream.decoding.state import state_of
from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.errors import ModelFileError
from mlx_specstream.format import DRAFT_CORPUS, STREAMS_FILE
from mlx_specstream.loading.model_io import load_model, save_model

SEQS = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [9, 2, 3, 7, 8], [0, 3, 6]]


def test_store_follows_the_commonest_successor_of_the_longest_ngram():
    store = NgramStore.from_sequences(SEQS)
    assert store.successor([2, 3]) == (4, pytest.approx(2 / 3))
    assert store.successor([9, 2, 3]) == (7, 1.0)  # the 3-gram wins over (2, 3)
    assert store.successor([6, 2, 3]) == (4, pytest.approx(2 / 3))  # falls to 2
    assert store.successor([3]) == (None, 0.0)  # shorter than any n-gram kept
    assert store.chain([0, 1, 2], 8) == [3, 4, 5]  # (4, 5) ends every answer
    assert store.chain([0, 1, 2], 2) == [3, 4]
    assert store.chain([5, 2, 3], 8, min_prob=0.7) == []  # 4 follows (2, 3) 2 in 3
    assert store.chain([5, 2, 3], 8, min_prob=0.6) == [4, 5]
    # No n-gram runs across two answers.
    assert NgramStore.from_sequences([[1, 2], [3, 4]]).successor([1, 2]) == (None, 0.0)
    assert NgramStore.from_sequences([]).chain([1, 2], 4) == []


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 3), np.int32), "1-D array"),
        (np.array([1.0, 2.0]), "1-D array of token ids"),
        (np.array([1, -2, 3]), "negative id -2"),
    ],
)
def test_bad_corpus_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        NgramStore(bad)


def test_prompt_lookup_asks_the_store_before_a_one_token_match():
    store = NgramStore.from_sequences([[7, 8, 9, 10], [4, 6, 6]])
    lookup = PromptLookupDrafter(store=store)
    # A 2-token match in history comes first ...
    assert lookup.paths([1, 2, 3, 7, 8, 1, 2]) == [(3, 7, 8, 1, 2)]
    # ... then the store ...
    assert lookup.paths([8, 5, 7, 8]) == [(9, 10)]
    # ... then a 1-token match in history.
    assert lookup.paths([4, 5, 3, 4]) == [(5, 3, 4)]
    assert PromptLookupDrafter().paths([8, 5, 7, 8]) == [(5, 7, 8)]  # no store


def test_store_drafts_are_accepted_and_output_stays_plain():
    tokenizer = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(6)
    prompt = [5, 17, 33, 2, 61, 8, 40, 11, 70]
    plain, _ = run(model, tokenizer, prompt, max_tokens=40, speculative=False)
    without, rs_without = run(
        model, tokenizer, prompt, max_tokens=40, prompt_lookup=True
    )
    # The model's own answer to this prompt, as a distilled corpus would hold it.
    state_of(model).ngrams = NgramStore.from_sequences([plain])
    with_store, rs = run(model, tokenizer, prompt, max_tokens=40, prompt_lookup=True)
    assert without == with_store == plain
    assert rs[-1].forward_calls < 0.75 * rs_without[-1].forward_calls


def test_corpus_is_saved_with_the_streams_and_checked_on_load(tmp_path):
    model = tiny_model(1)
    state_of(model).ngrams = NgramStore.from_sequences(SEQS)
    save_model(model, tiny_config(), tmp_path)
    assert DRAFT_CORPUS in mx.load(str(tmp_path / STREAMS_FILE))
    loaded = load_model(tmp_path)
    np.testing.assert_array_equal(
        state_of(loaded).ngrams.corpus, state_of(model).ngrams.corpus
    )
    assert state_of(loaded).has_streams
    save_model(tiny_model(1), tiny_config(), tmp_path / "none")
    assert state_of(load_model(tmp_path / "none")).ngrams is None

    file = tmp_path / STREAMS_FILE
    tensors = dict(mx.load(str(file)))
    tensors[DRAFT_CORPUS] = mx.array([1, 2, 96], mx.int32)  # conftest's V is 96
    mx.save_safetensors(str(file), tensors)
    with pytest.raises(ModelFileError, match="draft_corpus id 96 is outside") as e:
        load_model(tmp_path)
    assert STREAMS_FILE in str(e.value)


def test_draft_corpus_script_writes_the_answers(tmp_path, capsys):
    from mlx_specstream.benchmarks.draft_corpus import main

    save_model(tiny_model(1), tiny_config(), tmp_path / "m")
    records = tmp_path / "distilled.jsonl"
    records.write_text(
        "".join(
            json.dumps(dict(prompt_tokens=[1], completion_tokens=s)) + "\n"
            for s in SEQS
        )
    )
    main(["--records", str(records), "--streams", str(tmp_path / "m" / STREAMS_FILE)])
    assert "4 answers" in capsys.readouterr().out
    loaded = load_model(tmp_path / "m")
    assert state_of(loaded).ngrams.chain([0, 1, 2], 8) == [3, 4, 5]

    records.write_text('{"prompt_tokens": [1]}\n')
    with pytest.raises(SystemExit, match="distilled.jsonl:1: not a distill record"):
        main(
            ["--records", str(records), "--streams", str(tmp_path / "m" / STREAMS_FILE)]
        )
    assert state_of(load_model(tmp_path / "m")).ngrams.chain([0, 1, 2], 8) == [
        3,
        4,
        5,
    ]  # intact


def test_lookup_watch_says_when_lookup_would_draft_again():
    """The watch scores each chain two tokens later; it fires once ``hits`` of the
    last ``window`` chains got their first two tokens right."""
    from mlx_specstream.decoding.drafters import LookupWatch, PromptLookupDrafter

    cycle = [5, 6, 7, 8, 9]
    watch = LookupWatch(PromptLookupDrafter(), hits=2, window=4)
    history, fired = [1, 2, 3], []
    for t in cycle * 3:  # a phrase that repeats: lookup copies it
        history.append(t)
        fired.append(watch(history))
    assert not any(fired[:6]) and fired[-1], fired
    watch = LookupWatch(PromptLookupDrafter(), hits=2, window=4)
    novel = list(range(10, 40))  # nothing repeats: no chain comes true
    assert not any(watch(novel[:n]) for n in range(1, len(novel) + 1))
    watch = LookupWatch(PromptLookupDrafter(), hits=0, window=4)  # 0: never
    assert not any(watch((cycle * 3)[:n]) for n in range(1, 16))


def test_probs_interpolate_from_the_unigram_up_to_the_longest_known_context():
    store = NgramStore.from_sequences(SEQS, vocab_size=10)
    # 18 tokens; add-one unigram over 10 ids: (count + 1) / 28
    unigram = (np.bincount(np.concatenate(SEQS), minlength=10) + 1) / 28
    np.testing.assert_allclose(store.probs([], np.arange(10)), unigram)
    # 3 is followed by 4 twice, 7 once, 6 once: (count + unigram) / (4 + 1)
    after_3 = (np.array([0, 0, 0, 0, 2, 0, 1, 1, 0, 0]) + unigram) / 5
    np.testing.assert_allclose(store.probs([3], np.arange(10)), after_3)
    # (2, 3) is followed by 4 twice, 7 once: mixed over the estimate after 3
    after_23 = (np.array([0, 0, 0, 0, 2, 0, 0, 1, 0, 0]) + after_3) / 4
    np.testing.assert_allclose(store.probs([2, 3], np.arange(10)), after_23)
    np.testing.assert_allclose(store.probs([2, 3], [7, 4]), after_23[[7, 4]])
    assert store.probs([1, 2, 3], np.arange(10)).sum() == pytest.approx(1.0)
    # An unknown context stops the climb: (8, 3) was never seen, 3 was.
    np.testing.assert_allclose(store.probs([8, 3], np.arange(10)), after_3)
    np.testing.assert_allclose(store.probs([5], np.arange(10)), unigram)  # 5 ends
    # Smoothing weighs the shorter estimate.
    sharp = store.probs([3], [4], smoothing=0.01)[0]
    assert sharp == pytest.approx((2 + 0.01 * unigram[4]) / 4.01)


def rerank_case():
    """Stream 1 slightly prefers 10 over 11, stream 2 strongly prefers 20 over 21;
    the model's answers always go 1 -> 11 -> 21."""
    streams = StreamTopK(
        np.array([[10, 11], [20, 21]]), np.log(np.array([[0.55, 0.45], [0.9, 0.1]]))
    )
    return streams, NgramStore.from_sequences([[1, 11, 21]] * 50, vocab_size=30)


def test_store_reranks_each_nodes_children_given_its_path():
    streams, store = rerank_case()
    shape = TreeShape(budget=3, depth_penalty=0.0)
    plain = StreamDrafter(shape).draft(1, streams, [4, 1])
    assert plain.tokens == (1, 10, 20)  # the streams' own best-first tree
    tree = StreamDrafter(shape, store=store).draft(1, streams, [4, 1])
    assert tree.tokens == (1, 11, 21) and tree.parents == (-1, 0, 1)
    # The path conditions the table: 10 was never seen, so below it the table
    # knows only how common 21 is, which does not outweigh stream 2.
    full = StreamDrafter(TreeShape(budget=7, depth_penalty=0.0), store=store).draft(
        1, streams, [4, 1]
    )
    below_10 = [full.tokens[c] for c in full.children[full.tokens.index(10)]]
    assert below_10 == [20, 21]
    # Weight 0, no history, or a Cartesian tree: no rerank.
    for drafter, history in [
        (StreamDrafter(shape, store=store, store_weight=0.0), [4, 1]),
        (StreamDrafter(shape, store=store), []),
    ]:
        assert drafter.draft(1, streams, history) == plain
    cart = TreeShape("cartesian", (1, 1))
    assert StreamDrafter(cart, store=store).draft(1, streams, [1]).tokens == (
        1,
        10,
        20,
    )


def test_reranked_scores_keep_each_rows_total():
    streams, store = rerank_case()
    drafter = StreamDrafter(TreeShape(budget=3), store=store)
    scores = streams.logprobs - 0.5 * np.arange(2)[:, None]
    totals = np.logaddexp.reduce(scores, axis=1)
    children = drafter._reranked(streams.tokens, scores, totals, [1])
    for path in [(), (11,), (10,)]:
        toks, s = children(path)
        assert np.all(np.diff(s) <= 0)
        g = len(path)
        assert np.logaddexp.reduce(s) == pytest.approx(np.logaddexp.reduce(scores[g]))
        assert sorted(toks.tolist()) == sorted(streams.tokens[g].tolist())


@pytest.mark.parametrize("stream_pass", ["tree", "accepted"])
def test_reranked_trees_leave_output_plain(stream_pass):
    tokenizer = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(6)
    prompt = [5, 17, 33, 2, 61, 8, 40, 11, 70]
    plain, _ = run(model, tokenizer, prompt, max_tokens=40, speculative=False)
    shape = TreeShape(budget=8)
    _, rs_without = run(
        model, tokenizer, prompt, max_tokens=40, tree=shape, stream_pass=stream_pass
    )
    # The model's own answer, as a distilled corpus would hold it; decoding's
    # default stream drafter reranks with the model's table.
    state_of(model).ngrams = NgramStore.from_sequences([plain])
    assert choose_speculation(model, tree=shape).drafter.store is state_of(model).ngrams
    spec, rs = run(
        model, tokenizer, prompt, max_tokens=40, tree=shape, stream_pass=stream_pass
    )
    assert spec == plain
    # A heavy weight makes the table's answer win wherever the streams list it.
    strong = StreamDrafter(shape, store=state_of(model).ngrams, store_weight=3.0)
    spec, rs_strong = run(
        model,
        tokenizer,
        prompt,
        max_tokens=40,
        drafter=strong,
        stream_pass=stream_pass,
    )
    assert spec == plain
    assert rs_strong[-1].forward_calls < rs_without[-1].forward_calls
