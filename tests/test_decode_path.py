# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The per-device decode path: both op choices run here and compute alike.

Greedy decoding on both paths (speculative == plain, and the gpu path's plain output
equal to the cpu path's, for every family) is checked in
test_generate.test_greedy_lossless_matrix.
"""

import mlx.core as mx
import numpy as np
import pytest

from mlx_specstream.decoding.drafters import topk_logprobs
from mlx_specstream.models import fast_ops
from mlx_specstream.models.fast_ops import PATH_ENV, decode_path, use_decode_path


def test_fused_attention_matches_the_masked_softmax():
    mx.random.seed(0)
    q = mx.random.normal((1, 4, 6, 16))
    k, v = mx.random.normal((1, 2, 70, 16)), mx.random.normal((1, 2, 70, 16))
    mask = mx.array(np.random.default_rng(0).random((6, 70)) < 0.6)
    mask[:, 0] = True  # every row sees some key
    with use_decode_path("cpu"):
        a = fast_ops.attention(q, k, v, 0.25, mask)
    with use_decode_path("gpu"):
        b = fast_ops.attention(q, k, v, 0.25, mask)
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)


@pytest.mark.parametrize("vocab", [None, "subset"])
def test_device_topk_equals_host_topk(vocab):
    mx.random.seed(1)
    logits = mx.random.normal((4, 300)) * 3
    ids = None if vocab is None else np.random.default_rng(1).permutation(1000)[:300]
    host = topk_logprobs(logits, 12, ids, on_device=False)
    dev = topk_logprobs(logits, 12, ids, on_device=True)
    np.testing.assert_array_equal(host.tokens, dev.tokens)
    np.testing.assert_allclose(host.logprobs, dev.logprobs, atol=1e-5)


def test_the_path_follows_the_device_and_the_overrides(monkeypatch):
    monkeypatch.delenv(PATH_ENV, raising=False)
    expected = "gpu" if mx.default_device() == mx.gpu else "cpu"
    assert decode_path().name == expected
    monkeypatch.setenv(PATH_ENV, "gpu")
    assert decode_path() == fast_ops.PATHS["gpu"]
    with use_decode_path("cpu"):  # the override beats the environment
        assert decode_path().name == "cpu"
    assert decode_path().name == "gpu"
    monkeypatch.setenv(PATH_ENV, "tpu")
    with pytest.raises(ValueError, match="decode path must be one of"):
        decode_path()
    with pytest.raises(ValueError, match="decode path must be one of"):
        with use_decode_path("fast"):
            pass
