# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""PyTorch reference of a Speculative Streaming model (arXiv 2402.11131 §3.2).

Wraps a Hugging Face Llama / Mistral / Qwen2 / Qwen3 / Phi-3 / Gemma 3 causal LM and
runs its top Ns layers as multi-stream attention (eq. 2) written here with the HF
modules' weights, since the HF decoder layer cannot apply stream-only adapters.
Semantics (the MLX runtime matches them): stream j of anchor t enters layer
l = N - Ns as ``M_t + (M_t a_j) b_j + P_j``, attends to main K/V at positions <= t
and to streams 1..j of t, has RoPE position t, and predicts token t + 1 + j. Main
rows never see streams, so with zero stream parameters they are the HF model's own
logits.
"""

from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mlx_specstream.format import (
    DRAFT_CORPUS,
    DRAFT_VOCAB,
    SETTINGS_FILE,
    STREAMS_FILE,
    SUPPORTED_ARCHITECTURES,
    StreamArgs,
)
from mlx_specstream.loading.model_io import load_stream_args, normalise_config
from mlx_specstream.models import families

KV = Tuple[torch.Tensor, torch.Tensor]


class LowRank(nn.Module):
    """``x -> (x @ a) @ b``, the form of every stream-side adapter (scale in ``b``)."""

    def __init__(self, fin: int, rank: int, fout: int):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(fin, rank))
        self.b = nn.Parameter(torch.zeros(rank, fout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.a) @ self.b


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    d = cos.shape[-1]  # the whole head, or its first part (Phi-3 partial rotary)
    if d < x.shape[-1]:
        return torch.cat([_rope(x[..., :d], cos, sin), x[..., d:]], dim=-1)
    return x * cos + _rotate_half(x) * sin


def _qk_norm(attn: nn.Module, q: torch.Tensor, k: torch.Tensor) -> tuple:
    """Qwen3's per-head RMSNorm of queries and keys (last dim: head_dim), if any."""
    if hasattr(attn, "q_norm"):
        return attn.q_norm(q), attn.k_norm(k)
    return q, k


def _window_band(
    attn: nn.Module, q_pos: torch.Tensor, t: int
) -> Optional[torch.Tensor]:
    """A sliding-window layer's (Gemma 3, Phi-3) band: key s visible to a query at
    RoPE position q iff q - s < window (transformers' rule); None for a global layer.

    Args:
        q_pos: (..., A) query positions; keys are at 0..t-1. Returns (..., A, t).
    """
    w = getattr(attn, "sliding_window", None)
    if w is None and attn.config.model_type == "phi3":
        # transformers applies Phi-3's window, when set, on every layer
        w = attn.config.sliding_window
    if w is None:
        return None
    return (q_pos[..., None] - torch.arange(t, device=q_pos.device)) < w


def _residual_out(
    layer: nn.Module, h: torch.Tensor, attn_out: torch.Tensor, mlp: Callable
) -> torch.Tensor:
    """The block's residual adds: Llama's, or Gemma 3's with norms after attention
    and the MLP too (``mlp`` maps the normed state to the MLP output)."""
    if hasattr(layer, "post_feedforward_layernorm"):  # Gemma 3
        h = h + layer.post_attention_layernorm(attn_out)
        return h + layer.post_feedforward_layernorm(
            mlp(layer.pre_feedforward_layernorm(h))
        )
    h = h + attn_out
    return h + mlp(layer.post_attention_layernorm(h))


def _linear(
    mod: nn.Module, x: torch.Tensor, adapter: Optional[LowRank]
) -> torch.Tensor:
    y = mod(x)
    return y if adapter is None else y + adapter(x)


def _no_adapter(module: str) -> None:
    return None


def _qkv(attn: nn.Module, x: torch.Tensor, ad: Callable = _no_adapter) -> tuple:
    """q, k, v projections of ``x`` (features last), each part plus its adapter
    ``ad("self_attn.q_proj")`` ...; Phi-3 fuses them in ``qkv_proj`` (q | k | v)."""
    names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    if not hasattr(attn, "qkv_proj"):
        return tuple(_linear(getattr(attn, n.split(".")[1]), x, ad(n)) for n in names)
    q, kv = attn.config.num_attention_heads, attn.num_key_value_heads
    sizes = [q * attn.head_dim, kv * attn.head_dim, kv * attn.head_dim]
    parts = attn.qkv_proj(x).split(sizes, dim=-1)
    return tuple(p if ad(n) is None else p + ad(n)(x) for p, n in zip(parts, names))


def _gated(mlp: nn.Module, x: torch.Tensor, ad: Callable = _no_adapter) -> torch.Tensor:
    """act(gate) * up, each projection plus its adapter; Phi-3 fuses them in
    ``gate_up_proj`` (gate | up)."""
    if hasattr(mlp, "gate_up_proj"):
        gate, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
        if ad("mlp.gate_proj") is not None:
            gate = gate + ad("mlp.gate_proj")(x)
        if ad("mlp.up_proj") is not None:
            up = up + ad("mlp.up_proj")(x)
        return mlp.activation_fn(gate) * up
    up = _linear(mlp.up_proj, x, ad("mlp.up_proj"))
    return mlp.act_fn(_linear(mlp.gate_proj, x, ad("mlp.gate_proj"))) * up


def layer_dims(config) -> Dict[str, tuple]:
    """(in, out) features of every adaptable linear layer of a HF config, as the MLX
    model derives them (``ModelArgs.layer_dims``)."""
    args_class, _ = families.family(config.model_type)
    return args_class.from_dict(normalise_config(config.to_dict())).layer_dims


class StreamingReference(nn.Module):
    """A HF causal LM plus speculative streams, in the training layout.

    Args:
        hf_model: a ``LlamaForCausalLM`` / ``MistralForCausalLM`` / ``Qwen2ForCausalLM``.
        stream_args: stream settings; all stream parameters start at zero.
    """

    def __init__(self, hf_model: nn.Module, stream_args: StreamArgs):
        super().__init__()
        config = hf_model.config
        if config.model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"unsupported model_type {config.model_type!r}")
        n = config.num_hidden_layers
        if stream_args.num_stream_layers > n:
            raise ValueError(
                f"num_stream_layers {stream_args.num_stream_layers} > {n} layers"
            )
        self.hf = hf_model
        self.args = stream_args
        self.first_layer = n - stream_args.num_stream_layers
        g, h = stream_args.num_streams, config.hidden_size
        self.stream_embed = nn.Parameter(torch.zeros(g, h))
        ri = stream_args.insertion_rank
        self.insert = nn.ParameterDict(
            {
                "a": nn.Parameter(torch.zeros(g, h, ri)),
                "b": nn.Parameter(torch.zeros(g, ri, h)),
            }
            if ri
            else {}
        )
        dims, r = layer_dims(config), stream_args.stream_adapter_rank
        # adapters["i"]["self_attn_q_proj"]: ModuleDict keys cannot hold dots
        self.adapters = nn.ModuleDict(
            {
                str(i): nn.ModuleDict(
                    {
                        m.replace(".", "_"): LowRank(dims[m][0], r, dims[m][1])
                        for m in stream_args.stream_adapter_modules
                    }
                )
                for i in range(self.first_layer, n)
            }
            if r
            else {}
        )
        self.prune = (
            LowRank(h, stream_args.prune_rank, h) if stream_args.prune_rank else None
        )
        self.to(next(hf_model.parameters()).device)

    # ---- construction and files -------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: Union[str, Path],
        stream_args: Optional[StreamArgs] = None,
        **hf_kwargs,
    ) -> "StreamingReference":
        """Load a HF directory, plus its stream files when present (else zero streams).

        Args:
            path: HF model directory (config.json, weights, tokenizer).
            stream_args: settings to use when the directory has no stream files.
            hf_kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (e.g. gguf_file).
        """
        from transformers import AutoModelForCausalLM  # slow to import

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such model directory")
        hf_kwargs.setdefault("dtype", torch.float32)
        hf = AutoModelForCausalLM.from_pretrained(str(path), **hf_kwargs)
        if (path / SETTINGS_FILE).exists():
            ref = cls(hf, read_stream_args(path))
            if (path / STREAMS_FILE).exists():
                ref.load_streams(path)
            return ref
        return cls(hf, stream_args or StreamArgs())

    def streams_state_dict(self) -> Dict[str, torch.Tensor]:
        """Stream tensors under their ``format.py`` names (views of the parameters)."""
        out = {"stream_embed": self.stream_embed}
        if len(self.insert):
            out["insert.a"], out["insert.b"] = self.insert["a"], self.insert["b"]
        for i, mods in self.adapters.items():
            for m in self.args.stream_adapter_modules:
                ad = mods[m.replace(".", "_")]
                out[f"layers.{i}.{m}.lora_a"], out[f"layers.{i}.{m}.lora_b"] = (
                    ad.a,
                    ad.b,
                )
        if self.prune is not None:
            out["prune.a"], out["prune.b"] = self.prune.a, self.prune.b
        return out

    def stream_parameters(self) -> List[nn.Parameter]:
        return list(self.streams_state_dict().values())

    def load_streams_state_dict(
        self, tensors: Dict[str, torch.Tensor], source: str = ""
    ) -> None:
        """Copy format-named tensors in; every expected tensor must be present, shapes equal."""
        own = self.streams_state_dict()
        missing = sorted(set(own) - set(tensors))
        extra = sorted(set(tensors) - set(own))
        if missing or extra:
            raise ValueError(
                f"{source}: stream tensors missing {missing[:3]}, unexpected {extra[:3]}"
            )
        with torch.no_grad():
            for k, p in own.items():
                if tuple(tensors[k].shape) != tuple(p.shape):
                    raise ValueError(
                        f"{source}: {k} has shape {tuple(tensors[k].shape)}, expected {tuple(p.shape)}"
                    )
                p.copy_(tensors[k].to(p.dtype))

    def save_streams(self, directory: Union[str, Path]) -> None:
        """Write ``speculative_streaming.json`` and ``streams.safetensors`` (float32)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.args.save(directory)
        tensors = {
            k: v.detach().float().cpu().contiguous()
            for k, v in self.streams_state_dict().items()
        }
        save_file(tensors, str(directory / STREAMS_FILE), metadata={"format": "pt"})

    def load_streams(self, directory: Union[str, Path]) -> None:
        """Read ``streams.safetensors``; its settings must match this model's."""
        directory = Path(directory)
        args = read_stream_args(directory)
        if args.to_dict() | {"prune_threshold": 0} != self.args.to_dict() | {
            "prune_threshold": 0
        }:
            raise ValueError(
                f"{directory / SETTINGS_FILE}: settings differ from the model's"
            )
        self.args = args
        path = directory / STREAMS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        tensors = load_file(str(path))
        # A draft vocabulary and corpus (shipped streams carry them) are decoding
        # choices, not trained parameters: streams trained from these have neither.
        tensors.pop(DRAFT_VOCAB, None)
        tensors.pop(DRAFT_CORPUS, None)
        self.load_streams_state_dict(tensors, str(path))

    @torch.no_grad()
    def init_stream_parameters(self, generator: torch.Generator) -> None:
        """Training init: every ``a`` ~ N(0, 1/fin), every ``b`` and P zero.

        With ``b = 0`` the model starts exactly at the base (streams = copies of M_t),
        and ``a != 0`` gives ``b`` a gradient from the first step.
        """
        for k, p in self.streams_state_dict().items():
            if k.endswith("a"):
                fin = p.shape[-2]
                p.copy_(torch.randn(p.shape, generator=generator) / fin**0.5)
            else:
                p.zero_()

    # ---- forward pieces ---------------------------------------------------------

    def _adapter(self, layer: int, module: str) -> Optional[LowRank]:
        mods = self.adapters[str(layer)] if str(layer) in self.adapters else None
        key = module.replace(".", "_")
        return mods[key] if mods is not None and key in mods else None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head (shared by main rows and streams), soft-capped
        where the config says (Gemma 3's ``final_logit_softcapping``)."""
        out = self.hf.lm_head(self.hf.model.norm(x))
        cap = getattr(self.hf.config, "final_logit_softcapping", None)
        return out if cap is None else torch.tanh(out / cap) * cap

    def insert_streams(self, m: torch.Tensor) -> torch.Tensor:
        """Eq. 3 with f = I + low rank: anchors (..., h) -> streams (..., γ, h)."""
        s = m.unsqueeze(-2) + self.stream_embed
        if len(self.insert):
            # (..., h) x (γ, h, r) -> (..., γ, r) x (γ, r, h) -> (..., γ, h)
            low = torch.einsum("...h,ghr->...gr", m, self.insert["a"])
            s = s + torch.einsum("...gr,grh->...gh", low, self.insert["b"])
        return s

    def prune_hidden(self, m: torch.Tensor) -> torch.Tensor:
        """Pruning adapter o(M) = M + (M a) b; identity at rank 0."""
        return m if self.prune is None else m + self.prune(m)

    def rotary(self, x: torch.Tensor, pos: torch.Tensor) -> tuple:
        """RoPE (cos, sin) at positions ``pos`` (B, T), each (B, T, rotary dims).

        LongRoPE (Phi-3) always rotates with ``long_factor``, as the MLX runtime
        (mlx-lm's SuScaledRoPE) does; transformers' own rotary switches to it only
        once the sequence passes ``original_max_position_embeddings``.
        """
        rot = self.hf.model.rotary_emb
        if isinstance(getattr(rot, "rope_type", None), dict):
            # Gemma 3: one rope per layer type, {layer type: cos} and {layer type: sin}
            both = {kind: rot(x, pos, kind) for kind in rot.rope_type}
            return (
                {k: c for k, (c, _) in both.items()},
                {k: s for k, (_, s) in both.items()},
            )
        if getattr(rot, "rope_type", None) != "longrope":
            return rot(x, pos)
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # slow import

        config = self.hf.config
        long_seq = config.rope_parameters["original_max_position_embeddings"] + 1
        inv_freq, scale = ROPE_INIT_FUNCTIONS["longrope"](config, x.device, long_seq)
        freqs = pos[..., None].float() * inv_freq  # (B, T, rotary dims / 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)

    def _check_window(self, t: int) -> None:
        w = getattr(self.hf.config, "sliding_window", None)
        if (
            w is not None
            and (
                self.hf.config.model_type == "mistral"
                or getattr(self.hf.config, "use_sliding_window", False)
            )
            and t > w
        ):
            raise ValueError(
                f"sequence of {t} tokens exceeds the sliding window {w} (unsupported)"
            )

    def _layer_rope(self, i: int, cos, sin) -> tuple:
        """Layer ``i``'s RoPE (cos, sin): ``rotary`` gives Gemma 3 one per layer type."""
        if isinstance(cos, dict):
            kind = self.hf.config.layer_types[i]
            return cos[kind], sin[kind]
        return cos, sin

    def _main_layer(
        self, layer: nn.Module, h, cos, sin, mask
    ) -> Tuple[torch.Tensor, KV]:
        """One decoder layer on main rows; also returns its post-RoPE K/V (B, Hkv, T, d)."""
        attn, (b, t, _) = layer.self_attn, h.shape
        band = _window_band(attn, torch.arange(t, device=h.device), t)
        if band is not None:  # a query row always sees itself (q - q = 0)
            mask = mask & band
        x = layer.input_layernorm(h)
        q, k, v = _qkv(attn, x)
        q = q.view(b, t, -1, attn.head_dim)
        k = k.view(b, t, -1, attn.head_dim)
        q, k = _qk_norm(attn, q, k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(b, t, -1, attn.head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.unsqueeze(1), scale=attn.scaling, enable_gqa=True
        )
        h = _residual_out(
            layer, h, attn.o_proj(o.transpose(1, 2).reshape(b, t, -1)), layer.mlp
        )
        return h, (k, v)

    def stream_layer(
        self, i: int, s: torch.Tensor, kv: KV, cos, sin, key_ok
    ) -> torch.Tensor:
        """Eq. 2 for stream rows of layer ``i``.

        Args:
            s: streams (B, A, γ, h) of A anchors.
            kv: this layer's post-RoPE main K/V, each (B, Hkv, T, d).
            cos, sin: RoPE at the anchors' positions, (B, A, d).
            key_ok: (B, A, T) bool, main key s visible to anchor a (s <= t, not padding).
        """
        layer = self.hf.model.layers[i]
        attn = layer.self_attn
        ad = lambda m: self._adapter(i, m)  # noqa: E731
        b, a, g, _ = s.shape
        k_main, v_main = kv
        hkv, d = k_main.shape[1], attn.head_dim
        cos, sin = self._layer_rope(i, cos, sin)
        t = k_main.shape[2]
        # An anchor's position is its last visible main key (key_ok is causal).
        anchor_pos = (key_ok * torch.arange(t, device=s.device)).amax(-1)  # (B, A)
        band = _window_band(attn, anchor_pos, t)
        if band is not None:
            key_ok = key_ok & band
        x = layer.input_layernorm(s)
        q, k, v = _qkv(attn, x, ad)
        q, k = q.view(b, a, g, hkv, -1, d), k.view(b, a, g, hkv, d)
        q, k = _qk_norm(attn, q, k)
        v = v.view(b, a, g, hkv, d)
        cos, sin = cos[:, :, None, None, :], sin[:, :, None, None, :]
        q, k = _rope(q, cos.unsqueeze(-2), sin.unsqueeze(-2)), _rope(k, cos, sin)
        # scores vs main keys (B, A, γ, Hkv, rep, T) and vs own-anchor streams (..., γ)
        sm = torch.einsum("bagkrd,bktd->bagkrt", q, k_main) * attn.scaling
        ss = torch.einsum("bagkrd,bahkd->bagkrh", q, k) * attn.scaling
        sm = sm.masked_fill(~key_ok[:, :, None, None, None, :], float("-inf"))
        # stream j sees streams i <= j of its own anchor
        lower = torch.ones(g, g, dtype=torch.bool, device=s.device).tril()
        ss = ss.masked_fill(~lower[None, None, :, None, None, :], float("-inf"))
        p = torch.softmax(torch.cat([sm, ss], dim=-1).float(), dim=-1).to(q.dtype)
        pm, ps = p.split([sm.shape[-1], g], dim=-1)
        o = torch.einsum("bagkrt,bktd->bagkrd", pm, v_main)
        o = o + torch.einsum("bagkrh,bahkd->bagkrd", ps, v)
        mlp = layer.mlp
        return _residual_out(
            layer,
            s,
            _linear(attn.o_proj, o.reshape(b, a, g, -1), ad("self_attn.o_proj")),
            lambda x: _linear(mlp.down_proj, _gated(mlp, x, ad), ad("mlp.down_proj")),
        )

    def main_pass(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
    ) -> Tuple[
        torch.Tensor,
        torch.Tensor,
        List[KV],
        Tuple[torch.Tensor, torch.Tensor],
        torch.Tensor,
    ]:
        """Main rows through all layers.

        Returns:
            final hidden (B, T, h), M at the input of layer l (B, T, h), post-RoPE K/V of
            layers l..N-1, RoPE (cos, sin) each (B, T, d), and the (B, T, T) bool mask.
        """
        b, t = input_ids.shape
        self._check_window(t)
        dev = input_ids.device
        valid = torch.ones(b, t, dtype=torch.bool, device=dev)
        if attention_mask is not None:
            valid = attention_mask.to(torch.bool)
        # causal and not padding; a padded query sees itself so its softmax stays finite
        eye = torch.eye(t, dtype=torch.bool, device=dev)
        mask = (torch.ones_like(eye).tril() & valid[:, None, :]) | eye
        h = self.hf.model.embed_tokens(input_ids)
        pos = torch.arange(t, device=dev).expand(b, t)
        cos, sin = self.rotary(h, pos)
        kvs, m = [], None
        for i, layer in enumerate(self.hf.model.layers):
            if i == self.first_layer:
                m = h
            h, kv = self._main_layer(layer, h, *self._layer_rope(i, cos, sin), mask)
            if i >= self.first_layer:
                kvs.append(kv)
        return h, m, kvs, (cos, sin), mask

    def stream_pass(
        self, m: torch.Tensor, kvs: List[KV], cos, sin, key_ok
    ) -> torch.Tensor:
        """Stream rows of A anchors through the MSA layers: m (B, A, h) -> (B, A, γ, h)."""
        s = self.insert_streams(m)
        for k, kv in enumerate(kvs):
            s = self.stream_layer(self.first_layer + k, s, kv, cos, sin, key_ok)
        return s

    def forward(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Main and stream logits with γ streams at every position (training layout).

        Positions are 0..T-1 as in HF (pad on the right). Returns main logits
        (B, T, V) and stream logits (B, T, γ, V); stream j at t predicts token t+1+j.
        """
        h, m, kvs, (cos, sin), mask = self.main_pass(input_ids, attention_mask)
        s = self.stream_pass(m, kvs, cos, sin, mask)
        return self.logits(h), self.logits(s)

    def early_exit_logits(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``lm_head(norm(o(M)))`` with M the main state entering layer l: (B, T, V)."""
        _, m, _, _, _ = self.main_pass(input_ids, attention_mask)
        return self.logits(self.prune_hidden(m))


def read_stream_args(directory: Union[str, Path]) -> StreamArgs:
    """Parse ``speculative_streaming.json`` with a one-line error on bad input."""
    args = load_stream_args(directory)
    if args is None:
        raise FileNotFoundError(f"{Path(directory) / SETTINGS_FILE}: no such file")
    return args
