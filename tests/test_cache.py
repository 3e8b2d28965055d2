# Copyright © 2026 mlx-specstream authors. Apache-2.0.
import mlx.core as mx
import numpy as np
import pytest

from mlx_specstream.models.cache import TreeKVCache


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
