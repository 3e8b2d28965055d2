# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Llama-family model (Llama 2/3, SmolLM2, Mistral, Qwen2, Qwen3) with streams.

Unlike mlx-lm's model files, every call takes explicit per-row positions and an explicit
boolean attention mask, so the same code runs plain decoding, a flattened draft tree,
and multi-stream attention (``msa.py``) in the top ``Ns`` layers.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.base import BaseModelArgs

from ..format import StreamArgs
from . import fast_ops
from .cache import PromptCache, make_prompt_cache
from .draft_head import DraftHead, check_draft_vocab
from .msa import Rows
from .rope import apply_rope, make_rope
from .streams import StreamParams


@dataclass
class ModelArgs(BaseModelArgs):
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    rms_norm_eps: float
    vocab_size: int
    head_dim: Optional[int] = None
    max_position_embeddings: Optional[int] = None
    num_key_value_heads: Optional[int] = None
    attention_bias: bool = False
    mlp_bias: bool = False
    rope_theta: float = 10000
    rope_traditional: bool = False
    rope_scaling: Optional[Dict[str, Union[float, str]]] = None
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads

    @property
    def qk_norm(self) -> bool:
        # Qwen3 normalises queries and keys per head (q_norm / k_norm).
        return self.model_type == "qwen3"

    @property
    def qkv_bias(self) -> bool:
        # Qwen2 carries q/k/v biases but no o_proj bias.
        return self.attention_bias or self.model_type == "qwen2"

    @property
    def layer_dims(self) -> Dict[str, tuple]:
        """(in, out) features of each linear layer, keyed as in format.py."""
        h, f = self.hidden_size, self.intermediate_size
        q, kv = (
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        )
        return {
            "self_attn.q_proj": (h, q),
            "self_attn.k_proj": (h, kv),
            "self_attn.v_proj": (h, kv),
            "self_attn.o_proj": (q, h),
            "mlp.gate_proj": (h, f),
            "mlp.up_proj": (h, f),
            "mlp.down_proj": (f, h),
        }


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        dim, hd = args.hidden_size, args.head_dim
        self.n_heads, self.n_kv_heads = (
            args.num_attention_heads,
            args.num_key_value_heads,
        )
        self.scale = hd**-0.5
        self.head_dim = hd
        qkv_bias = args.qkv_bias
        self.q_proj = nn.Linear(dim, self.n_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, self.n_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, self.n_kv_heads * hd, bias=qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * hd, dim, bias=args.attention_bias)
        self.rope = make_rope(
            hd,
            args.rope_theta,
            args.rope_traditional,
            args.rope_scaling,
            args.max_position_embeddings,
        )
        # A family with sliding-window layers (gemma3.py) sets these per layer: the
        # window (None: attend to everything) and which rope the layer uses.
        self.window: Optional[int] = None
        self.rope_kind = "global"
        if args.qk_norm:
            self.q_norm = fast_ops.RMSNorm(hd, eps=args.rms_norm_eps)
            self.k_norm = fast_ops.RMSNorm(hd, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, rows: Rows, cache: Optional[Any]) -> mx.array:
        _, R, _ = x.shape
        q = rows.linear(self.q_proj, x, "self_attn.q_proj")
        k = rows.linear(self.k_proj, x, "self_attn.k_proj")
        v = rows.linear(self.v_proj, x, "self_attn.v_proj")
        tables = rows.rope_tables(self.rope, self.head_dim, self.rope_kind)
        q = q.reshape(1, R, self.n_heads, -1)
        k = k.reshape(1, R, self.n_kv_heads, -1)
        if "q_norm" in self:  # Qwen3: RMSNorm over each head before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(self.rope, q, rows.positions, tables)
        k = apply_rope(self.rope, k, rows.positions, tables)
        v = v.reshape(1, R, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        k, v = cache.update_and_fetch(k, v, **rows.cache_writes())
        k, v, mask = rows.visible_keys(k, v, self.window)
        out = fast_ops.attention(q, k, v, self.scale, mask, rows.path)
        out = out.transpose(0, 2, 1, 3).reshape(1, R, -1)
        return rows.linear(self.o_proj, out, "self_attn.o_proj")


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        dim, hidden, bias = args.hidden_size, args.intermediate_size, args.mlp_bias
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)

    def __call__(self, x: mx.array, rows: Rows) -> mx.array:
        g = rows.linear(self.gate_proj, x, "mlp.gate_proj")
        u = rows.linear(self.up_proj, x, "mlp.up_proj")
        return rows.linear(
            self.down_proj, fast_ops.swiglu(g, u, rows.path), "mlp.down_proj"
        )


class TransformerBlock(nn.Module):
    # A family swaps in its own attention / MLP (phi3.py) without rewriting the block.
    attention_class = Attention
    mlp_class = MLP

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attn = self.attention_class(args)
        self.mlp = self.mlp_class(args)
        self.input_layernorm = fast_ops.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = fast_ops.RMSNorm(
            args.hidden_size, eps=args.rms_norm_eps
        )

    def __call__(self, x: mx.array, rows: Rows, cache: Optional[Any]) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), rows, cache)
        return h + self.mlp(self.post_attention_layernorm(h), rows)


class LlamaModel(nn.Module):
    block_class = TransformerBlock

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [self.block_class(args) for _ in range(args.num_hidden_layers)]
        self.norm = fast_ops.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)


class Model(nn.Module):
    """A causal LM whose top ``Ns`` layers can carry speculative streams.

    The forward pass is split at layer ``l = N - Ns`` (``lower`` / ``upper``) because
    tree pruning and stream insertion both happen there.
    """

    decoder_class = LlamaModel  # a family's decoder (embeddings, layers, final norm)
    # (K,) token ids streams draft from (None: all); see ``set_draft_vocab``.
    draft_vocab: Optional[np.ndarray] = None
    _draft_head: Optional[DraftHead] = None

    def __init__(self, args: ModelArgs, stream_args: Optional[StreamArgs] = None):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.model = self.decoder_class(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)
        if stream_args is None:
            ns = max(1, min(8, args.num_hidden_layers // 4))
            stream_args = StreamArgs(num_stream_layers=ns)
        if stream_args.num_stream_layers > args.num_hidden_layers:
            raise ValueError(
                f"num_stream_layers ({stream_args.num_stream_layers}) exceeds the "
                f"model's {args.num_hidden_layers} layers"
            )
        self.streams = StreamParams(
            stream_args, args.hidden_size, args.layer_dims, args.num_hidden_layers
        )

    @property
    def layers(self) -> List[TransformerBlock]:
        return self.model.layers

    @property
    def split(self) -> int:
        """Index of the first multi-stream layer, l = N - Ns."""
        return self.streams.first_layer

    def embed(self, tokens: mx.array) -> mx.array:
        return self.model.embed_tokens(tokens.reshape(1, -1))

    def run_layers(
        self, h: mx.array, rows: Rows, cache: List[Any], start: int, stop: int
    ) -> mx.array:
        for i in range(start, stop):
            h = self.layers[i](h, rows.at_layer(i), cache[i])
        return h

    def logits(self, h: mx.array, float32: bool = False) -> mx.array:
        """Final norm and LM head, shared by the main stream and every stream.

        Args:
            float32: compute the norm and the head in float32 (weights upcast per
                call, the quantized head's scales and biases only), so that greedy
                argmaxes are not taken over low-precision logits, where near-equal
                logits round to ties (bf16 logits near 25 are 0.125 apart). A
                float32 model computes exactly what it does without it.
        """
        head = self.lm_head_module()
        if float32 and (
            h.dtype != mx.float32 or self.model.norm.weight.dtype != mx.float32
        ):
            return self._logits_float32(h, head)
        h = self.model.norm(h)
        if self.args.tie_word_embeddings:
            return head.as_linear(h)
        return head(h)

    def _final_norm_float32(self, h: mx.array) -> mx.array:
        """The final norm in float32 (a family with another norm overrides it)."""
        norm = self.model.norm
        f32 = mx.float32
        return fast_ops.rms_norm(h.astype(f32), norm.weight.astype(f32), norm.eps)

    def _logits_float32(self, h: mx.array, head: nn.Module) -> mx.array:
        f32 = mx.float32
        h = self._final_norm_float32(h)
        if "scales" in head:  # quantized: the packed weights stay as they are
            biases = head.get("biases")
            out = mx.quantized_matmul(
                h,
                head["weight"],
                scales=head["scales"].astype(f32),
                biases=None if biases is None else biases.astype(f32),
                transpose=True,
                group_size=head.group_size,
                bits=head.bits,
                mode=head.mode,
            )
        else:
            out = h @ head["weight"].astype(f32).T
        if "bias" in head:
            out = out + head["bias"].astype(f32)
        return out

    def early_exit(self, h_split: mx.array) -> mx.array:
        """Pruning-head logits from main states at layer l: lm_head(norm(o(M)))."""
        if self.streams.prune is not None:
            h_split = h_split + self.streams.prune(h_split)
        return self.logits(h_split)

    def lm_head_module(self) -> nn.Module:
        """The LM head: ``lm_head``, or the tied embedding (called as a linear layer)."""
        return (
            self.model.embed_tokens if self.args.tie_word_embeddings else self.lm_head
        )

    def set_draft_vocab(self, ids: Optional[np.ndarray]) -> None:
        """Draft from the token ids ``ids`` only (None: the whole vocabulary).

        Stream logits then cover K = len(ids) tokens; verification is unchanged.
        """
        if ids is not None:
            ids = np.asarray(ids)
            problem = check_draft_vocab(ids, self.args.vocab_size)
            if problem:
                raise ValueError(problem)
            ids = ids.astype(np.int32)
        self.draft_vocab, self._draft_head = ids, None

    def draft_head(self) -> Optional[DraftHead]:
        """The LM head sliced to ``draft_vocab`` (None: no draft vocabulary); sliced
        on first use and again whenever the head's weights are replaced."""
        if self.draft_vocab is None:
            return None
        head = self.lm_head_module()
        if self._draft_head is None or self._draft_head.source is not head["weight"]:
            self._draft_head = DraftHead(head, self.draft_vocab)
        return self._draft_head

    def stream_logits(self, h: mx.array) -> mx.array:
        """Draft logits of (R, h) stream states: (R, V), or (R, K) over ``draft_vocab``
        (column k is token ``draft_vocab[k]``)."""
        if self.draft_vocab is None:
            return self.logits(h)
        out = self.draft_head()(self.model.norm(h))
        # A family whose logits() soft-caps (Gemma's final_logit_softcapping): the same.
        cap = getattr(self.args, "final_logit_softcapping", None)
        return out if cap is None else mx.tanh(out / cap) * cap

    def make_cache(self) -> PromptCache:
        """The cache ``mlx_lm.models.cache.make_prompt_cache(model)`` returns."""
        return make_prompt_cache(self)

    def __call__(self, inputs: mx.array, cache: Optional[List[Any]] = None) -> mx.array:
        """Plain causal forward, mlx-lm style: (1, L) tokens -> (1, L, V) logits."""
        cache = cache if cache is not None else make_prompt_cache(self)
        L = inputs.shape[-1]
        rows = Rows.causal(L, cache[0].offset, self.streams)
        h = self.run_layers(self.embed(inputs), rows, cache, 0, len(self.layers))
        return self.logits(h)

    def all_stream_logits(self, tokens: mx.array, draft: bool = False) -> tuple:
        """Main and stream logits at every position (the training layout).

        Args:
            draft: stream logits as drafting sees them (``stream_logits``: over
                ``draft_vocab`` where set).

        Returns:
            ``(main (T, V), streams (T, γ, V or K))`` in float32.
        """
        cache = make_prompt_cache(self)
        T = tokens.size
        rows = Rows.causal(T, 0, self.streams)
        h = self.run_layers(self.embed(tokens), rows, cache, 0, self.split)
        rows = rows.with_streams(list(range(T)))
        s = self.streams.insert_streams(h[0]).reshape(1, -1, h.shape[-1])
        h = self.run_layers(
            mx.concatenate([h, s], axis=1), rows, cache, self.split, len(self.layers)
        )
        g = self.streams.args.num_streams
        if draft:
            main = self.logits(h[0, :T]).astype(mx.float32)
            streams = self.stream_logits(h[0, T:]).astype(mx.float32)
            return main, streams.reshape(T, g, -1)
        out = self.logits(h[0]).astype(mx.float32)
        return out[:T], out[T:].reshape(T, g, -1)

    def early_exit_logits(self, tokens: mx.array) -> mx.array:
        """Early-exit (pruning head) logits at every position, (T, V) float32."""
        rows = Rows.causal(tokens.size, 0, self.streams)
        h = self.run_layers(
            self.embed(tokens), rows, make_prompt_cache(self), 0, self.split
        )
        return self.early_exit(h[0]).astype(mx.float32)

    def sanitize(self, weights: Dict[str, mx.array]) -> Dict[str, mx.array]:
        weights = {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}
        if self.args.tie_word_embeddings:
            weights.pop("lm_head.weight", None)
        return weights
