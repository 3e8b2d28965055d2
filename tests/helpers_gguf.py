# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The one GGUF writer of the tests (test_gguf, test_gguf_families, test_gguf_gemma3).

Tiny GGUF files are written with ``gguf.GGUFWriter`` the way llama.cpp's
``convert_hf_to_gguf.py`` writes them: llama.cpp's tensor names, 1-D tensors (norms,
biases) in F32, the rest in the type asked for. Everything here is written
independently of ``mlx_specstream.loading.gguf``, so it checks the reader. Import it after
``pytest.importorskip("gguf")``.
"""

from pathlib import Path
from typing import Iterable, Mapping, Optional, Tuple

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType

# Hugging Face -> llama.cpp tensor names.
GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.qkv_proj": "attn_qkv",  # phi3
    "self_attn.q_norm": "attn_q_norm",  # qwen3, gemma3
    "self_attn.k_norm": "attn_k_norm",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.gate_up_proj": "ffn_up",  # llama.cpp's phi3: gate rows, then up rows
    "mlp.down_proj": "ffn_down",
}
# Gemma 3's four norms per layer: "ffn_norm" is the one before the MLP there.
GEMMA3_LAYER = {
    **LAYER,
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def gguf_name(name: str, layer: Mapping[str, str] = LAYER) -> str:
    """llama.cpp's name of the Hugging Face tensor ``name``."""
    if name in GLOBAL:
        return GLOBAL[name]
    _, _, i, *mod, kind = name.split(".")
    return f"blk.{i}.{layer['.'.join(mod)]}.{kind}"


def byte_alphabet():
    """GPT-2's byte -> printable character table."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def hparams(config: dict, rope_theta: Optional[float] = None) -> dict:
    """The transformer's shape from a config.json, as ``write_gguf_file`` metadata."""
    return dict(
        context_length=config["max_position_embeddings"],
        embedding_length=config["hidden_size"],
        block_count=config["num_hidden_layers"],
        feed_forward_length=config["intermediate_size"],
        head_count=config["num_attention_heads"],
        head_count_kv=config["num_key_value_heads"],
        layer_norm_rms_eps=config["rms_norm_eps"],
        rope_freq_base=config["rope_theta"] if rope_theta is None else rope_theta,
    )


Tensor = Tuple[str, np.ndarray, Optional[int]]  # (GGUF name, data, raw_dtype)


def encode(
    name: str, v: np.ndarray, qtype=Q.F32, data: Optional[np.ndarray] = None
) -> Tuple[Tensor, np.ndarray]:
    """The tensor ``v`` (named ``name`` in the file) stored as ``qtype`` (F32 where
    ``v`` is 1-D), or as the raw ``qtype`` blocks ``data`` where given (K-quants,
    which gguf-py cannot quantize to); returns the tensor to write and the float32
    values the file holds (dequantized, shaped as ``v``)."""
    if data is None:
        if v.ndim == 1 or qtype == Q.F32:
            data, qtype = v.astype(np.float32), Q.F32
        elif qtype == Q.F16:
            data = v.astype(np.float16)
        else:
            data = gguf.quants.quantize(v, qtype)
    raw = qtype if qtype not in (Q.F32, Q.F16) else None  # gguf reads F32/F16 itself
    back = gguf.quants.dequantize(data, qtype).reshape(v.shape).astype(np.float32)
    return (name, data, raw), back


def write_gguf_file(
    path: Path, arch: str, meta: Mapping[str, object], tensors: Iterable[Tensor] = ()
) -> None:
    """Write a GGUF file of architecture ``arch``: ``meta`` maps each
    ``GGUFWriter.add_<key>`` to its value (written in that order), ``tensors`` are
    ``encode``'s (name, data, raw_dtype)."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in meta.items():
        getattr(w, f"add_{key}")(value)
    for name, data, raw in tensors:
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
