# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Gemma 3 beyond the family runner: the window's power in HF parity, the multimodal
checkpoint's text part, .bin / PEFT conversion, mlx_lm.convert's quantized output,
transformers-5 configs, and bad configs."""

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest
from conftest import emitted

from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.errors import ModelFileError
from mlx_specstream.loading.model_io import load_model, normalise_config
from mlx_specstream.utils import load

PROMPT = [5, 9, 14, 20, 31, 7, 40, 22, 13, 3, 18]  # longer than the window (8)


def _greedy(model, tokenizer, prompt, n, **kw):
    from mlx_specstream.generate import stream_generate

    tokenizer.eos_token_ids = []
    rs = list(stream_generate(model, tokenizer, prompt, max_tokens=n, **kw))
    # Speculative where asked for (a tree on a model without streams would be plain).
    assert all(r.speculative is kw.get("speculative", True) for r in rs), kw
    return [t for r in rs for t in emitted(r)]


def test_transformers_5_config_folds_for_mlx_lm():
    """rope_parameters keyed by layer type and layer_types (transformers 5) become
    the fields mlx-lm reads; a multimodal config becomes its text model's."""
    text = {
        "model_type": "gemma3_text",
        "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
        "rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
    }
    got = normalise_config(text)
    assert got["rope_theta"] == 1e6 and got["rope_local_base_freq"] == 1e4
    assert got["rope_scaling"]["factor"] == 8.0 and got["sliding_window_pattern"] == 6
    odd = dict(text, layer_types=["full_attention", "sliding_attention"] * 3)
    assert "sliding_window_pattern" not in normalise_config(odd)  # not periodic
    mm = {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": text,
        "vision_config": {"hidden_size": 16},
        "eos_token_id": [1, 106],
        "quantization": {"bits": 4, "group_size": 64},
    }
    got = normalise_config(mm)
    assert got["model_type"] == "gemma3_text" and "vision_config" not in got
    assert got["architectures"] == ["Gemma3ForCausalLM"]
    assert got["eos_token_id"] == [1, 106] and got["quantization"]["bits"] == 4


def test_sparse_hub_multimodal_config_takes_gemma_defaults():
    """Hub configs of the multimodal models give text_config only a few fields; the
    rest are transformers' Gemma3TextConfig defaults (as mlx-lm assumes too)."""
    from mlx_specstream.models.families import build_model

    config = {
        "model_type": "gemma3",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 6,
            "sliding_window": 8,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        },
        "vision_config": {},
    }
    model = build_model(normalise_config(config))
    a = model.args
    assert (a.num_attention_heads, a.num_key_value_heads, a.head_dim) == (8, 4, 256)
    assert a.vocab_size == 262_208 and a.rms_norm_eps == 1e-6
    attn = [layer.self_attn for layer in model.layers]
    assert [x.window for x in attn] == [8] * 5 + [None]
    assert attn[0].rope.scale == 1.0 and attn[0].rope.base == 10_000.0
    assert attn[5].rope.scale == 1 / 8 and attn[5].rope.base == 1_000_000.0
    assert attn[0].scale == 256**-0.5


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers_torch import (  # noqa: E402
    tiny_hf_gemma3,
    tiny_hf_gemma3_multimodal,
    write_random_streams,
)
from mlx_specstream.convert.convert import convert  # noqa: E402
from mlx_specstream.convert.errors import ConvertError  # noqa: E402

from mlx_specstream.format import SETTINGS_FILE, STREAMS_FILE  # noqa: E402


def _streams_beside(out):
    """Random nonzero streams beside the directory ``out``, shaped for its text
    model (a multimodal config's ``text_config``), so that trees draft."""
    config = json.loads((out / "config.json").read_text())
    shape = out.parent / f"{out.name}-streams"
    shape.mkdir()
    (shape / "config.json").write_text(
        json.dumps({**config, **config.get("text_config", {})})
    )
    write_random_streams(shape)
    for name in (STREAMS_FILE, SETTINGS_FILE):
        shutil.copyfile(shape / name, out / name)


def _hf_greedy(path, prompt, n, cls=None):
    from transformers import AutoModelForCausalLM

    hf = (cls or AutoModelForCausalLM).from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        out = hf.eval().generate(
            torch.tensor([prompt]),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


@pytest.mark.torch
def test_hf_parity_needs_the_window(tmp_path):
    """Greedy parity with transformers holds with the window, and fails without it
    (so the family runner's parity test has power)."""
    path = tiny_hf_gemma3(tmp_path)
    write_random_streams(path)  # nonzero streams: the tree drafts
    want = _hf_greedy(path, PROMPT, 24)
    model, tokenizer = load(path)
    assert _greedy(model, tokenizer, PROMPT, 24, speculative=False) == want
    assert _greedy(model, tokenizer, PROMPT, 24, tree=TreeShape(budget=8)) == want
    for layer in model.layers:
        layer.self_attn.window = None
    assert _greedy(model, tokenizer, PROMPT, 24, speculative=False) != want


@pytest.mark.torch
def test_multimodal_checkpoint_converts_to_its_text_model(tmp_path):
    """A Gemma3ForConditionalGeneration directory converts to a gemma3_text MLX
    directory (vision tower and projector dropped) that decodes as transformers does
    on text, loads in mlx-lm, and reads the same from the original directory."""
    import mlx_lm
    from transformers import Gemma3ForConditionalGeneration

    src = tiny_hf_gemma3_multimodal(tmp_path)
    want = _hf_greedy(src, PROMPT, 20, Gemma3ForConditionalGeneration)
    out = convert(src, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "vision_config" not in config
    names = set(mx.load(str(out / "model.safetensors")))
    assert not any("vision" in k or "projector" in k for k in names)
    _streams_beside(out)
    model, tokenizer = load(out)
    assert _greedy(model, tokenizer, PROMPT, 20, speculative=False) == want
    assert _greedy(model, tokenizer, PROMPT, 20, tree=TreeShape(budget=8)) == want
    lm, _ = mlx_lm.load(str(out))
    ids = mx.array([PROMPT])
    np.testing.assert_allclose(np.array(lm(ids)), np.array(model(ids)), atol=1e-5)
    direct, _ = load(src)  # the HF directory itself
    np.testing.assert_allclose(np.array(direct(ids)), np.array(model(ids)), atol=1e-6)


@pytest.mark.torch
def test_bin_checkpoint_and_peft_adapter(tmp_path):
    """pytorch_model.bin converts to the same model; a PEFT LoRA merges as PEFT's
    merge_and_unload does (on the text model of a multimodal checkpoint too, whose
    vision modules the adapter may also target)."""
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM, Gemma3ForConditionalGeneration

    ids = mx.array([PROMPT])
    src = tiny_hf_gemma3(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    other = tmp_path / "bin"
    other.mkdir()
    shutil.copy(src / "config.json", other / "config.json")
    torch.save(hf.state_dict(), other / "pytorch_model.bin")
    a = load_model(convert(src, tmp_path / "a"))(ids)
    b = load_model(convert(other, tmp_path / "b"))(ids)
    assert float(mx.abs(a - b).max()) <= 1e-6

    for make, cls in (
        (tiny_hf_gemma3, AutoModelForCausalLM),
        (tiny_hf_gemma3_multimodal, Gemma3ForConditionalGeneration),
    ):
        src = make(tmp_path / "peft")
        base = cls.from_pretrained(src, dtype=torch.float32)
        cfg = peft.LoraConfig(
            r=4,
            lora_alpha=8,
            # also SigLIP's q_proj / v_proj: skipped with the vision tower
            target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
            init_lora_weights=False,
        )
        torch.manual_seed(1)
        lora = peft.get_peft_model(base, cfg)
        lora.save_pretrained(tmp_path / "adapter" / src.name)
        merged = lora.merge_and_unload().eval()
        with torch.no_grad():
            want = merged(torch.tensor([PROMPT])).logits[0].numpy()
        out = convert(
            src,
            tmp_path / f"merged_{src.name}",
            adapter_path=tmp_path / "adapter" / src.name,
        )
        got = np.array(load_model(out)(ids)[0])
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.torch
@pytest.mark.parametrize("bits, multimodal", [(4, False), (8, False), (8, True)])
def test_mlx_lm_quantized_directory(tmp_path, bits, multimodal):
    """mlx_lm.convert -q of the tiny Gemma (text, or multimodal: mlx-lm keeps its
    language_model.* names) loads with ours: plain greedy equals mlx-lm's own greedy
    on the same directory, and speculative equals plain."""
    import mlx_lm
    from mlx_lm.convert import convert as mlx_lm_convert
    from mlx_lm.sample_utils import make_sampler

    if multimodal:
        src = tiny_hf_gemma3_multimodal(tmp_path)
        # mlx-lm's gemma3 takes the vocabulary size from the top level
        _edit_config(src, vocab_size=96)
    else:
        src = tiny_hf_gemma3(tmp_path)
    out = tmp_path / f"q{bits}"
    mlx_lm_convert(str(src), str(out), quantize=True, q_bits=bits, q_group_size=32)
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == bits
    _streams_beside(out)  # mlx_lm.convert writes none
    lm, lm_tok = mlx_lm.load(str(out))
    want = [
        r.token
        for r in mlx_lm.stream_generate(
            lm, lm_tok, PROMPT, max_tokens=24, sampler=make_sampler(0.0)
        )
    ]
    model, tokenizer = load(out)
    assert type(model.layers[0].self_attn.q_proj).__name__ == "QuantizedLinear"
    plain = _greedy(model, tokenizer, PROMPT, 24, speculative=False)
    # mlx-lm stops at EOS; up to there the answers agree.
    assert plain[: len(want)] == want and len(want) >= 8
    assert _greedy(model, tokenizer, PROMPT, 24, tree=TreeShape(budget=8)) == plain


def _edit_config(path, **changes):
    f = path / "config.json"
    config = json.loads(f.read_text())
    for k, v in changes.items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    f.write_text(json.dumps(config))


@pytest.mark.torch
@pytest.mark.parametrize(
    "changes, message",
    [
        (
            dict(sliding_window=512),
            r"sliding_window \(512\) exceeds max_position_embeddings",
        ),
        (dict(sliding_window=0), "sliding_window must be a positive integer"),
        (
            dict(rope_scaling={"rope_type": "wavy", "factor": 2.0}),
            "unsupported rope_scaling type 'wavy'",
        ),
        (dict(rope_scaling={"rope_type": "linear"}), "lacks 'factor'"),
        (dict(layer_types=["full_attention"] * 2), "layer_types must give 3 entries"),
        (dict(attn_logit_softcapping=50.0), "attn_logit_softcapping"),
        (dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
        (dict(head_dim=16), "has shape"),
        (dict(num_hidden_layers=4, layer_types=None), "missing tensor"),
    ],
)
def test_bad_configs_fail_with_one_clear_line(tmp_path, changes, message):
    """Each bad config.json is refused naming its file; convert writes nothing."""
    src = tiny_hf_gemma3(tmp_path)
    if "rope_scaling" in changes or "sliding_window" in changes:
        changes = dict(changes, rope_parameters=None)  # read the Hub fields
    _edit_config(src, **changes)
    for call in (lambda: load_model(src), lambda: convert(src, tmp_path / "out")):
        with pytest.raises(ModelFileError, match=message) as e:
            call()
        assert "\n" not in str(e.value)
        assert str(src) in str(e.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == [src.name]  # no temp dirs either


@pytest.mark.torch
def test_unknown_rope_scaling_type_for_every_family(tmp_path):
    """mlx-lm's bare rope error becomes a clear one naming config.json (Llama here)."""
    from helpers_torch import tiny_hf_llama

    src = tiny_hf_llama(tmp_path)
    _edit_config(src, rope_parameters=None, rope_scaling={"type": "wavy", "factor": 2})
    with pytest.raises(ConvertError, match=r"config.json: .*'wavy'"):
        convert(src, tmp_path / "out")
    with pytest.raises(ModelFileError, match=r"config.json: unsupported rope_scaling"):
        load_model(src)


@pytest.mark.torch
def test_training_runs_on_gemma(tmp_path):
    """The efficient lossless path (cached K/V, anchors past the window) equals the
    reference, and a short training run learns streams and leaves the base alone."""
    from helpers_torch import write_random_streams
    from mlx_specstream.train import lossless
    from mlx_specstream.train.examples import Example
    from mlx_specstream.train.reference import StreamingReference
    from mlx_specstream.train.trainer import build_parser, train
    from test_train import SMALL, _records

    from mlx_specstream.format import StreamArgs

    path = tiny_hf_gemma3(tmp_path, num_hidden_layers=4)
    write_random_streams(
        path,
        StreamArgs(
            num_streams=3,
            num_stream_layers=2,
            stream_adapter_rank=4,
            insertion_rank=4,
            prune_rank=4,
        ),
        scale=0.2,
    )
    ref = StreamingReference.from_pretrained(path).eval()
    rng = np.random.default_rng(0)
    exs = [Example(rng.integers(3, 96, n), np.arange(n) >= 3) for n in (15, 11)]
    caches = [lossless.build_cache(ref, e, 8, torch.float32) for e in exs]
    anchors = [np.array([2, 9, 12]), np.array([4, 10])]
    with torch.no_grad():
        fast = lossless.efficient_stream_logits(ref, caches, anchors)
        for r, e in enumerate(exs):
            _, full = ref(torch.as_tensor(e.ids)[None])
            diff = (full[0, anchors[r]] - fast[r, : len(anchors[r])]).abs().max()
            assert diff < 1e-4

    base = tiny_hf_gemma3(tmp_path / "base", num_hidden_layers=4)
    for name, n, seed in (("train", 8, 0), ("valid", 4, 1)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in _records(n, seed))
        )
    out = tmp_path / "out"
    argv = ["--model", str(base), "--train", str(tmp_path / "train.jsonl")]
    argv += ["--valid", str(tmp_path / "valid.jsonl"), "--out", str(out), *SMALL]
    summary, trained = train(build_parser().parse_args(argv + ["--steps", "2"]))
    assert summary["steps_run"] == 2
    fresh = StreamingReference.from_pretrained(base, trained.args).eval()
    for k, v in fresh.hf.state_dict().items():
        assert torch.equal(v, trained.hf.state_dict()[k]), k
    fresh.load_streams(out)
    assert fresh.streams_state_dict()["layers.3.mlp.down_proj.lora_b"].abs().sum() > 0
    # The trained directory converts and the MLX model equals the reference.
    for f in ("speculative_streaming.json", "streams.safetensors"):
        shutil.copy(out / f, base / f)
    mlx = load_model(convert(base, tmp_path / "mlx"))
    ids = [(5 * i + 3) % 96 for i in range(14)]
    main, streams = mlx.all_stream_logits(mx.array([ids]))
    with torch.no_grad():
        want_main, want_streams = fresh(torch.tensor([ids]))
    np.testing.assert_allclose(np.array(main), want_main[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(np.array(streams), want_streams[0].numpy(), atol=1e-4)


@pytest.mark.torch
def test_final_logit_softcapping_as_transformers(tmp_path):
    """Gemma 3 leaves final_logit_softcapping unset; where a config sets it, logits
    (main, streams, float32 head) are capped as transformers caps them."""
    from helpers_torch import write_random_streams
    from mlx_specstream.train.reference import StreamingReference
    from transformers import AutoModelForCausalLM

    path = tiny_hf_gemma3(tmp_path, final_logit_softcapping=2.0)
    write_random_streams(path, scale=0.2)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = [(5 * i + 3) % 96 for i in range(14)]
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0].numpy()
        ref_main, ref_streams = StreamingReference.from_pretrained(path)(
            torch.tensor([ids])
        )
    assert np.abs(want).max() < 2.0
    model = load_model(path)
    np.testing.assert_allclose(np.array(model(mx.array([ids]))[0]), want, atol=1e-5)
    main, streams = model.all_stream_logits(mx.array([ids]))
    np.testing.assert_allclose(np.array(main), ref_main[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.array(streams), ref_streams[0].numpy(), atol=1e-5)
