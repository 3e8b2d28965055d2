# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""PyTorch checkpoint -> MLX: logits parity with the PyTorch reference and transformers."""

import json
import shutil

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import emitted
from helpers_torch import (  # noqa: E402
    HF_FAMILIES,
    tiny_hf_llama,
    tiny_hf_qwen2,
    write_random_streams,
)
from mlx_specstream.convert.convert import convert  # noqa: E402

from mlx_specstream.decoding.tree import TreeShape  # noqa: E402
from mlx_specstream.format import SETTINGS_FILE, STREAMS_FILE, StreamArgs  # noqa: E402
from mlx_specstream.loading.model_io import normalise_config  # noqa: E402
from mlx_specstream.utils import load, load_model  # noqa: E402

pytestmark = pytest.mark.torch

IDS = [5, 17, 3, 40, 22, 9, 61, 7, 30, 11, 2, 44]
BUILDERS = HF_FAMILIES
# Max |Δlogit| / max |fp32 logit|, measured on these tiny models (llama / qwen2):
# float16 1.7e-3 / 1.3e-3, bfloat16 1.8e-2 / 1.5e-2, 8-bit 2.3e-2 / 1.3e-2.
# Tolerances are about 3x the worst measurement.
REL_TOL = {"float16": 6e-3, "bfloat16": 6e-2, "q8": 7e-2}


@pytest.fixture(scope="module", params=list(BUILDERS))
def hf_dir(request, tmp_path_factory):
    """A tiny HF model with random nonzero stream tensors of every kind."""
    path = BUILDERS[request.param](tmp_path_factory.mktemp(request.param))
    write_random_streams(path, seed=1)
    return path


@pytest.fixture(scope="module")
def reference(hf_dir):
    ref_mod = pytest.importorskip("mlx_specstream.train.reference")
    ref = ref_mod.StreamingReference.from_pretrained(hf_dir).eval()
    ids = torch.tensor([IDS])
    with torch.no_grad():
        main, streams = ref(ids)
        early = ref.early_exit_logits(ids)
    return main[0].numpy(), streams[0].numpy(), early[0].numpy()


@pytest.fixture(scope="module")
def mlx_fp32(hf_dir, tmp_path_factory):
    return convert(hf_dir, tmp_path_factory.mktemp("out") / "fp32")


def _logits(path):
    model = load_model(path)
    main, streams = model.all_stream_logits(mx.array([IDS]))
    early = model.early_exit_logits(mx.array([IDS]))
    return np.array(main), np.array(streams), np.array(early)


def test_fp32_matches_reference(mlx_fp32, reference):
    for got, want in zip(_logits(mlx_fp32), reference):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_streams_are_not_trivial(reference):
    main, streams, early = reference
    # Streams and the early exit must differ from the main logits, or parity
    # above would not show that stream tensors were converted.
    assert np.abs(streams[:, 0] - main).max() > 0.1
    assert np.abs(early - main).max() > 0.1


def test_output_files(mlx_fp32, hf_dir):
    names = {p.name for p in mlx_fp32.iterdir()}
    for f in (
        "config.json",
        "model.safetensors",
        SETTINGS_FILE,
        STREAMS_FILE,
        "tokenizer.json",
    ):
        assert f in names
    assert [p.name for p in mlx_fp32.parent.iterdir()] == ["fp32"]  # no temp dirs left
    got, src = mx.load(str(mlx_fp32 / STREAMS_FILE)), mx.load(
        str(hf_dir / STREAMS_FILE)
    )
    assert set(got) == set(src)
    for k, v in got.items():
        assert v.dtype == mx.float32
        np.testing.assert_array_equal(np.array(v), np.array(src[k]))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision(hf_dir, mlx_fp32, tmp_path, dtype):
    out = convert(hf_dir, tmp_path / dtype, dtype=dtype)
    weights = mx.load(str(out / "model.safetensors"))
    assert all(v.dtype == getattr(mx, dtype) for v in weights.values())
    assert all(v.dtype == mx.float32 for v in mx.load(str(out / STREAMS_FILE)).values())
    for got, want in zip(_logits(out), _logits(mlx_fp32)):
        assert np.abs(got - want).max() / np.abs(want).max() < REL_TOL[dtype]


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized(hf_dir, mlx_fp32, tmp_path, bits):
    out = convert(
        hf_dir, tmp_path / f"q{bits}", quantize=True, q_bits=bits, q_group_size=32
    )
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["bits"] == bits
    model = load_model(out)
    assert isinstance(model.layers[0].self_attn.o_proj, nn.QuantizedLinear)
    assert all(v.dtype == mx.float32 for v in mx.load(str(out / STREAMS_FILE)).values())
    # Exactly the model whose weights are the dequantized ones: nothing else changed.
    deq = load_model(mlx_fp32)
    q = dict(mx.load(str(out / "model.safetensors")))
    for name in [k[: -len(".scales")] for k in q if k.endswith(".scales")]:
        w = mx.dequantize(
            q[f"{name}.weight"], q[f"{name}.scales"], q[f"{name}.biases"], 32, bits
        )
        deq.load_weights([(f"{name}.weight", w)], strict=False)
    main, streams = model.all_stream_logits(mx.array([IDS]))
    want_main, want_streams = deq.all_stream_logits(mx.array([IDS]))
    np.testing.assert_allclose(np.array(main), np.array(want_main), atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        np.array(streams), np.array(want_streams), atol=1e-4, rtol=0
    )
    if bits == 8:
        got, want = _logits(out)[0], _logits(mlx_fp32)[0]
        assert np.abs(got - want).max() / np.abs(want).max() < REL_TOL["q8"]


@pytest.mark.parametrize("bits", [4, 8])
def test_mlx_lm_quantized_directory_decodes_losslessly(hf_dir, tmp_path, bits):
    """``mlx_lm.convert -q`` of every family (bf16 scales, as users get them): ours
    loads it (widened to float32 on the CPU, precision.py), speculative greedy equals
    plain greedy, and plain equals mlx-lm's greedy on the same model widened alike."""
    import importlib

    import mlx_lm

    from mlx_specstream.generate import stream_generate
    from mlx_specstream.loading.precision import set_compute_dtype

    mlx_lm_convert = importlib.import_module("mlx_lm.convert").convert
    # mlx-lm 0.32 does not read transformers-5 ``rope_parameters`` (it would take
    # its own default rope_theta): give it the fields Hub checkpoints carry.
    src = tmp_path / "hub"
    shutil.copytree(hf_dir, src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(normalise_config(config)))
    out = tmp_path / f"mlx_lm_q{bits}"
    mlx_lm_convert(
        str(src),
        str(out),
        quantize=True,
        q_bits=bits,
        q_group_size=32,
        dtype="bfloat16",
    )
    for name in (STREAMS_FILE, SETTINGS_FILE):  # mlx_lm.convert drops our files
        (out / name).write_bytes((hf_dir / name).read_bytes())
    model, tokenizer = load(out)
    tokenizer.eos_token_ids = []
    theirs, _ = mlx_lm.load(str(out))
    set_compute_dtype(theirs)
    for prompt in (IDS, IDS[:5]):
        plain = [
            t
            for r in stream_generate(
                model, tokenizer, prompt, max_tokens=20, speculative=False
            )
            for t in emitted(r)
        ]
        spec = [
            t
            for r in stream_generate(
                model,
                tokenizer,
                prompt,
                max_tokens=20,
                tree=TreeShape(budget=8),
                prompt_lookup=True,
            )
            for t in emitted(r)
        ]
        assert spec == plain
        ref = [
            r.token
            for r in mlx_lm.stream_generate(theirs, tokenizer, prompt, max_tokens=20)
        ]
        assert plain == ref


def _greedy_hf(path, prompt, n):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n)
    tokens = out[0, len(prompt) :].tolist()
    eos = hf.generation_config.eos_token_id
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


@pytest.mark.parametrize("speculative", [False, True])
def test_greedy_matches_transformers(hf_dir, mlx_fp32, speculative):
    from mlx_specstream.generate import stream_generate

    model, tokenizer = load(mlx_fp32)
    for prompt in ([5, 17, 3], IDS):
        want = _greedy_hf(hf_dir, prompt, 20)
        assert len(want) >= 10  # not cut short by EOS, or the test shows little
        got = []
        for r in stream_generate(
            model,
            tokenizer,
            prompt,
            max_tokens=20,
            temp=0.0,
            speculative=speculative,
            tree=TreeShape(budget=8),
        ):
            got += emitted(r)
        assert got == want


def test_mlx_lm_loads_the_output(mlx_fp32):
    """mlx-lm ignores the stream files and reads the base model."""
    import mlx_lm

    lm, _ = mlx_lm.load(str(mlx_fp32))
    ours = load_model(mlx_fp32)
    want = np.array(ours(mx.array([IDS])))
    np.testing.assert_allclose(np.array(lm(mx.array([IDS]))), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["sharded", "bin", "bfloat16"])
def test_checkpoint_variants(tmp_path, variant):
    """Sharded safetensors, pytorch_model.bin and bf16 weights give the same model."""
    from transformers import AutoModelForCausalLM

    src = tiny_hf_llama(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    other = tmp_path / variant
    if variant == "sharded":
        hf.save_pretrained(other, max_shard_size="40KB")
        assert (other / "model.safetensors.index.json").exists()
    elif variant == "bin":
        other.mkdir()
        (other / "config.json").write_text((src / "config.json").read_text())
        torch.save(hf.state_dict(), other / "pytorch_model.bin")
    else:
        hf.to(torch.bfloat16).save_pretrained(other)
    a = load_model(convert(src, tmp_path / "a"))(mx.array([IDS]))
    b = load_model(convert(other, tmp_path / "b"))(mx.array([IDS]))
    tol = 0.05 * float(mx.abs(a).max()) if variant == "bfloat16" else 1e-6
    assert float(mx.abs(a - b).max()) <= tol


def test_no_stream_files(tmp_path, capfd):
    """A base model converts with zero streams, Ns clipped to its layer count."""
    src = tiny_hf_qwen2(tmp_path, num_hidden_layers=2)
    out = convert(src, tmp_path / "out")
    assert "zero (untrained) streams" in capfd.readouterr().err
    args = StreamArgs.from_dict(json.loads((out / SETTINGS_FILE).read_text()))
    assert args.num_stream_layers == 2 and args.num_streams == StreamArgs().num_streams
    streams = mx.load(str(out / STREAMS_FILE))
    assert all(float(mx.abs(v).max()) == 0.0 for v in streams.values())


def test_streams_path(tmp_path):
    """Stream files may live in their own directory (the output of training)."""
    src = tiny_hf_llama(tmp_path)
    streams_dir = tmp_path / "streams"
    streams_dir.mkdir()
    (streams_dir / "config.json").write_text((src / "config.json").read_text())
    tensors = write_random_streams(streams_dir, seed=3)
    out = convert(src, tmp_path / "out", streams_path=streams_dir)
    got = mx.load(str(out / STREAMS_FILE))
    np.testing.assert_array_equal(
        np.array(got["stream_embed"]), tensors["stream_embed"]
    )


@pytest.mark.parametrize("quantize", [False, True])
def test_streams_with_a_draft_vocabulary_convert(tmp_path, quantize):
    """Streams that carry a draft vocabulary (as the shipped ones do) convert with
    it, to every dtype; a bad one is a clear error naming the stream file."""
    src = tiny_hf_llama(tmp_path)
    write_random_streams(src, seed=3)
    file = src / STREAMS_FILE
    tensors = dict(mx.load(str(file)))
    ids = np.array([7, 3, 50, 11, 0, 95], np.int32)
    tensors["draft_vocab"] = mx.array(ids)
    mx.save_safetensors(str(file), tensors)
    out = convert(src, tmp_path / "out", quantize=quantize, q_bits=8, q_group_size=32)
    np.testing.assert_array_equal(
        np.array(mx.load(str(out / STREAMS_FILE))["draft_vocab"]), ids
    )
    model = load_model(out)
    np.testing.assert_array_equal(model.draft_vocab, ids)
    h = mx.random.normal((2, model.args.hidden_size))
    np.testing.assert_allclose(
        np.array(model.stream_logits(h)), np.array(model.logits(h))[:, ids], atol=1e-4
    )
    tensors["draft_vocab"] = mx.array([7, 7], mx.int32)
    mx.save_safetensors(str(file), tensors)
    with pytest.raises(Exception, match="draft_vocab ids are not unique") as e:
        convert(src, tmp_path / "bad")
    assert STREAMS_FILE in str(e.value) and not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"use_rslora": True},
        {"rank_pattern": {"down_proj": 2}, "alpha_pattern": {"v_proj": 16}},
    ],
)
def test_peft_lora_merge(tmp_path, options):
    """--adapter-path merges a PEFT LoRA; logits equal PEFT's merge_and_unload."""
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    src = tiny_hf_llama(tmp_path)
    base = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    cfg = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
        init_lora_weights=False,  # random B too, so the merge changes the model
        task_type="CAUSAL_LM",
        **options,
    )
    torch.manual_seed(1)
    lora = peft.get_peft_model(base, cfg)
    lora.save_pretrained(tmp_path / "adapter")
    merged = lora.merge_and_unload().eval()
    with torch.no_grad():
        want = merged(torch.tensor([IDS])).logits[0].numpy()
        plain = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
        before = plain(torch.tensor([IDS])).logits[0].numpy()
    assert np.abs(want - before).max() > 0.05

    out = convert(src, tmp_path / "out", adapter_path=tmp_path / "adapter")
    got = np.array(load_model(out)(mx.array([IDS]))[0])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
