# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Loading and saving model directories."""

import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import emitted, tiny_config, tiny_hf_tokenizer, tiny_model, wrap
from mlx_lm.utils import quantize_model

from mlx_specstream.decoding.state import state_of
from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.errors import ModelFileError
from mlx_specstream.format import StreamArgs
from mlx_specstream.generate import stream_generate
from mlx_specstream.utils import load, load_model, save_model

ARGS = StreamArgs(
    num_streams=3,
    num_stream_layers=2,
    stream_adapter_rank=4,
    insertion_rank=2,
    prune_rank=4,
)
TOKENS = mx.array([3, 8, 13, 21, 34, 55])


def saved(tmp_path, **overrides):
    model = tiny_model(0, ARGS, **overrides)
    save_model(model, tiny_config(**overrides), tmp_path)
    tiny_hf_tokenizer().save_pretrained(tmp_path)
    return model


def test_roundtrip_keeps_main_and_stream_logits(tmp_path):
    model = saved(tmp_path)
    loaded, tokenizer = load(tmp_path)
    assert state_of(loaded).has_streams and loaded.streams.args == ARGS
    for a, b in zip(model.all_stream_logits(TOKENS), loaded.all_stream_logits(TOKENS)):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert tokenizer.encode("t3 t8", add_special_tokens=False) == [3, 8]


def test_directory_without_streams_decodes_losslessly(tmp_path):
    saved(tmp_path)
    (tmp_path / "streams.safetensors").unlink()
    (tmp_path / "speculative_streaming.json").unlink()
    model = load_model(tmp_path)
    assert not state_of(model).has_streams
    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    out = [
        [
            t
            for r in stream_generate(
                model, tok, [4, 5, 6], max_tokens=20, speculative=s, prompt_lookup=True
            )
            for t in emitted(r)
        ]
        for s in (False, True)
    ]
    assert out[0] == out[1]


def test_transformers5_rope_parameters_and_shards(tmp_path):
    model = saved(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": cfg.pop("rope_theta"),
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    w = mx.load(str(tmp_path / "model.safetensors"))
    keys = sorted(w)
    mx.save_safetensors(
        str(tmp_path / "model-00001-of-00002.safetensors"), {k: w[k] for k in keys[::2]}
    )
    mx.save_safetensors(
        str(tmp_path / "model-00002-of-00002.safetensors"),
        {k: w[k] for k in keys[1::2]},
    )
    (tmp_path / "model.safetensors").unlink()
    loaded = load_model(tmp_path)
    np.testing.assert_array_equal(
        np.array(model(TOKENS[None])), np.array(loaded(TOKENS[None]))
    )


def test_quantized_roundtrip_decodes_losslessly(tmp_path):
    model = tiny_model(0, ARGS)
    config = tiny_config()
    model, config = quantize_model(model, config, group_size=32, bits=8)
    save_model(model, config, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.streams.stream_embed.dtype == mx.float32
    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    out = [
        [
            t
            for r in stream_generate(
                loaded,
                tok,
                [4, 5, 6],
                max_tokens=16,
                speculative=s,
                tree=TreeShape(budget=8),
            )
            for t in emitted(r)
        ]
        for s in (False, True)
    ]
    assert out[0] == out[1]


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda p: (p / "config.json").write_text("{not json"),
            "config.json: invalid JSON",
        ),
        (lambda p: (p / "config.json").unlink(), "config.json: file not found"),
        (
            lambda p: (p / "config.json").write_text(
                json.dumps({**tiny_config(), "model_type": "gpt2"})
            ),
            "unsupported model_type 'gpt2'",
        ),
        (
            lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 7),
            "model.safetensors: truncated safetensors file",
        ),
        (lambda p: (p / "model.safetensors").unlink(), "no model\\*.safetensors"),
        (
            lambda p: mx.save_safetensors(
                str(p / "streams.safetensors"), {"stream_embed": mx.zeros((2, 64))}
            ),
            "stream_embed' has shape \\(2, 64\\), expected \\(3, 64\\)",
        ),
        (
            lambda p: mx.save_safetensors(
                str(p / "streams.safetensors"),
                {
                    k: v
                    for k, v in mx.load(str(p / "streams.safetensors")).items()
                    if k != "prune.a"
                },
            ),
            "missing tensor 'prune.a'",
        ),
        (
            lambda p: (p / "speculative_streaming.json").write_text(
                json.dumps({"num_streams": 0})
            ),
            "num_streams must be >= 1",
        ),
    ],
)
def test_bad_directories_name_the_file_and_problem(tmp_path, damage, message):
    saved(tmp_path)
    damage(tmp_path)
    with pytest.raises(ModelFileError, match=message):
        load_model(tmp_path)


def test_wrong_weight_shape(tmp_path):
    saved(tmp_path)
    w = dict(mx.load(str(tmp_path / "model.safetensors")))
    w["model.norm.weight"] = mx.ones((63,))
    mx.save_safetensors(str(tmp_path / "model.safetensors"), w)
    with pytest.raises(
        ModelFileError,
        match="model.norm.weight' has shape \\(63,\\), expected \\(64,\\)",
    ):
        load_model(tmp_path)
