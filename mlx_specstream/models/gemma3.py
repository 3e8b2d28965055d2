# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Gemma 3 text models (``gemma3_text``, and the text part of ``gemma3``) with streams.

What differs from the Llama layout (``llama.py``), as in mlx-lm's ``gemma3_text.py``
and transformers' ``modeling_gemma3.py``:

- (1 + w) RMSNorm everywhere, four norms per block (around attention and the MLP);
- embeddings scaled by sqrt(hidden_size), in the model's dtype;
- attention scale ``query_pre_attn_scalar ** -0.5``; q/k RMSNorm per head before RoPE;
- GELU-tanh gated MLP; final logits soft-capped where ``final_logit_softcapping`` is set;
- sliding-window layers (``layer_types``, else every ``sliding_window_pattern``-th
  layer is global) with their own RoPE base ``rope_local_base_freq``; global layers
  use ``rope_theta`` and ``rope_scaling``.

The window is applied by ``Rows`` (``attention_mask`` / ``visible_keys``) for
prefill, plain decoding, trees and stream rows alike. Every layer keeps the full
``TreeKVCache`` (draft trees are written past its end and compacted, which mlx-lm's
rotating cache cannot do), so a windowed layer holds as much K/V as a global one.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.gemma3_text import clip_residual

from . import fast_ops, llama
from .msa import Rows
from .rope import make_rope

SLIDING, FULL = "sliding_attention", "full_attention"
# Prefixes of the text model's weights in a multimodal ``gemma3`` checkpoint:
# transformers >= 4.52 / 5 (``model.language_model``), older ones and mlx-lm
# (``language_model.model``).
_TEXT_PREFIXES = {
    "model.language_model.": "model.",
    "language_model.model.": "model.",
    "language_model.lm_head.": "lm_head.",
}
_DROPPED_PREFIXES = (
    "vision_tower.",
    "model.vision_tower.",
    "multi_modal_projector.",
    "model.multi_modal_projector.",
)
# Top-level fields of a multimodal config that the text model takes over.
_CARRIED_FIELDS = (
    "quantization",
    "quantization_config",
    "torch_dtype",
    "dtype",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


def text_config(config: Dict) -> Dict:
    """A ``gemma3`` (multimodal) config's text model as a ``gemma3_text`` config.

    Converted and loaded ``gemma3`` models are their text part: the vision tower
    and projector are dropped.
    """
    text = dict(config.get("text_config") or {})
    if "vocab_size" not in text and "vocab_size" in config:
        text["vocab_size"] = config["vocab_size"]
    text.update({k: config[k] for k in _CARRIED_FIELDS if k in config})
    text["model_type"] = "gemma3_text"
    text["architectures"] = ["Gemma3ForCausalLM"]
    return text


def fold_rope_parameters(config: Dict, rope: Dict) -> None:
    """transformers-5 ``rope_parameters`` keyed by layer type -> the fields mlx-lm
    reads (``rope_theta``, ``rope_scaling``, ``rope_local_base_freq``)."""
    full, local = rope.get(FULL) or {}, rope.get(SLIDING) or {}
    if "rope_theta" in full:
        config.setdefault("rope_theta", full["rope_theta"])
    if full.get("rope_type", "default") != "default":
        config.setdefault("rope_scaling", full)
    if "rope_theta" in local:
        config.setdefault("rope_local_base_freq", local["rope_theta"])
    types = config.get("layer_types")
    if types and "sliding_window_pattern" not in config:
        # mlx-lm knows only the periodic layout: global iff (i + 1) % p == 0.
        p = types.index(FULL) + 1 if FULL in types else len(types) + 1
        if all((t == FULL) == ((i + 1) % p == 0) for i, t in enumerate(types)):
            config["sliding_window_pattern"] = p


class RMSNorm(fast_ops.RMSNorm):
    """Gemma's norm: weights stored as offsets from one (as mlx-lm's)."""

    def __call__(self, x: mx.array) -> mx.array:
        return fast_ops.rms_norm(x, 1.0 + self["weight"], self.eps)


@dataclass
class ModelArgs(llama.ModelArgs):
    # transformers' Gemma3TextConfig defaults: Hub configs of the multimodal models
    # leave these out of text_config.
    num_attention_heads: int = 8
    rms_norm_eps: float = 1e-6
    vocab_size: int = 262_208
    head_dim: Optional[int] = 256
    num_key_value_heads: Optional[int] = 4
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    query_pre_attn_scalar: float = 256
    sliding_window: Optional[int] = 4096
    sliding_window_pattern: int = 6
    layer_types: Optional[List[str]] = None
    final_logit_softcapping: Optional[float] = None
    attn_logit_softcapping: Optional[float] = None
    hidden_activation: str = "gelu_pytorch_tanh"
    use_bidirectional_attention: bool = False
    max_position_embeddings: Optional[int] = 131_072
    tie_word_embeddings: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.layer_types is None:
            p = self.sliding_window_pattern
            self.layer_types = [
                FULL if (i + 1) % p == 0 else SLIDING
                for i in range(self.num_hidden_layers)
            ]
        if len(self.layer_types) != self.num_hidden_layers or not set(
            self.layer_types
        ) <= {SLIDING, FULL}:
            raise ValueError(
                f"layer_types must give {self.num_hidden_layers} entries, each "
                f"{SLIDING!r} or {FULL!r}, got {self.layer_types!r}"
            )
        if SLIDING in self.layer_types:
            w, n = self.sliding_window, self.max_position_embeddings
            if not isinstance(w, int) or isinstance(w, bool) or w < 1:
                raise ValueError(
                    f"sliding_window must be a positive integer, got {w!r}"
                )
            if n is not None and w > n:
                raise ValueError(
                    f"sliding_window ({w}) exceeds max_position_embeddings ({n}): "
                    "the window could never apply"
                )
        if self.use_bidirectional_attention:
            raise ValueError(
                "use_bidirectional_attention is not supported (decoding needs a "
                "causal model)"
            )
        if self.attn_logit_softcapping is not None:
            raise ValueError(
                "attn_logit_softcapping is not supported (Gemma 3 does not use it)"
            )
        if self.hidden_activation not in ("gelu_pytorch_tanh", "gelu_approx"):
            raise ValueError(
                f"unsupported hidden_activation {self.hidden_activation!r} "
                "(Gemma 3 uses gelu_pytorch_tanh)"
            )

    @property
    def qk_norm(self) -> bool:
        return True


class Attention(llama.Attention):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__(args)
        hd = self.head_dim
        self.scale = args.query_pre_attn_scalar**-0.5
        self.q_norm = RMSNorm(hd, eps=args.rms_norm_eps)
        self.k_norm = RMSNorm(hd, eps=args.rms_norm_eps)
        self.rope_kind = args.layer_types[layer]
        if self.rope_kind == SLIDING:
            self.window = args.sliding_window
            self.rope = make_rope(hd, args.rope_local_base_freq, False)
        else:
            self.rope = make_rope(
                hd,
                args.rope_theta,
                False,
                args.rope_scaling,
                args.max_position_embeddings,
            )


class MLP(llama.MLP):
    def __call__(self, x: mx.array, rows: Rows) -> mx.array:
        g = rows.linear(self.gate_proj, x, "mlp.gate_proj")
        u = rows.linear(self.up_proj, x, "mlp.up_proj")
        return rows.linear(self.down_proj, nn.gelu_approx(g) * u, "mlp.down_proj")


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__()
        dim, eps = args.hidden_size, args.rms_norm_eps
        self.self_attn = Attention(args, layer)
        self.mlp = MLP(args)
        self.input_layernorm = RMSNorm(dim, eps=eps)
        self.post_attention_layernorm = RMSNorm(dim, eps=eps)
        self.pre_feedforward_layernorm = RMSNorm(dim, eps=eps)
        self.post_feedforward_layernorm = RMSNorm(dim, eps=eps)

    def __call__(self, x: mx.array, rows: Rows, cache: Optional[Any]) -> mx.array:
        r = self.self_attn(self.input_layernorm(x), rows, cache)
        # clip_residual: float16 sums clipped to its range, as mlx-lm does.
        h = clip_residual(x, self.post_attention_layernorm(r))
        r = self.mlp(self.pre_feedforward_layernorm(h), rows)
        return clip_residual(h, self.post_feedforward_layernorm(r))


class Gemma3Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [TransformerBlock(args, i) for i in range(args.num_hidden_layers)]
        self.norm = RMSNorm(args.hidden_size, eps=args.rms_norm_eps)


class Model(llama.Model):
    decoder_class = Gemma3Model

    def embed(self, tokens: mx.array) -> mx.array:
        h = super().embed(tokens)
        # sqrt(hidden) rounded to the model's dtype, as transformers does.
        return h * mx.array(self.args.hidden_size**0.5, dtype=h.dtype)

    def logits(self, h: mx.array, float32: bool = False) -> mx.array:
        out = super().logits(h, float32)
        cap = self.args.final_logit_softcapping
        if cap is not None:
            out = mx.tanh(out / cap) * cap
        return out

    def _final_norm_float32(self, h: mx.array) -> mx.array:
        norm = self.model.norm
        f32 = mx.float32
        return fast_ops.rms_norm(h.astype(f32), 1.0 + norm.weight.astype(f32), norm.eps)

    @staticmethod
    def weight_name(key: str) -> Optional[str]:
        """A Hugging Face / mlx-lm weight name as ours; None for a multimodal
        checkpoint's vision tower and projector, which are dropped."""
        if key.startswith(_DROPPED_PREFIXES):
            return None
        for prefix, to in _TEXT_PREFIXES.items():
            if key.startswith(prefix):
                return to + key[len(prefix) :]
        return key

    def sanitize(self, weights: Dict[str, mx.array]) -> Dict[str, mx.array]:
        renamed = ((self.weight_name(k), v) for k, v in weights.items())
        return super().sanitize({k: v for k, v in renamed if k is not None})
