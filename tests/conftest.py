# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Tiny random models and tokenizers: tests never download anything."""

from typing import Optional

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from mlx_specstream.format import StreamArgs
from mlx_specstream.models.families import build_model
from mlx_specstream.models.llama import Model

TINY = dict(
    model_type="llama",
    hidden_size=64,
    num_hidden_layers=4,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    vocab_size=96,
    max_position_embeddings=512,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)


def tiny_config(**overrides) -> dict:
    return {**TINY, **overrides}


def tiny_model(
    seed: int = 0,
    stream_args: Optional[StreamArgs] = None,
    stream_scale: float = 0.5,
    **overrides,
) -> Model:
    """A random model of any family (``model_type`` in ``overrides``); stream
    parameters random too unless ``stream_scale`` is 0."""
    mx.random.seed(seed)
    model = build_model(
        tiny_config(**overrides),
        stream_args or StreamArgs(num_streams=3, num_stream_layers=2),
    )
    # Larger embeddings than nn.Embedding's default make logits peaky, so greedy
    # ties are impossible and sampled tests see a non-uniform distribution.
    model.model.embed_tokens.weight = mx.random.normal(
        model.model.embed_tokens.weight.shape
    )
    if stream_scale:
        params = tree_flatten(model.streams.parameters())
        rand = [
            (
                k,
                stream_scale
                * mx.random.normal(v.shape)
                / max(1, v.shape[-2] if v.ndim > 1 else 1) ** 0.5,
            )
            for k, v in params
        ]
        model.streams.update(tree_unflatten(rand))
    mx.eval(model.parameters())
    return model


def tiny_hf_tokenizer(vocab_size: int = TINY["vocab_size"]):
    """A word-level HF tokenizer: token i is the word ``t{i}``, id 0 is ``</s>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"</s>": 0, **{f"t{i}": i for i in range(1, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")


def wrap(hf_tokenizer, eos_token_ids=(0,)):
    from mlx_lm.tokenizer_utils import NaiveStreamingDetokenizer, TokenizerWrapper

    wrapper = TokenizerWrapper(hf_tokenizer, NaiveStreamingDetokenizer)
    wrapper.eos_token_ids = list(eos_token_ids)  # the constructor always adds </s>
    return wrapper


@pytest.fixture
def tokenizer():
    return wrap(tiny_hf_tokenizer())


def emitted(response) -> list:
    """The tokens a ``GenerationResponse`` adds to the output: its token, or none
    for the EOS that ends it."""
    return [] if response.finish_reason == "stop" else [response.token]
