# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""What computing in float32 costs or saves on this device, per model dtype.

For each directory (e.g. the bf16 / q8 / q4 conversions ``divergence.py`` caches),
loads the model twice, computing in its own dtype and widened to float32
(``precision.py``), and prints median milliseconds of a plain one-row decoding step
and a 17-row verify-shaped pass at a 200-token context, with peak memory; then the
error of one quantized matmul with bf16 against float32 activations.

    python benchmarks/precision_costs.py /tmp/div/cache/*-bfloat16 /tmp/div/cache/*-q8
"""

import argparse
import statistics
import time
from pathlib import Path

from mlx_specstream.blas import ensure_openblas


def _median_ms(fn, repeats: int) -> float:
    import mlx.core as mx

    mx.eval(fn())
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        mx.eval(fn())
        times.append((time.perf_counter() - tic) * 1000)
    return statistics.median(times)


def pass_costs(path: Path, compute: str, repeats: int) -> dict:
    import mlx.core as mx
    import numpy as np

    from mlx_specstream import load
    from mlx_specstream.models.cache import make_prompt_cache
    from mlx_specstream.models.msa import Rows

    mx.reset_peak_memory()
    model, _ = load(str(path), compute_dtype=compute, lazy=False)
    cache = make_prompt_cache(model)
    rng = np.random.default_rng(0)
    model(mx.array([rng.integers(0, model.args.vocab_size, 200).tolist()]), cache)
    mx.eval([c.keys for c in cache])

    def rows_pass(R: int):
        def run():
            offset = cache[0].offset
            if R == 1:
                rows = Rows.causal(1, offset, model.streams)
            else:  # a chain-shaped tree: per-row positions and an explicit mask
                local = np.tril(np.ones((R, R), bool))
                rows = Rows.tree(local, np.arange(R), offset, model.streams)
            tokens = mx.array(rng.integers(0, model.args.vocab_size, R).tolist())
            h = model.run_layers(model.embed(tokens), rows, cache, 0, len(model.layers))
            out = model.logits(h[0], float32=True)
            for c in cache:
                c.trim(R)
            return out

        return run

    return dict(
        step_ms=_median_ms(rows_pass(1), repeats),
        pass17_ms=_median_ms(rows_pass(17), repeats),
        peak_mb=mx.get_peak_memory() / 2**20,
    )


def matmul_error(bits: int = 8) -> dict:
    """Max |error| of a 576 -> 1536-feature quantized matmul (16 rows) against
    float32 arithmetic on the same dequantized weights, per activation dtype."""
    import mlx.core as mx

    mx.random.seed(0)
    w = (mx.random.normal((576, 1536)) * 0.05).astype(mx.bfloat16)
    wq, s, b = mx.quantize(w, group_size=64, bits=bits)
    x = mx.random.normal((16, 1536)).astype(mx.bfloat16)
    exact = (
        x.astype(mx.float32) @ mx.dequantize(wq, s, b, 64, bits).astype(mx.float32).T
    )
    out = {}
    for name, dt in (("bfloat16", mx.bfloat16), ("float32", mx.float32)):
        y = mx.quantized_matmul(
            x.astype(dt), wq, s.astype(dt), b.astype(dt), True, 64, bits
        )
        out[name] = float(mx.abs(y.astype(mx.float32) - exact).max())
    out["largest_output"] = float(mx.abs(exact).max())
    return out


def main() -> None:
    ensure_openblas()
    import mlx.core as mx

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", help="MLX model directories")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    print(f"device: {mx.default_device()}")
    print("| model | compute | plain step ms | 17-row pass ms | peak MB |")
    print("|---|---|---|---|---|")
    for d in args.dirs:
        for compute in ("model", "float32"):
            r = pass_costs(Path(d), compute, args.repeats)
            print(
                f"| {Path(d).name} | {compute} | {r['step_ms']:.1f} | "
                f"{r['pass17_ms']:.1f} | {r['peak_mb']:.0f} |",
                flush=True,
            )
    for bits in (8, 4):
        e = matmul_error(bits)
        print(
            f"{bits}-bit matmul max |error| (largest output {e['largest_output']:.2f}): "
            f"bf16 activations {e['bfloat16']:.3f}, float32 {e['float32']:.4f}"
        )


if __name__ == "__main__":
    main()
