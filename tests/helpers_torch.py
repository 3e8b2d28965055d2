# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Tiny random Hugging Face checkpoints for tests (needs torch and transformers).

``tiny_hf_llama(tmp_path)`` / ``tiny_hf_qwen2(tmp_path)`` save a random model and a
small character-level tokenizer into ``tmp_path / <name>`` and return that path.
``write_random_streams`` adds ``speculative_streaming.json`` + ``streams.safetensors``.
"""

import json
from functools import partial
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from mlx_specstream.format import (
    STREAM_ADAPTER_MODULES,
    STREAMS_FILE,
    StreamArgs,
    stream_tensor_shapes,
)

# Printable characters the tiny tokenizer knows; the rest of the vocab is merges.
_ALPHABET = list("abcdefghijklmnopqrstuvwxyz0123456789 .,?!'") + ["\n"]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAMA_DEFAULTS = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=0,
)

QWEN2_DEFAULTS = dict(LLAMA_DEFAULTS, tie_word_embeddings=True, num_key_value_heads=2)
# Qwen3: per-head q/k RMSNorm, no q/k/v bias, head_dim not hidden/heads.
QWEN3_DEFAULTS = dict(QWEN2_DEFAULTS, head_dim=24, attention_bias=False)


def save_tiny_tokenizer(path: Path, vocab_size: int) -> None:
    """Save a character BPE tokenizer with at most ``vocab_size`` tokens to ``path``."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab: Dict[str, int] = {}
    for tok in SPECIAL_TOKENS + _ALPHABET:
        vocab[tok] = len(vocab)
    merges = []
    # Frequent English pairs, so encoding is not purely one char per token.
    for pair in [
        "th",
        "he",
        "in",
        "er",
        "an",
        "re",
        "on",
        "at",
        "en",
        "nd",
        "is",
        "es",
    ]:
        if len(vocab) >= vocab_size:
            break
        merges.append((pair[0], pair[1]))
        vocab[pair] = len(vocab)
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} < tokenizer alphabet {len(vocab)}")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None))
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))


def _save_model(
    model_cls, config_cls, path: Path, params: Dict, seed: int, norm_center: float = 1.0
) -> Path:
    import torch

    torch.manual_seed(seed)
    config = config_cls(**params)
    model = model_cls(config).to(torch.float32).eval()
    # Random init draws small weights (std 0.02): logits are nearly flat and argmax
    # ties are likely; larger norms and biases make parity tests meaningful.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(norm_center + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.1)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    save_tiny_tokenizer(path, params["vocab_size"])
    return path


def tiny_hf_llama(
    tmp_path: Path, seed: int = 0, name: str = "llama", **overrides
) -> Path:
    """Save a random tiny ``LlamaForCausalLM`` (GQA, untied) and tokenizer.

    Args:
        tmp_path: parent directory; the model goes to ``tmp_path / name``.
        seed: torch seed for the weights.
        overrides: ``LlamaConfig`` fields replacing ``LLAMA_DEFAULTS``.

    Returns:
        The model directory.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    params = dict(LLAMA_DEFAULTS, **overrides)
    return _save_model(
        LlamaForCausalLM, LlamaConfig, Path(tmp_path) / name, params, seed
    )


def tiny_hf_qwen2(
    tmp_path: Path, seed: int = 0, name: str = "qwen2", **overrides
) -> Path:
    """Save a random tiny ``Qwen2ForCausalLM`` (q/k/v bias, tied) and tokenizer.

    Args:
        tmp_path: parent directory; the model goes to ``tmp_path / name``.
        seed: torch seed for the weights.
        overrides: ``Qwen2Config`` fields replacing ``QWEN2_DEFAULTS``.

    Returns:
        The model directory.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    params = dict(QWEN2_DEFAULTS, **overrides)
    return _save_model(
        Qwen2ForCausalLM, Qwen2Config, Path(tmp_path) / name, params, seed
    )


def write_random_streams(
    model_dir: Path,
    stream_args: Optional[StreamArgs] = None,
    seed: int = 0,
    scale: float = 0.1,
) -> Dict[str, np.ndarray]:
    """Write random nonzero stream tensors (every kind by default) beside a model.

    Args:
        model_dir: a directory written by ``tiny_hf_llama`` / ``tiny_hf_qwen2``.
        stream_args: settings; default γ=3, Ns=2, all adapter ranks 4.
        seed: numpy seed.
        scale: standard deviation of the random values.

    Returns:
        The tensors written, by file name.
    """
    from safetensors.numpy import save_file

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    if stream_args is None:
        stream_args = StreamArgs(
            num_streams=3,
            num_stream_layers=2,
            stream_adapter_rank=4,
            insertion_rank=4,
            prune_rank=4,
        )
    h, f = config["hidden_size"], config["intermediate_size"]
    hd = config.get("head_dim") or h // config["num_attention_heads"]
    q_out = config["num_attention_heads"] * hd
    kv_out = config["num_key_value_heads"] * hd
    dims = dict(
        zip(
            STREAM_ADAPTER_MODULES,
            [(h, q_out), (h, kv_out), (h, kv_out), (q_out, h), (h, f), (h, f), (f, h)],
        )
    )
    shapes = stream_tensor_shapes(stream_args, h, dims, config["num_hidden_layers"])
    rng = np.random.default_rng(seed)
    tensors = {
        k: (scale * rng.standard_normal(s)).astype(np.float32)
        for k, s in shapes.items()
    }
    stream_args.save(model_dir)
    save_file(tensors, str(model_dir / STREAMS_FILE))
    return tensors


def tiny_hf_qwen3(
    tmp_path: Path, seed: int = 0, name: str = "qwen3", **overrides
) -> Path:
    """Save a random tiny ``Qwen3ForCausalLM`` (q/k norms, tied) and tokenizer."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    params = dict(QWEN3_DEFAULTS, **overrides)
    return _save_model(
        Qwen3ForCausalLM, Qwen3Config, Path(tmp_path) / name, params, seed
    )


# Phi-4-mini's shape (tied head, RoPE on 3/4 of each head, LongRoPE) on the tiny
# model. mlx-lm (and so our runtime) always rotates with long_factor; transformers
# switches to it once the sequence passes original_max_position_embeddings, so that
# is 2 here: every test sequence (3+ tokens) is past it and the two agree, while
# distinct short and long factors would show a model using the wrong ones.
PHI3_ROTARY = 12  # head_dim 16 x 0.75
PHI3_DEFAULTS = dict(
    LLAMA_DEFAULTS,
    tie_word_embeddings=True,
    partial_rotary_factor=0.75,
    max_position_embeddings=64,
    original_max_position_embeddings=2,
    rope_scaling={
        "type": "longrope",
        "short_factor": [1.0 + 0.1 * i for i in range(PHI3_ROTARY // 2)],
        "long_factor": [1.5 + 0.4 * i for i in range(PHI3_ROTARY // 2)],
    },
)


def tiny_hf_phi3(
    tmp_path: Path, seed: int = 0, name: str = "phi3", **overrides
) -> Path:
    """Save a random tiny ``Phi3ForCausalLM`` (fused qkv_proj / gate_up_proj, partial
    rotary, LongRoPE, tied) and tokenizer; ``overrides`` replace ``PHI3_DEFAULTS``
    (``rope_scaling=None, partial_rotary_factor=1.0, tie_word_embeddings=False``
    gives Phi-3-mini-4k's shape)."""
    from transformers import Phi3Config, Phi3ForCausalLM

    params = dict(PHI3_DEFAULTS, **overrides)
    return _save_model(Phi3ForCausalLM, Phi3Config, Path(tmp_path) / name, params, seed)


# Gemma 3: three layers, sliding window 8 on layers 0 and 2, layer 1 global (the two
# stream layers of Ns = 2 hold one of each), a local RoPE base unlike the global
# one, tied embeddings; the tests' prompts and generations run past the window.
GEMMA3_DEFAULTS = dict(
    QWEN2_DEFAULTS,
    head_dim=24,
    query_pre_attn_scalar=24,
    sliding_window=8,
    sliding_window_pattern=2,
    rope_theta=10000.0,
    rope_local_base_freq=100.0,
    rms_norm_eps=1e-6,
)
# What Hub checkpoints of Gemma 3 carry besides transformers-5's rope_parameters and
# layer_types; mlx-lm (and so mlx_lm.convert) reads only these.
_GEMMA3_HUB_FIELDS = ("sliding_window_pattern", "rope_theta", "rope_local_base_freq")


def tiny_hf_gemma3(
    tmp_path: Path, seed: int = 0, name: str = "gemma3", **overrides
) -> Path:
    """Save a random tiny ``Gemma3ForCausalLM`` and tokenizer; ``overrides`` replace
    ``GEMMA3_DEFAULTS``. config.json also gets the Hub's mlx-lm-readable fields."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    params = dict(GEMMA3_DEFAULTS, **overrides)
    # Gemma's norms scale by (1 + w): w near 0 keeps them near 1, as for the others.
    path = _save_model(
        Gemma3ForCausalLM, Gemma3TextConfig, Path(tmp_path) / name, params, seed, 0.0
    )
    config = json.loads((path / "config.json").read_text())
    config.update({k: params[k] for k in _GEMMA3_HUB_FIELDS if k in params})
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


def tiny_hf_gemma3_multimodal(
    tmp_path: Path, seed: int = 0, name: str = "gemma3_mm", **overrides
) -> Path:
    """Save a random tiny ``Gemma3ForConditionalGeneration`` (model_type ``gemma3``:
    the text model of ``tiny_hf_gemma3`` under ``model.language_model``, a one-layer
    SigLIP vision tower and the projector) and tokenizer; text_config also gets the
    Hub's mlx-lm-readable fields."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    params = dict(GEMMA3_DEFAULTS, **overrides)
    vision = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )

    def config_cls(**p):
        # Image tokens at the top of the tiny vocabulary, never in test prompts.
        return Gemma3Config(
            text_config=Gemma3TextConfig(**p),
            vision_config=vision,
            mm_tokens_per_image=4,
            boi_token_index=93,
            eoi_token_index=94,
            image_token_index=95,
            eos_token_id=p["eos_token_id"],
            tie_word_embeddings=p["tie_word_embeddings"],
        )

    path = _save_model(
        Gemma3ForConditionalGeneration,
        config_cls,
        Path(tmp_path) / name,
        params,
        seed,
        0.0,
    )
    config = json.loads((path / "config.json").read_text())
    config["text_config"].update(
        {k: params[k] for k in _GEMMA3_HUB_FIELDS if k in params}
    )
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


# The family runner: every family's tiny HF builder, keyed by model_type. The HF
# parity, reference and conversion tests run each check on each entry, so a new family
# is its builder and a line here (and an MLX shape in test_generate.SHAPES).
HF_FAMILIES = {
    "llama": tiny_hf_llama,
    "qwen2": tiny_hf_qwen2,
    # seed 0's greedy answer to test_convert's prompt hits EOS after 8 tokens
    "qwen3": partial(tiny_hf_qwen3, seed=1),
    "phi3": tiny_hf_phi3,
    "gemma3_text": tiny_hf_gemma3,
}
