# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Several sequences in one pass: the mlx-lm twin, the batch decoder, batch_generate
and the server's continuous batching (joining, leaving, cancelling, lengths)."""

import asyncio
import concurrent.futures as futures
import threading
from collections import Counter

import mlx.core as mx
import numpy as np
import pytest
from conftest import tiny_config, tiny_hf_tokenizer, tiny_model, wrap
from fastapi.testclient import TestClient
from test_sampling import _chi2_ok
from test_server import _call_and_leave, _wait_for

from mlx_specstream import batch_generate, generate, make_prompt_cache
from mlx_specstream.decoding.batch import BatchDecoder
from mlx_specstream.decoding.decoder import plain_generate_step
from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.generate import stream_generate
from mlx_specstream.models.cache import PromptCache
from mlx_specstream.models.twin import mlx_lm_twin
from mlx_specstream.sample_utils import SamplingArgs, make_logits_processors
from mlx_specstream.server import create_app
from mlx_specstream.utils import load, save_model

TREE = dict(tree=TreeShape(budget=8), stream_pass="tree", prompt_lookup=True)
PROMPTS = [[5, 17, 33, 2], [61, 8, 40], [9, 9, 12, 70, 33, 1, 4, 4, 8], [44]]


def plain(model, prompt, n):
    out = []
    for step in plain_generate_step(prompt, model):
        out += step.tokens
        if len(out) >= n:
            return out[:n]


def fresh(model, prompt) -> PromptCache:
    """A cache whose conversation is ``prompt``, none of it fed yet."""
    cache = make_prompt_cache(model)
    cache.tokens, cache.pending = list(prompt), len(prompt)
    return cache


def drain(batch, uids):
    got, done = {u: [] for u in uids}, set()
    while len(done) < len(uids):
        for uid, token, finish in batch.step():
            if finish != "stop":
                got[uid].append(token)
            if finish:
                done.add(uid)
    return got


@pytest.mark.parametrize(
    "family",
    [dict(model_type="llama"), dict(model_type="qwen2"), dict(model_type="phi3")],
)
def test_twin_shares_the_weights_and_computes_the_same(family):
    model = tiny_model(1, **family)
    twin = mlx_lm_twin(model)
    assert twin is not None and mlx_lm_twin(model) is twin  # made once
    x = mx.array([[3, 9, 27, 81 % 96, 50, 7]])
    assert mx.allclose(model(x), twin(x), atol=1e-4)
    # The same arrays, not copies: a change to ours shows in the twin.
    w = model.model.layers[0].mlp.down_proj.weight
    assert twin.model.layers[0].mlp.down_proj.weight is w


def test_twin_refuses_sliding_window_families():
    model = tiny_model(
        0,
        model_type="gemma3_text",
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=8,
        sliding_window_pattern=2,
    )
    assert mlx_lm_twin(model) is None


def test_batch_of_different_lengths_equals_each_alone_and_keeps_caches():
    model = tiny_model(0)
    limits = [12, 5, 20, 9]
    batch = BatchDecoder(mlx_lm_twin(model), eos=[0], cap=8)
    uids = [
        batch.add(fresh(model, p), m, SamplingArgs()) for p, m in zip(PROMPTS, limits)
    ]
    got = drain(batch, uids)
    for uid, p, m in zip(uids, PROMPTS, limits):
        assert got[uid] == plain(model, p, m)
        cache = batch.remove(uid)
        assert cache.tokens == p + got[uid]
        assert cache.fed == cache[0].offset and all(
            c.offset == cache[0].offset for c in cache
        )
        # The cache continues: speculative decoding from it equals plain decoding
        # of the whole conversation.
        more = [
            r.token
            for r in stream_generate(
                model, wrap(tiny_hf_tokenizer()), [7], 10, prompt_cache=cache, **TREE
            )
        ]
        assert more == plain(model, p + got[uid] + [7], 10)
    assert len(batch) == 0


def test_sequences_join_and_leave_mid_batch():
    model = tiny_model(0)
    batch = BatchDecoder(mlx_lm_twin(model), eos=[0], cap=8)
    a = batch.add(fresh(model, PROMPTS[0]), 16, SamplingArgs())
    got = {a: []}
    for _ in range(5):
        for uid, token, _ in batch.step():
            got[uid].append(token)
    b = batch.add(fresh(model, PROMPTS[2]), 6, SamplingArgs())  # joins at step 5
    got[b] = []
    c = batch.add(fresh(model, PROMPTS[1]), 30, SamplingArgs())
    got[c] = []
    for _ in range(3):
        for uid, token, _ in batch.step():
            got[uid].append(token)
    batch.remove(c)  # leaves mid-answer (a cancelled request)
    rest = drain(batch, [a, b])
    assert got[a] + rest[a] == plain(model, PROMPTS[0], 16)
    assert got[b] + rest[b] == plain(model, PROMPTS[2], 6)
    assert got[c] == plain(model, PROMPTS[1], 30)[: len(got[c])]


def test_sampled_batch_keeps_each_sequence_distribution():
    """Chi-square: two prompts of different lengths sampled side by side in one
    batch (left padding), each with its own sampler, give their own distributions."""
    model = tiny_model(3)
    twin = mlx_lm_twin(model)
    short, long_ = [5, 17], [9, 9, 12, 70, 33, 1, 4, 4]
    samplers = [SamplingArgs(temp=1.0), SamplingArgs(temp=0.7, top_k=20)]
    probs = []
    for p, s in zip((short, long_), samplers):
        from mlx_specstream.sample_utils import target_logprobs

        logits = model(mx.array([p]))[0, -1:].astype(mx.float32)
        probs.append(np.exp(np.array(target_logprobs(logits, s)))[0])
    mx.random.seed(11)
    counts, n = [Counter(), Counter()], 0
    batch = BatchDecoder(twin, eos=[], cap=8)
    for _ in range(250):
        uids = [
            batch.add(fresh(model, p), 1, s)
            for p, s in zip((short, long_, short, long_), samplers * 2)
        ]
        got = drain(batch, uids)
        for k, uid in enumerate(uids):
            counts[k % 2][got[uid][0]] += 1
            batch.remove(uid)
        n += 2
    assert _chi2_ok(counts[0], probs[0], n)
    assert _chi2_ok(counts[1], probs[1], n)


def test_batch_generate_equals_generate_for_every_prompt():
    model, tok = tiny_model(0), wrap(tiny_hf_tokenizer())
    limits = [10, 20, 5, 16]
    procs = make_logits_processors(repetition_penalty=1.3)
    r = batch_generate(
        model,
        tok,
        PROMPTS,
        max_tokens=limits,
        return_token_ids=True,
        return_prompt_caches=True,
        logits_processors=procs,
    )
    assert r.batched and r.stats.generation_tokens >= sum(len(t) for t in r.token_ids)
    for p, m, text, ids, cache in zip(PROMPTS, limits, r.texts, r.token_ids, r.caches):
        alone = generate(model, tok, p, max_tokens=m, logits_processors=procs, **TREE)
        assert text == alone and tok.decode(ids) == text
        assert cache.tokens[: len(p) + len(ids)] == p + ids
    one = batch_generate(model, tok, PROMPTS[:1], max_tokens=10, **TREE)
    assert not one.batched  # alone: speculative
    assert one.texts[0] == generate(model, tok, PROMPTS[0], max_tokens=10, **TREE)


def test_batch_generate_continues_caches_and_leaves_them_unchanged():
    model, tok = tiny_model(0), wrap(tiny_hf_tokenizer())
    first = batch_generate(
        model,
        tok,
        PROMPTS[:2],
        max_tokens=6,
        return_prompt_caches=True,
        return_token_ids=True,
    )
    before = [list(c.tokens) for c in first.caches]
    second = batch_generate(
        model,
        tok,
        [[7], [8, 9]],
        prompt_caches=first.caches,
        max_tokens=8,
        return_token_ids=True,
    )
    assert [list(c.tokens) for c in first.caches] == before
    for p, a, q, b in zip(PROMPTS, first.token_ids, [[7], [8, 9]], second.token_ids):
        assert b == plain(model, p + a + q, 8)


def test_batch_generate_bad_input_is_a_clear_error():
    model, tok = tiny_model(0), wrap(tiny_hf_tokenizer())
    with pytest.raises(ValueError, match="max_tokens"):
        batch_generate(model, tok, PROMPTS, max_tokens=[4, 4])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        batch_generate(model, tok, [[1, 2], [500]], max_tokens=4)
    with pytest.raises(TypeError, match="unexpected"):
        batch_generate(model, tok, PROMPTS[:2], max_tokens=4, temperature=1.0)
    assert batch_generate(model, tok, [], max_tokens=4).texts == []


# ------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = tmp_path_factory.mktemp("batching") / "tiny-model"
    save_model(tiny_model(0), tiny_config(), path)
    tiny_hf_tokenizer().save_pretrained(path)
    return load(path)


BLOCKER = {"prompt": [77, 78, 79], "max_tokens": 6}


def _held(entered: threading.Event, release: threading.Event):
    """stream_generate that holds the BLOCKER request (token 77) until ``release``:
    requests sent while it is held wait in the queue, so the batch they make
    when it goes on is known."""

    def stream_fn(model, tokenizer, prompt, *args, **kw):
        if 77 in list(prompt):
            entered.set()
            release.wait(30)
        yield from stream_generate(model, tokenizer, prompt, *args, **kw)

    return stream_fn


def _behind_blocker(app, client, bodies, also=()):
    """Send BLOCKER, then ``bodies`` (and run ``also`` threads) once it is held;
    let it go when all wait. Returns the bodies' responses."""
    entered, release = app.state.entered, app.state.release
    entered.clear()
    release.clear()
    results = {}
    blocker = threading.Thread(
        target=lambda: results.update(b=client.post("/v1/completions", json=BLOCKER))
    )
    blocker.start()
    assert entered.wait(30)
    threads = [
        threading.Thread(target=lambda: results.update(r=_answers(client, bodies))),
        *also,
    ]
    for t in threads:
        t.start()
    _wait_for(lambda: app.state.worker.waiting == len(bodies) + len(also))
    release.set()
    for t in [blocker, *threads]:
        t.join(60)
    assert results["b"].status_code == 200
    return results["r"]


def _app(loaded, **kw):
    entered, release = threading.Event(), threading.Event()
    release.set()
    app = create_app(
        *loaded,
        decoding=dict(max_tokens=24, **TREE),
        stream_fn=_held(entered, release),
        **kw,
    )
    app.state.entered, app.state.release = entered, release
    return app


BODIES = [
    {"prompt": [5, 17, 33, 2], "max_tokens": 30},
    {"prompt": [61, 8, 40], "max_tokens": 12, "stop": ["t13"]},
    {"prompt": [9, 9, 12, 70, 33, 1], "max_tokens": 40, "repetition_penalty": 1.2},
    {"prompt": [44], "max_tokens": 5},
    {"prompt": [3, 4, 5, 6, 7, 8], "max_tokens": 25},
]


def _answers(client, bodies):
    with futures.ThreadPoolExecutor(len(bodies)) as ex:
        return list(ex.map(lambda b: client.post("/v1/completions", json=b), bodies))


def test_server_answers_under_load_equal_each_alone(loaded):
    app = _app(loaded)
    try:
        client = TestClient(app)
        alone = [client.post("/v1/completions", json=b).json() for b in BODIES]
        assert app.state.engine.batches == 0
        together = [r.json() for r in _behind_blocker(app, client, BODIES)]
        assert app.state.engine.batches >= 1
        for a, b in zip(alone, together):
            assert b["choices"][0]["text"] == a["choices"][0]["text"]
            assert b["choices"][0]["finish_reason"] == a["choices"][0]["finish_reason"]
            assert b["usage"]["completion_tokens"] == a["usage"]["completion_tokens"]
        health = client.get("/health").json()
        assert health["served"] == 2 * len(BODIES) + 1 and health["failed"] == 0
        assert health["queue"]["decoding"] == 0 and health["queue"]["waiting"] == 0
    finally:
        app.state.worker.stop()


def test_server_cancels_one_sequence_of_a_batch(loaded):
    app = _app(loaded)
    try:
        client = TestClient(app)
        alone = [client.post("/v1/completions", json=b).json() for b in BODIES[:3]]
        left = {}
        leaving = {"prompt": [20, 30], "max_tokens": 400, "stream": True}

        def leave():
            def until(sent):
                return sum(b'"text"' in m.get("body", b"") for m in sent) >= 3

            left["sent"] = asyncio.run(
                _call_and_leave(app, "/v1/completions", leaving, until)
            )

        together = _behind_blocker(
            app, client, BODIES[:3], also=[threading.Thread(target=leave)]
        )
        assert not any(b"[DONE]" in m.get("body", b"") for m in left["sent"])
        for a, b in zip(alone, together):
            assert b.json()["choices"][0]["text"] == a["choices"][0]["text"]
        _wait_for(lambda: app.state.worker.running == 0)
        assert app.state.engine.batches >= 1
    finally:
        app.state.worker.stop()


def test_max_batch_1_serves_one_at_a_time(loaded):
    app = create_app(*loaded, decoding=dict(max_tokens=8, **TREE), max_batch=1)
    try:
        client = TestClient(app)
        out = _answers(client, BODIES[:3])
        assert all(r.status_code == 200 for r in out)
        assert app.state.engine.batches == 0
    finally:
        app.state.worker.stop()
