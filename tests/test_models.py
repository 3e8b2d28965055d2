# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Multi-stream attention semantics (eq. 2) on tiny random models."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import tiny_model

from mlx_specstream.decoder import _streams_after_compaction, prefill
from mlx_specstream.format import StreamArgs
from mlx_specstream.models.cache import make_cache
from mlx_specstream.models.msa import Rows

ARGS = StreamArgs(
    num_streams=3,
    num_stream_layers=2,
    stream_adapter_rank=4,
    insertion_rank=2,
    prune_rank=4,
)
TOKENS = mx.array([4, 9, 1, 30, 22, 7, 15, 3])


@pytest.mark.parametrize(
    "overrides", [dict(), dict(model_type="qwen2", tie_word_embeddings=True)]
)
def test_main_stream_never_sees_streams(overrides):
    model = tiny_model(0, ARGS, **overrides)
    main, streams = model.all_stream_logits(TOKENS)
    assert streams.shape == (8, 3, 96)
    plain = model(TOKENS[None])[0]
    np.testing.assert_allclose(np.array(main), np.array(plain), atol=1e-5)
    # Zeroing the stream parameters changes the streams but not the main logits.
    model.streams.update({"stream_embed": mx.zeros_like(model.streams.stream_embed)})
    main2, streams2 = model.all_stream_logits(TOKENS)
    np.testing.assert_array_equal(np.array(main), np.array(main2))
    assert not np.allclose(np.array(streams), np.array(streams2))


def test_stream_sees_only_its_prefix_and_lower_streams():
    model = tiny_model(1, ARGS)
    _, full = model.all_stream_logits(TOKENS)
    _, prefix = model.all_stream_logits(TOKENS[:5])
    # Stream rows at t = 0..4 do not see tokens after t.
    np.testing.assert_allclose(np.array(full[:5]), np.array(prefix), atol=1e-5)
    # Changing stream 3's identifier leaves streams 1 and 2 unchanged (they cannot see it).
    P = np.array(model.streams.stream_embed)
    P[2] += 1.0
    model.streams.update({"stream_embed": mx.array(P)})
    _, changed = model.all_stream_logits(TOKENS)
    np.testing.assert_allclose(
        np.array(changed[:, :2]), np.array(full[:, :2]), atol=1e-5
    )
    assert not np.allclose(np.array(changed[:, 2]), np.array(full[:, 2]))
    # ...while changing stream 1's changes stream 2 (it attends to stream 1).
    P[0] += 1.0
    model.streams.update({"stream_embed": mx.array(P)})
    _, changed1 = model.all_stream_logits(TOKENS)
    assert not np.allclose(np.array(changed1[:, 1]), np.array(full[:, 1]))


def test_accepted_only_stream_pass_equals_training_layout():
    """The decoder's streams-after-compaction pass gives the same streams as eq. 2."""
    model = tiny_model(2, ARGS)
    _, streams = model.all_stream_logits(TOKENS)
    cache = make_cache(model)
    prefill(model, TOKENS.tolist() + [0], cache, step_size=3)  # caches all of TOKENS
    rows = Rows.causal(TOKENS.size, 0, model.streams)
    h = model.run_layers(model.embed(TOKENS), rows, make_cache(model), 0, model.split)
    s = _streams_after_compaction(model, cache, h[0, -1], TOKENS.size - 1)
    np.testing.assert_allclose(
        np.array(model.logits(s)), np.array(streams[-1]), atol=1e-4
    )


def test_early_exit_head_is_identity_at_zero():
    model = tiny_model(0, ARGS, stream_scale=0.0)
    ee = model.early_exit_logits(TOKENS)
    rows = Rows.causal(TOKENS.size, 0, model.streams)
    h = model.run_layers(model.embed(TOKENS), rows, make_cache(model), 0, model.split)
    np.testing.assert_allclose(np.array(ee), np.array(model.logits(h[0])), atol=1e-6)


def test_too_many_stream_layers_is_an_error():
    with pytest.raises(ValueError, match="num_stream_layers"):
        tiny_model(0, StreamArgs(num_stream_layers=9))
