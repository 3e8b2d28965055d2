# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The PyTorch reference: HF parity of main rows and the eq. 2 stream semantics."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers_torch import HF_FAMILIES, tiny_hf_llama, write_random_streams  # noqa: E402
from mlx_specstream.train.reference import StreamingReference  # noqa: E402

from mlx_specstream.format import (  # noqa: E402
    STREAMS_FILE,
    StreamArgs,
    stream_tensor_shapes,
)

pytestmark = pytest.mark.torch
ARGS = StreamArgs(
    num_streams=3,
    num_stream_layers=2,
    stream_adapter_rank=4,
    insertion_rank=4,
    prune_rank=4,
)


FAMILIES = HF_FAMILIES


@pytest.fixture(params=list(FAMILIES))
def ref(request, tmp_path):
    make = FAMILIES[request.param]
    path = make(tmp_path)
    write_random_streams(path, ARGS, scale=0.2)
    return StreamingReference.from_pretrained(path).eval()


def _ids(b=2, t=10, seed=0):
    return torch.randint(3, 96, (b, t), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_main_logits_equal_hf(ref):
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    main, streams = ref(ids, mask)
    hf = ref.hf(ids, attention_mask=mask).logits
    assert main.shape == hf.shape and streams.shape == (2, 10, 3, 96)
    assert torch.allclose(main[0], hf[0], atol=1e-5)
    assert torch.allclose(main[1, :7], hf[1, :7], atol=1e-5)
    # padding does not leak into real rows of stream logits either
    _, alone = ref(ids[1:, :7])
    assert torch.allclose(streams[1, :7], alone[0], atol=1e-5)


@torch.no_grad()
def test_stream_ignores_future_tokens(ref):
    ids = _ids()
    t = 5
    other = ids.clone()
    other[:, t + 1 :] = (other[:, t + 1 :] + 7) % 96
    _, s1 = ref(ids)
    _, s2 = ref(other)
    assert torch.allclose(s1[:, : t + 1], s2[:, : t + 1], atol=1e-6)
    assert not torch.allclose(s1[:, t + 1 :], s2[:, t + 1 :], atol=1e-3)


@torch.no_grad()
def test_stream_sees_lower_streams_only(ref):
    ids = _ids()
    main0, s0 = ref(ids)
    ref.stream_embed[1] += 0.5  # perturb stream 2 (index 1) at its insertion
    main1, s1 = ref(ids)
    assert torch.equal(main0, main1)  # main rows never see streams
    assert torch.allclose(
        s0[:, :, 0], s1[:, :, 0], atol=1e-6
    )  # stream 1 < 2: unchanged
    assert not torch.allclose(s0[:, :, 1], s1[:, :, 1], atol=1e-3)  # itself
    assert not torch.allclose(
        s0[:, :, 2], s1[:, :, 2], atol=1e-3
    )  # stream 3 attends to 2


@torch.no_grad()
def test_stream_only_adapters_do_not_touch_main(ref):
    ids = _ids()
    main0, s0 = ref(ids)
    for p in ref.stream_parameters():
        p.mul_(2.0)
    main1, s1 = ref(ids)
    assert torch.equal(main0, main1)
    assert not torch.allclose(s0, s1, atol=1e-3)


def _brute_force_streams(ref: StreamingReference, ids: torch.Tensor) -> torch.Tensor:
    """Eq. 2 literally: main and stream rows flattened into one sequence, one mask.

    Shares only the HF modules with the reference (M from HF's own hidden states).
    """
    # Phi-3's rotates the first cos.shape[-1] dims (partial rotary), else as Llama's.
    from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb

    hf, g = ref.hf, ref.args.num_streams
    t = ids.shape[1]
    m = hf(ids, output_hidden_states=True).hidden_states[ref.first_layer][0]  # (T, h)
    sd = ref.streams_state_dict()
    s = m[:, None] + sd["stream_embed"]
    s = s + torch.einsum("th,ghr,grk->tgk", m, sd["insert.a"], sd["insert.b"])
    x = torch.cat([m, s.reshape(t * g, -1)])  # rows: main 0..T-1, then (t, j) t-major
    anchor = torch.cat([torch.arange(t), torch.arange(t).repeat_interleave(g)])
    stream = torch.cat(
        [torch.zeros(t, dtype=torch.long), torch.arange(1, g + 1).repeat(t)]
    )
    is_main = stream == 0
    key_main = is_main[None, :] & (anchor[None, :] <= anchor[:, None])
    key_stream = (
        (~is_main[None, :])
        & (~is_main[:, None])
        & (anchor[None, :] == anchor[:, None])
        & (stream[None, :] <= stream[:, None])
    )
    mask = (is_main[:, None] & key_main) | (
        (~is_main[:, None]) & (key_main | key_stream)
    )
    rot = hf.model.rotary_emb
    if isinstance(rot.rope_type, dict):  # Gemma 3: a rope per layer type
        ropes = {kind: rot(x[None], anchor[None], kind) for kind in rot.rope_type}
    else:
        cos, sin = rot(x[None], anchor[None])
    for i in range(ref.first_layer, len(hf.model.layers)):
        layer = hf.model.layers[i]
        att = layer.self_attn
        if isinstance(rot.rope_type, dict):
            cos, sin = ropes[hf.config.layer_types[i]]
        layer_mask = mask
        if getattr(att, "sliding_window", None):  # Gemma 3: q - k < window
            layer_mask = mask & (
                (anchor[:, None] - anchor[None, :]) < att.sliding_window
            )

        def extra(inp, name):
            a, b = sd[f"layers.{i}.{name}.lora_a"], sd[f"layers.{i}.{name}.lora_b"]
            return ((inp @ a) @ b) * (~is_main)[:, None]

        def lin(mod, inp, name):
            return mod(inp) + extra(inp, name)

        hn = layer.input_layernorm(x)
        if hasattr(att, "qkv_proj"):  # Phi-3: one fused projection, q | k | v
            nq, nkv = att.config.num_attention_heads, att.num_key_value_heads
            sizes = [nq * att.head_dim, nkv * att.head_dim, nkv * att.head_dim]
            qkv = att.qkv_proj(hn).split(sizes, dim=-1)
            names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
            q, k, v = (p + extra(hn, n) for p, n in zip(qkv, names))
        else:
            q = lin(att.q_proj, hn, "self_attn.q_proj")
            k = lin(att.k_proj, hn, "self_attn.k_proj")
            v = lin(att.v_proj, hn, "self_attn.v_proj")
        q = q.view(len(x), -1, att.head_dim)
        k = k.view(len(x), -1, att.head_dim)
        if hasattr(att, "q_norm"):  # Qwen3: per-head RMSNorm before RoPE
            q, k = att.q_norm(q), att.k_norm(k)
        q, k = q.transpose(0, 1), k.transpose(0, 1)
        v = v.view(len(x), -1, att.head_dim).transpose(0, 1)
        q, k = apply_rotary_pos_emb(q[None], k[None], cos, sin)
        rep = q.shape[1] // k.shape[1]
        k, v = k[0].repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
        w = (q[0] @ k.transpose(1, 2)) * att.scaling
        o = torch.softmax(w.masked_fill(~layer_mask, float("-inf")), -1) @ v
        a = lin(att.o_proj, o.transpose(0, 1).reshape(len(x), -1), "self_attn.o_proj")
        gemma = hasattr(layer, "post_feedforward_layernorm")  # norms after too
        x = x + (layer.post_attention_layernorm(a) if gemma else a)
        hn = (
            layer.pre_feedforward_layernorm if gemma else layer.post_attention_layernorm
        )(x)
        mlp = layer.mlp
        if hasattr(mlp, "gate_up_proj"):  # Phi-3: gate | up fused
            gate, up = mlp.gate_up_proj(hn).chunk(2, dim=-1)
            gate, up = gate + extra(hn, "mlp.gate_proj"), up + extra(hn, "mlp.up_proj")
            hidden = mlp.activation_fn(gate) * up
        else:
            act = mlp.act_fn(lin(mlp.gate_proj, hn, "mlp.gate_proj"))
            hidden = act * lin(mlp.up_proj, hn, "mlp.up_proj")
        out = lin(mlp.down_proj, hidden, "mlp.down_proj")
        x = x + (layer.post_feedforward_layernorm(out) if gemma else out)
    return ref.logits(x[t:]).view(t, g, -1)


@torch.no_grad()
def test_streams_match_literal_eq2_mask(ref):
    ids = _ids(b=1, t=9)
    _, streams = ref(ids)
    assert torch.allclose(streams[0], _brute_force_streams(ref, ids), atol=1e-5)


@torch.no_grad()
def test_early_exit_logits(ref):
    ids = _ids()
    m = ref.hf(ids, output_hidden_states=True).hidden_states[ref.first_layer]
    sd = ref.streams_state_dict()
    expect = ref.hf.lm_head(ref.hf.model.norm(m + (m @ sd["prune.a"]) @ sd["prune.b"]))
    assert torch.allclose(ref.early_exit_logits(ids), expect, atol=1e-5)


def test_save_load_roundtrip(ref, tmp_path):
    from mlx_specstream.train.reference import layer_dims
    from safetensors.torch import load_file

    ref.save_streams(tmp_path / "s")
    saved = load_file(str(tmp_path / "s" / STREAMS_FILE))
    cfg = ref.hf.config
    shapes = stream_tensor_shapes(
        ref.args, cfg.hidden_size, layer_dims(cfg), cfg.num_hidden_layers
    )
    assert {k: tuple(v.shape) for k, v in saved.items()} == shapes
    assert all(v.dtype == torch.float32 for v in saved.values())
    other = StreamingReference(ref.hf, ref.args)
    other.load_streams(tmp_path / "s")
    for k, v in ref.streams_state_dict().items():
        assert torch.equal(v, other.streams_state_dict()[k])


def test_zero_streams_without_files(tmp_path):
    path = tiny_hf_llama(tmp_path)
    ref = StreamingReference.from_pretrained(
        path, StreamArgs(num_streams=2, num_stream_layers=1)
    )
    assert ref.first_layer == 2
    assert all(not v.any() for v in ref.streams_state_dict().values())


def test_bad_stream_files(tmp_path):
    path = tiny_hf_llama(tmp_path)
    write_random_streams(path, ARGS)
    ref = StreamingReference.from_pretrained(path)
    other = StreamingReference(ref.hf, StreamArgs(num_streams=2, num_stream_layers=2))
    with pytest.raises(ValueError, match="settings differ"):
        other.load_streams(path)
    with pytest.raises(FileNotFoundError, match="speculative_streaming.json"):
        ref.load_streams(tmp_path / "nowhere")
