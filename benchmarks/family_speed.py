# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Plain decoding speed per model family, next to mlx-lm on the same weights.

For each family a random model of a real checkpoint's shape is saved once and loaded
by both runtimes (``mlx_lm.load`` reads our directories as its own family). Each
round decodes ``--tokens`` greedy tokens after a ``--prompt-len`` prompt with
``mlx_lm.stream_generate`` and with our plain decoding, interleaved; medians are
printed. ``--quantize 4`` runs the 4-bit directories instead (``mlx_lm.convert -q``
layout; ours computes in float32 on the CPU, see precision.py).

    python benchmarks/family_speed.py [--families llama,qwen3,gemma3_text,phi3] [--rounds 3]
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from mlx_specstream.benchmarks.bench_decode import (
    SMOLLM2_SHAPE,
    plain_tps,
    word_tokenizer,
)

from mlx_specstream.blas import active_blas, ensure_openblas

# config.json of a random stand-in per family: the published shapes of SmolLM2-135M,
# Qwen3-0.6B and Gemma-3-270M; Phi-4-mini's layout (fused projections, partial
# rotary 0.75, tied head) at a quarter of its depth and a third of its width, since
# 3.8B float32 parameters do not decode usefully on 2 cores.
SHAPES = {
    "llama": SMOLLM2_SHAPE,
    "qwen3": dict(
        model_type="qwen3",
        hidden_size=1024,
        num_hidden_layers=28,
        intermediate_size=3072,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        rms_norm_eps=1e-6,
        vocab_size=151936,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
    ),
    "gemma3_text": dict(
        model_type="gemma3_text",
        hidden_size=640,
        num_hidden_layers=18,
        intermediate_size=2048,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        rms_norm_eps=1e-6,
        vocab_size=262144,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        query_pre_attn_scalar=256,
        sliding_window=512,
        sliding_window_pattern=6,
        tie_word_embeddings=True,
    ),
    "phi3": dict(
        model_type="phi3",
        hidden_size=1024,
        num_hidden_layers=8,
        intermediate_size=2730,
        num_attention_heads=8,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=200064,
        max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        partial_rotary_factor=0.75,
        rope_theta=10000.0,
        tie_word_embeddings=True,
    ),
}


def save_random(family: str, path: Path, bits: int) -> Path:
    """A random model of ``family``'s shape in ``path`` (float32, or ``bits``-bit
    with bf16 scales as mlx_lm.convert -q writes)."""
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_specstream.format import StreamArgs
    from mlx_specstream.utils import build_model, save_model

    config = dict(SHAPES[family])
    mx.random.seed(0)
    model = build_model(config, StreamArgs(num_streams=4, num_stream_layers=4))
    if bits:
        model.set_dtype(mx.bfloat16)
        nn.quantize(model, group_size=64, bits=bits, class_predicate=_base_linear)
        config["quantization"] = {"group_size": 64, "bits": bits}
    save_model(model, config, path)
    word_tokenizer(config["vocab_size"]).save_pretrained(path)
    return path


def _base_linear(name: str, module) -> bool:
    import mlx.nn as nn

    return not name.startswith("streams") and isinstance(
        module, (nn.Linear, nn.Embedding)
    )


def measure(path: Path, rounds: int, tokens: int, prompt_len: int) -> dict:
    import mlx_lm

    from mlx_specstream import load
    from mlx_specstream.decoding.decoder import generate_step

    ours, _ = load(str(path), lazy=False)
    theirs, tok = mlx_lm.load(str(path))
    prompt = list(range(1, prompt_len + 1))

    def theirs_fn(ids):
        return (
            r.token for r in mlx_lm.stream_generate(theirs, tok, ids, max_tokens=10**6)
        )

    def ours_fn(ids):
        return generate_step(ids, ours)

    tps = {"mlx_lm": [], "ours_plain": []}
    for _ in range(rounds):
        tps["mlx_lm"].append(plain_tps(theirs_fn, prompt, tokens))
        tps["ours_plain"].append(plain_tps(ours_fn, prompt, tokens))
    return {k: statistics.median(v) for k, v in tps.items()} | {"rounds": tps}


def main() -> None:
    ensure_openblas()
    import mlx.core as mx

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default=",".join(SHAPES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--quantize", type=int, default=0, choices=[0, 4, 8])
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args()
    print(f"BLAS: {active_blas()}; device: {mx.default_device()}")
    print("| family | weights | mlx_lm tok/s | ours plain tok/s | ratio |")
    print("|---|---|---|---|---|")
    results = {}
    for family in args.families.split(","):
        if family not in SHAPES:
            raise SystemExit(
                f"unknown family {family!r} (choose from {', '.join(SHAPES)})"
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = save_random(family, Path(tmp), args.quantize)
            r = measure(path, args.rounds, args.tokens, args.prompt_len)
        results[family] = r
        weights = f"q{args.quantize}" if args.quantize else "float32"
        print(
            f"| {family} | {weights} | {r['mlx_lm']:.2f} | {r['ours_plain']:.2f} | "
            f"{r['ours_plain'] / r['mlx_lm']:.2f}x |",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
