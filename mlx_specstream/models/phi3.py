# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Phi-3 / Phi-4-mini (``model_type`` phi3): what differs from the Llama layout.

- Fused projections: ``qkv_proj`` (q | k | v rows) and ``gate_up_proj`` (gate | up).
  The modules stay fused, with mlx-lm's names, so our directories and mlx-lm's
  (``-q`` included) hold the same tensors and nothing is split or re-fused on load or
  save. Stream-only adapters keep the per-part names of ``format.STREAM_ADAPTER_MODULES``
  (``self_attn.q_proj`` ...): on stream rows each adds to its slice of the fused output
  (``fused_linear``), which is what an adapter on a split module would add.
- ``partial_rotary_factor``: RoPE on the first ``head_dim * factor`` dims of each head
  (Phi-4-mini: 0.75), at per-row positions from the same tables as the full rotation.
- ``rope_scaling`` longrope / su: mlx-lm's ``SuScaledRoPE``, which always uses
  ``long_factor`` and scales by sqrt(1 + ln(max / original max) / ln(original max)).
  transformers uses ``short_factor`` while the sequence is within
  ``original_max_position_embeddings``; we follow mlx-lm, so a directory gives
  mlx-lm's logits.
- ``sliding_window``: applied as transformers does (a key ``window`` or more positions
  behind the query is hidden, ``Rows.attention_mask``), in trees and stream rows too;
  mlx-lm ignores it, so the two agree only within the window.
- Untied head by default (Phi-3); Phi-4-mini ties it.
"""

from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import rope_utils

from . import fast_ops, llama
from .msa import Rows
from .rope import apply_rope

ROPE_TYPES = ("default", "linear", "longrope", "su")
QKV_PARTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
GATE_UP_PARTS = ("mlp.gate_proj", "mlp.up_proj")


@dataclass
class ModelArgs(llama.ModelArgs):
    partial_rotary_factor: float = 1.0
    original_max_position_embeddings: int = 4096
    sliding_window: Optional[int] = None
    tie_word_embeddings: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.partial_rotary_factor <= 1:
            raise ValueError(
                f"partial_rotary_factor must be in (0, 1], got {self.partial_rotary_factor}"
            )
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window must be >= 1, got {self.sliding_window}")
        if self.rope_dims < 2 or self.rope_dims % 2:
            raise ValueError(
                f"head_dim {self.head_dim} x partial_rotary_factor "
                f"{self.partial_rotary_factor} gives {self.rope_dims} rotary dims "
                "(need an even number >= 2)"
            )
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(
                f"unsupported rope_scaling type {self.rope_type!r} for phi3 "
                f"(supported: {', '.join(ROPE_TYPES)})"
            )
        if self.rope_type in ("longrope", "su"):
            for key in ("short_factor", "long_factor"):
                factors = self.rope_scaling.get(key)
                if not isinstance(factors, list) or len(factors) != self.rope_dims // 2:
                    got = len(factors) if isinstance(factors, list) else repr(factors)
                    raise ValueError(
                        f"rope_scaling {key} must be a list of rotary dims / 2 = "
                        f"{self.rope_dims // 2} numbers, got {got}"
                    )
        if self.rope_type == "linear" and not self.rope_scaling.get("factor"):
            raise ValueError("rope_scaling type 'linear' needs a 'factor'")

    @property
    def rope_dims(self) -> int:
        """Dims of each head that RoPE rotates (the first ones)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def rope_type(self) -> str:
        s = self.rope_scaling or {}
        return s.get("type") or s.get("rope_type") or "default"


class SuScaledRoPE(rope_utils.SuScaledRoPE):
    """mlx-lm's LongRoPE, saying how it pairs dims so ``rope.rope_tables`` can read
    per-row cos / sin (the scale included) off it like off ``nn.RoPE``."""

    traditional = False

    @property
    def dims(self) -> int:
        return self.dim


def make_rope(args: ModelArgs) -> nn.Module:
    """The RoPE mlx-lm's phi3 builds, over the first ``args.rope_dims`` dims."""
    if args.rope_type in ("longrope", "su"):
        return SuScaledRoPE(
            args.rope_dims,
            base=args.rope_theta,
            max_position_embeddings=args.max_position_embeddings or 131072,
            original_max_position_embeddings=args.original_max_position_embeddings,
            short_factor=args.rope_scaling["short_factor"],
            long_factor=args.rope_scaling["long_factor"],
        )
    scale = 1 / args.rope_scaling["factor"] if args.rope_type == "linear" else 1.0
    return nn.RoPE(
        args.rope_dims,
        traditional=args.rope_traditional,
        base=args.rope_theta,
        scale=scale,
    )


def fused_linear(
    rows: Rows, module: Any, x: mx.array, parts: Sequence[str], sizes: Sequence[int]
) -> mx.array:
    """``module(x)`` of a fused projection whose output is ``parts`` side by side
    (``sizes`` features each); stream rows add each part's stream-only adapter to
    its slice, as ``Rows.linear`` does for an unfused module."""
    y = module(x)
    if not rows.num_stream:
        return y
    adapters = [rows.streams.adapter(rows.layer, p) for p in parts]
    if all(a is None for a in adapters):
        return y
    L = rows.num_main
    xs = x[:, L:]
    ys = mx.split(y[:, L:], list(accumulate(sizes[:-1])), axis=-1)
    ys = [s if a is None else s + a(xs) for s, a in zip(ys, adapters)]
    return mx.concatenate([y[:, :L], mx.concatenate(ys, axis=-1)], axis=1)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        dim, hd = args.hidden_size, args.head_dim
        self.n_heads, self.n_kv_heads = (
            args.num_attention_heads,
            args.num_key_value_heads,
        )
        self.head_dim, self.scale = hd, hd**-0.5
        self.sizes = (self.n_heads * hd, self.n_kv_heads * hd, self.n_kv_heads * hd)
        self.qkv_proj = nn.Linear(dim, sum(self.sizes), bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, dim, bias=False)
        self.rope_dims = args.rope_dims
        self.rope = make_rope(args)
        self.window = args.sliding_window

    def _rope(self, x: mx.array, rows: Rows, tables: Optional[tuple]) -> mx.array:
        """(1, R, heads, head_dim) -> (1, heads, R, head_dim), the first rope_dims rotated."""
        d = self.rope_dims
        if tables is None or d == self.head_dim:
            # The rope modules rotate only their first `dims` themselves.
            return apply_rope(self.rope, x, rows.positions, tables)
        rotated = apply_rope(self.rope, x[..., :d], rows.positions, tables)
        return mx.concatenate([rotated, x[..., d:].transpose(0, 2, 1, 3)], axis=-1)

    def __call__(self, x: mx.array, rows: Rows, cache: Optional[Any]) -> mx.array:
        _, R, _ = x.shape
        qkv = fused_linear(rows, self.qkv_proj, x, QKV_PARTS, self.sizes)
        q, k, v = mx.split(qkv, list(accumulate(self.sizes[:2])), axis=-1)
        # Tables over the rotated dims only (rope.rope_tables declines partial ones).
        tables = rows.rope_tables(self.rope, self.rope_dims)
        q = self._rope(q.reshape(1, R, self.n_heads, -1), rows, tables)
        k = self._rope(k.reshape(1, R, self.n_kv_heads, -1), rows, tables)
        v = v.reshape(1, R, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        k, v = cache.update_and_fetch(k, v, **rows.cache_writes())
        k, v, mask = rows.visible_keys(k, v, self.window)
        out = fast_ops.attention(q, k, v, self.scale, mask, rows.path)
        out = out.transpose(0, 2, 1, 3).reshape(1, R, -1)
        return rows.linear(self.o_proj, out, "self_attn.o_proj")


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        dim, hidden = args.hidden_size, args.intermediate_size
        self.sizes = (hidden, hidden)
        self.gate_up_proj = nn.Linear(dim, 2 * hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def __call__(self, x: mx.array, rows: Rows) -> mx.array:
        gu = fused_linear(rows, self.gate_up_proj, x, GATE_UP_PARTS, self.sizes)
        gate, up = mx.split(gu, 2, axis=-1)
        return rows.linear(
            self.down_proj, fast_ops.swiglu(gate, up, rows.path), "mlp.down_proj"
        )


class TransformerBlock(llama.TransformerBlock):
    attention_class = Attention
    mlp_class = MLP


class Phi3Model(llama.LlamaModel):
    block_class = TransformerBlock


class Model(llama.Model):
    decoder_class = Phi3Model
