# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The hand-written exp, SiLU, masked attention and RoPE tables against MLX's own."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.models.rope_utils import initialize_rope

from mlx_specstream.models import fast_ops
from mlx_specstream.models.rope import apply_rope, rope_tables


def test_exp_matches_float64_to_a_few_ulp():
    x = np.concatenate([np.linspace(-87, 88, 200_001), [0.0, -1e-8, 1e-8, 0.5]])
    got = np.array(fast_ops.poly_exp(mx.array(x.astype(np.float32)))).astype(np.float64)
    ref = np.exp(x.astype(np.float32).astype(np.float64))
    assert np.max(np.abs(got - ref) / ref) < 3e-7


def test_exp_saturates_instead_of_overflowing():
    got = np.array(fast_ops.poly_exp(mx.array([-np.inf, -1000.0, 1000.0], mx.float32)))
    assert got[0] < 1e-37 and got[1] < 1e-37
    assert np.isfinite(got[2]) and got[2] > 1e38


def test_swiglu_equals_silu_times_up():
    rng = np.random.default_rng(0)
    g = mx.array(rng.normal(size=(1, 7, 96)).astype(np.float32) * 6)
    u = mx.array(rng.normal(size=(1, 7, 96)).astype(np.float32))
    np.testing.assert_allclose(
        np.array(fast_ops.swiglu(g, u)), np.array(nn.silu(g) * u), atol=2e-6
    )


@pytest.mark.parametrize(
    "R,P,heads,kv_heads", [(2, 5, 4, 4), (16, 70, 9, 3), (5, 64, 6, 2)]
)
def test_attention_matches_mlx_sdpa(R, P, heads, kv_heads):
    rng = np.random.default_rng(R * P)
    q = mx.array(rng.normal(size=(1, heads, R, 32)).astype(np.float32))
    k = mx.array(rng.normal(size=(1, kv_heads, P, 32)).astype(np.float32))
    v = mx.array(rng.normal(size=(1, kv_heads, P, 32)).astype(np.float32))
    mask = rng.random((R, P)) < 0.6
    mask[:, 0] = True  # every row sees at least one key
    mask[:, -3:] = False  # padded keys, as after bucketing
    mask = mx.array(mask)
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask=mask)
    got = fast_ops.attention(q, k, v, 0.3, mask)
    np.testing.assert_allclose(np.array(got), np.array(ref), atol=2e-6)


ROPES = [
    None,
    {"type": "linear", "factor": 2.0},
    {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
]


@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("scaling", ROPES)
def test_rope_tables_equal_per_row_rope(traditional, scaling):
    rope = initialize_rope(64, 10000.0, traditional, scaling, 131072)
    rng = np.random.default_rng(1)
    x = mx.array(rng.normal(size=(1, 7, 3, 64)).astype(np.float32))
    pos = mx.array(rng.integers(0, 5000, 7).astype(np.int32))
    tables = rope_tables(rope, pos, 64)
    assert tables is not None
    np.testing.assert_allclose(
        np.array(apply_rope(rope, x, pos, tables)),
        np.array(apply_rope(rope, x, pos)),
        atol=1e-5,
    )


def test_rope_tables_decline_partial_rotation():
    rope = nn.RoPE(32, traditional=False)  # rotates half of a 64-wide head
    assert rope_tables(rope, mx.array([3, 4], mx.int32), 64) is None
