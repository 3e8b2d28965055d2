# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Qwen2, Qwen3 and Phi-3 GGUF -> MLX: config, tensors, tokenizer, greedy output.

A tiny random Hugging Face model of each family is written here as llama.cpp's
``convert_hf_to_gguf.py`` writes one (Q/K not permuted outside llama, Qwen2's q/k/v
biases, Qwen3's ``attn_q_norm`` / ``attn_k_norm``, Phi-3's fused ``attn_qkv`` and
gate | up ``ffn_up``, its rotary dims in ``rope.dimension_count`` and its LongRoPE
factors as ``rope_factors_long`` / ``_short`` tensors; F32, F16 and Q8_0 tensors).
References: transformers' own GGUF loader where it reads the file to the same model,
else the source model carrying the same (dequantized) weights. transformers' phi3 GGUF
reading drops ``partial_rotary_factor`` and LongRoPE, so the Phi-4-mini-shaped model
is checked against its source and the Phi-3-mini-shaped one against both.
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

pytest.importorskip("gguf")  # helpers_gguf writes the files

from conftest import emitted
from helpers_gguf import (  # noqa: E402
    Q,
    byte_alphabet,
    encode,
    gguf_name,
    hparams,
    write_gguf_file,
)

from mlx_specstream.decoding.tree import TreeShape  # noqa: E402
from mlx_specstream.errors import ModelFileError  # noqa: E402
from mlx_specstream.loading.gguf import build_config, gguf_to_mlx  # noqa: E402
from mlx_specstream.utils import load  # noqa: E402

# --- vocabularies -------------------------------------------------------------------

# Qwen: byte-level BPE, pre-tokenizer "qwen2" (digits split one by one, so the "2 0"
# merge never applies, where GPT-2's split would use it).
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_USER = ["<think>"]
QWEN_MERGES = ["Ġ t", "h e", "Ġt he", "i s", "Ġ is", "2 0", "i n", "Ġ in", "o r"]
QWEN_TOKENS = (
    QWEN_SPECIALS
    + QWEN_USER
    + byte_alphabet()
    + [m.replace(" ", "") for m in QWEN_MERGES]
)
QWEN_TYPES = (
    [3] * len(QWEN_SPECIALS)
    + [4] * len(QWEN_USER)
    + [1] * (len(QWEN_TOKENS) - len(QWEN_SPECIALS) - len(QWEN_USER))
)

# Phi-3: SentencePiece BPE with scores and no merges; the scores (not the order in
# the file) rank the merges.
PHI_CONTROL = ["<unk>", "<s>", "</s>"]
PHI_BYTES = [f"<0x{b:02X}>" for b in range(256)]
PHI_PIECES = (
    "▁t he ▁the in ▁in is ▁is ▁a an ▁an nd ▁and or ld ▁w wor ▁wor ▁world th ▁th"
).split() + list("▁theisandorlwgx.,!")
PHI_ADDED = [("<|end|>", 3), ("<|user|>", 4), ("<|assistant|>", 4)]
PHI_TOKENS = PHI_CONTROL + PHI_BYTES + PHI_PIECES + [t for t, _ in PHI_ADDED]
PHI_TYPES = [2, 3, 3] + [6] * 256 + [1] * len(PHI_PIECES) + [k for _, k in PHI_ADDED]
_rng = np.random.default_rng(7)
PHI_SCORES = (
    [0.0] * (3 + 256)
    + list(-_rng.permutation(len(PHI_PIECES)).astype(float))
    + [0.0] * len(PHI_ADDED)
)

# --- families -----------------------------------------------------------------------

# name: (builder, overrides, GGUF architecture)
FAMILIES = {
    "qwen2": ("tiny_hf_qwen2", dict(vocab_size=len(QWEN_TOKENS)), "qwen2"),
    "qwen3": ("tiny_hf_qwen3", dict(vocab_size=len(QWEN_TOKENS)), "qwen3"),
    # Phi-4-mini's shape: tied, RoPE on 3/4 of each head, LongRoPE
    "phi3": ("tiny_hf_phi3", dict(vocab_size=len(PHI_TOKENS)), "phi3"),
    # Phi-3-mini-4k's shape: untied, full rotary, no rope scaling
    "phi3-mini": (
        "tiny_hf_phi3",
        dict(
            vocab_size=len(PHI_TOKENS),
            rope_scaling=None,
            partial_rotary_factor=1.0,
            tie_word_embeddings=False,
        ),
        "phi3",
    ),
    # Phi-3-mini-4k with a window of 8 (its real one is 2047): the test's prompts and
    # generations run past it
    "phi3-window": (
        "tiny_hf_phi3",
        dict(
            vocab_size=len(PHI_TOKENS),
            rope_scaling=None,
            partial_rotary_factor=1.0,
            tie_word_embeddings=False,
            sliding_window=8,
        ),
        "phi3",
    ),
}
# What transformers' GGUF loader reads to a different model: phi3 without partial
# rotary, LongRoPE and sliding window.
NOT_READ_BY_TRANSFORMERS = ("phi3", "phi3-window")
# A mixed file: Q8_0 projections and embedding, an F16 output projection, F32 the
# rest (norms, biases, an untied head).
QTYPES = {
    "self_attn.o_proj": Q.F16,
    "self_attn": Q.Q8_0,
    "mlp": Q.Q8_0,
    "embed_tokens": Q.Q8_0,
}


def _rope(config):
    """(rope_theta, rope scaling dict or None) from a transformers-5 config.json."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    kind = rope.get("rope_type") or rope.get("type") or "default"
    return theta, (rope if kind != "default" else None)


def _bos(arch, config) -> int:
    # The tiny models' BOS id 0 is "<unk>" in the SentencePiece vocabulary.
    return PHI_TOKENS.index("<s>") if arch == "phi3" else config["bos_token_id"]


def write_llamacpp_gguf(path: Path, hf_dir: Path, arch: str):
    """The GGUF llama.cpp's converter writes for ``hf_dir``; returns, per HF name, the
    float32 values it stores (dequantized)."""
    from safetensors.numpy import load_file

    c = json.loads((hf_dir / "config.json").read_text())
    weights = load_file(str(hf_dir / "model.safetensors"))
    theta, scaling = _rope(c)
    meta = hparams(c, rope_theta=theta)
    if c.get("head_dim") is not None:  # TextModel writes it where config has it
        meta.update(key_length=c["head_dim"], value_length=c["head_dim"])
    meta.update(bos_token_id=_bos(arch, c), eos_token_id=c["eos_token_id"])
    tensors = []
    if arch == "phi3":  # Phi3MiniModel.set_gguf_parameters / generate_extra_tensors
        n_embd, n_head = c["hidden_size"], c["num_attention_heads"]
        rope_dims = int(c.get("partial_rotary_factor", 1.0) * n_embd) // n_head
        meta.update(
            rope_dimension_count=rope_dims,
            rope_scaling_orig_ctx_len=c["original_max_position_embeddings"],
            sliding_window=c.get("sliding_window") or 0,
        )
        if scaling is not None:
            s = c["max_position_embeddings"] / c["original_max_position_embeddings"]
            orig = c["original_max_position_embeddings"]
            meta["rope_scaling_attn_factors"] = (
                np.sqrt(1 + np.log(s) / np.log(orig)) if s > 1 else 1.0
            )
            for key in ("long_factor", "short_factor"):
                name = f"rope_factors_{key.split('_')[0]}.weight"
                tensors.append(encode(name, np.array(scaling[key], np.float32))[0])
        meta.update(
            tokenizer_model="llama",
            tokenizer_pre="default",
            token_list=PHI_TOKENS,
            token_scores=PHI_SCORES,
            token_types=PHI_TYPES,
            unk_token_id=0,
            add_bos_token=True,
        )
    else:
        meta.update(
            tokenizer_model="gpt2",
            tokenizer_pre="qwen2",
            token_list=QWEN_TOKENS,
            token_types=QWEN_TYPES,
            token_merges=QWEN_MERGES,
            add_bos_token=False,
        )
    meta["pad_token_id"] = c["pad_token_id"]
    stored = {}
    for name, v in weights.items():
        if name == "lm_head.weight" and c["tie_word_embeddings"]:
            continue  # llama.cpp writes no output.weight for a tied head
        q = next((t for k, t in QTYPES.items() if k in name), Q.F32)
        tensor, stored[name] = encode(gguf_name(name), v, q)
        tensors.append(tensor)
    write_gguf_file(path, arch, meta, tensors)
    return stored


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(name, GGUF directory, source HF directory, stored tensors, our MLX directory)."""
    helpers = pytest.importorskip("helpers_torch")
    name = request.param
    builder, overrides, arch = FAMILIES[name]
    d = tmp_path_factory.mktemp(name)
    hf_dir = getattr(helpers, builder)(d, **overrides)
    helpers.write_random_streams(hf_dir)  # nonzero streams: speculation drafts
    stored = write_llamacpp_gguf(d / "m.gguf", hf_dir, arch)
    out = gguf_to_mlx(d / "m.gguf", d / "mlx", streams_dir=hf_dir)
    return name, d, hf_dir, stored, out


CONFIG_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "vocab_size",
    "tie_word_embeddings",
    "eos_token_id",
)


@pytest.mark.torch
def test_config_and_tensors(family):
    from mlx_specstream.convert.convert import convert

    name, d, hf_dir, stored, out = family
    src = json.loads((hf_dir / "config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    for k in CONFIG_KEYS:
        assert config[k] == src[k], k
    assert config["bos_token_id"] == _bos(FAMILIES[name][2], src)
    # GGUF stores floats as float32
    assert config["rms_norm_eps"] == pytest.approx(src["rms_norm_eps"], rel=1e-6)
    theta, scaling = _rope(src)
    assert config["rope_theta"] == theta
    hd = src.get("head_dim") or src["hidden_size"] // src["num_attention_heads"]
    assert config["head_dim"] == hd
    if src["model_type"] == "phi3":
        assert config["partial_rotary_factor"] == src["partial_rotary_factor"]
        assert config.get("sliding_window") == src["sliding_window"]
        want = src["original_max_position_embeddings"]
        assert config["original_max_position_embeddings"] == want
        if scaling is None:
            assert "rope_scaling" not in config
        else:  # what mlx-lm's phi3 reads
            assert config["rope_scaling"]["type"] == "longrope"
            for key in ("long_factor", "short_factor"):
                np.testing.assert_allclose(config["rope_scaling"][key], scaling[key])
    # The converter (``mlx-specstream convert``) reads the GGUF the same way.
    converted = convert(d / "m.gguf", d / "converted")
    assert json.loads((converted / "config.json").read_text()) == config
    for directory in (out, converted):
        got = mx.load(str(directory / "model.safetensors"))
        assert set(got) == set(stored), name  # no rope factors among the weights
        for k, v in stored.items():  # as stored: no Q/K unpermuting outside llama
            np.testing.assert_array_equal(np.array(got[k]), v, err_msg=k)


def _greedy_hf(model, ids, n):
    """Greedy tokens by a full forward per step (no cache involved)."""
    import torch

    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids) :]


def _ours(out, ids, n, **kwargs):
    """Our greedy tokens (``kwargs`` to ``stream_generate``), the tokenizer and model,
    how many of the tokens were accepted drafts, and whether the call speculated."""
    from mlx_specstream.generate import stream_generate

    model, tokenizer = load(out)
    tokens, drafted, speculated = [], 0, set()
    for r in stream_generate(model, tokenizer, ids, max_tokens=n, temp=0.0, **kwargs):
        tokens += emitted(r)
        drafted += r.from_draft
        speculated.add(r.speculative)
    assert len(speculated) == 1  # one answer for the whole call
    return tokens, tokenizer, model, drafted, speculated.pop()


@pytest.mark.torch
def test_greedy_matches_source_and_transformers_gguf(family):
    """Plain greedy == the source model carrying the stored weights; == transformers'
    own reading of the GGUF where it reads it to the same model; speculative ==
    plain, token for token."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    name, d, hf_dir, stored, out = family
    src = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    state = {k: torch.from_numpy(v) for k, v in stored.items()}
    missing, unexpected = src.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    if src.config.tie_word_embeddings:
        src.tie_weights()
    n = 16
    ids = [1] + [int(i) for i in np.random.default_rng(1).integers(5, 90, 11)]
    want = _greedy_hf(src, ids, n)
    plain, tokenizer, model, _, speculated = _ours(out, ids, n, speculative=False)
    assert not speculated
    k = len(plain)  # fewer than n only where greedy decoding reached EOS
    assert k > 0 and plain == want[:k], name
    assert k == n or want[k] in tokenizer.eos_token_ids
    # the logits too (fp32 rounding apart)
    with torch.no_grad():
        want_logits = src(torch.tensor([ids])).logits[0].numpy()
    got = np.array(model(mx.array([ids]))[0])
    np.testing.assert_allclose(got, want_logits, atol=1e-4, rtol=1e-4)
    # An explicit tree: without one (and no calibration) decoding would be plain.
    for tree, stream_pass in ((TreeShape(budget=8), "accepted"), (TreeShape(), "tree")):
        spec, _, _, _, speculated = _ours(
            out, ids, n, tree=tree, stream_pass=stream_pass
        )
        assert speculated, (name, tree)  # the streams were loaded and draft
        assert spec == plain, (name, tree, stream_pass)
    # Prompt lookup over a prompt that holds the continuation: drafts get accepted.
    lookup_ids = ids + plain + ids
    lookup_plain = _ours(out, lookup_ids, n, speculative=False)[0]
    lookup, _, _, drafted, speculated = _ours(out, lookup_ids, n, prompt_lookup=True)
    assert speculated and lookup == lookup_plain and drafted > 0, (name, drafted)
    if name in NOT_READ_BY_TRANSFORMERS:
        return
    # transformers' qwen3 GGUF mapping ignores attention.key_length (Qwen3Config's
    # default head_dim, 128, is every released Qwen3's): give it ours.
    extra = {"head_dim": src.config.head_dim} if name == "qwen3" else {}
    hf = AutoModelForCausalLM.from_pretrained(
        d, gguf_file="m.gguf", dtype=torch.float32, **extra
    ).eval()
    hf_state = hf.state_dict()
    for key, v in stored.items():  # transformers dequantizes to the same values
        np.testing.assert_array_equal(hf_state[key].numpy(), v, err_msg=key)
    assert _greedy_hf(hf, ids, n)[:k] == plain, name


@pytest.mark.torch
def test_tokenizer_matches_transformers_gguf_loader(family):
    from transformers import AutoTokenizer

    name, d, _, _, out = family
    hf = AutoTokenizer.from_pretrained(d, gguf_file="m.gguf")
    ours = AutoTokenizer.from_pretrained(out)
    rng = np.random.default_rng(0)
    if name.startswith("phi3"):
        alphabet = list("theisandorlwgx.,! é\n") + ["<|end|>", "<|user|>", "  "]
        texts = ["the world", "  the", "<|user|>and in<|end|>", "é x"]
    else:
        alphabet = list("theisnor0123 .,!é\n") + ["<|im_start|>", "<think>", "2024"]
        texts = ["the world is 2024", " in  or\n\n", "<|im_start|>the<|im_end|>"]
    texts += ["".join(rng.choice(alphabet, rng.integers(1, 30))) for _ in range(200)]
    for t in texts:
        for special in (True, False):
            assert ours.encode(t, add_special_tokens=special) == hf.encode(
                t, add_special_tokens=special
            ), (name, repr(t))
        ids = hf.encode(t)
        assert ours.decode(ids) == hf.decode(ids), (name, repr(t))
    if name.startswith("phi3"):
        assert ours.encode("the")[0] == PHI_TOKENS.index("<s>")  # BOS added
    else:  # single digits under the qwen2 split: the "2 0" merge never applies
        assert "20" not in ours.convert_ids_to_tokens(ours.encode("2024"))


# --- config edge cases (no torch) ---------------------------------------------------


def _phi_meta(**extra):
    meta = {
        "general.architecture": "phi3",
        "phi3.embedding_length": 3072,
        "phi3.attention.head_count": 32,
        "phi3.attention.head_count_kv": 32,
        "phi3.block_count": 32,
        "phi3.feed_forward_length": 8192,
        "phi3.context_length": 131072,
        "phi3.rope.scaling.original_context_length": 4096,
        "phi3.rope.dimension_count": 96,
        "phi3.attention.sliding_window": 262144,
    }
    meta.update(extra)
    return meta


def test_phi3_config_from_metadata():
    """Phi-3-mini-128k's metadata: full rotary, LongRoPE factors from the tensors,
    untied; Phi-4-mini's 0.75 rotary; errors name what is unsupported."""
    f = Path("x.gguf")
    factors = {
        "rope_factors_long.weight": np.linspace(1, 2, 48, dtype=np.float32),
        "rope_factors_short.weight": np.ones(48, np.float32),
    }
    names = ["output.weight", *factors]
    c = build_config(_phi_meta(), names, f, factors)
    assert c["model_type"] == "phi3" and c["head_dim"] == 96
    assert c["partial_rotary_factor"] == 1.0 and c["sliding_window"] == 262144
    assert c["original_max_position_embeddings"] == 4096
    assert c["tie_word_embeddings"] is False
    assert c["rope_scaling"]["type"] == "longrope"
    np.testing.assert_allclose(c["rope_scaling"]["long_factor"], np.linspace(1, 2, 48))
    c = build_config(
        _phi_meta(
            **{
                "phi3.rope.dimension_count": 72,
                "phi3.attention.sliding_window": 0,
                "phi3.context_length": 4096,
            }
        ),
        [],
        f,
    )
    assert c["partial_rotary_factor"] == 0.75 and c["sliding_window"] is None
    assert "rope_scaling" not in c and c["tie_word_embeddings"] is True
    with pytest.raises(ModelFileError, match="without its long/short partner"):
        build_config(_phi_meta(), [], f, {"rope_factors_long.weight": np.ones(48)})
    with pytest.raises(ModelFileError, match="rotary dims / 2 = 48"):
        build_config(
            _phi_meta(),
            [],
            f,
            {k: np.ones(40, np.float32) for k in factors},
        )
    yarn = 0.1 * np.log(131072 / 4096) + 1
    with pytest.raises(ModelFileError, match="YaRN rope scaling for phi3"):
        build_config(
            _phi_meta(**{"phi3.rope.scaling.attn_factor": yarn}), [], f, factors
        )


def test_qwen_config_from_metadata():
    meta = {
        "general.architecture": "qwen3",
        "qwen3.embedding_length": 1024,
        "qwen3.attention.head_count": 16,
        "qwen3.attention.head_count_kv": 8,
        "qwen3.attention.key_length": 128,
        "qwen3.block_count": 28,
        "qwen3.feed_forward_length": 3072,
        "qwen3.rope.freq_base": 1_000_000.0,
        "qwen3.context_length": 40960,
    }
    c = build_config(meta, [], Path("x.gguf"))
    assert (c["model_type"], c["head_dim"], c["rope_theta"]) == ("qwen3", 128, 1e6)
    assert c["tie_word_embeddings"] is True and c["attention_bias"] is False
    meta = {k.replace("qwen3", "qwen2"): v for k, v in meta.items()}
    meta["general.architecture"] = "qwen2"
    del meta["qwen2.attention.key_length"]
    c = build_config(meta, ["output.weight"], Path("x.gguf"))
    assert (c["model_type"], c["head_dim"]) == ("qwen2", 64)
    assert c["tie_word_embeddings"] is False
    with pytest.raises(ModelFileError, match="mixture-of-experts"):
        build_config(dict(meta, **{"qwen2.expert_count": 8}), [], Path("x.gguf"))
    with pytest.raises(
        ModelFileError, match=r"unsupported GGUF architecture 'qwen2moe'.*phi3"
    ):
        build_config(dict(meta, **{"general.architecture": "qwen2moe"}), [], Path("x"))
