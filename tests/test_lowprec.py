# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Lossless in low precision: as close to plain decoding as plain decoders are.

In float32 greedy Speculative Streaming equals plain greedy decoding token for token
(test_generate.py pins it over many shapes; here once more with the float32 logits
path on). In bfloat16 / float16 no two decoders that round differently are
bit-identical: plain decoding with another prefill chunk size differs too. The bound
pinned here: over a fixed set of prompts, Speculative Streaming differs from plain
decoding on no more sequences than plain decoding with 3-token prefill chunks does,
plus a margin (see ``MARGIN``). docs/lossless.md has the measured rates on the
default model.
"""

from collections import Counter
from typing import List

import mlx.core as mx
import numpy as np
import pytest
from conftest import emitted, tiny_model
from test_sampling import (
    SAMPLED_TEMP,
    _chi2_ok,
    sample_speculative,
    sampling_model,
    two_token_laws,
)

from mlx_specstream.decoding.decoder import plain_generate_step
from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.decoding.verify import TreeVerifier
from mlx_specstream.format import StreamArgs
from mlx_specstream.generate import stream_generate
from mlx_specstream.sample_utils import SamplingArgs, target_logprobs

N_PROMPTS, MAX_TOKENS = 16, 24
# Sequences. The counts are deterministic on one machine, but which near-ties a
# kernel rounds one way or the other depends on the backend (CPU / Metal, BLAS), so
# on another machine either count may move by a sequence or two for reasons that
# say nothing about the verifier. A verifier that is worse than plain decoding
# (e.g. argmax over coarsely rounded logits, see test_bound_has_power) exceeds the
# bound by far more than this.
MARGIN = 2


def prompts() -> List[List[int]]:
    rng = np.random.default_rng(14)
    return [
        [int(t) for t in rng.integers(1, 96, size=int(rng.integers(5, 30)))]
        for _ in range(N_PROMPTS)
    ]


def flat_model(dtype: mx.Dtype, seed: int = 0):
    """A tiny model with flatter logits than conftest's (near-ties happen, as in a
    trained model's low-precision logits), cast to ``dtype``."""
    model = tiny_model(seed, StreamArgs(num_streams=3, num_stream_layers=2))
    model.model.embed_tokens.weight = model.model.embed_tokens.weight * 0.25
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model


def decode(model, tokenizer, prompt, **kw) -> List[int]:
    return [
        t
        for r in stream_generate(model, tokenizer, prompt, max_tokens=MAX_TOKENS, **kw)
        for t in emitted(r)
    ]


def differing(model, tokenizer, **kw) -> int:
    """Prompts whose greedy output with ``kw`` differs from plain decoding's."""
    n = 0
    for p in prompts():
        plain = decode(model, tokenizer, p, speculative=False)
        n += decode(model, tokenizer, p, **kw) != plain
    return n


SPEC = dict(tree=TreeShape(budget=8), prompt_lookup=True)


def rates(model, tokenizer) -> dict:
    return {
        "chunk3": differing(model, tokenizer, speculative=False, prefill_step_size=3),
        "accepted": differing(model, tokenizer, stream_pass="accepted", **SPEC),
        "tree": differing(model, tokenizer, stream_pass="tree", **SPEC),
    }


def within_bound(r: dict) -> bool:
    return max(r["accepted"], r["tree"]) <= r["chunk3"] + MARGIN


def test_float32_stays_exact(tokenizer):
    model = flat_model(mx.float32)
    assert rates(model, tokenizer) == {"chunk3": 0, "accepted": 0, "tree": 0}
    h = mx.random.normal((5, model.args.hidden_size))
    assert mx.array_equal(model.logits(h), model.logits(h, float32=True))


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
def test_low_precision_divergence_within_plain_vs_plain(tokenizer, dtype):
    r = rates(flat_model(dtype), tokenizer)
    assert within_bound(r), r


def test_bound_has_power(tokenizer, monkeypatch):
    """A verifier that takes its argmax over logits rounded to 0.25 (ties go to the
    lowest token id) breaks the bound: the test can fail."""
    model = flat_model(mx.bfloat16)
    verify = TreeVerifier.__call__

    def coarse(self, tree, logits, history, keep=None):
        return verify(self, tree, mx.round(logits * 4) / 4, history, keep)

    monkeypatch.setattr(TreeVerifier, "__call__", coarse)
    r = rates(model, tokenizer)
    assert not within_bound(r), r


def test_sampled_speculative_matches_plain_distribution_bf16():
    """test_sampling.py's chi-square test on a bfloat16 model: the law of generated
    tokens 1 and 2 is the plain sampler's (its float32 logits of the bf16 model)."""
    model, tok = sampling_model()
    model.set_dtype(mx.bfloat16)
    args = SamplingArgs(temp=SAMPLED_TEMP)

    def probs(ids):  # the plain sampler's distribution after ids
        step = next(plain_generate_step(ids, model, args))
        return np.exp(np.array(target_logprobs(step.logprobs, args)))[0]

    p1, p2 = two_token_laws(probs)
    n, c1, c2 = 500, Counter(), Counter()
    for rs in sample_speculative(model, tok, n, seed=3):
        out = [t for r in rs for t in emitted(r)]
        c1[out[0]] += 1
        c2[out[1]] += 1
    assert _chi2_ok(c1, p1, n)
    assert _chi2_ok(c2, p2, n)
    top = Counter({int(np.argmax(p2)): n})
    assert not _chi2_ok(top, p2, n)
