# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Medusa-1 heads: lossless drafting, the oracle heads, file errors and training."""

import json
import re
from dataclasses import dataclass, field
from typing import List

import mlx.core as mx
import numpy as np
import pytest
from conftest import emitted, tiny_hf_tokenizer, tiny_model, wrap
from mlx.utils import tree_flatten

from mlx_specstream.decoding.drafters import StreamDrafter
from mlx_specstream.decoding.medusa import (
    MEDUSA_CONFIG,
    MEDUSA_WEIGHTS,
    MedusaDrafter,
    MedusaHeads,
    load_medusa,
)
from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.errors import ModelFileError
from mlx_specstream.generate import stream_generate
from mlx_specstream.models.cache import make_prompt_cache
from mlx_specstream.models.msa import Rows

PROMPT = [5, 17, 33, 2, 61, 8, 40]
TREES = [
    TreeShape(),
    TreeShape(budget=5),
    TreeShape("cartesian", (2, 2, 1, 1)),
    TreeShape("cartesian", (1, 1, 1)),
]


def run(model, drafter=None, max_tokens=40, **kw) -> tuple:
    tokenizer = wrap(tiny_hf_tokenizer(), eos_token_ids=[])  # no early stop
    rs = list(
        stream_generate(
            model, tokenizer, PROMPT, max_tokens=max_tokens, drafter=drafter, **kw
        )
    )
    return [t for r in rs for t in emitted(r)], rs


def random_heads(model, seed: int, scale: float = 0.3) -> MedusaHeads:
    mx.random.seed(seed)
    args = model.args
    heads = MedusaHeads(4, args.hidden_size, args.vocab_size)
    params = [
        (k, scale * mx.random.normal(v.shape))
        for k, v in tree_flatten(heads.parameters())
    ]
    heads.load_weights(params)
    return heads


def raw_hidden(model, tokens: List[int]) -> mx.array:
    """(T, h) last-layer hidden states of a plain causal pass (before the final norm)."""
    rows = Rows.causal(len(tokens), 0, model.streams)
    return model.run_layers(
        model.embed(mx.array(tokens)),
        rows,
        make_prompt_cache(model),
        0,
        len(model.layers),
    )[0]


def final_hidden(model, tokens: List[int]) -> mx.array:
    """(T, h) final normalised hidden states: what the heads see."""
    return model.model.norm(raw_hidden(model, tokens))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_heads_are_lossless(seed):
    overrides = [
        dict(),
        dict(tie_word_embeddings=True),
        dict(model_type="qwen2", num_key_value_heads=1),
    ]
    model = tiny_model(seed, **overrides[seed])
    plain, _ = run(model, speculative=False)
    for i, shape in enumerate(TREES):
        drafter = MedusaDrafter(random_heads(model, seed * 10 + i), shape)
        for stream_pass in ("tree", "accepted"):
            spec, rs = run(model, drafter, stream_pass=stream_pass)
            assert spec == plain, (shape, stream_pass)
            assert max(r.tree_size for r in rs[1:]) > 1  # the heads did draft


def test_sampled_decoding_runs_with_heads():
    model = tiny_model(3)
    mx.random.seed(0)
    out, _ = run(model, MedusaDrafter(random_heads(model, 3)), max_tokens=20, temp=1.0)
    assert len(out) == 20 and all(0 <= t < model.args.vocab_size for t in out)


@dataclass
class RecordingDrafter(MedusaDrafter):
    """Keeps every candidate set it computed, with the root drafted from it."""

    seen: list = field(default_factory=list)

    def draft(self, root, streams, history):
        self.seen.append((root, streams))
        return super().draft(root, streams, history)


@pytest.mark.parametrize("tied", [False, True])
def test_lm_head_heads_propose_the_main_argmax(tied):
    model = tiny_model(4, tie_word_embeddings=tied)
    # A non-uniform final norm: heads fed the un-normalised state would disagree.
    model.model.norm.weight = mx.random.uniform(0.2, 3.0, (model.args.hidden_size,))
    heads = MedusaHeads.from_model(model)
    lm = model.model.embed_tokens.weight if tied else model.lm_head.weight
    for head in heads.heads:
        assert (
            not mx.any(head.block.weight).item() and not mx.any(head.block.bias).item()
        )
        assert mx.array_equal(head.lm_head.weight, lm).item()
    # Direct: at every position each head's top-1 is the main model's argmax.
    h = final_hidden(model, PROMPT)
    main = np.array(mx.argmax(model.logits(raw_hidden(model, PROMPT)), axis=-1))
    drafter = RecordingDrafter(heads, TreeShape(budget=6))
    for t in range(len(PROMPT)):
        cand = drafter.candidates(h[t])
        assert cand.tokens.shape == (4, drafter.top_k)
        assert (cand.tokens[:, 0] == main[t]).all()
        assert np.all(np.diff(cand.logprobs, axis=1) <= 0) and np.all(
            cand.logprobs <= 0
        )
    # In decoding: the heads see the accepted node's state, whose argmax is the root.
    plain, _ = run(model, speculative=False)
    spec, _ = run(model, drafter)
    assert spec == plain and len(drafter.seen) > 3
    for root, streams in drafter.seen:
        assert (streams.tokens[:, 0] == root).all()


def test_drafter_builds_the_stream_drafter_tree():
    model = tiny_model(5)
    shape = TreeShape("cartesian", (3, 2, 1))
    drafter = MedusaDrafter(random_heads(model, 5), shape)
    cand = drafter.candidates(mx.random.normal((model.args.hidden_size,)))
    assert cand.tokens.shape == (4, 3)
    assert drafter.draft(7, cand, [1, 2]) == StreamDrafter(shape).draft(7, cand, [1, 2])
    assert drafter.draft(7, cand, []).size == shape.size


def test_save_load_round_trip(tmp_path):
    model = tiny_model(6)
    heads = random_heads(model, 6)
    heads.save(tmp_path)
    loaded = load_medusa(tmp_path)
    x = mx.random.normal((3, model.args.hidden_size))
    assert mx.allclose(heads(x), loaded(x)).item()
    assert heads(x).shape == (3, 4, model.args.vocab_size)
    h, V = model.args.hidden_size, model.args.vocab_size
    assert loaded.num_parameters() == 4 * (h * h + h + V * h)


def _corrupt(tmp_path, what):
    if what == "no_dir":
        return tmp_path / "missing", tmp_path / "missing", "not a directory"
    model = tiny_model(0)
    random_heads(model, 0).save(tmp_path)
    cfg, wts = tmp_path / MEDUSA_CONFIG, tmp_path / MEDUSA_WEIGHTS
    if what == "no_config":
        cfg.unlink()
        return tmp_path, cfg, "file not found"
    if what == "bad_json":
        cfg.write_text("{num_heads: 4")
        return tmp_path, cfg, "invalid JSON"
    if what == "bad_field":
        cfg.write_text(
            json.dumps({"num_heads": 0, "hidden_size": 64, "vocab_size": 96})
        )
        return tmp_path, cfg, "'num_heads' must be a positive integer"
    if what == "no_weights":
        wts.unlink()
        return tmp_path, wts, "file not found"
    if what == "garbage":
        wts.write_bytes(b"\x00garbage")
        return tmp_path, wts, "truncated or corrupt safetensors file"
    if what == "wrong_vocab":
        cfg.write_text(
            json.dumps({"num_heads": 4, "hidden_size": 64, "vocab_size": 100})
        )
        return (
            tmp_path,
            wts,
            "tensor 'heads.\\d.lm_head.weight' has shape \\(96, 64\\), expected \\(100, 64\\)",
        )
    if what == "more_heads":
        cfg.write_text(
            json.dumps({"num_heads": 5, "hidden_size": 64, "vocab_size": 96})
        )
        return tmp_path, wts, "missing tensor 'heads.4.block.bias'"
    raise AssertionError(what)


@pytest.mark.parametrize(
    "what",
    [
        "no_dir",
        "no_config",
        "bad_json",
        "bad_field",
        "no_weights",
        "garbage",
        "wrong_vocab",
        "more_heads",
    ],
)
def test_load_errors_name_file_and_problem(tmp_path, what):
    path, file, problem = _corrupt(tmp_path, what)
    with pytest.raises(
        ModelFileError, match=f"^{re.escape(str(file))}: {problem}"
    ) as e:
        load_medusa(path)
    assert "\n" not in str(e.value)
    if what in ("no_dir", "no_config", "no_weights"):
        assert isinstance(e.value, FileNotFoundError)


def test_drafter_rejects_empty_top_k():
    model = tiny_model(0)

    class NoCandidates(TreeShape):
        @property
        def top_k(self) -> int:
            return 0

    with pytest.raises(ValueError, match="top_k > 0"):
        MedusaDrafter(random_heads(model, 0), NoCandidates())


def _distilled_jsonl(path, n: int, seed: int, vocab: int = 96) -> None:
    """Distill-style records whose completions are learnable: steps of a fixed stride."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(n):
            prompt = rng.integers(3, vocab, 6).tolist()
            start = int(rng.integers(3, vocab))
            completion = [3 + (start - 3 + 5 * j) % (vocab - 3) for j in range(24)]
            text = lambda ids: " ".join(f"t{t}" for t in ids)  # noqa: E731
            messages = [
                {"role": "user", "content": text(prompt)},
                {"role": "assistant", "content": text(completion)},
            ]
            rec = dict(
                id=str(i),
                messages=messages,
                prompt_tokens=prompt,
                completion_tokens=completion,
                finish_reason="stop" if i % 2 else "length",
            )
            f.write(json.dumps(rec) + "\n")


@pytest.mark.torch
def test_train_medusa_lowers_loss_and_writes_loadable_heads(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from helpers_torch import tiny_hf_llama
    from mlx_specstream.train.examples import Example
    from mlx_specstream.train.medusa import (
        TorchMedusaHeads,
        cache_anchors,
        main,
        train_medusa,
    )

    from mlx_specstream.utils import load_model

    model_dir = tiny_hf_llama(tmp_path)
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    _distilled_jsonl(train, 64, 0)
    _distilled_jsonl(valid, 6, 1)
    out = tmp_path / "medusa"
    summary = train_medusa(
        str(model_dir),
        str(train),
        str(valid),
        str(out),
        steps=60,
        lr=1e-2,
        batch_size=8,
        seed=0,
        anchors=16,
        threads=1,
        progress=False,
    )
    init, final = summary["valid_init"], summary["valid"]
    mean_loss = lambda m: np.mean([m[f"loss{k}"] for k in range(1, 5)])  # noqa: E731
    assert mean_loss(final) < mean_loss(init) - 0.5
    assert final["acc1"] > init["acc1"] + 0.1
    assert summary["train_loss_last"][0] < summary["train_loss_first"][0]
    assert summary["num_parameters"] == 4 * (64 * 64 + 64 + 96 * 64)

    # The MLX heads on the MLX model equal the PyTorch heads on the HF model.
    heads = load_medusa(out)
    assert (
        out / MEDUSA_WEIGHTS
    ).stat().st_mode & 0o044  # readable like the model files
    model = load_model(model_dir)
    h = final_hidden(model, PROMPT)
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32
    ).eval()
    ref = TorchMedusaHeads(hf.get_output_embeddings().weight.detach(), 4)
    from safetensors.torch import load_file

    ref.load_state_dict(load_file(str(out / MEDUSA_WEIGHTS)))
    ex = Example(
        np.array(PROMPT + [3, 4]), np.array([False] * len(PROMPT) + [True, True])
    )
    with torch.no_grad():
        ids = torch.tensor([PROMPT])
        h_ref = hf.base_model(input_ids=ids, use_cache=False).last_hidden_state[0]
        z_ref = torch.stack([ref.head_logits(k, h_ref) for k in range(4)], 1)
    np.testing.assert_allclose(np.array(h), h_ref.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.array(heads(h)), z_ref.numpy(), atol=1e-3)
    assert cache_anchors(hf.base_model, ex, 4).targets.tolist()[-1] == [
        4,
        -100,
        -100,
        -100,
    ]

    # Trained heads still decode losslessly.
    plain, _ = run(model, speculative=False, max_tokens=20)
    spec, _ = run(model, MedusaDrafter(heads, TreeShape(budget=8)), max_tokens=20)
    assert spec == plain

    # The CLI refuses to overwrite, in one line.
    with pytest.raises(SystemExit):
        main(
            [
                "--model",
                str(model_dir),
                "--train",
                str(train),
                "--out",
                str(out),
                "--steps",
                "1",
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {out}: already exists (use --force to replace it)"
