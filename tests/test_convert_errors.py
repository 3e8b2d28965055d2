# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Bad input to ``convert``: one ``error: <file>: <problem>`` line, exit 1, nothing written."""

import json
import struct
from pathlib import Path

import mlx.core as mx
import pytest
from mlx_specstream.convert.convert import main

from mlx_specstream.format import SETTINGS_FILE, STREAMS_FILE, StreamArgs
from mlx_specstream.utils import build_model, save_model

CONFIG = dict(
    architectures=["LlamaForCausalLM"],
    model_type="llama",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    vocab_size=64,
    tie_word_embeddings=False,
)


@pytest.fixture
def src(tmp_path) -> Path:
    """A valid checkpoint directory (HF names, zero-free random weights, streams)."""
    path = tmp_path / "src"
    args = StreamArgs(num_streams=2, num_stream_layers=1, stream_adapter_rank=2)
    save_model(build_model(CONFIG, args), CONFIG, path)
    # One weights file and no index, as Hugging Face writes a small model.
    (path / "model.safetensors.index.json").unlink()
    (path / "tokenizer_config.json").write_text("{}")
    return path


@pytest.fixture
def dst(tmp_path) -> Path:
    return tmp_path / "out" / "model"


def run(capsys, *argv):
    """Run the CLI; return (exit code, the error line, all of stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in err
    assert len(lines) == (1 if code else 0), err
    return code, lines[0] if lines else "", err


def assert_fails(capsys, src, dst, file, problem, *extra):
    code, line, _ = run(capsys, "--torch-path", src, "--mlx-path", dst, *extra)
    assert code == 1
    assert line.startswith(f"error: {file}: "), line
    assert problem in line, line
    assert not dst.exists()
    leftovers = list(dst.parent.iterdir()) if dst.parent.exists() else []
    assert leftovers == [], leftovers


def _edit_json(path: Path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _rewrite_weights(path: Path, edit):
    weights = dict(mx.load(str(path)))
    edit(weights)
    mx.save_safetensors(str(path), weights)


def test_valid_source_converts(capsys, src, dst):
    code, _, _ = run(capsys, "--torch-path", src, "--mlx-path", dst)
    assert code == 0 and (dst / "model.safetensors").exists()


def test_nonexistent_path(capsys, tmp_path, dst):
    assert_fails(
        capsys, tmp_path / "nope", dst, tmp_path / "nope", "no such file or directory"
    )


def test_missing_config(capsys, src, dst):
    (src / "config.json").unlink()
    assert_fails(capsys, src, dst, src / "config.json", "file not found")


def test_bad_json(capsys, src, dst):
    (src / "config.json").write_text('{"model_type": "llama",')
    assert_fails(capsys, src, dst, src / "config.json", "invalid JSON")


@pytest.mark.parametrize(
    "change",
    [{"model_type": "gpt2"}, {"architectures": ["LlamaForSequenceClassification"]}],
)
def test_unsupported_architecture(capsys, src, dst, change):
    _edit_json(src / "config.json", **change)
    assert_fails(capsys, src, dst, src / "config.json", "unsupported architecture")


def test_config_missing_key(capsys, src, dst):
    config = json.loads((src / "config.json").read_text())
    del config["num_attention_heads"]
    (src / "config.json").write_text(json.dumps(config))
    assert_fails(capsys, src, dst, src / "config.json", "invalid config")


def test_no_weights(capsys, src, dst):
    (src / "model.safetensors").unlink()
    assert_fails(capsys, src, dst, src, "no weights found")


def test_truncated_safetensors(capsys, src, dst):
    f = src / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert_fails(capsys, src, dst, f, "truncated safetensors file")


def test_corrupt_safetensors_header(capsys, src, dst):
    f = src / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 12) + b"not a header" + b"\0" * 64)
    assert_fails(capsys, src, dst, f, "corrupt safetensors header")


def test_missing_tensor(capsys, src, dst):
    f = src / "model.safetensors"
    _rewrite_weights(f, lambda w: w.pop("model.layers.1.mlp.up_proj.weight"))
    assert_fails(
        capsys, src, dst, f, "missing tensor 'model.layers.1.mlp.up_proj.weight'"
    )


def test_unexpected_tensor(capsys, src, dst):
    f = src / "model.safetensors"
    _rewrite_weights(
        f, lambda w: w.update({"model.layers.0.extra.weight": mx.zeros((2,))})
    )
    assert_fails(capsys, src, dst, f, "unexpected tensor 'model.layers.0.extra.weight'")


def test_shape_mismatch_with_config(capsys, src, dst):
    _edit_json(src / "config.json", intermediate_size=48)
    assert_fails(
        capsys,
        src,
        dst,
        src / "model.safetensors",
        "has shape (64, 32), config.json implies (48, 32)",
    )


def test_missing_shard(capsys, src, dst):
    f = src / "model.safetensors"
    names = list(mx.load(str(f)))
    f.rename(src / "model-00001-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names}
    weight_map[names[0]] = "model-00002-of-00002.safetensors"
    (src / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": weight_map})
    )
    assert_fails(
        capsys, src, dst, src / "model-00002-of-00002.safetensors", "not found"
    )


def test_stream_tensors_missing(capsys, src, dst):
    (src / STREAMS_FILE).unlink()
    assert_fails(
        capsys,
        src,
        dst,
        src / STREAMS_FILE,
        f"missing (but {SETTINGS_FILE} is present)",
    )


def test_stream_tensor_wrong_shape(capsys, src, dst):
    f = src / STREAMS_FILE
    _rewrite_weights(f, lambda w: w.update(stream_embed=mx.zeros((3, 32))))
    assert_fails(
        capsys, src, dst, f, "tensor 'stream_embed' has shape (3, 32), expected (2, 32)"
    )


def test_stream_tensor_missing(capsys, src, dst):
    f = src / STREAMS_FILE
    _rewrite_weights(f, lambda w: w.pop("layers.1.mlp.down_proj.lora_b"))
    assert_fails(capsys, src, dst, f, "missing tensor 'layers.1.mlp.down_proj.lora_b'")


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"mode": "bogus"}, "mode must be"),
        ({"num_stream_layers": 5}, "exceeds the model's 2 layers"),
    ],
)
def test_bad_stream_settings(capsys, src, dst, change, problem):
    _edit_json(src / SETTINGS_FILE, **change)
    assert_fails(capsys, src, dst, src / SETTINGS_FILE, problem)


def test_bad_tokenizer_json_leaves_nothing(capsys, src, dst):
    """Fails while the output is being written: the temporary directory goes too."""
    (src / "tokenizer_config.json").write_text("{oops")
    assert_fails(capsys, src, dst, src / "tokenizer_config.json", "invalid JSON")


def test_failure_while_saving(capsys, src, dst, monkeypatch):
    import mlx_specstream.convert.convert as cc

    def broken_save(model, config, path):
        (Path(path) / "model.safetensors").write_bytes(b"partial")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(cc, "save_model", broken_save)
    code, line, _ = run(capsys, "--torch-path", src, "--mlx-path", dst)
    assert code == 1 and "No space left on device" in line
    assert list(dst.parent.iterdir()) == []


def test_existing_destination_untouched(capsys, src, dst):
    dst.mkdir(parents=True)
    (dst / "keep.txt").write_text("mine")
    code, line, _ = run(capsys, "--torch-path", src, "--mlx-path", dst)
    assert (
        code == 1
        and line == f"error: {dst}: already exists (use --force to replace it)"
    )
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]


def test_force_replaces_only_when_complete(capsys, src, dst):
    dst.mkdir(parents=True)
    (dst / "keep.txt").write_text("mine")
    (src / "model.safetensors").write_bytes(b"\0" * 4)
    code, _, _ = run(capsys, "--torch-path", src, "--mlx-path", dst, "--force")
    assert code == 1 and [p.name for p in dst.iterdir()] == ["keep.txt"]

    save_model(build_model(CONFIG, StreamArgs(num_stream_layers=1)), CONFIG, src)
    code, _, _ = run(capsys, "--torch-path", src, "--mlx-path", dst, "--force")
    assert code == 0 and (dst / "model.safetensors").exists()
    assert not (dst / "keep.txt").exists()
    assert [p.name for p in dst.parent.iterdir()] == ["model"]


def _lora(src: Path, adapter: Path, **config):
    adapter.mkdir()
    cfg = {
        "peft_type": "LORA",
        "r": 2,
        "lora_alpha": 4,
        "target_modules": ["q_proj"],
        **config,
    }
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    mx.save_safetensors(
        str(adapter / "adapter_model.safetensors"),
        {
            f"{prefix}.lora_A.weight": mx.ones((2, 32)),
            f"{prefix}.lora_B.weight": mx.ones((32, 2)),
        },
    )


@pytest.mark.parametrize(
    "config, problem",
    [
        ({"peft_type": "IA3"}, "unsupported adapter type 'IA3'"),
        ({"use_dora": True}, "unsupported adapter setting use_dora=True"),
        ({"r": 0}, "'r' must be a positive number"),
    ],
)
def test_unsupported_adapter(capsys, src, dst, tmp_path, config, problem):
    _lora(src, tmp_path / "adapter", **config)
    adapter_cfg = tmp_path / "adapter" / "adapter_config.json"
    assert_fails(
        capsys, src, dst, adapter_cfg, problem, "--adapter-path", tmp_path / "adapter"
    )


def test_adapter_wrong_shape(capsys, src, dst, tmp_path):
    _lora(src, tmp_path / "adapter")
    f = tmp_path / "adapter" / "adapter_model.safetensors"
    _rewrite_weights(
        f,
        lambda w: w.update(
            {
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": mx.ones(
                    (16, 2)
                )
            }
        ),
    )
    assert_fails(
        capsys,
        src,
        dst,
        f,
        "do not fit its weight (32, 32)",
        "--adapter-path",
        f.parent,
    )


def test_adapter_not_found(capsys, src, dst, tmp_path):
    missing = tmp_path / "no-adapter"
    assert_fails(
        capsys,
        src,
        dst,
        missing,
        "adapter directory not found",
        "--adapter-path",
        missing,
    )


@pytest.mark.torch
def test_malicious_pickle_refused(capsys, src, dst, tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    (src / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": Evil()}, src / "pytorch_model.bin")
    assert_fails(
        capsys,
        src,
        dst,
        src / "pytorch_model.bin",
        "refusing to load: the pickle needs code execution",
    )
    assert not marker.exists()


@pytest.mark.torch
def test_corrupt_bin(capsys, src, dst):
    pytest.importorskip("torch")
    (src / "model.safetensors").unlink()
    (src / "pytorch_model.bin").write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    assert_fails(
        capsys,
        src,
        dst,
        src / "pytorch_model.bin",
        "corrupt or unreadable PyTorch file",
    )
