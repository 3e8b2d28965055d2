# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Our stream_generate is a lossless drop-in for mlx-lm's.

Code written for ``mlx_lm.stream_generate`` (mlx-lm's samplers, logits processors and
prompt caches) runs unchanged against ours; greedy output equals mlx-lm's token for
token on the same weights, with and without speculation; sampled output has the
distribution mlx-lm's ``make_sampler`` means.
"""

from collections import Counter
from functools import partial

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from conftest import emitted, tiny_hf_tokenizer, tiny_model, wrap
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    make_logits_processors,
)
from mlx_lm.sample_utils import make_sampler as mlx_lm_make_sampler
from test_generate import OracleDrafter
from test_sampling import _chi2_ok

import mlx_specstream
from mlx_specstream import chat
from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.format import StreamArgs
from mlx_specstream.generate import GenerationResponse, generate, stream_generate
from mlx_specstream.models.cache import PromptCache
from mlx_specstream.sample_utils import SamplingArgs, make_sampler

PROMPT = [5, 17, 33, 2, 61, 8, 40]
# Longer than repetition_context_size (20): mlx-lm's processors see only this call's
# tokens, ours the whole conversation; past 20 tokens the two windows agree.
TURN_2 = np.random.default_rng(1).integers(1, 96, 22).tolist()
SPEC = dict(tree=TreeShape(budget=8))


def drafting_model(seed: int = 0):
    """Random streams strong enough that some drafts are accepted."""
    return tiny_model(
        seed, StreamArgs(num_streams=3, num_stream_layers=3), stream_scale=0.2
    )


def no_eos():
    return wrap(tiny_hf_tokenizer(), eos_token_ids=[])


def tokens_of(rs) -> list:
    return [t for r in rs for t in emitted(r)]


def mlx_lm_chat(generate_fn, model, tokenizer, turns, **kw) -> list:
    """A two-turn loop written for mlx_lm.stream_generate, mlx-lm imports only."""
    cache = make_prompt_cache(model)
    out = []
    for turn in turns:
        text, records = "", []
        for r in generate_fn(
            model,
            tokenizer,
            turn,
            max_tokens=16,
            sampler=mlx_lm_make_sampler(temp=0.0),
            logits_processors=make_logits_processors(
                logit_bias={3: 1.5}, repetition_penalty=1.3
            ),
            prompt_cache=cache,
            **kw,
        ):
            text += r.text
            records.append(
                (
                    r.token,
                    r.logprobs[r.token].item(),
                    r.from_draft,
                    r.finish_reason,
                    r.generation_tokens,
                    r.prompt_tokens,
                )
            )
            assert r.prompt_tps > 0 and r.generation_tps >= 0 and r.peak_memory >= 0
            assert r.logprobs.shape == (model.args.vocab_size,)
        out.append((text, records))
    return out


@pytest.mark.parametrize("speculative", [False, True])
def test_mlx_lm_loop_runs_unchanged_and_matches(speculative):
    model, tok = drafting_model(1), no_eos()
    assert isinstance(make_prompt_cache(model), PromptCache)  # model.make_cache
    ours = partial(stream_generate, **SPEC) if speculative else stream_generate
    theirs = mlx_lm_chat(mlx_lm.stream_generate, model, tok, [PROMPT, TURN_2])
    got = mlx_lm_chat(ours, model, tok, [PROMPT, TURN_2])
    for (t_text, t_rec), (g_text, g_rec) in zip(theirs, got):
        assert g_text == t_text
        assert [r[0] for r in g_rec] == [r[0] for r in t_rec]
        np.testing.assert_allclose(
            [r[1] for r in g_rec], [r[1] for r in t_rec], atol=1e-4
        )
        assert [r[3:] for r in g_rec] == [r[3:] for r in t_rec]
        assert all(isinstance(r[2], bool) for r in g_rec)
    drafted = [r[2] for _, rec in got for r in rec]
    assert any(drafted) == speculative


@pytest.mark.parametrize("speculative", [False, True])
def test_greedy_equals_mlx_lm_with_eos_stop(speculative):
    model = drafting_model(2)
    plain = [r.token for r in stream_generate(model, no_eos(), PROMPT, max_tokens=30)]
    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[plain[12]])
    theirs = list(mlx_lm.stream_generate(model, tok, PROMPT, max_tokens=30))
    kw = SPEC if speculative else dict(speculative=False)
    ours = list(stream_generate(model, tok, PROMPT, max_tokens=30, **kw))
    assert [r.token for r in ours] == [r.token for r in theirs]
    assert ours[-1].finish_reason == theirs[-1].finish_reason == "stop"
    assert ours[-1].token == plain[12] and ours[-1].finish_reason == "stop"
    assert [r.text for r in ours] == [r.text for r in theirs]
    assert [r.generation_tokens for r in ours] == [r.generation_tokens for r in theirs]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(
            np.array(a.logprobs), np.array(b.logprobs), atol=1e-4
        )


@pytest.mark.parametrize(
    "processors",
    [
        dict(repetition_penalty=1.3),
        dict(presence_penalty=0.8, frequency_penalty=0.4, logit_bias={7: 2.0}),
    ],
)
@pytest.mark.parametrize("stream_pass", ["tree", "accepted"])
def test_logits_processors_speculative_equals_plain(processors, stream_pass):
    model, tok = drafting_model(0), no_eos()
    lp = make_logits_processors(**processors)
    plain = tokens_of(
        stream_generate(
            model, tok, PROMPT, max_tokens=40, speculative=False, logits_processors=lp
        )
    )
    unprocessed = tokens_of(
        stream_generate(model, tok, PROMPT, max_tokens=40, speculative=False)
    )
    assert plain != unprocessed  # the processors change the output
    oracle = OracleDrafter(plain, len(PROMPT), 4)  # deep accepted paths
    for kw in (SPEC, dict(prompt_lookup=True, **SPEC), dict(drafter=oracle)):
        rs = list(
            stream_generate(
                model,
                tok,
                PROMPT,
                max_tokens=40,
                logits_processors=lp,
                stream_pass=stream_pass,
                **kw,
            )
        )
        assert tokens_of(rs) == plain, kw
        assert rs[-1].forward_calls < len(plain)  # the speculative path drafted


@pytest.mark.parametrize("first, second", [(True, True), (False, False), (True, False)])
def test_reused_prompt_cache_equals_from_scratch(first, second):
    model, tok = drafting_model(3), no_eos()
    kw = {True: SPEC, False: dict(speculative=False)}
    cache = mlx_specstream.make_prompt_cache(model)
    out1 = tokens_of(
        stream_generate(
            model, tok, PROMPT, max_tokens=11, prompt_cache=cache, **kw[first]
        )
    )
    assert cache.tokens == PROMPT + out1
    out2 = tokens_of(
        stream_generate(
            model, tok, TURN_2, max_tokens=14, prompt_cache=cache, **kw[second]
        )
    )
    scratch = tokens_of(
        stream_generate(
            model, tok, PROMPT + out1 + TURN_2, max_tokens=14, speculative=False
        )
    )
    assert out2 == scratch
    assert cache.tokens == PROMPT + out1 + TURN_2 + out2
    assert all(c.offset == cache.fed for c in cache)


def test_trimmed_prompt_cache_equals_from_scratch():
    model, tok = drafting_model(3), no_eos()
    cache = make_prompt_cache(model)
    out1 = tokens_of(
        stream_generate(model, tok, PROMPT, max_tokens=12, prompt_cache=cache, **SPEC)
    )
    history = PROMPT + out1
    for trim in (trim_prompt_cache, PromptCache.trim):  # mlx-lm's, and ours
        assert trim(cache, 4) == 4
        history = history[:-4]
        out = tokens_of(
            stream_generate(
                model, tok, TURN_2, max_tokens=8, prompt_cache=cache, **SPEC
            )
        )
        scratch = tokens_of(
            stream_generate(
                model, tok, history + TURN_2, max_tokens=8, speculative=False
            )
        )
        assert out == scratch
        history = history + TURN_2 + out
        assert cache.tokens == history


@pytest.mark.parametrize("speculative", [False, True])
def test_cache_holds_what_was_yielded(speculative):
    """An EOS inside an accepted path, or a caller who stops iterating, leaves the
    cache holding exactly the tokens seen (the EOS included, as in mlx-lm)."""
    model = tiny_model(1)
    plain = tokens_of(stream_generate(model, no_eos(), PROMPT, max_tokens=30))
    eos = plain[9]
    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[eos])
    # An oracle drafts the true continuation, so the EOS sits inside a long path.
    kw = dict(drafter=OracleDrafter(plain, len(PROMPT), 5)) if speculative else {}
    cache = make_prompt_cache(model)
    rs = list(stream_generate(model, tok, PROMPT, prompt_cache=cache, **kw))
    assert rs[-1].finish_reason == "stop" and rs[-1].token == eos
    assert cache.tokens == PROMPT + plain[: plain.index(eos) + 1]
    assert all(c.offset == cache.fed for c in cache)

    cache = make_prompt_cache(model)
    seen = []
    for r in stream_generate(model, no_eos(), PROMPT, prompt_cache=cache, **kw):
        seen.append(r.token)
        if len(seen) == 3:  # inside the oracle's second pass
            break
    assert cache.tokens == PROMPT + seen
    out = tokens_of(
        stream_generate(model, no_eos(), [4], max_tokens=6, prompt_cache=cache)
    )
    assert out == tokens_of(
        stream_generate(model, no_eos(), PROMPT + seen + [4], max_tokens=6)
    )


def test_response_fields():
    model, tok = drafting_model(0), no_eos()
    rs = list(stream_generate(model, tok, PROMPT, max_tokens=20, **SPEC))
    assert all(isinstance(r, GenerationResponse) for r in rs)
    assert [r.generation_tokens for r in rs] == list(range(1, 21))
    assert rs[-1].finish_reason == "length" and all(
        r.finish_reason is None for r in rs[:-1]
    )
    assert [r.forward_calls for r in rs] == sorted(r.forward_calls for r in rs)
    assert rs[-1].tokens_per_pass == 20 / rs[-1].forward_calls
    for r in rs:
        assert r.finish_reason != "stop" and r.prompt_tokens == len(PROMPT)
        assert r.accepted < r.tree_size and isinstance(r.logprobs, mx.array)
        assert abs(float(mx.logsumexp(r.logprobs))) < 1e-4
    # Each pass: its accepted drafts, then its correction token.
    by_pass = {}
    for r in rs:
        by_pass.setdefault(r.forward_calls, []).append(r)
    for group in by_pass.values():
        assert [r.from_draft for r in group] == [True] * group[0].accepted + [False]


def test_mlx_lm_kwargs_ignored_or_refused():
    model, tok = tiny_model(0), no_eos()
    base = tokens_of(stream_generate(model, tok, PROMPT, max_tokens=5))
    ignored = dict(kv_group_size=64, quantized_kv_start=0, num_draft_tokens=3)
    assert (
        tokens_of(stream_generate(model, tok, PROMPT, max_tokens=5, **ignored)) == base
    )
    with pytest.raises(TypeError, match="not_an_arg"):
        list(stream_generate(model, tok, PROMPT, not_an_arg=1))
    with pytest.raises(ValueError, match="either sampler or temp"):
        list(stream_generate(model, tok, PROMPT, sampler=make_sampler(0.5), temp=0.7))
    with pytest.raises(ValueError, match="max_kv_size"):
        mlx_specstream.make_prompt_cache(model, max_kv_size=128)
    # An mx.array prompt, as mlx-lm takes; -1: no limit but the context.
    arr = tokens_of(stream_generate(model, tok, mx.array(PROMPT), max_tokens=5))
    assert arr == base
    rs = list(stream_generate(model, tok, PROMPT, max_tokens=-1, speculative=False))
    assert len(rs) == model.args.max_position_embeddings - len(PROMPT)
    assert rs[-1].finish_reason == "length"


def test_opaque_sampler_decodes_plainly_as_mlx_lm():
    """mlx-lm's sampler closure cannot verify a tree: plain decoding with it gives
    mlx-lm's very tokens for the same seed."""
    model, tok = drafting_model(0), no_eos()
    sampler = mlx_lm_make_sampler(temp=0.9, top_p=0.9)
    mx.random.seed(5)
    theirs = [
        r.token
        for r in mlx_lm.stream_generate(
            model, tok, PROMPT, max_tokens=20, sampler=sampler
        )
    ]
    mx.random.seed(5)
    rs = list(
        stream_generate(model, tok, PROMPT, max_tokens=20, sampler=sampler, **SPEC)
    )
    assert [r.token for r in rs] == theirs
    assert rs[-1].forward_calls == 20 and not any(r.from_draft for r in rs)
    # Ours, same parameters, plain: the same draws again; XTC too decodes plainly.
    mx.random.seed(5)
    ours = tokens_of(
        stream_generate(
            model,
            tok,
            PROMPT,
            max_tokens=20,
            sampler=make_sampler(0.9, 0.9),
            speculative=False,
        )
    )
    assert ours == theirs
    xtc = make_sampler(0.9, xtc_probability=0.5, xtc_threshold=0.1)
    assert not xtc.tree_exact
    rs = list(stream_generate(model, tok, PROMPT, max_tokens=8, sampler=xtc, **SPEC))
    assert rs[-1].forward_calls == 8


def test_make_sampler_carries_mlx_lm_parameters():
    s = make_sampler(0.7, 0.9, 0.05, 2, 20, 0.0, 0.2, [1, 2])
    assert s == SamplingArgs(0.7, 0.9, 0.05, 2, 20, 0.0, 0.2, (1, 2))
    assert s.temp == 0.7 and s.top_p == 0.9 and s.top_k == 20 and s.tree_exact
    lp = mx.random.normal((1, 96)) * 3
    for args in (dict(temp=0.8, top_p=0.9), dict(temp=1.5, min_p=0.05, top_k=10)):
        mx.random.seed(1)
        theirs = [mlx_lm_make_sampler(**args)(lp).item() for _ in range(30)]
        mx.random.seed(1)
        assert [make_sampler(**args)(lp).item() for _ in range(30)] == theirs
    # top_p 0 and 1 both mean off, as in mlx-lm.
    model, tok = tiny_model(0), no_eos()
    runs = []
    for top_p in (0.0, 1.0):
        mx.random.seed(2)
        runs.append(
            tokens_of(
                stream_generate(
                    model, tok, PROMPT, max_tokens=10, temp=0.8, top_p=top_p
                )
            )
        )
    assert runs[0] == runs[1]


# --- the sampled distribution --------------------------------------------------

VOCAB = 16
SHORT = [3, 5, 7]
SAMPLING = dict(temp=0.4, top_p=0.8, min_p=0.3, top_k=8)  # top-p and top-k bind


def _filtered(logprobs: mx.array, top_p: float, min_p: float, top_k: int) -> mx.array:
    # mlx-lm's filters, in make_sampler's order.
    if 0 < top_p < 1:
        logprobs = apply_top_p(logprobs, top_p)
    if min_p:
        logprobs = apply_min_p(logprobs, min_p)
    return apply_top_k(logprobs, top_k) if top_k else logprobs


def _could_be(counts: Counter, probs: np.ndarray, n: int) -> bool:
    """Whether draws ``counts`` fit law ``probs``; a draw it cannot make rejects it."""
    if any(probs[t] == 0 for t in counts):
        return False
    if (probs * n >= 5).sum() < 2:  # too few bins for chi-square
        return len(counts) == 1
    return _chi2_ok(counts, probs, n)


def _law(logprobs: mx.array, temp_first: bool) -> np.ndarray:
    """What mlx-lm's make_sampler(**SAMPLING) draws from (temperature after the
    filters), or the law if the temperature came first."""
    s = dict(SAMPLING)
    temp = s.pop("temp")
    if temp_first:
        x = _filtered(logprobs / temp, **s)
    else:
        x = _filtered(logprobs, **s) / temp
    return np.array(mx.softmax(x, axis=-1))[0].astype(np.float64)


@pytest.mark.parametrize(
    "penalties", [{}, dict(repetition_penalty=3.0, logit_bias={2: 1.0})]
)
def test_sampled_distribution_is_mlx_lm_make_samplers(penalties):
    """Plain and tree sampling draw from mlx-lm's law: the logits processors, then
    the filters, then the temperature."""
    tok = no_eos()
    processors = make_logits_processors(**penalties)
    model = tiny_model(
        7,
        StreamArgs(num_streams=2, num_stream_layers=1),
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
    )

    def logprobs(ids):
        x = model(mx.array([ids]))[0, -1:]
        for p in processors:
            x = p(mx.array(ids), x)
        return x - mx.logsumexp(x, axis=-1, keepdims=True)

    def laws(temp_first):
        p1 = _law(logprobs(SHORT), temp_first)
        p2 = sum(p1[t] * _law(logprobs(SHORT + [t]), temp_first) for t in range(VOCAB))
        return p1, p2

    (p1, p2), (w1, w2) = laws(False), laws(True)
    # The orders differ clearly at these settings: the test has power.
    assert 0.5 * np.abs(p1 - w1).sum() > 0.1 and 0.5 * np.abs(p2 - w2).sum() > 0.1

    # mlx-lm's own sampler draws from p1 (the reference law is mlx-lm's meaning).
    n = 300
    mx.random.seed(0)
    draws = mlx_lm_make_sampler(**SAMPLING)(mx.repeat(logprobs(SHORT), n, 0))
    assert _chi2_ok(Counter(np.array(draws).tolist()), p1, n)

    sampler = make_sampler(**SAMPLING)
    for kw in (dict(speculative=False), dict(tree=TreeShape(budget=6))):
        c1, c2 = Counter(), Counter()
        mx.random.seed(3)
        for _ in range(n):
            # Token 2 comes out of a drafted tree (within max_tokens: depth 1).
            out = tokens_of(
                stream_generate(
                    model,
                    tok,
                    SHORT,
                    max_tokens=3,
                    sampler=sampler,
                    logits_processors=processors,
                    **kw,
                )
            )
            c1[out[0]] += 1
            c2[out[1]] += 1
        assert _chi2_ok(c1, p1, n) and _chi2_ok(c2, p2, n), kw
        # Temperature before the filters would be caught.
        assert not (_could_be(c1, w1, n) and _could_be(c2, w2, n)), kw


def test_chat_keeps_the_cache_across_turns(monkeypatch, capsys):
    model, tok = tiny_model(0), no_eos()
    tok._tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}t1 {% endif %}"
    )
    lines = iter(["t5 t6", "t7 t8 t9", "/reset", "t5 t6"])

    def read(_):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    calls = []

    def recording(model, tokenizer, prompt, **kw):
        cache = kw["prompt_cache"]
        calls.append((list(prompt), cache, list(cache.tokens)))
        yield from stream_generate(model, tokenizer, prompt, **kw)

    monkeypatch.setattr("builtins.input", read)
    monkeypatch.setattr(chat, "stream_generate", recording)
    chat.chat_loop(model, tok, dict(max_tokens=6))
    (p1, c1, h1), (p2, c2, h2), (p3, c3, h3) = calls
    assert p1 == [5, 6, 1] and h1 == [] and p3 == p1 and h3 == []
    assert p2 == [7, 8, 9, 1] and c2 is c1 and h2[:3] == p1 and len(h2) == 3 + 6
    assert c3 is not c1  # /reset: a new conversation
    answers = capsys.readouterr().out.splitlines()[1:]
    assert answers[0] == answers[2] != answers[1]
    # Turn 2 equals decoding the whole conversation from scratch.
    scratch = generate(model, tok, h2 + p2, max_tokens=6)
    assert answers[1] == scratch
