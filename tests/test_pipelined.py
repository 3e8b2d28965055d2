# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Pipelined decoding (``decoding/resident.py``): a fixed tree drafted, verified
and advanced on the device, read one pass late. Greedy output must equal plain
greedy output, and the prompt cache must keep its contract at every yield."""

import itertools
import threading
from typing import List

import mlx.core as mx
import numpy as np
import pytest
from conftest import tiny_model
from mlx.utils import tree_flatten, tree_unflatten

from mlx_specstream.decoding.decoder import plain_generate_step
from mlx_specstream.decoding.resident import (
    likely_anchors,
    resident_generate_step,
    resident_shape,
)
from mlx_specstream.decoding.state import state_of
from mlx_specstream.generate import stream_generate
from mlx_specstream.models.cache import make_prompt_cache

PROMPT = [3, 5, 7, 11, 13, 2, 9]
FAMILIES = [
    dict(),
    dict(model_type="qwen2", num_key_value_heads=1),
    dict(model_type="qwen3", head_dim=24, tie_word_embeddings=True),
    dict(model_type="mistral", num_hidden_layers=3, head_dim=24),
    dict(model_type="phi3"),
]


def plain(model, prompt, n: int, cache=None) -> List[int]:
    steps = plain_generate_step(prompt, model, prompt_cache=cache)
    return [s.tokens[0] for s in itertools.islice(steps, n)]


def pipelined(model, prompt, n: int, budget: int = 16, cache=None, draft=None):
    out, passes = [], 0
    for s in resident_generate_step(
        prompt, model, budget, max_tokens=n, prompt_cache=cache, draft=draft
    ):
        out += s.tokens
        passes += 1
    return out, passes


def oracle(reference: List[int], wrong_first: bool = False):
    """Candidates that follow ``reference`` (a bigram table of it) from the
    correction: rank 0 right (or rank 1, ``wrong_first``), the others wrong."""
    V = 96
    table = np.arange(V, dtype=np.int32)  # unseen tokens: a wrong guess
    for a, b in zip(reference, reference[1:]):
        table[a] = b
    table = mx.array(table)

    def draft(states, correction, k):
        chain, t = [], correction
        for _ in range(states.shape[0]):
            t = table[t]
            chain.append(t)
        chain = mx.concatenate(chain)  # (γ,)
        ranks = (chain[:, None] + mx.arange(k)[None, :]) % V  # rank r: chain + r
        if wrong_first and k > 1:  # swap ranks 0 and 1
            ranks = mx.concatenate([ranks[:, 1:2], ranks[:, :1], ranks[:, 2:]], 1)
        return ranks.astype(mx.int32)

    return draft


@pytest.mark.parametrize("shape", FAMILIES, ids=lambda s: s.get("model_type", "llama"))
@pytest.mark.parametrize("budget", [1, 5, 16])
def test_pipelined_equals_plain(shape, budget):
    model = tiny_model(**shape)
    want = plain(model, PROMPT, 48)
    got, _ = pipelined(model, PROMPT, 48, budget)
    assert got == want


@pytest.mark.parametrize("wrong_first", [False, True])
@pytest.mark.parametrize(
    "shape", FAMILIES[:3], ids=lambda s: s.get("model_type", "llama")
)
def test_accepted_paths_are_compacted(shape, wrong_first):
    """Drafts that are mostly right: deep paths, through rank-1 nodes too, are
    accepted and compacted, and the output is still plain greedy."""
    model = tiny_model(**shape)
    want = plain(model, PROMPT, 64)
    got, passes = pipelined(
        model, PROMPT, 64, 16, draft=oracle(PROMPT + want, wrong_first)
    )
    assert got == want
    assert 64 / passes > 2.0, passes  # acceptance happened, so compaction ran


def _modes(model) -> List:
    """How each pass this model keeps ran: "compiled", "eager" or None."""
    passes = state_of(model).compiled_passes
    return [fn.mode() for key, fn in passes.items() if key != "weights"]


def test_passes_are_compiled_and_follow_new_weights():
    """The full tree's pass is traced with the weights as constants and kept for
    later generations; replaced weights (streams or the model's own) get a new
    trace, not the old weights' output."""
    model = tiny_model()
    want = plain(model, PROMPT, 40)
    assert pipelined(model, PROMPT, 40)[0] == want
    if mx.default_device() == mx.cpu:  # compiled here, or this MLX cannot compile
        assert _modes(model) in (["compiled"], ["eager"])
    before = dict(state_of(model).compiled_passes)
    assert pipelined(model, PROMPT, 40)[0] == want  # the same trace, reused
    assert state_of(model).compiled_passes == before
    mx.random.seed(7)
    for name, module in (("layers", model.layers[-1]), ("streams", model.streams)):
        flat = tree_flatten(module.parameters())
        module.update(
            tree_unflatten([(k, v + 0.05 * mx.random.normal(v.shape)) for k, v in flat])
        )
        want_now = plain(model, PROMPT, 40)
        if name == "layers":
            assert want_now != want  # the perturbation changed the model's text
        assert pipelined(model, PROMPT, 40)[0] == want_now, name
        assert state_of(model).compiled_passes != before


def test_draft_vocabulary_in_a_compiled_pass():
    """Streams drafting from a draft vocabulary (the sliced head, made before the
    trace, is a constant of it), then from the whole vocabulary again: plain
    greedy output both times."""
    model = tiny_model()
    want = plain(model, PROMPT, 48)
    model.set_draft_vocab(np.arange(0, model.args.vocab_size, 2))
    got, _ = pipelined(model, PROMPT, 48)
    assert got == want
    model.set_draft_vocab(None)
    assert pipelined(model, PROMPT, 48)[0] == want


def test_cache_contract_and_continuation():
    """At the end the cache records every token and has fed all but the last; a
    second turn, plain or pipelined, equals the whole conversation from scratch."""
    model = tiny_model()
    want = plain(model, PROMPT, 40)
    draft = oracle(PROMPT + want)
    cache = make_prompt_cache(model)
    first, _ = pipelined(model, PROMPT, 23, cache=cache, draft=draft)
    assert first == want[:23]
    assert cache.tokens == PROMPT + first
    assert all(c.offset == len(cache.tokens) - 1 for c in cache)
    turn = [17, 4]
    whole = plain(model, PROMPT + first + turn, 20)
    again, _ = pipelined(model, turn, 20, cache=cache, draft=draft)
    assert again == whole
    cache2 = make_prompt_cache(model)
    pipelined(model, PROMPT, 23, cache=cache2, draft=draft)
    assert plain(model, turn, 20, cache=cache2) == whole


@pytest.mark.parametrize("n", [0, 1, 2, 7, 30])
def test_max_tokens_exact(n):
    model = tiny_model()
    want = plain(model, PROMPT, 40)
    cache = make_prompt_cache(model)
    got, _ = pipelined(model, PROMPT, n, cache=cache, draft=oracle(PROMPT + want))
    assert got == want[:n]
    assert cache.tokens == PROMPT + got
    assert all(c.offset == len(cache.tokens) - 1 for c in cache)


def test_one_token_prompt_and_low_precision():
    for dtype in (mx.float32, mx.bfloat16):
        model = tiny_model()
        model.set_dtype(dtype)
        got, _ = pipelined(model, [5], 32)
        assert got == plain(model, [5], 32), dtype


def test_shape_is_a_tree_of_ranks():
    tree = resident_shape(16, 3)
    assert tree.size == 16 and tree.depths.max() <= 3
    # Every node's rank is new among its siblings; the best child is rank 0.
    for kids in tree.children:
        ranks = [tree.tokens[k] for k in kids]
        assert ranks == sorted(set(ranks)) and (not ranks or ranks[0] == 0)
    with pytest.raises(ValueError, match="budget"):
        resident_shape(0, 3)


def test_likely_anchors_and_streamed_nodes():
    """The nodes that carry streams: the root, then the likeliest ends of the
    accepted path (the rank-0 chain before its rank-1 siblings' subtrees)."""
    tree = resident_shape(16, 4)
    assert likely_anchors(tree, 1) == [0]
    four = likely_anchors(tree, 4)
    assert len(four) == 4 and four[0] == 0
    chain = [0]
    for _ in range(3):  # the rank-0 chain below the root
        chain.append(next(k for k in tree.children[chain[-1]] if tree.tokens[k] == 0))
    assert set(chain[:3]) <= set(four)
    assert likely_anchors(tree, 99) == list(range(16))


@pytest.mark.parametrize("streamed", [1, 3, 16])
def test_streamed_nodes_stay_lossless(streamed):
    """Streams for the root only, a few nodes or every node: plain greedy output
    (where the accepted node carried no streams, an ancestor's draft)."""
    model = tiny_model()
    want = plain(model, PROMPT, 48)
    got = [
        t
        for s in resident_generate_step(
            PROMPT, model, 16, max_tokens=48, streamed=streamed
        )
        for t in s.tokens
    ]
    assert got == want


def test_api_pipelined_and_its_errors(tokenizer):
    model = tiny_model()
    plain_text = "".join(
        r.text for r in stream_generate(model, tokenizer, PROMPT, 24, speculative=False)
    )
    got = list(stream_generate(model, tokenizer, PROMPT, 24, pipelined=True))
    assert "".join(r.text for r in got) == plain_text
    assert got[-1].finish_reason in ("length", "stop")
    opaque = lambda logprobs: mx.argmax(logprobs, axis=-1)  # noqa: E731
    with pytest.raises(ValueError, match="opaque sampler"):
        next(
            stream_generate(model, tokenizer, PROMPT, 8, pipelined=True, sampler=opaque)
        )
    with pytest.raises(ValueError, match="stream_pass"):
        next(
            stream_generate(
                model, tokenizer, PROMPT, 8, pipelined=True, stream_pass="tree"
            )
        )
    gemma = tiny_model(
        model_type="gemma3_text",
        head_dim=24,
        query_pre_attn_scalar=24,
        sliding_window=8,
        sliding_window_pattern=2,
    )
    with pytest.raises(ValueError, match="sliding-window"):
        next(stream_generate(gemma, tokenizer, PROMPT, 8, pipelined=True))


def test_threads_share_a_model(tokenizer):
    """Several threads decoding pipelined on one model each get their own answer."""
    model = tiny_model()
    prompts = [PROMPT, [4, 8, 15], [16, 23, 42, 1], [9]]
    want = [
        [r.token for r in stream_generate(model, tokenizer, p, 24, speculative=False)]
        for p in prompts
    ]
    got = [None] * len(prompts)

    def work(i):
        rs = stream_generate(model, tokenizer, prompts[i], 24, pipelined=True)
        got[i] = [r.token for r in rs]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


def test_fit_paths_counts_matching_rank_paths():
    """Stream g's candidates at r - 1 are scored against token r + 1 + g; a path
    is counted while every depth matched, and the most frequent come first."""
    from mlx_specstream.decoding.drafters import StreamTopK
    from mlx_specstream.decoding.resident import fit_paths

    seq = [1, 2, 3, 4, 5, 6, 7, 8]
    L, g, k = len(seq), 2, 3
    tokens = np.full((L, g, k), 99)
    for r in range(1, L - 1):  # rank 1 of stream 0 is right, stream 1 never
        tokens[r - 1, 0, 1] = seq[r + 1]
    tokens[2, 1, 0] = seq[5]  # root r = 3: stream 1's rank 0 is right once
    cands = StreamTopK(tokens, np.zeros((L, g, k)))
    paths = fit_paths([(cands, seq, 1)])
    assert paths == [(1,), (1, 0)]
    tree = resident_shape(4, g, paths)
    assert tree.size == 4
    # The fitted paths come first, then the prior's; orphans and repeats are skipped.
    kids = {tuple(tree.tokens[j] for j in tree.path(i)[1:]) for i in range(tree.size)}
    assert {(1,), (1, 0)} <= kids
    assert resident_shape(3, g, [(2, 0), (1,)]).tokens[1] == 1


def test_fitted_paths_stay_lossless():
    model = tiny_model()
    want = plain(model, PROMPT, 40)
    got, _ = pipelined(model, PROMPT, 40, 8)
    assert got == want
    out = []
    for s in resident_generate_step(PROMPT, model, 8, 40, paths=[[2], [2, 1], [0]]):
        out += s.tokens
    assert out == want


def test_sampled_pipelined_matches_plain_distribution():
    """Tree rejection sampling in the pipelined loop: the law of generated tokens 1
    and 2 (token 2 out of a drafted tree) equals the model's exact law."""
    from collections import Counter

    from test_sampling import (
        SAMPLED_PROMPT,
        SAMPLED_TEMP,
        SAMPLED_VOCAB,
        _chi2_ok,
        next_token_law,
        sampling_model,
        two_token_laws,
    )

    from mlx_specstream.sample_utils import SamplingArgs

    model, _ = sampling_model()
    probs = next_token_law(model, SamplingArgs(temp=SAMPLED_TEMP))

    p1, p2 = two_token_laws(probs)
    n, c1, c2, drafted = 500, Counter(), Counter(), 0
    mx.random.seed(5)
    for _ in range(n):
        args = SamplingArgs(temp=SAMPLED_TEMP)
        steps = resident_generate_step(SAMPLED_PROMPT, model, 6, 3, args)
        passes = list(steps)
        out = [t for s in passes for t in s.tokens]
        c1[out[0]] += 1
        c2[out[1]] += 1
        drafted += passes[1].accepted > 0
    assert _chi2_ok(c1, p1, n)
    assert _chi2_ok(c2, p2, n)
    assert drafted > 0.1 * n  # token 2 often came from an accepted draft
    assert not _chi2_ok(Counter({int(np.argmax(p2)): n}), p2, n)  # the test has power
    assert SAMPLED_VOCAB == p2.size
