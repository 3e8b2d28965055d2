# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Multi-stream attention rows (arXiv 2402.11131 §3.2.1, eq. 2).

A forward pass carries ``L`` main rows (prompt tokens or flattened tree nodes) and, in
the top ``Ns`` layers, ``S = A * γ`` stream rows: γ streams for each of ``A`` anchor
nodes. ``Rows`` holds what every layer needs to treat them: positions, the attention
mask, which rows are streams (they get the stream-only adapters) and which K/V go into
the cache (main rows only; stream K/V are never cached).

Mask over keys ``[cache prefix | L main rows | S stream rows]``:

- main row u: the prefix, and the main rows of u's ancestors and u itself;
- stream j of anchor a: the prefix, a's ancestors and a, and streams 1..j of a.

A sliding-window layer (Gemma 3) also hides keys ``window`` or more positions behind
the query (as transformers and mlx-lm do: visible iff ``q - k < window``), with the
query's RoPE position: prefix keys sit at ``0 .. offset - 1``, tree nodes at their
node positions, stream rows at their anchor's.
"""

from dataclasses import dataclass, replace
from typing import Any, Dict, Hashable, List, Optional, Union

import mlx.core as mx
import numpy as np

from .fast_ops import KEY_BUCKET, DecodePath, decode_path
from .rope import rope_tables
from .streams import StreamParams


@dataclass
class Rows:
    num_main: int
    offset: int  # cache length before this pass
    positions: Union[int, mx.array]  # int: contiguous main rows; else (R,) per row
    mask: Optional[Union[mx.array, str]]  # bool (R, offset + R) or "causal" or None
    streams: StreamParams
    local: Optional[np.ndarray] = None  # (L, L) bool: main-to-main visibility
    main_positions: Optional[np.ndarray] = None  # (L,)
    num_stream: int = 0
    layer: int = 0
    # The kernels of this pass, resolved once by whoever builds the rows.
    path: DecodePath = None  # type: ignore[assignment]
    # (R,) RoPE positions known on the host; None where ``positions`` is computed on
    # the device (a stream pass whose anchor verification chose): windows are then
    # masked on the device and no old keys are dropped.
    host_positions: Optional[np.ndarray] = None
    # (offset,) positions of the cached keys, where they are not 0 .. offset - 1
    # (an uncompacted tree); only device-position rows need them.
    key_positions: Optional[np.ndarray] = None
    _padded: Optional[tuple] = None  # (mask, mask widened by attention_mask)
    _rope: Optional[tuple] = None  # (positions, {kind: tables from rope_tables})
    # (mask, positions, row positions, {(keys, window): windowed mask})
    _windowed: Optional[tuple] = None

    def __post_init__(self):
        if self.path is None:
            self.path = decode_path()
        if self.host_positions is None and isinstance(self.positions, int):
            self.host_positions = self.positions + np.arange(
                self.num_main, dtype=np.int64
            )

    @classmethod
    def causal(
        cls,
        L: int,
        offset: int,
        streams: StreamParams,
        path: Optional[DecodePath] = None,
    ) -> "Rows":
        """Contiguous main rows at ``offset .. offset + L - 1`` (prefill, plain decode)."""
        if L == 1:
            mask = None
        elif offset == 0:
            mask = "causal"
        else:
            mask = mx.array(_with_prefix(np.tril(np.ones((L, L), bool)), offset))
        return cls(L, offset, offset, mask, streams, path=path)

    @classmethod
    def tree(
        cls,
        local: np.ndarray,
        depths: np.ndarray,
        offset: int,
        streams: StreamParams,
        path: Optional[DecodePath] = None,
    ) -> "Rows":
        """Flattened tree nodes: ``local`` is the (L, L) ancestor-or-self mask."""
        pos = offset + depths.astype(np.int32)
        mask = mx.array(_with_prefix(local, offset))
        return cls(
            len(pos),
            offset,
            mx.array(pos),
            mask,
            streams,
            local,
            pos,
            path=path,
            host_positions=pos.astype(np.int64),
        )

    @classmethod
    def streams_on_tree(
        cls,
        start: int,
        tree_positions: np.ndarray,
        visible: mx.array,
        anchor_position: mx.array,
        streams: StreamParams,
        path: Optional[DecodePath] = None,
    ) -> "Rows":
        """γ stream rows of one tree node, after the verify pass wrote the tree's K/V
        at ``start .. start + T - 1`` (not compacted yet).

        Args:
            tree_positions: (T,) RoPE positions of the tree rows in the cache.
            visible: (T,) bool, on the device: the node's ancestors and itself.
            anchor_position: () int32 on the device: the node's position (its
                stream rows share it).
        """
        g, T = streams.args.num_streams, len(tree_positions)
        causal = mx.array(np.tril(np.ones((g, g), bool)))
        # (g, start + T + g): the prefix, the node's path in the tree, streams 1..j.
        mask = mx.concatenate(
            [
                mx.ones((g, start), mx.bool_),
                mx.broadcast_to(visible[None], (g, T)),
                causal,
            ],
            axis=1,
        )
        pos = mx.broadcast_to(anchor_position.astype(mx.int32), (g,))
        keys = np.concatenate(
            [np.arange(start, dtype=np.int64), tree_positions.astype(np.int64)]
        )
        return cls(
            0,
            start + T,
            pos,
            mask,
            streams,
            num_stream=g,
            path=path,
            key_positions=keys,
        )

    def with_streams(self, anchors: List[int]) -> "Rows":
        """Add γ stream rows per anchor (row indices into the main rows)."""
        L, g = self.num_main, self.streams.args.num_streams
        local = self.local
        if local is None:  # contiguous causal rows
            local = np.tril(np.ones((L, L), bool))
            main_pos = self.offset + np.arange(L, dtype=np.int32)
        else:
            main_pos = self.main_positions
        S = len(anchors) * g
        m = stream_sight(local, anchors, g)
        pos = np.concatenate([main_pos, np.repeat(main_pos[anchors], g)])
        return replace(
            self,
            positions=mx.array(pos.astype(np.int32)),
            mask=mx.array(_with_prefix(m, self.offset)),
            num_stream=S,
            local=local,
            main_positions=main_pos,
            host_positions=pos.astype(np.int64),
        )

    def at_layer(self, i: int) -> "Rows":
        self.layer = i
        return self

    def linear(self, module: Any, x: mx.array, name: str) -> mx.array:
        """``module(x)`` with the stream-only adapter added on stream rows."""
        y = module(x)
        if not self.num_stream:
            return y
        adapter = self.streams.adapter(self.layer, name)
        if adapter is None:
            return y
        L = self.num_main
        if L == 0:  # stream rows only (a stream pass): no split, no concatenation
            return y + adapter(x)
        return mx.concatenate([y[:, :L], y[:, L:] + adapter(x[:, L:])], axis=1)

    def cache_writes(self) -> dict:
        """How the cache takes this pass's K/V (``TreeKVCache.update_and_fetch``):
        stream rows transient; keys bucketed where a bool mask hides the padding."""
        bucket = KEY_BUCKET if isinstance(self.mask, mx.array) else 0
        return {"transient": self.num_stream, "bucket": bucket}

    def rope_tables(
        self, rope: Any, head_dim: int, kind: Hashable = None
    ) -> Optional[tuple]:
        """RoPE cos/sin for these rows' positions, made once per pass for each
        ``kind`` of rope (layers of one kind share one rope: Gemma 3 has a local
        and a global one)."""
        if isinstance(self.positions, int):
            return None
        if self._rope is None or self._rope[0] is not self.positions:
            self._rope = (self.positions, {})
        tables: Dict[Hashable, Optional[tuple]] = self._rope[1]
        if kind not in tables:
            tables[kind] = rope_tables(rope, self.positions, head_dim)
        return tables[kind]

    def row_positions(self) -> Optional[np.ndarray]:
        """(R,) RoPE position of every row, main rows first (None: on the device)."""
        return self.host_positions

    def attention_mask(
        self, num_keys: int, window: Optional[int] = None
    ) -> Optional[Union[mx.array, str]]:
        """The bool mask widened with invisible columns to ``num_keys`` keys.

        Args:
            window: a sliding-window layer's window; keys at ``window`` or more
                positions behind the query are hidden too. None: no window.
        """
        if window is not None:
            return self._windowed_mask(num_keys, window)
        if not isinstance(self.mask, mx.array) or self.mask.shape[1] == num_keys:
            return self.mask
        if self._padded is None or self._padded[0] is not self.mask:
            pad = mx.zeros(
                (self.mask.shape[0], num_keys - self.mask.shape[1]), mx.bool_
            )
            self._padded = (self.mask, mx.concatenate([self.mask, pad], axis=1))
        return self._padded[1]

    def visible_keys(self, k: mx.array, v: mx.array, window: Optional[int]) -> tuple:
        """A layer's K/V (1, KH, P, D) and mask, for a sliding-window layer without
        the old keys no row can see.

        One decoding row keeps the last ``window`` keys and no mask (MLX's fused
        attention); other passes drop whole ``KEY_BUCKET``s of old cache keys, so the
        compiled softmax still sees a new shape only once per bucket.
        """
        P = k.shape[2]
        if window is None or P <= window:
            return k, v, self.attention_mask(P, window)
        if self.mask is None:  # one row at position P - 1: plain decoding
            return k[..., P - window :, :], v[..., P - window :, :], None
        mask = self.attention_mask(P, window)
        q = self._window_rows()[2]
        if q is None:  # positions on the device: mask only
            return k, v, mask
        start = min(self.offset, max(0, int(q.min()) - window + 1))
        start -= start % KEY_BUCKET
        if start == 0 or not isinstance(mask, mx.array):
            return k, v, mask
        cut = self._windowed[3]
        if (P, window, start) not in cut:
            cut[(P, window, start)] = mask[:, start:]
        return k[..., start:, :], v[..., start:, :], cut[(P, window, start)]

    def _window_rows(self) -> tuple:
        """(mask, positions, row positions, {key: mask}) for this pass's windows."""
        w = self._windowed
        if w is None or w[0] is not self.mask or w[1] is not self.positions:
            w = self._windowed = (self.mask, self.positions, self.row_positions(), {})
        return w

    def _windowed_mask(self, num_keys: int, window: int) -> Optional[mx.array]:
        _, _, q, masks = self._window_rows()
        if q is None:
            return self._device_windowed_mask(num_keys, window)
        if q.size == 0 or q.max() < window:  # every key is within the window
            return self.attention_mask(num_keys)
        if (num_keys, window) not in masks:
            R = q.size
            # Keys: the cache prefix at 0 .. offset - 1, then this pass's rows; the
            # columns past them (key-bucket padding) stay hidden by the base mask.
            k = np.concatenate([np.arange(self.offset, dtype=np.int64), q])
            band = (q[:, None] - k[None, :]) < window  # (R, offset + R)
            if isinstance(self.mask, mx.array):
                base = np.array(self.mask)
            elif self.mask is None:  # one row that sees the whole cache
                base = np.ones((R, self.offset + R), bool)
            else:  # "causal": prefill from position 0
                base = _with_prefix(np.tril(np.ones((R, R), bool)), self.offset)
            m = base[:, : self.offset + R] & band
            pad = np.zeros((R, num_keys - m.shape[1]), bool)
            masks[(num_keys, window)] = mx.array(np.concatenate([m, pad], axis=1))
        return masks[(num_keys, window)]

    def _device_windowed_mask(self, num_keys: int, window: int) -> mx.array:
        """The windowed mask where the rows' positions are on the device (stream rows
        of a node verification chose); the keys' positions are on the host."""
        masks = self._window_rows()[3]
        if (num_keys, window) not in masks:
            q = self.positions  # (R,) device
            k = mx.array(self.key_positions)
            R = q.shape[0]
            # The rows' own keys sit at their own positions.
            k = mx.concatenate([k, q.astype(k.dtype)])
            band = (q[:, None].astype(k.dtype) - k[None, :]) < window
            m = self.mask & band
            pad = mx.zeros((R, num_keys - m.shape[1]), mx.bool_)
            masks[(num_keys, window)] = mx.concatenate([m, pad], axis=1)
        return masks[(num_keys, window)]


def stream_sight(local: np.ndarray, anchors, num_streams: int) -> np.ndarray:
    """(L + Aγ, L + Aγ) bool visibility among L main rows and γ stream rows per
    anchor: main rows as ``local`` (L, L); stream j of anchor a sees a's ancestry
    and streams 1..j of a."""
    L, A, g = local.shape[0], len(anchors), num_streams
    m = np.zeros((L + A * g, L + A * g), bool)
    m[:L, :L] = local
    # (A, L) -> (A * g, L): every stream of an anchor sees the anchor's ancestry.
    m[L:, :L] = np.repeat(local[anchors], g, axis=0)
    m[L:, L:] = np.kron(np.eye(A, dtype=bool), np.tril(np.ones((g, g), bool)))
    return m


def _with_prefix(local: np.ndarray, offset: int) -> np.ndarray:
    """Prepend ``offset`` always-visible cache columns to a (R, R) bool mask."""
    if offset == 0:
        return local
    return np.concatenate([np.ones((local.shape[0], offset), bool), local], axis=1)
