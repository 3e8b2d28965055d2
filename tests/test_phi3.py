# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Phi-3 / Phi-4-mini beyond the family runner: mlx-lm's quantized directories, the
sliding window against transformers, fused PEFT adapters, training, bad input.

(The family runner in helpers_torch.HF_FAMILIES already runs the HF parity,
reference and conversion tests on a tiny Phi-4-mini-shaped model.)
"""

import importlib
import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import emitted
from mlx_specstream.convert.convert import main as convert_main

from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.errors import ModelFileError
from mlx_specstream.format import StreamArgs
from mlx_specstream.generate import stream_generate
from mlx_specstream.utils import build_model, load, load_model, save_model

PROMPT = [5, 17, 3, 40, 22, 9]
IDS = [5, 17, 3, 40, 22, 9, 61, 7, 30, 11, 2, 44]
# An MLX-side Phi-4-mini-shaped config (no torch needed).
CONFIG = dict(
    architectures=["Phi3ForCausalLM"],
    model_type="phi3",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    vocab_size=64,
    max_position_embeddings=128,
    original_max_position_embeddings=32,
    partial_rotary_factor=0.75,  # head_dim 8: 6 rotated dims, 3 factors
    tie_word_embeddings=True,
    rope_scaling={
        "type": "longrope",
        "short_factor": [1.0, 1.2, 1.4],
        "long_factor": [2.0, 3.0, 4.0],
    },
)


def _tokens(model, tokenizer, prompt, n, **kw):
    tokenizer.eos_token_ids = []  # full length on both sides
    rs = list(stream_generate(model, tokenizer, prompt, max_tokens=n, **kw))
    # Speculative where asked for (a tree on a model without streams would be plain).
    assert all(r.speculative is kw.get("speculative", True) for r in rs), kw
    return [t for r in rs for t in emitted(r)]


# ---- mlx-lm's directories and ours ------------------------------------------------


@pytest.fixture(scope="module")
def hf_phi(tmp_path_factory):
    """The family runner's tiny Phi-4-mini, its config.json written as the Hub's
    Phi-3 / Phi-4 configs are (transformers 4: ``rope_theta`` and ``rope_scaling``).

    mlx-lm 0.32's phi3 reads only those, not transformers 5's ``rope_parameters``
    (with that alone it runs plain RoPE); our loader and converter read both, and
    the directories we write carry ``rope_scaling``.
    """
    pytest.importorskip("transformers")
    from helpers_torch import tiny_hf_phi3

    path = tiny_hf_phi3(tmp_path_factory.mktemp("phi"))
    config = json.loads((path / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = {
        k: rope[k] for k in ("type", "short_factor", "long_factor")
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


@pytest.mark.torch
@pytest.mark.parametrize("bits", [4, 8])
def test_mlx_lm_quantized_dir_decodes_as_mlx_lm(hf_phi, tmp_path, bits):
    """``mlx_lm.convert -q`` of a Phi: our plain greedy equals mlx-lm's greedy on the
    same directory, speculative equals plain, and the logits agree."""
    import mlx_lm
    from mlx_lm.generate import generate_step

    mlx_lm_convert = importlib.import_module("mlx_lm.convert").convert
    out = tmp_path / f"q{bits}"
    mlx_lm_convert(str(hf_phi), str(out), quantize=True, q_bits=bits, q_group_size=32)
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == bits
    from helpers_torch import write_random_streams

    write_random_streams(out)  # nonzero streams: the trees below draft

    lm, _ = mlx_lm.load(str(out))
    want = [int(t) for t, _ in generate_step(mx.array(PROMPT), lm, max_tokens=20)]
    model, tokenizer = load(out)
    assert "scales" in model.layers[0].self_attn.qkv_proj
    np.testing.assert_allclose(
        np.array(model(mx.array([IDS]))),
        np.array(lm(mx.array([IDS]))),
        atol=1e-4,
        rtol=0,
    )
    plain = _tokens(model, tokenizer, PROMPT, 20, speculative=False)
    assert plain == want
    for tree in (TreeShape(budget=8), TreeShape("cartesian", (2, 2, 1))):
        assert _tokens(model, tokenizer, PROMPT, 20, tree=tree) == plain


@pytest.mark.torch
def test_our_quantized_dir_loads_in_mlx_lm(hf_phi, tmp_path):
    """Our 4-bit conversion (fused tensors as mlx-lm names them) is an mlx-lm phi3."""
    import mlx_lm
    from mlx_specstream.convert.convert import convert

    out = convert(hf_phi, tmp_path / "q4", quantize=True, q_bits=4, q_group_size=32)
    lm, _ = mlx_lm.load(str(out))
    ours = load_model(out)
    np.testing.assert_allclose(
        np.array(lm(mx.array([IDS]))),
        np.array(ours(mx.array([IDS]))),
        atol=1e-4,
        rtol=0,
    )


@pytest.mark.torch
def test_transformers5_config_converts_for_mlx_lm(tmp_path):
    """A config with transformers 5's ``rope_parameters`` only (``rope_type``, no
    ``type``) converts to a directory mlx-lm reads as LongRoPE: same logits."""
    pytest.importorskip("transformers")
    import mlx_lm
    from helpers_torch import PHI3_DEFAULTS, tiny_hf_phi3
    from mlx_specstream.convert.convert import convert

    rope = {k: v for k, v in PHI3_DEFAULTS["rope_scaling"].items() if k != "type"}
    path = tiny_hf_phi3(tmp_path, rope_scaling=dict(rope, rope_type="longrope"))
    written = json.loads((path / "config.json").read_text())
    assert "rope_scaling" not in written and "type" not in written["rope_parameters"]
    out = convert(path, tmp_path / "out")
    lm, _ = mlx_lm.load(str(out))
    assert type(lm.layers[0].self_attn.rope).__name__ == "SuScaledRoPE"
    np.testing.assert_allclose(
        np.array(lm(mx.array([IDS]))),
        np.array(load_model(out)(mx.array([IDS]))),
        atol=1e-4,
        rtol=0,
    )


# ---- Phi-3-mini: untied, whole-head RoPE, sliding window --------------------------


@pytest.mark.torch
def test_sliding_window_matches_transformers(tmp_path):
    """transformers applies Phi-3's sliding_window; so do we, in plain decoding, trees
    and stream rows: both equal its greedy output past the window, which differs from
    the unwindowed model's (the test has power)."""
    torch = pytest.importorskip("torch")
    from helpers_torch import tiny_hf_phi3, write_random_streams
    from transformers import AutoModelForCausalLM

    path = tiny_hf_phi3(
        tmp_path,
        rope_scaling=None,
        partial_rotary_factor=1.0,
        tie_word_embeddings=False,
        sliding_window=6,
    )
    write_random_streams(path, seed=2)  # the stream rows run windowed layers too
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor([PROMPT]),
            max_new_tokens=20,
            min_new_tokens=20,
            do_sample=False,
            pad_token_id=0,
        )[0, len(PROMPT) :].tolist()
    model, tokenizer = load(path)
    assert _tokens(model, tokenizer, PROMPT, 20, speculative=False) == ref
    for tree in (TreeShape(budget=8), TreeShape("cartesian", (2, 2, 1))):
        assert _tokens(model, tokenizer, PROMPT, 20, tree=tree) == ref
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(dict(config, sliding_window=None)))
    unwindowed, _ = load(path)
    assert _tokens(unwindowed, tokenizer, PROMPT, 20, speculative=False) != ref


@pytest.mark.torch
def test_reference_with_window_equals_mlx(tmp_path):
    """The PyTorch reference applies the window on main and stream rows: its main
    logits equal transformers', and the converted MLX model equals it (main, streams,
    early exit) on 12 tokens, twice the window."""
    torch = pytest.importorskip("torch")
    from helpers_torch import tiny_hf_phi3, write_random_streams
    from mlx_specstream.convert.convert import convert
    from mlx_specstream.train.reference import StreamingReference

    path = tiny_hf_phi3(tmp_path, sliding_window=6)
    write_random_streams(path, seed=3)
    ref = StreamingReference.from_pretrained(path).eval()
    ids = torch.tensor([IDS])
    with torch.no_grad():
        main, streams = ref(ids)
        early = ref.early_exit_logits(ids)
        np.testing.assert_allclose(
            main.numpy(), ref.hf(ids).logits.numpy(), atol=1e-5, rtol=0
        )
    model = load_model(convert(path, tmp_path / "out"))
    got_main, got_streams = model.all_stream_logits(mx.array([IDS]))
    for got, want in (
        (got_main, main),
        (got_streams, streams),
        (model.early_exit_logits(mx.array([IDS])), early),
    ):
        np.testing.assert_allclose(np.array(got), want[0].numpy(), atol=1e-4, rtol=0)
    unwindowed = StreamingReference(ref.hf, ref.args)
    unwindowed.load_streams(path)
    ref.hf.config.sliding_window = None
    with torch.no_grad():
        assert np.abs(unwindowed(ids)[1].numpy() - streams.numpy()).max() > 1e-2


# ---- converter: fused PEFT adapters ------------------------------------------------


@pytest.mark.torch
def test_peft_lora_on_fused_projections(hf_phi, tmp_path):
    """A PEFT LoRA on qkv_proj / gate_up_proj merges into the fused weights; logits
    equal PEFT's merge_and_unload."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from mlx_specstream.convert.convert import convert
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(hf_phi, dtype=torch.float32)
    cfg = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["qkv_proj", "gate_up_proj", "o_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(1)
    lora = peft.get_peft_model(base, cfg)
    lora.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        want = lora.merge_and_unload().eval()(torch.tensor([IDS])).logits[0].numpy()
        plain = AutoModelForCausalLM.from_pretrained(hf_phi, dtype=torch.float32)
        before = plain(torch.tensor([IDS])).logits[0].numpy()
    assert np.abs(want - before).max() > 0.05
    out = convert(hf_phi, tmp_path / "out", adapter_path=tmp_path / "adapter")
    got = np.array(load_model(out)(mx.array([IDS]))[0])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.torch
def test_bin_checkpoint(hf_phi, tmp_path):
    """pytorch_model.bin converts to the same model as safetensors."""
    torch = pytest.importorskip("torch")
    from mlx_specstream.convert.convert import convert
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_phi, dtype=torch.float32)
    other = tmp_path / "bin"
    other.mkdir()
    (other / "config.json").write_text((hf_phi / "config.json").read_text())
    torch.save(hf.state_dict(), other / "pytorch_model.bin")
    a = load_model(convert(hf_phi, tmp_path / "a"))(mx.array([IDS]))
    b = load_model(convert(other, tmp_path / "b"))(mx.array([IDS]))
    assert float(mx.abs(a - b).max()) <= 1e-6


# ---- training ----------------------------------------------------------------------


def _train(hf_phi, tmp_path, *extra):
    """A 2-step training run on the tiny Phi; returns (output dir, trained reference)."""
    from mlx_specstream.train.trainer import build_parser, train

    words = "the cat sat on a mat and then it ran to the tree".split()
    rng = np.random.default_rng(0)
    for name, n in (("train", 8), ("valid", 2)):
        recs = [
            {
                "prompt": " ".join(rng.choice(words, 4)),
                "completion": " ".join(rng.choice(words, 8)),
            }
            for _ in range(n)
        ]
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in recs)
        )
    out = tmp_path / "streams"
    argv = [
        "--model", str(hf_phi), "--train", str(tmp_path / "train.jsonl"),
        "--valid", str(tmp_path / "valid.jsonl"), "--out", str(out),
        "--num-streams", "3", "--num-stream-layers", "2", "--batch-size", "4",
        "--anchors", "4", "--insertion-rank", "4", "--prune-rank", "4",
        "--eval-every", "2", "--save-every", "2", "--threads", "1", "--steps", "2",
        *extra,
    ]  # fmt: skip
    _, trained = train(build_parser().parse_args(argv))
    return out, trained.eval()


def _assert_mlx_equals_reference(mlx_dir, ref):
    torch = pytest.importorskip("torch")
    model = load_model(mlx_dir)
    with torch.no_grad():
        main, streams = ref(torch.tensor([IDS]))
    got_main, got_streams = model.all_stream_logits(mx.array([IDS]))
    np.testing.assert_allclose(np.array(got_main), main[0].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        np.array(got_streams), streams[0].numpy(), atol=1e-4, rtol=0
    )


@pytest.mark.torch
def test_train_lossless(hf_phi, tmp_path):
    """A tiny lossless run on a Phi: the stream adapters on parts of the fused
    projections learn, and the streams convert to an MLX model equal to the
    reference."""
    from mlx_specstream.convert.convert import convert

    out, trained = _train(hf_phi, tmp_path, "--stream-adapter-rank", "2")
    sd = trained.streams_state_dict()
    # b starts at zero: these learned, through their slices of the fused projections
    assert sd["layers.2.self_attn.k_proj.lora_b"].abs().sum() > 0
    assert sd["layers.2.mlp.up_proj.lora_b"].abs().sum() > 0
    _assert_mlx_equals_reference(
        convert(hf_phi, tmp_path / "mlx", streams_path=out), trained
    )


@pytest.mark.torch
def test_train_shared(hf_phi, tmp_path):
    """Shared mode puts its LoRA on the fused qkv_proj / gate_up_proj (as well as
    o_proj / down_proj); the adapter merges on conversion to the trained model."""
    pytest.importorskip("peft")
    from mlx_specstream.convert.convert import convert

    extra = ("--mode", "shared", "--lora-rank", "4", "--lr", "1e-2")
    out, trained = _train(hf_phi, tmp_path, *extra)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {
        "qkv_proj",
        "o_proj",
        "gate_up_proj",
        "down_proj",
    }
    mlx_dir = convert(
        hf_phi, tmp_path / "mlx", streams_path=out, adapter_path=out / "adapter"
    )
    _assert_mlx_equals_reference(mlx_dir, trained)


# ---- bad input ---------------------------------------------------------------------


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "src"
    args = StreamArgs(num_streams=2, num_stream_layers=1, stream_adapter_rank=2)
    save_model(build_model(CONFIG, args), CONFIG, path)
    (path / "model.safetensors.index.json").unlink()
    (path / "tokenizer_config.json").write_text("{}")
    return path


def _convert_error(capsys, src, dst) -> str:
    with pytest.raises(SystemExit):
        convert_main(["--torch-path", str(src), "--mlx-path", str(dst)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not dst.exists()
    assert not dst.parent.exists() or not any(dst.parent.iterdir())
    return lines[0]


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **changes}))


def test_valid_source_converts_and_loads(src, tmp_path):
    convert_main(["--torch-path", str(src), "--mlx-path", str(tmp_path / "out")])
    model = load_model(tmp_path / "out")
    assert model.args.rope_dims == 6 and model.args.tie_word_embeddings


@pytest.mark.parametrize(
    "changes, problem",
    [
        # the fused qkv_proj has (4 + 2 * 2) * 8 rows; 4 kv heads would need 96
        (dict(num_key_value_heads=4), "qkv_proj.weight' has shape (64, 32)"),
        (
            dict(rope_scaling={**CONFIG["rope_scaling"], "long_factor": [1.0, 2.0]}),
            "long_factor must be a list of rotary dims / 2 = 3 numbers, got 2",
        ),
        (
            dict(partial_rotary_factor=0.5),  # 4 rotated dims: 2 factors, not 3
            "short_factor must be a list of rotary dims / 2 = 2 numbers, got 3",
        ),
        (
            dict(rope_scaling={"type": "dynamic", "factor": 2.0}),
            "unsupported rope_scaling type 'dynamic'",
        ),
        (dict(sliding_window=0), "sliding_window must be >= 1"),
    ],
)
def test_bad_input(capsys, src, tmp_path, changes, problem):
    """One line naming the file (weights or config.json), nothing written; loading
    the same directory fails the same way."""
    _edit_config(src, **changes)
    line = _convert_error(capsys, src, tmp_path / "out" / "model")
    file = "model.safetensors" if "shape" in problem else "config.json"
    assert line.startswith(f"error: {src / file}: "), line
    assert problem in line, line
    with pytest.raises(ModelFileError, match=file) as e:
        load_model(src)
    assert problem in str(e.value)


def test_fused_weight_of_wrong_size(capsys, src, tmp_path):
    """A gate_up_proj with rows for a different intermediate_size (gate | up split
    needs 2 x 64): named with the shape config.json implies."""
    file = src / "model.safetensors"
    weights = dict(mx.load(str(file)))
    name = "model.layers.1.mlp.gate_up_proj.weight"
    weights[name] = weights[name][:96]
    mx.save_safetensors(str(file), weights)
    line = _convert_error(capsys, src, tmp_path / "out" / "model")
    assert line == (
        f"error: {file}: tensor {name!r} has shape (96, 32), "
        "config.json implies (128, 32)"
    )
    with pytest.raises(ModelFileError, match="has shape \\(96, 32\\), expected"):
        load_model(src)
