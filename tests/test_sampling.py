# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Sampled Speculative Streaming draws from the plain sampler's distribution."""

from collections import Counter

import mlx.core as mx
import numpy as np
import pytest
from conftest import emitted, tiny_hf_tokenizer, tiny_model, wrap

from mlx_specstream.decoding.tree import Tree, TreeShape
from mlx_specstream.decoding.verify import TreeVerifier
from mlx_specstream.format import StreamArgs
from mlx_specstream.generate import stream_generate
from mlx_specstream.sample_utils import SamplingArgs, target_logprobs


def tv(a: Counter, b: Counter, n: int) -> float:
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a[k] - b[k]) for k in keys) / n


def test_tree_rejection_sampling_first_tokens_are_distributed_as_p():
    """The device verifier's first and second tokens follow the target laws."""
    mx.random.seed(0)
    p = np.array([0.05, 0.4, 0.25, 0.2, 0.1, 0.0])
    q = np.array([0.3, 0.1, 0.1, 0.1, 0.1, 0.3])  # node 1's distribution
    tree = Tree.from_paths(0, [(1, 4), (3,), (5,)])  # children 1, 3 and 5 (p = 0)
    probs = np.zeros((tree.size, 6))
    probs[0], probs[1], probs[2:] = p, q, 1 / 6
    with np.errstate(divide="ignore"):
        logits = mx.array(np.log(probs).astype(np.float32))
    verify = TreeVerifier(SamplingArgs(temp=1.0), None)
    n = 6000
    first, second = Counter(), Counter()
    for _ in range(n):
        v = verify(tree, logits, [0])
        order, length, corr = np.array(v.order), int(v.length), int(v.correction)
        toks = [tree.tokens[i] for i in order[1:length]] + [corr]
        first[toks[0]] += 1
        if toks[0] == 1:
            second[toks[1]] += 1
    assert _chi2_ok(first, p, n)
    assert first[5] == 0  # a zero-probability draft is never accepted
    assert _chi2_ok(second, q, sum(second.values()))


def test_target_logprobs_applies_top_k_and_top_p():
    logits = mx.array([[3.0, 2.0, 1.0, 0.0]])
    p = np.exp(np.array(target_logprobs(logits, SamplingArgs(temp=1.0, top_k=2))))[0]
    assert p[2] == 0 and p[3] == 0 and abs(p.sum() - 1) < 1e-5
    p = np.exp(np.array(target_logprobs(logits, SamplingArgs(temp=1.0, top_p=0.5))))[0]
    assert p[0] == pytest.approx(1.0, abs=1e-5)


def _chi2_ok(counts: Counter, probs: np.ndarray, n: int) -> bool:
    """Pearson chi-square goodness of fit at p = 0.001, bins with expected < 5 merged."""
    exp, obs = probs * n, np.array([counts[i] for i in range(probs.size)], float)
    big = exp >= 5
    e = np.append(exp[big], exp[~big].sum())
    o = np.append(obs[big], obs[~big].sum())
    if e[-1] == 0:
        e, o = e[:-1], o[:-1]
    stat = float(((o - e) ** 2 / e).sum())
    df = e.size - 1
    # Wilson-Hilferty approximation of the chi-square 0.999 quantile.
    crit = df * (1 - 2 / (9 * df) + 3.09 * (2 / (9 * df)) ** 0.5) ** 3
    return stat < crit


SAMPLED_VOCAB, SAMPLED_TEMP, SAMPLED_PROMPT = 16, 0.7, [3, 5, 7]


def sampling_model():
    """The small model of the end-to-end chi-square tests, and its tokenizer."""
    model = tiny_model(
        7,
        StreamArgs(num_streams=2, num_stream_layers=1),
        vocab_size=SAMPLED_VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
    )
    return model, wrap(tiny_hf_tokenizer(SAMPLED_VOCAB), eos_token_ids=[])


def next_token_law(model, args: SamplingArgs):
    """``probs(ids)``: the sampler's exact next-token distribution after ``ids``."""

    def probs(ids):
        logits = model(mx.array([ids]))[0, -1:]
        return np.exp(np.array(target_logprobs(logits, args)))[0]

    return probs


def two_token_laws(probs) -> tuple:
    """Exact laws of generated tokens 1 and 2, from ``probs(ids)`` (the sampler's
    next-token distribution after ``ids``)."""
    p1 = probs(SAMPLED_PROMPT)
    p2 = sum(p1[t] * probs(SAMPLED_PROMPT + [t]) for t in range(SAMPLED_VOCAB))
    return p1, p2


def sample_speculative(model, tok, n: int, seed: int):
    """``n`` sampled 3-token generations (6-node trees): their responses, in order."""
    mx.random.seed(seed)
    for _ in range(n):
        yield list(
            stream_generate(
                model,
                tok,
                SAMPLED_PROMPT,
                max_tokens=3,
                temp=SAMPLED_TEMP,
                tree=TreeShape(budget=6),
            )
        )


def test_sampled_speculative_matches_plain_distribution():
    """End to end: the law of generated tokens 1 and 2 equals the model's exact law."""
    model, tok = sampling_model()
    probs = next_token_law(model, SamplingArgs(temp=SAMPLED_TEMP))
    p1, p2 = two_token_laws(probs)
    n, c1, c2 = 500, Counter(), Counter()
    for rs in sample_speculative(model, tok, n, seed=3):
        out = [t for r in rs for t in emitted(r)]
        c1[out[0]] += 1
        c2[out[1]] += 1
    # Token 2 comes out of a drafted tree (accepted draft or correction after rejections).
    assert _chi2_ok(c1, p1, n)
    assert _chi2_ok(c2, p2, n)
    # The test has power: the law of always taking the top draft differs clearly.
    top = Counter({int(np.argmax(p2)): n})
    assert not _chi2_ok(top, p2, n)
