# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Plain decode speed next to mlx-lm, and the cost of a verify pass by tree size.

A random model of SmolLM2-135M's shape (fp32) is saved to a temporary directory and
loaded by both runtimes, so they decode the same weights. Methods are interleaved
round by round and medians reported, because these machines are noisy.

    python benchmarks/bench_decode.py [--rounds 3] [--tokens 64] [--out bench.json]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mlx_specstream.blas import active_blas, ensure_openblas

SMOLLM2_SHAPE = dict(
    model_type="llama",
    hidden_size=576,
    num_hidden_layers=30,
    intermediate_size=1536,
    num_attention_heads=9,
    num_key_value_heads=3,
    rms_norm_eps=1e-5,
    vocab_size=49152,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    tie_word_embeddings=True,
)


def word_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w0")


def plain_tps(fn, prompt, n) -> float:
    """Tokens/s of ``n`` decoded tokens after the first (prefill excluded)."""
    it = fn(prompt)
    next(it)
    tic = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - tic)


def verify_costs(model, sizes, prefix: int, reps: int) -> dict:
    """Median seconds of one verify pass over a tree of T nodes (streams at every node)."""
    import mlx.core as mx
    import numpy as np

    from mlx_specstream.decoding.decoder import prefill
    from mlx_specstream.decoding.tree import Tree, best_first_paths
    from mlx_specstream.models import streaming
    from mlx_specstream.models.cache import make_prompt_cache
    from mlx_specstream.models.fast_ops import decode_path

    rng = np.random.default_rng(0)
    cache = make_prompt_cache(model)
    prefill(model, rng.integers(1, 1000, prefix + 1).tolist(), cache, 512)
    g = streaming.num_streams(model)
    out = {}
    for T in sizes:
        tokens = rng.integers(1, 1000, (g, T)).astype(np.int64)
        logprobs = (
            -np.sort(rng.random((g, T)), axis=1)[:, ::-1] * 0 - np.arange(T) * 0.3
        )
        tree = Tree.from_paths(1, best_first_paths(tokens, logprobs, T))
        times = {"plain_rows": [], "with_streams": []}
        for _ in range(reps + 1):
            for kind in times:
                tic = time.perf_counter()
                anchors = list(range(tree.size)) if kind == "with_streams" else []
                p = streaming.tree_pass(model, cache, tree, anchors, 0.0, decode_path())
                mx.eval(mx.argmax(p.logits, axis=-1))
                times[kind].append(time.perf_counter() - tic)
                for c in cache:
                    c.offset = prefix
        out[T] = {k: statistics.median(v[1:]) for k, v in times.items()}
    return out


def main():
    ensure_openblas()
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    from mlx_specstream.decoding.decoder import generate_step
    from mlx_specstream.format import StreamArgs
    from mlx_specstream.utils import build_model, load_model, save_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--sizes", default="1,2,4,8,12,16,24,32,48,64")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    print(f"BLAS: {active_blas()}; device: {mx.default_device()}")
    tmp = Path(tempfile.mkdtemp())
    mx.random.seed(0)
    model = build_model(SMOLLM2_SHAPE, StreamArgs(num_streams=4, num_stream_layers=8))
    save_model(model, SMOLLM2_SHAPE, tmp)
    word_tokenizer(SMOLLM2_SHAPE["vocab_size"]).save_pretrained(tmp)
    ours = load_model(tmp, lazy=False)
    theirs, tok = mlx_lm.load(str(tmp))
    prompt = list(range(1, args.prompt_len + 1))

    def ours_fn(ids):
        return generate_step(ids, ours)

    def theirs_fn(ids):
        return (
            r.token for r in mlx_lm.stream_generate(theirs, tok, ids, max_tokens=10**6)
        )

    res = {"ours_plain": [], "mlx_lm": []}
    for r in range(args.rounds):
        for name, fn in (("mlx_lm", theirs_fn), ("ours_plain", ours_fn)):
            res[name].append(plain_tps(fn, prompt, args.tokens))
        print(
            f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} tok/s" for k, v in res.items())
        )
    med = {k: statistics.median(v) for k, v in res.items()}
    print(
        f"plain decode (median of {args.rounds}): ours {med['ours_plain']:.2f} tok/s, "
        f"mlx_lm {med['mlx_lm']:.2f} tok/s, ratio {med['ours_plain'] / med['mlx_lm']:.3f}"
    )

    sizes = [int(s) for s in args.sizes.split(",")]
    costs = verify_costs(ours, sizes, args.prompt_len, args.reps)
    base = costs[sizes[0]]["plain_rows"]
    print(
        f"\nverify pass cost, {args.prompt_len}-token prefix, relative to T=1 ({base * 1e3:.1f} ms):"
    )
    print("| T | main rows only | + 4 streams per node in top 8 layers |")
    print("|---|---|---|")
    for T in sizes:
        c = costs[T]
        print(
            f"| {T} | {c['plain_rows'] / base:.2f}x | {c['with_streams'] / base:.2f}x |"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "blas": active_blas(),
                    "plain_tps": res,
                    "median": med,
                    "verify_seconds": costs,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
