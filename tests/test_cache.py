# Copyright © 2026 mlx-specstream authors. Apache-2.0.
import mlx.core as mx
import numpy as np
import pytest
from conftest import tiny_model
from mlx_lm.models.cache import KVCache, trim_prompt_cache
from mlx_lm.models.cache import make_prompt_cache as mlx_lm_make_prompt_cache

from mlx_specstream.models.cache import PromptCache, TreeKVCache, as_prompt_cache


def _rows(start, n):
    # (1, 1, n, 2): row r holds the value r in both features
    return mx.broadcast_to(
        mx.arange(start, start + n, dtype=mx.float32)[None, None, :, None], (1, 1, n, 2)
    )


def test_compact_moves_accepted_rows_into_contiguous_slots():
    c = TreeKVCache()
    c.update_and_fetch(_rows(0, 3), _rows(0, 3))  # prefix 0,1,2
    c.update_and_fetch(_rows(10, 5), _rows(10, 5))  # tree nodes 10..14 at 3..7
    c.compact(3, [0, 2, 4])
    assert c.offset == 6
    k, v = c.keys_and_values()
    assert np.array(k[0, 0, :, 0]).tolist() == [0, 1, 2, 10, 12, 14]
    assert np.array(v[0, 0, :, 1]).tolist() == [0, 1, 2, 10, 12, 14]


def test_compact_root_only_and_bad_rows():
    c = TreeKVCache()
    c.update_and_fetch(_rows(0, 4), _rows(0, 4))
    c.compact(2, [0])
    assert c.offset == 3
    with pytest.raises(ValueError, match="not all written"):
        c.compact(2, [0, 5])


def _cache(fed, pending, layers=2):
    c = PromptCache(TreeKVCache() for _ in range(layers))
    for layer in c:
        layer.update_and_fetch(_rows(0, fed), _rows(0, fed))
    c.tokens = list(range(100, 100 + fed + pending))
    c.pending = pending
    return c


def test_prompt_cache_trim_keeps_record_and_kv_consistent():
    c = _cache(5, 1)  # tokens 100..105, 105 unfed
    assert c.trim(1) == 1  # only the unfed token goes
    assert c.tokens == list(range(100, 105)) and c.pending == 0
    assert [layer.offset for layer in c] == [5, 5]
    assert c.trim(2) == 2 and c.tokens == [100, 101, 102] and c.fed == 3
    assert [layer.offset for layer in c] == [3, 3]
    assert c.trim(10) == 3 and c.tokens == [] and c.fed == 0


def test_prompt_cache_sync_follows_mlx_lm_trim_and_drops_unrecorded_rows():
    c = _cache(5, 1)
    assert trim_prompt_cache(c, 2) == 2  # mlx-lm trims every layer's K/V
    c.sync()
    # The conversation lost its last 2 tokens; the new last one is still unfed.
    assert c.tokens == [100, 101, 102, 103] and c.pending == 1
    assert [layer.offset for layer in c] == [3, 3]
    c[1].update_and_fetch(_rows(0, 4), _rows(0, 4))  # a pass stopped midway
    c.sync()
    assert [layer.offset for layer in c] == [3, 3] and c.tokens == [100, 101, 102, 103]


def test_as_prompt_cache_wraps_empty_lists_and_refuses_unrecorded_ones():
    model = tiny_model(0)
    assert isinstance(mlx_lm_make_prompt_cache(model), PromptCache)
    layers = [TreeKVCache() for _ in model.layers]
    assert as_prompt_cache(model, layers)[0] is layers[0]
    layers[0].update_and_fetch(_rows(0, 2), _rows(0, 2))
    with pytest.raises(ValueError, match="no record"):
        as_prompt_cache(model, layers)
    with pytest.raises(ValueError, match="make_prompt_cache"):
        as_prompt_cache(model, [KVCache() for _ in model.layers])
