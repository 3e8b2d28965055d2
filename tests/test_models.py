# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Multi-stream attention semantics (eq. 2) on tiny random models."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import emitted, tiny_model

from mlx_specstream.decoding.decoder import prefill
from mlx_specstream.decoding.tree import Tree
from mlx_specstream.format import StreamArgs
from mlx_specstream.models import streaming
from mlx_specstream.models.cache import make_prompt_cache
from mlx_specstream.models.fast_ops import decode_path
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
    """The decoder's pass for one verified node's streams (against the tree's K/V in
    the cache, the node given on the device) gives the same streams as eq. 2."""
    model = tiny_model(2, ARGS)
    _, streams = model.all_stream_logits(TOKENS)
    cache = make_prompt_cache(model)
    prefill(model, TOKENS.tolist(), cache, step_size=3)  # caches all but the last
    path = decode_path()
    tree = Tree((int(TOKENS[-1]),), (-1,))
    p = streaming.tree_pass(model, cache, tree, [], 0.0, path)
    s = streaming.node_streams(
        model, cache, tree, mx.array([True]), mx.array(0), p.h_split[0], path
    )
    np.testing.assert_allclose(
        np.array(model.logits(s)), np.array(streams[-1]), atol=1e-4
    )


def test_early_exit_head_is_identity_at_zero():
    model = tiny_model(0, ARGS, stream_scale=0.0)
    ee = model.early_exit_logits(TOKENS)
    rows = Rows.causal(TOKENS.size, 0, model.streams)
    h = model.run_layers(
        model.embed(TOKENS), rows, make_prompt_cache(model), 0, model.split
    )
    np.testing.assert_allclose(np.array(ee), np.array(model.logits(h[0])), atol=1e-6)


def test_too_many_stream_layers_is_an_error():
    with pytest.raises(ValueError, match="num_stream_layers"):
        tiny_model(0, StreamArgs(num_stream_layers=9))


# Gemma 3: two sliding-window layers (window 8) under global ones, a sliding layer
# among the two stream layers; prompts below run past the window.
GEMMA3 = dict(
    model_type="gemma3_text",
    head_dim=24,
    query_pre_attn_scalar=24,
    sliding_window=8,
    sliding_window_pattern=2,
    rope_theta=10000.0,
    rope_local_base_freq=100.0,
    tie_word_embeddings=False,
)


def tiny_gemma3(seed: int = 0, **overrides):
    """A tiny Gemma 3 whose (1 + w) norms are not all 1 (w random, not zero)."""
    from mlx.utils import tree_flatten

    model = tiny_model(seed, ARGS, **{**GEMMA3, **overrides})
    norms = [
        (k, 0.3 * mx.random.normal(v.shape))
        for k, v in tree_flatten(model.parameters())
        if "norm" in k
    ]
    model.load_weights(norms, strict=False)
    mx.eval(model.parameters())
    return model


def test_gemma3_layers_windows_and_ropes():
    model = tiny_gemma3()
    attn = [layer.self_attn for layer in model.layers]
    assert [a.window for a in attn] == [8, None, 8, None]
    assert [a.rope.base for a in attn] == [100.0, 10000.0, 100.0, 10000.0]
    assert attn[0].scale == 24**-0.5
    # layer_types, where given, win over sliding_window_pattern (as in transformers).
    types = ["full_attention", "sliding_attention", "sliding_attention"]
    other = tiny_gemma3(num_hidden_layers=3, layer_types=types)
    assert [layer.self_attn.window for layer in other.layers] == [None, 8, 8]


@pytest.mark.parametrize("tied", [False, True])
def test_gemma3_equals_mlx_lm_past_the_window(tmp_path, tied):
    """Prefill (whole, and in chunks at an offset) and one-token decoding beyond the
    window give mlx-lm's Gemma 3 logits, which uses rotating caches and its masks."""
    from conftest import tiny_config
    from mlx_lm.utils import load as mlx_lm_load

    from mlx_specstream.loading.model_io import save_model

    model = tiny_gemma3(1, tie_word_embeddings=tied)
    config = tiny_config(**{**GEMMA3, "tie_word_embeddings": tied})
    save_model(model, config, tmp_path)
    theirs, _ = mlx_lm_load(str(tmp_path))
    tokens = mx.array([(7 * i + 3) % 96 for i in range(20)])
    ref_cache = theirs.make_cache()
    ref = theirs(tokens[None], cache=ref_cache)[0]
    np.testing.assert_allclose(
        np.array(model(tokens[None])[0]), np.array(ref), atol=1e-4
    )
    # Chunks of 5 (explicit masks at offsets 5, 10, 15) then single tokens.
    cache = make_prompt_cache(model)
    for s in range(0, 20, 5):
        out = model(tokens[None, s : s + 5], cache)[0]
        np.testing.assert_allclose(np.array(out), np.array(ref[s : s + 5]), atol=1e-4)
    for t in [11, 40, 2, 77, 5, 60, 31, 9, 18, 50]:
        ours = model(mx.array([[t]]), cache)[0, -1]
        ref = theirs(mx.array([[t]]), cache=ref_cache)[0, -1]
        np.testing.assert_allclose(np.array(ours), np.array(ref), atol=1e-4)


def test_gemma3_window_hides_old_keys_in_trees_and_streams():
    """Stream and tree rows see a key iff the base mask allows it and q - k < window."""
    model = tiny_gemma3()
    rows = Rows.causal(4, 10, model.streams).with_streams([1, 3])
    m = np.array(rows.attention_mask(10 + 4 + 6 + 2, 8))
    base = np.array(rows.attention_mask(10 + 4 + 6 + 2))
    q = np.array([10, 11, 12, 13, 11, 11, 11, 13, 13, 13])
    k = np.concatenate([np.arange(10), q, [99, 99]])  # two padding columns
    np.testing.assert_array_equal(m, base & ((q[:, None] - k[None]) < 8))
    assert m[:, -2:].sum() == 0 and m.sum() < base.sum()
    # One-token decoding (no base mask) past the window sees the last 8 keys only.
    one = np.array(Rows.causal(1, 12, model.streams).attention_mask(13, 8))
    np.testing.assert_array_equal(one, [[False] * 5 + [True] * 8])
    assert Rows.causal(1, 6, model.streams).attention_mask(7, 8) is None


def test_gemma3_streams_and_early_exit():
    model = tiny_gemma3(2)
    tokens = mx.array([(5 * i + 1) % 96 for i in range(14)])
    main, streams = model.all_stream_logits(tokens)
    np.testing.assert_allclose(
        np.array(main), np.array(model(tokens[None])[0]), atol=1e-4
    )
    # Streams at t < 9 do not see later tokens, windowed or not.
    _, prefix = model.all_stream_logits(tokens[:9])
    np.testing.assert_allclose(np.array(streams[:9]), np.array(prefix), atol=1e-4)


@pytest.mark.parametrize("cap", [None, 3.0])
def test_gemma3_float32_logits_and_softcap(cap):
    """The float32 head (low-precision models) uses Gemma's (1 + w) final norm."""
    model = tiny_gemma3(3, final_logit_softcapping=cap)
    h = mx.random.normal((5, 64))
    ref = model.logits(h)
    if cap is not None:
        assert float(mx.abs(ref).max()) < cap
    model.set_dtype(mx.bfloat16)
    low = model.logits(h.astype(mx.bfloat16), float32=True)
    assert low.dtype == mx.float32
    np.testing.assert_allclose(np.array(low), np.array(ref), atol=0.1 if cap else 0.5)
    norm_only = model._final_norm_float32(h)
    w = 1.0 + model.model.norm.weight.astype(mx.float32)
    expected = mx.fast.rms_norm(h, w, model.model.norm.eps)
    np.testing.assert_allclose(np.array(norm_only), np.array(expected), atol=1e-6)


def test_gemma3_long_context_drops_old_keys_and_equals_mlx_lm(tmp_path):
    """Past a key bucket, sliding layers drop old keys (one decoding row keeps the
    last ``window``; trees whole buckets): greedy decoding, plain and speculative,
    still equals mlx-lm's Gemma 3 over a 150-token prompt."""
    from conftest import tiny_config, tiny_hf_tokenizer, wrap
    from mlx_lm.utils import load as mlx_lm_load

    from mlx_specstream.decoding.tree import TreeShape
    from mlx_specstream.generate import stream_generate
    from mlx_specstream.loading.model_io import save_model

    model = tiny_gemma3(4)
    save_model(model, tiny_config(**GEMMA3), tmp_path)
    theirs, _ = mlx_lm_load(str(tmp_path))
    prompt = [(13 * i + 5) % 96 for i in range(150)]
    cache, want = theirs.make_cache(), []
    logits = theirs(mx.array([prompt]), cache=cache)
    for _ in range(30):
        want.append(int(mx.argmax(logits[0, -1])))
        logits = theirs(mx.array([[want[-1]]]), cache=cache)
    tokenizer = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    for kw in (dict(speculative=False), dict(tree=TreeShape(budget=8))):
        rs = stream_generate(model, tokenizer, prompt, max_tokens=30, **kw)
        assert [t for r in rs for t in emitted(r)] == want, kw

    rows = Rows.tree(np.tril(np.ones((3, 3), bool)), np.arange(3), 150, model.streams)
    k = mx.zeros((1, 2, 192, 24))  # keys padded to the next bucket (64)
    k2, _, m = rows.visible_keys(k, k, 8)
    assert k2.shape[2] == 192 - 128 and m.shape == (3, 64)
    full = np.array(rows.attention_mask(192, 8))
    np.testing.assert_array_equal(np.array(m), full[:, 128:])
    assert not full[:, :128].any()
    one = Rows.causal(1, 150, model.streams)
    k1, _, m1 = one.visible_keys(k[..., :151, :], k[..., :151, :], 8)
    assert k1.shape[2] == 8 and m1 is None


def test_node_streams_of_a_tree_node_past_the_window_equal_eq2():
    """A tree node's streams, run after verification with the node on the device
    (its window masked on the device over the uncompacted tree), equal the training
    layout's streams at that position, past Gemma 3's sliding window."""
    model = tiny_gemma3(1)
    tokens = mx.array([(7 * i + 3) % 90 + 1 for i in range(20)])
    _, streams = model.all_stream_logits(tokens)
    cache = make_prompt_cache(model)
    prefill(model, tokens[:17].tolist(), cache, step_size=5)  # caches 16 tokens
    path = decode_path()
    # Root tokens[16] with two children: a wrong one first, then tokens[17], whose
    # child is tokens[18]; the node at depth 2 is tokens[18], position 18.
    tree = Tree.from_paths(
        int(tokens[16]),
        [(int(tokens[17]) % 90 + 2,), (int(tokens[17]), int(tokens[18]))],
    )
    node = 3
    assert tree.tokens[node] == int(tokens[18]) and tree.depths[node] == 2
    p = streaming.tree_pass(model, cache, tree, [], 0.0, path)
    s = streaming.node_streams(
        model,
        cache,
        tree,
        mx.array(tree.ancestor_mask[node]),
        mx.array(2),
        p.h_split[node],
        path,
    )
    np.testing.assert_allclose(
        np.array(model.logits(s)), np.array(streams[18]), atol=1e-4
    )
